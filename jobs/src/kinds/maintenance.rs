//! Delta table maintenance: `compact` (OPTIMIZE: bin-packing, optional Z-order), `vacuum`
//! (delete files no version references, past a retention period) and `retention` (delete rows
//! older than a TTL — whole `date` partitions first, which only rewrites the log).

use std::num::NonZeroU64;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use deltalake::DeltaTable;
use deltalake::operations::optimize::OptimizeType;
use serde::Deserialize;

use super::{JobKind, Outcome, RunContext};
use crate::config::{Job, parse_duration};
use crate::delta;
use crate::{Error, Result};

fn files(table: &DeltaTable) -> usize {
    table
        .snapshot()
        .map(|s| s.log_data().num_files())
        .unwrap_or(0)
}

async fn open(ctx: &RunContext, table: &str) -> Result<DeltaTable> {
    let t = delta::table_ref(&format!("jobs.{}.params.table", ctx.job.name), table)?;
    delta::open(ctx.engine()?.storage(), &t).await
}

async fn refreshed(ctx: &RunContext, table: &str) -> Result<()> {
    if let Ok(t) = delta::table_ref("table", table) {
        ctx.engine()?.invalidate(&t.schema, &t.name).await;
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct Compact;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactParams {
    table: String,
    /// Files are packed up to this size.
    #[serde(default = "default_target_mb")]
    target_file_mb: u64,
    /// Z-order the rewritten files by these columns (empty: plain bin-packing).
    #[serde(default)]
    zorder: Vec<String>,
}

fn default_target_mb() -> u64 {
    128
}

#[async_trait]
impl JobKind for Compact {
    fn name(&self) -> &'static str {
        "compact"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: CompactParams = job.params()?;
        delta::table_ref(&format!("jobs.{}.params.table", job.name), &p.table)?;
        if !(1..=4096).contains(&p.target_file_mb) {
            return Err(Error::config(
                format!("jobs.{}.params.target_file_mb", job.name),
                format!("{} is outside 1..=4096", p.target_file_mb),
            ));
        }
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let p: CompactParams = ctx.job.params()?;
        let table = open(&ctx, &p.table).await?;
        let before = files(&table);
        let target =
            NonZeroU64::new(p.target_file_mb.saturating_mul(1 << 20)).unwrap_or(NonZeroU64::MIN);
        let kind = if p.zorder.is_empty() {
            OptimizeType::Compact
        } else {
            OptimizeType::ZOrder(p.zorder.clone())
        };
        let (table, metrics) = table
            .optimize()
            .with_target_size(target)
            .with_type(kind)
            .await
            .map_err(|e| Error::delta(&p.table, "compaction failed", e))?;
        refreshed(&ctx, &p.table).await?;
        let after = files(&table);
        Ok(Outcome {
            detail: format!(
                "{}: files {before} -> {after} ({} rewritten into {}{})",
                p.table,
                metrics.num_files_removed,
                metrics.num_files_added,
                if p.zorder.is_empty() {
                    String::new()
                } else {
                    format!(", z-ordered by {}", p.zorder.join(", "))
                }
            ),
            ..Outcome::default()
        })
    }
}

#[derive(Debug)]
pub(crate) struct Vacuum;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VacuumParams {
    table: String,
    /// Unreferenced files younger than this are kept (readers of older versions need them).
    #[serde(default = "default_retain")]
    retain: String,
    #[serde(default)]
    dry_run: bool,
}

fn default_retain() -> String {
    "7days".into()
}

#[async_trait]
impl JobKind for Vacuum {
    fn name(&self) -> &'static str {
        "vacuum"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: VacuumParams = job.params()?;
        delta::table_ref(&format!("jobs.{}.params.table", job.name), &p.table)?;
        parse_duration(&format!("jobs.{}.params.retain", job.name), &p.retain)?;
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let p: VacuumParams = ctx.job.params()?;
        let retain = parse_duration(&format!("jobs.{}.params.retain", ctx.job.name), &p.retain)?;
        let table = open(&ctx, &p.table).await?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(
                chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX),
            )
            .with_enforce_retention_duration(false)
            .with_dry_run(p.dry_run)
            .await
            .map_err(|e| Error::delta(&p.table, "vacuum failed", e))?;
        Ok(Outcome {
            detail: format!(
                "{}: {} {} unreferenced files older than {}",
                p.table,
                if p.dry_run { "would delete" } else { "deleted" },
                metrics.files_deleted.len(),
                p.retain
            ),
            ..Outcome::default()
        })
    }
}

#[derive(Debug)]
pub(crate) struct Retention;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionParams {
    table: String,
    /// Rows whose `column` is older than this (before the fire time) are deleted.
    ttl: String,
    /// The event-time column.
    #[serde(default = "default_column")]
    column: String,
}

fn default_column() -> String {
    "ts".into()
}

fn cutoff_literal(ty: &arrow::datatypes::DataType, t: DateTime<Utc>) -> Result<ScalarValue> {
    Ok(
        ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
            .cast_to(ty)?,
    )
}

#[async_trait]
impl JobKind for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: RetentionParams = job.params()?;
        delta::table_ref(&format!("jobs.{}.params.table", job.name), &p.table)?;
        parse_duration(&format!("jobs.{}.params.ttl", job.name), &p.ttl)?;
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let job = ctx.job.name.clone();
        let p: RetentionParams = ctx.job.params()?;
        let ttl = parse_duration(&format!("jobs.{job}.params.ttl"), &p.ttl)?;
        let cutoff =
            ctx.fire_time - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let table = open(&ctx, &p.table).await?;
        let snapshot = table
            .snapshot()
            .map_err(|e| Error::delta(&p.table, "failed to read the snapshot", e))?;
        let schema: arrow::datatypes::Schema =
            deltalake::kernel::engine::arrow_conversion::TryIntoArrow::try_into_arrow(
                snapshot.schema().as_ref(),
            )?;
        let column_type = schema
            .field_with_name(&p.column)
            .map_err(|_| Error::job(&job, format!("{} has no column {}", p.table, p.column)))?
            .data_type()
            .clone();
        let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        let mut deleted = 0usize;
        let mut removed_files = 0usize;
        let mut table = table;
        // Whole days before the cutoff's day: a metadata-only delete of their partitions.
        if partitions.iter().any(|c| c == schemas::COL_DATE) {
            let day = cutoff_literal(&arrow::datatypes::DataType::Date32, cutoff)?;
            let (t, m) = table
                .delete()
                .with_predicate(col(schemas::COL_DATE).lt(lit(day)))
                .await
                .map_err(|e| Error::delta(&p.table, "failed to delete expired partitions", e))?;
            deleted += m.num_deleted_rows.unwrap_or(0);
            removed_files += m.num_removed_files;
            table = t;
        }
        // The rest: rows of the cutoff's day (or of an unpartitioned table) older than it.
        let (_, m) = table
            .delete()
            .with_predicate(col(p.column.as_str()).lt(lit(cutoff_literal(&column_type, cutoff)?)))
            .await
            .map_err(|e| Error::delta(&p.table, "failed to delete expired rows", e))?;
        deleted += m.num_deleted_rows.unwrap_or(0);
        removed_files += m.num_removed_files;
        refreshed(&ctx, &p.table).await?;
        Ok(Outcome {
            rows_written: 0,
            detail: format!(
                "{}: deleted {deleted} rows with {} before {} ({removed_files} files removed)",
                p.table,
                p.column,
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            ..Outcome::default()
        })
    }
}
