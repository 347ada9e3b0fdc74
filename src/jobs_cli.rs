//! `sakura jobs …`: list the jobs, run one now (or backfill a window), show the run history —
//! directly against the configured storage, like a node would.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engine::Engine;
use jobs::{
    DeltaHistory, History, JobState, Kinds, Leases, Scheduler, SystemClock, Timing, Window,
};

use crate::config::Config;
use crate::error::{Error, Result};

/// The scheduler for `cfg`'s jobs, recording into `system.job_runs` through `engine`.
pub(crate) fn scheduler(cfg: &Config, engine: &Engine) -> Result<Scheduler> {
    let storage = cfg.storage()?;
    let leases = Leases::for_storage(&storage, cfg.scheduler.node_id())?;
    let history: Arc<dyn History> = Arc::new(DeltaHistory::new(engine.clone()));
    let kinds = Kinds::builtin()
        .with_anomaly_sink(Arc::new(crate::anomaly_sink::KafkaSink::new(&cfg.kafka)));
    Ok(Scheduler::new(
        cfg.jobs()?,
        &kinds,
        leases,
        history,
        Arc::new(SystemClock),
        Some(engine.clone()),
        Timing {
            lease_grace: cfg.scheduler.lease_grace()?,
            misfire_grace: cfg.scheduler.misfire_grace()?,
        },
    )?)
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Parses `START..END` (RFC 3339 times or dates, UTC).
pub(crate) fn parse_window(text: &str) -> Result<Window> {
    let bad = |m: String| Error::Config {
        key: "--window".into(),
        message: m,
    };
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| bad(format!("{text:?} is not START..END")))?;
    let parse = |s: &str| -> Result<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(t.with_timezone(&Utc));
        }
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
            .ok_or_else(|| {
                bad(format!(
                    "{s:?} is not an RFC 3339 time or a YYYY-MM-DD date"
                ))
            })
    };
    let w = Window {
        start: parse(a.trim())?,
        end: parse(b.trim())?,
    };
    if w.start >= w.end {
        return Err(bad(format!("{text:?}: the start is not before the end")));
    }
    Ok(w)
}

async fn open(cfg: &Config) -> Result<(Engine, Scheduler)> {
    let engine = Engine::new(cfg.storage()?, &cfg.engine).await?;
    let scheduler = scheduler(cfg, &engine)?;
    Ok((engine, scheduler))
}

pub(crate) async fn list(cfg: &Config) -> Result<()> {
    let (_, s) = open(cfg).await?;
    let runs = s.history().runs(None).await?;
    let now = Utc::now();
    println!(
        "{:<24} {:<10} {:<38} {:<21} {:<10} {:<21}",
        "JOB", "KIND", "SCHEDULE", "NEXT FIRE", "LAST", "WATERMARK"
    );
    for job in s.jobs() {
        let st = JobState::from_runs(runs.iter().filter(|r| r.job == job.name));
        let next = if job.enabled {
            time(job.schedule.next_after(now))
        } else {
            "disabled".into()
        };
        println!(
            "{:<24} {:<10} {:<38} {:<21} {:<10} {:<21}",
            job.name,
            job.kind,
            job.schedule.describe(),
            next,
            st.last_run.as_ref().map_or("-", |r| r.status.as_str()),
            time(st.watermark)
        );
    }
    Ok(())
}

pub(crate) async fn run(cfg: &Config, name: &str, window: Option<&str>) -> Result<()> {
    let window = window.map(parse_window).transpose()?;
    let (_, s) = open(cfg).await?;
    eprintln!(
        "running {name}{}",
        window.map_or(String::new(), |w| format!(
            " over {}..{}",
            time(Some(w.start)),
            time(Some(w.end))
        ))
    );
    let run = s.run_now(name, window).await?;
    println!(
        "{} {} in {:.1} s: {}{}",
        run.job,
        run.status.as_str(),
        (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0,
        run.detail,
        run.window.map_or(String::new(), |w| format!(
            " (window {}..{})",
            time(Some(w.start)),
            time(Some(w.end))
        ))
    );
    match run.error {
        None => Ok(()),
        Some(e) => Err(Error::Task(format!("job {name} failed: {e}"))),
    }
}

pub(crate) async fn history(cfg: &Config, name: Option<&str>, limit: usize) -> Result<()> {
    let (_, s) = open(cfg).await?;
    let runs = s.history().runs(name).await?;
    println!(
        "{:<24} {:<21} {:<9} {:>3} {:<10} {:>8} {:>10} {:>10}  DETAIL / ERROR",
        "JOB", "FIRE", "TRIGGER", "TRY", "STATUS", "SECONDS", "READ", "WRITTEN"
    );
    let skip = runs.len().saturating_sub(limit);
    for r in runs.iter().skip(skip) {
        println!(
            "{:<24} {:<21} {:<9} {:>3} {:<10} {:>8.1} {:>10} {:>10}  {}",
            r.job,
            time(Some(r.fire_time)),
            r.trigger.as_str(),
            r.attempt,
            r.status.as_str(),
            (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0,
            r.rows_read,
            r.rows_written,
            r.error.as_deref().unwrap_or(&r.detail)
        );
    }
    if runs.is_empty() {
        println!("(no runs recorded)");
    }
    Ok(())
}
