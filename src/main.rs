//! `sakura`: the command line. Each subcommand is a thin layer over the crates.

mod anomaly_sink;
mod config;
mod demo;
mod error;
mod generator;
mod jobs_cli;
mod ml_cli;
mod node;
mod producer;
mod sql_client;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::info;

use crate::config::Config;
use crate::error::Result;
use crate::node::Node;

#[derive(Debug, Parser)]
#[command(
    name = "sakura",
    version,
    about = "Sakura Analytics: Kafka → Delta Lake → DataFusion → Flight SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything locally with nothing installed: built-in broker, generator, ingest into
    /// Delta tables in a local directory, and the Flight SQL server.
    Demo {
        /// Directory for the demo's Delta tables (emptied at start if a demo made it).
        #[arg(long, default_value = ".sakura/demo")]
        data_dir: PathBuf,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        #[arg(long, default_value = "127.0.0.1:50051")]
        flight_addr: String,
        #[arg(long, default_value = "127.0.0.1:9464")]
        http_addr: String,
        /// Telemetry messages per second (logs and events come on top).
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Number of simulated hosts.
        #[arg(long, default_value_t = 300)]
        hosts: usize,
        /// Seconds of ingest before the example queries are printed.
        #[arg(long, default_value_t = 30)]
        examples_after: u64,
    },
    /// Run ingest, the engine and Flight SQL against the configured Kafka and storage.
    Serve {
        /// The configuration file (see sakura.example.toml); SAKURA__SECTION__KEY variables
        /// override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run ingest only (with /healthz, /readyz and /metrics, without Flight SQL): start several
    /// with the same kafka.group_id to share the topics' partitions.
    Ingest {
        /// The configuration file (see sakura.example.toml); SAKURA__SECTION__KEY variables
        /// override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a SQL statement on a Flight SQL server and print the result.
    Sql {
        /// The statement.
        query: String,
        /// The Flight SQL server: grpc://host:port, http://host:port or host:port.
        #[arg(long, default_value = "grpc://127.0.0.1:50051")]
        endpoint: String,
        #[arg(long, value_enum, default_value = "table")]
        format: sql_client::Format,
        /// A bearer token (an API token, a JWT, or one the handshake issued).
        #[arg(long, env = "SAKURA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Authenticate with HTTP Basic at the handshake as this user (password from
        /// SAKURA_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, env = "SAKURA_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// PEM CA certificate that signed the server's certificate (`grpc+tls://` endpoints;
        /// default: the system's roots).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// PEM client certificate for mTLS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Make credentials for the `[auth]` section.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Anomaly detection tools.
    Ml {
        #[command(subcommand)]
        command: MlCommand,
    },
    /// Scheduled jobs: list them, run one now (or backfill a window), show their history.
    Jobs {
        /// The configuration file (see sakura.example.toml).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MlCommand {
    /// Evaluate detectors on the Numenta Anomaly Benchmark: scores every data/**/*.csv causally,
    /// writes <out>/<detector>/<category>/<detector>_<name>.csv and threshold.json, and prints
    /// the standard, reward_low_FP_rate and reward_low_FN_rate scores.
    Nab {
        /// The NAB directory (with data/, labels/combined_windows.json, config/profiles.json).
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The detector, or `all` (default: forecaster, the Candle model).
        #[arg(long, default_value = "forecaster")]
        detector: String,
    },
    /// Produce the demo generator's telemetry, logs and events for a simulated period ending
    /// now (one sample per host and metric per minute, with its injected anomalies) to Kafka,
    /// and write the anomalies it injected as JSON: ground truth to evaluate detectors against.
    Generate {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 20)]
        hosts: usize,
        /// Simulated minutes (one tick each), ending now.
        #[arg(long, default_value_t = 600)]
        minutes: u64,
        /// When the period ends instead of now (RFC 3339). The series follow the time of day,
        /// so a fixed end gives the same data on every run.
        #[arg(long)]
        end: Option<chrono::DateTime<chrono::Utc>>,
        /// Where to write the injected anomalies (JSON).
        #[arg(long)]
        truth: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// List the models in the registry (`<storage root>/models/`): every version with its kind,
    /// training window, training report and threshold.
    Models {
        /// The configuration file (see sakura.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Every job with its schedule, next fire, last outcome and watermark.
    List,
    /// Run a job now, outside its schedule. Without --window an incremental job processes what
    /// is new since its watermark; with it, exactly that window (a backfill: the window's output
    /// is replaced, and the watermark only moves forward).
    Run {
        name: String,
        /// START..END in RFC 3339 or YYYY-MM-DD (UTC), e.g. 2026-03-01..2026-03-08.
        #[arg(long)]
        window: Option<String>,
    },
    /// The recorded runs (of one job, or all), oldest first.
    History {
        name: Option<String>,
        /// Show at most this many (the latest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Read a password from standard input and print its `password_hash` for `[[auth.users]]`.
    HashPassword,
    /// Print a new random API token and its `hash` for `[[auth.tokens]]` (the token is shown
    /// once; only the hash goes into the config).
    NewToken {
        /// The token's owner, e.g. grafana.
        name: String,
        /// Roles to grant, comma-separated.
        #[arg(long, default_value = "reader")]
        roles: String,
    },
}

/// Log filter unless RUST_LOG says otherwise. The Delta kernel logs an error each time a table
/// that does not exist yet is probed, the Parquet writer warns about every binary column it
/// keeps no statistics for, and Delta warns on every commit that raced another writer (routine
/// with several ingest processes): all expected here.
const QUIET_DEPS: &str = "buoyant_kernel::snapshot::builder=off,\
    deltalake_core::writer::stats=error,deltalake_core::kernel::transaction=error";

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},{QUIET_DEPS}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(config: Option<PathBuf>, with_flight: bool) -> Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let mut node = Node::start(&cfg, None, with_flight).await?;
    match node.flight_addr {
        Some(flight) => println!(
            "sakura serving: flight grpc://{flight} http http://{} storage {}",
            node.http_addr, cfg.storage.url
        ),
        None => println!(
            "sakura ingesting: http http://{} storage {} group {}",
            node.http_addr, cfg.storage.url, cfg.kafka.group_id
        ),
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| error::Error::io("failed to install the SIGTERM handler", e))?;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            r = node.failed() => break r,
            _ = tick.tick() => {
                let s = node.stats.snapshot();
                info!(consumed = s.messages_consumed, committed = s.rows_committed, dead_letters = s.dead_letters_committed, commits = s.commits, "progress");
            }
        }
    };
    info!("stopping: flushing buffered rows");
    let stopped = node.stop().await;
    outcome.and(stopped)
}

