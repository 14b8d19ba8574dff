//! Read and write lanes in front of a store.
//!
//! A pooled backend has a fixed number of connections. Without lanes a bulk
//! import (many concurrent upserts) can hold every one of them, and every
//! recall then waits for a connection until it times out: the failure
//! FastGPT's users report most. [`LanedStore`] gives reads and writes
//! separate semaphores: at most `reads` recall/count/scan calls and at most
//! `writes` upsert/delete calls reach the store at once. Sized so that
//! `reads + writes` is below the store's pool size, neither lane can take
//! the other's connections, and the rest stays free for health probes and
//! schema calls (which take no lane: a probe must never queue behind load).
//!
//! A call waits for its lane (it does not fail): the time it may wait is
//! bounded by whoever calls the store (the manager's attempt timeout), and
//! how many calls can wait is bounded in front of it (admission control,
//! the journal's queue). Calls that had to wait are counted in
//! `vectorgate_lane_waits_total{store, lane}`.

use crate::error::{Error, Result};
use crate::model::{
    CountScope, DeleteSelector, HealthReport, Hit, IndexSpec, RecallQuery, Record, ScanPage,
    ScanRequest, UpsertOutcome,
};
use crate::store::{DynStore, VectorStore};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};

/// How many calls of each lane may reach the store at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    /// Recall, count and scan calls in flight.
    pub reads: usize,
    /// Upsert and delete calls in flight.
    pub writes: usize,
}

impl LaneLimits {
    /// The split vectorgate uses for a pool of `pool_size` connections: one
    /// connection kept free for probes and schema calls, writes get at most
    /// a third of the rest (at least 1), reads the remainder (at least 1).
    /// A pool of 16 gives reads 10, writes 5, probes 1.
    pub fn for_pool(pool_size: u32) -> LaneLimits {
        let usable = (pool_size as usize).saturating_sub(1).max(2);
        let writes = (usable / 3).max(1);
        LaneLimits {
            reads: (usable - writes).max(1),
            writes,
        }
    }

    /// Both lanes must allow at least one call.
    pub fn check(&self) -> Result<()> {
        if self.reads == 0 {
            return Err(Error::invalid("lanes.reads", "must be at least 1"));
        }
        if self.writes == 0 {
            return Err(Error::invalid("lanes.writes", "must be at least 1"));
        }
        Ok(())
    }
}

/// A store whose reads and writes go through separate concurrency lanes.
pub struct LanedStore {
    inner: DynStore,
    limits: LaneLimits,
    reads: Semaphore,
    writes: Semaphore,
}

impl std::fmt::Debug for LanedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanedStore")
            .field("store", &self.inner.name())
            .field("limits", &self.limits)
            .finish()
    }
}

impl LanedStore {
    /// Wraps `inner`; fails if a lane allows no call.
    pub fn new(inner: DynStore, limits: LaneLimits) -> Result<Arc<LanedStore>> {
        limits.check()?;
        Ok(Arc::new(LanedStore {
            inner,
            limits,
            reads: Semaphore::new(limits.reads),
            writes: Semaphore::new(limits.writes),
        }))
    }

    /// The configured limits.
    pub fn limits(&self) -> LaneLimits {
        self.limits
    }

    async fn read_lane(&self) -> Result<SemaphorePermit<'_>> {
        self.enter(&self.reads, "read").await
    }

    async fn write_lane(&self) -> Result<SemaphorePermit<'_>> {
        self.enter(&self.writes, "write").await
    }

    async fn enter<'a>(
        &'a self,
        lane: &'a Semaphore,
        label: &'static str,
    ) -> Result<SemaphorePermit<'a>> {
        if let Ok(permit) = lane.try_acquire() {
            return Ok(permit);
        }
        metrics::counter!(
            "vectorgate_lane_waits_total",
            "store" => self.inner.name().to_owned(),
            "lane" => label
        )
        .increment(1);
        // The semaphores are never closed; an error here would be a bug.
        lane.acquire()
            .await
            .map_err(|_| Error::internal(self.inner.name(), format!("the {label} lane was closed")))
    }
}

#[async_trait]
impl VectorStore for LanedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        self.inner.ensure_schema(spec).await
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let _lane = self.write_lane().await?;
        self.inner.upsert(records).await
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let _lane = self.read_lane().await?;
        self.inner.recall(query).await
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        let _lane = self.write_lane().await?;
        self.inner.delete(selector).await
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        let _lane = self.read_lane().await?;
        self.inner.count(scope).await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        let _lane = self.read_lane().await?;
        self.inner.scan(request).await
    }

    async fn health(&self) -> Result<HealthReport> {
        self.inner.health().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pool_split_keeps_a_connection_for_probes() {
        assert_eq!(
            LaneLimits::for_pool(16),
            LaneLimits {
                reads: 10,
                writes: 5
            }
        );
        assert_eq!(
            LaneLimits::for_pool(4),
            LaneLimits {
                reads: 2,
                writes: 1
            }
        );
        assert_eq!(
            LaneLimits::for_pool(1),
            LaneLimits {
                reads: 1,
                writes: 1
            }
        );
        for pool in 3..200 {
            let l = LaneLimits::for_pool(pool);
            assert!(l.reads + l.writes < pool as usize, "pool {pool}: {l:?}");
            assert!(l.reads >= l.writes, "pool {pool}: {l:?}");
        }
        assert!(
            LaneLimits {
                reads: 0,
                writes: 1
            }
            .check()
            .is_err()
        );
    }
}
