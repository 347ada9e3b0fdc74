//! `ml_train`: runs a SQL query over the training range (`lookback` before the fire time, or the
//! window given by hand), trains a forecaster (one model for every series the key columns name)
//! or an autoencoder (over each key's metric vector), and registers it as the next version of
//! `model` in the registry.

use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use async_trait::async_trait;
use serde::Deserialize;

use super::{JobKind, Outcome, RunContext};
use crate::config::{Job, parse_duration};
use crate::history::Window;
use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct MlTrain;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainParams {
    model: String,
    /// `forecaster` (default) or `autoencoder`.
    #[serde(default = "forecaster")]
    model_kind: String,
    sql: String,
    /// Training range before the fire time.
    #[serde(default = "day")]
    lookback: String,
    #[serde(default = "ts")]
    ts: String,
    key: Vec<String>,
    #[serde(default = "value")]
    value: String,
    /// Autoencoder: the column naming the metric.
    #[serde(default)]
    metric_column: Option<String>,
    /// Autoencoder: the metrics, in input order (default: every metric in the data).
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    threshold: Option<f64>,
    /// Hyper-parameters over the kind's defaults (e.g. `{ epochs = 20, hidden = 32 }`).
    #[serde(default)]
    hyper: serde_json::Map<String, serde_json::Value>,
}

fn forecaster() -> String {
    "forecaster".into()
}
fn day() -> String {
    "24h".into()
}
fn ts() -> String {
    "ts".into()
}
fn value() -> String {
    "value".into()
}

