//! Protobuf topics and schema evolution end to end: Tansu → `sakura serve` → Delta on the S3
//! server, queried with the unmodified ADBC Flight SQL driver.
//!
//! - `telemetry` carries Protobuf (`sakura.v1.Telemetry` from schemas/proto/), with some
//!   messages that are not Protobuf at all;
//! - `events` is JSON with `evolution = "add_fields"`: new fields become columns, and a value of
//!   the wrong type for an added column is a dead letter;
//! - `logs` is JSON with `evolution = "dead_letter"`: an undeclared field is a dead letter.
//!
//! Every dead letter is also produced to the dead-letter topic, with headers saying why. After a
//! restart the added columns are read back from the Delta schema, not added again.

use std::time::Duration;

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, Value};

use crate::kafka::produce;
use crate::procs::{free_port, http, wait_for};
use crate::services::{S3Server, Tansu};
use crate::{python, sakura};

const TELEMETRY: u64 = 1_000;
const GARBAGE: u64 = 10;

/// `sakura.v1.Telemetry` number `i`, encoded.
fn telemetry_pb(i: u64) -> Vec<u8> {
    let desc = schemas::proto_message("telemetry").unwrap();
    let ts_desc = desc
        .get_field_by_name("ts")
        .unwrap()
        .kind()
        .as_message()
        .unwrap()
        .clone();
    let mut ts = DynamicMessage::new(ts_desc);
    ts.set_field_by_name("seconds", Value::I64(1_764_374_400 + i as i64));
    let mut m = DynamicMessage::new(desc);
    let s = |v: String| Value::String(v);
    m.set_field_by_name("ts", Value::Message(ts));
    m.set_field_by_name("host", s(format!("pb-host-{:02}", i % 20)));
    m.set_field_by_name("service", s("api".into()));
    m.set_field_by_name("metric", s("cpu_pct".into()));
    m.set_field_by_name("value", Value::F64(i as f64));
    m.set_field_by_name(
        "labels",
        Value::Map([(MapKey::String("seq".into()), s(i.to_string()))].into()),
    );
    m.encode_to_vec()
}

fn event(i: u64, extra: &str) -> (String, Vec<u8>) {
    (
        format!("k{i}"),
        format!(
            r#"{{"ts":{},"event_type":"module.deployed","project_id":"p{}"{extra}}}"#,
            1_764_374_400_000_000 + i,
            i % 3
        )
        .into_bytes(),
    )
}

fn log(i: u64, extra: &str) -> (String, Vec<u8>) {
    (
        format!("k{i}"),
        format!(
            r#"{{"ts":{},"level":"INFO","service":"api","message":"line {i}"{extra}}}"#,
            1_764_374_400_000_000 + i
        )
        .into_bytes(),
    )
}

