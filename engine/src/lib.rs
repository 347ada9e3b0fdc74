//! The query engine: a DataFusion session over the Delta tables.
//!
//! In: the storage root and the table catalog from `schemas`. Out: a `SessionContext` whose
//! catalog `sakura` exposes `raw.telemetry`, `raw.logs`, `raw.events`, `raw.dead_letters` (and
//! the empty `curated` and `ml` schemas later issues fill), each table re-reading the Delta log
//! before a scan so new commits are visible without a restart; and `system.ingest_ledger`, one
//! row per file ingest committed, read from the same logs.

mod access;
mod config;
mod engine;
mod error;
mod ledger;
mod live_table;

pub use access::{Grants, scoped_session};
pub use config::EngineConfig;
pub use engine::{CATALOG, Engine, TableInfo, list_tables};
pub use error::{Error, Result};
pub use ledger::IngestLedger;
pub use live_table::LiveDeltaTable;
