//! The engine: one DataFusion session over the lake's tables (raw, curated, ml, system), the
//! scoped sessions a caller's grants allow, and the curated tables SQL creates.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
#[cfg(test)]
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use schemas::Storage;

use crate::bounded::BoundedValues;
use crate::computed::ComputedTable;
use crate::curated::{self, CURATED};
use crate::ledger::IngestLedger;
use crate::live_table::LiveDeltaTable;
use crate::{EngineConfig, Error, Result};

/// What a session's queries may do beyond their grants, carried in its config (a
/// [`SessionConfig`] extension, so copies of the config keep it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionScope {
    /// Bytes one expression may produce for one batch ([`crate::bounded`]).
    pub(crate) value_cap: usize,
    /// Whether `information_schema.df_settings` (`SHOW ALL`) lists every setting, or only the
    /// few a client needs ([`crate::access`]).
    pub(crate) all_settings: bool,
}

impl Default for SessionScope {
    fn default() -> Self {
        Self {
            value_cap: crate::bounded::DEFAULT_VALUE_CAP,
            all_settings: true,
        }
    }
}

/// A session with DataFusion's defaults, [`crate::coop::YieldingJoins`], the checks of
/// [`crate::bounded`] and the settings `config`'s [`SessionScope`] shows: every session that
/// runs queries is made here.
pub(crate) fn new_session(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let scope = config
        .get_extension::<SessionScope>()
        .map_or_else(SessionScope::default, |s| *s);
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_analyzer_rule(Arc::new(BoundedValues::new(scope.value_cap)))
        .with_physical_optimizer_rule(Arc::new(crate::coop::YieldingJoins));
    if let Some(planners) = builder.expr_planners() {
        planners.insert(0, Arc::new(crate::bounded::BoundedLiterals));
    }
    if !scope.all_settings {
        builder = builder.with_analyzer_rule(Arc::new(crate::access::ClientSettings));
    }
    let state = builder.build();
    SessionContext::new_with_state(state)
}

/// The catalog every table lives in.
pub const CATALOG: &str = "sakura";

/// The schemas of the catalog: `raw` holds ingested tables; the others are filled by the jobs and
/// ML issues.
const SCHEMAS: [&str; 4] = ["raw", "curated", "ml", "system"];

/// A table as listed by metadata calls.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    pub table_type: String,
    pub arrow_schema: SchemaRef,
}

/// The query engine: one DataFusion session over the Delta tables.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    storage: Storage,
    /// The `curated` schema, where SQL creates tables.
    curated: Arc<MemorySchemaProvider>,
    refresh: Duration,
    /// Memory each query may hold before it spills or fails; `None`: unbounded.
    query_memory: Option<usize>,
    /// Bytes one expression may produce for one batch: a quarter of `query_memory`.
    value_cap: usize,
    /// The SQL dialect of the session (`datafusion.sql_parser.dialect`).
    dialect: datafusion::config::Dialect,
    /// When curated tables were last looked for on the store (other processes create them).
    last_discovery: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The model registry under the storage root (`detect_anomalies`, `system.models`, jobs).
    models: crate::models::ModelRegistry,
    /// Scoped sessions of recent callers' grants, reused while the catalog stays the same.
    sessions: Arc<std::sync::Mutex<SessionCache>>,
}

/// The scoped sessions of the last [`SessionCache::CAPACITY`] distinct grants, most recent
/// first. A scoped session holds the same table providers as the engine's (they refresh
/// themselves from the Delta log), so it stays valid until a table is added or replaced, which
/// empties the cache. Building one registers every DataFusion function anew (about a
/// millisecond); a dashboard's queries come from a few roles.
#[derive(Default)]
struct SessionCache {
    /// Counts catalog changes: a session built across one is not kept.
    generation: u64,
    entries: Vec<(crate::Grants, SessionContext)>,
}

impl SessionCache {
    const CAPACITY: usize = 32;

    /// The cached session of `grants`, or the generation a new one is built in.
    fn get(&mut self, grants: &crate::Grants) -> std::result::Result<SessionContext, u64> {
        let Some(i) = self.entries.iter().position(|(g, _)| g == grants) else {
            return Err(self.generation);
        };
        let entry = self.entries.remove(i);
        let ctx = entry.1.clone();
        self.entries.insert(0, entry);
        Ok(ctx)
    }

