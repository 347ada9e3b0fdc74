//! Incremental rollup end to end, with the shipped `telemetry_1h` job: ingest events, roll up a
//! window, ingest late and new events, run again (once killed midway, then retried): the rollup
//! equals a from-scratch aggregate with no double counting. Then retention deletes exactly the
//! expired rows, and `system.job_runs` records every run with its outcome.

use std::time::Duration;

use rand::Rng;

use crate::kafka;
use crate::procs::{Proc, free_port, repo_root, test_dir, wait_for};
use crate::sakura::{self, sql, sql_count};
use crate::services::Tansu;

/// The shipped rollup's aggregate, computed from scratch over all of raw.telemetry.
const SCRATCH: &str = "SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMP '1970-01-01T00:00:00Z') AS bucket, \
     service, host, metric, min(value) AS min, max(value) AS max, avg(value) AS avg, \
     approx_percentile_cont(value, 0.5) AS p50, approx_percentile_cont(value, 0.95) AS p95, \
     approx_percentile_cont(value, 0.99) AS p99, count(*) AS count FROM raw.telemetry GROUP BY 1, 2, 3, 4";

/// Rows that differ between the rollup and the from-scratch aggregate (of buckets before
/// `until`), and the rollup's total count.
fn mismatches(flight: u16, until: &str) -> (i64, i64) {
    let q = format!(
        "WITH s AS (SELECT * FROM ({SCRATCH}) WHERE bucket < TIMESTAMP '{until}'), \
              r AS (SELECT * FROM curated.telemetry_1h WHERE bucket < TIMESTAMP '{until}') \
         SELECT count(*) FROM s FULL OUTER JOIN r \
           ON s.bucket = r.bucket AND s.service = r.service AND s.host = r.host AND s.metric = r.metric \
         WHERE s.bucket IS NULL OR r.bucket IS NULL OR s.count <> r.count OR s.min <> r.min \
            OR s.max <> r.max OR abs(s.avg - r.avg) > 1e-9 OR abs(s.p50 - r.p50) > 1e-9 \
            OR abs(s.p95 - r.p95) > 1e-9 OR abs(s.p99 - r.p99) > 1e-9"
    );
    let bad = sql_count(flight, &q).unwrap();
    let total = sql_count(
        flight,
        &format!("SELECT coalesce(sum(count), 0) FROM curated.telemetry_1h WHERE bucket < TIMESTAMP '{until}'"),
    )
    .unwrap();
    (bad, total)
}

/// Telemetry with explicit event times (µs), `seq` labels from `first_seq`.
fn produce_at(brokers: &str, first_seq: u64, times_us: &[u64]) {
    kafka::produce(
        brokers,
        "telemetry",
        times_us.iter().enumerate().map(|(k, ts)| {
            let i = first_seq + k as u64;
            let host = format!("host-{:03}", i % 500);
            let value = format!(
                r#"{{"ts":{ts},"host":"{host}","service":"svc-{}","region":"eu-west","metric":"cpu_pct","value":{}.25,"labels":{{"seq":"{i}"}}}}"#,
                i % 7,
                i % 100
            );
            (host, value.into_bytes())
        }),
    );
}

/// Authentication off, the scheduler off (runs are started by hand here), the shipped
/// rollups, and a few jobs of the other kinds.
const EXTRA: &str = r#"
[auth]
required = false
[scheduler]
enabled = false
include = ["ROLLUPS"]

[[jobs]]
name = "expire_telemetry"
kind = "retention"
every = "1d"
params = { table = "raw.telemetry", ttl = "36500days", column = "ts" }

[[jobs]]
name = "export_rollup"
kind = "export"
every = "1d"
params = { sql = "SELECT * FROM curated.telemetry_1h WHERE bucket >= {{ window_start }} AND bucket < {{ window_end }}", url = "EXPORTS/{{ window_start_text }}/", format = "parquet" }

[[jobs]]
name = "export_csv"
kind = "export"
every = "1d"
params = { sql = "SELECT service, sum(count) AS n FROM curated.telemetry_1h GROUP BY service ORDER BY service", url = "EXPORTS/csv", format = "csv" }

[[jobs]]
name = "broken"
kind = "retention"
every = "1d"
params = { table = "raw.nope", ttl = "1d" }
"#;

