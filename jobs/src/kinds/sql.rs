//! `sql`: statements with the window bound in; a statement with a `target` writes its result
//! to a curated table, replacing what that table holds for the window (one Delta commit with
//! replace-where), so re-running a window — a retry, a duplicate, a backfill — never
//! double-counts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
#[cfg(test)]
use arrow::datatypes::TimeUnit;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{Expr, col, lit};
use deltalake::protocol::SaveMode;
use serde::Deserialize;

use super::window::{Plan, WindowParams, floor};
use super::{JobKind, Outcome, RunContext};
use crate::config::Job;
use crate::delta;
use crate::history::Window;
use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct Sql;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    sql: String,
    /// `curated.<name>`: where the result goes (created from the result's columns if missing).
    #[serde(default)]
    target: Option<String>,
    /// `replace` (default with a target): the rows whose `replace_column` lies in the window
    /// are replaced by the result; `overwrite`: the whole table is; `append`: rows are added.
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    replace_column: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    statements: Vec<Statement>,
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

impl Params {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Replace,
    Overwrite,
    Append,
}

fn mode_of(job: &str, i: usize, s: &Statement, windowed: bool) -> Result<Mode> {
    let key = format!("jobs.{job}.params.statements[{i}]");
    let mode = match (s.target.as_deref(), s.mode.as_deref()) {
        (None, None) => return Ok(Mode::Run),
        (None, Some(_)) => return Err(Error::config(key, "mode needs a target")),
        (Some(_), None | Some("replace")) => Mode::Replace,
        (Some(_), Some("overwrite")) => Mode::Overwrite,
        (Some(_), Some("append")) => Mode::Append,
        (Some(_), Some(other)) => {
            return Err(Error::config(
                key,
                format!("mode {other:?} is not one of replace, overwrite, append"),
            ));
        }
    };
    if let Some(target) = &s.target {
        let t = delta::table_ref(&format!("{key}.target"), target)?;
        if t.schema != engine::CURATED {
            return Err(Error::config(
                format!("{key}.target"),
                format!("{target}: jobs write curated tables only (curated.<name>)"),
            ));
        }
    }
    if mode == Mode::Replace && (s.replace_column.is_none() || !windowed) {
        return Err(Error::config(
            key,
            "mode replace needs replace_column (the result's time column) and params.window",
        ));
    }
    Ok(mode)
}

/// Runs `df`, returning its batches and how many rows its scans read.
async fn collect_counting(df: DataFrame) -> Result<(Vec<RecordBatch>, SchemaRef, u64)> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let batches = collect(plan.clone(), task).await?;
    fn leaves(plan: &Arc<dyn ExecutionPlan>, sum: &mut u64) {
        if plan.children().is_empty() {
            let rows = plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
            *sum += u64::try_from(rows).unwrap_or(0);
        }
        for c in plan.children() {
            leaves(c, sum);
        }
    }
    let mut read = 0;
    leaves(&plan, &mut read);
    Ok((batches, schema, read))
}

/// `t` as a literal of the column type `ty` (a timestamp of any unit/zone, or a date).
fn literal(
    job: &str,
    column: &str,
    ty: &DataType,
    t: chrono::DateTime<chrono::Utc>,
) -> Result<Expr> {
    let us = ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()));
    match ty {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Ok(lit(us.cast_to(ty)?)),
        other => Err(Error::job(
            job,
            format!("replace_column {column} is {other}, not a timestamp or date"),
        )),
    }
}

