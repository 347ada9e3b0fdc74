//! `detect_anomalies(table, metric_filter, model [, window])`: a table function that scores a
//! table's series with a model from the registry and returns one row per scored point:
//! `(ts, series, value, score, is_anomaly, contributing)`.
//!
//! - `table`: e.g. `'raw.telemetry'`; it needs the columns the model was trained on (its
//!   schema check says which are missing).
//! - `metric_filter`: a SQL predicate on the table (e.g. `'metric = ''cpu_pct'''`), `''` for
//!   none.
//! - `model`: a registry name, `name@version` to pin one.
//! - `window`: only points of the last `window` (e.g. `'2 hours'`) are returned; the window
//!   before it is read as context, so the detector has warmed up when the window starts.
//!   Without it, every point is returned.
//!
//! A forecaster scores each series (its key columns, e.g. host and metric) causally; the
//! autoencoder scores each key's metric vector per timestamp (only where every metric it was
//! trained on is present) and names the metrics that contributed.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use crate::computed::{ComputedRows, ComputedTable};
use crate::models::{ModelRegistry, Pin, now_us};

/// The output schema of `detect_anomalies`.
pub fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("series", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("score", DataType::Float64, false),
        Field::new("is_anomaly", DataType::Boolean, false),
        Field::new(
            "contributing",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]))
}

/// What a call asks for.
#[derive(Debug, Clone)]
pub struct DetectRequest {
    pub table: String,
    pub filter: String,
    pub model: String,
    /// Which points to read and return (all when `None`).
    pub range: Option<ScoreRange>,
}

/// Points in `[from_us, until_us)` are returned; those from `context_from_us` are read (and
/// warm the detector up). Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreRange {
    pub context_from_us: i64,
    pub from_us: i64,
    pub until_us: i64,
}

impl ScoreRange {
    /// The last `window` before now, with the window before it as context.
    pub fn last(window: std::time::Duration) -> Self {
        let now = now_us();
        let w = i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 4);
        Self {
            context_from_us: now - 2 * w,
            from_us: now - w,
            until_us: i64::MAX,
        }
    }
}

#[derive(Debug)]
pub(crate) struct DetectAnomalies {
    pub(crate) registry: ModelRegistry,
}

fn plan_err(message: String) -> DataFusionError {
    DataFusionError::Plan(format!("detect_anomalies: {message}"))
}

fn text_arg(exprs: &[Expr], i: usize, what: &str) -> Result<Option<String>> {
    match exprs.get(i) {
        None => Ok(None),
        Some(Expr::Literal(ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s), _)) => {
            Ok(Some(s.clone().unwrap_or_default()))
        }
        Some(other) => Err(plan_err(format!(
            "argument {} ({what}) must be a string literal, not {other}",
            i + 1
        ))),
    }
}

impl TableFunctionImpl for DetectAnomalies {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=4).contains(&exprs.len()) {
            return Err(plan_err(format!(
                "takes (table, metric_filter, model [, window]), got {} arguments",
                exprs.len()
            )));
        }
        let need = |i, what| {
            text_arg(exprs, i, what)?.ok_or_else(|| plan_err(format!("{what} is missing")))
        };
        let window = match text_arg(exprs, 3, "window")? {
            None => None,
            Some(w) if w.trim().is_empty() => None,
            Some(w) => Some(humantime::parse_duration(w.trim()).map_err(|e| {
                plan_err(format!(
                    "window {w:?} is not a duration ({e}); e.g. '2 hours', '30m'"
                ))
            })?),
        };
        Ok(Arc::new(ComputedTable(DetectTable {
            registry: self.registry.clone(),
            request: DetectRequest {
                table: need(0, "table")?,
                filter: need(1, "metric_filter")?,
                model: need(2, "model")?,
                range: window.map(ScoreRange::last),
            },
        })))
    }
}

#[derive(Debug)]
struct DetectTable {
    registry: ModelRegistry,
    request: DetectRequest,
}

#[async_trait]
impl ComputedRows for DetectTable {
    fn schema(&self) -> SchemaRef {
        output_schema()
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("detect_anomalies: no session".into()))?;
        // The caller's own session: its grants and row filters apply to what is read.
        let ctx = SessionContext::new_with_state(state.clone());
        let (_, batch) = detect(&ctx, &self.registry, &self.request).await?;
        Ok(batch)
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, i: usize, what: &str) -> Result<&'a T> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| DataFusionError::Internal(format!("detect_anomalies: column {what}")))
}

/// One point read from the table.
struct Point {
    ts: i64,
    key: String,
    value: f64,
    metric: Option<String>,
}

