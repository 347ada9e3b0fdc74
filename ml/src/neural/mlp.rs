//! The network both learned detectors use: a fully connected MLP, its training loop, and its
//! weights as safetensors.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    pub(super) fn predict(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let input = self.sizes[0];
        let run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::from_vec(x, (rows, input), &Device::Cpu)?;
            self.forward(&x)?.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(Error::candle("running the model"))
    }

    pub(super) fn optimizer(&self, lr: f64) -> Result<AdamW> {
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
    pub(super) fn step(
        &self,
        opt: &mut AdamW,
        x: Vec<f32>,
        y: Vec<f32>,
        rows: usize,
    ) -> Result<f32> {
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

#[allow(clippy::too_many_arguments)]
pub(super) fn fit_examples(
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
