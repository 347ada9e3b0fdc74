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

mod autoencoder;
mod forecaster;
mod mlp;

pub use autoencoder::{
    Autoencoder, AutoencoderConfig, AutoencoderStats, VectorScore, metric_vectors,
};
pub use forecaster::{Forecaster, ForecasterConfig, OnlineForecaster};
pub use mlp::{Mlp, TrainReport};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::Detector;

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
