//! Curated tables: Delta tables under `curated/` that SQL writes — `CREATE TABLE curated.x AS
//! SELECT …` creates one, `INSERT INTO curated.x …` appends to it through the Delta table
//! provider's own sink (one Delta commit per statement). They are found again at start-up by
//! listing `curated/`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use schemas::{Storage, TableDef, TableRef};

use crate::live_table::{LiveDeltaTable, open_existing};
use crate::{Error, Result};

/// The schema curated tables live in.
pub const CURATED: &str = "curated";

fn table_err(table: &TableRef, e: impl std::fmt::Display) -> Error {
    Error::Table {
        table: table.to_string(),
        source: DataFusionError::External(e.to_string().into()),
    }
}

/// Whether `name` can name a curated table (it becomes a directory name).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The Delta schema of a query result: view types become their plain equivalents (Delta
/// stores strings and binaries, not views); every column is nullable.
fn storable(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                other => other.clone(),
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Creates the Delta table of `curated.<name>` with the columns of `schema`. `Ok(false)` when
/// it already exists.
pub(crate) async fn create(storage: &Storage, name: &str, schema: &Schema) -> Result<bool> {
    let table_ref = TableRef::new(CURATED, name);
    let url = storage.table_url(&table_ref)?;
    if storage.root.is_local()
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|e| table_err(&table_ref, e))?;
    }
    let stored = storable(schema);
    let struct_type: StructType = stored
        .as_ref()
        .try_into_kernel()
        .map_err(|e| table_err(&table_ref, e))?;
    let table = DeltaTableBuilder::from_url(url)
        .and_then(|b| b.with_storage_options(storage.options.clone()).build())
        .map_err(|e| table_err(&table_ref, e))?;
    let created = table
        .create()
        .with_table_name(table_ref.to_string())
        .with_columns(struct_type.fields().cloned())
        .with_save_mode(SaveMode::ErrorIfExists)
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(DeltaTableError::Generic(m)) if m.contains("already exists") => Ok(false),
        Err(e) => {
            // Created concurrently by another statement or server: theirs stands.
            let def = TableDef::curated(name, stored);
            if open_existing(storage, &def).await?.is_some() {
                Ok(false)
            } else {
                Err(table_err(&table_ref, e))
            }
        }
    }
}

/// The curated tables stored under the root whose names `known` does not claim: their
/// definitions, schemas from their Delta logs.
pub(crate) async fn discover(
    storage: &Storage,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<TableDef>> {
    let probe = TableRef::new(CURATED, "_probe");
    let url = storage.table_url(&probe)?;
    let mut dir = url.clone();
    dir.path_segments_mut()
        .map_err(|_| table_err(&probe, "storage URL cannot have a path"))?
        .pop_if_empty()
        .pop()
        .push("");
    if dir.to_file_path().is_ok_and(|p| !p.exists()) {
        return Ok(Vec::new());
    }
    let store = DeltaTableBuilder::from_url(dir)
        .and_then(|b| {
            b.with_storage_options(storage.options.clone())
                .build_storage()
        })
        .map_err(|e| table_err(&probe, e))?
        .object_store(None);
    let listing = store
        .list_with_delimiter(None)
        .await
        .map_err(|e| table_err(&probe, e))?;
    let mut out = Vec::new();
    for prefix in listing.common_prefixes {
        let Some(name) = prefix.parts().next_back().map(|p| p.as_ref().to_string()) else {
            continue;
        };
        if !valid_name(&name) || known(&name) {
            continue;
        }
        let empty = TableDef::curated(&name, Arc::new(Schema::empty()));
        if let Some(table) = open_existing(storage, &empty).await? {
            let kernel = table
                .snapshot()
                .map_err(|e| table_err(&empty.table, e))?
                .schema();
            let schema: Schema = kernel
                .as_ref()
                .try_into_arrow()
                .map_err(|e| table_err(&empty.table, e))?;
            out.push(TableDef::curated(name, Arc::new(schema)));
        }
    }
    Ok(out)
}

/// Registers `def` in `schema` as a live table.
pub(crate) fn register(
    schema: &dyn SchemaProvider,
    def: TableDef,
    storage: &Storage,
    refresh: std::time::Duration,
) -> Result<Arc<LiveDeltaTable>> {
    let name = def.table.name.clone();
    let table = Arc::new(LiveDeltaTable::new(def, storage.clone(), refresh));
    schema.register_table(name, table.clone() as Arc<dyn TableProvider>)?;
    Ok(table)
}
