//! The tables Sakura keeps: their names, schemas and partition columns, and the columns ingest
//! adds to every row (`_partition`, `_offset`, `date`).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Error, EventSchema, Result};

/// Kafka partition the row was read from.
/// `tags` keys of every Parquet file ingest commits: the Kafka topic and partition its rows
/// came from (each file holds rows of one topic-partition). `system.ingest_ledger` reads them.
pub const TAG_TOPIC: &str = "sakura.topic";
pub const TAG_PARTITION: &str = "sakura.partition";

pub const COL_PARTITION: &str = "_partition";
/// Kafka offset the row was read from; `(_partition, _offset)` is unique per table.
pub const COL_OFFSET: &str = "_offset";
/// UTC date of the row's event time; the partition column of every event table.
pub const COL_DATE: &str = "date";

/// A table's two-part name, `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What a table holds.
#[derive(Debug, Clone)]
pub enum TableKind {
    /// Events of one schema, written by ingest.
    Events(Arc<EventSchema>),
    /// Messages that could not be stored, with the reason.
    DeadLetters,
    /// A table of `curated`, written by SQL (`INSERT INTO`, `CREATE TABLE … AS`).
    Curated,
    /// A table of `system` the platform itself writes (e.g. the scheduler's run history).
    System,
}

/// A table of the catalog: its name, full schema and partitioning.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub table: TableRef,
    pub kind: TableKind,
    pub schema: SchemaRef,
    pub partition_columns: Vec<String>,
}

impl TableDef {
    /// The table for events of `schema`: its fields plus `_partition`, `_offset` and `date`.
    pub fn for_events(schema: Arc<EventSchema>) -> Self {
        let mut fields: Vec<Field> = schema
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(COL_PARTITION, DataType::Int32, false));
        fields.push(Field::new(COL_OFFSET, DataType::Int64, false));
        fields.push(Field::new(COL_DATE, DataType::Date32, false));
        Self {
            table: TableRef::new("raw", schema.name.clone()),
            schema: Arc::new(Schema::new(fields)),
            kind: TableKind::Events(schema),
            partition_columns: vec![COL_DATE.to_string()],
        }
    }

    /// `curated.<name>` with `schema`, unpartitioned.
    pub fn curated(name: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            table: TableRef::new("curated", name),
            kind: TableKind::Curated,
            schema,
            partition_columns: Vec::new(),
        }
    }

    /// `system.job_runs`: one row per attempt of a scheduled or manual job run, written by the
    /// scheduler when the attempt ends (see the jobs crate).
    pub fn job_runs() -> Self {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Self {
            table: TableRef::new("system", "job_runs"),
            kind: TableKind::System,
            schema: Arc::new(Schema::new(vec![
                Field::new("job", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("fire_time", ts(), false),
                Field::new("trigger", DataType::Utf8, false),
                Field::new("attempt", DataType::Int32, false),
                Field::new("node", DataType::Utf8, false),
                Field::new("started_at", ts(), false),
                Field::new("finished_at", ts(), false),
                Field::new("status", DataType::Utf8, false),
                Field::new("window_start", ts(), true),
                Field::new("window_end", ts(), true),
                Field::new("rows_read", DataType::Int64, false),
                Field::new("rows_written", DataType::Int64, false),
                Field::new("detail", DataType::Utf8, false),
                Field::new("error", DataType::Utf8, true),
            ])),
            partition_columns: Vec::new(),
        }
    }

    /// `ml.anomalies`: one row per anomaly an `ml_score` job found (appended per run; a rerun
    /// of a window replaces that window's rows of the job).
    pub fn ml_anomalies() -> Self {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Self {
            table: TableRef::new("ml", "anomalies"),
            kind: TableKind::System,
            schema: Arc::new(Schema::new(vec![
                Field::new("ts", ts(), false),
                Field::new("series", DataType::Utf8, false),
                Field::new("value", DataType::Float64, true),
                Field::new("score", DataType::Float64, false),
                Field::new(
                    "contributing",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    true,
                ),
                Field::new("model", DataType::Utf8, false),
                Field::new("model_version", DataType::Int32, false),
                Field::new("job", DataType::Utf8, false),
                Field::new("scored_at", ts(), false),
            ])),
            partition_columns: Vec::new(),
        }
    }

    /// `raw.dead_letters`: one row per message that could not be stored.
    pub fn dead_letters() -> Self {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Self {
            table: TableRef::new("raw", "dead_letters"),
            kind: TableKind::DeadLetters,
            schema: Arc::new(Schema::new(vec![
                Field::new("received_at", ts, false),
                Field::new("topic", DataType::Utf8, false),
                Field::new(COL_PARTITION, DataType::Int32, false),
                Field::new(COL_OFFSET, DataType::Int64, false),
                Field::new("key", DataType::Binary, true),
                Field::new("value", DataType::Binary, true),
                Field::new("error_kind", DataType::Utf8, false),
                Field::new("error", DataType::Utf8, false),
                Field::new(COL_DATE, DataType::Date32, false),
            ])),
            partition_columns: vec![COL_DATE.to_string()],
        }
    }
}

