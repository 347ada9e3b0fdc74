//! Job definitions as written in the config (`[[jobs]]`, `jobs/*.toml`) and their validated,
//! compiled form.

use std::time::Duration;

use serde::Deserialize;

use crate::schedule::Schedule;
use crate::{Error, Result};

/// `[scheduler]`: whether and how `sakura serve` runs the jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Run the scheduler in `sakura serve` (manual `sakura jobs run` works either way).
    pub enabled: bool,
    /// Files with more `[[jobs]]`, relative to the config file's directory; a pattern's last
    /// part may be `*.toml` (e.g. `jobs/*.toml`).
    pub include: Vec<String>,
    /// This node's name in leases and `system.job_runs` (empty: host name and process id).
    pub node_id: String,
    /// A fire's lease lasts the job's timeout plus this long: a node that died mid-run is
    /// replaced by another this long after the run would have timed out.
    pub lease_grace: String,
    /// A fire this late is "missed" and handled by the job's catch-up policy.
    pub misfire_grace: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            include: Vec::new(),
            node_id: String::new(),
            lease_grace: "30s".into(),
            misfire_grace: "60s".into(),
        }
    }
}

impl SchedulerConfig {
    pub fn lease_grace(&self) -> Result<Duration> {
        parse_duration("scheduler.lease_grace", &self.lease_grace)
    }

    pub fn misfire_grace(&self) -> Result<Duration> {
        parse_duration("scheduler.misfire_grace", &self.misfire_grace)
    }

    /// The configured node id, or `<host>-<pid>`.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        format!("{host}-{}", std::process::id())
    }
}

/// One `[[jobs]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    pub name: String,
    /// What runs: `sql`, `compact`, `vacuum`, `retention`, `export`, `ml_train`, `ml_score`.
    pub kind: String,
    /// A cron pattern with optional seconds (`sec min hour day month weekday`).
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron pattern's time zone (IANA name).
    #[serde(default = "utc")]
    pub timezone: String,
    /// A fixed interval instead of a cron pattern (`30s`, `10m`, `1h`); fires at multiples of
    /// it since the Unix epoch, so every node computes the same fire times.
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An attempt running longer is cancelled and counts as failed.
    #[serde(default = "one_hour")]
    pub timeout: String,
    /// Further attempts after a failure that can succeed on retry.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one, up to `backoff_max`.
    #[serde(default = "ten_seconds")]
    pub backoff: String,
    #[serde(default = "ten_minutes")]
    pub backoff_max: String,
    /// `skip`: a fire that comes while the previous one still runs is skipped (recorded as
    /// such); `allow`: they run side by side.
    #[serde(default = "skip")]
    pub concurrency: String,
    /// Missed fires (the scheduler was down): `skip` them, run the latest `once`, or run `all`
    /// of them (at most `max_catch_up`, the latest ones).
    #[serde(default = "once")]
    pub catch_up: String,
    #[serde(default = "twenty_four")]
    pub max_catch_up: u32,
    /// The kind's own settings.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn utc() -> String {
    "UTC".into()
}
fn yes() -> bool {
    true
}
fn one_hour() -> String {
    "1h".into()
}
fn ten_seconds() -> String {
    "10s".into()
}
fn ten_minutes() -> String {
    "10m".into()
}
fn skip() -> String {
    "skip".into()
}
fn once() -> String {
    "once".into()
}
fn twenty_four() -> u32 {
    24
}

/// What to do with a fire that comes while the job's previous fire still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Skip,
    Allow,
}

/// What to do with fires missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    Skip,
    Once,
    All,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: String,
    pub schedule: Schedule,
    pub enabled: bool,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub concurrency: Concurrency,
    pub catch_up: CatchUp,
    pub max_catch_up: u32,
    pub params: serde_json::Value,
}

/// Parses `30s`, `10m`, `1h 30m`, `7days`; `key` names the setting in the error.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        Error::config(
            key,
            format!("{text:?} is not a duration ({e}); e.g. 30s, 10m, 1h, 7days"),
        )
    })
}

