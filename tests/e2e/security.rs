//! What an outside probe of `sakura serve` broke, each case against the real server with
//! unmodified clients (ADBC, pyarrow.flight, curl): statement shapes that overflowed a stack,
//! session tokens that outlived their credential, limits walked around by bound parameter rows
//! and allocating functions, destructive writes, forgeable audit lines, password checks that
//! told users apart and starved queries, and errors that quoted rows a filter hides.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kafka::produce_telemetry;
use crate::procs::{Proc, free_port, test_dir, wait_for};
use crate::services::Tansu;
use crate::{curl, python, sakura};

const ADMIN_TOKEN: &str = "sak_security-admin";
/// A token whose caller has no role at all: it may read nothing, but it may send SQL.
const NOBODY_TOKEN: &str = "sak_security-nobody";
const ETL_TOKEN: &str = "sak_security-etl";

/// A serving node over Tansu with `rows` telemetry rows (services svc-0..svc-6), the admin,
/// role-less and etl tokens, and `extra` config sections.
struct Node {
    _tansu: Tansu,
    serve: Proc,
    flight: u16,
    http: u16,
    config: std::path::PathBuf,
}

impl Node {
    fn start(dir: &Path, rows: u64, extra: &str) -> Self {
        let tansu = Tansu::start(dir);
        tansu.create_topic("telemetry", 1);
        if rows > 0 {
            produce_telemetry(&tansu.brokers(), 0, rows);
        }
        let (flight, http) = (free_port(), free_port());
        let config = sakura::write_secured_config(
            dir,
            &tansu.brokers(),
            "e2e-security",
            (flight, http),
            &format!(
                r#"{extra}
[[auth.tokens]]
name = "operator"
hash = "{admin}"
roles = ["admin"]
[[auth.tokens]]
name = "nobody"
hash = "{nobody}"
roles = []
[[auth.tokens]]
name = "etl"
hash = "{etl}"
roles = ["etl"]
[roles.etl]
read = ["raw.*"]
write = ["curated.*"]
"#,
                admin = flight::token_hash(ADMIN_TOKEN),
                nobody = flight::token_hash(NOBODY_TOKEN),
                etl = flight::token_hash(ETL_TOKEN),
            ),
        );
        let serve = sakura::serve("serve-security", &config, http, dir);
        let node = Self {
            _tansu: tansu,
            serve,
            flight,
            http,
            config,
        };
        if rows > 0 {
            wait_for(&format!("{rows} rows"), Duration::from_secs(60), || {
                (node.count("SELECT count(*) AS n FROM raw.telemetry") == Some(rows as i64))
                    .then_some(())
            });
        }
        node
    }

    fn uri(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.flight)
    }

    fn count(&self, sql: &str) -> Option<i64> {
        sakura::curl_count(self.http, ADMIN_TOKEN, sql)
    }

    /// The server is up and answers a query.
    fn assert_alive(&mut self) {
        self.serve.assert_running();
        assert_eq!(
            self.count("SELECT 1 AS n"),
            Some(1),
            "the server stopped answering"
        );
    }

    /// `sql` over the HTTP API with `token`, the statement sent from a file (it may be larger
    /// than a command-line argument may be).
    fn http_sql(&self, dir: &Path, token: &str, sql: &str) -> curl::Reply {
        let file = dir.join("statement.sql");
        std::fs::write(&file, sql).unwrap();
        let auth = format!("Authorization: Bearer {token}");
        let body = format!("@{}", file.display());
        curl::curl(&[
            "-X",
            "POST",
            "-H",
            &auth,
            "--data-binary",
            &body,
            &format!("http://127.0.0.1:{}/api/v1/sql", self.http),
        ])
        .unwrap()
    }

    /// The audit lines of the log so far.
    fn audit_lines(&self) -> Vec<String> {
        self.serve
            .output()
            .lines()
            .filter(|l| l.contains("sakura::audit"))
            .map(str::to_string)
            .collect()
    }

    /// The process's peak resident memory, MiB.
    fn peak_rss_mib(&self) -> u64 {
        proc_status_kib(self.serve.pid(), "VmHWM") / 1024
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// CPU-seconds the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn repeated(head: &str, link: &str, n: usize) -> String {
    let mut s = String::with_capacity(head.len() + link.len() * n);
    s.push_str(head);
    for i in 0..n {
        s.push_str(&link.replace("{i}", &i.to_string()));
    }
    s
}

