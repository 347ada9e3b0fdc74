//! A port of the Numenta Anomaly Benchmark's scorer (NAB v1.1, `nab/scorer.py` and
//! `nab/sweeper.py`): per-row scores `S(t)` for one data file under a cost profile, and the
//! normalised benchmark score.
//!
//! The first `min(floor(0.15·n), 750)` rows are probationary: detections there count for
//! nothing. Each anomaly window is worth, at its first row, `A_TP·σ(y)/σ(−1)` for its earliest
//! detection at relative position `y = −(right − i + 1)/width` (σ(y) = 2/(1+e^{5y}) − 1), or
//! `−A_FN` when nothing in it was detected. A detection outside every window costs
//! `A_FP·σ(|right − i|/(width − 1))` measured from the closest preceding window (nearly
//! `−A_FP` far from it), or `−A_FP` when no window precedes it. The normalised score is
//! `100·(S − S_null)/(S_perfect − S_null)` with `S_null = −A_FN·windows` (nothing detected) and
//! `S_perfect = A_TP·windows` (every window detected at its first row).

use serde::Deserialize;

use crate::{Error, Result};

/// The weights of one scoring profile.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct CostMatrix {
    #[serde(rename = "tpWeight")]
    pub tp: f64,
    #[serde(rename = "fpWeight")]
    pub fp: f64,
    #[serde(rename = "fnWeight")]
    pub fn_: f64,
    #[serde(rename = "tnWeight", default)]
    pub tn: f64,
}

/// A named profile (`standard`, `reward_low_FP_rate`, `reward_low_FN_rate`).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub cost: CostMatrix,
}

/// NAB's three profiles, in the order its reports use.
pub const PROFILE_NAMES: [&str; 3] = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];

/// The profiles of NAB's `config/profiles.json`, in [`PROFILE_NAMES`] order.
pub fn parse_profiles(text: &str) -> Result<Vec<Profile>> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "CostMatrix")]
        cost: CostMatrix,
    }
    let map: std::collections::BTreeMap<String, Entry> =
        serde_json::from_str(text).map_err(|source| Error::Json {
            what: "profiles.json".into(),
            source,
        })?;
    PROFILE_NAMES
        .iter()
        .map(|name| {
            map.get(*name)
                .map(|e| Profile {
                    name: (*name).to_string(),
                    cost: e.cost,
                })
                .ok_or_else(|| Error::input("profiles.json", format!("no profile {name}")))
        })
        .collect()
}

/// NAB's scaled sigmoid: 1 at y = −∞, 0 at y = 0, −1 at y = +∞ (≈ 0.987 at −1).
pub fn scaled_sigmoid(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

/// How many leading rows of an `n`-row file are probationary.
pub fn probation_rows(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

/// An anomaly window as inclusive row indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: usize,
    pub last: usize,
}

/// The rows of `windows` (`[start, end]` timestamp pairs as in NAB's label files) in a file
/// whose rows have `timestamps` (NAB's `YYYY-MM-DD HH:MM:SS`; label times may carry a
/// fractional `.000000`).
pub fn locate_windows(
    file: &str,
    timestamps: &[String],
    windows: &[(String, String)],
) -> Result<Vec<Window>> {
    let index: std::collections::HashMap<&str, usize> = timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let find = |t: &str| -> Result<usize> {
        let t = t.split('.').next().unwrap_or(t);
        index
            .get(t)
            .copied()
            .ok_or_else(|| Error::input(file, format!("window edge {t} is not a row's timestamp")))
    };
    let mut out = Vec::with_capacity(windows.len());
    for (a, b) in windows {
        let (first, last) = (find(a)?, find(b)?);
        if last < first {
            return Err(Error::input(
                file,
                format!("window {a}..{b} ends before it starts"),
            ));
        }
        out.push(Window { first, last });
    }
    out.sort_by_key(|w| w.first);
    Ok(out)
}

/// The per-row scores `S(t)` of one file: `detected[i]` says whether row `i`'s anomaly score
/// reached the threshold. Their sum is the file's raw score.
pub fn row_scores(detected: &[bool], windows: &[Window], cost: &CostMatrix) -> Vec<f64> {
    let n = detected.len();
    let mut s = vec![0.0; n];
    let max_tp = scaled_sigmoid(-1.0);
    let mut in_window = vec![false; n];
    for w in windows {
        let width = (w.last - w.first + 1) as f64;
        let first_tp = (w.first..=w.last.min(n.saturating_sub(1))).find(|&i| detected[i]);
        s[w.first] = match first_tp {
            None => -cost.fn_,
            Some(i) => {
                let y = -((w.last - i + 1) as f64) / width;
                scaled_sigmoid(y) * cost.tp / max_tp
            }
        };
        for flag in in_window.iter_mut().take(w.last + 1).skip(w.first) {
            *flag = true;
        }
    }
    let probation = probation_rows(n);
    for i in probation..n {
        if !detected[i] || in_window[i] {
            continue;
        }
        let preceding = windows.iter().filter(|w| w.last < i).max_by_key(|w| w.last);
        s[i] = match preceding {
            None => -cost.fp,
            Some(w) => {
                let width = (w.last - w.first + 1) as f64;
                let y = (i - w.last) as f64 / (width - 1.0).max(1.0);
                scaled_sigmoid(y) * cost.fp
            }
        };
    }
    s
}

/// The benchmark score: raw scores summed over files, normalised between the null detector
/// (every window missed) and the perfect one (every window caught at its first row).
pub fn normalized_score(raw_total: f64, windows_total: usize, cost: &CostMatrix) -> f64 {
    let null = -cost.fn_ * windows_total as f64;
    let perfect = cost.tp * windows_total as f64;
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw_total - null) / (perfect - null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_their_earliest_detection_and_misses_cost_a_false_negative() {
        let cost = CostMatrix {
            tp: 1.0,
            fp: 0.11,
            fn_: 1.0,
            tn: 1.0,
        };
        let mut detected = vec![false; 1000];
        let windows = [
            Window {
                first: 400,
                last: 499,
            },
            Window {
                first: 700,
                last: 799,
            },
        ];
        // Detected at the first row of the first window: full credit; the second is missed.
        detected[400] = true;
        detected[450] = true;
        let s = row_scores(&detected, &windows, &cost);
        assert!((s[400] - 1.0).abs() < 1e-12);
        assert_eq!(
            s[450], 0.0,
            "only the earliest detection in a window counts"
        );
        assert_eq!(s[700], -1.0);
        // A detection in the probationary rows counts for nothing; one far after a window
        // costs nearly the whole false-positive weight, one right after it much less.
        detected[10] = true;
        detected[990] = true;
        detected[500] = true;
        let s = row_scores(&detected, &windows, &cost);
        assert_eq!(s[10], 0.0);
        assert!((s[990] + 0.11).abs() < 1e-3, "{}", s[990]);
        assert!(s[500] > -0.011 && s[500] < 0.0, "{}", s[500]);
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(15902), 750);
        assert!((normalized_score(-2.0, 2, &cost) - 0.0).abs() < 1e-12);
        assert!((normalized_score(2.0, 2, &cost) - 100.0).abs() < 1e-12);
    }
}

