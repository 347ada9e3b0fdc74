//! The optional dead-letter Kafka topic (`ingest.dead_letter_topic`): every dead letter that
//! `raw.dead_letters` committed is also produced there — the original key and bytes, with
//! headers saying where it came from and what was wrong — for consumers that react to bad
//! input. The Delta table stays the record: delivery to the topic is at least once, and a
//! failed delivery is logged and counted, never retried into the pipeline.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::config::KafkaConfig;
use crate::stats::IngestStats;
use crate::{Error, Result};
use decode::DeadLetter;

pub(crate) struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
    stats: Arc<IngestStats>,
}

impl std::fmt::Debug for DeadLetterTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterTopic")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterTopic {
    pub(crate) fn new(kafka: &KafkaConfig, topic: &str, stats: Arc<IngestStats>) -> Result<Self> {
        let mut client = ClientConfig::new();
        for (k, v) in &kafka.properties {
            client.set(k, v);
        }
        let producer = client
            .set("bootstrap.servers", &kafka.brokers)
            .set("linger.ms", "50")
            .create()
            .map_err(|e| {
                Error::kafka(
                    format!("failed to create the producer for dead-letter topic {topic}"),
                    e,
                )
            })?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            stats,
        })
    }

    /// Hands `letters` to the producer and returns; a background task counts the deliveries.
    pub(crate) fn send(&self, letters: &[DeadLetter]) {
        let mut pending = Vec::with_capacity(letters.len());
        for d in letters {
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(header("sakura.error_kind", d.kind.as_str()))
                .insert(header("sakura.error", &d.message))
                .insert(header("sakura.topic", &d.topic))
                .insert(header("sakura.partition", &partition))
                .insert(header("sakura.offset", &offset));
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &d.key {
                record = record.key(&k[..]);
            }
            if let Some(v) = &d.value {
                record = record.payload(&v[..]);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => {
                    IngestStats::add(&self.stats.dead_letter_topic_failed, 1);
                    warn!(topic = %self.topic, error = %e, "failed to queue a dead letter for the dead-letter topic");
                }
            }
        }
        let stats = self.stats.clone();
        let topic = self.topic.clone();
        tokio::spawn(async move {
            for delivery in pending {
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(300), delivery).await,
                    Ok(Ok(Ok(_)))
                );
                if ok {
                    IngestStats::add(&stats.dead_letter_topic_delivered, 1);
                } else {
                    IngestStats::add(&stats.dead_letter_topic_failed, 1);
                    warn!(topic = %topic, "a dead letter was not delivered to the dead-letter topic (it is in raw.dead_letters)");
                }
            }
        });
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
