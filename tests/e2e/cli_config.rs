//! Configuration errors reach the user with the key they are about.

use std::process::Command;

use crate::sakura::bin;

fn serve_with(toml: &str, envs: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sakura.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--config", path.to_str().unwrap()]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_values_and_unknown_keys_are_reported_with_their_key() {
    let (ok, err) = serve_with("[ingest]\nflush_rows = \"lots\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("ingest.flush_rows"), "{err}");

    let (ok, err) = serve_with("[kafka]\nbrokerz = \"x\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("brokerz"), "{err}");

    let (ok, err) = serve_with("", &[("SAKURA__FLIGHT__LISTEN", "not-an-address")]);
    assert!(!ok);
    assert!(err.contains("flight.listen"), "{err}");

    let (ok, err) = serve_with("[ingest.topics]\nmetrics = \"nope\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("ingest.topics.metrics"), "{err}");

    // Authentication is required by default: serving with no credentials configured is an
    // error that says what to do, and so are malformed credentials.
    let (ok, err) = serve_with("", &[]);
    assert!(!ok);
    assert!(err.contains("auth.required"), "{err}");
    let (ok, err) = serve_with("[[auth.tokens]]\nname = \"grafana\"\nhash = \"abc\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("auth.tokens[grafana].hash"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent/sakura.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config") && err.contains("does not exist"),
        "{err}"
    );
}
