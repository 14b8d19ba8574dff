//! The [`VectorStore`] trait: the one contract every backend, and the
//! failover manager itself, implements.

use crate::error::Result;
use crate::model::{
    CountScope, DeleteSelector, HealthReport, Hit, IndexSpec, RecallQuery, Record, ScanPage,
    ScanRequest, UpsertOutcome,
};
use async_trait::async_trait;
use std::sync::Arc;

/// A shared, type-erased store, as the manager holds them.
pub type DynStore = Arc<dyn VectorStore>;

/// A vector index with FastGPT's scope columns.
///
/// # Contract (checked by `vectorgate-testkit`'s conformance suite)
/// - **Scores**: larger is more similar; see [`crate::Metric`] for the exact
///   formula per metric. Hits are sorted by score, descending.
/// - **Validation**: every method validates its input with [`crate::validate`]
///   before any I/O and returns [`crate::Error::InvalidInput`] naming the field
///   and the limit. Invalid input never changes anything.
/// - **Ids**: an upsert record with an empty id gets a fresh UUIDv7; its
///   `created_at_ms == 0` becomes "now". Upsert is idempotent by id (last
///   write wins) within the team that holds the id; an upsert naming an id
///   another team holds fails as a whole with [`crate::Error::Conflict`] and
///   writes nothing (a record never changes team).
/// - **Tenancy**: recall, delete and (when scoped) count and scan never see
///   another team's records.
/// - **Errors**: transient faults are reported as `Unavailable`/`Timeout`
///   (retriable); nothing else is.
///
/// Methods take `&self` and may be called concurrently.
#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Backend family, e.g. `embedded`, `postgres`. Used in metrics labels.
    fn kind(&self) -> &'static str;

    /// Instance name from configuration, e.g. `primary`. Used in logs and
    /// errors; unique within a manager.
    fn name(&self) -> &str;

    /// Creates whatever is missing for `spec` (tables, indexes, collection).
    /// Fails with [`crate::Error::SchemaMismatch`], naming both, if the store
    /// already holds an index with another dimension or metric.
    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()>;

    /// Inserts or replaces records by id; at most
    /// [`crate::validate::MAX_UPSERT_BATCH`] per call. Durable when it returns.
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome>;

    /// Nearest neighbours of `query.vector` within the query's scope, best first.
    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>>;

    /// Deletes within one team; returns how many records were removed.
    async fn delete(&self, selector: &DeleteSelector) -> Result<u64>;

    /// Counts records in a scope (unconstrained fields match everything).
    async fn count(&self, scope: &CountScope) -> Result<u64>;

    /// One page of a stable walk over records in ascending id order.
    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage>;

    /// A cheap real round trip to the backend (never a cached flag).
    async fn health(&self) -> Result<HealthReport>;
}