/// The rows of `target` a replace run rewrites: those whose `column` lies in `w`. On a date
/// column the window's last instant decides the last day: an open window ends mid-day, and the
/// rows of that day are in the result, so that day is replaced too (`day < date(end)` would
/// leave it out, and Delta would reject the write for rows outside the predicate).
fn replace_predicate(
    job: &str,
    target: &str,
    stored: &arrow::datatypes::Schema,
    column: &str,
    w: Window,
) -> Result<Expr> {
    let ty = stored
        .field_with_name(column)
        .map_err(|_| Error::job(job, format!("{target} has no column {column}")))?
        .data_type()
        .clone();
    let from = col(column).gt_eq(literal(job, column, &ty, w.start)?);
    Ok(match ty {
        DataType::Date32 | DataType::Date64 => {
            if floor(w.start, std::time::Duration::from_secs(86_400)) != w.start {
                // The whole first day would be replaced by the part of it the window covers.
                return Err(Error::job(
                    job,
                    format!(
                        "replace_column {column} of {target} is a date, but the window starts \
                         mid-day ({}): replacing that day would drop its rows before the \
                         window; use a timestamp column or a window of whole days",
                        w.start.to_rfc3339()
                    ),
                ));
            }
            let last = w.end - chrono::Duration::microseconds(1);
            from.and(col(column).lt_eq(literal(job, column, &ty, last)?))
        }
        _ => from.and(col(column).lt(literal(job, column, &ty, w.end)?)),
    })
}

/// Casts `batch`'s columns to `schema`'s types (views to plain strings, ...), by name.
fn conform(job: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = batch.column_by_name(f.name()).ok_or_else(|| {
            Error::job(
                job,
                format!("the result has no column {} the target has", f.name()),
            )
        })?;
        columns.push(cast(c, f.data_type())?);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::job(
            job,
            format!(
                "the result has {} columns, the target {}",
                batch.num_columns(),
                schema.fields().len()
            ),
        ));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

async fn write(
    ctx: &RunContext,
    target: &str,
    mode: Mode,
    replace_column: Option<&str>,
    window: Option<Window>,
    batches: Vec<RecordBatch>,
    result_schema: &SchemaRef,
) -> Result<u64> {
    let job = ctx.job.name.as_str();
    let engine = ctx.engine()?;
    let table_ref = delta::table_ref("target", target)?;
    engine
        .create_curated(&table_ref.name, result_schema.as_ref())
        .await?;
    let table = delta::open(engine.storage(), &table_ref).await?;
    let stored = Arc::new(lake::arrow_schema(&table)?);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let batches = batches
        .iter()
        .map(|b| conform(job, b, &stored))
        .collect::<Result<Vec<_>>>()?;
    let write_err = |e: deltalake::DeltaTableError| {
        Error::delta(&table_ref, "failed to write the job's result", e)
    };
    match (mode, replace_column, window) {
        // Nothing to write (Delta refuses an empty write).
        (Mode::Append, _, _) if rows == 0 => return Ok(0),
        (Mode::Append, _, _) => {
            table
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .await
                .map_err(write_err)?;
        }
        // The table's old rows still go.
        (Mode::Overwrite, _, _) if rows == 0 => {
            table
                .delete()
                .await
                .map_err(|e| Error::delta(&table_ref, "failed to clear the job's window", e))?;
        }
        (Mode::Overwrite, _, _) => {
            table
                .write(batches)
                .with_save_mode(SaveMode::Overwrite)
                .await
                .map_err(write_err)?;
        }
        (Mode::Replace | Mode::Run, Some(column), Some(w)) => {
            let predicate = replace_predicate(job, target, &stored, column, w)?;
            lake::replace_where(table, &table_ref, batches, predicate, "the job's result").await?;
        }
        _ => return Err(Error::job(job, "replace needs replace_column and a window")),
    }
    engine.invalidate_curated(&table_ref.name).await;
    Ok(u64::try_from(rows).unwrap_or(u64::MAX))
}

