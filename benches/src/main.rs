//! `sakura-bench ingest`: the ingest benchmark of issue 3, our side and the peers in one run.
//! (`sakura-bench serve`, the serving benchmark of issue 4, is described in `serve.rs`;
//! `sakura-bench ml`, detector throughput, in `ml.rs`.)
//!
//! 1. Generates an NDJSON telemetry payload (default 5,000,000 events, ~140 bytes each).
//! 2. **Pipeline stage**: the ingest writer (decode → Arrow → Parquet → Delta commit with
//!    offsets) fed from the payload in memory, in flush windows over 8 partitions, with 2
//!    threads — the code path the consumer loop drives, broker out of the picture.
//! 3. **Peer**: DuckDB converting the same NDJSON file to Parquet with 2 threads.
//! 4. **Ceiling**: an rdkafka consumer that only reads the topic from Tansu.
//! 5. **End to end**: `sakura serve` (release build) consuming the whole payload as backlog
//!    from Tansu into Delta on local disk and on the S3 server; its peak RSS.
//!
//! Every figure is the median of `--runs` runs; the table at the end gives the ratios.

mod e2e;
mod error;
mod kafka;
mod ml;
mod payload;
mod pipeline;
mod procs;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::procs::{cpu_seconds, cpu_since};

#[derive(Debug, Parser)]
#[command(
    name = "sakura-bench",
    about = "Benchmarks of Sakura Analytics against named peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The ingest benchmark: pipeline stage vs DuckDB, end to end vs the consume-only ceiling.
    Ingest(IngestArgs),
    /// The serving benchmark: a dashboard query suite over Flight SQL vs DuckDB, and a large
    /// result streamed to pyarrow.flight vs a local Parquet read.
    Serve(serve::ServeArgs),
    /// Anomaly-detector scoring throughput, points per second on one core.
    Ml(ml::MlArgs),
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Events in the payload.
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// Runs of each measurement; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Threads for the pipeline stage and for DuckDB.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Kafka partitions of the payload topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Rows per flush window of the pipeline stage (ingest.flush_rows).
    #[arg(long, default_value_t = 200_000)]
    flush_rows: usize,
    /// Working directory (payload, tables, logs); emptied first.
    #[arg(long, default_value = "target/bench/ingest")]
    dir: PathBuf,
    /// Directory holding bin/tansu and venv/ (made by scripts/install-test-deps.sh).
    #[arg(long, default_value = ".tools")]
    tools: PathBuf,
    /// Skip the Kafka measurements (ceiling and end to end).
    #[arg(long)]
    no_kafka: bool,
    /// Skip end to end on the S3 server.
    #[arg(long)]
    no_s3: bool,
    /// Extra `[kafka.properties]` for `sakura serve` in the end-to-end runs (`key=value`,
    /// repeatable), e.g. fetch sizes.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Extra `[ingest]` keys for `sakura serve` (`key=value` in TOML syntax, repeatable).
    #[arg(long = "ingest-setting", value_name = "KEY=VALUE")]
    ingest_settings: Vec<String>,
}

/// A measurement: the elapsed time of each run, and where measured the CPU-seconds each run
/// took — ours, and the servers' (broker, S3 server) in the same span.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    times: Vec<Duration>,
    cpu_ours: Vec<f64>,
    cpu_servers: Vec<f64>,
}

/// The middle value (the upper one of an even count).
fn median<T: Copy>(values: &[T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(cmp);
    v.get(v.len() / 2).copied()
}

impl Runs {
    pub(crate) fn push(&mut self, d: Duration) {
        self.times.push(d);
    }

    fn push_cpu(&mut self, ours: f64, servers: f64) {
        self.cpu_ours.push(ours);
        self.cpu_servers.push(servers);
    }

    pub(crate) fn median(&self) -> Option<Duration> {
        median(&self.times, Duration::cmp)
    }

    /// Medians of our CPU-seconds and the servers'.
    fn median_cpu(&self) -> Option<(f64, f64)> {
        Some((
            median(&self.cpu_ours, f64::total_cmp)?,
            median(&self.cpu_servers, f64::total_cmp)?,
        ))
    }

    fn rate(&self, events: usize) -> Option<f64> {
        self.median().map(|d| events as f64 / d.as_secs_f64())
    }

    fn all(&self) -> String {
        self.times
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `dir`, emptied (created when missing).
pub(crate) fn fresh_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::io(format!("failed to empty {}", dir.display()), e))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("failed to create {}", dir.display()), e))
}

/// The directory of the test services and clients (`bin/tansu`, `venv/`), absolute.
pub(crate) fn tools_dir(tools: &std::path::Path) -> Result<PathBuf> {
    std::fs::canonicalize(tools).map_err(|e| {
        Error::io(
            format!(
                "{} not found: run scripts/install-test-deps.sh first",
                tools.display()
            ),
            e,
        )
    })
}

