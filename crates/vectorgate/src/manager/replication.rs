//! The write pipeline and the replicators: how every store ends up with the
//! same writes in the same order.
//!
//! ```text
//! callers ──► bounded queue ──► writer task ──► journal (one fsync per group)
//!                                   │
//!                                   ├─► serving store (routed: retries, failover)
//!                                   ├─► [sync mode] every other caught-up store
//!                                   └─► ack each caller
//! replicator task per store: journal entries after its cursor ──► the store
//! ```
//!
//! - **Group commit.** The writer takes every write waiting in the queue (up
//!   to `max_batch_records`), appends them to the journal in one durable
//!   transaction, which assigns their sequence numbers, then applies them to
//!   the serving store in that order, then acknowledges. Concurrent writes
//!   share one fsync and, where consecutive upserts allow, one store call.
//! - **Cursors.** Each store applies entries strictly in sequence order,
//!   under its own apply lock, whoever applies them (writer or replicator).
//!   Its cursor is the last sequence number it applied; nothing before it
//!   is missing.
//! - **In sync.** A store is *in sync* once its cursor reached the committed
//!   sequence, and stays so until an apply to it fails or its breaker opens.
//!   Requests go to in-sync stores first; a store that recovers from an
//!   outage replays its backlog and only then gets traffic back.
//! - **Reads see acknowledged writes.** Before a store answers a read, it
//!   applies every committed entry (its replicator does; the read waits up
//!   to `catchup_wait_ms`, then is answered anyway and counted as stale).
//! - **Refusals.** A write the serving store refuses as invalid is removed
//!   from the journal and the caller gets the error: no store keeps it. An
//!   entry a *replica* refuses `dead_letter_after` times goes to that
//!   store's dead letters (kept, visible, re-drivable), never silently dropped.
//! - **Total outage.** When no store can apply a write within the deadline,
//!   the caller gets `Unavailable`, but the write stays journaled and every
//!   store applies it once it recovers (writes are idempotent, so a client
//!   retry is harmless).

use super::Inner;
use super::config::ReplicationMode;
use super::telemetry::{self, Op};
use crate::error::{Error, Result};
use crate::journal::{Entry, Journal, WriteOp};
use crate::store::DynStore;
use crate::validate::{self, MAX_UPSERT_BATCH};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const JOURNAL: &str = "journal";

/// Chunks (≤ 1000 records each) a replicator applies per bounded step: a
/// long catch-up must not look like one slow, failing call.
const REPLICATOR_CHUNKS: usize = 4;

/// A write waiting for the pipeline.
pub(crate) struct Pending {
    op: WriteOp,
    ack: oneshot::Sender<Result<u64>>,
}

/// Replication state of one store.
#[derive(Debug)]
pub(crate) struct Replica {
    /// Serialises applies to this store (writer and replicator).
    apply: tokio::sync::Mutex<()>,
    /// Last sequence number applied; watched by reads waiting to catch up.
    cursor: watch::Sender<u64>,
    pub(crate) in_sync: AtomicBool,
    /// Journal time of the first entry this store is missing (0: none).
    behind_since_ms: AtomicI64,
    dead_letters: AtomicU64,
    /// Wakes the replicator (a probe succeeded, a read is waiting).
    wake: Notify,
    /// The entry this store keeps refusing and how often (bounded: one).
    refusals: Mutex<Option<(u64, u32)>>,
    /// While a resync copies into this store: the journal must keep every
    /// entry after this sequence number (`u64::MAX`: no resync).
    floor: AtomicU64,
    /// Held out of rotation until a resync into it finishes (persisted, so
    /// a restart in the middle of a copy does not serve the partial copy).
    pub(crate) held: AtomicBool,
}

impl Replica {
    pub(crate) fn cursor(&self) -> u64 {
        *self.cursor.borrow()
    }

    fn advance(&self, seq: u64) {
        self.cursor.send_if_modified(|c| {
            if seq > *c {
                *c = seq;
                true
            } else {
                false
            }
        });
    }
}

