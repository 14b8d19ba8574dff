//! `vectorgate.v1.AdminService`: the manager's status for any valid key;
//! the operator overrides (drain, force, resume), online resync and the
//! re-drive of dead letters for admin keys.

// `tonic::Status` is the error type handlers must return.
#![allow(clippy::result_large_err)]

use crate::auth::{Role, authorize};
use crate::convert::{status_to_proto, to_status};
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    DrainRequest, DrainResponse, ForceActiveRequest, ForceActiveResponse, RedriveRequest,
    RedriveResponse, ResumeAutoRequest, ResumeAutoResponse, ResyncProgress, ResyncRequest,
    StatusRequest, StatusResponse,
};
use crate::resync::{self, Plan, Stores};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vectorgate::VectorManager;

/// Messages buffered for a resync's caller. Progress is coalesced: a caller
/// that reads slowly skips intermediate states (never the latest one nor
/// the result), and never slows the copy down.
const PROGRESS_BUFFER: usize = 4;

/// The `AdminService` implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    manager: Arc<VectorManager>,
    stores: Stores,
    data_dir: PathBuf,
    resync: Arc<ResyncSlot>,
}

/// The one resync that may run, and where it stands.
#[derive(Debug, Default)]
struct ResyncSlot(Mutex<Option<Running>>);

#[derive(Debug, Clone)]
struct Running {
    from: String,
    to: String,
    copied: u64,
    total: u64,
}

impl ResyncSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the slot, or says which resync holds it.
    fn claim(self: &Arc<Self>, plan: &Plan) -> Result<Claim, Status> {
        let mut running = self.lock();
        if let Some(r) = &*running {
            return Err(Status::failed_precondition(format!(
                "a resync from {:?} to {:?} is running ({} of {} records copied); one resync at a time",
                r.from, r.to, r.copied, r.total
            )));
        }
        *running = Some(Running {
            from: plan.from.clone(),
            to: plan.to.clone(),
            copied: 0,
            total: 0,
        });
        Ok(Claim(Arc::clone(self)))
    }
}

/// Holds the resync slot; frees it when dropped.
#[derive(Debug)]
struct Claim(Arc<ResyncSlot>);

