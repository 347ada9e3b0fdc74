//! `sakura.toml`: one typed file, overridable by `SAKURA__SECTION__KEY` environment variables,
//! validated after loading with errors that name the key. `sakura.example.toml` documents every
//! key with its default.

use std::collections::HashMap;
use std::path::Path;

use engine::EngineConfig;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ingest::{IngestConfig, KafkaConfig};
use schemas::{Storage, StorageRoot};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) storage: StorageConfig,
    pub(crate) kafka: KafkaConfig,
    pub(crate) ingest: IngestConfig,
    pub(crate) engine: EngineConfig,
    pub(crate) flight: FlightConfig,
    pub(crate) http: HttpConfig,
    pub(crate) auth: flight::AuthConfig,
    pub(crate) tls: flight::TlsConfig,
    pub(crate) limits: flight::LimitsConfig,
    /// `[roles.<name>]`: table grants and row filters.
    pub(crate) roles: std::collections::BTreeMap<String, flight::RoleConfig>,
    /// `[scheduler]`: whether `sakura serve` runs the jobs, and where more are defined.
    pub(crate) scheduler: jobs::SchedulerConfig,
    /// `[[jobs]]`: scheduled jobs (more in the files `scheduler.include` names).
    pub(crate) jobs: Vec<jobs::JobDef>,
    /// The directory `scheduler.include` is relative to (the config file's).
    #[serde(skip)]
    pub(crate) base_dir: std::path::PathBuf,
}

/// `[storage]`: where the tables live.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageConfig {
    /// A local directory, or `s3://bucket/prefix`.
    pub(crate) url: String,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "./data".into(),
            s3: S3Config::default(),
        }
    }
}

/// `[storage.s3]`: how to reach an S3-compatible store (MinIO, AWS S3, ...).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct S3Config {
    /// e.g. `http://minio:9000`; empty means AWS S3 itself.
    pub(crate) endpoint: String,
    pub(crate) region: String,
    /// Empty means the AWS default chain (environment, profile, instance role).
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    /// Required for `http://` endpoints.
    pub(crate) allow_http: bool,
    /// `false` for MinIO (path-style requests: `http://host/bucket/key`).
    pub(crate) virtual_hosted_style: bool,
    /// Conditional writes for Delta commits: `etag` (MinIO, AWS S3). Without it two writers can
    /// overwrite each other's commits.
    pub(crate) conditional_put: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            conditional_put: "etag".into(),
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("conditional_put", &self.conditional_put)
            .finish()
    }
}

/// `[flight]`: the Flight SQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FlightConfig {
    pub(crate) listen: String,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
        }
    }
}

