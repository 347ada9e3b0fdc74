//! `ml_score`: scores the window after its watermark with the latest version of `model` (reading
//! `context` before it to warm up), replaces the job's rows of that window in the Delta table
//! `ml.anomalies`, and produces each anomaly as a JSON message to the Kafka topic `topic`
//! (default `anomalies`; `""` turns it off).

use std::sync::Arc;

use arrow::array::{
    Array, Float64Array, Int32Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deltalake::datafusion::prelude::{col, lit};
use serde::Deserialize;

use super::window::{Plan, WindowParams};
use super::{JobKind, Outcome, RunContext};
use crate::config::{Job, parse_duration};
use crate::delta;
use crate::{Error, Result};

/// Where `ml_score` sends anomalies besides `ml.anomalies` (the binary provides Kafka).
#[async_trait]
pub trait AnomalySink: Send + Sync + std::fmt::Debug {
    /// Sends each message (JSON) with its key to `topic`; returns once all are acknowledged.
    async fn send(&self, topic: &str, messages: Vec<(String, String)>) -> Result<()>;
}

fn anomalies() -> String {
    "anomalies".into()
}

#[derive(Debug, Default)]
pub(crate) struct MlScore {
    pub(crate) sink: Option<Arc<dyn AnomalySink>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreParams {
    model: String,
    #[serde(default = "telemetry")]
    table: String,
    #[serde(default)]
    filter: String,
    /// History read before each window so the detector has warmed up.
    #[serde(default = "two_hours")]
    context: String,
    #[serde(default = "anomalies")]
    topic: String,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    lookback: Option<String>,
    #[serde(default)]
    initial: Option<String>,
    #[serde(default)]
    open: bool,
}

fn telemetry() -> String {
    "raw.telemetry".into()
}
fn two_hours() -> String {
    "2h".into()
}

impl ScoreParams {
    fn window_params(&self) -> WindowParams {
        WindowParams {
            window: self.window.clone(),
            delay: self.delay.clone(),
            lookback: self.lookback.clone(),
            initial: self.initial.clone(),
            open: self.open,
        }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[async_trait]
impl JobKind for MlScore {
    fn name(&self) -> &'static str {
        "ml_score"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: ScoreParams = job.params()?;
        if p.window_params().spec(&job.name)?.is_none() {
            return Err(Error::config(
                format!("jobs.{}.params.window", job.name),
                "ml_score needs a window (e.g. \"10m\")",
            ));
        }
        parse_duration(&format!("jobs.{}.params.context", job.name), &p.context)?;
        delta::table_ref(&format!("jobs.{}.params.table", job.name), &p.table)?;
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let job = ctx.job.name.clone();
        let p: ScoreParams = ctx.job.params()?;
        let window = match p.window_params().plan(&ctx)? {
            Plan::Run(Some(w)) => w,
            Plan::Run(None) => return Err(Error::job(&job, "ml_score needs a window")),
            Plan::UpToDate => return Ok(Outcome::up_to_date()),
        };
        let context = parse_duration(&format!("jobs.{job}.params.context"), &p.context)?;
        let engine = ctx.engine()?;
        let request = engine::DetectRequest {
            table: p.table.clone(),
            filter: p.filter.clone(),
            model: p.model.clone(),
            range: Some(engine::ScoreRange {
                context_from_us: micros(window.start)
                    - i64::try_from(context.as_micros()).unwrap_or(0),
                from_us: micros(window.start),
                until_us: micros(window.end),
            }),
        };
        let (meta, scored) = engine::detect(engine.session(), engine.models(), &request).await?;
        let read = scored.num_rows();
        let mask = scored
            .column(4)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .cloned()
            .ok_or_else(|| Error::job(&job, "detect_anomalies: is_anomaly"))?;
        let found = arrow::compute::filter_record_batch(&scored, &mask)?;
        let n = found.num_rows();
        let now = Utc::now().timestamp_micros();
        let def = schemas::TableDef::ml_anomalies();
        let batch = RecordBatch::try_new(
            def.schema.clone(),
            vec![
                found.column(0).clone(),
                found.column(1).clone(),
                found.column(2).clone(),
                found.column(3).clone(),
                found.column(5).clone(),
                Arc::new(StringArray::from(vec![meta.name.clone(); n])),
                Arc::new(Int32Array::from(vec![
                    i32::try_from(meta.version)
                        .unwrap_or(i32::MAX);
                    n
                ])),
                Arc::new(StringArray::from(vec![job.clone(); n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            ],
        )?;
        // Replace this job's rows of the window: a rerun never duplicates anomalies.
        let table = lake::open_or_create(engine.storage(), &def).await?;
        let ts_lit = |t: DateTime<Utc>| {
            lit(datafusion::common::ScalarValue::TimestampMicrosecond(
                Some(micros(t)),
                Some("UTC".into()),
            ))
        };
        let predicate = col("job")
            .eq(lit(job.clone()))
            .and(col("ts").gt_eq(ts_lit(window.start)))
            .and(col("ts").lt(ts_lit(window.end)));
        lake::replace_where(
            table,
            &def.table,
            vec![batch.clone()],
            predicate,
            "the window's anomalies",
        )
        .await?;
        engine.invalidate("ml", "anomalies").await;

        let mut sent = 0;
        if !p.topic.is_empty() && n > 0 {
            let sink = self.sink.as_ref().ok_or_else(|| {
                Error::job(
                    &job,
                    format!(
                        "no Kafka producer to send anomalies to topic {:?} (set params.topic = \"\" to only write ml.anomalies)",
                        p.topic
                    ),
                )
            })?;
            let messages = messages(&batch, &meta)?;
            sent = messages.len();
            sink.send(&p.topic, messages).await?;
        }
        Ok(Outcome {
            rows_read: u64::try_from(read).unwrap_or(u64::MAX),
            rows_written: u64::try_from(n).unwrap_or(u64::MAX),
            detail: format!(
                "{n} anomalies in {read} points with {} version {}; {sent} sent to {:?}",
                meta.name, meta.version, p.topic
            ),
            window: Some(window),
        })
    }
}

/// One JSON message per anomaly, keyed by its series.
fn messages(batch: &RecordBatch, meta: &ml::ModelMeta) -> Result<Vec<(String, String)>> {
    let ts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .cloned();
    let series = batch
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned();
    let value = batch
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned();
    let score = batch
        .column(3)
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned();
    let contributing = batch
        .column(4)
        .as_any()
        .downcast_ref::<ListArray>()
        .cloned();
    let job = batch
        .column(7)
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned();
    let (Some(ts), Some(series), Some(value), Some(score), Some(contributing), Some(job)) =
        (ts, series, value, score, contributing, job)
    else {
        return Err(Error::job("ml_score", "unexpected ml.anomalies columns"));
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let t = DateTime::<Utc>::from_timestamp_micros(ts.value(i)).unwrap_or_default();
        let names: Vec<String> = if contributing.is_null(i) {
            Vec::new()
        } else {
            let v = contributing.value(i);
            v.as_any()
                .downcast_ref::<StringArray>()
                .map(|s| (0..s.len()).map(|j| s.value(j).to_string()).collect())
                .unwrap_or_default()
        };
        let msg = serde_json::json!({
            "ts": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "series": series.value(i),
            "value": if value.is_null(i) { None } else { Some(value.value(i)) },
            "score": score.value(i),
            "contributing": names,
            "model": meta.name,
            "model_version": meta.version,
            "job": job.value(i),
        });
        out.push((series.value(i).to_string(), msg.to_string()));
    }
    Ok(out)
}
