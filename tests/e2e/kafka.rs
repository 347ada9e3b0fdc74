//! Producing test traffic with rdkafka (librdkafka built by the crate; Debian's is too old for
//! Tansu's ApiVersion handshake).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);
impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Event time of event `i`: 1.2 s apart from 2025-11-27T00:00:00Z (the first 200,000 span three
/// days).
pub(crate) fn event_ts_us(i: u64) -> u64 {
    1_764_201_600_000_000 + i * 1_200_000
}

/// Produces telemetry events `from..to` to the `telemetry` topic and waits until the broker has
/// acknowledged every one. Event `i` carries `labels.seq = i`, so tests can find each one.
pub(crate) fn produce_telemetry(brokers: &str, from: u64, to: u64) {
    produce(
        brokers,
        "telemetry",
        (from..to).map(|i| {
            let host = format!("host-{:03}", i % 500);
            let value = format!(
                r#"{{"ts":{},"host":"{host}","service":"svc-{}","region":"eu-west","metric":"cpu_pct","value":{}.5,"labels":{{"seq":"{i}"}}}}"#,
                event_ts_us(i),
                i % 7,
                i % 100
            );
            (host, value.into_bytes())
        }),
    );
}

/// Produces `(key, value)` records to `topic` and waits until the broker has acknowledged
/// every one.
pub(crate) fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "300000")
        .create_with_context(Counting(acks.clone()))
        .expect("producer");
    let mut sent = 0u64;
    for (key, value) in records {
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(
        acks.ok.load(Ordering::Relaxed),
        sent,
        "not every record was acknowledged"
    );
}

/// Reads partition 0 of `topic` from the beginning until `n` messages arrived (or `timeout`
/// passed); returns each message's headers and payload.
pub(crate) fn read_partition(
    brokers: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<(std::collections::BTreeMap<String, String>, Vec<u8>)> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((headers, m.payload().unwrap_or_default().to_vec()));
    }
    out
}