/// Scores `request` in `ctx`'s catalog; returns the model's metadata and the rows of
/// `detect_anomalies`.
pub async fn detect(
    ctx: &SessionContext,
    registry: &ModelRegistry,
    request: &DetectRequest,
) -> Result<(ml::ModelMeta, RecordBatch)> {
    let (name, pin) = Pin::parse(&request.model).map_err(|e| plan_err(e.to_string()))?;
    let (meta, model) = registry
        .load(&name, pin)
        .await
        .map_err(|e| plan_err(e.to_string()))?;
    let s = &meta.schema;

    // The table's columns, for the schema check before any data is read.
    let table = ctx
        .table(request.table.as_str())
        .await
        .map_err(|e| plan_err(format!("cannot read {}: {e}", request.table)))?;
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    meta.check_schema(&columns, None)
        .map_err(|e| plan_err(e.to_string()))?;

    let range = request.range.unwrap_or(ScoreRange {
        context_from_us: i64::MIN,
        from_us: i64::MIN,
        until_us: i64::MAX,
    });
    let from_us = range.from_us;
    let mut select = vec![format!("{} AS ts", quote(&s.ts))];
    let key_expr = if s.key.is_empty() {
        "''".to_string()
    } else {
        format!(
            "concat_ws('/', {})",
            s.key
                .iter()
                .map(|k| format!("CAST({} AS VARCHAR)", quote(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    select.push(format!("{key_expr} AS series"));
    select.push(format!("CAST({} AS DOUBLE) AS value", quote(&s.value)));
    if let Some(m) = &s.metric_column {
        select.push(format!("CAST({} AS VARCHAR) AS metric", quote(m)));
    }
    let mut predicates = vec![format!("{} IS NOT NULL", quote(&s.value))];
    if !request.filter.trim().is_empty() {
        predicates.push(format!("({})", request.filter));
    }
    if range.context_from_us > i64::MIN {
        predicates.push(format!(
            "{} >= to_timestamp_micros({})",
            quote(&s.ts),
            range.context_from_us
        ));
    }
    if range.until_us < i64::MAX {
        predicates.push(format!(
            "{} < to_timestamp_micros({})",
            quote(&s.ts),
            range.until_us
        ));
    }
    let sql = format!(
        "SELECT * FROM (SELECT {} FROM {} WHERE {}) ORDER BY series, ts",
        select.join(", "),
        request.table,
        predicates.join(" AND ")
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| plan_err(format!("reading the series: {e}")))?
        .collect()
        .await?;

    let mut points = Vec::new();
    for b in &batches {
        let ts = cast(
            b.column(0),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| DataFusionError::Internal("detect_anomalies: ts".into()))?;
        let keys = cast(b.column(1), &DataType::Utf8)?;
        let keys = keys
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("detect_anomalies: series".into()))?;
        let values: &Float64Array = column(b, 2, "value")?;
        let metrics = match s.metric_column {
            Some(_) => {
                let m = cast(b.column(3), &DataType::Utf8)?;
                Some(m)
            }
            None => None,
        };
        let metrics = metrics
            .as_ref()
            .and_then(|m| m.as_any().downcast_ref::<StringArray>());
        for i in 0..b.num_rows() {
            if ts.is_null(i) || values.is_null(i) {
                continue;
            }
            points.push(Point {
                ts: ts.value(i),
                key: if keys.is_null(i) {
                    String::new()
                } else {
                    keys.value(i).to_string()
                },
                value: values.value(i),
                metric: metrics
                    .filter(|m| m.is_valid(i))
                    .map(|m| m.value(i).to_string()),
            });
        }
    }

    let mut out = Rows::default();
    match &model {
        ml::Model::Forecaster(f) => {
            let mut start = 0;
            while start < points.len() {
                let mut end = start;
                while end < points.len() && points[end].key == points[start].key {
                    end += 1;
                }
                let series = &points[start..end];
                let values: Vec<f64> = series.iter().map(|p| p.value).collect();
                let learning = 50.min(values.len() / 4);
                let scores = f.score(&values, learning).map_err(ml_err)?;
                for (p, score) in series.iter().zip(scores) {
                    if p.ts >= from_us {
                        out.push(p.ts, &p.key, Some(p.value), score, meta.threshold, None);
                    }
                }
                start = end;
            }
        }
        ml::Model::Autoencoder(a) => {
            let present: Vec<String> = {
                let mut m: Vec<String> = points.iter().filter_map(|p| p.metric.clone()).collect();
                m.sort();
                m.dedup();
                m
            };
            meta.check_schema(&columns, Some(&present))
                .map_err(|e| plan_err(e.to_string()))?;
            let complete = ml::metric_vectors(
                points
                    .iter()
                    .filter_map(|p| Some((p.key.as_str(), p.ts, p.metric.as_deref()?, p.value))),
                &s.metrics,
            );
            let rows: Vec<Vec<f64>> = complete.iter().map(|(_, v)| v.clone()).collect();
            let scores = a.score(&rows).map_err(ml_err)?;
            for (((key, ts), v), sc) in complete.iter().zip(scores) {
                if *ts < from_us {
                    continue;
                }
                let names: Vec<&str> = sc
                    .contributing
                    .iter()
                    .map(|&d| s.metrics[d].as_str())
                    .collect();
                let value = sc.contributing.first().map(|&d| v[d]);
                out.push(*ts, key, value, sc.score, meta.threshold, Some(names));
            }
        }
    }
    Ok((meta, out.finish()?))
}

fn ml_err(e: ml::Error) -> DataFusionError {
    plan_err(e.to_string())
}

#[derive(Default)]
struct Rows {
    ts: Vec<i64>,
    series: StringBuilder,
    value: Vec<Option<f64>>,
    score: Vec<f64>,
    anomaly: Vec<bool>,
    contributing: ListBuilder<StringBuilder>,
}

impl Rows {
    fn push(
        &mut self,
        ts: i64,
        series: &str,
        value: Option<f64>,
        score: f64,
        threshold: f64,
        contributing: Option<Vec<&str>>,
    ) {
        self.ts.push(ts);
        self.series.append_value(series);
        self.value.push(value);
        self.score.push(score);
        self.anomaly.push(score >= threshold);
        match contributing {
            Some(names) => {
                for n in names {
                    self.contributing.values().append_value(n);
                }
                self.contributing.append(true);
            }
            None => self.contributing.append(false),
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.ts).with_timezone("UTC")),
            Arc::new(self.series.finish()),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(Float64Array::from(self.score)),
            Arc::new(BooleanArray::from(self.anomaly)),
            Arc::new(self.contributing.finish()),
        ];
        Ok(RecordBatch::try_new(output_schema(), columns)?)
    }
}
