//! The Kafka consumer and its rebalance handling: partitions are positioned from the offsets
//! stored in the Delta tables, never from Kafka's committed offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deltalake::DeltaTable;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tracing::{error, info, warn};

use crate::config::{KafkaConfig, StartOffset};
use crate::delta::{TopicPartition, stored_offsets};
use crate::stats::IngestStats;
use crate::{Error, Result};

/// Where a partition's reading stands: messages below `next` were already stored (or read into
/// the buffer) and are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub next: i64,
}

/// Positions of the partitions this process owns. `None` means assigned but not yet positioned
/// (the table could not be read); such partitions' messages are skipped until it is.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    pub positions: HashMap<TopicPartition, Option<Position>>,
    /// Last offset each assigned partition's table stores (for lag).
    pub stored: HashMap<TopicPartition, i64>,
    /// Partitions revoked since the main loop last looked; their buffers must be dropped.
    pub revoked: BTreeSet<TopicPartition>,
}

/// The event tables, whose stored offsets position each topic's partitions.
#[derive(Debug)]
pub(crate) struct OffsetTables {
    pub data: HashMap<Arc<str>, DeltaTable>,
}

impl OffsetTables {
    /// Reads the stored offsets of `partitions` from their topics' tables.
    pub(crate) async fn positions(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut by_topic: BTreeMap<Arc<str>, Vec<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(tp.0.clone()).or_default().push(tp.clone());
        }
        let mut out = BTreeMap::new();
        for (topic, parts) in by_topic {
            if let Some(table) = self.data.get_mut(&topic) {
                out.extend(stored_offsets(table, &parts).await?);
            }
        }
        Ok(out)
    }
}

/// Consumer context: positions assigned partitions from the Delta log during the rebalance.
#[derive(Debug)]
pub(crate) struct IngestContext {
    runtime: tokio::runtime::Handle,
    start: StartOffset,
    tables: tokio::sync::Mutex<OffsetTables>,
    assignment: Mutex<Assignment>,
    stats: Arc<IngestStats>,
    errors: ErrorLog,
}

/// How often one kind of librdkafka client error is logged while it keeps recurring.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// librdkafka's global client errors, each distinct one logged at most once per
/// [`ERROR_LOG_INTERVAL`] with a count of the repeats in between. While a broker is away,
/// librdkafka reports `AllBrokersDown` on every failed reconnect, many times a second.
#[derive(Debug, Default)]
struct ErrorLog {
    /// Error text → when it was last logged and how often it came since.
    seen: Mutex<HashMap<String, (std::time::Instant, u64)>>,
}

impl ErrorLog {
    /// Distinct texts remembered; more (a flood of distinct errors) start the memory afresh.
    const CAPACITY: usize = 256;

    /// The line to log for one occurrence of `text` at `now`, if any.
    fn report(&self, text: String, now: std::time::Instant) -> Option<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= Self::CAPACITY && !seen.contains_key(&text) {
            seen.clear();
        }
        match seen.get_mut(&text) {
            Some((last, repeats)) if now.duration_since(*last) < ERROR_LOG_INTERVAL => {
                *repeats += 1;
                None
            }
            Some((last, repeats)) => {
                let line = if *repeats == 0 {
                    text
                } else {
                    format!(
                        "{text} (and {repeats} more times in the {} s before)",
                        now.duration_since(*last).as_secs()
                    )
                };
                *last = now;
                *repeats = 0;
                Some(line)
            }
            None => {
                seen.insert(text.clone(), (now, 0));
                Some(text)
            }
        }
    }
}

impl ClientContext for IngestContext {
    /// Global errors (a broker unreachable, all brokers down, …), rate-limited per kind: the
    /// default logs each one, which is several lines a second while a broker is away.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Some(line) = self
            .errors
            .report(format!("{error}: {reason}"), std::time::Instant::now())
        {
            error!("librdkafka: {line}");
        }
    }

    /// librdkafka's periodic statistics give each partition's high watermark: lag is what lies
    /// between it and the offset the table stores.
    fn stats(&self, statistics: Statistics) {
        let assignment = self.assignment();
        let mut lag = BTreeMap::new();
        for (topic, partition) in assignment.positions.keys() {
            let Some(p) = statistics
                .topics
                .get(&**topic)
                .and_then(|t| t.partitions.get(partition))
            else {
                continue;
            };
            if p.hi_offset < 0 {
                continue;
            }
            let next = assignment
                .stored
                .get(&(topic.clone(), *partition))
                .map_or(p.lo_offset.max(0), |s| s + 1);
            lag.insert((topic.to_string(), *partition), (p.hi_offset - next).max(0));
        }
        self.stats.set_lag(lag);
    }
}

