//! Copying one store into another: resumable, verified, and exact even
//! while writes keep arriving through the manager.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vectorgate::resync::{ResyncOptions, copy_store};
use vectorgate::{
    DeleteSelector, DynStore, IndexSpec, ManagerConfig, Metric, Record, ScanRequest, VectorManager,
    VectorStore,
};
use vectorgate_testkit::fault::{Fault, FaultyStore, Target};
use vectorgate_testkit::memory::MemoryStore;

fn spec() -> IndexSpec {
    IndexSpec::new(4, Metric::L2)
}

fn record(i: usize, version: f32) -> Record {
    Record {
        id: format!("r{i:06}"),
        team_id: format!("team{}", i % 3),
        dataset_id: "ds".into(),
        collection_id: "c".into(),
        vector: vec![i as f32, version, 0.0, 1.0],
        created_at_ms: 1_700_000_000_000,
        payload: None,
    }
}

async fn filled(name: &str, n: usize) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new(name));
    store.ensure_schema(&spec()).await.unwrap();
    let records: Vec<Record> = (0..n).map(|i| record(i, 0.0)).collect();
    for chunk in records.chunks(1000) {
        store.upsert(chunk).await.unwrap();
    }
    store
}

async fn contents(store: &dyn VectorStore) -> BTreeMap<String, Vec<f32>> {
    vectorgate_testkit::walk::everything(store)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.vector))
        .collect()
}