/// What applying entries to one store gave.
enum Applied {
    /// Every entry through the target; delete counts by sequence number.
    Done(Vec<(u64, u64)>),
    /// The store refused this entry (non-retriable error); entries before
    /// it were applied.
    Refused { seq: u64, error: Error },
}

/// The pipeline shared by the manager and its tasks.
pub(crate) struct Replication {
    pub(crate) mode: ReplicationMode,
    journal: Arc<Mutex<Journal>>,
    /// Highest sequence number the writer has finished with.
    committed: watch::Sender<u64>,
    queue: mpsc::Sender<Pending>,
    pub(crate) replicas: Vec<Replica>,
    /// Taken by the writer task at start.
    receiver: Mutex<Option<mpsc::Receiver<Pending>>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("mode", &self.mode)
            .field("committed", &*self.committed.borrow())
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    journal: &Arc<Mutex<Journal>>,
    work: impl FnOnce(&mut Journal) -> Result<T> + Send + 'static,
) -> Result<T> {
    let journal = journal.clone();
    tokio::task::spawn_blocking(move || work(&mut journal.lock()))
        .await
        .map_err(|e| Error::internal(JOURNAL, format!("journal task failed: {e}")))?
}

impl Replication {
    /// Opens the journal and restores every store's cursor.
    pub(crate) async fn open(
        mode: ReplicationMode,
        path: std::path::PathBuf,
        queue: usize,
        stores: &[String],
    ) -> Result<Replication> {
        let (journal, last, cursors, dead, holds) = tokio::task::spawn_blocking({
            let stores = stores.to_vec();
            move || -> Result<_> {
                let journal = Journal::open(&path)?;
                let last = journal.last_seq()?;
                let saved = journal.cursors()?;
                let mut cursors = Vec::new();
                let mut dead = Vec::new();
                for store in &stores {
                    let cursor = saved.iter().find(|(s, _)| s == store).map(|(_, c)| *c);
                    if cursor.is_none() && last > 0 {
                        tracing::warn!(store, seq = last, "store is new to this journal: it joins at the current sequence; copy existing records into it with `vectorgate resync`");
                    }
                    cursors.push(cursor.unwrap_or(last));
                    dead.push(journal.dead_letter_count(store)?);
                }
                let holds = journal.holds()?;
                for (store, reason) in &holds {
                    tracing::warn!(store, reason, "store held out of rotation: a resync into it did not finish; run `vectorgate resync` again");
                }
                Ok((journal, last, cursors, dead, holds))
            }
        })
        .await
        .map_err(|e| Error::internal(JOURNAL, format!("journal task failed: {e}")))??;
        let journal = Arc::new(Mutex::new(journal));
        let replicas = cursors
            .iter()
            .zip(&dead)
            .zip(stores)
            .map(|((cursor, dead), store)| Replica {
                held: AtomicBool::new(holds.iter().any(|(s, _)| s == store)),
                apply: tokio::sync::Mutex::new(()),
                cursor: watch::channel(*cursor).0,
                in_sync: AtomicBool::new(*cursor >= last),
                behind_since_ms: AtomicI64::new(if *cursor >= last {
                    0
                } else {
                    validate::now_ms()
                }),
                dead_letters: AtomicU64::new(*dead),
                wake: Notify::new(),
                refusals: Mutex::new(None),
                floor: AtomicU64::new(u64::MAX),
            })
            .collect();
        // Persist cursors for stores that were new, so a later restart knows them.
        let initial: Vec<(String, u64)> = stores.iter().cloned().zip(cursors).collect();
        blocking(&journal, move |j| {
            let pairs: Vec<(&str, u64)> = initial.iter().map(|(s, c)| (s.as_str(), *c)).collect();
            j.save_cursors(&pairs)
        })
        .await?;
        let (queue_tx, queue_rx) = mpsc::channel(queue);
        Ok(Replication {
            mode,
            journal,
            committed: watch::channel(last).0,
            queue: queue_tx,
            replicas,
            receiver: Mutex::new(Some(queue_rx)),
        })
    }

    pub(crate) fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    pub(crate) fn wake(&self, index: usize) {
        self.replicas[index].wake.notify_one();
    }

