//! Metric names and the helpers that record them, so every metric the
//! manager exports is listed in one place.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vectorgate_calls_total` | counter | store, op, outcome (`ok` or an error kind) |
//! | `vectorgate_call_duration_seconds` | histogram | store, op |
//! | `vectorgate_retries_total` | counter | store, op |
//! | `vectorgate_failovers_total` | counter | from, to, op |
//! | `vectorgate_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | store |
//! | `vectorgate_store_healthy` | gauge (1/0) | store |
//! | `vectorgate_probe_duration_seconds` | histogram | store |
//! | `vectorgate_active_store` | gauge (1 for the active store) | store |
//! | `vectorgate_replication_lag_entries` | gauge | store |
//! | `vectorgate_replication_lag_seconds` | gauge | store |
//! | `vectorgate_dead_letters` | gauge | store |
//! | `vectorgate_journal_pending_entries` | gauge (entries the slowest store misses) | |
//! | `vectorgate_write_batch_writes` | histogram (writes per group commit) | |
//! | `vectorgate_replicated_entries_total` | counter (replicator batches applied) | store |
//! | `vectorgate_stale_reads_total` | counter (reads answered before catch-up) | store |

use super::breaker::BreakerState;
use crate::error::Error;
use std::time::Duration;

/// The operations the manager routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `upsert`
    Upsert,
    /// `recall`
    Recall,
    /// `delete`
    Delete,
    /// `count`
    Count,
    /// `scan`
    Scan,
}

impl Op {
    /// True for operations that do not change data.
    pub fn is_read(self) -> bool {
        matches!(self, Op::Recall | Op::Count | Op::Scan)
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Recall => "recall",
            Op::Delete => "delete",
            Op::Count => "count",
            Op::Scan => "scan",
        }
    }
}

pub(crate) fn call(store: &str, op: Op, result: Result<(), &Error>, took: Duration) {
    let outcome = match result {
        Ok(()) => "ok",
        Err(e) => e.kind().as_str(),
    };
    metrics::counter!("vectorgate_calls_total", "store" => store.to_owned(), "op" => op.as_str(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("vectorgate_call_duration_seconds", "store" => store.to_owned(), "op" => op.as_str())
        .record(took.as_secs_f64());
}

pub(crate) fn retry(store: &str, op: Op) {
    metrics::counter!("vectorgate_retries_total", "store" => store.to_owned(), "op" => op.as_str())
        .increment(1);
}

pub(crate) fn failover(from: &str, to: &str, op: Op) {
    metrics::counter!("vectorgate_failovers_total", "from" => from.to_owned(), "to" => to.to_owned(), "op" => op.as_str())
        .increment(1);
}

pub(crate) fn probe(store: &str, healthy: bool, took: Duration) {
    metrics::gauge!("vectorgate_store_healthy", "store" => store.to_owned()).set(if healthy {
        1.0
    } else {
        0.0
    });
    metrics::histogram!("vectorgate_probe_duration_seconds", "store" => store.to_owned())
        .record(took.as_secs_f64());
}

pub(crate) fn breaker(store: &str, state: BreakerState) {
    metrics::gauge!("vectorgate_breaker_state", "store" => store.to_owned()).set(state.gauge());
}

pub(crate) fn active(store: &str, is_active: bool) {
    metrics::gauge!("vectorgate_active_store", "store" => store.to_owned()).set(if is_active {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn lag(store: &str, entries: u64, seconds: f64, dead_letters: u64) {
    metrics::gauge!("vectorgate_replication_lag_entries", "store" => store.to_owned())
        .set(entries as f64);
    metrics::gauge!("vectorgate_replication_lag_seconds", "store" => store.to_owned()).set(seconds);
    metrics::gauge!("vectorgate_dead_letters", "store" => store.to_owned())
        .set(dead_letters as f64);
}