/// The target holds ids the source holds under another team (it missed a
/// delete and a re-creation by another team): the copy replaces them,
/// since an id belongs to one team and the target would refuse the upsert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_replaces_records_the_target_holds_under_another_team() {
    let from = filled("from", 30).await;
    let to = filled("to", 30).await;
    let mut moved: Vec<Record> = (0..30).step_by(7).map(|i| record(i, 1.0)).collect();
    let ids: Vec<String> = moved.iter().map(|r| r.id.clone()).collect();
    for team in ["team0", "team1", "team2"] {
        from.delete(&DeleteSelector::Ids {
            team_id: team.into(),
            ids: ids.clone(),
        })
        .await
        .unwrap();
    }
    for r in &mut moved {
        r.team_id = "newcomer".into();
    }
    from.upsert(&moved).await.unwrap();

    let options = ResyncOptions {
        page_size: 8,
        ..ResyncOptions::default()
    };
    let report = copy_store(from.as_ref(), to.as_ref(), &options, |_| {})
        .await
        .unwrap();
    assert!(
        report.teams.iter().all(|t| t.source == t.target),
        "{report:?}"
    );
    let teams = |store: Arc<MemoryStore>| async move {
        let page = store
            .scan(&ScanRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        page.records
            .into_iter()
            .map(|r| (r.id, r.team_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(teams(from).await, teams(to).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let source_data = filled("source", 5000).await;
    // Slow pages, as over a network, so the copy can be interrupted midway.
    let source = FaultyStore::wrap(source_data);
    source.target(Target::Reads);
    source.set(Fault::Delay(Duration::from_millis(5)));
    let target = Arc::new(MemoryStore::new("target"));
    target.ensure_schema(&spec()).await.unwrap();
    let options = ResyncOptions {
        page_size: 250,
        checkpoint: Some(dir.path().join("resync.json")),
        ..Default::default()
    };

    // First run: aborted once 2000 records were copied.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = tokio::spawn({
        let (source, target, options) = (source.clone(), target.clone(), options.clone());
        async move {
            copy_store(source.as_ref(), target.as_ref(), &options, |p| {
                let _ = tx.send(p.copied);
            })
            .await
        }
    });
    while let Some(copied) = rx.recv().await {
        if copied >= 2000 {
            first.abort();
            break;
        }
    }
    assert!(first.await.unwrap_err().is_cancelled());
    let partial = target.len();
    assert!(
        (2000..5000).contains(&partial),
        "copied {partial} before the interruption"
    );

    // Second run: picks up after the checkpoint.
    let mut last = None;
    let report = copy_store(source.as_ref(), target.as_ref(), &options, |p| {
        last = Some(p.clone())
    })
    .await
    .unwrap();
    assert_eq!(report.copied, 5000);
    assert!(
        report.copied_now <= 5000 - 2000,
        "resumed, copied {} again",
        report.copied_now
    );
    assert!(report.mismatches().is_empty(), "{:?}", report.teams);
    assert_eq!(report.teams.len(), 3);
    assert!(
        report
            .teams
            .iter()
            .all(|t| t.source == t.target && t.source > 1600)
    );
    let last = last.unwrap();
    assert!(last.done && last.total == 5000);
    assert_eq!(
        contents(source.as_ref()).await,
        contents(target.as_ref()).await
    );

    // A finished checkpoint starts a fresh copy; one of another pair is refused.
    let other = Arc::new(MemoryStore::new("other"));
    other.ensure_schema(&spec()).await.unwrap();
    let mut stale = options.clone();
    stale.checkpoint = Some(dir.path().join("other.json"));
    std::fs::copy(
        dir.path().join("resync.json"),
        dir.path().join("other.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("other.json")).unwrap();
    std::fs::write(
        dir.path().join("other.json"),
        text.replace("\"done\": true", "\"done\": false"),
    )
    .unwrap();
    let error = copy_store(source.as_ref(), other.as_ref(), &stale, |_| {})
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("remove it to start over"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_under_live_writes_ends_identical() {
    let dir = tempfile::tempdir().unwrap();
    let primary = filled("primary", 3000).await;
    let fallback_data = Arc::new(MemoryStore::new("fallback"));
    // A slow target, so writes keep arriving during the copy.
    let fallback = FaultyStore::wrap(fallback_data.clone());
    fallback.target(Target::Writes);
    fallback.set(Fault::Delay(Duration::from_millis(20)));
    let mut config = ManagerConfig::new(spec()).with_journal(dir.path().join("journal.db"));
    config.health.probe_interval_ms = 50;
    let manager = Arc::new(
        VectorManager::start(
            config,
            vec![primary.clone() as DynStore, fallback.clone() as DynStore],
        )
        .await
        .unwrap(),
    );

    let writer = tokio::spawn({
        let manager = manager.clone();
        async move {
            for round in 1..=40 {
                // Overwrite old records, add new ones, delete some.
                let batch: Vec<Record> = (0..20)
                    .map(|i| record((round * 73 + i * 11) % 3000, round as f32))
                    .chain((0..5).map(|i| record(3000 + round * 5 + i, round as f32)))
                    .collect();
                manager.upsert(&batch).await.unwrap();
                manager
                    .delete(&DeleteSelector::Ids {
                        team_id: format!("team{}", round % 3),
                        ids: vec![format!("r{:06}", round * 3 + round % 3)],
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let options = ResyncOptions {
        page_size: 200,
        ..Default::default()
    };
    let report = manager
        .resync("primary", "fallback", &options, |_| {})
        .await
        .unwrap();
    assert!(report.copied >= 3000);
    writer.await.unwrap();

    fallback.set(Fault::None);
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while manager.status().store("fallback").unwrap().lag_entries > 0
        || !manager.status().store("fallback").unwrap().in_sync
    {
        assert!(
            tokio::time::Instant::now() < until,
            "{:?}",
            manager.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!manager.status().store("fallback").unwrap().drained);
    assert_eq!(
        contents(primary.as_ref()).await,
        contents(fallback_data.as_ref()).await,
        "the copy plus the journal replay left the fallback identical"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_an_unfinished_resync_stays_out_of_rotation_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let primary_data = filled("primary", 2000).await;
    let fallback_data = Arc::new(MemoryStore::new("fallback"));
    let config = || {
        let mut config = ManagerConfig::new(spec()).with_journal(&journal);
        config.health.probe_interval_ms = 50;
        config.breaker.open_ms = 100_000;
        config
    };
    let options = ResyncOptions {
        page_size: 100,
        checkpoint: Some(dir.path().join("resync.json")),
        ..Default::default()
    };
    {
        let primary = FaultyStore::wrap(primary_data.clone());
        let fallback = FaultyStore::wrap(fallback_data.clone());
        fallback.target(Target::Writes);
        fallback.set(Fault::Delay(Duration::from_millis(20)));
        let manager = Arc::new(
            VectorManager::start(config(), vec![primary as DynStore, fallback as DynStore])
                .await
                .unwrap(),
        );
        let copy = tokio::spawn({
            let (manager, options) = (manager.clone(), options.clone());
            async move {
                manager
                    .resync("primary", "fallback", &options, |_| {})
                    .await
            }
        });
        while fallback_data.len() < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The process dies in the middle of the copy.
        copy.abort();
        let _ = copy.await;
    }
    assert!(fallback_data.len() < 2000, "the copy was partial");

    let primary = FaultyStore::wrap(primary_data.clone());
    let manager = VectorManager::start(
        config(),
        vec![
            primary.clone() as DynStore,
            fallback_data.clone() as DynStore,
        ],
    )
    .await
    .unwrap();
    let status = manager.status();
    assert!(status.store("fallback").unwrap().resync_pending);
    // With the primary down, the partial copy is not served.
    primary.set(Fault::Fail(vectorgate::ErrorKind::Unavailable));
    let error = manager
        .count(&Default::default())
        .await
        .expect_err("a partial copy must not answer");
    assert!(error.to_string().contains("resync"), "{error}");
    primary.set(Fault::None);
    manager.resume_auto();

    // Running the resync again finishes the copy and lifts the hold.
    let report = manager
        .resync("primary", "fallback", &options, |_| {})
        .await
        .unwrap();
    assert!(report.mismatches().is_empty());
    assert!(!manager.status().store("fallback").unwrap().resync_pending);
    assert_eq!(
        contents(primary_data.as_ref()).await,
        contents(fallback_data.as_ref()).await
    );
    manager.shutdown().await;
}
