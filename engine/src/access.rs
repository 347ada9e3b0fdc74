//! Per-caller views of the catalog: a caller's queries run in a session whose catalog holds only
//! the tables its roles may read, and a table with a row filter is replaced by a view that
//! applies it. The filter is part of the table itself, so no query shape — joins, subqueries,
//! `UNION`, CTEs, prepared statements — reaches the unfiltered rows, and `information_schema`
//! and the metadata calls list only what the caller may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::Transformed;
use datafusion::config::ConfigOptions;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::computed::{ComputedRows, ComputedTable};

/// What one caller may read: `(schema, table)` → the row filter (a SQL predicate over the
/// table's columns, values already substituted), or `None` for every row; the table patterns
/// it may write; and whether it may see every engine setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub tables: BTreeMap<(String, String), Option<String>>,
    /// `schema.table`, `schema.*` or `*`.
    pub write: Vec<String>,
    /// Whether `SHOW ALL` / `information_schema.df_settings` list every setting (admins);
    /// others see only [`CLIENT_SETTINGS`].
    pub settings: bool,
}

/// The settings every caller sees: what a client needs to read results right.
pub const CLIENT_SETTINGS: [&str; 5] = [
    "datafusion.catalog.default_catalog",
    "datafusion.catalog.default_schema",
    "datafusion.execution.time_zone",
    "datafusion.sql_parser.dialect",
    "datafusion.sql_parser.enable_ident_normalization",
];

/// Whether a grant pattern (`schema.table`, `schema.*` or `*`) covers `schema.table`.
pub fn pattern_matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        _ if pattern == "*" => true,
        Some((s, "*")) => s == schema,
        Some((s, t)) => s == schema && t == table,
        None => false,
    }
}

impl Grants {
    /// Whether these grants may write `schema.table` (existing or not).
    pub fn may_write(&self, schema: &str, table: &str) -> bool {
        self.write.iter().any(|p| pattern_matches(p, schema, table))
    }
}

/// `table` restricted to the rows where `predicate` (SQL) holds, as a view.
fn filtered(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
    predicate: &str,
) -> Result<Arc<dyn TableProvider>> {
    let schema = DFSchema::try_from(table.schema().as_ref().clone())?;
    let expr = ctx.parse_sql_expr(predicate, &schema).map_err(|e| {
        DataFusionError::Plan(format!(
            "row filter of {name} ({predicate}) is invalid: {e}"
        ))
    })?;
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
        .filter(expr)?
        .build()?;
    Ok(Arc::new(ViewTable::new(
        plan,
        Some(format!("row filter: {predicate}")),
    )))
}

/// A session like `ctx` (same configuration), running in `runtime` (memory pool, disk
/// manager, object stores), whose catalog `catalog` holds only the tables `grants` lists,
/// filtered where they say so.
pub async fn scoped_session(
    ctx: &SessionContext,
    runtime: Arc<RuntimeEnv>,
    catalog: &str,
    grants: &Grants,
) -> Result<SessionContext> {
    let config = ctx
        .copied_config()
        .with_extension(Arc::new(crate::engine::SessionScope {
            all_settings: grants.settings,
            ..Default::default()
        }));
    scoped_session_in(ctx, config, runtime, catalog, grants).await
}

/// [`scoped_session`] with `config` (the engine's, with its [`crate::engine::SessionScope`]).
pub(crate) async fn scoped_session_in(
    ctx: &SessionContext,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    catalog: &str,
    grants: &Grants,
) -> Result<SessionContext> {
    let scoped = crate::engine::new_session(config, runtime);
    crate::functions::register(&scoped);
    for (name, function) in ctx.state().table_functions() {
        scoped.register_udtf(name, function.function().clone());
    }
    let source = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {catalog}")))?;
    let out = Arc::new(MemoryCatalogProvider::new());
    for schema_name in source.schema_names() {
        let Some(schema) = source.schema(&schema_name) else {
            continue;
        };
        let visible = Arc::new(MemorySchemaProvider::new());
        for table_name in schema.table_names() {
            let key = (schema_name.clone(), table_name.clone());
            let Some(filter) = grants.tables.get(&key) else {
                continue;
            };
            let Some(table) = schema.table(&table_name).await? else {
                continue;
            };
            let table = match filter {
                None => table,
                Some(predicate) => filtered(
                    &scoped,
                    &format!("{schema_name}.{table_name}"),
                    table,
                    predicate,
                )?,
            };
            visible.register_table(table_name, table)?;
        }
        // Schemas stay visible even when empty, so names resolve to "table not found".
        out.register_schema(&schema_name, visible)?;
    }
    scoped.register_catalog(catalog, out);
    Ok(scoped)
}

