//! Crash test: `sakura serve` is killed with SIGKILL at random moments while a 1,000,000-event
//! stream over 8 partitions arrives, and restarted each time; in the end every event is stored
//! exactly once. `SAKURA_CRASH_KILLS=100` turns it into the soak run (see CONTRIBUTING.md).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::procs::{Proc, free_port};
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
    let args = ["serve", "--config", config.to_str().unwrap()];

    // The stream keeps arriving while the process is being killed.
    let brokers = tansu.brokers();
    let producer = std::thread::spawn(move || {
        for chunk in 0..10 {
            kafka::produce_telemetry(&brokers, chunk * EVENTS / 10, (chunk + 1) * EVENTS / 10);
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    let started = Instant::now();
    for i in 0..kills {
        let name = format!("serve-{i}");
        let proc: Proc = sakura::start(&name, &args, &[], http_port, tmp.path());
        // Anywhere from right after start-up (during the group join) to mid-stream commits.
        std::thread::sleep(Duration::from_millis(rng.random_range(300..7_000)));
        drop(proc); // SIGKILL
    }
    producer.join().unwrap();
    eprintln!("{kills} kills in {:?}", started.elapsed());
    // The killed processes did commit (the kills hit a working pipeline), but not everything.
    let before = python::run(
        "delta_check.py",
        &[data.join("raw/telemetry").to_str().unwrap()],
    );
    let stored = before["deltalake_rows"].as_u64().unwrap();
    assert!(
        stored > 0 && stored < EVENTS,
        "kills did not interrupt ingest mid-stream: {before}"
    );
    assert_eq!(
        before["duckdb_distinct_pairs"].as_u64().unwrap(),
        stored,
        "{before}"
    );

    let mut last = sakura::start("serve-final", &args, &[], http_port, tmp.path());
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
}
