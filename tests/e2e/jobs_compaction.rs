//! Compaction with the shipped `compact_raw_telemetry` job: a table of hundreds of small files
//! (ingest flushing every 60 rows) becomes at most 10 files with identical query results, while
//! ingest keeps committing during it without loss or duplicates.

use std::time::{Duration, Instant};

use crate::kafka;
use crate::procs::{free_port, repo_root, test_dir, wait_for};
use crate::sakura::{self, sql};
use crate::services::Tansu;

/// Aggregates over the first 12,000 events that any change to their rows would show.
const CHECK: &str = "SELECT count(*), sum(value), min(ts), max(ts), count(DISTINCT host), \
     sum(_offset), count(DISTINCT (_partition, _offset)) FROM raw.telemetry \
     WHERE ts < to_timestamp_micros(1764216000000000)";

/// Vacuum with no retention (what compaction left unreferenced goes at once) and a Z-ordered
/// compaction.
const VACUUM_AND_ZORDER: &str = r#"
[[jobs]]
name = "vacuum_now"
kind = "vacuum"
every = "1d"
params = { table = "raw.telemetry", retain = "0s" }

[[jobs]]
name = "zorder_by_host"
kind = "compact"
every = "1d"
params = { table = "raw.telemetry", zorder = ["host", "ts"] }
"#;

fn parquet_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.ends_with("_delta_log") {
                n += parquet_files(&p);
            }
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += 1;
        }
    }
    n
}

#[test]
fn compaction_turns_hundreds_of_small_files_into_a_few_while_ingest_commits() {
    assert_eq!(kafka::event_ts_us(12_000), 1_764_216_000_000_000);
    let tmp = test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 4);
    let (flight, http) = (free_port(), free_port());
    let storage = format!(
        "[storage]\nurl = \"{}\"\n[scheduler]\nenabled = false\ninclude = [\"{}\"]\n{VACUUM_AND_ZORDER}",
        tmp.path().join("data").display(),
        repo_root().join("conf/jobs/maintenance.toml").display()
    );
    let config = sakura::write_serve_config(
        tmp.path(),
        &storage,
        &tansu.brokers(),
        "e2e-compact",
        60,
        Some((flight, http)),
    );
    let mut serve = sakura::serve("serve", &config, http, tmp.path());
    for chunk in 0..40 {
        kafka::produce_telemetry(&tansu.brokers(), chunk * 300, (chunk + 1) * 300);
    }
    sakura::assert_exactly_once(
        &mut serve,
        flight,
        12_000,
        Duration::from_secs(180),
        "the small-file load",
    );
    let before = sql(flight, CHECK).unwrap();

    // More events arrive throughout the compaction.
    let brokers = tansu.brokers();
    let producer = std::thread::spawn(move || {
        for chunk in 0..30 {
            kafka::produce_telemetry(&brokers, 12_000 + chunk * 200, 12_000 + (chunk + 1) * 200);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let rows_at_start = sakura::counts(flight).unwrap().0;
    let started = Instant::now();
    let text = sakura::run_job(&config, "compact_raw_telemetry");
    let took = started.elapsed();
    let rows_at_end = sakura::counts(flight).unwrap().0;
    // "raw.telemetry: files 812 -> 3 (...)"
    let files: Vec<usize> = text
        .split("files ")
        .nth(1)
        .map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .take(2)
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    eprintln!("compaction: {text} in {took:?}; rows {rows_at_start} -> {rows_at_end} meanwhile");
    assert_eq!(files.len(), 2, "{text}");
    assert!(
        files[0] >= 200,
        "only {} files before compaction: {text}",
        files[0]
    );
    assert!(
        files[1] <= 10,
        "{} files after compaction: {text}",
        files[1]
    );
    // Ingest was committing all along (events arrive every 300 ms); a compaction that takes
    // longer than a flush shows commits during it, a quicker one at least none held back.
    let after = wait_for(
        "ingest commits after the compaction",
        Duration::from_secs(15),
        || {
            let n = sakura::counts(flight).ok()?.0;
            (n > rows_at_start).then_some(n)
        },
    );
    eprintln!(
        "rows {rows_at_start} before, {rows_at_end} at the end of the compaction, {after} after"
    );

    producer.join().unwrap();
    sakura::assert_exactly_once(
        &mut serve,
        flight,
        18_000,
        Duration::from_secs(180),
        "compaction during ingest",
    );
    assert_eq!(
        sql(flight, CHECK).unwrap(),
        before,
        "compaction changed query results"
    );
    let runs = sql(
        flight,
        "SELECT status, detail FROM system.job_runs WHERE job = 'compact_raw_telemetry'",
    )
    .unwrap();
    assert!(
        runs.len() == 1 && runs[0].starts_with("succeeded,raw.telemetry: files"),
        "{runs:?}"
    );

    // Z-order by host and time: still the same rows.
    let out = sakura::run_job(&config, "zorder_by_host");
    assert!(out.contains("z-ordered by host, ts"), "{out}");
    assert_eq!(
        sql(flight, CHECK).unwrap(),
        before,
        "z-ordering changed query results"
    );

    // Vacuum: the files compaction replaced are deleted from the store; the table reads the same.
    let table_dir = tmp.path().join("data/raw/telemetry");
    let on_disk = parquet_files(&table_dir);
    let out = sakura::run_job(&config, "vacuum_now");
    let deleted: usize = out
        .split("deleted ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"));
    assert!(
        deleted >= files[0],
        "vacuum deleted {deleted} files, compaction replaced {}: {out}",
        files[0]
    );
    assert_eq!(parquet_files(&table_dir), on_disk - deleted);
    assert_eq!(
        sql(flight, CHECK).unwrap(),
        before,
        "vacuum changed query results"
    );
    assert_eq!(sakura::counts(flight).unwrap(), (18_000, 18_000));
}
