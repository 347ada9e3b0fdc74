use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::context::SQLOptions;
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
}
