//! The univariate forecaster and its online form (see the module docs of `neural`).

use std::collections::VecDeque;

use candle_nn::AdamW;
use serde::{Deserialize, Serialize};

use super::mlp::{Mlp, TrainReport, fit_examples};
use crate::detectors::Detector;
use crate::error::{Error, Result};
use crate::likelihood::AnomalyLikelihood;

fn clip(z: f64) -> f32 {
    if z.is_finite() {
        z.clamp(-10.0, 10.0) as f32
    } else {
        0.0
    }
}

/// Causal standardisation: the mean and deviation of the values before the current one
/// (Welford), weighting recent values more once `cap` values were seen.
#[derive(Debug, Clone, Default)]
struct Scaler {
    n: f64,
    mean: f64,
    var: f64,
    cap: f64,
}

impl Scaler {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(2) as f64,
            ..Self::default()
        }
    }

    /// The standardised value, unclipped (errors are measured against it).
    fn z_raw(&self, x: f64) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        let sd = self.var.sqrt().max(1e-9 * self.mean.abs().max(1.0));
        (x - self.mean) / sd
    }

    /// The standardised value as a model input: clipped to ±10 deviations.
    fn z(&self, x: f64) -> f32 {
        clip(self.z_raw(x))
    }

    fn update(&mut self, x: f64) {
        self.n += 1.0;
        let w = 1.0 / self.n.min(self.cap);
        let d = x - self.mean;
        self.mean += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
    }
}

/// Hyper-parameters of the forecaster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForecasterConfig {
    /// Previous values the next one is predicted from.
    pub window: usize,
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Online mode: one optimiser step every this many values.
    pub online_every: usize,
    /// Values the running standardisation is effectively averaged over.
    pub scale_memory: usize,
    /// Values scored before the likelihood is calibrated (NAB's probationary period; the
    /// online model trains on the first half and calibrates on the second).
    pub probation: usize,
    /// A value beyond the range seen so far by more than this share of it scores 1.
    pub spatial_tolerance: f64,
    pub seed: u64,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        Self {
            window: 16,
            hidden: 24,
            epochs: 30,
            batch: 64,
            learning_rate: 3e-3,
            online_every: 8,
            scale_memory: 5000,
            probation: 750,
            spatial_tolerance: 0.05,
            seed: 7,
        }
    }
}

/// The per-series state of scoring with a forecaster.
#[derive(Debug, Clone)]
pub(crate) struct SeriesState {
    scaler: Scaler,
    window: VecDeque<f32>,
    likelihood: AnomalyLikelihood,
    err_scale: f64,
    min: f64,
    max: f64,
    seen: usize,
    learning: usize,
    width: usize,
    prev_tail: f64,
    errors: ErrorTail,
}

/// The tail of a series' own recent errors, by peaks over threshold (as in SPOT, Siffer et al.
/// 2017): beyond their 95th percentile `u`, `P(E > e) = 0.05 · exp(−(e − u) / β)` with `β` the
/// mean excess over `u`. Errors are far from normal on bursty series (a normal tail calls a
/// tweet-volume burst a one-in-a-million event); their own tail does not.
#[derive(Debug, Clone, Default)]
struct ErrorTail {
    recent: VecDeque<f64>,
    since_fit: usize,
    u: f64,
    beta: f64,
    fitted: bool,
}

impl ErrorTail {
    const KEEP: usize = 2000;
    const MIN: usize = 200;
    const REFIT: usize = 50;

    /// `P(E ≥ e)` from the fitted tail; `None` before `MIN` errors were seen.
    fn tail(&self, e: f64) -> Option<f64> {
        if !self.fitted {
            return None;
        }
        Some(if e > self.u {
            0.05 * (-(e - self.u) / self.beta).exp()
        } else {
            1.0
        })
    }

    fn push(&mut self, e: f64) {
        self.recent.push_back(e);
        if self.recent.len() > Self::KEEP {
            self.recent.pop_front();
        }
        self.since_fit += 1;
        if self.recent.len() >= Self::MIN && (!self.fitted || self.since_fit >= Self::REFIT) {
            let mut sorted: Vec<f64> = self.recent.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let u = sorted[(sorted.len() - 1) * 95 / 100];
            let excess: Vec<f64> = sorted.iter().filter(|v| **v > u).map(|v| v - u).collect();
            self.u = u;
            self.beta = if excess.is_empty() {
                u.max(1e-6)
            } else {
                (excess.iter().sum::<f64>() / excess.len() as f64).max(1e-6)
            };
            self.fitted = true;
            self.since_fit = 0;
        }
    }
}

impl SeriesState {
    fn new(cfg: &ForecasterConfig, learning: usize) -> Self {
        Self {
            scaler: Scaler::new(cfg.scale_memory),
            window: VecDeque::with_capacity(cfg.window + 1),
            likelihood: AnomalyLikelihood::new(learning, cfg.probation.saturating_sub(learning)),
            err_scale: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            seen: 0,
            learning,
            width: cfg.window.max(1),
            prev_tail: 1.0,
            errors: ErrorTail::default(),
        }
    }

