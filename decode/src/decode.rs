//! Messages (JSON, or Protobuf transcoded to JSON) → Arrow rows of a table, and dead letters
//! for what cannot be decoded.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;
use bytes::Bytes;
use schemas::{EventSchema, FieldDef, FieldType, TableDef};

use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::classify::{Verdict, classify, nesting_exceeds};
use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::fast::FastJson;
use crate::message::{Format, RawMessage};
use crate::{Error, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Decodes messages of one event schema into rows of its table.
#[derive(Debug)]
pub struct EventDecoder {
    schema: Arc<EventSchema>,
    /// The message type when the topic carries Protobuf; `None` for JSON.
    proto: Option<MessageDescriptor>,
    /// Whether a field the schema lacks fails the message (`unknown_field`) instead of being
    /// ignored.
    strict: bool,
    decode_schema: SchemaRef,
    table: TableDef,
    time_index: usize,
    limits: DecodeLimits,
    /// The schema-specialised decoder tried first on each batch; `None` where the schema has
    /// JSON-text fields.
    fast: Option<FastJson>,
}

/// What makes a message bad even when it is well-formed JSON of the right shape.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_message_bytes: usize,
    pub max_nesting_depth: usize,
    /// Earliest accepted event time, µs since the epoch.
    pub min_event_time_us: i64,
    /// How far past the wall clock an event time may be, µs.
    pub max_future_us: i64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_nesting_depth: 32,
            min_event_time_us: 946_684_800_000_000, // 2000-01-01T00:00:00Z
            max_future_us: 86_400_000_000,
        }
    }
}

/// Result of decoding a batch of messages: rows for the table, and what could not be stored.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batch: Option<RecordBatch>,
    pub dead_letters: Vec<DeadLetter>,
}

fn schema_lacks(schema: &EventSchema, f: &FieldDef) -> bool {
    schema.field(&f.name).is_none()
}

