/// Errors of the anomaly-detection crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be scored (bad labels, a window outside the data, ...).
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input {
            what: what.into(),
            message: message.into(),
        }
    }
}
