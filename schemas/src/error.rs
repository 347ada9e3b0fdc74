//! The errors of schema files and storage locations.

/// Errors of the schema contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to parse schema file {name}: {source}")]
    Parse {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema {schema}: field {field} has unsupported type {ty:?}")]
    UnsupportedType {
        schema: String,
        field: String,
        ty: String,
    },
    #[error("schema {schema}: {message}")]
    Invalid { schema: String, message: String },
    #[error("unknown schema {0:?} (known: telemetry, logs, events)")]
    UnknownSchema(String),
    #[error("invalid storage url {url:?}: {message}")]
    StorageUrl { url: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
