//! The manager's fault model, checked by a seeded, randomized, model-based
//! simulation.
//!
//! Each seed builds 2 or 3 in-memory stores behind the fault-injecting
//! wrapper, a manager with a real SQLite journal, and a random history of
//! steps: upserts (with and without ids, 1 to 1000 records), deletes by id
//! and by scope, reads, across three teams, often several at once; faults
//! of every class on each store (crash/refusal, hang, slow, flapping,
//! store-wide refusal of writes, record-level refusal of one value,
//! transient errors), journal I/O errors (append, cursors, trim), operator
//! actions (drain, force, resume, resync, redrive) and manager restarts on
//! the same journal. It runs on one thread with a paused clock, so a history
//! takes no real time and a seed replays the same way.
//!
//! A reference model holds what was acknowledged. The invariants, checked
//! after every step and at the end:
//! - no caller error while some store is healthy (fault-free for a while,
//!   not drained or held), except a request refused as invalid or a write
//!   the journal could not take;
//! - a failed or refused write leaves nothing anywhere, an acknowledged one
//!   is never lost: every read answered by a store that is caught up and
//!   has no dead letters equals the model;
//! - no read is answered stale while another store could have answered it
//!   fully (the manager counts those; it must be 0);
//! - once faults end and the operator re-drives/resyncs, every store holds
//!   exactly the model, every store is in sync, and the journal is trimmed.
//!
//! On a failure the test shrinks the history (drops steps while it still
//! fails) and prints the seed and the shrunk history. Environment:
//! `VECTORGATE_MODEL_SEED=N` replays one seed; `VECTORGATE_MODEL_SEEDS=N`
//! runs N seeds per test function (default 30, 4 functions);
//! `VECTORGATE_MODEL_STEPS=N` sets the steps per history (default 60);
//! `VECTORGATE_MODEL_TRACE=1` prints every step and outcome, and
//! `VECTORGATE_MODEL_TRACE=debug` (any log filter) the manager's log too (with
//! `--nocapture`); `VECTORGATE_MODEL_KEEP=3,7,9` keeps only those steps of
//! the seed's history (to replay a shrunk history by hand).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use vectorgate::resync::ResyncOptions;
use vectorgate::{
    DeleteSelector, DynStore, ErrorKind, IndexSpec, ManagerConfig, Metric, RecallQuery, Record,
    VectorManager, VectorStore,
};
use vectorgate_testkit::fault::{Fault, FaultyStore, Target};
use vectorgate_testkit::memory::MemoryStore;

const DIM: u32 = 4;
const TEAMS: u8 = 3;
const POISON: &str = "poison";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------- history

#[derive(Debug, Clone, Copy, PartialEq)]
enum StoreFault {
    None,
    Down,
    ReadOnly,
    Hang,
    Slow(u64),
    Flap,
    Transient(u32),
    Refuse(bool),
}

#[derive(Debug, Clone, Copy)]
enum JournalFault {
    Append,
    SaveCursors,
    Trim,
}

#[derive(Clone)]
enum Op {
    /// `ids`: `Some(n)` is record `t{owner}-r{n}`, `None` an id-less
    /// record, written as records of `team`. `owner != team` is a take-over
    /// attempt: ids another team holds must be refused (`Conflict`).
    Upsert {
        team: u8,
        owner: u8,
        ids: Vec<Option<u16>>,
        version: u32,
        poison: bool,
    },
    DeleteIds {
        team: u8,
        ids: Vec<u16>,
    },
    DeleteScope {
        team: u8,
        dataset: u8,
    },
    Read {
        team: u8,
    },
    Resync {
        from: u8,
        to: u8,
    },
    Redrive(u8),
}

