//! Anomaly detection.
//!
//! In: metric values (slices of `f64`, from Arrow arrays) in time order. Out: anomaly scores in
//! [0, 1] from causal detectors, and the Numenta Anomaly Benchmark's scorer to evaluate them.
//! Pure: no I/O. (The Candle detectors, model registry and SQL functions are still to come.)

mod detectors;
mod error;
pub mod nab;

pub use detectors::{Detector, Ewma, RobustZScore, WindowedGaussian};
pub use error::{Error, Result};
