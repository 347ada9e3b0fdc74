//! Joins that return control to the runtime between output batches.
//!
//! A query is stopped (its time limit, a client's cancellation) by dropping its result stream,
//! which only happens while the task polling it is not inside a poll. DataFusion makes scans
//! yield (`CooperativeExec`, tokio's budget), but a join can turn one input batch into a great
//! many output batches from memory — a cross join of `a, b, c` whose filter drops every row
//! loops inside one poll for as long as the query runs — and then nothing upstream yields.
//! Wrapping every operator with more than one input (the joins) in `CooperativeExec` spends a
//! unit of the task's budget per output batch, so such a loop returns `Pending` within 128
//! batches and the deadline gets its turn.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;

/// The physical optimizer rule that wraps joins in `CooperativeExec` (runs last).
#[derive(Debug, Default)]
pub(crate) struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().len() > 1 {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::prelude::SessionConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cross_join_that_keeps_no_row_stops_at_its_deadline() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Float64,
            false,
        )]));
        let batches: Vec<RecordBatch> = (0..2)
            .map(|b| {
                let values: Vec<f64> = (0..3500).map(|i| f64::from(b * 3500 + i)).collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))])
                    .unwrap()
            })
            .collect();
        let ctx = crate::engine::new_session(
            SessionConfig::new().with_target_partitions(2),
            Arc::new(RuntimeEnv::default()),
        );
        let table =
            MemTable::try_new(schema, vec![batches[..1].to_vec(), batches[1..].to_vec()]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        // 7,000³ combinations, none kept: hours of work in one poll without the rule.
        let df = ctx
            .sql("SELECT count(*) FROM t a, t b, t c WHERE a.value + b.value + c.value > 1e9")
            .await
            .unwrap();
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(2), df.collect()).await;
        assert!(outcome.is_err(), "the query finished: {outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the deadline took {:?} to stop it",
            started.elapsed()
        );
    }
}
