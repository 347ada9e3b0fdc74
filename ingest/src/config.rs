//! `[ingest]` and `[[topics]]`: which topics feed which tables, flush thresholds, start
//! offsets and dead-letter routing.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};
use decode::{DecodeLimits, Format};

/// Where to start reading a partition that no table has stored an offset for yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    #[default]
    Earliest,
    Latest,
}

/// `[kafka]`: the brokers and the consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group shared by every ingest process.
    pub group_id: String,
    /// Where to start a partition with no offset stored in the tables.
    pub start_offset: StartOffset,
    /// Consumer-group session timeout; a dead member's partitions move after this long.
    pub session_timeout_ms: u64,
    /// Extra librdkafka properties (e.g. `security.protocol`), passed through unchanged.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "sakura-ingest".into(),
            start_offset: StartOffset::Earliest,
            session_timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

/// What happens to a top-level field a message carries that its schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Evolution {
    /// The field is not stored; the rest of the message is (schemas are contracts, and
    /// producers may add fields for other consumers).
    #[default]
    Ignore,
    /// The field becomes a new nullable column of the table (Delta schema evolution), typed by
    /// its first value: string, integer, float, boolean, or JSON text for objects and arrays.
    /// A later value of another type sends its message to dead letters (`wrong_type`).
    AddFields,
    /// The message goes to dead letters (`unknown_field`).
    DeadLetter,
}

/// One entry of `[ingest.topics]`: the schema name alone (JSON messages), or a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TopicConfig {
    /// `topic = "telemetry"`.
    Schema(String),
    /// `topic = { schema = "telemetry", format = "protobuf" }`.
    Settings(TopicSettings),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// The event schema (`telemetry`, `logs` or `events`); the table is `raw.<schema>`.
    pub schema: String,
    #[serde(default)]
    pub format: Format,
    /// Fields the schema does not declare (JSON topics; a Protobuf message's type is fixed).
    #[serde(default)]
    pub evolution: Evolution,
}

impl TopicConfig {
    pub fn schema(&self) -> &str {
        match self {
            Self::Schema(s) => s,
            Self::Settings(t) => &t.schema,
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Self::Schema(_) => Format::Json,
            Self::Settings(t) => t.format,
        }
    }

    pub fn evolution(&self) -> Evolution {
        match self {
            Self::Schema(_) => Evolution::Ignore,
            Self::Settings(t) => t.evolution,
        }
    }
}

impl From<&str> for TopicConfig {
    fn from(schema: &str) -> Self {
        Self::Schema(schema.to_string())
    }
}