/// Shows a caller without [`Grants::settings`] only [`CLIENT_SETTINGS`]: every scan of
/// `information_schema.df_settings` (which `SHOW ALL` and `SHOW <name>` read too) reads a table
/// of those settings instead.
#[derive(Debug)]
pub(crate) struct ClientSettings;

impl AnalyzerRule for ClientSettings {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(mut scan)
                if scan.table_name.table() == "df_settings"
                    && scan.table_name.schema() == Some("information_schema") =>
            {
                scan.source = provider_as_source(Arc::new(ComputedTable(SettingsTable)));
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sakura_client_settings"
    }
}

/// `information_schema.df_settings` restricted to [`CLIENT_SETTINGS`].
#[derive(Debug)]
struct SettingsTable;

fn settings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
    ]))
}

#[async_trait::async_trait]
impl ComputedRows for SettingsTable {
    fn schema(&self) -> SchemaRef {
        settings_schema()
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let (mut names, mut values, mut descriptions) = (Vec::new(), Vec::new(), Vec::new());
        for entry in state.config_options().entries() {
            if CLIENT_SETTINGS.contains(&entry.key.as_str()) {
                names.push(entry.key);
                values.push(entry.value);
                descriptions.push(entry.description);
            }
        }
        RecordBatch::try_new(
            settings_schema(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(values)),
                Arc::new(StringArray::from(descriptions)),
            ],
        )
        .map_err(Into::into)
    }
}

/// What a query may be: read-only. Writes are statements of their own (INSERT and CREATE
/// TABLE AS into curated tables), planned with their own checks.
pub fn read_only() -> datafusion::execution::context::SQLOptions {
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionConfig;

    async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<String>> {
        let batches = ctx.sql(sql).await?.collect().await?;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        // The rows of the table, without its header row.
        Ok(text
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect())
    }

    fn source() -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("sakura", "raw")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let raw = Arc::new(MemorySchemaProvider::new());
        let schema = Arc::new(Schema::new(vec![
            Field::new("project", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["p-1", "p-1", "p-2", "p-3"])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        for name in ["events", "secrets"] {
            let t = MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap();
            raw.register_table(name.into(), Arc::new(t)).unwrap();
        }
        catalog.register_schema("raw", raw).unwrap();
        ctx.register_catalog("sakura", catalog);
        ctx
    }

    #[tokio::test]
    async fn a_filtered_caller_sees_only_its_rows_whatever_the_query_shape() {
        let ctx = source();
        let grants = Grants {
            tables: [(
                ("raw".to_string(), "events".to_string()),
                Some("project = 'p-1'".to_string()),
            )]
            .into(),
            ..Default::default()
        };
        let s = scoped_session(&ctx, ctx.runtime_env(), "sakura", &grants)
            .await
            .unwrap();
        let one = |sql: &'static str| {
            let s = s.clone();
            async move { rows(&s, sql).await }
        };
        assert_eq!(
            one("SELECT sum(n) AS n FROM events").await.unwrap(),
            ["| 3 |"]
        );
        for escape in [
            "SELECT sum(n) AS n FROM (SELECT * FROM raw.events) t",
            "WITH e AS (SELECT * FROM sakura.raw.events) SELECT sum(n) AS n FROM e",
            "SELECT sum(n) AS n FROM (SELECT n FROM events UNION ALL SELECT n FROM events WHERE project <> 'p-1') u",
            "SELECT sum(a.n) AS n FROM events a JOIN events b ON a.n = b.n",
            "SELECT sum(n) AS n FROM events WHERE project = 'p-2' OR true",
            "SELECT sum(n) AS n FROM events WHERE n IN (SELECT n FROM events)",
        ] {
            let got = rows(&s, escape).await.unwrap();
            assert!(
                got == ["| 3 |"] || got == ["| 1 |"],
                "{escape} reached other rows: {got:?}"
            );
        }
        // The ungranted table does not exist for this caller, in queries or information_schema.
        let err = one("SELECT * FROM raw.secrets").await.unwrap_err();
        assert!(err.to_string().contains("secrets"), "{err}");
        let listed =
            one("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")
                .await
                .unwrap();
        assert_eq!(listed, ["| events |"]);
        // The source session is untouched.
        assert_eq!(
            rows(&ctx, "SELECT sum(n) AS n FROM events").await.unwrap(),
            ["| 10 |"]
        );
        // A broken filter is an error, not an open table.
        let bad = Grants {
            tables: [(
                ("raw".into(), "events".into()),
                Some("no_such_column = 1".into()),
            )]
            .into(),
            ..Default::default()
        };
        assert!(
            scoped_session(&ctx, ctx.runtime_env(), "sakura", &bad)
                .await
                .is_err()
        );
    }
}