    /// The standardised value of `x` and the model input ending before it (if full).
    fn input(&self, x: f64) -> (f64, Option<Vec<f32>>) {
        let z = self.scaler.z_raw(x);
        let full = self.window.len() == self.width;
        (z, full.then(|| self.window.iter().copied().collect()))
    }

    /// Finishes scoring `x` given the model's prediction for it; learns `x`.
    fn finish(&mut self, x: f64, z: f64, predicted: Option<f32>, cfg: &ForecasterConfig) -> f64 {
        // The error in units of its usual size (1.25 × mean absolute error ≈ one standard
        // deviation of normal errors); both scores below are fixed functions of it.
        let z_err = match predicted {
            Some(p) => {
                let err = (z - f64::from(p)).abs();
                let scale = if self.err_scale > 0.0 {
                    self.err_scale
                } else {
                    err.max(1e-3)
                };
                self.err_scale = 0.99 * scale + 0.01 * err.max(1e-6);
                Some(err / (1.25 * scale))
            }
            None => None,
        };
        // Sustained change: the likelihood of the recent errors (sparse raw scores, ≈ 0 for
        // usual errors, → 1 from about six deviations), as a tail probability.
        let raw = z_err.map_or(0.0, |z| 1.0 - (-z * z / 18.0).exp());
        let mut tail = 1.0 - self.likelihood.update(raw);
        // A single error far outside the usual (once about a hundred errors have set their
        // usual size): the tail of the series' own recent errors, or while fewer than
        // `ErrorTail::MIN` were seen, a two-sided normal tail.
        if let Some(z) = z_err {
            if self.seen >= self.learning + 100 {
                let single = self
                    .errors
                    .tail(z)
                    .unwrap_or_else(|| libm::erfc(z / std::f64::consts::SQRT_2));
                tail = tail.min(single);
            }
            self.errors.push(z);
        }
        // NAB's filter: only the first of consecutive "red" values (tail ≤ 1e-5) stays red,
        // the rest of the run is "yellow" (1e-3), so one event is reported once.
        let filtered = if tail <= 1e-5 && self.prev_tail <= 1e-5 {
            1e-3
        } else {
            tail
        };
        self.prev_tail = tail;
        let mut score = AnomalyLikelihood::log_score(1.0 - filtered);
        // The range is judged once the probationary period has shown it (a shorter history
        // mistakes a daily cycle's rise for an anomaly).
        if self.seen >= cfg.probation && self.max >= self.min {
            let tolerance = cfg.spatial_tolerance * (self.max - self.min);
            if x > self.max + tolerance || x < self.min - tolerance {
                score = 1.0;
            }
        }
        if x.is_finite() {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.advance(x, z);
        self.seen += 1;
        score
    }

    /// Moves the model input and the standardisation past `x` (standardised: `z`).
    fn advance(&mut self, x: f64, z: f64) {
        if x.is_finite() {
            self.scaler.update(x);
        }
        self.window.push_back(clip(z));
        if self.window.len() > self.width {
            self.window.pop_front();
        }
    }
}

/// The standardised values of a series and its (window → next) training examples.
fn examples(cfg: &ForecasterConfig, values: &[f64], x: &mut Vec<f32>, y: &mut Vec<f32>) {
    let mut scaler = Scaler::new(cfg.scale_memory);
    let mut z = Vec::with_capacity(values.len());
    for &v in values {
        z.push(scaler.z(v));
        if v.is_finite() {
            scaler.update(v);
        }
    }
    // The first values are standardised against almost nothing: leave them out.
    let start = cfg.window.max(10);
    for i in start..z.len() {
        x.extend_from_slice(&z[i - cfg.window..i]);
        y.push(z[i]);
    }
}

/// A univariate forecaster (see the module docs).
#[derive(Debug)]
pub struct Forecaster {
    pub cfg: ForecasterConfig,
    net: Mlp,
}

impl Forecaster {
    pub fn new(cfg: ForecasterConfig) -> Result<Self> {
        let net = Mlp::new(&Self::sizes(&cfg), cfg.seed)?;
        Ok(Self { cfg, net })
    }

    fn sizes(cfg: &ForecasterConfig) -> Vec<usize> {
        vec![cfg.window.max(1), cfg.hidden.max(1), cfg.hidden.max(1), 1]
    }

    pub fn from_safetensors(cfg: ForecasterConfig, bytes: &[u8]) -> Result<Self> {
        let net = Mlp::from_safetensors(&Self::sizes(&cfg), bytes)?;
        Ok(Self { cfg, net })
    }

    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.net.to_safetensors()
    }

