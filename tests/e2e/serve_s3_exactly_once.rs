//! `sakura serve` against a real Kafka-protocol broker (Tansu) and a real S3 server (moto, with
//! conditional writes): 200,000 events arrive exactly once; after a stop and restart, 50,000 more
//! make exactly 250,000 — no loss, no duplicates — and outside readers agree.

use std::time::Duration;

use crate::kafka::produce_telemetry;
use crate::procs::{free_port, wait_for};
use crate::services::{S3Server, Tansu};
use crate::{python, sakura};

#[test]
fn serve_ingests_exactly_once_across_a_restart_on_s3() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("lake");
    tansu.create_topic("telemetry", 4);

    let (flight, http_port) = (free_port(), free_port());
    let storage = sakura::s3_storage(&s3.endpoint());
    let config = sakura::write_serve_config(
        tmp.path(),
        &storage,
        &tansu.brokers(),
        "e2e-exactly-once",
        50_000,
        Some((flight, http_port)),
    );

    produce_telemetry(&tansu.brokers(), 0, 200_000);
    let mut serve = sakura::serve("serve-1", &config, http_port, tmp.path());
    let first = wait_for(
        "200,000 rows over Flight SQL",
        Duration::from_secs(240),
        || {
            serve.assert_running();
            sakura::counts(flight).ok().filter(|(n, _)| *n >= 200_000)
        },
    );
    assert_eq!(
        first,
        (200_000, 200_000),
        "loss or duplicates after the first run"
    );
    let dates =
        sakura::sql_count(flight, "SELECT count(DISTINCT date) FROM raw.telemetry").unwrap();
    assert_eq!(dates, 3, "events span three days, so three date partitions");

    let status = serve.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "serve did not stop cleanly:\n{}",
        serve.output()
    );

    produce_telemetry(&tansu.brokers(), 200_000, 250_000);
    let mut serve = sakura::serve("serve-2", &config, http_port, tmp.path());
    let second = wait_for(
        "250,000 rows over Flight SQL",
        Duration::from_secs(240),
        || {
            serve.assert_running();
            sakura::counts(flight).ok().filter(|(n, _)| *n >= 250_000)
        },
    );
    assert_eq!(
        second,
        (250_000, 250_000),
        "loss or duplicates after the restart"
    );
    // Nothing arrives late: a few more flush intervals change nothing.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(sakura::counts(flight).unwrap(), (250_000, 250_000));
    let seqs = sakura::sql_count(
        flight,
        "SELECT count(DISTINCT labels['seq']) FROM raw.telemetry",
    )
    .unwrap();
    assert_eq!(seqs, 250_000, "every produced event is present once");
    sakura::assert_ledger_tiles(flight, 250_000, "the restart");

    // Outside readers of the S3 table agree.
    let check = python::run(
        "delta_check.py",
        &["s3://lake/sakura/raw/telemetry", &s3.endpoint()],
    );
    assert_eq!(check["deltalake_rows"], 250_000, "{check}");
    assert_eq!(check["duckdb_rows"], 250_000, "{check}");
    assert_eq!(check["duckdb_distinct_pairs"], 250_000, "{check}");

    let status = serve.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "serve did not stop cleanly:\n{}",
        serve.output()
    );
}