    /// Lag of one store: entries behind, and seconds since the first one it misses.
    pub(crate) fn lag(&self, index: usize) -> (u64, Option<f64>) {
        let replica = &self.replicas[index];
        let entries = self.committed().saturating_sub(replica.cursor());
        let since = replica.behind_since_ms.load(Ordering::Relaxed);
        let seconds =
            (entries > 0 && since > 0).then(|| (validate::now_ms() - since).max(0) as f64 / 1000.0);
        (entries, seconds)
    }

    pub(crate) fn dead_letters(&self, index: usize) -> u64 {
        self.replicas[index].dead_letters.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn replication(&self) -> Result<&Replication> {
        self.replication
            .as_ref()
            .ok_or_else(|| Error::internal(&self.config.name, "replication is off"))
    }

    /// Puts a write through the pipeline and waits for its acknowledgement.
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<u64> {
        let replication = self.replication()?;
        let deadline = Duration::from_millis(self.config.retry.deadline_ms);
        let (ack, done) = oneshot::channel();
        let started = Instant::now();
        tokio::time::timeout(deadline, replication.queue.send(Pending { op, ack }))
            .await
            .map_err(|_| {
                Error::timeout(
                    &self.config.name,
                    "the write queue stayed full until the deadline",
                )
            })?
            .map_err(|_| Error::unavailable(&self.config.name, "the manager is shutting down"))?;
        // The writer answers within its own deadline per batch; allow for
        // the batches queued before this one too.
        let wait = deadline * 2 + started.elapsed();
        match tokio::time::timeout(wait, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::unavailable(
                &self.config.name,
                "the write pipeline stopped before acknowledging",
            )),
            Err(_) => Err(Error::timeout(
                &self.config.name,
                "not acknowledged in time; the write is queued or journaled and may still be applied",
            )),
        }
    }

    /// Before a read on `index`: wait (bounded) until that store applied
    /// every committed write, so a client reads its own acknowledged writes.
    pub(crate) async fn catch_up_for_read(&self, index: usize, deadline: Instant) {
        let Some(replication) = &self.replication else {
            return;
        };
        let target = replication.committed();
        let replica = &replication.replicas[index];
        if replica.cursor() >= target {
            return;
        }
        replica.wake.notify_one();
        let wait = Duration::from_millis(self.config.replication.catchup_wait_ms);
        let until = (Instant::now() + wait).min(deadline);
        let mut cursor = replica.cursor.subscribe();
        let caught_up = tokio::time::timeout_at(until, cursor.wait_for(|c| *c >= target)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            metrics::counter!("vectorgate_stale_reads_total", "store" => self.slots[index].name.clone())
                .increment(1);
            tracing::debug!(store = %self.slots[index].name, target, "read served before the store caught up");
        }
    }

