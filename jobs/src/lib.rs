//! Scheduled batch jobs.
//!
//! In: job definitions from the config (`[[jobs]]`, `jobs/*.toml`), a clock, the engine and the
//! storage root. Out: SQL ETL runs over data windows bound from each job's watermark, Delta
//! maintenance (compaction, vacuum, retention), exports, and every attempt recorded in
//! `system.job_runs` (with `system.jobs` computed from it). Several nodes may run the
//! scheduler: each fire takes a lease with a conditional write on the object store.

mod clock;
mod config;
mod delta;
mod error;
mod history;
mod kinds;
mod lease;
mod metrics;
mod schedule;
mod scheduler;
mod system_table;

pub use clock::{Clock, SystemClock, TokioClock};
pub use config::{
    CatchUp, Concurrency, Job, JobDef, SchedulerConfig, compile_all, load_included, parse_duration,
    parse_jobs_toml,
};
pub use error::{Error, Result};
pub use history::{
    DeltaHistory, History, JobRun, JobState, MemoryHistory, RunStatus, Trigger, Window,
};
pub use kinds::{AnomalySink, JobKind, Kinds, Outcome, RunContext, WindowSpec, render_template};
pub use lease::{Claim, LEASE_PREFIX, Leases};
pub use metrics::JobMetrics;
pub use schedule::Schedule;
pub use scheduler::{Scheduler, Timing};
pub use system_table::JobsTable;
