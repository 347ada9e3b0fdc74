//! Statistical detectors over one univariate series, each causal: the score of a value uses
//! only the values before it. Scores are in [0, 1].

/// A causal detector: each value is scored against those before it, then learned.
pub trait Detector {
    /// Scores `x` against the values seen so far, then learns it.
    fn update(&mut self, x: f64) -> f64;

    /// Scores a whole series in order.
    fn score_series(&mut self, values: &[f64]) -> Vec<f64> {
        values.iter().map(|&v| self.update(v)).collect()
    }
}

/// NAB's Windowed Gaussian: the two-sided tail probability of a value under a normal fitted to
/// the last `window` values (refitted every `step` values once the window is full); the score
/// is `1 − P(tail)`, so a typical value scores ≈ 0.5 and an extreme one → 1.
#[derive(Debug, Clone)]
pub struct WindowedGaussian {
    window: usize,
    step: usize,
    data: Vec<f64>,
    pending: Vec<f64>,
    mean: f64,
    std: f64,
    /// Welford's running sum of squared deviations while the window fills.
    m2: f64,
}

impl Default for WindowedGaussian {
    /// NAB's settings: a 6,400-value window moved 100 values at a time.
    fn default() -> Self {
        Self::new(6400, 100)
    }
}

impl WindowedGaussian {
    pub fn new(window: usize, step: usize) -> Self {
        Self {
            window: window.max(1),
            step: step.max(1),
            data: Vec::new(),
            pending: Vec::new(),
            mean: 0.0,
            std: 1.0,
            m2: 0.0,
        }
    }

    /// Two-pass mean and deviation of the whole window (after it slides).
    fn refit(&mut self) {
        let n = self.data.len() as f64;
        self.mean = self.data.iter().sum::<f64>() / n;
        let var = self
            .data
            .iter()
            .map(|v| (v - self.mean).powi(2))
            .sum::<f64>()
            / n;
        self.std = var.sqrt();
        if self.std == 0.0 {
            self.std = 0.000_001;
        }
    }
}

impl Detector for WindowedGaussian {
    /// Scores `x` against the values seen so far, then learns it.
    fn update(&mut self, x: f64) -> f64 {
        let score = if self.data.is_empty() {
            0.0
        } else {
            let z = (x - self.mean).abs() / self.std;
            1.0 - 0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
        };
        if self.data.len() < self.window {
            // While the window fills, update the fit in O(1) (Welford) instead of refitting.
            self.data.push(x);
            let n = self.data.len() as f64;
            let d = x - self.mean;
            self.mean += d / n;
            self.m2 += d * (x - self.mean);
            self.std = (self.m2 / n).max(0.0).sqrt();
            if self.std == 0.0 {
                self.std = 0.000_001;
            }
        } else {
            self.pending.push(x);
            if self.pending.len() == self.step {
                self.data.drain(..self.step);
                self.data.append(&mut self.pending);
                self.refit();
            }
        }
        score
    }
}

