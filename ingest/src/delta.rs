//! One Delta table written by ingest: create on first use, append batches together with the
//! Kafka offsets they cover (one `txn` action per topic-partition), read those offsets back.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use deltalake::DeltaTable;
use deltalake::kernel::{Add, Transaction};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use schemas::{EventSchema, FieldDef, Storage, TAG_PARTITION, TAG_TOPIC, TableDef};

use crate::evolve;

use crate::{Error, Result};

/// Key of a Kafka topic-partition.
pub type TopicPartition = (Arc<str>, i32);

/// The Delta `txn` application id under which a table stores the last offset it holds for one
/// topic-partition. Changing this format orphans every stored offset.
pub fn app_id(topic: &str, partition: i32) -> String {
    format!("sakura-ingest:{topic}:{partition}")
}

/// A Delta table that ingest appends to.
#[derive(Debug)]
pub struct DeltaSink {
    def: TableDef,
    table: DeltaTable,
    /// The stored offsets (`None`: nothing stored) of the partitions read or committed so far,
    /// as of one table version. A version of the log never changes, so while the table is at
    /// that version these are exactly what replaying its `txn` actions would return; any other
    /// version (another member's commit, a schema change) starts the map afresh.
    known: KnownOffsets,
}

#[derive(Debug, Default)]
struct KnownOffsets {
    version: Option<u64>,
    offsets: BTreeMap<TopicPartition, Option<i64>>,
}

impl DeltaSink {
    /// Opens the table at its place under the storage root, creating it if it does not exist.
    pub async fn open(storage: &Storage, def: TableDef) -> Result<Self> {
        let table = lake::open_or_create(storage, &def).await?;
        Ok(Self {
            def,
            table,
            known: KnownOffsets::default(),
        })
    }

    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// Refreshes the table and reads the last offset it stores for each of `partitions`.
    /// Offsets already known at the refreshed version are not read from the log again (ADR
    /// 0003, addendum).
    pub(crate) async fn stored_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        lake::refresh(&mut self.table).await?;
        let version = self.table.version();
        if self.known.version != version {
            self.known = KnownOffsets {
                version,
                offsets: BTreeMap::new(),
            };
        }
        let missing: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| !self.known.offsets.contains_key(*tp))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let read = read_offsets(&self.table, &missing).await?;
            for tp in missing {
                let stored = read.get(&tp).copied();
                self.known.offsets.insert(tp, stored);
            }
        }
        Ok(partitions
            .iter()
            .filter_map(|tp| {
                let stored = self.known.offsets.get(tp).copied().flatten()?;
                Some((tp.clone(), stored))
            })
            .collect())
    }

    /// A second handle on the same table, for readers that refresh on their own.
    pub fn handle(&self) -> DeltaTable {
        self.table.clone()
    }

    /// The table's columns that are not in `base` or the ingest columns: fields added by
    /// schema evolution.
    pub(crate) fn added_fields(&self, base: &EventSchema) -> Result<Vec<FieldDef>> {
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| Error::delta(&self.def.table, "failed to read the snapshot", e))?;
        Ok(snapshot
            .schema()
            .fields()
            .filter(|f| base.field(f.name()).is_none() && !decode::reserved(f.name()))
            .filter_map(evolve::from_delta)
            .collect())
    }

    /// Adds `fields` to the table as nullable columns (one metadata commit). Succeeds too when
    /// another process added them first.
    pub(crate) async fn add_fields(&mut self, fields: &[FieldDef]) -> Result<()> {
        let columns: Vec<_> = fields.iter().map(evolve::to_delta).collect();
        match self.table.clone().add_columns().with_fields(columns).await {
            Ok(table) => {
                self.table = table;
                Ok(())
            }
            Err(e) => {
                lake::refresh(&mut self.table).await?;
                let have = self
                    .table
                    .snapshot()
                    .map_err(|e| Error::delta(&self.def.table, "failed to read the snapshot", e))?
                    .schema();
                if fields.iter().all(|f| have.field(&f.name).is_some()) {
                    Ok(())
                } else {
                    Err(Error::delta(&self.def.table, "failed to add columns", e))
                }
            }
        }
    }

    /// Deletes data files under the table that no version references — what a crash or a
    /// failed commit left after uploading — once they are older than `min_age`. Files of the
    /// current version and of removed files still kept for time travel (active tombstones) are
    /// never touched; `min_age` protects files another process has uploaded and is about to
    /// commit. Returns how many files were deleted.
    pub(crate) async fn remove_orphans(&mut self, min_age: std::time::Duration) -> Result<usize> {
        let name = self.def.table.to_string();
        lake::refresh(&mut self.table).await?;
        let log_store = self.table.log_store();
        let state = self
            .table
            .snapshot()
            .map_err(|e| Error::delta(&name, "failed to read the snapshot", e))?;
        let mut keep: HashSet<Path> = state
            .log_data()
            .into_iter()
            .map(|f| f.object_store_path())
            .collect();
        let mut tombstones = state.all_tombstones(log_store.as_ref());
        while let Some(t) = tombstones.next().await {
            let t = t.map_err(|e| Error::delta(&name, "failed to read removed files", e))?;
            let p = t.path();
            keep.insert(Path::parse(p.as_ref()).unwrap_or_else(|_| Path::from(p.as_ref())));
        }
        drop(tombstones);
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
        let store = log_store.object_store(None);
        let mut listing = store.list(None);
        let mut orphans = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| Error::delta(&name, "failed to list files", e.into()))?;
            let path = meta.location;
            let data_file = path.as_ref().ends_with(".parquet")
                && !path.as_ref().starts_with("_delta_log/")
                && !path.as_ref().starts_with("_change_data/");
            if data_file && meta.last_modified < cutoff && !keep.contains(&path) {
                orphans.push(path);
            }
        }
        drop(listing);
        for path in &orphans {
            match store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(Error::delta(
                        &name,
                        "failed to delete an orphan file",
                        e.into(),
                    ));
                }
            }
        }
        Ok(orphans.len())
    }

    /// A writer of new Parquet files for this table (see [`FileWriter::write`]).
    pub(crate) fn file_writer(&self) -> Result<FileWriter> {
        let writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|e| Error::delta(&self.def.table, "failed to start a file writer", e))?
            .with_writer_properties(writer_properties(&self.def.schema));
        Ok(FileWriter {
            writer,
            table: self.def.table.to_string(),
        })
    }

    /// Adds `files` to the table and records `offsets` (the last offset written per
    /// topic-partition) in the same Delta commit, checked for conflicts against the snapshot
    /// read by the last [`Self::stored_offsets`]. Returns the committed version.
    pub(crate) async fn commit_files(
        &mut self,
        files: Vec<Add>,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<u64> {
        let txns = offsets
            .iter()
            .map(|((topic, partition), offset)| {
                Transaction::new(app_id(topic, *partition), *offset)
            })
            .collect();
        // A window whose messages were all dead letters has no files but still moves the
        // offsets forward.
        let lake::Committed {
            read: base,
            version,
        } = lake::commit_append(
            &mut self.table,
            &self.def.table,
            files,
            txns,
            &self.def.partition_columns,
        )
        .await?;
        if self.known.version == Some(base) && version == base + 1 {
            // Nothing else landed between the snapshot read and this commit: the offsets known
            // then plus the ones just recorded are the table's at the new version.
            self.known.version = Some(version);
            for (tp, offset) in offsets {
                self.known.offsets.insert(tp.clone(), Some(*offset));
            }
        } else {
            self.known = KnownOffsets::default();
        }
        Ok(version)
    }
}

