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

/// Runs its statements as the test's (root) user when dropped, each on its
/// own and best effort (a statement with nothing to undo just fails), from a
/// thread of its own: a failing test never leaves the table renamed, the
/// server read-only or a test user behind.
struct RootOnDrop {
    url: String,
    statements: Vec<String>,
}

/// Runs `statements` as the test's (root) user, each on its own; the
/// errors, if any.
async fn as_root(url: &str, statements: &[String]) -> Vec<String> {
    use sqlx::Executor;
    let pool = raw_pool(url);
    let mut errors = Vec::new();
    for statement in statements {
        if let Err(e) = pool.execute(sqlx::AssertSqlSafe(statement.clone())).await {
            errors.push(format!("{statement}: {e}"));
        }
    }
    pool.close().await;
    errors
}

impl Drop for RootOnDrop {
    fn drop(&mut self) {
        let (url, statements) = (self.url.clone(), self.statements.clone());
        let joined = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(as_root(&url, &statements))
        })
        .join();
        if let Ok(errors) = joined {
            for error in errors {
                eprintln!("cleanup (may be nothing to undo): {error}");
            }
        }
    }
}

fn raw_pool(url: &str) -> sqlx::MySqlPool {
    let options: sqlx::mysql::MySqlConnectOptions = url.parse().unwrap();
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.collation("utf8mb4_general_ci"))
}

