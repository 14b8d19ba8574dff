//! What the manager tells operators: a snapshot of every store's state,
//! published on a `watch` channel whenever a state changes (never per request).

use super::breaker::BreakerState;
use std::time::Duration;

/// The manager's state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerStatus {
    /// The manager's name.
    pub name: String,
    /// The store that serves requests now: the first usable store in
    /// priority order (or the forced one). `None` when no store is usable.
    pub active: Option<String>,
    /// Every store, in priority order.
    pub stores: Vec<StoreStatus>,
    /// True once `shutdown` began.
    pub shutting_down: bool,
    /// `async`, `sync` or `off`.
    pub replication: &'static str,
    /// Highest journal sequence number the write pipeline finished with.
    pub committed_seq: u64,
}

impl ManagerStatus {
    /// The status of the store with this name.
    pub fn store(&self, name: &str) -> Option<&StoreStatus> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// True when `other` differs in anything but measurements (latencies,
    /// error texts, failure counts): such changes are worth a notification.
    pub(crate) fn same_state(&self, other: &ManagerStatus) -> bool {
        self.active == other.active
            && self.shutting_down == other.shutting_down
            && self.stores.len() == other.stores.len()
            && self.stores.iter().zip(&other.stores).all(|(a, b)| {
                a.name == b.name
                    && a.breaker == b.breaker
                    && a.healthy == b.healthy
                    && a.schema_ready == b.schema_ready
                    && a.drained == b.drained
                    && a.forced == b.forced
                    && a.in_sync == b.in_sync
                    && a.resync_pending == b.resync_pending
            })
    }
}

/// One store's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStatus {
    /// Configured name.
    pub name: String,
    /// Backend kind.
    pub kind: &'static str,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Outcome of the last health probe; `None` before the first one.
    pub healthy: Option<bool>,
    /// False until `ensure_schema` succeeded on it (a store that was down at
    /// start-up gets its schema from the probe once it is reachable).
    pub schema_ready: bool,
    /// Taken out of rotation by an operator.
    pub drained: bool,
    /// Forced first by an operator.
    pub forced: bool,
    /// Serving requests now.
    pub active: bool,
    /// Retriable failures in a row (calls and probes).
    pub consecutive_failures: u32,
    /// Round trip of the last successful probe.
    pub last_probe_latency: Option<Duration>,
    /// Error of the last probe, if it failed.
    pub last_probe_error: Option<String>,
    /// Has applied every committed write (always true without replication).
    pub in_sync: bool,
    /// Held out of rotation: a resync into it has not finished.
    pub resync_pending: bool,
    /// Journal entries it has not applied yet.
    pub lag_entries: u64,
    /// Seconds since the first write it misses was journaled.
    pub lag_seconds: Option<f64>,
    /// Entries it refused permanently, kept for re-driving.
    pub dead_letters: u64,
    /// Why the store is held out of rotation (`resync_pending`), e.g. a
    /// resync into it did not finish, or it fell behind past the journal's cap.
    pub hold_reason: Option<String>,
}
