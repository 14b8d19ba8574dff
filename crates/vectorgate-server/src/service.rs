//! `vectorgate.v1.VectorService`: each handler authorizes the caller, admits
//! the call under its team's limits ([`crate::admission`]), turns the
//! request into the library's model, and lets the manager validate and
//! route it, all under the server-side deadline. A scan streams from a
//! task that holds its team's slot and its key's scan slot until the
//! stream ends, and ends when the client stops reading.

// tonic's handlers and streams return `Result<_, Status>`; `Status` is large.
#![allow(clippy::result_large_err)]

use crate::admission::{ALL_TEAMS, Admission, Charge, Reason, Throttled, Ticket};
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
use vectorgate::{DeleteSelector, VectorManager, VectorStore, validate};

/// Scan messages buffered between the store walk and the client: the walk
/// waits (backpressure) while the client does not read.
const SCAN_BUFFER: usize = 2;

/// What a client that stopped reading a scan gets once it reads again.
fn scan_idle_error(idle: Duration) -> Result<ScanResponse, Status> {
    Err(Status::deadline_exceeded(format!(
        "the scan was closed: the client read nothing for {} ms (limits.scan_idle_timeout_ms)",
        idle.as_millis()
    )))
}

/// What the service enforces around the manager: scan paging and message
/// size, and the server-side deadline of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Records per store page while streaming a scan.
    pub scan_page_size: u32,
    /// Largest `ScanResponse` message, in bytes.
    pub scan_message_bytes: usize,
    /// Deadline of a unary call, and of a scan's first page, when the
    /// client sends none (tonic enforces a shorter `grpc-timeout` itself).
    pub request_timeout: Duration,
    /// A scan whose client reads nothing for this long is closed: its task
    /// ends and frees its slots, and the client then gets
    /// `DEADLINE_EXCEEDED`, never a short result that looks complete.
    pub scan_idle_timeout: Duration,
}

/// The `VectorService` implementation.
#[derive(Debug, Clone)]
pub struct VectorApi {
    manager: Arc<VectorManager>,
    limits: ServiceLimits,
    admission: Admission,
}

impl VectorApi {
    /// A service over `manager`, admitting calls through `admission`.
    pub fn new(manager: Arc<VectorManager>, limits: ServiceLimits, admission: Admission) -> Self {
        VectorApi {
            manager,
            limits,
            admission,
        }
    }

