//! Learned detectors in Candle (CPU):
//!
//! - [`Forecaster`]: a small MLP that predicts a series' next value from the previous `window`
//!   values, each standardised by a causal running mean and deviation of the series (so one
//!   model serves every series of a metric group). Its prediction errors become a calibrated
//!   score through [`AnomalyLikelihood`]; a value beyond the range seen so far (by more than
//!   `spatial_tolerance` of that range) scores 1, as in NAB's HTM detector. Trainable in batch
//!   ([`Forecaster::fit`]) and online ([`OnlineForecaster`], one optimiser step every
//!   `online_every` values on the most recent windows).
//! - [`Autoencoder`]: an MLP autoencoder over the vector of several metrics of one host at one
//!   time; its reconstruction error, calibrated against the training errors, is the score, and
//!   each metric's share of the error says which metrics contributed.
//!
//! Weights travel as safetensors ([`Mlp::to_safetensors`]); the model registry stores them with
//! a JSON [`crate::ModelMeta`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::detectors::Detector;
use crate::error::{Error, Result};
use crate::likelihood::AnomalyLikelihood;

/// A fully connected network: `tanh` between layers, linear output.
#[derive(Debug)]
pub struct Mlp {
    sizes: Vec<usize>,
    vars: Vec<(String, Var)>,
    layers: Vec<Linear>,
}

impl Mlp {
    /// A network with layer widths `sizes` (input first), weights drawn from `seed`.
    pub fn new(sizes: &[usize], seed: u64) -> Result<Self> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let weight: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let bias: Vec<f32> = (0..fan_out)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let weight = Tensor::from_vec(weight, (fan_out, fan_in), &Device::Cpu)
                .map_err(Error::candle("initialising a layer"))?;
            let bias = Tensor::from_vec(bias, fan_out, &Device::Cpu)
                .map_err(Error::candle("initialising a layer"))?;
            tensors.insert(format!("l{i}.weight"), weight);
            tensors.insert(format!("l{i}.bias"), bias);
        }
        Self::from_tensors(sizes, tensors)
    }

    fn from_tensors(sizes: &[usize], mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut vars = Vec::new();
        let mut layers = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let mut take = |name: String, shape: &[usize]| -> Result<Var> {
                let t = tensors.remove(&name).ok_or_else(|| {
                    Error::input("model weights", format!("the tensor {name} is missing"))
                })?;
                if t.dims() != shape {
                    return Err(Error::input(
                        "model weights",
                        format!("{name} has shape {:?}, expected {shape:?}", t.dims()),
                    ));
                }
                let t = t
                    .to_dtype(DType::F32)
                    .map_err(Error::candle(format!("reading {name}")))?;
                let v = Var::from_tensor(&t).map_err(Error::candle(format!("reading {name}")))?;
                vars.push((name, v.clone()));
                Ok(v)
            };
            let weight = take(format!("l{i}.weight"), &[w[1], w[0]])?;
            let bias = take(format!("l{i}.bias"), &[w[1]])?;
            layers.push(Linear::new(
                weight.as_tensor().clone(),
                Some(bias.as_tensor().clone()),
            ));
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            vars,
            layers,
        })
    }

    /// The network's weights as a safetensors file.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors: Vec<(&str, &Tensor)> = self
            .vars
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_tensor()))
            .collect();
        safetensors::serialize(tensors, None).map_err(|source| Error::Weights {
            what: "serialising model weights".into(),
            source,
        })
    }

    /// A network of layer widths `sizes` from a safetensors file; the shapes must match.
    pub fn from_safetensors(sizes: &[usize], bytes: &[u8]) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(Error::candle("reading model weights (safetensors)"))?;
        Self::from_tensors(sizes, tensors)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.tanh()?;
            }
        }
        Ok(h)
    }

    /// Outputs for `rows` inputs laid out row by row in `x`.
    fn predict(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let input = self.sizes[0];
        let run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::from_vec(x, (rows, input), &Device::Cpu)?;
            self.forward(&x)?.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(Error::candle("running the model"))
    }

    fn optimizer(&self, lr: f64) -> Result<AdamW> {
        AdamW::new(
            self.vars.iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )
        .map_err(Error::candle("creating the optimiser"))
    }

    /// One optimiser step on mean squared error; returns the loss before the step.
    fn step(&self, opt: &mut AdamW, x: Vec<f32>, y: Vec<f32>, rows: usize) -> Result<f32> {
        let (input, output) = (self.sizes[0], self.sizes[self.sizes.len() - 1]);
        let run = || -> candle_core::Result<f32> {
            let x = Tensor::from_vec(x, (rows, input), &Device::Cpu)?;
            let y = Tensor::from_vec(y, (rows, output), &Device::Cpu)?;
            let loss = candle_nn::loss::mse(&self.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            loss.to_scalar::<f32>()
        };
        run().map_err(Error::candle("a training step"))
    }
}

fn clip(z: f64) -> f32 {
    if z.is_finite() {
        z.clamp(-10.0, 10.0) as f32
    } else {
        0.0
    }
}

