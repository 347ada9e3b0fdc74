//! Messages that cannot be stored, kept with the reason in `raw.dead_letters`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use bytes::Bytes;
use schemas::TableDef;

use crate::message::RawMessage;
use crate::{Error, Result};

/// Why a message could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterKind {
    /// Not JSON at all (syntax error).
    InvalidJson,
    /// JSON that ends before the value does.
    TruncatedJson,
    /// Valid JSON whose top-level value is not an object.
    NotAnObject,
    /// More than one JSON value in one message.
    MultipleValues,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// An empty (or all-whitespace) value.
    EmptyValue,
    /// A message with no value at all (a Kafka tombstone).
    Tombstone,
    /// Larger than `ingest.max_message_bytes`.
    Oversized,
    /// Objects/arrays nested deeper than `ingest.max_nesting_depth`.
    NestingTooDeep,
    /// A required field is absent.
    MissingField,
    /// A required field is `null`.
    NullField,
    /// A field has the wrong JSON type for the schema.
    WrongType,
    /// The event time is a string that is not a timestamp.
    InvalidTimestamp,
    /// The event time is outside the accepted range.
    TimestampOutOfRange,
    /// A number that does not fit its column (or is not finite).
    NumberOutOfRange,
    /// Rejected by the decoder for a reason none of the above names.
    SchemaMismatch,
    /// Not a valid Protobuf message of the topic's type.
    InvalidProtobuf,
    /// Carries a field its schema does not declare (topics with `evolution = "dead_letter"`,
    /// or a name reserved for ingest columns under `add_fields`).
    UnknownField,
}

impl DeadLetterKind {
    pub const ALL: [Self; 18] = [
        Self::InvalidJson,
        Self::TruncatedJson,
        Self::NotAnObject,
        Self::MultipleValues,
        Self::InvalidUtf8,
        Self::EmptyValue,
        Self::Tombstone,
        Self::Oversized,
        Self::NestingTooDeep,
        Self::MissingField,
        Self::NullField,
        Self::WrongType,
        Self::InvalidTimestamp,
        Self::TimestampOutOfRange,
        Self::NumberOutOfRange,
        Self::SchemaMismatch,
        Self::InvalidProtobuf,
        Self::UnknownField,
    ];

    /// The name stored in `raw.dead_letters.error_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::TruncatedJson => "truncated_json",
            Self::NotAnObject => "not_an_object",
            Self::MultipleValues => "multiple_values",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::EmptyValue => "empty_value",
            Self::Tombstone => "tombstone",
            Self::Oversized => "oversized",
            Self::NestingTooDeep => "nesting_too_deep",
            Self::MissingField => "missing_field",
            Self::NullField => "null_field",
            Self::WrongType => "wrong_type",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::NumberOutOfRange => "number_out_of_range",
            Self::SchemaMismatch => "schema_mismatch",
            Self::InvalidProtobuf => "invalid_protobuf",
            Self::UnknownField => "unknown_field",
        }
    }
}

/// One message that could not be stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub kind: DeadLetterKind,
    pub message: String,
    pub received_at_us: i64,
}

impl DeadLetter {
    pub fn new(m: &RawMessage, kind: DeadLetterKind, message: String) -> Self {
        Self {
            topic: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
            key: m.key.clone(),
            value: m.value.clone(),
            kind,
            message,
            received_at_us: chrono::Utc::now().timestamp_micros(),
        }
    }
}

/// Builds the `raw.dead_letters` rows for `letters`.
pub fn dead_letter_batch(def: &TableDef, letters: &[DeadLetter]) -> Result<RecordBatch> {
    let received: TimestampMicrosecondArray = letters
        .iter()
        .map(|d| d.received_at_us)
        .collect::<Vec<_>>()
        .into();
    let date: Date32Array = letters
        .iter()
        .map(|d| i32::try_from(d.received_at_us.div_euclid(86_400_000_000)).unwrap_or(i32::MAX))
        .collect::<Vec<_>>()
        .into();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(received.with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| &*d.topic),
        )),
        Arc::new(Int32Array::from_iter_values(
            letters.iter().map(|d| d.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|d| d.offset),
        )),
        Arc::new(BinaryArray::from_iter(
            letters.iter().map(|d| d.key.as_deref()),
        )),
        Arc::new(BinaryArray::from_iter(
            letters.iter().map(|d| d.value.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.message.as_str()),
        )),
        Arc::new(date),
    ];
    RecordBatch::try_new(def.schema.clone(), columns).map_err(|source| Error::Arrow {
        table: def.table.to_string(),
        source,
    })
}