#[derive(Clone)]
enum Step {
    /// Client operations run at once (their ids never overlap).
    Clients(Vec<Op>),
    Fault(u8, StoreFault),
    Journal(JournalFault),
    Drain(u8),
    Force(u8),
    Resume,
    Restart,
    Sleep(u64),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Upsert {
                team,
                owner,
                ids,
                version,
                poison,
            } => {
                let named: Vec<u16> = ids.iter().flatten().copied().collect();
                let idless = ids.len() - named.len();
                write!(
                    f,
                    "Upsert(t{team} v{version} ids {named:?} + {idless} id-less"
                )?;
                if owner != team {
                    write!(f, ", ids of t{owner}")?;
                }
                if *poison {
                    write!(f, ", poison")?;
                }
                write!(f, ")")
            }
            Op::DeleteIds { team, ids } => write!(f, "DeleteIds(t{team} {ids:?})"),
            Op::DeleteScope { team, dataset } => write!(f, "DeleteScope(t{team} d{dataset})"),
            Op::Read { team } => write!(f, "Read(t{team})"),
            Op::Resync { from, to } => write!(f, "Resync(s{from} -> s{to})"),
            Op::Redrive(store) => write!(f, "Redrive(s{store})"),
        }
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Clients(ops) => write!(f, "Clients{ops:?}"),
            Step::Fault(store, fault) => write!(f, "Fault(s{store}, {fault:?})"),
            Step::Journal(fault) => write!(f, "JournalFault({fault:?})"),
            Step::Drain(store) => write!(f, "Drain(s{store})"),
            Step::Force(store) => write!(f, "Force(s{store})"),
            Step::Resume => write!(f, "Resume"),
            Step::Restart => write!(f, "Restart"),
            Step::Sleep(ms) => write!(f, "Sleep({ms} ms)"),
        }
    }
}

struct Gen {
    rng: StdRng,
    stores: u8,
    version: u32,
}

impl Gen {
    fn op(&mut self, used: &mut BTreeSet<(u8, u16)>, scoped: &mut BTreeSet<u8>) -> Option<Op> {
        let team = self.rng.random_range(0..TEAMS);
        let roll = self.rng.random_range(0..100);
        // One upsert in ten tries to take over another team's ids.
        let owner = if roll < 50 && self.rng.random_bool(0.1) {
            (team + self.rng.random_range(1..TEAMS)) % TEAMS
        } else {
            team
        };
        let mut fresh_id = |rng: &mut StdRng| {
            for _ in 0..8 {
                let n = rng.random_range(0..60u16);
                if used.insert((owner, n)) {
                    return Some(n);
                }
            }
            None
        };
        match roll {
            0..50 => {
                if scoped.contains(&team) || scoped.contains(&owner) {
                    return None;
                }

                let big = self.rng.random_bool(0.05);
                let len = if big {
                    self.rng.random_range(100..=1000)
                } else {
                    self.rng.random_range(1..=6)
                };
                let mut ids = Vec::new();
                for _ in 0..len {
                    if big || self.rng.random_bool(0.2) {
                        ids.push(None);
                    } else if let Some(n) = fresh_id(&mut self.rng) {
                        ids.push(Some(n));
                    }
                }
                if ids.is_empty() {
                    return None;
                }
                if owner != team {
                    // Keeps a scope delete of the writing team out of this step.
                    used.insert((team, u16::MAX));
                }
                self.version += 1;
                Some(Op::Upsert {
                    team,
                    owner,
                    ids,
                    version: self.version,
                    poison: self.rng.random_bool(0.08),
                })
            }
            50..65 => {
                if scoped.contains(&team) {
                    return None;
                }
                let ids: Vec<u16> = (0..self.rng.random_range(1..=4))
                    .filter_map(|_| fresh_id(&mut self.rng))
                    .collect();
                (!ids.is_empty()).then_some(Op::DeleteIds { team, ids })
            }
            65..70 => {
                if used.iter().any(|(t, _)| *t == team) || !scoped.insert(team) {
                    return None;
                }
                Some(Op::DeleteScope {
                    team,
                    dataset: self.rng.random_range(0..2),
                })
            }
            70..94 => Some(Op::Read { team }),
            94..97 => {
                let from = self.rng.random_range(0..self.stores);
                let to = (from + self.rng.random_range(1..self.stores)) % self.stores;
                Some(Op::Resync { from, to })
            }
            _ => Some(Op::Redrive(self.rng.random_range(0..self.stores))),
        }
    }

