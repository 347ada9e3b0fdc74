//! A Delta table that follows new commits: before a scan it refreshes its snapshot when the view
//! is older than the refresh interval, then plans the scan on the fresh snapshot.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::{DeltaTable, DeltaTableError};
use schemas::{Storage, TableDef, TableRef};
use tokio::sync::Mutex;

use crate::file_index::FileIndex;

struct State {
    table: Option<DeltaTable>,
    current: Option<Current>,
    refreshed: Option<Instant>,
}

/// How the current snapshot is read: the Delta provider, and for plain tables the file index
/// scans are planned from (ADR 0013).
#[derive(Clone)]
struct Current {
    provider: Arc<dyn TableProvider>,
    index: Option<Arc<FileIndex>>,
}

impl Current {
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match &self.index {
            Some(index) => index.scan(state, projection, filters, limit).await,
            None => self.provider.scan(state, projection, filters, limit).await,
        }
    }
}

/// A Delta table as a DataFusion table that sees new commits without a restart.
pub struct LiveDeltaTable {
    def: TableDef,
    storage: Storage,
    refresh: Duration,
    state: Mutex<State>,
    /// The schema of the last snapshot (the declared schema until the table exists).
    schema: RwLock<SchemaRef>,
}

impl std::fmt::Debug for LiveDeltaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDeltaTable")
            .field("table", &self.def.table.to_string())
            .field("refresh", &self.refresh)
            .finish()
    }
}

fn delta_err(table: &TableDef, e: DeltaTableError) -> DataFusionError {
    DataFusionError::External(format!("delta table {}: {e}", table.table).into())
}