    /// Trains in batch on every window of every series (`epochs` passes, shuffled batches).
    pub fn fit(&mut self, series: &[&[f64]]) -> Result<TrainReport> {
        let started = std::time::Instant::now();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for s in series {
            examples(&self.cfg, s, &mut x, &mut y);
        }
        let report = fit_examples(
            &self.net,
            &x,
            &y,
            self.cfg.window,
            1,
            self.cfg.epochs,
            self.cfg.batch,
            self.cfg.learning_rate,
            self.cfg.seed,
        )?;
        Ok(TrainReport {
            series: series.len(),
            seconds: started.elapsed().as_secs_f64(),
            ..report
        })
    }

    /// Scores one series with the model as it is (no learning), causally: the first
    /// `learning` values only warm up the standardisation. Returns a score in [0, 1] per value.
    pub fn score(&self, values: &[f64], learning: usize) -> Result<Vec<f64>> {
        let mut state = SeriesState::new(&self.cfg, learning);
        // The standardised inputs do not depend on predictions: predict them all at once.
        let mut inputs = Vec::new();
        let mut rows = Vec::with_capacity(values.len());
        let mut probe = state.clone();
        for &v in values {
            let (z, input) = probe.input(v);
            rows.push((z, input.is_some()));
            if let Some(i) = input {
                inputs.extend(i);
            }
            probe.advance(v, z);
        }
        let n = inputs.len() / self.cfg.window.max(1);
        let predictions = if n > 0 {
            self.net.predict(inputs, n)?
        } else {
            Vec::new()
        };
        let mut p = predictions.into_iter();
        Ok(values
            .iter()
            .zip(rows)
            .map(|(&v, (z, has))| {
                let predicted = if has { p.next() } else { None };
                state.finish(v, z, predicted, &self.cfg)
            })
            .collect())
    }
}

/// The forecaster as an online detector: it scores while it learns, trains in batch on the
/// first half of its probationary period, then takes one optimiser step every `online_every`
/// values on the latest windows. Each score uses only earlier values.
#[derive(Debug)]
pub struct OnlineForecaster {
    model: Forecaster,
    opt: Option<AdamW>,
    state: SeriesState,
    history: VecDeque<f64>,
    trained: bool,
    /// Model failures (each scores its value 0 rather than stopping the series), and the
    /// first of them.
    pub errors: usize,
    pub first_error: Option<String>,
}

impl OnlineForecaster {
    pub fn new(cfg: ForecasterConfig) -> Result<Self> {
        let learning = cfg.probation / 2;
        let state = SeriesState::new(&cfg, learning);
        Ok(Self {
            model: Forecaster::new(cfg)?,
            opt: None,
            state,
            history: VecDeque::new(),
            trained: false,
            errors: 0,
            first_error: None,
        })
    }

    /// Scores a whole series with a fresh online forecaster whose probationary period is NAB's
    /// for the series' length (its length only); the first model failure is an error.
    pub fn score_whole(values: &[f64]) -> Result<Vec<f64>> {
        let mut f = Self::new(ForecasterConfig {
            probation: crate::nab::probation_rows(values.len()),
            ..ForecasterConfig::default()
        })?;
        let scores = f.score_series(values);
        match f.first_error {
            None => Ok(scores),
            Some(e) => Err(Error::input(
                "forecaster",
                format!("failed on {} values, first: {e}", f.errors),
            )),
        }
    }

    fn try_update(&mut self, x: f64) -> Result<f64> {
        let cfg = self.model.cfg.clone();
        let learning = cfg.probation / 2;
        if !self.trained && self.history.len() >= learning.max(cfg.window + 20) {
            let values: Vec<f64> = self.history.iter().copied().collect();
            self.model.fit(&[&values])?;
            self.opt = Some(self.model.net.optimizer(cfg.learning_rate)?);
            self.trained = true;
        } else if self.trained
            && self.state.seen.is_multiple_of(cfg.online_every.max(1))
            && let Some(opt) = self.opt.as_mut()
        {
            // One step on the most recent windows (their inputs standardised causally).
            let tail: Vec<f64> = self
                .history
                .iter()
                .skip(
                    self.history
                        .len()
                        .saturating_sub(cfg.batch + cfg.window + 10),
                )
                .copied()
                .collect();
            let (mut bx, mut by) = (Vec::new(), Vec::new());
            examples(&cfg, &tail, &mut bx, &mut by);
            if !by.is_empty() {
                let rows = by.len();
                self.model.net.step(opt, bx, by, rows)?;
            }
        }
        let (z, input) = self.state.input(x);
        let predicted = match (self.trained, input) {
            (true, Some(i)) => self.model.net.predict(i, 1)?.first().copied(),
            _ => None,
        };
        let score = self.state.finish(x, z, predicted, &cfg);
        if x.is_finite() {
            self.history.push_back(x);
            if self.history.len() > cfg.probation.max(cfg.batch + cfg.window + 10) {
                self.history.pop_front();
            }
        }
        Ok(score)
    }
}

impl Detector for OnlineForecaster {
    fn update(&mut self, x: f64) -> f64 {
        match self.try_update(x) {
            Ok(s) => s,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                0.0
            }
        }
    }
}
