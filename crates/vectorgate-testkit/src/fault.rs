//! A fault-injecting wrapper around any store, for deterministic tests of
//! the failover manager.
//!
//! Faults are scripted against tokio's clock, so tests run under
//! `#[tokio::test(start_paused = true)]` and take no real time:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use vectorgate::ErrorKind;
//! # use vectorgate_testkit::fault::{Fault, FaultyStore};
//! # fn demo(inner: vectorgate::DynStore) {
//! let primary = FaultyStore::wrap(inner);
//! primary.set(Fault::Fail(ErrorKind::Unavailable));          // down now
//! primary.schedule(Duration::from_secs(10), Fault::None);    // back in 10 s
//! primary.fail_next(2, ErrorKind::Timeout);                  // two one-off errors
//! # }
//! ```

use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use vectorgate::{
    CountScope, DeleteSelector, DynStore, Error, ErrorKind, HealthReport, Hit, IndexSpec,
    RecallQuery, Record, Result, ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// What a wrapped store does to each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass every call through.
    None,
    /// Fail every call at once with an error of this kind.
    Fail(ErrorKind),
    /// Wait this long, then pass the call through (a slow database).
    Delay(Duration),
    /// Never answer (a hung database); only a timeout ends the call.
    Hang,
    /// Alternate: pass calls through for `up`, fail them (`Unavailable`)
    /// for `down`, starting now, forever.
    Flap {
        /// Healthy period.
        up: Duration,
        /// Failing period.
        down: Duration,
    },
}

/// Which calls faults apply to (see [`FaultyStore::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every method, `health` and `ensure_schema` included (default).
    All,
    /// `upsert` and `delete` only.
    Writes,
    /// `recall`, `count` and `scan` only.
    Reads,
    /// A store-wide refusal of writes (read-only after a switchover, disk
    /// full, privileges revoked): `upsert`, `delete`, `ensure_schema` and
    /// `health` (a real backend's health check sees it), reads pass.
    ReadOnly,
}

#[derive(Debug)]
struct Plan {
    target: Target,
    current: Fault,
    since: Instant,
    /// Future changes, by time; a BTreeMap keeps them ordered.
    scheduled: BTreeMap<(Instant, u64), Fault>,
    sequence: u64,
    one_off: Option<(u32, ErrorKind)>,
    /// Record-level refusal: an upsert carrying a record whose payload has
    /// this key is refused as invalid, and nothing of it is applied.
    refuse_key: Option<String>,
}

/// Counts of calls that reached the wrapper.
#[derive(Debug, Default)]
struct Counters {
    data: AtomicU64,
    health: AtomicU64,
    passed: AtomicU64,
}

/// Wraps a store and injects [`Fault`]s into every method, including
/// `health` and `ensure_schema`.
pub struct FaultyStore {
    inner: DynStore,
    plan: Mutex<Plan>,
    counters: Counters,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner.name())
            .field("plan", &*self.plan.lock())
            .finish()
    }
}

