//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive) and `/readyz` (whether a store can serve, and which; each
//! store's replication lag and dead letters).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vectorgate::{ManagerStatus, VectorManager};

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The manager whose status `/readyz` reports.
    pub manager: Arc<VectorManager>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Cancelled when the server starts draining: `/readyz` turns 503.
    pub draining: CancellationToken,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<HttpState>) -> Response {
    if let Some(memory) = process_memory() {
        metrics::gauge!("process_resident_memory_bytes").set(memory.resident_bytes as f64);
        metrics::gauge!("process_virtual_memory_bytes").set(memory.virtual_bytes as f64);
    }
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `/readyz`'s body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// `healthy`: the first store serves; `degraded`: another store serves;
    /// `unhealthy`: none can (or the server is shutting down).
    pub status: &'static str,
    /// The store serving now.
    pub active: Option<String>,
    /// True once shutdown began.
    pub shutting_down: bool,
    /// Replication mode: `async`, `sync` or `off`.
    pub replication: &'static str,
    /// Highest journal sequence number the write pipeline finished with.
    pub committed_seq: u64,
    /// Every store, in priority order.
    pub stores: Vec<StoreReadiness>,
}

/// One store in `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreReadiness {
    /// Name.
    pub name: String,
    /// Backend kind.
    pub kind: &'static str,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Last probe outcome; `null` before the first probe.
    pub healthy: Option<bool>,
    /// Serving now.
    pub active: bool,
    /// Drained by an operator.
    pub drained: bool,
    /// Error of the last probe.
    pub last_probe_error: Option<String>,
    /// Has applied every committed journal entry.
    pub in_sync: bool,
    /// Journal entries it has not applied yet.
    pub lag_entries: u64,
    /// Seconds since the first entry it misses was journaled; 0 when none.
    pub lag_seconds: f64,
    /// Journal entries it refused, kept for `vectorgate redrive`.
    pub dead_letters: u64,
    /// Held out of rotation until a resync into it finishes.
    pub resync_pending: bool,
    /// Why it is held.
    pub hold_reason: Option<String>,
}

/// Readiness from a manager status.
pub fn readiness(status: &ManagerStatus, draining: bool) -> Readiness {
    let shutting_down = draining || status.shutting_down;
    let first = status.stores.first().map(|s| s.name.as_str());
    let state = match status.active.as_deref() {
        _ if shutting_down => "unhealthy",
        None => "unhealthy",
        Some(active) if Some(active) == first => "healthy",
        Some(_) => "degraded",
    };
    Readiness {
        status: state,
        active: status.active.clone(),
        shutting_down,
        replication: status.replication,
        committed_seq: status.committed_seq,
        stores: status
            .stores
            .iter()
            .map(|s| StoreReadiness {
                name: s.name.clone(),
                kind: s.kind,
                breaker: s.breaker.as_str(),
                healthy: s.healthy,
                active: s.active,
                drained: s.drained,
                last_probe_error: s.last_probe_error.clone(),
                in_sync: s.in_sync,
                lag_entries: s.lag_entries,
                lag_seconds: s.lag_seconds.unwrap_or(0.0),
                dead_letters: s.dead_letters,
                resync_pending: s.resync_pending,
                hold_reason: s.hold_reason.clone(),
            })
            .collect(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let body = readiness(&state.manager.status(), state.draining.is_cancelled());
    let code = if body.status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(body)).into_response()
}

/// Memory of this process, from `/proc/self/status` (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
}

/// Reads [`ProcessMemory`]; `None` where `/proc` is missing.
pub fn process_memory() -> Option<ProcessMemory> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let value = line[key.len()..].trim().trim_end_matches("kB").trim();
        value.parse::<u64>().ok().map(|v| v * 1024)
    };
    Some(ProcessMemory {
        resident_bytes: kib("VmRSS:")?,
        virtual_bytes: kib("VmSize:")?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn memory_is_read_from_proc() {
        let memory = process_memory().unwrap();
        assert!(memory.resident_bytes > 1024 * 1024, "{memory:?}");
        assert!(memory.virtual_bytes >= memory.resident_bytes, "{memory:?}");
    }
}
