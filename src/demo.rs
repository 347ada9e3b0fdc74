//! `sakura demo`: the whole pipeline with nothing installed — librdkafka's built-in mock broker,
//! a local directory as the object store, the event generator, ingest, the engine and Flight SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::util::pretty::pretty_format_batches;
use rdkafka::mocking::MockCluster;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::generator::{Injected, STEP_SECS};
use crate::node::Node;
use crate::producer::{ProduceStats, run_generator};
use chrono::{DateTime, Utc};
use ingest::prom::counter;

/// Options of `sakura demo`.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    pub(crate) data_dir: PathBuf,
    pub(crate) duration: Option<Duration>,
    pub(crate) flight_addr: String,
    pub(crate) http_addr: String,
    pub(crate) rate: u64,
    pub(crate) hosts: usize,
    pub(crate) examples_after: Duration,
}

const MARKER: &str = ".sakura-demo";
const TOPICS: [(&str, i32); 4] = [
    ("telemetry", 4),
    ("logs", 2),
    ("events", 2),
    ("anomalies", 1),
];

pub(crate) const EXAMPLES: [(&str, &str); 8] = [
    (
        "Rows per table",
        "SELECT 'raw.telemetry' AS table_name, count(*) AS rows FROM raw.telemetry UNION ALL SELECT 'raw.logs', count(*) FROM raw.logs UNION ALL SELECT 'raw.events', count(*) FROM raw.events UNION ALL SELECT 'raw.dead_letters', count(*) FROM raw.dead_letters ORDER BY table_name",
    ),
    (
        "CPU by service (all data so far)",
        "SELECT service, round(avg(value), 1) AS avg_cpu_pct, round(max(value), 1) AS max_cpu_pct, count(DISTINCT host) AS hosts FROM raw.telemetry WHERE metric = 'cpu_pct' GROUP BY service ORDER BY service",
    ),
    (
        "Hosts with the highest p99 latency (spikes and the failing host stand out)",
        "SELECT host, service, round(approx_percentile_cont(value, 0.99), 1) AS p99_latency_ms, round(avg(value), 1) AS avg_latency_ms FROM raw.telemetry WHERE metric = 'latency_ms' GROUP BY host, service ORDER BY p99_latency_ms DESC LIMIT 5",
    ),
    (
        "Hourly p95 latency of payments (the level shift)",
        "SELECT date_trunc('hour', ts) AS hour, round(approx_percentile_cont(value, 0.95), 1) AS p95_latency_ms, count(*) AS samples FROM raw.telemetry WHERE service = 'payments' AND metric = 'latency_ms' GROUP BY 1 ORDER BY 1 DESC LIMIT 6",
    ),
    (
        "Errors by service from the logs",
        "SELECT service, count(*) FILTER (WHERE level = 'ERROR') AS errors, count(*) FILTER (WHERE level = 'WARN') AS warnings, count(*) AS lines FROM raw.logs GROUP BY service ORDER BY errors DESC",
    ),
    (
        "Bad messages kept in raw.dead_letters",
        "SELECT error_kind, count(*) AS messages, min(error) AS example FROM raw.dead_letters GROUP BY error_kind ORDER BY error_kind",
    ),
    (
        "The hourly rollup the scheduled telemetry_1h job keeps up to date (payments latency)",
        "SELECT bucket, round(avg(p95), 1) AS avg_host_p95_ms, sum(count) AS samples FROM curated.telemetry_1h WHERE service = 'payments' AND metric = 'latency_ms' GROUP BY bucket ORDER BY bucket DESC LIMIT 4",
    ),
    (
        "Scheduled job runs so far (system.job_runs)",
        "SELECT job, status, count(*) AS runs, max(finished_at) AS last_finished, sum(rows_written) AS rows_written FROM system.job_runs GROUP BY job, status ORDER BY job, status",
    ),
];

