//! Opening and creating Delta tables under the storage root.

use std::sync::Once;

use arrow::datatypes::Schema;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use schemas::{Storage, TableDef, TableRef};

use crate::store::{ensure_local_dir, root_store};
use crate::{Error, Result, paths};

/// An unloaded handle on `table`'s location.
fn handle(storage: &Storage, table: &TableRef, url: url::Url) -> Result<DeltaTable> {
    // Idempotent; explicit because delta-rs's own auto-registration of the S3 handlers may be
    // dropped by the linker when nothing else references it.
    static S3: Once = Once::new();
    S3.call_once(|| deltalake::aws::register_handlers(None));
    DeltaTableBuilder::from_url(url)
        .and_then(|b| b.with_storage_options(storage.options.clone()).build())
        .map_err(|e| Error::delta(table, "failed to open", e))
}

/// `table` under the storage root, loaded at its newest version; `None` when no Delta table is
/// there (yet). Nothing is created.
pub async fn open(storage: &Storage, table: &TableRef) -> Result<Option<DeltaTable>> {
    let url = storage.table_url(table)?;
    // A local table that was never written has no directory yet.
    if url.to_file_path().is_ok_and(|p| !p.exists()) {
        return Ok(None);
    }
    let mut t = handle(storage, table, url)?;
    match t.load().await {
        Ok(()) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(Error::delta(table, "failed to load", e)),
    }
}

fn columns(table: &TableRef, schema: &Schema) -> Result<StructType> {
    schema.try_into_kernel().map_err(|source| Error::Schema {
        table: table.to_string(),
        source,
    })
}

/// `def`'s table, loaded; created with `def`'s schema and partition columns when it does not
/// exist yet. When another process creates it at the same time, theirs is used.
pub async fn open_or_create(storage: &Storage, def: &TableDef) -> Result<DeltaTable> {
    let url = storage.table_url(&def.table)?;
    ensure_local_dir(&url)?;
    let mut t = handle(storage, &def.table, url)?;
    match t.load().await {
        Ok(()) => return Ok(t),
        Err(DeltaTableError::NotATable(_)) => {}
        Err(e) => return Err(Error::delta(&def.table, "failed to load", e)),
    }
    let struct_type = columns(&def.table, &def.schema)?;
    let created = t
        .create()
        .with_table_name(def.table.to_string())
        .with_columns(struct_type.fields().cloned())
        .with_partition_columns(def.partition_columns.clone())
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Created concurrently by another process: use theirs.
        Err(_) => {
            t.load()
                .await
                .map_err(|e| Error::delta(&def.table, "failed to create", e))?;
            Ok(t)
        }
    }
}

/// Creates `table` with the columns of `schema` (no partitions). `Ok(false)` when a table is
/// already there, created earlier or at the same time by another statement or server: theirs
/// stands.
pub async fn create(storage: &Storage, table: &TableRef, schema: &Schema) -> Result<bool> {
    let url = storage.table_url(table)?;
    ensure_local_dir(&url)?;
    let struct_type = columns(table, schema)?;
    let created = handle(storage, table, url)?
        .create()
        .with_table_name(table.to_string())
        .with_columns(struct_type.fields().cloned())
        .with_save_mode(SaveMode::ErrorIfExists)
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(DeltaTableError::Generic(m)) if m.contains("already exists") => Ok(false),
        Err(e) => {
            if open(storage, table).await?.is_some() {
                Ok(false)
            } else {
                Err(Error::delta(table, "failed to create", e))
            }
        }
    }
}

/// The names of the directories directly under `<root>/<schema>/` — the tables stored in
/// `schema`, and anything else kept there (callers open each to see). Empty when the schema
/// has no directory.
pub async fn list_tables(storage: &Storage, schema: &str) -> Result<Vec<String>> {
    let probe = TableRef::new(schema, "_probe");
    let mut dir = storage.table_url(&probe)?;
    if let Ok(mut segments) = dir.path_segments_mut() {
        segments.pop_if_empty().pop().push("");
    }
    if dir.to_file_path().is_ok_and(|p| !p.exists()) {
        return Ok(Vec::new());
    }
    let rs = root_store(storage)?;
    let prefix = paths::schema(&rs.root, schema);
    let listing = rs
        .store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| Error::store(format!("cannot list {prefix}"), e))?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.parts().next_back().map(|p| p.as_ref().to_string()))
        .collect())
}

/// The Arrow schema of `table`'s loaded version.
pub fn arrow_schema(table: &DeltaTable) -> Result<Schema> {
    let name = table.table_url().to_string();
    let kernel = table
        .snapshot()
        .map_err(|e| Error::delta(&name, "failed to read the snapshot", e))?
        .schema();
    kernel
        .as_ref()
        .try_into_arrow()
        .map_err(|source| Error::Schema {
            table: name,
            source,
        })
}

/// Brings `table` up to the newest version in its log.
pub async fn refresh(table: &mut DeltaTable) -> Result<()> {
    table
        .update_incremental(None)
        .await
        .map_err(|e| Error::delta(table.table_url(), "failed to refresh", e))
}
