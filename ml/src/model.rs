//! A trained model as the registry stores it: safetensors weights plus [`ModelMeta`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::neural::{
    Autoencoder, AutoencoderConfig, AutoencoderStats, Forecaster, ForecasterConfig, TrainReport,
};

/// The data a model was trained on: what it needs to score data again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSchema {
    /// Column holding the event time.
    pub ts: String,
    /// Columns that name one series (e.g. `host`, `metric`).
    pub key: Vec<String>,
    /// Column holding the values.
    pub value: String,
    /// Autoencoder: the column naming the metric, and the metrics in input order.
    pub metric_column: Option<String>,
    pub metrics: Vec<String>,
}

/// The metadata file next to a model's weights (`models/<name>/<version>/model.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelMeta {
    pub name: String,
    pub version: u32,
    /// `forecaster` or `autoencoder`.
    pub kind: String,
    /// The kind's hyper-parameters (and, for the autoencoder, its learned standardisation).
    pub params: serde_json::Value,
    pub schema: ModelSchema,
    /// Scores at or above this are anomalies.
    pub threshold: f64,
    /// The time range the training data came from (RFC 3339), when known.
    pub training_window: Option<(String, String)>,
    pub training: TrainReport,
    pub created_at: String,
}

impl ModelMeta {
    /// Checks that data with these columns (and, for the autoencoder, these metrics) can be
    /// scored by this model; the error names what differs.
    pub fn check_schema(&self, columns: &[String], metrics: Option<&[String]>) -> Result<()> {
        let missing: Vec<&String> = self
            .columns()
            .into_iter()
            .filter(|c| !columns.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::input(
                format!("model {} version {}", self.name, self.version),
                format!(
                    "was trained on columns {:?} but the data has no {:?} (it has {:?})",
                    self.columns(),
                    missing,
                    columns
                ),
            ));
        }
        if let Some(metrics) = metrics
            && self.kind == "autoencoder"
        {
            let absent: Vec<&String> = self
                .schema
                .metrics
                .iter()
                .filter(|m| !metrics.contains(m))
                .collect();
            if !absent.is_empty() {
                return Err(Error::input(
                    format!("model {} version {}", self.name, self.version),
                    format!(
                        "needs the metrics {:?} but the data has no {:?} (it has {:?})",
                        self.schema.metrics, absent, metrics
                    ),
                ));
            }
        }
        Ok(())
    }

    fn columns(&self) -> Vec<&String> {
        std::iter::once(&self.schema.ts)
            .chain(&self.schema.key)
            .chain(std::iter::once(&self.schema.value))
            .chain(self.schema.metric_column.as_ref())
            .collect()
    }
}

/// A loaded model.
#[derive(Debug)]
pub enum Model {
    Forecaster(Forecaster),
    Autoencoder(Autoencoder),
}

#[derive(Serialize, Deserialize)]
struct AutoencoderParams {
    config: AutoencoderConfig,
    stats: AutoencoderStats,
}

impl Model {
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Forecaster(_) => "forecaster",
            Model::Autoencoder(_) => "autoencoder",
        }
    }

    /// The `params` of its metadata.
    pub fn params(&self) -> Result<serde_json::Value> {
        let v = match self {
            Model::Forecaster(f) => serde_json::to_value(&f.cfg),
            Model::Autoencoder(a) => serde_json::to_value(AutoencoderParams {
                config: a.cfg.clone(),
                stats: a.stats.clone(),
            }),
        };
        v.map_err(|source| Error::Json {
            what: "model parameters".into(),
            source,
        })
    }

    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        match self {
            Model::Forecaster(f) => f.to_safetensors(),
            Model::Autoencoder(a) => a.to_safetensors(),
        }
    }

    /// Rebuilds a model from its metadata and weights.
    pub fn load(meta: &ModelMeta, weights: &[u8]) -> Result<Self> {
        let what = format!("model {} version {}", meta.name, meta.version);
        let json = |source| Error::Json {
            what: format!("{what}: parameters"),
            source,
        };
        match meta.kind.as_str() {
            "forecaster" => {
                let cfg: ForecasterConfig =
                    serde_json::from_value(meta.params.clone()).map_err(json)?;
                Ok(Model::Forecaster(Forecaster::from_safetensors(
                    cfg, weights,
                )?))
            }
            "autoencoder" => {
                let p: AutoencoderParams =
                    serde_json::from_value(meta.params.clone()).map_err(json)?;
                Ok(Model::Autoencoder(Autoencoder::from_safetensors(
                    meta.schema.metrics.len(),
                    p.config,
                    p.stats,
                    weights,
                )?))
            }
            other => Err(Error::input(
                what,
                format!("unknown kind {other:?} (kinds: forecaster, autoencoder)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, metrics: &[&str]) -> ModelMeta {
        ModelMeta {
            name: "m".into(),
            version: 3,
            kind: kind.into(),
            params: serde_json::Value::Null,
            schema: ModelSchema {
                ts: "ts".into(),
                key: vec!["host".into()],
                value: "value".into(),
                metric_column: Some("metric".into()),
                metrics: metrics.iter().map(|m| m.to_string()).collect(),
            },
            threshold: 0.9999,
            training_window: None,
            training: TrainReport::default(),
            created_at: String::new(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn schema_checks_name_what_is_missing() {
        let m = meta("autoencoder", &["cpu", "mem"]);
        let cols = strings(&["ts", "host", "metric", "value"]);
        m.check_schema(&cols, Some(&strings(&["cpu", "mem", "disk"])))
            .unwrap();
        let e = m
            .check_schema(&strings(&["ts", "metric", "value"]), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model m version 3") && e.contains("\"host\""),
            "{e}"
        );
        let e = m
            .check_schema(&cols, Some(&strings(&["cpu"])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs the metrics") && e.contains("\"mem\""),
            "{e}"
        );
    }

    #[test]
    fn metric_vectors_keep_complete_rows_in_metric_order() {
        let metrics = strings(&["cpu", "mem"]);
        let points = [
            ("a", 1, "mem", 2.0),
            ("a", 1, "cpu", 1.0),
            ("a", 2, "cpu", 3.0), // no mem at 2: dropped
            ("b", 1, "cpu", 5.0),
            ("b", 1, "mem", 6.0),
            ("b", 1, "disk", 9.0), // not a model metric
        ];
        let v = crate::metric_vectors(points, &metrics);
        assert_eq!(
            v,
            vec![(("a", 1), vec![1.0, 2.0]), (("b", 1), vec![5.0, 6.0])]
        );
    }
}
