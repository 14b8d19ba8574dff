//! Failover with real processes: a `VectorManager` over [Milvus, embedded]
//! keeps answering while the Milvus server is SIGKILLed, and traffic
//! returns to Milvus once it is back (and has reloaded the collection).
//!
//! `chaos_*` tests kill shared servers: the test command runs them after
//! every other test, one at a time. The server is restarted (`scripts/
//! services.sh up milvus`, which keeps its data) even when the test fails
//! midway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{
    DynStore, HnswParams, IndexSpec, ManagerConfig, Metric, RecallQuery, Record, VectorManager,
    VectorStore,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_milvus::{MilvusConfig, MilvusStore};
use vectorgate_testkit::chaos::{
    RecallClient, RestartOnDrop, kill_pid_file, services_up, wait_for,
};

const DIM: usize = 16;
const MILVUS: &str = "milvus";
const LOCAL: &str = "embedded";

/// The server's pid file, where `scripts/services.d/milvus.sh` puts it.
fn pid_file() -> PathBuf {
    let base = std::env::var("VECTORGATE_MILVUS_BASE")
        .unwrap_or_else(|_| "/opt/vectorgate/milvus".to_owned());
    Path::new(&base).join("milvus.pid")
}

/// Drops the test's collection when dropped (after the restart guard ran:
/// declared before it).
struct DropCollection {
    url: String,
    collection: String,
}

