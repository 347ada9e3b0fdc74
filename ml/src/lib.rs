//! Anomaly detection.
//!
//! In: metric values (slices of `f64`, from Arrow arrays) in time order. Out: anomaly scores in
//! [0, 1] and trained models. Statistical detectors (windowed Gaussian, robust z-score, EWMA),
//! Candle detectors (a univariate forecaster with an anomaly-likelihood calibration, a
//! multivariate autoencoder naming the metrics that contributed), the model format the
//! registry stores, and the Numenta Anomaly Benchmark's scorer. Pure: no I/O.

mod detectors;
mod error;
mod likelihood;
mod model;
pub mod nab;
mod neural;

pub use detectors::{Detector, Ewma, RobustZScore, WindowedGaussian};
pub use error::{Error, Result};
pub use likelihood::AnomalyLikelihood;
pub use model::{Model, ModelMeta, ModelSchema};
pub use neural::{
    Autoencoder, AutoencoderConfig, AutoencoderStats, Forecaster, ForecasterConfig, Mlp,
    OnlineForecaster, TrainReport, VectorScore, metric_vectors,
};
