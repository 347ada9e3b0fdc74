//! What a job does when it fires. Each kind reads its `params`, runs, and reports what it did;
//! the scheduler around it handles timing, leases, timeouts, retries and history.

mod export;
mod maintenance;
mod ml_score;
mod ml_train;
mod sql;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::Job;
use crate::history::{Trigger, Window};
use crate::{Error, Result};

pub use ml_score::AnomalySink;
pub use window::{WindowSpec, render_template};

/// Everything a run may use.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub job: Arc<Job>,
    /// The fire being run (the current time for manual runs).
    pub fire_time: DateTime<Utc>,
    pub trigger: Trigger,
    /// The end of the last window a successful run processed.
    pub watermark: Option<DateTime<Utc>>,
    /// A window chosen by hand (`sakura jobs run NAME --window …`): processed as given.
    pub window: Option<Window>,
    /// The engine, for kinds that query or write tables (absent in scheduler tests).
    pub engine: Option<engine::Engine>,
}

impl RunContext {
    pub fn engine(&self) -> Result<&engine::Engine> {
        self.engine.as_ref().ok_or_else(|| {
            Error::job(
                &self.job.name,
                "this scheduler has no engine to run it with",
            )
        })
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub rows_read: u64,
    pub rows_written: u64,
    /// In words, for `system.job_runs.detail` and the CLI.
    pub detail: String,
    /// The data window processed; a successful run moves the job's watermark to its end.
    pub window: Option<Window>,
}

impl Outcome {
    /// A run that found nothing new since the watermark.
    pub(crate) fn up_to_date() -> Self {
        Self {
            detail: "nothing new since the watermark".into(),
            ..Self::default()
        }
    }
}

/// A job kind.
#[async_trait]
pub trait JobKind: Send + Sync + std::fmt::Debug {
    /// The `kind = "…"` it answers to.
    fn name(&self) -> &'static str;
    /// Checks the job's `params` (at start-up, so a bad definition stops the start).
    fn check(&self, job: &Job) -> Result<()>;
    async fn run(&self, ctx: RunContext) -> Result<Outcome>;
}

/// The kinds a scheduler can run, by name.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    kinds: BTreeMap<&'static str, Arc<dyn JobKind>>,
}

impl Kinds {
    /// `sql`, `compact`, `vacuum`, `retention` and `export`.
    pub fn builtin() -> Self {
        let mut k = Self::default();
        k.register(Arc::new(sql::Sql));
        k.register(Arc::new(maintenance::Compact));
        k.register(Arc::new(maintenance::Vacuum));
        k.register(Arc::new(maintenance::Retention));
        k.register(Arc::new(export::Export));
        k.register(Arc::new(ml_train::MlTrain));
        k.register(Arc::new(ml_score::MlScore::default()));
        k
    }

    /// `ml_score` sends its anomalies to `sink` (Kafka in the binary).
    pub fn with_anomaly_sink(mut self, sink: Arc<dyn AnomalySink>) -> Self {
        self.register(Arc::new(ml_score::MlScore { sink: Some(sink) }));
        self
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: Arc<dyn JobKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// The kind of `job`, after checking its params.
    pub fn for_job(&self, job: &Job) -> Result<Arc<dyn JobKind>> {
        let Some(kind) = self.kinds.get(job.kind.as_str()) else {
            return Err(Error::config(
                format!("jobs.{}.kind", job.name),
                format!(
                    "{:?} is not a job kind; kinds: {}",
                    job.kind,
                    self.names().join(", ")
                ),
            ));
        };
        kind.check(job)?;
        Ok(kind.clone())
    }
}