/// Checks against NAB's published Windowed Gaussian results in `../shared/data/nab` (or
/// `SAKURA_NAB_DIR`): the detector port reproduces its anomaly scores, the scorer its per-row
/// `S(t)` and per-file totals for all three profiles.
#[cfg(test)]
mod reference {
    use std::path::PathBuf;

    use super::*;
    use crate::{Detector as _, WindowedGaussian};

    pub(crate) fn nab_dir() -> PathBuf {
        let dir = std::env::var_os("SAKURA_NAB_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nab"),
            PathBuf::from,
        );
        assert!(
            dir.join("labels/combined_windows.json").exists(),
            "the NAB corpus is not at {} (set SAKURA_NAB_DIR to its directory)",
            dir.display()
        );
        dir
    }

    #[test]
    fn reproduces_the_published_windowed_gaussian_scores_and_s_t_within_1e6() {
        let dir = nab_dir();
        let profiles =
            parse_profiles(&std::fs::read_to_string(dir.join("config/profiles.json")).unwrap())
                .unwrap();
        let windows: std::collections::BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(
                &std::fs::read_to_string(dir.join("labels/combined_windows.json")).unwrap(),
            )
            .unwrap();
        let mut files = 0;
        let mut worst_score = 0.0f64;
        let mut worst_s = 0.0f64;
        for cat in std::fs::read_dir(dir.join("results/windowedGaussian")).unwrap() {
            let cat = cat.unwrap().path();
            for file in std::fs::read_dir(&cat).unwrap() {
                let path = file.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines = text.lines();
                let header: Vec<&str> = lines.next().unwrap().split(',').collect();
                let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
                let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
                let f = |r: &Vec<&str>, c: usize| r[c].parse::<f64>().unwrap();
                let (ts, value, score) = (col("timestamp"), col("value"), col("anomaly_score"));
                let name = path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace("windowedGaussian_", "");
                let key = format!("{}/{name}", cat.file_name().unwrap().to_str().unwrap());
                let stamps: Vec<String> = rows.iter().map(|r| r[ts].to_string()).collect();
                let wins = locate_windows(&key, &stamps, &windows[&key]).unwrap();

                let values: Vec<f64> = rows.iter().map(|r| f(r, value)).collect();
                let ours = WindowedGaussian::default().score_series(&values);
                for (r, o) in rows.iter().zip(&ours) {
                    worst_score = worst_score.max((f(r, score) - o).abs());
                }
                // NAB's optimiser chose threshold 1.0 for this detector in every profile.
                let detected: Vec<bool> = rows.iter().map(|r| f(r, score) >= 1.0).collect();
                for p in &profiles {
                    let s = row_scores(&detected, &wins, &p.cost);
                    let reference: Vec<f64> = rows
                        .iter()
                        .map(|r| f(r, col(&format!("S(t)_{}", p.name))))
                        .collect();
                    for (a, b) in s.iter().zip(&reference) {
                        worst_s = worst_s.max((a - b).abs());
                    }
                    let (total, ref_total) = (s.iter().sum::<f64>(), reference.iter().sum::<f64>());
                    assert!(
                        (total - ref_total).abs() < 1e-6,
                        "{key} {}: total {total} vs {ref_total}",
                        p.name
                    );
                }
                files += 1;
            }
        }
        // Every file the labels list was checked (the corpus grows; the label file says how big).
        assert_eq!(files, windows.len(), "files checked vs files labelled");
        assert!(
            worst_score < 1e-6,
            "anomaly scores differ by up to {worst_score}"
        );
        assert!(worst_s < 1e-6, "S(t) differs by up to {worst_s}");
    }
}
