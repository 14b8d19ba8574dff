//! The failover manager: one [`VectorStore`] in front of an ordered list of
//! stores `[primary, fallback, ...]`.
//!
//! - [`breaker`]: when a store is taken out of rotation and let back in;
//! - [`probe`]: the one background task per store that checks its health;
//! - [`router`]: the order, retries, backoff and deadline of one request;
//! - [`status`]: what operators see, as a snapshot or a `watch` stream;
//! - [`telemetry`]: the metrics it exports;
//! - [`config`]: every knob, with its default.
//!
//! - [`replication`]: the journaled write pipeline and the replicators that
//!   keep every store in sync (mode `async`/`sync`; `off` routes writes
//!   like reads).

pub mod breaker;
pub mod config;
mod probe;
mod replication;
pub mod router;
pub mod status;
pub mod telemetry;

use crate::error::{Error, Result};
use crate::journal::WriteOp;
use crate::model::{
    CountScope, DeleteSelector, HealthReport, Hit, IndexSpec, RecallQuery, Record, ScanPage,
    ScanRequest, UpsertOutcome,
};
use crate::store::{DynStore, VectorStore};
use crate::validate::{self, CollectionFilter};
use async_trait::async_trait;
use breaker::{Breaker, BreakerState};
use config::{ManagerConfig, ReplicationMode};
use parking_lot::Mutex;
use rand::SeedableRng;
use replication::Replication;
use router::Routed;
use status::{ManagerStatus, StoreStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use telemetry::Op;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One store and everything the manager knows about it.
struct Slot {
    store: DynStore,
    name: String,
    kind: &'static str,
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    breaker: Breaker,
    schema_ready: bool,
    drained: bool,
    healthy: Option<bool>,
    last_probe_latency: Option<Duration>,
    last_probe_error: Option<String>,
}

/// State shared by the manager handle and its background tasks.
pub(crate) struct Inner {
    config: ManagerConfig,
    slots: Vec<Slot>,
    forced: Mutex<Option<usize>>,
    shutting_down: AtomicBool,
    status_tx: watch::Sender<ManagerStatus>,
    /// The journal and its pipeline; `None` when replication is off.
    replication: Option<Replication>,
    /// Reads answered before their store caught up, and of those, the ones
    /// another store could have answered fully (routing errors: must stay 0).
    stale_reads: AtomicU64,
    avoidable_stale_reads: AtomicU64,
    /// Backoff jitter (seedable, for reproducible tests).
    jitter: Mutex<rand::rngs::StdRng>,
    /// Held while a resync runs (one at a time).
    resync_lock: tokio::sync::Mutex<()>,
}

/// The failover manager. Implements [`VectorStore`], so a service can put it
/// where a single store was. Call [`VectorManager::shutdown`] to stop its
/// background tasks; dropping it cancels them too.
pub struct VectorManager {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for VectorManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorManager")
            .field("name", &self.inner.config.name)
            .field(
                "stores",
                &self.inner.slots.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl VectorManager {
    /// Starts a manager over `stores`, in priority order.
    ///
    /// Runs `ensure_schema` with the configured [`IndexSpec`] on every store.
    /// A store that is unreachable now joins later, once its probe succeeds;
    /// a store that holds another dim/metric (or fails for any other
    /// non-transient reason) stops the start with that error.
    pub async fn start(config: ManagerConfig, stores: Vec<DynStore>) -> Result<VectorManager> {
        config.check()?;
        if stores.is_empty() {
            return Err(Error::invalid("stores", "needs at least one store"));
        }
        for (i, store) in stores.iter().enumerate() {
            if stores[..i].iter().any(|other| other.name() == store.name()) {
                return Err(Error::invalid(
                    "stores",
                    format!(
                        "two stores are named {:?}; names must be unique",
                        store.name()
                    ),
                ));
            }
        }

        let now = Instant::now();
        let mut slots = Vec::with_capacity(stores.len());
        for store in stores {
            let limit = Duration::from_millis(config.retry.deadline_ms);
            let ready = match tokio::time::timeout(limit, store.ensure_schema(&config.index)).await
            {
                Ok(Ok(())) => true,
                Ok(Err(error)) if !error.is_retriable() => return Err(error),
                Ok(Err(error)) => {
                    tracing::warn!(store = store.name(), %error, "store unreachable at start; it joins once its probe succeeds");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        store = store.name(),
                        "ensure_schema timed out at start; it joins once its probe succeeds"
                    );
                    false
                }
            };
            slots.push(Slot {
                name: store.name().to_owned(),
                kind: store.kind(),
                state: Mutex::new(SlotState {
                    breaker: Breaker::new(config.breaker, now),
                    schema_ready: ready,
                    drained: false,
                    healthy: None,
                    last_probe_latency: None,
                    last_probe_error: None,
                }),
                store,
            });
        }

        let (replication, restored) =
            match (&config.replication.mode, &config.replication.journal_path) {
                (ReplicationMode::Off, _) | (_, None) => (None, None),
                (mode, Some(path)) => {
                    let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
                    let (replication, restored) = Replication::open(
                        *mode,
                        path.clone(),
                        config.replication.queue,
                        config.replication.max_queue_bytes,
                        &names,
                    )
                    .await?;
                    (Some(replication), Some(restored))
                }
            };
        let jitter = match config.retry.jitter_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let placeholder = ManagerStatus {
            name: config.name.clone(),
            active: None,
            stores: Vec::new(),
            shutting_down: false,
            replication: config.replication.mode.as_str(),
            committed_seq: 0,
        };
        let (status_tx, _) = watch::channel(placeholder);
        let inner = Arc::new(Inner {
            config,
            slots,
            forced: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            status_tx,
            replication,
            stale_reads: AtomicU64::new(0),
            avoidable_stale_reads: AtomicU64::new(0),
            jitter: Mutex::new(jitter),
            resync_lock: tokio::sync::Mutex::new(()),
        });
        if let Some(restored) = restored {
            inner.hold_new_stores(&restored).await?;
        }
        inner.refresh();

        // The only background tasks: one probe per store and, with
        // replication, one writer and one replicator per store. Each runs in
        // a span named after it, so its logs say which task and store.
        let cancel = CancellationToken::new();
        let name = &inner.config.name;
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for (index, slot) in inner.slots.iter().enumerate() {
            let span = tracing::info_span!("vectorgate.probe", manager = %name, store = %slot.name);
            tasks.push(tokio::spawn(
                probe::run(inner.clone(), index, cancel.child_token()).instrument(span),
            ));
        }
        if inner.replication.is_some() {
            let span = tracing::info_span!("vectorgate.writer", manager = %name);
            tasks.push(tokio::spawn(
                inner
                    .clone()
                    .run_writer(cancel.child_token())
                    .instrument(span),
            ));
            for (index, slot) in inner.slots.iter().enumerate() {
                let span = tracing::info_span!("vectorgate.replicator", manager = %name, store = %slot.name);
                tasks.push(tokio::spawn(
                    inner
                        .clone()
                        .run_replicator(index, cancel.child_token())
                        .instrument(span),
                ));
                inner.wake_replicator(index);
            }
        }
        Ok(VectorManager {
            inner,
            cancel,
            tasks: Mutex::new(tasks),
        })
    }

    /// A snapshot of every store's state.
    pub fn status(&self) -> ManagerStatus {
        self.inner.snapshot()
    }

    /// A stream of status snapshots, updated on every state change (breaker,
    /// health flag, active store, operator override), never per request.
    pub fn subscribe(&self) -> watch::Receiver<ManagerStatus> {
        self.inner.status_tx.subscribe()
    }

    /// The index every store holds.
    pub fn spec(&self) -> &IndexSpec {
        &self.inner.config.index
    }

    /// Operator override: route every request to `store` first (others stay
    /// as fallbacks), until [`VectorManager::resume_auto`].
    pub fn force_active(&self, store: &str) -> Result<()> {
        let index = self.inner.index_of(store)?;
        *self.inner.forced.lock() = Some(index);
        self.inner.slots[index].state.lock().drained = false;
        tracing::warn!(store, "operator forced the active store");
        self.inner.refresh();
        self.inner.wake_replicator(index);
        Ok(())
    }

    /// Operator override: take `store` out of rotation (for maintenance),
    /// until [`VectorManager::resume_auto`].
    pub fn drain(&self, store: &str) -> Result<()> {
        let index = self.inner.index_of(store)?;
        self.inner.slots[index].state.lock().drained = true;
        let mut forced = self.inner.forced.lock();
        if *forced == Some(index) {
            *forced = None;
        }
        drop(forced);
        tracing::warn!(store, "operator drained the store");
        self.inner.refresh();
        Ok(())
    }

    /// Clears every operator override: priority order and breakers decide again.
    pub fn resume_auto(&self) {
        *self.inner.forced.lock() = None;
        for slot in &self.inner.slots {
            slot.state.lock().drained = false;
        }
        tracing::info!("operator returned routing to automatic");
        self.inner.refresh();
        for index in 0..self.inner.slots.len() {
            self.inner.wake_replicator(index);
        }
    }

    /// Like [`VectorStore::recall`], also naming the store that answered.
    pub async fn recall_routed(&self, query: &RecallQuery) -> Result<Routed<Vec<Hit>>> {
        self.inner.refuse_if_shutting_down()?;
        let filter = validate::check_recall(&self.inner.config.index, query)?;
        if filter == CollectionFilter::Nothing {
            return Ok(Routed {
                value: Vec::new(),
                served_by: self.inner.config.name.clone(),
            });
        }
        let inner = &self.inner;
        inner
            .route(Op::Recall, |i| async move {
                inner.slots[i].store.recall(query).await
            })
            .await
    }

    /// Copies every record of store `from` into store `to` (adding a
    /// fallback to a deployment, migrating between backends). `to` is out of
    /// rotation meanwhile; writes arriving during the copy reach it through
    /// the journal afterwards. Resumable through `options.checkpoint`.
    pub async fn resync(
        &self,
        from: &str,
        to: &str,
        options: &crate::resync::ResyncOptions,
        on_progress: impl FnMut(&crate::resync::ResyncProgress),
    ) -> Result<crate::resync::ResyncReport> {
        let from = self.inner.index_of(from)?;
        let to = self.inner.index_of(to)?;
        self.inner
            .resync_store(from, to, options, on_progress)
            .await
    }

    /// Re-drives the dead letters of `store` (entries it refused, after the
    /// cause was fixed): the store replays the journal from its oldest dead
    /// letter on, in order. Returns how many it accepted now and how many it
    /// still refuses.
    pub async fn redrive_dead_letters(&self, store: &str) -> Result<(u64, u64)> {
        let index = self.inner.index_of(store)?;
        self.inner.redrive(index).await
    }

    /// Drops the dead letters of `store`: the operator accepts that it lacks
    /// those writes (or will resync it). The store can then be in sync
    /// again. Returns how many were dropped.
    pub async fn discard_dead_letters(&self, store: &str) -> Result<u64> {
        let index = self.inner.index_of(store)?;
        let dropped = self.inner.discard_dead_letters(index).await?;
        tracing::warn!(
            store,
            dropped,
            "operator discarded the store's dead letters"
        );
        self.inner.refresh();
        Ok(dropped)
    }

    /// Reads answered before their store caught up: all of them, and those
    /// another store could have answered with every write applied (a
    /// routing error; the fault-model tests require 0).
    #[doc(hidden)]
    pub fn stale_reads(&self) -> (u64, u64) {
        (
            self.inner.stale_reads.load(Ordering::Relaxed),
            self.inner.avoidable_stale_reads.load(Ordering::Relaxed),
        )
    }

    /// The journal's fault injection counters (tests only).
    #[doc(hidden)]
    pub fn journal_faults(&self) -> Option<Arc<crate::journal::JournalFaults>> {
        self.inner.replication.as_ref().map(|r| r.journal_faults())
    }

    /// Bytes of entries the journal holds (approximate).
    pub fn journal_bytes(&self) -> u64 {
        self.inner
            .replication
            .as_ref()
            .map_or(0, |r| r.journal_bytes())
    }

    /// Stops accepting requests, answers the writes already queued, cancels
    /// and joins every background task, and persists the journal cursors.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(%error, "a background task panicked");
            }
        }
        self.inner.save_cursors().await;
        self.inner.refresh();
        tracing::info!(manager = %self.inner.config.name, "manager shut down");
    }

    /// How many background tasks are still running (0 after `shutdown`).
    pub fn running_tasks(&self) -> usize {
        self.tasks
            .lock()
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }

    /// Size of the manager's per-request state (sliding-window entries),
    /// exposed so tests can show that nothing grows with traffic.
    #[doc(hidden)]
    pub fn footprint(&self) -> usize {
        self.inner
            .slots
            .iter()
            .map(|s| s.state.lock().breaker.window_len())
            .sum::<usize>()
            + self.inner.status_tx.receiver_count()
    }
}

