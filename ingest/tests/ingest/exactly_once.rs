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
