//! The demo's producer: sends generated records, counting what the broker acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tracing::warn;

use crate::error::{Error, Result};
use crate::generator::{Generator, Injected, METRICS, Record, STEP_SECS};

/// Counts of the producer, shared with progress reporting.
#[derive(Debug, Default)]
pub(crate) struct ProduceStats {
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
}

#[derive(Debug)]
struct Counting(Arc<ProduceStats>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn producer(brokers: &str, stats: Arc<ProduceStats>) -> Result<ThreadedProducer<Counting>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .set("batch.num.messages", "10000")
        .create_with_context(Counting(stats))
        .map_err(|source| Error::Kafka {
            context: format!("failed to create a producer for {brokers}"),
            source,
        })
}

/// Hands `rec` to the producer, waiting while its queue is full.
fn send(producer: &ThreadedProducer<Counting>, rec: &Record) -> Result<(), KafkaError> {
    let mut record = BaseRecord::to(rec.topic).key(&rec.key).payload(&rec.value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Runs the generator against `brokers` at `rate` telemetry messages per second until `stop`;
/// simulated time starts `backfill` ago and never runs ahead of the wall clock. Returns what it
/// injected.
pub(crate) fn run_generator(
    brokers: &str,
    hosts: usize,
    rate: u64,
    backfill: chrono::Duration,
    stats: Arc<ProduceStats>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Injected>> {
    let producer = producer(brokers, stats)?;
    let mut generator = Generator::new(hosts, Utc::now() - backfill, 42, 1000);
    let per_tick = (generator.hosts() * METRICS.len()) as f64;
    let tick_every = Duration::from_secs_f64(per_tick / rate.max(1) as f64);
    let started = Instant::now();
    let mut ticks: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Never produce the future: once caught up, the simulation runs in real time.
        let ahead_us = generator.next_ts_us() - Utc::now().timestamp_micros();
        if ahead_us > 0 {
            std::thread::sleep(
                Duration::from_micros(ahead_us.min(STEP_SECS * 1_000_000) as u64)
                    .min(Duration::from_millis(200)),
            );
            continue;
        }
        for rec in generator.next_tick() {
            if let Err(e) = send(&producer, &rec) {
                warn!(error = %e, "produce failed");
            }
        }
        ticks += 1;
        let due = started + tick_every * ticks;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let _ = producer.flush(Duration::from_secs(10));
    Ok(generator.injected)
}

/// Produces `minutes` simulated minutes ending at `end`, as fast as the broker takes them, and
/// waits for every acknowledgement; returns what the generator injected.
pub(crate) fn generate_period(
    brokers: &str,
    hosts: usize,
    minutes: u64,
    end: chrono::DateTime<Utc>,
    seed: u64,
    stats: Arc<ProduceStats>,
) -> Result<Vec<Injected>> {
    let producer = producer(brokers, stats.clone())?;
    let minutes_i = i64::try_from(minutes).unwrap_or(i64::MAX / 120);
    let mut generator = Generator::new(
        hosts,
        end - chrono::Duration::seconds(minutes_i * STEP_SECS),
        seed,
        0,
    );
    for tick in 0..minutes {
        for rec in generator.next_tick() {
            send(&producer, &rec).map_err(|source| Error::Kafka {
                context: format!("failed to produce to {brokers}"),
                source,
            })?;
        }
        if tick % 60 == 59 {
            eprintln!(
                "{} of {minutes} minutes, {} messages acknowledged",
                tick + 1,
                stats.acked.load(Ordering::Relaxed)
            );
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|source| Error::Kafka {
            context: format!("not every message reached {brokers}"),
            source,
        })?;
    Ok(generator.injected)
}
