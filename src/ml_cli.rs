//! `sakura ml nab`: runs a detector causally over the Numenta Anomaly Benchmark corpus, writes
//! NAB's result layout and prints the three profile scores from the Rust port of NAB's scorer.

use ml::Detector as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ml::nab;

use crate::error::{Error, Result};

/// A detector with the threshold it was configured with in advance (never tuned on the files
/// it is evaluated on).
struct Detector {
    name: &'static str,
    threshold: f64,
    run: fn(&[f64]) -> Result<Vec<f64>>,
}

/// The detectors `--detector` accepts.
fn detectors() -> Vec<Detector> {
    // Each score is 1 − P(two-sided normal tail); ≥ 0.9999 is a deviation of about 3.9
    // standard deviations (or robust equivalents), chosen before any evaluation.
    vec![
        Detector {
            name: "windowed_gaussian",
            threshold: 0.9999,
            run: |v| Ok(ml::WindowedGaussian::default().score_series(v)),
        },
        Detector {
            name: "robust_zscore",
            threshold: 0.9999,
            run: |v| Ok(ml::RobustZScore::default().score_series(v)),
        },
        Detector {
            name: "ewma",
            threshold: 0.9999,
            run: |v| Ok(ml::Ewma::default().score_series(v)),
        },
        // The Candle forecaster scores on NAB's log-likelihood scale, where 0.5 is a
        // likelihood (or a single error's normal tail) of 1 − 1e-5: NAB's "red" level.
        Detector {
            name: "forecaster",
            threshold: 0.5,
            // Trains on the first half of NAB's probationary period for the series' length (the
            // length only, never its labels) and calibrates on the second.
            run: |v| Ok(ml::OnlineForecaster::score_whole(v)?),
        },
    ]
}

fn io(context: String, e: std::io::Error) -> Error {
    Error::io(context, e)
}

fn bad(message: String) -> Error {
    Error::Config {
        key: "--data".into(),
        message,
    }
}

/// One NAB data file: its `category/name.csv` key, timestamps and values.
struct Series {
    key: String,
    timestamps: Vec<String>,
    values: Vec<f64>,
}

fn read_series(data: &Path) -> Result<Vec<Series>> {
    let mut out = Vec::new();
    let root = data.join("data");
    let cats =
        std::fs::read_dir(&root).map_err(|e| io(format!("cannot read {}", root.display()), e))?;
    let mut cats: Vec<PathBuf> = cats
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cats.sort();
    for cat in cats {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cat)
            .map_err(|e| io(format!("cannot read {}", cat.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| io(format!("cannot read {}", file.display()), e))?;
            let mut lines = text.lines();
            if lines.next().map(str::trim) != Some("timestamp,value") {
                return Err(bad(format!(
                    "{}: the header is not timestamp,value",
                    file.display()
                )));
            }
            let (mut timestamps, mut values) = (Vec::new(), Vec::new());
            for (n, line) in lines.enumerate() {
                let (t, v) = line.split_once(',').ok_or_else(|| {
                    bad(format!(
                        "{} line {}: not timestamp,value",
                        file.display(),
                        n + 2
                    ))
                })?;
                let v: f64 = v.trim().parse().map_err(|_| {
                    bad(format!(
                        "{} line {}: {v:?} is not a number",
                        file.display(),
                        n + 2
                    ))
                })?;
                timestamps.push(t.trim().to_string());
                values.push(v);
            }
            let name = |p: &Path| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string()
            };
            out.push(Series {
                key: format!("{}/{}", name(&cat), name(&file)),
                timestamps,
                values,
            });
        }
    }
    if out.is_empty() {
        return Err(bad(format!(
            "no data/<category>/*.csv under {}",
            data.display()
        )));
    }
    Ok(out)
}

/// Scores of one detector on one profile, summed over the corpus.
#[derive(Default)]
struct Totals {
    raw: f64,
    tp: usize,
    fp: usize,
    fn_: usize,
}

