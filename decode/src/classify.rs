//! Says exactly what is wrong with a message the decoder rejected. Runs only on the slow path
//! (messages of a batch that failed to decode), so it can afford a full parse.

use schemas::{EventSchema, FieldType};
use serde::Deserialize;
use serde_json::Value;

use crate::dead_letter::DeadLetterKind;

/// A kind and a message naming the field and the value's problem.
pub(crate) type Verdict = (DeadLetterKind, String);

/// Deepest object/array nesting in `bytes`, stopping early once past `limit`. A cheap scan
/// (strings skipped) that runs on every message: deep nesting is accepted by the Arrow decoder
/// when the field is unknown, so it must be caught before.
pub(crate) fn nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    // Fast path for the common case: with at most `limit` opening brackets in the whole
    // message (strings included), nothing can nest deeper. A SIMD count, not a byte loop.
    if memchr::memchr2_iter(b'{', b'[', bytes)
        .take(limit + 1)
        .count()
        <= limit
    {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why `bytes` cannot be stored under `schema`; `decoder_error` is what the Arrow decoder said.
pub(crate) fn classify(bytes: &[u8], schema: &EventSchema, decoder_error: &str) -> Verdict {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return (
                DeadLetterKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            );
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = match Value::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            let kind = if e.is_eof() {
                DeadLetterKind::TruncatedJson
            } else if msg.contains("recursion limit") {
                DeadLetterKind::NestingTooDeep
            } else if msg.contains("number out of range") {
                DeadLetterKind::NumberOutOfRange
            } else {
                DeadLetterKind::InvalidJson
            };
            return (kind, format!("not valid JSON: {msg}"));
        }
    };
    if de.end().is_err() {
        return (
            DeadLetterKind::MultipleValues,
            "more than one JSON value in the message; expected exactly one object".into(),
        );
    }
    let Value::Object(obj) = &value else {
        return (
            DeadLetterKind::NotAnObject,
            format!(
                "the message is {}; expected a JSON object",
                json_type(&value)
            ),
        );
    };
    for f in &schema.fields {
        let name = &f.name;
        match obj.get(name) {
            None if !f.nullable => {
                return (
                    DeadLetterKind::MissingField,
                    format!("required field {name:?} is missing"),
                );
            }
            Some(Value::Null) if !f.nullable => {
                return (
                    DeadLetterKind::NullField,
                    format!("required field {name:?} is null"),
                );
            }
            None | Some(Value::Null) => {}
            Some(v) => {
                let ok = match f.ty {
                    FieldType::String => v.is_string(),
                    FieldType::Float64 => v.is_number(),
                    FieldType::Int64 => v.is_i64(),
                    FieldType::Boolean => v.is_boolean(),
                    FieldType::TimestampMicros => v.is_number() || v.is_string(),
                    FieldType::StringMap => v
                        .as_object()
                        .is_some_and(|m| m.values().all(|x| x.is_string() || x.is_null())),
                    FieldType::Json => true,
                };
                if !ok {
                    let want = match f.ty {
                        FieldType::String => "a string",
                        FieldType::Float64 => "a number",
                        FieldType::Int64 => "an integer",
                        FieldType::Boolean => "a boolean",
                        FieldType::TimestampMicros => "a timestamp (µs integer or RFC 3339 string)",
                        FieldType::StringMap => "an object of string values",
                        FieldType::Json => "JSON",
                    };
                    return (
                        DeadLetterKind::WrongType,
                        format!("field {name:?} must be {want}, got {}", json_type(v)),
                    );
                }
                if f.ty == FieldType::TimestampMicros
                    && v.is_string()
                    && decoder_error.contains(name.as_str())
                {
                    return (
                        DeadLetterKind::InvalidTimestamp,
                        format!("field {name:?} is not a timestamp: {v}"),
                    );
                }
            }
        }
    }
    // Strict decoding (evolution = "add_fields" or "dead_letter") names a field the schema
    // lacks as "column 'x' missing from schema".
    if let Some(name) = decoder_error
        .split("column '")
        .nth(1)
        .and_then(|rest| rest.split_once("' missing from schema"))
        .map(|(name, _)| name)
    {
        return (
            DeadLetterKind::UnknownField,
            format!("field {name:?} is not in schema {}", schema.name),
        );
    }
    (DeadLetterKind::SchemaMismatch, decoder_error.to_string())
}

/// Example bad messages for the `telemetry` schema, at least one of every kind but
/// `SchemaMismatch` (the catch-all), each with the kind it must be classified as. Tests and fuzz
/// seeds use them. The oversized one is ~2 KiB: it is bad where `ingest.max_message_bytes` is
/// below that (the tests set 1024).
pub fn sample_bad_messages() -> Vec<(DeadLetterKind, Option<Vec<u8>>)> {
    let ok = |extra: &str| {
        format!(
            r#"{{"ts":1764374400000000,"host":"h","service":"s","metric":"m","value":1.5{extra}}}"#
        )
    };
    let deep = format!(
        r#"{{"ts":1764374400000000,"host":"h","service":"s","metric":"m","value":1,"x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    vec![
        (DeadLetterKind::InvalidJson, Some(b"{ts: 1, host: h}".to_vec())),
        (DeadLetterKind::TruncatedJson, Some(br#"{"ts":1764374400000000,"host":"h","ser"#.to_vec())),
        (DeadLetterKind::NotAnObject, Some(br#"[1,2,3]"#.to_vec())),
        (DeadLetterKind::MultipleValues, Some(format!("{}{}", ok(""), ok("")).into_bytes())),
        (DeadLetterKind::InvalidUtf8, Some(b"{\"ts\":1764374400000000,\"host\":\"h\xff\xfe\",\"service\":\"s\",\"metric\":\"m\",\"value\":1}".to_vec())),
        (DeadLetterKind::EmptyValue, Some(b"  \n ".to_vec())),
        (DeadLetterKind::Tombstone, None),
        (DeadLetterKind::Oversized, Some(ok(&format!(r#","pad":"{}""#, "x".repeat(2000))).into_bytes())),
        (DeadLetterKind::NestingTooDeep, Some(deep.into_bytes())),
        (DeadLetterKind::MissingField, Some(br#"{"ts":1764374400000000,"service":"s","metric":"m","value":1}"#.to_vec())),
        (DeadLetterKind::NullField, Some(br#"{"ts":1764374400000000,"host":null,"service":"s","metric":"m","value":1}"#.to_vec())),
        (DeadLetterKind::WrongType, Some(br#"{"ts":1764374400000000,"host":"h","service":"s","metric":"m","value":"high"}"#.to_vec())),
        (DeadLetterKind::InvalidTimestamp, Some(br#"{"ts":"yesterday","host":"h","service":"s","metric":"m","value":1}"#.to_vec())),
        (DeadLetterKind::TimestampOutOfRange, Some(br#"{"ts":86400000000,"host":"h","service":"s","metric":"m","value":1}"#.to_vec())),
        (DeadLetterKind::NumberOutOfRange, Some(br#"{"ts":1764374400000000,"host":"h","service":"s","metric":"m","value":1e400}"#.to_vec())),
        (DeadLetterKind::WrongType, Some(br#"{"ts":1764374400000000,"host":"h","service":"s","metric":"m","value":1,"labels":{"a":{"b":1}}}"#.to_vec())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_scan_ignores_brackets_in_strings() {
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[["}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[[[1]]]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":[[1]],"b":{"c":[2]}}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[["}"#, 2));
    }
}