impl IngestContext {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        start: StartOffset,
        tables: OffsetTables,
        stats: Arc<IngestStats>,
    ) -> Self {
        Self {
            runtime,
            start,
            tables: tokio::sync::Mutex::new(tables),
            assignment: Mutex::new(Assignment::default()),
            stats,
            errors: ErrorLog::default(),
        }
    }

    pub(crate) fn assignment(&self) -> MutexGuard<'_, Assignment> {
        // A poisoned lock only means another thread panicked mid-update; the map is still usable.
        self.assignment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records offsets just stored by a commit.
    pub(crate) fn stored(&self, offsets: &BTreeMap<TopicPartition, i64>) {
        let mut assignment = self.assignment();
        for (tp, o) in offsets {
            if assignment.positions.contains_key(tp) {
                assignment.stored.insert(tp.clone(), *o);
            }
        }
    }

    pub(crate) fn tables(&self) -> &tokio::sync::Mutex<OffsetTables> {
        &self.tables
    }

    /// Runs `fut` to completion from inside librdkafka's callback, which is synchronous.
    fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        match self.runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(fut))
            }
            _ => std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
        }
    }

    pub(crate) fn start_offset(&self, stored: Option<i64>) -> Offset {
        match (stored, self.start) {
            (Some(o), _) => Offset::Offset(o + 1),
            (None, StartOffset::Earliest) => Offset::Beginning,
            (None, StartOffset::Latest) => Offset::End,
        }
    }

    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::from(e.topic()), e.partition()))
            .collect();
        let found = self.block_on(async {
            let mut tables = self.tables.lock().await;
            tables.positions(&parts).await
        });
        let mut assignment = self.assignment();
        match found {
            Ok(found) => {
                for tp in &parts {
                    let stored = found.get(tp).copied();
                    if let Some(o) = stored {
                        assignment.stored.insert(tp.clone(), o);
                    }
                    let offset = self.start_offset(stored);
                    if let Err(e) = tpl.set_partition_offset(&tp.0, tp.1, offset) {
                        warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot set start offset");
                    }
                    // With no stored offset every message of the partition is new.
                    let next = stored.map_or(i64::MIN, |o| o + 1);
                    assignment
                        .positions
                        .insert(tp.clone(), Some(Position { next }));
                }
                info!(partitions = ?parts_for_log(&parts), "assigned; positioned from the Delta log");
            }
            Err(e) => {
                // Assign anyway so the group stays stable; the main loop positions the
                // partitions (seek) once the tables can be read, and skips them until then.
                error!(error = %e, "cannot read stored offsets; partitions stay unpositioned");
                for tp in &parts {
                    assignment.positions.insert(tp.clone(), None);
                }
            }
        }
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        let mut assignment = self.assignment();
        for e in tpl.elements() {
            let tp: TopicPartition = (Arc::from(e.topic()), e.partition());
            assignment.positions.remove(&tp);
            assignment.stored.remove(&tp);
            assignment.revoked.insert(tp);
        }
    }
}

fn parts_for_log(parts: &[TopicPartition]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}[{p}]")).collect()
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        IngestStats::add(&self.stats.rebalances, 1);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                error!(error = ?other, "rebalance error; dropping the assignment");
                self.on_revoke(tpl);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            error!(error = %e, "failed to apply the rebalance");
        }
    }
}

pub(crate) type IngestConsumer = StreamConsumer<IngestContext>;

/// Creates the group consumer and subscribes it to `topics`.
pub(crate) fn create_consumer(
    cfg: &KafkaConfig,
    topics: &[&str],
    context: IngestContext,
) -> Result<IngestConsumer> {
    let mut client = ClientConfig::new();
    // Defaults the properties may override. librdkafka postpones the next fetch of a
    // partition by `fetch.queue.backoff.ms` (1 s by default) when its prefetch queue is full —
    // which it is after every flush, when this loop stops reading for a moment: with the
    // default, each flush cost a second of idle reading (measured: 206k/s end to end instead
    // of 616k/s). The prefetch queue is capped at 32 MiB instead of 64 MiB (memory bound).
    client
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.max.messages.kbytes", "32768");
    for (k, v) in &cfg.properties {
        client.set(k, v);
    }
    client
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        // Offsets live in the Delta log; Kafka's committed offsets are written only for lag
        // monitoring, after each Delta commit.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            match cfg.start_offset {
                StartOffset::Earliest => "earliest",
                StartOffset::Latest => "latest",
            },
        )
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        // Statistics carry each partition's high watermark, for the lag metric.
        .set("statistics.interval.ms", "5000");
    let consumer: IngestConsumer = client.create_with_context(context).map_err(|e| {
        Error::kafka(
            format!("failed to create a consumer for {}", cfg.brokers),
            e,
        )
    })?;
    consumer
        .subscribe(topics)
        .map_err(|e| Error::kafka(format!("failed to subscribe to {topics:?}"), e))?;
    Ok(consumer)
}

/// Moves an unpositioned partition to its stored position.
pub(crate) fn seek(
    consumer: &IngestConsumer,
    tp: &TopicPartition,
    offset: Offset,
) -> KafkaResult<()> {
    consumer.seek(&tp.0, tp.1, offset, Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{ERROR_LOG_INTERVAL, ErrorLog};

    #[test]
    fn a_recurring_client_error_is_logged_once_per_interval_with_its_count() {
        let log = ErrorLog::default();
        let t0 = Instant::now();
        let down = || "AllBrokersDown: 1/1 brokers are down".to_string();
        assert_eq!(log.report(down(), t0).as_deref(), Some(down().as_str()));
        // Twenty a second for the interval: nothing more is logged...
        for i in 1..600 {
            assert_eq!(log.report(down(), t0 + Duration::from_millis(50 * i)), None);
        }
        // ... and a different error is logged at once.
        let refused = "BrokerTransportFailure: connection refused".to_string();
        assert!(log.report(refused, t0 + Duration::from_secs(1)).is_some());
        // After the interval the next occurrence is logged with the count it stood for.
        let later = t0 + ERROR_LOG_INTERVAL + Duration::from_millis(50);
        assert_eq!(
            log.report(down(), later).as_deref(),
            Some("AllBrokersDown: 1/1 brokers are down (and 599 more times in the 30 s before)")
        );
        assert_eq!(log.report(down(), later + Duration::from_millis(50)), None);
    }
}
