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
    kafka: KafkaConfig,
    /// Created on the first send: most schedulers never run an `ml_score` job.
    producer: std::sync::Mutex<Option<FutureProducer>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.kafka.brokers)
            .finish()
    }
}

impl KafkaSink {
    pub(crate) fn new(kafka: &KafkaConfig) -> Self {
        Self {
            kafka: kafka.clone(),
            producer: std::sync::Mutex::new(None),
        }
    }

    fn producer(&self) -> jobs::Result<FutureProducer> {
        let mut slot = self
            .producer
            .lock()
            .map_err(|_| job_error("the anomalies producer's lock is poisoned".into()))?;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let mut client = ClientConfig::new();
        for (k, v) in &self.kafka.properties {
            client.set(k, v);
        }
        let producer: FutureProducer = client
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("linger.ms", "20")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| {
                job_error(format!(
                    "failed to create the anomalies producer for {}: {e}",
                    self.kafka.brokers
                ))
            })?;
        *slot = Some(producer.clone());
        Ok(producer)
    }
}

fn job_error(message: String) -> jobs::Error {
    jobs::Error::Job {
        job: "ml_score".into(),
        message,
    }
}

#[async_trait]
impl jobs::AnomalySink for KafkaSink {
    async fn send(&self, topic: &str, messages: Vec<(String, String)>) -> jobs::Result<()> {
        let total = messages.len();
        let producer = self.producer()?;
        let pending: Vec<_> = messages
            .iter()
            .map(|(key, value)| {
                producer.send(
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
            Some(first) => Err(job_error(format!(
                "{} of {total} anomalies were not delivered to Kafka topic {topic:?} on {}: {first}",
                failed.len(),
                self.kafka.brokers
            ))),
        }
    }
}
