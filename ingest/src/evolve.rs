//! Schema evolution, the Delta side: fields found by `decode::new_fields` become Delta columns,
//! and a restarted process reads the added columns back ([`from_delta`]), with a
//! column-metadata mark for JSON-text columns.

use deltalake::kernel::{DataType, MetadataValue, StructField};
use schemas::{FieldDef, FieldType};

/// Delta column metadata key marking how sakura decodes a column it added (`"json"`: JSON
/// text of objects and arrays).
const TYPE_KEY: &str = "sakura.type";

/// The Delta column of an added field.
pub(crate) fn to_delta(f: &FieldDef) -> StructField {
    let ty = match f.ty {
        FieldType::Boolean => DataType::BOOLEAN,
        FieldType::Int64 => DataType::LONG,
        FieldType::Float64 => DataType::DOUBLE,
        _ => DataType::STRING,
    };
    let field = StructField::new(f.name.clone(), ty, true);
    if f.ty == FieldType::Json {
        field.with_metadata([(TYPE_KEY, MetadataValue::String("json".into()))])
    } else {
        field
    }
}

/// An added field read back from a Delta column; `None` for a column sakura would not have
/// added (another type).
pub(crate) fn from_delta(f: &StructField) -> Option<FieldDef> {
    let json = matches!(f.metadata().get(TYPE_KEY), Some(MetadataValue::String(s)) if s == "json");
    let ty = match f.data_type() {
        DataType::Primitive(p) if *p == deltalake::kernel::PrimitiveType::String && json => {
            FieldType::Json
        }
        t if *t == DataType::STRING => FieldType::String,
        t if *t == DataType::LONG => FieldType::Int64,
        t if *t == DataType::DOUBLE => FieldType::Float64,
        t if *t == DataType::BOOLEAN => FieldType::Boolean,
        _ => return None,
    };
    Some(FieldDef {
        name: f.name().clone(),
        ty,
        nullable: true,
        doc: "added by schema evolution".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_fields_survive_the_delta_schema() {
        for ty in [
            FieldType::String,
            FieldType::Int64,
            FieldType::Float64,
            FieldType::Boolean,
            FieldType::Json,
        ] {
            let f = FieldDef {
                name: "x".into(),
                ty,
                nullable: true,
                doc: String::new(),
            };
            let back = from_delta(&to_delta(&f)).unwrap();
            assert_eq!((back.name, back.ty), (f.name.clone(), f.ty));
        }
    }
}