    /// Applies committed entries through `target` to store `index`, in
    /// order: the gap after its cursor from the journal, then `memory` (the
    /// entries the writer holds). Resumes where a failed call left off.
    /// Stops early (still `Done`) once `chunks` journal/memory chunks were
    /// applied, so a long catch-up is made of short, individually bounded steps.
    async fn apply_through(
        &self,
        index: usize,
        target: u64,
        memory: &[Entry],
        chunks: usize,
    ) -> Result<Applied> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        let store = self.slots[index].store.clone();
        let parallelism = self.config.replication.apply_parallelism;
        let _guard = replica.apply.lock().await;
        let mut counts = Vec::new();
        for _ in 0..chunks {
            let cursor = replica.cursor();
            if cursor >= target {
                return Ok(Applied::Done(counts));
            }
            let from_memory: Vec<&Entry> = memory
                .iter()
                .filter(|e| e.seq > cursor && e.seq <= target)
                .collect();
            let gap_end = from_memory.first().map_or(target, |e| e.seq - 1);
            let loaded;
            let chunk: Vec<&Entry> = if cursor < gap_end {
                loaded = blocking(&replication.journal, move |j| {
                    j.read(cursor, gap_end, MAX_UPSERT_BATCH)
                })
                .await?;
                if loaded.is_empty() {
                    // Nothing left in the gap (entries removed as refused).
                    replica.advance(gap_end);
                    continue;
                }
                loaded.iter().collect()
            } else {
                from_memory
            };
            if let Some(first) = chunk.first() {
                replica
                    .behind_since_ms
                    .store(first.at_ms, Ordering::Relaxed);
            }
            for call in group(&chunk) {
                match apply_call(&store, &call, parallelism).await {
                    Ok(deleted) => {
                        if let [entry] = call.as_slice()
                            && matches!(entry.op, WriteOp::Delete(_))
                        {
                            counts.push((entry.seq, deleted));
                        }
                        if let Some(last) = call.last() {
                            replica.advance(last.seq);
                        }
                    }
                    Err(error) if error.is_retriable() => return Err(error),
                    Err(error) => {
                        if let [entry] = call.as_slice() {
                            return Ok(Applied::Refused {
                                seq: entry.seq,
                                error,
                            });
                        }
                        // A merged call was refused: find the entry at fault
                        // by applying the call's entries one by one.
                        for entry in &call {
                            match apply_call(&store, &[*entry], 1).await {
                                Ok(deleted) => {
                                    if matches!(entry.op, WriteOp::Delete(_)) {
                                        counts.push((entry.seq, deleted));
                                    }
                                    replica.advance(entry.seq);
                                }
                                Err(e) if e.is_retriable() => return Err(e),
                                Err(e) => {
                                    return Ok(Applied::Refused {
                                        seq: entry.seq,
                                        error: e,
                                    });
                                }
                            }
                        }
                        // Every entry passed alone (the refusal was transient
                        // or of the merge): all are applied now.
                        tracing::debug!(%error, "a merged call was refused, its entries were accepted one by one");
                    }
                }
            }
            if replica.cursor() >= replication.committed() {
                replica.behind_since_ms.store(0, Ordering::Relaxed);
            }
        }
        Ok(Applied::Done(counts))
    }

    /// The writer task: group commit, apply, acknowledge. Ends when
    /// cancelled, after answering every write already queued.
    pub(crate) async fn run_writer(self: Arc<Self>, cancel: CancellationToken) {
        let Some(replication) = &self.replication else {
            return;
        };
        let Some(mut queue) = replication.receiver.lock().take() else {
            return;
        };
        let max_weight = self.config.replication.max_batch_records;
        loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                next = queue.recv() => next,
            };
            let Some(first) = first.or_else(|| queue.try_recv().ok()) else {
                break;
            };
            let mut batch = vec![first];
            let mut weight = batch[0].op.weight();
            while weight < max_weight {
                match queue.try_recv() {
                    Ok(next) => {
                        weight += next.op.weight();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(replication, batch).await;
        }
        self.save_cursors().await;
    }

    async fn commit_batch(&self, replication: &Replication, batch: Vec<Pending>) {
        let (ops, acks): (Vec<WriteOp>, Vec<oneshot::Sender<Result<u64>>>) =
            batch.into_iter().map(|p| (p.op, p.ack)).unzip();
        metrics::histogram!("vectorgate_write_batch_writes").record(ops.len() as f64);
        let cursors = self.cursor_pairs(replication);
        let floors = replication
            .replicas
            .iter()
            .map(|r| r.floor.load(Ordering::Relaxed));
        let trim_through = cursors
            .iter()
            .map(|(_, c)| *c)
            .chain(floors)
            .min()
            .unwrap_or(0);
        let at_ms = validate::now_ms();
        let appended = {
            let ops = ops.clone();
            blocking(&replication.journal, move |j| {
                let refs: Vec<&WriteOp> = ops.iter().collect();
                let pairs: Vec<(&str, u64)> =
                    cursors.iter().map(|(s, c)| (s.as_str(), *c)).collect();
                let seqs = j.append(&refs, at_ms)?;
                j.save_cursors(&pairs)?;
                j.trim(trim_through)?;
                Ok(seqs)
            })
            .await
        };
        let seqs = match appended {
            Ok(seqs) => seqs,
            Err(error) => {
                tracing::error!(%error, "journal append failed; writes refused");
                for ack in acks {
                    let _ = ack.send(Err(Error::unavailable(
                        JOURNAL,
                        format!("the write could not be journaled: {error}"),
                    )));
                }
                return;
            }
        };
        let mut entries: Vec<Entry> = seqs
            .iter()
            .zip(ops)
            .map(|(seq, op)| Entry {
                seq: *seq,
                at_ms,
                op,
            })
            .collect();
        let mut results: Vec<Option<Result<u64>>> = (0..entries.len()).map(|_| None).collect();
        let target = seqs.last().copied().unwrap_or(0);
        for replica in &replication.replicas {
            if replica.cursor() < seqs.first().copied().unwrap_or(0) {
                let _ = replica.behind_since_ms.compare_exchange(
                    0,
                    at_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }

        // Apply to the serving store, through the router (retries, failover).
        let mut served_by = None;
        let outcome = loop {
            let op = if entries.iter().all(|e| matches!(e.op, WriteOp::Delete(_))) {
                Op::Delete
            } else {
                Op::Upsert
            };
            let memory = &entries;
            let routed = self
                .route(op, |index| async move {
                    let applied = self.apply_through(index, target, memory, usize::MAX).await;
                    if applied.is_err() {
                        self.mark_out_of_sync(index);
                    }
                    applied
                })
                .await;
            match routed {
                Ok(routed) => match routed.value {
                    Applied::Done(counts) => {
                        served_by = self.index_of(&routed.served_by).ok();
                        break Ok(counts);
                    }
                    Applied::Refused { seq, error } => {
                        // The serving store refused this write: nobody keeps it.
                        tracing::info!(store = %routed.served_by, seq, %error, "write refused by the serving store; removed from the journal");
                        if let Err(e) = blocking(&replication.journal, move |j| j.remove(seq)).await
                        {
                            tracing::error!(error = %e, seq, "could not remove a refused entry from the journal");
                        }
                        if let Some(pos) = entries.iter().position(|e| e.seq == seq) {
                            entries.remove(pos);
                            results[seqs.iter().position(|s| *s == seq).unwrap_or(pos)] =
                                Some(Err(error));
                        }
                        if entries.is_empty() {
                            break Ok(Vec::new());
                        }
                    }
                },
                Err(error) => break Err(error),
            }
        };
        replication.committed.send_replace(target);

        // Sync mode: every other caught-up store applies it before the ack.
        if replication.mode == ReplicationMode::Sync && outcome.is_ok() {
            let others: Vec<usize> = (0..self.slots.len())
                .filter(|i| {
                    Some(*i) != served_by
                        && self.usable(*i)
                        && replication.replicas[*i].in_sync.load(Ordering::Relaxed)
                })
                .collect();
            let limit = Duration::from_millis(self.config.retry.deadline_ms);
            let memory = &entries;
            let applies = others.iter().map(|index| async move {
                let applied = tokio::time::timeout(
                    limit,
                    self.apply_through(*index, target, memory, usize::MAX),
                )
                .await;
                if !matches!(applied, Ok(Ok(Applied::Done(_)))) {
                    self.mark_out_of_sync(*index);
                    replication.wake(*index);
                }
            });
            futures_util::future::join_all(applies).await;
        }
        for (index, replica) in replication.replicas.iter().enumerate() {
            if Some(index) != served_by {
                replica.wake.notify_one();
            }
        }

        match outcome {
            Ok(counts) => {
                for (i, seq) in seqs.iter().enumerate() {
                    if results[i].is_none() {
                        let deleted = counts.iter().find(|(s, _)| s == seq).map_or(0, |(_, n)| *n);
                        results[i] = Some(Ok(deleted));
                    }
                }
            }
            Err(error) => {
                let message = format!(
                    "no store could apply the write ({error}); it is journaled and every store applies it once it recovers"
                );
                for result in results.iter_mut().filter(|r| r.is_none()) {
                    *result = Some(Err(Error::unavailable(&self.config.name, &message)));
                }
            }
        }
        for (ack, result) in acks.into_iter().zip(results) {
            let _ = ack.send(
                result.unwrap_or_else(|| Err(Error::internal(JOURNAL, "write lost its result"))),
            );
        }
        self.export_lag(replication);
    }

    pub(crate) fn mark_out_of_sync(&self, index: usize) {
        if let Some(replication) = &self.replication
            && replication.replicas[index]
                .in_sync
                .swap(false, Ordering::Relaxed)
        {
            tracing::warn!(store = %self.slots[index].name, "store is out of sync with the journal; it catches up before serving again");
            self.refresh();
        }
    }

    fn cursor_pairs(&self, replication: &Replication) -> Vec<(String, u64)> {
        self.slots
            .iter()
            .zip(&replication.replicas)
            .map(|(slot, replica)| (slot.name.clone(), replica.cursor()))
            .collect()
    }

    /// Persists every cursor (at shutdown; otherwise with each group commit).
    pub(crate) async fn save_cursors(&self) {
        let Some(replication) = &self.replication else {
            return;
        };
        let cursors = self.cursor_pairs(replication);
        let saved = blocking(&replication.journal, move |j| {
            let pairs: Vec<(&str, u64)> = cursors.iter().map(|(s, c)| (s.as_str(), *c)).collect();
            j.save_cursors(&pairs)
        })
        .await;
        if let Err(error) = saved {
            tracing::error!(%error, "could not persist journal cursors");
        }
    }

    fn export_lag(&self, replication: &Replication) {
        let committed = replication.committed();
        let mut slowest = committed;
        for (index, slot) in self.slots.iter().enumerate() {
            let (entries, seconds) = replication.lag(index);
            slowest = slowest.min(replication.replicas[index].cursor());
            telemetry::lag(
                &slot.name,
                entries,
                seconds.unwrap_or(0.0),
                replication.dead_letters(index),
            );
        }
        metrics::gauge!("vectorgate_journal_pending_entries").set((committed - slowest) as f64);
    }

    /// One store's replicator: applies committed entries it misses, while
    /// its breaker is closed. Ends when cancelled.
    pub(crate) async fn run_replicator(self: Arc<Self>, index: usize, cancel: CancellationToken) {
        let Some(replication) = &self.replication else {
            return;
        };
        let replica = &replication.replicas[index];
        let name = self.slots[index].name.clone();
        let mut committed = replication.committed.subscribe();
        let mut backoff = Duration::from_millis(self.config.retry.base_delay_ms.max(10));
        let max_backoff = Duration::from_millis(self.config.retry.max_delay_ms.max(1000));
        let limit = Duration::from_millis(self.config.retry.deadline_ms);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = replica.wake.notified() => {}
                changed = committed.changed() => if changed.is_err() { break },
            }
            loop {
                if cancel.is_cancelled() || !self.usable(index) {
                    break;
                }
                let target = replication.committed();
                if replica.cursor() >= target {
                    if !replica.in_sync.swap(true, Ordering::Relaxed) {
                        tracing::info!(store = %name, seq = target, "store caught up with the journal");
                        self.refresh();
                    }
                    replica.behind_since_ms.store(0, Ordering::Relaxed);
                    backoff = Duration::from_millis(self.config.retry.base_delay_ms.max(10));
                    break;
                }
                let applied = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    applied = tokio::time::timeout(limit, self.apply_through(index, target, &[], REPLICATOR_CHUNKS)) => applied,
                };
                let retry_after = match applied {
                    Ok(Ok(Applied::Done(_))) => {
                        self.record_call(index, false);
                        metrics::counter!("vectorgate_replicated_entries_total", "store" => name.clone())
                            .increment(1);
                        continue;
                    }
                    Ok(Ok(Applied::Refused { seq, error })) => {
                        self.on_refusal(replication, index, seq, &error).await;
                        continue;
                    }
                    Ok(Err(error)) => {
                        if error.is_retriable() {
                            self.record_call(index, true);
                        }
                        tracing::debug!(store = %name, %error, "replication attempt failed");
                        self.mark_out_of_sync(index);
                        backoff
                    }
                    Err(_) => {
                        self.record_call(index, true);
                        self.mark_out_of_sync(index);
                        backoff
                    }
                };
                backoff = (backoff * 2).min(max_backoff);
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(retry_after) => {}
                }
            }
            self.export_lag(replication);
        }
    }

    /// A replica refused an entry: count it; after `dead_letter_after`
    /// refusals, move the entry to the store's dead letters and go on.
    async fn on_refusal(&self, replication: &Replication, index: usize, seq: u64, error: &Error) {
        let replica = &replication.replicas[index];
        let attempts = {
            let mut refusals = replica.refusals.lock();
            let attempts = match *refusals {
                Some((s, n)) if s == seq => n + 1,
                _ => 1,
            };
            *refusals = Some((seq, attempts));
            attempts
        };
        let name = self.slots[index].name.clone();
        if attempts < self.config.replication.dead_letter_after {
            tracing::warn!(store = %name, seq, attempts, %error, "store refused a journal entry; retrying");
            tokio::time::sleep(Duration::from_millis(self.config.retry.max_delay_ms)).await;
            return;
        }
        let text = error.to_string();
        let stored = blocking(&replication.journal, {
            let name = name.clone();
            move |j| {
                let entry = j
                    .read(seq - 1, seq, 1)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::internal(JOURNAL, format!("entry {seq} vanished")))?;
                j.dead_letter(&name, &entry, &text, attempts)
            }
        })
        .await;
        match stored {
            Ok(()) => {
                tracing::error!(store = %name, seq, %error, "entry moved to the store's dead letters");
                replica.dead_letters.fetch_add(1, Ordering::Relaxed);
                replica.advance(seq);
                *replica.refusals.lock() = None;
            }
            Err(e) => {
                tracing::error!(store = %name, seq, error = %e, "could not dead-letter an entry")
            }
        }
    }

    /// Copies every record of store `from` into store `to` while the
    /// manager runs (see [`crate::resync`]): `to` is held out of rotation,
    /// and afterwards replays every journal entry since the copy began.
    pub(crate) async fn resync_store(
        &self,
        from: usize,
        to: usize,
        options: &crate::resync::ResyncOptions,
        on_progress: impl FnMut(&crate::resync::ResyncProgress),
    ) -> Result<crate::resync::ResyncReport> {
        if from == to {
            return Err(Error::invalid("to", "must be another store than `from`"));
        }
        let was_drained = {
            let mut state = self.slots[to].state.lock();
            std::mem::replace(&mut state.drained, true)
        };
        self.refresh();
        let replica = self.replication.as_ref().map(|r| &r.replicas[to]);
        // The target is held out of rotation until the copy is complete,
        // across restarts too.
        if let Some(replication) = &self.replication {
            let name = self.slots[to].name.clone();
            let since = validate::now_ms();
            blocking(&replication.journal, move |j| {
                j.set_hold(&name, "resync in progress", since)
            })
            .await?;
            replication.replicas[to].held.store(true, Ordering::Relaxed);
        }
        // Holding the target's apply lock keeps the writer and its
        // replicator out for the whole copy.
        let guard = match replica {
            Some(replica) => {
                let guard = replica.apply.lock().await;
                let floor = self.replication.as_ref().map_or(0, |r| r.committed());
                replica.floor.store(floor, Ordering::Relaxed);
                replica.in_sync.store(false, Ordering::Relaxed);
                Some((guard, floor))
            }
            None => None,
        };
        tracing::info!(from = %self.slots[from].name, to = %self.slots[to].name, "resync: copying");
        let report = crate::resync::copy_store(
            self.slots[from].store.as_ref(),
            self.slots[to].store.as_ref(),
            options,
            on_progress,
        )
        .await;
        if let (Some(replica), Some((guard, floor))) = (replica, guard) {
            // Replay everything journaled since the copy began, in order.
            replica.cursor.send_modify(|c| *c = (*c).min(floor));
            replica.floor.store(u64::MAX, Ordering::Relaxed);
            drop(guard);
            if report.is_ok()
                && let Some(replication) = &self.replication
            {
                let name = self.slots[to].name.clone();
                blocking(&replication.journal, move |j| j.clear_hold(&name)).await?;
                replica.held.store(false, Ordering::Relaxed);
            }
            replica.wake.notify_one();
        }
        self.slots[to].state.lock().drained = was_drained;
        self.refresh();
        report
    }

    /// Re-applies `store`'s dead letters; returns how many now succeeded and
    /// how many are still refused.
    pub(crate) async fn redrive(&self, index: usize) -> Result<(u64, u64)> {
        let replication = self.replication()?;
        let name = self.slots[index].name.clone();
        let letters = {
            let name = name.clone();
            blocking(&replication.journal, move |j| j.dead_letters(&name, 10_000)).await?
        };
        let store = self.slots[index].store.clone();
        let (mut ok, mut failed) = (0, 0);
        for letter in letters {
            match apply_call(&store, &[&letter.entry], 1).await {
                Ok(_) => {
                    ok += 1;
                    let (name, seq) = (name.clone(), letter.entry.seq);
                    blocking(&replication.journal, move |j| {
                        j.remove_dead_letter(&name, seq)
                    })
                    .await?;
                    replication.replicas[index]
                        .dead_letters
                        .fetch_sub(1, Ordering::Relaxed);
                }
                Err(error) if error.is_retriable() => return Err(error),
                Err(_) => failed += 1,
            }
        }
        Ok((ok, failed))
    }
}

