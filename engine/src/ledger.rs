//! `system.ingest_ledger`: one row per Parquet file ingest committed — which table, which file,
//! which Kafka topic-partition and offsets, how many rows and bytes, in which Delta version and
//! when. Read from the Delta logs themselves (the `add` actions ingest tags with the topic and
//! partition), so it can never disagree with what the tables hold.
//!
//! Each table's log is read incrementally: a query reads only the commits since the last one.
//! Commits whose JSON the log no longer keeps (Delta removes them after
//! `delta.logRetentionDuration`, 30 days by default) are not in the ledger.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::error::{DataFusionError, Result};
use deltalake::{DeltaTable, DeltaTableError};
use schemas::{COL_OFFSET, Storage, TAG_PARTITION, TAG_TOPIC, TableDef};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::computed::ComputedRows;
use crate::live_table::open;

/// One committed file.
#[derive(Debug, Clone)]
struct Entry {
    table: String,
    path: String,
    topic: String,
    partition: Option<i32>,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
    rows: Option<i64>,
    bytes: Option<i64>,
    version: i64,
    /// µs since the epoch.
    commit_time: Option<i64>,
}

/// What has been read of one table's log.
struct TableLog {
    def: TableDef,
    table: Option<DeltaTable>,
    next_version: u64,
    entries: Vec<Entry>,
}

/// The `system.ingest_ledger` table.
pub struct IngestLedger {
    storage: Storage,
    logs: Mutex<Vec<TableLog>>,
    schema: SchemaRef,
}

impl std::fmt::Debug for IngestLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestLedger").finish_non_exhaustive()
    }
}

fn external(table: &TableDef, e: DeltaTableError) -> DataFusionError {
    DataFusionError::External(format!("ingest ledger: delta table {}: {e}", table.table).into())
}

