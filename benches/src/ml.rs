//! `sakura-bench ml`: scoring throughput of each anomaly detector on one core (points per
//! second, median of `--runs`), against the target of 1,000,000 points/s per core for
//! the statistical detectors; then the Candle models: training time on a 10,000-point series
//! (the forecaster) and on 10,000 metric vectors (the autoencoder), and their scoring
//! throughput. No peer: the targets are absolute.

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
    /// Points (and metric vectors) the frozen Candle models score.
    #[arg(long, default_value_t = 1_000_000)]
    candle_points: usize,
    /// Points the online forecaster scores (it trains as it goes, so it is slower).
    #[arg(long, default_value_t = 100_000)]
    online_points: usize,
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
    candle(args, &values)
}

/// The Candle models: training time and scoring throughput (medians of `--runs`).
fn candle(args: &MlArgs, values: &[f64]) -> crate::error::Result<()> {
    let runs = args.runs.max(1);
    let train = &values[..10_000.min(values.len())];
    let scored = &values[..args.candle_points.min(values.len())];
    let online = &values[..args.online_points.min(values.len())];
    let (mut fit_s, mut score_rate, mut online_rate) = (Vec::new(), Vec::new(), Vec::new());
    let mut flagged = (0, 0);
    for _ in 0..runs {
        let mut f = ml::Forecaster::new(ml::ForecasterConfig::default())?;
        let started = Instant::now();
        f.fit(&[train])?;
        fit_s.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let s = f.score(scored, 50)?;
        score_rate.push(scored.len() as f64 / started.elapsed().as_secs_f64());
        flagged.0 = s.iter().filter(|v| **v >= 0.5).count();
        let mut o = ml::OnlineForecaster::new(ml::ForecasterConfig::default())?;
        let started = Instant::now();
        let s = o.score_series(online);
        online_rate.push(online.len() as f64 / started.elapsed().as_secs_f64());
        flagged.1 = s.iter().filter(|v| **v >= 0.5).count();
    }
    // The autoencoder: 4 correlated metrics per row (load, its latency, its request rate, and
    // an independent one), 10,000 rows to train on.
    let rows: Vec<Vec<f64>> = values
        .iter()
        .take(args.candle_points)
        .enumerate()
        .map(|(i, v)| {
            let load = v / 60.0;
            vec![
                *v,
                40.0 * (1.0 + load),
                400.0 * load,
                ((i * 7919) % 13) as f64,
            ]
        })
        .collect();
    let (mut ae_fit, mut ae_rate) = (Vec::new(), Vec::new());
    let mut ae_flagged = 0;
    for _ in 0..runs {
        let mut a = ml::Autoencoder::new(4, ml::AutoencoderConfig::default())?;
        let started = Instant::now();
        a.fit(&rows[..10_000.min(rows.len())])?;
        ae_fit.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let s = a.score(&rows)?;
        ae_rate.push(rows.len() as f64 / started.elapsed().as_secs_f64());
        ae_flagged = s.iter().filter(|v| v.score >= 0.9999).count();
    }
    println!(
        "\n{:<34} {:>12} {:>14} {:>9}",
        "Candle model", "train (s)", "points/s/core", "flagged"
    );
    println!(
        "{:<34} {:>12.2} {:>14.0} {:>9}",
        "forecaster, batch-trained, frozen",
        median(fit_s),
        median(score_rate),
        flagged.0
    );
    println!(
        "{:<34} {:>12} {:>14.0} {:>9}",
        "forecaster, online (NAB mode)",
        "-",
        median(online_rate),
        flagged.1
    );
    println!(
        "{:<34} {:>12.2} {:>14.0} {:>9}",
        "autoencoder (4 metrics)",
        median(ae_fit),
        median(ae_rate),
        ae_flagged
    );
    println!(
        "(training on 10,000 points / vectors: forecaster {} epochs, autoencoder {} + {} epochs; \
         scoring {} points frozen, {} online; median of {runs} runs)",
        ml::ForecasterConfig::default().epochs,
        ml::AutoencoderConfig::default().epochs,
        ml::AutoencoderConfig::default().epochs / 2,
        scored.len(),
        online.len(),
    );
    Ok(())
}