#[test]
fn flat_chains_ten_times_the_crashing_size_are_refused_and_the_server_stays_up() {
    let tmp = test_dir();
    let mut node = Node::start(tmp.path(), 0, "");
    // The probe's four shapes at ten times the 2,000 (or 5,000) terms that aborted the
    // process, and the other chains the parser builds in a loop.
    let series = "SELECT count(*) FROM generate_series(1, 100) t WHERE";
    let shapes = json!({
        "plus": repeated("SELECT 1", "+1", 20_000),
        "or": repeated(&format!("{series} value = 0"), " OR value = {i}", 20_000),
        "and": repeated(&format!("{series} true"), " AND true", 50_000),
        "concat": repeated("SELECT 'a'", "||'a'", 50_000),
        "casts": repeated("SELECT 1", "::BIGINT", 20_000),
        "is_null": repeated("SELECT 1", " IS NULL", 20_000),
        "union": repeated("SELECT 1", " UNION ALL SELECT 1", 20_000),
        "joins": repeated(
            "SELECT count(*) FROM generate_series(1, 1) t",
            " JOIN generate_series(1, 1) t{i} ON true",
            20_000
        ),
        "ctes": repeated(
            "WITH a AS (SELECT 1 AS x)",
            ", a{i} AS (SELECT * FROM a)",
            20_000
        ) + " SELECT * FROM a",
        // Just under the limit, each shape plans and runs (the default leaves room on a
        // worker thread's stack, in a debug build too), and gives the right answer.
        "or_within_limit": repeated(&format!("{series} value = 0"), " OR value = {i}", 450),
        "plus_within_limit": repeated("SELECT 1", "+1", 999),
        "concat_within_limit": repeated("SELECT length('a'", "||'a'", 998) + ")",
        "casts_within_limit": repeated("SELECT 1", "::BIGINT", 999),
        "union_within_limit": repeated("SELECT count(*) FROM (SELECT 1", " UNION ALL SELECT 1", 498) + ")",
        "joins_within_limit": repeated(
            "SELECT count(*) FROM generate_series(1, 1) t",
            " JOIN generate_series(1, 1) t{i} ON true",
            300
        ),
    });
    let shapes_file = tmp.path().join("shapes.json");
    std::fs::write(&shapes_file, shapes.to_string()).unwrap();
    let out = python::run(
        "security_probe.py",
        &[
            "chains",
            &node.uri(),
            NOBODY_TOKEN,
            shapes_file.to_str().unwrap(),
        ],
    );
    for shape in [
        "plus", "or", "and", "concat", "casts", "is_null", "union", "joins", "ctes",
    ] {
        for path in ["info", "ticket", "prepare"] {
            let got = out[shape][path].as_str().unwrap();
            assert!(
                got.starts_with("INVALID_ARGUMENT") && got.contains("limits.max_expression_depth"),
                "{shape} via {path}: {got}"
            );
        }
        node.serve.assert_running();
    }
    for path in ["info", "ticket"] {
        for (shape, want) in [
            ("or_within_limit", "v:100"),
            ("plus_within_limit", "v:1000"),
            ("concat_within_limit", "v:999"),
            ("casts_within_limit", "v:1"),
            ("union_within_limit", "v:499"),
            ("joins_within_limit", "v:1"),
        ] {
            assert_eq!(out[shape][path], want, "{shape} via {path}: {out}");
        }
    }
    assert_eq!(out["or_within_limit"]["prepare"], "prepared", "{out}");
    // The HTTP API, with a statement over limits.max_sql_bytes too.
    for sql in [
        shapes["or"].as_str().unwrap().to_string(),
        format!("SELECT 1 -- {}", "x".repeat(1_100_000)),
    ] {
        let r = node.http_sql(tmp.path(), NOBODY_TOKEN, &sql);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.error_code(), "INVALID_ARGUMENT", "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("limits.max_expression_depth")
                || message.contains("limits.max_sql_bytes"),
            "{message}"
        );
    }
    node.assert_alive();
    assert!(
        !node.serve.output().contains("overflowed its stack"),
        "{}",
        node.serve.output()
    );
}

/// The cases of `security_probe.py` with `mode` and `args`.
fn probe(mode: &str, args: &[&str]) -> Value {
    let mut all = vec![mode];
    all.extend_from_slice(args);
    python::run("security_probe.py", &all)
}

