//! `vectorgate serve`: opens the stores, starts the manager, serves gRPC and
//! HTTP, and drains on SIGTERM/SIGINT (see [`crate::shutdown`]).

use crate::admin::AdminApi;
use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{Config, StoreConfig, TlsConfig};
use crate::http::{self, HttpState};
use crate::lock::{DataDirLock, LockError};
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::vector_service_server::VectorServiceServer;
use crate::resync::Stores;
use crate::service::{ServiceLimits, VectorApi};
use crate::shutdown::{Signals, StopOnCancel};
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http as http_types;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::util::MapResponseLayer;
use vectorgate::layers::{LaneLimits, LanedStore};
use vectorgate::{DynStore, ManagerStatus, VectorManager};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_pg::PgStore;

/// The line printed on stdout once both ports accept connections (tests
/// and scripts read the bound addresses from it):
/// `vectorgate listening grpc=127.0.0.1:50051 http=127.0.0.1:9464`.
pub const LISTENING_PREFIX: &str = "vectorgate listening";

/// The gRPC service name health reports on, besides the server-wide "".
pub const VECTOR_SERVICE_NAME: &str = "vectorgate.v1.VectorService";

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Runs the server until a signal drained it. Errors before serving (bad
/// configuration, unreachable address, a store holding another schema) are
/// returned; the caller exits non-zero.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.check()?;
    let auth = Arc::new(Authenticator::new(
        &config.api_keys,
        config.limits.max_scans_per_key,
    )?);
    if auth.is_open() {
        if config.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "no API keys configured: serving WITHOUT authentication (loopback only)"
            );
        } else {
            tracing::warn!(
                listen = %config.listen,
                "no API keys configured and --insecure-no-auth given: anyone who reaches this address can read and write every team's vectors"
            );
        }
    }
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let mut lock = lock_data_dir(&config)?;
    let mut journal_lock = lock_journal(&config, "serve")?;
    let metrics = install_metrics()?;

    let stores = open_stores(&config).await?;
    let manager = Arc::new(
        VectorManager::start(config.manager_config(), stores.clone())
            .await
            .context("cannot start the store manager")?,
    );
    crate::resync::warn_about_unfinished(&config.data_dir);

    let grpc_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (gRPC)", config.listen))?;
    let http_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP)", config.metrics_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    // Health: SERVING while a store can serve, driven by the manager's
    // status stream; NOT_SERVING once draining starts.
    let draining = CancellationToken::new();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(drive_health(
        reporter,
        manager.subscribe(),
        draining.clone(),
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let max_request = config.limits.max_request_bytes;
    let vector_service = VectorServiceServer::new(VectorApi::new(
        Arc::clone(&manager),
        ServiceLimits {
            scan_page_size: config.limits.scan_page_size,
            scan_message_bytes: config.limits.scan_message_bytes,
            request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
            scan_idle_timeout: Duration::from_millis(config.limits.scan_idle_timeout_ms),
        },
        Admission::new(config.admission.clone()),
    ))
    .max_decoding_message_size(max_request);
    let admin_service = AdminServiceServer::new(AdminApi::new(
        Arc::clone(&manager),
        Stores::new(stores),
        config.data_dir.clone(),
    ))
    .max_decoding_message_size(max_request);

    let mut builder = Server::builder().layer(MapResponseLayer::new(
        move |response: http_types::Response<tonic::body::Body>| {
            too_large_is_invalid_argument(response, max_request)
        },
    ));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    }
    let stop_grpc = CancellationToken::new();
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(vector_service, auth.interceptor()))
        .add_service(InterceptedService::new(admin_service, auth.interceptor()))
        .serve_with_incoming_shutdown(
            StopOnCancel::new(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stop_grpc.clone(),
            ),
            // The end of the accept stream starts the graceful shutdown.
            std::future::pending::<()>(),
        );

    let stop_http = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        http_listener,
        HttpState {
            manager: Arc::clone(&manager),
            metrics,
            draining: draining.clone(),
        },
        stop_http.clone(),
    ));

    let mut signals = Signals::install();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    lock.describe(&format!("addr={scheme}://{grpc_addr}"));
    if let Some(journal_lock) = &mut journal_lock {
        journal_lock.describe(&format!("addr={scheme}://{grpc_addr}"));
    }
    println!("{LISTENING_PREFIX} grpc={grpc_addr} http={http_addr}");
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        tls = config.tls.is_some(),
        auth = !auth.is_open(),
        dim = config.index.dim,
        metric = %config.index.metric,
        "vectorgate serving"
    );

    tokio::pin!(grpc);
    let served = tokio::select! {
        result = &mut grpc => result.context("the gRPC server stopped"),
        signal = signals.received() => {
            let drain = Duration::from_millis(config.drain_timeout_ms);
            tracing::info!(signal, drain_timeout_ms = config.drain_timeout_ms, "draining: refusing new calls, finishing in-flight ones");
            draining.cancel();
            let reporter = health_task.await;
            stop_grpc.cancel();
            // Health.Watch streams never end by themselves and would hold
            // the drain until its timeout: removing the statuses ends them
            // (each watcher got NOT_SERVING first).
            match reporter {
                Ok(mut reporter) => {
                    reporter.clear_service_status("").await;
                    reporter.clear_service_status(VECTOR_SERVICE_NAME).await;
                }
                Err(error) => tracing::warn!(%error, "health task failed"),
            }
            match tokio::time::timeout(drain, &mut grpc).await {
                Ok(result) => result.context("the gRPC server failed while draining"),
                Err(_) => {
                    tracing::warn!(drain_timeout_ms = config.drain_timeout_ms, "drain timeout elapsed; abandoning the calls still in flight");
                    Ok(())
                }
            }
        }
    };

    stop_http.cancel();
    match tokio::time::timeout(Duration::from_secs(2), http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "the HTTP server failed"),
        Ok(Err(error)) => tracing::warn!(%error, "the HTTP task failed"),
        Err(_) => tracing::warn!("the HTTP server did not stop in time"),
    }
    manager.shutdown().await;
    drop(journal_lock);
    drop(lock);
    tracing::info!("vectorgate stopped");
    served
}