fn config(
    dir: &std::path::Path,
    storage: &str,
    brokers: &str,
    ports: (u16, u16),
) -> std::path::PathBuf {
    let text = format!(
        r#"{storage}
[kafka]
brokers = "{brokers}"
group_id = "e2e-formats"
session_timeout_ms = 6000
[ingest]
flush_rows = 5000
flush_age_ms = 500
dead_letter_topic = "sakura-dead-letters"
[ingest.topics]
telemetry = {{ schema = "telemetry", format = "protobuf" }}
events = {{ schema = "events", evolution = "add_fields" }}
logs = {{ schema = "logs", evolution = "dead_letter" }}
[auth]
required = false
[engine]
refresh_interval_ms = 0
[flight]
listen = "127.0.0.1:{}"
[http]
listen = "127.0.0.1:{}"
"#,
        ports.0, ports.1
    );
    let path = dir.join("sakura.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn metric(http_port: u16, name: &str) -> u64 {
    let (_, text) = http("GET", http_port, "/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn protobuf_topics_and_schema_evolution_are_queryable_over_flight_sql() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("lake");
    for topic in ["telemetry", "events", "logs"] {
        tansu.create_topic(topic, 2);
    }
    tansu.create_topic("sakura-dead-letters", 1);
    let brokers = tansu.brokers();
    let (flight, http_port) = (free_port(), free_port());
    let cfg = config(
        tmp.path(),
        &sakura::s3_storage(&s3.endpoint()),
        &brokers,
        (flight, http_port),
    );
    let mut serve = sakura::serve("serve", &cfg, http_port, tmp.path());

    // Protobuf, with garbage mixed in.
    produce(
        &brokers,
        "telemetry",
        (0..TELEMETRY)
            .map(|i| (format!("k{i}"), telemetry_pb(i)))
            .chain((0..GARBAGE).map(|i| (format!("bad{i}"), b"\xff\xfe not protobuf".to_vec()))),
    );
    // Events: first in the declared shape, then with two new fields, then with a value of
    // the wrong type for one of them.
    produce(&brokers, "events", (0..500).map(|i| event(i, "")));
    let added = wait_for("the first events", Duration::from_secs(60), || {
        serve.assert_running();
        sakura::sql_count(flight, "SELECT count(*) FROM raw.events")
            .ok()
            .filter(|n| *n >= 500)
    });
    assert_eq!(added, 500);
    produce(
        &brokers,
        "events",
        (500..1000).map(|i| event(i, r#","region":"eu-west","retries":3"#)),
    );
    produce(
        &brokers,
        "events",
        (1000..1100).map(|i| event(i, r#","retries":"many""#)),
    );
    // Logs: an undeclared field is a dead letter under evolution = "dead_letter".
    produce(
        &brokers,
        "logs",
        (0..200)
            .map(|i| log(i, ""))
            .chain((200..250).map(|i| log(i, r#","extra":1"#))),
    );

    let expected_dead = GARBAGE + 100 + 50;
    wait_for("every message stored", Duration::from_secs(120), || {
        serve.assert_running();
        let n = |t: &str| sakura::sql_count(flight, &format!("SELECT count(*) FROM {t}")).ok();
        (n("raw.telemetry")? == TELEMETRY as i64
            && n("raw.events")? == 1000
            && n("raw.logs")? == 200
            && n("raw.dead_letters")? == expected_dead as i64)
            .then_some(())
    });

    let endpoint = format!("grpc://127.0.0.1:{flight}");
    let out = python::run(
        "adbc_query.py",
        &[
            &endpoint,
            "events",
            "SELECT count(*), count(region), sum(retries) FROM raw.events",
            "SELECT error_kind, count(*) FROM raw.dead_letters GROUP BY error_kind ORDER BY error_kind",
            "SELECT count(*), count(DISTINCT host), min(value), max(value), count(DISTINCT labels['seq']) FROM raw.telemetry",
            "SELECT error FROM raw.dead_letters WHERE error_kind = 'wrong_type' LIMIT 1",
            "SELECT error FROM raw.dead_letters WHERE error_kind = 'unknown_field' LIMIT 1",
        ],
    );
    let columns = &out["columns"];
    assert_eq!(columns["region"], "string", "{out}");
    assert_eq!(columns["retries"], "int64", "{out}");
    let r = &out["results"];
    assert_eq!(r[0], serde_json::json!([[1000, 500, 1500]]), "{out}");
    assert_eq!(
        r[1],
        serde_json::json!([
            ["invalid_protobuf", GARBAGE],
            ["unknown_field", 50],
            ["wrong_type", 100]
        ]),
        "{out}"
    );
    assert_eq!(
        r[2],
        serde_json::json!([[TELEMETRY, 20, 0.0, (TELEMETRY - 1) as f64, TELEMETRY]]),
        "{out}"
    );
    let wrong = r[3][0][0].as_str().unwrap();
    assert!(wrong.contains("retries"), "{wrong}");
    let unknown = r[4][0][0].as_str().unwrap();
    assert!(unknown.contains("\"extra\""), "{unknown}");
    assert_eq!(metric(http_port, "sakura_ingest_columns_added_total"), 2);

    // The dead-letter topic holds the same dead letters: original bytes, kind in a header.
    let dlq = crate::kafka::read_partition(
        &brokers,
        "sakura-dead-letters",
        expected_dead as usize,
        Duration::from_secs(60),
    );
    let mut kinds = std::collections::BTreeMap::new();
    for (headers, payload) in &dlq {
        *kinds
            .entry(headers["sakura.error_kind"].clone())
            .or_insert(0u64) += 1;
        if headers["sakura.error_kind"] == "invalid_protobuf" {
            assert_eq!(payload, b"\xff\xfe not protobuf");
            assert_eq!(headers["sakura.topic"], "telemetry");
        }
    }
    assert_eq!(
        kinds,
        [
            ("invalid_protobuf".to_string(), GARBAGE),
            ("unknown_field".to_string(), 50),
            ("wrong_type".to_string(), 100)
        ]
        .into(),
        "dead-letter topic"
    );

    // A restart reads the added columns back from the Delta schema: nothing is added again,
    // and new events fill them.
    let status = serve.terminate(Duration::from_secs(60));
    assert!(status.success(), "{}", serve.output());
    let mut serve = sakura::serve("serve-2", &cfg, http_port, tmp.path());
    produce(
        &brokers,
        "events",
        (1100..1200).map(|i| event(i, r#","region":"us-east","retries":1"#)),
    );
    let n = wait_for("events after the restart", Duration::from_secs(60), || {
        serve.assert_running();
        sakura::sql_count(flight, "SELECT count(region) FROM raw.events")
            .ok()
            .filter(|n| *n >= 600)
    });
    assert_eq!(n, 600);
    assert_eq!(
        sakura::sql_count(flight, "SELECT sum(retries) FROM raw.events").unwrap(),
        1600
    );
    assert_eq!(metric(http_port, "sakura_ingest_columns_added_total"), 0);
    assert!(serve.terminate(Duration::from_secs(60)).success());
}