#[test]
fn bound_parameter_rows_are_limited_and_one_deadline_covers_every_row() {
    let tmp = test_dir();
    let mut node = Node::start(
        tmp.path(),
        0,
        // max_parameter_rows is its default, 1,000.
        "[limits]\nquery_timeout_ms = 3000\n",
    );
    let uri = node.uri();
    // Tens of milliseconds a row: 1,000 rows would run far past the 3 s limit.
    let slow = "SELECT count(*) AS n FROM generate_series(1, 3000000) t WHERE value > ?";
    let out = probe("prepared", &[&uri, ADMIN_TOKEN, slow, "200000"]);
    let bind = out["bind"].as_str().unwrap();
    assert!(
        bind.starts_with("INVALID_ARGUMENT") && bind.contains("limits.max_parameter_rows = 1000"),
        "{out}"
    );
    // A handle made by hand (handles are client-held) is refused before it runs.
    let forged = out["forged"].as_str().unwrap();
    assert!(
        forged.starts_with("INVALID_ARGUMENT") && forged.contains("limits.max_parameter_rows"),
        "{out}"
    );
    node.assert_alive();

    let out = probe("prepared", &[&uri, ADMIN_TOKEN, slow, "1000"]);
    assert_eq!(out["bind"], "ok", "{out}");
    let run = out["run"].as_str().unwrap();
    assert!(
        run.starts_with("DEADLINE_EXCEEDED") && run.contains("query_timeout_ms = 3000"),
        "{out}"
    );
    let line = node
        .audit_lines()
        .into_iter()
        .rfind(|l| l.contains("DeadlineExceeded") && l.contains("generate_series(1, 3000000)"))
        .unwrap_or_else(|| panic!("no audit line: {}", node.serve.output()));
    let ms: u64 = field(&line, "duration_ms").parse().unwrap();
    println!(
        "1,000 bound rows: ended after {ms} ms (limit 3000 ms); client saw {}s",
        out["run_s"]
    );
    assert!(ms < 6_000, "the deadline did not cover every row: {line}");

    // A client that reads one batch and goes away stops the rest of the rows.
    let before = cpu_seconds(node.serve.pid());
    let out = probe("disconnect", &[&uri, ADMIN_TOKEN, slow, "1000"]);
    assert_eq!(out["first_batch_rows"], 1, "{out}");
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(node.serve.pid()) - before;
    let line = wait_for(
        "the disconnected query's audit line",
        Duration::from_secs(10),
        || {
            node.audit_lines()
                .into_iter()
                .rfind(|l| l.contains("outcome=\"disconnected\""))
        },
    );
    println!("after the disconnect: {used:.2} CPU-s in 3 s; {line}");
    assert!(
        used < 1.5,
        "the server kept working after the client went away ({used:.2} CPU-s in 3 s)"
    );
    node.assert_alive();
}

