use deltalake::DeltaTableError;

/// Errors of the lake: a Delta table or the object store under the root failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("delta table {table}: {context}: {source}")]
    Delta {
        table: String,
        context: String,
        // Boxed: the Delta error is large and would bloat every `Result` of its users.
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("cannot create the directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("delta table {table}: schema: {source}")]
    Schema {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error(transparent)]
    Layout(#[from] schemas::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn delta(
        table: impl std::fmt::Display,
        context: impl Into<String>,
        source: DeltaTableError,
    ) -> Self {
        Self::Delta {
            table: table.to_string(),
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Self::Store {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Whether retrying the same operation later may succeed (the store unavailable, a commit
    /// race). Storage trouble surfaces under many Delta variants (an object-store error wrapped
    /// in a Parquet or kernel error, an I/O error): all are retried but the errors that say the
    /// data or the table itself is wrong, which no retry fixes.
    pub fn is_retryable(&self) -> bool {
        match self {
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
            Self::Store { .. } | Self::Dir { .. } => true,
            Self::Schema { .. } | Self::Layout(_) => false,
        }
    }
}
