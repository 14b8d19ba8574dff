//! The OceanBase store beyond the shared suite: the recall plan (the vector
//! index must serve every metric), schema checks against tables made by
//! hand, the server's own refusals, and failures without a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Executor, Row};
use std::time::{Duration, Instant};
use vectorgate::{
    Error, ErrorKind, IndexSpec, Metric, RecallQuery, Record, ScanRequest, VectorStore,
};
use vectorgate_oceanbase::{META_TABLE, OceanBaseConfig, OceanBaseStore};

fn raw_pool(url: &str) -> MySqlPool {
    let options: MySqlConnectOptions = url.parse().unwrap();
    MySqlPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.collation("utf8mb4_general_ci"))
}

fn vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

fn record(id: &str, team: &str, dataset: &str, collection: &str, v: Vec<f32>) -> Record {
    Record {
        id: id.into(),
        team_id: team.into(),
        dataset_id: dataset.into(),
        collection_id: collection.into(),
        vector: v,
        created_at_ms: 1_700_000_000_000,
        payload: None,
    }
}

/// `EXPLAIN` of the statement `recall` runs, with the query's parameters
/// bound in the same order.
async fn explain(pool: &MySqlPool, sql: &str, q: &RecallQuery, collections: &[&str]) -> String {
    let literal = format!(
        "[{}]",
        q.vector
            .iter()
            .map(f32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut query = sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}")))
        .bind(literal)
        .bind(q.team_id.clone());
    for d in &q.dataset_ids {
        query = query.bind(d.clone());
    }
    for c in collections {
        query = query.bind((*c).to_owned());
    }
    let rows = query.bind(q.limit).fetch_all(pool).await.unwrap();
    rows.iter()
        .map(|r| r.try_get_unchecked::<String, _>(0).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The measured fact this backend is built on: ordering by
/// `negative_inner_product` / `l2_distance` / `cosine_distance` ascending
/// with `APPROXIMATE LIMIT` is served by the HNSW index, with the scope
/// filter applied inside the index scan, for every metric and every kind
/// of collection filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_plan_uses_the_vector_index_for_every_metric() {
    let Some(url) = common::url_or_skip("recall_plan_uses_the_vector_index_for_every_metric")
    else {
        return;
    };
    let pool = raw_pool(&url);
    let mut rng = StdRng::seed_from_u64(7);
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        let table = common::unique_table();
        let store = common::store(&url, "oceanbase-plan", &table).await;
        store
            .ensure_schema(&IndexSpec::new(16, metric))
            .await
            .unwrap();
        let records: Vec<Record> = (0..200)
            .map(|i| {
                record(
                    &format!("r-{i:03}"),
                    if i % 2 == 0 { "team-a" } else { "team-b" },
                    &format!("ds-{}", i % 5),
                    &format!("c-{}", i % 3),
                    vector(&mut rng, 16),
                )
            })
            .collect();
        store.upsert(&records).await.unwrap();

        let base = RecallQuery {
            team_id: "team-a".into(),
            dataset_ids: vec!["ds-1".into(), "ds-2".into()],
            vector: vector(&mut rng, 16),
            limit: 10,
            ..RecallQuery::default()
        };
        // (what, include, exclude, the collection ids bound in order)
        type Case<'a> = (&'a str, Option<Vec<String>>, Vec<String>, Vec<&'a str>);
        let cases: [Case<'_>; 3] = [
            ("no collection filter", None, vec![], vec![]),
            (
                "include list",
                Some(vec!["c-0".into(), "c-2".into()]),
                vec![],
                vec!["c-0", "c-2"],
            ),
            ("exclude list", None, vec!["c-1".into()], vec!["c-1"]),
        ];
        for (desc, include, exclude, bound) in cases {
            let q = RecallQuery {
                collection_ids: include,
                exclude_collection_ids: exclude,
                ..base.clone()
            };
            let sql = store.recall_sql(&q).unwrap().unwrap();
            let plan = explain(&pool, &sql, &q, &bound).await;
            let first_operator = plan
                .lines()
                .find(|l| l.starts_with("|0 "))
                .unwrap_or_default();
            assert!(
                first_operator.contains("VECTOR INDEX"),
                "[{metric}, {desc}] the recall plan must start with a vector index scan\nSQL: {sql}\nplan:\n{plan}"
            );
            assert!(
                !plan.contains("TOP-N SORT") && !plan.contains("TABLE FULL SCAN"),
                "[{metric}, {desc}] the recall plan must not sort or scan the table itself\nplan:\n{plan}"
            );
            // And the statement answers, in the project's score order.
            let hits = store.recall(&q).await.unwrap();
            assert_eq!(hits.len(), 10, "[{metric}, {desc}]");
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
        store.drop_table().await.unwrap();
        store.close().await;
    }
    pool.close().await;
}

/// A row written without the exact `vector_f32` copy (by another tool) is
/// still scanned: its vector is parsed from the server's text, which is
/// exact to six significant digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_parses_the_vector_text_when_the_exact_copy_is_missing() {
    let Some(url) =
        common::url_or_skip("scan_parses_the_vector_text_when_the_exact_copy_is_missing")
    else {
        return;
    };
    let table = common::unique_table();
    let store = common::store(&url, "oceanbase-text", &table).await;
    store
        .ensure_schema(&IndexSpec::new(3, Metric::L2))
        .await
        .unwrap();
    let exact = record("exact", "t", "d", "c", vec![0.123_456_79, -2.5, 1e-7]);
    store.upsert(std::slice::from_ref(&exact)).await.unwrap();
    let pool = raw_pool(&url);
    pool.execute(AssertSqlSafe(format!(
        "INSERT INTO `{table}` (id, team_id, dataset_id, collection_id, vector, created_at_ms, payload) \
         VALUES ('text-only', 't', 'd', 'c', '[0.123456789,-2.5,0.0000001]', 5, '{{\"a\": [1, 2]}}')"
    )))
    .await
    .unwrap();
    let page = store
        .scan(&ScanRequest {
            limit: 10,
            with_vectors: true,
            ..ScanRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(
        page.records[0], exact,
        "the exact copy is returned bit for bit"
    );
    let text_only = &page.records[1];
    assert_eq!(text_only.id, "text-only");
    assert_eq!(text_only.vector, vec![0.123_457, -2.5, 1e-7]);
    assert_eq!(text_only.created_at_ms, 5);
    assert_eq!(text_only.payload, Some(serde_json::json!({ "a": [1, 2] })));
    // drop_table forgets the table: ensure_schema is needed again.
    store.drop_table().await.unwrap();
    let err = store.count(&Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("ensure_schema"), "{err}");
    store
        .ensure_schema(&IndexSpec::new(5, Metric::Cosine))
        .await
        .unwrap();
    assert_eq!(store.count(&Default::default()).await.unwrap(), 0);
    store.drop_table().await.unwrap();
    store.close().await;
    pool.close().await;
}

/// A table made by hand, without a `vectorgate_meta` row, is checked by its
/// vector column; a table whose meta row lies (dim 8 recorded, VECTOR(4)
/// column) gets the server's own refusal, error 7600, as `InvalidInput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_tables_are_checked_and_server_refusals_are_invalid_input() {
    let Some(url) =
        common::url_or_skip("hand_made_tables_are_checked_and_server_refusals_are_invalid_input")
    else {
        return;
    };
    let pool = raw_pool(&url);
    let ddl = |table: &str| {
        format!(
            "CREATE TABLE `{table}` (id VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY, \
             team_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL, dataset_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL, \
             collection_id VARCHAR(64) COLLATE utf8mb4_bin NOT NULL, vector VECTOR(4) NOT NULL, vector_f32 BLOB NULL, \
             created_at_ms BIGINT NOT NULL, payload JSON NULL)"
        )
    };

    // No meta row: the column says dim 4.
    let table = common::unique_table();
    pool.execute(AssertSqlSafe(ddl(&table))).await.unwrap();
    let store = common::store(&url, "oceanbase-hand", &table).await;
    match store
        .ensure_schema(&IndexSpec::new(8, Metric::Cosine))
        .await
    {
        Err(Error::SchemaMismatch {
            expected, found, ..
        }) => {
            assert!(expected.contains("dim 8"), "{expected}");
            assert!(found.contains("dim 4"), "{found}");
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    // The right dimension adopts the table (and records it).
    let store = common::store(&url, "oceanbase-hand", &table).await;
    store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap();
    let recorded: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT dim FROM `{META_TABLE}` WHERE table_name = ?"
    )))
    .bind(&table)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 4);

    // A meta row that disagrees with the column: the server refuses the data.
    let table = common::unique_table();
    pool.execute(AssertSqlSafe(ddl(&table))).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO `{META_TABLE}` (table_name, dim, metric, hnsw_m, hnsw_ef_construction, created_at_ms) VALUES (?, 8, 'l2', 16, 64, 0)"
    )))
    .bind(&table)
    .execute(&pool)
    .await
    .unwrap();
    let store = common::store(&url, "oceanbase-liar", &table).await;
    store
        .ensure_schema(&IndexSpec::new(8, Metric::L2))
        .await
        .unwrap();
    let err = store
        .upsert(&[record("x", "t", "d", "c", vec![0.5; 8])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("7600"), "{err}");
    store.drop_table().await.unwrap();
    store.close().await;
    pool.close().await;
}

