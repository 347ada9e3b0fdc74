//! The errors of decoding: a schema or a limit that cannot be used (a bad message is a dead
//! letter, not an error).

/// Errors of decoding (bad messages are not errors: they become dead letters).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to build a batch for {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error(transparent)]
    Schema(#[from] schemas::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
