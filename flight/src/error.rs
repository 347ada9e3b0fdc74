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
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A status an inner call already chose.
    #[error("{}", .0.message())]
    Status(Status),
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
            Self::Unavailable(_) => Code::Unavailable,
            Self::Status(s) => s.code(),
            Self::Query(e) => datafusion_code(e),
            Self::Arrow(ArrowError::CastError(_) | ArrowError::ParseError(_)) => {
                Code::InvalidArgument
            }
            Self::Arrow(_)
            | Self::Internal(_)
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

impl Error {
    /// This error as a row-filtered caller may see it, when it could carry values of rows:
    /// errors raised while rows are read (a cast, a division, an overflow) quote the value,
    /// which may come from a row the filter hides — the filter and the caller's expressions
    /// are evaluated over the same batches. `None` when the message carries no row values
    /// (planning, permissions, limits).
    pub fn withheld(&self) -> Option<Error> {
        const WHY: &str = "details withheld: your role reads rows through a row filter; the \
                           audit log has them under this query's id";
        let arrow = |e: &ArrowError| match e {
            ArrowError::CastError(_) | ArrowError::ParseError(_) => {
                Error::InvalidArgument(format!("a value could not be converted ({WHY})"))
            }
            ArrowError::DivideByZero => Error::InvalidArgument(format!("division by zero ({WHY})")),
            ArrowError::ArithmeticOverflow(_) => {
                Error::InvalidArgument(format!("arithmetic overflow ({WHY})"))
            }
            _ => Error::Internal(format!("the query failed while reading rows ({WHY})")),
        };
        match self {
            Self::Query(e) => match e.find_root() {
                DataFusionError::ArrowError(a, _) => Some(arrow(a)),
                DataFusionError::Execution(_)
                | DataFusionError::External(_)
                | DataFusionError::Internal(_)
                | DataFusionError::ParquetError(_)
                | DataFusionError::Shared(_)
                | DataFusionError::Collection(_)
                | DataFusionError::Substrait(_) => Some(Error::Internal(format!(
                    "the query failed while reading rows ({WHY})"
                ))),
                _ => None,
            },
            Self::Arrow(a) => Some(arrow(a)),
            Self::Encode(_) => Some(Error::Internal(format!(
                "the result could not be encoded ({WHY})"
            ))),
            _ => None,
        }
    }

    /// [`Error::withheld`] when `withheld` (and the error carries values), else the error.
    pub(crate) fn withheld_if(self, withheld: bool) -> Self {
        match withheld.then(|| self.withheld()).flatten() {
            Some(w) => w,
            None => self,
        }
    }

    /// The status a client sees for this error.
    pub fn to_status(&self) -> Status {
        if let Self::Status(s) = self {
            return s.clone();
        }
        let code = self.code();
        if code == Code::Internal {
            tracing::error!(error = %self, "internal error");
        }
        if code == Code::ResourceExhausted && matches!(self, Error::Query(_)) {
            return Status::new(
                code,
                format!(
                    "the query needs more memory than limits.max_query_memory_mb allows \
                     (sorts and aggregations spill to disk first; joins cannot): {self}"
                ),
            );
        }
        Status::new(code, self.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.to_status()
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
