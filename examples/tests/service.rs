//! The `service` example's router, in-process, over a temporary embedded
//! store: upsert → recall, bad input → 400, no usable store → 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;
use vectorgate::{DynStore, ErrorKind, IndexSpec, ManagerConfig, Metric, VectorManager};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_examples::http_api::{DEFAULT_CONFIG, ServiceConfig, router, status_for};
use vectorgate_testkit::fault::{Fault, FaultyStore};

/// POSTs `body` (raw text) to `path`; returns the status and the JSON answer.
async fn post(app: &Router, path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; 8];
    v[i] = 1.0;
    v
}

/// The example's default configuration, with its data in a temp dir.
async fn start(dir: &tempfile::TempDir) -> Arc<VectorManager> {
    let mut config = ServiceConfig::from_toml(DEFAULT_CONFIG).unwrap();
    config.data_dir = dir.path().to_owned();
    assert_eq!(config.postgres_url, None);
    Arc::new(config.start_manager().await.unwrap())
}

#[tokio::test]
async fn upsert_then_recall_through_http() {
    let dir = tempfile::tempdir().unwrap();
    let manager = start(&dir).await;
    let app = router(manager.clone());

    let records = json!({"records": [
        {"id": "doc-1", "team_id": "t1", "dataset_id": "kb1", "collection_id": "f1",
         "vector": axis(0), "payload": {"text": "hello"}},
        {"id": "doc-2", "team_id": "t1", "dataset_id": "kb1", "collection_id": "f2",
         "vector": axis(1)},
        {"team_id": "t1", "dataset_id": "kb2", "collection_id": "f3", "vector": axis(2)},
        {"id": "other-team", "team_id": "t2", "dataset_id": "kb1", "collection_id": "f1",
         "vector": axis(0)}
    ]});
    let (status, body) = post(&app, "/upsert", &records.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], "doc-1");
    assert_eq!(ids[1], "doc-2");
    assert!(!ids[2].as_str().unwrap().is_empty(), "an id is assigned");

    let query = json!({"team_id": "t1", "dataset_ids": ["kb1"], "vector": axis(0),
                       "limit": 5, "with_payload": true});
    let (status, body) = post(&app, "/recall", &query.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["served_by"], "local");
    let hits = body["hits"].as_array().unwrap();
    // Team t1, dataset kb1 only: doc-1 (exact match) then doc-2.
    assert_eq!(hits.len(), 2, "{body}");
    assert_eq!(hits[0]["id"], "doc-1");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(hits[0]["payload"], json!({"text": "hello"}));
    assert_eq!(hits[1]["id"], "doc-2");

    // Replacing by id: still two records in t1/kb1.
    let again = json!({"records": [{"id": "doc-2", "team_id": "t1", "dataset_id": "kb1",
                                    "collection_id": "f2", "vector": axis(3)}]});
    assert_eq!(
        post(&app, "/upsert", &again.to_string()).await.0,
        StatusCode::OK
    );
    let (_, body) = post(&app, "/recall", &query.to_string()).await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 2, "{body}");

    manager.shutdown().await;
    assert_eq!(manager.running_tasks(), 0);
}

#[tokio::test]
async fn bad_input_is_400_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manager = start(&dir).await;
    let app = router(manager.clone());

    // Wrong dimension: the library's InvalidInput, naming the field.
    let bad = json!({"records": [
        {"id": "ok", "team_id": "t1", "dataset_id": "kb1", "collection_id": "f1", "vector": axis(0)},
        {"id": "short", "team_id": "t1", "dataset_id": "kb1", "collection_id": "f1", "vector": [1.0, 2.0, 3.0]}
    ]});
    let (status, body) = post(&app, "/upsert", &bad.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_input");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("records[1].vector") && message.contains("dimension is 8"),
        "{message}"
    );

    // Nothing of the rejected batch was written.
    let query = json!({"team_id": "t1", "dataset_ids": ["kb1"], "vector": axis(0)});
    let (status, body) = post(&app, "/recall", &query.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hits"], json!([]));

    // Recall rules: a limit out of range, an invalid team id.
    let query = json!({"team_id": "t1", "dataset_ids": ["kb1"], "vector": axis(0), "limit": 0});
    let (status, body) = post(&app, "/recall", &query.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_input");
    let query = json!({"team_id": "t 1", "dataset_ids": ["kb1"], "vector": axis(0)});
    assert_eq!(
        post(&app, "/recall", &query.to_string()).await.0,
        StatusCode::BAD_REQUEST
    );

    // Bodies axum cannot parse: same JSON error shape, axum's status.
    let (status, body) = post(&app, "/recall", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_input");
    let (status, body) = post(&app, "/recall", r#"{"team_id": "t1"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("dataset_ids"),
        "{body}"
    );

    manager.shutdown().await;
}

#[tokio::test]
async fn no_usable_store_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IndexSpec::new(8, Metric::Cosine);
    let store = EmbeddedStore::open(EmbeddedConfig::new("local", dir.path().join("local.db")))
        .await
        .unwrap();
    let faulty = FaultyStore::wrap(Arc::new(store));
    let mut config = ManagerConfig::new(spec).without_replication();
    config.retry.attempts = 1;
    config.retry.deadline_ms = 500;
    let manager = Arc::new(
        VectorManager::start(config, vec![faulty.clone() as DynStore])
            .await
            .unwrap(),
    );
    let app = router(manager.clone());
    faulty.set(Fault::Fail(ErrorKind::Unavailable));

    let query = json!({"team_id": "t1", "dataset_ids": ["kb1"], "vector": axis(0)});
    let request = Request::post("/recall")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(query.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");

    manager.shutdown().await;
}

#[test]
fn statuses_by_error_kind() {
    assert_eq!(status_for(ErrorKind::InvalidInput), StatusCode::BAD_REQUEST);
    assert_eq!(
        status_for(ErrorKind::Unavailable),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status_for(ErrorKind::Timeout),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status_for(ErrorKind::SchemaMismatch),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        status_for(ErrorKind::Internal),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
fn default_config_journal_lives_in_data_dir() {
    let mut config = ServiceConfig::from_toml(DEFAULT_CONFIG).unwrap();
    config.data_dir = "/srv/vg".into();
    let manager = config.manager_config();
    assert_eq!(manager.index.dim, 8);
    assert_eq!(
        manager.replication.journal_path.as_deref(),
        Some(std::path::Path::new("/srv/vg/journal.db"))
    );
    manager.check().unwrap();
    // Unknown keys are refused, not ignored.
    assert!(ServiceConfig::from_toml(&format!("{DEFAULT_CONFIG}\ntypo = 1\n")).is_err());
}
