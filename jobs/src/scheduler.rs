//! The scheduler: one loop per job that computes its fires, takes each fire's lease, runs it
//! under its timeout with retries and backoff, and records every attempt.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{CatchUp, Concurrency, Job};
use crate::history::{History, JobRun, RunStatus, Trigger, Window};
use crate::kinds::{JobKind, Kinds, Outcome, RunContext};
use crate::lease::{Claim, Leases};
use crate::metrics::JobMetrics;
use crate::{Error, Result};

/// How long the loop sleeps at most before it looks at the clock again (wall-clock jumps).
const MAX_NAP: Duration = Duration::from_secs(30);
/// Lease folders of fires older than this are deleted.
const LEASE_KEEP: chrono::Duration = chrono::Duration::days(7);

/// Timing settings of the scheduler (see `[scheduler]`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A lease lasts the job's timeout plus this.
    pub lease_grace: Duration,
    /// A fire later than this is "missed" (catch-up policy).
    pub misfire_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_grace: Duration::from_secs(30),
            misfire_grace: Duration::from_secs(60),
        }
    }
}

/// A scheduler over a set of jobs.
#[derive(Debug)]
pub struct Scheduler {
    jobs: Vec<(Arc<Job>, Arc<dyn JobKind>)>,
    leases: Leases,
    history: Arc<dyn History>,
    clock: Arc<dyn Clock>,
    engine: Option<engine::Engine>,
    timing: Timing,
    metrics: Arc<JobMetrics>,
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Scheduler {
    /// Checks every job against `kinds` (a bad definition fails here, not at its first fire).
    pub fn new(
        jobs: Vec<Job>,
        kinds: &Kinds,
        leases: Leases,
        history: Arc<dyn History>,
        clock: Arc<dyn Clock>,
        engine: Option<engine::Engine>,
        timing: Timing,
    ) -> Result<Self> {
        let metrics = Arc::new(JobMetrics::default());
        let mut checked = Vec::new();
        for job in jobs {
            let kind = kinds.for_job(&job)?;
            metrics.register(&job.name);
            checked.push((Arc::new(job), kind));
        }
        Ok(Self {
            jobs: checked,
            leases,
            history,
            clock,
            engine,
            timing,
            metrics,
        })
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.iter().map(|(j, _)| j.clone()).collect()
    }

    pub fn history(&self) -> Arc<dyn History> {
        self.history.clone()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn find(&self, name: &str) -> Result<(Arc<Job>, Arc<dyn JobKind>)> {
        self.jobs
            .iter()
            .find(|(j, _)| j.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<_> = self.jobs.iter().map(|(j, _)| j.name.as_str()).collect();
                Error::config(
                    "job",
                    format!("no job named {name:?}; jobs: {}", names.join(", ")),
                )
            })
    }

    /// Runs every enabled job's loop until `shutdown` turns true. Runs in progress are
    /// abandoned at shutdown; their leases expire and another node (or the next start) takes
    /// the fire over.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut loops = JoinSet::new();
        for (job, kind) in &self.jobs {
            if job.enabled {
                let this = self.clone();
                let (job, kind) = (job.clone(), kind.clone());
                loops.spawn(async move { this.job_loop(job, kind).await });
            }
        }
        info!(
            jobs = loops.len(),
            node = self.leases.node(),
            "scheduler started"
        );
        let _ = shutdown.wait_for(|s| *s).await;
        loops.shutdown().await;
        Ok(())
    }

    /// Runs `name` once now, outside its schedule (no lease): over `window` when given (a
    /// backfill; the watermark only moves forward), else over what is new since the watermark.
    pub async fn run_now(&self, name: &str, window: Option<Window>) -> Result<JobRun> {
        let (job, kind) = self.find(name)?;
        let now = self.clock.now();
        let (run, _) = self
            .clone_parts()
            .attempt_once(&job, kind.as_ref(), now, Trigger::Manual, 1, window)
            .await;
        Ok(run)
    }