/// Every id of `team` in `store`, walking `scan`.
async fn team_ids(store: &dyn VectorStore, team: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = store
            .scan(&vectorgate::ScanRequest {
                after_id: cursor,
                team_id: Some(team.to_owned()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// A fault of the server, as root statements, and how to undo it.
struct Fault {
    /// Connect the store as this user (`user:password`) instead of root.
    user: Option<&'static str>,
    /// Before the manager starts (grants for `user`).
    setup: Vec<String>,
    inject: Vec<String>,
    undo: Vec<String>,
    /// After the test, whatever happens (drop `user`).
    cleanup: Vec<String>,
    /// What the health probe must report while the fault lasts.
    probe_says: &'static str,
}

/// The manager over [OceanBase, embedded] with a journal under mixed load
/// (4 writers upserting and deleting, 2 readers recalling and counting, 2
/// teams) while `fault` lasts ~5 s, then is undone. It must fail over
/// without a failed call, keep every acknowledged write and delete in both
/// stores, and give traffic back to OceanBase.
async fn gray_failure(test: &str, fault: impl FnOnce(&str, &str) -> Fault) {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use vectorgate::{CountScope, DeleteSelector};
    const TEAMS: usize = 2;
    let Some(url) = common::url_or_skip(test) else {
        return;
    };
    let table = common::unique_table();
    let database: String = sqlx::query_scalar("SELECT CAST(DATABASE() AS CHAR)")
        .fetch_one(&raw_pool(&url))
        .await
        .unwrap();
    let fault = fault(&table, &database);
    let _cleanup = RootOnDrop {
        url: url.clone(),
        statements: fault
            .cleanup
            .iter()
            .cloned()
            .chain([format!("DROP TABLE IF EXISTS `{table}`")])
            .collect(),
    };
    let _undo = RootOnDrop {
        url: url.clone(),
        statements: fault.undo.clone(),
    };
    let errors = as_root(&url, &fault.setup).await;
    assert!(errors.is_empty(), "setup: {errors:?}");
    let store_url = match fault.user {
        None => url.clone(),
        Some(credentials) => {
            let Some((_, host)) = url.strip_prefix("mysql://").and_then(|r| r.split_once('@'))
            else {
                panic!("{url}: expected mysql://user@host/db");
            };
            format!("mysql://{credentials}@{host}")
        }
    };
    let spec = IndexSpec::new(DIM as u32, Metric::Cosine);
    let ob = Arc::new(
        OceanBaseStore::connect(OceanBaseConfig {
            pool_max_connections: 4,
            connect_timeout_ms: 1000,
            acquire_timeout_ms: 1000,
            statement_timeout_ms: 2000,
            ..OceanBaseConfig::new(OB, &store_url).with_table(table.clone())
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
    local.ensure_schema(&spec).await.unwrap();
    let mut config = ManagerConfig::new(spec).with_journal(dir.path().join("journal.db"));
    config.health.probe_interval_ms = 200;
    config.health.probe_timeout_ms = 1000;
    config.breaker.open_ms = 1000;
    config.retry.attempt_timeout_ms = 2000;
    let manager = Arc::new(
        VectorManager::start(
            config,
            vec![ob.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap(),
    );
    wait_for(
        "OceanBase active and every store in sync",
        Duration::from_secs(60),
        || {
            let status = manager.status();
            status.active.as_deref() == Some(OB) && status.stores.iter().all(|s| s.in_sync)
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let acked: Arc<tokio::sync::Mutex<(BTreeSet<String>, BTreeSet<String>)>> = Arc::default();
    let mut load = Vec::new();
    for writer in 0..2 * TEAMS {
        let team = writer % TEAMS;
        let (manager, stop, failed, acked) =
            (manager.clone(), stop.clone(), failed.clone(), acked.clone());
        load.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(writer as u64);
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Record> = (0..5)
                    .map(|i| Record {
                        id: format!("w{writer}-{round}-{i}"),
                        team_id: format!("team{team}"),
                        dataset_id: format!("ds{}", i % 2),
                        collection_id: "c".into(),
                        vector: vector(&mut rng),
                        created_at_ms: 1_700_000_000_000,
                        payload: None,
                    })
                    .collect();
                match manager.upsert(&batch).await {
                    Ok(outcome) => acked.lock().await.0.extend(outcome.ids),
                    Err(error) => {
                        eprintln!("upsert failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if round % 3 == 2 {
                    let gone: Vec<String> = (0..2)
                        .map(|i| format!("w{writer}-{}-{i}", round - 2))
                        .collect();
                    let selector = DeleteSelector::Ids {
                        team_id: format!("team{team}"),
                        ids: gone.clone(),
                    };
                    match manager.delete(&selector).await {
                        Ok(_) => acked.lock().await.1.extend(gone),
                        Err(error) => {
                            eprintln!("delete failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    for reader in 0..2usize {
        let (manager, stop, failed) = (manager.clone(), stop.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + reader as u64);
            let mut i = reader;
            while !stop.load(Ordering::Relaxed) {
                let team = format!("team{}", i % TEAMS);
                let query = RecallQuery {
                    team_id: team.clone(),
                    dataset_ids: vec!["ds0".into(), "ds1".into()],
                    vector: vector(&mut rng),
                    limit: 5,
                    ..RecallQuery::default()
                };
                if let Err(error) = manager.recall(&query).await {
                    eprintln!("recall failed: {error}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let scope = CountScope {
                    team_id: Some(team),
                    ..Default::default()
                };
                if let Err(error) = manager.count(&scope).await {
                    eprintln!("count failed: {error}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let errors = as_root(&url, &fault.inject).await;
    assert!(errors.is_empty(), "inject: {errors:?}");
    let renamed = Instant::now();
    eprintln!("{test}: fault injected: {:?}", fault.inject);
    wait_for(
        "the manager to make the embedded store active",
        Duration::from_secs(10),
        || manager.status().active.as_deref() == Some(LOCAL),
    )
    .await;
    let failover_took = renamed.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(renamed.elapsed())).await;
    let status = manager.status();
    let ob_status = status.store(OB).cloned().unwrap();
    let probe = ob_status.last_probe_error.clone().unwrap_or_default();
    eprintln!("{test}: OceanBase probe says: {probe}");
    assert!(probe.contains(fault.probe_says), "{status:?}");
    assert!(ob_status.lag_entries > 0, "writes journaled: {status:?}");
    let errors = as_root(&url, &fault.undo).await;
    assert!(errors.is_empty(), "undo: {errors:?}");
    let back = Instant::now();
    wait_for("traffic back on OceanBase", Duration::from_secs(60), || {
        manager.status().active.as_deref() == Some(OB)
    })
    .await;
    let failback_took = back.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    wait_for("both stores caught up", Duration::from_secs(60), || {
        manager
            .status()
            .stores
            .iter()
            .all(|s| s.in_sync && s.lag_entries == 0 && s.dead_letters == 0)
    })
    .await;
    eprintln!("{test}: failover in {failover_took:?}, failback {failback_took:?} after the undo");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    let (written, deleted) = acked.lock().await.clone();
    assert!(
        written.len() > 50 && deleted.len() > 5,
        "{} written, {} deleted",
        written.len(),
        deleted.len()
    );
    for team in 0..TEAMS {
        let name = format!("team{team}");
        let expected: BTreeSet<String> = written
            .iter()
            .filter(|id| {
                let writer: usize = id[1..id.find('-').unwrap()].parse().unwrap();
                writer % TEAMS == team && !deleted.contains(*id)
            })
            .cloned()
            .collect();
        for store in [ob.clone() as DynStore, local.clone() as DynStore] {
            let present = team_ids(store.as_ref(), &name).await;
            let missing: Vec<_> = expected.difference(&present).take(5).collect();
            let extra: Vec<_> = present.difference(&expected).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} holds exactly the acknowledged state of {name}: {} expected, {} present, \
                 missing {missing:?}, not expected {extra:?}",
                store.name(),
                expected.len(),
                present.len()
            );
        }
    }
    assert_eq!(manager.status().active.as_deref(), Some(OB));
    manager.shutdown().await;
    ob.drop_table().await.unwrap();
}

/// The store's table renamed away (every call gets error 1146, the probe
/// reports it missing) and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_oceanbase_table_renamed_no_call_fails_no_write_lost() {
    gray_failure(
        "chaos_oceanbase_table_renamed_no_call_fails_no_write_lost",
        |table, _database| Fault {
            user: None,
            setup: Vec::new(),
            inject: vec![format!("RENAME TABLE `{table}` TO `{table}_away`")],
            undo: vec![format!("RENAME TABLE `{table}_away` TO `{table}`")],
            cleanup: vec![format!("DROP TABLE IF EXISTS `{table}_away`")],
            probe_says: "is missing",
        },
    )
    .await;
}

/// The server made read-only (`SET GLOBAL read_only = ON`, what a
/// switchover to a standby looks like) for a store whose user, like an
/// application's, has no SUPER privilege: writes get error 1290, the probe
/// reports read_only; reads still work. Then writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_oceanbase_read_only_no_call_fails_no_write_lost() {
    const USER: &str = "vgt_gray_app";
    gray_failure(
        "chaos_oceanbase_read_only_no_call_fails_no_write_lost",
        |_table, database| Fault {
            user: Some("vgt_gray_app:vgt_gray_pw"),
            setup: vec![
                format!("DROP USER IF EXISTS '{USER}'@'%'"),
                format!("CREATE USER '{USER}'@'%' IDENTIFIED BY 'vgt_gray_pw'"),
                format!("GRANT ALL PRIVILEGES ON `{database}`.* TO '{USER}'@'%'"),
            ],
            inject: vec!["SET GLOBAL read_only = ON".into()],
            undo: vec!["SET GLOBAL read_only = OFF".into()],
            cleanup: vec![format!("DROP USER IF EXISTS '{USER}'@'%'")],
            probe_says: "read_only is on",
        },
    )
    .await;
}
