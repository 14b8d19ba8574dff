//! Failover with real processes: a `VectorManager` over [OceanBase,
//! embedded] keeps answering while the seekdb server is SIGKILLed, and
//! traffic returns to OceanBase once it is back.
//!
//! `chaos_*` tests kill shared servers: the test command runs them after
//! every other test, one at a time. The server is restarted (`scripts/
//! services.sh up oceanbase`) even when the test fails midway.
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
use vectorgate_oceanbase::{OceanBaseConfig, OceanBaseStore};
use vectorgate_testkit::chaos::{
    RecallClient, RestartOnDrop, kill_pid_file, services_up, wait_for,
};

const DIM: usize = 16;
const OB: &str = "oceanbase";
const LOCAL: &str = "embedded";

/// seekdb's pid file, where `scripts/services.d/oceanbase.sh` puts it.
fn pid_file() -> PathBuf {
    let data = std::env::var("VECTORGATE_SEEKDB_DATA")
        .unwrap_or_else(|_| "/var/lib/vectorgate/seekdb".to_owned());
    Path::new(&data).join("run/seekdb.pid")
}

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_oceanbase_sigkill_fails_over_to_embedded_and_back() {
    const TEST: &str = "chaos_oceanbase_sigkill_fails_over_to_embedded_and_back";
    let Some(url) = common::url_or_skip(TEST) else {
        return;
    };
    if !pid_file().exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{TEST}: no seekdb pid file at {}",
            pid_file().display()
        );
        eprintln!(
            "SKIPPED {TEST}: no local seekdb ({} missing); this test kills the server started by scripts/services.sh",
            pid_file().display()
        );
        return;
    }
    let _restart = RestartOnDrop("oceanbase");

    // Both stores hold the same records before the manager starts.
    let spec = IndexSpec {
        hnsw: HnswParams {
            ef_search: 400,
            ..HnswParams::default()
        },
        ..IndexSpec::new(DIM as u32, Metric::Cosine)
    };
    let ob = Arc::new(
        OceanBaseStore::connect(OceanBaseConfig {
            pool_max_connections: 4,
            connect_timeout_ms: 300,
            acquire_timeout_ms: 1000,
            statement_timeout_ms: 2000,
            ..OceanBaseConfig::new(OB, &url).with_table(common::unique_table())
        })
        .await
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(LOCAL, dir.path().join("vectors.db")))
            .await
            .unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(0xc4a05);
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
    for store in [ob.clone() as DynStore, local.clone() as DynStore] {
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
        let expected: Vec<String> = local
            .recall(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let from_ob: Vec<String> = ob
            .recall(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(
            from_ob, expected,
            "both stores must answer alike before the test"
        );
        queries.push((q, expected));
    }

    // Reads only: no write journal.
    let mut config = ManagerConfig::new(spec).without_replication();
    config.health.probe_interval_ms = 200;
    config.health.probe_timeout_ms = 500;
    config.breaker.open_ms = 1000;
    let manager = Arc::new(
        VectorManager::start(
            config,
            vec![ob.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap(),
    );
    assert_eq!(manager.status().active.as_deref(), Some(OB));

    // The client: one recall every ~20 ms until told to stop.
    let client = RecallClient::start(manager.clone(), queries, Duration::from_millis(20));

    let started = Instant::now();
    wait_for(
        "10 recalls served by OceanBase",
        Duration::from_secs(10),
        || client.served_since(OB, started) >= 10,
    )
    .await;

    // Kill the server.
    let pid = kill_pid_file(&pid_file());
    let killed = Instant::now();
    eprintln!("{TEST}: killed seekdb (pid {pid})");
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
        status.store(OB).and_then(|s| s.healthy),
        Some(false),
        "{status:?}"
    );

    // Restart it; after the breaker's hysteresis, traffic returns.
    let restart = tokio::task::spawn_blocking(|| services_up("oceanbase"))
        .await
        .unwrap();
    restart.unwrap();
    let restarted = Instant::now();
    wait_for(
        "the manager to make OceanBase active again",
        Duration::from_secs(30),
        || manager.status().active.as_deref() == Some(OB),
    )
    .await;
    let failback_took = restarted.elapsed();
    wait_for(
        "10 recalls served by OceanBase again",
        Duration::from_secs(10),
        || client.served_since(OB, restarted) >= 10,
    )
    .await;

    let log = client.stop().await;
    manager.shutdown().await;
    ob.drop_table().await.unwrap();
    let by = |name: &str| log.served_by(name);
    eprintln!(
        "{TEST}: {} recalls ({} by {OB}, {} by {LOCAL}), {} failed; failover in {failover_took:?}, failback {failback_took:?} after the restart",
        log.total(),
        by(OB),
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