    fn put(&mut self, generation: u64, grants: &crate::Grants, ctx: &SessionContext) {
        if generation != self.generation {
            return;
        }
        self.entries.retain(|(g, _)| g != grants);
        self.entries.insert(0, (grants.clone(), ctx.clone()));
        self.entries.truncate(Self::CAPACITY);
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.entries.clear();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.storage)
            .finish()
    }
}

impl Engine {
    /// Builds the session and registers every built-in table under the storage root.
    pub async fn new(storage: Storage, cfg: &EngineConfig) -> Result<Self> {
        cfg.validate()?;
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, "raw")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_batch_size(cfg.batch_size);
        if cfg.target_partitions > 0 {
            config = config.with_target_partitions(cfg.target_partitions);
        }
        cfg.apply_options(config.options_mut())?;
        let dialect = config.options().sql_parser.dialect;
        let ctx = new_session(config, Arc::new(RuntimeEnv::default()));
        crate::functions::register(&ctx);
        let models = crate::models::ModelRegistry::for_storage(&storage)?;
        ctx.register_udtf(
            "detect_anomalies",
            Arc::new(crate::detect::DetectAnomalies {
                registry: models.clone(),
            }),
        );
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let mut schema_providers = Vec::new();
        for name in SCHEMAS {
            let s = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(name, s.clone())?;
            schema_providers.push((name, s));
        }
        ctx.register_catalog(CATALOG, catalog);

