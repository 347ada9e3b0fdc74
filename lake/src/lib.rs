//! The lake: Delta tables and the other objects Sakura keeps under the storage root (a local
//! directory, or a bucket and prefix on S3 / MinIO).
//!
//! Data enters here from ingest (Parquet files appended together with the Kafka offsets they
//! cover, [`commit_append`]), from jobs (window results that replace what an earlier run wrote,
//! [`replace_where`]) and from SQL `CREATE TABLE AS` / `INSERT` (curated tables, [`create`]).
//! It leaves as loaded [`DeltaTable`]s that the engine scans. Every path under the root is
//! built here ([`paths`]), and every object store is opened here ([`root_store`],
//! [`url_store`]), so a store option (endpoint, path-style, conditional put) applies to all of
//! them alike.

mod error;
pub mod paths;
mod store;
mod table;
mod write;

pub use deltalake::DeltaTable;
pub use error::{Error, Result};
pub use store::{RootStore, root_store, url_store};
pub use table::{arrow_schema, create, list_tables, open, open_or_create, refresh};
pub use write::{Committed, Txn, commit_append, replace_where};