fn auth_command(command: AuthCommand) -> Result<()> {
    match command {
        AuthCommand::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| error::Error::io("failed to read the password from stdin", e))?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(error::Error::Client("empty password on stdin".into()));
            }
            println!("{}", flight::hash_password(password)?);
        }
        AuthCommand::NewToken { name, roles } => {
            let token = flight::new_token()?;
            let roles: Vec<String> = roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| format!("{r:?}"))
                .collect();
            println!("token (give it to {name}; it is not stored): {token}");
            println!();
            println!("[[auth.tokens]]");
            println!("name = {name:?}");
            println!("hash = \"{}\"", flight::token_hash(&token));
            println!("roles = [{}]", roles.join(", "));
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            data_dir,
            duration,
            flight_addr,
            http_addr,
            rate,
            hosts,
            examples_after,
        } => {
            demo::run(demo::DemoOptions {
                data_dir,
                duration: duration.map(Duration::from_secs),
                flight_addr,
                http_addr,
                rate,
                hosts,
                examples_after: Duration::from_secs(examples_after),
            })
            .await
        }
        Command::Serve { config } => serve(config, true).await,
        Command::Ingest { config } => serve(config, false).await,
        Command::Sql {
            query,
            endpoint,
            format,
            token,
            user,
            password,
            tls_ca,
            tls_cert,
            tls_key,
        } => {
            let credentials = match (token, user) {
                (Some(t), _) => sql_client::Credentials::Token(t),
                (None, Some(u)) => sql_client::Credentials::Basic(u, password.unwrap_or_default()),
                (None, None) => sql_client::Credentials::None,
            };
            let tls = sql_client::Tls {
                ca: tls_ca,
                cert: tls_cert.zip(tls_key),
            };
            let batches = sql_client::query(&endpoint, &query, &credentials, &tls).await?;
            print!("{}", sql_client::render(&batches, format)?);
            if format == sql_client::Format::Table {
                println!();
            }
            Ok(())
        }
        Command::Auth { command } => auth_command(command),
        Command::Ml {
            command:
                MlCommand::Nab {
                    data,
                    out,
                    detector,
                },
        } => ml_cli::nab_command(&data, &out, &detector),
        Command::Ml {
            command: MlCommand::Models { config },
        } => {
            let cfg = Config::load(config.as_deref())?;
            ml_cli::models_command(&cfg).await
        }
        Command::Ml {
            command:
                MlCommand::Generate {
                    brokers,
                    hosts,
                    minutes,
                    end,
                    truth,
                    seed,
                },
        } => {
            let stats = std::sync::Arc::new(producer::ProduceStats::default());
            let s = stats.clone();
            let end = end.unwrap_or_else(chrono::Utc::now);
            let injected = tokio::task::spawn_blocking(move || {
                producer::generate_period(&brokers, hosts, minutes, end, seed, s)
            })
            .await
            .map_err(|e| crate::error::Error::Task(e.to_string()))??;
            let json: Vec<serde_json::Value> = injected
                .iter()
                .map(|i| {
                    serde_json::json!({"kind": i.kind, "target": i.target, "metric": i.metric, "ts_us": i.ts_us})
                })
                .collect();
            std::fs::write(&truth, serde_json::to_vec_pretty(&json).unwrap_or_default()).map_err(
                |e| crate::error::Error::io(format!("cannot write {}", truth.display()), e),
            )?;
            println!(
                "produced {} messages ({} failed); {} injected anomalies written to {}",
                stats.acked.load(std::sync::atomic::Ordering::Relaxed),
                stats.failed.load(std::sync::atomic::Ordering::Relaxed),
                injected.len(),
                truth.display()
            );
            Ok(())
        }
        Command::Jobs { config, command } => {
            let cfg = Config::load(config.as_deref())?;
            match command {
                JobsCommand::List => jobs_cli::list(&cfg).await,
                JobsCommand::Run { name, window } => {
                    jobs_cli::run(&cfg, &name, window.as_deref()).await
                }
                JobsCommand::History { name, limit } => {
                    jobs_cli::history(&cfg, name.as_deref(), limit).await
                }
            }
        }
    }
}

