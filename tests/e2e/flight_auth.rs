//! `sakura serve` with authentication required: unmodified pyarrow.flight and ADBC clients
//! authenticate with Basic at the handshake, static API tokens and an identity provider's JWTs
//! (a JWKS file), and every bad credential is refused with UNAUTHENTICATED and a reason.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::procs::free_port;
use crate::services::Tansu;
use crate::{curl, python, sakura};

/// `sakura auth hash-password` of `password`.
fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = sakura::command()
        .args(["auth", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `sakura auth new-token`: (token, the `[[auth.tokens]]` snippet).
fn new_token(name: &str) -> (String, String) {
    let out = sakura::command()
        .args(["auth", "new-token", name, "--roles", "reader"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    let snippet = text[text.find("[[auth.tokens]]").unwrap()..].to_string();
    (token, snippet)
}

fn sakura_sql(flight: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new(sakura::bin())
        .args([
            "sql",
            "SELECT count(*) FROM raw.telemetry",
            "--format",
            "csv",
        ])
        .args(["--endpoint", &format!("grpc://127.0.0.1:{flight}")])
        .args(args)
        .env_remove("SAKURA_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    })
    .into_owned();
    (out.status.success(), text)
}

#[test]
fn clients_authenticate_and_bad_credentials_are_refused() {
    let tmp = crate::procs::test_dir();
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 1);
    let issuer = "https://idp.example.com/";
    let tokens = python::run(
        "jwt_tokens.py",
        &[tmp.path().to_str().unwrap(), issuer, "sakura-api"],
    );
    let (api_token, token_snippet) = new_token("grafana");
    let password = "correct horse battery staple";
    let (flight, http_port) = (free_port(), free_port());
    let config = sakura::write_secured_config(
        tmp.path(),
        &tansu.brokers(),
        "e2e-auth",
        (flight, http_port),
        &format!(
            r#"[auth]
token_secret = "a shared secret of the fleet"
[[auth.users]]
name = "alice"
password_hash = "{hash}"
roles = ["analyst"]
{token_snippet}
[auth.jwt]
jwks_file = "{jwks}"
issuer = "{issuer}"
audience = "sakura-api"
[roles.analyst]
read = ["raw.*"]
[roles.reader]
read = ["raw.*"]
"#,
            hash = hash_password(password),
            jwks = tmp.path().join("jwks.json").display(),
        ),
    );
    let _serve = sakura::serve("serve-auth", &config, http_port, tmp.path());

    let uri = format!("grpc://127.0.0.1:{flight}");
    let out = python::run(
        "auth_client.py",
        &[&uri, "alice", password, &api_token, &tokens.to_string()],
    );
    let expect = |case: &str, want: &str| {
        let got = out[case]
            .as_str()
            .unwrap_or_else(|| panic!("no {case}: {out}"));
        assert!(
            got.starts_with(want),
            "{case}: expected {want:?}, got {got:?}\n{out}"
        );
    };
    for ok in [
        "pyarrow_basic_handshake",
        "pyarrow_api_token",
        "pyarrow_jwt_valid",
        "adbc_username_password",
        "adbc_api_token",
        "adbc_jwt",
    ] {
        expect(ok, "ok");
    }
    for (case, reason) in [
        ("pyarrow_no_credentials", "no credentials"),
        ("pyarrow_list_flights_no_credentials", "no credentials"),
        (
            "pyarrow_basic_wrong_password",
            "unknown user or wrong password",
        ),
        (
            "pyarrow_basic_unknown_user",
            "unknown user or wrong password",
        ),
        (
            "pyarrow_basic_header_on_a_call",
            "Basic credentials are accepted by the handshake only",
        ),
        ("pyarrow_wrong_api_token", "unknown API token"),
        ("pyarrow_unknown_scheme", "unsupported authorization scheme"),
        ("pyarrow_jwt_expired", "token expired"),
        ("pyarrow_jwt_wrong_issuer", "token has the wrong issuer"),
        ("pyarrow_jwt_wrong_audience", "token has the wrong audience"),
        (
            "pyarrow_jwt_bad_signature",
            "token signature does not verify",
        ),
        (
            "pyarrow_jwt_unknown_kid",
            "token signed by a key not in the JWKS",
        ),
        ("pyarrow_jwt_not_yet_valid", "token not yet valid"),
        ("pyarrow_jwt_no_expiry", "token lacks the \"exp\" claim"),
        (
            "pyarrow_jwt_forged_hs256",
            "token signature does not verify",
        ),
    ] {
        // pyarrow's message carries the server's status message after its own prefix.
        let got = out[case].as_str().unwrap_or_default();
        assert!(
            got.starts_with("UNAUTHENTICATED") && got.contains(reason),
            "{case}: expected UNAUTHENTICATED with {reason:?}, got {got:?}"
        );
    }
    for case in [
        "adbc_no_credentials",
        "adbc_wrong_password",
        "adbc_expired_jwt",
    ] {
        let got = out[case].as_str().unwrap_or_default();
        assert!(
            got != "ok" && got.to_lowercase().contains("unauthenticated"),
            "{case}: expected an UNAUTHENTICATED failure, got {got:?}"
        );
    }

    // `sakura sql` with each kind of credential.
    assert_eq!(
        sakura_sql(flight, &["--token", &api_token]),
        (true, "count(*)\n0\n".into())
    );
    let (ok, text) = sakura_sql(flight, &["--user", "alice", "--password", password]);
    assert!(ok, "{text}");
    let (ok, text) = sakura_sql(flight, &[]);
    assert!(!ok && text.contains("no credentials"), "{text}");
    let (ok, text) = sakura_sql(flight, &["--user", "alice", "--password", "nope"]);
    assert!(!ok && text.contains("wrong password"), "{text}");

    // The HTTP API (curl) takes the same credentials, and Basic directly.
    let url = format!("http://127.0.0.1:{http_port}");
    let count = "SELECT count(*) AS n FROM raw.telemetry";
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let basic = format!("alice:{password}");
    let jwt = |name: &str| bearer(tokens[name].as_str().unwrap());
    for args in [
        vec!["-u", basic.as_str()],
        vec!["-H", &bearer(&api_token)],
        vec!["-H", &jwt("valid")],
    ] {
        let r = curl::sql(&url, count, &args);
        assert_eq!((r.status, r.json()), (200, json!([{"n": 0}])), "{args:?}");
    }
    for (args, reason) in [
        (vec![], "no credentials"),
        (vec!["-u", "alice:nope"], "unknown user or wrong password"),
        (vec!["-H", &bearer("sak_not-a-token")], "unknown API token"),
        (vec!["-H", &jwt("expired")], "token expired"),
        (vec!["-H", &jwt("wrong_issuer")], "wrong issuer"),
        (vec!["-H", &jwt("wrong_audience")], "wrong audience"),
        (
            vec!["-H", &jwt("bad_signature")],
            "signature does not verify",
        ),
        (
            vec!["-H", "Authorization: Digest x"],
            "unsupported authorization scheme",
        ),
    ] {
        let r = curl::sql(&url, count, &args);
        assert_eq!(r.status, 401, "{args:?}: {}", r.text());
        assert_eq!(r.error_code(), "UNAUTHENTICATED", "{args:?}");
        assert!(r.text().contains(reason), "{args:?}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.contains("Bearer")),
            "{args:?}: {}",
            r.headers
        );
    }
    // Probes, metrics and the API description need no credentials.
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let r = curl::curl(&[&format!("{url}{path}")]).unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    let doc = curl::curl(&[&format!("{url}/api/v1/openapi.json")])
        .unwrap()
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/sql"]["post"].is_object(), "{doc}");
}
