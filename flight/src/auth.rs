//! Who is calling: HTTP Basic at the Flight handshake (answered with a bearer token), static API
//! tokens stored hashed in the config, and OIDC/JWT bearer tokens checked against a JWKS. Every
//! Flight call but the handshake carries `authorization: Bearer <token>`; the result is an
//! [`Identity`] with roles, which RBAC works from.
//!
//! A session token (issued at the handshake) names the credential it came from, and every use
//! checks that credential again: a user or API token removed from the config (or a password
//! changed) ends its sessions as soon as the server runs with that config, and their roles are
//! the config's, not the token's. A session never outlives its credential: one made from a JWT
//! expires with the JWT, and exchanging a session token for a new one keeps its expiry.
//!
//! Password checks (PBKDF2, about 0.1 s of CPU each) run on a small pool beside the query
//! runtime, at most a few per source address, with the same work for unknown users as for
//! known ones; recent successful checks are remembered for a minute, so a client that sends
//! Basic credentials with every HTTP call pays once.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, pbkdf2, rand::SecureRandom};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jwks::{Jwks, JwtConfig};
use crate::{Error, Result};

/// Issuer and audience of the bearer tokens this server issues at the handshake.
const SELF_ISSUER: &str = "sakura";
/// PBKDF2 iterations of new password hashes (OWASP's figure for PBKDF2-HMAC-SHA256).
const PBKDF2_ITERATIONS: u32 = 600_000;

/// `[auth]`: how callers authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether every Flight call must authenticate. Off only for local use (the demo): then
    /// every caller is `anonymous` with the `admin` role.
    pub required: bool,
    /// Users who may authenticate with HTTP Basic at the handshake.
    pub users: Vec<UserConfig>,
    /// Static API tokens (for services and dashboards), stored as hashes.
    pub tokens: Vec<TokenConfig>,
    /// Key that signs the bearer tokens the handshake issues (HS256). Give every server of a
    /// fleet the same one; empty means a random key per process (tokens then work only on the
    /// server that issued them).
    pub token_secret: String,
    /// Lifetime of handshake-issued bearer tokens, seconds.
    pub token_ttl_s: u64,
    /// OIDC/JWT bearer tokens from an identity provider.
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            users: Vec::new(),
            tokens: Vec::new(),
            token_secret: String::new(),
            token_ttl_s: 3600,
            jwt: None,
        }
    }
}

/// `[[auth.users]]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64), from `sakura auth hash-password`.
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[[auth.tokens]]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to (the identity's subject in the audit log).
    pub name: String,
    /// `sha256:<hex>` of the token, from `sakura auth new-token`.
    pub hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// The credential an identity was proven with, as a session token records it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Origin {
    /// Authentication off.
    #[default]
    None,
    /// A configured user (fingerprint of its stored password hash).
    User(String),
    /// A configured API token (fingerprint of its stored hash).
    Token(String),
    /// A JWT of the identity provider.
    Jwt,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub subject: String,
    pub roles: Vec<String>,
    /// How it authenticated: `basic`, `token`, `jwt`, `session` (a handshake-issued token) or
    /// `none` (authentication off).
    pub method: &'static str,
    /// The token's claims (JWT) — what row filters can refer to.
    pub claims: serde_json::Map<String, Value>,
    /// The credential behind it.
    pub origin: Origin,
    /// When the credential expires (seconds since the epoch), if it does.
    pub expires: Option<u64>,
}

impl Identity {
    fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            roles: vec!["admin".into()],
            method: "none",
            claims: Default::default(),
            origin: Origin::None,
            expires: None,
        }
    }
}

/// Claims of the bearer tokens the handshake issues.
#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    /// The credential it came from: `user`, `token` or `jwt`.
    src: String,
    /// The fingerprint of that user's or token's stored hash (`user`, `token`).
    #[serde(default)]
    cid: String,
    /// The JWT's roles and claims (`jwt`; users' and tokens' come from the config).
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
}

