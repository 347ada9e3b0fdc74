//! JSON messages → Arrow rows of a table, and dead letters for what cannot be decoded.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;
use schemas::{EventSchema, FieldType, TableDef};

use crate::dead_letter::{DeadLetter, DeadLetterKind};
use crate::{Error, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One Kafka message, detached from the consumer.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Decodes messages of one event schema into rows of its table.
#[derive(Debug)]
pub struct JsonDecoder {
    schema: Arc<EventSchema>,
    decode_schema: SchemaRef,
    table: TableDef,
    time_index: usize,
    max_message_bytes: usize,
}

/// Result of decoding a batch of messages: rows for the table, and what could not be stored.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batch: Option<RecordBatch>,
    pub dead_letters: Vec<DeadLetter>,
}

impl JsonDecoder {
    pub fn new(schema: Arc<EventSchema>, max_message_bytes: usize) -> Result<Self> {
        let decode_schema = schema.arrow_schema();
        let time_index = decode_schema
            .index_of(&schema.time_column)
            .map_err(|source| Error::Arrow {
                table: schema.name.clone(),
                source,
            })?;
        Ok(Self {
            table: TableDef::for_events(schema.clone()),
            schema,
            decode_schema,
            time_index,
            max_message_bytes,
        })
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

    fn precheck(&self, m: &RawMessage) -> Result<(), (DeadLetterKind, String)> {
        match &m.value {
            None => Err((
                DeadLetterKind::EmptyValue,
                "message has no value (tombstone)".into(),
            )),
            Some(v) if v.iter().all(u8::is_ascii_whitespace) => {
                Err((DeadLetterKind::EmptyValue, "message value is empty".into()))
            }
            Some(v) if v.len() > self.max_message_bytes => Err((
                DeadLetterKind::Oversized,
                format!(
                    "message is {} bytes, over ingest.max_message_bytes = {}",
                    v.len(),
                    self.max_message_bytes
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
            Ok(Some(b)) if b.num_rows() == messages.len() && self.times_valid(&b) => Ok(Some(b)),
            _ => Ok(None),
        }
    }

    /// Decodes one message into a one-row batch, or says why it cannot be stored.
    fn decode_one(&self, m: &RawMessage) -> Result<Result<RecordBatch, (DeadLetterKind, String)>> {
        let mut decoder = self.new_decoder(1)?;
        if let Err(e) = self.feed(&mut decoder, m) {
            return Ok(Err(e));
        }
        Ok(match decoder.flush() {
            Ok(Some(b)) if b.num_rows() == 1 => match self.time_error(&b) {
                None => Ok(b),
                Some(e) => Err(e),
            },
            Ok(_) => Err((DeadLetterKind::InvalidJson, "no JSON object found".into())),
            Err(e) => Err(classify_arrow_error(&e.to_string())),
        })
    }

    /// Feeds exactly one JSON object into the decoder.
    fn feed(&self, decoder: &mut Decoder, m: &RawMessage) -> Result<(), (DeadLetterKind, String)> {
        let value = m.value.as_deref().unwrap_or_default();
        let before = decoder.len();
        if self.schema.has_json_fields() {
            let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)
                .map_err(|e| {
                    (
                        DeadLetterKind::InvalidJson,
                        format!("not a JSON object: {e}"),
                    )
                })?;
            for f in &self.schema.fields {
                if f.ty == FieldType::Json
                    && let Some(v) = obj.get_mut(&f.name)
                    && !v.is_null()
                {
                    *v = serde_json::Value::String(v.to_string());
                }
            }
            decoder
                .serialize(&[obj])
                .map_err(|e| classify_arrow_error(&e.to_string()))?;
        } else {
            let read = decoder
                .decode(value)
                .map_err(|e| (DeadLetterKind::InvalidJson, e.to_string()))?;
            if read != value.len() || decoder.has_partial_record() {
                return Err((DeadLetterKind::InvalidJson, "truncated JSON object".into()));
            }
        }
        match decoder.len() - before {
            1 => Ok(()),
            0 => Err((DeadLetterKind::InvalidJson, "no JSON object found".into())),
            n => Err((
                DeadLetterKind::InvalidJson,
                format!("{n} JSON values in one message; expected exactly one object"),
            )),
        }
    }

    fn times_valid(&self, batch: &RecordBatch) -> bool {
        self.time_error(batch).is_none()
    }

    /// Event times must be present; the type check already happened in the decoder.
    fn time_error(&self, batch: &RecordBatch) -> Option<(DeadLetterKind, String)> {
        let ts = batch.column(self.time_index);
        (ts.null_count() > 0).then(|| {
            (
                DeadLetterKind::MissingField,
                format!(
                    "required field {:?} is missing or null",
                    self.schema.time_column
                ),
            )
        })
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

/// Maps the decoder's message to the kind of bad input it describes.
fn classify_arrow_error(message: &str) -> (DeadLetterKind, String) {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("null") || lower.contains("missing") {
        DeadLetterKind::MissingField
    } else if lower.contains("expected") || lower.contains("parse") || lower.contains("cast") {
        DeadLetterKind::WrongType
    } else {
        DeadLetterKind::InvalidJson
    };
    (kind, message.to_string())
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
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn decoder(name: &str) -> JsonDecoder {
        JsonDecoder::new(schemas::event_schema(name).unwrap(), 1024).unwrap()
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
            kinds.contains(&(8, DeadLetterKind::InvalidJson)),
            "{kinds:?}"
        );
        assert_eq!(out.dead_letters.len(), 6);
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
}