impl Claim {
    fn update(&self, copied: u64, total: u64) {
        if let Some(running) = &mut *self.0.lock() {
            running.copied = copied;
            running.total = total;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

impl AdminApi {
    /// A service over `manager`, which runs `stores`; resync checkpoints
    /// go to `data_dir`.
    pub fn new(manager: Arc<VectorManager>, stores: Stores, data_dir: PathBuf) -> Self {
        AdminApi {
            manager,
            stores,
            data_dir,
            resync: Arc::default(),
        }
    }

    fn status(&self) -> StatusResponse {
        status_to_proto(&self.manager.status())
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        authorize(&request, Role::Read, [])?;
        Ok(Response::new(AdminApi::status(self)))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        authorize(&request, Role::Admin, [])?;
        self.manager
            .drain(&request.get_ref().store)
            .map_err(to_status)?;
        Ok(Response::new(DrainResponse {
            status: Some(AdminApi::status(self)),
        }))
    }

    async fn force_active(
        &self,
        request: Request<ForceActiveRequest>,
    ) -> Result<Response<ForceActiveResponse>, Status> {
        authorize(&request, Role::Admin, [])?;
        self.manager
            .force_active(&request.get_ref().store)
            .map_err(to_status)?;
        Ok(Response::new(ForceActiveResponse {
            status: Some(AdminApi::status(self)),
        }))
    }

    async fn resume_auto(
        &self,
        request: Request<ResumeAutoRequest>,
    ) -> Result<Response<ResumeAutoResponse>, Status> {
        authorize(&request, Role::Admin, [])?;
        self.manager.resume_auto();
        Ok(Response::new(ResumeAutoResponse {
            status: Some(AdminApi::status(self)),
        }))
    }

    type ResyncStream = ReceiverStream<Result<ResyncProgress, Status>>;

    /// Checks the request and claims the one resync slot here, so that a
    /// refusal fails the call itself; a task then runs the resync to its
    /// end, whether or not the caller stays (an abandoned copy would leave
    /// the target out of rotation).
    async fn resync(
        &self,
        request: Request<ResyncRequest>,
    ) -> Result<Response<Self::ResyncStream>, Status> {
        authorize(&request, Role::Admin, [])?;
        let ResyncRequest {
            from,
            to,
            page_size,
        } = request.into_inner();
        let plan =
            Plan::new(&self.stores, &self.data_dir, &from, &to, page_size).map_err(to_status)?;
        let claim = self.resync.claim(&plan)?;
        resync::source_ready(&self.manager, &plan.from)
            .await
            .map_err(Status::failed_precondition)?;

        // The resync task publishes progress on a watch channel (never
        // waiting for the caller) and its outcome on a oneshot; a forwarder
        // task turns them into the stream.
        let (progress_tx, progress_rx) = watch::channel(ResyncProgress::default());
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let manager = Arc::clone(&self.manager);
        let stores = self.stores.clone();
        tokio::spawn(async move {
            let outcome = resync::run(&manager, &stores, &plan, |progress| {
                claim.update(progress.copied, progress.total);
                progress_tx.send_replace(resync::progress_to_proto(progress));
            })
            .await;
            // Free the slot before the caller hears the end: once it has
            // the result, it may start the next resync.
            drop(claim);
            let last = match outcome {
                Ok(outcome) => {
                    let mut last = progress_tx.borrow().clone();
                    last.copied = outcome.copied;
                    last.done = true;
                    last.result = Some(outcome.to_proto());
                    Ok(last)
                }
                Err(error) => {
                    tracing::error!(from = %plan.from, to = %plan.to, %error, "resync failed");
                    Err(to_status(error))
                }
            };
            if outcome_tx.send(last).is_err() {
                tracing::info!(from = %plan.from, to = %plan.to, "the resync's caller left before its end; the outcome is in the log");
            }
        });
        let (tx, rx) = mpsc::channel(PROGRESS_BUFFER);
        tokio::spawn(forward_progress(progress_rx, outcome_rx, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<RedriveRequest>,
    ) -> Result<Response<RedriveResponse>, Status> {
        authorize(&request, Role::Admin, [])?;
        let store = &request.get_ref().store;
        let status = self.manager.status();
        if status.store(store).is_none() {
            let known: Vec<&str> = status.stores.iter().map(|s| s.name.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "store: no store named {store:?}; stores are {known:?}"
            )));
        }
        if status.replication == "off" {
            return Err(Status::failed_precondition(
                "replication is off: there is no journal, so no dead letters to re-drive",
            ));
        }
        let (accepted, still_refused) = self
            .manager
            .redrive_dead_letters(store)
            .await
            .map_err(to_status)?;
        tracing::info!(store = %store, accepted, still_refused, "dead letters re-driven");
        Ok(Response::new(RedriveResponse {
            accepted,
            still_refused,
        }))
    }
}

type Outcome = Result<ResyncProgress, Status>;

/// Sends every progress state the caller has not seen (the latest one when
/// it lags), then the outcome. Ends early when the caller goes away.
async fn forward_progress(
    mut progress: watch::Receiver<ResyncProgress>,
    mut outcome: oneshot::Receiver<Outcome>,
    tx: mpsc::Sender<Outcome>,
) {
    let mut progress_open = true;
    loop {
        tokio::select! {
            biased;
            changed = progress.changed(), if progress_open => {
                if changed.is_err() {
                    // The resync task ended; its outcome follows.
                    progress_open = false;
                    continue;
                }
                let message = progress.borrow_and_update().clone();
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            last = &mut outcome => {
                let last = last.unwrap_or_else(|_| Err(Status::internal("the resync task ended without an outcome")));
                let _ = tx.send(last).await;
                return;
            }
        }
    }
}
