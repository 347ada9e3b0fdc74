//! Decoding Kafka message values into rows of an event table.
//!
//! In: raw messages (topic, partition, offset, key, value) of one topic, JSON or Protobuf
//! (`schemas/proto/`, via prost-reflect). Out: an Arrow batch of the table's rows (event fields
//! plus `_partition`, `_offset`, `date`) and a dead letter, with a kind and a precise message,
//! for every message that cannot be stored. No I/O: the fuzz targets drive it directly.

mod classify;
mod dead_letter;
mod decode;
mod error;
mod evolve;
mod fast;
mod message;

pub use bytes::Bytes;
pub use classify::sample_bad_messages;
pub use dead_letter::{DeadLetter, DeadLetterKind, dead_letter_batch};
pub use decode::{DecodeLimits, Decoded, EventDecoder};
pub use error::{Error, Result};
pub use evolve::{new_fields, reserved};
pub use message::{Format, RawMessage};
