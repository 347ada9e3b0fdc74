//! Run history: one row per attempt in the Delta table `system.job_runs`. It is also where a
//! job's state lives — the last fire the scheduler handled and the watermark of incremental
//! jobs are read back from it — so there is no second copy that could disagree.

use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deltalake::protocol::SaveMode;
use schemas::TableDef;

use crate::{Error, Result};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    /// Not run: the previous fire was still running (concurrency = "skip").
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "timed_out" => Self::TimedOut,
            "skipped" => Self::Skipped,
            _ => Self::Failed,
        }
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A fire on time.
    Schedule,
    /// A missed fire run late under the catch-up policy.
    CatchUp,
    /// `sakura jobs run`.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::CatchUp => "catch_up",
            Self::Manual => "manual",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "schedule" => Self::Schedule,
            "catch_up" => Self::CatchUp,
            _ => Self::Manual,
        }
    }
}

/// A half-open time range `[start, end)` of data a run processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One attempt of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub job: String,
    pub kind: String,
    pub fire_time: DateTime<Utc>,
    pub trigger: Trigger,
    pub attempt: u32,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: RunStatus,
    pub window: Option<Window>,
    pub rows_read: u64,
    pub rows_written: u64,
    /// What the run did, in words (e.g. `files 212 -> 8`).
    pub detail: String,
    pub error: Option<String>,
}

/// What the history says about one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobState {
    /// The latest fire the scheduler handled (any node, any outcome); manual runs excluded.
    pub last_fire: Option<DateTime<Utc>>,
    /// The most recent attempt.
    pub last_run: Option<JobRun>,
    /// The end of the latest window a successful run processed.
    pub watermark: Option<DateTime<Utc>>,
}

impl JobState {
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = &'a JobRun>) -> Self {
        let mut s = Self::default();
        for r in runs {
            if r.trigger != Trigger::Manual {
                s.last_fire = s.last_fire.max(Some(r.fire_time));
            }
            if r.status == RunStatus::Succeeded
                && let Some(w) = r.window
            {
                s.watermark = s.watermark.max(Some(w.end));
            }
            if s.last_run
                .as_ref()
                .is_none_or(|l| r.finished_at >= l.finished_at)
            {
                s.last_run = Some(r.clone());
            }
        }
        s
    }
}

/// Where runs are recorded.
#[async_trait]
pub trait History: Send + Sync + std::fmt::Debug {
    async fn record(&self, run: &JobRun) -> Result<()>;
    /// Every recorded attempt (of `job` only, when given), oldest first.
    async fn runs(&self, job: Option<&str>) -> Result<Vec<JobRun>>;

    async fn state(&self, job: &str) -> Result<JobState> {
        Ok(JobState::from_runs(&self.runs(Some(job)).await?))
    }

    /// The recorded attempts of one fire of `job` (scheduled or caught up), oldest first.
    async fn fire_runs(&self, job: &str, fire: DateTime<Utc>) -> Result<Vec<JobRun>> {
        let mut runs = self.runs(Some(job)).await?;
        runs.retain(|r| r.fire_time == fire && r.trigger != Trigger::Manual);
        Ok(runs)
    }
}

/// History in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryHistory {
    runs: Mutex<Vec<JobRun>>,
}

#[async_trait]
impl History for MemoryHistory {
    async fn record(&self, run: &JobRun) -> Result<()> {
        self.runs
            .lock()
            .map_err(|_| Error::job(&run.job, "history lock poisoned"))?
            .push(run.clone());
        Ok(())
    }

    async fn runs(&self, job: Option<&str>) -> Result<Vec<JobRun>> {
        let runs = self
            .runs
            .lock()
            .map_err(|_| Error::job(job.unwrap_or("*"), "history lock poisoned"))?;
        Ok(runs
            .iter()
            .filter(|r| job.is_none_or(|j| r.job == j))
            .cloned()
            .collect())
    }
}

/// History in `system.job_runs`, appended with one Delta commit per attempt (blind appends:
/// concurrent nodes never conflict) and read through the engine.
#[derive(Debug, Clone)]
pub struct DeltaHistory {
    engine: engine::Engine,
    /// The table as of this process's last write: each record only reads the commits since.
    table: Arc<tokio::sync::Mutex<Option<deltalake::DeltaTable>>>,
}

