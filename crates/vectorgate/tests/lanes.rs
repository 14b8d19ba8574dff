//! Read and write lanes ([`vectorgate::layers::LanedStore`]): a store whose
//! writes hang still answers reads, and writes beyond their lane wait.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;
use vectorgate::layers::{LaneLimits, LanedStore};
use vectorgate::{DynStore, IndexSpec, Metric, RecallQuery, Record, VectorStore};
use vectorgate_testkit::fault::{Fault, FaultyStore, Target};
use vectorgate_testkit::memory::MemoryStore;

fn record(i: usize) -> Record {
    Record {
        id: format!("r{i}"),
        team_id: "team".into(),
        dataset_id: "ds".into(),
        collection_id: "c".into(),
        vector: vec![1.0, i as f32, 0.5, 0.25],
        created_at_ms: 1_700_000_000_000 + i as i64,
        payload: None,
    }
}

#[tokio::test(start_paused = true)]
async fn hung_writes_hold_only_the_write_lane() {
    let memory = Arc::new(MemoryStore::new("pg"));
    memory
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap();
    memory.upsert(&[record(1)]).await.unwrap();
    let faulty = FaultyStore::wrap(memory);
    faulty.target(Target::Writes);
    faulty.set(Fault::Hang);
    let laned = LanedStore::new(
        faulty.clone() as DynStore,
        LaneLimits {
            reads: 2,
            writes: 2,
        },
    )
    .unwrap();

    // Two writes hang and fill the write lane.
    let hung: Vec<_> = (0..2)
        .map(|i| {
            let laned = Arc::clone(&laned);
            tokio::spawn(async move { laned.upsert(&[record(10 + i)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(faulty.data_calls(), 2);

    // A third write waits for its lane: it never reaches the store.
    let third = {
        let laned = Arc::clone(&laned);
        tokio::spawn(async move { laned.upsert(&[record(20)]).await })
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!third.is_finished());
    assert_eq!(
        faulty.data_calls(),
        2,
        "the third write is held in front of the store"
    );

    // Reads have their own lane and answer at once.
    let query = RecallQuery {
        team_id: "team".into(),
        dataset_ids: vec!["ds".into()],
        vector: vec![1.0, 1.0, 0.5, 0.25],
        limit: 3,
        ..Default::default()
    };
    let hits = tokio::time::timeout(Duration::from_millis(1), laned.recall(&query))
        .await
        .expect("a read waits for no write")
        .unwrap();
    assert_eq!(hits.len(), 1);

    // Once a hung write is given up (its caller's timeout), its slot frees.
    hung[0].abort();
    faulty.set(Fault::None);
    tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("the waiting write got the freed slot")
        .unwrap()
        .unwrap();
    for task in hung {
        task.abort();
    }
}
