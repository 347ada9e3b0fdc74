//! Running the real `sakura` binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::procs::{Proc, http, wait_for};

/// The binary under test: this build's, or `SAKURA_TEST_BIN` (to run the suite against another
/// build, e.g. to show a new test fails without its fix).
pub(crate) fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SAKURA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sakura").into())
    })
}

pub(crate) fn command() -> Command {
    let mut c = Command::new(bin());
    c.env("RUST_LOG", "info,sakura_ingest=debug");
    c
}

/// Starts `sakura <args>` and waits for `/healthz` on `http_port`.
pub(crate) fn start(
    name: &str,
    args: &[&str],
    envs: &[(&str, String)],
    http_port: u16,
    log_dir: &Path,
) -> Proc {
    start_probed(name, args, envs, log_dir, || {
        http("GET", http_port, "/healthz").is_some_and(|(s, _)| s == 200)
    })
}

/// Starts `sakura <args>` and waits until `healthy` says so.
pub(crate) fn start_probed(
    name: &str,
    args: &[&str],
    envs: &[(&str, String)],
    log_dir: &Path,
    mut healthy: impl FnMut() -> bool,
) -> Proc {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(name, &mut cmd, log_dir);
    wait_for(&format!("{name} healthy"), Duration::from_secs(120), || {
        proc.assert_running();
        healthy().then_some(())
    });
    proc
}

/// Runs `sakura sql --format csv` against the Flight SQL server on `port`; returns the CSV rows
/// after the header, or the error output.
pub(crate) fn sql(port: u16, query: &str) -> Result<Vec<String>, String> {
    let out = Command::new(bin())
        .args([
            "sql",
            query,
            "--format",
            "csv",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect())
}

/// A single integer result of `query`.
pub(crate) fn sql_count(port: u16, query: &str) -> Result<i64, String> {
    let rows = sql(port, query)?;
    rows.first()
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no integer in {rows:?}"))
}

/// Writes a `sakura.toml` for `serve` into `dir`: `storage` is the `[storage]` section(s),
/// then Kafka (`group`, 6 s session timeout so Tansu's group joins are quick), telemetry only,
/// flushes of `flush_rows` or 0.5 s, tables re-read on every query, and the listen ports when
/// given (otherwise the test passes them as environment overrides). Authentication is off.
pub(crate) fn write_serve_config(
    dir: &Path,
    storage: &str,
    brokers: &str,
    group: &str,
    flush_rows: usize,
    ports: Option<(u16, u16)>,
) -> std::path::PathBuf {
    write_config(
        dir,
        storage,
        brokers,
        group,
        flush_rows,
        ports,
        "[auth]\nrequired = false\n",
    )
}

/// [`write_serve_config`] with local storage under `dir/data`, both ports, and `security` (the
/// `[auth]`, `[tls]`, `[roles]`, `[limits]` sections) instead of authentication off.
pub(crate) fn write_secured_config(
    dir: &Path,
    brokers: &str,
    group: &str,
    (flight, http): (u16, u16),
    security: &str,
) -> std::path::PathBuf {
    let storage = format!("[storage]\nurl = \"{}\"\n", dir.join("data").display());
    write_config(
        dir,
        &storage,
        brokers,
        group,
        200_000,
        Some((flight, http)),
        security,
    )
}

pub(crate) fn write_config(
    dir: &Path,
    storage: &str,
    brokers: &str,
    group: &str,
    flush_rows: usize,
    ports: Option<(u16, u16)>,
    security: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        r#"{storage}
[kafka]
brokers = "{brokers}"
group_id = "{group}"
session_timeout_ms = 6000
[ingest]
flush_rows = {flush_rows}
flush_age_ms = 500
[ingest.topics]
telemetry = "telemetry"
[engine]
refresh_interval_ms = 0
"#
    );
    if let Some((flight, http)) = ports {
        text.push_str(&format!(
            "[flight]\nlisten = \"127.0.0.1:{flight}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
        ));
    }
    text.push_str(security);
    let path = dir.join("sakura.toml");
    std::fs::write(&path, text).expect("write sakura.toml");
    path
}