    fn step(&mut self) -> Step {
        let store = self.rng.random_range(0..self.stores);
        match self.rng.random_range(0..100) {
            0..55 => {
                let mut used = BTreeSet::new();
                let mut scoped = BTreeSet::new();
                let n = self.rng.random_range(1..=5);
                let ops: Vec<Op> = (0..n)
                    .filter_map(|_| self.op(&mut used, &mut scoped))
                    .collect();
                if ops.is_empty() {
                    Step::Sleep(10)
                } else {
                    Step::Clients(ops)
                }
            }
            55..75 => {
                let fault = match self.rng.random_range(0..12) {
                    0..4 => StoreFault::None,
                    4 => StoreFault::Down,
                    5 => StoreFault::ReadOnly,
                    6 => StoreFault::Hang,
                    7 => StoreFault::Slow(self.rng.random_range(5..600)),
                    8 => StoreFault::Flap,
                    9 => StoreFault::Transient(self.rng.random_range(1..=2)),
                    10 => StoreFault::Refuse(true),
                    _ => StoreFault::Refuse(false),
                };
                Step::Fault(store, fault)
            }
            75..79 => Step::Journal(match self.rng.random_range(0..3) {
                0 => JournalFault::Append,
                1 => JournalFault::SaveCursors,
                _ => JournalFault::Trim,
            }),
            79..81 => Step::Drain(store),
            81..82 => Step::Force(store),
            82..85 => Step::Resume,
            85..87 => Step::Restart,
            _ => Step::Sleep(self.rng.random_range(1..1500)),
        }
    }
}

fn history(seed: u64, steps: usize) -> (u8, Vec<Step>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let stores = rng.random_range(2..=3);
    let mut generator = Gen {
        rng,
        stores,
        version: 0,
    };
    let steps = (0..steps).map(|_| generator.step()).collect();
    (stores, steps)
}

// ---------------------------------------------------------------- the rig

fn spec() -> IndexSpec {
    IndexSpec::new(DIM, Metric::Cosine)
}

fn config(journal: &Path, seed: u64) -> ManagerConfig {
    let mut config = ManagerConfig::new(spec()).with_journal(journal);
    config.health.probe_interval_ms = 50;
    config.health.probe_timeout_ms = 200;
    config.breaker.open_ms = 200;
    config.retry.attempt_timeout_ms = 300;
    config.retry.deadline_ms = 2000;
    config.retry.max_delay_ms = 50;
    config.retry.jitter_seed = Some(seed);
    config.replication.catchup_wait_ms = 1000;
    config.replication.dead_letter_after = 2;
    config
}

fn record(team: u8, id: String, n: u64, version: u32, poison: bool) -> Record {
    let mut payload = serde_json::json!({ "v": version, "n": n });
    if poison {
        payload[POISON] = serde_json::json!(true);
    }
    Record {
        id,
        team_id: format!("t{team}"),
        dataset_id: format!("d{}", n % 2),
        collection_id: format!("c{}", n % 3),
        vector: vec![1.0, (n % 97) as f32, version as f32 / 7.0, 0.5],
        created_at_ms: 1_700_000_000_000 + i64::from(version),
        payload: Some(payload),
    }
}

/// How long a store must have been fault-free before the test expects it
/// to take traffic again (breaker open period + probes + catch-up).
const SETTLE: Duration = Duration::from_millis(1500);

struct Sim {
    seed: u64,
    dir: tempfile::TempDir,
    data: Vec<Arc<MemoryStore>>,
    faulty: Vec<Arc<FaultyStore>>,
    manager: Arc<VectorManager>,
    /// Per store: its fault and since when (for "healthy for a while").
    faults: Vec<(StoreFault, Instant)>,
    drained: BTreeSet<usize>,
    model: BTreeMap<String, Record>,
    log: Vec<String>,
}

