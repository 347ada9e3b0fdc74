use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTableBuilder;
use deltalake::datafusion::prelude::SessionContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sakura_ingest::{IngestConfig, IngestStats, KafkaConfig, Pipeline};
use schemas::Storage;
use tokio::sync::watch;

async fn produce(brokers: &str, from: usize, to: usize, bad_every: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for i in from..to {
        let value = if bad_every > 0 && i % bad_every == 0 {
            format!(r#"{{"ts":{i},"host":"h","service":"s","metric":"m","value":"not-a-number"}}"#)
        } else {
            format!(
                r#"{{"ts":{},"host":"h{}","service":"s","metric":"cpu_pct","value":{i}}}"#,
                1_764_374_400_000_000_i64 + i as i64,
                i % 13
            )
        };
        let key = format!("k{}", i % 17);
        let producer = producer.clone();
        pending.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to("telemetry").key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

fn configs(brokers: &str) -> (KafkaConfig, IngestConfig) {
    let kafka = KafkaConfig {
        brokers: brokers.to_string(),
        group_id: "it".into(),
        session_timeout_ms: 6000,
        ..KafkaConfig::default()
    };
    let ingest = IngestConfig {
        topics: [("telemetry".to_string(), "telemetry".to_string())].into(),
        flush_rows: 2_000,
        flush_age_ms: 300,
        ..IngestConfig::default()
    };
    (kafka, ingest)
}

/// Runs a pipeline until `done(stats)` holds, then stops it cleanly.
async fn run_until(storage: &Storage, brokers: &str, done: impl Fn(&IngestStats) -> bool) {
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

async fn query(storage: &Storage, table: &str, sql: &str) -> Vec<i64> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_neither_loses_nor_duplicates_and_keeps_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("telemetry", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();

    // 5,000 messages, every 50th malformed.
    produce(&brokers, 0, 5_000, 50).await;
    run_until(&storage, &brokers, |s| {
        let s = s.snapshot();
        s.rows_committed + s.dead_letters_committed >= 5_000
    })
    .await;
    assert_eq!(
        query(
            &storage,
            "telemetry",
            "SELECT count(*), count(DISTINCT (_partition, _offset)) FROM t"
        )
        .await,
        [4_900, 4_900]
    );

    // A second process of the same group starts where the first stopped.
    produce(&brokers, 5_000, 8_000, 50).await;
    run_until(&storage, &brokers, |s| {
        let s = s.snapshot();
        s.rows_committed + s.dead_letters_committed >= 3_000
    })
    .await;
    assert_eq!(
        query(
            &storage,
            "telemetry",
            "SELECT count(*), count(DISTINCT (_partition, _offset)), count(DISTINCT value) FROM t"
        )
        .await,
        [7_840, 7_840, 7_840]
    );
    assert_eq!(
        query(&storage, "dead_letters", "SELECT count(*), count(DISTINCT (_partition, _offset)), sum(CASE WHEN error_kind = 'wrong_type' THEN 1 ELSE 0 END) FROM t").await,
        [160, 160, 160]
    );
    drop(cluster);
}
