//! Prometheus text exposition of the process's counters.

use std::fmt::Write;

use ingest::IngestSnapshot;

/// Appends one counter in the text format (HELP, TYPE, sample).
pub(crate) fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

/// The ingest counters.
pub(crate) fn render_ingest(s: &IngestSnapshot) -> String {
    let mut out = String::new();
    counter(
        &mut out,
        "sakura_ingest_messages_consumed_total",
        "Kafka messages read into the ingest buffer.",
        s.messages_consumed,
    );
    counter(
        &mut out,
        "sakura_ingest_bytes_consumed_total",
        "Bytes of Kafka message values read.",
        s.bytes_consumed,
    );
    counter(
        &mut out,
        "sakura_ingest_messages_skipped_total",
        "Messages skipped because they were already stored or their partition was not positioned.",
        s.messages_skipped,
    );
    counter(
        &mut out,
        "sakura_ingest_rows_committed_total",
        "Rows committed to Delta tables.",
        s.rows_committed,
    );
    counter(
        &mut out,
        "sakura_ingest_dead_letters_total",
        "Messages committed to raw.dead_letters.",
        s.dead_letters_committed,
    );
    counter(
        &mut out,
        "sakura_ingest_commits_total",
        "Delta commits made by ingest.",
        s.commits,
    );
    counter(
        &mut out,
        "sakura_ingest_commit_failures_total",
        "Delta commits that failed and were retried.",
        s.commit_failures,
    );
    counter(
        &mut out,
        "sakura_ingest_rebalances_total",
        "Consumer-group rebalances seen.",
        s.rebalances,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_value_per_counter() {
        let s = IngestSnapshot {
            rows_committed: 42,
            ..Default::default()
        };
        let text = render_ingest(&s);
        assert!(text.contains("# TYPE sakura_ingest_rows_committed_total counter\nsakura_ingest_rows_committed_total 42\n"));
        assert_eq!(text.matches("# HELP").count(), 8);
    }
}
