//! The embedded store through its public API, on real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tempfile::TempDir;
use vectorgate::{
    CountScope, DeleteSelector, Error, ErrorKind, IndexSpec, Metric, RecallQuery, Record,
    ScanRequest, VectorStore,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

async fn open(dir: &TempDir, spec: IndexSpec) -> EmbeddedStore {
    let store = EmbeddedStore::open(EmbeddedConfig::new("local", dir.path().join("vectors.db")))
        .await
        .unwrap();
    store.ensure_schema(&spec).await.unwrap();
    store
}

fn random_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn record(id: &str, team: &str, dataset: &str, collection: &str, vector: Vec<f32>) -> Record {
    Record {
        id: id.into(),
        team_id: team.into(),
        dataset_id: dataset.into(),
        collection_id: collection.into(),
        vector,
        created_at_ms: 1_000,
        payload: Some(json!({ "text": format!("chunk {id}") })),
    }
}

fn query(team: &str, datasets: &[&str], vector: Vec<f32>, limit: u32) -> RecallQuery {
    RecallQuery {
        team_id: team.into(),
        dataset_ids: datasets.iter().map(|d| d.to_string()).collect(),
        vector,
        limit,
        ..Default::default()
    }
}

fn all() -> CountScope {
    CountScope::default()
}

/// 300 records: teams t0/t1, datasets d0..d2, collections c0..c4.
fn corpus(dim: usize, seed: u64) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..300)
        .map(|i| {
            record(
                &format!("r{i:03}"),
                &format!("t{}", i % 2),
                &format!("d{}", i % 3),
                &format!("c{}", i % 5),
                random_vector(&mut rng, dim),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_operation_before_ensure_schema_says_so() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new("local", dir.path().join("v.db")))
        .await
        .unwrap();
    assert_eq!(store.kind(), "embedded");
    assert_eq!(store.name(), "local");
    let errors = [
        store
            .upsert(&[record("a", "t", "d", "c", vec![1.0; 4])])
            .await
            .unwrap_err(),
        store
            .recall(&query("t", &["d"], vec![1.0; 4], 1))
            .await
            .unwrap_err(),
        store
            .delete(&DeleteSelector::Ids {
                team_id: "t".into(),
                ids: vec!["a".into()],
            })
            .await
            .unwrap_err(),
        store.count(&all()).await.unwrap_err(),
        store
            .scan(&ScanRequest {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        store.health().await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
        assert!(
            err.to_string().contains("call ensure_schema first"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn creates_the_parent_directory() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a/b/c/vectors.db");
    let store = EmbeddedStore::open(EmbeddedConfig::new("local", &path))
        .await
        .unwrap();
    store
        .ensure_schema(&IndexSpec::new(4, Metric::L2))
        .await
        .unwrap();
    assert!(path.is_file());
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = TempDir::new().unwrap();
    let spec = IndexSpec::new(16, Metric::Cosine);
    let records = corpus(16, 1);
    {
        let store = open(&dir, spec).await;
        store.upsert(&records).await.unwrap();
        store
            .delete(&DeleteSelector::Ids {
                team_id: "t0".into(),
                ids: vec!["r000".into()],
            })
            .await
            .unwrap();
    }
    let store = open(&dir, spec).await;
    assert_eq!(store.count(&all()).await.unwrap(), 299);
    let page = store
        .scan(&ScanRequest {
            limit: 10_000,
            with_vectors: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let expected: Vec<&Record> = records.iter().skip(1).collect();
    assert_eq!(page.records.len(), expected.len());
    for (got, want) in page.records.iter().zip(expected) {
        assert_eq!(got, want);
    }
    // The search index was rebuilt from the file.
    let target = &records[7];
    let hits = store
        .recall(&query(
            &target.team_id,
            &[&target.dataset_id],
            target.vector.clone(),
            1,
        ))
        .await
        .unwrap();
    assert_eq!(hits[0].id, target.id);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
}

#[tokio::test]
async fn reopening_with_another_dim_or_metric_is_a_schema_mismatch() {
    let dir = TempDir::new().unwrap();
    drop(open(&dir, IndexSpec::new(8, Metric::Cosine)).await);
    for other in [
        IndexSpec::new(16, Metric::Cosine),
        IndexSpec::new(8, Metric::L2),
    ] {
        let store =
            EmbeddedStore::open(EmbeddedConfig::new("local", dir.path().join("vectors.db")))
                .await
                .unwrap();
        let err = store.ensure_schema(&other).await.unwrap_err();
        match &err {
            Error::SchemaMismatch {
                store,
                expected,
                found,
            } => {
                assert_eq!(store, "local");
                assert_eq!(expected, &other.describe());
                assert_eq!(found, "dim 8, metric cosine");
            }
            other => panic!("expected SchemaMismatch, got {other:?}"),
        }
        // And the store stays unusable rather than half-open.
        assert_eq!(
            store.count(&all()).await.unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
    // The file was not changed by the refused specs.
    let store = open(&dir, IndexSpec::new(8, Metric::Cosine)).await;
    assert_eq!(store.count(&all()).await.unwrap(), 0);
}

#[tokio::test]
async fn ensure_schema_is_idempotent_and_checks_the_loaded_spec() {
    let dir = TempDir::new().unwrap();
    let spec = IndexSpec::new(4, Metric::InnerProduct);
    let store = open(&dir, spec).await;
    store.ensure_schema(&spec).await.unwrap();
    let err = store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
    assert!(
        err.to_string().contains("dim 4, metric inner_product"),
        "{err}"
    );
    let bad = store.ensure_schema(&IndexSpec::new(0, Metric::L2)).await;
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn recall_is_exact_for_every_metric() {
    for (seed, metric) in [
        (10, Metric::Cosine),
        (11, Metric::InnerProduct),
        (12, Metric::L2),
    ] {
        let dir = TempDir::new().unwrap();
        let dim = 24;
        let store = open(&dir, IndexSpec::new(dim as u32, metric)).await;
        let records = corpus(dim, seed);
        store.upsert(&records).await.unwrap();
        let mut rng = StdRng::seed_from_u64(seed + 1);
        for _ in 0..5 {
            let q = random_vector(&mut rng, dim);
            let mut request = query("t1", &["d0", "d1"], q.clone(), 10);
            request.with_payload = true;
            let hits = store.recall(&request).await.unwrap();
            let mut reference: Vec<(f64, &Record)> = records
                .iter()
                .filter(|r| r.team_id == "t1" && r.dataset_id != "d2")
                .map(|r| (metric.reference_score(&q, &r.vector), r))
                .collect();
            reference.sort_by(|a, b| b.0.total_cmp(&a.0));
            assert_eq!(hits.len(), 10);
            for (hit, (score, want)) in hits.iter().zip(&reference) {
                assert_eq!(&hit.id, &want.id, "{metric}");
                assert!((f64::from(hit.score) - score).abs() < 1e-4, "{metric}");
                assert_eq!(hit.dataset_id, want.dataset_id);
                assert_eq!(hit.collection_id, want.collection_id);
                assert_eq!(hit.payload, want.payload);
            }
            request.with_payload = false;
            let bare = store.recall(&request).await.unwrap();
            assert!(bare.iter().all(|h| h.payload.is_none()));
            let ids = |h: &[vectorgate::Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&bare), ids(&hits));
        }
    }
}

#[tokio::test]
async fn recall_honours_collection_filters() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(8, Metric::Cosine)).await;
    let records = corpus(8, 20);
    store.upsert(&records).await.unwrap();
    let q = records[1].vector.clone();

    let mut only = query("t1", &["d0", "d1", "d2"], q.clone(), 1000);
    only.collection_ids = Some(vec!["c1".into(), "c3".into()]);
    only.exclude_collection_ids = vec!["c3".into()];
    let hits = store.recall(&only).await.unwrap();
    let expected = records
        .iter()
        .filter(|r| r.team_id == "t1" && r.collection_id == "c1")
        .count();
    assert_eq!(hits.len(), expected);
    assert!(hits.iter().all(|h| h.collection_id == "c1"));

    let mut except = query("t1", &["d0", "d1", "d2"], q.clone(), 1000);
    except.exclude_collection_ids = vec!["c0".into(), "c4".into()];
    let hits = store.recall(&except).await.unwrap();
    assert!(
        hits.iter()
            .all(|h| h.collection_id != "c0" && h.collection_id != "c4")
    );
    assert_eq!(
        hits.len(),
        records
            .iter()
            .filter(|r| r.team_id == "t1" && r.collection_id != "c0" && r.collection_id != "c4")
            .count()
    );

    let mut nothing = query("t1", &["d0"], q, 10);
    nothing.collection_ids = Some(vec!["c1".into()]);
    nothing.exclude_collection_ids = vec!["c1".into()];
    assert!(store.recall(&nothing).await.unwrap().is_empty());
}

#[tokio::test]
async fn upsert_assigns_ids_in_request_order_and_last_write_wins() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(2, Metric::InnerProduct)).await;
    let mut unnamed = record("", "t", "d", "c", vec![1.0, 0.0]);
    unnamed.created_at_ms = 0;
    let first = record("dup", "t", "d", "c", vec![1.0, 1.0]);
    let mut second = record("dup", "t", "d", "c", vec![5.0, 0.0]);
    second.payload = None;
    let out = store.upsert(&[unnamed, first, second]).await.unwrap();
    assert_eq!(out.ids.len(), 3);
    assert_eq!(out.ids[1..], ["dup", "dup"]);
    assert!(out.ids[0].len() == 36, "a UUID: {}", out.ids[0]);
    assert_eq!(store.count(&all()).await.unwrap(), 2);

    let page = store
        .scan(&ScanRequest {
            limit: 10,
            with_vectors: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let by_id: HashMap<&str, &Record> = page.records.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id["dup"].vector, vec![5.0, 0.0]);
    assert_eq!(by_id["dup"].payload, None);
    let generated = by_id[out.ids[0].as_str()];
    let now = vectorgate::validate::now_ms();
    assert!(generated.created_at_ms > now - 60_000 && generated.created_at_ms <= now);

    let hits = store
        .recall(&query("t", &["d"], vec![1.0, 0.0], 5))
        .await
        .unwrap();
    assert_eq!(hits[0].id, "dup");
    assert_eq!(hits[0].score, 5.0);
}

#[tokio::test]
async fn invalid_input_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(3, Metric::Cosine)).await;
    let good = record("ok", "t", "d", "c", vec![1.0, 0.0, 0.0]);
    let bad = record("bad id", "t", "d", "c", vec![1.0, 0.0, 0.0]);
    let err = store.upsert(&[good.clone(), bad]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let short = record("short", "t", "d", "c", vec![1.0]);
    assert_eq!(
        store.upsert(&[short]).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(store.count(&all()).await.unwrap(), 0);
    let mut q = query("t", &["d"], vec![1.0, 0.0, 0.0], 0);
    assert_eq!(
        store.recall(&q).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    q.limit = 1;
    assert!(store.recall(&q).await.unwrap().is_empty());
}

/// A record never changes team: another team's upsert of its id is refused
/// as a whole, and neither the file nor memory changes; the owner still
/// moves it between datasets, and once it deleted it the id is free.
#[tokio::test]
async fn a_refused_takeover_changes_neither_memory_nor_the_file() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(2, Metric::L2)).await;
    store
        .upsert(&[record("x", "t1", "d", "c", vec![0.0, 0.0])])
        .await
        .unwrap();
    let err = store
        .upsert(&[
            record("y", "t2", "e", "c", vec![0.5, 0.0]),
            record("x", "t2", "e", "c", vec![1.0, 0.0]),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        matches!(&err, Error::Conflict { field, .. } if field == "records[1].id"),
        "{err:?}"
    );
    let recall_as = |team: &'static str, dataset: &'static str| {
        let store = &store;
        async move {
            store
                .recall(&query(team, &[dataset], vec![0.0, 0.0], 5))
                .await
                .unwrap()
        }
    };
    assert!(recall_as("t2", "e").await.is_empty(), "memory took y or x");
    let hits = recall_as("t1", "d").await;
    assert_eq!((hits[0].id.as_str(), hits[0].score), ("x", 0.0));
    assert_eq!(store.count(&all()).await.unwrap(), 1);
    // The file agrees: a fresh handle loads the same single record.
    drop(store);
    let store = open(&dir, IndexSpec::new(2, Metric::L2)).await;
    let page = store
        .scan(&ScanRequest {
            limit: 10,
            with_vectors: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(
        (
            page.records[0].team_id.as_str(),
            page.records[0].dataset_id.as_str()
        ),
        ("t1", "d")
    );
    // The owner moves it to another dataset, memory follows.
    store
        .upsert(&[record("x", "t1", "e", "c", vec![1.0, 0.0])])
        .await
        .unwrap();
    let recall = |team: &'static str, dataset: &'static str| {
        let store = &store;
        async move {
            store
                .recall(&query(team, &[dataset], vec![0.0, 0.0], 5))
                .await
                .unwrap()
        }
    };
    assert!(recall("t1", "d").await.is_empty());
    assert_eq!(recall("t1", "e").await[0].score, -1.0);
    // Deleted by its owner, the id is free for another team.
    let deleted = store
        .delete(&DeleteSelector::Ids {
            team_id: "t1".into(),
            ids: vec!["x".into()],
        })
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    store
        .upsert(&[record("x", "t2", "e", "c", vec![1.0, 0.0])])
        .await
        .unwrap();
    assert!(recall("t1", "e").await.is_empty());
    assert_eq!(recall("t2", "e").await[0].id, "x");
}

#[tokio::test]
async fn deletes_stay_inside_the_team() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(8, Metric::Cosine)).await;
    let records = corpus(8, 30);
    store.upsert(&records).await.unwrap();

    // Ids of both teams, deleted as t0: only t0's go.
    let ids: Vec<String> = records[..10].iter().map(|r| r.id.clone()).collect();
    let deleted = store
        .delete(&DeleteSelector::Ids {
            team_id: "t0".into(),
            ids: ids.clone(),
        })
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    assert_eq!(store.count(&all()).await.unwrap(), 295);
    let scope = |team: &str| CountScope {
        team_id: Some(team.into()),
        ..Default::default()
    };
    assert_eq!(store.count(&scope("t1")).await.unwrap(), 150);

    // Scoped: one dataset, two collections.
    let deleted = store
        .delete(&DeleteSelector::Scope {
            team_id: "t1".into(),
            dataset_ids: vec!["d1".into()],
            collection_ids: Some(vec!["c0".into(), "c2".into()]),
        })
        .await
        .unwrap();
    let expected = records
        .iter()
        .filter(|r| {
            r.team_id == "t1"
                && r.dataset_id == "d1"
                && (r.collection_id == "c0" || r.collection_id == "c2")
        })
        .count() as u64;
    assert_eq!(deleted, expected);
    let hits = store
        .recall(&query("t1", &["d1"], records[1].vector.clone(), 1000))
        .await
        .unwrap();
    assert!(
        hits.iter()
            .all(|h| h.collection_id != "c0" && h.collection_id != "c2")
    );
    assert_eq!(hits.len() as u64, 50 - expected);

    // Whole datasets; memory follows.
    let deleted = store
        .delete(&DeleteSelector::Scope {
            team_id: "t1".into(),
            dataset_ids: vec!["d0".into(), "d1".into(), "d2".into()],
            collection_ids: None,
        })
        .await
        .unwrap();
    assert_eq!(deleted, 150 - expected);
    assert_eq!(store.count(&scope("t1")).await.unwrap(), 0);
    assert!(
        store
            .recall(&query(
                "t1",
                &["d0", "d1", "d2"],
                records[1].vector.clone(),
                10
            ))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count(&scope("t0")).await.unwrap(), 145);
}

#[tokio::test]
async fn count_by_scope() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(4, Metric::L2)).await;
    let records = corpus(4, 40);
    store.upsert(&records).await.unwrap();
    let scopes = [
        (None, None, None),
        (Some("t0"), None, None),
        (Some("t0"), Some("d1"), None),
        (Some("t1"), Some("d2"), Some("c3")),
        (None, Some("d0"), None),
        (None, None, Some("c4")),
        (Some("nobody"), None, None),
    ];
    for (team, dataset, collection) in scopes {
        let expected = records
            .iter()
            .filter(|r| team.is_none_or(|t| r.team_id == t))
            .filter(|r| dataset.is_none_or(|d| r.dataset_id == d))
            .filter(|r| collection.is_none_or(|c| r.collection_id == c))
            .count() as u64;
        let scope = CountScope {
            team_id: team.map(Into::into),
            dataset_id: dataset.map(Into::into),
            collection_id: collection.map(Into::into),
        };
        assert_eq!(store.count(&scope).await.unwrap(), expected, "{scope:?}");
    }
}

#[tokio::test]
async fn scan_walks_by_id_with_filters_and_cursor() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(4, Metric::Cosine)).await;
    let mut records = corpus(4, 50);
    for (i, r) in records.iter_mut().enumerate() {
        r.created_at_ms = 1_000 + i as i64;
        if i % 7 == 0 {
            r.payload = None;
        }
    }
    // Byte order: upper case sorts before lower case, '-' before digits.
    records[0].id = "Z-first".into();
    records[1].id = "a-9".into();
    store.upsert(&records).await.unwrap();

    let mut expected: Vec<&Record> = records
        .iter()
        .filter(|r| r.team_id == "t1" && (1_050..1_250).contains(&r.created_at_ms))
        .collect();
    expected.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .scan(&ScanRequest {
                team_id: Some("t1".into()),
                created_from_ms: Some(1_050),
                created_to_ms: Some(1_250),
                after_id: cursor.clone(),
                limit: 25,
                with_vectors: pages % 2 == 0,
            })
            .await
            .unwrap();
        for r in &page.records {
            if pages % 2 == 0 {
                assert_eq!(r.vector.len(), 4);
            } else {
                assert!(r.vector.is_empty());
            }
        }
        pages += 1;
        seen.extend(page.records);
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), seen.last().map(|r| &r.id));
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len());
    assert_eq!(pages, expected.len() / 25 + 1);
    for (got, want) in seen.iter().zip(&expected) {
        assert_eq!(got.id, want.id);
        assert_eq!(got.payload, want.payload);
        assert_eq!(got.created_at_ms, want.created_at_ms);
        assert_eq!(got.collection_id, want.collection_id);
    }

    let everything = store
        .scan(&ScanRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.records.len(), 300);
    assert_eq!(everything.next_cursor, None);
    assert_eq!(everything.records[0].id, "Z-first");
    let ids: Vec<&[u8]> = everything.records.iter().map(|r| r.id.as_bytes()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let err = store
        .scan(&ScanRequest {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn health_is_a_real_round_trip() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(4, Metric::Cosine)).await;
    store.upsert(&corpus(4, 60)).await.unwrap();
    let report = store.health().await.unwrap();
    assert!(report.detail.contains("300 records"), "{}", report.detail);
    assert!(
        report.detail.contains("dim 4, metric cosine"),
        "{}",
        report.detail
    );
    assert!(report.latency.as_nanos() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_stay_consistent() {
    let dir = TempDir::new().unwrap();
    let dim = 16;
    let store = Arc::new(open(&dir, IndexSpec::new(dim as u32, Metric::Cosine)).await);
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + writer);
            for batch in 0..10 {
                let records: Vec<Record> = (0..20)
                    .map(|i| {
                        record(
                            &format!("w{writer}-b{batch}-{i}"),
                            "t",
                            &format!("d{}", i % 4),
                            "c",
                            random_vector(&mut rng, dim),
                        )
                    })
                    .collect();
                store.upsert(&records).await.unwrap();
                // Every acknowledged record is immediately searchable.
                let last = records.last().unwrap();
                let hits = store
                    .recall(&query("t", &[&last.dataset_id], last.vector.clone(), 1))
                    .await
                    .unwrap();
                assert_eq!(hits[0].id, last.id);
                if batch % 3 == 0 {
                    store
                        .delete(&DeleteSelector::Ids {
                            team_id: "t".into(),
                            ids: vec![records[0].id.clone()],
                        })
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for reader in 0..2 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(200 + reader);
            for _ in 0..50 {
                let mut q = query(
                    "t",
                    &["d0", "d1", "d2", "d3"],
                    random_vector(&mut rng, dim),
                    10,
                );
                q.with_payload = true;
                let hits = store.recall(&q).await.unwrap();
                assert!(hits.iter().all(|h| h.payload.is_some()));
                store.count(&all()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 4 writers x 10 batches x 20, minus 4 deletes per writer.
    assert_eq!(store.count(&all()).await.unwrap(), 800 - 16);
    let all_ids: HashSet<String> = store
        .scan(&ScanRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.id)
        .collect();
    let hits = store
        .recall(&query("t", &["d0", "d1", "d2", "d3"], vec![1.0; dim], 1000))
        .await
        .unwrap();
    let in_memory: HashSet<String> = hits.into_iter().map(|h| h.id).collect();
    assert_eq!(in_memory, all_ids, "memory and SQLite agree");
}

#[tokio::test]
async fn a_locked_database_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, IndexSpec::new(2, Metric::L2)).await;
    // Another process (here: another connection) holds the write lock.
    let other = rusqlite::Connection::open(dir.path().join("vectors.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store
        .upsert(&[record("x", "t", "d", "c", vec![1.0, 2.0])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retriable());
    other.execute_batch("ROLLBACK").unwrap();
    // Nothing reached memory, and the store works again.
    assert!(
        store
            .recall(&query("t", &["d"], vec![1.0, 2.0], 1))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .upsert(&[record("x", "t", "d", "c", vec![1.0, 2.0])])
        .await
        .unwrap();
    assert_eq!(store.count(&all()).await.unwrap(), 1);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_internal() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let err = match EmbeddedStore::open(EmbeddedConfig::new("local", &path)).await {
        Err(err) => err,
        Ok(store) => store
            .ensure_schema(&IndexSpec::new(2, Metric::L2))
            .await
            .unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("not a database"), "{err}");
}
