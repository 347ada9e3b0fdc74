//! Curated tables: Delta tables under `curated/` that SQL writes — `CREATE TABLE curated.x AS
//! SELECT …` creates one, `INSERT INTO curated.x …` appends to it through the Delta table
//! provider's own sink (one Delta commit per statement). They are found again at start-up by
//! listing `curated/`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use schemas::{Storage, TableDef, TableRef};

use crate::Result;
use crate::live_table::LiveDeltaTable;

/// The schema curated tables live in.
pub const CURATED: &str = "curated";

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
    let table = TableRef::new(CURATED, name);
    Ok(lake::create(storage, &table, &storable(schema)).await?)
}

/// The curated tables stored under the root whose names `known` does not claim: their
/// definitions, schemas from their Delta logs.
pub(crate) async fn discover(
    storage: &Storage,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<TableDef>> {
    let mut out = Vec::new();
    for name in lake::list_tables(storage, CURATED).await? {
        if !valid_name(&name) || known(&name) {
            continue;
        }
        if let Some(table) = lake::open(storage, &TableRef::new(CURATED, &name)).await? {
            let schema = lake::arrow_schema(&table)?;
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