impl IngestLedger {
    /// The ledger over the files ingest wrote to `tables`.
    pub fn new(storage: Storage, tables: Vec<TableDef>) -> Self {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("file_path", DataType::Utf8, false),
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, true),
            Field::new("first_offset", DataType::Int64, true),
            Field::new("last_offset", DataType::Int64, true),
            Field::new("rows", DataType::Int64, true),
            Field::new("bytes", DataType::Int64, true),
            Field::new("delta_version", DataType::Int64, false),
            Field::new("commit_time", ts, true),
        ]));
        let logs = tables
            .into_iter()
            .map(|def| TableLog {
                def,
                table: None,
                next_version: 0,
                entries: Vec::new(),
            })
            .collect();
        Self {
            storage,
            logs: Mutex::new(logs),
            schema,
        }
    }

    /// Reads every table's commits since the last call; returns all entries.
    async fn refresh(&self) -> Result<Vec<Entry>> {
        let mut logs = self.logs.lock().await;
        let mut all = Vec::new();
        for log in logs.iter_mut() {
            log.refresh(&self.storage).await?;
            all.extend(log.entries.iter().cloned());
        }
        Ok(all)
    }

    fn batch(&self, entries: &[Entry]) -> Result<RecordBatch> {
        let mut table = StringBuilder::new();
        let mut path = StringBuilder::new();
        let mut topic = StringBuilder::new();
        let mut partition = Int32Builder::new();
        let mut first = Int64Builder::new();
        let mut last = Int64Builder::new();
        let mut rows = Int64Builder::new();
        let mut bytes = Int64Builder::new();
        let mut version = Int64Builder::new();
        let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for e in entries {
            table.append_value(&e.table);
            path.append_value(&e.path);
            topic.append_value(&e.topic);
            partition.append_option(e.partition);
            first.append_option(e.first_offset);
            last.append_option(e.last_offset);
            rows.append_option(e.rows);
            bytes.append_option(e.bytes);
            version.append_value(e.version);
            time.append_option(e.commit_time);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(table.finish()),
            Arc::new(path.finish()),
            Arc::new(topic.finish()),
            Arc::new(partition.finish()),
            Arc::new(first.finish()),
            Arc::new(last.finish()),
            Arc::new(rows.finish()),
            Arc::new(bytes.finish()),
            Arc::new(version.finish()),
            Arc::new(time.finish()),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl TableLog {
    async fn refresh(&mut self, storage: &Storage) -> Result<()> {
        let table = match &mut self.table {
            Some(t) => {
                t.update_incremental(None)
                    .await
                    .map_err(|e| external(&self.def, e))?;
                t
            }
            None => match open(storage, &self.def.table).await? {
                Some(t) => self.table.insert(t),
                // Nothing ingested yet.
                None => return Ok(()),
            },
        };
        let Some(latest) = table.version() else {
            return Ok(());
        };
        let log_store = table.log_store();
        for version in self.next_version..=latest {
            let Some(bytes) = log_store
                .read_commit_entry(version)
                .await
                .map_err(|e| external(&self.def, e))?
            else {
                continue;
            };
            self.entries
                .extend(parse_commit(&self.def.table.to_string(), version, &bytes));
        }
        self.next_version = latest + 1;
        Ok(())
    }
}

/// The ledger entries of one commit file (newline-delimited actions).
fn parse_commit(table: &str, version: u64, bytes: &[u8]) -> Vec<Entry> {
    let actions: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let commit_ms = actions
        .iter()
        .find_map(|a| a.get("commitInfo")?.get("timestamp")?.as_i64());
    actions
        .iter()
        .filter_map(|a| a.get("add"))
        .filter_map(|add| {
            let tags = add.get("tags")?;
            let topic = tags.get(TAG_TOPIC)?.as_str()?.to_string();
            let partition = tags
                .get(TAG_PARTITION)
                .and_then(Value::as_str)
                .and_then(|p| p.parse().ok());
            let stats: Option<Value> = add
                .get("stats")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok());
            let stat = |kind: &str| {
                stats
                    .as_ref()
                    .and_then(|s| s.get(kind)?.get(COL_OFFSET)?.as_i64())
            };
            let modified_ms = add.get("modificationTime").and_then(Value::as_i64);
            Some(Entry {
                table: table.to_string(),
                path: add.get("path")?.as_str()?.to_string(),
                topic,
                partition,
                first_offset: stat("minValues"),
                last_offset: stat("maxValues"),
                rows: stats.as_ref().and_then(|s| s.get("numRecords")?.as_i64()),
                bytes: add.get("size").and_then(Value::as_i64),
                version: version as i64,
                commit_time: commit_ms.or(modified_ms).map(|ms| ms * 1000),
            })
        })
        .collect()
}

#[async_trait]
impl ComputedRows for IngestLedger {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self, _session: &dyn Session) -> Result<RecordBatch> {
        let entries = self.refresh().await?;
        self.batch(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_yields_one_entry_per_tagged_file() {
        let commit = br#"{"commitInfo":{"timestamp":1764374400123,"operation":"WRITE"}}
{"txn":{"appId":"sakura-ingest:telemetry:3","version":41}}
{"add":{"path":"date=2025-11-29/part-1.parquet","size":2048,"modificationTime":1,"dataChange":true,"stats":"{\"numRecords\":12,\"minValues\":{\"_offset\":30},\"maxValues\":{\"_offset\":41}}","tags":{"sakura.topic":"telemetry","sakura.partition":"3"}}}
{"add":{"path":"date=2025-11-29/untagged.parquet","size":10,"modificationTime":1,"dataChange":true}}
"#;
        let entries = parse_commit("raw.telemetry", 7, commit);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let e = &entries[0];
        assert_eq!(e.table, "raw.telemetry");
        assert_eq!(e.path, "date=2025-11-29/part-1.parquet");
        assert_eq!(e.topic, "telemetry");
        assert_eq!(e.partition, Some(3));
        assert_eq!((e.first_offset, e.last_offset), (Some(30), Some(41)));
        assert_eq!((e.rows, e.bytes), (Some(12), Some(2048)));
        assert_eq!(e.version, 7);
        assert_eq!(e.commit_time, Some(1_764_374_400_123_000));
    }
}
