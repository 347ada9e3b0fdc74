//! The ingest pipeline's metrics: totals for progress lines, and the labelled series, commit
//! latency, consumer lag and freshness that `/metrics` exposes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::prom::{self, Histogram};

const COMMIT_SECONDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counters and gauges of the ingest pipeline, shared with progress reporting and `/metrics`.
#[derive(Debug)]
pub struct IngestStats {
    pub messages_consumed: AtomicU64,
    pub bytes_consumed: AtomicU64,
    pub messages_skipped: AtomicU64,
    pub rows_committed: AtomicU64,
    pub dead_letters_committed: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub rebalances: AtomicU64,
    /// Dead letters delivered to / failed to reach `ingest.dead_letter_topic`.
    pub dead_letter_topic_delivered: AtomicU64,
    pub dead_letter_topic_failed: AtomicU64,
    /// Unreferenced data files (left by crashes or failed commits) deleted.
    pub orphans_removed: AtomicU64,
    /// Columns added to tables by schema evolution.
    pub columns_added: AtomicU64,
    /// Times the consumer paused its partitions because the buffer was full.
    pub pauses: AtomicU64,
    /// Messages and bytes read but not yet committed (gauges).
    pub buffered_messages: AtomicU64,
    pub buffered_bytes: AtomicU64,
    rows_by_table: Mutex<BTreeMap<String, u64>>,
    dead_letters_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    commit_seconds: Histogram,
    /// (topic, partition) → messages in the partition not yet stored in its table.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// table → seconds from the newest / oldest event time of the last commit to that commit.
    freshness: Mutex<BTreeMap<String, (f64, f64)>>,
}

impl Default for IngestStats {
    fn default() -> Self {
        Self {
            messages_consumed: AtomicU64::new(0),
            bytes_consumed: AtomicU64::new(0),
            messages_skipped: AtomicU64::new(0),
            rows_committed: AtomicU64::new(0),
            dead_letters_committed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            columns_added: AtomicU64::new(0),
            orphans_removed: AtomicU64::new(0),
            dead_letter_topic_delivered: AtomicU64::new(0),
            dead_letter_topic_failed: AtomicU64::new(0),
            buffered_messages: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            rows_by_table: Mutex::default(),
            dead_letters_by_kind: Mutex::default(),
            commit_seconds: Histogram::new(COMMIT_SECONDS),
            lag: Mutex::default(),
            freshness: Mutex::default(),
        }
    }
}

