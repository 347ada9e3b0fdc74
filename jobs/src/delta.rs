//! The Delta tables jobs read: names in job parameters, and tables that must exist.

use lake::DeltaTable;
use schemas::{Storage, TableRef};

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

/// The table, loaded; an error naming it when it does not exist.
pub(crate) async fn open(storage: &Storage, table: &TableRef) -> Result<DeltaTable> {
    lake::open(storage, table).await?.ok_or_else(|| {
        Error::config(
            "table",
            format!("{table} does not exist (no Delta table at its location)"),
        )
    })
}
