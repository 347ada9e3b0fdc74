//! Anomaly likelihood: turns a detector's raw error scores into a calibrated probability that
//! the recent behaviour is abnormal (a port of NAB's / Numenta's `AnomalyLikelihood`).
//!
//! The raw scores of a learning period are skipped; the next `estimation` ones fix a normal
//! distribution of the 10-value moving average of raw scores, re-estimated every
//! `reestimation` values over the last `history` raw scores. A value's likelihood is
//! `1 − Q(moving average)` under that distribution: 0.5 while learning, → 1 when the recent
//! errors are far above their usual level. `log_score` maps it to NAB's log scale, where
//! 0.5 ⇔ likelihood 0.99999 (NAB's "red" level).

use std::collections::VecDeque;

/// The moving-average window of raw scores (NAB's `windowSize`).
const AVERAGE_OVER: usize = 10;

#[derive(Debug, Clone)]
pub struct AnomalyLikelihood {
    learning: usize,
    estimation: usize,
    reestimation: usize,
    history: usize,
    seen: usize,
    raw: VecDeque<f64>,
    recent: VecDeque<f64>,
    mean: f64,
    std: f64,
    fitted: bool,
}

impl AnomalyLikelihood {
    /// `learning` raw scores are ignored (the detector is still learning), the next
    /// `estimation` fix the first distribution.
    pub fn new(learning: usize, estimation: usize) -> Self {
        Self {
            learning,
            estimation: estimation.max(AVERAGE_OVER),
            reestimation: 100,
            history: 8640,
            seen: 0,
            raw: VecDeque::new(),
            recent: VecDeque::new(),
            mean: 0.0,
            std: 1.0,
            fitted: false,
        }
    }

    /// NAB's split of a probationary period: half learning, half estimation.
    pub fn for_probation(probation: usize) -> Self {
        let learning = probation / 2;
        Self::new(learning, probation.saturating_sub(learning))
    }

    fn estimate(&mut self) {
        // Skip what is still inside the learning period of what the history holds.
        let shifted_out = self.seen.saturating_sub(self.history);
        let skip = self
            .learning
            .saturating_sub(shifted_out)
            .min(self.raw.len());
        let mut window = VecDeque::with_capacity(AVERAGE_OVER);
        let mut sum = 0.0;
        let mut averages = Vec::with_capacity(self.raw.len() - skip);
        for &r in self.raw.iter().skip(skip) {
            window.push_back(r);
            sum += r;
            if window.len() > AVERAGE_OVER
                && let Some(old) = window.pop_front()
            {
                sum -= old;
            }
            averages.push(sum / window.len() as f64);
        }
        if averages.is_empty() {
            return;
        }
        let n = averages.len() as f64;
        let mean = averages.iter().sum::<f64>() / n;
        let var = averages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
        // NAB's lower bounds: a detector that is almost always right still has some spread.
        self.mean = mean.max(0.03);
        self.std = var.max(0.0003).sqrt();
        self.fitted = true;
    }

    /// The likelihood that the behaviour up to and including `raw` is abnormal, in [0, 1].
    pub fn update(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() {
            raw.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.recent.push_back(raw);
        if self.recent.len() > AVERAGE_OVER {
            self.recent.pop_front();
        }
        let likelihood = if self.seen < self.learning + self.estimation {
            0.5
        } else {
            if !self.fitted || self.seen.is_multiple_of(self.reestimation) {
                self.estimate();
            }
            let avg = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
            // One-sided: only errors above their usual level are abnormal; NAB mirrors values
            // below the mean, which gives the same tail.
            let z = (avg - self.mean).abs() / self.std;
            1.0 - 0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
        };
        self.raw.push_back(raw);
        if self.raw.len() > self.history {
            self.raw.pop_front();
        }
        self.seen += 1;
        likelihood
    }

    /// NAB's log scale: `ln(1.0000000001 − L) / ln(1e-10)`, in [0, 1]; 0.5 ⇔ L = 0.99999.
    pub fn log_score(likelihood: f64) -> f64 {
        ((1.000_000_000_1 - likelihood).ln() / (1e-10f64).ln()).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_errors_stay_low_and_a_burst_goes_red() {
        let mut l = AnomalyLikelihood::for_probation(300);
        let mut last = 0.0;
        for i in 0..2000 {
            let raw = 0.1 + 0.05 * ((i * 7919) % 13) as f64 / 13.0;
            last = AnomalyLikelihood::log_score(l.update(raw));
            if i >= 300 {
                assert!(last < 0.5, "steady row {i} scored {last}");
            }
        }
        assert!(last < 0.5);
        let mut peak: f64 = 0.0;
        for _ in 0..5 {
            peak = peak.max(AnomalyLikelihood::log_score(l.update(1.0)));
        }
        assert!(peak >= 0.5, "a burst of full errors scored only {peak}");
    }

    #[test]
    fn learning_period_scores_one_half() {
        let mut l = AnomalyLikelihood::new(10, 20);
        for _ in 0..30 {
            assert_eq!(l.update(0.9), 0.5);
        }
    }
}
