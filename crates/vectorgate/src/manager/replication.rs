//! The write pipeline and the replicators: how every store ends up with the
//! same writes in the same order.
//!
//! ```text
//! callers ──► queue (bounded in writes and bytes) ──► writer task ──► journal (one fsync per group)
//!                                   │
//!                                   ├─► serving store (routed: retries, failover)
//!                                   ├─► [sync mode] every other caught-up store
//!                                   └─► ack each caller
//! replicator task per store: journal entries after its cursor ──► the store
//! ```
//!
//! The promises, and the rule that keeps each:
//! - **An acknowledged write is never lost.** It is in the durable journal
//!   and applied by at least one store before the ack; every other store
//!   applies it from the journal, in order, before it serves again.
//! - **A refused or failed write leaves nothing anywhere.** A write the
//!   serving store refuses (a non-retriable error) is removed from the
//!   journal before any other store can see it. A write no store could
//!   apply within the deadline is removed too, and the caller is told
//!   nothing was written. A write waiting in the queue past its deadline is
//!   refused before it is journaled. A journal append that fails writes
//!   nothing; a failure to save cursors or trim after a successful append
//!   does not fail the write (both are redone with the next group).
//! - **Each store call is all or nothing for each write.** A write is never
//!   split across store calls; group commits merge whole writes, and only
//!   writes with distinct ids are applied as parallel calls.
//! - **A store serves only what it has fully applied.** A store is *in sync*
//!   once its cursor reached the committed sequence with no dead letter
//!   pending; it loses that the moment it becomes unusable (breaker not
//!   closed, drained, held, schema not ready) or refuses an entry, and only
//!   its replicator gives it back. Requests go to in-sync stores first; a
//!   read on a store that is behind waits (bounded) for it to catch up.
//! - **Refusals by a replica.** An entry another store already applied but
//!   this one refuses goes to this store's dead letters; the store is out of
//!   sync until an operator re-drives (replays from the oldest dead letter,
//!   in journal order) or discards them.
//! - **Bounded.** The queue is bounded in writes and bytes; the journal
//!   keeps entries only for stores that are behind, up to
//!   `max_journal_bytes`, past which the laggard is held as needing a resync;
//!   dead letters are capped the same way.

use super::Inner;
use super::config::ReplicationMode;
use super::telemetry::{self, Op};
use crate::error::{Error, Result};
use crate::journal::{Entry, Journal, JournalFaults, WriteOp};
use crate::store::DynStore;
use crate::validate::{self, MAX_UPSERT_BATCH};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const JOURNAL: &str = "journal";

/// Chunks (≤ 1000 records each) a replicator applies per bounded step: a
/// long catch-up must not look like one slow, failing call.
const REPLICATOR_CHUNKS: usize = 4;

/// Unit of the queue's byte semaphore (its permits are `u32`).
const QUEUE_UNIT: u64 = 1024;

/// A write waiting for the pipeline.
pub(crate) struct Pending {
    op: WriteOp,
    ack: oneshot::Sender<Result<u64>>,
    /// The caller's deadline: a write still queued then is refused unjournaled.
    deadline: Instant,
    /// Its share of the queue's byte budget, released once answered.
    _bytes: OwnedSemaphorePermit,
}

/// Replication state of one store.
#[derive(Debug)]
pub(crate) struct Replica {
    /// Serialises applies to this store (writer, replicator, resync, redrive).
    apply: tokio::sync::Mutex<()>,
    /// Last sequence number applied; watched by reads waiting to catch up.
    cursor: watch::Sender<u64>,
    pub(crate) in_sync: AtomicBool,
    /// Journal time of the first entry this store is missing (0: none).
    behind_since_ms: AtomicI64,
    dead_letters: AtomicU64,
    /// Oldest dead letter (`u64::MAX`: none): the journal keeps every entry
    /// from there on, so a redrive can replay them in order.
    dead_floor: AtomicU64,
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
    /// Why it is held.
    pub(crate) hold_reason: Mutex<Option<String>>,
    /// Entries through this sequence number may have been applied to the
    /// store before (the journal's end at start, then every advance, and a
    /// resync's copy): a replay after a restart, a re-drive or a resync
    /// re-applies entries up to here over a state that already holds later
    /// ones (see `Inner::replay_refusal`).
    applied_before: AtomicU64,
}

impl Replica {
    pub(crate) fn cursor(&self) -> u64 {
        *self.cursor.borrow()
    }

    fn advance(&self, seq: u64) {
        self.applied_before.fetch_max(seq, Ordering::Relaxed);
        self.cursor.send_if_modified(|c| {
            if seq > *c {
                *c = seq;
                true
            } else {
                false
            }
        });
    }