/// A point-in-time copy of the totals of [`IngestStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSnapshot {
    pub messages_consumed: u64,
    pub bytes_consumed: u64,
    pub messages_skipped: u64,
    pub rows_committed: u64,
    pub dead_letters_committed: u64,
    pub commits: u64,
    pub commit_failures: u64,
    pub rebalances: u64,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update; the numbers are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestSnapshot {
            messages_consumed: r(&self.messages_consumed),
            bytes_consumed: r(&self.bytes_consumed),
            messages_skipped: r(&self.messages_skipped),
            rows_committed: r(&self.rows_committed),
            dead_letters_committed: r(&self.dead_letters_committed),
            commits: r(&self.commits),
            commit_failures: r(&self.commit_failures),
            rebalances: r(&self.rebalances),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a commit of `rows` rows to `table` that took `seconds`.
    pub(crate) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, table: &str, rows: u64, seconds: f64) {
        Self::add(&self.rows_committed, rows);
        Self::add(&self.commits, 1);
        *locked(&self.rows_by_table)
            .entry(table.to_string())
            .or_default() += rows;
        self.commit_seconds.observe(seconds);
    }

    pub(crate) fn dead_letter(&self, kind: &'static str) {
        Self::add(&self.dead_letters_committed, 1);
        *locked(&self.dead_letters_by_kind).entry(kind).or_default() += 1;
    }

    pub(crate) fn set_lag(&self, lag: BTreeMap<(String, i32), i64>) {
        *locked(&self.lag) = lag;
    }

    pub(crate) fn set_freshness(&self, table: &str, newest_s: f64, oldest_s: f64) {
        locked(&self.freshness).insert(table.to_string(), (newest_s, oldest_s));
    }

    /// The Prometheus text exposition of every ingest metric.
    pub fn render_prometheus(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        prom::counter(
            &mut out,
            "sakura_ingest_messages_consumed_total",
            "Kafka messages read into the ingest buffer.",
            s.messages_consumed,
        );
        prom::counter(
            &mut out,
            "sakura_ingest_bytes_consumed_total",
            "Bytes of Kafka message values read.",
            s.bytes_consumed,
        );
        prom::counter(
            &mut out,
            "sakura_ingest_messages_skipped_total",
            "Messages skipped because they were already stored or their partition was not positioned.",
            s.messages_skipped,
        );
        prom::header(
            &mut out,
            "sakura_ingest_rows_committed_total",
            "counter",
            "Rows committed to Delta tables.",
        );
        for (table, n) in locked(&self.rows_by_table).iter() {
            prom::sample(
                &mut out,
                "sakura_ingest_rows_committed_total",
                &[("table", table)],
                n,
            );
        }
        prom::header(
            &mut out,
            "sakura_ingest_dead_letters_total",
            "counter",
            "Messages committed to raw.dead_letters, by kind of error.",
        );
        for (kind, n) in locked(&self.dead_letters_by_kind).iter() {
            prom::sample(
                &mut out,
                "sakura_ingest_dead_letters_total",
                &[("kind", kind)],
                n,
            );
        }
        prom::counter(
            &mut out,
            "sakura_ingest_commits_total",
            "Delta commits made by ingest.",
            s.commits,
        );
        prom::counter(
            &mut out,
            "sakura_ingest_commit_failures_total",
            "Delta commits that failed and were retried.",
            s.commit_failures,
        );
        prom::counter(
            &mut out,
            "sakura_ingest_rebalances_total",
            "Consumer-group rebalances seen.",
            s.rebalances,
        );
        prom::header(
            &mut out,
            "sakura_ingest_dead_letter_topic_messages_total",
            "counter",
            "Dead letters produced to ingest.dead_letter_topic, by outcome.",
        );
        for (outcome, n) in [
            ("delivered", &self.dead_letter_topic_delivered),
            ("failed", &self.dead_letter_topic_failed),
        ] {
            prom::sample(
                &mut out,
                "sakura_ingest_dead_letter_topic_messages_total",
                &[("outcome", outcome)],
                n.load(Ordering::Relaxed),
            );
        }
        prom::counter(
            &mut out,
            "sakura_ingest_orphan_files_removed_total",
            "Data files no table version references (left by crashes or failed commits) that were deleted.",
            self.orphans_removed.load(Ordering::Relaxed),
        );
        prom::counter(
            &mut out,
            "sakura_ingest_columns_added_total",
            "Columns added to tables by schema evolution (topics with evolution = \"add_fields\").",
            self.columns_added.load(Ordering::Relaxed),
        );
        prom::counter(
            &mut out,
            "sakura_ingest_pauses_total",
            "Times the consumer paused its partitions because the buffer reached ingest.max_buffered_messages or ingest.max_buffered_bytes (the store is slow or down).",
            self.pauses.load(Ordering::Relaxed),
        );
        for (name, help, value) in [
            (
                "sakura_ingest_buffered_messages",
                "Messages read but not yet committed.",
                &self.buffered_messages,
            ),
            (
                "sakura_ingest_buffered_bytes",
                "Bytes of messages read but not yet committed.",
                &self.buffered_bytes,
            ),
        ] {
            prom::header(&mut out, name, "gauge", help);
            prom::sample(&mut out, name, &[], value.load(Ordering::Relaxed));
        }
        self.commit_seconds.render(
            &mut out,
            "sakura_ingest_commit_duration_seconds",
            "Time to write and commit one flush to a Delta table.",
        );
        prom::header(
            &mut out,
            "sakura_ingest_consumer_lag_messages",
            "gauge",
            "Messages in an assigned partition not yet stored in its table (high watermark minus stored offset).",
        );
        for ((topic, partition), lag) in locked(&self.lag).iter() {
            prom::sample(
                &mut out,
                "sakura_ingest_consumer_lag_messages",
                &[("topic", topic), ("partition", &partition.to_string())],
                lag,
            );
        }
        prom::header(
            &mut out,
            "sakura_ingest_freshness_seconds",
            "gauge",
            "Event time to visibility in a committed Delta version, for the newest and oldest event of the table's last commit.",
        );
        for (table, (newest, oldest)) in locked(&self.freshness).iter() {
            prom::sample(
                &mut out,
                "sakura_ingest_freshness_seconds",
                &[("table", table), ("event", "newest")],
                newest,
            );
            prom::sample(
                &mut out,
                "sakura_ingest_freshness_seconds",
                &[("table", table), ("event", "oldest")],
                oldest,
            );
        }
        out
    }
}
