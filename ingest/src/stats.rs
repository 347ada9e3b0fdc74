use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the ingest pipeline, shared with progress reporting and `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub messages_consumed: AtomicU64,
    pub bytes_consumed: AtomicU64,
    pub messages_skipped: AtomicU64,
    pub rows_committed: AtomicU64,
    pub dead_letters_committed: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub rebalances: AtomicU64,
}

/// A point-in-time copy of [`IngestStats`].
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
}