fn with_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(
    job: &str,
    base: T,
    hyper: &serde_json::Map<String, serde_json::Value>,
) -> Result<T> {
    let mut v = serde_json::to_value(base)
        .map_err(|e| Error::job(job, format!("hyper-parameters: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        for (k, x) in hyper {
            if !obj.contains_key(k) {
                return Err(Error::config(
                    format!("jobs.{job}.params.hyper.{k}"),
                    format!(
                        "not a hyper-parameter; these are: {}",
                        obj.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            obj.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v)
        .map_err(|e| Error::config(format!("jobs.{job}.params.hyper"), e.to_string()))
}

impl TrainParams {
    fn check(&self, job: &str) -> Result<()> {
        parse_duration(&format!("jobs.{job}.params.lookback"), &self.lookback)?;
        match self.model_kind.as_str() {
            "forecaster" => {
                with_overrides(job, ml::ForecasterConfig::default(), &self.hyper)?;
            }
            "autoencoder" => {
                with_overrides(job, ml::AutoencoderConfig::default(), &self.hyper)?;
                if self.metric_column.is_none() {
                    return Err(Error::config(
                        format!("jobs.{job}.params.metric_column"),
                        "an autoencoder needs the column that names the metric",
                    ));
                }
            }
            other => {
                return Err(Error::config(
                    format!("jobs.{job}.params.model_kind"),
                    format!("{other:?} is not one of forecaster, autoencoder"),
                ));
            }
        }
        Ok(())
    }
}

fn strings(b: &RecordBatch, name: &str, job: &str) -> Result<StringArray> {
    let i = b
        .schema()
        .index_of(name)
        .map_err(|_| Error::job(job, format!("the training query returns no column {name}")))?;
    let a = cast(b.column(i), &DataType::Utf8)?;
    a.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::job(job, format!("column {name} is not text")))
}

fn numbers(b: &RecordBatch, name: &str, job: &str, to: &DataType) -> Result<ArrayRef> {
    let i = b
        .schema()
        .index_of(name)
        .map_err(|_| Error::job(job, format!("the training query returns no column {name}")))?;
    Ok(cast(b.column(i), to)?)
}

/// Training points: (series key, ts µs, metric, value).
type Points = Vec<(String, i64, Option<String>, f64)>;

fn points(batches: &[RecordBatch], p: &TrainParams, job: &str) -> Result<Points> {
    let mut out = Vec::new();
    for b in batches {
        let ts = numbers(
            b,
            &p.ts,
            job,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| Error::job(job, "ts is not a timestamp"))?
            .clone();
        let value = numbers(b, &p.value, job, &DataType::Float64)?;
        let value = value
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| Error::job(job, "value is not a number"))?
            .clone();
        let keys = p
            .key
            .iter()
            .map(|k| strings(b, k, job))
            .collect::<Result<Vec<_>>>()?;
        let metric = p
            .metric_column
            .as_ref()
            .map(|m| strings(b, m, job))
            .transpose()?;
        for i in 0..b.num_rows() {
            if ts.is_null(i) || value.is_null(i) {
                continue;
            }
            let key = keys
                .iter()
                .map(|k| if k.is_null(i) { "" } else { k.value(i) })
                .collect::<Vec<_>>()
                .join("/");
            let m = metric
                .as_ref()
                .filter(|m| m.is_valid(i))
                .map(|m| m.value(i).to_string());
            out.push((key, ts.value(i), m, value.value(i)));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(out)
}

fn train(p: &TrainParams, job: &str, pts: &Points) -> Result<(ml::Model, ml::ModelSchema, f64)> {
    let mut schema = ml::ModelSchema {
        ts: p.ts.clone(),
        key: p.key.clone(),
        value: p.value.clone(),
        metric_column: p.metric_column.clone(),
        metrics: Vec::new(),
    };
    let ml_err = |e: ml::Error| Error::job(job, format!("training failed: {e}"));
    if p.model_kind == "autoencoder" {
        let mut metrics = p.metrics.clone();
        if metrics.is_empty() {
            metrics = pts.iter().filter_map(|x| x.2.clone()).collect();
            metrics.sort();
            metrics.dedup();
        }
        let rows: Vec<Vec<f64>> = ml::metric_vectors(
            pts.iter()
                .filter_map(|(key, ts, m, v)| Some((key.as_str(), *ts, m.as_deref()?, *v))),
            &metrics,
        )
        .into_iter()
        .map(|(_, v)| v)
        .collect();
        let cfg = with_overrides(job, ml::AutoencoderConfig::default(), &p.hyper)?;
        let mut a = ml::Autoencoder::new(metrics.len(), cfg).map_err(ml_err)?;
        let report = a.fit(&rows).map_err(ml_err)?;
        schema.metrics = metrics;
        Ok((ml::Model::Autoencoder(a), schema, report.final_loss))
    } else {
        let mut series: Vec<Vec<f64>> = Vec::new();
        let mut last: Option<&str> = None;
        for (key, _, _, v) in pts {
            if last != Some(key.as_str()) {
                series.push(Vec::new());
                last = Some(key);
            }
            if let Some(s) = series.last_mut() {
                s.push(*v);
            }
        }
        let refs: Vec<&[f64]> = series.iter().map(Vec::as_slice).collect();
        let cfg = with_overrides(job, ml::ForecasterConfig::default(), &p.hyper)?;
        let mut f = ml::Forecaster::new(cfg).map_err(ml_err)?;
        let report = f.fit(&refs).map_err(ml_err)?;
        Ok((ml::Model::Forecaster(f), schema, report.final_loss))
    }
}

#[async_trait]
impl JobKind for MlTrain {
    fn name(&self) -> &'static str {
        "ml_train"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: TrainParams = job.params()?;
        p.check(&job.name)
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let job = ctx.job.name.clone();
        let p: TrainParams = ctx.job.params()?;
        let lookback = parse_duration(&format!("jobs.{job}.params.lookback"), &p.lookback)?;
        let window = ctx.window.unwrap_or(Window {
            start: ctx.fire_time
                - chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::days(1)),
            end: ctx.fire_time,
        });
        let sql = super::render_template(&job, &p.sql, Some(window), ctx.fire_time)?;
        let engine = ctx.engine()?;
        let batches = engine.sql(&sql).await?.collect().await?;
        let pts = points(&batches, &p, &job)?;
        if pts.is_empty() {
            return Err(Error::job(
                &job,
                format!(
                    "no training data between {} and {}",
                    window.start, window.end
                ),
            ));
        }
        let started = std::time::Instant::now();
        let p2 = p.clone();
        let job2 = job.clone();
        let trained = tokio::task::spawn_blocking(move || train(&p2, &job2, &pts))
            .await
            .map_err(|e| Error::job(&job, format!("training stopped: {e}")))??;
        let (model, schema, loss) = trained;
        let seconds = started.elapsed().as_secs_f64();
        let threshold = p.threshold.unwrap_or(match model {
            ml::Model::Forecaster(_) => 0.5,
            ml::Model::Autoencoder(_) => 0.9999,
        });
        let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        let meta = ml::ModelMeta {
            name: p.model.clone(),
            version: 0,
            kind: String::new(),
            params: serde_json::Value::Null,
            schema,
            threshold,
            training_window: Some((window.start.to_rfc3339(), window.end.to_rfc3339())),
            training: ml::TrainReport {
                examples: rows,
                final_loss: loss,
                seconds,
                ..ml::TrainReport::default()
            },
            created_at: String::new(),
        };
        let stored = engine
            .models()
            .save(&model, meta)
            .await
            .map_err(|e| Error::job(&job, e.to_string()))?;
        Ok(Outcome {
            rows_read: u64::try_from(rows).unwrap_or(u64::MAX),
            rows_written: 0,
            detail: format!(
                "trained {} version {} ({}) on {rows} rows in {seconds:.1} s, final loss {loss:.4}",
                stored.name, stored.version, stored.kind
            ),
            window: Some(window),
        })
    }
}
