//! Crash test: `sakura serve` is killed with SIGKILL at random moments while a 1,000,000-event
//! stream over 8 partitions arrives, and restarted each time; in the end every event is stored
//! exactly once. `SAKURA_CRASH_KILLS=100` turns it into the soak run (see CONTRIBUTING.md).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::procs::{Proc, free_port, wait_for};
use crate::services::Tansu;
use crate::{kafka, python, sakura};

const EVENTS: u64 = 1_000_000;

#[test]
fn sigkill_at_random_moments_neither_loses_nor_duplicates() {
    let kills: usize = std::env::var("SAKURA_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SAKURA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);

    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 8);
    let data = tmp.path().join("data");
    let (flight, http_port) = (free_port(), free_port());
    let config = sakura::write_serve_config(
        tmp.path(),
        &format!("[storage]\nurl = \"{}\"", data.display()),
        &tansu.brokers(),
        "e2e-crash",
        20_000,
        Some((flight, http_port)),
    );

    // The stream keeps arriving while the process is being killed.
    let brokers = tansu.brokers();
    // Spread over most of the kill phase (~8 s a kill), so every process has input.
    let pause = Duration::from_millis(64 * kills as u64);
    let producer = std::thread::spawn(move || {
        for chunk in 0..100 {
            kafka::produce_telemetry(&brokers, chunk * EVENTS / 100, (chunk + 1) * EVENTS / 100);
            std::thread::sleep(pause);
        }
    });

    let started = Instant::now();
    for i in 0..kills {
        let name = format!("serve-{i}");
        let mut proc: Proc = sakura::serve(&name, &config, http_port, tmp.path());
        if i % 4 == 3 {
            // During start-up and the group join.
            std::thread::sleep(Duration::from_millis(rng.random_range(100..3_000)));
        } else {
            // While it owns partitions: mid-batch, mid-upload or mid-commit. (A killed member
            // holds its partitions until its session times out, so this waits ~6 s each time.)
            wait_for(
                &format!("{name} to be assigned partitions"),
                Duration::from_secs(60),
                || {
                    proc.assert_running();
                    proc.output().contains("assigned; positioned").then_some(())
                },
            );
            std::thread::sleep(Duration::from_millis(rng.random_range(0..3_000)));
        }
        drop(proc); // SIGKILL
    }
    producer.join().unwrap();
    eprintln!("{kills} kills in {:?}", started.elapsed());
    // The kills hit a working pipeline: many killed processes had committed.
    let committing = (0..kills)
        .filter(|i| {
            std::fs::read_to_string(tmp.path().join(format!("serve-{i}.log")))
                .is_ok_and(|log| log.contains("committed table=raw.telemetry"))
        })
        .count();
    assert!(
        committing >= 3,
        "only {committing} of {kills} killed processes committed anything"
    );
    let before = python::run(
        "delta_check.py",
        &[data.join("raw/telemetry").to_str().unwrap()],
    );
    let stored = before["deltalake_rows"].as_u64().unwrap();
    eprintln!(
        "{committing} killed processes committed; {stored} rows stored before the final start"
    );
    assert!(stored > 0 && stored <= EVENTS, "{before}");
    assert_eq!(
        before["duckdb_distinct_pairs"].as_u64().unwrap(),
        stored,
        "{before}"
    );

    let mut last = sakura::serve("serve-final", &config, http_port, tmp.path());
    sakura::assert_exactly_once(
        &mut last,
        flight,
        EVENTS as i64,
        Duration::from_secs(300),
        &format!("{kills} SIGKILLs"),
    );
    let seqs = sakura::sql_count(
        flight,
        "SELECT count(DISTINCT labels['seq']) FROM raw.telemetry",
    )
    .unwrap();
    assert_eq!(seqs, EVENTS as i64, "every produced event is present once");

    // Files written by killed processes but never committed stay invisible to outside readers.
    let check = python::run(
        "delta_check.py",
        &[data.join("raw/telemetry").to_str().unwrap()],
    );
    assert_eq!(check["duckdb_rows"], EVENTS, "{check}");
    assert_eq!(check["duckdb_distinct_pairs"], EVENTS, "{check}");
    assert_eq!(check["deltalake_rows"], EVENTS, "{check}");
    let status = last.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "final serve did not stop cleanly:\n{}",
        last.output()
    );

    // Orphan cleanup: files the killed processes uploaded but never committed, plus a planted
    // copy of a committed file (valid Parquet that would duplicate rows if it were visible),
    // are deleted; every committed file stays.
    let table = data.join("raw/telemetry");
    let committed = parquet_files(&table)[0].clone();
    let planted = committed.with_file_name("part-00000-planted-orphan.c000.snappy.parquet");
    std::fs::copy(&committed, &planted).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&planted)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let on_disk = parquet_files(&table).len();
    let envs = [
        ("SAKURA__INGEST__ORPHAN_MIN_AGE_S", "1".to_string()),
        ("SAKURA__INGEST__ORPHAN_CLEANUP_INTERVAL_S", "1".to_string()),
    ];
    let cfg = config.to_str().unwrap();
    let mut cleaner = sakura::start(
        "serve-cleaner",
        &["serve", "--config", cfg],
        &envs,
        http_port,
        tmp.path(),
    );
    let ledger_files = sakura::sql_count(
        flight,
        "SELECT count(*) FROM system.ingest_ledger WHERE table_name = 'raw.telemetry'",
    )
    .unwrap() as usize;
    wait_for(
        "orphan files to be deleted",
        Duration::from_secs(60),
        || {
            cleaner.assert_running();
            (parquet_files(&table).len() == ledger_files).then_some(())
        },
    );
    eprintln!(
        "orphan cleanup: {} of {on_disk} Parquet files were unreferenced (one planted) and deleted",
        on_disk - ledger_files
    );
    assert!(!planted.exists(), "the planted orphan is still there");
    sakura::assert_exactly_once(
        &mut cleaner,
        flight,
        EVENTS as i64,
        Duration::from_secs(30),
        "orphan cleanup",
    );
    assert!(cleaner.terminate(Duration::from_secs(60)).success());
}

/// The Parquet data files under a local table directory (not its log).
fn parquet_files(table: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![table.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_delta_log") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
