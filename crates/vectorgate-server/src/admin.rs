//! `vectorgate.v1.AdminService`: the manager's status for any valid key,
//! and the operator overrides (drain, force, resume) for admin keys.

use crate::auth::{Role, authorize};
use crate::convert::{status_to_proto, to_status};
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    DrainRequest, DrainResponse, ForceActiveRequest, ForceActiveResponse, ResumeAutoRequest,
    ResumeAutoResponse, StatusRequest, StatusResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vectorgate::VectorManager;

/// The `AdminService` implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    manager: Arc<VectorManager>,
}

impl AdminApi {
    /// A service over `manager`.
    pub fn new(manager: Arc<VectorManager>) -> Self {
        AdminApi { manager }
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
}
