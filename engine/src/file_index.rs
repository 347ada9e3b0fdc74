//! Scans of plain Delta tables planned from the files of one table version, read once.
//!
//! The Delta provider replays its snapshot's file list on every scan and parses each file's
//! statistics JSON again: about 30 µs a file, 12 ms of every query on a table of 400 files, and
//! it grows with the table. The files of a version never change, so [`FileIndex`] reads them once
//! when a new version is seen (path, size, partition values, statistics as Arrow arrays), and
//! each scan is planned from memory: the query's filters prune files over those arrays in one
//! vectorised pass, and the remaining files become a Parquet `DataSourceExec`, the same scan
//! DataFusion plans for its own tables (row-group and page pruning, filter pushdown, the footer
//! cache). See ADR 0013.
//!
//! Only tables any Parquet reader can read file by file use it: protocol reader version 1 (no
//! deletion vectors, no column mapping), partition columns last in the schema and never null,
//! every file under the table's store. Other tables keep the Delta provider.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use object_store::ObjectStore;
use object_store::path::Path;

/// Delta statistics keep timestamps to the millisecond, truncated: a file's true maximum can
/// be up to this many microseconds above the logged one.
const TIMESTAMP_MAX_SLACK_US: i64 = 999;

/// The files of one version of a Delta table, ready to plan scans from.
pub(crate) struct FileIndex {
    version: u64,
    /// What scans produce: the file columns, then the partition columns.
    schema: SchemaRef,
    /// `schema` for turning filters into physical expressions (built once, not per query).
    df_schema: DFSchema,
    /// The columns stored in the files.
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    files: Vec<PartitionedFile>,
    stats: FileStats,
}

impl std::fmt::Debug for FileIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIndex")
            .field("version", &self.version)
            .field("files", &self.files.len())
            .finish()
    }
}

/// Per-file statistics, one row per file, typed as the scan's columns: the pruning input.
#[derive(Default)]
struct FileStats {
    files: usize,
    min: HashMap<String, ArrayRef>,
    max: HashMap<String, ArrayRef>,
    nulls: HashMap<String, ArrayRef>,
    rows: Option<ArrayRef>,
}

impl PruningStatistics for FileStats {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.min.get(column.name()).cloned()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.max.get(column.name()).cloned()
    }

    fn num_containers(&self) -> usize {
        self.files
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.nulls.get(column.name()).cloned()
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        self.rows.clone()
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

fn external(context: String, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("{context}: {e}").into())
}

/// `scheme://authority` of `url`: the key its object store is registered under.
fn store_url(url: &url::Url) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    ))
}

/// Whether a reader that knows nothing beyond plain Parquet files reads `table` correctly.
fn plain_protocol(table: &DeltaTable) -> Result<bool> {
    let state = table
        .snapshot()
        .map_err(|e| external(format!("delta table {}", table.table_url()), e))?;
    let protocol = serde_json::to_value(state.protocol())
        .map_err(|e| external("delta protocol".to_string(), e))?;
    Ok(
        protocol.get("minReaderVersion").and_then(|v| v.as_i64()) == Some(1)
            && protocol.get("readerFeatures").is_none(),
    )
}

/// The column `name` of the flattened add-actions batch, cast to `ty`; `None` when the log has
/// no such statistics or they cannot be read as `ty`.
fn stat_column(
    adds: &datafusion::arrow::array::RecordBatch,
    name: &str,
    ty: &DataType,
) -> Option<ArrayRef> {
    let column = adds.column_by_name(name)?;
    cast(column, ty).ok()
}

/// Raises logged timestamp maxima by the precision the log lost, so they stay upper bounds.
fn widen_timestamp_max(max: ArrayRef) -> ArrayRef {
    use datafusion::arrow::datatypes::{
        ArrowTimestampType, TimestampMicrosecondType, TimestampNanosecondType,
    };
    fn widen<T: ArrowTimestampType>(max: &ArrayRef, slack: i64) -> ArrayRef {
        let ts = max.as_primitive::<T>();
        Arc::new(
            ts.unary::<_, T>(|v| v.saturating_add(slack))
                .with_timezone_opt(ts.timezone().map(Arc::from)),
        )
    }
    match max.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            widen::<TimestampMicrosecondType>(&max, TIMESTAMP_MAX_SLACK_US)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            widen::<TimestampNanosecondType>(&max, TIMESTAMP_MAX_SLACK_US * 1000 + 999)
        }
        _ => max,
    }
}

fn scalar(array: &ArrayRef, row: usize) -> Result<Precision<ScalarValue>> {
    if array.is_null(row) {
        return Ok(Precision::Absent);
    }
    Ok(Precision::Inexact(ScalarValue::try_from_array(array, row)?))
}

