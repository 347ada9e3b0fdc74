//! One Delta table written by ingest: create on first use, append batches together with the
//! Kafka offsets they cover (one `txn` action per topic-partition), read those offsets back.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use schemas::{Storage, TableDef};

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
}

impl DeltaSink {
    /// Opens the table at its place under the storage root, creating it if it does not exist.
    pub async fn open(storage: &Storage, def: TableDef) -> Result<Self> {
        // Idempotent; explicit because the crate's own auto-registration may be dropped by the
        // linker when nothing else references it.
        deltalake::aws::register_handlers(None);
        let url = storage.table_url(&def.table)?;
        if storage.root.is_local()
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| {
                Error::delta(&def.table, "failed to create the table directory", e.into())
            })?;
        }
        let mut table = DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(storage.options.clone()).build())
            .map_err(|e| Error::delta(&def.table, "failed to open", e))?;
        match table.load().await {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) => {
                let struct_type: StructType =
                    def.schema
                        .as_ref()
                        .try_into_kernel()
                        .map_err(|source| Error::Arrow {
                            table: def.table.to_string(),
                            source,
                        })?;
                let created = table
                    .create()
                    .with_table_name(def.table.to_string())
                    .with_columns(struct_type.fields().cloned())
                    .with_partition_columns(def.partition_columns.clone())
                    .with_save_mode(SaveMode::Ignore)
                    .await;
                match created {
                    Ok(t) => table = t,
                    // Another process created it first: use theirs.
                    Err(_) => table
                        .load()
                        .await
                        .map_err(|e| Error::delta(&def.table, "failed to create", e))?,
                }
            }
            Err(e) => return Err(Error::delta(&def.table, "failed to load", e)),
        }
        Ok(Self { def, table })
    }

    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// Refreshes the table and reads the last offset it stores for each of `partitions`.
    pub(crate) async fn stored_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        stored_offsets(&mut self.table, partitions).await
    }

    /// A second handle on the same table, for readers that refresh on their own.
    pub fn handle(&self) -> DeltaTable {
        self.table.clone()
    }

    /// Appends `batches` and records `offsets` (the last offset written per topic-partition) in
    /// the same Delta commit. Returns the committed version.
    pub async fn commit(
        &mut self,
        batches: Vec<RecordBatch>,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<u64> {
        let txns = offsets
            .iter()
            .map(|((topic, partition), offset)| {
                Transaction::new(app_id(topic, *partition), *offset)
            })
            .collect();
        let batches = if batches.is_empty() {
            // A window whose messages were all dead letters still moves the offsets forward.
            vec![RecordBatch::new_empty(self.def.schema.clone())]
        } else {
            batches
        };
        let table = self
            .table
            .clone()
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(self.def.partition_columns.clone())
            .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
            .await
            .map_err(|e| Error::delta(&self.def.table, "failed to commit", e))?;
        self.table = table;
        self.table
            .version()
            .ok_or_else(|| Error::delta(&self.def.table, "commit", DeltaTableError::NotInitialized))
    }
}

/// Reads, from a fresh view of the table, the last offset stored for each topic-partition.
pub(crate) async fn stored_offsets(
    table: &mut DeltaTable,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let name = table.table_url().to_string();
    table
        .update_incremental(None)
        .await
        .map_err(|e| Error::delta(&name, "failed to refresh", e))?;
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
