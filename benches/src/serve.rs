//! `sakura-bench serve`: the serving benchmark of issue 4, our side and the peers in one run.
//!
//! 1. Writes `raw.telemetry` (default 10,000,000 rows over one day), `raw.logs` and
//!    `raw.events` through the ingest writer into Delta tables on local disk (kept for
//!    `--reuse`).
//! 2. Serves them over Flight SQL from this process (the engine and the Flight service of
//!    `sakura serve`, authentication off), `--threads` runtime and query threads.
//! 3. `serve_client.py` runs the dashboard suite through the unmodified ADBC Flight SQL driver
//!    and through DuckDB in-process over the same Parquet files (same SQL, same thread count),
//!    then streams `SELECT *` of the telemetry table to `pyarrow.flight` against pyarrow
//!    reading the same Parquet files locally. Medians of `--runs` runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ingest::{IngestConfig, IngestStats, Writer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use schemas::Storage;

use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Rows of raw.telemetry.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Runs of each query and of the stream; the table shows medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Threads of the server (runtime and DataFusion partitions) and of DuckDB / pyarrow.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Working directory (tables, logs).
    #[arg(long, default_value = "target/bench/serve")]
    dir: PathBuf,
    /// Keep the tables of an earlier run with the same --rows instead of writing them again.
    #[arg(long)]
    reuse: bool,
    /// Directory holding venv/ (made by scripts/install-test-deps.sh).
    #[arg(long, default_value = ".tools")]
    tools: PathBuf,
    /// Only these queries of the suite (by name, repeatable); all when absent.
    #[arg(long = "query")]
    queries: Vec<String>,
    /// A DataFusion setting for the server, as `[engine.options]` takes it (`key=value`,
    /// repeatable), e.g. `datafusion.execution.parquet.pushdown_filters=true`.
    #[arg(long = "engine-option", value_name = "KEY=VALUE")]
    engine_options: Vec<String>,
}

const SERVICES: [&str; 4] = ["web", "api", "db", "cache"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const METRICS: [&str; 4] = ["cpu_pct", "mem_pct", "latency_ms", "req_rate"];
const LEVELS: [&str; 5] = ["DEBUG", "INFO", "INFO", "WARN", "ERROR"];
const EVENT_TYPES: [&str; 3] = ["module.deployed", "module.restarted", "project.updated"];
const HOSTS: usize = 300;
const DAY_US: i64 = 86_400_000_000;

/// Midnight UTC of yesterday, in microseconds: the one day every row falls in.
fn day_start() -> i64 {
    chrono::Utc::now().timestamp_micros() / DAY_US * DAY_US - DAY_US
}

/// The `i`-th of `n` messages of `table`, its event time spread evenly over the day.
fn message(table: &str, i: usize, n: usize, start: i64, rng: &mut SmallRng) -> Vec<u8> {
    let ts = start + (i as i64) * (DAY_US / n as i64).max(1);
    let host = rng.random_range(0..HOSTS);
    let service = SERVICES[host % SERVICES.len()];
    match table {
        "telemetry" => {
            let region = REGIONS[host % REGIONS.len()];
            let metric = METRICS[i % METRICS.len()];
            let value: f64 = rng.random_range(0.0..1000.0);
            let az = ['a', 'b', 'c'][host % 3];
            format!(
                r#"{{"ts":{ts},"host":"{service}-{host:03}","service":"{service}","region":"{region}","metric":"{metric}","value":{value:.2},"labels":{{"env":"prod","az":"{az}"}}}}"#
            )
        }
        "logs" => {
            let level = LEVELS[rng.random_range(0..LEVELS.len())];
            let (msg, status) = if level == "ERROR" {
                ("upstream timeout after 30 s", 504)
            } else {
                ("GET /projects 200", 200)
            };
            format!(
                r#"{{"ts":{ts},"level":"{level}","service":"{service}","host":"{service}-{host:03}","message":"{msg}","trace_id":"{i:032x}","attributes":{{"status":"{status}"}}}}"#
            )
        }
        _ => {
            let kind = EVENT_TYPES[i % EVENT_TYPES.len()];
            format!(
                r#"{{"ts":{ts},"event_type":"{kind}","project_id":"p-{}","module_id":"{service}","actor":"ci-bot","payload":{{"host":"{service}-{host:03}"}}}}"#,
                i % 50
            )
        }
    }
    .into_bytes()
}

/// Writes `n` rows of each table through the ingest writer, in windows over 8 partitions.
fn write_tables(dir: &Path, tables: &[(&str, usize)], threads: usize, start: i64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("failed to start the runtime", e))?;
    let flush_rows = 200_000;
    let cfg = IngestConfig {
        topics: tables
            .iter()
            .map(|(t, _)| (t.to_string(), (*t).into()))
            .collect(),
        flush_rows,
        writer_threads: threads,
        ..IngestConfig::default()
    };
    let storage = Storage::local(dir)?;
    let stats = Arc::new(IngestStats::default());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    rt.block_on(async {
        let mut writer = Writer::open(&cfg, &storage, stats.clone()).await?;
        for (table, n) in tables {
            let started = Instant::now();
            let topic: Arc<str> = Arc::from(*table);
            let mut rng = SmallRng::seed_from_u64(7);
            let mut i = 0;
            while i < *n {
                let end = (i + flush_rows).min(*n);
                let values = (i..end).map(|j| message(table, j, *n, start, &mut rng));
                let window = crate::pipeline::window(&topic, 8, i, values);
                i = end;
                writer.write(&topic, Arc::new(window)).await?;
                // On a terminal one line that updates; in a log a line per million rows.
                if terminal {
                    eprint!("\r  raw.{table}: {i}/{n} rows");
                } else if i % 1_000_000 < flush_rows && i < *n {
                    eprintln!("  raw.{table}: {i}/{n} rows");
                }
            }
            let secs = started.elapsed().as_secs_f64();
            if terminal {
                eprintln!(" in {secs:.1} s");
            } else {
                eprintln!("  raw.{table}: {n} rows in {secs:.1} s");
            }
        }
        Ok::<_, Error>(())
    })?;
    let s = stats.snapshot();
    let expected: usize = tables.iter().map(|(_, n)| n).sum();
    if s.rows_committed != expected as u64 || s.dead_letters_committed != 0 {
        return Err(Error::Failed(format!(
            "wrote {} rows and {} dead letters, expected {expected} rows",
            s.rows_committed, s.dead_letters_committed
        )));
    }
    Ok(())
}