    /// Runs a handler body under the server-side deadline, counted in
    /// `vectorgate_grpc_requests_total{method, code}` and
    /// `vectorgate_grpc_request_duration_seconds{method}`.
    async fn observed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let timeout = self.limits.request_timeout;
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the call did not finish within the server's request timeout of {} ms \
                 (limits.request_timeout_ms); a write's outcome is unknown: retry it \
                 (upserts are idempotent by id, and by request_id)",
                timeout.as_millis()
            ))),
        };
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

    fn admit(&self, charges: &[Charge<'_>]) -> Result<Ticket, Status> {
        self.admission
            .admit(charges)
            .map_err(Throttled::into_status)
    }
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
        Code::ResourceExhausted => "resource_exhausted",
        Code::AlreadyExists => "already_exists",
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
        self.observed("upsert", async {
            let records = &request.get_ref().records;
            authorize(
                &request,
                Role::Write,
                records.iter().map(|r| Access::Team(&r.team_id)),
            )?;
            let request = request.into_inner();
            let mut records = convert::records_from_proto(request.records).map_err(to_status)?;
            if !request.request_id.is_empty() {
                convert::ids_from_request_id(&mut records, &request.request_id)
                    .map_err(to_status)?;
            }
            // Validated before admission: a bad request costs no tokens and
            // always gets INVALID_ARGUMENT (the manager checks it again).
            validate::prepare_upsert(self.manager.spec(), &records, validate::now_ms())
                .map_err(|e| to_status(convert::rename_payload_field(e)))?;
            let charges: Vec<Charge<'_>> = records
                .iter()
                .map(|r| Charge {
                    team: &r.team_id,
                    records: 1,
                })
                .collect();
            let _ticket = self.admit(&charges)?;
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
        self.observed("recall", async {
            let team = &request.get_ref().team_id;
            authorize(&request, Role::Read, [Access::Team(team)])?;
            let _ticket = self.admit(&[Charge { team, records: 0 }])?;
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
        self.observed("delete", async {
            authorize(
                &request,
                Role::Write,
                [Access::Team(&request.get_ref().team_id)],
            )?;
            let selector = convert::delete_selector(request.into_inner()).map_err(to_status)?;
            // Validated before admission, like an upsert.
            validate::check_delete(&selector).map_err(to_status)?;
            // A delete by ids costs its ids, a delete by scope one record.
            let records = match &selector {
                DeleteSelector::Ids { ids, .. } => ids.len() as u64,
                DeleteSelector::Scope { .. } => 1,
            };
            let _ticket = self.admit(&[Charge {
                team: selector.team_id(),
                records,
            }])?;
            let deleted = self.manager.delete(&selector).await.map_err(to_status)?;
            Ok(Response::new(DeleteResponse { deleted }))
        })
        .await
    }

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<CountResponse>, Status> {
        self.observed("count", async {
            let team = &request.get_ref().team_id;
            let access = if team.is_empty() {
                Access::AllTeams
            } else {
                Access::Team(team)
            };
            authorize(&request, Role::Read, [access])?;
            let _ticket = self.admit(&[Charge {
                team: if team.is_empty() { ALL_TEAMS } else { team },
                records: 0,
            }])?;
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
        self.observed("scan", async {
            let team = &request.get_ref().team_id;
            let access = if team.is_empty() {
                Access::AllTeams
            } else {
                Access::Team(team)
            };
            let principal = authorize(&request, Role::Read, [access])?;
            // Both held until the stream ends: a scan occupies its team's
            // concurrency and its key's scan slot for its whole life.
            let Some(scan_slot) = principal.scans.try_open() else {
                return Err(Throttled {
                    reason: Reason::KeyScans,
                    message: format!(
                        "API key {:?} has its maximum of scans open (limits.max_scans_per_key)",
                        principal.name
                    ),
                    retry_after: Duration::from_secs(1),
                }
                .into_status());
            };
            let ticket = self.admit(&[Charge {
                team: if team.is_empty() { ALL_TEAMS } else { team },
                records: 0,
            }])?;
            let mut page_request =
                convert::scan_request(request.get_ref(), self.limits.scan_page_size);
            let first = self.manager.scan(&page_request).await.map_err(to_status)?;

            let (tx, rx) = mpsc::channel(SCAN_BUFFER);
            let manager = Arc::clone(&self.manager);
            let max_bytes = self.limits.scan_message_bytes;
            let idle_timeout = self.limits.scan_idle_timeout;
            let idle = Arc::new(AtomicBool::new(false));
            let idle_flag = Arc::clone(&idle);
            tokio::spawn(async move {
                let _held = (ticket, scan_slot);
                let mut page = first;
                loop {
                    for message in
                        convert::scan_messages(std::mem::take(&mut page.records), max_bytes)
                    {
                        match tokio::time::timeout(idle_timeout, tx.send(Ok(message))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                tracing::debug!("scan client went away");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(
                                    idle_ms = idle_timeout.as_millis() as u64,
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
                .map(move |_| scan_idle_error(idle_timeout));
            let stream: Self::ScanStream = Box::pin(ReceiverStream::new(rx).chain(tail));
            Ok(Response::new(stream))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::auth::Principal;
    use crate::config::AdmissionConfig;
    use vectorgate::{DynStore, IndexSpec, ManagerConfig, Metric, RetryConfig};
    use vectorgate_testkit::fault::{Fault, FaultyStore};
    use vectorgate_testkit::memory::MemoryStore;

    /// A call the manager would let run for a minute ends at the server's
    /// request timeout, with DEADLINE_EXCEEDED naming the setting.
    #[tokio::test(start_paused = true)]
    async fn every_call_has_a_server_side_deadline() {
        let spec = IndexSpec::new(4, Metric::Cosine);
        let memory = Arc::new(MemoryStore::new("slow"));
        let faulty = FaultyStore::wrap(memory);
        let mut config = ManagerConfig::new(spec).without_replication();
        config.retry = RetryConfig {
            attempts: 1,
            attempt_timeout_ms: 60_000,
            deadline_ms: 60_000,
            ..RetryConfig::default()
        };
        let manager = VectorManager::start(config, vec![faulty.clone() as DynStore])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        faulty.set(Fault::Hang);
        let api = VectorApi::new(
            Arc::new(manager),
            ServiceLimits {
                scan_page_size: 10,
                scan_message_bytes: 1024,
                request_timeout: Duration::from_millis(500),
                scan_idle_timeout: Duration::from_secs(1),
            },
            Admission::new(AdmissionConfig::default()),
        );
        let mut request = Request::new(RecallRequest {
            team_id: "t".into(),
            dataset_ids: vec!["d".into()],
            vector: vec![1.0, 0.0, 0.0, 0.0],
            limit: 1,
            ..Default::default()
        });
        request
            .extensions_mut()
            .insert(Arc::new(Principal::anonymous(1)));
        let started = tokio::time::Instant::now();
        let status = api.recall(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().contains("request_timeout_ms"),
            "{status:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
