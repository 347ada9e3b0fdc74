//! The Protobuf form of the event schemas: `.proto` files under `schemas/proto/`, embedded at
//! build time and compiled at run time (protox), so decoding needs no generated code.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::{Error, Result};

const PROTO_FILES: [(&str, &str); 3] = [
    (
        "sakura/v1/telemetry.proto",
        include_str!("../proto/sakura/v1/telemetry.proto"),
    ),
    (
        "sakura/v1/logs.proto",
        include_str!("../proto/sakura/v1/logs.proto"),
    ),
    (
        "sakura/v1/events.proto",
        include_str!("../proto/sakura/v1/events.proto"),
    ),
];

/// The message type of each event schema's Protobuf form.
const MESSAGES: [(&str, &str); 3] = [
    ("telemetry", "sakura.v1.Telemetry"),
    ("logs", "sakura.v1.LogRecord"),
    ("events", "sakura.v1.Event"),
];

struct Embedded;

impl FileResolver for Embedded {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match PROTO_FILES.iter().find(|(n, _)| *n == name) {
            Some((n, source)) => File::from_source(n, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Embedded);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_files(PROTO_FILES.iter().map(|(n, _)| *n))
        .map_err(|e| format!("{e:?}"))?;
    Ok(compiler.descriptor_pool())
});

/// The Protobuf message type of event schema `schema` (e.g. `telemetry` → `sakura.v1.Telemetry`).
pub fn proto_message(schema: &str) -> Result<MessageDescriptor> {
    let pool = POOL.as_ref().map_err(|e| Error::Invalid {
        schema: schema.to_string(),
        message: format!("the embedded .proto files do not compile: {e}"),
    })?;
    let name = MESSAGES
        .iter()
        .find(|(s, _)| *s == schema)
        .map(|(_, m)| *m)
        .ok_or_else(|| Error::UnknownSchema(schema.to_string()))?;
    pool.get_message_by_name(name)
        .ok_or_else(|| Error::Invalid {
            schema: schema.to_string(),
            message: format!("message {name} is not in the embedded .proto files"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_schema_has_a_message_with_the_same_fields() {
        for schema in crate::builtin_schemas().unwrap() {
            let message = proto_message(&schema.name).unwrap();
            for field in &schema.fields {
                assert!(
                    message.get_field_by_name(&field.name).is_some(),
                    "{}: field {} is missing from {}",
                    schema.name,
                    field.name,
                    message.full_name()
                );
            }
            assert_eq!(
                message.fields().count(),
                schema.fields.len(),
                "{}",
                schema.name
            );
        }
    }
}