/// No server at all: the store is created (lazy pool), and every call
/// fails as retriable `Unavailable` within the connect timeout.
#[tokio::test]
async fn a_server_that_is_down_is_unavailable_quickly() {
    // Port 1 on loopback: nothing listens there.
    let config = OceanBaseConfig {
        connect_timeout_ms: 300,
        ..OceanBaseConfig::new("down", "mysql://root@127.0.0.1:1/test")
    };
    let store = OceanBaseStore::connect(config).await.unwrap();
    let started = Instant::now();
    let err = store.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retriable());
    let err = store
        .ensure_schema(&IndexSpec::new(8, Metric::Cosine))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Before ensure_schema succeeded, data calls say what to do.
    let err = store
        .count(&vectorgate::CountScope::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ensure_schema"), "{err}");
}

#[tokio::test]
async fn bad_configuration_is_invalid_input() {
    for (config, field) in [
        (OceanBaseConfig::default().with_table("Bad-Name"), "table"),
        (OceanBaseConfig::default().with_table(META_TABLE), "table"),
        (OceanBaseConfig::new("x", "postgres://nope"), "url"),
        (OceanBaseConfig::new("", "mysql://root@h/db"), "name"),
    ] {
        match OceanBaseStore::connect(config).await {
            Err(Error::InvalidInput { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected InvalidInput on {field}, got {other:?}"),
        }
    }
}

/// A server that answers but cannot serve this store — table renamed away,
/// a user without write privileges — is `Unavailable` (the manager fails
/// over) naming the fix, and `health()` sees it before any call does. Per
/// table and per user, so it runs beside other tests; `read_only`, which is
/// server-wide, is in `chaos.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_unavailable_and_health_sees_them() {
    let Some(url) = common::url_or_skip("refusals_are_unavailable_and_health_sees_them") else {
        return;
    };
    let pool = raw_pool(&url);
    let table = common::unique_table();
    let store = common::store(&url, "oceanbase-gray", &table).await;
    store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap();
    store
        .upsert(&[record("a", "t", "d", "c", vec![1.0, 0.0, 0.0, 0.0])])
        .await
        .unwrap();
    let report = store.health().await.unwrap();
    assert!(
        report.detail.contains("present, writable"),
        "{}",
        report.detail
    );
    let all = vectorgate::CountScope::default();

    // Renamed away and back.
    pool.execute(AssertSqlSafe(format!(
        "RENAME TABLE `{table}` TO `{table}_away`"
    )))
    .await
    .unwrap();
    let err = store.count(&all).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("1146"), "{err}");
    assert!(err.to_string().contains("rename it back"), "{err}");
    let err = store.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");
    pool.execute(AssertSqlSafe(format!(
        "RENAME TABLE `{table}_away` TO `{table}`"
    )))
    .await
    .unwrap();
    store.health().await.unwrap();
    assert_eq!(store.count(&all).await.unwrap(), 1);

    // A user that may only read the table.
    // Unique per run: a name a crashed earlier run left behind, or one
    // OceanBase's schema cache still remembers right after a DROP, makes
    // CREATE USER fail with 1396.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let user = format!("vgu_{}_{nanos}", std::process::id());
    let database: String = sqlx::query_scalar("SELECT CAST(DATABASE() AS CHAR)")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.execute(AssertSqlSafe(format!("DROP USER IF EXISTS '{user}'@'%'")))
        .await
        .unwrap();
    let mut created = Err(String::new());
    for _ in 0..10 {
        created = pool
            .execute(AssertSqlSafe(format!(
                "CREATE USER '{user}'@'%' IDENTIFIED BY 'vgpw'"
            )))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if created.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    created.unwrap();
    pool.execute(AssertSqlSafe(format!(
        "GRANT SELECT ON `{database}`.`{table}` TO '{user}'@'%'"
    )))
    .await
    .unwrap();
    let Some(rest) = url.strip_prefix("mysql://").and_then(|r| r.split_once('@')) else {
        panic!("{url}: expected mysql://user@host/db");
    };
    let reader = common::store(
        &format!("mysql://{user}:vgpw@{}", rest.1),
        "oceanbase-reader",
        &table,
    )
    .await;
    let err = reader.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("lacks INSERT, UPDATE, DELETE"),
        "{err}"
    );
    // ensure_schema needs CREATE: refused, retriable, names the GRANT.
    let err = reader
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("GRANT"), "{err}");
    pool.execute(AssertSqlSafe(format!(
        "GRANT INSERT, UPDATE, DELETE ON `{database}`.`{table}` TO '{user}'@'%'"
    )))
    .await
    .unwrap();
    let report = reader.health().await.unwrap();
    assert!(
        report.detail.contains("present, writable"),
        "{}",
        report.detail
    );
    reader.close().await;
    pool.execute(AssertSqlSafe(format!("DROP USER '{user}'@'%'")))
        .await
        .unwrap();
    store.drop_table().await.unwrap();
    store.close().await;
    pool.close().await;
}