impl DeltaHistory {
    pub fn new(engine: engine::Engine) -> Self {
        Self {
            engine,
            table: Arc::default(),
        }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts_array(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

/// The rows of `runs` as a batch of `system.job_runs`.
pub(crate) fn to_batch(runs: &[JobRun]) -> Result<RecordBatch> {
    let def = TableDef::job_runs();
    let s = |f: fn(&JobRun) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(runs.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        s(|r| &r.job),
        s(|r| &r.kind),
        ts_array(runs.iter().map(|r| Some(micros(r.fire_time))).collect()),
        s(|r| r.trigger.as_str()),
        Arc::new(Int32Array::from_iter_values(
            runs.iter()
                .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX)),
        )),
        s(|r| &r.node),
        ts_array(runs.iter().map(|r| Some(micros(r.started_at))).collect()),
        ts_array(runs.iter().map(|r| Some(micros(r.finished_at))).collect()),
        s(|r| r.status.as_str()),
        ts_array(
            runs.iter()
                .map(|r| r.window.map(|w| micros(w.start)))
                .collect(),
        ),
        ts_array(
            runs.iter()
                .map(|r| r.window.map(|w| micros(w.end)))
                .collect(),
        ),
        Arc::new(Int64Array::from_iter_values(
            runs.iter()
                .map(|r| i64::try_from(r.rows_read).unwrap_or(i64::MAX)),
        )),
        Arc::new(Int64Array::from_iter_values(
            runs.iter()
                .map(|r| i64::try_from(r.rows_written).unwrap_or(i64::MAX)),
        )),
        s(|r| &r.detail),
        Arc::new(StringArray::from(
            runs.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(def.schema.clone(), columns)?)
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    casted: &'a mut Vec<ArrayRef>,
    to: DataType,
) -> Result<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::job("history", format!("system.job_runs has no column {name}")))?;
    casted.push(cast(col, &to)?);
    casted
        .last()
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::job(
                "history",
                format!("system.job_runs column {name} has an unexpected type"),
            )
        })
}

fn time(a: &TimestampMicrosecondArray, i: usize) -> Option<DateTime<Utc>> {
    (!a.is_null(i))
        .then(|| DateTime::from_timestamp_micros(a.value(i)))
        .flatten()
}

/// The runs in a batch read from `system.job_runs`.
pub(crate) fn from_batch(batch: &RecordBatch) -> Result<Vec<JobRun>> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let strs = |name: &str| -> Result<Vec<Option<String>>> {
        let mut c = Vec::new();
        let a: &StringArray = column(batch, name, &mut c, DataType::Utf8)?;
        Ok((0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
            .collect())
    };
    let times = |name: &str| -> Result<Vec<Option<DateTime<Utc>>>> {
        let mut c = Vec::new();
        let a: &TimestampMicrosecondArray = column(batch, name, &mut c, ts.clone())?;
        Ok((0..a.len()).map(|i| time(a, i)).collect())
    };
    let ints = |name: &str| -> Result<Vec<i64>> {
        let mut c = Vec::new();
        let a: &Int64Array = column(batch, name, &mut c, DataType::Int64)?;
        Ok((0..a.len())
            .map(|i| if a.is_null(i) { 0 } else { a.value(i) })
            .collect())
    };
    let (job, kind, trigger, node, status, detail, error) = (
        strs("job")?,
        strs("kind")?,
        strs("trigger")?,
        strs("node")?,
        strs("status")?,
        strs("detail")?,
        strs("error")?,
    );
    let (fire, started, finished, ws, we) = (
        times("fire_time")?,
        times("started_at")?,
        times("finished_at")?,
        times("window_start")?,
        times("window_end")?,
    );
    let (attempt, read, written) = (ints("attempt")?, ints("rows_read")?, ints("rows_written")?);
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Ok((0..batch.num_rows())
        .map(|i| JobRun {
            job: job[i].clone().unwrap_or_default(),
            kind: kind[i].clone().unwrap_or_default(),
            fire_time: fire[i].unwrap_or(epoch),
            trigger: Trigger::parse(trigger[i].as_deref().unwrap_or("")),
            attempt: u32::try_from(attempt[i]).unwrap_or(0),
            node: node[i].clone().unwrap_or_default(),
            started_at: started[i].unwrap_or(epoch),
            finished_at: finished[i].unwrap_or(epoch),
            status: RunStatus::parse(status[i].as_deref().unwrap_or("")),
            window: ws[i].zip(we[i]).map(|(start, end)| Window { start, end }),
            rows_read: u64::try_from(read[i]).unwrap_or(0),
            rows_written: u64::try_from(written[i]).unwrap_or(0),
            detail: detail[i].clone().unwrap_or_default(),
            error: error[i].clone(),
        })
        .collect())
}