/// A short fingerprint of a stored secret hash (never the secret): 16 hex digits of SHA-256.
fn fingerprint(stored: &str) -> String {
    let d = digest::digest(&digest::SHA256, stored.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

struct JwtVerifier {
    keys: Arc<Jwks>,
    cfg: JwtConfig,
}

/// Checks credentials against an [`AuthConfig`].
pub struct Authenticator {
    required: bool,
    users: BTreeMap<String, UserConfig>,
    /// Token hash (hex) → its entry.
    tokens: BTreeMap<String, TokenConfig>,
    /// Fingerprint of a token's hash → the hash (for session tokens made from API tokens).
    token_fingerprints: BTreeMap<String, String>,
    session_key: Vec<u8>,
    token_ttl_s: u64,
    jwt: Option<JwtVerifier>,
    passwords: PasswordChecks,
    /// What an unknown user's password is checked against, so that it costs what a known
    /// user's check costs.
    decoy: (std::num::NonZeroU32, Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .field("users", &self.users.len())
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

fn config_err(key: &str, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("{key}: {message}"))
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `sha256:<hex>` of `token`.
pub fn token_hash(token: &str) -> String {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::Config("the system random generator failed".into()))?;
    Ok(out)
}

/// A new random API token (`sak_…`).
pub fn new_token() -> Result<String> {
    Ok(format!("sak_{}", URL_SAFE_NO_PAD.encode(random_bytes(32)?)))
}

/// The stored form of `password`: `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = random_bytes(16)?;
    let mut out = [0u8; 32];
    let iterations = std::num::NonZeroU32::new(PBKDF2_ITERATIONS)
        .ok_or_else(|| Error::Config("zero PBKDF2 iterations".into()))?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "pbkdf2-sha256${PBKDF2_ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    ))
}

/// Parses a stored password hash: (iterations, salt, hash).
fn parse_password_hash(stored: &str) -> Option<(std::num::NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    if parts.next()? != "pbkdf2-sha256" {
        return None;
    }
    let iterations = parts.next()?.parse().ok()?;
    let salt = STANDARD.decode(parts.next()?).ok()?;
    let hash = STANDARD.decode(parts.next()?).ok()?;
    (parts.next().is_none() && !hash.is_empty()).then_some((iterations, salt, hash))
}

fn jwt_error(e: &jsonwebtoken::errors::Error) -> Error {
    unauthenticated(match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_string(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_string(),
        ErrorKind::InvalidIssuer => "token has the wrong issuer".to_string(),
        ErrorKind::InvalidAudience => "token has the wrong audience".to_string(),
        ErrorKind::InvalidSignature => "token signature does not verify".to_string(),
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".to_string(),
        ErrorKind::MissingRequiredClaim(c) => format!("token lacks the {c:?} claim"),
        _ => format!("invalid token: {e}"),
    })
}

/// The roles in `claims[name]`: a string or an array of strings.
fn roles_from(claims: &serde_json::Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl Authenticator {
    /// Checks the configuration and loads the JWKS; errors name the offending key.
    pub fn new(cfg: &AuthConfig) -> Result<Arc<Self>> {
        let mut users = BTreeMap::new();
        for u in &cfg.users {
            if parse_password_hash(&u.password_hash).is_none() {
                return Err(config_err(
                    &format!("auth.users[{}].password_hash", u.name),
                    "expected pbkdf2-sha256$<iterations>$<salt>$<hash> (run `sakura auth hash-password`)",
                ));
            }
            users.insert(u.name.clone(), u.clone());
        }
        let mut tokens = BTreeMap::new();
        for t in &cfg.tokens {
            let ok = t.hash.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            });
            if !ok {
                return Err(config_err(
                    &format!("auth.tokens[{}].hash", t.name),
                    "expected sha256:<64 lowercase hex digits> (run `sakura auth new-token`)",
                ));
            }
            tokens.insert(t.hash.clone(), t.clone());
        }
        let jwt = cfg
            .jwt
            .as_ref()
            .map(|j| {
                let keys = Arc::new(Jwks::new(j)?);
                if j.issuer.is_empty() || j.audience.is_empty() {
                    return Err(config_err("auth.jwt", "issuer and audience are required"));
                }
                Ok(JwtVerifier {
                    keys,
                    cfg: j.clone(),
                })
            })
            .transpose()?;
        if cfg.required && users.is_empty() && tokens.is_empty() && jwt.is_none() {
            return Err(config_err(
                "auth.required",
                "authentication is required but no users, tokens or jwt are configured; add credentials or set auth.required = false (local use only)",
            ));
        }
        let session_key = if cfg.token_secret.is_empty() {
            random_bytes(32)?
        } else {
            cfg.token_secret.as_bytes().to_vec()
        };
        let token_fingerprints = tokens.keys().map(|h| (fingerprint(h), h.clone())).collect();
        // Users' hashes are checked at their own iteration count; the decoy at the most
        // common one among them (the default for new hashes when there are none).
        let iterations = users
            .values()
            .filter_map(|u| parse_password_hash(&u.password_hash).map(|(i, ..)| i))
            .max()
            .or(std::num::NonZeroU32::new(PBKDF2_ITERATIONS))
            .ok_or_else(|| Error::Config("zero PBKDF2 iterations".into()))?;
        let decoy_salt = random_bytes(16)?;
        let mut decoy_hash = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::MIN,
            &decoy_salt,
            &random_bytes(16)?,
            &mut decoy_hash,
        );
        Ok(Arc::new(Self {
            required: cfg.required,
            users,
            tokens,
            token_fingerprints,
            session_key,
            token_ttl_s: cfg.token_ttl_s,
            jwt,
            passwords: PasswordChecks::new(),
            decoy: (iterations, decoy_salt, decoy_hash.to_vec()),
        }))
    }

    /// Starts what runs in the background: fetching a JWKS URL (an error when the first fetch
    /// fails) and keeping it fresh.
    pub async fn start(&self) -> Result<()> {
        match &self.jwt {
            Some(jwt) => jwt.keys.start().await,
            None => Ok(()),
        }
    }

    /// Whether calls must authenticate.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The caller of a request with this `authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Identity> {
        if !self.required {
            return Ok(Identity::anonymous());
        }
        let Some(value) = authorization else {
            return Err(unauthenticated(
                "no credentials: send `authorization: Bearer <token>`, or handshake with Basic credentials first",
            ));
        };
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.bearer(token.trim())
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("basic") => Err(unauthenticated(
                "Basic credentials are accepted by the handshake only; send the bearer token it returns",
            )),
            _ => Err(unauthenticated(
                "unsupported authorization scheme (expected Bearer)",
            )),
        }
    }

    /// Verifies `authorization: Basic …` (the handshake, or an HTTP call) from `peer`. The
    /// password check runs on the bounded pool (see the module doc); a source with too many
    /// checks in flight is refused at once.
    pub async fn basic(&self, authorization: &str, peer: Option<SocketAddr>) -> Result<Identity> {
        let encoded = authorization
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, v)| v.trim())
            .ok_or_else(|| unauthenticated("expected `authorization: Basic <credentials>`"))?;
        // Padding optional: Go's Flight client (ADBC, Grafana) sends unpadded base64.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthenticated("Basic credentials are not base64 of user:password"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credentials are not user:password"))?;
        let known = self
            .users
            .get(user)
            .and_then(|u| parse_password_hash(&u.password_hash).map(|h| (u, h)));
        let remembered = PasswordChecks::key(user, password);
        let ok = match &known {
            Some((u, _)) if self.passwords.remembered(&remembered, &u.password_hash) => true,
            _ => {
                // Unknown users are checked against the decoy: the same work, always false.
                let (iterations, salt, hash) = match &known {
                    Some((_, h)) => h.clone(),
                    None => self.decoy.clone(),
                };
                let password = password.as_bytes().to_vec();
                let matched = self
                    .passwords
                    .check(peer, move || {
                        pbkdf2::verify(
                            pbkdf2::PBKDF2_HMAC_SHA256,
                            iterations,
                            &salt,
                            &password,
                            &hash,
                        )
                        .is_ok()
                    })
                    .await?;
                matched && known.is_some()
            }
        };
        let Some((u, _)) = known.filter(|_| ok) else {
            return Err(unauthenticated("unknown user or wrong password"));
        };
        self.passwords.remember(remembered, &u.password_hash);
        Ok(Identity {
            subject: u.name.clone(),
            roles: u.roles.clone(),
            method: "basic",
            claims: Default::default(),
            origin: Origin::User(fingerprint(&u.password_hash)),
            expires: None,
        })
    }

    /// A bearer token for `identity`, valid for `auth.token_ttl_s` on every server that shares
    /// `auth.token_secret`.
    ///
    /// It expires `auth.token_ttl_s` from now, or when the credential does if that is sooner
    /// (a JWT's `exp`; a session token's own expiry when one is exchanged for another).
    pub fn issue(&self, identity: &Identity) -> Result<String> {
        let iat = now_s();
        let exp = (iat + self.token_ttl_s).min(identity.expires.unwrap_or(u64::MAX));
        let (src, cid, roles, claims) = match &identity.origin {
            Origin::User(cid) => ("user", cid.clone(), Vec::new(), Default::default()),
            Origin::Token(cid) => ("token", cid.clone(), Vec::new(), Default::default()),
            Origin::Jwt => (
                "jwt",
                String::new(),
                identity.roles.clone(),
                identity.claims.clone(),
            ),
            Origin::None => {
                return Err(unauthenticated(
                    "no credential to make a session token from",
                ));
            }
        };
        let claims = SessionClaims {
            iss: SELF_ISSUER.into(),
            aud: SELF_ISSUER.into(),
            sub: identity.subject.clone(),
            iat,
            exp,
            src: src.into(),
            cid,
            roles,
            claims,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.session_key)
                .map_err(|e| Error::Config(format!("unusable auth.token_secret: {e}")))?,
        )
        .map_err(|e| Error::Config(format!("failed to sign a session token: {e}")))
    }

    fn bearer(&self, token: &str) -> Result<Identity> {
        if token.matches('.').count() != 2 {
            return self
                .tokens
                .get(&token_hash(token))
                .map(|t| Identity {
                    subject: t.name.clone(),
                    roles: t.roles.clone(),
                    method: "token",
                    claims: Default::default(),
                    origin: Origin::Token(fingerprint(&t.hash)),
                    expires: None,
                })
                .ok_or_else(|| unauthenticated("unknown API token"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("malformed token: {e}")))?;
        if header.alg == Algorithm::HS256 {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_issuer(&[SELF_ISSUER]);
            v.set_audience(&[SELF_ISSUER]);
            v.leeway = 0;
            let data = jsonwebtoken::decode::<SessionClaims>(
                token,
                &DecodingKey::from_secret(&self.session_key)
                    .map_err(|e| Error::Config(format!("unusable auth.token_secret: {e}")))?,
                &v,
            )
            .map_err(|e| jwt_error(&e))?;
            return self.session(data.claims);
        }
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| unauthenticated("JWT bearer tokens are not configured (auth.jwt)"))?;
        let keys = jwt.keys.current();
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| {
            jwt.keys.unknown_key();
            unauthenticated("token signed by a key not in the JWKS (kid)")
        })?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| unauthenticated(format!("unusable JWKS key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&jwt.cfg.issuer]);
        v.set_audience(&[&jwt.cfg.audience]);
        v.leeway = jwt.cfg.leeway_s;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v)
            .map_err(|e| jwt_error(&e))?;
        let claims = data.claims;
        let subject = claims
            .get(&jwt.cfg.subject_claim)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if subject.is_empty() {
            return Err(unauthenticated(format!(
                "token lacks the {:?} claim",
                jwt.cfg.subject_claim
            )));
        }
        let expires = claims.get("exp").and_then(Value::as_u64);
        Ok(Identity {
            subject,
            roles: roles_from(&claims, &jwt.cfg.roles_claim),
            method: "jwt",
            claims,
            origin: Origin::Jwt,
            expires,
        })
    }

    /// The caller of a verified session token: its credential checked against the config
    /// again, its roles the config's (JWT sessions keep the JWT's).
    fn session(&self, c: SessionClaims) -> Result<Identity> {
        let gone = |what: &str| {
            unauthenticated(format!(
                "the {what} this session token was issued for is no longer valid; authenticate again"
            ))
        };
        let (roles, claims, origin) = match c.src.as_str() {
            "user" => {
                let u = self.users.get(&c.sub).ok_or_else(|| gone("user"))?;
                if fingerprint(&u.password_hash) != c.cid {
                    return Err(gone("password"));
                }
                (u.roles.clone(), Default::default(), Origin::User(c.cid))
            }
            "token" => {
                let t = self
                    .token_fingerprints
                    .get(&c.cid)
                    .and_then(|h| self.tokens.get(h))
                    .ok_or_else(|| gone("API token"))?;
                (t.roles.clone(), Default::default(), Origin::Token(c.cid))
            }
            "jwt" => (c.roles, c.claims, Origin::Jwt),
            _ => return Err(gone("credential")),
        };
        Ok(Identity {
            subject: c.sub,
            roles,
            method: "session",
            claims,
            origin,
            expires: Some(c.exp),
        })
    }
}