/// `count(*)` and `count(DISTINCT (_partition, _offset))` of `raw.telemetry`.
pub(crate) fn counts(flight: u16) -> Result<(i64, i64), String> {
    let rows = sql(
        flight,
        "SELECT count(*), count(DISTINCT (_partition, _offset)) FROM raw.telemetry",
    )?;
    let row = rows.first().ok_or("no rows")?;
    let mut it = row
        .split(',')
        .map(|v| v.parse::<i64>().map_err(|e| e.to_string()));
    Ok((it.next().ok_or("no count")??, it.next().ok_or("no pairs")??))
}

/// Waits (up to `timeout`) until `raw.telemetry` holds `total` rows, then asserts it holds
/// exactly `total` rows with `total` distinct `(_partition, _offset)`, and still does a few
/// flush intervals later (nothing arrives late).
pub(crate) fn assert_exactly_once(
    serve: &mut Proc,
    flight: u16,
    total: i64,
    timeout: Duration,
    after: &str,
) {
    let done = wait_for(&format!("{total} rows after {after}"), timeout, || {
        serve.assert_running();
        counts(flight).ok().filter(|(n, _)| *n >= total)
    });
    assert_eq!(done, (total, total), "loss or duplicates after {after}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        counts(flight).unwrap(),
        (total, total),
        "late rows after {after}"
    );
    assert_ledger_tiles(flight, total, after);
}

/// `system.ingest_ledger` agrees with `raw.telemetry`: its files hold `total` rows, and per
/// Kafka partition their offset ranges tile 0..=last with no gap and no overlap — every
/// committed file is visible exactly once and none from an interrupted attempt is.
pub(crate) fn assert_ledger_tiles(flight: u16, total: i64, after: &str) {
    let rows = sql(
        flight,
        "SELECT partition, first_offset, last_offset, rows FROM system.ingest_ledger \
         WHERE table_name = 'raw.telemetry' ORDER BY partition, first_offset",
    )
    .unwrap();
    let mut next: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut sum = 0;
    for row in &rows {
        let v: Vec<i64> = row.split(',').map(|x| x.parse().unwrap()).collect();
        let (partition, first, last, n) = (v[0], v[1], v[2], v[3]);
        let expected = next.get(&partition).copied().unwrap_or(0);
        assert_eq!(
            first, expected,
            "ledger after {after}: partition {partition} has a file starting at {first}, expected {expected}"
        );
        assert_eq!(
            n,
            last - first + 1,
            "ledger after {after}: file {row} holds a gap"
        );
        next.insert(partition, last + 1);
        sum += n;
    }
    assert_eq!(sum, total, "ledger after {after}: rows of its files");
}

/// Starts `sakura serve --config <config>` and waits for `/healthz` on `http_port`.
pub(crate) fn serve(name: &str, config: &Path, http_port: u16, log_dir: &Path) -> Proc {
    let config = config.to_str().expect("UTF-8 config path");
    start(
        name,
        &["serve", "--config", config],
        &[],
        http_port,
        log_dir,
    )
}

/// The `[storage]` sections for bucket `lake` (prefix `sakura`) on the S3 server at `endpoint`.
pub(crate) fn s3_storage(endpoint: &str) -> String {
    format!(
        "[storage]\nurl = \"s3://lake/sakura\"\n[storage.s3]\nendpoint = \"{endpoint}\"\nallow_http = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\""
    )
}

/// The `n` column of `sql`'s single row, asked over the HTTP API with `token`; `None` when the
/// call fails.
pub(crate) fn curl_count(http_port: u16, token: &str, sql: &str) -> Option<i64> {
    let url = format!("http://127.0.0.1:{http_port}");
    let auth = format!("Authorization: Bearer {token}");
    let r = crate::curl::try_sql(&url, sql, &["-H", &auth]).ok()?;
    (r.status == 200).then(|| r.json()[0]["n"].as_i64())?
}

/// `sakura jobs ARGS --config CONFIG`: whether it succeeded, and its stdout and stderr.
pub(crate) fn jobs(config: &Path, args: &[&str]) -> (bool, String) {
    let out = command()
        .arg("jobs")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `cmd`, which must succeed; returns its stdout (the failure shows stdout and stderr).
pub(crate) fn succeed(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `sakura jobs run NAME`, which must succeed; returns its stdout.
pub(crate) fn run_job(config: &Path, name: &str) -> String {
    succeed(
        command()
            .args(["jobs", "run", name, "--config"])
            .arg(config),
    )
}