impl FileIndex {
    /// The index of `table`'s current version, scanned as `schema` (the Delta provider's
    /// schema); `None` when the table needs more than a plain Parquet reader.
    pub(crate) fn try_new(table: &DeltaTable, schema: &SchemaRef) -> Result<Option<Self>> {
        if !plain_protocol(table)? {
            return Ok(None);
        }
        let context = || format!("delta table {}", table.table_url());
        let state = table.snapshot().map_err(|e| external(context(), e))?;
        let version = state.version();
        let partition_columns = state.metadata().partition_columns().to_vec();
        // Partition columns must close the schema, in the order the log declares them: scans
        // produce file columns, then partition columns.
        let n_files_cols = schema
            .fields()
            .len()
            .saturating_sub(partition_columns.len());
        let suffix: Vec<&str> = schema.fields()[n_files_cols..]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        if suffix
            != partition_columns
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        {
            return Ok(None);
        }
        let file_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema.fields()[..n_files_cols].to_vec(),
        ));
        let partition_fields: Vec<FieldRef> = schema.fields()[n_files_cols..].to_vec();

        let adds = state
            .add_actions_table(true)
            .map_err(|e| external(context(), e))?;
        let n = adds.num_rows();
        let log_store = table.log_store();
        let root = log_store.root_url().clone();
        let root_store = store_url(&root)?;
        let paths = adds
            .column_by_name("path")
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?
            .ok_or_else(|| external(context(), "the add actions have no path"))?;
        let paths = paths.as_string::<i32>();
        let sizes = adds
            .column_by_name("size_bytes")
            .and_then(|c| c.as_primitive_opt::<Int64Type>().cloned())
            .ok_or_else(|| external(context(), "the add actions have no size"))?;
        let rows = adds
            .column_by_name("num_records")
            .and_then(|c| cast(c, &DataType::UInt64).ok());

        let mut stats = FileStats {
            files: n,
            rows: rows.clone(),
            ..FileStats::default()
        };
        let mut per_column = Vec::with_capacity(file_schema.fields().len());
        for field in file_schema.fields() {
            let name = field.name();
            let min = stat_column(&adds, &format!("min.{name}"), field.data_type());
            let max = stat_column(&adds, &format!("max.{name}"), field.data_type())
                .map(widen_timestamp_max);
            let nulls = stat_column(&adds, &format!("null_count.{name}"), &DataType::UInt64);
            for (map, array) in [
                (&mut stats.min, &min),
                (&mut stats.max, &max),
                (&mut stats.nulls, &nulls),
            ] {
                if let Some(a) = array {
                    map.insert(name.clone(), a.clone());
                }
            }
            per_column.push((min, max, nulls));
        }
        let mut partitions = Vec::with_capacity(partition_fields.len());
        for field in &partition_fields {
            let name = field.name();
            let Some(values) = stat_column(&adds, &format!("partition.{name}"), field.data_type())
            else {
                return Ok(None);
            };
            if values.null_count() > 0 {
                // A null partition value is not a value every row of the file holds.
                return Ok(None);
            }
            stats.min.insert(name.clone(), values.clone());
            stats.max.insert(name.clone(), values.clone());
            stats
                .nulls
                .insert(name.clone(), Arc::new(UInt64Array::from(vec![0; n])));
            partitions.push(values);
        }

        let mut files = Vec::with_capacity(n);
        for i in 0..n {
            let url = root
                .join(paths.value(i))
                .map_err(|e| external(format!("{}: file {}", context(), paths.value(i)), e))?;
            if store_url(&url)? != root_store {
                // A file outside the table's store (a shallow clone): not for this reader.
                return Ok(None);
            }
            let location = Path::from_url_path(url.path())
                .map_err(|e| external(format!("{}: file {url}", context()), e))?;
            let size = u64::try_from(sizes.value(i)).unwrap_or(0);
            // Modified "at the epoch": the footer cache keys on it, and a Delta file never
            // changes.
            let mut file = PartitionedFile::new("", size);
            file.object_meta.location = location;
            file.partition_values = partitions
                .iter()
                .map(|p| ScalarValue::try_from_array(p, i))
                .collect::<Result<_>>()?;
            let num_rows = match &rows {
                Some(r) if r.is_valid(i) => Precision::Exact(
                    r.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                        .value(i) as usize,
                ),
                _ => Precision::Absent,
            };
            let column_statistics = per_column
                .iter()
                .map(|(min, max, nulls)| {
                    Ok(ColumnStatistics {
                        null_count: match nulls {
                            Some(a) if a.is_valid(i) => Precision::Exact(
                                a.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                                    .value(i) as usize,
                            ),
                            _ => Precision::Absent,
                        },
                        // Inexact: logged bounds may be widened or truncated, so they prune
                        // but never answer min()/max() on their own.
                        min_value: min
                            .as_ref()
                            .map_or(Ok(Precision::Absent), |a| scalar(a, i))?,
                        max_value: max
                            .as_ref()
                            .map_or(Ok(Precision::Absent), |a| scalar(a, i))?,
                        ..ColumnStatistics::new_unknown()
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            file = file.with_statistics(Arc::new(Statistics {
                num_rows,
                total_byte_size: Precision::Inexact(size as usize),
                column_statistics,
            }));
            files.push(file);
        }
        Ok(Some(Self {
            version,
            df_schema: DFSchema::try_from(schema.clone())?,
            schema: schema.clone(),
            file_schema,
            partition_fields,
            store_url: root_store,
            store: log_store.root_object_store(None),
            files,
            stats,
        }))
    }

    /// The table version this index holds.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Which files `filters` may match (all when they cannot be evaluated on statistics).
    fn matching_files(&self, session: &dyn Session, filters: &[Expr]) -> Result<Vec<bool>> {
        let all = vec![true; self.files.len()];
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(all);
        };
        let predicate = session.create_physical_expr(predicate, &self.df_schema)?;
        let max_in_list = session.config_options().execution.parquet.max_in_list_size;
        match PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .with_max_in_list_size(max_in_list)
            .build(predicate)
        {
            Some(p) => Ok(p.prune(&self.stats).unwrap_or(all)),
            None => Ok(all),
        }
    }

    /// A Parquet scan of the files `filters` may match, as the Delta provider's scan would
    /// plan it: `filters` are not applied to rows here (they are `Inexact`), only to files.
    pub(crate) async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let keep = self.matching_files(session, filters)?;
        let mut files: Vec<PartitionedFile> = self
            .files
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(f, _)| f.clone())
            .collect();
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let runtime = session.runtime_env();
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), self.store.clone());
        }
        // Groups of about equal bytes, largest files first; DataFusion may split them further.
        let groups_wanted = session.config().target_partitions().max(1).min(files.len());
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups_wanted];
        for file in files {
            if let Some(g) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
                g.0 += file.object_meta.size;
                g.1.push(file);
            }
        }
        let groups = groups
            .into_iter()
            .map(|(_, files)| {
                let stats = Statistics::try_merge_iter(
                    files.iter().filter_map(|f| f.statistics.as_deref()),
                    &self.schema,
                )?;
                Ok(FileGroup::new(files).with_statistics(Arc::new(stats)))
            })
            .collect::<Result<Vec<_>>>()?;
        let statistics = Statistics::try_merge_iter(
            groups.iter().filter_map(|g| g.file_statistics(None)),
            &self.schema,
        )?;
        let format = ParquetFormat::default().with_options(session.table_options().parquet.clone());
        let table_schema = TableSchemaBuilder::from(&self.file_schema)
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let config =
            FileScanConfigBuilder::new(self.store_url.clone(), format.file_source(table_schema))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        format.create_physical_plan(session, config).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;

    use crate::{Engine, EngineConfig};

    /// 2026-11-30T00:00:00Z and the day after, in microseconds / days.
    const DAY_US: i64 = 1_795_996_800_000_000;
    const DAY: i32 = 20_787;

    /// Rows of one host on one day at `ts` (microseconds after the day's start).
    fn batch(def: &schemas::TableDef, host: &str, day: i32, ts: &[i64]) -> RecordBatch {
        let n = ts.len();
        let start = DAY_US + i64::from(day - DAY) * 86_400_000_000;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from(ts.iter().map(|t| start + t).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![host; n])),
            Arc::new(StringArray::from(vec!["web"; n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(StringArray::from(vec!["cpu_pct"; n])),
            Arc::new(Float64Array::from(
                (0..n).map(|i| i as f64).collect::<Vec<_>>(),
            )),
            datafusion::arrow::array::new_null_array(def.schema.field(6).data_type(), n),
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(Date32Array::from(vec![day; n])),
        ];
        RecordBatch::try_new(def.schema.clone(), cols).unwrap()
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// Files a query's plan reads.
    async fn files_read(ctx: &SessionContext, sql: &str) -> usize {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        displayable(plan.as_ref())
            .indent(true)
            .to_string()
            .matches(".parquet")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scans_from_the_index_match_the_delta_provider_and_prune_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = schemas::Storage::local(dir.path()).unwrap();
        let def = schemas::TableDef::for_events(schemas::event_schema("telemetry").unwrap());
        let url = storage.table_url(&def.table).unwrap();
        std::fs::create_dir_all(url.to_file_path().unwrap()).unwrap();
        let st: StructType = def.schema.as_ref().try_into_kernel().unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(st.fields().cloned())
            .with_partition_columns(["date"])
            .await
            .unwrap();
        // Four files: two hosts, two days. a's last row is 939,999 µs into its second: the log
        // keeps that maximum as .939 s, so only a widened bound keeps the file for `> .9395`.
        for b in [
            batch(&def, "a", DAY, &[0, 1_000_000, 2_939_999]),
            batch(&def, "b", DAY, &[500_000, 4_000_000]),
            batch(&def, "a", DAY + 1, &[10, 20]),
            batch(&def, "c", DAY + 1, &[3_600_000_000]),
        ] {
            table = table.write(vec![b]).await.unwrap();
        }

        let engine = Engine::new(
            storage.clone(),
            &EngineConfig {
                target_partitions: 2,
                refresh_interval_ms: 0,
                ..EngineConfig::default()
            },
        )
        .await
        .unwrap();
        let ours = engine.session();
        // The same table through the Delta provider alone.
        let reference = SessionContext::new();
        let delta = lake::open(&storage, &def.table).await.unwrap().unwrap();
        delta.update_datafusion_session(&reference.state()).unwrap();
        reference
            .register_table("t", delta.table_provider().await.unwrap())
            .unwrap();

        let ts = |us: i64| format!("TIMESTAMP '{}'", chrono_free_rfc3339(DAY_US + us));
        let queries = [
            "SELECT * FROM {t} ORDER BY ts, host".to_string(),
            "SELECT count(*) FROM {t}".to_string(),
            "SELECT max(ts), min(ts), count(region), count(host) FROM {t}".to_string(),
            "SELECT host, count(*), sum(value) FROM {t} WHERE host = 'a' GROUP BY host".to_string(),
            format!(
                "SELECT ts, host FROM {{t}} WHERE ts > {} ORDER BY ts",
                ts(2_939_500)
            ),
            format!(
                "SELECT ts, host FROM {{t}} WHERE ts >= {} AND ts < {} ORDER BY ts",
                ts(0),
                ts(600_000)
            ),
            "SELECT date, count(*) FROM {t} WHERE date = DATE '2026-12-01' GROUP BY date"
                .to_string(),
            "SELECT host, ts FROM {t} WHERE host IN ('b', 'c') ORDER BY ts DESC LIMIT 1"
                .to_string(),
            "SELECT count(*) FROM (SELECT host FROM {t} LIMIT 5)".to_string(),
        ];
        for q in &queries {
            let got = rows(ours, &q.replace("{t}", "raw.telemetry t")).await;
            let want = rows(&reference, &q.replace("{t}", "t")).await;
            assert_eq!(got, want, "{q}");
        }
        // The widened maximum kept a's file for the sub-millisecond bound: a and b overlap the
        // range; the next day's files do not.
        let late = format!(
            "SELECT ts FROM raw.telemetry WHERE ts > {} AND ts < {}",
            ts(2_939_500),
            ts(3_000_000)
        );
        assert!(rows(ours, &late).await.contains("00:00:02.939999"));
        assert_eq!(files_read(ours, &late).await, 2);
        // Statistics prune by value and by partition.
        assert_eq!(
            files_read(ours, "SELECT * FROM raw.telemetry WHERE host = 'c'").await,
            1
        );
        assert_eq!(
            files_read(
                ours,
                "SELECT * FROM raw.telemetry WHERE date = DATE '2026-11-30'"
            )
            .await,
            2
        );
        assert_eq!(files_read(ours, "SELECT * FROM raw.telemetry").await, 4);
        // A new commit is a new version: the index follows it.
        table
            .write(vec![batch(&def, "c", DAY, &[7])])
            .await
            .unwrap();
        assert_eq!(
            files_read(ours, "SELECT * FROM raw.telemetry WHERE host = 'c'").await,
            2
        );
        assert!(
            rows(ours, "SELECT count(*) FROM raw.telemetry")
                .await
                .contains("| 9 ")
        );
    }

    /// `us` microseconds after the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn chrono_free_rfc3339(us: i64) -> String {
        let secs = us.div_euclid(1_000_000);
        let frac = us.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let date = datafusion::arrow::temporal_conversions::date32_to_datetime(days as i32)
            .unwrap()
            .date();
        format!(
            "{date}T{:02}:{:02}:{:02}.{frac:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}
