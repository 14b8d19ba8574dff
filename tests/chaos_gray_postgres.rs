//! Gray failures with a real PostgreSQL (issue 12, "store-wide refusal"): the
//! server answers but cannot serve — read-only, its table renamed away, the
//! role's privileges revoked. A manager over [PostgreSQL, embedded] with a
//! journal must see it as the store failing (retriable `Unavailable`, from
//! the calls and from the health probe), fail over without a single failed
//! call, keep every acknowledged write and delete, and fail back once the
//! operator undoes the fault.
//!
//! The faults are server-wide (`ALTER SYSTEM`) or change the shared table's
//! catalog entry, so the names start with `chaos_`: the test command runs
//! them after all other tests, one at a time. Each fault is undone by a
//! guard when the test ends, pass or fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use vectorgate::{
    CountScope, DeleteSelector, DynStore, IndexSpec, ManagerConfig, Metric, RecallQuery, Record,
    VectorManager, VectorStore,
};
use vectorgate_integration::{embedded, eventually, ids, service_url};
use vectorgate_pg::{PgConfig, PgStore};

const DIM: usize = 16;
const TEAMS: usize = 2;
/// Writer tasks per team.
const WRITERS: usize = 2;
/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(5);

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

/// The port of a `postgres://...@host:port/db` URL (5432 without one).
fn port_of(url: &str) -> String {
    let host = url
        .split_once('@')
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    host.rsplit_once(':')
        .map_or("5432", |(_, port)| port)
        .to_owned()
}

/// The database of a `postgres://.../db?...` URL.
fn database_of(url: &str) -> String {
    let path = url.rsplit_once('/').map_or("", |(_, db)| db);
    path.split('?').next().unwrap_or("").to_owned()
}

/// The user of a `postgres://user:password@...` URL.
fn user_of(url: &str) -> String {
    let creds = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split_once('@')
        .map_or("", |(creds, _)| creds);
    creds.split(':').next().unwrap_or("").to_owned()
}

