//! The health probe: exactly one background task per store.
//!
//! Each tick it makes one real round trip (`health()`, or `ensure_schema`
//! while the store has never been reachable) bounded by the probe timeout,
//! and feeds the outcome to the store's breaker. The probe is also the only
//! source of trial calls for a half-open breaker.

use super::Inner;

use crate::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Runs until `cancel` fires. Holds the manager state only through `inner`;
/// the task ends promptly even in the middle of a probe.
pub(crate) async fn run(inner: Arc<Inner>, index: usize, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(inner.config.health.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = probe_once(&inner, index) => {}
        }
    }
}

async fn probe_once(inner: &Inner, index: usize) {
    let slot = &inner.slots[index];
    let timeout = inner.config.health.timeout();
    let started = Instant::now();
    if !inner.schema_ready(index) {
        // The schema step may build indexes: give it the request deadline.
        let limit = Duration::from_millis(inner.config.retry.deadline_ms).max(timeout);
        let outcome = bounded(
            limit,
            &slot.name,
            slot.store.ensure_schema(&inner.config.index),
        )
        .await;
        match &outcome {
            Ok(()) => tracing::info!(store = %slot.name, "schema ready; store joins the rotation"),
            Err(error) if !error.is_retriable() => {
                tracing::error!(store = %slot.name, %error, "schema cannot be created; store stays out of rotation")
            }
            Err(_) => {}
        }
        inner.record_probe(
            index,
            outcome.map(|()| started.elapsed()),
            started.elapsed(),
        );
        return;
    }
    let outcome = bounded(timeout, &slot.name, slot.store.health()).await;
    inner.record_probe(
        index,
        outcome.map(|report| report.latency),
        started.elapsed(),
    );
}

async fn bounded<T>(
    limit: Duration,
    store: &str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(Error::timeout(
            store,
            format!("probe got no answer within {} ms", limit.as_millis()),
        ))
    })
}
