//! The model registry: trained models under `<root>/models/<name>/<version>/` on the object
//! store — `model.safetensors` (weights) and `model.json` ([`ml::ModelMeta`]). Versions count
//! up from 1; a version exists once its `model.json` does, which is created with
//! create-if-absent (S3 `If-None-Match: *`), so two trainers racing for the same version cannot
//! overwrite each other: the loser takes the next number.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use schemas::Storage;

use crate::error::{Error, Result};

/// Which version of a model to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Latest,
    Version(u32),
}

impl Pin {
    /// `name` or `name@3`.
    pub fn parse(spec: &str) -> Result<(String, Pin)> {
        match spec.split_once('@') {
            None => Ok((spec.to_string(), Pin::Latest)),
            Some((name, v)) => v
                .parse::<u32>()
                .map(|v| (name.to_string(), Pin::Version(v)))
                .map_err(|_| {
                    Error::Model(format!(
                        "{spec:?}: the version after @ must be a number (e.g. {name}@2)"
                    ))
                }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelRegistry {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
    let context = context.into();
    move |source| Error::Store { context, source }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::Model(format!(
            "{name:?} is not a model name (letters, digits, _ and -)"
        )));
    }
    Ok(())
}

impl ModelRegistry {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self { store, prefix }
    }

    /// The registry under the storage root (`<root>/models/`).
    pub fn for_storage(storage: &Storage) -> Result<Self> {
        let lake::RootStore { store, root } = lake::root_store(storage)?;
        Ok(Self::new(store, lake::paths::models(&root)))
    }

    fn dir(&self, name: &str, version: u32) -> Path {
        self.prefix.clone().join(name).join(version.to_string())
    }

    /// `(name, version)` of every complete version (one with its metadata) under `dir`, sorted:
    /// one listing of the store.
    async fn complete(&self, dir: &Path) -> Result<Vec<(String, u32)>> {
        let metas: Vec<_> = self
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(store_err(format!("cannot list {dir}")))?;
        let mut out: Vec<(String, u32)> = metas
            .iter()
            .filter(|m| m.location.filename() == Some("model.json"))
            .filter_map(|m| {
                let parts: Vec<_> = m.location.parts().collect();
                let n = parts.len().checked_sub(3)?;
                Some((
                    parts[n].as_ref().to_string(),
                    parts[n + 1].as_ref().parse().ok()?,
                ))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The model names in the registry, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .complete(&self.prefix)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.dedup();
        Ok(names)
    }

    /// The versions of `name` that are complete (have their metadata), ascending.
    pub async fn versions(&self, name: &str) -> Result<Vec<u32>> {
        check_name(name)?;
        let dir = self.prefix.clone().join(name);
        Ok(self
            .complete(&dir)
            .await?
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect())
    }

    /// Every version's metadata, by name then version.
    pub async fn list(&self) -> Result<Vec<ml::ModelMeta>> {
        let mut out = Vec::new();
        for (name, v) in self.complete(&self.prefix).await? {
            out.push(self.meta(&name, v).await?);
        }
        Ok(out)
    }

    async fn read(&self, path: &Path) -> Result<bytes::Bytes> {
        self.store
            .get(path)
            .await
            .map_err(store_err(format!("cannot read {path}")))?
            .bytes()
            .await
            .map_err(store_err(format!("cannot read {path}")))
    }

    async fn meta(&self, name: &str, version: u32) -> Result<ml::ModelMeta> {
        let path = self.dir(name, version).join("model.json");
        let bytes = self.read(&path).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Model(format!("{path} is not model metadata: {e}")))
    }

    /// Stores `model` as the next version of `meta.name`; returns the metadata as stored (with
    /// its version and creation time).
    pub async fn save(&self, model: &ml::Model, mut meta: ml::ModelMeta) -> Result<ml::ModelMeta> {
        check_name(&meta.name)?;
        meta.kind = model.kind().to_string();
        meta.params = model.params()?;
        let weights = model.to_safetensors()?;
        let mut version = self.versions(&meta.name).await?.last().map_or(1, |v| v + 1);
        loop {
            let dir = self.dir(&meta.name, version);
            meta.version = version;
            meta.created_at = chrono_now();
            self.store
                .put(
                    &dir.clone().join("model.safetensors"),
                    PutPayload::from(weights.clone()),
                )
                .await
                .map_err(store_err(format!("cannot write {dir}/model.safetensors")))?;
            let body = serde_json::to_vec_pretty(&meta)
                .map_err(|e| Error::Model(format!("cannot encode the metadata: {e}")))?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&dir.clone().join("model.json"), body.into(), opts)
                .await
            {
                Ok(_) => return Ok(meta),
                // Another trainer took this version (and wrote its own weights after ours, or
                // will): take the next one.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => version += 1,
                Err(e) => {
                    return Err(Error::Store {
                        context: format!("cannot write {dir}/model.json"),
                        source: e,
                    });
                }
            }
        }
    }

    /// Loads a version of `name` (the latest when not pinned).
    pub async fn load(&self, name: &str, pin: Pin) -> Result<(ml::ModelMeta, ml::Model)> {
        let versions = self.versions(name).await?;
        let version = match pin {
            Pin::Latest => versions.last().copied().ok_or_else(|| {
                Error::Model(format!(
                    "no model {name:?} (train one with an ml_train job)"
                ))
            })?,
            Pin::Version(v) if versions.contains(&v) => v,
            Pin::Version(v) => {
                return Err(Error::Model(format!(
                    "model {name:?} has no version {v} (versions: {versions:?})"
                )));
            }
        };
        let meta = self.meta(name, version).await?;
        let weights = self
            .read(&self.dir(name, version).join("model.safetensors"))
            .await?;
        let model = ml::Model::load(&meta, &weights)?;
        Ok((meta, model))
    }
}

/// `system.models`: one row per registered model version, listed from the registry at each scan.
#[derive(Debug)]
pub(crate) struct ModelsTable {
    pub(crate) registry: ModelRegistry,
}

impl ModelsTable {
    fn schema() -> datafusion::arrow::datatypes::SchemaRef {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        Arc::new(Schema::new(vec![
            text("name", false),
            Field::new("version", DataType::Int32, false),
            text("kind", false),
            text("created_at", false),
            text("training_start", true),
            text("training_end", true),
            Field::new("training_rows", DataType::Int64, false),
            Field::new("final_loss", DataType::Float64, false),
            Field::new("training_seconds", DataType::Float64, false),
            Field::new("threshold", DataType::Float64, false),
            text("schema", false),
            text("params", false),
        ]))
    }
}

#[async_trait::async_trait]
impl crate::computed::ComputedRows for ModelsTable {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        Self::schema()
    }