/// The shipped jobs (conf/jobs/), on demo timing: the rollups every 20-30 s over windows that
/// reach back over the generator's simulated day, compaction every minute.
fn demo_jobs() -> Result<Vec<jobs::JobDef>> {
    let mut defs = jobs::parse_jobs_toml(
        "conf/jobs/rollups.toml",
        include_str!("../conf/jobs/rollups.toml"),
    )?;
    defs.extend(jobs::parse_jobs_toml(
        "conf/jobs/maintenance.toml",
        include_str!("../conf/jobs/maintenance.toml"),
    )?);
    defs.extend(jobs::parse_jobs_toml(
        "conf/jobs/ml.toml",
        include_str!("../conf/jobs/ml.toml"),
    )?);
    let mut out = Vec::new();
    for mut def in defs {
        let every = match def.name.as_str() {
            "telemetry_1h" => "20s",
            "log_levels_1d" => "30s",
            "compact_raw_telemetry" | "compact_raw_logs" => "60s",
            "retention_raw_logs" => "5m",
            "train_host_metrics" => "40s",
            "score_host_metrics" => "30s",
            _ => continue,
        };
        def.cron = None;
        def.every = Some(every.into());
        if def.kind == "sql" {
            // The generator's events start 24 h back: open windows reaching over all of it
            // (a real deployment waits for complete windows instead).
            for (k, v) in [("delay", "0s"), ("lookback", "26h"), ("initial", "26h")] {
                def.params
                    .insert(k.into(), serde_json::Value::String(v.into()));
            }
            def.params
                .insert("open".into(), serde_json::Value::Bool(true));
        }
        let text = |v: &str| serde_json::Value::String(v.into());
        if def.kind == "ml_train" {
            // Retrain on everything the demo has so far (its day of backfill), quickly.
            def.params.insert("lookback".into(), text("26h"));
            def.params
                .insert("hyper".into(), serde_json::json!({ "epochs": 3 }));
        }
        if def.kind == "ml_score" {
            // The simulated clock lags the wall clock, so new events land before the job's
            // watermark: each run rescores the whole day (its rows of ml.anomalies are
            // replaced, so they never double; the topic gets them again).
            for (k, v) in [("delay", "0s"), ("lookback", "26h"), ("initial", "26h")] {
                def.params.insert(k.into(), text(v));
            }
            def.params
                .insert("open".into(), serde_json::Value::Bool(true));
        }
        out.push(def);
    }
    Ok(out)
}

/// Whether a flag of `series` ("host/metric") at `ts` (µs) is explained by the injected `i`:
/// a spike within 3 minutes on its host and metric, the level shift within 15 minutes on the
/// shifted service's latency, the failing host within 15 minutes on any of its metrics.
fn explains(i: &Injected, series: &str, ts: i64) -> bool {
    let minute = STEP_SECS * 1_000_000;
    let within = if i.kind == "spike" { 3 } else { 15 } * minute;
    if ts < i.ts_us || ts > i.ts_us + within {
        return false;
    }
    let (host, metric) = series.split_once('/').unwrap_or((series, ""));
    match i.kind {
        "spike" => host == i.target && metric == i.metric,
        "level_shift" => host.starts_with(&format!("{}-", i.target)) && metric == i.metric,
        _ => host == i.target,
    }
}

