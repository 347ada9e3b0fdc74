//! The query engine: a DataFusion session over the Delta tables.
//!
//! In: the storage root and the table catalog from `schemas`. Out: a `SessionContext` whose
//! catalog `sakura` exposes `raw.telemetry`, `raw.logs`, `raw.events`, `raw.dead_letters` (and
//! `curated.*` (tables SQL creates and appends to), the empty `ml` schema a later issue fills,
//! each table re-reading the Delta log before a scan so new commits are visible without a
//! restart; and `system.ingest_ledger`, one row per file ingest committed, read from the same
//! logs.

mod access;
mod anomaly;
mod bounded;
mod config;
mod coop;
mod curated;
mod detect;
mod distinct;
mod engine;
mod error;
mod file_index;
mod functions;
mod ledger;
mod live_table;
mod models;
mod shape;

pub use access::{CLIENT_SETTINGS, Grants, pattern_matches, scoped_session};
pub use anomaly::DETECTORS;
pub use config::EngineConfig;
pub use curated::CURATED;
pub use detect::{DetectRequest, ScoreRange, detect, output_schema as detect_schema};
pub use engine::{CATALOG, Engine, TableInfo, list_tables};
pub use error::{Error, Result};
pub use ledger::IngestLedger;
pub use live_table::{LiveDeltaTable, open_table};
pub use models::{ModelRegistry, Pin};
pub use shape::{ShapeError, ShapeLimits, check_shape};
