//! A minimal writer of the Prometheus text exposition format (HELP, TYPE, samples with labels),
//! enough for the process's own counters, gauges and histograms.

use std::fmt::Write;

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writes the HELP and TYPE lines of a metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample.
pub fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{} {value}", labels(pairs));
}

/// A counter without labels.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    sample(out, name, &[], value);
}

/// A histogram with fixed upper bounds (seconds), safe to update from any thread.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: std::sync::Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            state: std::sync::Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                st.0[i] += 1;
            }
        }
        st.1 += v;
        st.2 += 1;
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        header(out, name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (b, n) in self.bounds.iter().zip(&st.0) {
            sample(out, &bucket, &[("le", &b.to_string())], n);
        }
        sample(out, &bucket, &[("le", "+Inf")], st.2);
        sample(out, &format!("{name}_sum"), &[], st.1);
        sample(out, &format!("{name}_count"), &[], st.2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "test");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("k", "a\"b\\c")], 1);
        assert_eq!(out, "m{k=\"a\\\"b\\\\c\"} 1\n");
    }
}
