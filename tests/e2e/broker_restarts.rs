//! Broker restarts: the Tansu broker (its log kept on the S3 server, so it survives) is killed
//! and restarted three times while events arrive; every event is stored exactly once.

use std::time::Duration;

use crate::kafka::produce_telemetry;
use crate::procs::{free_port, wait_for};
use crate::sakura;
use crate::services::{S3Server, Tansu};

const ROUND: u64 = 40_000;

#[test]
fn three_broker_restarts_lose_and_duplicate_nothing() {
    let tmp = crate::procs::test_dir();
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("tansu");
    let aws = [
        ("AWS_ENDPOINT", s3.endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    let mut tansu = Tansu::start_with_storage(tmp.path(), "s3://tansu/", &aws);
    tansu.create_topic("telemetry", 4);

    let data = tmp.path().join("data");
    let (flight, http_port) = (free_port(), free_port());
    let config = sakura::write_serve_config(
        tmp.path(),
        &format!("[storage]\nurl = \"{}\"", data.display()),
        &tansu.brokers(),
        "e2e-broker-restarts",
        10_000,
        Some((flight, http_port)),
    );
    let mut serve = sakura::serve("serve", &config, http_port, tmp.path());

    produce_telemetry(&tansu.brokers(), 0, ROUND);
    for round in 1..=3 {
        // Restart while the consumer is busy: some of the last round is stored, not all of it.
        let least = ((round - 1) * ROUND + 1) as i64;
        wait_for("ingest to be under way", Duration::from_secs(120), || {
            serve.assert_running();
            sakura::counts(flight).ok().filter(|(n, _)| *n >= least)
        });
        tansu.restart(Duration::from_secs(3));
        serve.assert_running();
        produce_telemetry(&tansu.brokers(), round * ROUND, (round + 1) * ROUND);
    }
    let total = 4 * ROUND as i64;
    sakura::assert_exactly_once(
        &mut serve,
        flight,
        total,
        Duration::from_secs(300),
        "three broker restarts",
    );
    let status = serve.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "serve did not stop cleanly:\n{}",
        serve.output()
    );
}
