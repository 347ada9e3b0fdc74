//! The metadata commands of Flight SQL (GetCatalogs, GetDbSchemas, GetTables, GetTableTypes and
//! the key commands) as results built from the tables a caller may see: pure functions, so they
//! are tested without a server. The service (`service.rs`) fetches the caller's tables and
//! streams what these build.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables,
};
use engine::TableInfo;

/// `GetCatalogs`: each catalog of `tables` once, sorted.
pub(crate) fn catalogs(
    query: CommandGetCatalogs,
    tables: &[TableInfo],
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for c in tables
        .iter()
        .map(|t| t.catalog.as_str())
        .collect::<BTreeSet<_>>()
    {
        b.append(c);
    }
    b.build()
}

/// `GetDbSchemas`: each (catalog, schema) of `tables` once, sorted; the builder applies the
/// command's filters.
pub(crate) fn schemas(
    query: CommandGetDbSchemas,
    tables: &[TableInfo],
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    let pairs: BTreeSet<_> = tables
        .iter()
        .map(|t| (t.catalog.as_str(), t.schema.as_str()))
        .collect();
    for (c, s) in pairs {
        b.append(c, s);
    }
    b.build()
}

/// `GetTables`: `tables` (with their Arrow schemas when the command asks for them); the builder
/// applies the command's filters.
pub(crate) fn tables(
    query: CommandGetTables,
    tables: &[TableInfo],
) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for t in tables {
        b.append(
            &t.catalog,
            &t.schema,
            &t.name,
            &t.table_type,
            &t.arrow_schema,
        )?;
    }
    b.build()
}

/// `GetTableTypes`: the kinds of tables the engine serves.
pub(crate) fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for t in ["TABLE", "VIEW"] {
        b.append(t);
    }
    b.build()
}

/// The result schema of `GetPrimaryKeys` (Flight SQL specification).
pub(crate) fn primary_keys_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The result schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn info(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            catalog: "sakura".into(),
            schema: schema.into(),
            name: name.into(),
            table_type: "TABLE".into(),
            arrow_schema: Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
        }
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
        let c = batch.column_by_name(column).unwrap();
        let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        (0..c.len()).map(|i| c.value(i).to_string()).collect()
    }

    #[test]
    fn catalogs_and_schemas_are_listed_once_each() {
        let tables = [
            info("raw", "telemetry"),
            info("raw", "logs"),
            info("curated", "x"),
        ];
        let b = catalogs(CommandGetCatalogs {}, &tables).unwrap();
        assert_eq!(strings(&b, "catalog_name"), ["sakura"]);
        let b = schemas(CommandGetDbSchemas::default(), &tables).unwrap();
        assert_eq!(strings(&b, "db_schema_name"), ["curated", "raw"]);
    }

    #[test]
    fn tables_honour_the_command_filters() {
        let tables = [
            info("raw", "telemetry"),
            info("raw", "logs"),
            info("curated", "x"),
        ];
        let query = CommandGetTables {
            db_schema_filter_pattern: Some("raw".into()),
            table_name_filter_pattern: Some("tele%".into()),
            ..CommandGetTables::default()
        };
        let b = super::tables(query, &tables).unwrap();
        assert_eq!(strings(&b, "table_name"), ["telemetry"]);
        let b = table_types(CommandGetTableTypes {}).unwrap();
        assert_eq!(strings(&b, "table_type"), ["TABLE", "VIEW"]);
    }
}