/// The value of `key=` in a log line (quoted values unquoted); the last one, since a quoted
/// value before it may hold the same text.
fn field(line: &str, key: &str) -> String {
    let start = line
        .rfind(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut escaped = false;
        for c in quoted.chars() {
            match (escaped, c) {
                (true, c) => {
                    out.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => out.push(c),
            }
        }
        return out;
    }
    rest.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn allocating_functions_cannot_walk_past_the_memory_limit() {
    let tmp = test_dir();
    // The default limits: max_query_memory_mb = 1024 is on.
    let mut node = Node::start(tmp.path(), 2_000, "");
    let before = node.peak_rss_mib();
    let out = probe(
        "concurrently",
        &[
            &node.uri(),
            NOBODY_TOKEN,
            "3",
            "SELECT length(repeat('x', 1000000000))",
        ],
    );
    for o in out["outcomes"].as_array().unwrap() {
        let o = o.as_str().unwrap();
        assert!(
            o.starts_with("RESOURCE_EXHAUSTED") && o.contains("limits.max_query_memory_mb"),
            "{out}"
        );
    }
    for sql in [
        "SELECT length(lpad('x', 1000000000))",
        "SELECT cardinality(range(1000000000))",
        "SELECT length(s) FROM (SELECT repeat('ab', 200000000) AS s)",
    ] {
        let r = node.http_sql(tmp.path(), NOBODY_TOKEN, sql);
        assert_eq!(r.error_code(), "RESOURCE_EXHAUSTED", "{sql}: {}", r.text());
    }
    let peak = node.peak_rss_mib();
    println!("peak RSS: {before} MiB before, {peak} MiB after three 1 GB repeats at once");
    assert!(peak < 768, "peak RSS {peak} MiB");
    // What fits runs, and the distinct count of tuples is not refused under the limit.
    assert_eq!(
        node.count("SELECT length(repeat('x', 1000000)) AS n"),
        Some(1_000_000)
    );
    assert_eq!(
        node.count("SELECT count(DISTINCT (_partition, _offset)) AS n FROM raw.telemetry"),
        Some(2_000)
    );
    node.assert_alive();
}

#[test]
fn only_appends_and_creates_are_written_and_parameters_are_refused_in_writes() {
    let tmp = test_dir();
    let mut node = Node::start(tmp.path(), 1_200, "");
    let uri = node.uri();
    // Run in this order (the client runs them in key order).
    let updates = json!({
        "1_create": {"update": "CREATE TABLE curated.telemetry_1h AS SELECT host, value FROM raw.telemetry"},
        "2_overwrite": {"update": "INSERT OVERWRITE curated.telemetry_1h SELECT * FROM curated.telemetry_1h WHERE false"},
        "3_overwrite_as_query": "INSERT OVERWRITE curated.telemetry_1h SELECT * FROM curated.telemetry_1h WHERE false",
        "4_explain_analyze_overwrite": "EXPLAIN ANALYZE INSERT OVERWRITE curated.telemetry_1h SELECT * FROM curated.telemetry_1h WHERE false",
        "5_location": {"update": format!("CREATE TABLE curated.elsewhere LOCATION '{}' AS SELECT 1 AS a", tmp.path().join("elsewhere").display())},
        "6_placeholder": {"update": "INSERT INTO curated.telemetry_1h SELECT host, value FROM raw.telemetry WHERE value > ?"},
        "7_delete": {"update": "DELETE FROM curated.telemetry_1h"},
        "8_append": {"update": "INSERT INTO curated.telemetry_1h VALUES ('h', 1.0)"},
        "9_count": "SELECT count(*) FROM curated.telemetry_1h",
    });
    let out = python::run("rbac_client.py", &[&uri, ETL_TOKEN, &updates.to_string()]);
    assert_eq!(out["1_create"], "v:1200", "{out}");
    for case in [
        "2_overwrite",
        "3_overwrite_as_query",
        "4_explain_analyze_overwrite",
        "5_location",
        "7_delete",
    ] {
        let got = out[case].as_str().unwrap();
        assert!(got.starts_with("INVALID_ARGUMENT"), "{case}: {got}");
    }
    assert!(
        out["2_overwrite"]
            .as_str()
            .unwrap()
            .contains("INSERT OVERWRITE"),
        "{out}"
    );
    assert!(
        out["5_location"].as_str().unwrap().contains("LOCATION"),
        "{out}"
    );
    let got = out["6_placeholder"].as_str().unwrap();
    assert!(
        got.starts_with("UNIMPLEMENTED") && got.contains("parameters in statement updates"),
        "{out}"
    );
    assert_eq!(out["8_append"], "v:1", "{out}");
    assert_eq!(out["9_count"], "v:1201", "{out}");
    assert!(
        !tmp.path().join("elsewhere").exists(),
        "LOCATION was followed"
    );
    // Nothing was ever removed from the table's log.
    let log = tmp.path().join("data/curated/telemetry_1h/_delta_log");
    for entry in std::fs::read_dir(&log).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!text.contains("\"remove\""), "a file was removed: {text}");
    }
    node.assert_alive();
}

