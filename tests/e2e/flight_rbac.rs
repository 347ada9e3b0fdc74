//! Roles over Flight SQL, checked with the unmodified ADBC driver: a JWT caller whose role reads
//! `raw.telemetry` through the row filter `service = {claim.service}` sees only its service's
//! rows whatever the query shape (subqueries, CTEs, UNION, joins, OR true, prepared statements),
//! does not see ungranted tables in queries, `information_schema` or `GetTables`, and a token
//! without the claim is refused; an API-token reader sees all of `raw` but not `system`.

use std::time::Duration;

use serde_json::json;

use crate::kafka::produce_telemetry;
use std::process::Command;

use crate::procs::{Proc, free_port, tool, wait_for, wait_port};
use crate::services::Tansu;
use crate::{curl, python, sakura};

#[test]
fn roles_grant_tables_and_row_filters_hold_for_every_query_shape() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 2);
    produce_telemetry(&tansu.brokers(), 0, 7_000); // services svc-0..svc-6, 1,000 each
    let issuer = "https://idp.example.com/";
    let tokens = python::run(
        "jwt_tokens.py",
        &[tmp.path().to_str().unwrap(), issuer, "sakura-api"],
    );
    let api_token = "sak_rbac-reader-token";
    let admin_token = "sak_rbac-admin-token";
    let writer_token = "sak_rbac-writer-token";
    let (flight, http_port, idp_port) = (free_port(), free_port(), free_port());
    let config = sakura::write_secured_config(
        tmp.path(),
        &tansu.brokers(),
        "e2e-rbac",
        (flight, http_port),
        &format!(
            r#"[[auth.tokens]]
name = "dashboards"
hash = "{reader}"
roles = ["reader"]
[[auth.tokens]]
name = "operator"
hash = "{admin}"
roles = ["admin"]
[auth.jwt]
jwks_url = "http://127.0.0.1:{idp_port}/jwks.json"
issuer = "{issuer}"
audience = "sakura-api"
[roles.analyst]
read = ["raw.telemetry", "raw.logs"]
row_filters = {{ "raw.telemetry" = "service = {{claim.service}}" }}
[roles.reader]
read = ["raw.*"]
[[auth.tokens]]
name = "etl"
hash = "{writer}"
roles = ["writer"]
[roles.writer]
read = ["raw.*"]
write = ["curated.*"]
[limits]
max_result_rows = 5000
query_timeout_ms = 3000
"#,
            reader = flight::token_hash(api_token),
            admin = flight::token_hash(admin_token),
            writer = flight::token_hash(writer_token),
        ),
    );
    // The identity provider publishes its JWKS over HTTP (loopback, so plain http is allowed).
    let idp_dir = tmp.path().join("idp");
    std::fs::create_dir_all(&idp_dir).unwrap();
    std::fs::copy(tmp.path().join("jwks.json"), idp_dir.join("jwks.json")).unwrap();
    let _idp = Proc::spawn(
        "idp",
        Command::new(tool("venv/bin/python"))
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(idp_port.to_string())
            .arg("--directory")
            .arg(&idp_dir),
        tmp.path(),
    );
    wait_port("the JWKS server", idp_port, Duration::from_secs(30));
    let serve = sakura::serve("serve-rbac", &config, http_port, tmp.path());
    let uri = format!("grpc://127.0.0.1:{flight}");
    wait_for("7,000 rows", Duration::from_secs(60), || {
        let out = python::run(
            "rbac_client.py",
            &[
                &uri,
                admin_token,
                r#"{"n": "SELECT count(*) FROM raw.telemetry"}"#,
            ],
        );
        (out["n"] == "v:7000").then_some(())
    });

    let jwt = tokens["valid"].as_str().unwrap();
    let queries = serde_json::json!({
        "count": "SELECT count(*) FROM raw.telemetry",
        "qualified": "SELECT count(*) FROM sakura.raw.telemetry",
        "subquery": "SELECT count(*) FROM (SELECT * FROM raw.telemetry) t",
        "cte": "WITH t AS (SELECT * FROM raw.telemetry) SELECT count(*) FROM t",
        "union": "SELECT count(*) FROM (SELECT _offset FROM raw.telemetry UNION ALL SELECT _offset FROM raw.telemetry WHERE service <> 'svc-3') u",
        "join": "SELECT count(*) FROM raw.telemetry a JOIN raw.telemetry b ON a._partition = b._partition AND a._offset = b._offset",
        "or_true": "SELECT count(*) FROM raw.telemetry WHERE service = 'svc-1' OR true",
        "in_subquery": "SELECT count(*) FROM raw.telemetry WHERE _offset IN (SELECT _offset FROM raw.telemetry)",
        "services": "SELECT count(DISTINCT service) FROM raw.telemetry",
        "other_service": "SELECT count(*) FROM raw.telemetry WHERE service = 'svc-1'",
        "prepared_other_service": ["SELECT count(*) FROM raw.telemetry WHERE service = ?", ["svc-1"]],
        "prepared_own_service": ["SELECT count(*) FROM raw.telemetry WHERE service = ?", ["svc-3"]],
        "info_schema": "SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema <> 'information_schema'",
        "ungranted_table": "SELECT count(*) FROM raw.events",
        "ungranted_system": "SELECT count(*) FROM system.ingest_ledger",
        "ungranted_in_join": "SELECT count(*) FROM raw.telemetry t JOIN raw.dead_letters d ON t._offset = d._offset",
    });
    let out = python::run("rbac_client.py", &[&uri, jwt, &queries.to_string()]);
    for case in [
        "count",
        "qualified",
        "subquery",
        "cte",
        "union",
        "join",
        "or_true",
        "in_subquery",
        "prepared_own_service",
    ] {
        assert_eq!(out[case], "v:1000", "{case} escaped the row filter: {out}");
    }
    assert_eq!(out["services"], "v:1", "{out}");
    assert_eq!(out["other_service"], "v:0", "{out}");
    assert_eq!(out["prepared_other_service"], "v:0", "{out}");
    assert_eq!(out["info_schema"], "v:raw.logs,raw.telemetry", "{out}");
    for case in ["ungranted_table", "ungranted_system", "ungranted_in_join"] {
        let got = out[case].as_str().unwrap();
        assert!(got.starts_with("NOT_FOUND"), "{case}: {got}");
    }
    assert_eq!(
        out["_tables"],
        serde_json::json!(["raw.logs", "raw.telemetry"]),
        "GetTables lists only granted tables: {out}"
    );

    // A token without the claim the row filter needs reads nothing: PERMISSION_DENIED.
    let no_claim = tokens["no_service_claim"].as_str().unwrap();
    let out = python::run(
        "rbac_client.py",
        &[
            &uri,
            no_claim,
            r#"{"count": "SELECT count(*) FROM raw.telemetry"}"#,
        ],
    );
    assert!(
        out["count"]
            .as_str()
            .unwrap()
            .starts_with("PERMISSION_DENIED")
            && out["count"].as_str().unwrap().contains("service"),
        "{out}"
    );

    // The reader sees every raw table unfiltered, and nothing of system.
    // Limits: a too-large result and a too-long query end with their statuses; the queries
    // after them run as usual.
    let reader = serde_json::json!({
        "too_many_rows": "SELECT * FROM raw.telemetry",
        "too_long": "SELECT count(*) FROM raw.telemetry a, raw.telemetry b, raw.telemetry c WHERE a.value + b.value + c.value > 1e9",
        "count": "SELECT count(*) FROM raw.telemetry",
        "events": "SELECT count(*) FROM raw.events",
        "ledger": "SELECT count(*) FROM system.ingest_ledger",
    });
    let out = python::run("rbac_client.py", &[&uri, api_token, &reader.to_string()]);
    let got = out["too_many_rows"].as_str().unwrap();
    assert!(
        got.starts_with("RESOURCE_EXHAUSTED") && got.contains("max_result_rows = 5000"),
        "{got}"
    );
    let got = out["too_long"].as_str().unwrap();
    assert!(
        got.starts_with("DEADLINE_EXCEEDED") && got.contains("query_timeout_ms = 3000"),
        "{got}"
    );
    assert_eq!(out["count"], "v:7000", "{out}");
    assert_eq!(out["events"], "v:0", "{out}");
    assert!(
        out["ledger"].as_str().unwrap().starts_with("NOT_FOUND"),
        "{out}"
    );
    let tables: Vec<String> = serde_json::from_value(out["_tables"].clone()).unwrap();
    assert!(
        tables.iter().all(|t| t.starts_with("raw.")) && tables.contains(&"raw.events".to_string()),
        "{out}"
    );

    // The HTTP API enforces the same grants, filters and limits, with HTTP statuses.
    let url = format!("http://127.0.0.1:{http_port}");
    let as_jwt = format!("Authorization: Bearer {jwt}");
    let as_reader = format!("Authorization: Bearer {api_token}");
    let count = |r: &curl::Reply| r.json()[0]["n"].clone();
    let r = curl::sql(
        &url,
        "SELECT count(*) AS n FROM raw.telemetry",
        &["-H", &as_jwt],
    );
    assert_eq!((r.status, count(&r)), (200, json!(1000)), "{}", r.text());
    let r = curl::sql(
        &url,
        r#"{"sql": "SELECT count(*) AS n FROM raw.telemetry WHERE service = ? OR true", "params": ["svc-1"]}"#,
        &["-H", &as_jwt, "-H", "Content-Type: application/json"],
    );
    assert_eq!((r.status, count(&r)), (200, json!(1000)), "{}", r.text());
    for (sql, token, status, code) in [
        ("SELECT count(*) FROM raw.events", &as_jwt, 404, "NOT_FOUND"),
        (
            "SELECT count(*) FROM system.ingest_ledger",
            &as_reader,
            404,
            "NOT_FOUND",
        ),
        (
            "SELECT _offset FROM raw.telemetry",
            &as_reader,
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (
            "SELECT count(*) FROM raw.telemetry a, raw.telemetry b, raw.telemetry c WHERE a.value + b.value + c.value > 1e9",
            &as_reader,
            504,
            "DEADLINE_EXCEEDED",
        ),
        ("SELEC 1", &as_reader, 400, "INVALID_ARGUMENT"),
        (
            "SELECT count(*) FROM raw.telemetry",
            &format!(
                "Authorization: Bearer {}",
                tokens["no_service_claim"].as_str().unwrap()
            ),
            403,
            "PERMISSION_DENIED",
        ),
    ] {
        let r = curl::sql(&url, sql, &["-H", token]);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_string()),
            "{sql}: {}",
            r.text()
        );
    }
    // The encodings, by Accept.
    let r = curl::sql(
        &url,
        "SELECT service, count(*) AS n FROM raw.telemetry GROUP BY 1",
        &["-H", &as_reader, "-H", "Accept: text/csv"],
    );
    assert_eq!(r.status, 200);
    let mut lines: Vec<String> = r.text().lines().map(String::from).collect();
    assert_eq!(lines[0], "service,n");
    lines.sort();
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert_eq!(lines[1], "svc-0,1000");
    let r = curl::sql(
        &url,
        "SELECT service, value FROM raw.telemetry WHERE service = 'svc-2'",
        &["-H", &as_reader, "-H", "Accept: application/x-ndjson"],
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert_eq!(r.text().lines().count(), 1000);
    let r = curl::sql(
        &url,
        "SELECT * FROM raw.telemetry",
        &[
            "-H",
            &as_jwt,
            "-H",
            "Accept: application/vnd.apache.arrow.stream",
        ],
    );
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body), None)
        .expect("an Arrow IPC stream");
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 1000, "the row filter holds over Arrow IPC too");

    // Writes: a role with `write = ["curated.*"]` creates and fills curated tables, through
    // DoPut statement updates (ADBC execute_update) and as statements sent as queries; read
    // roles, ingest-owned tables and row-filtered readers are refused.
    let writes = serde_json::json!({
        "ctas": {"update": "CREATE TABLE curated.per_service AS SELECT service, count(*) AS n FROM raw.telemetry GROUP BY service"},
        "ctas_again": {"update": "CREATE TABLE curated.per_service AS SELECT 1 AS n"},
        "ctas_if_not_exists": {"update": "CREATE TABLE IF NOT EXISTS curated.per_service AS SELECT 1 AS n"},
        "insert_update": {"update": "INSERT INTO curated.per_service VALUES ('svc-x', 5)"},
        "insert_as_query": "INSERT INTO curated.per_service SELECT 'svc-y', 7",
        "read_back": "SELECT sum(n) FROM curated.per_service",
        "into_raw": {"update": "INSERT INTO raw.telemetry SELECT * FROM raw.telemetry"},
        "drop": {"update": "DROP TABLE curated.per_service"},
    });
    let out = python::run("rbac_client.py", &[&uri, writer_token, &writes.to_string()]);
    assert_eq!(out["ctas"], "v:7", "{out}");
    assert!(
        out["ctas_again"]
            .as_str()
            .unwrap()
            .starts_with("ALREADY_EXISTS"),
        "{out}"
    );
    assert_eq!(out["ctas_if_not_exists"], "v:0", "{out}");
    assert_eq!(out["insert_update"], "v:1", "{out}");
    assert_eq!(out["insert_as_query"], "v:1", "{out}");
    assert_eq!(out["read_back"], "v:7012", "{out}");
    let got = out["into_raw"].as_str().unwrap();
    assert!(
        got.starts_with("PERMISSION_DENIED") && got.contains("not writable"),
        "{got}"
    );
    assert!(
        out["drop"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_ARGUMENT"),
        "{out}"
    );
    let denied = serde_json::json!({
        "reader_update": {"update": "INSERT INTO curated.per_service VALUES ('svc-z', 1)"},
        "reader_as_query": "INSERT INTO curated.per_service VALUES ('svc-z', 1)",
        "reader_ctas": {"update": "CREATE TABLE curated.mine AS SELECT 1 AS a"},
        "reader_sees_no_curated": "SELECT count(*) FROM curated.per_service",
    });
    let out = python::run("rbac_client.py", &[&uri, api_token, &denied.to_string()]);
    for case in ["reader_update", "reader_as_query", "reader_ctas"] {
        let got = out[case].as_str().unwrap();
        assert!(
            got.starts_with("PERMISSION_DENIED") && got.contains("may not write"),
            "{case}: {got}"
        );
    }
    assert!(
        out["reader_sees_no_curated"]
            .as_str()
            .unwrap()
            .starts_with("NOT_FOUND"),
        "{out}"
    );
    let r = curl::sql(
        &url,
        "INSERT INTO curated.per_service VALUES ('svc-h', 1)",
        &["-H", &as_reader],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "PERMISSION_DENIED".to_string()),
        "{}",
        r.text()
    );
    let as_writer = format!("Authorization: Bearer {writer_token}");
    let r = curl::sql(
        &url,
        "INSERT INTO curated.per_service VALUES ('svc-h', 1)",
        &["-H", &as_writer],
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!([{"rows_affected": 1}])),
        "{}",
        r.text()
    );

    // Key rotation: the provider adds a key; a token signed with it is refused until the server
    // re-fetches the JWKS, which the unknown key itself triggers (no restart).
    std::fs::copy(
        tmp.path().join("jwks-rotated.json"),
        idp_dir.join("jwks.json"),
    )
    .unwrap();
    let rotated = format!(
        "Authorization: Bearer {}",
        tokens["rotated"].as_str().unwrap()
    );
    wait_for("the rotated key", Duration::from_secs(30), || {
        let r = curl::sql(
            &url,
            "SELECT count(*) AS n FROM raw.telemetry",
            &["-H", &rotated],
        );
        (r.status == 200).then(|| assert_eq!(count(&r), json!(1000)))
    });
    assert!(
        serve.output().contains("JWKS refreshed"),
        "no refresh logged"
    );

    // The audit log: one line per query with who, what, rows, bytes, duration and outcome (text
    // values quoted and escaped, see the README's Audit log).
    let log = serve.output();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sakura::audit"))
        .collect();
    let has = |parts: &[&str]| audit.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    for expected in [
        &[
            "subject=\"alice@example.com\"",
            "auth=jwt",
            "rows=1",
            "bytes=",
            "duration_ms=",
            "outcome=\"ok\"",
        ][..],
        &[
            "subject=\"alice@example.com\"",
            "raw.events",
            "outcome=\"error: NotFound",
        ],
        &[
            "subject=\"alice@example.com\"",
            "outcome=\"error: PermissionDenied",
        ],
        &[
            "subject=\"dashboards\"",
            "auth=token",
            "system.ingest_ledger",
            "outcome=\"error: NotFound",
        ],
        &["subject=\"operator\"", "outcome=\"ok\""],
        &[
            "subject=\"dashboards\"",
            "outcome=\"error: ResourceExhausted",
        ],
        &[
            "subject=\"dashboards\"",
            "outcome=\"error: DeadlineExceeded",
        ],
    ] {
        assert!(
            has(expected),
            "no audit line with {expected:?}:\n{}",
            audit.join("\n")
        );
    }
}