    async fn rows(
        &self,
        _session: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<RecordBatch> {
        use datafusion::arrow::array::{
            ArrayRef, Float64Array, Int32Array, Int64Array, StringArray,
        };
        let metas = self
            .registry
            .list()
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let strings = |f: &dyn Fn(&ml::ModelMeta) -> Option<String>| -> ArrayRef {
            Arc::new(metas.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            strings(&|m| Some(m.name.clone())),
            Arc::new(Int32Array::from_iter_values(
                metas
                    .iter()
                    .map(|m| i32::try_from(m.version).unwrap_or(i32::MAX)),
            )),
            strings(&|m| Some(m.kind.clone())),
            strings(&|m| Some(m.created_at.clone())),
            strings(&|m| m.training_window.as_ref().map(|w| w.0.clone())),
            strings(&|m| m.training_window.as_ref().map(|w| w.1.clone())),
            Arc::new(Int64Array::from_iter_values(
                metas
                    .iter()
                    .map(|m| i64::try_from(m.training.examples).unwrap_or(i64::MAX)),
            )),
            Arc::new(Float64Array::from_iter_values(
                metas.iter().map(|m| m.training.final_loss),
            )),
            Arc::new(Float64Array::from_iter_values(
                metas.iter().map(|m| m.training.seconds),
            )),
            Arc::new(Float64Array::from_iter_values(
                metas.iter().map(|m| m.threshold),
            )),
            strings(&|m| serde_json::to_string(&m.schema).ok()),
            strings(&|m| serde_json::to_string(&m.params).ok()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Now, RFC 3339 in UTC.
fn chrono_now() -> String {
    datafusion::arrow::temporal_conversions::timestamp_us_to_datetime(now_us())
        .map(|t| format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.3f")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> ml::ModelMeta {
        ml::ModelMeta {
            name: name.into(),
            version: 0,
            kind: String::new(),
            params: serde_json::Value::Null,
            schema: ml::ModelSchema {
                ts: "ts".into(),
                key: vec!["host".into(), "metric".into()],
                value: "value".into(),
                metric_column: None,
                metrics: Vec::new(),
            },
            threshold: 0.5,
            training_window: None,
            training: ml::TrainReport::default(),
            created_at: String::new(),
        }
    }

    #[tokio::test]
    async fn versions_count_up_and_load_latest_or_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let reg = ModelRegistry::for_storage(&Storage::local(dir.path()).unwrap()).unwrap();
        let values: Vec<f64> = (0..400).map(|i| (i as f64 * 0.1).sin()).collect();
        let mut f = ml::Forecaster::new(ml::ForecasterConfig {
            epochs: 1,
            ..ml::ForecasterConfig::default()
        })
        .unwrap();
        f.fit(&[&values]).unwrap();
        let model = ml::Model::Forecaster(f);
        let a = reg.save(&model, meta("cpu")).await.unwrap();
        let b = reg.save(&model, meta("cpu")).await.unwrap();
        assert_eq!((a.version, b.version), (1, 2));
        assert!(dir.path().join("models/cpu/2/model.safetensors").exists());
        assert_eq!(reg.versions("cpu").await.unwrap(), vec![1, 2]);
        assert_eq!(reg.names().await.unwrap(), vec!["cpu".to_string()]);
        let (m, _) = reg.load("cpu", Pin::Latest).await.unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(m.kind, "forecaster");
        let (m, _) = reg.load("cpu", Pin::Version(1)).await.unwrap();
        assert_eq!(m.version, 1);
        let err = reg
            .load("cpu", Pin::Version(9))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no version 9"), "{err}");
        let err = reg.load("mem", Pin::Latest).await.unwrap_err().to_string();
        assert!(err.contains("no model \"mem\""), "{err}");
        assert_eq!(
            Pin::parse("cpu@2").unwrap(),
            ("cpu".to_string(), Pin::Version(2))
        );
    }
}
