//! `curl` against the HTTP API: the unmodified command-line client users run.

use std::process::Command;

/// One HTTP exchange as curl saw it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The response headers, lower-cased names (`name: value` per line).
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The `error.code` of a JSON error body.
    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs `curl <args>`; `Err((exit code, stderr))` when curl itself fails (connection refused,
/// TLS handshake failure, transfer cut short).
pub(crate) fn curl(args: &[&str]) -> Result<Reply, (i32, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-D"])
        .arg(&headers)
        .args(["-w", "%{stderr}%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), stderr));
    }
    let status = stderr
        .trim()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status from curl: {stderr}"));
    Ok(Reply {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: out.stdout,
    })
}

/// `POST <url>/api/v1/sql` with `sql` as the body and the extra curl `args` (credentials,
/// `Accept`, TLS files); `Err` when curl itself fails.
pub(crate) fn try_sql(url: &str, sql: &str, args: &[&str]) -> Result<Reply, (i32, String)> {
    let mut all = vec!["-X", "POST", "--data-binary", sql];
    all.extend_from_slice(args);
    let endpoint = format!("{url}/api/v1/sql");
    all.push(&endpoint);
    curl(&all)
}

/// [`try_sql`], failing the test when curl fails.
pub(crate) fn sql(url: &str, sql: &str, args: &[&str]) -> Reply {
    try_sql(url, sql, args).unwrap_or_else(|(code, e)| panic!("curl {sql:?} failed ({code}): {e}"))
}