impl Sim {
    async fn start(seed: u64, stores: u8) -> Sim {
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::tempdir_in(base).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let data: Vec<Arc<MemoryStore>> = (0..stores)
            .map(|i| Arc::new(MemoryStore::new(format!("s{i}"))))
            .collect();
        let faulty: Vec<Arc<FaultyStore>> = data
            .iter()
            .map(|d| FaultyStore::wrap(d.clone() as DynStore))
            .collect();
        let manager = Self::manager(&dir, seed, &faulty).await.unwrap();
        let now = Instant::now();
        Sim {
            seed,
            dir,
            data,
            faults: vec![(StoreFault::None, now - SETTLE); stores as usize],
            faulty,
            manager,
            drained: BTreeSet::new(),
            model: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    async fn manager(
        dir: &tempfile::TempDir,
        seed: u64,
        faulty: &[Arc<FaultyStore>],
    ) -> vectorgate::Result<Arc<VectorManager>> {
        let stores: Vec<DynStore> = faulty.iter().map(|f| f.clone() as DynStore).collect();
        Ok(Arc::new(
            VectorManager::start(config(&dir.path().join("journal.db"), seed), stores).await?,
        ))
    }

    fn name(i: usize) -> String {
        format!("s{i}")
    }

    /// Stores a request can count on: fault-free for `SETTLE`, not drained,
    /// not held.
    fn healthy(&self) -> Vec<usize> {
        let status = self.manager.status();
        let now = Instant::now();
        (0..self.faulty.len())
            .filter(|i| {
                let (fault, since) = self.faults[*i];
                matches!(fault, StoreFault::None | StoreFault::Refuse(_))
                    && now.duration_since(since) >= SETTLE
                    && !self.drained.contains(i)
                    && status
                        .store(&Self::name(*i))
                        .is_some_and(|s| !s.resync_pending && s.schema_ready)
            })
            .collect()
    }

    fn set_fault(&mut self, i: usize, fault: StoreFault) {
        let store = &self.faulty[i];
        store.target(Target::All);
        match fault {
            StoreFault::None => store.set(Fault::None),
            StoreFault::Down => store.set(Fault::Fail(ErrorKind::Unavailable)),
            StoreFault::ReadOnly => {
                store.target(Target::ReadOnly);
                store.set(Fault::Fail(ErrorKind::Unavailable));
            }
            StoreFault::Hang => store.set(Fault::Hang),
            StoreFault::Slow(ms) => store.set(Fault::Delay(Duration::from_millis(ms))),
            StoreFault::Flap => store.set(Fault::Flap {
                up: Duration::from_millis(150),
                down: Duration::from_millis(100),
            }),
            StoreFault::Transient(n) => {
                store.set(Fault::None);
                store.fail_next(n, ErrorKind::Unavailable);
            }
            StoreFault::Refuse(on) => {
                store.set(Fault::None);
                store.refuse_payload_key(on.then_some(POISON));
            }
        }
        let previous = self.faults[i];
        let settled_kind = |f: StoreFault| matches!(f, StoreFault::None | StoreFault::Refuse(_));
        let since = match fault {
            // A transient blip or a change of refusal keeps a healthy store healthy.
            StoreFault::Transient(_) | StoreFault::Refuse(_) if settled_kind(previous.0) => {
                previous.1
            }
            StoreFault::Transient(_) => Instant::now(),
            _ if settled_kind(fault) && settled_kind(previous.0) => previous.1,
            _ => Instant::now(),
        };
        let kept = match fault {
            StoreFault::Transient(_) => StoreFault::None,
            other => other,
        };
        self.faults[i] = (kept, since);
    }

    /// Runs one client operation; checks what it may return.
    async fn client(&self, op: &Op, sequential: bool) -> Result<Outcome, String> {
        let healthy_before = !self.healthy().is_empty();
        let manager = &self.manager;
        match op {
            Op::Upsert {
                team,
                owner,
                ids,
                version,
                poison,
            } => {
                let records: Vec<Record> = ids
                    .iter()
                    .enumerate()
                    .map(|(k, n)| match n {
                        Some(n) => record(
                            *team,
                            format!("t{owner}-r{n}"),
                            u64::from(*n),
                            *version,
                            *poison,
                        ),
                        None => record(*team, String::new(), 1000 + k as u64, *version, *poison),
                    })
                    .collect();
                // Ids the acknowledged state gives to another team: the
                // write must be refused, unless a store that missed writes
                // (dead letters, held) served it.
                let taken: Vec<&String> = records
                    .iter()
                    .map(|r| &r.id)
                    .filter(|id| {
                        self.model
                            .get(*id)
                            .is_some_and(|held| held.team_id != format!("t{team}"))
                    })
                    .collect();
                let diverged = || {
                    manager
                        .status()
                        .stores
                        .iter()
                        .any(|s| s.dead_letters > 0 || s.resync_pending)
                };
                match manager.upsert(&records).await {
                    // Alone in its step: no concurrent delete can have freed them.
                    Ok(_) if sequential && !taken.is_empty() && !diverged() => Err(format!(
                        "t{team} took over {taken:?} of another team: the upsert was acknowledged"
                    )),
                    Err(error)
                        if error.kind() == ErrorKind::Conflict
                            && (!taken.is_empty() || diverged()) =>
                    {
                        Ok(Outcome::Failed)
                    }
                    Ok(outcome) => {
                        let written = records
                            .into_iter()
                            .zip(outcome.ids)
                            .map(|(mut r, id)| {
                                r.id = id;
                                r
                            })
                            .collect();
                        Ok(Outcome::Upserted(written))
                    }
                    Err(error) => self
                        .allowed(op, &error, healthy_before)
                        .map(|()| Outcome::Failed),
                }
            }
            Op::DeleteIds { team, ids } => {
                let selector = DeleteSelector::Ids {
                    team_id: format!("t{team}"),
                    ids: ids.iter().map(|n| format!("t{team}-r{n}")).collect(),
                };
                match manager.delete(&selector).await {
                    Ok(_) => Ok(Outcome::Deleted(selector)),
                    Err(error) => self
                        .allowed(op, &error, healthy_before)
                        .map(|()| Outcome::Failed),
                }
            }
            Op::DeleteScope { team, dataset } => {
                let selector = DeleteSelector::Scope {
                    team_id: format!("t{team}"),
                    dataset_ids: vec![format!("d{dataset}")],
                    collection_ids: None,
                };
                match manager.delete(&selector).await {
                    Ok(_) => Ok(Outcome::Deleted(selector)),
                    Err(error) => self
                        .allowed(op, &error, healthy_before)
                        .map(|()| Outcome::Failed),
                }
            }
            Op::Read { team } => {
                let query = RecallQuery {
                    team_id: format!("t{team}"),
                    dataset_ids: vec!["d0".into(), "d1".into()],
                    vector: vec![1.0, 1.0, 1.0, 1.0],
                    limit: 1000,
                    ..Default::default()
                };
                let (stale_before, _) = manager.stale_reads();
                match manager.recall_routed(&query).await {
                    Ok(routed) => {
                        if !sequential {
                            return Ok(Outcome::Read);
                        }
                        let got: BTreeSet<String> =
                            routed.value.into_iter().map(|h| h.id).collect();
                        let want: BTreeSet<String> = self
                            .model
                            .values()
                            .filter(|r| r.team_id == format!("t{team}"))
                            .map(|r| r.id.clone())
                            .collect();
                        // A recall returns at most `limit` hits: every hit must
                        // be acknowledged, and none may be missing below it.
                        let complete = got.len() == want.len().min(query.limit as usize);
                        if !complete || !got.is_subset(&want) {
                            let (stale_after, _) = manager.stale_reads();
                            let diverged = manager
                                .status()
                                .store(&routed.served_by)
                                .is_some_and(|s| s.dead_letters > 0);
                            if stale_after == stale_before && !diverged {
                                let missing: Vec<_> = want.difference(&got).take(5).collect();
                                let extra: Vec<_> = got.difference(&want).take(5).collect();
                                return Err(format!(
                                    "read of t{team} served by {} differs from what was acknowledged ({} hits, {} acknowledged) and was not reported stale: missing {missing:?}, extra {extra:?}",
                                    routed.served_by,
                                    got.len(),
                                    want.len()
                                ));
                            }
                        }
                        Ok(Outcome::Read)
                    }
                    Err(error) => self
                        .allowed(op, &error, healthy_before)
                        .map(|()| Outcome::Read),
                }
            }
            Op::Resync { from, to } => {
                let options = ResyncOptions {
                    page_size: 50,
                    ..Default::default()
                };
                let result = manager
                    .resync(
                        &Self::name(*from as usize),
                        &Self::name(*to as usize),
                        &options,
                        |_| {},
                    )
                    .await;
                Ok(Outcome::Note(format!(
                    "resync s{from}->s{to}: {:?}",
                    result.map(|r| r.copied)
                )))
            }
            Op::Redrive(store) => {
                let result = manager
                    .redrive_dead_letters(&Self::name(*store as usize))
                    .await;
                Ok(Outcome::Note(format!("redrive s{store}: {result:?}")))
            }
        }
    }

    /// Is this caller error allowed by the fault model?
    fn allowed(
        &self,
        op: &Op,
        error: &vectorgate::Error,
        healthy_before: bool,
    ) -> Result<(), String> {
        let text = error.to_string();
        let poison = matches!(op, Op::Upsert { poison: true, .. });
        if error.kind() == ErrorKind::InvalidInput && poison {
            return Ok(());
        }
        if text.contains("could not be journaled") {
            return Ok(());
        }
        if !healthy_before || self.healthy().is_empty() {
            return Ok(());
        }
        Err(format!(
            "caller saw an error while store(s) {:?} were healthy: {op:?}: {text}",
            self.healthy()
        ))
    }

    fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Upserted(records) => {
                for r in records {
                    self.model.insert(r.id.clone(), r);
                }
            }
            Outcome::Deleted(DeleteSelector::Ids { team_id, ids }) => {
                for id in ids {
                    if self.model.get(&id).is_some_and(|r| r.team_id == team_id) {
                        self.model.remove(&id);
                    }
                }
            }
            Outcome::Deleted(DeleteSelector::Scope {
                team_id,
                dataset_ids,
                ..
            }) => self
                .model
                .retain(|_, r| !(r.team_id == team_id && dataset_ids.contains(&r.dataset_id))),
            Outcome::Note(note) => self.log.push(note),
            Outcome::Failed | Outcome::Read => {}
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Clients(ops) => {
                let sequential = ops.len() == 1;
                let outcomes = {
                    let this = &*self;
                    futures_util::future::join_all(ops.iter().map(|op| this.client(op, sequential)))
                        .await
                };
                for (op, outcome) in ops.iter().zip(outcomes) {
                    let outcome = outcome?;
                    if std::env::var_os("VECTORGATE_MODEL_TRACE").is_some() {
                        eprintln!("    {op:?} -> {outcome:?}");
                    }
                    self.apply(outcome);
                }
            }
            Step::Fault(store, fault) => self.set_fault(*store as usize, *fault),
            Step::Journal(fault) => {
                if let Some(faults) = self.manager.journal_faults() {
                    let counter = match fault {
                        JournalFault::Append => &faults.append,
                        JournalFault::SaveCursors => &faults.save_cursors,
                        JournalFault::Trim => &faults.trim,
                    };
                    counter.store(1, Ordering::SeqCst);
                }
            }
            Step::Drain(store) => {
                self.manager.drain(&Self::name(*store as usize)).unwrap();
                self.drained.insert(*store as usize);
            }
            Step::Force(store) => {
                self.manager
                    .force_active(&Self::name(*store as usize))
                    .unwrap();
                self.drained.remove(&(*store as usize));
            }
            Step::Resume => {
                self.manager.resume_auto();
                self.drained.clear();
            }
            Step::Restart => {
                self.manager.shutdown().await;
                // A restart clears operator overrides (they are not persisted).
                self.drained.clear();
                match Self::manager(&self.dir, self.seed, &self.faulty).await {
                    Ok(manager) => self.manager = manager,
                    Err(error) => {
                        // A store with a hard fault can stop a start (e.g. a
                        // schema it cannot create); the operator fixes it.
                        self.log.push(format!("restart failed: {error}"));
                        for i in 0..self.faulty.len() {
                            self.set_fault(i, StoreFault::None);
                        }
                        self.manager = Self::manager(&self.dir, self.seed, &self.faulty)
                            .await
                            .map_err(|e| {
                                format!("manager does not start on healthy stores: {e}")
                            })?;
                    }
                }
            }
            Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
        let (_, avoidable) = self.manager.stale_reads();
        if avoidable > 0 {
            let status = self.manager.status();
            let stores: Vec<String> = status
                .stores
                .iter()
                .map(|s| {
                    format!(
                        "{}: {:?} in_sync={} lag={} dead={} held={}",
                        s.name,
                        s.breaker,
                        s.in_sync,
                        s.lag_entries,
                        s.dead_letters,
                        s.resync_pending
                    )
                })
                .collect();
            return Err(format!(
                "{avoidable} read(s) answered stale while another store had every write applied (now: {stores:?})"
            ));
        }
        Ok(())
    }

    /// Ends every fault, lets the operator mend what needs it, and checks
    /// that every store holds exactly the model.
    async fn converge(&mut self) -> Result<(), String> {
        for i in 0..self.faulty.len() {
            self.set_fault(i, StoreFault::None);
            self.faulty[i].refuse_payload_key(None);
        }
        if let Some(faults) = self.manager.journal_faults() {
            faults.append.store(0, Ordering::SeqCst);
            faults.save_cursors.store(0, Ordering::SeqCst);
            faults.trim.store(0, Ordering::SeqCst);
        }
        self.manager.resume_auto();
        self.drained.clear();
        tokio::time::sleep(SETTLE).await;
        let names: Vec<String> = (0..self.faulty.len()).map(Self::name).collect();
        for _round in 0..20 {
            let status = self.manager.status();
            for s in &status.stores {
                if s.dead_letters > 0 {
                    let _ = self.manager.redrive_dead_letters(&s.name).await;
                }
            }
            let status = self.manager.status();
            let source = status
                .stores
                .iter()
                .find(|s| s.in_sync && !s.resync_pending && s.dead_letters == 0)
                .map(|s| s.name.clone());
            if let Some(source) = source {
                // What a re-drive could not place (a store that served
                // writes while it lacked some accepted a take-over the
                // others refuse) is mended by a resync, as the README says.
                for s in &status.stores {
                    if s.resync_pending || (s.dead_letters > 0 && s.name != source) {
                        let options = ResyncOptions {
                            page_size: 200,
                            ..Default::default()
                        };
                        let _ = self
                            .manager
                            .resync(&source, &s.name, &options, |_| {})
                            .await;
                    }
                }
            }
            let status = self.manager.status();
            if status.stores.iter().all(|s| {
                s.in_sync && s.lag_entries == 0 && s.dead_letters == 0 && !s.resync_pending
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let status = self.manager.status();
        for s in &status.stores {
            if !(s.in_sync && s.lag_entries == 0 && s.dead_letters == 0 && !s.resync_pending) {
                return Err(format!("store {} did not converge: {s:?}", s.name));
            }
        }
        for (i, data) in self.data.iter().enumerate() {
            let held = everything(data.as_ref()).await;
            if held != self.model {
                let missing: Vec<_> = self
                    .model
                    .keys()
                    .filter(|k| !held.contains_key(*k))
                    .take(5)
                    .collect();
                let extra: Vec<_> = held
                    .keys()
                    .filter(|k| !self.model.contains_key(*k))
                    .take(5)
                    .collect();
                let changed: Vec<_> = held
                    .iter()
                    .filter(|(k, v)| self.model.get(*k).is_some_and(|m| m != *v))
                    .map(|(k, _)| k)
                    .take(5)
                    .collect();
                return Err(format!(
                    "store {} differs from the acknowledged state ({} vs {} records): missing {missing:?}, extra {extra:?}, other version {changed:?}",
                    names[i],
                    held.len(),
                    self.model.len()
                ));
            }
        }
        // Bounded: two more writes let the journal trim what all applied.
        for k in 0..2u32 {
            let r = record(0, format!("t0-final{k}"), 7, 1_000_000 + k, false);
            self.manager
                .upsert(std::slice::from_ref(&r))
                .await
                .map_err(|e| format!("write after convergence failed: {e}"))?;
            self.model.insert(r.id.clone(), r);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let bytes = self.manager.journal_bytes();
        if bytes > 64 * 1024 {
            return Err(format!(
                "the journal keeps {bytes} bytes after every store caught up"
            ));
        }
        if self.manager.footprint() > 1000 {
            return Err(format!(
                "manager state grew to {}",
                self.manager.footprint()
            ));
        }
        Ok(())
    }
}

enum Outcome {
    Upserted(Vec<Record>),
    Deleted(DeleteSelector),
    Read,
    Failed,
    Note(String),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Upserted(records) => write!(f, "upserted {}", records.len()),
            Outcome::Deleted(_) => write!(f, "deleted"),
            Outcome::Read => write!(f, "read"),
            Outcome::Failed => write!(f, "failed (allowed)"),
            Outcome::Note(note) => write!(f, "{note}"),
        }
    }
}

async fn everything(store: &dyn VectorStore) -> BTreeMap<String, Record> {
    vectorgate_testkit::walk::everything(store)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

/// Real time one history may take: a history runs on a paused clock in
/// well under a second; one that does not finish is a livelock.
const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs one history; `Err` names the first broken invariant and the step.
fn run(seed: u64, stores: u8, steps: &[Step]) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let steps = steps.to_vec();
    std::thread::spawn(move || {
        let _ = tx.send(run_here(seed, stores, &steps));
    });
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        Err(format!(
            "the history did not finish within {WATCHDOG:?} of real time (a livelock on the paused clock?)"
        ))
    })
}

fn run_here(seed: u64, stores: u8, steps: &[Step]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    // `VECTORGATE_MODEL_TRACE=debug` (any filter) also prints the manager's
    // own log, for this thread only.
    let _log = std::env::var("VECTORGATE_MODEL_TRACE")
        .ok()
        .filter(|filter| filter != "1")
        .map(|filter| {
            tracing::subscriber::set_default(
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_writer(std::io::stderr)
                    .finish(),
            )
        });
    runtime.block_on(async {
        let mut sim = Sim::start(seed, stores).await;
        let trace = std::env::var_os("VECTORGATE_MODEL_TRACE").is_some();
        for (i, step) in steps.iter().enumerate() {
            if trace {
                eprintln!("[{:?}] step {i}: {step:?}", Instant::now());
            }
            if let Err(error) = sim.step(step).await {
                sim.manager.shutdown().await;
                return Err(format!("step {i} ({step:?}): {error}"));
            }
        }
        let result = sim.converge().await;
        sim.manager.shutdown().await;
        if sim.manager.running_tasks() != 0 {
            return Err("background tasks still running after shutdown".into());
        }
        result.map_err(|e| format!("at the end: {e}"))
    })
}

/// Drops steps while the history still fails; returns the smallest found.
fn shrink(seed: u64, stores: u8, mut steps: Vec<Step>) -> Vec<Step> {
    let mut budget = 300;
    let started = std::time::Instant::now();
    let mut chunk = steps.len() / 2;
    while chunk >= 1 && budget > 0 && started.elapsed() < Duration::from_secs(180) {
        let mut start = 0;
        let mut progressed = false;
        while start < steps.len() && budget > 0 {
            let end = (start + chunk).min(steps.len());
            let mut candidate = steps.clone();
            candidate.drain(start..end);
            budget -= 1;
            if run(seed, stores, &candidate).is_err() {
                steps = candidate;
                progressed = true;
            } else {
                start = end;
            }
        }
        if !progressed {
            chunk /= 2;
        }
    }
    steps
}

fn check_seeds(first: u64) {
    let per_test = env_u64("VECTORGATE_MODEL_SEEDS").unwrap_or(30);
    let steps = env_u64("VECTORGATE_MODEL_STEPS").unwrap_or(60) as usize;
    let seeds: Vec<u64> = match env_u64("VECTORGATE_MODEL_SEED") {
        Some(seed) if first == 0 => vec![seed],
        Some(_) => Vec::new(),
        None => (first * 1_000_000..first * 1_000_000 + per_test).collect(),
    };
    for seed in seeds {
        let (stores, mut history) = history(seed, steps);
        // Debugging aid: keep only these step numbers of the history.
        if let Ok(keep) = std::env::var("VECTORGATE_MODEL_KEEP") {
            let keep: BTreeSet<usize> = keep
                .split(',')
                .filter_map(|k| k.trim().parse().ok())
                .collect();
            history = history
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep.contains(i))
                .map(|(_, s)| s)
                .collect();
        }
        if let Err(error) = run(seed, stores, &history) {
            let shrunk = shrink(seed, stores, history);
            let replay = run(seed, stores, &shrunk)
                .err()
                .unwrap_or_else(|| error.clone());
            let lines: Vec<String> = shrunk.iter().map(|s| format!("  {s:?}")).collect();
            panic!(
                "fault model broken, seed {seed} ({stores} stores): {error}\n\
                 shrunk history ({} steps) fails with: {replay}\n{}\n\
                 replay: VECTORGATE_MODEL_SEED={seed} cargo test -p vectorgate --test fault_model",
                shrunk.len(),
                lines.join("\n")
            );
        }
    }
}

#[test]
fn fault_model_seeds_a() {
    check_seeds(0);
}

#[test]
fn fault_model_seeds_b() {
    check_seeds(1);
}

#[test]
fn fault_model_seeds_c() {
    check_seeds(2);
}

#[test]
fn fault_model_seeds_d() {
    check_seeds(3);
}