/// Whether `name` can name a job (it becomes part of object-store paths).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl JobDef {
    /// Checks every field and compiles the schedule.
    pub fn compile(&self) -> Result<Job> {
        let key = |field: &str| format!("jobs.{}.{field}", self.name);
        if !valid_name(&self.name) {
            return Err(Error::config(
                "jobs.name",
                format!(
                    "{:?}: job names are 1-100 letters, digits, _ and -",
                    self.name
                ),
            ));
        }
        let schedule = match (&self.cron, &self.every) {
            (Some(cron), None) => {
                Schedule::cron(cron, &self.timezone).map_err(|m| Error::config(key("cron"), m))?
            }
            (None, Some(every)) => {
                let period = parse_duration(&key("every"), every)?;
                Schedule::every(period).map_err(|m| Error::config(key("every"), m))?
            }
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    key("cron"),
                    "set either cron or every, not both",
                ));
            }
            (None, None) => {
                return Err(Error::config(
                    key("cron"),
                    "a job needs a schedule: cron = \"0 5 * * * *\" or every = \"10m\"",
                ));
            }
        };
        let timeout = parse_duration(&key("timeout"), &self.timeout)?;
        if timeout.is_zero() {
            return Err(Error::config(key("timeout"), "must be more than 0s"));
        }
        let concurrency = match self.concurrency.as_str() {
            "skip" => Concurrency::Skip,
            "allow" => Concurrency::Allow,
            other => {
                return Err(Error::config(
                    key("concurrency"),
                    format!("{other:?} is not one of skip, allow"),
                ));
            }
        };
        let catch_up = match self.catch_up.as_str() {
            "skip" => CatchUp::Skip,
            "once" => CatchUp::Once,
            "all" => CatchUp::All,
            other => {
                return Err(Error::config(
                    key("catch_up"),
                    format!("{other:?} is not one of skip, once, all"),
                ));
            }
        };
        if self.max_catch_up == 0 || self.max_catch_up > 10_000 {
            return Err(Error::config(
                key("max_catch_up"),
                format!("{} is outside 1..=10000", self.max_catch_up),
            ));
        }
        if self.retries > 100 {
            return Err(Error::config(
                key("retries"),
                format!("{} is over 100", self.retries),
            ));
        }
        Ok(Job {
            name: self.name.clone(),
            kind: self.kind.clone(),
            schedule,
            enabled: self.enabled,
            timeout,
            retries: self.retries,
            backoff: parse_duration(&key("backoff"), &self.backoff)?,
            backoff_max: parse_duration(&key("backoff_max"), &self.backoff_max)?,
            concurrency,
            catch_up,
            max_catch_up: self.max_catch_up,
            params: serde_json::Value::Object(self.params.clone()),
        })
    }
}

impl Job {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }

    /// The kind's parameters as `T`; errors name the job.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| Error::config(format!("jobs.{}.params", self.name), e.to_string()))
    }
}

/// Reads the `[[jobs]]` of each file `include` names (relative to `base`); a pattern's last
/// part may be `*.toml`. Files are read in name order.
pub fn load_included(base: &std::path::Path, include: &[String]) -> Result<Vec<JobDef>> {
    let mut out = Vec::new();
    for pattern in include {
        let path = base.join(pattern);
        let files = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.starts_with('*') => {
                let suffix = &name[1..];
                let dir = path.parent().unwrap_or(base);
                let entries = std::fs::read_dir(dir).map_err(|e| {
                    Error::config(
                        "scheduler.include",
                        format!("{pattern}: cannot read {}: {e}", dir.display()),
                    )
                })?;
                let mut files: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(suffix))
                    })
                    .collect();
                files.sort();
                files
            }
            _ => vec![path],
        };
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Error::config(
                    "scheduler.include",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            out.extend(parse_jobs_toml(&file.display().to_string(), &text)?);
        }
    }
    Ok(out)
}

/// The `[[jobs]]` of a TOML text (e.g. a file embedded in the binary).
pub fn parse_jobs_toml(origin: &str, text: &str) -> Result<Vec<JobDef>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        jobs: Vec<JobDef>,
    }
    let parsed: File = toml_from_str(text)
        .map_err(|e| Error::config("scheduler.include", format!("{origin}: {e}")))?;
    Ok(parsed.jobs)
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

/// Compiles every definition; names must be unique.
pub fn compile_all(defs: &[JobDef]) -> Result<Vec<Job>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for def in defs {
        if !seen.insert(def.name.clone()) {
            return Err(Error::config(
                format!("jobs.{}", def.name),
                "two jobs have this name",
            ));
        }
        out.push(def.compile()?);
    }
    Ok(out)
}
