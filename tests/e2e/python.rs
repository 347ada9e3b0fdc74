//! Running the external Python clients in `tests/clients/` with the test venv.

use std::process::Command;

use crate::procs::{repo_root, tool};

/// Runs `tests/clients/<script>` with `args`; returns its stdout parsed as JSON, failing the test
/// with the script's output when it fails.
pub(crate) fn run(script: &str, args: &[&str]) -> serde_json::Value {
    let path = repo_root().join("tests/clients").join(script);
    let out = Command::new(tool("venv/bin/python"))
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no JSON result ({e}):\n{stdout}"))
}
