//! The bad-input corpus: at least 100 messages of each of 15 kinds of bad input, mixed into good
//! traffic. Every bad one lands in `raw.dead_letters` with the right kind, every good one in its
//! table, and the pipeline keeps running.

use rdkafka::mocking::MockCluster;
use sakura_ingest::sample_bad_messages;
use schemas::Storage;

use crate::support::{good, produce_values, query, run_until};

const COPIES: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_message_is_a_dead_letter_of_the_right_kind() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("telemetry", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();

    let corpus = sample_bad_messages();
    let mut values = Vec::new();
    let mut goods = 0;
    for _ in 0..COPIES {
        for (_, bad) in &corpus {
            values.push(Some(good(goods).into_bytes()));
            goods += 1;
            values.push(bad.clone());
        }
        values.push(Some(good(goods).into_bytes()));
        goods += 1;
    }
    let total = values.len() as u64;
    produce_values(&brokers, values).await;
    run_until(&storage, &brokers, |s| {
        let s = s.snapshot();
        s.rows_committed + s.dead_letters_committed >= total
    })
    .await;

    assert_eq!(
        query(
            &storage,
            "telemetry",
            "SELECT count(*), count(DISTINCT value) FROM t"
        )
        .await,
        [goods as i64, goods as i64],
        "every good message is stored once"
    );
    let mut kinds = std::collections::BTreeMap::new();
    for (kind, _) in &corpus {
        *kinds.entry(kind.as_str()).or_insert(0) += COPIES as i64;
    }
    assert!(kinds.len() >= 15, "{kinds:?}");
    for (kind, want) in &kinds {
        let got = query(
            &storage,
            "dead_letters",
            &format!("SELECT count(*) FROM t WHERE error_kind = '{kind}'"),
        )
        .await;
        assert_eq!(got, [*want], "dead letters of kind {kind}");
    }
    let all = query(
        &storage,
        "dead_letters",
        "SELECT count(*), count(DISTINCT (_partition, _offset)) FROM t",
    )
    .await;
    let bad_total = (corpus.len() * COPIES) as i64;
    assert_eq!(
        all,
        [bad_total, bad_total],
        "no dead letter lost or duplicated"
    );
    drop(cluster);
}
