//! Failover with real processes: a manager over [PostgreSQL, embedded]
//! while PostgreSQL is killed with SIGKILL and started again.
//!
//! These tests kill the shared PostgreSQL server, so their names start with
//! `chaos_`: the test command runs them after all others, one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use vectorgate::{
    CountScope, DeleteSelector, DynStore, IndexSpec, ManagerConfig, Metric, RecallQuery, Record,
    VectorManager, VectorStore,
};
use vectorgate_integration::{
    RestartOnDrop, embedded, eventually, ids, kill_postgres, service_url, services,
};
use vectorgate_pg::{PgConfig, PgStore};

const DIM: usize = 16;
const TEAMS: usize = 4;

fn spec() -> IndexSpec {
    IndexSpec::new(DIM as u32, Metric::Cosine)
}

fn record(id: String, team: usize, i: usize) -> Record {
    Record {
        id,
        team_id: format!("team{team}"),
        dataset_id: format!("ds{}", i % 2),
        collection_id: "c".into(),
        vector: (0..DIM)
            .map(|d| ((i * 31 + d * 7) % 17) as f32 + 1.0)
            .collect(),
        created_at_ms: 0,
        payload: None,
    }
}

fn query(team: usize) -> RecallQuery {
    RecallQuery {
        team_id: format!("team{team}"),
        dataset_ids: vec!["ds0".into(), "ds1".into()],
        vector: (0..DIM).map(|d| d as f32 + 1.0).collect(),
        limit: 10,
        ..Default::default()
    }
}

/// Short timings, so a test sees detection, failover and failback in seconds.
fn config(journal: &std::path::Path) -> ManagerConfig {
    let mut config = ManagerConfig::new(spec()).with_journal(journal);
    config.health.probe_interval_ms = 200;
    config.health.probe_timeout_ms = 500;
    config.breaker.open_ms = 1000;
    config.retry.attempt_timeout_ms = 1000;
    config
}

async fn pg_store(url: &str, table: &str) -> Arc<PgStore> {
    let mut config = PgConfig::new("postgres", url).with_table(table);
    config.connect_timeout_ms = 1000;
    config.acquire_timeout_ms = 1000;
    Arc::new(PgStore::connect(config).await.unwrap())
}

/// A manager over [PostgreSQL (its own table), embedded] with a journal.
struct Rig {
    _dir: tempfile::TempDir,
    pg: Arc<PgStore>,
    local: Arc<vectorgate_embedded::EmbeddedStore>,
    manager: Arc<VectorManager>,
}

