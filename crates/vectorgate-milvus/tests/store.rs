//! The Milvus store through its public API, against a real Milvus server
//! (`bash scripts/services.sh up milvus`): ids that look hostile but are
//! valid, invalid ids that must never reach Milvus, paging over more rows
//! than one Milvus query returns, and a server that is not there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vectorgate::{
    CountScope, DeleteSelector, Error, ErrorKind, IndexSpec, Metric, RecallQuery, Record,
    ScanRequest, VectorStore,
};
use vectorgate_milvus::{MilvusConfig, MilvusStore};

/// A store on a fresh collection, dropped when the guard goes.
struct TestStore {
    store: MilvusStore,
    url: String,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        common::drop_collections(&self.url, vec![self.store.config().collection.clone()]);
    }
}

async fn fresh(url: &str, prefix: &str, spec: IndexSpec) -> TestStore {
    let collection = common::unique_collection(prefix);
    let store = MilvusStore::connect(common::config(url, &collection)).unwrap();
    let guard = TestStore {
        store,
        url: url.to_owned(),
    };
    guard.store.ensure_schema(&spec).await.unwrap();
    guard
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
        created_at_ms: 1_700_000_000_000,
        payload: Some(json!({ "id": id })),
    }
}

fn kind<T: std::fmt::Debug>(result: vectorgate::Result<T>) -> ErrorKind {
    match result {
        Err(err) => err.kind(),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

/// Ids made only of the allowed characters but shaped like expression
/// syntax: operators, comment markers, dots, colons, numbers and keywords.
/// Each must be a plain value everywhere: stored, found, counted, scanned
/// and deleted exactly as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_looking_valid_ids_round_trip() {
    let Some(url) = common::milvus_url("hostile_looking_valid_ids_round_trip") else {
        return;
    };
    let t = fresh(&url, "hostile", IndexSpec::new(4, Metric::L2)).await;
    let store = &t.store;
    let mut rng = StdRng::seed_from_u64(7);
    let ids = [
        "a--b",
        "x:y",
        "...",
        "--",
        "-1",
        "1e5",
        "0x10",
        "or",
        "and",
        "not",
        "in",
        "NULL",
        "true",
        "id",
        "a.b",
        "_",
        ":",
        "..a..",
        "x-y:z.w_v",
        "__",
        "a_b",
        "like",
    ];
    let teams = ["t--1", "t:1"];
    let datasets = ["d.-.1", "..."];
    let collections = ["c::1", "--"];
    let model: Vec<Record> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            record(
                id,
                teams[i % 2],
                datasets[(i / 2) % 2],
                collections[(i / 4) % 2],
                random_vector(&mut rng, 4),
            )
        })
        .collect();
    let written = store.upsert(&model).await.unwrap();
    assert_eq!(
        written.ids,
        ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    );

    // Scan returns every record, exactly, in byte order.
    let page = store
        .scan(&ScanRequest {
            limit: 100,
            with_vectors: true,
            ..ScanRequest::default()
        })
        .await
        .unwrap();
    let mut expected = model.clone();
    expected.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    assert_eq!(page.records, expected);

    // Counts by every scope value.
    for team in teams {
        for dataset in datasets {
            for collection in collections {
                let want = model
                    .iter()
                    .filter(|r| {
                        r.team_id == team
                            && r.dataset_id == dataset
                            && r.collection_id == collection
                    })
                    .count() as u64;
                let got = store
                    .count(&CountScope {
                        team_id: Some(team.into()),
                        dataset_id: Some(dataset.into()),
                        collection_id: Some(collection.into()),
                    })
                    .await
                    .unwrap();
                assert_eq!(got, want, "count {team} {dataset} {collection}");
            }
        }
    }

    // Recall with hostile-looking include and exclude lists.
    for team in teams {
        let q = RecallQuery {
            team_id: team.into(),
            dataset_ids: datasets.iter().map(|d| (*d).to_owned()).collect(),
            vector: random_vector(&mut rng, 4),
            limit: 100,
            collection_ids: Some(vec!["c::1".into(), "--".into()]),
            exclude_collection_ids: vec!["--".into()],
            with_payload: true,
            ..RecallQuery::default()
        };
        let hits = store.recall(&q).await.unwrap();
        let want: HashSet<&str> = model
            .iter()
            .filter(|r| r.team_id == team && r.collection_id == "c::1")
            .map(|r| r.id.as_str())
            .collect();
        let got: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(got, want, "recall as {team}");
        for hit in &hits {
            assert_eq!(hit.payload, Some(json!({ "id": hit.id })));
        }
    }

    // Deleting "..." (and "--", if the same team owns it) removes exactly
    // those records, not "..a.." or "a.b".
    let owner = model
        .iter()
        .find(|r| r.id == "...")
        .unwrap()
        .team_id
        .clone();
    let targets = ["...", "--"];
    let expected_removed = model
        .iter()
        .filter(|r| targets.contains(&r.id.as_str()) && r.team_id == owner)
        .count() as u64;
    let removed = store
        .delete(&DeleteSelector::Ids {
            team_id: owner.clone(),
            ids: targets.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap();
    assert_eq!(removed, expected_removed);
    let left = store
        .scan(&ScanRequest {
            limit: 100,
            with_vectors: true,
            ..ScanRequest::default()
        })
        .await
        .unwrap();
    expected.retain(|r| !(targets.contains(&r.id.as_str()) && r.team_id == owner));
    assert_eq!(left.records, expected);
}

/// Ids with quotes, spaces, backslashes and friends are `InvalidInput`, and
/// no byte of the request reaches Milvus: the store talks to Milvus through
/// a counting TCP relay whose count must not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_never_reach_milvus() {
    let Some(url) = common::milvus_url("invalid_ids_never_reach_milvus") else {
        return;
    };
    let target: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let relay = Relay::start(target).await;
    let collection = common::unique_collection("invalid");
    let store = MilvusStore::connect(common::config(&relay.url(), &collection)).unwrap();
    let _cleanup = TestStore {
        store: MilvusStore::connect(common::config(&url, &collection)).unwrap(),
        url: url.clone(),
    };
    store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap();
    let good = record("ok-1", "team", "ds", "c", vec![1.0, 0.0, 0.0, 0.0]);
    store.upsert(std::slice::from_ref(&good)).await.unwrap();

    let bad_ids = [
        "a\"b",
        "a'b",
        "a b",
        "a\\b",
        "\" || id != \"",
        "x\\\" or 1 == 1",
        "a\nb",
        "é",
        "",
    ];
    let before = relay.client_bytes();
    let started = Instant::now();
    for bad in bad_ids {
        let mut r = good.clone();
        // (An empty record id is valid: it asks for a generated one.)
        r.id = if bad.is_empty() {
            "a b".into()
        } else {
            bad.into()
        };
        assert_eq!(
            kind(store.upsert(&[r]).await),
            ErrorKind::InvalidInput,
            "upsert id {bad:?}"
        );
        let mut r = good.clone();
        r.team_id = bad.into();
        assert_eq!(
            kind(store.upsert(&[r]).await),
            ErrorKind::InvalidInput,
            "upsert team {bad:?}"
        );
        let q = RecallQuery {
            team_id: "team".into(),
            dataset_ids: vec!["ds".into(), bad.into()],
            vector: vec![1.0, 0.0, 0.0, 0.0],
            limit: 5,
            ..RecallQuery::default()
        };
        assert_eq!(
            kind(store.recall(&q).await),
            ErrorKind::InvalidInput,
            "recall {bad:?}"
        );
        let q = RecallQuery {
            team_id: bad.into(),
            ..q
        };
        assert_eq!(
            kind(store.recall(&q).await),
            ErrorKind::InvalidInput,
            "recall team {bad:?}"
        );
        let sel = DeleteSelector::Ids {
            team_id: "team".into(),
            ids: vec!["ok-1".into(), bad.into()],
        };
        assert_eq!(
            kind(store.delete(&sel).await),
            ErrorKind::InvalidInput,
            "delete {bad:?}"
        );
        let sel = DeleteSelector::Scope {
            team_id: "team".into(),
            dataset_ids: vec!["ds".into()],
            collection_ids: Some(vec![bad.into()]),
        };
        assert_eq!(
            kind(store.delete(&sel).await),
            ErrorKind::InvalidInput,
            "delete scope {bad:?}"
        );
        let scope = CountScope {
            dataset_id: Some(bad.into()),
            ..CountScope::default()
        };
        assert_eq!(
            kind(store.count(&scope).await),
            ErrorKind::InvalidInput,
            "count {bad:?}"
        );
        let scan = ScanRequest {
            limit: 10,
            after_id: Some(bad.into()),
            ..ScanRequest::default()
        };
        assert_eq!(
            kind(store.scan(&scan).await),
            ErrorKind::InvalidInput,
            "scan {bad:?}"
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(
        relay.client_bytes(),
        before,
        "an invalid request sent bytes to Milvus ({elapsed:?})"
    );
    // The relay does see real traffic, and nothing was changed.
    let count = store.count(&CountScope::default()).await.unwrap();
    assert_eq!(count, 1);
    assert!(
        relay.client_bytes() > before,
        "the relay must count real requests"
    );
}

/// A scan over more rows than one Milvus query returns visits every record
/// once, in byte order, with full pages and the documented cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_exactly_once_beyond_one_query_window() {
    let Some(url) = common::milvus_url("scan_pages_exactly_once_beyond_one_query_window") else {
        return;
    };
    let t = fresh(&url, "scan", IndexSpec::new(2, Metric::L2)).await;
    let store = &t.store;
    let mut rng = StdRng::seed_from_u64(11);
    // 3000 ids in an order unrelated to byte order, with mixed case and
    // punctuation, written in shuffled batches.
    let mut ids: Vec<String> = (0..3000)
        .map(|i| {
            let prefix = ["A", "a", "_", "-", "0", "Z", "z", "."][i % 8];
            format!("{prefix}{:05}", (i * 7919) % 100_003)
        })
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "test data bug");
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    for chunk in ids.chunks(1000) {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| Record {
                id: id.clone(),
                team_id: if i % 3 == 0 {
                    "t-odd".into()
                } else {
                    "t".into()
                },
                dataset_id: "d".into(),
                collection_id: "c".into(),
                vector: vec![rng.random_range(-1.0..1.0), 1.0],
                created_at_ms: 1 + i as i64,
                payload: None,
            })
            .collect();
        store.upsert(&records).await.unwrap();
    }
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    // Page size 1 for the first pages (the query window, 1025, is far below
    // the 3000 rows: the range is narrowed), then 700 to the end.
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for page_size in std::iter::repeat_n(1u32, 5).chain(std::iter::repeat(700)) {
        let page = store
            .scan(&ScanRequest {
                after_id: after.clone(),
                limit: page_size,
                ..ScanRequest::default()
            })
            .await
            .unwrap();
        assert!(page.records.len() <= page_size as usize);
        assert!(page.records.iter().all(|r| r.vector.is_empty()));
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(
                    page.records.len(),
                    page_size as usize,
                    "a page with a cursor is full"
                );
                assert_eq!(Some(&cursor), page.records.last().map(|r| &r.id));
                after = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), sorted.len(), "every record exactly once");
    assert_eq!(seen, sorted, "ascending byte order");

    // With a team filter and a created window, still exact.
    let request = ScanRequest {
        team_id: Some("t-odd".into()),
        created_from_ms: Some(10),
        created_to_ms: Some(600),
        limit: 10_000,
        ..ScanRequest::default()
    };
    let page = store.scan(&request).await.unwrap();
    assert!(page.next_cursor.is_none());
    let want = ids
        .chunks(1000)
        .flat_map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == 0 && (10..600).contains(&(1 + *i as i64)))
                .map(|(_, id)| id.clone())
        })
        .count();
    assert_eq!(page.records.len(), want);
}