/// Groups consecutive entries into store calls: upserts merged up to the
/// batch limit, each delete alone. Order is kept.
fn group<'a>(entries: &[&'a Entry]) -> Vec<Vec<&'a Entry>> {
    let mut calls: Vec<Vec<&Entry>> = Vec::new();
    let mut weight = 0;
    for entry in entries {
        let merge = matches!(entry.op, WriteOp::Upsert(_))
            && calls
                .last()
                .and_then(|c| c.last())
                .is_some_and(|last| matches!(last.op, WriteOp::Upsert(_)))
            && weight + entry.op.weight() <= MAX_UPSERT_BATCH;
        if merge {
            if let Some(call) = calls.last_mut() {
                call.push(entry);
            }
            weight += entry.op.weight();
        } else {
            calls.push(vec![entry]);
            weight = entry.op.weight();
        }
    }
    calls
}

/// Smallest share of a merged upsert worth a store call of its own.
const MIN_PARALLEL_CHUNK: usize = 8;

/// One store call for a group made by [`group`]; returns the delete count.
///
/// Upserts of distinct ids commute, so a merged upsert whose ids are all
/// distinct is applied as up to `parallelism` concurrent calls: a database
/// serves them on several cores, as it would serve independent clients.
/// (One statement per group commit would leave a single backend doing all
/// the index maintenance.) The cursor only moves once every part succeeded;
/// re-applying a part is harmless.
async fn apply_call(store: &DynStore, call: &[&Entry], parallelism: usize) -> Result<u64> {
    match call {
        [] => Ok(0),
        [
            Entry {
                op: WriteOp::Delete(selector),
                ..
            },
        ] => store.delete(selector).await,
        _ => {
            let mut records = Vec::with_capacity(call.iter().map(|e| e.op.weight()).sum());
            for entry in call {
                if let WriteOp::Upsert(rs) = &entry.op {
                    records.extend(rs.iter().cloned());
                }
            }
            let parts = parallelism.min(records.len() / MIN_PARALLEL_CHUNK).max(1);
            let distinct = || {
                let mut seen = std::collections::HashSet::with_capacity(records.len());
                records.iter().all(|r| seen.insert(r.id.as_str()))
            };
            if parts == 1 || !distinct() {
                return store.upsert(&records).await.map(|_| 0);
            }
            let size = records.len().div_ceil(parts);
            let calls = records.chunks(size).map(|chunk| store.upsert(chunk));
            // A transient failure wins: the whole call is retried.
            let mut refusal = None;
            for result in futures_util::future::join_all(calls).await {
                match result {
                    Ok(_) => {}
                    Err(error) if error.is_retriable() => return Err(error),
                    Err(error) => refusal = Some(error),
                }
            }
            refusal.map_or(Ok(0), Err)
        }
    }
}
