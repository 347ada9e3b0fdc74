//! The errors of ingest, and which of them a retry can fix.

use deltalake::DeltaTableError;
use rdkafka::error::KafkaError;

/// Errors of the ingest pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    /// A Delta table or the object store under the storage root failed.
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error("failed to build a batch for {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error(transparent)]
    Decode(#[from] decode::Error),
    #[error("invalid ingest configuration: {key}: {message}")]
    Config { key: String, message: String },
    /// A flush task ended without a result (it panicked or was cancelled).
    #[error("flush task: {0}")]
    Flush(String),
}

impl Error {
    /// Whether retrying the same operation later may succeed (storage or broker unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka { .. } => true,
            Self::Lake(e) => e.is_retryable(),
            Self::Arrow { .. }
            | Self::Schema(_)
            | Self::Decode(_)
            | Self::Config { .. }
            | Self::Flush(_) => false,
        }
    }

    pub(crate) fn delta(table: &impl ToString, context: &str, source: DeltaTableError) -> Self {
        Self::Lake(lake::Error::delta(table.to_string(), context, source))
    }

    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
