//! Anomaly detection (filled in by the anomaly-detection issue).
//!
//! In: Arrow arrays of metric values (and timestamps). Out: anomaly scores in [0, 1] and trained
//! models. This crate will hold the statistical baselines (windowed Gaussian, robust z-score,
//! EWMA), Candle detectors (univariate forecaster/autoencoder, multivariate autoencoder), the
//! model registry (safetensors + JSON metadata under `models/<name>/<version>/`) and the NAB
//! scorer. It stays pure: no I/O besides the registry's object store.

/// The detectors this crate will provide, by the name used in SQL and the config.
pub const PLANNED_DETECTORS: [&str; 3] = ["windowed_gaussian", "robust_zscore", "ewma"];
