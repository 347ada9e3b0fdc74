//! The query engine: one DataFusion session over the lake's Delta tables.
//!
//! In: the storage root (tables are opened through the `lake` crate) and the table catalog of
//! `schemas`. Out: a `SessionContext` whose catalog `sakura` holds `raw.*` (what ingest writes),
//! `curated.*` (what SQL `CREATE TABLE AS` / `INSERT` and jobs write), `ml.*` (anomalies) and
//! `system.*` (the ingest ledger, read from the same logs); each table re-reads its Delta log
//! before a scan when its view is older than `engine.refresh_interval_ms`, so new commits are
//! visible without a restart. Also: the SQL functions of anomaly detection (`anomaly_score`,
//! `detect_anomalies`, over the model registry), a caller's scoped view (grants, row filters,
//! settings), and the checks that keep one statement from ending the server (its shape before
//! planning, what its values may allocate).

mod access;
mod anomaly;
mod bounded;
mod computed;
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

pub use access::{CLIENT_SETTINGS, Grants, pattern_matches, read_only, scoped_session};
pub use anomaly::DETECTORS;
pub use computed::{ComputedRows, ComputedTable};
pub use config::EngineConfig;
pub use curated::CURATED;
pub use detect::{DetectRequest, ScoreRange, detect, output_schema as detect_schema};
pub use engine::{CATALOG, Engine, TableInfo, list_tables};
pub use error::{Error, Result};
pub use ledger::IngestLedger;
pub use live_table::LiveDeltaTable;
pub use models::{ModelRegistry, Pin};
pub use shape::{ShapeError, ShapeLimits, check_shape};
