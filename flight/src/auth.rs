//! Who is calling: HTTP Basic at the Flight handshake (answered with a bearer token), static API
//! tokens stored hashed in the config, and OIDC/JWT bearer tokens checked against a JWKS. Every
//! Flight call but the handshake carries `authorization: Bearer <token>`; the result is an
//! [`Identity`] with roles, which RBAC works from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, pbkdf2, rand::SecureRandom};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jwks::Jwks;
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
}

impl Identity {
    fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            roles: vec!["admin".into()],
            method: "none",
            claims: Default::default(),
        }
    }
}

/// Claims of the bearer tokens the handshake issues.
#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    sub: String,
    roles: Vec<String>,
    iat: u64,
    exp: u64,
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
    session_key: Vec<u8>,
    token_ttl_s: u64,
    jwt: Option<JwtVerifier>,
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
        Ok(Arc::new(Self {
            required: cfg.required,
            users,
            tokens,
            session_key,
            token_ttl_s: cfg.token_ttl_s,
            jwt,
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

    /// Verifies `authorization: Basic …` (the handshake).
    pub fn basic(&self, authorization: &str) -> Result<Identity> {
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
        let bad = || unauthenticated("unknown user or wrong password");
        let u = self.users.get(user).ok_or_else(bad)?;
        let (iterations, salt, hash) = parse_password_hash(&u.password_hash).ok_or_else(bad)?;
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &hash,
        )
        .map_err(|_| bad())?;
        Ok(Identity {
            subject: u.name.clone(),
            roles: u.roles.clone(),
            method: "basic",
            claims: Default::default(),
        })
    }

    /// A bearer token for `identity`, valid for `auth.token_ttl_s` on every server that shares
    /// `auth.token_secret`.
    pub fn issue(&self, identity: &Identity) -> Result<String> {
        let iat = now_s();
        let claims = SessionClaims {
            iss: SELF_ISSUER.into(),
            aud: SELF_ISSUER.into(),
            sub: identity.subject.clone(),
            roles: identity.roles.clone(),
            iat,
            exp: iat + self.token_ttl_s,
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
            return Ok(Identity {
                subject: data.claims.sub,
                roles: data.claims.roles,
                method: "session",
                claims: Default::default(),
            });
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
        Ok(Identity {
            subject,
            roles: roles_from(&claims, &jwt.cfg.roles_claim),
            method: "jwt",
            claims,
        })
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

    #[test]
    fn basic_then_session_token_and_api_tokens() {
        let auth = Authenticator::new(&with_user_and_token("sak_abc")).unwrap();
        let basic = format!("Basic {}", STANDARD.encode("alice:pw"));
        let alice = auth.basic(&basic).unwrap();
        assert_eq!((alice.subject.as_str(), alice.method), ("alice", "basic"));
        assert!(
            auth.basic(&format!("Basic {}", STANDARD.encode("alice:no")))
                .is_err()
        );
        // Unpadded base64 (Go clients) works too.
        let unpadded = format!(
            "Basic {}",
            STANDARD.encode("alice:pw").trim_end_matches('=')
        );
        assert!(auth.basic(&unpadded).is_ok());

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
