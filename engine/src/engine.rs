use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::prelude::{SessionConfig, SessionContext};
use schemas::Storage;

use crate::ledger::IngestLedger;
use crate::live_table::LiveDeltaTable;
use crate::{EngineConfig, Error, Result};

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
        deltalake::aws::register_handlers(None);
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, "raw")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_batch_size(cfg.batch_size);
        if cfg.target_partitions > 0 {
            config = config.with_target_partitions(cfg.target_partitions);
        }
        let ctx = SessionContext::new_with_config(config);
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
        for def in builtin.clone() {
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
            system.register_table("ingest_ledger".to_string(), Arc::new(ledger))?;
        }
        Ok(Self { ctx, storage })
    }

    pub fn session(&self) -> &SessionContext {
        &self.ctx
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

    /// A session that sees only what `grants` allow (see [`crate::scoped_session`]).
    pub async fn scoped(
        &self,
        grants: &crate::Grants,
    ) -> datafusion::error::Result<SessionContext> {
        crate::scoped_session(&self.ctx, CATALOG, grants).await
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