#[test]
fn audit_lines_are_one_per_query_escaped_bounded_and_include_refusals() {
    let tmp = test_dir();
    let mut node = Node::start(tmp.path(), 0, "");
    let forged = "SELECT 1 AS n /* \nINFO sakura::audit: query subject=admin auth=token outcome=ok\u{1b}[2J */";
    let r = node.http_sql(tmp.path(), NOBODY_TOKEN, forged);
    assert_eq!(r.status, 200, "{}", r.text());
    // A 200,000-element IN list (over limits.max_sql_bytes, refused) and a 100,000-element
    // one (run).
    let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let huge = format!(
        "SELECT count(*) AS n FROM generate_series(1, 10) t WHERE value IN ({})",
        list(200_000)
    );
    let r = node.http_sql(tmp.path(), NOBODY_TOKEN, &huge);
    assert_eq!(r.error_code(), "INVALID_ARGUMENT", "{}", r.text());
    let big = format!(
        "SELECT count(*) AS n FROM generate_series(1, 10) t WHERE value IN ({})",
        list(100_000)
    );
    let r = node.http_sql(tmp.path(), NOBODY_TOKEN, &big);
    assert_eq!(r.status, 200, "{}", r.text());
    // Refused at authentication, over HTTP and Flight; refused while planned (GetFlightInfo).
    let r = node.http_sql(tmp.path(), "sak_not-a-token", "SELECT 1");
    assert_eq!(r.status, 401);
    let out = python::run(
        "rbac_client.py",
        &[
            &node.uri(),
            NOBODY_TOKEN,
            r#"{"missing": "SELECT * FROM raw.no_such_table"}"#,
        ],
    );
    assert!(
        out["missing"].as_str().unwrap().starts_with("NOT_FOUND"),
        "{out}"
    );
    let _ = python::run(
        "rbac_client.py",
        &[&node.uri(), "sak_wrong", r#"{"q": "SELECT 1"}"#],
    );
    std::thread::sleep(Duration::from_millis(500));

    let log = node.serve.output();
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    let lines = node.audit_lines();
    // Each line's own record starts right after its first `sakura::audit: `; the forged text
    // may only appear later, inside a quoted value.
    let forged_lines: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.split_once("sakura::audit: ")
                .is_some_and(|(_, record)| record.starts_with("query subject=admin"))
        })
        .collect();
    assert!(forged_lines.is_empty(), "a forged line: {forged_lines:?}");
    let line = lines
        .iter()
        .find(|l| l.contains("query subject=admin auth=token outcome=ok"))
        .unwrap();
    assert!(
        line.contains("subject=\"nobody\"") && line.contains("\\n") && line.contains("\\u{1b}"),
        "{line}"
    );
    assert_eq!(field(line, "outcome"), "ok", "{line}");
    for (sql, n) in [(&huge, 200_000), (&big, 100_000)] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("sql_bytes={} ", sql.len())))
            .unwrap_or_else(|| panic!("no audit line of the {n}-element list"));
        assert!(line.len() < 8_192, "an audit line of {} bytes", line.len());
        assert_eq!(field(line, "sql_sha256").len(), 64, "{line}");
    }
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains(" refused ") || l.ends_with(" refused") || l.contains("refused peer=")
        })
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("peer=127.0.0.1:") && l.contains("/api/v1/sql")),
        "{lines:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("peer=127.0.0.1:") && l.contains("FlightService")),
        "{lines:#?}"
    );
    let planned = lines
        .iter()
        .find(|l| l.contains("no_such_table"))
        .unwrap_or_else(|| panic!("no audit line of the refused plan: {lines:#?}"));
    assert!(field(planned, "query_id").len() >= 32, "{planned}");
    node.assert_alive();
}