/// glibc gives each thread that contends on `malloc` an arena of its own (up to 8 per core) and
/// keeps freed memory in them: under a 5,000,000-event backlog the ingest process's peak RSS was
/// 928 MiB with the default and 424 MiB with two arenas, at the same throughput
/// (`sakura-bench ingest`). The variable only takes effect at process start, so `sakura`
/// re-executes itself once with `MALLOC_ARENA_MAX=2` unless it is already set (set it to
/// choose another value). See docs/adr/0005.
///
/// The same re-execution sets `RAYON_NUM_THREADS` (to the number of cores) when it is unset:
/// Candle looks the thread count up before every matrix product, and without the variable
/// that means reading the CPU topology from /proc and /sys each time — a NAB run of the
/// forecaster spent 31 s in the kernel for 7 s of work (`sakura ml nab`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec_with_env_defaults() {
    use std::os::unix::process::CommandExt;
    let mut missing: Vec<(&str, String)> = Vec::new();
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        missing.push(("MALLOC_ARENA_MAX", "2".into()));
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        missing.push(("RAYON_NUM_THREADS", cores.to_string()));
    }
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(missing)
        .exec();
    eprintln!(
        "warning: could not re-execute with MALLOC_ARENA_MAX and RAYON_NUM_THREADS set ({err}); continuing"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reexec_with_env_defaults() {}

fn main() -> ExitCode {
    reexec_with_env_defaults();
    // Dependencies enable both of rustls's crypto back ends, so it cannot pick one by itself:
    // TLS (Flight server, `sakura sql`, S3) uses aws-lc-rs. `Err` only means one is installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Command::Serve { .. } | Command::Ingest { .. } | Command::Jobs { .. } => "info",
        _ => "warn",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
