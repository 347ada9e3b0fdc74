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
    #[error("delta table {table}: {context}: {source}")]
    Delta {
        table: String,
        context: String,
        // Boxed: the Delta error is large and would bloat every `Result` of the crate.
        #[source]
        source: Box<DeltaTableError>,
    },
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
            // Storage trouble surfaces under many variants (an object-store error wrapped in a
            // Parquet or kernel error, an I/O error, a commit race): retry all but the errors
            // that say the data or the table itself is wrong, which no retry fixes.
            Self::Delta { source, .. } => !matches!(
                **source,
                DeltaTableError::SchemaMismatch { .. }
                    | DeltaTableError::InvalidData { .. }
                    | DeltaTableError::CommitValidation { .. }
                    | DeltaTableError::MissingFeature { .. }
                    | DeltaTableError::InvalidTableLocation(_)
                    | DeltaTableError::NoSchema
                    | DeltaTableError::UnsupportedColumnMapping { .. }
            ),
            Self::Arrow { .. }
            | Self::Schema(_)
            | Self::Decode(_)
            | Self::Config { .. }
            | Self::Flush(_) => false,
        }
    }

    pub(crate) fn delta(table: &impl ToString, context: &str, source: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            context: context.to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
