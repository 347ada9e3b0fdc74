use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::execution::context::SQLOptions;
use datafusion::scalar::ScalarValue;
use engine::{Engine, TableInfo};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{Error, Result};

/// A query's result: its schema and a stream of batches.
pub type QueryStream = (SchemaRef, BoxStream<'static, Result<RecordBatch>>);

/// What the serving layer needs from a query engine. The Flight SQL and HTTP services talk only
/// to this, so they can be tested with a fake and pointed at a distributed engine later.
#[async_trait]
pub trait QueryExecutor: Send + Sync + std::fmt::Debug + 'static {
    /// The schema `sql`'s result will have, without running it.
    async fn schema(&self, sql: &str) -> Result<SchemaRef>;
    /// Runs `sql`.
    async fn execute(&self, sql: &str) -> Result<QueryStream>;
    /// The result schema of `sql` and the schema of its placeholders (`$1`, `$2`, …).
    async fn prepare(&self, sql: &str) -> Result<(SchemaRef, SchemaRef)>;
    /// Runs `sql` with `params` as the values of `$1`, `$2`, …; each value is cast to the type
    /// the planner inferred for its placeholder.
    async fn execute_with(&self, sql: &str, params: Vec<ScalarValue>) -> Result<QueryStream>;
    /// Every table a client may list.
    async fn tables(&self) -> Result<Vec<TableInfo>>;
}

/// Statements are read-only until the serving issue adds roles that may write.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

#[async_trait]
impl QueryExecutor for Engine {
    async fn schema(&self, sql: &str) -> Result<SchemaRef> {
        let df = self.session().sql_with_options(sql, read_only()).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    async fn execute(&self, sql: &str) -> Result<QueryStream> {
        let df = self.session().sql_with_options(sql, read_only()).await?;
        let stream = df.execute_stream().await?;
        let schema = stream.schema();
        Ok((schema, stream.map(|r| r.map_err(Error::from)).boxed()))
    }

    async fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(Engine::tables(self).await?)
    }

    async fn prepare(&self, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        let df = self.session().sql_with_options(sql, read_only()).await?;
        let types = df.logical_plan().get_parameter_types()?;
        Ok((
            Arc::new(df.schema().as_arrow().clone()),
            crate::prepared::parameter_schema(&types),
        ))
    }

    async fn execute_with(&self, sql: &str, params: Vec<ScalarValue>) -> Result<QueryStream> {
        let df = self.session().sql_with_options(sql, read_only()).await?;
        let types = df.logical_plan().get_parameter_types()?;
        if params.len() != types.len() {
            return Err(Error::InvalidArgument(format!(
                "the statement has {} parameter(s), {} were bound",
                types.len(),
                params.len()
            )));
        }
        let params = params
            .into_iter()
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
            .collect::<Result<Vec<_>>>()?;
        let stream = df.with_param_values(params)?.execute_stream().await?;
        let schema = stream.schema();
        Ok((schema, stream.map(|r| r.map_err(Error::from)).boxed()))
    }
}
