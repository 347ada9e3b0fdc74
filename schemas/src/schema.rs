//! Event schemas: the fields of a topic's messages as written in `schemas/*.json`, and their
//! Arrow types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::{Error, Result};

/// The type of one event field, as written in a schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// UTC timestamp with microsecond precision.
    TimestampMicros,
    String,
    Int64,
    Float64,
    Boolean,
    /// A JSON object of string keys and string values.
    StringMap,
    /// Arbitrary JSON, stored as its JSON text.
    Json,
}

impl FieldType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "timestamp_us" => Self::TimestampMicros,
            "string" => Self::String,
            "int64" => Self::Int64,
            "float64" => Self::Float64,
            "bool" => Self::Boolean,
            "map<string,string>" => Self::StringMap,
            "json" => Self::Json,
            _ => return None,
        })
    }

    /// The Arrow type a column of this field has in the tables.
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::String | Self::Json => DataType::Utf8,
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Boolean => DataType::Boolean,
            // Field names follow the Delta protocol's map encoding so that what we write is
            // what Delta readers (and our own engine) read back.
            Self::StringMap => DataType::Map(
                Arc::new(Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, true),
                    ])),
                    false,
                )),
                false,
            ),
        }
    }
}

/// One field of an event schema.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: String,
    pub ty: FieldType,
    pub nullable: bool,
    pub doc: String,
}

/// A versioned event schema loaded from a schema file.
#[derive(Debug, Clone)]
pub struct EventSchema {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub time_column: String,
    pub fields: Vec<FieldDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    name: String,
    version: u32,
    #[serde(default)]
    description: String,
    time_column: String,
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "default_nullable")]
    nullable: bool,
    #[serde(default)]
    doc: String,
}

fn default_nullable() -> bool {
    true
}

impl EventSchema {
    /// Parses and validates a schema file's JSON text; `name` is used in error messages.
    pub fn from_json(name: &str, text: &str) -> Result<Self> {
        let raw: RawSchema = serde_json::from_str(text).map_err(|source| Error::Parse {
            name: name.to_string(),
            source,
        })?;
        let mut fields = Vec::with_capacity(raw.fields.len());
        for f in raw.fields {
            let ty = FieldType::parse(&f.ty).ok_or_else(|| Error::UnsupportedType {
                schema: raw.name.clone(),
                field: f.name.clone(),
                ty: f.ty.clone(),
            })?;
            if f.name.starts_with('_') || f.name == crate::COL_DATE {
                return Err(Error::Invalid {
                    schema: raw.name.clone(),
                    message: format!(
                        "field name {:?} is reserved (names starting with '_' and 'date' are ingest columns)",
                        f.name
                    ),
                });
            }
            fields.push(FieldDef {
                name: f.name,
                ty,
                nullable: f.nullable,
                doc: f.doc,
            });
        }
        let schema = Self {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            time_column: raw.time_column,
            fields,
        };
        match schema.field(&schema.time_column) {
            Some(f) if f.ty == FieldType::TimestampMicros && !f.nullable => Ok(schema),
            _ => Err(Error::Invalid {
                schema: schema.name.clone(),
                message: format!(
                    "time column {:?} must be a non-nullable timestamp_us field",
                    schema.time_column
                ),
            }),
        }
    }

    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The Arrow schema that incoming events are decoded against.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|f| Field::new(&f.name, f.ty.arrow_type(), f.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// Whether any field holds arbitrary JSON (decoded by re-serialising it as text).
    pub fn has_json_fields(&self) -> bool {
        self.fields.iter().any(|f| f.ty == FieldType::Json)
    }
}
