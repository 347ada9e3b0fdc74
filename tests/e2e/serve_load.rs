//! Load: 64 concurrent clients (48 over the unmodified ADBC Flight SQL driver, 16 over the HTTP
//! API) run a mix of dashboard queries, prepared statements and metadata calls for 60 s while
//! ingest keeps writing, with zero errors; beside them a query over
//! `limits.max_query_memory_mb` fails with RESOURCE_EXHAUSTED each time it is tried.

use std::time::Duration;

use crate::kafka::produce_telemetry;
use crate::procs::{free_port, wait_for};
use crate::services::Tansu;
use crate::{python, sakura};

#[test]
fn sixty_four_clients_for_a_minute_without_an_error() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 4);
    produce_telemetry(&tansu.brokers(), 0, 100_000);
    let token = "sak_load-test-token";
    let (flight, http_port) = (free_port(), free_port());
    let config = sakura::write_secured_config(
        tmp.path(),
        &tansu.brokers(),
        "e2e-load",
        (flight, http_port),
        &format!(
            r#"[[auth.tokens]]
name = "dashboards"
hash = "{hash}"
roles = ["reader"]
[roles.reader]
read = ["raw.*"]
[limits]
max_concurrent_queries = 96
max_query_memory_mb = 64
"#,
            hash = flight::token_hash(token),
        ),
    );
    let serve = sakura::serve("serve-load", &config, http_port, tmp.path());
    wait_for("100,000 rows", Duration::from_secs(120), || {
        let n = sakura::curl_count(http_port, token, "SELECT count(*) AS n FROM raw.telemetry");
        (n == Some(100_000)).then_some(())
    });
    // Ingest keeps committing while the clients query.
    let brokers = tansu.brokers();
    let producer = std::thread::spawn(move || {
        for k in 0..10u64 {
            let from = 100_000 + k * 5_000;
            produce_telemetry(&brokers, from, from + 5_000);
            std::thread::sleep(Duration::from_secs(5));
        }
    });

    let out = python::run(
        "load_client.py",
        &[
            &format!("grpc://127.0.0.1:{flight}"),
            &format!("http://127.0.0.1:{http_port}"),
            token,
            "60",
            "48",
            "16",
        ],
    );
    producer.join().unwrap();
    eprintln!("load: {out}");
    assert_eq!(out["error_count"], 0, "errors under load: {out}");
    let ran = |k: &str| out["ran"][k].as_u64().unwrap();
    assert!(
        ran("adbc") > 0 && ran("http") > 0 && ran("metadata") > 0,
        "{out}"
    );
    assert!(
        out["hog"]["resource_exhausted"].as_u64().unwrap() >= 3,
        "the over-limit query must fail with RESOURCE_EXHAUSTED each time: {out}"
    );
    assert_eq!(out["hog"]["other"], serde_json::json!([]), "{out}");
    let n = sakura::curl_count(http_port, token, "SELECT count(*) AS n FROM raw.telemetry");
    assert!(
        n.is_some_and(|n| n >= 100_000),
        "still serving after the load"
    );
    drop(serve);
}