/// A store can be built while Milvus is unreachable; every call then fails
/// fast with a retriable error, and health is a real round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable() {
    // A port nothing listens on (bound, then released).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = MilvusConfig {
        connect_timeout_ms: 500,
        timeout_ms: 2000,
        ..MilvusConfig::new("down", format!("http://127.0.0.1:{port}"), "c")
    };
    let store = MilvusStore::connect(config).unwrap();
    let started = Instant::now();
    let err = store.health().await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    let err = store
        .ensure_schema(&IndexSpec::new(4, Metric::Cosine))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Before ensure_schema succeeded, data calls say so without I/O.
    let err = store.count(&CountScope::default()).await.unwrap_err();
    assert!(matches!(err, Error::Internal { .. }), "{err:?}");
}

// ------------------------------------------------------------------ relay

/// A TCP relay to Milvus that counts the bytes clients send through it.
struct Relay {
    addr: SocketAddr,
    client_bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client_bytes = Arc::new(AtomicU64::new(0));
        let counter = client_bytes.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counter.fetch_add(n as u64, Ordering::SeqCst);
                                    if server_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Relay {
            addr,
            client_bytes,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client_bytes(&self) -> u64 {
        self.client_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A released collection (an operator's `release`, or Milvus after a
/// failed load): every read is `Unavailable` — the store cannot serve, the
/// manager fails over — and `health()` says so and names the fix; loaded
/// again, the store serves. Per collection, so it runs beside other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_collection_is_unavailable_and_health_sees_it() {
    let Some(url) = common::milvus_url("released_collection_is_unavailable_and_health_sees_it")
    else {
        return;
    };
    let t = fresh(&url, "released", IndexSpec::new(4, Metric::Cosine)).await;
    let s = &t.store;
    let collection = s.config().collection.clone();
    s.upsert(&[record("a", "t", "d", "c", vec![1.0, 0.0, 0.0, 0.0])])
        .await
        .unwrap();
    let report = s.health().await.unwrap();
    assert!(report.detail.contains("(loaded)"), "{}", report.detail);
    let q = RecallQuery {
        team_id: "t".into(),
        dataset_ids: vec!["d".into()],
        vector: vec![1.0, 0.0, 0.0, 0.0],
        limit: 3,
        ..Default::default()
    };

    common::set_loaded(&url, &collection, false).await;
    let err = s.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("not loaded"), "{err}");
    assert!(err.to_string().contains("load it again"), "{err}");
    let err = s.recall(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        kind(s.count(&CountScope::default()).await),
        ErrorKind::Unavailable
    );

    common::set_loaded(&url, &collection, true).await;
    s.health().await.unwrap();
    assert_eq!(s.recall(&q).await.unwrap().len(), 1);

    // Dropped behind the store's back: missing, Unavailable, naming the fix.
    let other = MilvusStore::connect(common::config(&url, &collection)).unwrap();
    other.drop_collection().await.unwrap();
    let err = s.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("ensure_schema"), "{err}");
    let err = s.recall(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
