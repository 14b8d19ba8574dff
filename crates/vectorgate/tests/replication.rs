//! The journaled write pipeline and the replicators, in real time, over
//! in-memory stores behind the fault-injecting wrapper.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vectorgate::manager::config::ReplicationMode;
use vectorgate::{
    DeleteSelector, DynStore, Error, ErrorKind, IndexSpec, ManagerConfig, Metric, RecallQuery,
    Record, VectorManager, VectorStore,
};
use vectorgate_testkit::fault::{Fault, FaultyStore, Target};
use vectorgate_testkit::memory::MemoryStore;

const DIM: u32 = 4;

fn spec() -> IndexSpec {
    IndexSpec::new(DIM, Metric::Cosine)
}

fn record(team: &str, i: usize) -> Record {
    Record {
        id: format!("{team}-r{i}"),
        team_id: team.into(),
        dataset_id: "ds".into(),
        collection_id: format!("c{}", i % 3),
        vector: vec![1.0, i as f32, 0.5, 0.25],
        created_at_ms: 1_700_000_000_000 + i as i64,
        payload: None,
    }
}

/// Fast timings so tests take a second or two, not the production defaults.
fn config(journal: &Path, mode: ReplicationMode) -> ManagerConfig {
    let mut config = ManagerConfig::new(spec()).with_journal(journal);
    config.replication.mode = mode;
    config.replication.catchup_wait_ms = 2000;
    config.health.probe_interval_ms = 50;
    config.health.probe_timeout_ms = 200;
    config.breaker.open_ms = 200;
    config.retry.attempt_timeout_ms = 300;
    config.retry.deadline_ms = 2000;
    config.retry.max_delay_ms = 50;
    config
}

struct Rig {
    manager: Arc<VectorManager>,
    primary: Arc<FaultyStore>,
    fallback: Arc<FaultyStore>,
    primary_data: Arc<MemoryStore>,
    fallback_data: Arc<MemoryStore>,
}

async fn start(
    config: ManagerConfig,
    primary_data: Arc<MemoryStore>,
    fallback_data: Arc<MemoryStore>,
) -> Rig {
    let primary = FaultyStore::wrap(primary_data.clone());
    let fallback = FaultyStore::wrap(fallback_data.clone());
    let manager = VectorManager::start(
        config,
        vec![primary.clone() as DynStore, fallback.clone() as DynStore],
    )
    .await
    .unwrap();
    Rig {
        manager: Arc::new(manager),
        primary,
        fallback,
        primary_data,
        fallback_data,
    }
}

async fn rig(journal: &Path, mode: ReplicationMode) -> Rig {
    rig_with(config(journal, mode)).await
}

async fn rig_with(config: ManagerConfig) -> Rig {
    start(
        config,
        Arc::new(MemoryStore::new("primary")),
        Arc::new(MemoryStore::new("fallback")),
    )
    .await
}

async fn ids(store: &dyn VectorStore) -> BTreeSet<String> {
    vectorgate_testkit::walk::ids(store, None).await.unwrap()
}

/// Polls until `check` holds, failing after `secs` seconds.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