const SCHEMA_FILES: [(&str, &str); 3] = [
    ("telemetry", include_str!("../v1/telemetry.json")),
    ("logs", include_str!("../v1/logs.json")),
    ("events", include_str!("../v1/events.json")),
];

static BUILTIN: LazyLock<Result<Vec<Arc<EventSchema>>, String>> = LazyLock::new(|| {
    SCHEMA_FILES
        .iter()
        .map(|(name, text)| {
            EventSchema::from_json(&format!("schemas/v1/{name}.json"), text)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .collect()
});

/// The built-in event schemas (telemetry, logs, events), parsed from `schemas/v1/`.
pub fn builtin_schemas() -> Result<Vec<Arc<EventSchema>>> {
    BUILTIN.clone().map_err(|message| Error::Invalid {
        schema: "builtin".into(),
        message,
    })
}

/// One built-in event schema by name.
pub fn event_schema(name: &str) -> Result<Arc<EventSchema>> {
    builtin_schemas()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::UnknownSchema(name.to_string()))
}

/// Every table ingest writes: one per event schema, plus `raw.dead_letters`.
pub fn builtin_tables() -> Result<Vec<TableDef>> {
    let mut tables: Vec<TableDef> = builtin_schemas()?
        .into_iter()
        .map(TableDef::for_events)
        .collect();
    tables.push(TableDef::dead_letters());
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::json::ReaderBuilder;

    #[test]
    fn builtin_schema_files_parse() {
        let names: Vec<_> = builtin_schemas()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["telemetry", "logs", "events"]);
        let t = event_schema("telemetry").unwrap();
        assert_eq!(t.version, 1);
        assert_eq!(t.time_column, "ts");
    }

    #[test]
    fn table_schema_adds_ingest_columns() {
        let def = TableDef::for_events(event_schema("telemetry").unwrap());
        assert_eq!(def.table.to_string(), "raw.telemetry");
        let names: Vec<_> = def
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "ts",
                "host",
                "service",
                "region",
                "metric",
                "value",
                "labels",
                "_partition",
                "_offset",
                "date"
            ]
        );
        assert_eq!(def.partition_columns, ["date"]);
    }

    #[test]
    fn sample_files_decode_against_their_schemas() {
        let samples = [
            ("telemetry", include_str!("../samples/telemetry.ndjson"), 4),
            ("logs", include_str!("../samples/logs.ndjson"), 3),
        ];
        for (name, text, rows) in samples {
            let schema = event_schema(name).unwrap().arrow_schema();
            let reader = ReaderBuilder::new(schema)
                .build(std::io::Cursor::new(text.as_bytes()))
                .unwrap();
            let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(n, rows, "{name}");
        }
    }

    #[test]
    fn reserved_and_bad_fields_are_rejected() {
        let bad = r#"{"name":"x","version":1,"time_column":"ts","fields":[
            {"name":"ts","type":"timestamp_us","nullable":false},{"name":"_offset","type":"int64"}]}"#;
        assert!(
            EventSchema::from_json("x", bad)
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        let bad = r#"{"name":"x","version":1,"time_column":"ts","fields":[
            {"name":"ts","type":"timestamp_us","nullable":false},{"name":"v","type":"decimal"}]}"#;
        assert!(
            EventSchema::from_json("x", bad)
                .unwrap_err()
                .to_string()
                .contains("unsupported type")
        );
        let bad = r#"{"name":"x","version":1,"time_column":"t","fields":[{"name":"ts","type":"timestamp_us"}]}"#;
        assert!(
            EventSchema::from_json("x", bad)
                .unwrap_err()
                .to_string()
                .contains("time column")
        );
    }
}