impl FaultyStore {
    /// Wraps `inner`, passing everything through until told otherwise.
    pub fn wrap(inner: DynStore) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            plan: Mutex::new(Plan {
                target: Target::All,
                current: Fault::None,
                since: Instant::now(),
                scheduled: BTreeMap::new(),
                sequence: 0,
                one_off: None,
                refuse_key: None,
            }),
            counters: Counters::default(),
        })
    }

    /// Applies `fault` from now on (scheduled changes still happen).
    pub fn set(&self, fault: Fault) {
        let mut plan = self.plan.lock();
        plan.current = fault;
        plan.since = Instant::now();
    }

    /// Applies `fault` once `after` has passed on tokio's clock.
    pub fn schedule(&self, after: Duration, fault: Fault) {
        let mut plan = self.plan.lock();
        plan.sequence += 1;
        let key = (Instant::now() + after, plan.sequence);
        plan.scheduled.insert(key, fault);
    }

    /// Restricts every fault to these calls; the others pass through.
    pub fn target(&self, target: Target) {
        self.plan.lock().target = target;
    }

    /// Record-level refusal, as a backend that cannot hold some value: an
    /// upsert with a record whose payload has key `key` fails with
    /// `InvalidInput` and applies nothing. `None` accepts everything again.
    pub fn refuse_payload_key(&self, key: Option<&str>) {
        self.plan.lock().refuse_key = key.map(str::to_owned);
    }

    /// The next `n` calls fail with `kind`, whatever else is set.
    pub fn fail_next(&self, n: u32, kind: ErrorKind) {
        self.plan.lock().one_off = Some((n, kind));
    }

    /// Data calls (everything but `health`) that reached the wrapper.
    pub fn data_calls(&self) -> u64 {
        self.counters.data.load(Ordering::SeqCst)
    }

    /// `health` calls that reached the wrapper.
    pub fn health_calls(&self) -> u64 {
        self.counters.health.load(Ordering::SeqCst)
    }

    /// Calls of any kind that were passed through to the inner store and returned.
    pub fn passed_calls(&self) -> u64 {
        self.counters.passed.load(Ordering::SeqCst)
    }

    /// The fault in force now.
    pub fn current(&self) -> Fault {
        self.decide(Instant::now(), Call::Schema)
    }

    fn decide(&self, now: Instant, call: Call) -> Fault {
        let mut plan = self.plan.lock();
        let applies = match plan.target {
            Target::All => true,
            Target::Writes => call == Call::Write,
            Target::Reads => call == Call::Read,
            Target::ReadOnly => call != Call::Read,
        };
        if !applies {
            return Fault::None;
        }
        while let Some(entry) = plan.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), fault) = entry.remove_entry();
            plan.current = fault;
            plan.since = at;
        }
        if let Some((left, kind)) = plan.one_off {
            plan.one_off = if left > 1 {
                Some((left - 1, kind))
            } else {
                None
            };
            if left > 0 {
                return Fault::Fail(kind);
            }
        }
        match plan.current {
            Fault::Flap { up, down } => {
                let period = (up + down).as_nanos().max(1);
                let phase = now.duration_since(plan.since).as_nanos() % period;
                if phase < up.as_nanos() {
                    Fault::None
                } else {
                    Fault::Fail(ErrorKind::Unavailable)
                }
            }
            other => other,
        }
    }

    async fn gate<T>(
        &self,
        kind: Call,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let counter = if kind == Call::Health {
            &self.counters.health
        } else {
            &self.counters.data
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let name = self.inner.name();
        match self.decide(Instant::now(), kind) {
            Fault::None | Fault::Flap { .. } => {}
            Fault::Fail(kind) => return Err(injected(name, kind)),
            Fault::Delay(delay) => tokio::time::sleep(delay).await,
            Fault::Hang => std::future::pending::<()>().await,
        }
        let result = call.await;
        self.counters.passed.fetch_add(1, Ordering::SeqCst);
        result
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Schema,
    Write,
    Read,
    Health,
}

fn injected(store: &str, kind: ErrorKind) -> Error {
    let message = "injected fault";
    match kind {
        ErrorKind::InvalidInput => Error::invalid("injected", message),
        ErrorKind::Conflict => Error::Conflict {
            field: "injected".into(),
            reason: message.into(),
        },
        ErrorKind::SchemaMismatch => Error::SchemaMismatch {
            store: store.to_owned(),
            expected: "injected".into(),
            found: "injected".into(),
        },
        ErrorKind::Unavailable => Error::unavailable(store, message),
        ErrorKind::Timeout => Error::timeout(store, message),
        ErrorKind::Internal => Error::internal(store, message),
    }
}

#[async_trait]
impl VectorStore for FaultyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        self.gate(Call::Schema, self.inner.ensure_schema(spec))
            .await
    }
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let refused = {
            let plan = self.plan.lock();
            plan.refuse_key.as_ref().and_then(|key| {
                records.iter().position(|r| {
                    r.payload
                        .as_ref()
                        .and_then(|p| p.as_object())
                        .is_some_and(|p| p.contains_key(key))
                })
            })
        };
        if let Some(i) = refused {
            return self
                .gate(Call::Write, async {
                    Err(Error::invalid(
                        format!("records[{i}].payload"),
                        "injected record-level refusal: this store cannot hold the value",
                    ))
                })
                .await;
        }
        self.gate(Call::Write, self.inner.upsert(records)).await
    }
    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        self.gate(Call::Read, self.inner.recall(query)).await
    }
    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        self.gate(Call::Write, self.inner.delete(selector)).await
    }
    async fn count(&self, scope: &CountScope) -> Result<u64> {
        self.gate(Call::Read, self.inner.count(scope)).await
    }
    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        self.gate(Call::Read, self.inner.scan(request)).await
    }
    async fn health(&self) -> Result<HealthReport> {
        self.gate(Call::Health, self.inner.health()).await
    }
}
