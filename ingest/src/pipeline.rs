//! The ingest main loop: read, buffer, flush to Delta with offsets, repeat.
//!
//! A flush (decode, Parquet, Delta commit) runs as its own task while the loop keeps reading
//! into the buffer, one flush at a time: reading and writing overlap. Exactly-once does not rest
//! on the loop seeing the flush finish before it reads again: each flush re-reads the offsets
//! the table stores and drops what is at or below them, and concurrent commits of one partition
//! conflict on its `txn` (ADR 0003), so a partition revoked (or revoked and assigned back) while
//! its flush is in flight is neither lost nor stored twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::Storage;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::buffer::Buffer;
use crate::config::{IngestConfig, KafkaConfig};
use crate::consumer::{
    IngestConsumer, IngestContext, OffsetTables, Position, create_consumer, seek,
};
use crate::delta::TopicPartition;
use crate::stats::IngestStats;
use crate::writer::{TopicMessages, Writer};
use crate::{Error, Result};
use decode::RawMessage;

/// What a flush task hands back: the writer, the offsets each committed topic stored, and on
/// failure the error with the messages it did not commit.
struct FlushDone {
    writer: Writer,
    stored: Vec<BTreeMap<TopicPartition, i64>>,
    failed: Option<(Error, Vec<TopicMessages>)>,
}

/// The flush in flight, and the size of what it holds (counted against the buffer caps).
struct Inflight {
    task: tokio::task::JoinHandle<FlushDone>,
    rows: usize,
    bytes: usize,
}