/// The JSON mapping of one Protobuf message of type `desc`.
fn transcode(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    let mut out = serde_json::Serializer::new(Vec::with_capacity(bytes.len() * 2));
    message
        .serialize_with_options(&mut out, &options)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

impl EventDecoder {
    pub fn new(schema: Arc<EventSchema>, limits: DecodeLimits, format: Format) -> Result<Self> {
        let proto = match format {
            Format::Json => None,
            Format::Protobuf => Some(schemas::proto_message(&schema.name)?),
        };
        let decode_schema = schema.arrow_schema();
        let time_index = decode_schema
            .index_of(&schema.time_column)
            .map_err(|source| Error::Arrow {
                table: schema.name.clone(),
                source,
            })?;
        Ok(Self {
            table: TableDef::for_events(schema.clone()),
            fast: FastJson::new(&schema, false),
            schema,
            proto,
            strict: false,
            decode_schema,
            time_index,
            limits,
        })
    }

    /// Makes fields the schema lacks fail their message (`unknown_field`) instead of being
    /// ignored.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self.fast = FastJson::new(&self.schema, strict);
        self
    }

    /// This decoder with `extra` fields appended to its schema (schema evolution).
    pub fn with_fields(&self, extra: &[FieldDef]) -> Result<Self> {
        let mut schema = (*self.schema).clone();
        schema.fields.extend(
            extra
                .iter()
                .filter(|f| schema_lacks(&self.schema, f))
                .cloned(),
        );
        let format = if self.proto.is_some() {
            Format::Protobuf
        } else {
            Format::Json
        };
        Ok(Self::new(Arc::new(schema), self.limits, format)?.with_strict(self.strict))
    }

    /// The event schema, with any fields added by evolution.
    pub fn schema(&self) -> &EventSchema {
        &self.schema
    }

    pub fn table(&self) -> &TableDef {
        &self.table
    }

    /// The oldest and newest event time (µs) in `batches` of this decoder's table.
    pub fn time_range(&self, batches: &[RecordBatch]) -> Option<(i64, i64)> {
        batches
            .iter()
            .filter_map(|b| {
                let ts = b
                    .column(self.time_index)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()?;
                Some((arrow::compute::min(ts)?, arrow::compute::max(ts)?))
            })
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    fn new_decoder(&self, rows: usize) -> Result<Decoder> {
        ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(rows.max(1) + 1)
            .with_strict_mode(self.strict)
            .build_decoder()
            .map_err(|source| self.arrow_err(source))
    }

    fn arrow_err(&self, source: arrow::error::ArrowError) -> Error {
        Error::Arrow {
            table: self.table.table.to_string(),
            source,
        }
    }

    /// Decodes `messages`; every message ends up either as a row or as a dead letter.
    pub fn decode(&self, messages: &[RawMessage]) -> Result<Decoded> {
        let Some(proto) = &self.proto else {
            return self.decode_json(messages);
        };
        // Protobuf: transcode each message to its JSON mapping (field names as in the .proto,
        // 64-bit integers as numbers, unset fields left out) and decode that, so every check
        // of the JSON path applies. Dead letters carry the original bytes.
        let mut json = Vec::with_capacity(messages.len());
        let mut dead_letters = Vec::new();
        for m in messages {
            match m
                .value
                .as_deref()
                .map(|v| transcode(proto, v).map(Bytes::from))
                .transpose()
            {
                // Not `..m.clone()`: that would copy the original bytes only to drop them.
                Ok(value) => json.push(RawMessage {
                    topic: m.topic.clone(),
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key.clone(),
                    value,
                }),
                Err(e) => dead_letters.push(DeadLetter::new(
                    m,
                    DeadLetterKind::InvalidProtobuf,
                    format!("not a valid {} Protobuf message: {e}", proto.full_name()),
                )),
            }
        }
        let mut decoded = self.decode_json(&json)?;
        if !decoded.dead_letters.is_empty() {
            let original: std::collections::HashMap<(i32, i64), &RawMessage> = messages
                .iter()
                .map(|m| ((m.partition, m.offset), m))
                .collect();
            for d in &mut decoded.dead_letters {
                if let Some(m) = original.get(&(d.partition, d.offset)) {
                    d.value.clone_from(&m.value);
                }
            }
        }
        decoded.dead_letters.extend(dead_letters);
        Ok(decoded)
    }

    /// The batch of `messages` from the schema-specialised decoder, when it handles every one
    /// of them exactly and the values pass the table's checks; `None` sends the batch to the
    /// general path.
    fn decode_fast(&self, messages: &[RawMessage]) -> Option<RecordBatch> {
        let fast = self.fast.as_ref()?;
        if messages.is_empty() {
            return None;
        }
        // It accepts objects nested two deep at most (the map fields).
        if self.limits.max_nesting_depth < 2 {
            return None;
        }
        let max = self.limits.max_message_bytes;
        if messages
            .iter()
            .any(|m| m.value.as_ref().is_none_or(|v| v.len() > max))
        {
            return None;
        }
        let columns = fast.decode(
            messages
                .iter()
                .map(|m| m.value.as_deref().unwrap_or_default()),
        )?;
        let batch = RecordBatch::try_new(self.decode_schema.clone(), columns).ok()?;
        self.value_error(&batch).is_none().then_some(batch)
    }

    /// Whether the schema-specialised decoder agrees with arrow-json on `messages`: `None`
    /// when it declines them, else whether its batch equals arrow-json's. For the fuzz target
    /// and the tests.
    #[doc(hidden)]
    pub fn fast_path_agrees(&self, messages: &[RawMessage]) -> Result<Option<bool>> {
        let Some(fast) = self.decode_fast(messages) else {
            return Ok(None);
        };
        let good: Vec<&RawMessage> = messages.iter().collect();
        Ok(Some(self.decode_all(&good)?.is_some_and(|b| b == fast)))
    }

    fn decode_json(&self, messages: &[RawMessage]) -> Result<Decoded> {
        if let Some(batch) = self.decode_fast(messages) {
            let all: Vec<&RawMessage> = messages.iter().collect();
            return Ok(Decoded {
                batch: Some(self.with_ingest_columns(batch, &all)?),
                dead_letters: Vec::new(),
            });
        }
        let mut dead_letters = Vec::new();
        let mut good: Vec<&RawMessage> = Vec::with_capacity(messages.len());
        for m in messages {
            match self.precheck(m) {
                Ok(()) => good.push(m),
                Err((kind, msg)) => dead_letters.push(DeadLetter::new(m, kind, msg)),
            }
        }
        if good.is_empty() {
            return Ok(Decoded {
                batch: None,
                dead_letters,
            });
        }
        // Fast path: the whole batch at once. If anything in it is bad, decode message by
        // message so the bad ones become dead letters and their neighbours are kept.
        let batch = match self.decode_all(&good)? {
            Some(batch) => batch,
            None => {
                let mut batches = Vec::with_capacity(good.len());
                let mut kept = Vec::with_capacity(good.len());
                for m in good {
                    match self.decode_one(m)? {
                        Ok(b) => {
                            batches.push(b);
                            kept.push(m);
                        }
                        Err((kind, msg)) => dead_letters.push(DeadLetter::new(m, kind, msg)),
                    }
                }
                good = kept;
                if batches.is_empty() {
                    return Ok(Decoded {
                        batch: None,
                        dead_letters,
                    });
                }
                concat_batches(&self.decode_schema, &batches).map_err(|e| self.arrow_err(e))?
            }
        };
        let batch = self.with_ingest_columns(batch, &good)?;
        Ok(Decoded {
            batch: Some(batch),
            dead_letters,
        })
    }

    fn precheck(&self, m: &RawMessage) -> Result<(), Verdict> {
        let max = self.limits.max_message_bytes;
        match &m.value {
            None => Err((
                DeadLetterKind::Tombstone,
                "message has no value (a tombstone)".into(),
            )),
            Some(v) if v.iter().all(u8::is_ascii_whitespace) => {
                Err((DeadLetterKind::EmptyValue, "message value is empty".into()))
            }
            Some(v) if v.len() > max => Err((
                DeadLetterKind::Oversized,
                format!(
                    "message is {} bytes, over ingest.max_message_bytes = {max}",
                    v.len()
                ),
            )),
            Some(v) if nesting_exceeds(v, self.limits.max_nesting_depth) => Err((
                DeadLetterKind::NestingTooDeep,
                format!(
                    "objects/arrays nested deeper than ingest.max_nesting_depth = {}",
                    self.limits.max_nesting_depth
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Decodes all messages in one pass; `None` when any one of them is bad.
    fn decode_all(&self, messages: &[&RawMessage]) -> Result<Option<RecordBatch>> {
        let mut decoder = self.new_decoder(messages.len())?;
        for m in messages {
            if self.feed(&mut decoder, m).is_err() {
                return Ok(None);
            }
        }
        match decoder.flush() {
            Ok(Some(b)) if b.num_rows() == messages.len() && self.value_error(&b).is_none() => {
                Ok(Some(b))
            }
            _ => Ok(None),
        }
    }

    /// Decodes one message into a one-row batch, or says exactly why it cannot be stored.
    fn decode_one(&self, m: &RawMessage) -> Result<Result<RecordBatch, Verdict>> {
        let mut decoder = self.new_decoder(1)?;
        let bytes = m.value.as_deref().unwrap_or_default();
        let failed = |e: String| Ok(Err(classify(bytes, &self.schema, &e)));
        if let Err(e) = self.feed(&mut decoder, m) {
            return failed(e);
        }
        match decoder.flush() {
            Ok(Some(b)) if b.num_rows() == 1 => Ok(match self.value_error(&b) {
                None => Ok(b),
                Some(e) => Err(e),
            }),
            Ok(_) => failed("no JSON object found".into()),
            Err(e) => failed(e.to_string()),
        }
    }

    /// Feeds exactly one JSON object into the decoder; the error is the decoder's own words
    /// (the slow path classifies them).
    fn feed(&self, decoder: &mut Decoder, m: &RawMessage) -> Result<(), String> {
        let value = m.value.as_deref().unwrap_or_default();
        let before = decoder.len();
        if self.schema.has_json_fields() {
            let mut obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(value).map_err(|e| e.to_string())?;
            for f in &self.schema.fields {
                if f.ty == FieldType::Json
                    && let Some(v) = obj.get_mut(&f.name)
                    && !v.is_null()
                {
                    *v = serde_json::Value::String(v.to_string());
                }
            }
            decoder.serialize(&[obj]).map_err(|e| e.to_string())?;
        } else {
            let read = decoder.decode(value).map_err(|e| e.to_string())?;
            if read != value.len() || decoder.has_partial_record() {
                return Err("truncated JSON object".into());
            }
        }
        match decoder.len() - before {
            1 => Ok(()),
            n => Err(format!(
                "{n} JSON values in one message; expected exactly one object"
            )),
        }
    }

    /// Checks a decoded batch for values the decoder accepts but the table must not hold:
    /// missing or out-of-range event times and non-finite numbers.
    fn value_error(&self, batch: &RecordBatch) -> Option<Verdict> {
        let name = &self.schema.time_column;
        let ts = batch.column(self.time_index);
        if ts.null_count() > 0 {
            return Some((
                DeadLetterKind::MissingField,
                format!("required field {name:?} is missing or null"),
            ));
        }
        if let Some(ts) = ts.as_any().downcast_ref::<TimestampMicrosecondArray>() {
            let max_us = chrono::Utc::now().timestamp_micros() + self.limits.max_future_us;
            let (lo, hi) = (arrow::compute::min(ts)?, arrow::compute::max(ts)?);
            if lo < self.limits.min_event_time_us || hi > max_us {
                let bad = if lo < self.limits.min_event_time_us {
                    lo
                } else {
                    hi
                };
                let shown = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(bad)
                    .map_or_else(|| format!("{bad} µs"), |t| t.to_rfc3339());
                return Some((
                    DeadLetterKind::TimestampOutOfRange,
                    format!(
                        "field {name:?} = {shown} is outside the accepted range (ingest.min_event_time .. now + ingest.max_event_time_ahead_s)"
                    ),
                ));
            }
        }
        for (i, f) in self.schema.fields.iter().enumerate() {
            if f.ty != FieldType::Float64 {
                continue;
            }
            let Some(col) = batch
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
            else {
                continue;
            };
            if col.iter().flatten().any(|v| !v.is_finite()) {
                return Some((
                    DeadLetterKind::NumberOutOfRange,
                    format!("field {:?} is not a finite 64-bit float", f.name),
                ));
            }
        }
        None
    }

    /// Appends `_partition`, `_offset` and the `date` partition derived from the event time.
    fn with_ingest_columns(
        &self,
        batch: RecordBatch,
        messages: &[&RawMessage],
    ) -> Result<RecordBatch> {
        let ts = batch
            .column(self.time_index)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| {
                self.arrow_err(arrow::error::ArrowError::SchemaError(format!(
                    "time column {} is not a microsecond timestamp",
                    self.schema.time_column
                )))
            })?;
        let date: Date32Array = ts
            .values()
            .iter()
            .map(|us| i32::try_from(us.div_euclid(MICROS_PER_DAY)).unwrap_or(i32::MAX))
            .collect::<Vec<_>>()
            .into();
        let partition: Int32Array = messages
            .iter()
            .map(|m| m.partition)
            .collect::<Vec<_>>()
            .into();
        let offset: Int64Array = messages.iter().map(|m| m.offset).collect::<Vec<_>>().into();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(partition));
        columns.push(Arc::new(offset));
        columns.push(Arc::new(date));
        RecordBatch::try_new(self.table.schema.clone(), columns).map_err(|e| self.arrow_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    fn msg(offset: i64, value: &str) -> RawMessage {
        RawMessage {
            topic: "telemetry".into(),
            partition: 3,
            offset,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    fn decoder(name: &str) -> EventDecoder {
        EventDecoder::new(
            schemas::event_schema(name).unwrap(),
            DecodeLimits {
                max_message_bytes: 1024,
                ..DecodeLimits::default()
            },
            Format::Json,
        )
        .unwrap()
    }

    const GOOD: &str =
        r#"{"ts":1764374400000000,"host":"h1","service":"web","metric":"cpu_pct","value":1.5}"#;

    #[test]
    fn good_messages_become_rows_with_ingest_columns() {
        let d = decoder("telemetry");
        let out = d.decode(&[msg(10, GOOD), msg(11, GOOD)]).unwrap();
        assert!(out.dead_letters.is_empty());
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        let offsets = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().as_ref(), [10, 11]);
        let date = b
            .column_by_name("date")
            .unwrap()
            .as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(date.value(0), 20421); // 2025-11-29
    }

    #[test]
    fn bad_messages_become_dead_letters_and_neighbours_survive() {
        let d = decoder("telemetry");
        let msgs = [
            msg(1, GOOD),
            msg(2, "{not json"),
            msg(
                3,
                r#"{"ts":1,"host":"h","service":"s","metric":"m","value":"abc"}"#,
            ),
            msg(4, r#"{"host":"h","service":"s","metric":"m","value":1}"#),
            msg(5, "   "),
            msg(6, &format!("{{\"pad\":\"{}\"}}", "x".repeat(2000))),
            msg(7, GOOD),
            msg(
                8,
                r#"{"ts":1,"host":"h","service":"s","metric":"m","value":1}{"ts":2}"#,
            ),
        ];
        let out = d.decode(&msgs).unwrap();
        let b = out.batch.unwrap();
        let offsets = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().as_ref(), [1, 7]);
        let kinds: Vec<_> = out
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.kind))
            .collect();
        assert!(
            kinds.contains(&(2, DeadLetterKind::InvalidJson)),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(3, DeadLetterKind::WrongType)), "{kinds:?}");
        assert!(
            kinds.contains(&(4, DeadLetterKind::MissingField)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&(5, DeadLetterKind::EmptyValue)),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(6, DeadLetterKind::Oversized)), "{kinds:?}");
        assert!(
            kinds.contains(&(8, DeadLetterKind::MultipleValues)),
            "{kinds:?}"
        );
        assert_eq!(out.dead_letters.len(), 6);
    }

    /// Messages the schema-specialised decoder must take, each checked against arrow-json.
    #[test]
    fn fast_path_matches_arrow_json() {
        let d = decoder("telemetry");
        let base = r#""host":"h1","service":"web","metric":"cpu_pct""#;
        let cases = [
            format!(r#"{{"ts":1764374400000000,{base},"value":1.5}}"#),
            format!(r#" {{ "ts" : 1764374400000000 , {base} , "value" : -0 }}	"#),
            format!(r#"{{{base},"value":1e3,"ts":1764374400000001,"region":null}}"#),
            format!(r#"{{"ts":"2025-11-29T01:02:03.456789Z",{base},"value":1E-3}}"#),
            format!(r#"{{"ts":"2025-11-29T01:02:03+02:00",{base},"value":0.1}}"#),
            format!(r#"{{"ts":"2025-11-29 01:02:03",{base},"value":5e-324}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1.7976931348623157e308}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":123456789.123456789012}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":2,"labels":{{}}}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":2,"labels":null}}"#),
            format!(
                r#"{{"ts":1764374400000000,{base},"value":2,"labels":{{"a":"b","c":null,"a":"d"}}}}"#
            ),
            format!(
                r#"{{"ts":1764374400000000,{base},"value":2,"extra":"x","n":-1.5e2,"t":true,"f":false,"z":null}}"#
            ),
            format!(r#"{{"ts":1764374400000000,{base},"value":2,"region":"ünïcødé €"}}"#),
            format!(
                r#"{{"ts":1764374400000000,{base},"value":2,"region":"a-region-name-longer-than-sixteen-bytes"}}"#
            ),
            format!(r#"{{"ts":1764374400000000,{base},"value":2,"region":"12345678"}}"#),
        ];
        let msgs: Vec<RawMessage> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| msg(i as i64, c))
            .collect();
        for m in &msgs {
            assert_eq!(
                d.fast_path_agrees(std::slice::from_ref(m)).unwrap(),
                Some(true),
                "{:?}",
                String::from_utf8_lossy(m.value.as_deref().unwrap())
            );
        }
        assert_eq!(d.fast_path_agrees(&msgs).unwrap(), Some(true));
    }

    /// Messages it must leave to arrow-json, which still decodes (or dead-letters) them.
    #[test]
    fn fast_path_declines_what_it_does_not_handle_exactly() {
        let d = decoder("telemetry");
        let base = r#""host":"h1","service":"web","metric":"cpu_pct""#;
        let declined = [
            r#"{"ts":1764374400000000,"host":"h\"1","service":"w","metric":"m","value":1}"#
                .to_string(),
            format!(r#"{{"ts":1764374400000000,{base},"value":1,"value":2}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1,"x":{{"y":1}}}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":"1.5"}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":01}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1.}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1e400}}"#),
            format!(r#"{{"ts":1764374400000000.5,{base},"value":1}}"#),
            format!(r#"{{"ts":1764374400000000,{base}}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":null}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1}} x"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1,}}"#),
            format!(r#"{{"ts":86400000000,{base},"value":1}}"#),
            format!(r#"{{"ts":"yesterday",{base},"value":1}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1,"region":"0123456789\"ab"}}"#),
            format!(r#"{{"ts":1764374400000000,{base},"value":1,"region":"0123456789\tab"}}"#),
            format!("{{\"ts\":1764374400000000,{base},\"value\":1,\"region\":\"0123456789\tab\"}}"),
        ];
        for c in &declined {
            assert_eq!(d.fast_path_agrees(&[msg(0, c)]).unwrap(), None, "{c}");
        }
        // Invalid UTF-8 in a field the schema lacks still fails the message (arrow-json's call).
        let mut bad_utf8 = msg(0, "");
        let mut bytes = format!(r#"{{"ts":1764374400000000,{base},"value":1,"x":""#).into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\"}");
        bad_utf8.value = Some(bytes.into());
        assert_eq!(d.fast_path_agrees(&[bad_utf8]).unwrap(), None);
        let strict = decoder("telemetry").with_strict(true);
        let unknown = format!(r#"{{"ts":1764374400000000,{base},"value":1,"extra":1}}"#);
        assert_eq!(strict.fast_path_agrees(&[msg(0, &unknown)]).unwrap(), None);
        let out = strict.decode(&[msg(0, &unknown)]).unwrap();
        assert_eq!(out.dead_letters[0].kind, DeadLetterKind::UnknownField);
        assert!(
            decoder("events").fast.is_none(),
            "JSON-text fields take the general path"
        );
        // One declined message sends the batch to arrow-json: the escaped string is a row
        // there, the out-of-range time a dead letter.
        let out = d
            .decode(&[msg(0, GOOD), msg(1, &declined[0]), msg(2, &declined[12])])
            .unwrap();
        let host = out.batch.unwrap();
        let host = host.column_by_name("host").unwrap().as_string::<i32>();
        assert_eq!((host.len(), host.value(1)), (2, "h\"1"));
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(
            out.dead_letters[0].kind,
            DeadLetterKind::TimestampOutOfRange
        );
    }

    #[test]
    fn json_fields_are_stored_as_json_text() {
        let d = decoder("events");
        let m = msg(
            1,
            r#"{"ts":"2025-11-29T00:00:00Z","event_type":"x","payload":{"a":[1,2]}}"#,
        );
        let out = d.decode(&[m]).unwrap();
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        let b = out.batch.unwrap();
        let p = b.column_by_name("payload").unwrap().as_string::<i32>();
        assert_eq!(p.value(0), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn every_kind_of_bad_input_is_named_exactly() {
        let d = decoder("telemetry");
        let corpus = crate::classify::sample_bad_messages();
        let mut msgs: Vec<RawMessage> = Vec::new();
        for (i, (_, value)) in corpus.iter().enumerate() {
            msgs.push(msg(2 * i as i64, GOOD));
            let mut bad = msg(2 * i as i64 + 1, "");
            bad.value = value.clone().map(Bytes::from);
            msgs.push(bad);
        }
        let out = d.decode(&msgs).unwrap();
        assert_eq!(
            out.batch.unwrap().num_rows(),
            corpus.len(),
            "every good neighbour is kept"
        );
        let mut got: Vec<_> = out
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.kind))
            .collect();
        got.sort();
        let want: Vec<_> = corpus
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (2 * i as i64 + 1, *k))
            .collect();
        assert_eq!(
            got,
            want,
            "{:#?}",
            out.dead_letters
                .iter()
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        );
        let kinds: std::collections::BTreeSet<_> = corpus.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds.len(), 15);
    }

    /// A `sakura.v1.Telemetry` message with `ts` and the given string/double fields set.
    fn telemetry_pb(ts_s: i64, fields: &[(&str, prost_reflect::Value)]) -> Vec<u8> {
        use prost::Message;
        use prost_reflect::{DynamicMessage, Value};
        let desc = schemas::proto_message("telemetry").unwrap();
        let mut m = DynamicMessage::new(desc.clone());
        let ts_desc = desc
            .get_field_by_name("ts")
            .unwrap()
            .kind()
            .as_message()
            .unwrap()
            .clone();
        let mut ts = DynamicMessage::new(ts_desc);
        ts.set_field_by_name("seconds", Value::I64(ts_s));
        ts.set_field_by_name("nanos", Value::I32(250_000_000));
        m.set_field_by_name("ts", Value::Message(ts));
        for (name, v) in fields {
            m.set_field_by_name(name, v.clone());
        }
        m.encode_to_vec()
    }

    #[test]
    fn protobuf_messages_become_rows_and_bad_ones_dead_letters_with_their_bytes() {
        use prost_reflect::{MapKey, Value};
        let d = EventDecoder::new(
            schemas::event_schema("telemetry").unwrap(),
            DecodeLimits::default(),
            Format::Protobuf,
        )
        .unwrap();
        let s = |v: &str| Value::String(v.to_string());
        let labels = Value::Map([(MapKey::String("env".into()), s("prod"))].into());
        let good = telemetry_pb(
            1_764_374_400,
            &[
                ("host", s("web-01")),
                ("service", s("web")),
                ("metric", s("cpu_pct")),
                // A default value that was set is a value, not a missing field.
                ("value", Value::F64(0.0)),
                ("labels", labels),
            ],
        );
        let no_host = telemetry_pb(
            1_764_374_400,
            &[
                ("service", s("web")),
                ("metric", s("cpu_pct")),
                ("value", Value::F64(1.0)),
            ],
        );
        let garbage = b"\xff\xff\xff\xff not protobuf".to_vec();
        let raw = |offset, v: &Vec<u8>| RawMessage {
            value: Some(Bytes::copy_from_slice(v)),
            ..msg(offset, "")
        };
        let out = d
            .decode(&[
                raw(0, &good),
                raw(1, &no_host),
                raw(2, &garbage),
                raw(3, &good),
            ])
            .unwrap();
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_764_374_400_250_000);
        assert_eq!(
            b.column_by_name("host")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "web-01"
        );
        assert_eq!(
            b.column_by_name("value")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            0.0
        );
        assert_eq!(
            b.column_by_name("region").unwrap().null_count(),
            2,
            "unset optional field is null"
        );
        let offsets = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!((offsets.value(0), offsets.value(1)), (0, 3));

        let mut dl = out.dead_letters.clone();
        dl.sort_by_key(|d| d.offset);
        assert_eq!(dl.len(), 2, "{dl:?}");
        assert_eq!(
            (dl[0].offset, dl[0].kind),
            (1, DeadLetterKind::MissingField),
            "{}",
            dl[0].message
        );
        assert!(dl[0].message.contains("host"), "{}", dl[0].message);
        assert_eq!(
            dl[0].value.as_deref(),
            Some(&no_host[..]),
            "the original Protobuf bytes are kept"
        );
        assert_eq!(
            (dl[1].offset, dl[1].kind),
            (2, DeadLetterKind::InvalidProtobuf)
        );
        assert!(
            dl[1].message.contains("sakura.v1.Telemetry"),
            "{}",
            dl[1].message
        );
        assert_eq!(dl[1].value.as_deref(), Some(&garbage[..]));
    }
}
