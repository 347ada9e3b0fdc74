//! `sakura serve` against a real Kafka-protocol broker (Tansu) and a real S3 server (moto, with
//! conditional writes): 200,000 events arrive exactly once; after a stop and restart, 50,000 more
//! make exactly 250,000 — no loss, no duplicates — and outside readers agree.

use std::time::Duration;

use crate::kafka::produce_telemetry;
use crate::procs::{free_port, wait_for};
use crate::services::{S3Server, Tansu};
use crate::{python, sakura};

fn counts(flight: u16) -> Result<(i64, i64), String> {
    let rows = sakura::sql(
        flight,
        "SELECT count(*) AS n, count(DISTINCT (_partition, _offset)) AS pairs FROM raw.telemetry",
    )?;
    let row = rows.first().ok_or("no rows")?;
    let mut it = row
        .split(',')
        .map(|v| v.parse::<i64>().map_err(|e| e.to_string()));
    Ok((it.next().ok_or("no count")??, it.next().ok_or("no pairs")??))
}

#[test]
fn serve_ingests_exactly_once_across_a_restart_on_s3() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("lake");
    tansu.create_topic("telemetry", 4);

    let (flight, http_port) = (free_port(), free_port());
    let config = tmp.path().join("sakura.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[storage]
url = "s3://lake/sakura"
[storage.s3]
endpoint = "{endpoint}"
allow_http = true
access_key_id = "test"
secret_access_key = "test"
[kafka]
brokers = "{brokers}"
group_id = "e2e-exactly-once"
session_timeout_ms = 6000
[ingest]
flush_rows = 50000
flush_age_ms = 1000
[ingest.topics]
telemetry = "telemetry"
[engine]
refresh_interval_ms = 0
[flight]
listen = "127.0.0.1:{flight}"
[http]
listen = "127.0.0.1:{http_port}"
"#,
            endpoint = s3.endpoint(),
            brokers = tansu.brokers()
        ),
    )
    .unwrap();
    let args = ["serve", "--config", config.to_str().unwrap()];

    produce_telemetry(&tansu.brokers(), 0, 200_000);
    let mut serve = sakura::start("serve-1", &args, &[], http_port, tmp.path());
    let first = wait_for(
        "200,000 rows over Flight SQL",
        Duration::from_secs(240),
        || {
            serve.assert_running();
            counts(flight).ok().filter(|(n, _)| *n >= 200_000)
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
    let mut serve = sakura::start("serve-2", &args, &[], http_port, tmp.path());
    let second = wait_for(
        "250,000 rows over Flight SQL",
        Duration::from_secs(240),
        || {
            serve.assert_running();
            counts(flight).ok().filter(|(n, _)| *n >= 250_000)
        },
    );
    assert_eq!(
        second,
        (250_000, 250_000),
        "loss or duplicates after the restart"
    );
    // Nothing arrives late: a few more flush intervals change nothing.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(counts(flight).unwrap(), (250_000, 250_000));
    let seqs = sakura::sql_count(
        flight,
        "SELECT count(DISTINCT labels['seq']) FROM raw.telemetry",
    )
    .unwrap();
    assert_eq!(seqs, 250_000, "every produced event is present once");

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