/// Password checks on a bounded pool: at most half the cores' worth at once (each on a
/// blocking thread, not a query's), [`PasswordChecks::WAITING`] queued, and
/// [`PasswordChecks::PER_SOURCE`] per source address; and the successful checks of the last
/// minute.
struct PasswordChecks {
    running: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// SHA-256 of `user:password` → (fingerprint of the stored hash, when it was checked).
    recent: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

/// Releases a source's slot when its check ends (or its caller goes away).
struct SourceSlot<'a> {
    checks: &'a PasswordChecks,
    ip: Option<IpAddr>,
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        self.checks
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut m = self
                .checks
                .per_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl PasswordChecks {
    /// Checks running at once: half the cores (at least one), so queries keep the rest.
    fn running_max() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }
    /// Checks in flight (running or queued) in all.
    const WAITING: usize = 32;
    /// Checks in flight from one source address.
    const PER_SOURCE: usize = 2;
    /// How long a successful check is remembered.
    const REMEMBER: Duration = Duration::from_secs(60);
    const REMEMBER_MAX: usize = 1024;

    fn new() -> Self {
        Self {
            running: Arc::new(tokio::sync::Semaphore::new(Self::running_max())),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            per_source: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    fn key(user: &str, password: &str) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(user.as_bytes());
        ctx.update(b":");
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Whether `key` passed a check against `stored` within the last minute.
    fn remembered(&self, key: &[u8; 32], stored: &str) -> bool {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .get(key)
            .is_some_and(|(f, at)| *f == fingerprint(stored) && at.elapsed() < Self::REMEMBER)
    }

    fn remember(&self, key: [u8; 32], stored: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|_, (_, at)| at.elapsed() < Self::REMEMBER);
        if recent.len() < Self::REMEMBER_MAX {
            recent.insert(key, (fingerprint(stored), Instant::now()));
        }
    }

    /// Runs `verify` on the pool for a caller at `peer`.
    async fn check(
        &self,
        peer: Option<SocketAddr>,
        verify: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool> {
        let busy = |why: String| Error::ResourceExhausted(format!("{why}; retry later"));
        let ip = peer.map(|p| p.ip());
        if self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            >= Self::WAITING
        {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(busy(format!(
                "more than {} password checks are in flight",
                Self::WAITING
            )));
        }
        if let Some(ip) = ip {
            let mut m = self
                .per_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = m.entry(ip).or_default();
            if *n >= Self::PER_SOURCE {
                drop(m);
                self.waiting
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(busy(format!(
                    "{} password checks from {ip} are in flight",
                    Self::PER_SOURCE
                )));
            }
            *n += 1;
        }
        let _slot = SourceSlot { checks: self, ip };
        let _permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy("the password check pool is closed".into()))?;
        tokio::task::spawn_blocking(verify)
            .await
            .map_err(|e| Error::Internal(format!("a password check failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user_and_token(token: &str) -> AuthConfig {
        AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                // Few iterations: the test checks the format, not the cost.
                password_hash: {
                    let salt = b"0123456789abcdef";
                    let mut out = [0u8; 32];
                    pbkdf2::derive(
                        pbkdf2::PBKDF2_HMAC_SHA256,
                        std::num::NonZeroU32::new(1000).unwrap(),
                        salt,
                        b"pw",
                        &mut out,
                    );
                    format!(
                        "pbkdf2-sha256$1000${}${}",
                        STANDARD.encode(salt),
                        STANDARD.encode(out)
                    )
                },
                roles: vec!["analyst".into()],
            }],
            tokens: vec![TokenConfig {
                name: "grafana".into(),
                hash: token_hash(token),
                roles: vec!["reader".into()],
            }],
            token_secret: "s3cret".into(),
            ..AuthConfig::default()
        }
    }

    #[tokio::test]
    async fn basic_then_session_token_and_api_tokens() {
        let auth = Authenticator::new(&with_user_and_token("sak_abc")).unwrap();
        let basic = format!("Basic {}", STANDARD.encode("alice:pw"));
        let alice = auth.basic(&basic, None).await.unwrap();
        assert_eq!((alice.subject.as_str(), alice.method), ("alice", "basic"));
        assert!(
            auth.basic(&format!("Basic {}", STANDARD.encode("alice:no")), None)
                .await
                .is_err()
        );
        assert!(
            auth.basic(&format!("Basic {}", STANDARD.encode("nobody:pw")), None)
                .await
                .is_err()
        );
        // Unpadded base64 (Go clients) works too.
        let unpadded = format!(
            "Basic {}",
            STANDARD.encode("alice:pw").trim_end_matches('=')
        );
        assert!(auth.basic(&unpadded, None).await.is_ok());

        let session = auth.issue(&alice).unwrap();
        let back = auth
            .authenticate(Some(&format!("Bearer {session}")))
            .unwrap();
        assert_eq!((back.subject.as_str(), back.method), ("alice", "session"));
        assert_eq!(back.roles, ["analyst"]);
        // Another fleet's secret does not verify it.
        let other = Authenticator::new(&AuthConfig {
            token_secret: "other".into(),
            ..with_user_and_token("x")
        })
        .unwrap();
        assert!(matches!(
            other.authenticate(Some(&format!("Bearer {session}"))),
            Err(Error::Unauthenticated(m)) if m.contains("signature")
        ));

        let g = auth.authenticate(Some("Bearer sak_abc")).unwrap();
        assert_eq!(
            (g.subject.as_str(), g.roles.as_slice()),
            ("grafana", &["reader".to_string()][..])
        );
        assert!(auth.authenticate(Some("Bearer sak_abd")).is_err());
        assert!(auth.authenticate(None).is_err());
    }

    /// A token signed with the test config's secret.
    fn sign(claims: &SessionClaims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(b"s3cret").unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn sessions_end_with_their_credential_and_never_outlive_it() {
        let cfg = with_user_and_token("sak_abc");
        let auth = Authenticator::new(&cfg).unwrap();
        let basic = format!("Basic {}", STANDARD.encode("alice:pw"));
        let alice = auth.basic(&basic, None).await.unwrap();
        let from_user = auth.issue(&alice).unwrap();
        let grafana = auth.authenticate(Some("Bearer sak_abc")).unwrap();
        let from_token = auth.issue(&grafana).unwrap();
        let bearer = |t: &str| format!("Bearer {t}");

        // The same secret, the user and the token removed (others remain): both sessions end.
        let mut others = with_user_and_token("sak_other");
        others.users[0].name = "carol".into();
        others.tokens[0].name = "other".into();
        let removed = Authenticator::new(&others).unwrap();
        for t in [&from_user, &from_token] {
            let e = removed.authenticate(Some(&bearer(t))).unwrap_err();
            assert!(e.to_string().contains("no longer valid"), "{e}");
        }
        // A changed password ends the user's sessions; changed roles apply at once.
        let mut changed = cfg.clone();
        changed.users[0].password_hash = hash_password("new").unwrap();
        let changed_auth = Authenticator::new(&changed).unwrap();
        assert!(
            changed_auth
                .authenticate(Some(&bearer(&from_user)))
                .is_err()
        );
        let mut regranted = cfg.clone();
        regranted.tokens[0].roles = vec!["viewer".into()];
        let regranted = Authenticator::new(&regranted).unwrap();
        let g = regranted.authenticate(Some(&bearer(&from_token))).unwrap();
        assert_eq!(g.roles, ["viewer"]);

        // Exchanging a session token keeps its expiry; a JWT's session ends with the JWT.
        let back = auth.authenticate(Some(&bearer(&from_user))).unwrap();
        let renewed = auth.issue(&back).unwrap();
        let exp = |t: &str| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&[SELF_ISSUER]);
            jsonwebtoken::decode::<SessionClaims>(
                t,
                &DecodingKey::from_secret(b"s3cret").unwrap(),
                &v,
            )
            .unwrap()
            .claims
            .exp
        };
        assert!(exp(&renewed) <= exp(&from_user));
        let jwt_caller = Identity {
            subject: "bob".into(),
            roles: vec!["analyst".into()],
            method: "jwt",
            claims: [("service".to_string(), Value::from("svc-3"))]
                .into_iter()
                .collect(),
            origin: Origin::Jwt,
            expires: Some(now_s() + 6),
        };
        let from_jwt = auth.issue(&jwt_caller).unwrap();
        assert!(exp(&from_jwt) <= now_s() + 6);
        let bob = auth.authenticate(Some(&bearer(&from_jwt))).unwrap();
        assert_eq!(
            bob.claims["service"], "svc-3",
            "row filters still see the claims"
        );
        // An expired session is refused, even when its signature is good.
        let stale = sign(&SessionClaims {
            iss: SELF_ISSUER.into(),
            aud: SELF_ISSUER.into(),
            sub: "alice".into(),
            iat: now_s() - 100,
            exp: now_s() - 10,
            src: "user".into(),
            cid: fingerprint(&cfg.users[0].password_hash),
            roles: Vec::new(),
            claims: Default::default(),
        });
        let e = auth.authenticate(Some(&bearer(&stale))).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_are_bounded_per_source() {
        let mut cfg = with_user_and_token("t");
        // A costly hash, so that checks overlap.
        cfg.users[0].password_hash = hash_password("pw").unwrap();
        let auth = Authenticator::new(&cfg).unwrap();
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let wrong = format!("Basic {}", STANDARD.encode("alice:wrong"));
        let attempts = (0..6).map(|_| auth.basic(&wrong, Some(peer)));
        let results = futures::future::join_all(attempts).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(Error::ResourceExhausted(m)) if m.contains("192.0.2.1")))
            .count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Unauthenticated(_))))
            .count();
        assert_eq!((busy, refused), (4, 2), "{results:?}");
        // Another source is not held up by this one's limit.
        let other: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let ok = format!("Basic {}", STANDARD.encode("alice:pw"));
        assert!(auth.basic(&ok, Some(other)).await.is_ok());
        assert!(auth.passwords.per_source.lock().unwrap().is_empty());
    }

    #[test]
    fn stored_password_hashes_verify_and_bad_config_is_named() {
        let stored = hash_password("hunter2").unwrap();
        let (iterations, salt, hash) = parse_password_hash(&stored).unwrap();
        assert_eq!(iterations.get(), PBKDF2_ITERATIONS);
        assert!(
            pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                &salt,
                b"hunter2",
                &hash
            )
            .is_ok()
        );
        assert!(new_token().unwrap().starts_with("sak_"));

        let e = Authenticator::new(&AuthConfig::default()).unwrap_err();
        assert!(e.to_string().contains("auth.required"), "{e}");
        let mut cfg = with_user_and_token("t");
        cfg.users[0].password_hash = "plain".into();
        let e = Authenticator::new(&cfg).unwrap_err();
        assert!(
            e.to_string().contains("auth.users[alice].password_hash"),
            "{e}"
        );
        let off = Authenticator::new(&AuthConfig {
            required: false,
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(off.authenticate(None).unwrap().roles, ["admin"]);
    }
}