/// The schema the Delta scan produces for a table stored with `schema`: top-level strings and
/// binaries are read as view types (DataFusion's default). Used until the table exists, so a
/// query planned before the first commit matches the scan planned after it.
fn read_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(ty)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `table` loaded at its newest version; `None` while nothing has been written to it yet.
pub(crate) async fn open(storage: &Storage, table: &TableRef) -> Result<Option<DeltaTable>> {
    lake::open(storage, table)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

impl LiveDeltaTable {
    pub fn new(def: TableDef, storage: Storage, refresh: Duration) -> Self {
        Self {
            schema: RwLock::new(read_schema(&def.schema)),
            def,
            storage,
            refresh,
            state: Mutex::new(State {
                table: None,
                current: None,
                refreshed: None,
            }),
        }
    }

    /// How to read the current snapshot (refreshed if stale); `None` while the table does not
    /// exist yet.
    async fn current(&self, session: &dyn Session) -> Result<Option<Current>> {
        let mut st = self.state.lock().await;
        let stale = st.refreshed.is_none_or(|t| t.elapsed() >= self.refresh);
        if stale {
            match st.table.as_mut() {
                Some(table) => table
                    .update_incremental(None)
                    .await
                    .map_err(|e| delta_err(&self.def, e))?,
                None => {
                    st.table = open(&self.storage, &self.def.table).await?;
                    if st.table.is_none() {
                        st.refreshed = Some(Instant::now());
                        return Ok(None);
                    }
                }
            }
            if let Some(table) = st.table.as_ref() {
                table
                    .update_datafusion_session(session)
                    .map_err(|e| delta_err(&self.def, e))?;
                let provider = table.table_provider().await.map_err(|e| {
                    DataFusionError::Context(format!("table {}", self.def.table), Box::new(e))
                })?;
                if let Ok(mut s) = self.schema.write() {
                    *s = provider.schema();
                }
                let version = table.version();
                let index = match st.current.as_ref().and_then(|c| c.index.clone()) {
                    Some(index) if Some(index.version()) == version => Some(index),
                    _ => match FileIndex::try_new(table, &provider.schema()) {
                        Ok(index) => index.map(Arc::new),
                        Err(e) => {
                            tracing::warn!(
                                table = %self.def.table,
                                error = %e,
                                "cannot index the table's files; its scans replay the Delta log"
                            );
                            None
                        }
                    },
                };
                st.current = Some(Current { provider, index });
            }
            st.refreshed = Some(Instant::now());
        }
        Ok(st.current.clone())
    }

    /// Makes the next scan re-read the Delta log (after a write through this server).
    pub async fn invalidate(&self) {
        self.state.lock().await.refreshed = None;
    }

    /// Refreshes now, so `schema()` reflects the stored table; used when the catalog is built.
    pub async fn refresh(&self, session: &dyn Session) -> Result<()> {
        self.current(session).await.map(|_| ())
    }
}

#[async_trait]
impl TableProvider for LiveDeltaTable {
    fn schema(&self) -> SchemaRef {
        self.schema
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| read_schema(&self.def.schema))
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: the Delta scan uses them to skip partitions and files, and DataFusion still
        // applies them to every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self.current(state).await? {
            Some(c) => c.scan(state, projection, filters, limit).await,
            None => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema().project(p)?),
                    None => self.schema(),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
        }
    }

    /// Appends through the Delta provider's sink (one commit per statement), on a fresh
    /// snapshot. Only curated tables are written this way; ingest owns the others.
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !matches!(self.def.kind, schemas::TableKind::Curated) {
            return Err(DataFusionError::Plan(format!(
                "{} is written by ingest only; SQL writes go to curated tables",
                self.def.table
            )));
        }
        self.invalidate().await;
        match self.current(state).await? {
            Some(c) => c.provider.insert_into(state, input, insert_op).await,
            None => Err(DataFusionError::Plan(format!(
                "{} has no Delta table (yet)",
                self.def.table
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;

    use crate::{Engine, EngineConfig};
    use datafusion::arrow::datatypes::DataType;

    fn telemetry_batch(def: &schemas::TableDef, n: usize) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_764_374_400_000_000; n])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["h"; n])),
            Arc::new(StringArray::from(vec!["s"; n])),
            Arc::new(StringArray::from(vec![Some("r"); n])),
            Arc::new(StringArray::from(vec!["cpu_pct"; n])),
            Arc::new(Float64Array::from(vec![1.0; n])),
            datafusion::arrow::array::new_null_array(def.schema.field(6).data_type(), n),
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(Date32Array::from(vec![20421; n])),
        ];
        RecordBatch::try_new(def.schema.clone(), cols).unwrap()
    }

    async fn count(engine: &Engine) -> i64 {
        let b = engine
            .sql("SELECT count(*) FROM raw.telemetry")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        b[0].column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }

    async fn telemetry_schema(engine: &Engine) -> Vec<(String, DataType)> {
        let info = engine.tables().await.unwrap();
        let t = info
            .iter()
            .find(|t| t.schema == "raw" && t.name == "telemetry")
            .unwrap();
        t.arrow_schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sees_new_commits_without_a_restart_and_keeps_the_declared_schema() {
        let dir = tempfile::tempdir().unwrap();
        let storage = schemas::Storage::local(dir.path()).unwrap();
        let cfg = EngineConfig {
            refresh_interval_ms: 0,
            ..EngineConfig::default()
        };

        // Before the table exists it is empty, with the declared schema.
        let engine = Engine::new(storage.clone(), &cfg).await.unwrap();
        assert_eq!(count(&engine).await, 0);
        let before = telemetry_schema(&engine).await;

        let def = schemas::TableDef::for_events(schemas::event_schema("telemetry").unwrap());
        let url = storage.table_url(&def.table).unwrap();
        std::fs::create_dir_all(url.to_file_path().unwrap()).unwrap();
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap();
        let st: StructType = def.schema.as_ref().try_into_kernel().unwrap();
        let table = table
            .create()
            .with_columns(st.fields().cloned())
            .with_partition_columns(["date"])
            .await
            .unwrap();
        let table = table.write(vec![telemetry_batch(&def, 10)]).await.unwrap();
        // The same engine, created before the table existed, sees the commit.
        assert_eq!(count(&engine).await, 10);
        table.write(vec![telemetry_batch(&def, 5)]).await.unwrap();
        assert_eq!(count(&engine).await, 15);

        // Whole rows read back, in the schema that was planned before the table existed.
        let rows = engine
            .sql("SELECT * FROM raw.telemetry")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 15);
        let fresh = Engine::new(storage, &cfg).await.unwrap();
        assert_eq!(telemetry_schema(&fresh).await, before);
        assert_eq!(count(&fresh).await, 15);
    }
}
