//! The errors of the scheduler and its job kinds, and which of them a retry can fix.

use datafusion::error::DataFusionError;

/// Errors of the scheduler and its job kinds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job definition or the `[scheduler]` section is invalid; `key` names the setting.
    #[error("invalid job configuration: {key}: {message}")]
    Config { key: String, message: String },
    /// A job ran and failed for a reason of its own (bad SQL, missing table, ...).
    #[error("job {job}: {message}")]
    Job { job: String, message: String },
    /// The object store failed (leases, exports).
    #[error("object store: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A Delta table or the lake's object store failed.
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error("query failed: {0}")]
    Query(Box<DataFusionError>),
    #[error(transparent)]
    Engine(Box<engine::Error>),
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn job(job: &str, message: impl Into<String>) -> Self {
        Self::Job {
            job: job.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Self::Store {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn delta(
        table: impl std::fmt::Display,
        context: impl Into<String>,
        source: deltalake::DeltaTableError,
    ) -> Self {
        Self::Lake(lake::Error::delta(table, context, source))
    }

    /// Whether a retry can succeed: transient store and commit failures can, a bad definition
    /// or bad SQL cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. } => false,
            Self::Query(e) => !matches!(
                e.as_ref(),
                DataFusionError::Plan(_)
                    | DataFusionError::SQL(..)
                    | DataFusionError::SchemaError(..)
                    | DataFusionError::NotImplemented(_)
            ),
            _ => true,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Self::Query(Box::new(e))
    }
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}
