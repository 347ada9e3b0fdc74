//! Object-store outages: the S3 server becomes unreachable three times for 10 s (a proxy drops
//! and refuses its connections) while events arrive; ingest retries, and in the end every event
//! is stored exactly once.

use std::time::Duration;

use crate::kafka::produce_telemetry;
use crate::procs::{free_port, http};
use crate::proxy::Proxy;
use crate::services::{S3Server, Tansu};
use crate::{python, sakura};

const EVENTS: u64 = 300_000;

#[test]
fn three_ten_second_outages_lose_and_duplicate_nothing() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("lake");
    tansu.create_topic("telemetry", 4);
    let proxy = Proxy::start(s3.port);

    let (flight, http_port) = (free_port(), free_port());
    let storage = sakura::s3_storage(&format!("http://127.0.0.1:{}", proxy.port));
    let config = sakura::write_serve_config(
        tmp.path(),
        &storage,
        &tansu.brokers(),
        "e2e-outages",
        20_000,
        Some((flight, http_port)),
    );
    // A small buffer cap, so each outage fills it and the consumer has to pause.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "flush_rows = 20000",
        "flush_rows = 20000\nmax_buffered_messages = 40000",
    );
    std::fs::write(&config, text).unwrap();
    let mut serve = sakura::serve("serve", &config, http_port, tmp.path());

    let per_round = EVENTS / 3;
    for round in 0..3 {
        // A third of the stream arrives before the cut, the rest while the store is down, so
        // the buffer reaches its cap during every outage.
        let (from, to) = (round * per_round, (round + 1) * per_round);
        produce_telemetry(&tansu.brokers(), from, from + per_round / 3);
        std::thread::sleep(Duration::from_millis(1500));
        proxy.cut();
        produce_telemetry(&tansu.brokers(), from + per_round / 3, to);
        std::thread::sleep(Duration::from_secs(10));
        proxy.restore();
        serve.assert_running();
    }

    sakura::assert_exactly_once(
        &mut serve,
        flight,
        EVENTS as i64,
        Duration::from_secs(240),
        "three object-store outages",
    );
    let log = serve.output();
    assert!(
        log.contains("flush failed; buffer kept"),
        "the outages did not hit a commit:\n{log}"
    );
    // Backpressure: the buffer stopped at its cap and the partitions were paused, then resumed.
    let (_, metrics) = http("GET", http_port, "/metrics").unwrap();
    let pauses: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sakura_ingest_pauses_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(pauses >= 1, "the consumer never paused:\n{metrics}");
    assert!(
        log.contains("partitions resumed"),
        "the partitions were not resumed:\n{log}"
    );

    let check = python::run(
        "delta_check.py",
        &["s3://lake/sakura/raw/telemetry", &s3.endpoint()],
    );
    assert_eq!(check["duckdb_rows"], EVENTS, "{check}");
    assert_eq!(check["duckdb_distinct_pairs"], EVENTS, "{check}");
    let status = serve.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "serve did not stop cleanly:\n{}",
        serve.output()
    );
}
