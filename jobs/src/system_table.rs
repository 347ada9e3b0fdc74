//! `system.jobs`: one row per job definition with its schedule, next fire, last outcome and
//! watermark — computed at query time from the definitions and `system.job_runs`, so it can
//! never disagree with them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::DataFusionError;
use engine::ComputedRows;

use crate::clock::Clock;
use crate::config::{CatchUp, Concurrency, Job};
use crate::history::{History, JobState};

/// The `system.jobs` table.
#[derive(Debug)]
pub struct JobsTable {
    jobs: Vec<Arc<Job>>,
    history: Arc<dyn History>,
    clock: Arc<dyn Clock>,
    schema: SchemaRef,
}

impl JobsTable {
    pub fn new(jobs: Vec<Arc<Job>>, history: Arc<dyn History>, clock: Arc<dyn Clock>) -> Self {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("schedule", DataType::Utf8, false),
            Field::new("enabled", DataType::Boolean, false),
            Field::new("timeout_s", DataType::Int64, false),
            Field::new("retries", DataType::Int64, false),
            Field::new("concurrency", DataType::Utf8, false),
            Field::new("catch_up", DataType::Utf8, false),
            Field::new("params", DataType::Utf8, false),
            Field::new("next_fire", ts(), true),
            Field::new("last_fire", ts(), true),
            Field::new("last_status", DataType::Utf8, true),
            Field::new("last_finished_at", ts(), true),
            Field::new("last_error", DataType::Utf8, true),
            Field::new("watermark", ts(), true),
        ]));
        Self {
            jobs,
            history,
            clock,
            schema,
        }
    }

    async fn batch(&self) -> Result<RecordBatch, DataFusionError> {
        let runs = self
            .history
            .runs(None)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let now = self.clock.now();
        let states: Vec<JobState> = self
            .jobs
            .iter()
            .map(|j| JobState::from_runs(runs.iter().filter(|r| r.job == j.name)))
            .collect();
        let strs = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                (0..self.jobs.len()).map(f).collect::<Vec<_>>(),
            ))
        };
        let times = |f: &dyn Fn(usize) -> Option<i64>| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from((0..self.jobs.len()).map(f).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            )
        };
        let j = &self.jobs;
        let columns: Vec<ArrayRef> = vec![
            strs(&|i| Some(j[i].name.clone())),
            strs(&|i| Some(j[i].kind.clone())),
            strs(&|i| Some(j[i].schedule.describe())),
            Arc::new(BooleanArray::from(
                j.iter().map(|x| x.enabled).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(
                j.iter()
                    .map(|x| i64::try_from(x.timeout.as_secs()).unwrap_or(i64::MAX)),
            )),
            Arc::new(Int64Array::from_iter_values(
                j.iter().map(|x| i64::from(x.retries)),
            )),
            strs(&|i| {
                Some(
                    match j[i].concurrency {
                        Concurrency::Skip => "skip",
                        Concurrency::Allow => "allow",
                    }
                    .into(),
                )
            }),
            strs(&|i| {
                Some(
                    match j[i].catch_up {
                        CatchUp::Skip => "skip",
                        CatchUp::Once => "once",
                        CatchUp::All => "all",
                    }
                    .into(),
                )
            }),
            strs(&|i| Some(j[i].params.to_string())),
            times(&|i| {
                j[i].enabled
                    .then(|| j[i].schedule.next_after(now))
                    .flatten()
                    .map(|t| t.timestamp_micros())
            }),
            times(&|i| states[i].last_fire.map(|t| t.timestamp_micros())),
            strs(&|i| {
                states[i]
                    .last_run
                    .as_ref()
                    .map(|r| r.status.as_str().to_string())
            }),
            times(&|i| {
                states[i]
                    .last_run
                    .as_ref()
                    .map(|r| r.finished_at.timestamp_micros())
            }),
            strs(&|i| states[i].last_run.as_ref().and_then(|r| r.error.clone())),
            times(&|i| states[i].watermark.map(|t| t.timestamp_micros())),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl ComputedRows for JobsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self, _session: &dyn Session) -> Result<RecordBatch, DataFusionError> {
        self.batch().await
    }
}