fn ingest(args: &IngestArgs) -> Result<()> {
    if args.runs == 0 || args.events == 0 || args.partitions < 1 {
        return Err(Error::Usage(
            "--runs, --events and --partitions must be at least 1".into(),
        ));
    }
    fresh_dir(&args.dir)?;
    let tools = tools_dir(&args.tools)?;

    let payload = payload::generate(args.events, &args.dir)?;
    let mb = payload.bytes as f64 / 1e6;
    println!(
        "payload: {} events, {:.1} MB ({:.0} bytes/event) in {}",
        args.events,
        mb,
        payload.bytes as f64 / args.events as f64,
        payload.file.display()
    );

    let mut stage = Runs::default();
    let mut duck = Runs::default();
    for run in 1..=args.runs {
        let (d, cpu) = pipeline::run(&payload, args, run)?;
        println!(
            "[{run}/{}] pipeline stage: {:.2} s, {:.0} events/s, {cpu:.1} CPU-s",
            args.runs,
            d.as_secs_f64(),
            args.events as f64 / d.as_secs_f64()
        );
        stage.push(d);
        stage.push_cpu(cpu, 0.0);
        let d = pipeline::duckdb(&payload, args, &tools, run)?;
        println!(
            "[{run}/{}] duckdb:         {:.2} s, {:.0} events/s",
            args.runs,
            d.as_secs_f64(),
            args.events as f64 / d.as_secs_f64()
        );
        duck.push(d);
    }

    let mut ceiling = Runs::default();
    let mut local = Runs::default();
    let mut s3 = Runs::default();
    let mut peak_rss_kib = 0u64;
    if !args.no_kafka {
        let broker = kafka::Broker::start(&tools, &args.dir)?;
        broker.create_topic("telemetry", args.partitions)?;
        let produced = kafka::produce(&broker.brokers(), &payload, args.partitions)?;
        println!(
            "produced {} events to Tansu in {:.1} s ({:.0}/s)",
            args.events,
            produced.as_secs_f64(),
            args.events as f64 / produced.as_secs_f64()
        );
        let s3_server = if args.no_s3 {
            None
        } else {
            Some(e2e::S3Server::start(&tools, &args.dir)?)
        };
        // CPU-seconds of the servers (the broker, and the S3 server when there is one).
        let mut servers = vec![broker.pid()];
        servers.extend(s3_server.as_ref().map(e2e::S3Server::pid));
        let servers_cpu = || -> f64 { servers.iter().filter_map(|p| cpu_seconds(p)).sum() };
        for run in 1..=args.runs {
            let (ours, theirs) = (cpu_seconds("self"), servers_cpu());
            let d = kafka::consume_only(&broker.brokers(), args.events, run)?;
            let ours = cpu_since("self", ours);
            let theirs = servers_cpu() - theirs;
            println!(
                "[{run}/{}] consume-only ceiling: {:.2} s, {:.0} events/s, {ours:.1} + {theirs:.1} (servers) CPU-s",
                args.runs,
                d.as_secs_f64(),
                args.events as f64 / d.as_secs_f64()
            );
            ceiling.push(d);
            ceiling.push_cpu(ours, theirs);
            let servers_before = servers_cpu();
            let r = e2e::run(&broker, None, args, run)?;
            let theirs = servers_cpu() - servers_before;
            println!(
                "[{run}/{}] end to end, local disk: {:.2} s, {:.0} events/s, peak RSS {} MiB, {:.1} + {theirs:.1} (servers) CPU-s",
                args.runs,
                r.elapsed.as_secs_f64(),
                args.events as f64 / r.elapsed.as_secs_f64(),
                r.peak_rss_kib / 1024,
                r.cpu_s
            );
            peak_rss_kib = peak_rss_kib.max(r.peak_rss_kib);
            local.push(r.elapsed);
            local.push_cpu(r.cpu_s, theirs);
            if let Some(s3_server) = &s3_server {
                let servers_before = servers_cpu();
                let r = e2e::run(&broker, Some(s3_server), args, run)?;
                let theirs = servers_cpu() - servers_before;
                println!(
                    "[{run}/{}] end to end, S3 server: {:.2} s, {:.0} events/s, peak RSS {} MiB, {:.1} + {theirs:.1} (servers) CPU-s",
                    args.runs,
                    r.elapsed.as_secs_f64(),
                    args.events as f64 / r.elapsed.as_secs_f64(),
                    r.peak_rss_kib / 1024,
                    r.cpu_s
                );
                peak_rss_kib = peak_rss_kib.max(r.peak_rss_kib);
                s3.push(r.elapsed);
                s3.push_cpu(r.cpu_s, theirs);
            }
        }
    }

    report(args, mb, &stage, &duck, &ceiling, &local, &s3, peak_rss_kib);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &IngestArgs,
    mb: f64,
    stage: &Runs,
    duck: &Runs,
    ceiling: &Runs,
    local: &Runs,
    s3: &Runs,
    peak_rss_kib: u64,
) {
    let n = args.events;
    println!();
    println!(
        "ingest benchmark: {n} events, {mb:.1} MB, {} partitions, {} threads, medians of {} runs",
        args.partitions, args.threads, args.runs
    );
    println!(
        "{:<34} {:>12} {:>9} {:>10}  runs (s)",
        "measurement", "events/s", "MB/s", "median s"
    );
    let row = |name: &str, r: &Runs| {
        if let (Some(rate), Some(d)) = (r.rate(n), r.median()) {
            println!(
                "{name:<34} {rate:>12.0} {:>9.1} {:>10.2}  {}",
                mb / d.as_secs_f64(),
                d.as_secs_f64(),
                r.all()
            );
        }
    };
    row("pipeline stage (sakura)", stage);
    row("DuckDB NDJSON -> Parquet (peer)", duck);
    row("consume-only ceiling (rdkafka)", ceiling);
    row("end to end, Tansu -> local Delta", local);
    row("end to end, Tansu -> S3 Delta", s3);
    println!();
    let ratio = |a: &Runs, b: &Runs| Some(a.rate(n)? / b.rate(n)?);
    if let Some(r) = ratio(stage, duck) {
        println!(
            "pipeline stage / DuckDB:    {r:.2}x  (target >= 1.5x: {})",
            verdict(r >= 1.5)
        );
    }
    if let Some(r) = ratio(local, ceiling) {
        println!(
            "local end to end / ceiling: {:.0}%  (target >= 70%: {})",
            r * 100.0,
            verdict(r >= 0.7)
        );
    }
    if let Some(r) = ratio(s3, ceiling) {
        println!(
            "S3 end to end / ceiling:    {:.0}%  (target >= 70%: {})",
            r * 100.0,
            verdict(r >= 0.7)
        );
    }
    if peak_rss_kib > 0 {
        let mib = peak_rss_kib as f64 / 1024.0;
        println!(
            "peak RSS of sakura serve:   {mib:.0} MiB  (target <= 512 MiB: {})",
            verdict(mib <= 512.0)
        );
    }
    cpu_report(stage, ceiling, local, s3);
}