pub(crate) fn nab_command(data: &Path, out: &Path, detector: &str) -> Result<()> {
    let all = detectors();
    let chosen: Vec<&Detector> = match detector {
        "all" => all.iter().collect(),
        name => vec![
            all.iter()
                .find(|d| d.name == name)
                .ok_or_else(|| Error::Config {
                    key: "--detector".into(),
                    message: format!(
                        "{name:?} is not a detector; detectors: all, {}",
                        all.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
                    ),
                })?,
        ],
    };
    let profiles_path = data.join("config/profiles.json");
    let profiles = nab::parse_profiles(
        &std::fs::read_to_string(&profiles_path)
            .map_err(|e| io(format!("cannot read {}", profiles_path.display()), e))?,
    )?;
    let windows_path = data.join("labels/combined_windows.json");
    let windows: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(
        &std::fs::read_to_string(&windows_path)
            .map_err(|e| io(format!("cannot read {}", windows_path.display()), e))?,
    )
    .map_err(|e| bad(format!("{}: {e}", windows_path.display())))?;
    let corpus = read_series(data)?;
    let windows_total: usize = corpus
        .iter()
        .map(|s| windows.get(&s.key).map_or(0, Vec::len))
        .sum();
    eprintln!(
        "NAB corpus: {} files, {} rows, {windows_total} anomaly windows",
        corpus.len(),
        corpus.iter().map(|s| s.values.len()).sum::<usize>()
    );

    println!(
        "{:<20} {:>9} {:>10} {:>20} {:>20}",
        "detector", "threshold", "standard", "reward_low_FP_rate", "reward_low_FN_rate"
    );
    for d in chosen {
        let started = std::time::Instant::now();
        let dir = out.join(d.name);
        let mut totals: Vec<Totals> = profiles.iter().map(|_| Totals::default()).collect();
        let mut points = 0usize;
        for s in &corpus {
            let empty = Vec::new();
            let wins =
                nab::locate_windows(&s.key, &s.timestamps, windows.get(&s.key).unwrap_or(&empty))?;
            let scores = (d.run)(&s.values)?;
            points += scores.len();
            let detected: Vec<bool> = scores.iter().map(|&x| x >= d.threshold).collect();
            for (p, t) in profiles.iter().zip(totals.iter_mut()) {
                let row = nab::row_scores(&detected, &wins, &p.cost);
                t.raw += row.iter().sum::<f64>();
                for w in &wins {
                    if row[w.first] > 0.0 {
                        t.tp += 1;
                    } else {
                        t.fn_ += 1;
                    }
                }
                t.fp += row
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| **v < 0.0 && !wins.iter().any(|w| w.first == *i))
                    .count();
            }
            // <out>/<detector>/<category>/<detector>_<name>.csv
            let (cat, name) = s.key.split_once('/').unwrap_or(("", &s.key));
            let cat_dir = dir.join(cat);
            std::fs::create_dir_all(&cat_dir)
                .map_err(|e| io(format!("cannot create {}", cat_dir.display()), e))?;
            let mut csv = String::from("timestamp,value,anomaly_score,label\n");
            for (i, ((t, v), a)) in s.timestamps.iter().zip(&s.values).zip(&scores).enumerate() {
                let label = u8::from(wins.iter().any(|w| (w.first..=w.last).contains(&i)));
                csv.push_str(&format!("{t},{v},{a},{label}\n"));
            }
            let path = cat_dir.join(format!("{}_{name}", d.name));
            std::fs::write(&path, csv)
                .map_err(|e| io(format!("cannot write {}", path.display()), e))?;
        }
        let thr = dir.join("threshold.json");
        std::fs::write(&thr, format!("{{\"threshold\": {}}}\n", d.threshold))
            .map_err(|e| io(format!("cannot write {}", thr.display()), e))?;
        let scores: Vec<f64> = profiles
            .iter()
            .zip(&totals)
            .map(|(p, t)| nab::normalized_score(t.raw, windows_total, &p.cost))
            .collect();
        println!(
            "{:<20} {:>9} {:>10.2} {:>20.2} {:>20.2}",
            d.name, d.threshold, scores[0], scores[1], scores[2]
        );
        let st = &totals[0];
        eprintln!(
            "  {}: {} of {windows_total} windows detected, {} false positives (standard profile); {points} points in {:.2} s",
            d.name,
            st.tp,
            st.fp,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `sakura ml models`: every registered model version.
pub(crate) async fn models_command(cfg: &crate::config::Config) -> Result<()> {
    let registry = engine::ModelRegistry::for_storage(&cfg.storage()?)?;
    let models = registry.list().await?;
    if models.is_empty() {
        println!(
            "no models under {}/models/ (an ml_train job registers them)",
            cfg.storage.url
        );
        return Ok(());
    }
    println!(
        "{:<20} {:>7} {:<12} {:<24} {:<45} {:>9} {:>10} {:>9}",
        "model", "version", "kind", "created_at", "training window", "rows", "loss", "threshold"
    );
    for m in models {
        let window = m
            .training_window
            .as_ref()
            .map_or_else(|| "-".to_string(), |(a, b)| format!("{a}..{b}"));
        println!(
            "{:<20} {:>7} {:<12} {:<24} {:<45} {:>9} {:>10.4} {:>9}",
            m.name,
            m.version,
            m.kind,
            m.created_at,
            window,
            m.training.examples,
            m.training.final_loss,
            m.threshold
        );
    }
    Ok(())
}