/// What a training run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub series: usize,
    /// Training examples (windows for the forecaster, metric vectors for the autoencoder).
    pub examples: usize,
    pub epochs: usize,
    pub first_loss: f64,
    pub final_loss: f64,
    pub seconds: f64,
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

#[allow(clippy::too_many_arguments)]
fn fit_examples(
    net: &Mlp,
    x: &[f32],
    y: &[f32],
    input: usize,
    output: usize,
    epochs: usize,
    batch: usize,
    lr: f64,
    seed: u64,
) -> Result<TrainReport> {
    let n = y.len() / output.max(1);
    if n == 0 {
        return Err(Error::input(
            "training",
            "no training examples (the series are shorter than the model's window)",
        ));
    }
    let mut opt = net.optimizer(lr)?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let batch = batch.max(1);
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    for epoch in 0..epochs.max(1) {
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(batch) {
            let mut bx = Vec::with_capacity(chunk.len() * input);
            let mut by = Vec::with_capacity(chunk.len() * output);
            for &i in chunk {
                bx.extend_from_slice(&x[i * input..(i + 1) * input]);
                by.extend_from_slice(&y[i * output..(i + 1) * output]);
            }
            sum += f64::from(net.step(&mut opt, bx, by, chunk.len())?);
            batches += 1;
        }
        let mean = sum / f64::from(batches.max(1));
        if epoch == 0 {
            first = mean;
        }
        last = mean;
    }
    Ok(TrainReport {
        series: 0,
        examples: n,
        epochs: epochs.max(1),
        first_loss: first,
        final_loss: last,
        seconds: 0.0,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 50.0 + 10.0 * (i as f64 * 0.05).sin() + ((i * 7919) % 17) as f64 * 0.05)
            .collect()
    }

    #[test]
    fn forecaster_learns_a_wave_and_scores_a_break_in_it() {
        let values = wave(3000);
        let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
        let report = f.fit(&[&values[..1500]]).unwrap();
        assert!(
            report.final_loss < report.first_loss / 2.0,
            "training did not learn: {report:?}"
        );
        let mut test = values.clone();
        test[2500] += 8.0; // inside the range, but off the wave
        let scores = f.score(&test, 100).unwrap();
        assert!(scores[2500] >= 0.5, "the break scored {}", scores[2500]);
        let quiet = scores[1000..2490].iter().cloned().fold(0.0, f64::max);
        assert!(quiet < 0.5, "the plain wave scored up to {quiet}");
    }

    #[test]
    fn weights_round_trip_through_safetensors() {
        let values = wave(600);
        let mut f = Forecaster::new(ForecasterConfig {
            epochs: 2,
            ..ForecasterConfig::default()
        })
        .unwrap();
        f.fit(&[&values]).unwrap();
        let bytes = f.to_safetensors().unwrap();
        let g = Forecaster::from_safetensors(f.cfg.clone(), &bytes).unwrap();
        assert_eq!(f.score(&values, 50).unwrap(), g.score(&values, 50).unwrap());
        let wrong = ForecasterConfig {
            window: 8,
            ..ForecasterConfig::default()
        };
        let err = Forecaster::from_safetensors(wrong, &bytes).unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
    }

    #[test]
    fn online_forecaster_is_causal_and_flags_a_spike() {
        let mut values = wave(2000);
        values[1500] = 200.0;
        let cfg = ForecasterConfig {
            probation: 400,
            ..ForecasterConfig::default()
        };
        let scores = OnlineForecaster::new(cfg.clone())
            .unwrap()
            .score_series(&values);
        assert!(scores[1500] >= 0.5);
        // Causal: the prefix scores the same without the future.
        let prefix = OnlineForecaster::new(cfg)
            .unwrap()
            .score_series(&values[..1500]);
        assert_eq!(prefix[..], scores[..1500]);
    }

    #[test]
    fn autoencoder_names_the_metric_that_broke_the_pattern() {
        // Two metrics that move together, and a third independent one.
        let rows: Vec<Vec<f64>> = (0..2000)
            .map(|i| {
                let load = (i as f64 * 0.01).sin();
                let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
                vec![
                    50.0 + 30.0 * load,
                    200.0 + 100.0 * load + noise,
                    10.0 + noise,
                ]
            })
            .collect();
        let mut ae = Autoencoder::new(3, AutoencoderConfig::default()).unwrap();
        ae.fit(&rows).unwrap();
        let mut odd = rows[100].clone();
        odd[1] += 150.0; // metric 1 no longer follows metric 0
        let scored = ae.score(&[rows[100].clone(), odd]).unwrap();
        assert!(
            scored[0].score < 0.9999,
            "a normal row scored {}",
            scored[0].score
        );
        assert!(
            scored[1].score >= 0.9999,
            "the broken row scored {}",
            scored[1].score
        );
        assert_eq!(scored[1].contributing.first(), Some(&1));
        let bytes = ae.to_safetensors().unwrap();
        let again =
            Autoencoder::from_safetensors(3, ae.cfg.clone(), ae.stats.clone(), &bytes).unwrap();
        assert_eq!(
            again.score(&rows[..50]).unwrap(),
            ae.score(&rows[..50]).unwrap()
        );
    }
}
