//! Helpers: producing to the mock cluster, running a pipeline until a condition holds, and
//! reading the tables back with DataFusion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTableBuilder;
use deltalake::datafusion::prelude::SessionContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sakura_ingest::{IngestConfig, IngestStats, KafkaConfig, Pipeline};
use schemas::Storage;
use tokio::sync::watch;

/// Produces `values` (None: a tombstone) to `telemetry`, waiting for every acknowledgement.
pub(crate) async fn produce_values(brokers: &str, values: Vec<Option<Vec<u8>>>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let key = format!("k{}", i % 17);
        let producer = producer.clone();
        pending.push(tokio::spawn(async move {
            let mut record = FutureRecord::<String, Vec<u8>>::to("telemetry").key(&key);
            if let Some(v) = value.as_ref() {
                record = record.payload(v);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

/// Produces events `from..to`; every `bad_every`-th has a string where a number belongs.
pub(crate) async fn produce(brokers: &str, from: usize, to: usize, bad_every: usize) {
    let values = (from..to)
        .map(|i| {
            let v = if bad_every > 0 && i % bad_every == 0 {
                format!(
                    r#"{{"ts":{i},"host":"h","service":"s","metric":"m","value":"not-a-number"}}"#
                )
            } else {
                good(i)
            };
            Some(v.into_bytes())
        })
        .collect();
    produce_values(brokers, values).await;
}

/// A good telemetry event whose value is `i`.
pub(crate) fn good(i: usize) -> String {
    format!(
        r#"{{"ts":{},"host":"h{}","service":"s","metric":"cpu_pct","value":{i}}}"#,
        1_764_374_400_000_000_i64 + i as i64,
        i % 13
    )
}

pub(crate) fn configs(brokers: &str) -> (KafkaConfig, IngestConfig) {
    let kafka = KafkaConfig {
        brokers: brokers.to_string(),
        group_id: "it".into(),
        session_timeout_ms: 6000,
        ..KafkaConfig::default()
    };
    let ingest = IngestConfig {
        topics: [("telemetry".to_string(), "telemetry".into())].into(),
        flush_rows: 2_000,
        flush_age_ms: 300,
        max_message_bytes: 1024,
        ..IngestConfig::default()
    };
    (kafka, ingest)
}

/// Runs a pipeline until `done(stats)` holds, then stops it cleanly.
pub(crate) async fn run_until(
    storage: &Storage,
    brokers: &str,
    done: impl Fn(&IngestStats) -> bool,
) {
    let (kafka, cfg) = configs(brokers);
    let stats = Arc::new(IngestStats::default());
    let pipeline = Pipeline::start(&kafka, &cfg, storage, stats.clone())
        .await
        .unwrap();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(pipeline.run(rx));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&stats) {
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            stats.snapshot()
        );
        assert!(
            !task.is_finished(),
            "pipeline stopped early: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// The first row of `sql` over `raw.<table>` (registered as `t`), every column as an integer.
pub(crate) async fn query(storage: &Storage, table: &str, sql: &str) -> Vec<i64> {
    let url = storage
        .table_url(&schemas::TableRef::new("raw", table))
        .unwrap();
    let mut t = DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
    t.load().await.unwrap();
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", t.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let b = &batches[0];
    (0..b.num_columns())
        .map(|c| {
            deltalake::arrow::compute::cast(
                b.column(c),
                &deltalake::arrow::datatypes::DataType::Int64,
            )
            .unwrap()
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
        })
        .collect()
}
