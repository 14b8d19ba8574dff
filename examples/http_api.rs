//! The HTTP service of the `service` example: a configuration, the stores
//! it names, a [`VectorManager`] over them, and an axum [`Router`] with
//! `POST /upsert` and `POST /recall`.
//!
//! It lives in the library (not in `service.rs`) so that
//! `tests/service.rs` drives the very same router in-process.
//!
//! Errors are answered as `{"error": "<kind>", "message": "..."}` with a
//! status chosen by [`status_for`] from the error's [`ErrorKind`]: bad input
//! is the caller's (400), a store that cannot serve now is retriable (503),
//! the rest is the server's (500). A body axum cannot parse keeps axum's
//! status (400 malformed JSON, 422 wrong shape, 415 not JSON) with the same
//! JSON error body.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use vectorgate::manager::config::ReplicationMode;
use vectorgate::{
    DynStore, ErrorKind, Hit, ManagerConfig, RecallQuery, Record, VectorManager, VectorStore,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_pg::{PgConfig, PgStore};

/// The configuration `service` runs with when no file is given.
pub const DEFAULT_CONFIG: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "./vectorgate-service-data"
# postgres_url = "postgres://vectorgate:vectorgate@127.0.0.1:5432/vectorgate"

[manager]
name = "service"

[manager.index]
dim = 8
metric = "cosine"

[manager.retry]
deadline_ms = 3000
"#;

/// What the service reads from its TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// HTTP address.
    pub listen: SocketAddr,
    /// Holds the embedded store (`local.db`) and the journal (`journal.db`).
    pub data_dir: PathBuf,
    /// When set, PostgreSQL is the primary store and the embedded store its
    /// fallback; the journal keeps both in sync.
    #[serde(default)]
    pub postgres_url: Option<String>,
    /// Index, health probes, breakers, retries, replication: every field of
    /// [`ManagerConfig`] (see the top-level README).
    pub manager: ManagerConfig,
}

impl ServiceConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<ServiceConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The manager's configuration: the journal defaults to
    /// `<data_dir>/journal.db`.
    pub fn manager_config(&self) -> ManagerConfig {
        let mut config = self.manager.clone();
        if config.replication.mode != ReplicationMode::Off
            && config.replication.journal_path.is_none()
        {
            config.replication.journal_path = Some(self.data_dir.join("journal.db"));
        }
        config
    }

    /// The stores in priority order: PostgreSQL `pg` when configured, then
    /// the embedded store `local`. PostgreSQL's pool is lazy: the service
    /// starts (and serves from `local`) while PostgreSQL is down.
    pub async fn open_stores(&self) -> vectorgate::Result<Vec<DynStore>> {
        let mut stores: Vec<DynStore> = Vec::new();
        if let Some(url) = &self.postgres_url {
            stores.push(Arc::new(PgStore::connect(PgConfig::new("pg", url)).await?));
        }
        let local = EmbeddedConfig::new("local", self.data_dir.join("local.db"));
        stores.push(Arc::new(EmbeddedStore::open(local).await?));
        Ok(stores)
    }

    /// Opens the stores and starts the manager over them.
    pub async fn start_manager(&self) -> vectorgate::Result<VectorManager> {
        VectorManager::start(self.manager_config(), self.open_stores().await?).await
    }
}

/// The routes, over a started manager.
pub fn router(manager: Arc<VectorManager>) -> Router {
    Router::new()
        .route("/upsert", post(upsert))
        .route("/recall", post(recall))
        .with_state(manager)
}

/// `POST /upsert` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// At most 1000 records; one bad record rejects the whole batch.
    pub records: Vec<RecordIn>,
}

/// One record to write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    /// Empty or missing: a UUIDv7 is assigned.
    #[serde(default)]
    pub id: String,
    /// The tenant.
    pub team_id: String,
    /// The dataset (knowledge base).
    pub dataset_id: String,
    /// The collection (file) inside the dataset.
    pub collection_id: String,
    /// Exactly the index dimension.
    pub vector: Vec<f32>,
    /// An optional JSON object.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

/// `POST /upsert` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpsertResponse {
    /// One per record, in request order.
    pub ids: Vec<String>,
}

/// `POST /recall` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// The tenant.
    pub team_id: String,
    /// At least one dataset of the team.
    pub dataset_ids: Vec<String>,
    /// Exactly the index dimension.
    pub vector: Vec<f32>,
    /// 1..=1000; default 10.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Only these collections (missing: every collection).
    #[serde(default)]
    pub collection_ids: Option<Vec<String>>,
    /// Return each hit's payload.
    #[serde(default)]
    pub with_payload: bool,
}

fn default_limit() -> u32 {
    10
}

/// `POST /recall` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecallResponse {
    /// The store that answered (the fallback's name after a failover).
    pub served_by: String,
    /// Best first.
    pub hits: Vec<Hit>,
}

/// An error answer: `{"error": kind, "message": text}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `invalid_input`, `conflict`, `unavailable`, `timeout`, `schema_mismatch`, `internal`.
    pub error: String,
    /// What went wrong, naming the field for bad input.
    pub message: String,
}

/// The HTTP status for an error of this kind.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable | ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::SchemaMismatch | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl From<vectorgate::Error> for ApiError {
    fn from(error: vectorgate::Error) -> Self {
        let kind = error.kind();
        ApiError {
            status: status_for(kind),
            body: ErrorBody {
                error: kind.as_str().to_owned(),
                message: error.to_string(),
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError {
            status: rejection.status(),
            body: ErrorBody {
                error: ErrorKind::InvalidInput.as_str().to_owned(),
                message: rejection.body_text(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.body.message, "request failed");
        }
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

async fn upsert(
    State(manager): State<Arc<VectorManager>>,
    body: Result<Json<UpsertRequest>, JsonRejection>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let Json(request) = body?;
    let records: Vec<Record> = request
        .records
        .into_iter()
        .map(|r| Record {
            id: r.id,
            team_id: r.team_id,
            dataset_id: r.dataset_id,
            collection_id: r.collection_id,
            vector: r.vector,
            created_at_ms: 0, // "now", set once by the library
            payload: r.payload,
        })
        .collect();
    let outcome = manager.upsert(&records).await?;
    Ok(Json(UpsertResponse { ids: outcome.ids }))
}

async fn recall(
    State(manager): State<Arc<VectorManager>>,
    body: Result<Json<RecallRequest>, JsonRejection>,
) -> Result<Json<RecallResponse>, ApiError> {
    let Json(request) = body?;
    let query = RecallQuery {
        team_id: request.team_id,
        dataset_ids: request.dataset_ids,
        vector: request.vector,
        limit: request.limit,
        collection_ids: request.collection_ids,
        with_payload: request.with_payload,
        ..RecallQuery::default()
    };
    let routed = manager.recall_routed(&query).await?;
    Ok(Json(RecallResponse {
        served_by: routed.served_by,
        hits: routed.value,
    }))
}