/// What the scheduled `ml_score` job wrote to `ml.anomalies`, against what was injected.
async fn print_found(engine: &engine::Engine, injected: &[Injected]) {
    use datafusion::arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    let flags: Vec<(String, i64)> = match async {
        engine.invalidate("ml", "anomalies").await;
        engine
            .sql("SELECT series, ts FROM ml.anomalies")
            .await?
            .collect()
            .await
    }
    .await
    {
        Ok(batches) => batches
            .iter()
            .flat_map(|b| {
                // Strings may come back as views and times with a zone: cast to plain types.
                use datafusion::arrow::compute::cast;
                use datafusion::arrow::datatypes::{DataType, TimeUnit};
                let series = cast(b.column(0), &DataType::Utf8)
                    .ok()
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned());
                let ts = cast(
                    b.column(1),
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )
                .ok()
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .cloned()
                });
                match (series, ts) {
                    (Some(s), Some(t)) => (0..b.num_rows())
                        .map(|i| (s.value(i).to_string(), t.value(i)))
                        .collect(),
                    _ => Vec::new(),
                }
            })
            .collect(),
        Err(e) => {
            println!("Anomaly detection: cannot read ml.anomalies ({e})");
            return;
        }
    };
    if flags.is_empty() {
        println!(
            "Anomaly detection: ml.anomalies is empty (the ml_train and ml_score jobs run 40 s and 30 s in; run the demo longer)."
        );
        return;
    }
    let found: Vec<&Injected> = injected
        .iter()
        .filter(|i| flags.iter().any(|(s, t)| explains(i, s, *t)))
        .collect();
    let explained = flags
        .iter()
        .filter(|(s, t)| injected.iter().any(|i| explains(i, s, *t)))
        .count();
    println!(
        "Anomaly detection (Candle forecaster, scheduled ml_score): {} anomalies in ml.anomalies, {explained} of them at injected ones; found {} of {} injected:",
        flags.len(),
        found.len(),
        injected.len()
    );
    const SHOWN: usize = 20;
    if injected.len() > SHOWN {
        println!("  (the last {SHOWN})");
    }
    for i in injected.iter().skip(injected.len().saturating_sub(SHOWN)) {
        let when = DateTime::<Utc>::from_timestamp_micros(i.ts_us)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default();
        let hit = flags
            .iter()
            .filter(|(s, t)| explains(i, s, *t))
            .min_by_key(|(_, t)| *t);
        match hit {
            Some((s, t)) => println!(
                "  found  {:<12} {} {:<10} at {when} (flagged {s} {} min later)",
                i.kind,
                i.target,
                i.metric,
                (t - i.ts_us) / (STEP_SECS * 1_000_000)
            ),
            None => println!(
                "  missed {:<12} {} {:<10} at {when}",
                i.kind, i.target, i.metric
            ),
        }
    }
}

/// Empties a directory the demo made before, and refuses any other non-empty directory: its
/// stored offsets belong to a broker that no longer exists.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("failed to read {}", dir.display()), e))?
            .next()
            .is_some();
        if non_empty {
            if !dir.join(MARKER).exists() {
                return Err(Error::Config {
                    key: "--data-dir".into(),
                    message: format!(
                        "{} is not empty and was not made by `sakura demo`; choose another directory",
                        dir.display()
                    ),
                });
            }
            std::fs::remove_dir_all(dir)
                .map_err(|e| Error::io(format!("failed to clear {}", dir.display()), e))?;
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("failed to create {}", dir.display()), e))?;
    std::fs::write(
        dir.join(MARKER),
        "data written by `sakura demo`; removed by its next run\n",
    )
    .map_err(|e| Error::io("failed to write the demo marker", e))?;
    Ok(())
}

fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Progress {
    started: Instant,
    last: Instant,
    last_produced: u64,
    last_committed: u64,
}

impl Progress {
    fn line(&mut self, produced: u64, node: &Node) -> String {
        let s = node.stats.snapshot();
        let dt = self.last.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "[{:>4}s] produced {} ({}/s) | ingested {} | committed {} rows ({}/s) in {} commits | dead letters {}",
            self.started.elapsed().as_secs(),
            fmt_count(produced),
            fmt_count(((produced - self.last_produced) as f64 / dt) as u64),
            fmt_count(s.messages_consumed),
            fmt_count(s.rows_committed),
            fmt_count(((s.rows_committed - self.last_committed) as f64 / dt) as u64),
            fmt_count(s.commits),
            fmt_count(s.dead_letters_committed),
        );
        self.last = Instant::now();
        self.last_produced = produced;
        self.last_committed = s.rows_committed;
        line
    }
}