impl Drop for VectorManager {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in self.tasks.lock().iter() {
            task.abort();
        }
    }
}

impl Inner {
    /// Stores new to the journal must not serve before they hold the
    /// records: an empty fallback would answer empty after a failover.
    /// - The journal already has writes: every new store is held until a
    ///   resync fills it.
    /// - A fresh journal (a new deployment): if some store already holds
    ///   records, every other store whose record count differs from the
    ///   first of those (or that cannot be counted) is held.
    async fn hold_new_stores(&self, restored: &replication::Restored) -> Result<()> {
        let new: Vec<usize> = (0..self.slots.len())
            .filter(|i| restored.cursors[*i].is_none() && !self.is_held(*i))
            .collect();
        if new.is_empty() || self.slots.len() < 2 {
            return Ok(());
        }
        let reason = if restored.last > 0 {
            Some((
                new.clone(),
                format!(
                    "new to a journal that already holds writes (through #{}): copy its records from an in-sync store with `vectorgate resync`",
                    restored.last
                ),
            ))
        } else {
            let limit = Duration::from_millis(self.config.retry.deadline_ms);
            let everything = crate::model::CountScope::default();
            let mut counts = Vec::new();
            for slot in &self.slots {
                let count = match tokio::time::timeout(limit, slot.store.count(&everything)).await {
                    Ok(Ok(n)) => Some(n),
                    _ => None,
                };
                counts.push(count);
            }
            counts
                .iter()
                .position(|c| c.is_some_and(|n| n > 0))
                .map(|source| {
                    let held: Vec<usize> = new
                        .iter()
                        .copied()
                        .filter(|i| *i != source && counts[*i] != counts[source])
                        .collect();
                    (
                        held,
                        format!(
                            "a new journal, and {} already holds {} records while this store holds another number (or could not be counted): copy them with `vectorgate resync --from {}`",
                            self.slots[source].name,
                            counts[source].unwrap_or(0),
                            self.slots[source].name
                        ),
                    )
                })
        };
        if let Some((held, reason)) = reason {
            for index in held {
                tracing::warn!(store = %self.slots[index].name, "{reason}");
                self.hold(index, &reason).await?;
            }
        }
        Ok(())
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// New caller requests are refused once shutdown began; work already
    /// accepted (writes queued for the pipeline) still completes.
    fn refuse_if_shutting_down(&self) -> Result<()> {
        if self.is_shutting_down() {
            return Err(Error::unavailable(
                &self.config.name,
                "the manager is shutting down",
            ));
        }
        Ok(())
    }

    fn index_of(&self, store: &str) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.name == store)
            .ok_or_else(|| {
                let known: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
                Error::invalid(
                    "store",
                    format!("no store named {store:?}; stores are {known:?}"),
                )
            })
    }

    /// Stores in the order a request tries them: the forced one, then
    /// priority order; drained stores are left out.
    fn candidates(&self) -> Vec<usize> {
        let forced = *self.forced.lock();
        let mut order: Vec<usize> = forced.into_iter().collect();
        order.extend((0..self.slots.len()).filter(|i| Some(*i) != forced));
        order.retain(|i| !self.is_drained(*i));
        // Stable: priority order within each group.
        order.sort_by_key(|i| !self.in_sync(*i));
        order
    }

    /// True while an unfinished resync keeps the store out of rotation.
    fn is_held(&self, index: usize) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.replicas[index].held.load(Ordering::Relaxed))
    }

    /// True when the store has applied every committed write (or there is
    /// no journal to be behind).
    fn in_sync(&self, index: usize) -> bool {
        self.replication
            .as_ref()
            .is_none_or(|r| r.replicas[index].in_sync.load(Ordering::Relaxed))
    }

    /// Breaker closed, schema ready, not drained.
    fn usable(&self, index: usize) -> bool {
        if self.is_held(index) {
            return false;
        }
        let mut state = self.slots[index].state.lock();
        !state.drained && state.schema_ready && state.breaker.admits(Instant::now())
    }

    fn wake_replicator(&self, index: usize) {
        if let Some(replication) = &self.replication {
            replication.wake(index);
        }
    }

    fn is_drained(&self, index: usize) -> bool {
        self.slots[index].state.lock().drained
    }

    fn schema_ready(&self, index: usize) -> bool {
        self.slots[index].state.lock().schema_ready
    }

    fn admits(&self, index: usize) -> bool {
        self.slots[index]
            .state
            .lock()
            .breaker
            .admits(Instant::now())
    }

    /// Why a request may not use this store now, if it may not.
    fn unusable_reason(&self, index: usize) -> Option<&'static str> {
        if self.is_held(index) {
            return Some(
                "held out: a resync into it has not finished (run `vectorgate resync` again)",
            );
        }
        let mut state = self.slots[index].state.lock();
        if state.drained {
            Some("drained by an operator")
        } else if !state.schema_ready {
            Some("not ready: its schema could not be ensured yet")
        } else {
            match state.breaker.state(Instant::now()) {
                BreakerState::Closed => None,
                BreakerState::Open => Some("skipped: circuit open"),
                BreakerState::HalfOpen => {
                    Some("skipped: circuit half-open, waiting for probes to succeed")
                }
            }
        }
    }

    /// Feeds a caller's request outcome to the store's breaker.
    fn record_call(&self, index: usize, failed: bool) {
        let changed = {
            let mut state = self.slots[index].state.lock();
            let now = Instant::now();
            let before = state.breaker.state(now);
            state.breaker.on_call(failed, now);
            before != state.breaker.state(now)
        };
        if changed {
            if failed {
                self.mark_out_of_sync(index);
            }
            self.refresh();
        }
    }

    /// Feeds a probe outcome (`Ok(latency)` or the error) to the store.
    fn record_probe(&self, index: usize, outcome: Result<Duration>, took: Duration) {
        let slot = &self.slots[index];
        {
            let mut state = slot.state.lock();
            let now = Instant::now();
            match &outcome {
                Ok(latency) => {
                    state.schema_ready = true;
                    state.healthy = Some(true);
                    state.last_probe_latency = Some(*latency);
                    state.last_probe_error = None;
                    state.breaker.on_probe(false, now);
                }
                Err(error) => {
                    state.healthy = Some(false);
                    // Shown on /readyz and Status: never a credential.
                    state.last_probe_error = Some(crate::redact::text(&error.to_string()));
                    state.breaker.on_probe(true, now);
                }
            }
        }
        telemetry::probe(&slot.name, outcome.is_ok(), took);
        self.refresh();
        self.wake_replicator(index);
    }

    /// Builds the current status.
    fn snapshot(&self) -> ManagerStatus {
        let now = Instant::now();
        let forced = *self.forced.lock();
        let mut active = None;
        let order = self.candidates();
        let mut stores: Vec<StoreStatus> = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let (lag_entries, lag_seconds) = self
                    .replication
                    .as_ref()
                    .map_or((0, None), |r| r.lag(index));
                let dead_letters = self
                    .replication
                    .as_ref()
                    .map_or(0, |r| r.dead_letters(index));
                let in_sync = self.in_sync(index);
                let resync_pending = self.is_held(index);
                let hold_reason = self
                    .replication
                    .as_ref()
                    .and_then(|r| r.replicas[index].hold_reason.lock().clone());
                let mut state = slot.state.lock();
                StoreStatus {
                    name: slot.name.clone(),
                    kind: slot.kind,
                    breaker: state.breaker.state(now),
                    healthy: state.healthy,
                    schema_ready: state.schema_ready,
                    drained: state.drained,
                    forced: forced == Some(index),
                    active: false,
                    consecutive_failures: state.breaker.consecutive_failures(),
                    last_probe_latency: state.last_probe_latency,
                    last_probe_error: state.last_probe_error.clone(),
                    in_sync,
                    resync_pending,
                    lag_entries,
                    lag_seconds,
                    dead_letters,
                    hold_reason,
                }
            })
            .collect();
        if let Some(index) = order.into_iter().find(|i| {
            let s = &stores[*i];
            s.schema_ready && s.breaker == BreakerState::Closed && s.in_sync && !s.resync_pending
        }) {
            stores[index].active = true;
            active = Some(stores[index].name.clone());
        }
        ManagerStatus {
            name: self.config.name.clone(),
            active,
            stores,
            shutting_down: self.is_shutting_down(),
            replication: self.config.replication.mode.as_str(),
            committed_seq: self.replication.as_ref().map_or(0, |r| r.committed()),
        }
    }

    /// Publishes the status if a state changed, logging each change once.
    fn refresh(&self) {
        self.settle_sync_flags();
        let next = self.snapshot();
        self.status_tx.send_if_modified(|current| {
            if current.same_state(&next) && !current.stores.is_empty() {
                return false;
            }
            log_changes(current, &next);
            *current = next;
            true
        });
    }

    /// The write path: through the journal when replication is on, else
    /// routed like a read. Returns the delete count (0 for upserts).
    async fn write(&self, op: WriteOp) -> Result<u64> {
        self.refuse_if_shutting_down()?;
        if self.replication.is_some() {
            return self.submit(op).await;
        }
        match &op {
            WriteOp::Upsert(records) => self
                .route(Op::Upsert, |i| async move {
                    self.slots[i].store.upsert(records).await.map(|_| 0)
                })
                .await
                .map(|r| r.value),
            WriteOp::Delete(selector) => self
                .route(Op::Delete, |i| async move {
                    self.slots[i].store.delete(selector).await
                })
                .await
                .map(|r| r.value),
        }
    }
}

