//! vectorgate embedded in an HTTP service (axum): a TOML configuration, the
//! stores it names, a failover manager with a replication journal, two JSON
//! endpoints, and a graceful shutdown that stops the manager.
//!
//! ```sh
//! cargo run --release --example service                  # embedded store, dim 8, 127.0.0.1:8080
//! cargo run --release --example service -- service.toml  # your configuration (see DEFAULT_CONFIG)
//! VECTORGATE_PG_URL=postgres://vectorgate:vectorgate@127.0.0.1:5432/vectorgate \
//!     cargo run --release --example service              # PostgreSQL first, embedded as fallback
//!
//! curl -s localhost:8080/upsert -H 'content-type: application/json' -d '{"records": [
//!   {"id": "doc-1", "team_id": "t1", "dataset_id": "kb1", "collection_id": "file1",
//!    "vector": [1, 0, 0, 0, 0, 0, 0, 0], "payload": {"text": "hello"}}]}'
//! curl -s localhost:8080/recall -H 'content-type: application/json' -d '{"team_id": "t1",
//!   "dataset_ids": ["kb1"], "vector": [1, 0, 0, 0, 0, 0, 0, 0], "limit": 5, "with_payload": true}'
//! ```
//!
//! Bad input is 400, no store able to serve is 503 (with `Retry-After`),
//! anything else 500; every error body is `{"error": kind, "message": ...}`.
//! Ctrl-C or SIGTERM: stop accepting connections, finish the requests in
//! flight, then `manager.shutdown()` (answers queued writes, joins the
//! background tasks, persists the journal cursors).
//!
//! The configuration, stores and router are in `http_api.rs` (the examples'
//! library), where `tests/service.rs` exercises them.

use std::sync::Arc;
use vectorgate::VectorManager;
use vectorgate_examples::http_api::{DEFAULT_CONFIG, ServiceConfig, router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut config = match std::env::args().nth(1) {
        Some(path) => ServiceConfig::from_toml(&std::fs::read_to_string(&path)?)
            .map_err(|e| format!("invalid configuration {path}: {e}"))?,
        None => ServiceConfig::from_toml(DEFAULT_CONFIG)?,
    };
    if let Ok(url) = std::env::var("VECTORGATE_PG_URL")
        && !url.is_empty()
    {
        config.postgres_url = Some(url);
    }

    let manager: Arc<VectorManager> = Arc::new(config.start_manager().await?);
    let stores: Vec<String> = manager
        .status()
        .stores
        .into_iter()
        .map(|s| s.name)
        .collect();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        "listening on http://{} (stores: {}, dim {}, data in {})",
        listener.local_addr()?,
        stores.join(" > "),
        manager.spec().dim,
        config.data_dir.display()
    );

    axum::serve(listener, router(manager.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("HTTP server stopped; shutting the manager down");
    manager.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