#[async_trait]
impl History for DeltaHistory {
    async fn record(&self, run: &JobRun) -> Result<()> {
        let def = TableDef::job_runs();
        let mut cached = self.table.lock().await;
        let table = match cached.take() {
            Some(mut t) => {
                t.update_incremental(None)
                    .await
                    .map_err(|e| Error::delta(&def.table, "failed to refresh", e))?;
                t
            }
            None => lake::open_or_create(self.engine.storage(), &def).await?,
        };
        let batch = to_batch(std::slice::from_ref(run))?;
        let table = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await
            .map_err(|e| Error::delta(&def.table, "failed to record a job run", e))?;
        *cached = Some(table);
        drop(cached);
        self.engine.invalidate("system", "job_runs").await;
        Ok(())
    }

    async fn runs(&self, job: Option<&str>) -> Result<Vec<JobRun>> {
        let filter = match job {
            Some(j) => format!(" WHERE job = {}", quote(j)),
            None => String::new(),
        };
        self.engine.invalidate("system", "job_runs").await;
        self.select(&filter, false).await
    }

    /// Computed by the engine: a job's history grows with every fire (a 1-second job records
    /// 86,400 runs a day), so its state must not be read back run by run on each attempt.
    async fn state(&self, job: &str) -> Result<JobState> {
        self.engine.invalidate("system", "job_runs").await;
        let job_is = format!("job = {}", quote(job));
        let batches = self
            .engine
            .sql(&format!(
                "SELECT max(fire_time) FILTER (WHERE trigger <> 'manual') AS last_fire, \
                 max(window_end) FILTER (WHERE status = 'succeeded') AS watermark \
                 FROM sakura.system.job_runs WHERE {job_is}"
            ))
            .await?
            .collect()
            .await?;
        let (mut last_fire, mut watermark) = (None, None);
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let mut c = Vec::new();
            let a: &TimestampMicrosecondArray = column(b, "last_fire", &mut c, ts.clone())?;
            last_fire = time(a, 0);
            let mut c = Vec::new();
            let a: &TimestampMicrosecondArray = column(b, "watermark", &mut c, ts.clone())?;
            watermark = time(a, 0);
        }
        let last_run = self.select(&format!(" WHERE {job_is}"), true).await?.pop();
        Ok(JobState {
            last_fire,
            last_run,
            watermark,
        })
    }

    async fn fire_runs(&self, job: &str, fire: DateTime<Utc>) -> Result<Vec<JobRun>> {
        let at = fire.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        self.engine.invalidate("system", "job_runs").await;
        self.select(
            &format!(
                " WHERE job = {} AND fire_time = TIMESTAMP '{at}' AND trigger <> 'manual'",
                quote(job)
            ),
            false,
        )
        .await
    }
}