/// A running ingest process: one consumer-group member feeding every configured table.
pub struct Pipeline {
    /// Shared with the loop's message stream, which borrows it for the whole run.
    consumer: Arc<IngestConsumer>,
    /// `None` while a flush task holds it.
    writer: Option<Writer>,
    /// The configured topics (the writer's names), for messages read while it is away.
    topics: BTreeMap<String, Arc<str>>,
    inflight: Option<Inflight>,
    buffer: Buffer,
    /// Where message keys and values are copied out of the consumer (see [`copy_in`]).
    arena: BytesMut,
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
            .field("flushing", &self.inflight.is_some())
            .finish()
    }
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Messages taken from the consumer per wake-up of the loop, at most.
const DRAIN_MAX: usize = 4096;

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
        let topics = names
            .iter()
            .filter_map(|n| writer.topic(n).map(|t| (n.to_string(), t.clone())))
            .collect();
        Ok(Self {
            consumer: Arc::new(consumer),
            writer: Some(writer),
            topics,
            inflight: None,
            buffer: Buffer::default(),
            arena: BytesMut::new(),
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
        // One stream for the whole run: `recv()` would register and unregister a waker (two
        // locks) per message.
        let consumer = Arc::clone(&self.consumer);
        let mut messages = consumer.stream();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Bounded memory: at a cap (buffered plus the flush in flight) the loop stops
            // reading until a flush makes room. While a flush runs that is a short wait, and
            // librdkafka's prefetch queue is capped on its own; when none can run (the store is
            // slow or down: backing off) the partitions are paused, so the loop can keep
            // polling (and stay in the group) without the prefetch queue refilling.
            let full = self.buffer_full();
            self.set_paused(full && self.inflight.is_none());
            // The next flush's rows are read while the current one runs, no more: each flush
            // holds about `flush_rows` (files keep the configured size).
            let wait = full || (self.inflight.is_some() && self.window_filled());
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                done = join(&mut self.inflight) => self.finish_flush(done)?,
                _ = tick.tick() => self.position_unpositioned().await,
                Some(msg) = messages.next(), if !wait => {
                    let got = msg.map(|m| self.detach(&m));
                    self.received(got, &mut last_recv_error);
                    // Take what librdkafka has already fetched without a trip through the
                    // select (its timers, the shutdown watch) per message.
                    for _ in 0..DRAIN_MAX {
                        if self.window_filled() || self.buffer_full() {
                            break;
                        }
                        let Some(Some(msg)) = messages.next().now_or_never() else {
                            break;
                        };
                        let got = msg.map(|m| self.detach(&m));
                        self.received(got, &mut last_recv_error);
                    }
                }
            }
            self.drop_revoked();
            if self.inflight.is_none() && self.flush_due() {
                self.start_flush();
            }
            self.clean_up_orphans().await;
        }
        // Shutdown: commit what is buffered, retrying for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.inflight.is_some() {
                let done = join(&mut self.inflight).await;
                self.finish_flush(done)?;
            }
            if self.buffer.rows() == 0 || Instant::now() >= deadline {
                break;
            }
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                tokio::time::sleep(self.retry_delay).await;
            }
            self.retry_at = None;
            self.start_flush();
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
        // Only between flushes: none of this process's uploads may be in flight.
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        self.cleaned = Some(Instant::now());
        let min_age = Duration::from_secs(self.cfg.orphan_min_age_s);
        match writer.remove_orphans(min_age).await {
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
        let (rows, bytes) = self.held();
        IngestStats::set(&self.stats.buffered_messages, rows as u64);
        IngestStats::set(&self.stats.buffered_bytes, bytes as u64);
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
                        buffered = rows,
                        bytes, "buffer full (the store is slow or down): partitions paused"
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
    fn detach(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<RawMessage> {
        let topic = self.topics.get(m.topic())?.clone();
        Some(RawMessage {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| copy_in(&mut self.arena, k)),
            value: m.payload().map(|v| copy_in(&mut self.arena, v)),
        })
    }

    /// Buffers a message unless it is already stored or its partition is not positioned.
    fn accept(&mut self, raw: RawMessage) {
        let tp: TopicPartition = (raw.topic.clone(), raw.partition);
        let offset = raw.offset;
        // One lock per message: the revocations the last poll saw are taken with the position.
        let (revoked, expected) = {
            let mut assignment = self.consumer.context().assignment();
            let revoked = std::mem::take(&mut assignment.revoked);
            let expected = match assignment.positions.get_mut(&tp) {
                Some(Some(pos)) if offset >= pos.next => {
                    let expected = pos.next;
                    pos.next = offset + 1;
                    Some(expected)
                }
                _ => None,
            };
            (revoked, expected)
        };
        // Before this message is buffered: a partition revoked and assigned back is read again.
        for revoked in revoked {
            self.buffer.drop_partition(&revoked);
        }
        let Some(expected) = expected else {
            IngestStats::add(&self.stats.messages_skipped, 1);
            return;
        };
        if expected != i64::MIN && offset > expected {
            debug!(topic = %tp.0, partition = tp.1, expected, offset, "offset gap");
        }
        IngestStats::add(&self.stats.messages_consumed, 1);
        IngestStats::add(
            &self.stats.bytes_consumed,
            raw.value.as_ref().map_or(0, Bytes::len) as u64,
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
        self.window_filled() || self.buffer.age() >= Duration::from_millis(self.cfg.flush_age_ms)
    }

    /// Whether the buffer holds a flush's worth by size (its age is checked by
    /// [`Self::flush_due`]).
    fn window_filled(&self) -> bool {
        self.buffer.rows() >= self.cfg.flush_rows || self.buffer.bytes() >= self.cfg.flush_bytes
    }

    /// Whether what is held (buffered plus in flight) is at a cap.
    fn buffer_full(&self) -> bool {
        let (rows, bytes) = self.held();
        rows >= self.cfg.max_buffered_messages || bytes >= self.cfg.max_buffered_bytes
    }

    /// Handles one result of the consumer: buffers a message, reports an error (at most every
    /// 10 s).
    fn received(
        &mut self,
        got: std::result::Result<Option<RawMessage>, rdkafka::error::KafkaError>,
        last_error: &mut Option<Instant>,
    ) {
        match got {
            Ok(Some(raw)) => self.accept(raw),
            Ok(None) => self.drop_revoked(),
            Err(e) => {
                self.drop_revoked();
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(error = %e, "kafka consumer error (will keep retrying)");
                    *last_error = Some(Instant::now());
                }
            }
        }
    }

    /// Messages read but not yet committed: buffered, and held by the flush in flight.
    fn held(&self) -> (usize, usize) {
        let (rows, bytes) = self.inflight.as_ref().map_or((0, 0), |f| (f.rows, f.bytes));
        (self.buffer.rows() + rows, self.buffer.bytes() + bytes)
    }

    /// Takes everything buffered into a flush task (the caller checked none is in flight).
    fn start_flush(&mut self) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        let (rows, bytes) = (self.buffer.rows(), self.buffer.bytes());
        let taken: Vec<(Arc<str>, TopicMessages)> = self
            .buffer
            .topics()
            .into_iter()
            .map(|t| {
                let messages = self.buffer.take_topic(&t);
                (t, messages)
            })
            .collect();
        let task = tokio::spawn(async move {
            let mut stored = Vec::new();
            let mut rest = taken.into_iter();
            while let Some((topic, messages)) = rest.next() {
                // Shared with the decoding threads rather than copied; back into the buffer
                // if the commit fails.
                let messages = Arc::new(messages);
                match writer.write(&topic, messages.clone()).await {
                    Ok(last) => stored.push(last),
                    Err(e) => {
                        let mut back =
                            vec![Arc::try_unwrap(messages).unwrap_or_else(|m| (*m).clone())];
                        back.extend(rest.map(|(_, m)| m));
                        return FlushDone {
                            writer,
                            stored,
                            failed: Some((e, back)),
                        };
                    }
                }
            }
            FlushDone {
                writer,
                stored,
                failed: None,
            }
        });
        self.inflight = Some(Inflight { task, rows, bytes });
    }

    /// Takes a finished flush's results: records what it stored; on a retryable failure puts
    /// its messages back (those of partitions still owned, ahead of anything read since) and
    /// backs off; other failures stop the pipeline.
    fn finish_flush(
        &mut self,
        done: std::result::Result<FlushDone, tokio::task::JoinError>,
    ) -> Result<()> {
        let done = done.map_err(|e| Error::Flush(e.to_string()))?;
        self.writer = Some(done.writer);
        for last in &done.stored {
            self.stored(last);
        }
        let Some((e, back)) = done.failed else {
            self.retry_at = None;
            self.retry_delay = Duration::from_millis(200);
            return Ok(());
        };
        if !e.is_retryable() {
            return Err(e);
        }
        // Revoked while in flight: another member reads them from the stored offsets.
        self.drop_revoked();
        let assignment = self.consumer.context().assignment();
        for mut messages in back {
            messages.retain(|tp, _| assignment.positions.contains_key(tp));
            self.buffer.restore(messages);
        }
        drop(assignment);
        IngestStats::add(&self.stats.commit_failures, 1);
        error!(error = %e, retry_in = ?self.retry_delay, "flush failed; buffer kept");
        self.retry_at = Some(Instant::now() + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        Ok(())
    }

    /// Records offsets a commit stored (positions, lag) and mirrors them to Kafka's committed
    /// offsets, which are for lag monitoring only.
    fn stored(&self, last: &BTreeMap<TopicPartition, i64>) {
        if last.is_empty() {
            return;
        }
        self.consumer.context().stored(last);
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in last {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o + 1));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "kafka offset commit (monitoring only) failed");
        }
    }
}

/// Bytes of consumed messages per shared allocation.
const ARENA_CHUNK: usize = 64 * 1024;

/// Copies `bytes` into `arena`: consecutive messages share one allocation of [`ARENA_CHUNK`]
/// (a message larger than that gets its own), freed when the last of them is dropped — one
/// malloc and free per few hundred messages instead of one or two per message.
fn copy_in(arena: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if arena.capacity() - arena.len() < bytes.len() {
        *arena = BytesMut::with_capacity(ARENA_CHUNK.max(bytes.len()));
    }
    arena.extend_from_slice(bytes);
    arena.split().freeze()
}

/// Waits for the flush in flight and clears it; never ready when there is none.
async fn join(
    inflight: &mut Option<Inflight>,
) -> std::result::Result<FlushDone, tokio::task::JoinError> {
    let done = match inflight {
        Some(f) => (&mut f.task).await,
        None => std::future::pending().await,
    };
    *inflight = None;
    done
}
