//! What the protocol layer asks of the engine: plan and run a query in a caller's scoped view
//! (once, or once per bound parameter row), its schema without running it, and writes.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use engine::{Engine, Grants, ShapeError, ShapeLimits, TableInfo};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::update;
use crate::wire_types::{classic_schema, to_classic};
use crate::{Error, Result};

/// A query's result: its schema and a stream of batches.
pub type QueryStream = (SchemaRef, BoxStream<'static, Result<RecordBatch>>);

/// What the serving layer needs from a query engine. The Flight SQL and HTTP services talk only
/// to this, so they can be tested with a fake and pointed at a distributed engine later.
#[async_trait]
/// Every method runs in the view of the catalog `grants` allow (RBAC): other tables do not
/// exist for it, and row filters are part of the tables.
pub trait QueryExecutor: Send + Sync + std::fmt::Debug + 'static {
    /// The schema `sql`'s result will have, without running it.
    async fn schema(&self, grants: &Grants, sql: &str) -> Result<SchemaRef>;
    /// Runs `sql`.
    async fn execute(&self, grants: &Grants, sql: &str) -> Result<QueryStream>;
    /// The result schema of `sql` and the schema of its placeholders (`$1`, `$2`, …).
    async fn prepare(&self, grants: &Grants, sql: &str) -> Result<(SchemaRef, SchemaRef)>;
    /// Runs `sql` once per row of `rows`, each row the values of `$1`, `$2`, … (cast to the
    /// types the planner inferred), the results one after the other. The statement is planned
    /// once; each row runs when the stream reaches it, so the stream's deadline and its
    /// cancellation (dropping it) cover every row.
    async fn execute_each(
        &self,
        grants: &Grants,
        sql: &str,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<QueryStream>;
    /// Runs a statement update (`INSERT INTO curated.…`, `CREATE TABLE curated.… AS …`);
    /// returns the rows written. A query is refused with `InvalidArgument`.
    async fn update(&self, grants: &Grants, sql: &str) -> Result<u64>;
    /// Every table a client with `grants` may list.
    async fn tables(&self, grants: &Grants) -> Result<Vec<TableInfo>>;
    /// `(schema, table)` of every table grants can be given on.
    fn table_names(&self) -> Vec<(String, String)>;
    /// Brings the catalog up to date with tables other processes created (rate-limited).
    async fn discover(&self) {}
    /// Refuses a caller's statement that is too long or too deep to plan safely, before
    /// anything parses it.
    fn check_shape(&self, sql: &str, limits: ShapeLimits) -> Result<(), ShapeError> {
        engine::check_shape(sql, &GenericDialect, limits)
    }
}

/// `sql` planned (read-only) in the view of the catalog `grants` allow.
async fn plan(engine: &Engine, grants: &Grants, sql: &str) -> Result<DataFrame> {
    Ok(engine
        .scoped(grants)
        .await?
        .sql_with_options(sql, engine::read_only())
        .await?)
}

/// Runs a planned query as a [`QueryStream`], in the classic Arrow types clients read and with
/// exactly the schema announced when it was planned (GetFlightInfo, a prepared statement's
/// dataset schema): execution can know more than planning (a folded constant is not null), and
/// clients such as ADBC refuse a stream whose schema differs from the announced one.
async fn stream_of(df: DataFrame) -> Result<QueryStream> {
    let schema = result_schema(&df);
    let stream = df.execute_stream().await?;
    if stream.schema() == schema {
        return Ok((schema, stream.map(|r| r.map_err(Error::from)).boxed()));
    }
    let out = schema.clone();
    Ok((schema, stream.map(move |r| to_classic(r?, &out)).boxed()))
}

/// One row of bound values as the values of `$1`, `$2`, …, each cast to the type the planner
/// inferred for its placeholder.
fn bind_row(
    types: &std::collections::HashMap<String, Option<DataType>>,
    row: Vec<ScalarValue>,
) -> Result<Vec<ScalarValue>> {
    if row.len() != types.len() {
        return Err(Error::InvalidArgument(format!(
            "the statement has {} parameter(s), {} were bound",
            types.len(),
            row.len()
        )));
    }
    row.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let name = format!("${}", i + 1);
            match types.get(&name).cloned().flatten() {
                None | Some(DataType::Null) => Ok(v),
                Some(t) if v.data_type() == t => Ok(v),
                Some(t) => v.cast_to(&t).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "parameter {name} is {}, which cannot be cast to {t}: {e}",
                        v.data_type()
                    ))
                }),
            }
        })
        .collect()
}