/// Keeps grpc.health.v1 in step with the manager until draining starts,
/// then reports NOT_SERVING and hands the reporter back.
async fn drive_health(
    reporter: HealthReporter,
    mut status: watch::Receiver<ManagerStatus>,
    draining: CancellationToken,
) -> HealthReporter {
    let mut last = None;
    loop {
        let serving = {
            let current = status.borrow_and_update();
            current.active.is_some() && !current.shutting_down
        };
        if last != Some(serving) {
            let state = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, state).await;
            last = Some(serving);
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            () = draining.cancelled() => break,
        }
    }
    set_health(&reporter, ServingStatus::NotServing).await;
    reporter
}

async fn set_health(reporter: &HealthReporter, state: ServingStatus) {
    reporter.set_service_status("", state).await;
    reporter
        .set_service_status(VECTOR_SERVICE_NAME, state)
        .await;
}

/// tonic refuses a request above `max_decoding_message_size` with
/// OUT_OF_RANGE before any handler runs; the API reports every request
/// limit as INVALID_ARGUMENT naming the limit, so the status is rewritten
/// (a unary refusal is a trailers-only response: the status is in the headers).
fn too_large_is_invalid_argument(
    mut response: http_types::Response<tonic::body::Body>,
    max_request: usize,
) -> http_types::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers.get("grpc-message").is_some_and(|v| {
        // Percent-encoded on the wire: spaces may be `%20`.
        let text = String::from_utf8_lossy(v.as_bytes()).replace("%20", " ");
        text.contains("message length too large")
    });
    if out_of_range && too_large {
        let message = format!(
            "request: the message is larger than {max_request} bytes, the server's limit (limits.max_request_bytes)"
        );
        if let Ok(value) = http_types::HeaderValue::try_from(message) {
            headers.insert("grpc-status", http_types::HeaderValue::from_static("3"));
            headers.insert("grpc-message", value);
        }
    }
    response
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Takes `<data_dir>/vectorgate.lock` for the life of the server (see
/// [`crate::lock`]).
fn lock_data_dir(config: &Config) -> anyhow::Result<DataDirLock> {
    match DataDirLock::acquire(&config.data_dir, "serve") {
        Ok(lock) => {
            tracing::debug!(path = %lock.path().display(), "data directory locked");
            Ok(lock)
        }
        Err(error @ LockError::Held { .. }) => Err(anyhow::anyhow!(
            "cannot start: {error}. One server per data directory ({}): another server, or an offline `vectorgate resync --config`, is using it",
            config.data_dir.display()
        )),
        Err(LockError::Io(error)) => Err(error),
    }
}

/// Takes `<journal>.lock` when there is a journal, wherever it lives:
/// `journal_path` may point outside the data directory.
pub fn lock_journal(config: &Config, role: &str) -> anyhow::Result<Option<DataDirLock>> {
    let Some(journal) = config.manager_config().replication.journal_path else {
        return Ok(None);
    };
    match DataDirLock::acquire_journal(&journal, role) {
        Ok(lock) => Ok(Some(lock)),
        Err(error @ LockError::Held { .. }) => Err(anyhow::anyhow!(
            "cannot start: {error}. The journal {} is in use by another vectorgate process; two processes must never share a journal",
            journal.display()
        )),
        Err(LockError::Io(error)) => Err(error),
    }
}

/// Opens (or connects) every configured store, in priority order.
pub async fn open_stores(config: &Config) -> anyhow::Result<Vec<DynStore>> {
    let mut stores: Vec<DynStore> = Vec::new();
    for store in config.resolved_stores() {
        match store {
            StoreConfig::Embedded { name, path } => {
                let path = path.unwrap_or_else(|| config.data_dir.join(format!("{name}.db")));
                tracing::info!(store = %name, path = %path.display(), "opening embedded store");
                let opened = EmbeddedStore::open(EmbeddedConfig::new(&name, &path))
                    .await
                    .with_context(|| {
                        format!("cannot open embedded store {name:?} at {}", path.display())
                    })?;
                stores.push(Arc::new(opened));
            }
            StoreConfig::Postgres(pg) => {
                let name = pg.name.clone();
                tracing::info!(store = %name, config = ?pg, "connecting postgres store");
                let lanes = LaneLimits::for_pool(pg.pool_max_connections);
                let connected = PgStore::connect(pg)
                    .await
                    .with_context(|| format!("cannot set up postgres store {name:?}"))?;
                // Reads and writes get separate shares of the pool, so a
                // bulk import never takes the connections recalls need.
                tracing::info!(store = %name, reads = lanes.reads, writes = lanes.writes, "pool lanes");
                stores.push(LanedStore::new(Arc::new(connected), lanes)?);
            }
        }
    }
    Ok(stores)
}

fn tls_config(tls: &TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    // tonic's server asks rustls for the process-wide crypto provider, which
    // is ambiguous once another crate enables a second one: pin ring (an
    // error only means a provider was installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read TLS {what} {}", path.display()))
    };
    let identity = Identity::from_pem(
        read(&tls.cert_path, "certificate")?,
        read(&tls.key_path, "key")?,
    );
    let mut server = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_path {
        server = server.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Ok(server)
}
