//! Schema evolution, the message side: which top-level fields messages carry that their
//! schema lacks, and what type each would have as a column.

use schemas::{COL_DATE, EventSchema, FieldDef, FieldType};
use serde_json::Value;

use crate::message::RawMessage;

/// Whether `name` may not become a column: ingest columns start with `_`, and `date` is the
/// partition column.
pub fn reserved(name: &str) -> bool {
    name.starts_with('_') || name == COL_DATE
}

/// The fields `messages` carry that `schema` lacks, in order of first appearance (by name
/// within one message), each typed
/// by its first non-null value (an integer field that later holds a fraction is a float).
/// Reserved names and fields that are only ever null are left out.
pub fn new_fields<'a>(
    schema: &EventSchema,
    messages: impl IntoIterator<Item = &'a RawMessage>,
) -> Vec<FieldDef> {
    let mut found: Vec<FieldDef> = Vec::new();
    for m in messages {
        let Some(bytes) = &m.value else { continue };
        let Ok(obj) = serde_json::from_slice::<serde_json::Map<String, Value>>(bytes) else {
            continue;
        };
        for (name, value) in obj {
            if schema.field(&name).is_some() || reserved(&name) {
                continue;
            }
            let Some(ty) = json_field_type(&value) else {
                continue;
            };
            match found.iter_mut().find(|f| f.name == name) {
                Some(f) if f.ty == FieldType::Int64 && ty == FieldType::Float64 => f.ty = ty,
                Some(_) => {}
                None => found.push(FieldDef {
                    name,
                    ty,
                    nullable: true,
                    doc: "added by schema evolution".into(),
                }),
            }
        }
    }
    found
}

fn json_field_type(v: &Value) -> Option<FieldType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => FieldType::Boolean,
        Value::Number(n) if n.is_i64() => FieldType::Int64,
        Value::Number(_) => FieldType::Float64,
        Value::String(_) => FieldType::String,
        Value::Array(_) | Value::Object(_) => FieldType::Json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &str) -> RawMessage {
        RawMessage {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    #[test]
    fn new_fields_are_typed_by_their_values() {
        let schema = schemas::event_schema("telemetry").unwrap();
        let found = new_fields(
            &schema,
            &[
                m(r#"{"host":"h","rack":"r1","cores":8,"temp":null,"_x":1,"date":"d"}"#),
                m(r#"{"cores":8.5,"tags":["a"],"ok":true,"temp":null}"#),
                m("not json"),
            ]
            .to_vec(),
        );
        let got: Vec<_> = found.iter().map(|f| (f.name.as_str(), f.ty)).collect();
        assert_eq!(
            got,
            [
                ("cores", FieldType::Float64),
                ("rack", FieldType::String),
                ("ok", FieldType::Boolean),
                ("tags", FieldType::Json),
            ]
        );
    }
}
