//! The errors of the command-line program.

/// Errors of the `sakura` command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("invalid configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Ingest(ingest::Error),
    #[error(transparent)]
    Engine(engine::Error),
    #[error(transparent)]
    Jobs(jobs::Error),
    #[error(transparent)]
    Ml(#[from] ml::Error),
    #[error(transparent)]
    Flight(#[from] flight::Error),
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("flight client: {0}")]
    Client(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("task failed: {0}")]
    Task(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ingest::Error> for Error {
    fn from(e: ingest::Error) -> Self {
        // Configuration errors keep their key at the top level.
        match e {
            ingest::Error::Config { key, message } => Self::Config { key, message },
            other => Self::Ingest(other),
        }
    }
}

impl From<jobs::Error> for Error {
    fn from(e: jobs::Error) -> Self {
        match e {
            jobs::Error::Config { key, message } => Self::Config { key, message },
            other => Self::Jobs(other),
        }
    }
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        match e {
            engine::Error::Config { key, message } => Self::Config { key, message },
            other => Self::Engine(other),
        }
    }
}
