//! What decoding starts from: one Kafka message, and how its value is encoded.

use std::sync::Arc;

use bytes::Bytes;

/// How a topic's message values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per message.
    #[default]
    Json,
    /// One Protobuf message per message, of the schema's type in `schemas/proto/`.
    Protobuf,
}

/// One Kafka message, detached from the consumer.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Shared slices: the consumer copies many messages into one allocation.
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}
