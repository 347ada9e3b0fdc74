//! Scheduler metrics for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::history::{JobRun, RunStatus};

#[derive(Debug, Default, Clone)]
struct PerJob {
    runs: BTreeMap<&'static str, u64>,
    running: i64,
    last_success: Option<f64>,
    last_duration: Option<f64>,
    rows_written: u64,
    fires_taken_elsewhere: u64,
}

/// Counters of every job this node ran.
#[derive(Debug, Default)]
pub struct JobMetrics {
    jobs: Mutex<BTreeMap<String, PerJob>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl JobMetrics {
    fn with(&self, job: &str, f: impl FnOnce(&mut PerJob)) {
        if let Ok(mut m) = self.jobs.lock() {
            f(m.entry(job.to_string()).or_default());
        }
    }

    /// Lists `job` with zero counts, so dashboards see it before its first run.
    pub fn register(&self, job: &str) {
        self.with(job, |_| {});
    }

    pub(crate) fn started(&self, job: &str) {
        self.with(job, |j| j.running += 1);
    }

    pub(crate) fn finished(&self, run: &JobRun) {
        self.with(&run.job, |j| {
            j.running -= 1;
            *j.runs.entry(run.status.as_str()).or_default() += 1;
            j.rows_written += run.rows_written;
            let secs = (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0;
            j.last_duration = Some(secs);
            if run.status == RunStatus::Succeeded {
                j.last_success = Some(run.finished_at.timestamp_millis() as f64 / 1000.0);
            }
        });
    }

    pub(crate) fn skipped(&self, job: &str) {
        self.with(job, |j| {
            *j.runs.entry(RunStatus::Skipped.as_str()).or_default() += 1
        });
    }

    pub(crate) fn taken_elsewhere(&self, job: &str) {
        self.with(job, |j| j.fires_taken_elsewhere += 1);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let Ok(jobs) = self.jobs.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let statuses = [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Skipped,
        ];
        let _ = writeln!(
            out,
            "# HELP sakura_job_runs_total Job attempts this node ran, by outcome."
        );
        let _ = writeln!(out, "# TYPE sakura_job_runs_total counter");
        for (name, j) in jobs.iter() {
            for s in statuses {
                let n = j.runs.get(s.as_str()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "sakura_job_runs_total{{job=\"{}\",status=\"{}\"}} {n}",
                    escape(name),
                    s.as_str()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sakura_job_running Attempts of the job running on this node now."
        );
        let _ = writeln!(out, "# TYPE sakura_job_running gauge");
        for (name, j) in jobs.iter() {
            let _ = writeln!(
                out,
                "sakura_job_running{{job=\"{}\"}} {}",
                escape(name),
                j.running
            );
        }
        let _ = writeln!(
            out,
            "# HELP sakura_job_rows_written_total Rows the job's runs on this node wrote."
        );
        let _ = writeln!(out, "# TYPE sakura_job_rows_written_total counter");
        for (name, j) in jobs.iter() {
            let _ = writeln!(
                out,
                "sakura_job_rows_written_total{{job=\"{}\"}} {}",
                escape(name),
                j.rows_written
            );
        }
        let _ = writeln!(
            out,
            "# HELP sakura_job_fires_taken_elsewhere_total Fires another node held or had finished when this node came to run them."
        );
        let _ = writeln!(out, "# TYPE sakura_job_fires_taken_elsewhere_total counter");
        for (name, j) in jobs.iter() {
            let _ = writeln!(
                out,
                "sakura_job_fires_taken_elsewhere_total{{job=\"{}\"}} {}",
                escape(name),
                j.fires_taken_elsewhere
            );
        }
        let _ = writeln!(
            out,
            "# HELP sakura_job_last_success_timestamp_seconds When the job's last successful run on this node ended."
        );
        let _ = writeln!(
            out,
            "# TYPE sakura_job_last_success_timestamp_seconds gauge"
        );
        for (name, j) in jobs.iter() {
            if let Some(t) = j.last_success {
                let _ = writeln!(
                    out,
                    "sakura_job_last_success_timestamp_seconds{{job=\"{}\"}} {t}",
                    escape(name)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sakura_job_last_duration_seconds How long the job's last attempt on this node took."
        );
        let _ = writeln!(out, "# TYPE sakura_job_last_duration_seconds gauge");
        for (name, j) in jobs.iter() {
            if let Some(d) = j.last_duration {
                let _ = writeln!(
                    out,
                    "sakura_job_last_duration_seconds{{job=\"{}\"}} {d}",
                    escape(name)
                );
            }
        }
        out
    }
}