/// Serves `dir` over Flight SQL on a free loopback port until the returned runtime is dropped.
fn start_server(
    dir: &Path,
    threads: usize,
    options: &[String],
) -> Result<(tokio::runtime::Runtime, String)> {
    let options = options
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage(format!("--engine-option {kv:?} is not key=value")))
        })
        .collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("failed to start the runtime", e))?;
    let storage = Storage::local(dir)?;
    let addr = rt.block_on(async {
        let engine = engine::Engine::new(
            storage,
            &engine::EngineConfig {
                target_partitions: threads,
                options,
                ..engine::EngineConfig::default()
            },
        )
        .await
        .map_err(|e| Error::Failed(format!("engine: {e}")))?;
        let auth = flight::Authenticator::new(&flight::AuthConfig {
            required: false,
            ..flight::AuthConfig::default()
        })
        .map_err(|e| Error::Failed(e.to_string()))?;
        let policy = Arc::new(
            flight::Policy::new(BTreeMap::new()).map_err(|e| Error::Failed(e.to_string()))?,
        );
        let limits = flight::Limits::new(&flight::LimitsConfig::default())
            .map_err(|e| Error::Failed(e.to_string()))?;
        let listener = flight::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Failed(e.to_string()))?;
        let addr = flight::local_addr(&listener).map_err(|e| Error::Failed(e.to_string()))?;
        let executor: Arc<dyn flight::QueryExecutor> = Arc::new(engine);
        tokio::spawn(async move {
            if let Err(e) = flight::serve_flight(
                listener,
                executor,
                auth,
                policy,
                limits,
                None,
                std::future::pending(),
            )
            .await
            {
                eprintln!("flight server stopped: {e}");
            }
        });
        Ok::<_, Error>(addr)
    })?;
    Ok((rt, format!("grpc://{addr}")))
}

/// A measured query of the suite.
#[derive(Debug, serde::Deserialize)]
struct QueryResult {
    name: String,
    sakura_s: f64,
    duckdb_s: f64,
    rows: u64,
    same_result: bool,
}

#[derive(Debug, serde::Deserialize)]
struct StreamResult {
    rows: u64,
    local_rows: u64,
    /// Arrow bytes of the result as the Flight client holds it, and as the local read does
    /// (strings arrive as views over Flight, as plain strings from Parquet).
    bytes: u64,
    local_bytes: u64,
    flight_s: f64,
    local_s: f64,
    /// The same rows from memory through pyarrow's own Flight server to the same client.
    ceiling_s: f64,
    ceiling_bytes: u64,
}

#[derive(Debug, serde::Deserialize)]
struct ClientOutput {
    queries: Vec<QueryResult>,
    stream: Option<StreamResult>,
}

pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    if args.runs == 0 || args.rows == 0 || args.threads == 0 {
        return Err(Error::Usage(
            "--runs, --rows and --threads must be at least 1".into(),
        ));
    }
    let tools = crate::tools_dir(&args.tools)?;
    let data = args.dir.join("data");
    let marker = data.join(format!("complete-{}", args.rows));
    let tables = [
        ("telemetry", args.rows),
        ("logs", args.rows / 5),
        ("events", args.rows / 500),
    ];
    // The marker holds the day the rows fall in: the queries' time ranges are that day's, so
    // tables reused on a later day are still queried where their rows are.
    let written_day = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let day = if let Some(day) = written_day.filter(|_| args.reuse) {
        println!(
            "reusing the tables in {} (rows of {})",
            data.display(),
            chrono::DateTime::from_timestamp_micros(day)
                .map_or_else(|| day.to_string(), |d| d.date_naive().to_string())
        );
        day
    } else {
        let day = day_start();
        crate::fresh_dir(&data)?;
        println!(
            "writing raw.telemetry ({}), raw.logs ({}), raw.events ({}) into {}",
            tables[0].1,
            tables[1].1,
            tables[2].1,
            data.display()
        );
        write_tables(&data, &tables, args.threads, day)?;
        std::fs::write(&marker, day.to_string())
            .map_err(|e| Error::io(format!("failed to write {}", marker.display()), e))?;
        day
    };
    let data = std::fs::canonicalize(&data)
        .map_err(|e| Error::io(format!("failed to resolve {}", data.display()), e))?;

    let (server, uri) = start_server(&data, args.threads, &args.engine_options)?;
    println!("serving {} over Flight SQL at {uri}", data.display());
    if !args.engine_options.is_empty() {
        println!("engine options: {}", args.engine_options.join(", "));
    }
    let out_file = args.dir.join("serve-client.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("serve_client.py");
    let mut cmd = Command::new(tools.join("venv/bin/python"));
    cmd.arg(&script)
        .arg(&uri)
        .arg(&data)
        .arg(args.runs.to_string())
        .arg(args.threads.to_string())
        .arg(&out_file)
        .arg(day.to_string())
        .args(&args.queries)
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("failed to run serve_client.py (python of the test venv)", e))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            println!("{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("serve_client.py did not finish", e))?;
    drop(server);
    if !status.success() {
        return Err(Error::Failed(format!("serve_client.py failed: {status}")));
    }
    let text = std::fs::read_to_string(&out_file)
        .map_err(|e| Error::io(format!("failed to read {}", out_file.display()), e))?;
    let out: ClientOutput = serde_json::from_str(&text)
        .map_err(|e| Error::Failed(format!("bad client output {}: {e}", out_file.display())))?;
    print_table(&out, args);
    Ok(())
}

fn print_table(out: &ClientOutput, args: &ServeArgs) {
    println!();
    println!(
        "Dashboard suite over {} telemetry rows, medians of {} runs, {} threads each side",
        args.rows, args.runs, args.threads
    );
    println!("| query | rows | sakura (Flight SQL, ADBC) s | DuckDB (in-process) s | ratio |");
    println!("|---|---|---|---|---|");
    let mut log_sum = 0.0;
    for q in &out.queries {
        let ratio = q.sakura_s / q.duckdb_s;
        log_sum += ratio.ln();
        println!(
            "| {} | {}{} | {:.3} | {:.3} | {:.2}× |",
            q.name,
            q.rows,
            if q.same_result {
                ""
            } else {
                " (RESULTS DIFFER)"
            },
            q.sakura_s,
            q.duckdb_s,
            ratio
        );
    }
    if !out.queries.is_empty() {
        let geomean = (log_sum / out.queries.len() as f64).exp();
        println!(
            "geometric mean of the ratios: {geomean:.2}× (target ≤ 1.0×: {})",
            if geomean <= 1.0 { "met" } else { "MISSED" }
        );
        let differ: Vec<&str> = out
            .queries
            .iter()
            .filter(|q| !q.same_result)
            .map(|q| q.name.as_str())
            .collect();
        if differ.is_empty() {
            println!("every query returned the same result on both sides");
        } else {
            println!(
                "RESULTS DIFFER from DuckDB's for: {} (their timings compare different work)",
                differ.join(", ")
            );
        }
    }
    if let Some(s) = &out.stream {
        let flight = s.bytes as f64 / 1e9 / s.flight_s;
        let local = s.local_bytes as f64 / 1e9 / s.local_s;
        // Same rows on both sides: the ratio is of rows per second.
        let ratio = s.local_s / s.flight_s;
        println!();
        println!(
            "Stream of SELECT * FROM raw.telemetry ({} rows; local read {} rows), medians of {} runs:",
            s.rows, s.local_rows, args.runs
        );
        println!("| side | s | GB/s (Arrow bytes received) | rows/s |");
        println!("|---|---|---|---|");
        println!(
            "| pyarrow.flight DoGet | {:.2} | {:.2} | {:.0} |",
            s.flight_s,
            flight,
            s.rows as f64 / s.flight_s
        );
        println!(
            "| pyarrow local Parquet read | {:.2} | {:.2} | {:.0} |",
            s.local_s,
            local,
            s.local_rows as f64 / s.local_s
        );
        let ceiling = s.ceiling_bytes as f64 / 1e9 / s.ceiling_s;
        println!(
            "| pyarrow Flight server, table in memory (client ceiling) | {:.2} | {:.2} | {:.0} |",
            s.ceiling_s,
            ceiling,
            s.local_rows as f64 / s.ceiling_s
        );
        println!(
            "Flight / local: {ratio:.2}× (target ≥ 0.5×: {}); Flight GB/s target ≥ 1: {}; \
             Flight / client ceiling: {:.2}×",
            if ratio >= 0.5 { "met" } else { "MISSED" },
            if flight >= 1.0 { "met" } else { "MISSED" },
            flight / ceiling,
        );
    }
}
