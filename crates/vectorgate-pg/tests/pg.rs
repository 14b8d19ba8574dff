//! PostgreSQL-specific behaviour the conformance suite cannot see: exactness
//! of HNSW recall per metric on more data, iterative scans under a selective
//! filter, schema detection, error mapping (pool starvation, statement
//! timeout, terminated backends, unreachable server, a table changed behind
//! the store's back), and the pool gauges. Needs `VECTORGATE_TEST_PG_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Row;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use vectorgate::{
    CountScope, DeleteSelector, Error, ErrorKind, HnswParams, IndexSpec, Metric, RecallQuery,
    Record, ScanRequest, VectorStore,
};
use vectorgate_pg::{PgConfig, PgStore};

macro_rules! url_or_skip {
    () => {
        match common::pg_url() {
            Some(url) => url,
            None => return,
        }
    };
}

/// A store on a fresh table, dropped (best effort) when the guard goes.
struct Table {
    store: PgStore,
    url: String,
}

impl Table {
    async fn new(url: &str, prefix: &str, config: impl FnOnce(PgConfig) -> PgConfig) -> Table {
        let table = common::unique_table(prefix);
        let mut base = PgConfig::new("pg-test", url).with_table(table);
        base.acquire_timeout_ms = common::TEST_ACQUIRE_TIMEOUT_MS;
        let store = PgStore::connect(config(base)).await.unwrap();
        Table {
            store,
            url: url.to_owned(),
        }
    }

    async fn with_spec(url: &str, prefix: &str, spec: IndexSpec) -> Table {
        let t = Table::new(url, prefix, |c| c).await;
        t.store.ensure_schema(&spec).await.unwrap();
        t
    }

    /// Another handle on the same table, with its own pool.
    async fn reopen(&self, config: impl FnOnce(PgConfig) -> PgConfig) -> PgStore {
        PgStore::connect(config(self.store.config().clone()))
            .await
            .unwrap()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        common::drop_tables_blocking(&self.url, vec![self.store.table().to_owned()]);
    }
}

fn exact_spec(dim: u32, metric: Metric) -> IndexSpec {
    IndexSpec {
        dim,
        metric,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 64,
            ef_search: 1000,
        },
    }
}

fn random_vector(rng: &mut StdRng, dim: u32) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

fn record(id: &str, team: &str, dataset: &str, collection: &str, vector: Vec<f32>) -> Record {
    Record {
        id: id.to_owned(),
        team_id: team.to_owned(),
        dataset_id: dataset.to_owned(),
        collection_id: collection.to_owned(),
        vector,
        created_at_ms: 1_700_000_000_000,
        payload: None,
    }
}

fn query(team: &str, datasets: &[&str], vector: Vec<f32>, limit: u32) -> RecallQuery {
    RecallQuery {
        team_id: team.to_owned(),
        dataset_ids: datasets.iter().map(|d| (*d).to_owned()).collect(),
        vector,
        limit,
        ..Default::default()
    }
}

async fn upsert_all(store: &PgStore, records: &[Record]) {
    for chunk in records.chunks(1000) {
        store.upsert(chunk).await.unwrap();
    }
}