    fn rewind(&self, seq: u64) {
        self.cursor.send_if_modified(|c| {
            if seq < *c {
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
    /// Every entry through the target (or the step's budget) was applied.
    Done,
    /// The store refused this entry (non-retriable error); entries before
    /// it were applied.
    Refused { seq: u64, error: Error },
}

/// Which entries of the writer's current group some store applied, with
/// their delete counts: an entry in here is durable in a store, so it is
/// acknowledged even if a later part of the group fails.
#[derive(Default)]
struct AppliedLog(Mutex<BTreeMap<u64, u64>>);

impl AppliedLog {
    fn record(&self, seq: u64, deleted: u64) {
        self.0.lock().entry(seq).or_insert(deleted);
    }

    fn get(&self, seq: u64) -> Option<u64> {
        self.0.lock().get(&seq).copied()
    }
}

/// How far one `apply_through` may go and how long each store call may take.
#[derive(Clone, Copy)]
struct Budget {
    chunks: usize,
    call_timeout: Duration,
}

/// The pipeline shared by the manager and its tasks.
pub(crate) struct Replication {
    pub(crate) mode: ReplicationMode,
    journal: Arc<Mutex<Journal>>,
    faults: Arc<JournalFaults>,
    /// Highest sequence number the writer has finished with.
    committed: watch::Sender<u64>,
    queue: mpsc::Sender<Pending>,
    queue_bytes: Arc<Semaphore>,
    queue_units: u32,
    /// Held by the writer for each group commit; a resync's final check
    /// holds it to compare stores that no write is moving.
    writer_gate: tokio::sync::Mutex<()>,
    /// Held from reading the cursors to saving them, and by a re-drive
    /// while it moves a cursor back: a save of cursors read before the
    /// re-drive can never land after it (and undo it).
    cursor_gate: tokio::sync::Mutex<()>,
    /// Bytes of entries in the journal (approximate: trims subtract what they delete).
    journal_bytes: AtomicU64,
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

/// Runs journal work off the async threads. On a current-thread runtime
/// (the deterministic simulation tests) it runs inline: a blocking thread
/// would let a paused clock jump ahead while the journal works.
async fn blocking<T: Send + 'static>(
    journal: &Arc<Mutex<Journal>>,
    work: impl FnOnce(&mut Journal) -> Result<T> + Send + 'static,
) -> Result<T> {
    let journal = journal.clone();
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return work(&mut journal.lock());
    }
    tokio::task::spawn_blocking(move || work(&mut journal.lock()))
        .await
        .map_err(|e| Error::internal(JOURNAL, format!("journal task failed: {e}")))?
}

/// What the journal file says about each store at start.
pub(crate) struct Restored {
    /// Highest sequence number ever assigned.
    pub(crate) last: u64,
    /// Per store, in the order given: its saved cursor (`None`: new to this journal).
    pub(crate) cursors: Vec<Option<u64>>,
}

impl Replication {
    /// Opens the journal and restores every store's cursor, dead letters
    /// and holds. Stores new to the journal start at the current sequence;
    /// the manager decides whether they must be held for a resync.
    pub(crate) async fn open(
        mode: ReplicationMode,
        path: std::path::PathBuf,
        queue: usize,
        queue_bytes: u64,
        stores: &[String],
    ) -> Result<(Replication, Restored)> {
        let (journal, last, saved, dead, oldest_dead, holds, bytes) =
            tokio::task::spawn_blocking({
                let stores = stores.to_vec();
                move || -> Result<_> {
                    let journal = Journal::open(&path)?;
                    let last = journal.last_seq()?;
                    let saved = journal.cursors()?;
                    let saved: Vec<Option<u64>> = stores
                        .iter()
                        .map(|store| saved.iter().find(|(s, _)| s == store).map(|(_, c)| *c))
                        .collect();
                    let mut dead = Vec::new();
                    for store in &stores {
                        dead.push(journal.dead_letter_count(store)?);
                    }
                    let oldest_dead = journal.oldest_dead_letters()?;
                    let holds = journal.holds()?;
                    for (store, reason) in &holds {
                        tracing::warn!(store, reason, "store held out of rotation until a resync into it completes; run `vectorgate resync`");
                    }
                    let bytes = journal.bytes()?;
                    Ok((journal, last, saved, dead, oldest_dead, holds, bytes))
                }
            })
            .await
            .map_err(|e| Error::internal(JOURNAL, format!("journal task failed: {e}")))??;
        let faults = journal.faults();
        let journal = Arc::new(Mutex::new(journal));
        let replicas = saved
            .iter()
            .zip(&dead)
            .zip(stores)
            .map(|((saved, dead), store)| {
                let cursor = saved.unwrap_or(last);
                let hold = holds
                    .iter()
                    .find(|(s, _)| s == store)
                    .map(|(_, r)| r.clone());
                let dead_floor = oldest_dead
                    .iter()
                    .find(|(s, _)| s == store)
                    .map_or(u64::MAX, |(_, seq)| *seq);
                Replica {
                    held: AtomicBool::new(hold.is_some()),
                    hold_reason: Mutex::new(hold),
                    apply: tokio::sync::Mutex::new(()),
                    cursor: watch::channel(cursor).0,
                    in_sync: AtomicBool::new(cursor >= last && *dead == 0),
                    behind_since_ms: AtomicI64::new(if cursor >= last {
                        0
                    } else {
                        validate::now_ms()
                    }),
                    dead_letters: AtomicU64::new(*dead),
                    dead_floor: AtomicU64::new(dead_floor),
                    wake: Notify::new(),
                    refusals: Mutex::new(None),
                    floor: AtomicU64::new(u64::MAX),
                    applied_before: AtomicU64::new(last),
                }
            })
            .collect();
        let (queue_tx, queue_rx) = mpsc::channel(queue);
        let queue_units = u32::try_from(queue_bytes / QUEUE_UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        let replication = Replication {
            mode,
            journal,
            faults,
            committed: watch::channel(last).0,
            queue: queue_tx,
            queue_bytes: Arc::new(Semaphore::new(queue_units as usize)),
            queue_units,
            writer_gate: tokio::sync::Mutex::new(()),
            cursor_gate: tokio::sync::Mutex::new(()),
            journal_bytes: AtomicU64::new(bytes),
            replicas,
            receiver: Mutex::new(Some(queue_rx)),
        };
        // Persist cursors for stores that were new, so a later restart knows them.
        let initial: Vec<(String, u64)> = stores
            .iter()
            .zip(&replication.replicas)
            .map(|(s, r)| (s.clone(), r.cursor()))
            .collect();
        blocking(&replication.journal, move |j| {
            let pairs: Vec<(&str, u64)> = initial.iter().map(|(s, c)| (s.as_str(), *c)).collect();
            j.save_cursors(&pairs)
        })
        .await?;
        Ok((
            replication,
            Restored {
                last,
                cursors: saved,
            },
        ))
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

    pub(crate) fn journal_bytes(&self) -> u64 {
        self.journal_bytes.load(Ordering::Relaxed)
    }

    /// Entries of this many bytes left the journal.
    fn forget_bytes(&self, bytes: u64) {
        let _ = self
            .journal_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    pub(crate) fn journal_faults(&self) -> Arc<JournalFaults> {
        self.faults.clone()
    }
}

impl Inner {
    fn replication(&self) -> Result<&Replication> {
        self.replication
            .as_ref()
            .ok_or_else(|| Error::internal(&self.config.name, "replication is off"))
    }

    /// Puts a write through the pipeline and waits for its answer. The
    /// writer answers every write it takes (it refuses those still queued at
    /// their deadline), so an error here always means nothing was written.
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<u64> {
        let replication = self.replication()?;
        let deadline = Instant::now() + Duration::from_millis(self.config.retry.deadline_ms);
        let units = u32::try_from(op.approx_bytes().div_ceil(QUEUE_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, replication.queue_units);
        let full = || {
            Error::timeout(
                &self.config.name,
                "the write queue stayed full until the deadline; nothing was written",
            )
        };
        let stopped = || {
            Error::unavailable(
                &self.config.name,
                "the manager is shutting down; nothing was written",
            )
        };
        let bytes = tokio::time::timeout_at(
            deadline,
            replication.queue_bytes.clone().acquire_many_owned(units),
        )
        .await
        .map_err(|_| full())?
        .map_err(|_| stopped())?;
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            op,
            ack,
            deadline,
            _bytes: bytes,
        };
        tokio::time::timeout_at(deadline, replication.queue.send(pending))
            .await
            .map_err(|_| full())?
            .map_err(|_| stopped())?;
        done.await.unwrap_or_else(|_| {
            Err(Error::unavailable(
                &self.config.name,
                "the write pipeline stopped before taking the write; nothing was written",
            ))
        })
    }

    /// Before a read on `index`: wait (bounded) until that store applied
    /// every committed write, so a client reads its own acknowledged writes.
    /// Returns `false` if it did not catch up in time.
    pub(crate) async fn catch_up_for_read(&self, index: usize, deadline: Instant) -> bool {
        let Some(replication) = &self.replication else {
            return true;
        };
        let target = replication.committed();
        let replica = &replication.replicas[index];
        if replica.cursor() >= target {
            return true;
        }
        replica.wake.notify_one();
        let wait = Duration::from_millis(self.config.replication.catchup_wait_ms);
        let until = (Instant::now() + wait).min(deadline);
        let mut cursor = replica.cursor.subscribe();
        let caught_up = tokio::time::timeout_at(until, cursor.wait_for(|c| *c >= target)).await;
        matches!(caught_up, Ok(Ok(_)))
    }

    /// True when the store has applied every committed write and refused none.
    pub(crate) fn caught_up(&self, index: usize) -> bool {
        self.replication.as_ref().is_none_or(|r| {
            let replica = &r.replicas[index];
            replica.cursor() >= r.committed() && replica.dead_letters.load(Ordering::Relaxed) == 0
        })
    }

    /// A read was answered by `index` before it caught up: counted, and
    /// counted apart if a store not `tried` for this read could have
    /// answered it fully.
    pub(crate) fn record_stale_read(&self, index: usize, tried: &[usize]) {
        let avoidable = (0..self.slots.len()).any(|other| {
            other != index && !tried.contains(&other) && self.caught_up(other) && self.usable(other)
        });
        self.stale_reads.fetch_add(1, Ordering::Relaxed);
        if avoidable {
            self.avoidable_stale_reads.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("vectorgate_stale_reads_total", "store" => self.slots[index].name.clone())
            .increment(1);
        tracing::debug!(store = %self.slots[index].name, avoidable, "read served before the store caught up");
    }

    /// Applies committed entries through `target` to store `index`, in
    /// order: the gap after its cursor from the journal, then `memory` (the
    /// entries the writer holds). Resumes where a failed call left off.
    /// Stops early (still `Done`) once `budget.chunks` chunks were applied,
    /// so a long catch-up is made of short steps; each store call is
    /// bounded by `budget.call_timeout`, so a long step that makes progress
    /// is never failed for its length.
    async fn apply_through(
        &self,
        index: usize,
        target: u64,
        memory: &[Entry],
        budget: Budget,
        log: Option<&AppliedLog>,
    ) -> Result<Applied> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        let slot = &self.slots[index];
        let parallelism = self.config.replication.apply_parallelism;
        // Another applier may hold the store: a replicator replaying a
        // backlog (waited for as long as it makes progress: it applies what
        // this call needs first) or one stuck on a hung store (given up on
        // after one call timeout without progress).
        let _guard = {
            let mut progress = replica.cursor.subscribe();
            let lock = replica.apply.lock();
            tokio::pin!(lock);
            loop {
                tokio::select! {
                    biased;
                    guard = &mut lock => break guard,
                    changed = tokio::time::timeout(budget.call_timeout, progress.changed()) => {
                        if !matches!(changed, Ok(Ok(()))) {
                            return Err(Error::timeout(
                                &slot.name,
                                format!(
                                    "another apply to this store made no progress for {} ms",
                                    budget.call_timeout.as_millis()
                                ),
                            ));
                        }
                    }
                }
            }
        };
        let applied = |entry: &Entry, deleted: u64| {
            if let Some(log) = log {
                log.record(entry.seq, deleted);
            }
            replica.advance(entry.seq);
        };
        for _ in 0..budget.chunks {
            let cursor = replica.cursor();
            if cursor >= target {
                break;
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
            for entries in group(&chunk) {
                match bounded_apply(
                    &slot.store,
                    &slot.name,
                    &entries,
                    parallelism,
                    budget.call_timeout,
                )
                .await
                {
                    Ok(deleted) => {
                        for entry in &entries {
                            let count = if entries.len() == 1 { deleted } else { 0 };
                            applied(entry, count);
                        }
                    }
                    Err(error) if error.is_retriable() => return Err(error),
                    Err(error) => {
                        if let [entry] = entries.as_slice() {
                            match self.replay_refusal(index, entry, error, budget).await? {
                                None => {
                                    applied(entry, 0);
                                    continue;
                                }
                                Some(error) => {
                                    // Everything before it is applied or was removed.
                                    replica.advance(entry.seq - 1);
                                    return Ok(Applied::Refused {
                                        seq: entry.seq,
                                        error,
                                    });
                                }
                            }
                        }
                        // A merged call was refused: each write is its own
                        // all-or-nothing call, so find the one at fault.
                        for entry in &entries {
                            match bounded_apply(
                                &slot.store,
                                &slot.name,
                                &[*entry],
                                1,
                                budget.call_timeout,
                            )
                            .await
                            {
                                Ok(deleted) => applied(entry, deleted),
                                Err(e) if e.is_retriable() => return Err(e),
                                Err(e) => match self.replay_refusal(index, entry, e, budget).await?
                                {
                                    None => applied(entry, 0),
                                    Some(e) => {
                                        replica.advance(entry.seq - 1);
                                        return Ok(Applied::Refused {
                                            seq: entry.seq,
                                            error: e,
                                        });
                                    }
                                },
                            }
                        }
                        tracing::debug!(%error, "a merged call was refused, its entries were accepted one by one");
                    }
                }
            }
            if replica.cursor() >= replication.committed() {
                replica.behind_since_ms.store(0, Ordering::Relaxed);
            }
        }
        Ok(Applied::Done)
    }

    /// Decides what a store's refusal of `entry` means. Replays (after a
    /// restart, a re-drive or a resync) apply entries again over a state
    /// that already holds later ones, and ids change hands: an upsert of id
    /// X by team A, A's delete of X, B's upsert of X. Re-applying A's
    /// upsert is then refused as a take-over, although the journal's order
    /// gives X to B in the end. For such a refusal of an entry at or below
    /// the store's `applied_before`, the records whose id a later entry
    /// (up to there) gives to another team are dropped from the entry —
    /// the later entries decide them, as they did the first time — and the
    /// rest is applied: `Ok(None)`. Any other refusal, or one that remains,
    /// is returned as a refusal: `Ok(Some(error))`. `Err` is a transient
    /// failure of the store.
    async fn replay_refusal(
        &self,
        index: usize,
        entry: &Entry,
        error: Error,
        budget: Budget,
    ) -> Result<Option<Error>> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        let through = replica.applied_before.load(Ordering::Relaxed);
        let WriteOp::Upsert(records) = &entry.op else {
            return Ok(Some(error));
        };
        if error.kind() != crate::ErrorKind::Conflict || entry.seq >= through {
            return Ok(Some(error));
        }
        // Ids of this entry that a later entry upserts for another team.
        let mut owners: BTreeMap<&str, &str> = records
            .iter()
            .map(|r| (r.id.as_str(), r.team_id.as_str()))
            .collect();
        let mut moved: BTreeSet<String> = BTreeSet::new();
        let mut after = entry.seq;
        while after < through && moved.len() < owners.len() {
            let later = blocking(&replication.journal, move |j| {
                j.read(after, through, MAX_UPSERT_BATCH)
            })
            .await?;
            let Some(last) = later.last() else { break };
            after = last.seq;
            for later in &later {
                if let WriteOp::Upsert(rows) = &later.op {
                    for row in rows {
                        if owners
                            .get(row.id.as_str())
                            .is_some_and(|team| *team != row.team_id)
                        {
                            moved.insert(row.id.clone());
                        }
                    }
                }
            }
            owners.retain(|id, _| !moved.contains(*id));
        }
        if moved.is_empty() {
            return Ok(Some(error));
        }
        let slot = &self.slots[index];
        tracing::debug!(store = %slot.name, seq = entry.seq, moved = moved.len(), "replayed entry: ids that later entries gave to another team are left to them");
        metrics::counter!("vectorgate_replay_superseded_total", "store" => slot.name.clone())
            .increment(moved.len() as u64);
        let rest: Vec<crate::Record> = records
            .iter()
            .filter(|r| !moved.contains(&r.id))
            .cloned()
            .collect();
        if rest.is_empty() {
            return Ok(None);
        }
        let trimmed = Entry {
            seq: entry.seq,
            at_ms: entry.at_ms,
            op: WriteOp::Upsert(rest),
        };
        match bounded_apply(&slot.store, &slot.name, &[&trimmed], 1, budget.call_timeout).await {
            Ok(_) => Ok(None),
            Err(error) if error.is_retriable() => Err(error),
            Err(error) => Ok(Some(error)),
        }
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
            let _gate = replication.writer_gate.lock().await;
            self.commit_batch(replication, batch).await;
        }
        self.save_cursors().await;
    }

    /// One group commit: journal the writes, apply them to the serving
    /// store, settle what no store applied, acknowledge.
    async fn commit_batch(&self, replication: &Replication, batch: Vec<Pending>) {
        let now = Instant::now();
        let (batch, expired): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| p.deadline > now);
        for pending in expired {
            let _ = pending.ack.send(Err(Error::timeout(
                &self.config.name,
                "the write waited in the queue until its deadline; nothing was written",
            )));
        }
        if batch.is_empty() {
            return;
        }
        let deadline = batch
            .iter()
            .map(|p| p.deadline)
            .max()
            .unwrap_or(now + Duration::from_millis(self.config.retry.deadline_ms));
        let (ops, acks): (Vec<WriteOp>, Vec<oneshot::Sender<Result<u64>>>) =
            batch.into_iter().map(|p| (p.op, p.ack)).unzip();
        metrics::histogram!("vectorgate_write_batch_writes").record(ops.len() as f64);

        // 1. Journal: once this returns Ok the writes survive a crash; if it
        //    fails, nothing was written anywhere.
        let at_ms = validate::now_ms();
        let appended = {
            let ops = ops.clone();
            blocking(&replication.journal, move |j| {
                let refs: Vec<&WriteOp> = ops.iter().collect();
                j.append(&refs, at_ms)
            })
            .await
        };
        let seqs = match appended {
            Ok((seqs, bytes)) => {
                replication
                    .journal_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                seqs
            }
            Err(error) => {
                tracing::error!(%error, "journal append failed; writes refused");
                for ack in acks {
                    let _ = ack.send(Err(Error::unavailable(
                        JOURNAL,
                        format!("the write could not be journaled, nothing was written: {error}"),
                    )));
                }
                return;
            }
        };
        // 2. Cursors and trimming: best effort, redone with every group.
        self.persist_and_trim(replication).await;

        let mut entries: Vec<Entry> = seqs
            .iter()
            .zip(ops)
            .map(|(seq, op)| Entry {
                seq: *seq,
                at_ms,
                op,
            })
            .collect();
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

        // 3. Apply to the serving store.
        let log = AppliedLog::default();
        let mut refused: BTreeMap<u64, Error> = BTreeMap::new();
        let (outcome, served_by) = self
            .serve(replication, &mut entries, &log, &mut refused, deadline)
            .await;

        // 4. What no store applied is taken back, so no store ever applies it.
        let failed: Vec<u64> = match &outcome {
            Ok(()) => Vec::new(),
            Err(_) => entries
                .iter()
                .map(|e| e.seq)
                .filter(|seq| log.get(*seq).is_none())
                .collect(),
        };
        let unwritten = failed.is_empty()
            || match blocking(&replication.journal, {
                let failed = failed.clone();
                move |j| j.remove(&failed)
            })
            .await
            {
                Ok(bytes) => {
                    replication.forget_bytes(bytes);
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "could not take back writes no store applied; they stay journaled and are applied once a store recovers");
                    false
                }
            };
        replication.committed.send_replace(target);

        // 5. Sync mode: every other caught-up store applies it before the ack.
        if replication.mode == ReplicationMode::Sync && outcome.is_ok() {
            let others: Vec<usize> = (0..self.slots.len())
                .filter(|i| {
                    Some(*i) != served_by
                        && self.usable(*i)
                        && replication.replicas[*i].in_sync.load(Ordering::Relaxed)
                })
                .collect();
            let memory = &entries;
            let budget = self.writer_budget();
            let applies = others.iter().map(|index| async move {
                let applied = tokio::time::timeout_at(
                    deadline,
                    self.apply_through(*index, target, memory, budget, None),
                )
                .await;
                if !matches!(applied, Ok(Ok(Applied::Done))) {
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

        // 6. Answer each caller.
        for (seq, ack) in seqs.iter().zip(acks) {
            let result = if let Some(error) = refused.remove(seq) {
                Err(error)
            } else if let Some(deleted) = log.get(*seq) {
                Ok(deleted)
            } else {
                let error = match &outcome {
                    Err(error) => error.to_string(),
                    Ok(()) => "the write lost its result".to_owned(),
                };
                let message = if unwritten {
                    format!("no store could apply the write, nothing was written: {error}")
                } else {
                    format!(
                        "no store could apply the write ({error}); it stays journaled and every store applies it once it recovers"
                    )
                };
                Err(Error::unavailable(&self.config.name, message))
            };
            let _ = ack.send(result);
        }
        self.export_lag(replication);
    }

    /// Budget of one store call made for a caller's write.
    fn writer_budget(&self) -> Budget {
        Budget {
            chunks: usize::MAX,
            call_timeout: Duration::from_millis(self.config.retry.attempt_timeout_ms),
        }
    }

    /// Applies the group to the first store that can, through the router
    /// (retries, failover). A refusal by the serving store removes that
    /// write (when no store applied it) and the rest is applied again.
    /// Returns the outcome and the store that served.
    async fn serve(
        &self,
        replication: &Replication,
        entries: &mut Vec<Entry>,
        log: &AppliedLog,
        refused: &mut BTreeMap<u64, Error>,
        deadline: Instant,
    ) -> (Result<()>, Option<usize>) {
        loop {
            let Some(target) = entries.last().map(|e| e.seq) else {
                return (Ok(()), None);
            };
            let op = if entries.iter().all(|e| matches!(e.op, WriteOp::Delete(_))) {
                Op::Delete
            } else {
                Op::Upsert
            };
            let memory = &*entries;
            let budget = self.writer_budget();
            // The whole deadline per attempt: each store call inside is
            // bounded by the attempt timeout, so a store making progress
            // through a gap is not cut off.
            let limit = deadline.saturating_duration_since(Instant::now());
            let routed = self
                .route_with(op, deadline, limit, |index| async move {
                    let applied = self
                        .apply_through(index, target, memory, budget, Some(log))
                        .await;
                    if applied.is_err() {
                        self.mark_out_of_sync(index);
                    }
                    applied
                })
                .await;
            let routed = match routed {
                Ok(routed) => routed,
                Err(error) => return (Err(error), None),
            };
            let index = self.index_of(&routed.served_by).ok();
            let (seq, error) = match routed.value {
                Applied::Done => return (Ok(()), index),
                Applied::Refused { seq, error } => (seq, error),
            };
            let ours = entries.iter().position(|e| e.seq == seq);
            match ours {
                Some(pos) if log.get(seq).is_none() => {
                    // The serving store refused a write nobody applied: the
                    // caller gets the error and no store ever sees it.
                    match blocking(&replication.journal, move |j| j.remove(&[seq])).await {
                        Ok(bytes) => {
                            replication.forget_bytes(bytes);
                            tracing::info!(store = %routed.served_by, seq, %error, "write refused by the serving store; removed from the journal");
                            entries.remove(pos);
                            refused.insert(seq, error);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, seq, "could not remove a refused write from the journal; it is dead-lettered for the store that refused it");
                            if let Some(index) = index {
                                self.dead_letter(replication, index, seq, &error, 1).await;
                            }
                        }
                    }
                }
                _ => {
                    // Another store applied it (or it is an older entry in
                    // this store's gap): this store diverges, visibly.
                    if let Some(index) = index {
                        self.dead_letter(replication, index, seq, &error, 1).await;
                    }
                }
            }
        }
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

    /// Clears the in-sync flag of every store that cannot be used now: it
    /// may miss writes from here on, and only its replicator (which checks
    /// its cursor) may set the flag again. Returns true if one changed.
    pub(crate) fn settle_sync_flags(&self) -> bool {
        let Some(replication) = &self.replication else {
            return false;
        };
        let mut changed = false;
        for (index, replica) in replication.replicas.iter().enumerate() {
            if replica.in_sync.load(Ordering::Relaxed)
                && !self.usable(index)
                && replica.in_sync.swap(false, Ordering::Relaxed)
            {
                tracing::info!(store = %self.slots[index].name, "store out of rotation: no longer counted in sync; it catches up before serving again");
                changed = true;
            }
        }
        changed
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
        let _gate = replication.cursor_gate.lock().await;
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

    /// The journal keeps entries after this: the slowest store that is not
    /// held, an unfinished resync's floor, the oldest dead letter.
    fn trim_floor(&self, replication: &Replication) -> u64 {
        replication
            .replicas
            .iter()
            .flat_map(|r| {
                let cursor = (!r.held.load(Ordering::Relaxed)).then(|| r.cursor());
                let dead = r.dead_floor.load(Ordering::Relaxed);
                [
                    cursor,
                    Some(r.floor.load(Ordering::Relaxed)),
                    (dead != u64::MAX).then(|| dead - 1),
                ]
            })
            .flatten()
            .min()
            .unwrap_or_else(|| replication.committed())
            .min(replication.committed())
    }

    /// Saves cursors and trims what every store applied; past the journal's
    /// byte cap, holds the stores that keep it from trimming. Errors are
    /// logged: both are redone with the next group commit.
    async fn persist_and_trim(&self, replication: &Replication) {
        self.enforce_journal_cap(replication).await;
        let _gate = replication.cursor_gate.lock().await;
        let cursors = self.cursor_pairs(replication);
        let through = self.trim_floor(replication);
        let done = blocking(&replication.journal, move |j| {
            let pairs: Vec<(&str, u64)> = cursors.iter().map(|(s, c)| (s.as_str(), *c)).collect();
            let saved = j.save_cursors(&pairs);
            let trimmed = j.trim(through);
            Ok((saved, trimmed))
        })
        .await;
        match done {
            Ok((saved, trimmed)) => {
                if let Err(error) = saved {
                    tracing::warn!(%error, "could not persist journal cursors; retried with the next write");
                }
                match trimmed {
                    Ok((_, bytes)) => replication.forget_bytes(bytes),
                    Err(error) => {
                        tracing::warn!(%error, "could not trim the journal; retried with the next write")
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "journal maintenance failed"),
        }
        metrics::gauge!("vectorgate_journal_bytes").set(replication.journal_bytes() as f64);
    }

    /// Past `max_journal_bytes`, the stores furthest behind are held as
    /// needing a resync, so the journal can be trimmed past them.
    async fn enforce_journal_cap(&self, replication: &Replication) {
        if replication.journal_bytes() <= self.config.replication.max_journal_bytes {
            return;
        }
        let committed = replication.committed();
        let laggards: Vec<usize> = (0..self.slots.len())
            .filter(|i| {
                let r = &replication.replicas[*i];
                !r.held.load(Ordering::Relaxed) && r.cursor() < committed
            })
            .collect();
        let Some(slowest) = laggards
            .iter()
            .map(|i| replication.replicas[*i].cursor())
            .min()
        else {
            return;
        };
        for index in laggards {
            if replication.replicas[index].cursor() == slowest {
                let reason = format!(
                    "fell behind by more than replication.max_journal_bytes ({} bytes); copy its records with `vectorgate resync`",
                    self.config.replication.max_journal_bytes
                );
                tracing::error!(store = %self.slots[index].name, "{reason}");
                if let Err(error) = self.hold(index, &reason).await {
                    tracing::error!(%error, "could not persist the hold");
                }
            }
        }
    }

    /// Holds `index` out of rotation (persisted) until a resync into it completes.
    pub(crate) async fn hold(&self, index: usize, reason: &str) -> Result<()> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        replica.held.store(true, Ordering::Relaxed);
        *replica.hold_reason.lock() = Some(reason.to_owned());
        replica.in_sync.store(false, Ordering::Relaxed);
        let (name, reason, since) = (
            self.slots[index].name.clone(),
            reason.to_owned(),
            validate::now_ms(),
        );
        let saved = blocking(&replication.journal, move |j| {
            j.set_hold(&name, &reason, since)
        })
        .await;
        self.refresh();
        saved
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
    /// the store is usable. Ends when cancelled.
    pub(crate) async fn run_replicator(self: Arc<Self>, index: usize, cancel: CancellationToken) {
        let Some(replication) = &self.replication else {
            return;
        };
        let replica = &replication.replicas[index];
        let name = self.slots[index].name.clone();
        let mut committed = replication.committed.subscribe();
        let base = Duration::from_millis(self.config.retry.base_delay_ms.max(10));
        let mut backoff = base;
        let max_backoff = Duration::from_millis(self.config.retry.max_delay_ms.max(1000));
        // A replay call may take long on a loaded store; it is bounded by
        // the request deadline, not the attempt timeout.
        let budget = Budget {
            chunks: REPLICATOR_CHUNKS,
            call_timeout: Duration::from_millis(self.config.retry.deadline_ms),
        };
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
                    let clean = replica.dead_letters.load(Ordering::Relaxed) == 0;
                    if clean && !replica.in_sync.swap(true, Ordering::Relaxed) {
                        tracing::info!(store = %name, seq = target, "store caught up with the journal");
                        self.refresh();
                    }
                    replica.behind_since_ms.store(0, Ordering::Relaxed);
                    backoff = base;
                    break;
                }
                let before = replica.cursor();
                let applied = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    applied = self.apply_through(index, target, &[], budget, None) => applied,
                };
                let retry_after = match applied {
                    Ok(Applied::Done) => {
                        self.record_call(index, false);
                        let entries = replica.cursor().saturating_sub(before);
                        metrics::counter!("vectorgate_replicated_entries_total", "store" => name.clone())
                            .increment(entries);
                        continue;
                    }
                    Ok(Applied::Refused { seq, error }) => {
                        let attempts = self.count_refusal(index, seq);
                        if attempts >= self.config.replication.dead_letter_after {
                            self.dead_letter(replication, index, seq, &error, attempts)
                                .await;
                            continue;
                        }
                        tracing::warn!(store = %name, seq, attempts, %error, "store refused a journal entry; retrying");
                        Duration::from_millis(self.config.retry.max_delay_ms)
                    }
                    Err(error) => {
                        if error.is_retriable() {
                            self.record_call(index, true);
                        }
                        tracing::debug!(store = %name, %error, "replication attempt failed");
                        self.mark_out_of_sync(index);
                        backoff = (backoff * 2).min(max_backoff);
                        backoff
                    }
                };
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(retry_after) => {}
                }
            }
            self.export_lag(replication);
        }
    }

    /// Counts one more refusal of entry `seq` by store `index`.
    fn count_refusal(&self, index: usize, seq: u64) -> u32 {
        let Some(replication) = &self.replication else {
            return 0;
        };
        let mut refusals = replication.replicas[index].refusals.lock();
        let attempts = match *refusals {
            Some((s, n)) if s == seq => n + 1,
            _ => 1,
        };
        *refusals = Some((seq, attempts));
        attempts
    }

    /// Moves entry `seq` to store `index`'s dead letters and moves the
    /// store's cursor past it; the store is out of sync until an operator
    /// re-drives or discards its dead letters. If the entry cannot be
    /// recorded, the cursor stays and the store retries it later.
    async fn dead_letter(
        &self,
        replication: &Replication,
        index: usize,
        seq: u64,
        error: &Error,
        attempts: u32,
    ) {
        let replica = &replication.replicas[index];
        let name = self.slots[index].name.clone();
        let text = error.to_string();
        let stored = blocking(&replication.journal, {
            let name = name.clone();
            move |j| {
                let Some(entry) = j.read(seq - 1, seq, 1)?.into_iter().find(|e| e.seq == seq)
                else {
                    // Removed meanwhile (refused by the serving store): nothing to keep.
                    return Ok(None);
                };
                j.dead_letter(&name, &entry, &text, attempts)?;
                Ok(Some(j.dead_letter_count(&name)?))
            }
        })
        .await;
        let _guard = replica.apply.lock().await;
        match stored {
            Ok(count) => {
                if let Some(count) = count {
                    tracing::error!(store = %name, seq, %error, "entry moved to the store's dead letters; the store is out of sync until they are re-driven or discarded");
                    replica.dead_letters.store(count, Ordering::Relaxed);
                    replica.dead_floor.fetch_min(seq, Ordering::Relaxed);
                }
                if replica.cursor() == seq - 1 || count.is_none() {
                    replica.advance(seq);
                }
                *replica.refusals.lock() = None;
                drop(_guard);
                self.mark_out_of_sync(index);
                if count.is_some_and(|n| n > self.config.replication.max_dead_letters) {
                    let reason = format!(
                        "refused more than replication.max_dead_letters ({}) entries; fix the store, then copy its records with `vectorgate resync`",
                        self.config.replication.max_dead_letters
                    );
                    if let Err(error) = self.discard_dead_letters(index).await {
                        tracing::error!(%error, "could not drop dead letters");
                    }
                    if let Err(error) = self.hold(index, &reason).await {
                        tracing::error!(%error, "could not persist the hold");
                    }
                }
            }
            Err(e) => {
                tracing::error!(store = %name, seq, error = %e, "could not dead-letter an entry; the store retries it");
            }
        }
    }

    /// Drops `index`'s dead letters: the operator accepts that the store
    /// lacks them (or will resync it). Returns how many were dropped.
    pub(crate) async fn discard_dead_letters(&self, index: usize) -> Result<u64> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        let _guard = replica.apply.lock().await;
        let name = self.slots[index].name.clone();
        let dropped = replica.dead_letters.load(Ordering::Relaxed);
        blocking(&replication.journal, move |j| j.discard_dead_letters(&name)).await?;
        replica.dead_letters.store(0, Ordering::Relaxed);
        replica.dead_floor.store(u64::MAX, Ordering::Relaxed);
        drop(_guard);
        replica.wake.notify_one();
        Ok(dropped)
    }

    /// Re-drives `index`'s dead letters: the store replays the journal from
    /// its oldest dead letter on, in order (re-applying is harmless), so a
    /// re-driven write never lands on top of a newer one. Waits (within the
    /// request deadline) for the replay; returns how many dead letters were
    /// re-driven and how many the store refused again.
    pub(crate) async fn redrive(&self, index: usize) -> Result<(u64, u64)> {
        let replication = self.replication()?;
        let replica = &replication.replicas[index];
        let guard = replica.apply.lock().await;
        let name = self.slots[index].name.clone();
        let had = replica.dead_letters.load(Ordering::Relaxed);
        // The saved cursor moves back with the removal of the dead letters
        // (one transaction), then the one in memory; no save of older
        // cursors runs in between. The dead floor, which keeps the entries
        // from being trimmed, is lifted only once the cursor protects them.
        let gate = replication.cursor_gate.lock().await;
        let oldest = blocking(&replication.journal, move |j| j.redrive_dead_letters(&name)).await?;
        if let Some(oldest) = oldest {
            replica.rewind(oldest - 1);
        }
        drop(gate);
        replica.dead_letters.store(0, Ordering::Relaxed);
        replica.dead_floor.store(u64::MAX, Ordering::Relaxed);
        *replica.refusals.lock() = None;
        let target = replication.committed();
        drop(guard);
        replica.wake.notify_one();
        let mut cursor = replica.cursor.subscribe();
        let limit = Duration::from_millis(self.config.retry.deadline_ms);
        let _ = tokio::time::timeout(limit, cursor.wait_for(|c| *c >= target)).await;
        let again = replica.dead_letters.load(Ordering::Relaxed);
        Ok((had.saturating_sub(again), again))
    }

    /// Copies every record of store `from` into store `to` while the
    /// manager runs (see [`crate::resync`]): `to` is held out of rotation,
    /// and afterwards replays every journal entry `from` had not applied
    /// when the copy began. The hold is lifted only once both stores agree.
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
        // One resync at a time: two could hold each other's source.
        let Ok(_one) = self.resync_lock.try_lock() else {
            return Err(Error::invalid(
                "to",
                "another resync is running; wait for it to finish",
            ));
        };
        if self
            .replication
            .as_ref()
            .is_some_and(|r| r.replicas[from].dead_letters.load(Ordering::Relaxed) > 0)
        {
            return Err(Error::invalid(
                "from",
                format!(
                    "{} has dead letters (writes it refused): it lacks them, so it cannot be the source; re-drive or discard them first",
                    self.slots[from].name
                ),
            ));
        }
        if self.is_held(from) {
            return Err(Error::invalid(
                "from",
                format!(
                    "{} is held out of rotation itself ({}); copy from a store that is in sync",
                    self.slots[from].name,
                    self.replication
                        .as_ref()
                        .and_then(|r| r.replicas[from].hold_reason.lock().clone())
                        .unwrap_or_default()
                ),
            ));
        }
        let was_drained = {
            let mut state = self.slots[to].state.lock();
            std::mem::replace(&mut state.drained, true)
        };
        self.refresh();
        let result = self.resync_held(from, to, options, on_progress).await;
        self.slots[to].state.lock().drained = was_drained;
        self.refresh();
        result
    }

    async fn resync_held(
        &self,
        from: usize,
        to: usize,
        options: &crate::resync::ResyncOptions,
        on_progress: impl FnMut(&crate::resync::ResyncProgress),
    ) -> Result<crate::resync::ResyncReport> {
        let Some(replication) = &self.replication else {
            return crate::resync::copy_store(
                self.slots[from].store.as_ref(),
                self.slots[to].store.as_ref(),
                options,
                on_progress,
            )
            .await;
        };
        let replica = &replication.replicas[to];
        // The target is held out of rotation until the copy is complete,
        // across restarts too.
        let previous = replica.hold_reason.lock().clone();
        self.hold(to, previous.as_deref().unwrap_or("resync in progress"))
            .await?;
        // Holding the target's apply lock keeps the writer and its
        // replicator out for the whole copy. The copy reads the source as
        // it is: everything the source had not applied when the copy began
        // is replayed afterwards.
        let guard = replica.apply.lock().await;
        let floor = replication.replicas[from]
            .cursor()
            .min(replication.committed());
        replica.floor.store(floor, Ordering::Relaxed);
        tracing::info!(from = %self.slots[from].name, to = %self.slots[to].name, floor, "resync: copying");
        let report = crate::resync::copy_store(
            self.slots[from].store.as_ref(),
            self.slots[to].store.as_ref(),
            options,
            on_progress,
        )
        .await;
        // The copy may hold the effect of any entry committed by now: the
        // replay from the floor re-applies them (see `Inner::replay_refusal`).
        replica
            .applied_before
            .fetch_max(replication.committed(), Ordering::Relaxed);
        replica.cursor.send_modify(|c| *c = floor);
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                drop(guard);
                replica.floor.store(u64::MAX, Ordering::Relaxed);
                return Err(error);
            }
        };
        // The copy supersedes the target's dead letters: what it refused up
        // to the floor is in the copy, and what came after is replayed.
        if replica.dead_letters.load(Ordering::Relaxed) > 0 {
            let name = self.slots[to].name.clone();
            blocking(&replication.journal, move |j| j.discard_dead_letters(&name)).await?;
            replica.dead_letters.store(0, Ordering::Relaxed);
            replica.dead_floor.store(u64::MAX, Ordering::Relaxed);
            *replica.refusals.lock() = None;
        }
        drop(guard);
        // Catch the target up, then check the stores agree before it serves.
        let teams: Vec<String> = report.teams.iter().map(|t| t.team_id.clone()).collect();
        let verified = self.verify_after_resync(from, to, options, &teams).await;
        replica.floor.store(u64::MAX, Ordering::Relaxed);
        let teams = match verified {
            Ok(teams) => teams,
            Err(error) => {
                tracing::error!(%error, "resync copied the records but the stores do not agree yet; the target stays held; run the resync again");
                return Err(error);
            }
        };
        let name = self.slots[to].name.clone();
        blocking(&replication.journal, move |j| j.clear_hold(&name)).await?;
        replica.held.store(false, Ordering::Relaxed);
        *replica.hold_reason.lock() = None;
        replica.wake.notify_one();
        Ok(crate::resync::ResyncReport { teams, ..report })
    }

    /// After a copy: replays the journal into `to`, then, with the writer
    /// paused (for the length of a count per team), brings it to the
    /// committed sequence and compares its per-team counts with a store
    /// that has applied every write (the source, unless it is behind). A
    /// few tries.
    async fn verify_after_resync(
        &self,
        from: usize,
        to: usize,
        options: &crate::resync::ResyncOptions,
        teams: &[String],
    ) -> Result<Vec<crate::resync::TeamCount>> {
        let replication = self.replication()?;
        let budget = Budget {
            chunks: usize::MAX,
            call_timeout: Duration::from_millis(self.config.retry.deadline_ms),
        };
        let limit = Duration::from_millis(self.config.retry.deadline_ms);
        let mut last = None;
        for _ in 0..5 {
            // Catch the target up while writes go on.
            let target = replication.committed();
            if let Applied::Refused { seq, error } =
                self.apply_through(to, target, &[], budget, None).await?
            {
                self.dead_letter(replication, to, seq, &error, 1).await;
                continue;
            }
            // Then pause the writer for the final comparison: no write may
            // land on one store and not yet on the other while counting.
            let Ok(_paused) = tokio::time::timeout(limit, replication.writer_gate.lock()).await
            else {
                continue;
            };
            let target = replication.committed();
            if let Applied::Refused { seq, error } =
                self.apply_through(to, target, &[], budget, None).await?
            {
                drop(_paused);
                self.dead_letter(replication, to, seq, &error, 1).await;
                continue;
            }
            // Compare with a store that has every write: the source, or,
            // if it is behind (e.g. it refuses writes), one that is not.
            let reference = std::iter::once(from).chain(0..self.slots.len()).find(|i| {
                *i != to
                    && !self.is_held(*i)
                    && replication.replicas[*i].cursor() >= target
                    && replication.replicas[*i]
                        .dead_letters
                        .load(Ordering::Relaxed)
                        == 0
            });
            let Some(reference) = reference else {
                drop(_paused);
                last = Some(vec![
                    "no store had applied every write to compare with".to_owned(),
                ]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let teams = crate::resync::compare_counts(
                self.slots[reference].store.as_ref(),
                self.slots[to].store.as_ref(),
                teams,
                options,
            )
            .await?;
            let differ: Vec<String> = teams
                .iter()
                .filter(|t| t.source != t.target)
                .map(|t| format!("{} ({} vs {})", t.team_id, t.source, t.target))
                .collect();
            if differ.is_empty()
                && replication.replicas[to]
                    .dead_letters
                    .load(Ordering::Relaxed)
                    == 0
            {
                return Ok(teams);
            }
            last = Some(differ);
        }
        Err(Error::internal(
            &self.slots[to].name,
            format!(
                "after the copy the stores still differ (per-team counts: {:?}); run `vectorgate resync` again",
                last.unwrap_or_default()
            ),
        ))
    }
}

/// [`apply_call`] bounded by `limit`.
async fn bounded_apply(
    store: &DynStore,
    name: &str,
    entries: &[&Entry],
    parallelism: usize,
    limit: Duration,
) -> Result<u64> {
    tokio::time::timeout(limit, apply_call(store, entries, parallelism))
        .await
        .unwrap_or_else(|_| {
            Err(Error::timeout(
                name,
                format!(
                    "applying journal entries took over {} ms",
                    limit.as_millis()
                ),
            ))
        })
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

/// One store call for a group made by [`group`]; returns the delete count.
///
/// Upserts of distinct ids commute, so a merged group whose ids are all
/// distinct is applied as up to `parallelism` concurrent calls: a database
/// serves them on several cores, as it would serve independent clients.
/// Parts are made of whole writes, never a piece of one: each write stays
/// one all-or-nothing store call. The cursor only moves once every part
/// succeeded; re-applying a part is harmless.
async fn apply_call(store: &DynStore, call: &[&Entry], parallelism: usize) -> Result<u64> {
    let upserts = |entries: &[&Entry]| {
        let mut records = Vec::with_capacity(entries.iter().map(|e| e.op.weight()).sum());
        for entry in entries {
            if let WriteOp::Upsert(rs) = &entry.op {
                records.extend(rs.iter().cloned());
            }
        }
        records
    };
    match call {
        [] => Ok(0),
        [
            Entry {
                op: WriteOp::Delete(selector),
                ..
            },
        ] => store.delete(selector).await,
        _ => {
            let distinct = || {
                let mut seen = std::collections::HashSet::new();
                call.iter().all(|e| match &e.op {
                    WriteOp::Upsert(rs) => rs.iter().all(|r| seen.insert(r.id.as_str())),
                    WriteOp::Delete(_) => false,
                })
            };
            let parts = parallelism.min(call.len());
            if parts <= 1 || !distinct() {
                return store.upsert(&upserts(call)).await.map(|_| 0);
            }
            // Split by weight into `parts` runs of whole writes.
            let total: usize = call.iter().map(|e| e.op.weight()).sum();
            let share = total.div_ceil(parts);
            let mut runs: Vec<Vec<&Entry>> = vec![Vec::new()];
            let mut weight = 0;
            for entry in call {
                if weight >= share
                    && let Some(run) = runs.last()
                    && !run.is_empty()
                {
                    runs.push(Vec::new());
                    weight = 0;
                }
                if let Some(run) = runs.last_mut() {
                    run.push(entry);
                }
                weight += entry.op.weight();
            }
            let records: Vec<Vec<crate::model::Record>> = runs.iter().map(|r| upserts(r)).collect();
            let calls = records.iter().map(|rs| store.upsert(rs));
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