/// Parquet settings of ingest's files: Snappy (delta-rs's default), and no dictionary for
/// columns whose values rarely repeat — timestamps, floats, `_offset` — where the dictionary
/// only costs a hash of every value before the writer falls back to plain encoding. Strings,
/// integers and booleans keep it.
fn writer_properties(schema: &arrow::datatypes::Schema) -> WriterProperties {
    schema
        .fields()
        .iter()
        .filter(|f| {
            f.name() == "_offset"
                || matches!(
                    f.data_type(),
                    DataType::Timestamp(..) | DataType::Float64 | DataType::Float32
                )
        })
        .fold(
            WriterProperties::builder().set_compression(Compression::SNAPPY),
            |b, f| b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false),
        )
        .build()
}

/// Writes the Parquet files of one commit's rows from one topic-partition.
pub(crate) struct FileWriter {
    writer: RecordBatchWriter,
    table: String,
}

impl FileWriter {
    /// Encodes `batch` (rows cut from topic-partition `tp`) as Parquet files of the table and
    /// uploads them. The files are not part of the table until [`DeltaSink::commit_files`]
    /// lands; each carries the topic and partition in its `tags`, which the ingest ledger
    /// reads. Synchronous (CPU-bound encoding): call it from a blocking thread; `handle`
    /// drives the uploads.
    pub(crate) fn write(
        mut self,
        handle: &tokio::runtime::Handle,
        tp: &TopicPartition,
        batch: RecordBatch,
    ) -> Result<Vec<Add>> {
        let writer = &mut self.writer;
        let mut adds = handle
            .block_on(async {
                writer.write(batch).await?;
                writer.flush().await
            })
            .map_err(|e| Error::delta(&self.table, "failed to write files", e))?;
        for add in &mut adds {
            let tags = add.tags.get_or_insert_with(Default::default);
            tags.insert(TAG_TOPIC.into(), Some(tp.0.to_string()));
            tags.insert(TAG_PARTITION.into(), Some(tp.1.to_string()));
        }
        Ok(adds)
    }
}

/// Reads, from a fresh view of the table, the last offset stored for each topic-partition.
pub(crate) async fn stored_offsets(
    table: &mut DeltaTable,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    lake::refresh(table).await?;
    read_offsets(table, partitions).await
}

/// The last offset stored for each topic-partition at the table's loaded version.
async fn read_offsets(
    table: &DeltaTable,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let name = table.table_url().to_string();
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(&name, "failed to read the snapshot", e))?;
    let log_store = table.log_store();
    let mut out = BTreeMap::new();
    for (topic, partition) in partitions {
        let v = snapshot
            .transaction_version(log_store.as_ref(), app_id(topic, *partition))
            .await
            .map_err(|e| Error::delta(&name, "failed to read stored offsets", e))?;
        if let Some(v) = v {
            out.insert((topic.clone(), *partition), v);
        }
    }
    Ok(out)
}
