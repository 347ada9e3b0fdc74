//! Rebalance test: two, then three, then one process in one consumer group share an
//! 8-partition stream (one leaves cleanly, one is killed); every event is stored exactly once.
//! Member b is an ingest-only `sakura ingest`; the others are `sakura serve` (ingest + Flight SQL).

use std::path::Path;
use std::time::Duration;

use crate::procs::{Proc, free_port, wait_for};
use crate::services::Tansu;
use crate::{kafka, python, sakura};

const EVENTS: u64 = 600_000;

struct Member {
    proc: Proc,
    flight: u16,
}

fn member(name: &str, command: &str, config: &Path, dir: &Path) -> Member {
    let (flight, http) = (free_port(), free_port());
    let proc = sakura::start(
        name,
        &[command, "--config", config.to_str().unwrap()],
        &[
            ("SAKURA__FLIGHT__LISTEN", format!("127.0.0.1:{flight}")),
            ("SAKURA__HTTP__LISTEN", format!("127.0.0.1:{http}")),
        ],
        http,
        dir,
    );
    Member { proc, flight }
}

fn count(flight: u16) -> Option<i64> {
    sakura::sql_count(flight, "SELECT count(*) FROM raw.telemetry").ok()
}

#[test]
fn two_then_three_then_one_member_store_every_event_once() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 8);
    let data = tmp.path().join("data");
    let config = sakura::write_serve_config(
        tmp.path(),
        &format!("[storage]\nurl = \"{}\"", data.display()),
        &tansu.brokers(),
        "e2e-rebalance",
        20_000,
        None,
    );

    let brokers = tansu.brokers();
    let producer = std::thread::spawn(move || {
        for chunk in 0..12 {
            kafka::produce_telemetry(&brokers, chunk * EVENTS / 12, (chunk + 1) * EVENTS / 12);
            std::thread::sleep(Duration::from_millis(700));
        }
    });

    let mut a = member("member-a", "serve", &config, tmp.path());
    let mut b = member("member-b", "ingest", &config, tmp.path());
    wait_for(
        "a third of the stream with two members",
        Duration::from_secs(180),
        || {
            a.proc.assert_running();
            b.proc.assert_running();
            count(a.flight).filter(|n| *n >= EVENTS as i64 / 3)
        },
    );
    let mut c = member("member-c", "serve", &config, tmp.path());
    wait_for(
        "two thirds of the stream with three members",
        Duration::from_secs(180),
        || {
            c.proc.assert_running();
            count(c.flight).filter(|n| *n >= 2 * EVENTS as i64 / 3)
        },
    );
    // One member leaves cleanly, one dies.
    let status = a.proc.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "member-a did not stop cleanly:\n{}",
        a.proc.output()
    );
    drop(b); // SIGKILL
    producer.join().unwrap();

    let all = wait_for(
        "every event with one member",
        Duration::from_secs(240),
        || {
            c.proc.assert_running();
            count(c.flight).filter(|n| *n >= EVENTS as i64)
        },
    );
    assert_eq!(all, EVENTS as i64);
    std::thread::sleep(Duration::from_secs(3));
    let rows = sakura::sql(
        c.flight,
        "SELECT count(*), count(DISTINCT (_partition, _offset)), count(DISTINCT labels['seq']) FROM raw.telemetry",
    )
    .unwrap();
    assert_eq!(
        rows,
        [format!("{EVENTS},{EVENTS},{EVENTS}")],
        "loss or duplicates across rebalances"
    );
    sakura::assert_ledger_tiles(c.flight, EVENTS as i64, "the rebalances");

    // Every member committed part of the stream.
    for m in ["member-a", "member-b", "member-c"] {
        let log = std::fs::read_to_string(tmp.path().join(format!("{m}.log"))).unwrap();
        assert!(
            log.contains("committed table=raw.telemetry"),
            "{m} never committed:\n{log}"
        );
    }
    let b_log = std::fs::read_to_string(tmp.path().join("member-b.log")).unwrap();
    assert!(
        b_log.contains("sakura ingesting:") && !b_log.contains("flight grpc://"),
        "member-b was not an ingest-only process:\n{b_log}"
    );
    let check = python::run(
        "delta_check.py",
        &[data.join("raw/telemetry").to_str().unwrap()],
    );
    assert_eq!(check["duckdb_rows"], EVENTS, "{check}");
    assert_eq!(check["duckdb_distinct_pairs"], EVENTS, "{check}");
}
