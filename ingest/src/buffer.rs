//! Messages read from Kafka and not yet in a Delta commit, per topic-partition: what the next
//! flush writes, and what a revoked partition drops.

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

    /// Puts taken messages back ahead of anything read since. A partition re-read while they
    /// were out (revoked and assigned back: read again from its stored offset) keeps only the
    /// taken messages below the first one read again, so no offset is buffered twice.
    pub(crate) fn restore(&mut self, taken: BTreeMap<TopicPartition, Vec<RawMessage>>) {
        for (tp, mut msgs) in taken {
            if let Some(first) = self.partitions.get(&tp).and_then(|v| v.first()) {
                let first = first.offset;
                msgs.retain(|m| m.offset < first);
            }
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
    m.value.as_ref().map_or(0, |v| v.len()) + m.key.as_ref().map_or(0, |k| k.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(tp: &TopicPartition, offset: i64) -> RawMessage {
        RawMessage {
            topic: tp.0.clone(),
            partition: tp.1,
            offset,
            key: None,
            value: Some(decode::Bytes::from_static(b"{}")),
        }
    }

    fn offsets(b: &mut Buffer, tp: &TopicPartition) -> Vec<i64> {
        let taken = b.take_topic(&tp.0);
        let out = taken[tp].iter().map(|m| m.offset).collect();
        b.restore(taken);
        out
    }

    #[test]
    fn restored_messages_go_first_and_are_never_buffered_twice() {
        let tp: TopicPartition = (Arc::from("t"), 0);
        let mut b = Buffer::default();
        for o in 10..15 {
            b.push(tp.clone(), msg(&tp, o));
        }
        let taken = b.take_topic("t");
        // Read on while the flush was out: the restored ones go ahead of them.
        b.push(tp.clone(), msg(&tp, 15));
        b.restore(taken);
        assert_eq!(offsets(&mut b, &tp), vec![10, 11, 12, 13, 14, 15]);
        assert_eq!(b.rows(), 6);
        // Revoked and assigned back while out: re-read from 12, so 12.. are not restored.
        let taken = b.take_topic("t");
        b.drop_partition(&tp);
        for o in 12..14 {
            b.push(tp.clone(), msg(&tp, o));
        }
        b.restore(taken);
        assert_eq!(offsets(&mut b, &tp), vec![10, 11, 12, 13]);
        assert_eq!(b.rows(), 4);
        assert_eq!(b.bytes(), 8);
    }
}
