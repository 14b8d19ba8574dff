//! The vectorgate gRPC server: a [`vectorgate::VectorManager`] behind an
//! authenticated gRPC API (`proto/vectorgate/v1/vectorgate.proto`), with
//! `grpc.health.v1`, server reflection, Prometheus metrics, readiness and
//! graceful shutdown. The binary is `vectorgate` (`src/main.rs`).
//!
//! - [`config`]: the TOML file, `VECTORGATE_*` env vars and `serve` flags;
//! - [`admission`]: per-team concurrency and write-rate limits;
//! - [`auth`]: API keys (SHA-256 digests, constant-time comparison), roles, teams;
//! - [`convert`]: proto ↔ model, and the one error → status mapping;
//! - [`service`]: the `VectorService` RPCs;
//! - [`admin`]: the `AdminService` RPCs;
//! - [`resync`]: copying one store into another, online or offline, verified;
//! - [`lock`]: the data directory lock (one server, or one offline resync);
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`server`]: wiring it all together;
//! - [`shutdown`]: signals and the drain sequence;
//! - [`cli`]: the subcommands.
//!
//! The generated client ([`proto::vector_service_client::VectorServiceClient`],
//! [`proto::admin_service_client::AdminServiceClient`]) is public, so Rust
//! callers and the integration tests use the same code as the server.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod cli;
pub mod config;
pub mod convert;
pub mod http;
pub mod lock;
pub mod resync;
pub mod server;
pub mod service;
pub mod shutdown;

/// Code generated from `proto/vectorgate/v1/vectorgate.proto` (package
/// `vectorgate.v1`).
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("vectorgate.v1");

    /// The encoded `FileDescriptorSet` of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("vectorgate_descriptor");
}
