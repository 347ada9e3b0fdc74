//! The broker (Tansu), loading the payload into it, and the consume-only ceiling.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::error::{Error, Result};
use crate::payload::Payload;
use crate::procs::{Proc, free_port, wait_port};

/// A Tansu broker with in-memory storage, killed on drop.
#[derive(Debug)]
pub(crate) struct Broker {
    proc: Proc,
    port: u16,
    tansu: PathBuf,
}

impl Broker {
    pub(crate) fn start(tools: &Path, dir: &Path) -> Result<Self> {
        let tansu = tools.join("bin/tansu");
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let proc = Proc::spawn(
            "tansu",
            Command::new(&tansu)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .env("RUST_LOG", "warn"),
            dir,
        )?;
        wait_port("tansu", port, Duration::from_secs(30))?;
        Ok(Self { proc, port, tansu })
    }

    pub(crate) fn pid(&self) -> String {
        self.proc.pid()
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let out = Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .map_err(|e| Error::io("failed to run tansu topic create", e))?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "tansu topic create {name} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.0.ok
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces every event, round-robin over the partitions (so offsets match the pipeline
/// stage's windows); returns the time until all were acknowledged.
pub(crate) fn produce(brokers: &str, payload: &Payload, partitions: i32) -> Result<Duration> {
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(Counting(acks.clone()))
        .map_err(|e| Error::kafka("failed to create the producer", e))?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (i, m) in payload.messages.iter().enumerate() {
        let mut record = BaseRecord::<(), [u8]>::to("telemetry")
            .partition(i as i32 % partitions)
            .payload(m.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(Error::kafka("failed to produce", e)),
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  producing: {i} sent, {} acknowledged",
                acks.ok.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    producer
        .flush(Duration::from_secs(600))
        .map_err(|e| Error::kafka("failed to flush the producer", e))?;
    let ok = acks.ok.load(Ordering::Relaxed);
    if ok != payload.messages.len() as u64 {
        return Err(Error::Failed(format!(
            "{ok} of {} events acknowledged, {} failed",
            payload.messages.len(),
            acks.failed.load(Ordering::Relaxed)
        )));
    }
    Ok(started.elapsed())
}

/// Reads the topic from the start in a fresh consumer group until `events` messages arrived;
/// returns the time from the first message to the last (the group join is not counted, as it
/// is not for the end-to-end runs).
pub(crate) fn consume_only(brokers: &str, events: usize, run: usize) -> Result<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bench-ceiling-{run}-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| Error::kafka("failed to create the consumer", e))?;
    consumer
        .subscribe(&["telemetry"])
        .map_err(|e| Error::kafka("failed to subscribe", e))?;
    let mut n = 0usize;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(1200);
    while n < events {
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "consume-only read {n} of {events} events in 20 minutes"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                // Touch the payload as a consumer would.
                n += usize::from(rdkafka::Message::payload(&m).is_some_and(|p| !p.is_empty()));
            }
            Some(Err(e)) => return Err(Error::kafka("consume failed", e)),
            None => {}
        }
    }
    Ok(first.map(|t| t.elapsed()).unwrap_or_default())
}