fn query(team: &str) -> RecallQuery {
    RecallQuery {
        team_id: team.into(),
        dataset_ids: vec!["ds".into()],
        vector: vec![1.0, 1.0, 0.5, 0.25],
        limit: 1000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_writes_reach_the_fallback_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    for chunk in (0..300)
        .map(|i| record("t", i))
        .collect::<Vec<_>>()
        .chunks(50)
    {
        rig.manager.upsert(chunk).await.unwrap();
    }
    // The serving store has them at acknowledgement time.
    assert_eq!(rig.primary_data.len(), 300);
    eventually(5, "the fallback catches up", async || {
        rig.fallback_data.len() == 300
    })
    .await;
    assert_eq!(
        ids(&*rig.primary_data).await,
        ids(&*rig.fallback_data).await
    );
    let status = rig.manager.status();
    assert_eq!(status.committed_seq, 6);
    assert_eq!(status.replication, "async");
    eventually(5, "lag reported as zero", async || {
        rig.manager
            .status()
            .stores
            .iter()
            .all(|s| s.lag_entries == 0 && s.in_sync)
    })
    .await;
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_caught_up_and_traffic_returns_only_at_zero_lag() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.manager
        .upsert(&(0..100).map(|i| record("a", i)).collect::<Vec<_>>())
        .await
        .unwrap();
    rig.manager
        .upsert(&(0..100).map(|i| record("b", i)).collect::<Vec<_>>())
        .await
        .unwrap();
    eventually(5, "fallback in sync", async || {
        rig.fallback_data.len() == 200
    })
    .await;

    // Primary goes down: writes and deletes keep being acknowledged.
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    for i in 100..400 {
        rig.manager.upsert(&[record("a", i)]).await.unwrap();
    }
    let deleted = rig
        .manager
        .delete(&DeleteSelector::Ids {
            team_id: "a".into(),
            ids: (0..50).map(|i| format!("a-r{i}")).collect(),
        })
        .await
        .unwrap();
    assert_eq!(
        deleted, 50,
        "the delete count comes from the store that served it"
    );
    rig.manager
        .delete(&DeleteSelector::Scope {
            team_id: "b".into(),
            dataset_ids: vec!["ds".into()],
            collection_ids: Some(vec!["c0".into()]),
        })
        .await
        .unwrap();
    assert_eq!(rig.manager.status().active.as_deref(), Some("fallback"));
    let primary_lag = rig.manager.status().store("primary").unwrap().lag_entries;
    assert!(primary_lag >= 302, "primary lags {primary_lag} entries");
    // Reads are answered meanwhile, with every acknowledged write.
    assert_eq!(rig.manager.recall(&query("a")).await.unwrap().len(), 350);

    // Recovery: the primary replays its backlog before it serves again.
    let mut updates = rig.manager.subscribe();
    rig.primary.set(Fault::None);
    let watcher = tokio::spawn(async move {
        loop {
            if updates.changed().await.is_err() {
                return false;
            }
            let status = updates.borrow_and_update().clone();
            if status.active.as_deref() == Some("primary") {
                let primary = status.store("primary").unwrap();
                return primary.lag_entries == 0 && primary.in_sync;
            }
        }
    });
    eventually(10, "traffic returns to the primary", async || {
        rig.manager.status().active.as_deref() == Some("primary")
    })
    .await;
    assert!(
        watcher.await.unwrap(),
        "primary became active only with zero lag"
    );

    let expected: BTreeSet<String> = (50..400)
        .map(|i| format!("a-r{i}"))
        .chain((0..100).filter(|i| i % 3 != 0).map(|i| format!("b-r{i}")))
        .collect();
    assert_eq!(
        ids(&*rig.primary_data).await,
        expected,
        "primary got every write and delete"
    );
    assert_eq!(ids(&*rig.fallback_data).await, expected);
    assert_eq!(
        rig.manager
            .recall_routed(&query("a"))
            .await
            .unwrap()
            .served_by,
        "primary"
    );
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answers_reads_only_after_applying_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.manager.upsert(&[record("t", 0)]).await.unwrap();
    eventually(5, "fallback in sync", async || rig.fallback_data.len() == 1).await;
    // The fallback's writes become slow: its replica lags behind.
    rig.fallback.target(Target::Writes);
    rig.fallback.set(Fault::Delay(Duration::from_millis(250)));
    rig.manager
        .upsert(&(1..20).map(|i| record("t", i)).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(rig.fallback_data.len() < 20, "the replica is still behind");
    // Now the primary dies; the very next read is served by the fallback,
    // which first applies what it missed.
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    let routed = rig.manager.recall_routed(&query("t")).await.unwrap();
    assert_eq!(routed.served_by, "fallback");
    assert_eq!(
        routed.value.len(),
        20,
        "read-your-writes across the failover"
    );
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_the_serving_store_reaches_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.manager.upsert(&[record("t", 0)]).await.unwrap();
    rig.primary.target(Target::Writes);
    rig.primary.fail_next(1, ErrorKind::InvalidInput);
    let error = rig.manager.upsert(&[record("t", 1)]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    rig.manager.upsert(&[record("t", 2)]).await.unwrap();
    eventually(5, "fallback in sync", async || {
        rig.manager.status().store("fallback").unwrap().lag_entries == 0
    })
    .await;
    let expected: BTreeSet<String> = ["t-r0", "t-r2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(ids(&*rig.primary_data).await, expected);
    assert_eq!(
        ids(&*rig.fallback_data).await,
        expected,
        "the refused write was never replicated"
    );
    let status = rig.manager.status();
    assert_eq!(
        status.store("primary").unwrap().consecutive_failures,
        0,
        "not a store failure"
    );
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_replica_keeps_refusing_go_to_dead_letters_and_can_be_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir.path().join("journal.db"), ReplicationMode::Async);
    config.replication.dead_letter_after = 3;
    let rig = start(
        config,
        Arc::new(MemoryStore::new("primary")),
        Arc::new(MemoryStore::new("fallback")),
    )
    .await;
    rig.fallback.target(Target::Writes);
    rig.fallback.set(Fault::Fail(ErrorKind::InvalidInput));
    rig.manager.upsert(&[record("t", 0)]).await.unwrap();
    eventually(10, "a dead letter", async || {
        rig.manager.status().store("fallback").unwrap().dead_letters == 1
    })
    .await;
    rig.fallback.set(Fault::None);
    rig.manager.upsert(&[record("t", 1)]).await.unwrap();
    eventually(5, "later entries still replicate", async || {
        rig.fallback_data.len() == 1
    })
    .await;
    assert_eq!(
        ids(&*rig.fallback_data).await,
        ["t-r1".to_string()].into_iter().collect()
    );

    assert_eq!(
        rig.manager.redrive_dead_letters("fallback").await.unwrap(),
        (1, 0)
    );
    assert_eq!(rig.fallback_data.len(), 2);
    assert_eq!(
        rig.manager.status().store("fallback").unwrap().dead_letters,
        0
    );
    rig.manager.shutdown().await;
}

/// A re-drive replays the journal from the store's oldest dead letter, over
/// a state that already holds later entries, and ids change hands in
/// between (an upsert by t0, t0's delete, t2's upsert of the same id). The
/// re-driven entry itself and an entry applied before are then refused as
/// take-overs of ids that later entries gave to t2: those records are left
/// to the later entries and the rest is applied, so the store ends as the
/// journal's order says, with no new dead letter. Found by the fault model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_replays_over_ids_that_changed_team_without_new_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir.path().join("journal.db"), ReplicationMode::Async);
    config.replication.dead_letter_after = 2;
    let rig = rig_with(config).await;
    rig.fallback.target(Target::Writes);
    rig.fallback.set(Fault::Fail(ErrorKind::InvalidInput));
    // The entry the fallback refuses: r0 stays t0's, r2 changes hands later.
    rig.manager
        .upsert(&[record("t0", 0), record("t0", 2)])
        .await
        .unwrap();
    eventually(10, "a dead letter", async || {
        rig.manager.status().store("fallback").unwrap().dead_letters == 1
    })
    .await;
    rig.fallback.set(Fault::None);

    // r1 (applied by both stores) and r2 move from t0 to t2.
    rig.manager.upsert(&[record("t0", 1)]).await.unwrap();
    for n in [1, 2] {
        let mut moved = record("t0", n);
        rig.manager
            .delete(&DeleteSelector::Ids {
                team_id: "t0".into(),
                ids: vec![moved.id.clone()],
            })
            .await
            .unwrap();
        moved.team_id = "t2".into();
        rig.manager
            .upsert(std::slice::from_ref(&moved))
            .await
            .unwrap();
    }
    eventually(5, "the fallback applied the moves", async || {
        rig.fallback_data.len() == 2
    })
    .await;

    assert_eq!(
        rig.manager.redrive_dead_letters("fallback").await.unwrap(),
        (1, 0),
        "the re-driven entry applies, without the id a later entry gave to t2"
    );
    assert_eq!(
        rig.manager.status().store("fallback").unwrap().dead_letters,
        0
    );
    for store in [&rig.primary_data, &rig.fallback_data] {
        let owners: Vec<(String, String)> = vectorgate_testkit::walk::everything(store.as_ref())
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.team_id))
            .collect();
        assert_eq!(
            owners,
            vec![
                ("t0-r0".to_string(), "t0".to_string()),
                ("t0-r1".to_string(), "t2".to_string()),
                ("t0-r2".to_string(), "t2".to_string()),
            ]
        );
    }
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_replays_what_each_store_missed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let primary_data = Arc::new(MemoryStore::new("primary"));
    let fallback_data = Arc::new(MemoryStore::new("fallback"));
    {
        let rig = start(
            config(&journal, ReplicationMode::Async),
            primary_data.clone(),
            fallback_data.clone(),
        )
        .await;
        rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
        for i in 0..50 {
            rig.manager.upsert(&[record("t", i)]).await.unwrap();
        }
        assert_eq!(primary_data.len(), 0);
        // No shutdown: the manager is dropped as a crash would leave it.
    }
    let rig = start(
        config(&journal, ReplicationMode::Async),
        primary_data.clone(),
        fallback_data.clone(),
    )
    .await;
    eventually(10, "the primary replays the journal", async || {
        primary_data.len() == 50
    })
    .await;
    assert_eq!(ids(&*primary_data).await, ids(&*fallback_data).await);
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_acknowledges_after_every_healthy_store_applied() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Sync).await;
    for i in 0..20 {
        rig.manager.upsert(&[record("t", i)]).await.unwrap();
        assert_eq!(
            rig.fallback_data.len(),
            i + 1,
            "the fallback has it at acknowledgement"
        );
    }
    // A store that is down does not block acknowledgements; it catches up later.
    rig.fallback.set(Fault::Fail(ErrorKind::Unavailable));
    rig.manager.upsert(&[record("t", 20)]).await.unwrap();
    rig.fallback.set(Fault::None);
    eventually(10, "the fallback catches up", async || {
        rig.fallback_data.len() == 21
    })
    .await;
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_outage_reports_unavailable_and_leaves_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    rig.fallback.set(Fault::Fail(ErrorKind::Unavailable));
    let error = rig.manager.upsert(&[record("t", 7)]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(error.to_string().contains("nothing was written"), "{error}");
    rig.primary.set(Fault::None);
    rig.fallback.set(Fault::None);
    eventually(10, "both stores are back in sync", async || {
        let status = rig.manager.status();
        status
            .stores
            .iter()
            .all(|s| s.in_sync && s.lag_entries == 0)
    })
    .await;
    assert_eq!(
        rig.primary_data.len(),
        0,
        "a failed write is never applied later"
    );
    assert_eq!(
        rig.fallback_data.len(),
        0,
        "a failed write is never applied later"
    );
    // The caller's retry is the only copy.
    rig.manager.upsert(&[record("t", 7)]).await.unwrap();
    eventually(10, "both stores apply the retry", async || {
        rig.primary_data.len() == 1 && rig.fallback_data.len() == 1
    })
    .await;
    rig.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let manager = rig.manager.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                manager
                    .upsert(&[record(&format!("w{w}"), i)])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(rig.manager.status().committed_seq, 400);
    eventually(5, "fallback identical", async || {
        rig.fallback_data.len() == 400
    })
    .await;
    assert_eq!(
        ids(&*rig.primary_data).await,
        ids(&*rig.fallback_data).await
    );
    rig.manager.shutdown().await;
    assert_eq!(rig.manager.running_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.manager.shutdown().await;
    let error = rig.manager.upsert(&[record("t", 1)]).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_is_replayed_in_bounded_steps_without_tripping_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir.path().join("journal.db"), ReplicationMode::Async);
    // Probes would reset the failure count; keep them out of the picture so
    // only the replicator's own outcomes feed the breaker.
    config.health.probe_interval_ms = 600_000;
    let rig = start(
        config,
        Arc::new(MemoryStore::new("primary")),
        Arc::new(MemoryStore::new("fallback")),
    )
    .await;
    rig.manager.drain("primary").unwrap();
    for b in 0..30 {
        let batch: Vec<Record> = (0..1000).map(|i| record("t", b * 1000 + i)).collect();
        rig.manager.upsert(&batch).await.unwrap();
    }
    // The primary comes back slow: 300 ms per write call, so replaying the
    // 30 chunks takes ~9 s, four times the 2 s bound of one replicator step.
    rig.primary.target(Target::Writes);
    rig.primary.set(Fault::Delay(Duration::from_millis(300)));
    let mut updates = rig.manager.subscribe();
    let watcher = tokio::spawn(async move {
        let mut reopened = false;
        while updates.changed().await.is_ok() {
            let status = updates.borrow_and_update().clone();
            reopened |=
                status.store("primary").unwrap().breaker != vectorgate::BreakerState::Closed;
        }
        reopened
    });
    rig.manager.resume_auto();
    eventually(30, "the primary replays 30k records", async || {
        rig.primary_data.len() == 30_000
    })
    .await;
    let primary = rig.manager.status().store("primary").unwrap().clone();
    assert_eq!(primary.breaker, vectorgate::BreakerState::Closed);
    assert_eq!(primary.consecutive_failures, 0);
    rig.manager.shutdown().await;
    drop(Arc::try_unwrap(rig.manager).unwrap());
    assert!(
        !watcher.await.unwrap(),
        "catching up was never taken for a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_when_shutdown_begins_are_applied_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(&dir.path().join("journal.db"), ReplicationMode::Async).await;
    rig.primary.target(Target::Writes);
    rig.primary.set(Fault::Delay(Duration::from_millis(150)));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let manager = rig.manager.clone();
            tokio::spawn(async move { manager.upsert(&[record("q", i)]).await })
        })
        .collect();
    // Every write is in the pipeline (the first group is being applied).
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.manager.shutdown().await;
    for writer in writers {
        writer
            .await
            .unwrap()
            .expect("an accepted write is applied during shutdown");
    }
    assert_eq!(rig.primary_data.len(), 16);
}