        let refresh = Duration::from_millis(cfg.refresh_interval_ms);
        let state = ctx.state();
        let builtin = schemas::builtin_tables()?;
        // The ingest tables, and the Delta tables the scheduler and the ML jobs write.
        let written = [
            schemas::TableDef::job_runs(),
            schemas::TableDef::ml_anomalies(),
        ];
        for def in builtin.iter().cloned().chain(written) {
            let table = Arc::new(LiveDeltaTable::new(def.clone(), storage.clone(), refresh));
            table.refresh(&state).await.map_err(|source| Error::Table {
                table: def.table.to_string(),
                source,
            })?;
            let Some((_, provider)) = schema_providers
                .iter()
                .find(|(n, _)| *n == def.table.schema)
            else {
                continue;
            };
            provider.register_table(def.table.name.clone(), table)?;
        }
        if let Some((_, system)) = schema_providers.iter().find(|(n, _)| *n == "system") {
            let ledger = IngestLedger::new(storage.clone(), builtin);
            system.register_table("ingest_ledger".to_string(), Arc::new(ComputedTable(ledger)))?;
            system.register_table(
                "models".to_string(),
                Arc::new(ComputedTable(crate::models::ModelsTable {
                    registry: models.clone(),
                })),
            )?;
        }
        let curated = schema_providers
            .iter()
            .find(|(n, _)| *n == CURATED)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::Config {
                key: "engine".into(),
                message: "no curated schema".into(),
            })?;
        for def in curated::discover(&storage, &|_| false).await? {
            let name = def.table.to_string();
            let table = curated::register(curated.as_ref(), def, &storage, refresh)?;
            table.refresh(&state).await.map_err(|source| Error::Table {
                table: name,
                source,
            })?;
        }
        Ok(Self {
            ctx,
            storage,
            curated,
            refresh,
            query_memory: None,
            value_cap: crate::bounded::DEFAULT_VALUE_CAP,
            dialect,
            last_discovery: Arc::default(),
            models,
            sessions: Arc::default(),
        })
    }

    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks a caller's statement's size and depth with the session's own tokenizer, before
    /// anything parses it (see [`crate::check_shape`]).
    pub fn check_shape(
        &self,
        sql: &str,
        limits: crate::ShapeLimits,
    ) -> std::result::Result<(), crate::ShapeError> {
        match datafusion::sql::sqlparser::dialect::dialect_from_str(self.dialect) {
            Some(d) => crate::check_shape(sql, d.as_ref(), limits),
            None => crate::check_shape(
                sql,
                &datafusion::sql::sqlparser::dialect::GenericDialect,
                limits,
            ),
        }
    }

    /// Plans a SQL statement.
    pub async fn sql(&self, sql: &str) -> datafusion::error::Result<DataFrame> {
        self.ctx.sql(sql).await
    }

    /// Every table of every catalog the session knows, `information_schema` included.
    pub async fn tables(&self) -> datafusion::error::Result<Vec<TableInfo>> {
        list_tables(&self.ctx).await
    }

    /// `(schema, table)` of every table of the `sakura` catalog — what grants are given on.
    pub fn table_names(&self) -> Vec<(String, String)> {
        let Some(catalog) = self.ctx.catalog(CATALOG) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for schema_name in catalog.schema_names() {
            if let Some(schema) = catalog.schema(&schema_name) {
                for t in schema.table_names() {
                    out.push((schema_name.clone(), t));
                }
            }
        }
        out.sort();
        out
    }

    /// Creates `curated.<name>` with the columns of `schema` and adds it to the catalog.
    /// `Ok(false)` when it already exists (then nothing changes).
    pub async fn create_curated(
        &self,
        name: &str,
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<bool> {
        if !curated::valid_name(name) {
            return Err(Error::Config {
                key: "table name".into(),
                message: format!(
                    "{name:?}: curated table names are lower-case letters, digits and _"
                ),
            });
        }
        if self.curated.table_exist(name) {
            return Ok(false);
        }
        let created = curated::create(&self.storage, name, schema).await?;
        let def = schemas::TableDef::curated(name, Arc::new(schema.clone()));
        let table = curated::register(self.curated.as_ref(), def, &self.storage, self.refresh)?;
        self.catalog_changed();
        table
            .refresh(&self.ctx.state())
            .await
            .map_err(|source| Error::Table {
                table: format!("{CURATED}.{name}"),
                source,
            })?;
        Ok(created)
    }

    /// Adds the curated tables another process (a job, another server) created since this
    /// engine looked. Returns how many were added.
    pub async fn discover_curated(&self) -> Result<usize> {
        let curated = self.curated.clone();
        let known = move |name: &str| curated.table_exist(name);
        let mut added = 0;
        for def in curated::discover(&self.storage, &known).await? {
            if self.curated.table_exist(&def.table.name) {
                continue;
            }
            curated::register(self.curated.as_ref(), def, &self.storage, self.refresh)?;
            added += 1;
        }
        if added > 0 {
            self.catalog_changed();
        }
        Ok(added)
    }

    /// [`Engine::discover_curated`], at most once per refresh interval: a table another process
    /// creates becomes visible as soon as new commits to known tables do.
    pub async fn discover_curated_throttled(&self) {
        let due = {
            let Ok(mut last) = self.last_discovery.lock() else {
                return;
            };
            let due = last.is_none_or(|t| t.elapsed() >= self.refresh);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due && let Err(e) = self.discover_curated().await {
            tracing::warn!(error = %e, "cannot look for new curated tables");
        }
    }

    /// Makes the next query of `curated.<name>` re-read its Delta log.
    pub async fn invalidate_curated(&self, name: &str) {
        self.invalidate(CURATED, name).await;
    }

    /// Makes the next query of `<schema>.<name>` re-read its Delta log (no-op for tables that
    /// are not Delta tables).
    pub async fn invalidate(&self, schema: &str, name: &str) {
        if let Some(s) = self.ctx.catalog(CATALOG).and_then(|c| c.schema(schema))
            && let Ok(Some(t)) = s.table(name).await
            && let Some(live) = t.downcast_ref::<LiveDeltaTable>()
        {
            live.invalidate().await;
        }
    }

    /// The model registry under the storage root.
    pub fn models(&self) -> &crate::models::ModelRegistry {
        &self.models
    }

    /// The storage root the tables live under.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Adds `system.<name>`: tables other crates compute (e.g. `system.jobs`). A name already
    /// taken is an error.
    pub fn register_system_table(
        &self,
        name: &str,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<()> {
        let schema = self
            .ctx
            .catalog(CATALOG)
            .and_then(|c| c.schema("system"))
            .ok_or_else(|| Error::Config {
                key: "engine".into(),
                message: "no system schema".into(),
            })?;
        schema.register_table(name.to_string(), table)?;
        self.catalog_changed();
        Ok(())
    }

    /// Drops the cached scoped sessions: a table was added or replaced.
    fn catalog_changed(&self) {
        if let Ok(mut cache) = self.sessions.lock() {
            cache.clear();
        }
    }

    /// Gives every query run through [`Engine::scoped`] its own memory pool of `bytes`:
    /// sorts, aggregations and other spilling operators spill to disk (the OS temp directory)
    /// when it is full; an operator that cannot spill fails the query with
    /// `ResourcesExhausted`. Other queries are not affected.
    pub fn with_query_memory_limit(mut self, bytes: usize) -> Self {
        self.query_memory = Some(bytes);
        self.value_cap = (bytes / 4).max(1);
        self
    }

    /// A session that sees only what `grants` allow (see [`crate::scoped_session`]), with its
    /// own memory pool when a per-query limit is set. Without a limit, sessions are shared by
    /// queries with the same grants until the catalog changes.
    pub async fn scoped(
        &self,
        grants: &crate::Grants,
    ) -> datafusion::error::Result<SessionContext> {
        let base = self.ctx.runtime_env();
        let runtime = match self.query_memory {
            None => {
                let generation = match self.sessions.lock() {
                    Ok(mut cache) => match cache.get(grants) {
                        Ok(ctx) => return Ok(ctx),
                        Err(generation) => Some(generation),
                    },
                    Err(_) => None,
                };
                let ctx = crate::access::scoped_session_in(
                    &self.ctx,
                    self.scope_config(grants),
                    base,
                    CATALOG,
                    grants,
                )
                .await?;
                if let (Some(generation), Ok(mut cache)) = (generation, self.sessions.lock()) {
                    cache.put(generation, grants, &ctx);
                }
                return Ok(ctx);
            }
            Some(bytes) => {
                let pool = TrackConsumersPool::new(
                    FairSpillPool::new(bytes),
                    NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
                );
                RuntimeEnvBuilder::from_runtime_env(&base)
                    .with_memory_pool(Arc::new(pool))
                    .build_arc()?
            }
        };
        crate::access::scoped_session_in(
            &self.ctx,
            self.scope_config(grants),
            runtime,
            CATALOG,
            grants,
        )
        .await
    }

    /// The engine's session config with what `grants` may do beyond reading tables.
    fn scope_config(&self, grants: &crate::Grants) -> SessionConfig {
        self.ctx
            .copied_config()
            .with_extension(Arc::new(SessionScope {
                value_cap: self.value_cap,
                all_settings: grants.settings,
            }))
    }
}

/// Every table of every catalog `ctx` knows, `information_schema` included.
pub async fn list_tables(ctx: &SessionContext) -> datafusion::error::Result<Vec<TableInfo>> {
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(table) = schema.table(&name).await? else {
                    continue;
                };
                let table_type = match table.table_type() {
                    TableType::Base => "TABLE",
                    TableType::View => "VIEW",
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                out.push(TableInfo {
                    catalog: catalog_name.clone(),
                    schema: schema_name.clone(),
                    name,
                    table_type: table_type.to_string(),
                    arrow_schema: table.schema(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grants;

    /// Rows of `sql` run in a scoped session (every table granted).
    async fn run(engine: &Engine, sql: &str) -> datafusion::error::Result<usize> {
        let ctx = engine.scoped(&Grants::default()).await?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_over_its_memory_limit_spills_or_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let engine = Engine::new(storage, &EngineConfig::default())
            .await
            .unwrap()
            .with_query_memory_limit(48 << 20);
        // A 6M-row sort needs ~100 MB: it spills to disk and still answers.
        let sorted = "SELECT value FROM generate_series(1, 6000000) ORDER BY value DESC";
        assert_eq!(run(&engine, sorted).await.unwrap(), 6_000_000);
        let ctx = engine.scoped(&Grants::default()).await.unwrap();
        let analyzed = ctx
            .sql(&format!("EXPLAIN ANALYZE {sorted}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&analyzed)
            .unwrap()
            .to_string();
        let spills: Vec<u64> = text
            .split("spill_count=")
            .skip(1)
            .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect();
        assert!(
            spills.iter().any(|&n| n > 0),
            "the sort did not spill:\n{text}"
        );
        // A hash join cannot spill its 6M-row build side: the query fails with
        // ResourcesExhausted…
        let join = "SELECT count(*) FROM generate_series(1, 6000000) a \
                    JOIN generate_series(1, 6000000) b ON a.value = b.value";
        let err = run(&engine, join).await.unwrap_err();
        assert!(
            matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{err}"
        );
        // … while a query running beside it has its own pool and succeeds.
        let (join, small) = tokio::join!(
            run(&engine, join),
            run(&engine, "SELECT count(*) FROM generate_series(1, 100000)")
        );
        assert!(join.is_err());
        assert_eq!(small.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scoped_sessions_are_shared_by_equal_grants_until_the_catalog_changes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(
            Storage::local(dir.path()).unwrap(),
            &EngineConfig::default(),
        )
        .await
        .unwrap();
        let rows = |n: i64| {
            let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([(
                "v",
                Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(0..n))
                    as datafusion::arrow::array::ArrayRef,
            )])
            .unwrap();
            Arc::new(
                datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
                    .unwrap(),
            )
        };
        engine.register_system_table("probe", rows(1)).unwrap();
        let mut grants = Grants::default();
        grants
            .tables
            .insert(("system".into(), "probe".into()), None);
        let count = |ctx: SessionContext| async move {
            let b = ctx
                .sql("SELECT count(*) FROM system.probe")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::array::AsArray::as_primitive::<
                datafusion::arrow::datatypes::Int64Type,
            >(b[0].column(0))
            .value(0)
        };
        let first = engine.scoped(&grants).await.unwrap();
        assert_eq!(count(first.clone()).await, 1);
        // Equal grants get the same session; other grants their own.
        let again = engine.scoped(&grants.clone()).await.unwrap();
        assert_eq!(first.session_id(), again.session_id());
        let mut filtered = grants.clone();
        filtered
            .tables
            .insert(("system".into(), "probe".into()), Some("v > 0".into()));
        let other = engine.scoped(&filtered).await.unwrap();
        assert_ne!(first.session_id(), other.session_id());
        assert_eq!(count(other).await, 0);
        // A catalog change empties the cache: the next session is built anew.
        engine.register_system_table("probe_2", rows(5)).unwrap();
        assert!(engine.register_system_table("probe", rows(5)).is_err());
        let after = engine.scoped(&grants).await.unwrap();
        assert_ne!(first.session_id(), after.session_id());
        assert_eq!(count(after).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn curated_tables_are_created_appended_and_found_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let engine = Engine::new(storage.clone(), &EngineConfig::default())
            .await
            .unwrap();
        let all = |engine: &Engine| {
            let mut g = Grants::default();
            for (s, t) in engine.table_names() {
                g.tables.insert((s, t), None);
            }
            g
        };
        let ctx = engine.scoped(&all(&engine)).await.unwrap();
        let df = ctx
            .sql("SELECT 'a' AS k, CAST(1 AS BIGINT) AS v")
            .await
            .unwrap();
        let schema = df.schema().as_arrow().clone();
        assert!(engine.create_curated("kv", &schema).await.unwrap());
        assert!(
            !engine.create_curated("kv", &schema).await.unwrap(),
            "exists"
        );
        assert!(engine.create_curated("Bad-Name", &schema).await.is_err());
        let ctx = engine.scoped(&all(&engine)).await.unwrap();
        let opts = datafusion::execution::context::SQLOptions::new().with_allow_dml(true);
        for sql in [
            "INSERT INTO curated.kv VALUES ('a', 1), ('b', 2)",
            "INSERT INTO curated.kv SELECT 'c', 3",
        ] {
            ctx.sql_with_options(sql, opts)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
        }
        engine.invalidate_curated("kv").await;
        let rows = ctx.sql("SELECT * FROM curated.kv").await.unwrap();
        assert_eq!(rows.count().await.unwrap(), 3);
        // Ingest's tables are not writable through SQL.
        let err = ctx
            .sql_with_options(
                "INSERT INTO raw.telemetry SELECT * FROM raw.telemetry",
                opts,
            )
            .await
            .unwrap()
            .collect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("written by ingest only"), "{err}");

        let restarted = Engine::new(storage, &EngineConfig::default())
            .await
            .unwrap();
        assert!(
            restarted
                .table_names()
                .contains(&("curated".to_string(), "kv".to_string()))
        );
        let ctx = restarted.scoped(&all(&restarted)).await.unwrap();
        let batches = ctx
            .sql("SELECT sum(v) AS s FROM curated.kv")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 6 "), "{text}");
    }
}