/// The schema clients see for a planned query.
fn result_schema(df: &DataFrame) -> SchemaRef {
    classic_schema(&Arc::new(df.schema().as_arrow().clone()))
}

#[async_trait]
impl QueryExecutor for Engine {
    async fn schema(&self, grants: &Grants, sql: &str) -> Result<SchemaRef> {
        if update::is_update(sql)? {
            return Ok(update::result_schema());
        }
        let df = plan(self, grants, sql).await?;
        Ok(result_schema(&df))
    }

    async fn execute(&self, grants: &Grants, sql: &str) -> Result<QueryStream> {
        if let Some(rows) = update::run(self, grants, sql).await? {
            let batch = update::result_batch(rows)?;
            return Ok((batch.schema(), futures::stream::iter([Ok(batch)]).boxed()));
        }
        let df = plan(self, grants, sql).await?;
        stream_of(df).await
    }

    async fn update(&self, grants: &Grants, sql: &str) -> Result<u64> {
        update::run(self, grants, sql).await?.ok_or_else(|| {
            Error::InvalidArgument(
                "a statement update must be INSERT INTO curated.… or CREATE TABLE curated.… AS \
                 SELECT …; run queries as queries"
                    .into(),
            )
        })
    }

    async fn tables(&self, grants: &Grants) -> Result<Vec<TableInfo>> {
        let mut tables = engine::list_tables(&self.scoped(grants).await?).await?;
        for t in &mut tables {
            t.arrow_schema = classic_schema(&t.arrow_schema);
        }
        Ok(tables)
    }

    fn table_names(&self) -> Vec<(String, String)> {
        Engine::table_names(self)
    }

    async fn discover(&self) {
        self.discover_curated_throttled().await;
    }

    async fn prepare(&self, grants: &Grants, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        if update::is_update(sql)? {
            return Ok((update::result_schema(), Arc::new(Schema::empty())));
        }
        let df = plan(self, grants, sql).await?;
        let types = df.logical_plan().get_parameter_types()?;
        Ok((
            result_schema(&df),
            crate::prepared::parameter_schema(&types),
        ))
    }

    async fn execute_each(
        &self,
        grants: &Grants,
        sql: &str,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<QueryStream> {
        if update::is_update(sql)? {
            return Err(update::no_parameters());
        }
        let df = plan(self, grants, sql).await?;
        let types = df.logical_plan().get_parameter_types()?;
        let bind = move |row: Vec<ScalarValue>| -> Result<DataFrame> {
            let values = bind_row(&types, row)?;
            Ok(df.clone().with_param_values(values)?)
        };
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Err(Error::InvalidArgument(
                "no parameter rows are bound; bind them (DoPut) before executing".into(),
            ));
        };
        // The first row is planned now, for the schema; the others when the stream reaches
        // them.
        let (schema, head) = stream_of(bind(first)?).await?;
        let rest = futures::stream::iter(rows)
            .then(move |row| {
                let planned = bind(row);
                async move {
                    // A long list of rows yields between them, so the deadline and a
                    // disconnect can stop it.
                    tokio::task::yield_now().await;
                    Ok::<_, Error>(stream_of(planned?).await?.1)
                }
            })
            .try_flatten();
        Ok((schema, head.chain(rest).boxed()))
    }

    fn check_shape(&self, sql: &str, limits: ShapeLimits) -> Result<(), ShapeError> {
        Engine::check_shape(self, sql, limits)
    }
}