/// `s` as an SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl DeltaHistory {
    /// The runs `filter` keeps, oldest first; with `newest_only` only the last to finish.
    /// (Callers refresh the table first: `invalidate`.)
    async fn select(&self, filter: &str, newest_only: bool) -> Result<Vec<JobRun>> {
        let order = if newest_only {
            "finished_at DESC, attempt DESC LIMIT 1"
        } else {
            "finished_at, attempt"
        };
        let batches = self
            .engine
            .sql(&format!(
                "SELECT * FROM sakura.system.job_runs{filter} ORDER BY {order}"
            ))
            .await?
            .collect()
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(from_batch(b)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(fire: &str, status: RunStatus, trigger: Trigger, window_end: Option<&str>) -> JobRun {
        JobRun {
            job: "j".into(),
            kind: "sql".into(),
            fire_time: t(fire),
            trigger,
            attempt: 1,
            node: "n".into(),
            started_at: t(fire),
            finished_at: t(fire) + chrono::Duration::seconds(5),
            status,
            window: window_end.map(|e| Window {
                start: t(e) - chrono::Duration::hours(1),
                end: t(e),
            }),
            rows_read: 10,
            rows_written: 2,
            detail: "d".into(),
            error: (status != RunStatus::Succeeded).then(|| "boom".into()),
        }
    }

    #[test]
    fn batches_round_trip_and_state_reads_watermark_and_last_fire() {
        let runs = vec![
            run(
                "2026-03-01T10:00:00Z",
                RunStatus::Succeeded,
                Trigger::Schedule,
                Some("2026-03-01T10:00:00Z"),
            ),
            run(
                "2026-03-01T11:00:00Z",
                RunStatus::Failed,
                Trigger::Schedule,
                Some("2026-03-01T11:00:00Z"),
            ),
            run(
                "2026-03-01T11:30:00Z",
                RunStatus::Succeeded,
                Trigger::Manual,
                Some("2026-03-01T09:00:00Z"),
            ),
        ];
        let batch = to_batch(&runs).unwrap();
        assert_eq!(from_batch(&batch).unwrap(), runs);
        let s = JobState::from_runs(&runs);
        assert_eq!(
            s.last_fire,
            Some(t("2026-03-01T11:00:00Z")),
            "manual runs are not fires"
        );
        assert_eq!(
            s.watermark,
            Some(t("2026-03-01T10:00:00Z")),
            "failed runs and older backfills do not move it"
        );
        assert_eq!(s.last_run.unwrap().trigger, Trigger::Manual);
    }

    #[tokio::test]
    async fn the_delta_history_computes_the_same_state_and_finds_one_fires_runs() {
        let dir = tempfile::tempdir().unwrap();
        let storage = schemas::Storage::local(dir.path()).unwrap();
        let engine = engine::Engine::new(storage, &engine::EngineConfig::default())
            .await
            .unwrap();
        let history = DeltaHistory::new(engine);
        let mut runs = vec![
            run(
                "2026-03-01T10:00:00Z",
                RunStatus::Succeeded,
                Trigger::Schedule,
                Some("2026-03-01T10:00:00Z"),
            ),
            run(
                "2026-03-01T11:00:00Z",
                RunStatus::Failed,
                Trigger::Schedule,
                Some("2026-03-01T11:00:00Z"),
            ),
            run(
                "2026-03-01T11:00:00Z",
                RunStatus::Succeeded,
                Trigger::CatchUp,
                Some("2026-03-01T11:00:00Z"),
            ),
            run(
                "2026-03-01T11:30:00Z",
                RunStatus::Succeeded,
                Trigger::Manual,
                Some("2026-03-01T09:00:00Z"),
            ),
            run(
                "2026-03-01T12:00:00Z",
                RunStatus::Succeeded,
                Trigger::Schedule,
                None,
            ),
        ];
        runs[2].attempt = 2;
        runs[2].finished_at = runs[1].finished_at;
        let mut other = runs[4].clone();
        other.job = "o'ther".into();
        other.fire_time = t("2026-03-02T00:00:00Z");
        for r in runs.iter().chain([&other]) {
            history.record(r).await.unwrap();
        }
        let s = history.state("j").await.unwrap();
        assert_eq!(s, JobState::from_runs(&runs));
        assert_eq!(s.last_fire, Some(t("2026-03-01T12:00:00Z")));
        assert_eq!(s.watermark, Some(t("2026-03-01T11:00:00Z")));
        assert_eq!(
            history.state("o'ther").await.unwrap(),
            JobState::from_runs([&other])
        );
        assert_eq!(history.state("none").await.unwrap(), JobState::default());
        // One fire's attempts, in order; manual runs are not fires.
        let fire = t("2026-03-01T11:00:00Z");
        assert_eq!(
            history.fire_runs("j", fire).await.unwrap(),
            runs[1..3].to_vec()
        );
        assert!(
            history
                .fire_runs("j", t("2026-03-01T11:30:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(history.fire_runs("o'ther", fire).await.unwrap().is_empty());
    }
}
