//! The Kafka side of `ml_score`: each anomaly it finds is produced as a JSON message (keyed by
//! its series) to the job's topic, `anomalies` by default, on the configured brokers. The job
//! waits for every acknowledgement, so a run that returns has delivered its anomalies (at
//! least once: a retried run sends its window again; `ml.anomalies` is the record).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use ingest::KafkaConfig;

pub(crate) struct KafkaSink {
    producer: FutureProducer,
    brokers: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl KafkaSink {
    pub(crate) fn new(kafka: &KafkaConfig) -> crate::error::Result<Self> {
        let mut client = ClientConfig::new();
        for (k, v) in &kafka.properties {
            client.set(k, v);
        }
        let producer = client
            .set("bootstrap.servers", &kafka.brokers)
            .set("linger.ms", "20")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|source| crate::error::Error::Kafka {
                context: format!(
                    "failed to create the anomalies producer for {}",
                    kafka.brokers
                ),
                source,
            })?;
        Ok(Self {
            producer,
            brokers: kafka.brokers.clone(),
        })
    }
}

#[async_trait]
impl jobs::AnomalySink for KafkaSink {
    async fn send(&self, topic: &str, messages: Vec<(String, String)>) -> jobs::Result<()> {
        let total = messages.len();
        let pending: Vec<_> = messages
            .iter()
            .map(|(key, value)| {
                self.producer.send(
                    FutureRecord::to(topic).key(key).payload(value),
                    Duration::from_secs(30),
                )
            })
            .collect();
        let mut failed = Vec::new();
        for r in futures::future::join_all(pending).await {
            if let Err((e, _)) = r {
                failed.push(e.to_string());
            }
        }
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(jobs::Error::Job {
                job: "ml_score".into(),
                message: format!(
                    "{} of {total} anomalies were not delivered to Kafka topic {topic:?} on {}: {first}",
                    failed.len(),
                    self.brokers
                ),
            }),
        }
    }
}