#[test]
fn password_checks_cost_the_same_for_every_user_and_cannot_starve_queries() {
    let tmp = test_dir();
    let password = "correct horse battery staple";
    let hash = {
        use std::io::Write;
        let mut child = sakura::command()
            .args(["auth", "hash-password"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let mut node = Node::start(
        tmp.path(),
        2_000,
        &format!(
            "[[auth.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nroles = [\"admin\"]\n"
        ),
    );
    let uri = node.uri();
    let out = probe("logins", &[&uri, "alice", password, "5"]);
    let (known, unknown) = (
        out["known_wrong_median_s"].as_f64().unwrap(),
        out["unknown_median_s"].as_f64().unwrap(),
    );
    println!("wrong password: known user {known:.3} s, unknown user {unknown:.3} s (medians of 5)");
    assert!(
        out["unknown"]
            .as_str()
            .unwrap()
            .contains("unknown user or wrong password"),
        "{out}"
    );
    assert!(
        unknown > known * 0.5,
        "an unknown user is told apart by time: {known:.3} s vs {unknown:.3} s"
    );
    // Queries before and during 16 clients sending wrong passwords.
    let quiet = probe("starve", &[&uri, "alice", ADMIN_TOKEN, "0", "6"]);
    let busy = probe("starve", &[&uri, "alice", ADMIN_TOKEN, "16", "12"]);
    let median = |v: &Value| {
        let mut s: Vec<f64> = v["query_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        s.sort_by(f64::total_cmp);
        (s[s.len() / 2], s[s.len() - 1], s.len())
    };
    let (q_med, q_max, q_n) = median(&quiet);
    let (b_med, b_max, b_n) = median(&busy);
    println!(
        "query latency: quiet median {q_med:.3} s max {q_max:.3} s ({q_n} queries); under 16 \
         password guessers median {b_med:.3} s max {b_max:.3} s ({b_n} queries); guesses: {} \
         tried, {} refused as busy, {} checked",
        busy["attempts"], busy["refused_busy"], busy["refused_password"]
    );
    assert_eq!(busy["query_errors"], json!([]), "{busy}");
    assert!(
        busy["refused_busy"].as_u64().unwrap() > 0,
        "no guess was turned away: {busy}"
    );
    assert!(busy["other"].as_array().unwrap().is_empty(), "{busy}");
    assert!(
        b_med < (q_med * 5.0).max(0.25),
        "queries starved: median {q_med:.3} s -> {b_med:.3} s"
    );
    node.assert_alive();
}

#[test]
fn a_row_filtered_caller_sees_no_values_in_errors_and_only_client_settings() {
    let tmp = test_dir();
    let issuer = "https://idp.example.com/";
    let tokens = python::run(
        "jwt_tokens.py",
        &[tmp.path().to_str().unwrap(), issuer, "sakura-api"],
    );
    let mut node = Node::start(
        tmp.path(),
        7_000,
        &format!(
            r#"[auth.jwt]
jwks_file = "{jwks}"
issuer = "{issuer}"
audience = "sakura-api"
[roles.analyst]
read = ["raw.telemetry"]
row_filters = {{ "raw.telemetry" = "service = {{claim.service}}" }}
[roles.tenant]
read = ["raw.telemetry"]
row_filters = {{ "raw.telemetry" = "service = {{claim.tenant}}" }}
"#,
            jwks = tmp.path().join("jwks.json").display(),
        ),
    );
    let uri = node.uri();
    let queries = json!({
        "own_rows": "SELECT count(*) FROM raw.telemetry",
        "cast": "SELECT sum(CAST(service AS INT)) FROM raw.telemetry",
        "cast_where": "SELECT count(*) FROM raw.telemetry WHERE CAST(service AS INT) > 0",
        "show_all": "SHOW ALL",
        "show_one": "SHOW datafusion.execution.batch_size",
        "settings": "SELECT count(*) FROM information_schema.df_settings",
        "df_settings": "SELECT string_agg(name, ',' ORDER BY name) FROM information_schema.df_settings",
    });
    let analyst = python::run(
        "rbac_client.py",
        &[
            &uri,
            tokens["valid"].as_str().unwrap(),
            &queries.to_string(),
        ],
    );
    assert_eq!(analyst["own_rows"], "v:1000", "{analyst}");
    let tenant = python::run(
        "rbac_client.py",
        &[
            &uri,
            tokens["numeric_tenant"].as_str().unwrap(),
            &queries.to_string(),
        ],
    );
    for (who, out) in [("analyst", &analyst), ("tenant", &tenant)] {
        for case in ["cast", "cast_where"] {
            let got = out[case].as_str().unwrap();
            assert!(!got.starts_with("v:"), "{who} {case}: {got}");
            assert!(
                !got.contains("svc-"),
                "{who} {case} shows a row's value: {got}"
            );
            assert!(got.contains("withheld"), "{who} {case}: {got}");
        }
    }
    // The numeric claim makes the filter itself fail on other services' rows: withheld too.
    let got = tenant["own_rows"].as_str().unwrap();
    assert!(!got.contains("svc-"), "{got}");
    // Settings: a caller sees the few a client needs, an admin all of them.
    let visible = analyst["df_settings"].as_str().unwrap();
    assert_eq!(
        visible,
        "v:datafusion.catalog.default_catalog,datafusion.catalog.default_schema,datafusion.execution.time_zone,datafusion.sql_parser.dialect,datafusion.sql_parser.enable_ident_normalization",
        "{analyst}"
    );
    assert_eq!(analyst["settings"], "v:5", "{analyst}");
    assert_eq!(
        analyst["show_all"], "v:datafusion.catalog.default_catalog",
        "{analyst}"
    );
    assert_eq!(analyst["show_one"], "v:None", "{analyst}");
    let admin = python::run("rbac_client.py", &[&uri, ADMIN_TOKEN, &queries.to_string()]);
    let all: i64 = admin["settings"].as_str().unwrap()[2..].parse().unwrap();
    assert!(all > 100, "{admin}");
    assert_eq!(
        admin["show_one"], "v:datafusion.execution.batch_size",
        "{admin}"
    );
    // The audit log keeps the full error for the operator.
    assert!(
        node.serve.output().contains("Cannot cast string"),
        "the audit line lost the error"
    );
    node.assert_alive();
}

#[test]
fn session_tokens_end_with_their_credential() {
    let tmp = test_dir();
    let issuer = "https://idp.example.com/";
    // The provider's keys and JWKS (tokens are minted again once the node runs).
    python::run(
        "jwt_tokens.py",
        &[tmp.path().to_str().unwrap(), issuer, "sakura-api"],
    );
    let password = "correct horse battery staple";
    let hash = flight::hash_password(password).unwrap();
    let user_and_token = |with: bool| {
        if !with {
            return String::new();
        }
        format!(
            "[[auth.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nroles = [\"reader\"]\n\
             [[auth.tokens]]\nname = \"dashboards\"\nhash = \"{}\"\nroles = [\"reader\"]\n",
            flight::token_hash("sak_dashboards")
        )
    };
    let section = |with: bool| {
        format!(
            r#"[auth]
token_secret = "one secret for the fleet"
{users}
[auth.jwt]
jwks_file = "{jwks}"
issuer = "{issuer}"
audience = "sakura-api"
leeway_s = 0
[roles.reader]
read = ["raw.*"]
[roles.analyst]
read = ["raw.*"]
"#,
            users = user_and_token(with),
            jwks = tmp.path().join("jwks.json").display(),
        )
    };
    let mut node = Node::start(tmp.path(), 0, &section(true));
    let uri = node.uri();
    // Fresh tokens from the same keys: the short-lived one has six seconds from now.
    let tokens = python::run(
        "jwt_tokens.py",
        &[tmp.path().to_str().unwrap(), issuer, "sakura-api"],
    );
    let short = tokens["short_lived"].as_str().unwrap();
    let expires = tokens["short_lived_exp"].as_u64().unwrap();
    let out = python::run(
        "session_probe.py",
        &["issue", &uri, short, "alice", password, "sak_dashboards"],
    );
    for case in ["jwt", "renewed", "basic", "token"] {
        assert_eq!(out[case]["query"], "ok", "{case}: {out}");
    }
    // The JWT expires: so do the session made from it and the one renewed from that.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    let after = wait_for("the JWT's sessions to end", Duration::from_secs(30), || {
        let r = python::run(
            "session_probe.py",
            &[
                "use",
                &uri,
                out["jwt"]["session"].as_str().unwrap(),
                out["renewed"]["session"].as_str().unwrap(),
            ],
        );
        r["0"]["query"]
            .as_str()
            .unwrap()
            .starts_with("UNAUTHENTICATED")
            .then_some(r)
    });
    println!(
        "JWT sessions refused {:.1} s after the JWT's exp: {after}",
        started.elapsed().as_secs_f64()
    );
    for i in ["0", "1"] {
        for what in ["query", "renew"] {
            let got = after[i][what].as_str().unwrap();
            assert!(got.starts_with("UNAUTHENTICATED"), "{i} {what}: {got}");
        }
    }
    // The user and the API token leave the config; the node restarts with the same secret.
    node.serve.terminate(Duration::from_secs(30));
    let config = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, config.replace(&user_and_token(true), "")).unwrap();
    node.serve = sakura::serve("serve-security-2", &node.config, node.http, tmp.path());
    let restarted = Instant::now();
    let gone = python::run(
        "session_probe.py",
        &[
            "use",
            &uri,
            out["basic"]["session"].as_str().unwrap(),
            out["token"]["session"].as_str().unwrap(),
        ],
    );
    println!(
        "removed credentials' sessions checked {:.1} s after the restart: {gone}",
        restarted.elapsed().as_secs_f64()
    );
    for i in ["0", "1"] {
        for what in ["query", "renew"] {
            let got = gone[i][what].as_str().unwrap();
            assert!(
                got.starts_with("UNAUTHENTICATED") && got.contains("no longer valid"),
                "{i} {what}: {got}"
            );
        }
    }
    node.assert_alive();
}
