//! The data contract of Sakura Analytics.
//!
//! In: the versioned schema files under `schemas/v1/*.json` (embedded at build time and parsed
//! here) and their Protobuf form under `schemas/proto/` (compiled at run time). Out: Arrow schemas for decoding events, the full table schemas (event fields plus the
//! ingest columns `_partition`, `_offset` and the `date` partition), the catalog of tables and
//! where each one lives under the storage root.

mod error;
mod layout;
mod proto;
mod schema;
mod tables;

pub use error::{Error, Result};
pub use layout::{Storage, StorageRoot, table_location};
pub use proto::proto_message;
pub use schema::{EventSchema, FieldDef, FieldType};
pub use tables::{
    COL_DATE, COL_OFFSET, COL_PARTITION, TAG_PARTITION, TAG_TOPIC, TableDef, TableKind, TableRef,
    builtin_schemas, builtin_tables, event_schema,
};