fn log_changes(before: &ManagerStatus, after: &ManagerStatus) {
    for store in &after.stores {
        let old = before.store(&store.name);
        if old.map(|o| o.breaker) != Some(store.breaker) {
            telemetry::breaker(&store.name, store.breaker);
            if old.is_some() {
                match store.breaker {
                    BreakerState::Open => {
                        tracing::warn!(store = %store.name, error = ?store.last_probe_error, "circuit opened: store taken out of rotation")
                    }
                    BreakerState::HalfOpen => {
                        tracing::info!(store = %store.name, "circuit half-open: probing before letting traffic back")
                    }
                    BreakerState::Closed => {
                        tracing::info!(store = %store.name, "circuit closed: store back in rotation")
                    }
                }
            }
        }
        if old.and_then(|o| o.healthy) != store.healthy && store.healthy == Some(false) {
            tracing::warn!(store = %store.name, error = ?store.last_probe_error, "health probe failing");
        }
        if old.map(|o| o.active) != Some(store.active) {
            telemetry::active(&store.name, store.active);
        }
    }
    if before.active != after.active && !before.stores.is_empty() {
        match &after.active {
            Some(name) => {
                tracing::warn!(active = %name, previous = ?before.active, "active store changed")
            }
            None => tracing::error!(previous = ?before.active, "no store can serve"),
        }
    }
}

