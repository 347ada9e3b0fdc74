//! The errors of the detectors and model files.

/// Errors of the anomaly-detection crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be scored (bad labels, a window outside the data, ...).
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// A tensor operation of a Candle model failed.
    #[error("{what}: {source}")]
    Candle {
        what: String,
        #[source]
        source: candle_core::Error,
    },
    /// Model weights that are not a valid safetensors file.
    #[error("{what}: {source}")]
    Weights {
        what: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn candle(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let what = what.into();
        move |source| Self::Candle { what, source }
    }

    pub(crate) fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input {
            what: what.into(),
            message: message.into(),
        }
    }
}