/// Runs each statement (its own transaction: `ALTER SYSTEM` refuses a
/// transaction block) as the `postgres` superuser over the unix socket, as
/// `scripts/services.sh` does. The session itself is never read-only, so it
/// can always undo `default_transaction_read_only`.
fn superuser(url: &str, statements: &[&str]) -> Result<(), String> {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--", "psql", "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-p", &port_of(url)])
        .args(["-d", &database_of(url)])
        .env("PGOPTIONS", "-c default_transaction_read_only=off");
    for statement in statements {
        command.args(["-c", statement]);
    }
    let output = command.output().map_err(|e| format!("runuser psql: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {statements:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A fault of the server, and how to undo it.
struct Fault {
    what: &'static str,
    /// What the health probe must report while the fault lasts.
    probe_says: &'static str,
    inject: Vec<String>,
    undo: Vec<String>,
}

/// Runs its statements as the superuser when dropped (best effort, loudly):
/// undoes a fault, so a failing test never leaves PostgreSQL read-only, a
/// table renamed or a role without privileges for the tests after it, and
/// drops the test's table.
struct UndoOnDrop {
    url: String,
    undo: Vec<String>,
    armed: bool,
}

impl UndoOnDrop {
    fn undo(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let statements: Vec<&str> = self.undo.iter().map(String::as_str).collect();
        if let Err(e) = superuser(&self.url, &statements) {
            eprintln!("UNDO FAILED, fix by hand: {e}");
        }
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        self.undo();
    }
}

/// What the writers were told: acknowledged upserts and deletes.
#[derive(Default)]
struct Ledger {
    written: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

/// Counts of what the callers saw.
#[derive(Default)]
struct Failures {
    writes: AtomicU64,
    deletes: AtomicU64,
    recalls: AtomicU64,
    counts: AtomicU64,
}

impl Failures {
    fn total(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
            + self.recalls.load(Ordering::Relaxed)
            + self.counts.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!(
            "failed writes {}, deletes {}, recalls {}, counts {}",
            self.writes.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed),
            self.recalls.load(Ordering::Relaxed),
            self.counts.load(Ordering::Relaxed)
        )
    }
}

/// The manager under mixed load (writers upserting and deleting, readers
/// recalling and counting, two teams) while `fault` lasts [`FAULT`], then
/// is undone; asserts no caller saw an error and both stores hold exactly
/// the acknowledged state afterwards, with traffic back on PostgreSQL.
async fn gray_failure(name: &str, fault: impl FnOnce(&str, &str) -> Fault) {
    let Some(url) = service_url("VECTORGATE_TEST_PG_URL") else {
        return;
    };
    let table = format!("vgt_{name}_{}", std::process::id());
    let Fault {
        what,
        probe_says,
        inject,
        undo,
    } = fault(&table, &user_of(&url));
    // Dropped last (declared first): the table goes whatever happens.
    let _drop_table = UndoOnDrop {
        url: url.clone(),
        undo: vec![format!("DROP TABLE IF EXISTS {table}, {table}_away")],
        armed: true,
    };
    // Undo first, in case an earlier run died with the fault in place.
    let mut guard = UndoOnDrop {
        url: url.clone(),
        undo,
        armed: true,
    };
    guard.undo();
    guard.armed = true;

    let dir = tempfile::tempdir().unwrap();
    let mut pg_config = PgConfig::new("postgres", &url).with_table(&table);
    pg_config.connect_timeout_ms = 1000;
    pg_config.acquire_timeout_ms = 1000;
    let pg = Arc::new(PgStore::connect(pg_config).await.unwrap());
    pg.drop_table().await.unwrap();
    let local = embedded(dir.path(), "embedded", &spec()).await;
    let manager = Arc::new(
        VectorManager::start(
            config(&dir.path().join("journal.db")),
            vec![pg.clone() as DynStore, local.clone() as DynStore],
        )
        .await
        .unwrap(),
    );
    eventually(
        20,
        "PostgreSQL active and every store in sync",
        async || {
            let status = manager.status();
            status.active.as_deref() == Some("postgres") && status.stores.iter().all(|s| s.in_sync)
        },
        || format!("{:?}", manager.status()),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Failures::default());
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let mut load = Vec::new();
    for writer in 0..TEAMS * WRITERS {
        let team = writer % TEAMS;
        let (manager, stop, failures, ledger) = (
            manager.clone(),
            stop.clone(),
            failures.clone(),
            ledger.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Record> = (0..5)
                    .map(|i| record(format!("w{writer}-{round}-{i}"), team, round * 5 + i))
                    .collect();
                match manager.upsert(&batch).await {
                    Ok(outcome) => ledger.lock().await.written.extend(outcome.ids),
                    Err(error) => {
                        eprintln!("upsert failed: {error}");
                        failures.writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if round % 3 == 2 {
                    // Delete two records of the round before last.
                    let gone: Vec<String> = (0..2)
                        .map(|i| format!("w{writer}-{}-{i}", round - 2))
                        .collect();
                    let selector = DeleteSelector::Ids {
                        team_id: format!("team{team}"),
                        ids: gone.clone(),
                    };
                    match manager.delete(&selector).await {
                        Ok(_) => ledger.lock().await.deleted.extend(gone),
                        Err(error) => {
                            eprintln!("delete failed: {error}");
                            failures.deletes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for reader in 0..2 {
        let (manager, stop, failures) = (manager.clone(), stop.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let mut i = reader;
            while !stop.load(Ordering::Relaxed) {
                let team = i % TEAMS;
                if let Err(error) = manager.recall(&query(team)).await {
                    eprintln!("recall failed: {error}");
                    failures.recalls.fetch_add(1, Ordering::Relaxed);
                }
                let scope = CountScope {
                    team_id: Some(format!("team{team}")),
                    ..Default::default()
                };
                if let Err(error) = manager.count(&scope).await {
                    eprintln!("count failed: {error}");
                    failures.counts.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let inject: Vec<&str> = inject.iter().map(String::as_str).collect();
    superuser(&url, &inject).unwrap();
    eprintln!("{name}: {what} (for {} s)", FAULT.as_secs());
    // The refusal is seen — by the calls or the probe — as the store
    // failing: the manager fails over to the embedded store.
    eventually(
        FAULT.as_secs(),
        "the embedded store to become active",
        async || manager.status().active.as_deref() == Some("embedded"),
        || format!("{:?}", manager.status()),
    )
    .await;
    eprintln!("{name}: failed over");
    tokio::time::sleep(FAULT).await;
    // The health probe (the half-open breaker's trials) names the problem.
    let pg_status = manager.status().store("postgres").cloned().unwrap();
    let probe_error = pg_status.last_probe_error.clone().unwrap_or_default();
    eprintln!("{name}: PostgreSQL probe says: {probe_error}");
    assert!(
        probe_error.contains(probe_says),
        "the probe names the fault ({probe_says:?}): {probe_error:?}"
    );
    assert!(!pg_status.active, "{pg_status:?}");
    let lag = pg_status.lag_entries;
    assert!(
        lag > 0,
        "writes during the fault are journaled for PostgreSQL"
    );
    guard.undo();
    eprintln!("{name}: undone, {lag} journal entries to replay");
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
    eventually(
        30,
        "both stores caught up",
        async || {
            manager
                .status()
                .stores
                .iter()
                .all(|s| s.in_sync && s.lag_entries == 0 && s.dead_letters == 0)
        },
        || format!("{:?}", manager.status()),
    )
    .await;

    assert_eq!(
        failures.total(),
        0,
        "no call failed: {}",
        failures.describe()
    );
    let ledger = ledger.lock().await;
    assert!(
        ledger.written.len() > 100 && ledger.deleted.len() > 10,
        "enough load: {} written, {} deleted",
        ledger.written.len(),
        ledger.deleted.len()
    );
    for team in 0..TEAMS {
        let name = format!("team{team}");
        let expected: BTreeSet<String> = ledger
            .written
            .iter()
            .filter(|id| {
                let writer: usize = id[1..id.find('-').unwrap()].parse().unwrap();
                writer % TEAMS == team && !ledger.deleted.contains(*id)
            })
            .cloned()
            .collect();
        for store in [pg.clone() as DynStore, local.clone() as DynStore] {
            let present = ids(store.as_ref(), Some(&name)).await;
            let missing: Vec<_> = expected.difference(&present).take(5).collect();
            let extra: Vec<_> = present.difference(&expected).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} holds exactly the acknowledged state of {name}: {} expected, {} present, \
                 missing (first 5) {missing:?}, not expected (first 5) {extra:?}",
                store.name(),
                expected.len(),
                present.len()
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
    let status = manager.status();
    assert_eq!(status.active.as_deref(), Some("postgres"), "{status:?}");
    assert_eq!(
        manager.recall_routed(&query(0)).await.unwrap().served_by,
        "postgres"
    );
    manager.shutdown().await;
    pg.drop_table().await.unwrap();
}

/// `default_transaction_read_only = on` server-wide (what a switchover to a
/// standby looks like to writers). `pg_reload_conf()` makes every session
/// — the store's pooled ones included — see it at its next transaction: no
/// backend needs terminating. Reads still work; writes get 25006 and the
/// probe reports `transaction_read_only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_gray_postgres_read_only_no_call_fails_no_write_lost() {
    gray_failure("gray_ro", |_table, _user| Fault {
        what: "server made read-only",
        probe_says: "transaction_read_only is on",
        inject: vec![
            "ALTER SYSTEM SET default_transaction_read_only = on".into(),
            "SELECT pg_reload_conf()".into(),
        ],
        undo: vec![
            "ALTER SYSTEM RESET default_transaction_read_only".into(),
            "SELECT pg_reload_conf()".into(),
        ],
    })
    .await;
}

/// The store's table renamed away (42P01 for every call; the probe reports
/// it missing) and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_gray_postgres_table_renamed_no_call_fails_no_write_lost() {
    gray_failure("gray_rename", |table, _user| Fault {
        what: "table renamed away",
        probe_says: "is missing",
        inject: vec![format!("ALTER TABLE {table} RENAME TO {table}_away")],
        undo: vec![format!(
            "DO $$ BEGIN IF to_regclass('{table}_away') IS NOT NULL THEN \
             ALTER TABLE {table}_away RENAME TO {table}; END IF; END $$"
        )],
    })
    .await;
}

/// Every privilege on the table revoked from the store's role — which owns
/// it: PostgreSQL lets an owner's own table privileges be revoked (42501 for
/// every call; the probe names the missing ones) — and granted back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_gray_postgres_privileges_revoked_no_call_fails_no_write_lost() {
    gray_failure("gray_revoke", |table, user| Fault {
        what: "privileges revoked from the store's role",
        probe_says: "lacks SELECT, INSERT, UPDATE, DELETE",
        inject: vec![format!("REVOKE ALL ON {table} FROM {user}")],
        undo: vec![format!(
            "DO $$ BEGIN IF to_regclass('{table}') IS NOT NULL THEN \
             GRANT ALL ON {table} TO {user}; END IF; END $$"
        )],
    })
    .await;
}
