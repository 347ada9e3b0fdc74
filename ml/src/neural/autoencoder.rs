//! The multivariate autoencoder (see the module docs of `neural`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mlp::{Mlp, TrainReport, fit_examples};
use crate::error::{Error, Result};

/// Hyper-parameters of the multivariate autoencoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderConfig {
    pub hidden: usize,
    pub bottleneck: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            hidden: 16,
            bottleneck: 2,
            epochs: 40,
            batch: 64,
            learning_rate: 3e-3,
            seed: 11,
        }
    }
}

/// What the autoencoder learned besides its weights: per-metric standardisation and the
/// distribution of reconstruction errors on the training rows (the calibration): their
/// percentiles, and beyond the 95th an exponential tail (peaks over threshold) with the mean
/// excess as its scale.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderStats {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Percentiles 0, 1, …, 100 of the training errors.
    pub quantiles: Vec<f64>,
    pub tail_scale: f64,
}

/// Standardised values are clipped to this for training, so the few anomalies a training
/// range holds cannot dominate the squared loss (and be learned as normal).
const TRAIN_CLIP: f32 = 5.0;

/// One scored metric vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorScore {
    /// `P(training error < this one)`, in [0, 1] (see [`AutoencoderStats`]).
    pub score: f64,
    /// Metric indexes by their share of the error, largest first, down to a share of 20%
    /// (at most three). For rows scoring ≥ 0.99 a metric's share is how much the error falls
    /// when it alone is replaced by its reconstruction.
    pub contributing: Vec<usize>,
}

/// Squared differences per row (of `dims` values) between `a` and `b`.
fn squared_errors(a: &[f32], b: &[f32], dims: usize) -> Vec<Vec<f64>> {
    a.chunks(dims)
        .zip(b.chunks(dims))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(a, b)| f64::from((a - b) * (a - b)))
                .collect()
        })
        .collect()
}

