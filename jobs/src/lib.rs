//! Scheduled batch jobs (filled in by the jobs issue).
//!
//! In: job definitions from the config (`[[jobs]]`, `jobs/*.toml`) and a clock. Out: SQL ETL
//! runs through the engine, Delta maintenance (compaction, vacuum, retention), exports, ML
//! train/score runs, and their history in `system.job_runs` / `system.jobs`. Several nodes may
//! run the scheduler: each fire takes a lease with a conditional write on the object store.

/// The job kinds the scheduler will run.
pub const PLANNED_JOB_KINDS: [&str; 7] = [
    "sql",
    "compact",
    "vacuum",
    "retention",
    "export",
    "ml_train",
    "ml_score",
];
