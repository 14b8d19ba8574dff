//! Routing one request: which stores, in what order, how many attempts,
//! how long to wait between them, and when to give up.
//!
//! The rules, in one place:
//! - candidates are the stores in priority order (a forced store first),
//!   minus drained stores; with replication on, stores in sync with the
//!   journal come before stores still catching up;
//! - stores that have applied every acknowledged write come first (a forced
//!   store too is used first only once caught up); a store still behind
//!   applies them before it answers a read (bounded wait; an answer given
//!   before is counted as stale) or before it takes a write (inline);
//! - a store is used only while its breaker is closed and its schema is ready;
//! - on a retriable error (`Unavailable`, `Timeout`, including the manager's own
//!   per-attempt timeout) the same store is retried up to `retry.attempts`
//!   times with exponential backoff and full jitter, unless its breaker opened
//!   meanwhile, then the next store is tried;
//! - except after a timeout: a store that just hung is not tried again while
//!   another store is usable, so a caller waits about one attempt timeout,
//!   not several, when its database hangs;
//! - any other error goes straight back to the caller: it is not the store's
//!   fault, so it neither counts against the store nor moves to another;
//! - everything happens inside one deadline; when it runs out, the caller
//!   gets one error listing what each store did.

use super::Inner;
use super::telemetry::{self, Op};
use crate::error::{Error, ErrorKind, Result, StoreFailure};
use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// A result and the store that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<T> {
    /// What the store returned.
    pub value: T,
    /// Name of the store that answered.
    pub served_by: String,
}

impl Inner {
    /// Runs `call` on the first store that answers, following the rules
    /// above, within the request deadline and the attempt timeout.
    pub(crate) async fn route<T, F, Fut>(&self, op: Op, call: F) -> Result<Routed<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let retry = &self.config.retry;
        let deadline = Instant::now() + Duration::from_millis(retry.deadline_ms);
        let attempt_timeout = Duration::from_millis(retry.attempt_timeout_ms);
        self.route_with(op, deadline, attempt_timeout, call).await
    }

    /// [`Inner::route`] with an explicit deadline and attempt timeout (the
    /// write pipeline bounds each store call itself).
    pub(crate) async fn route_with<T, F, Fut>(
        &self,
        op: Op,
        deadline: Instant,
        attempt_timeout: Duration,
        call: F,
    ) -> Result<Routed<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let retry = &self.config.retry;
        let span =
            tracing::info_span!("vectorgate.call", op = op.as_str(), manager = %self.config.name);

        async {
            let mut failures: Vec<StoreFailure> = Vec::new();
            let mut previous: Option<&str> = None;
            // A store that has applied every write comes before one still
            // catching up (stable: priority order within each): a read is
            // answered without waiting, a write without replaying a gap.
            let mut order = self.candidates();
            order.sort_by_key(|i| !self.caught_up(*i));
            for (position, &index) in order.iter().enumerate() {
                let slot = &self.slots[index];
                if let Some(reason) = self.unusable_reason(index) {
                    failures.push(StoreFailure {
                        store: slot.name.clone(),
                        attempts: 0,
                        kind: ErrorKind::Unavailable,
                        error: reason.to_owned(),
                    });
                    continue;
                }
                if let Some(from) = previous {
                    telemetry::failover(from, &slot.name, op);
                    tracing::info!(from, to = %slot.name, "failing over to the next store");
                }
                previous = Some(&slot.name);

                let mut delays = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(retry.base_delay_ms))
                    .with_max_delay(Duration::from_millis(retry.max_delay_ms))
                    .with_max_times(retry.attempts.saturating_sub(1) as usize)
                    .build();
                let mut attempts = 0u32;
                let mut last_error: Option<Error> = None;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    attempts += 1;
                    let fresh = !op.is_read() || self.catch_up_for_read(index, deadline).await;
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let limit = attempt_timeout.min(deadline - now);
                    let attempt_span =
                        tracing::debug_span!("vectorgate.attempt", store = %slot.name, attempt = attempts);
                    let outcome = tokio::time::timeout(limit, call(index))
                        .instrument(attempt_span)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::timeout(
                                &slot.name,
                                format!("no answer within {} ms", limit.as_millis()),
                            ))
                        });
                    telemetry::call(&slot.name, op, outcome.as_ref().map(|_| ()), now.elapsed());
                    match outcome {
                        Ok(value) => {
                            self.record_call(index, false);
                            if !fresh {
                                self.record_stale_read(index, &order[..position]);
                            }
                            return Ok(Routed {
                                value,
                                served_by: slot.name.clone(),
                            });
                        }
                        Err(error) if !error.is_retriable() => return Err(error),
                        Err(error) => {
                            tracing::debug!(store = %slot.name, attempt = attempts, %error, "attempt failed");
                            self.record_call(index, true);
                            let hung = error.kind() == ErrorKind::Timeout;
                            last_error = Some(error);
                            if hung && order[position + 1..].iter().any(|i| self.usable(*i)) {
                                break;
                            }
                        }
                    }
                    if attempts >= retry.attempts || !self.admits(index) {
                        break;
                    }
                    let Some(ceiling) = delays.next() else { break };
                    let delay = self.full_jitter(ceiling);
                    if Instant::now() + delay >= deadline {
                        break;
                    }
                    telemetry::retry(&slot.name, op);
                    tokio::time::sleep(delay).await;
                }
                let (kind, error) = match last_error {
                    Some(e) => (e.kind(), e.to_string()),
                    None => (ErrorKind::Timeout, "deadline exceeded before the first attempt".to_owned()),
                };
                failures.push(StoreFailure {
                    store: slot.name.clone(),
                    attempts,
                    kind,
                    error,
                });
                if Instant::now() >= deadline {
                    break;
                }
            }
            for (index, slot) in self.slots.iter().enumerate() {
                let tried = failures.iter().any(|f| f.store == slot.name);
                if !tried && !self.is_drained(index) {
                    failures.push(StoreFailure {
                        store: slot.name.clone(),
                        attempts: 0,
                        kind: ErrorKind::Timeout,
                        error: format!(
                            "not tried: the request deadline of {} ms ran out",
                            retry.deadline_ms
                        ),
                    });
                }
            }
            tracing::warn!(op = op.as_str(), "request failed on every store");
            Err(Error::AllStoresFailed(failures))
        }
        .instrument(span)
        .await
    }
}

impl Inner {
    /// "Full jitter": a uniformly random wait between zero and the
    /// exponential ceiling, so that many clients retrying at once spread out.
    fn full_jitter(&self, ceiling: Duration) -> Duration {
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.jitter.lock().random_range(0..=ms))
    }
}
