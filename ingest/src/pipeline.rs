//! The ingest main loop: read, buffer, flush to Delta with offsets, repeat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::Storage;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::Result;
use crate::buffer::Buffer;
use crate::config::{IngestConfig, KafkaConfig};
use crate::consumer::{
    IngestConsumer, IngestContext, OffsetTables, Position, create_consumer, seek,
};
use crate::delta::TopicPartition;
use crate::stats::IngestStats;
use crate::writer::{TopicMessages, Writer};
use decode::RawMessage;

/// A running ingest process: one consumer-group member feeding every configured table.
pub struct Pipeline {
    consumer: IngestConsumer,
    writer: Writer,
    buffer: Buffer,
    cfg: IngestConfig,
    stats: Arc<IngestStats>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// `Some(rebalance count when paused)` while the partitions are paused.
    paused: Option<u64>,
    /// When unreferenced files were last cleaned up (`None`: not yet).
    cleaned: Option<Instant>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("writer", &self.writer)
            .field("buffered_rows", &self.buffer.rows())
            .finish()
    }
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

impl Pipeline {
    /// Opens (or creates) every table, then joins the consumer group.
    pub async fn start(
        kafka: &KafkaConfig,
        cfg: &IngestConfig,
        storage: &Storage,
        stats: Arc<IngestStats>,
    ) -> Result<Self> {
        kafka.validate()?;
        let writer = Writer::open(cfg, storage, stats.clone())
            .await?
            .with_dead_letter_topic(kafka, cfg)?;
        let data_tables = writer.data_tables();
        let tables = OffsetTables { data: data_tables };
        let context = IngestContext::new(
            tokio::runtime::Handle::current(),
            kafka.start_offset,
            tables,
            stats.clone(),
        );
        let names: Vec<&str> = cfg.topics.keys().map(String::as_str).collect();
        let consumer = create_consumer(kafka, &names, context)?;
        info!(topics = ?names, group = %kafka.group_id, storage = %storage.root, "ingest started");
        Ok(Self {
            consumer,
            writer,
            buffer: Buffer::default(),
            cfg: cfg.clone(),
            stats,
            retry_at: None,
            retry_delay: Duration::from_millis(200),
            paused: None,
            cleaned: None,
        })
    }

