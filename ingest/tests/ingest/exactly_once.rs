use rdkafka::mocking::MockCluster;
use schemas::Storage;

use crate::support::{produce, query, run_until};

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

/// One window of partition 0 of `telemetry`, offsets `from..to`.
fn window(from: usize, to: usize) -> std::sync::Arc<sakura_ingest::TopicMessages> {
    let topic: std::sync::Arc<str> = "telemetry".into();
    let messages = (from..to)
        .map(|i| sakura_ingest::RawMessage {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            key: None,
            value: Some(crate::support::good(i).into_bytes().into()),
        })
        .collect();
    std::sync::Arc::new([((topic, 0), messages)].into())
}

/// Two writers of one table (a partition that moved between members while the old owner still
/// held messages): each sees what the other committed, even when it had just committed itself
/// and already knows the stored offsets of its own last version (ADR 0003, addendum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_partition_store_each_offset_once() {
    use sakura_ingest::{IngestConfig, IngestStats, Writer};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cfg = IngestConfig {
        topics: [("telemetry".to_string(), "telemetry".into())].into(),
        ..IngestConfig::default()
    };
    let topic: Arc<str> = "telemetry".into();
    let (a_stats, b_stats) = (
        Arc::new(IngestStats::default()),
        Arc::new(IngestStats::default()),
    );
    let mut a = Writer::open(&cfg, &storage, a_stats.clone()).await.unwrap();
    let mut b = Writer::open(&cfg, &storage, b_stats.clone()).await.unwrap();

    // A stores 0..10 and 10..20: its second flush takes the stored offset from what it knows.
    assert_eq!(
        a.write(&topic, window(0, 10)).await.unwrap()[&(topic.clone(), 0)],
        9
    );
    assert_eq!(
        a.write(&topic, window(10, 20)).await.unwrap()[&(topic.clone(), 0)],
        19
    );
    // B re-reads 0..40 from an older committed position: only 20..40 are new.
    assert_eq!(
        b.write(&topic, window(0, 40)).await.unwrap()[&(topic.clone(), 0)],
        39
    );
    // A, still holding 20..50, must see B's commit and store only 40..50.
    assert_eq!(
        a.write(&topic, window(20, 50)).await.unwrap()[&(topic.clone(), 0)],
        49
    );
    // Nothing new for B any more.
    assert!(b.write(&topic, window(30, 50)).await.unwrap().is_empty());

    assert_eq!(
        query(
            &storage,
            "telemetry",
            "SELECT count(*), count(DISTINCT _offset), min(_offset), max(_offset) FROM t"
        )
        .await,
        [50, 50, 0, 49]
    );
    let skipped = a_stats.snapshot().messages_skipped + b_stats.snapshot().messages_skipped;
    assert_eq!(skipped, 20 + 20 + 20);
}
