//! Every error the Flight SQL and HTTP services return is mapped to a gRPC status here, and only
//! here.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::{Code, Status};

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not supported: {0}")]
    Unimplemented(String),
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("query failed: {0}")]
    Query(#[from] DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("failed to encode a result: {0}")]
    Encode(#[from] arrow_flight::error::FlightError),
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("http server stopped: {0}")]
    Http(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Query(e) => datafusion_code(e),
            Self::Arrow(ArrowError::CastError(_) | ArrowError::ParseError(_)) => {
                Code::InvalidArgument
            }
            Self::Arrow(_)
            | Self::Encode(_)
            | Self::Bind { .. }
            | Self::Config(_)
            | Self::Transport(_)
            | Self::Http(_) => Code::Internal,
        }
    }
}

fn datafusion_code(e: &DataFusionError) -> Code {
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::SchemaError(..) => Code::InvalidArgument,
        DataFusionError::Plan(msg) if msg.contains("not found") => Code::NotFound,
        DataFusionError::Plan(_) => Code::InvalidArgument,
        DataFusionError::NotImplemented(_) => Code::Unimplemented,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Code::Unavailable,
        DataFusionError::ArrowError(e, _)
            if matches!(
                **e,
                ArrowError::CastError(_) | ArrowError::ParseError(_) | ArrowError::DivideByZero
            ) =>
        {
            Code::InvalidArgument
        }
        _ => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        if code == Code::ResourceExhausted && matches!(e, Error::Query(_)) {
            return Status::new(
                code,
                format!(
                    "the query needs more memory than limits.max_query_memory_mb allows \
                     (sorts and aggregations spill to disk first; joins cannot): {e}"
                ),
            );
        }
        Status::new(code, e.to_string())
    }
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        match e {
            engine::Error::DataFusion(e) => Self::Query(e),
            engine::Error::Table { table, source } => Self::Query(DataFusionError::Context(
                format!("table {table}"),
                Box::new(source),
            )),
            engine::Error::Config { key, message } => {
                Self::InvalidArgument(format!("{key}: {message}"))
            }
            other => Self::Query(DataFusionError::External(Box::new(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_errors_are_invalid_argument_and_missing_tables_not_found() {
        let e = Error::Query(DataFusionError::Plan("table 'raw.nope' not found".into()));
        assert_eq!(Status::from(e).code(), Code::NotFound);
        let e = Error::Query(DataFusionError::Plan("no such column".into()));
        assert_eq!(Status::from(e).code(), Code::InvalidArgument);
        let e = Error::Query(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(Status::from(e).code(), Code::ResourceExhausted);
        let e = Error::Query(DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::NotImplemented("x".into())),
        ));
        assert_eq!(Status::from(e).code(), Code::Unimplemented);
    }
}
