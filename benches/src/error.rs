//! The errors of the benchmark programs.

/// Errors of the benchmark program.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Ml(#[from] ml::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