/// `[http]`: health, readiness and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpConfig {
    pub(crate) listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` (if given), applies `SAKURA__SECTION__KEY` overrides, and validates.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        let mut cfg = Self::from_figment(fig.merge(Env::prefixed("SAKURA__").split("__")))?;
        if let Some(dir) = path.and_then(Path::parent) {
            cfg.base_dir = dir.to_path_buf();
        }
        cfg.jobs()?;
        Ok(cfg)
    }

    /// Every job: `[[jobs]]` plus those of the included files, validated.
    pub(crate) fn jobs(&self) -> Result<Vec<jobs::Job>> {
        let mut defs = self.jobs.clone();
        defs.extend(jobs::load_included(
            &self.base_dir,
            &self.scheduler.include,
        )?);
        Ok(jobs::compile_all(&defs)?)
    }

    fn from_figment(fig: Figment) -> Result<Self> {
        let cfg: Config = fig.extract().map_err(|e| {
            let key = if e.path.is_empty() {
                "<config>".to_string()
            } else {
                e.path.join(".")
            };
            invalid(&key, e.kind.to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.storage()?;
        self.kafka.validate()?;
        self.ingest.validate()?;
        self.engine.validate()?;
        self.scheduler.lease_grace()?;
        self.scheduler.misfire_grace()?;
        for (key, addr) in [
            ("flight.listen", &self.flight.listen),
            ("http.listen", &self.http.listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(key, format!("{addr:?} is not an ip:port address")));
            }
        }
        Ok(())
    }

    /// The storage root with the options object stores need.
    pub(crate) fn storage(&self) -> Result<Storage> {
        let root = StorageRoot::parse(&self.storage.url)
            .map_err(|e| invalid("storage.url", e.to_string()))?;
        let mut options = HashMap::new();
        if matches!(root.url().scheme(), "s3" | "s3a") {
            let s3 = &self.storage.s3;
            if s3.conditional_put != "etag" && !s3.conditional_put.is_empty() {
                return Err(invalid(
                    "storage.s3.conditional_put",
                    format!("{:?} is not supported (use \"etag\")", s3.conditional_put),
                ));
            }
            if s3.endpoint.starts_with("http://") && !s3.allow_http {
                return Err(invalid(
                    "storage.s3.allow_http",
                    format!("must be true for the plain-http endpoint {}", s3.endpoint),
                ));
            }
            if s3.access_key_id.is_empty() != s3.secret_access_key.is_empty() {
                return Err(invalid(
                    "storage.s3.secret_access_key",
                    "access_key_id and secret_access_key must be set together",
                ));
            }
            let mut set = |k: &str, v: &str| {
                if !v.is_empty() {
                    options.insert(k.to_string(), v.to_string());
                }
            };
            set("aws_endpoint", &s3.endpoint);
            set("aws_region", &s3.region);
            set("aws_access_key_id", &s3.access_key_id);
            set("aws_secret_access_key", &s3.secret_access_key);
            set(
                "aws_allow_http",
                if s3.allow_http { "true" } else { "false" },
            );
            set(
                "aws_virtual_hosted_style_request",
                if s3.virtual_hosted_style {
                    "true"
                } else {
                    "false"
                },
            );
            set("aws_conditional_put", &s3.conditional_put);
        }
        Ok(Storage::new(root, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config> {
        Config::from_figment(Figment::new().merge(Toml::string(text)))
    }

    #[test]
    fn example_config_loads_and_matches_defaults() {
        let example = include_str!("../sakura.example.toml");
        let cfg = load_toml(example).unwrap();
        let d = Config::default();
        assert_eq!(cfg.flight.listen, d.flight.listen);
        assert_eq!(cfg.ingest.flush_rows, d.ingest.flush_rows);
        assert_eq!(cfg.ingest.topics, d.ingest.topics);
        assert_eq!(cfg.kafka.session_timeout_ms, d.kafka.session_timeout_ms);
        assert_eq!(cfg.engine.refresh_interval_ms, d.engine.refresh_interval_ms);
    }

    #[test]
    fn shipped_jobs_load_and_pass_their_kinds_checks() {
        // The example config includes them.
        let mut cfg = load_toml(include_str!("../sakura.example.toml")).unwrap();
        cfg.base_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let jobs = cfg.jobs().unwrap();
        let names: Vec<_> = jobs.iter().map(|j| j.name.as_str()).collect();
        for want in [
            "telemetry_1h",
            "log_levels_1d",
            "compact_raw_telemetry",
            "retention_raw_logs",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let kinds = jobs::Kinds::builtin();
        for j in &jobs {
            kinds.for_job(j).unwrap();
        }
        let e = load_toml("[[jobs]]\nname = \"x\"\nkind = \"sql\"\nevery = \"soon\"")
            .unwrap()
            .jobs()
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs.x.every"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_toml("[ingest]\nflush_rows = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingest.flush_rows"), "{e}");
        let e = load_toml("[ingest]\nflush_rowz = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_rowz"), "{e}");
        let e = load_toml("[flight]\nlisten = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flight.listen"), "{e}");
        let e =
            load_toml("[storage]\nurl = \"s3://b/p\"\n[storage.s3]\nendpoint = \"http://x:9000\"")
                .unwrap_err()
                .to_string();
        assert!(e.contains("storage.s3.allow_http"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment's own error
    fn env_overrides_use_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("sakura.toml", "[ingest]\nflush_rows = 5\n")?;
            jail.set_env("SAKURA__INGEST__FLUSH_ROWS", "7");
            jail.set_env("SAKURA__KAFKA__BROKERS", "k1:9092,k2:9092");
            let cfg = Config::load(Some(Path::new("sakura.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.ingest.flush_rows, 7);
            assert_eq!(cfg.kafka.brokers, "k1:9092,k2:9092");
            jail.set_env("SAKURA__INGEST__FLUSH_ROWS", "lots");
            let e = Config::load(Some(Path::new("sakura.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ingest.flush_rows"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn s3_settings_become_object_store_options() {
        let cfg = load_toml(
            "[storage]\nurl = \"s3://lake/prod\"\n[storage.s3]\nendpoint = \"http://minio:9000\"\nallow_http = true\naccess_key_id = \"a\"\nsecret_access_key = \"b\"",
        )
        .unwrap();
        let s = cfg.storage().unwrap();
        assert_eq!(s.options["aws_endpoint"], "http://minio:9000");
        assert_eq!(s.options["aws_conditional_put"], "etag");
        assert_eq!(s.options["aws_virtual_hosted_style_request"], "false");
        assert!(
            !format!("{s:?}").contains("\"b\""),
            "credentials must not be printed"
        );
    }
}
