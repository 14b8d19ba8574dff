//! vectorgate: a vector-store layer that keeps answering when a database fails.
//!
//! The crate is organised the way a reader meets the problem:
//! - [`model`]: what is stored and asked for (records, queries, the index spec);
//! - [`store`]: the [`VectorStore`] trait every backend implements;
//! - [`error`]: one error enum whose kinds a caller can act on;
//! - [`validate`]: every input rule, in one place, applied before a store is touched;
//! - [`manager`]: the [`VectorManager`], which fails over between stores;
//! - [`journal`]: the durable log that keeps every store in sync;
//! - [`resync`]: copying one store into another (new fallback, migration);
//! - [`layers`]: stores that wrap a store to add one behaviour (read/write lanes).

pub mod error;
pub mod journal;
pub mod layers;
pub mod manager;
pub mod model;
pub mod redact;
pub mod resync;
pub mod store;
pub mod validate;

pub use error::{Error, ErrorKind, Result, StoreFailure};
pub use manager::VectorManager;
pub use manager::breaker::BreakerState;
pub use manager::config::{BreakerConfig, HealthConfig, ManagerConfig, RetryConfig};
pub use manager::router::Routed;
pub use manager::status::{ManagerStatus, StoreStatus};
pub use model::{
    CountScope, DeleteSelector, HealthReport, Hit, HnswParams, IndexSpec, Metric, RecallQuery,
    Record, ScanPage, ScanRequest, UpsertOutcome,
};
pub use store::{DynStore, VectorStore};