#[test]
fn incremental_rollup_equals_a_from_scratch_aggregate_through_late_events_and_a_killed_run() {
    let tmp = test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 4);
    let (flight, http) = (free_port(), free_port());
    let rollups = repo_root().join("conf/jobs/rollups.toml");
    let config = sakura::write_secured_config(
        tmp.path(),
        &tansu.brokers(),
        "e2e-rollup",
        (flight, http),
        &EXTRA
            .replace("ROLLUPS", &rollups.display().to_string())
            .replace("EXPORTS", &tmp.path().join("exports").display().to_string()),
    );
    let mut serve = sakura::serve("serve", &config, http, tmp.path());

    // 12,000 events, 00:00-04:00 on 2025-11-27 (1.2 s apart).
    kafka::produce_telemetry(&tansu.brokers(), 0, 12_000);
    sakura::assert_exactly_once(
        &mut serve,
        flight,
        12_000,
        Duration::from_secs(120),
        "the first load",
    );

    // A backfill of the first three hours.
    let (ok, out) = sakura::jobs(
        &config,
        &[
            "run",
            "telemetry_1h",
            "--window",
            "2025-11-27T00:00:00Z..2025-11-27T03:00:00Z",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("telemetry_1h succeeded"), "{out}");
    // How long a run takes, so the kill below lands inside one.
    let took_ms = out
        .split("succeeded in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(500, |s| (s * 1000.0) as u64)
        .max(50);
    assert_eq!(mismatches(flight, "2025-11-27T03:00:00Z"), (0, 9_000));
    assert_eq!(
        sql_count(flight, "SELECT count(*) FROM curated.telemetry_1h WHERE bucket >= TIMESTAMP '2025-11-27T03:00:00Z'").unwrap(),
        0,
        "the backfill wrote outside its window"
    );

    // 600 late events inside hour 01:00 (before the watermark, within the 2 h lookback) and
    // 3,000 new ones 04:00-05:00.
    let late: Vec<u64> = (0..600)
        .map(|k| kafka::event_ts_us(3_000) + k * 5_000_000)
        .collect();
    produce_at(&tansu.brokers(), 1_000_000, &late);
    kafka::produce_telemetry(&tansu.brokers(), 12_000, 15_000);
    sakura::assert_exactly_once(
        &mut serve,
        flight,
        15_600,
        Duration::from_secs(120),
        "late and new events",
    );

    // An incremental run killed midway, then the retry.
    let mut rng = rand::rng();
    let killed = Proc::spawn(
        "jobs-run-killed",
        sakura::command()
            .args(["jobs", "run", "telemetry_1h", "--config"])
            .arg(&config),
        tmp.path(),
    );
    wait_for("the run to start", Duration::from_secs(60), || {
        killed.output().contains("job run starting").then_some(())
    });
    std::thread::sleep(Duration::from_millis(rng.random_range(0..took_ms)));
    drop(killed); // SIGKILL
    let (ok, out) = sakura::jobs(&config, &["run", "telemetry_1h"]);
    assert!(ok, "{out}");
    assert_eq!(
        mismatches(flight, "2030-01-01T00:00:00Z"),
        (0, 15_600),
        "after the retry"
    );
    // Once more with nothing new: the window is replaced again, nothing is counted twice.
    let (ok, out) = sakura::jobs(&config, &["run", "telemetry_1h"]);
    assert!(ok, "{out}");
    assert_eq!(
        mismatches(flight, "2030-01-01T00:00:00Z"),
        (0, 15_600),
        "after a rerun"
    );

    // Exports: the rollup's first two hours as Parquet (a window by hand), totals as CSV.
    let (ok, out) = sakura::jobs(
        &config,
        &[
            "run",
            "export_rollup",
            "--window",
            "2025-11-27T00:00:00Z..2025-11-27T02:00:00Z",
        ],
    );
    assert!(ok, "{out}");
    let expect = sql_count(
        flight,
        "SELECT count(*) FROM curated.telemetry_1h WHERE bucket < TIMESTAMP '2025-11-27T02:00:00Z'",
    )
    .unwrap();
    assert!(
        out.contains(&format!("{expect} rows as parquet")),
        "expected {expect}: {out}"
    );
    let dir = tmp.path().join("exports/20251127T000000Z");
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx
            .read_parquet(
                dir.to_str().unwrap(),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .unwrap();
        df.count().await.unwrap()
    });
    assert_eq!(rows as i64, expect, "rows in the exported Parquet files");
    let (ok, out) = sakura::jobs(&config, &["run", "export_csv"]);
    assert!(ok && out.contains("7 rows as csv"), "{out}");
    let csv: String = std::fs::read_dir(tmp.path().join("exports/csv"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        csv.starts_with("service,n\n") && csv.contains("svc-3,"),
        "{csv}"
    );

    // Retention: a TTL that puts the cutoff near 02:00 on 2025-11-27. The run reports its
    // exact cutoff; every event time produced is known, so the expected count is exact.
    let target_us = kafka::event_ts_us(6_000);
    let ttl_s = (chrono::Utc::now().timestamp_micros() as u64 - target_us) / 1_000_000;
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"36500days\"", &format!("\"{ttl_s}s\""));
    std::fs::write(&config, text).unwrap();
    let (ok, out) = sakura::jobs(&config, &["run", "expire_telemetry"]);
    assert!(ok, "{out}");
    let cutoff = out
        .split("with ts before ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no cutoff in {out}"))
        .timestamp_micros() as u64;
    let produced: Vec<u64> = (0..15_000)
        .map(kafka::event_ts_us)
        .chain(late.iter().copied())
        .collect();
    let expired = produced.iter().filter(|&&ts| ts < cutoff).count() as i64;
    assert!(expired > 6_000, "{expired}");
    assert!(
        out.contains(&format!("deleted {expired} rows")),
        "expected {expired}: {out}"
    );
    assert_eq!(
        sql_count(flight, "SELECT count(*) FROM raw.telemetry").unwrap(),
        15_600 - expired
    );
    assert_eq!(
        sql_count(
            flight,
            &format!("SELECT count(*) FROM raw.telemetry WHERE ts < to_timestamp_micros({cutoff})")
        )
        .unwrap(),
        0,
        "a row older than the cutoff survived"
    );
    // A job that fails is recorded as failed, with its error, and the command says so.
    let (ok, out) = sakura::jobs(&config, &["run", "broken"]);
    assert!(!ok && out.contains("raw.nope does not exist"), "{out}");

    // Every run is in system.job_runs (the killed one only if it got to record itself).
    let runs = sql(
        flight,
        "SELECT job, status, trigger, rows_written FROM system.job_runs ORDER BY finished_at",
    )
    .unwrap();
    let rollup_ok = runs
        .iter()
        .filter(|r| r.starts_with("telemetry_1h,succeeded,manual"))
        .count();
    assert!((3..=4).contains(&rollup_ok), "{runs:?}");
    assert!(
        runs.iter()
            .any(|r| r.starts_with("expire_telemetry,succeeded,manual")),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.starts_with("broken,failed,manual")),
        "{runs:?}"
    );
    let err = sql(
        flight,
        "SELECT error FROM system.job_runs WHERE job = 'broken'",
    )
    .unwrap();
    assert!(err[0].contains("raw.nope does not exist"), "{err:?}");
    // system.jobs shows the watermark the runs left; the CLI lists and shows history.
    let wm = sql(
        flight,
        "SELECT watermark, last_status FROM system.jobs WHERE name = 'telemetry_1h'",
    )
    .unwrap();
    assert!(
        wm[0].ends_with(",succeeded") && wm[0].starts_with("20"),
        "{wm:?}"
    );
    let (ok, out) = sakura::jobs(&config, &["list"]);
    assert!(
        ok && out.contains("telemetry_1h") && out.contains("expire_telemetry"),
        "{out}"
    );
    let (ok, out) = sakura::jobs(&config, &["history", "telemetry_1h"]);
    assert!(ok && out.matches("succeeded").count() >= 3, "{out}");
    // The anomaly_score window function is there for Flight SQL callers (scoped sessions).
    let scored = sql_count(
        flight,
        "SELECT count(s) FROM (SELECT anomaly_score(value, 'ewma') OVER (PARTITION BY host ORDER BY ts) AS s FROM raw.telemetry)",
    )
    .unwrap();
    assert_eq!(
        scored,
        sql_count(flight, "SELECT count(*) FROM raw.telemetry").unwrap()
    );
    serve.assert_running();
}