    async fn job_loop(&self, job: Arc<Job>, kind: Arc<dyn JobKind>) {
        let mut last_fire = loop {
            match self.history.state(&job.name).await {
                Ok(s) => break s.last_fire,
                Err(e) => {
                    warn!(job = %job.name, error = %e, "cannot read the job's history; retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        let start = self.clock.now();
        // A job never run starts with its next fire; one that ran catches up from its last.
        let mut cursor = last_fire.unwrap_or(start);
        let mut queue: VecDeque<(DateTime<Utc>, Trigger)> = VecDeque::new();
        let mut held: Vec<(DateTime<Utc>, DateTime<Utc>, Trigger)> = Vec::new();
        let mut running: JoinSet<()> = JoinSet::new();
        let mut last_prune = start;
        loop {
            let now = self.clock.now();
            let due = job
                .schedule
                .fires_between(cursor, now, job.max_catch_up as usize);
            if let Some(&latest) = due.last() {
                cursor = latest;
                // Late by more than the grace: missed (the catch-up policy decides); the rest
                // run as scheduled.
                let grace = to_chrono(self.timing.misfire_grace);
                let (missed, on_time): (Vec<_>, Vec<_>) =
                    due.iter().copied().partition(|f| now - *f > grace);
                let caught_up: Vec<DateTime<Utc>> = match job.catch_up {
                    CatchUp::All => missed.clone(),
                    CatchUp::Once => missed.last().copied().into_iter().collect(),
                    CatchUp::Skip => Vec::new(),
                };
                if !missed.is_empty() {
                    info!(job = %job.name, missed = missed.len(), running = caught_up.len(), policy = ?job.catch_up, "missed fires");
                }
                queue.extend(caught_up.into_iter().map(|f| (f, Trigger::CatchUp)));
                queue.extend(on_time.into_iter().map(|f| (f, Trigger::Schedule)));
            }
            // Fires another node held whose lease has now expired: try to take them over.
            let now = self.clock.now();
            held.retain(|&(fire, until, trigger)| {
                if until <= now {
                    queue.push_back((fire, trigger));
                    false
                } else {
                    true
                }
            });
            while let Some(&(fire, trigger)) = queue.front() {
                if !running.is_empty() && job.concurrency == Concurrency::Skip {
                    if trigger != Trigger::Schedule {
                        // Catch-up fires and takeovers wait their turn.
                        break;
                    }
                    queue.pop_front();
                    self.skip(&job, fire, "the previous fire is still running")
                        .await;
                    last_fire = Some(fire);
                    continue;
                }
                queue.pop_front();
                let hold = job.timeout + self.timing.lease_grace;
                match self
                    .leases
                    .claim(&job.name, fire, self.clock.now(), hold)
                    .await
                {
                    Ok(Claim::Won { attempt }) => {
                        // A takeover: the node that held the fire may have ended it (and
                        // recorded that) but died before marking its lease done.
                        if attempt > 1
                            && let Some(status) = self.ended_before(&job, fire).await
                        {
                            info!(job = %job.name, %fire, status, "the fire ended on the node that held it; marking its lease done");
                            if let Err(e) = self
                                .leases
                                .finish(&job.name, fire, status, self.clock.now())
                                .await
                            {
                                warn!(job = %job.name, %fire, error = %e, "cannot mark the fire done");
                            }
                            last_fire = Some(fire);
                            continue;
                        }
                        // Skip if running: locally, a fire another node holds, or the
                        // previous fire (whoever runs it).
                        let mut elsewhere = false;
                        if job.concurrency == Concurrency::Skip {
                            let mut check: Vec<_> = held.iter().map(|h| h.0).collect();
                            check.extend(last_fire.filter(|p| *p < fire));
                            for f in check {
                                let now = self.clock.now();
                                if self
                                    .leases
                                    .is_running(&job.name, f, now)
                                    .await
                                    .unwrap_or(false)
                                {
                                    elsewhere = true;
                                    break;
                                }
                            }
                        }
                        if job.concurrency == Concurrency::Skip
                            && (elsewhere || !running.is_empty())
                        {
                            self.finish_skipped(
                                &job,
                                fire,
                                trigger,
                                attempt,
                                "the previous fire is still running on another node",
                            )
                            .await;
                            last_fire = Some(fire);
                            continue;
                        }
                        last_fire = Some(fire);
                        let (job, kind, this) = (job.clone(), kind.clone(), self.clone_parts());
                        running.spawn(async move {
                            this.execute(&job, kind.as_ref(), fire, trigger, attempt)
                                .await;
                        });
                    }
                    Ok(Claim::Held { node, until }) => {
                        self.metrics.taken_elsewhere(&job.name);
                        last_fire = Some(fire);
                        tracing::debug!(job = %job.name, %fire, %node, %until, "fire held by another node");
                        held.push((fire, until, trigger));
                    }
                    Ok(Claim::Done { .. }) => {
                        self.metrics.taken_elsewhere(&job.name);
                        last_fire = Some(fire);
                    }
                    Err(e) => {
                        warn!(job = %job.name, %fire, error = %e, "cannot take the fire's lease; retrying");
                        queue.push_front((fire, trigger));
                        break;
                    }
                }
            }
            let now = self.clock.now();
            if now - last_prune > chrono::Duration::hours(1) {
                last_prune = now;
                if let Err(e) = self.leases.prune(&job.name, now - LEASE_KEEP).await {
                    warn!(job = %job.name, error = %e, "cannot prune old leases");
                }
            }
            let mut wake = job
                .schedule
                .next_after(cursor)
                .unwrap_or(now + to_chrono(MAX_NAP));
            for &(_, until, _) in &held {
                wake = wake.min(until);
            }
            if !queue.is_empty() && running.is_empty() {
                // A lease error: try again shortly.
                wake = wake.min(now + chrono::Duration::seconds(5));
            }
            let nap = (wake - now).to_std().unwrap_or(Duration::ZERO).min(MAX_NAP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
    }

    fn clone_parts(&self) -> Runner {
        Runner {
            leases: self.leases.clone(),
            history: self.history.clone(),
            clock: self.clock.clone(),
            engine: self.engine.clone(),
            timing: self.timing,
            metrics: self.metrics.clone(),
        }
    }

    /// How the fire ended, when the history already has its last attempt: succeeded, skipped,
    /// or failed with the retries spent. `None` when it has not ended or the history cannot
    /// be read (the takeover then runs it).
    async fn ended_before(&self, job: &Job, fire: DateTime<Utc>) -> Option<&'static str> {
        let runs = match self.history.fire_runs(&job.name, fire).await {
            Ok(r) => r,
            Err(e) => {
                warn!(job = %job.name, %fire, error = %e, "cannot read the history before taking the fire over");
                return None;
            }
        };
        let last = runs.iter().max_by_key(|r| r.attempt)?;
        match last.status {
            RunStatus::Succeeded | RunStatus::Skipped => Some(last.status.as_str()),
            RunStatus::Failed | RunStatus::TimedOut if last.attempt > job.retries => {
                Some(last.status.as_str())
            }
            _ => None,
        }
    }

    async fn skip(&self, job: &Arc<Job>, fire: DateTime<Utc>, why: &str) {
        let hold = job.timeout + self.timing.lease_grace;
        if let Ok(Claim::Won { attempt }) = self
            .leases
            .claim(&job.name, fire, self.clock.now(), hold)
            .await
        {
            self.finish_skipped(job, fire, Trigger::Schedule, attempt, why)
                .await;
        }
    }

    async fn finish_skipped(
        &self,
        job: &Job,
        fire: DateTime<Utc>,
        trigger: Trigger,
        attempt: u32,
        why: &str,
    ) {
        let now = self.clock.now();
        let run = JobRun {
            job: job.name.clone(),
            kind: job.kind.clone(),
            fire_time: fire,
            trigger,
            attempt,
            node: self.leases.node().to_string(),
            started_at: now,
            finished_at: now,
            status: RunStatus::Skipped,
            window: None,
            rows_read: 0,
            rows_written: 0,
            detail: why.to_string(),
            error: None,
        };
        info!(job = %job.name, %fire, why, "fire skipped");
        self.metrics.skipped(&job.name);
        self.clone_parts().record(&run).await;
        if let Err(e) = self.leases.finish(&job.name, fire, "skipped", now).await {
            warn!(job = %job.name, error = %e, "cannot mark the skipped fire done");
        }
    }
}

/// What running a fire needs (cloned into the fire's task).
#[derive(Debug, Clone)]
struct Runner {
    leases: Leases,
    history: Arc<dyn History>,
    clock: Arc<dyn Clock>,
    engine: Option<engine::Engine>,
    timing: Timing,
    metrics: Arc<JobMetrics>,
}

impl Runner {
    /// Runs the fire: attempts with backoff until one succeeds, the retries are spent, the
    /// failure cannot be retried, or another node took the fire over.
    async fn execute(
        &self,
        job: &Arc<Job>,
        kind: &dyn JobKind,
        fire: DateTime<Utc>,
        trigger: Trigger,
        first: u32,
    ) {
        let mut attempt = first;
        loop {
            let (run, retryable) = self
                .attempt_once(job, kind, fire, trigger, attempt, None)
                .await;
            let done = run.status == RunStatus::Succeeded || attempt > job.retries || !retryable;
            if done {
                if let Err(e) = self
                    .leases
                    .finish(&job.name, fire, run.status.as_str(), self.clock.now())
                    .await
                {
                    warn!(job = %job.name, error = %e, "cannot mark the fire done");
                }
                return;
            }
            let wait = job.backoff_before(attempt);
            info!(job = %job.name, %fire, attempt, retry_in = ?wait, "attempt failed; retrying");
            tokio::time::sleep(wait).await;
            let hold = job.timeout + self.timing.lease_grace;
            match self
                .leases
                .try_attempt(&job.name, fire, attempt + 1, self.clock.now(), hold)
                .await
            {
                Ok(true) => attempt += 1,
                Ok(false) => {
                    info!(job = %job.name, %fire, "another node took the fire over");
                    return;
                }
                Err(e) => {
                    warn!(job = %job.name, %fire, error = %e, "cannot take the retry's lease; the fire is left to expire and be taken over");
                    return;
                }
            }
        }
    }

    /// One attempt under the job's timeout, recorded in the history. Also says whether a
    /// failure can succeed on retry.
    async fn attempt_once(
        &self,
        job: &Arc<Job>,
        kind: &dyn JobKind,
        fire: DateTime<Utc>,
        trigger: Trigger,
        attempt: u32,
        window: Option<Window>,
    ) -> (JobRun, bool) {
        let watermark = match self.history.state(&job.name).await {
            Ok(s) => Ok(s.watermark),
            Err(e) => Err(e),
        };
        let started_at = self.clock.now();
        info!(job = %job.name, %fire, attempt, node = self.leases.node(), trigger = trigger.as_str(), "job run starting");
        self.metrics.started(&job.name);
        let (result, timed_out): (Result<Outcome>, bool) = match watermark {
            Err(e) => (Err(e), false),
            Ok(watermark) => {
                let ctx = RunContext {
                    job: job.clone(),
                    fire_time: fire,
                    trigger,
                    watermark,
                    window,
                    engine: self.engine.clone(),
                };
                match tokio::time::timeout(job.timeout, kind.run(ctx)).await {
                    Ok(r) => (r, false),
                    Err(_) => (
                        Err(Error::job(
                            &job.name,
                            format!(
                                "timed out after {}",
                                humantime::format_duration(job.timeout)
                            ),
                        )),
                        true,
                    ),
                }
            }
        };
        let finished_at = self.clock.now();
        let (status, outcome, error, retryable) = match result {
            Ok(o) => (RunStatus::Succeeded, o, None, false),
            Err(e) if timed_out => (
                RunStatus::TimedOut,
                Outcome::default(),
                Some(e.to_string()),
                true,
            ),
            Err(e) => {
                let retryable = e.is_retryable();
                (
                    RunStatus::Failed,
                    Outcome::default(),
                    Some(e.to_string()),
                    retryable,
                )
            }
        };
        let run = JobRun {
            job: job.name.clone(),
            kind: job.kind.clone(),
            fire_time: fire,
            trigger,
            attempt,
            node: self.leases.node().to_string(),
            started_at,
            finished_at,
            status,
            window: outcome.window,
            rows_read: outcome.rows_read,
            rows_written: outcome.rows_written,
            detail: outcome.detail,
            error,
        };
        match &run.error {
            None => {
                info!(job = %job.name, %fire, attempt, detail = %run.detail, "job run succeeded")
            }
            Some(e) => {
                warn!(job = %job.name, %fire, attempt, status = run.status.as_str(), error = %e, "job run failed")
            }
        }
        self.metrics.finished(&run);
        self.record(&run).await;
        (run, retryable)
    }

    /// Records `run`, retrying a failing store for a while: the history is the job's state.
    async fn record(&self, run: &JobRun) {
        for i in 0..5u32 {
            match self.history.record(run).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(job = %run.job, error = %e, "cannot record the run; retrying");
                    tokio::time::sleep(Duration::from_secs(1 << i)).await;
                }
            }
        }
        warn!(job = %run.job, fire = %run.fire_time, status = run.status.as_str(), "the run could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::clock::TokioClock;
    use crate::config::JobDef;
    use crate::history::MemoryHistory;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    type Call = (DateTime<Utc>, Trigger, DateTime<Utc>);

    /// A kind that records its calls, takes `run_for` of (virtual) time, and fails its first
    /// `fail_first` attempts (retryably unless `fatal`).
    #[derive(Debug, Default)]
    struct Fake {
        /// (fire time, trigger, when the attempt started).
        calls: Mutex<Vec<Call>>,
        run_for: Duration,
        fail_first: AtomicU32,
        fatal: bool,
        clock: Mutex<Option<Arc<dyn Clock>>>,
    }

    impl Fake {
        fn new(run_for: Duration, fail_first: u32, fatal: bool) -> Arc<Self> {
            Arc::new(Self {
                run_for,
                fail_first: AtomicU32::new(fail_first),
                fatal,
                ..Self::default()
            })
        }
        fn fires(&self) -> Vec<DateTime<Utc>> {
            self.calls.lock().unwrap().iter().map(|c| c.0).collect()
        }
    }

    #[async_trait]
    impl JobKind for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn check(&self, _: &Job) -> Result<()> {
            Ok(())
        }
        async fn run(&self, ctx: RunContext) -> Result<Outcome> {
            let now = self
                .clock
                .lock()
                .unwrap()
                .as_ref()
                .map(|c| c.now())
                .unwrap_or_default();
            self.calls
                .lock()
                .unwrap()
                .push((ctx.fire_time, ctx.trigger, now));
            tokio::time::sleep(self.run_for).await;
            if self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(if self.fatal {
                    Error::config("params", "bad")
                } else {
                    Error::job(&ctx.job.name, "transient")
                });
            }
            Ok(Outcome {
                rows_written: 1,
                detail: "ok".into(),
                ..Outcome::default()
            })
        }
    }

    fn job(extra: &str) -> Job {
        use figment::providers::Format as _;
        let def: JobDef = figment::Figment::from(figment::providers::Toml::string(&format!(
            "name = \"j\"\nkind = \"fake\"\n{extra}"
        )))
        .extract()
        .unwrap();
        def.compile().unwrap()
    }

    struct Harness {
        scheduler: Arc<Scheduler>,
        history: Arc<MemoryHistory>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<()>>,
    }

    fn start_with(
        job: Job,
        fake: &Arc<Fake>,
        start: DateTime<Utc>,
        store: Arc<dyn ObjectStore>,
        history: Arc<MemoryHistory>,
        node: &str,
    ) -> Harness {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        *fake.clock.lock().unwrap() = Some(clock.clone());
        let mut kinds = Kinds::default();
        kinds.register(fake.clone());
        let leases = Leases::new(store, Path::from("leases"), node);
        let scheduler = Arc::new(
            Scheduler::new(
                vec![job],
                &kinds,
                leases,
                history.clone(),
                clock,
                None,
                Timing {
                    lease_grace: Duration::from_secs(30),
                    misfire_grace: Duration::from_secs(60),
                },
            )
            .unwrap(),
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(scheduler.clone().run(rx));
        Harness {
            scheduler,
            history,
            stop,
            task,
        }
    }

    fn start(job: Job, fake: &Arc<Fake>, start: DateTime<Utc>) -> Harness {
        start_with(
            job,
            fake,
            start,
            Arc::new(InMemory::new()),
            Arc::default(),
            "n1",
        )
    }

    impl Harness {
        async fn stop(self) -> Vec<JobRun> {
            self.stop.send(true).unwrap();
            self.task.await.unwrap().unwrap();
            self.history.runs(None).await.unwrap()
        }
    }

    fn statuses(runs: &[JobRun]) -> Vec<(DateTime<Utc>, u32, &'static str)> {
        let mut v: Vec<_> = runs
            .iter()
            .map(|r| (r.fire_time, r.attempt, r.status.as_str()))
            .collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn interval_and_cron_fires_run_once_each() {
        let fake = Fake::new(Duration::from_secs(5), 0, false);
        let h = start(job("every = \"10m\""), &fake, t("2026-03-01T10:00:30Z"));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let runs = h.stop().await;
        let expect: Vec<_> = (1..=6)
            .map(|i| t("2026-03-01T10:00:00Z") + chrono::Duration::minutes(10 * i))
            .collect();
        assert_eq!(fake.fires(), expect);
        assert_eq!(runs.len(), 6);
        assert!(
            runs.iter()
                .all(|r| r.status == RunStatus::Succeeded && r.trigger == Trigger::Schedule)
        );
        // Each ran at its fire time (virtual clock), not before.
        for c in fake.calls.lock().unwrap().iter() {
            assert!(
                c.2 >= c.0 && c.2 - c.0 < chrono::Duration::seconds(1),
                "{c:?}"
            );
        }

        // Cron with seconds, in a time zone: 07:00:15 in New York (UTC-5 in winter).
        let fake = Fake::new(Duration::from_secs(1), 0, false);
        let h = start(
            job("cron = \"15 0 7 * * *\"\ntimezone = \"America/New_York\""),
            &fake,
            t("2026-03-01T00:00:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(2 * 86400)).await;
        h.stop().await;
        assert_eq!(
            fake.fires(),
            vec![t("2026-03-01T12:00:15Z"), t("2026-03-02T12:00:15Z")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dst_change_fires_once_at_the_shifted_utc_time() {
        // New York springs forward on 2026-03-08: 07:00 local moves from 12:00 to 11:00 UTC.
        let fake = Fake::new(Duration::from_secs(1), 0, false);
        let h = start(
            job("cron = \"0 0 7 * * *\"\ntimezone = \"America/New_York\""),
            &fake,
            t("2026-03-06T13:00:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(3 * 86400)).await;
        h.stop().await;
        assert_eq!(
            fake.fires(),
            vec![
                t("2026-03-07T12:00:00Z"),
                t("2026-03-08T11:00:00Z"),
                t("2026-03-09T11:00:00Z")
            ]
        );
    }

    async fn seeded(last_fire: &str) -> Arc<MemoryHistory> {
        let h = Arc::new(MemoryHistory::default());
        let fire = t(last_fire);
        h.record(&JobRun {
            job: "j".into(),
            kind: "fake".into(),
            fire_time: fire,
            trigger: Trigger::Schedule,
            attempt: 1,
            node: "old".into(),
            started_at: fire,
            finished_at: fire,
            status: RunStatus::Succeeded,
            window: None,
            rows_read: 0,
            rows_written: 0,
            detail: String::new(),
            error: None,
        })
        .await
        .unwrap();
        h
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_policies_for_fires_missed_while_down() {
        // Hourly; last fire 05:00; the scheduler comes back at 10:30 and runs for 20 minutes.
        for (policy, expect) in [
            ("skip", vec![]),
            ("once", vec!["2026-03-01T10:00:00Z"]),
            (
                "all",
                vec![
                    "2026-03-01T06:00:00Z",
                    "2026-03-01T07:00:00Z",
                    "2026-03-01T08:00:00Z",
                    "2026-03-01T09:00:00Z",
                    "2026-03-01T10:00:00Z",
                ],
            ),
            (
                "all\"\nmax_catch_up = 2\n#\"",
                vec!["2026-03-01T09:00:00Z", "2026-03-01T10:00:00Z"],
            ),
        ] {
            let fake = Fake::new(Duration::from_secs(60), 0, false);
            let h = start_with(
                job(&format!("every = \"1h\"\ncatch_up = \"{policy}\"")),
                &fake,
                t("2026-03-01T10:30:00Z"),
                Arc::new(InMemory::new()),
                seeded("2026-03-01T05:00:00Z").await,
                "n1",
            );
            tokio::time::sleep(Duration::from_secs(20 * 60)).await;
            let runs = h.stop().await;
            let expect: Vec<_> = expect.iter().map(|s| t(s)).collect();
            assert_eq!(fake.fires(), expect, "policy {policy}");
            assert!(
                runs.iter()
                    .filter(|r| r.node == "n1")
                    .all(|r| r.trigger == Trigger::CatchUp),
                "policy {policy}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_and_retries_with_backoff() {
        // Hangs for two hours with a 30 minute timeout and no retries: one timed-out attempt.
        let fake = Fake::new(Duration::from_secs(7200), 0, false);
        let h = start(
            job("every = \"1d\"\ntimeout = \"30m\""),
            &fake,
            t("2026-03-01T23:59:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let runs = h.stop().await;
        assert_eq!(
            statuses(&runs),
            vec![(t("2026-03-02T00:00:00Z"), 1, "timed_out")]
        );
        assert_eq!(
            runs[0].finished_at - runs[0].started_at,
            chrono::Duration::minutes(30)
        );

        // Fails twice (retryably), then succeeds: attempts 1-3, 10 s then 20 s apart.
        let fake = Fake::new(Duration::ZERO, 2, false);
        let h = start(
            job("every = \"1d\"\nretries = 3\nbackoff = \"10s\""),
            &fake,
            t("2026-03-01T23:59:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        let runs = h.stop().await;
        let fire = t("2026-03-02T00:00:00Z");
        assert_eq!(
            statuses(&runs),
            vec![
                (fire, 1, "failed"),
                (fire, 2, "failed"),
                (fire, 3, "succeeded")
            ]
        );
        let starts: Vec<_> = fake.calls.lock().unwrap().iter().map(|c| c.2).collect();
        assert_eq!(starts[1] - starts[0], chrono::Duration::seconds(10));
        assert_eq!(starts[2] - starts[1], chrono::Duration::seconds(20));

        // Retries are spent: 1 + 2 attempts, all failed. A failure that cannot succeed on
        // retry (a bad definition) is not retried at all.
        let fake = Fake::new(Duration::ZERO, 10, false);
        let h = start(
            job("every = \"1d\"\nretries = 2\nbackoff = \"1s\""),
            &fake,
            t("2026-03-01T23:59:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(h.stop().await.len(), 3);
        let fake = Fake::new(Duration::ZERO, 10, true);
        let h = start(
            job("every = \"1d\"\nretries = 5\nbackoff = \"1s\""),
            &fake,
            t("2026-03-01T23:59:00Z"),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(statuses(&h.stop().await), vec![(fire, 1, "failed")]);
    }

    #[tokio::test(start_paused = true)]
    async fn skip_if_running_and_allow() {
        // Every 10 minutes, each run takes 25: the two fires during a run are skipped.
        let fake = Fake::new(Duration::from_secs(25 * 60), 0, false);
        let h = start(job("every = \"10m\""), &fake, t("2026-03-01T10:00:30Z"));
        tokio::time::sleep(Duration::from_secs(55 * 60)).await;
        let runs = h.stop().await;
        let at = |m: i64| t("2026-03-01T10:00:00Z") + chrono::Duration::minutes(m);
        // (The 10:40 run is still going when the scheduler stops, so it has no record.)
        assert_eq!(
            statuses(&runs),
            vec![
                (at(10), 1, "succeeded"),
                (at(20), 1, "skipped"),
                (at(30), 1, "skipped"),
                (at(50), 1, "skipped"),
            ]
        );
        assert_eq!(fake.fires(), vec![at(10), at(40)]);

        let fake = Fake::new(Duration::from_secs(25 * 60), 0, false);
        let h = start(
            job("every = \"10m\"\nconcurrency = \"allow\""),
            &fake,
            t("2026-03-01T10:00:30Z"),
        );
        tokio::time::sleep(Duration::from_secs(55 * 60)).await;
        h.stop().await;
        assert_eq!(fake.fires(), vec![at(10), at(20), at(30), at(40), at(50)]);
    }

    #[tokio::test(start_paused = true)]
    async fn two_schedulers_share_fires_and_one_takes_over_when_the_other_dies() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let history = Arc::new(MemoryHistory::default());
        let (fa, fb) = (
            Fake::new(Duration::from_secs(20), 0, false),
            Fake::new(Duration::from_secs(20), 0, false),
        );
        let spec = "every = \"1m\"\ntimeout = \"5m\"";
        let a = start_with(
            job(spec),
            &fa,
            t("2026-03-01T10:00:30Z"),
            store.clone(),
            history.clone(),
            "a",
        );
        let b = start_with(
            job(spec),
            &fb,
            t("2026-03-01T10:00:30Z"),
            store.clone(),
            history.clone(),
            "b",
        );
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        // Kill a in the middle of whatever it runs next: its fire is held until its lease
        // (5 min timeout + 30 s grace) expires, then b takes it over as attempt 2.
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.task.abort();
        let a_fires = fa.fires();
        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
        let runs = b.stop().await;
        // The fire a died in (it may have died before its kind started): the one b retried.
        let killed = runs
            .iter()
            .find(|r| r.attempt == 2)
            .map(|r| r.fire_time)
            .expect("a fire was taken over");
        assert!(killed >= *a_fires.last().unwrap());
        let lease_end = killed + chrono::Duration::seconds(330);
        // Every minute from 10:01 to 11:05 ended exactly once between the two nodes: run to
        // success, or skipped while the fire a died in was still leased to it or being rerun.
        let mut ended: Vec<_> = runs.iter().map(|r| (r.fire_time, r.status)).collect();
        ended.sort_by_key(|e| e.0);
        let fires: Vec<_> = ended.iter().map(|e| e.0).collect();
        let expect: Vec<_> = (1..=65)
            .map(|m| t("2026-03-01T10:00:00Z") + chrono::Duration::minutes(m))
            .collect();
        assert_eq!(fires, expect, "each fire has exactly one record");
        for (fire, status) in &ended {
            match status {
                RunStatus::Succeeded => {}
                RunStatus::Skipped => assert!(
                    *fire > killed && *fire <= lease_end + chrono::Duration::minutes(1),
                    "{fire} skipped"
                ),
                other => panic!("{fire} ended {other:?}"),
            }
        }
        assert!(
            a_fires.len() > 5 && fb.fires().len() > 5,
            "both nodes ran fires: a {} b {}",
            a_fires.len(),
            fb.fires().len()
        );
        // The fire a died in was finished by b as attempt 2, once its lease expired.
        let taken: Vec<_> = runs.iter().filter(|r| r.fire_time == killed).collect();
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(
            (taken[0].node.as_str(), taken[0].attempt, taken[0].status),
            ("b", 2, RunStatus::Succeeded)
        );
        assert!(taken[0].started_at >= lease_end);
        drop(a.scheduler);
    }

    #[tokio::test(start_paused = true)]
    async fn a_takeover_of_a_fire_recorded_as_ended_runs_nothing_again() {
        // Node a held the 10:01 fire, ran it and recorded its success, then died before
        // marking the lease done. b takes the fire over when the lease expires: it finds the
        // record, marks the lease done, and neither runs nor records the fire again.
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let history = Arc::new(MemoryHistory::default());
        let fire = t("2026-03-01T10:01:00Z");
        let hold = Duration::from_secs(330);
        let a = Leases::new(store.clone(), Path::from("leases"), "a");
        assert_eq!(
            a.claim("j", fire, fire, hold).await.unwrap(),
            Claim::Won { attempt: 1 }
        );
        let fake = Fake::new(Duration::from_secs(1), 0, false);
        let b = start_with(
            job("every = \"1m\"\ntimeout = \"5m\""),
            &fake,
            t("2026-03-01T10:00:30Z"),
            store.clone(),
            history.clone(),
            "b",
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mut ran = JobRun {
            node: "a".into(),
            started_at: fire,
            finished_at: fire + chrono::Duration::seconds(20),
            ..seeded("2026-03-01T10:01:00Z")
                .await
                .runs(None)
                .await
                .unwrap()[0]
                .clone()
        };
        ran.detail = "ran on a".into();
        history.record(&ran).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let runs = b.stop().await;
        let of_fire: Vec<_> = runs.iter().filter(|r| r.fire_time == fire).collect();
        assert_eq!(of_fire.len(), 1, "{of_fire:?}");
        assert_eq!(of_fire[0].node, "a");
        assert!(!fake.fires().contains(&fire), "{:?}", fake.fires());
        assert_eq!(
            a.claim("j", fire, fire + chrono::Duration::hours(1), hold)
                .await
                .unwrap(),
            Claim::Done {
                node: "b".into(),
                status: "succeeded".into()
            }
        );
        // b's own fires went on: skipped while a held 10:01, then run.
        assert!(fake.fires().len() > 2, "{:?}", fake.fires());
    }

    #[tokio::test(start_paused = true)]
    async fn manual_runs_use_the_given_window() {
        let fake = Fake::new(Duration::ZERO, 0, false);
        let h = start(
            job("every = \"1d\"\nenabled = false"),
            &fake,
            t("2026-03-01T10:00:00Z"),
        );
        let w = Window {
            start: t("2026-02-01T00:00:00Z"),
            end: t("2026-02-02T00:00:00Z"),
        };
        let run = h.scheduler.run_now("j", Some(w)).await.unwrap();
        assert_eq!(
            (run.trigger, run.status),
            (Trigger::Manual, RunStatus::Succeeded)
        );
        assert!(
            h.scheduler
                .run_now("nope", None)
                .await
                .unwrap_err()
                .to_string()
                .contains("no job named")
        );
        tokio::time::sleep(Duration::from_secs(2 * 86400)).await;
        assert_eq!(h.stop().await.len(), 1, "a disabled job does not fire");
    }
}
