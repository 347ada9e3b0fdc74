//! The engine's SQL surface, as sqllogictest files (`engine/tests/sql/*.slt`), the way
//! DataFusion tests its own: each file runs against a fresh engine over a lake in a temporary
//! directory that holds a few rows of `raw.telemetry` (two files: host `a` on 2025-11-29,
//! host `b` on 2025-11-30), in the view of the role the file is named for.
//!
//! `SLT_COMPLETE=1 cargo nextest run -p sakura-engine --test sql` writes the engine's actual
//! results into the files (review the diff before committing it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use decode::{Bytes, DecodeLimits, EventDecoder, Format, RawMessage};
use sakura_engine::{Engine, EngineConfig, Grants};
use schemas::{Storage, TableDef};
use sqllogictest::{DBOutput, DefaultColumnType, Runner};

/// One session as a sqllogictest database: queries run read-only, as over Flight SQL.
struct Session(SessionContext);

#[async_trait]
impl sqllogictest::AsyncDB for Session {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let df = self
            .0
            .sql_with_options(sql, sakura_engine::read_only())
            .await?;
        let columns = df.schema().fields().len();
        let batches = df.collect().await?;
        if columns == 0 {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sakura"
    }
}

/// Cells as text: NULL for a null, (empty) for an empty string.
fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() { "(empty)".into() } else { s }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// `n` telemetry rows of `host` on `day` (2025-11-29 + day), one Delta commit (one file).
async fn write_telemetry(storage: &Storage, host: &str, service: &str, day: i64, n: i64) {
    let schema = schemas::event_schema("telemetry").unwrap();
    let def = TableDef::for_events(schema.clone());
    let decoder = EventDecoder::new(schema, DecodeLimits::default(), Format::Json).unwrap();
    let start_us = 1_764_374_400_000_000 + day * 86_400_000_000;
    let messages: Vec<RawMessage> = (0..n)
        .map(|i| RawMessage {
            topic: "telemetry".into(),
            partition: 0,
            offset: day * 1000 + i,
            key: None,
            value: Some(Bytes::from(
                serde_json::json!({
                    "ts": start_us + i * 60_000_000,
                    "host": host,
                    "service": service,
                    "region": "eu",
                    "metric": "cpu_pct",
                    "value": if i == n - 1 { 95.0 } else { 10.0 + (i % 3) as f64 },
                })
                .to_string(),
            )),
        })
        .collect();
    let decoded = decoder.decode(&messages).unwrap();
    assert!(
        decoded.dead_letters.is_empty(),
        "{:?}",
        decoded.dead_letters
    );
    let table = lake::open_or_create(storage, &def).await.unwrap();
    table.write(vec![decoded.batch.unwrap()]).await.unwrap();
}

/// Runs `file` against a fresh engine in the view `grants` allow (`None`: the engine's own
/// session, as an admin sees it).
async fn run(file: &str, grants: Option<Grants>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    write_telemetry(&storage, "a", "payments", 0, 10).await;
    write_telemetry(&storage, "b", "search", 1, 10).await;
    let cfg = EngineConfig {
        refresh_interval_ms: 0,
        target_partitions: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(storage, &cfg).await.unwrap();
    let ctx = match grants {
        Some(g) => engine.scoped(&g).await.unwrap(),
        None => engine.session().clone(),
    };
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sql", file]
        .iter()
        .collect();
    let mut runner = Runner::new(move || {
        let ctx = ctx.clone();
        async move { Ok(Session(ctx)) }
    });
    if std::env::var_os("SLT_COMPLETE").is_some() {
        runner
            .update_test_file(
                &path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .unwrap();
    } else if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}", e.display(false));
    }
}

/// A reader of `raw.telemetry` limited to the `payments` service, and of nothing else.
fn payments_reader() -> Grants {
    let mut tables = std::collections::BTreeMap::new();
    tables.insert(
        ("raw".to_string(), "telemetry".to_string()),
        Some("service = 'payments'".to_string()),
    );
    Grants {
        tables,
        write: Vec::new(),
        settings: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions() {
    run("functions.slt", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_score() {
    run("anomaly_score.slt", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_anomalies_errors() {
    run("detect_anomalies.slt", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables() {
    run("system_tables.slt", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_views_of_a_row_filtered_reader() {
    run("rbac_reader.slt", Some(payments_reader())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_pruned_files() {
    run("pruning.slt", None).await;
}
