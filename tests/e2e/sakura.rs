//! Running the real `sakura` binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::procs::{Proc, http, wait_for};

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sakura")
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
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(name, &mut cmd, log_dir);
    wait_for(
        &format!("{name} /healthz"),
        Duration::from_secs(120),
        || {
            proc.assert_running();
            http("GET", http_port, "/healthz")
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        },
    );
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
