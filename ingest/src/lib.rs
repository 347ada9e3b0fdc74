//! Kafka → Delta ingest.
//!
//! In: messages of the configured topics, read by a consumer-group member. Out: appends to the
//! Delta tables `raw.<schema>` (partitioned by date) and `raw.dead_letters`; each commit carries
//! one `txn` action per topic-partition with the last offset it holds, and assigned partitions
//! are positioned from those offsets, so a crash or rebalance neither loses nor duplicates rows.

mod buffer;
mod config;
mod consumer;
mod dead_letter_topic;
mod delta;
mod error;
mod evolve;
mod pipeline;
pub mod prom;
mod stats;
mod writer;

pub use config::{Evolution, IngestConfig, KafkaConfig, StartOffset, TopicConfig, TopicSettings};
pub use decode::{
    DeadLetter, DeadLetterKind, DecodeLimits, Decoded, EventDecoder, Format, RawMessage,
    sample_bad_messages,
};
pub use delta::{DeltaSink, TopicPartition, app_id};
pub use error::{Error, Result};
pub use pipeline::Pipeline;
pub use stats::{IngestSnapshot, IngestStats};
pub use writer::{TopicMessages, Writer};