/// Where the cores went: CPU-seconds per run (ours: this process for the stage and the
/// ceiling, `sakura serve` end to end; servers: the broker, plus the S3 server when one runs),
/// and the least wall time those CPU-seconds allow on this machine's cores.
fn cpu_report(stage: &Runs, ceiling: &Runs, local: &Runs, s3: &Runs) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!();
    println!(
        "CPU-seconds per run (medians; {cores} cores, so a run of T seconds has at most {cores}*T)"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>12} {:>10}",
        "measurement", "ours", "servers", "total", "total/cores", "median s"
    );
    let row = |name: &str, r: &Runs| {
        if let (Some((ours, servers)), Some(d)) = (r.median_cpu(), r.median()) {
            let total = ours + servers;
            println!(
                "{name:<34} {ours:>8.1} {servers:>8.1} {total:>8.1} {:>12.2} {:>10.2}",
                total / cores,
                d.as_secs_f64()
            );
        }
    };
    row("pipeline stage (sakura)", stage);
    row("consume-only ceiling (rdkafka)", ceiling);
    row("end to end, Tansu -> local Delta", local);
    row("end to end, Tansu -> S3 Delta", s3);
    // What end to end cannot beat on these cores: the ceiling's CPU-seconds plus the stage's,
    // spread over every core, and never less than the ceiling's own time.
    if let (Some((stage_cpu, _)), Some((c_ours, c_servers)), Some(c)) =
        (stage.median_cpu(), ceiling.median_cpu(), ceiling.median())
    {
        let floor = ((c_ours + c_servers + stage_cpu) / cores).max(c.as_secs_f64());
        println!(
            "end to end can take no less than ~{floor:.2} s here ({:.0}% of the ceiling's rate): \
             the consume-only CPU plus the stage's, over {cores} cores",
            100.0 * c.as_secs_f64() / floor
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Candle looks its thread count up before every matrix product, reading the CPU topology from
/// /proc and /sys unless `RAYON_NUM_THREADS` is set (as `sakura` sets it at start): set it here
/// too, by re-executing once, so the bench measures the models and not those reads.
#[cfg(unix)]
fn set_candle_threads() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Ok(exe) = std::env::current_exe() {
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("RAYON_NUM_THREADS", cores.to_string())
            .exec();
        eprintln!("warning: could not re-execute with RAYON_NUM_THREADS set ({err})");
    }
}

#[cfg(not(unix))]
fn set_candle_threads() {}

fn main() -> std::process::ExitCode {
    set_candle_threads();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Ingest(args) => ingest(args),
        Command::Serve(args) => serve::run(args),
        Command::Ml(args) => ml::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