/// Brute-force top `limit` of `records` passing `keep`, best first.
fn brute_force(
    metric: Metric,
    records: &[Record],
    q: &[f32],
    limit: usize,
    keep: impl Fn(&Record) -> bool,
) -> Vec<(String, f64)> {
    let mut scored: Vec<(String, f64)> = records
        .iter()
        .filter(|r| keep(r))
        .map(|r| (r.id.clone(), metric.reference_score(q, &r.vector)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(limit);
    scored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_matches_brute_force_for_every_metric() {
    let url = url_or_skip!();
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        let dim = 16;
        let t = Table::with_spec(&url, "bf", exact_spec(dim, metric)).await;
        let mut rng = StdRng::seed_from_u64(7);
        let records: Vec<Record> = (0..1500)
            .map(|i| {
                let team = if i % 10 == 0 { "other" } else { "team" };
                record(&format!("r{i:04}"), team, &format!("d{}", i % 3), "c", {
                    random_vector(&mut rng, dim)
                })
            })
            .collect();
        upsert_all(&t.store, &records).await;
        for round in 0..5 {
            let q = random_vector(&mut rng, dim);
            let hits = t
                .store
                .recall(&query("team", &["d0", "d1"], q.clone(), 10))
                .await
                .unwrap();
            let expected = brute_force(metric, &records, &q, 10, |r| {
                r.team_id == "team" && r.dataset_id != "d2"
            });
            let got: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            let want: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(got, want, "{metric} round {round}");
            for (hit, (_, score)) in hits.iter().zip(&expected) {
                assert!(
                    (f64::from(hit.score) - score).abs() <= 1e-3 * score.abs().max(1.0),
                    "{metric}: {} scored {} vs reference {score}",
                    hit.id,
                    hit.score
                );
            }
        }
    }
}

/// A filter that keeps 2% of the rows, a small `ef_search`: pgvector's HNSW
/// scan alone returns about `ef_search * 2%` rows; with `hnsw.iterative_scan`
/// (pgvector >= 0.8) the store still returns `limit`. On a table this small
/// the planner would rather sort than use the HNSW index, so the store's
/// sessions get `enable_seqscan` and `enable_sort` off (through the URL's
/// `options[..]`), which makes it take the HNSW path a big table takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_filter_still_fills_the_limit() {
    let url = url_or_skip!();
    let planner = "options%5Benable_seqscan%5D=off&options%5Benable_sort%5D=off";
    let forced_url = if url.contains('?') {
        format!("{url}&{planner}")
    } else {
        format!("{url}?{planner}")
    };
    let dim = 8;
    let spec = IndexSpec {
        dim,
        metric: Metric::L2,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 64,
            ef_search: 20,
        },
    };
    let t = Table::new(&url, "iter", |c| PgConfig {
        url: forced_url.clone(),
        ..c
    })
    .await;
    t.store.ensure_schema(&spec).await.unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let records: Vec<Record> = (0..3000)
        .map(|i| {
            let collection = format!("c{:02}", i % 50);
            record(&format!("r{i:04}"), "team", "ds", &collection, {
                random_vector(&mut rng, dim)
            })
        })
        .collect();
    upsert_all(&t.store, &records).await;
    let excluded: Vec<String> = (1..50).map(|c| format!("c{c:02}")).collect();
    let q = random_vector(&mut rng, dim);
    let mut rq = query("team", &["ds"], q.clone(), 20);
    rq.exclude_collection_ids = excluded.clone();

    // The same statement, same settings, with iterative scans off: the plan
    // is the HNSW index and it comes up short. This is what the store fixes.
    let mut raw = common::raw(&forced_url).await;
    let table = t.store.table();
    let sql = format!(
        "SELECT id FROM {table} WHERE team_id = $1 AND dataset_id = ANY($2) \
         AND NOT (collection_id = ANY($3)) ORDER BY vector <-> $4 LIMIT 20"
    );
    let mut tx = sqlx::Connection::begin(&mut raw).await.unwrap();
    sqlx::query("SELECT set_config('hnsw.ef_search', '20', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .bind("team")
        .bind(vec!["ds".to_owned()])
        .bind(&excluded)
        .bind(pgvector::Vector::from(q.clone()))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("_hnsw")),
        "expected an HNSW index scan: {plan:#?}"
    );
    let without = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind("team")
        .bind(vec!["ds".to_owned()])
        .bind(&excluded)
        .bind(pgvector::Vector::from(q.clone()))
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .len();
    tx.rollback().await.unwrap();
    let version = t.store.pgvector_version().unwrap();
    eprintln!("pgvector {version}: {without} rows without iterative scan");
    assert!(without < 20, "without iterative scan: {without} rows");

    let hits = t.store.recall(&rq).await.unwrap();
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if version.starts_with("0.") && minor < 8 {
        eprintln!(
            "pgvector {version} has no iterative scan: {} rows",
            hits.len()
        );
        return;
    }
    assert_eq!(hits.len(), 20, "a 2% filter must still return limit rows");
    assert!(hits.iter().all(|h| h.collection_id == "c00"));
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "sorted by score"
    );
    let reference = brute_force(Metric::L2, &records, &q, 20, |r| r.collection_id == "c00");
    let wanted: HashSet<&str> = reference.iter().map(|(id, _)| id.as_str()).collect();
    let found = hits
        .iter()
        .filter(|h| wanted.contains(h.id.as_str()))
        .count();
    assert!(found >= 16, "recall@20 {found}/20 under a selective filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_delete_count_and_scan() {
    let url = url_or_skip!();
    let t = Table::with_spec(&url, "crud", exact_spec(4, Metric::Cosine)).await;
    let s = &t.store;
    let v = |x: f32| vec![x, 1.0, -0.5, 0.25];
    let mut records = vec![
        record("B", "t1", "d1", "c1", v(0.1)),
        record("_", "t1", "d1", "c2", v(0.2)),
        record("a", "t1", "d2", "c1", v(0.3)),
        record("x", "t2", "d1", "c1", v(0.4)),
    ];
    records[0].payload = Some(serde_json::json!({"k": "v", "n": [1, 2.5, null], "é": "\"q\""}));
    records[1].created_at_ms = 0;
    let before = vectorgate::validate::now_ms();
    let outcome = s.upsert(&records).await.unwrap();
    assert_eq!(outcome.ids, ["B", "_", "a", "x"]);

    // Counts in every scope shape.
    let count = |team: Option<&str>, ds: Option<&str>, c: Option<&str>| CountScope {
        team_id: team.map(str::to_owned),
        dataset_id: ds.map(str::to_owned),
        collection_id: c.map(str::to_owned),
    };
    assert_eq!(s.count(&count(None, None, None)).await.unwrap(), 4);
    assert_eq!(s.count(&count(Some("t1"), None, None)).await.unwrap(), 3);
    assert_eq!(
        s.count(&count(Some("t1"), Some("d1"), None)).await.unwrap(),
        2
    );
    assert_eq!(
        s.count(&count(None, Some("d1"), Some("c1"))).await.unwrap(),
        2
    );

    // Scan: byte order, paging, vectors and payloads exact.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .scan(&ScanRequest {
                after_id: after.clone(),
                limit: 3,
                with_vectors: true,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.records.iter().cloned());
        match page.next_cursor {
            Some(c) => {
                assert_eq!(Some(&c), page.records.last().map(|r| &r.id));
                after = Some(c);
            }
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["B", "_", "a", "x"]);
    assert_eq!(seen[0].vector, records[0].vector);
    assert_eq!(seen[0].payload, records[0].payload);
    assert!(seen[1].created_at_ms >= before, "created_at_ms 0 means now");
    let page = s
        .scan(&ScanRequest {
            team_id: Some("t1".into()),
            created_from_ms: Some(1_700_000_000_000),
            created_to_ms: Some(1_700_000_000_001),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["B", "a"]);
    assert!(page.records.iter().all(|r| r.vector.is_empty()));
    assert_eq!(page.next_cursor, None);

    // A record never changes team: another team's upsert of "a" is refused
    // as a whole (its new record "n" is not written either).
    let mut moved = records[2].clone();
    moved.team_id = "t2".into();
    moved.payload = Some(serde_json::json!({"moved": true}));
    let fresh = record("n", "t2", "d1", "c1", v(0.5));
    let err = s.upsert(&[fresh, moved]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("records[1].id"), "{err}");
    assert_eq!(s.count(&count(Some("t2"), None, None)).await.unwrap(), 1);
    assert_eq!(s.count(&count(Some("t1"), None, None)).await.unwrap(), 3);

    // Deletes stay within the team.
    let by_ids = DeleteSelector::Ids {
        team_id: "t1".into(),
        ids: vec!["a".into(), "x".into(), "B".into(), "nope".into()],
    };
    assert_eq!(s.delete(&by_ids).await.unwrap(), 2, "a and B belong to t1");
    let by_collections = DeleteSelector::Scope {
        team_id: "t2".into(),
        dataset_ids: vec!["d1".into(), "d2".into()],
        collection_ids: Some(vec!["c1".into()]),
    };
    assert_eq!(s.delete(&by_collections).await.unwrap(), 1);
    let by_datasets = DeleteSelector::Scope {
        team_id: "t1".into(),
        dataset_ids: vec!["d1".into()],
        collection_ids: None,
    };
    assert_eq!(s.delete(&by_datasets).await.unwrap(), 1);
    assert_eq!(s.count(&CountScope::default()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_recorded_and_checked() {
    let url = url_or_skip!();
    let spec = exact_spec(8, Metric::InnerProduct);
    let t = Table::with_spec(&url, "schema", spec).await;
    let table = t.store.table().to_owned();
    let mut raw = common::raw(&url).await;

    let row = sqlx::query(
        "SELECT obj_description($1::regclass, 'pg_class') AS comment, \
         (SELECT count(*) FROM pg_indexes WHERE tablename = $2) AS indexes",
    )
    .bind(&table)
    .bind(&table)
    .fetch_one(&mut raw)
    .await
    .unwrap();
    let comment: String = row.get("comment");
    assert!(
        comment.contains("\"dim\":8") && comment.contains("inner_product"),
        "{comment}"
    );
    assert_eq!(
        row.get::<i64, _>("indexes"),
        4,
        "pkey, hnsw, scope, created"
    );

    let mismatch = |err: Error| match err {
        Error::SchemaMismatch {
            expected, found, ..
        } => (expected, found),
        other => panic!("expected SchemaMismatch, got {other:?}"),
    };
    let other = t.reopen(|c| c).await;
    let (expected, found) = mismatch(
        other
            .ensure_schema(&exact_spec(4, Metric::InnerProduct))
            .await
            .unwrap_err(),
    );
    assert!(expected.contains("dim 4"), "{expected}");
    assert!(
        found.contains("dim 8") && found.contains("inner_product"),
        "{found}"
    );
    let (_, found) = mismatch(
        other
            .ensure_schema(&exact_spec(8, Metric::L2))
            .await
            .unwrap_err(),
    );
    assert!(found.contains("inner_product"), "{found}");
    // Other HNSW parameters are not a mismatch.
    let mut tuned = spec;
    tuned.hnsw.ef_search = 10;
    tuned.hnsw.m = 8;
    other.ensure_schema(&tuned).await.unwrap();

    // Without the comment (a table made by hand), the column type and the
    // index's operator class tell.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON TABLE {table} IS NULL"
    )))
    .execute(&mut raw)
    .await
    .unwrap();
    let (_, found) = mismatch(
        other
            .ensure_schema(&exact_spec(16, Metric::InnerProduct))
            .await
            .unwrap_err(),
    );
    assert!(found.contains("dim 8"), "{found}");
    let (_, found) = mismatch(
        other
            .ensure_schema(&exact_spec(8, Metric::Cosine))
            .await
            .unwrap_err(),
    );
    assert!(found.contains("inner_product"), "{found}");
    other.ensure_schema(&spec).await.unwrap();
    let comment: Option<String> =
        sqlx::query_scalar("SELECT obj_description($1::regclass, 'pg_class')")
            .bind(&table)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert!(comment.is_some(), "ensure_schema restores the comment");

    // pgvector's HNSW limit is checked up front.
    let err = other
        .ensure_schema(&IndexSpec::new(2001, Metric::Cosine))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "dim"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_table_names_get_distinct_index_names() {
    let url = url_or_skip!();
    let mut table = common::unique_table("long");
    while table.len() < 63 {
        table.push('x');
    }
    let store = PgStore::connect(PgConfig::new("pg-test", &url).with_table(&table))
        .await
        .unwrap();
    let guard = Table {
        store,
        url: url.clone(),
    };
    guard
        .store
        .ensure_schema(&exact_spec(4, Metric::L2))
        .await
        .unwrap();
    let mut raw = common::raw(&url).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = $1")
        .bind(&table)
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable_and_connect_is_lazy() {
    if common::pg_url().is_none() {
        return;
    }
    // Nothing listens on port 1.
    let mut config = PgConfig::new("pg-down", "postgres://u:p@127.0.0.1:1/db");
    config.acquire_timeout_ms = 300;
    let store = PgStore::connect(config).await.unwrap();
    let started = Instant::now();
    let err = store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = store.health().await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_reported() {
    let url = url_or_skip!();
    let Some(rest) = url.split_once('@').map(|(_, rest)| rest) else {
        return;
    };
    let mut config = PgConfig::new("pg-auth", format!("postgres://vectorgate:wrong@{rest}"));
    config.acquire_timeout_ms = 300;
    let store = PgStore::connect(config).await.unwrap();
    let err = store.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("28P01"), "{err}");
}

/// One connection, held by a call blocked on a lock: the next call starves
/// (Timeout, visible in the pool stats); the blocked one hits the statement
/// timeout (Timeout); a backend terminated mid-call is Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starvation_statement_timeout_and_terminated_backend() {
    let url = url_or_skip!();
    // Opening a connection costs ~180 ms of client CPU in a debug build
    // (see common::TEST_ACQUIRE_TIMEOUT_MS), more under load: the acquire
    // timeout leaves room for it, and the two calls that must open the one
    // connection (the first, and the one after the backend was killed) are
    // retried. Starvation is then a wait for a *busy* connection, which the
    // statement timeout (3 s) outlasts.
    let t = Table::new(&url, "pool", |mut c| {
        c.pool_max_connections = 1;
        c.acquire_timeout_ms = 1000;
        c.statement_timeout_ms = 3000;
        c
    })
    .await;
    let s = t.store.clone();
    let spec = exact_spec(4, Metric::Cosine);
    retry_connecting("ensure_schema", || s.ensure_schema(&spec)).await;
    let table = s.table().to_owned();

    let mut locker = common::raw(&url).await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut locker)
    .await
    .unwrap();

    let blocked = tokio::spawn({
        let s = s.clone();
        async move { s.count(&CountScope::default()).await }
    });
    // Wait until the blocked call holds the only connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.pool_stats().size < 1 || s.pool_stats().idle > 0 {
        assert!(
            Instant::now() < deadline,
            "the first call never got its connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.count(&CountScope::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = s.pool_stats();
    assert_eq!(
        (stats.size, stats.max, stats.waiting),
        (1, 1, 1),
        "{stats:?}"
    );
    let starved = waiting.await.unwrap().unwrap_err();
    assert_eq!(starved.kind(), ErrorKind::Timeout, "{starved}");
    assert!(starved.to_string().contains("starvation"), "{starved}");

    let timed_out = blocked.await.unwrap().unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::Timeout, "{timed_out}");
    assert!(timed_out.to_string().contains("57014"), "{timed_out}");

    // Now terminate the backend of a blocked call.
    let blocked = tokio::spawn({
        let s = s.clone();
        async move { s.count(&CountScope::default()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid: i32 = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE 'SELECT count(*) FROM ' || $1 || '%'",
        )
        .bind(&table)
        .fetch_optional(&mut common::raw(&url).await)
        .await
        .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the blocked call never showed up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Terminating another role's backend needs pg_signal_backend; the test
    // role owns both sessions, which is enough.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut common::raw(&url).await)
        .await
        .unwrap();
    assert!(killed);
    let err = blocked.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    // The pool heals: the dead connection is replaced.
    let all = CountScope::default();
    let n = retry_connecting("count after the kill", || s.count(&all)).await;
    assert_eq!(n, 0);
}

/// `call` until it succeeds, while it fails only because a connection could
/// not be opened in time (a loaded machine); any other error fails the test.
async fn retry_connecting<T, F: std::future::Future<Output = vectorgate::Result<T>>>(
    what: &str,
    mut call: impl FnMut() -> F,
) -> T {
    for _ in 0..10 {
        match call().await {
            Ok(value) => return value,
            Err(err) if err.kind() == ErrorKind::Timeout && err.to_string().contains("connect") => {
                eprintln!("{what}: {err}; retrying");
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
    panic!("{what}: no connection in 10 tries");
}

/// The table changed behind a handle's back: dropped (42P01 → Unavailable,
/// the store fails over, naming ensure_schema), or recreated with another
/// dimension (pgvector's dimension error, 22000 → InvalidInput).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_changed_behind_the_store() {
    let url = url_or_skip!();
    let t = Table::with_spec(&url, "gone", exact_spec(8, Metric::Cosine)).await;
    let other = t.reopen(|c| c).await;
    other
        .ensure_schema(&exact_spec(8, Metric::Cosine))
        .await
        .unwrap();
    t.store.drop_table().await.unwrap();
    let err = other.count(&CountScope::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("ensure_schema"), "{err}");
    let err = other.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");

    t.store
        .ensure_schema(&exact_spec(4, Metric::Cosine))
        .await
        .unwrap();
    let err = other
        .upsert(&[record("a", "t", "d", "c", vec![1.0; 8])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("dimensions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_server() {
    let url = url_or_skip!();
    let t = Table::with_spec(&url, "health", exact_spec(4, Metric::Cosine)).await;
    let report = t.store.health().await.unwrap();
    assert!(report.latency < Duration::from_secs(2));
    assert!(report.detail.contains("PostgreSQL "), "{}", report.detail);
    assert!(report.detail.contains("pgvector 0."), "{}", report.detail);
    eprintln!("{}", report.detail);
}

/// A server that answers but cannot serve: every refusal is `Unavailable`
/// (the manager fails over) naming the fix, and `health()` sees it before
/// any call does. Per table and per session, so it runs beside other tests:
/// the server-wide variants (`ALTER SYSTEM`) are the workspace's
/// `chaos_gray_postgres` tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_unavailable_and_health_sees_them() {
    let url = url_or_skip!();
    let t = Table::with_spec(&url, "gray", exact_spec(4, Metric::Cosine)).await;
    let table = t.store.table().to_owned();
    let s = &t.store;
    let rec = || record("a", "t", "d", "c", vec![1.0, 0.0, 0.0, 0.0]);
    s.upsert(&[rec()]).await.unwrap();
    s.health().await.unwrap();
    let mut raw = common::raw(&url).await;
    let exec = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));

    // Privileges revoked from the role, which owns the table: REVOKE works
    // on an owner's own privileges (the owner may always GRANT them back).
    exec(format!(
        "REVOKE INSERT, UPDATE, DELETE ON {table} FROM CURRENT_USER"
    ))
    .execute(&mut raw)
    .await
    .unwrap();
    let err = s.upsert(&[rec()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("GRANT SELECT, INSERT"), "{err}");
    let err = s.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("lacks INSERT, UPDATE, DELETE"),
        "{err}"
    );
    assert_eq!(s.count(&CountScope::default()).await.unwrap(), 1);
    exec(format!("REVOKE SELECT ON {table} FROM CURRENT_USER"))
        .execute(&mut raw)
        .await
        .unwrap();
    let err = s.count(&CountScope::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    exec(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO CURRENT_USER"
    ))
    .execute(&mut raw)
    .await
    .unwrap();
    s.health().await.unwrap();
    s.upsert(&[rec()]).await.unwrap();

    // Renamed away and back.
    exec(format!("ALTER TABLE {table} RENAME TO {table}_away"))
        .execute(&mut raw)
        .await
        .unwrap();
    let err = s
        .recall(&query("t", &["d"], vec![1.0; 4], 3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = s.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("rename it back"), "{err}");
    exec(format!("ALTER TABLE {table}_away RENAME TO {table}"))
        .execute(&mut raw)
        .await
        .unwrap();
    s.health().await.unwrap();
    assert_eq!(
        s.recall(&query("t", &["d"], vec![1.0; 4], 3))
            .await
            .unwrap()
            .len(),
        1
    );

    // A read-only session (as after a switchover to a standby, or with
    // default_transaction_read_only): reads serve, writes and health refuse.
    let separator = if url.contains('?') { '&' } else { '?' };
    let read_only = t
        .reopen(|c| PgConfig {
            url: format!("{url}{separator}options=-c%20default_transaction_read_only%3Don"),
            ..c
        })
        .await;
    let err = read_only
        .ensure_schema(&exact_spec(4, Metric::Cosine))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    let err = read_only.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("transaction_read_only"), "{err}");
    read_only.close().await;
}

/// Several handles (think: replicas of a service starting together) create
/// one table at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensure_schema() {
    let url = url_or_skip!();
    let t = Table::new(&url, "race", |c| c).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = t.reopen(|c| c).await;
        tasks.spawn(async move { store.ensure_schema(&exact_spec(8, Metric::L2)).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
}

/// An upsert batch is one statement: 1000 records of 768 dimensions in one
/// round trip, timed for the record.
///
/// The statement's server time is the HNSW index build for 1000 768-d
/// vectors (m 16, ef_construction 64): about 4-5 s of one core here, on an
/// idle 2-core machine. Under the default `statement_timeout_ms` (5000) it
/// was cancelled (SQLSTATE 57014, `Timeout`) whenever other tests loaded the
/// machine — the flake of issue 12, item 11. What this test checks is that
/// the batch is one statement, not how fast a loaded machine builds an
/// index, so it gives the statement a budget that no load reaches (the
/// client-side bound follows: acquire + statement + 1 s); the measured time
/// is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_upsert_is_one_statement() {
    let url = url_or_skip!();
    let dim = 768;
    let t = Table::new(&url, "batch", |c| PgConfig {
        statement_timeout_ms: 120_000,
        ..c
    })
    .await;
    t.store
        .ensure_schema(&exact_spec(dim, Metric::Cosine))
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let records: Vec<Record> = (0..1000)
        .map(|i| {
            record(
                &format!("b{i}"),
                "t",
                "d",
                "c",
                random_vector(&mut rng, dim),
            )
        })
        .collect();
    let started = Instant::now();
    t.store.upsert(&records).await.unwrap();
    let first = started.elapsed();
    let started = Instant::now();
    t.store.upsert(&records).await.unwrap();
    let second = started.elapsed();
    eprintln!("1000 x {dim}-d upsert: insert {first:?}, update {second:?}");
    assert_eq!(t.store.count(&CountScope::default()).await.unwrap(), 1000);
    let mut raw = common::raw(&url).await;
    let calls: Option<i64> =
        sqlx::query_scalar("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = $1")
            .bind(t.store.table())
            .fetch_optional(&mut raw)
            .await
            .unwrap();
    eprintln!("n_tup_ins: {calls:?}");
}

/// A database without pgvector, where the store's role may not create it:
/// `ensure_schema` fails with `Internal` and says how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_extension_names_the_fix() {
    let url = url_or_skip!();
    let database = common::unique_table("noext");
    let Some((base, _)) = url.rsplit_once('/') else {
        panic!("{url} has no database part");
    };
    let mut raw = common::raw(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut raw)
        .await
        .unwrap();
    let store = PgStore::connect(PgConfig::new("pg-noext", format!("{base}/{database}")))
        .await
        .unwrap();
    let result = store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&mut raw)
        .await
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("pgvector") && text.contains("CREATE EXTENSION vector"),
        "{text}"
    );
    eprintln!("{text}");
}
