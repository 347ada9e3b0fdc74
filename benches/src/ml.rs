//! `sakura-bench ml`: scoring throughput of each anomaly detector on one core (points per
//! second, median of `--runs`), against the target of 1,000,000 points/s per core for
//! the statistical detectors. No peer: the target is absolute.

use ml::Detector as _;
use std::time::Instant;

/// A deterministic series: a daily-like sine, noise from a small LCG, and a spike every 5,000
/// points.
fn series(n: usize) -> Vec<f64> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            let base = 50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + noise;
            if i % 5_000 == 4_999 {
                base + 40.0
            } else {
                base
            }
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub(crate) struct MlArgs {
    /// Points in the series each detector scores.
    #[arg(long, default_value_t = 5_000_000)]
    points: usize,
    /// Runs per detector; the table shows medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn run(args: &MlArgs) -> crate::error::Result<()> {
    let values = series(args.points);
    type Run = fn(&[f64]) -> Vec<f64>;
    let detectors: [(&str, Run); 3] = [
        ("windowed_gaussian", |v| {
            ml::WindowedGaussian::default().score_series(v)
        }),
        ("robust_zscore", |v| {
            ml::RobustZScore::default().score_series(v)
        }),
        ("ewma", |v| ml::Ewma::default().score_series(v)),
    ];
    println!(
        "{:<20} {:>14} {:>10} {:>8}",
        "detector", "points/s/core", "flagged", "target"
    );
    for (name, run) in detectors {
        let mut rates = Vec::new();
        let mut flagged = 0;
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            let scores = run(&values);
            let secs = started.elapsed().as_secs_f64();
            flagged = scores.iter().filter(|s| **s >= 0.9999).count();
            rates.push(values.len() as f64 / secs);
        }
        let rate = median(rates);
        println!(
            "{name:<20} {rate:>14.0} {flagged:>10} {:>8}",
            crate::verdict(rate >= 1_000_000.0)
        );
    }
    println!(
        "({} points, {} spikes, single thread, median of {} runs)",
        values.len(),
        values.len() / 5_000,
        args.runs.max(1)
    );
    Ok(())
}
