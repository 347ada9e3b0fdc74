//! The commit stage: buffered messages of one topic → rows and dead letters → Parquet files →
//! one Delta commit that also records the offsets they cover. The consumer loop drives it, and
//! so does the ingest benchmark, from messages already in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use deltalake::kernel::Add;
use deltalake::{DeltaTable, DeltaTableError};
use schemas::{Storage, TableDef};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{Evolution, IngestConfig, KafkaConfig};
use crate::dead_letter_topic::DeadLetterTopic;
use crate::delta::{DeltaSink, TopicPartition};
use crate::stats::IngestStats;
use crate::{Error, Result};
use decode::{DeadLetter, DeadLetterKind, EventDecoder, RawMessage, dead_letter_batch};

/// Messages of one topic, per partition, in offset order.
pub type TopicMessages = BTreeMap<TopicPartition, Vec<RawMessage>>;

struct TopicSink {
    /// Replaced when the schema evolves.
    decoder: Arc<EventDecoder>,
    sink: DeltaSink,
    evolution: Evolution,
}

/// Writes every configured table: decodes, encodes and uploads partitions in parallel (one
/// blocking task per topic-partition, at most `threads` at a time), then commits once.
pub struct Writer {
    topics: HashMap<Arc<str>, TopicSink>,
    dead_letters: DeltaSink,
    stats: Arc<IngestStats>,
    threads: Arc<Semaphore>,
    /// Where committed dead letters are also produced, when configured.
    dead_letter_topic: Option<DeadLetterTopic>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("topics", &self.topics.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What one partition's task produced.
struct PartitionOutput {
    files: Vec<Add>,
    rows: usize,
    dead_letters: Vec<DeadLetter>,
    times: Option<(i64, i64)>,
}

impl Writer {
    /// Opens (or creates) the table of every configured topic and the dead-letter table.
    pub async fn open(
        cfg: &IngestConfig,
        storage: &Storage,
        stats: Arc<IngestStats>,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut topics = HashMap::new();
        for (topic, entry) in &cfg.topics {
            let evolution = entry.evolution();
            let mut decoder = EventDecoder::new(
                schemas::event_schema(entry.schema())?,
                cfg.limits()?,
                entry.format(),
            )?
            .with_strict(evolution != Evolution::Ignore);
            let sink = DeltaSink::open(storage, decoder.table().clone()).await?;
            // Columns an earlier run added by schema evolution.
            let added = sink.added_fields(decoder.schema())?;
            if !added.is_empty() {
                decoder = decoder.with_fields(&added)?;
            }
            topics.insert(
                Arc::from(topic.as_str()),
                TopicSink {
                    decoder: Arc::new(decoder),
                    sink,
                    evolution,
                },
            );
        }
        let dead_letters = DeltaSink::open(storage, TableDef::dead_letters()).await?;
        Ok(Self {
            topics,
            dead_letters,
            stats,
            threads: Arc::new(Semaphore::new(cfg.writer_threads())),
            dead_letter_topic: None,
        })
    }

    /// Also produces every committed dead letter to `cfg.dead_letter_topic`, if set.
    pub(crate) fn with_dead_letter_topic(
        mut self,
        kafka: &KafkaConfig,
        cfg: &IngestConfig,
    ) -> Result<Self> {
        if !cfg.dead_letter_topic.is_empty() {
            self.dead_letter_topic = Some(DeadLetterTopic::new(
                kafka,
                &cfg.dead_letter_topic,
                self.stats.clone(),
            )?);
        }
        Ok(self)
    }

    /// The configured topic named `name` (shared, so messages can carry it cheaply).
    pub fn topic(&self, name: &str) -> Option<&Arc<str>> {
        self.topics.get_key_value(name).map(|(k, _)| k)
    }

    /// A handle on each topic's data table, for reading stored offsets during rebalances.
    pub(crate) fn data_tables(&self) -> HashMap<Arc<str>, DeltaTable> {
        self.topics
            .iter()
            .map(|(t, ts)| (t.clone(), ts.sink.handle()))
            .collect()
    }

    /// Deletes unreferenced data files older than `min_age` from every table (see
    /// [`DeltaSink::remove_orphans`]); call it between flushes, never during one.
    pub async fn remove_orphans(&mut self, min_age: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        for ts in self.topics.values_mut() {
            removed += ts.sink.remove_orphans(min_age).await?;
        }
        removed += self.dead_letters.remove_orphans(min_age).await?;
        IngestStats::add(&self.stats.orphans_removed, removed as u64);
        Ok(removed)
    }

    /// Stores `messages` of `topic`: every message becomes a row of the topic's table or a dead
    /// letter, committed together with the last offset of each partition. Messages at or below
    /// what the table already holds are dropped first (fencing, ADR 0003). Returns the offsets
    /// the commit recorded; empty when there was nothing new to store.
    pub async fn write(
        &mut self,
        topic: &Arc<str>,
        messages: Arc<TopicMessages>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let Some(ts) = self.topics.get_mut(topic) else {
            return Ok(BTreeMap::new());
        };
        // Fencing: re-read what the table holds for these partitions. Anything at or below it
        // was stored by another member (the partition moved away and back, or a member that
        // lost it committed late) and is dropped here; Delta's conflict check rejects this
        // commit if another one touches the same partitions before it lands.
        let parts: Vec<TopicPartition> = messages.keys().cloned().collect();
        let stored = ts.sink.stored_offsets(&parts).await?;
        let messages = drop_stored(messages, &stored, &self.stats);
        // The offsets this commit records; never one at or below what is stored, so a stored
        // offset only moves forward.
        let last: BTreeMap<TopicPartition, i64> = messages
            .iter()
            .filter_map(|(tp, msgs)| msgs.last().map(|m| (tp.clone(), m.offset)))
            .collect();
        if last.is_empty() {
            return Ok(last);
        }

        let started = Instant::now();
        let writing: Vec<TopicPartition> = last.keys().cloned().collect();
        let hold = ts.evolution == Evolution::AddFields;
        let (mut outputs, held) =
            encode_partitions(ts, &self.threads, topic, &writing, &messages, hold).await?;
        if !held.is_empty() {
            // Schema evolution: these partitions carry fields the table lacks. Add them as
            // columns (files already written for the other partitions stay valid: the new
            // columns are nullable), then decode these partitions again.
            let fields = decode::new_fields(
                ts.decoder.schema(),
                held.iter().filter_map(|tp| messages.get(tp)).flatten(),
            );
            if !fields.is_empty() {
                ts.sink.add_fields(&fields).await?;
                // The conflict check now starts from the refreshed snapshot: re-check that no
                // other member stored these partitions meanwhile.
                let now = ts.sink.stored_offsets(&writing).await?;
                let before: BTreeMap<_, _> = stored
                    .iter()
                    .filter(|(tp, _)| last.contains_key(*tp))
                    .map(|(tp, o)| (tp.clone(), *o))
                    .collect();
                if now != before {
                    return Err(Error::delta(
                        &ts.sink.def().table,
                        "fencing",
                        DeltaTableError::Generic(
                            "another member stored these partitions while the schema evolved; retrying".into(),
                        ),
                    ));
                }
                ts.decoder = Arc::new(ts.decoder.with_fields(&fields)?);
                IngestStats::add(&self.stats.columns_added, fields.len() as u64);
                let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                info!(table = %ts.sink.def().table, columns = ?names, "schema evolved: columns added");
            }
            let (more, _) =
                encode_partitions(ts, &self.threads, topic, &held, &messages, false).await?;
            outputs.extend(more);
        }
        let mut files = Vec::new();
        let mut rows = 0;
        let mut dead_letters = Vec::new();
        let mut times: Option<(i64, i64)> = None;
        for out in outputs {
            files.extend(out.files);
            rows += out.rows;
            dead_letters.extend(out.dead_letters);
            if let Some((lo, hi)) = out.times {
                times = Some(times.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }

        // Dead letters first. Their table keeps its own offsets, so after a crash between the
        // two commits the replay skips the dead letters already stored (ADR 0001).
        if !dead_letters.is_empty() {
            self.commit_dead_letters(dead_letters, &last).await?;
        }

        let Some(ts) = self.topics.get_mut(topic) else {
            return Ok(BTreeMap::new());
        };
        let version = ts.sink.commit_files(files, &last).await?;
        let table = ts.sink.def().table.to_string();
        self.stats
            .committed(&table, rows as u64, started.elapsed().as_secs_f64());
        if let Some((oldest, newest)) = times {
            let now = chrono::Utc::now().timestamp_micros();
            self.stats.set_freshness(
                &table,
                (now - newest) as f64 / 1e6,
                (now - oldest) as f64 / 1e6,
            );
        }
        debug!(table = %table, version, rows, "committed");
        Ok(last)
    }

    /// Commits the dead letters of one window, one file per topic-partition, skipping those
    /// the dead-letter table already holds.
    async fn commit_dead_letters(
        &mut self,
        dead_letters: Vec<DeadLetter>,
        last: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<TopicPartition, Vec<DeadLetter>> = BTreeMap::new();
        for d in dead_letters {
            by_partition
                .entry((d.topic.clone(), d.partition))
                .or_default()
                .push(d);
        }
        let parts: Vec<TopicPartition> = by_partition.keys().cloned().collect();
        let stored = self.dead_letters.stored_offsets(&parts).await?;
        let mut offsets = BTreeMap::new();
        let mut batches = Vec::new();
        let mut kinds = Vec::new();
        let mut committed = Vec::new();
        for (tp, letters) in by_partition {
            let new: Vec<DeadLetter> = letters
                .into_iter()
                .filter(|d| stored.get(&tp).is_none_or(|s| d.offset > *s))
                .collect();
            if new.is_empty() {
                continue;
            }
            if let Some(o) = last.get(&tp) {
                offsets.insert(tp.clone(), *o);
            }
            kinds.extend(new.iter().map(|d| d.kind.as_str()));
            batches.push((tp, dead_letter_batch(self.dead_letters.def(), &new)?));
            committed.extend(new);
        }
        if batches.is_empty() {
            return Ok(());
        }
        let writers = batches
            .into_iter()
            .map(|(tp, batch)| Ok((self.dead_letters.file_writer()?, tp, batch)))
            .collect::<Result<Vec<_>>>()?;
        let handle = tokio::runtime::Handle::current();
        let name: Arc<str> = Arc::from(self.dead_letters.def().table.to_string());
        let files = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            for (writer, tp, batch) in writers {
                files.extend(writer.write(&handle, &tp, batch)?);
            }
            Ok::<_, Error>(files)
        })
        .await
        .map_err(|e| join_error(&name, e))??;
        let version = self.dead_letters.commit_files(files, &offsets).await?;
        for kind in &kinds {
            self.stats.dead_letter(kind);
        }
        if let Some(dlq) = &self.dead_letter_topic {
            dlq.send(&committed);
        }
        IngestStats::add(&self.stats.commits, 1);
        debug!(version, rows = kinds.len(), "dead letters committed");
        Ok(())
    }
}

/// Decodes, encodes and uploads each of `parts` on its own blocking thread (at most `threads`
/// at once). With `hold_unknown`, a partition whose messages carry fields the schema lacks is
/// returned in the second list instead, unwritten, for schema evolution.
async fn encode_partitions(
    ts: &TopicSink,
    threads: &Arc<Semaphore>,
    topic: &Arc<str>,
    parts: &[TopicPartition],
    messages: &Arc<TopicMessages>,
    hold_unknown: bool,
) -> Result<(Vec<PartitionOutput>, Vec<TopicPartition>)> {
    let handle = tokio::runtime::Handle::current();
    let mut tasks = JoinSet::new();
    for tp in parts {
        let permit = threads
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| join_error(topic, e))?;
        let writer = ts.sink.file_writer()?;
        let decoder = ts.decoder.clone();
        let messages = messages.clone();
        let handle = handle.clone();
        let tp = tp.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            let msgs = messages.get(&tp).map(Vec::as_slice).unwrap_or_default();
            let decoded = decoder.decode(msgs)?;
            if hold_unknown
                && decoded
                    .dead_letters
                    .iter()
                    .any(|d| d.kind == DeadLetterKind::UnknownField)
            {
                return Ok::<_, Error>(Err(tp));
            }
            let (files, rows, times) = match decoded.batch {
                Some(batch) => {
                    let rows = batch.num_rows();
                    let times = decoder.time_range(std::slice::from_ref(&batch));
                    (writer.write(&handle, &tp, batch)?, rows, times)
                }
                None => (Vec::new(), 0, None),
            };
            Ok(Ok(PartitionOutput {
                files,
                rows,
                dead_letters: decoded.dead_letters,
                times,
            }))
        });
    }
    let mut outputs = Vec::with_capacity(parts.len());
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| join_error(topic, e))?? {
            Ok(out) => outputs.push(out),
            Err(tp) => held.push(tp),
        }
    }
    held.sort();
    Ok((outputs, held))
}

fn join_error(table: &Arc<str>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Arrow {
        table: table.to_string(),
        source: arrow::error::ArrowError::ExternalError(Box::new(e)),
    }
}

/// Removes, from each partition's messages, those at or below the offset its table already holds.
fn drop_stored(
    taken: Arc<TopicMessages>,
    stored: &BTreeMap<TopicPartition, i64>,
    stats: &IngestStats,
) -> Arc<TopicMessages> {
    let already =
        |tp: &TopicPartition, m: &RawMessage| stored.get(tp).is_some_and(|s| m.offset <= *s);
    let any = taken
        .iter()
        .any(|(tp, msgs)| msgs.first().is_some_and(|m| already(tp, m)));
    if !any {
        return taken;
    }
    let mut dropped = 0;
    let kept = taken
        .iter()
        .map(|(tp, msgs)| {
            let keep: Vec<RawMessage> = msgs.iter().filter(|m| !already(tp, m)).cloned().collect();
            dropped += msgs.len() - keep.len();
            (tp.clone(), keep)
        })
        .collect();
    warn!(
        dropped,
        "messages already stored by another member were dropped before commit"
    );
    IngestStats::add(&stats.messages_skipped, dropped as u64);
    Arc::new(kept)
}