/// `1 − P(two-sided normal tail beyond z)`: 0.5 at z = 0, → 1 as |z| grows.
fn tail_score(z: f64) -> f64 {
    1.0 - 0.5 * libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// Robust z-score: the distance of a value from the median of the last `window` values in units
/// of their MAD (× 1.4826, the normal-consistent scale), mapped like a normal tail. Medians
/// ignore the outliers that inflate a Gaussian's mean and deviation. Where the MAD is 0 (half
/// the window on one value), the mean absolute deviation stands in. The scale is refreshed
/// every `step` values.
#[derive(Debug, Clone)]
pub struct RobustZScore {
    window: usize,
    step: usize,
    order: std::collections::VecDeque<f64>,
    sorted: Vec<f64>,
    /// The window's spread: 1.4826 × MAD, or 1.2533 × the mean absolute deviation when the MAD
    /// is 0.
    scale: f64,
    since_refit: usize,
}

impl Default for RobustZScore {
    fn default() -> Self {
        Self::new(2000, 10)
    }
}

impl RobustZScore {
    pub fn new(window: usize, step: usize) -> Self {
        Self {
            window: window.max(3),
            step: step.max(1),
            order: std::collections::VecDeque::new(),
            sorted: Vec::new(),
            scale: 0.0,
            since_refit: usize::MAX,
        }
    }

    fn median(sorted: &[f64]) -> f64 {
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }
}

/// The median absolute deviation of the sorted `window` around its median `med`: the deviation
/// of rank `len / 2`. The deviations form two sorted runs — left of the median read backwards,
/// right of it read forwards — so that rank is found by binary search in O(log n), without
/// computing or selecting among all of them.
fn mad_of_sorted(window: &[f64], med: f64) -> f64 {
    let split = window.partition_point(|v| *v < med);
    let (below, above) = window.split_at(split);
    let left = |k: usize| med - below[below.len() - 1 - k];
    let right = |k: usize| above[k] - med;
    kth_of_two_sorted(left, below.len(), right, above.len(), window.len() / 2)
}

/// The element of 0-based rank `k` in the union of two ascending sequences given by index
/// (`a` of length `m`, `b` of length `n`, `k < m + n`). Binary search on how many of the `k + 1`
/// smallest come from `a`.
fn kth_of_two_sorted(
    a: impl Fn(usize) -> f64,
    m: usize,
    b: impl Fn(usize) -> f64,
    n: usize,
    k: usize,
) -> f64 {
    let (mut lo, mut hi) = ((k + 1).saturating_sub(n), (k + 1).min(m));
    while lo < hi {
        let i = lo + (hi - lo) / 2;
        let j = k + 1 - i;
        // Taking i from `a` is too few when a's next is below the last taken from `b`.
        if j > 0 && a(i) < b(j - 1) {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    let (i, j) = (lo, k + 1 - lo);
    match (i > 0, j > 0) {
        (true, true) => a(i - 1).max(b(j - 1)),
        (true, false) => a(i - 1),
        (false, true) => b(j - 1),
        (false, false) => f64::NAN,
    }
}

impl Detector for RobustZScore {
    fn update(&mut self, x: f64) -> f64 {
        let score = if self.sorted.len() < 10 || !x.is_finite() {
            0.0
        } else {
            let med = Self::median(&self.sorted);
            if self.since_refit >= self.step {
                let mad = mad_of_sorted(&self.sorted, med);
                self.scale = if mad > 0.0 {
                    1.4826 * mad
                } else {
                    // Half the window or more sits on the median (a quantized or mostly flat
                    // metric), so the MAD is 0 and every other value would be infinitely far.
                    // The mean absolute deviation still measures the spread; × 1.2533 makes it
                    // normal-consistent (Iglewicz and Hoaglin's modified z-score).
                    let total: f64 = self.sorted.iter().map(|v| (v - med).abs()).sum();
                    1.2533 * total / self.sorted.len() as f64
                };
                self.since_refit = 0;
            }
            let scale = self.scale.max(1e-9 * med.abs().max(1.0));
            tail_score((x - med) / scale)
        };
        if x.is_finite() {
            let at = self.sorted.partition_point(|v| *v < x);
            self.sorted.insert(at, x);
            self.order.push_back(x);
            if self.order.len() > self.window
                && let Some(old) = self.order.pop_front()
            {
                let at = self.sorted.partition_point(|v| *v < old);
                self.sorted.remove(at.min(self.sorted.len() - 1));
            }
            self.since_refit = self.since_refit.saturating_add(1);
        }
        score
    }
}

/// EWMA: exponentially weighted mean and variance (weight `alpha` on each new value); a value's
/// score is its distance from the mean in units of the weighted standard deviation, mapped like
/// a normal tail. Adapts to level shifts in about `1/alpha` values; the first `warmup` score 0.
#[derive(Debug, Clone)]
pub struct Ewma {
    alpha: f64,
    warmup: usize,
    seen: usize,
    mean: f64,
    var: f64,
}

impl Default for Ewma {
    fn default() -> Self {
        Self::new(0.01, 100)
    }
}

impl Ewma {
    pub fn new(alpha: f64, warmup: usize) -> Self {
        Self {
            alpha: alpha.clamp(1e-6, 1.0),
            warmup,
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }
}

impl Detector for Ewma {
    fn update(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let score = if self.seen < self.warmup.max(2) {
            0.0
        } else {
            let sd = self.var.sqrt().max(1e-9 * self.mean.abs().max(1.0));
            tail_score((x - self.mean) / sd)
        };
        if self.seen == 0 {
            self.mean = x;
        } else {
            let d = x - self.mean;
            self.mean += self.alpha * d;
            self.var = (1.0 - self.alpha) * (self.var + self.alpha * d * d);
        }
        self.seen += 1;
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_flag_a_spike_and_not_the_noise_around_it() {
        // A deterministic wobble with one spike at 800.
        let mut values: Vec<f64> = (0..1000)
            .map(|i| 10.0 + ((i * 37) % 11) as f64 * 0.1)
            .collect();
        values[800] = 30.0;
        for (name, scores) in [
            (
                "windowed_gaussian",
                WindowedGaussian::default().score_series(&values),
            ),
            (
                "robust_zscore",
                RobustZScore::default().score_series(&values),
            ),
            ("ewma", Ewma::default().score_series(&values)),
        ] {
            assert!(scores[800] > 0.9999, "{name}: spike scored {}", scores[800]);
            let noise = scores[200..800].iter().cloned().fold(0.0, f64::max);
            assert!(noise < 0.9999, "{name}: noise scored up to {noise}");
            assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{name}");
        }
    }

    #[test]
    fn mad_of_a_sorted_window_is_the_selected_deviation() {
        // Windows with ties, odd and even lengths, all below or above the median.
        let mut state = 7u64;
        for len in [1usize, 2, 3, 4, 5, 10, 11, 64, 101, 2000] {
            for spread in [1u64, 3, 1000] {
                let mut window: Vec<f64> = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((state >> 33) % spread) as f64 * 0.5
                    })
                    .collect();
                window.sort_by(f64::total_cmp);
                let med = RobustZScore::median(&window);
                let mut devs: Vec<f64> = window.iter().map(|v| (v - med).abs()).collect();
                let mid = devs.len() / 2;
                let (_, want, _) = devs.select_nth_unstable_by(mid, f64::total_cmp);
                assert_eq!(
                    mad_of_sorted(&window, med),
                    *want,
                    "len {len}, spread {spread}"
                );
            }
        }
    }

    #[test]
    fn robust_zscore_measures_spread_when_most_values_are_equal() {
        // A quantized metric: 0 three times in five, ±1 otherwise (so the MAD is 0), one spike.
        let mut values: Vec<f64> = (0..1000)
            .map(|i| match i % 5 {
                3 => 1.0,
                4 => -1.0,
                _ => 0.0,
            })
            .collect();
        values[900] = 40.0;
        let scores = RobustZScore::default().score_series(&values);
        let usual = scores[100..900].iter().cloned().fold(0.0, f64::max);
        assert!(usual < 0.9999, "its usual values scored up to {usual}");
        assert!(scores[900] > 0.9999, "the spike scored {}", scores[900]);
    }
}