async fn print_examples(engine: &engine::Engine) {
    println!("\n== Example queries (run in-process; the same SQL works over Flight SQL) ==");
    for (title, sql) in EXAMPLES {
        println!("\n-- {title}\n{sql};");
        let result = async {
            let batches = engine.sql(sql).await?.collect().await?;
            Ok::<_, datafusion::error::DataFusionError>(
                pretty_format_batches(&batches)?.to_string(),
            )
        }
        .await;
        match result {
            Ok(table) => println!("{table}"),
            Err(e) => println!("query failed: {e}"),
        }
    }
}

fn print_connect(f: std::net::SocketAddr, http: std::net::SocketAddr) {
    println!(
        "\n== Connect ==
  sakura sql:     cargo run -- sql \"SELECT count(*) FROM raw.telemetry\" --endpoint grpc://{f}
  Python ADBC:    adbc_driver_flightsql.dbapi.connect(\"grpc://{f}\")
  pyarrow:        pyarrow.flight.FlightClient(\"grpc://{f}\")  (statements: see README)
  Grafana:        Flight SQL data source, host {f}, TLS off, no auth
  HTTP SQL:       curl -X POST http://{http}/api/v1/sql --data-binary \"SELECT count(*) FROM raw.telemetry\"
  Metrics:        http://{http}/metrics   health: /healthz, /readyz
  Tables (Delta): catalog sakura, schema raw: telemetry, logs, events, dead_letters;
                  curated.telemetry_1h, curated.log_levels_1d (scheduled rollups);
                  system.jobs, system.job_runs (the scheduler), system.ingest_ledger,
                  system.models (the model registry)
                  ml.anomalies (the scheduled ml_score job; also on Kafka topic anomalies)
  Anomalies:      SELECT * FROM detect_anomalies('raw.telemetry', '', 'host_metrics') WHERE is_anomaly
"
    );
}

/// Runs the demo until Ctrl-C or the end of `duration`.
pub(crate) async fn run(opts: DemoOptions) -> Result<()> {
    prepare_data_dir(&opts.data_dir)?;
    let cluster = MockCluster::new(1).map_err(|source| Error::Kafka {
        context: "failed to start the built-in mock broker".into(),
        source,
    })?;
    for (topic, partitions) in TOPICS {
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(|source| Error::Kafka {
                context: format!("failed to create topic {topic}"),
                source,
            })?;
    }
    let brokers = cluster.bootstrap_servers();

    let mut cfg = Config::default();
    cfg.storage.url = opts.data_dir.to_string_lossy().into_owned();
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.group_id = "sakura-demo".into();
    cfg.kafka.session_timeout_ms = 6_000;
    cfg.ingest.flush_rows = 50_000;
    cfg.ingest.flush_age_ms = 2_000;
    cfg.flight.listen = opts.flight_addr.clone();
    cfg.http.listen = opts.http_addr.clone();
    // The demo is for one machine: no authentication (a real deployment configures [auth]).
    cfg.auth.required = false;
    cfg.jobs = demo_jobs()?;
    cfg.validate()?;
    cfg.jobs()?;

    println!("Sakura Analytics demo");
    println!(
        "  broker:   librdkafka mock cluster at {brokers} (topics: telemetry x4, logs x2, events x2)"
    );
    println!(
        "  storage:  {} (Delta tables under raw/)",
        std::path::absolute(&opts.data_dir)
            .unwrap_or(opts.data_dir.clone())
            .display()
    );
    println!(
        "  load:     {} hosts, {} telemetry msgs/s, simulated minutes from 24 h ago",
        opts.hosts, opts.rate
    );

    let produced = Arc::new(ProduceStats::default());
    let metrics_produced = produced.clone();
    let extra = Arc::new(move || {
        let mut out = String::new();
        counter(
            &mut out,
            "sakura_demo_messages_produced_total",
            "Messages the demo generator produced (acknowledged).",
            metrics_produced.acked.load(Ordering::Relaxed),
        );
        out
    });
    let mut node = Node::start(&cfg, Some(extra), true).await?;
    let Some(flight_addr) = node.flight_addr else {
        return Err(Error::Task(
            "the demo node has no Flight SQL listener".into(),
        ));
    };
    println!(
        "  flight:   grpc://{flight_addr}   http: http://{}\n",
        node.http_addr
    );

    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let (stop, stats, hosts, rate) = (stop.clone(), produced.clone(), opts.hosts, opts.rate);
        tokio::task::spawn_blocking(move || {
            run_generator(
                &brokers,
                hosts,
                rate,
                chrono::Duration::hours(24),
                stats,
                stop,
            )
        })
    };

    let started = Instant::now();
    let mut progress = Progress {
        started,
        last: started,
        last_produced: 0,
        last_committed: 0,
    };
    let mut examples_shown = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let deadline = opts.duration.map(|d| started + d);
    let examples_at = match opts.duration {
        Some(d) if d <= opts.examples_after + Duration::from_secs(5) => None,
        _ => Some(started + opts.examples_after),
    };
    let outcome: Result<()> = loop {
        let until_deadline = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { println!("\nCtrl-C: stopping"); break Ok(()); }
            r = node.failed() => break r,
            _ = tokio::time::sleep(until_deadline.unwrap_or(Duration::MAX)), if until_deadline.is_some() => break Ok(()),
            _ = tick.tick() => {
                println!("{}", progress.line(produced.acked.load(Ordering::Relaxed), &node));
                if !examples_shown && examples_at.is_some_and(|t| Instant::now() >= t) {
                    examples_shown = true;
                    print_examples(&node.engine).await;
                    print_connect(flight_addr, node.http_addr);
                    if deadline.is_none() {
                        println!("Serving until Ctrl-C.\n");
                    }
                }
            }
        }
    };

    stop.store(true, Ordering::Relaxed);
    let injected = match generator.await {
        Ok(r) => r?,
        Err(e) => return Err(Error::Task(e.to_string())),
    };
    // Let ingest read what was produced before stopping, so the final counts are complete.
    let acked = produced.acked.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while node.stats.snapshot().messages_consumed < acked && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One last scoring pass over everything ingested, so the summary covers the whole run.
    if outcome.is_ok() {
        let last = async {
            crate::jobs_cli::scheduler(&cfg, &node.engine)?
                .run_now("score_host_metrics", None)
                .await
                .map_err(Error::from)
        };
        match last.await {
            Ok(run) => println!(
                "Final ml_score run: {} ({})",
                run.status.as_str(),
                run.error.unwrap_or(run.detail)
            ),
            Err(e) => println!("Final ml_score run failed: {e}"),
        }
    }
    let engine = node.engine.clone();
    let http_addr = node.http_addr;
    let stats = node.stats.clone();
    node.stop().await?;
    outcome?;
    let s = stats.snapshot();
    println!(
        "\nStopped. Produced {} messages; committed {} rows and {} dead letters in {} Delta commits.",
        fmt_count(produced.acked.load(Ordering::Relaxed)),
        fmt_count(s.rows_committed),
        fmt_count(s.dead_letters_committed),
        fmt_count(s.commits)
    );
    let spikes = injected.iter().filter(|i| i.kind == "spike").count();
    let mut notes: Vec<String> = injected
        .iter()
        .filter(|i| i.kind != "spike")
        .map(|i| format!("{} on {} ({})", i.kind, i.target, i.metric))
        .collect();
    notes.insert(0, format!("{spikes} spikes"));
    println!("Injected anomalies: {}", notes.join(", "));
    print_found(&engine, &injected).await;
    if !examples_shown {
        print_examples(&engine).await;
        println!(
            "\nWhile the demo runs, connect to grpc://{flight_addr} (Flight SQL) and http://{http_addr} (metrics)."
        );
    }
    println!(
        "Data stays in {} (Delta tables; readable by DuckDB, Spark, the deltalake package).",
        opts.data_dir.display()
    );
    Ok(())
}
