use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::delta::TopicPartition;
use decode::RawMessage;

/// Messages read but not yet committed, per topic-partition, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    partitions: BTreeMap<TopicPartition, Vec<RawMessage>>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    pub(crate) fn push(&mut self, tp: TopicPartition, m: RawMessage) {
        self.rows += 1;
        self.bytes += message_bytes(&m);
        self.oldest.get_or_insert_with(Instant::now);
        self.partitions.entry(tp).or_default().push(m);
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn age(&self) -> Duration {
        self.oldest.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Drops what was buffered for a partition this process no longer owns.
    pub(crate) fn drop_partition(&mut self, tp: &TopicPartition) {
        if let Some(msgs) = self.partitions.remove(tp) {
            self.rows -= msgs.len();
            self.bytes -= msgs.iter().map(message_bytes).sum::<usize>();
        }
        if self.partitions.is_empty() {
            self.oldest = None;
        }
    }

    /// Topics that have buffered messages.
    pub(crate) fn topics(&self) -> Vec<std::sync::Arc<str>> {
        let mut topics: Vec<_> = self.partitions.keys().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        topics
    }

    /// Takes a topic's messages out of the buffer (to be put back with [`Self::restore`] if the
    /// commit fails).
    pub(crate) fn take_topic(&mut self, topic: &str) -> BTreeMap<TopicPartition, Vec<RawMessage>> {
        let keys: Vec<_> = self
            .partitions
            .keys()
            .filter(|(t, _)| &**t == topic)
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.partitions.remove(&k) {
                self.rows -= v.len();
                self.bytes -= v.iter().map(message_bytes).sum::<usize>();
                out.insert(k, v);
            }
        }
        if self.partitions.is_empty() {
            self.oldest = None;
        }
        out
    }

    pub(crate) fn restore(&mut self, taken: BTreeMap<TopicPartition, Vec<RawMessage>>) {
        for (tp, mut msgs) in taken {
            self.rows += msgs.len();
            self.bytes += msgs.iter().map(message_bytes).sum::<usize>();
            self.oldest.get_or_insert_with(Instant::now);
            let slot = self.partitions.entry(tp).or_default();
            // Taken messages are older than anything read since: they go first.
            msgs.append(slot);
            *slot = msgs;
        }
    }
}

fn message_bytes(m: &RawMessage) -> usize {
    m.value.as_ref().map_or(0, Vec::len) + m.key.as_ref().map_or(0, Vec::len)
}