    /// Runs until `shutdown` turns true, then flushes what is buffered and leaves the group.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_recv_error: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Bounded memory: while the buffer is at its cap (the store is slow or down) the
            // partitions are paused, so neither this buffer nor librdkafka's prefetch queue
            // grows; heartbeats continue on librdkafka's own thread.
            let full = self.buffer.rows() >= self.cfg.max_buffered_messages
                || self.buffer.bytes() >= self.cfg.max_buffered_bytes;
            self.set_paused(full);
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = tick.tick() => self.position_unpositioned().await,
                msg = self.consumer.recv(), if !full => {
                    let got = msg.map(|m| self.detach(&m));
                    self.drop_revoked();
                    match got {
                        Ok(Some(raw)) => self.accept(raw),
                        Ok(None) => {}
                        Err(e) => {
                            if last_recv_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                warn!(error = %e, "kafka consumer error (will keep retrying)");
                                last_recv_error = Some(Instant::now());
                            }
                        }
                    }
                }
            }
            self.drop_revoked();
            if self.flush_due() {
                self.try_flush().await?;
            }
            self.clean_up_orphans().await;
        }
        // Shutdown: commit what is buffered, retrying for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.buffer.rows() > 0 && Instant::now() < deadline {
            self.retry_at = None;
            if self.try_flush().await.is_err() || self.buffer.rows() > 0 {
                tokio::time::sleep(self.retry_delay).await;
            }
        }
        if self.buffer.rows() > 0 {
            warn!(
                rows = self.buffer.rows(),
                "stopping with uncommitted rows; they are re-read on the next start"
            );
        }
        self.consumer.unsubscribe();
        info!("ingest stopped");
        Ok(())
    }

    /// Every `orphan_cleanup_interval_s` (and once at start), deletes data files no table
    /// version references. Runs between flushes, so none of this process's uploads is in flight.
    async fn clean_up_orphans(&mut self) {
        let every = Duration::from_secs(self.cfg.orphan_cleanup_interval_s);
        if every.is_zero() || self.cleaned.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.cleaned = Some(Instant::now());
        let min_age = Duration::from_secs(self.cfg.orphan_min_age_s);
        match self.writer.remove_orphans(min_age).await {
            Ok(0) => {}
            Ok(n) => info!(
                files = n,
                "deleted unreferenced data files left by earlier crashes"
            ),
            Err(e) => warn!(error = %e, "orphan file cleanup failed; will retry next interval"),
        }
    }

    /// Pauses every assigned partition when `full`, resumes them when not. Partitions assigned
    /// while paused are paused on the next call.
    fn set_paused(&mut self, full: bool) {
        IngestStats::set(&self.stats.buffered_messages, self.buffer.rows() as u64);
        IngestStats::set(&self.stats.buffered_bytes, self.buffer.bytes() as u64);
        let rebalances = self
            .stats
            .rebalances
            .load(std::sync::atomic::Ordering::Relaxed);
        let want = full.then_some(rebalances);
        if want == self.paused {
            return;
        }
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let done = if full {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match done {
            Ok(()) => {
                if full && self.paused.is_none() {
                    IngestStats::add(&self.stats.pauses, 1);
                    warn!(
                        buffered = self.buffer.rows(),
                        bytes = self.buffer.bytes(),
                        "buffer full (the store is slow or down): partitions paused"
                    );
                } else if !full {
                    info!("buffer drained: partitions resumed");
                }
                self.paused = want;
            }
            Err(e) => warn!(error = %e, "pausing or resuming partitions failed; will retry"),
        }
    }

    /// Copies a message out of the consumer's buffer; `None` for topics not configured.
    fn detach(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<RawMessage> {
        let topic = self.writer.topic(m.topic())?;
        Some(RawMessage {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        })
    }

    /// Buffers a message unless it is already stored or its partition is not positioned.
    fn accept(&mut self, raw: RawMessage) {
        let tp: TopicPartition = (raw.topic.clone(), raw.partition);
        let offset = raw.offset;
        {
            let mut assignment = self.consumer.context().assignment();
            match assignment.positions.get_mut(&tp) {
                Some(Some(pos)) if offset >= pos.next => {
                    if pos.next != i64::MIN && offset > pos.next {
                        debug!(topic = %tp.0, partition = tp.1, expected = pos.next, offset, "offset gap");
                    }
                    pos.next = offset + 1;
                }
                _ => {
                    IngestStats::add(&self.stats.messages_skipped, 1);
                    return;
                }
            }
        }
        IngestStats::add(&self.stats.messages_consumed, 1);
        IngestStats::add(
            &self.stats.bytes_consumed,
            raw.value.as_ref().map_or(0, Vec::len) as u64,
        );
        self.buffer.push(tp, raw);
    }

    fn drop_revoked(&mut self) {
        let revoked = std::mem::take(&mut self.consumer.context().assignment().revoked);
        for tp in revoked {
            self.buffer.drop_partition(&tp);
        }
    }

    /// Seeks partitions whose stored offsets could not be read during the rebalance.
    async fn position_unpositioned(&mut self) {
        let pending: Vec<TopicPartition> = self
            .consumer
            .context()
            .assignment()
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        let ctx = self.consumer.context();
        let found = ctx.tables().lock().await.positions(&pending).await;
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "still cannot read stored offsets");
                return;
            }
        };
        for tp in pending {
            let stored = found.get(&tp).copied();
            if let Err(e) = seek(&self.consumer, &tp, ctx.start_offset(stored)) {
                warn!(topic = %tp.0, partition = tp.1, error = %e, "seek failed; will retry");
                continue;
            }
            let mut assignment = ctx.assignment();
            if let Some(slot) = assignment.positions.get_mut(&tp) {
                *slot = Some(Position {
                    next: stored.map_or(i64::MIN, |o| o + 1),
                });
                if let Some(o) = stored {
                    assignment.stored.insert(tp.clone(), o);
                }
            }
        }
    }

    fn flush_due(&self) -> bool {
        if self.buffer.rows() == 0 || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.buffer.rows() >= self.cfg.flush_rows
            || self.buffer.bytes() >= self.cfg.flush_bytes
            || self.buffer.age() >= Duration::from_millis(self.cfg.flush_age_ms)
    }

    /// Flushes; a retryable failure keeps the buffer and backs off, others stop the pipeline.
    async fn try_flush(&mut self) -> Result<()> {
        match self.flush().await {
            Ok(()) => {
                self.retry_at = None;
                self.retry_delay = Duration::from_millis(200);
                Ok(())
            }
            Err(e) if e.is_retryable() => {
                IngestStats::add(&self.stats.commit_failures, 1);
                error!(error = %e, retry_in = ?self.retry_delay, "flush failed; buffer kept");
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        for topic in self.buffer.topics() {
            // Shared with the decoding thread rather than copied; back into the buffer if the
            // commit fails.
            let taken = Arc::new(self.buffer.take_topic(&topic));
            if let Err(e) = self.flush_topic(&topic, taken.clone()).await {
                self.buffer
                    .restore(Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone()));
                return Err(e);
            }
        }
        Ok(())
    }

    async fn flush_topic(&mut self, topic: &Arc<str>, taken: Arc<TopicMessages>) -> Result<()> {
        let last = self.writer.write(topic, taken).await?;
        if last.is_empty() {
            return Ok(());
        }
        self.consumer.context().stored(&last);

        // Kafka's own committed offsets, for lag monitoring only.
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &last {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o + 1));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "kafka offset commit (monitoring only) failed");
        }
        Ok(())
    }
}