#[async_trait]
impl JobKind for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: Params = job.params()?;
        let windowed = p.window_params().spec(&job.name)?.is_some();
        if p.statements.is_empty() {
            return Err(Error::config(
                format!("jobs.{}.params.statements", job.name),
                "needs at least one statement",
            ));
        }
        for (i, s) in p.statements.iter().enumerate() {
            mode_of(&job.name, i, s, windowed)?;
        }
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let job = ctx.job.name.clone();
        let p: Params = ctx.job.params()?;
        let window = match p.window_params().plan(&ctx)? {
            Plan::Run(w) => w,
            Plan::UpToDate => return Ok(Outcome::up_to_date()),
        };
        let engine = ctx.engine()?.clone();
        let mut out = Outcome {
            window,
            ..Outcome::default()
        };
        let mut parts = Vec::new();
        for (i, s) in p.statements.iter().enumerate() {
            let mode = mode_of(&job, i, s, window.is_some())?;
            let text = super::render_template(&job, &s.sql, window, ctx.fire_time)?;
            let df = engine.sql(&text).await?;
            let (batches, schema, read) = collect_counting(df).await?;
            out.rows_read += read;
            match &s.target {
                None => {
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    parts.push(format!("statement {}: {rows} rows", i + 1));
                }
                Some(target) => {
                    let written = write(
                        &ctx,
                        target,
                        mode,
                        s.replace_column.as_deref(),
                        window,
                        batches,
                        &schema,
                    )
                    .await?;
                    out.rows_written += written;
                    let verb = match mode {
                        Mode::Append => "appended to",
                        Mode::Overwrite => "overwrote",
                        _ => "replaced the window of",
                    };
                    parts.push(format!("{verb} {target}: {written} rows"));
                }
            }
        }
        out.detail = parts.join("; ");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    #[test]
    fn literals_follow_the_column_type() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert!(literal("j", "b", &window_type(), t).is_ok());
        assert!(literal("j", "b", &DataType::Date32, t).is_ok());
        assert!(literal("j", "b", &DataType::Utf8, t).is_err());
    }

    /// A schema of one column `c` of type `ty`.
    fn schema_of(ty: DataType) -> arrow::datatypes::Schema {
        arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new("c", ty, false)])
    }

    /// Which of `values` (a column `c` of type `ty`, cast from microseconds) the replace
    /// predicate of `w` selects.
    async fn selected(ty: DataType, values: &[&str], w: Window) -> Vec<String> {
        use datafusion::prelude::SessionContext;
        let us: Vec<i64> = values
            .iter()
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .unwrap()
                    .timestamp_micros()
            })
            .collect();
        let raw = arrow::array::TimestampMicrosecondArray::from(us).with_timezone("UTC");
        let column = cast(&raw, &ty).unwrap();
        let schema = schema_of(ty);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![column]).unwrap();
        let predicate = replace_predicate("j", "t", &schema, "c", w).unwrap();
        let out = SessionContext::new()
            .read_batch(batch)
            .unwrap()
            .filter(predicate)
            .unwrap()
            .select(vec![datafusion::prelude::cast(col("c"), DataType::Utf8)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        out.iter()
            .flat_map(|b| {
                let a = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                a.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    fn w(start: &str, end: &str) -> Window {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        Window {
            start: t(start),
            end: t(end),
        }
    }

    #[tokio::test]
    async fn an_open_window_replaces_its_last_day_on_a_date_column() {
        let days = [
            "2026-11-28T00:00:00Z",
            "2026-11-29T00:00:00Z",
            "2026-11-30T00:00:00Z",
            "2026-12-01T00:00:00Z",
        ];
        // Open: ends at the fire time, mid-day; the day it ends in is in the result.
        let open = w("2026-11-29T00:00:00Z", "2026-11-30T19:42:30Z");
        assert_eq!(
            selected(DataType::Date32, &days, open).await,
            ["2026-11-29", "2026-11-30"]
        );
        // Closed at midnight: the next day is not part of it.
        let closed = w("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z");
        assert_eq!(
            selected(DataType::Date32, &days, closed).await,
            ["2026-11-29"]
        );
        // A window starting mid-day cannot replace whole days: an error, not lost rows.
        let hourly = w("2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z");
        let err =
            replace_predicate("j", "t", &schema_of(DataType::Date32), "c", hourly).unwrap_err();
        assert!(err.to_string().contains("starts mid-day"), "{err}");
        // A timestamp column keeps the half-open window.
        let instants = [
            "2026-11-29T00:00:00Z",
            "2026-11-30T19:42:29Z",
            "2026-11-30T19:42:30Z",
        ];
        assert_eq!(
            selected(window_type(), &instants, open).await.len(),
            2,
            "the window's end is exclusive on a timestamp column"
        );
    }
}
