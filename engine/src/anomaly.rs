//! `anomaly_score(value [, 'detector']) OVER (PARTITION BY … ORDER BY ts)`: a window function
//! that runs one of the `ml` crate's causal detectors over each partition in window order, so
//! each row's score uses only the rows before it. Scores are in [0, 1]; ≥ 0.9999 is the
//! statistical detectors' configured anomaly threshold. Detectors: `windowed_gaussian`
//! (default: the fastest), `robust_zscore`, `ewma`, and `forecaster` — the Candle forecaster
//! trained online on the partition (NAB's probationary period for its length), whose scores are
//! on NAB's log scale with 0.5 as the threshold.

use ml::Detector as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::prelude::SessionContext;

/// The detectors `anomaly_score` accepts.
pub const DETECTORS: [&str; 4] = ["windowed_gaussian", "robust_zscore", "ewma", "forecaster"];

#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyScore {
    signature: Signature,
}

impl AnomalyScore {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl WindowUDFImpl for AnomalyScore {
    fn name(&self) -> &str {
        "anomaly_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(Evaluator))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

#[derive(Debug)]
struct Evaluator;

impl PartitionEvaluator for Evaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let input = values
            .first()
            .ok_or_else(|| DataFusionError::Plan("anomaly_score needs a value".into()))?;
        let input = cast(input, &DataType::Float64)?;
        let input = input
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| DataFusionError::Internal("anomaly_score: cast to float64".into()))?;
        let detector = match values.get(1) {
            None => "windowed_gaussian".to_string(),
            Some(names) => {
                let names = cast(names, &DataType::Utf8)?;
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        DataFusionError::Internal("anomaly_score: detector name".into())
                    })?;
                if names.is_empty() || names.is_null(0) {
                    "windowed_gaussian".to_string()
                } else {
                    names.value(0).to_string()
                }
            }
        };
        // Nulls score null and are not learned.
        let present: Vec<f64> = (0..num_rows)
            .filter(|&i| input.is_valid(i))
            .map(|i| input.value(i))
            .collect();
        let scores = match detector.as_str() {
            "windowed_gaussian" => ml::WindowedGaussian::default().score_series(&present),
            "robust_zscore" => ml::RobustZScore::default().score_series(&present),
            "ewma" => ml::Ewma::default().score_series(&present),
            "forecaster" => ml::OnlineForecaster::score_whole(&present)
                .map_err(|e| DataFusionError::Execution(format!("anomaly_score: {e}")))?,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "anomaly_score: no detector {other:?}; detectors: {}",
                    DETECTORS.join(", ")
                )));
            }
        };
        let mut it = scores.into_iter();
        let out: Float64Array = (0..num_rows)
            .map(|i| if input.is_valid(i) { it.next() } else { None })
            .collect();
        Ok(Arc::new(out))
    }
}

/// Registers the anomaly functions with `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udwf(WindowUDF::from(AnomalyScore::new()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scores_each_partition_in_time_order_and_flags_the_spike() {
        let ctx = SessionContext::new();
        register(&ctx);
        // Two hosts, 300 samples each; host b spikes at t = 250.
        let mut rows = Vec::new();
        for host in ["a", "b"] {
            for t in 0..300 {
                let v = if host == "b" && t == 250 {
                    500.0
                } else {
                    10.0 + (t * 7 % 5) as f64
                };
                rows.push(format!("('{host}', {t}, {v})"));
            }
        }
        let sql = format!(
            "WITH s(host, t, v) AS (VALUES {}) \
             SELECT host, t FROM (SELECT host, t, anomaly_score(v, 'ewma') OVER (PARTITION BY host ORDER BY t) AS score FROM s) \
             WHERE score >= 0.9999 ORDER BY host, t",
            rows.join(", ")
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| b    | 250 |"), "{text}");
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "{text}"
        );
        let default = ctx
            .sql("SELECT anomaly_score(v) OVER (ORDER BY t) FROM (VALUES (1, 1.0), (2, 2.0)) s(t, v)")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(default.is_ok());
        let err = ctx
            .sql("SELECT anomaly_score(v, 'nope') OVER (ORDER BY t) FROM (VALUES (1, 1.0)) s(t, v)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no detector"), "{err}");
    }
}