impl Rig {
    async fn start(url: &str, name: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pg = pg_store(url, &format!("vgt_{name}_{}", std::process::id())).await;
        let local = embedded(dir.path(), "embedded", &spec()).await;
        let manager = VectorManager::start(
            config(&dir.path().join("journal.db")),
            vec![pg.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap();
        Rig {
            _dir: dir,
            pg,
            local,
            manager: Arc::new(manager),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres_killed_during_recalls_no_recall_fails() {
    let Some(url) = service_url("VECTORGATE_TEST_PG_URL") else {
        return;
    };
    let _restart = RestartOnDrop("postgres");
    let rig = Rig::start(&url, "chaos_recall").await;
    let (pg, manager) = (rig.pg.clone(), rig.manager.clone());
    let records: Vec<Record> = (0..400)
        .map(|i| record(format!("r{i}"), i % TEAMS, i))
        .collect();
    for chunk in records.chunks(100) {
        manager.upsert(chunk).await.unwrap();
    }
    eventually(
        20,
        "both stores in sync",
        async || {
            manager
                .status()
                .stores
                .iter()
                .all(|s| s.in_sync && s.lag_entries == 0)
        },
        || format!("{:?}", manager.status()),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let client = tokio::spawn({
        let (manager, stop, failed, served) = (
            manager.clone(),
            stop.clone(),
            failed.clone(),
            served.clone(),
        );
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match manager.recall_routed(&query(i % TEAMS)).await {
                    Ok(routed) => {
                        assert_eq!(routed.value.len(), 10, "a full answer");
                        *served.lock().await.entry(routed.served_by).or_default() += 1;
                    }
                    Err(error) => {
                        eprintln!("recall failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    kill_postgres();
    eventually(
        10,
        "the embedded store to become active",
        async || manager.status().active.as_deref() == Some("embedded"),
        || format!("{:?}", manager.status()),
    )
    .await;
    assert_eq!(
        manager.recall_routed(&query(0)).await.unwrap().served_by,
        "embedded"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    services("up", "postgres");
    eventually(
        30,
        "traffic back on PostgreSQL",
        async || manager.status().active.as_deref() == Some("postgres"),
        || format!("{:?}", manager.status()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();

    let served = served.lock().await.clone();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no recall failed; served by {served:?}"
    );
    assert!(
        served.get("embedded").copied().unwrap_or(0) > 10,
        "the fallback answered during the outage: {served:?}"
    );
    assert!(
        served.get("postgres").copied().unwrap_or(0) > 10,
        "{served:?}"
    );
    assert_eq!(
        manager.recall_routed(&query(1)).await.unwrap().served_by,
        "postgres"
    );
    manager.shutdown().await;
    pg.drop_table().await.unwrap();
}

/// What the writers were told: acknowledged upserts and deletes, per team.
#[derive(Default)]
struct Ledger {
    written: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres_killed_under_mixed_load_loses_no_acknowledged_write() {
    let Some(url) = service_url("VECTORGATE_TEST_PG_URL") else {
        return;
    };
    let _restart = RestartOnDrop("postgres");
    let rig = Rig::start(&url, "chaos_mixed").await;
    let (pg, local, manager) = (rig.pg.clone(), rig.local.clone(), rig.manager.clone());

    // Watch for the moment traffic returns to PostgreSQL: its lag must be zero then.
    let mut updates = manager.subscribe();
    let failback = tokio::spawn(async move {
        let mut left = false;
        while updates.changed().await.is_ok() {
            let status = updates.borrow_and_update().clone();
            match status.active.as_deref() {
                Some("embedded") => left = true,
                Some("postgres") if left => {
                    let pg = status.store("postgres").unwrap();
                    return Some((pg.lag_entries, pg.in_sync));
                }
                _ => {}
            }
        }
        None
    });

    let stop = Arc::new(AtomicBool::new(false));
    let failed_recalls = Arc::new(AtomicU64::new(0));
    let failed_writes = Arc::new(AtomicU64::new(0));
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let mut load = Vec::new();
    for team in 0..TEAMS {
        let (manager, stop, failed, ledger) = (
            manager.clone(),
            stop.clone(),
            failed_writes.clone(),
            ledger.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Record> = (0..10)
                    .map(|i| record(format!("t{team}-{round}-{i}"), team, round * 10 + i))
                    .collect();
                match manager.upsert(&batch).await {
                    Ok(outcome) => ledger.lock().await.written.extend(outcome.ids),
                    Err(error) => {
                        eprintln!("upsert failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if round % 4 == 3 {
                    // Delete three records written two rounds ago.
                    let gone: Vec<String> = (0..3)
                        .map(|i| format!("t{team}-{}-{i}", round - 2))
                        .collect();
                    let selector = DeleteSelector::Ids {
                        team_id: format!("team{team}"),
                        ids: gone.clone(),
                    };
                    match manager.delete(&selector).await {
                        Ok(_) => ledger.lock().await.deleted.extend(gone),
                        Err(error) => {
                            eprintln!("delete failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for reader in 0..2 {
        let (manager, stop, failed) = (manager.clone(), stop.clone(), failed_recalls.clone());
        load.push(tokio::spawn(async move {
            let mut i = reader;
            while !stop.load(Ordering::Relaxed) {
                if let Err(error) = manager.recall(&query(i % TEAMS)).await {
                    eprintln!("recall failed: {error}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    kill_postgres();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(manager.status().active.as_deref(), Some("embedded"));
    let pg_lag = manager.status().store("postgres").unwrap().lag_entries;
    assert!(
        pg_lag > 0,
        "writes during the outage are journaled for PostgreSQL"
    );
    services("up", "postgres");
    eventually(
        60,
        "traffic back on PostgreSQL",
        async || manager.status().active.as_deref() == Some("postgres"),
        || format!("{:?}", manager.status()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    // PostgreSQL becomes active only once its replicator found its lag at
    // zero (the in-sync latch). Writes keep coming meanwhile (async mode), so
    // by the time the status is published a few group commits may already
    // be on its way to it: a lag of a couple of entries, not the outage's.
    let (lag_at_failback, in_sync) = failback.await.unwrap().expect("a failback was observed");
    assert!(in_sync, "PostgreSQL got traffic back before it caught up");
    assert!(
        lag_at_failback <= 5,
        "PostgreSQL got traffic back with {lag_at_failback} entries still to apply (outage backlog was {pg_lag})"
    );
    eventually(
        30,
        "both stores caught up",
        async || {
            manager
                .status()
                .stores
                .iter()
                .all(|s| s.in_sync && s.lag_entries == 0)
        },
        || format!("{:?}", manager.status()),
    )
    .await;

    assert_eq!(
        failed_recalls.load(Ordering::Relaxed),
        0,
        "no recall failed"
    );
    assert_eq!(failed_writes.load(Ordering::Relaxed), 0, "no write failed");
    let ledger = ledger.lock().await;
    assert!(ledger.written.len() > 200 && ledger.deleted.len() > 10);
    for team in 0..TEAMS {
        let name = format!("team{team}");
        let expected: BTreeSet<String> = ledger
            .written
            .iter()
            .filter(|id| id.starts_with(&format!("t{team}-")) && !ledger.deleted.contains(*id))
            .cloned()
            .collect();
        for store in [pg.clone() as DynStore, local.clone() as DynStore] {
            let present = ids(store.as_ref(), Some(&name)).await;
            assert_eq!(
                present,
                expected,
                "{} holds exactly the acknowledged state of {name}",
                store.name()
            );
            let count = store
                .count(&CountScope {
                    team_id: Some(name.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                count,
                expected.len() as u64,
                "{} count for {name}",
                store.name()
            );
        }
    }
    manager.shutdown().await;
    pg.drop_table().await.unwrap();
}
