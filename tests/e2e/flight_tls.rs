//! `sakura serve` with TLS and mTLS on Flight SQL (and authentication): unmodified pyarrow.flight
//! and ADBC clients connect with a client certificate; plaintext, a missing or untrusted client
//! certificate and an untrusted server are refused; `sakura sql` connects over mTLS.

use std::path::Path;
use std::process::Command;

use crate::procs::free_port;
use crate::services::Tansu;
use crate::{curl, python, sakura};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed, and
/// a self-signed "rogue" client certificate, all P-256, in `dir`.
pub(crate) fn make_certificates(dir: &Path) {
    let key = |name: &str| {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{name}.ec"),
            ],
        );
        // PKCS#8, which every client library reads.
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{name}.ec"),
                "-out",
                &format!("{name}.key"),
            ],
        );
    };
    // A key and a self-signed certificate `name.pem` for `cn`.
    let self_signed = |name: &str, cn: &str| {
        key(name);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-sha256",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    };
    self_signed("ca", "sakura test CA");
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        key(name);
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    self_signed("rogue", "rogue");
}

#[test]
fn mtls_clients_connect_and_others_are_refused() {
    let tmp = crate::procs::test_dir();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs);
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 1);
    let token = "sak_tls-test-token";
    let (flight, http_port) = (free_port(), free_port());
    let config = sakura::write_secured_config(
        tmp.path(),
        &tansu.brokers(),
        "e2e-tls",
        (flight, http_port),
        &format!(
            r#"[tls]
cert_file = "{certs}/server.pem"
key_file = "{certs}/server.key"
client_ca_file = "{certs}/ca.pem"
[[auth.tokens]]
name = "dashboards"
hash = "{hash}"
roles = ["reader"]
[roles.reader]
read = ["raw.*"]
"#,
            certs = certs.display(),
            hash = flight::token_hash(token),
        ),
    );
    let url = format!("https://127.0.0.1:{http_port}");
    let ca = certs.join("ca.pem");
    let (cert, key) = (certs.join("client.pem"), certs.join("client.key"));
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let mtls = ["--cacert", ca, "--cert", cert, "--key", key];
    let healthz = format!("{url}/healthz");
    let _serve = sakura::start_probed(
        "serve-tls",
        &["serve", "--config", config.to_str().unwrap()],
        &[],
        tmp.path(),
        || curl::curl(&[&mtls[..], &[healthz.as_str()]].concat()).is_ok_and(|r| r.status == 200),
    );

    // HTTP: the same certificate and client CA. With a client certificate and a token the SQL
    // API answers; plaintext, no or an untrusted client certificate, and an untrusted server
    // fail in the handshake (curl's exit code says which).
    let auth = format!("Authorization: Bearer {token}");
    let r = curl::sql(
        &url,
        "SELECT 1 AS one",
        &[&mtls[..], &["-H", &auth]].concat(),
    );
    assert_eq!((r.status, r.text()), (200, r#"[{"one":1}]"#.to_string()));
    let r = curl::sql(&url, "SELECT 1 AS one", &mtls);
    assert_eq!(r.status, 401, "mTLS does not replace authentication");
    let rogue = certs.join("rogue.pem");
    let rogue_key = certs.join("rogue.key");
    // curl's exit codes: 1 (the TLS alert read as an HTTP/0.9 reply), 52 (empty reply) or 56
    // (receive failure) for plaintext; 35 (handshake alert) or 56 for a refused client
    // certificate; 60 when the server's certificate does not verify.
    let (plaintext, refused, untrusted) = (&[1, 52, 56][..], &[35, 56][..], &[60][..]);
    for (name, args, plain, codes) in [
        ("plaintext to the TLS port", vec![], true, plaintext),
        (
            "no client certificate",
            vec!["--cacert", ca],
            false,
            refused,
        ),
        (
            "untrusted client certificate",
            vec![
                "--cacert",
                ca,
                "--cert",
                rogue.to_str().unwrap(),
                "--key",
                rogue_key.to_str().unwrap(),
            ],
            false,
            refused,
        ),
        (
            "server not trusted",
            vec!["--cert", cert, "--key", key],
            false,
            untrusted,
        ),
    ] {
        let target = if plain {
            format!("http://127.0.0.1:{http_port}/api/v1/sql")
        } else {
            format!("{url}/api/v1/sql")
        };
        let got = curl::curl(
            &[
                &args[..],
                &["-X", "POST", "-d", "SELECT 1", "-H", &auth, &target],
            ]
            .concat(),
        );
        match got {
            Err((code, _)) if codes.contains(&code) => {}
            other => panic!("{name}: expected a failed connection, got {other:?}"),
        }
    }

    let addr = format!("127.0.0.1:{flight}");
    let out = python::run("tls_client.py", &[&addr, certs.to_str().unwrap(), token]);
    for ok in ["pyarrow_mtls", "adbc_mtls"] {
        assert_eq!(out[ok], "ok", "{ok}: {out}");
    }
    assert!(
        out["pyarrow_mtls_without_token"]
            .as_str()
            .unwrap()
            .starts_with("UNAUTHENTICATED"),
        "mTLS does not replace authentication: {out}"
    );
    for refused in [
        "pyarrow_plaintext_to_tls_port",
        "pyarrow_no_client_certificate",
        "pyarrow_untrusted_client_certificate",
        "pyarrow_server_not_trusted",
        "adbc_no_client_certificate",
    ] {
        let got = out[refused].as_str().unwrap();
        assert!(
            got.starts_with("FlightUnavailableError") || got.to_lowercase().contains("unavailable"),
            "{refused}: expected the connection to fail (UNAVAILABLE), got {got:?}"
        );
    }

    // `sakura sql` over mTLS with a token; and without a client certificate it fails.
    let sql = |extra: &[&str]| {
        Command::new(sakura::bin())
            .args(["sql", "SELECT 1 AS one", "--format", "csv"])
            .args([
                "--endpoint",
                &format!("grpc+tls://{addr}"),
                "--token",
                token,
            ])
            .args(["--tls-ca", certs.join("ca.pem").to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = sql(&[
        "--tls-cert",
        certs.join("client.pem").to_str().unwrap(),
        "--tls-key",
        certs.join("client.key").to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "one\n1\n");
    let refused = sql(&[]);
    assert!(!refused.status.success());
}