/// `[ingest]`: which topics go to which tables and when buffers are flushed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Topic name → event schema name (`telemetry`, `logs` or `events`) and message format;
    /// the schema decides the table (`raw.<schema>`).
    pub topics: BTreeMap<String, TopicConfig>,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush when this many message bytes are buffered.
    pub flush_bytes: usize,
    /// Flush when the oldest buffered message is this old.
    pub flush_age_ms: u64,
    /// Messages larger than this go to dead letters.
    pub max_message_bytes: usize,
    /// Messages nesting objects/arrays deeper than this go to dead letters.
    pub max_nesting_depth: usize,
    /// Events older than this (RFC 3339) go to dead letters.
    pub min_event_time: String,
    /// Events more than this many seconds in the future go to dead letters.
    pub max_event_time_ahead_s: u64,
    /// Partitions decoded and encoded to Parquet at once during a flush; 0: one per core.
    pub writer_threads: usize,
    /// The consumer pauses its partitions while this many messages are buffered (the store is
    /// slow or down) and resumes once a commit drains them. At least `flush_rows`.
    pub max_buffered_messages: usize,
    /// The same cap in message bytes. At least `flush_bytes`.
    pub max_buffered_bytes: usize,
    /// Also produce every dead letter to this Kafka topic (empty: only `raw.dead_letters`).
    pub dead_letter_topic: String,
    /// How often to delete data files no table version references (0: never).
    pub orphan_cleanup_interval_s: u64,
    /// Only unreferenced files older than this are deleted: longer than any process takes
    /// between uploading a file and committing it.
    pub orphan_min_age_s: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            topics: [
                ("telemetry", "telemetry"),
                ("logs", "logs"),
                ("events", "events"),
            ]
            .into_iter()
            .map(|(t, s)| (t.to_string(), TopicConfig::from(s)))
            .collect(),
            flush_rows: 200_000,
            flush_bytes: 64 * 1024 * 1024,
            flush_age_ms: 5_000,
            max_message_bytes: 1024 * 1024,
            max_nesting_depth: 32,
            min_event_time: "2000-01-01T00:00:00Z".into(),
            max_event_time_ahead_s: 86_400,
            writer_threads: 0,
            max_buffered_messages: 400_000,
            max_buffered_bytes: 128 * 1024 * 1024,
            dead_letter_topic: String::new(),
            orphan_cleanup_interval_s: 3600,
            orphan_min_age_s: 3600,
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_string(),
        message: message.into(),
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return Err(invalid(
                "kafka.session_timeout_ms",
                format!("{} is outside 1000..=3600000", self.session_timeout_ms),
            ));
        }
        let managed = [
            ("bootstrap.servers", "set kafka.brokers instead"),
            ("group.id", "set kafka.group_id instead"),
            ("session.timeout.ms", "set kafka.session_timeout_ms instead"),
            ("auto.offset.reset", "set kafka.start_offset instead"),
            (
                "enable.auto.commit",
                "offsets are stored in the Delta log, not committed by Kafka",
            ),
            (
                "enable.auto.offset.store",
                "offsets are stored in the Delta log, not committed by Kafka",
            ),
        ];
        for (key, why) in managed {
            if self.properties.contains_key(key) {
                return Err(invalid(
                    &format!("kafka.properties.\"{key}\""),
                    format!("is managed by sakura: {why}"),
                ));
            }
        }
        Ok(())
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<()> {
        if self.topics.is_empty() {
            return Err(invalid(
                "ingest.topics",
                "must map at least one topic to a schema",
            ));
        }
        let mut seen = BTreeMap::new();
        for (topic, entry) in &self.topics {
            let schema = entry.schema();
            schemas::event_schema(schema)
                .map_err(|e| invalid(&format!("ingest.topics.{topic}"), e.to_string()))?;
            if entry.format() == Format::Protobuf {
                schemas::proto_message(schema)
                    .map_err(|e| invalid(&format!("ingest.topics.{topic}"), e.to_string()))?;
                if entry.evolution() == Evolution::AddFields {
                    return Err(invalid(
                        &format!("ingest.topics.{topic}.evolution"),
                        "add_fields applies to JSON topics; a Protobuf topic's fields are those of its .proto message",
                    ));
                }
            }
            if let Some(other) = seen.insert(schema.to_string(), topic.clone()) {
                return Err(invalid(
                    &format!("ingest.topics.{topic}"),
                    format!(
                        "schema {schema:?} is already fed by topic {other:?}; one topic per table keeps (_partition, _offset) unique"
                    ),
                ));
            }
        }
        if self.flush_rows == 0 {
            return Err(invalid("ingest.flush_rows", "must be at least 1"));
        }
        if self.flush_bytes < 1024 {
            return Err(invalid("ingest.flush_bytes", "must be at least 1024"));
        }
        if self.flush_age_ms == 0 {
            return Err(invalid("ingest.flush_age_ms", "must be at least 1"));
        }
        if self.max_buffered_messages < self.flush_rows {
            return Err(invalid(
                "ingest.max_buffered_messages",
                format!(
                    "{} is below ingest.flush_rows = {}: a flush could never start",
                    self.max_buffered_messages, self.flush_rows
                ),
            ));
        }
        if self.max_buffered_bytes < self.flush_bytes {
            return Err(invalid(
                "ingest.max_buffered_bytes",
                format!(
                    "{} is below ingest.flush_bytes = {}: a flush could never start",
                    self.max_buffered_bytes, self.flush_bytes
                ),
            ));
        }
        if self.topics.contains_key(&self.dead_letter_topic) {
            return Err(invalid(
                "ingest.dead_letter_topic",
                format!(
                    "{:?} is also an ingest topic; dead letters would be read back as input",
                    self.dead_letter_topic
                ),
            ));
        }
        if self.orphan_min_age_s == 0 {
            return Err(invalid(
                "ingest.orphan_min_age_s",
                "must be at least 1 (files being committed must never be deleted)",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(invalid("ingest.max_message_bytes", "must be at least 1"));
        }
        if !(1..=1000).contains(&self.max_nesting_depth) {
            return Err(invalid(
                "ingest.max_nesting_depth",
                "must be within 1..=1000",
            ));
        }
        self.limits()?;
        Ok(())
    }

    /// How many partitions a flush decodes and encodes at once.
    pub fn writer_threads(&self) -> usize {
        match self.writer_threads {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            n => n,
        }
    }

    /// The decoder's limits from this configuration.
    pub fn limits(&self) -> Result<DecodeLimits> {
        let min = chrono::DateTime::parse_from_rfc3339(&self.min_event_time).map_err(|e| {
            invalid(
                "ingest.min_event_time",
                format!("{:?} is not an RFC 3339 time: {e}", self.min_event_time),
            )
        })?;
        let ahead = i64::try_from(self.max_event_time_ahead_s)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .ok_or_else(|| invalid("ingest.max_event_time_ahead_s", "is too large"))?;
        Ok(DecodeLimits {
            max_message_bytes: self.max_message_bytes,
            max_nesting_depth: self.max_nesting_depth,
            min_event_time_us: min.timestamp_micros(),
            max_future_us: ahead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        KafkaConfig::default().validate().unwrap();
        IngestConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = IngestConfig::default();
        c.topics.insert("metrics".into(), "nope".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ingest.topics.metrics"), "{e}");

        let mut c = IngestConfig::default();
        c.topics.insert("telemetry2".into(), "telemetry".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("already fed by topic"), "{e}");

        let mut k = KafkaConfig::default();
        k.properties
            .insert("enable.auto.commit".into(), "true".into());
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.properties"), "{e}");
    }
}
