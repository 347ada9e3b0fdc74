//! Tables whose rows are computed when a query scans them — the ingest ledger, the model
//! registry, the settings a caller may read, the scheduler's `system.jobs`: one batch, built at
//! scan time from state that lives elsewhere, so the table can never disagree with it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// The rows of a computed table.
#[async_trait]
pub trait ComputedRows: std::fmt::Debug + Send + Sync + 'static {
    /// The table's schema; every batch of [`Self::rows`] has it.
    fn schema(&self) -> SchemaRef;

    /// The table's rows now, as the scanning `session` sees them.
    async fn rows(&self, session: &dyn Session) -> Result<RecordBatch>;
}

/// A [`ComputedRows`] as a DataFusion table (a view: nothing is stored).
#[derive(Debug)]
pub struct ComputedTable<T>(pub T);

#[async_trait]
impl<T: ComputedRows> TableProvider for ComputedTable<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.0.rows(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.0.schema(),
            projection.cloned(),
        )?)
    }
}
