//! `sakura ml nab` on the NAB subset in `../shared/data/nab` (or `SAKURA_NAB_DIR`): NAB's result
//! layout for each file, the threshold file, and the three profile scores printed.

use crate::procs::{repo_root, test_dir};
use crate::sakura;

#[test]
fn ml_nab_writes_nab_results_and_prints_the_three_profiles() {
    let data = std::env::var_os("SAKURA_NAB_DIR").map_or_else(
        || repo_root().join("../shared/data/nab"),
        std::path::PathBuf::from,
    );
    assert!(
        data.join("labels/combined_windows.json").exists(),
        "the NAB corpus is not at {} (set SAKURA_NAB_DIR)",
        data.display()
    );
    let tmp = test_dir();
    let stdout = sakura::succeed(
        sakura::command()
            .args(["ml", "nab", "--detector", "windowed_gaussian", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(tmp.path()),
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("windowed_gaussian"))
        .unwrap_or_else(|| panic!("no score line: {stdout}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 4, "threshold and three profiles: {line}");
    assert!(
        numbers[1..].iter().all(|s| s.is_finite() && *s <= 100.0),
        "{line}"
    );

    let dir = tmp.path().join("windowed_gaussian");
    let threshold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("threshold.json")).unwrap())
            .unwrap();
    assert_eq!(threshold["threshold"].as_f64(), Some(numbers[0]));
    let mut files = 0;
    for cat in std::fs::read_dir(data.join("data")).unwrap() {
        let cat = cat.unwrap().path();
        for f in std::fs::read_dir(&cat).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            let result = dir
                .join(cat.file_name().unwrap())
                .join(format!("windowed_gaussian_{name}"));
            let text = std::fs::read_to_string(&result).unwrap();
            let input = std::fs::read_to_string(cat.join(&name)).unwrap();
            assert!(
                text.starts_with("timestamp,value,anomaly_score,label\n"),
                "{}",
                result.display()
            );
            assert_eq!(
                text.lines().count(),
                input.lines().count(),
                "{name}: one row per input row"
            );
            files += 1;
        }
    }
    // One result per file the labels list (the corpus grows; the label file says how big).
    let labelled: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(data.join("labels/combined_windows.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(files, labelled.len(), "result files vs files labelled");
}
