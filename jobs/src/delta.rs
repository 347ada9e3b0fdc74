//! Opening the Delta tables jobs read and write.

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use schemas::{Storage, TableDef, TableRef};

use crate::{Error, Result};

/// Parses `schema.table`.
pub(crate) fn table_ref(key: &str, name: &str) -> Result<TableRef> {
    match name.split_once('.') {
        Some((schema, table))
            if !schema.is_empty()
                && !table.is_empty()
                && !table.contains('.')
                && [schema, table].iter().all(|p| {
                    p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }) =>
        {
            Ok(TableRef::new(schema, table))
        }
        _ => Err(Error::config(
            key,
            format!("{name:?} is not a schema.table name (e.g. raw.telemetry)"),
        )),
    }
}

fn builder(storage: &Storage, table: &TableRef) -> Result<DeltaTable> {
    deltalake::aws::register_handlers(None);
    let url = storage.table_url(table)?;
    if storage.root.is_local()
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::delta(table, "failed to create the table directory", e.into()))?;
    }
    DeltaTableBuilder::from_url(url)
        .and_then(|b| b.with_storage_options(storage.options.clone()).build())
        .map_err(|e| Error::delta(table, "failed to open", e))
}

/// The table, loaded; an error naming it when it does not exist.
pub(crate) async fn open(storage: &Storage, table: &TableRef) -> Result<DeltaTable> {
    engine::open_table(storage, table).await?.ok_or_else(|| {
        Error::config(
            "table",
            format!("{table} does not exist (no Delta table at its location)"),
        )
    })
}

/// The table, created with `def`'s schema when it does not exist yet.
pub(crate) async fn open_or_create(storage: &Storage, def: &TableDef) -> Result<DeltaTable> {
    let mut t = builder(storage, &def.table)?;
    match t.load().await {
        Ok(()) => return Ok(t),
        Err(DeltaTableError::NotATable(_)) => {}
        Err(e) => return Err(Error::delta(&def.table, "failed to load", e)),
    }
    let struct_type: StructType = def.schema.as_ref().try_into_kernel()?;
    let created = t
        .create()
        .with_table_name(def.table.to_string())
        .with_columns(struct_type.fields().cloned())
        .with_partition_columns(def.partition_columns.clone())
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Created concurrently by another node: use theirs.
        Err(_) => {
            t.load()
                .await
                .map_err(|e| Error::delta(&def.table, "failed to create", e))?;
            Ok(t)
        }
    }
}
