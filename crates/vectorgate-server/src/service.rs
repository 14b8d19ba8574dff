//! `vectorgate.v1.VectorService`: each handler authorizes the caller, turns
//! the request into the library's model, and lets the manager validate and
//! route it.

// tonic's handlers and streams return `Result<_, Status>`; `Status` is large.
#![allow(clippy::result_large_err)]

use crate::auth::{Access, Role, authorize};
use crate::convert::{self, to_status};
use crate::proto::vector_service_server::VectorService;
use crate::proto::{
    CountRequest, CountResponse, DeleteRequest, DeleteResponse, RecallRequest, RecallResponse,
    ScanRequest, ScanResponse, UpsertRequest, UpsertResponse,
};
use futures_util::stream::{self, Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vectorgate::{VectorManager, VectorStore};

/// Scan messages buffered between the store walk and the client: the walk
/// waits (backpressure) while the client does not read.
const SCAN_BUFFER: usize = 2;

/// A scan whose client reads nothing for this long is closed and its task
/// ends; the client then gets `DEADLINE_EXCEEDED`, never a short result
/// that looks complete.
pub(crate) const SCAN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client that stopped reading a scan gets once it reads again.
fn scan_idle_error() -> Result<ScanResponse, Status> {
    Err(Status::deadline_exceeded(format!(
        "the scan was closed: the client read nothing for {} s",
        SCAN_IDLE_TIMEOUT.as_secs()
    )))
}

/// The `VectorService` implementation.
#[derive(Debug, Clone)]
pub struct VectorApi {
    manager: Arc<VectorManager>,
    scan_page_size: u32,
    scan_message_bytes: usize,
}

impl VectorApi {
    /// A service over `manager`; scans read `scan_page_size` records per
    /// store page and send messages of at most `scan_message_bytes`.
    pub fn new(
        manager: Arc<VectorManager>,
        scan_page_size: u32,
        scan_message_bytes: usize,
    ) -> Self {
        VectorApi {
            manager,
            scan_page_size,
            scan_message_bytes,
        }
    }
}

/// Counts a call in `vectorgate_grpc_requests_total{method, code}` and
/// `vectorgate_grpc_request_duration_seconds{method}`.
async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::counter!("vectorgate_grpc_requests_total", "method" => method, "code" => code_label(code))
        .increment(1);
    metrics::histogram!("vectorgate_grpc_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::PermissionDenied => "permission_denied",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
        _ => "other",
    }
}

#[tonic::async_trait]
impl VectorService for VectorApi {
    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        observed("upsert", async {
            authorize(
                &request,
                Role::Write,
                request
                    .get_ref()
                    .records
                    .iter()
                    .map(|r| Access::Team(&r.team_id)),
            )?;
            let request = request.into_inner();
            let mut records = convert::records_from_proto(request.records).map_err(to_status)?;
            if !request.request_id.is_empty() {
                convert::ids_from_request_id(&mut records, &request.request_id)
                    .map_err(to_status)?;
            }
            let outcome = self
                .manager
                .upsert(&records)
                .await
                .map_err(|e| to_status(convert::rename_payload_field(e)))?;
            Ok(Response::new(UpsertResponse { ids: outcome.ids }))
        })
        .await
    }

    async fn recall(
        &self,
        request: Request<RecallRequest>,
    ) -> Result<Response<RecallResponse>, Status> {
        observed("recall", async {
            authorize(
                &request,
                Role::Read,
                [Access::Team(&request.get_ref().team_id)],
            )?;
            let query = convert::recall_query(request.into_inner());
            let routed = self
                .manager
                .recall_routed(&query)
                .await
                .map_err(to_status)?;
            Ok(Response::new(RecallResponse {
                hits: routed
                    .value
                    .into_iter()
                    .map(convert::hit_to_proto)
                    .collect(),
                served_by: routed.served_by,
            }))
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        observed("delete", async {
            authorize(
                &request,
                Role::Write,
                [Access::Team(&request.get_ref().team_id)],
            )?;
            let selector = convert::delete_selector(request.into_inner()).map_err(to_status)?;
            let deleted = self.manager.delete(&selector).await.map_err(to_status)?;
            Ok(Response::new(DeleteResponse { deleted }))
        })
        .await
    }

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<CountResponse>, Status> {
        observed("count", async {
            let team = &request.get_ref().team_id;
            let access = if team.is_empty() {
                Access::AllTeams
            } else {
                Access::Team(team)
            };
            authorize(&request, Role::Read, [access])?;
            let scope = convert::count_scope(request.into_inner());
            let count = self.manager.count(&scope).await.map_err(to_status)?;
            Ok(Response::new(CountResponse { count }))
        })
        .await
    }

    type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

    /// Reads the first page here, so that a bad request fails the call
    /// itself; a task then walks the remaining pages into a bounded channel.
    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        observed("scan", async {
            let team = &request.get_ref().team_id;
            let access = if team.is_empty() {
                Access::AllTeams
            } else {
                Access::Team(team)
            };
            authorize(&request, Role::Read, [access])?;
            let mut page_request = convert::scan_request(request.get_ref(), self.scan_page_size);
            let first = self.manager.scan(&page_request).await.map_err(to_status)?;

            let (tx, rx) = mpsc::channel(SCAN_BUFFER);
            let manager = Arc::clone(&self.manager);
            let max_bytes = self.scan_message_bytes;
            let idle = Arc::new(AtomicBool::new(false));
            let idle_flag = Arc::clone(&idle);
            tokio::spawn(async move {
                let mut page = first;
                loop {
                    for message in
                        convert::scan_messages(std::mem::take(&mut page.records), max_bytes)
                    {
                        match tokio::time::timeout(SCAN_IDLE_TIMEOUT, tx.send(Ok(message))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                tracing::debug!("scan client went away");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(
                                    idle_s = SCAN_IDLE_TIMEOUT.as_secs(),
                                    "scan client read nothing for too long; stream closed"
                                );
                                idle_flag.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                    let Some(cursor) = page.next_cursor.take() else {
                        return;
                    };
                    page_request.after_id = Some(cursor);
                    page = match manager.scan(&page_request).await {
                        Ok(page) => page,
                        Err(error) => {
                            tracing::warn!(%error, "scan failed midway");
                            let _ = tx.send(Err(to_status(error))).await;
                            return;
                        }
                    };
                }
            });
            // After the last message: an error if the walk gave up on an
            // idle client, so a truncated stream never looks complete.
            let tail = stream::once(async move { idle.load(Ordering::SeqCst) })
                .filter(|idle| std::future::ready(*idle))
                .map(|_| scan_idle_error());
            let stream: Self::ScanStream = Box::pin(ReceiverStream::new(rx).chain(tail));
            Ok(Response::new(stream))
        })
        .await
    }
}