#[async_trait]
impl VectorStore for VectorManager {
    fn kind(&self) -> &'static str {
        "manager"
    }

    fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Checks that `spec` is the manager's and ensures it on every store
    /// that is reachable; unreachable stores get it from their probe later.
    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        let own = &self.inner.config.index;
        if spec.dim != own.dim || spec.metric != own.metric {
            return Err(Error::SchemaMismatch {
                store: self.inner.config.name.clone(),
                expected: spec.describe(),
                found: own.describe(),
            });
        }
        let mut ready = 0;
        let mut last_error = None;
        for slot in &self.inner.slots {
            match slot.store.ensure_schema(spec).await {
                Ok(()) => {
                    slot.state.lock().schema_ready = true;
                    ready += 1;
                }
                Err(error) if !error.is_retriable() => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        self.inner.refresh();
        match (ready, last_error) {
            (0, Some(error)) => Err(error),
            _ => Ok(()),
        }
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let prepared =
            validate::prepare_upsert(&self.inner.config.index, records, validate::now_ms())?;
        let ids = prepared.ids;
        self.inner
            .write(WriteOp::Upsert(prepared.records.into_owned()))
            .await?;
        Ok(UpsertOutcome { ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        Ok(self.recall_routed(query).await?.value)
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        validate::check_delete(selector)?;
        self.inner.write(WriteOp::Delete(selector.clone())).await
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        self.inner.refuse_if_shutting_down()?;
        validate::check_count(scope)?;
        Ok(self
            .inner
            .route(Op::Count, |i| async move {
                self.inner.slots[i].store.count(scope).await
            })
            .await?
            .value)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        self.inner.refuse_if_shutting_down()?;
        validate::check_scan(request)?;
        Ok(self
            .inner
            .route(Op::Scan, |i| async move {
                self.inner.slots[i].store.scan(request).await
            })
            .await?
            .value)
    }

    /// Healthy while some store can serve; reports the active store's last
    /// probe. No extra round trip: the probes already make them.
    async fn health(&self) -> Result<HealthReport> {
        let status = self.status();
        let Some(active) = status.active.as_deref().and_then(|name| status.store(name)) else {
            return Err(Error::unavailable(
                &self.inner.config.name,
                "no store can serve",
            ));
        };
        Ok(HealthReport {
            latency: active.last_probe_latency.unwrap_or_default(),
            detail: format!("active store: {}", active.name),
        })
    }
}
