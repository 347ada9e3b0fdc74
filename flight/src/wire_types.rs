//! Results leave the server in Arrow's classic types (ADR 0012).
//!
//! DataFusion reads Parquet strings and binaries as view types (`Utf8View`, `BinaryView`),
//! which are faster inside the engine; but clients built on an Arrow release older than the view
//! types (Arrow Go before v15, which Grafana's Flight SQL data source is built on, older JDBC
//! drivers) cannot read an IPC stream that holds them. Every result schema, batch and table
//! schema a client sees therefore has `Utf8` / `Binary` where the engine had views, nested
//! fields included.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};

use crate::Result;

/// The classic form of `ty`; `None` when `ty` holds no view type.
fn classic_type(ty: &DataType) -> Option<DataType> {
    match ty {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::List(f) => classic_field(f).map(DataType::List),
        DataType::LargeList(f) => classic_field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => classic_field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Map(f, sorted) => classic_field(f).map(|f| DataType::Map(f, *sorted)),
        DataType::Struct(fields) => classic_fields(fields).map(DataType::Struct),
        DataType::Dictionary(k, v) => {
            classic_type(v).map(|v| DataType::Dictionary(k.clone(), Box::new(v)))
        }
        _ => None,
    }
}

/// `ty` with classic types in place of view types.
pub(crate) fn classic_data_type(ty: DataType) -> DataType {
    classic_type(&ty).unwrap_or(ty)
}

fn classic_field(field: &FieldRef) -> Option<FieldRef> {
    classic_type(field.data_type()).map(|ty| Arc::new(field.as_ref().clone().with_data_type(ty)))
}

fn classic_fields(fields: &Fields) -> Option<Fields> {
    let changed: Vec<Option<FieldRef>> = fields.iter().map(classic_field).collect();
    if changed.iter().all(Option::is_none) {
        return None;
    }
    Some(
        changed
            .into_iter()
            .zip(fields.iter())
            .map(|(c, f)| c.unwrap_or_else(|| f.clone()))
            .collect(),
    )
}

/// `schema` with classic types in place of view types (the same `Arc` when there are none).
pub(crate) fn classic_schema(schema: &SchemaRef) -> SchemaRef {
    match classic_fields(schema.fields()) {
        None => schema.clone(),
        Some(fields) => Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
    }
}

/// `batch` cast to `schema`, the [`classic_schema`] of its own (columns already of their
/// classic type are kept as they are).
pub(crate) fn to_classic(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Array, AsArray, BinaryViewArray, Int64Array, MapBuilder, StringViewArray, StringViewBuilder,
    };
    use arrow::datatypes::Field;

    #[test]
    fn view_types_become_classic_ones_at_every_depth() {
        let entries = Field::new_struct(
            "entries",
            vec![
                Field::new("keys", DataType::Utf8View, false),
                Field::new("values", DataType::Utf8View, true),
            ],
            false,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, true),
            Field::new_list("l", Field::new_list_field(DataType::Utf8View, true), true),
            Field::new("m", DataType::Map(Arc::new(entries), false), true),
        ]));
        let out = classic_schema(&schema);
        let types: Vec<String> = out
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types[0], "Int64");
        assert_eq!(types[1], "Utf8");
        assert_eq!(types[2], "Binary");
        assert_eq!(types[3], "List(Utf8)");
        assert!(!types[4].contains("View"), "{}", types[4]);
        assert!(types[4].contains("Utf8"), "{}", types[4]);
    }

    #[test]
    fn a_schema_without_views_is_returned_as_is_and_batches_pass_through() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        assert!(Arc::ptr_eq(&classic_schema(&schema), &schema));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::StringArray::from(vec!["a"]))],
        )
        .unwrap();
        let out = to_classic(batch.clone(), &schema).unwrap();
        assert_eq!(out, batch);
    }

    #[test]
    fn batches_are_cast_with_their_values_and_nulls_kept() {
        let mut map = MapBuilder::new(None, StringViewBuilder::new(), StringViewBuilder::new());
        map.keys().append_value("env");
        map.values().append_value("prod");
        map.append(true).unwrap();
        map.append(false).unwrap();
        let map = map.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, true),
            Field::new("m", map.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringViewArray::from(vec![
                    Some("a string longer than twelve bytes"),
                    None,
                ])),
                Arc::new(BinaryViewArray::from(vec![Some(b"xy".as_slice()), None])),
                Arc::new(map),
            ],
        )
        .unwrap();
        let out_schema = classic_schema(&schema);
        let out = to_classic(batch, &out_schema).unwrap();
        assert_eq!(out.schema(), out_schema);
        let s = out.column(1).as_string::<i32>();
        assert_eq!(s.value(0), "a string longer than twelve bytes");
        assert!(s.is_null(1));
        let b = out.column(2).as_binary::<i32>();
        assert_eq!(b.value(0), b"xy");
        assert!(b.is_null(1));
        let m = out.column(3).as_map();
        assert!(m.is_null(1));
        assert_eq!(m.keys().as_string::<i32>().value(0), "env");
        assert_eq!(m.values().as_string::<i32>().value(0), "prod");
    }
}
