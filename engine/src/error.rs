//! The errors of the engine.

use datafusion::error::DataFusionError;

/// Errors of the engine outside query execution (which uses DataFusion's own errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid engine configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error("failed to set up table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Ml(#[from] ml::Error),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    /// The model registry's object store failed.
    #[error("model registry: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A model that is not there or cannot be used.
    #[error("model registry: {0}")]
    Model(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
