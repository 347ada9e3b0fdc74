//! An identity provider's JSON Web Key Set: from a file (read once at start) or from a URL
//! (fetched at start — a server that cannot fetch it does not start — then every
//! `auth.jwt.jwks_refresh_s`, and soon after a token names a key the set lacks, which is how a
//! provider's key rotation reaches the server). A failed refresh keeps the keys it had.

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use std::path::PathBuf;
use tokio::sync::Notify;

use crate::{Error, Result};

/// `[auth.jwt]`: tokens of an OIDC identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The provider's JSON Web Key Set, as a file (read at start).
    pub jwks_file: PathBuf,
    /// … or as a URL (https; http only to loopback): fetched at start, then every
    /// `jwks_refresh_s` and soon after a token names an unknown key.
    pub jwks_url: String,
    pub jwks_refresh_s: u64,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Tolerated clock skew for `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// The claim holding the caller's roles (a string or an array of strings).
    pub roles_claim: String,
    /// The claim naming the caller.
    pub subject_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            jwks_refresh_s: 300,
            issuer: String::new(),
            audience: String::new(),
            leeway_s: 60,
            roles_claim: "roles".into(),
            subject_claim: "sub".into(),
        }
    }
}

/// Fetches are at least this far apart, however many unknown keys arrive.
const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

enum Source {
    File,
    Url {
        url: String,
        refresh: Duration,
        client: reqwest::Client,
    },
}

/// The verification keys of JWT bearer tokens.
pub(crate) struct Jwks {
    keys: RwLock<Arc<JwkSet>>,
    source: Source,
    wake: Notify,
    last_fetch: Mutex<Option<Instant>>,
}

fn config_err(key: &str, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("{key}: {message}"))
}

fn parse(what: &str, bytes: &[u8]) -> Result<JwkSet, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what} is not a JWK set: {e}"))
}

/// `https://…`, or `http://` to a loopback address (an IdP sidecar or a test).
fn check_url(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| config_err("auth.jwt.jwks_url", e))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(config_err(
            "auth.jwt.jwks_url",
            format!("{url}: must be https (plain http only to a loopback address)"),
        )),
    }
}

impl Jwks {
    /// Reads `jwks_file`, or prepares to fetch `jwks_url` (see [`Jwks::start`]).
    pub(crate) fn new(cfg: &JwtConfig) -> Result<Self> {
        let (keys, source) = match (
            cfg.jwks_file.as_os_str().is_empty(),
            cfg.jwks_url.is_empty(),
        ) {
            (false, true) => {
                let path = &cfg.jwks_file;
                let bytes = std::fs::read(path).map_err(|e| {
                    config_err("auth.jwt.jwks_file", format!("{}: {e}", path.display()))
                })?;
                let keys = parse(&path.display().to_string(), &bytes)
                    .map_err(|e| config_err("auth.jwt.jwks_file", e))?;
                (keys, Source::File)
            }
            (true, false) => {
                check_url(&cfg.jwks_url)?;
                if cfg.jwks_refresh_s == 0 {
                    return Err(config_err("auth.jwt.jwks_refresh_s", "must be at least 1"));
                }
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| config_err("auth.jwt.jwks_url", e))?;
                (
                    JwkSet { keys: Vec::new() },
                    Source::Url {
                        url: cfg.jwks_url.clone(),
                        refresh: Duration::from_secs(cfg.jwks_refresh_s),
                        client,
                    },
                )
            }
            _ => {
                return Err(config_err(
                    "auth.jwt",
                    "set exactly one of jwks_file and jwks_url",
                ));
            }
        };
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            source,
            wake: Notify::new(),
            last_fetch: Mutex::new(None),
        })
    }

    /// The current keys.
    pub(crate) fn current(&self) -> Arc<JwkSet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A token named a key the set lacks: fetch the set again soon (URL sources).
    pub(crate) fn unknown_key(&self) {
        self.wake.notify_one();
    }

    async fn fetch(&self) -> Result<usize, String> {
        let Source::Url { url, client, .. } = &self.source else {
            return Ok(self.current().keys.len());
        };
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let response = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?;
        let keys = parse(url, &bytes)?;
        let n = keys.keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(n)
    }

    /// For a URL source: fetches the keys (an error if that fails), then keeps them fresh in
    /// the background for as long as `self` lives.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<()> {
        let Source::Url { url, refresh, .. } = &self.source else {
            return Ok(());
        };
        let n = self
            .fetch()
            .await
            .map_err(|e| config_err("auth.jwt.jwks_url", e))?;
        tracing::info!(%url, keys = n, "JWKS fetched");
        let (weak, refresh): (Weak<Self>, Duration) = (Arc::downgrade(self), *refresh);
        tokio::spawn(async move {
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                let woken = tokio::select! {
                    () = tokio::time::sleep(refresh) => false,
                    () = jwks.wake.notified() => true,
                };
                let since = jwks
                    .last_fetch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map_or(MIN_FETCH_INTERVAL, |t| t.elapsed());
                if since < MIN_FETCH_INTERVAL {
                    tokio::time::sleep(MIN_FETCH_INTERVAL - since).await;
                }
                match jwks.fetch().await {
                    Ok(n) => tracing::info!(keys = n, unknown_key = woken, "JWKS refreshed"),
                    Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys"),
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(file: &str, url: &str) -> JwtConfig {
        JwtConfig {
            jwks_file: file.into(),
            jwks_url: url.into(),
            issuer: "i".into(),
            audience: "a".into(),
            ..JwtConfig::default()
        }
    }

    #[test]
    fn a_jwks_comes_from_one_source_and_urls_are_https_or_loopback() {
        assert!(Jwks::new(&cfg("", "https://idp.example.com/.well-known/jwks.json")).is_ok());
        assert!(Jwks::new(&cfg("", "http://127.0.0.1:8080/jwks.json")).is_ok());
        assert!(Jwks::new(&cfg("", "http://localhost/jwks.json")).is_ok());
        for bad in ["http://idp.example.com/jwks.json", "ftp://x/y", "not a url"] {
            let err = Jwks::new(&cfg("", bad)).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("auth.jwt.jwks_url")),
                "{bad}: {err:?}"
            );
        }
        let both = Jwks::new(&cfg("/etc/jwks.json", "https://x/jwks.json")).err();
        assert!(both.is_some_and(|e| e.to_string().contains("exactly one")));
        assert!(Jwks::new(&cfg("", "")).is_err());
    }
}