impl Drop for DropCollection {
    fn drop(&mut self) {
        common::drop_collections(&self.url, vec![self.collection.clone()]);
    }
}

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_milvus_sigkill_fails_over_to_embedded_and_back() {
    const TEST: &str = "chaos_milvus_sigkill_fails_over_to_embedded_and_back";
    let Some(url) = common::milvus_url(TEST) else {
        return;
    };
    if !pid_file().exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{TEST}: no Milvus pid file at {}",
            pid_file().display()
        );
        eprintln!(
            "SKIPPED {TEST}: no local Milvus ({} missing); this test kills the server started by scripts/services.sh",
            pid_file().display()
        );
        return;
    }
    let collection = common::unique_collection("chaos");
    let _drop = DropCollection {
        url: url.clone(),
        collection: collection.clone(),
    };
    let _restart = RestartOnDrop("milvus");

    // Both stores hold the same records before the manager starts.
    let spec = IndexSpec {
        hnsw: HnswParams {
            ef_search: 400,
            ..HnswParams::default()
        },
        ..IndexSpec::new(DIM as u32, Metric::Cosine)
    };
    let milvus = Arc::new(
        MilvusStore::connect(MilvusConfig {
            timeout_ms: 2000,
            connect_timeout_ms: 500,
            ..MilvusConfig::new(MILVUS, &url, &collection)
        })
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(LOCAL, dir.path().join("vectors.db")))
            .await
            .unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(0x3115);
    let records: Vec<Record> = (0..300)
        .map(|i| Record {
            id: format!("r-{i:03}"),
            team_id: "team".into(),
            dataset_id: format!("ds-{}", i % 3),
            collection_id: "c".into(),
            vector: vector(&mut rng),
            created_at_ms: 1_700_000_000_000 + i,
            payload: None,
        })
        .collect();
    for store in [milvus.clone() as DynStore, local.clone() as DynStore] {
        store.ensure_schema(&spec).await.unwrap();
        store.upsert(&records).await.unwrap();
    }

    // Queries with their expected answer (the embedded store is exact).
    let mut queries = Vec::new();
    for _ in 0..8 {
        let q = RecallQuery {
            team_id: "team".into(),
            dataset_ids: vec!["ds-0".into(), "ds-2".into()],
            vector: vector(&mut rng),
            limit: 5,
            ..RecallQuery::default()
        };
        let ids = |hits: Vec<vectorgate::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        let expected = ids(local.recall(&q).await.unwrap());
        let from_milvus = ids(milvus.recall(&q).await.unwrap());
        assert_eq!(
            from_milvus, expected,
            "both stores must answer alike before the test"
        );
        queries.push((q, expected));
    }

    // Reads only: no write journal. Short probes and breaker for a quick test.
    let mut config = ManagerConfig::new(spec).without_replication();
    config.health.probe_interval_ms = 200;
    config.health.probe_timeout_ms = 500;
    config.breaker.open_ms = 1000;
    let manager = Arc::new(
        VectorManager::start(
            config,
            vec![milvus.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap(),
    );
    assert_eq!(manager.status().active.as_deref(), Some(MILVUS));

    // The client: one recall every ~20 ms until told to stop.
    let client = RecallClient::start(manager.clone(), queries.clone(), Duration::from_millis(20));

    let started = Instant::now();
    wait_for(
        "10 recalls served by Milvus",
        Duration::from_secs(10),
        || client.served_since(MILVUS, started) >= 10,
    )
    .await;

    // Kill the server.
    let pid = kill_pid_file(&pid_file());
    let killed = Instant::now();
    eprintln!("{TEST}: killed milvus (pid {pid})");
    wait_for(
        "the manager to make the embedded store active",
        Duration::from_secs(15),
        || manager.status().active.as_deref() == Some(LOCAL),
    )
    .await;
    let failover_took = killed.elapsed();
    wait_for(
        "10 recalls served by the embedded store",
        Duration::from_secs(10),
        || client.served_since(LOCAL, killed) >= 10,
    )
    .await;
    let status = manager.status();
    assert_eq!(status.active.as_deref(), Some(LOCAL), "{status:?}");
    assert_eq!(
        status.store(MILVUS).and_then(|s| s.healthy),
        Some(false),
        "{status:?}"
    );
    let routed = manager.recall_routed(&queries[0].0).await.unwrap();
    assert_eq!(routed.served_by, LOCAL);

    // Restart it (keeping its data); after it reloaded the collection and the
    // breaker's hysteresis passed, traffic returns.
    let restart_took = tokio::task::spawn_blocking(|| services_up("milvus"))
        .await
        .unwrap()
        .unwrap();
    let restarted = Instant::now();
    wait_for(
        "the manager to make Milvus active again",
        Duration::from_secs(60),
        || manager.status().active.as_deref() == Some(MILVUS),
    )
    .await;
    let failback_took = restarted.elapsed();
    wait_for(
        "10 recalls served by Milvus again",
        Duration::from_secs(10),
        || client.served_since(MILVUS, restarted) >= 10,
    )
    .await;
    let routed = manager.recall_routed(&queries[1].0).await.unwrap();
    assert_eq!(routed.served_by, MILVUS);
    assert_eq!(
        routed
            .value
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        queries[1].1,
        "Milvus kept the records written before the kill"
    );

    let log = client.stop().await;
    manager.shutdown().await;
    let by = |name: &str| log.served_by(name);
    eprintln!(
        "{TEST}: {} recalls ({} by {MILVUS}, {} by {LOCAL}), {} failed; failover in {failover_took:?}; restart took {restart_took:?}, failback {failback_took:?} after it",
        log.total(),
        by(MILVUS),
        by(LOCAL),
        log.failures.len()
    );
    assert!(
        log.failures.is_empty(),
        "{} recalls failed during the failover: {:?}",
        log.failures.len(),
        log.failures
    );
    assert!(
        log.wrong.is_empty(),
        "wrong answers during the failover: {:?}",
        log.wrong
    );
}

/// A gray failure: Milvus answers, but the collection is released (an
/// operator's mistake, a failed reload) for ~5 s, then loaded again. Every
/// read is refused (`collection not loaded`, `Unavailable`) and the health
/// probe says "not loaded": the manager must fail over to the embedded
/// store without a failed or wrong recall, and come back once the
/// collection is loaded. Reads only: a released collection still takes
/// writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_milvus_collection_released_fails_over_and_back() {
    const TEST: &str = "chaos_milvus_collection_released_fails_over_and_back";
    let Some(url) = common::milvus_url(TEST) else {
        return;
    };
    let collection = common::unique_collection("gray");
    let _drop = DropCollection {
        url: url.clone(),
        collection: collection.clone(),
    };
    let spec = IndexSpec {
        hnsw: HnswParams {
            ef_search: 400,
            ..HnswParams::default()
        },
        ..IndexSpec::new(DIM as u32, Metric::Cosine)
    };
    let milvus = Arc::new(
        MilvusStore::connect(MilvusConfig {
            timeout_ms: 2000,
            connect_timeout_ms: 500,
            ..MilvusConfig::new(MILVUS, &url, &collection)
        })
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(LOCAL, dir.path().join("vectors.db")))
            .await
            .unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(0x5e1e);
    let records: Vec<Record> = (0..200)
        .map(|i| Record {
            id: format!("r-{i:03}"),
            team_id: "team".into(),
            dataset_id: format!("ds-{}", i % 2),
            collection_id: "c".into(),
            vector: vector(&mut rng),
            created_at_ms: 1_700_000_000_000 + i,
            payload: None,
        })
        .collect();
    for store in [milvus.clone() as DynStore, local.clone() as DynStore] {
        store.ensure_schema(&spec).await.unwrap();
        store.upsert(&records).await.unwrap();
    }
    let mut queries = Vec::new();
    for _ in 0..6 {
        let q = RecallQuery {
            team_id: "team".into(),
            dataset_ids: vec!["ds-0".into(), "ds-1".into()],
            vector: vector(&mut rng),
            limit: 5,
            ..RecallQuery::default()
        };
        let ids = |hits: Vec<vectorgate::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        let expected = ids(local.recall(&q).await.unwrap());
        assert_eq!(ids(milvus.recall(&q).await.unwrap()), expected);
        queries.push((q, expected));
    }

    let mut config = ManagerConfig::new(spec).without_replication();
    config.health.probe_interval_ms = 200;
    config.health.probe_timeout_ms = 500;
    config.breaker.open_ms = 1000;
    let manager = Arc::new(
        VectorManager::start(
            config,
            vec![milvus.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap(),
    );
    assert_eq!(manager.status().active.as_deref(), Some(MILVUS));
    let client = RecallClient::start(manager.clone(), queries.clone(), Duration::from_millis(20));
    let started = Instant::now();
    wait_for(
        "10 recalls served by Milvus",
        Duration::from_secs(10),
        || client.served_since(MILVUS, started) >= 10,
    )
    .await;

    common::set_loaded(&url, &collection, false).await;
    let released = Instant::now();
    eprintln!("{TEST}: released {collection}");
    wait_for(
        "the manager to make the embedded store active",
        Duration::from_secs(10),
        || manager.status().active.as_deref() == Some(LOCAL),
    )
    .await;
    let failover_took = released.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(released.elapsed())).await;
    let status = manager.status();
    let probe = status
        .store(MILVUS)
        .and_then(|s| s.last_probe_error.clone())
        .unwrap_or_default();
    eprintln!("{TEST}: Milvus probe says: {probe}");
    assert!(probe.contains("not loaded"), "{status:?}");
    assert!(client.served_since(LOCAL, released) >= 10, "{status:?}");

    common::set_loaded(&url, &collection, true).await;
    let loaded = Instant::now();
    wait_for(
        "the manager to make Milvus active again",
        Duration::from_secs(30),
        || manager.status().active.as_deref() == Some(MILVUS),
    )
    .await;
    let failback_took = loaded.elapsed();
    wait_for(
        "10 recalls served by Milvus again",
        Duration::from_secs(10),
        || client.served_since(MILVUS, loaded) >= 10,
    )
    .await;
    let log = client.stop().await;
    manager.shutdown().await;
    eprintln!(
        "{TEST}: {} recalls ({} by {MILVUS}, {} by {LOCAL}), {} failed; failover in \
         {failover_took:?}, failback {failback_took:?} after the load",
        log.total(),
        log.served_by(MILVUS),
        log.served_by(LOCAL),
        log.failures.len()
    );
    assert!(
        log.failures.is_empty(),
        "{} recalls failed: {:?}",
        log.failures.len(),
        log.failures
    );
    assert!(log.wrong.is_empty(), "wrong answers: {:?}", log.wrong);
}