/// The autoencoder's input from long-format points `(series, ts, metric, value)`: for each
/// `(series, ts)` the values of `metrics` in that order, kept only when every one is present;
/// sorted by series and time.
pub fn metric_vectors<'a>(
    points: impl IntoIterator<Item = (&'a str, i64, &'a str, f64)>,
    metrics: &[String],
) -> Vec<((&'a str, i64), Vec<f64>)> {
    let index: BTreeMap<&str, usize> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut vectors: BTreeMap<(&str, i64), Vec<Option<f64>>> = BTreeMap::new();
    for (series, ts, metric, value) in points {
        if let Some(&d) = index.get(metric) {
            vectors
                .entry((series, ts))
                .or_insert_with(|| vec![None; metrics.len()])[d] = Some(value);
        }
    }
    vectors
        .into_iter()
        .filter(|(_, v)| v.iter().all(Option::is_some))
        .map(|(k, v)| (k, v.into_iter().flatten().collect()))
        .collect()
}

/// A multivariate autoencoder (see the module docs).
#[derive(Debug)]
pub struct Autoencoder {
    pub cfg: AutoencoderConfig,
    pub stats: AutoencoderStats,
    dims: usize,
    net: Mlp,
}

impl Autoencoder {
    pub fn new(dims: usize, cfg: AutoencoderConfig) -> Result<Self> {
        let net = Mlp::new(&Self::sizes(dims, &cfg), cfg.seed)?;
        Ok(Self {
            cfg,
            stats: AutoencoderStats::default(),
            dims,
            net,
        })
    }

    fn sizes(dims: usize, cfg: &AutoencoderConfig) -> Vec<usize> {
        vec![dims, cfg.hidden, cfg.bottleneck.max(1), cfg.hidden, dims]
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn from_safetensors(
        dims: usize,
        cfg: AutoencoderConfig,
        stats: AutoencoderStats,
        bytes: &[u8],
    ) -> Result<Self> {
        if stats.quantiles.len() != 101 {
            return Err(Error::input(
                "autoencoder",
                format!(
                    "its calibration has {} percentiles, not 101",
                    stats.quantiles.len()
                ),
            ));
        }
        if stats.mean.len() != dims || stats.std.len() != dims {
            return Err(Error::input(
                "autoencoder",
                format!(
                    "its statistics cover {} metrics, the model {dims}",
                    stats.mean.len()
                ),
            ));
        }
        let net = Mlp::from_safetensors(&Self::sizes(dims, &cfg), bytes)?;
        Ok(Self {
            cfg,
            stats,
            dims,
            net,
        })
    }

    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.net.to_safetensors()
    }

    fn standardise(&self, rows: &[Vec<f64>]) -> Vec<f32> {
        rows.iter()
            .flat_map(|r| {
                r.iter()
                    .zip(self.stats.mean.iter().zip(&self.stats.std))
                    .map(|(v, (m, s))| ((v - m) / s).clamp(-20.0, 20.0) as f32)
            })
            .collect()
    }

    fn check(&self, rows: &[Vec<f64>]) -> Result<()> {
        match rows.iter().find(|r| r.len() != self.dims) {
            Some(r) => Err(Error::input(
                "autoencoder",
                format!("a row has {} metrics, the model {}", r.len(), self.dims),
            )),
            None => Ok(()),
        }
    }

    /// Trains on metric vectors (one per host and time) and calibrates on them.
    pub fn fit(&mut self, rows: &[Vec<f64>]) -> Result<TrainReport> {
        let started = std::time::Instant::now();
        self.check(rows)?;
        let n = rows.len() as f64;
        if rows.is_empty() {
            return Err(Error::input("training", "no rows to train on"));
        }
        self.stats.mean = (0..self.dims)
            .map(|d| rows.iter().map(|r| r[d]).sum::<f64>() / n)
            .collect();
        self.stats.std = (0..self.dims)
            .map(|d| {
                let m = self.stats.mean[d];
                let var = rows.iter().map(|r| (r[d] - m).powi(2)).sum::<f64>() / n;
                var.sqrt().max(1e-9 * m.abs().max(1.0))
            })
            .collect();
        let x: Vec<f32> = self
            .standardise(rows)
            .into_iter()
            .map(|v| v.clamp(-TRAIN_CLIP, TRAIN_CLIP))
            .collect();
        let mut report = fit_examples(
            &self.net,
            &x,
            &x,
            self.dims,
            self.dims,
            self.cfg.epochs,
            self.cfg.batch,
            self.cfg.learning_rate,
            self.cfg.seed,
        )?;
        let totals = |errors: Vec<Vec<f64>>| -> Vec<f64> {
            errors.iter().map(|e| e.iter().sum::<f64>()).collect()
        };
        // Trimmed refit: the worst 1% of the training rows (the anomalies a training range
        // holds, as far as the first fit can tell) are left out of a second pass and of the
        // calibration.
        let errors = totals(self.errors(x.clone(), rows.len())?);
        let mut sorted = errors.clone();
        sorted.sort_by(f64::total_cmp);
        let cut = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
        let kept: Vec<f32> = x
            .chunks(self.dims)
            .zip(&errors)
            .filter(|(_, e)| **e <= cut)
            .flat_map(|(r, _)| r.iter().copied())
            .collect();
        let kept_rows = kept.len() / self.dims;
        if kept_rows > 0 && kept_rows < rows.len() {
            let second = fit_examples(
                &self.net,
                &kept,
                &kept,
                self.dims,
                self.dims,
                (self.cfg.epochs / 2).max(1),
                self.cfg.batch,
                self.cfg.learning_rate,
                self.cfg.seed ^ 1,
            )?;
            report.epochs += second.epochs;
            report.final_loss = second.final_loss;
        }
        let mut errors = totals(self.errors(kept, kept_rows)?);
        errors.sort_by(f64::total_cmp);
        if errors.is_empty() {
            return Err(Error::input("training", "no rows left to calibrate on"));
        }
        let at = |p: usize| errors[(errors.len() - 1) * p / 100];
        self.stats.quantiles = (0..=100).map(at).collect();
        let u = at(95);
        let excess: Vec<f64> = errors.iter().filter(|e| **e > u).map(|e| e - u).collect();
        self.stats.tail_scale = if excess.is_empty() {
            u.max(1e-9)
        } else {
            (excess.iter().sum::<f64>() / excess.len() as f64).max(1e-9)
        };
        Ok(TrainReport {
            series: 1,
            seconds: started.elapsed().as_secs_f64(),
            ..report
        })
    }

    /// `P(training error < e)`: the percentiles up to the 95th, the exponential tail beyond.
    fn calibrated(&self, e: f64) -> f64 {
        let q = &self.stats.quantiles;
        if q.len() != 101 {
            return 0.0;
        }
        if e > q[95] {
            return 1.0 - 0.05 * (-(e - q[95]) / self.stats.tail_scale).exp();
        }
        let below = q.partition_point(|v| *v < e);
        (below.saturating_sub(1) as f64 / 100.0).min(0.95)
    }

    /// Squared reconstruction error per row and metric.
    fn errors(&self, x: Vec<f32>, rows: usize) -> Result<Vec<Vec<f64>>> {
        let recon = self.net.predict(x.clone(), rows)?;
        Ok(squared_errors(&x, &recon, self.dims))
    }

    /// Scores metric vectors (one per host and time).
    pub fn score(&self, rows: &[Vec<f64>]) -> Result<Vec<VectorScore>> {
        self.check(rows)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.standardise(rows);
        let recon = self.net.predict(x.clone(), rows.len())?;
        let per_metric = squared_errors(&x, &recon, self.dims);
        let scores: Vec<f64> = per_metric
            .iter()
            .map(|e| self.calibrated(e.iter().sum()))
            .collect();
        // Attribution for the rows that stand out: metric d's contribution is how much the
        // error falls when d alone is replaced by its reconstruction. (An off value pulls the
        // whole code, so the raw per-metric errors blame its neighbours too.)
        let d = self.dims;
        let suspects: Vec<usize> = (0..rows.len()).filter(|&i| scores[i] >= 0.99).collect();
        let mut probes = Vec::with_capacity(suspects.len() * d * d);
        for &i in &suspects {
            for m in 0..d {
                let mut row = x[i * d..(i + 1) * d].to_vec();
                row[m] = recon[i * d + m];
                probes.extend(row);
            }
        }
        let probed = if probes.is_empty() {
            Vec::new()
        } else {
            let out = self.net.predict(probes.clone(), suspects.len() * d)?;
            squared_errors(&probes, &out, d)
        };
        let mut contributions: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for (k, &i) in suspects.iter().enumerate() {
            let total: f64 = per_metric[i].iter().sum();
            let c = (0..d)
                .map(|m| (total - probed[k * d + m].iter().sum::<f64>()).max(0.0))
                .collect();
            contributions.insert(i, c);
        }
        Ok((0..rows.len())
            .map(|i| {
                let e = contributions.get(&i).unwrap_or(&per_metric[i]);
                let sum: f64 = e.iter().sum();
                let mut order: Vec<usize> = (0..d).collect();
                order.sort_by(|&a, &b| e[b].total_cmp(&e[a]));
                let contributing = order
                    .into_iter()
                    .take(3)
                    .filter(|&m| sum > 0.0 && e[m] / sum >= 0.2)
                    .collect();
                VectorScore {
                    score: scores[i],
                    contributing,
                }
            })
            .collect())
    }
}
