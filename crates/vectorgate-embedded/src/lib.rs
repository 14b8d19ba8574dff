//! vectorgate's default backend: a vector store in one SQLite file, with
//! exact SIMD search in memory. No server to run, so it is always there to
//! fail over to.
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> vectorgate::Result<()> {
//! use vectorgate::{IndexSpec, Metric, VectorStore};
//! use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
//!
//! let store = EmbeddedStore::open(EmbeddedConfig::new("local", dir.join("vectors.db"))).await?;
//! store.ensure_schema(&IndexSpec::new(768, Metric::Cosine)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//! - **SQLite is the source of truth.** WAL mode with `synchronous=FULL`:
//!   when `upsert` or `delete` returns, the change is in the fsynced log and
//!   survives a crash of the process or the machine.
//! - **Memory is a derived index** (module `index`), rebuilt from the file by
//!   `ensure_schema` and updated after each commit succeeds, while the
//!   writer lock is still held, so memory applies changes in commit order.
//!   A caller that gives up on an `upsert` (timeout, dropped future) does
//!   not split them: the blocking task commits and updates memory together.
//! - **Ids belong to their team.** Ids are unique across teams and a record
//!   never changes team: an upsert reads the owners of its ids inside its
//!   write transaction (the one writer, `BEGIN IMMEDIATE`), and if another
//!   team holds one it rolls back and fails with `Error::Conflict` on
//!   `records[i].id`, the first such record of the request; nothing is
//!   written and memory is not touched. Deletes, recall, count and scan
//!   filter by team.
//! - **Search is exact**, scoped first and scored second: rows are grouped
//!   per `(team, dataset)` with contiguous vectors, so a recall reads only
//!   the datasets it names, through SimSIMD kernels (module `kernels`) into a
//!   top-k heap. Payloads are read from SQLite for the returned hits only.
//! - **Nothing blocks the async runtime**: every SQLite call and every search
//!   runs in `tokio::task::spawn_blocking`. Writes share one connection
//!   behind a mutex; reads (count, scan, payloads, health) use a small pool
//!   of reader connections, which WAL lets run during a write.

mod errors;
mod index;
mod kernels;
mod schema;
mod sql;

use crate::errors::DbError;
use crate::index::MemIndex;
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, TransactionBehavior};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, Error, HealthReport, Hit, IndexSpec, RecallQuery, Record, Result,
    ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// Reader connections per store: enough for the two cores vectorgate
/// targets to read concurrently; more would only hold file descriptors.
const READERS: usize = 2;

/// Where and under which name an [`EmbeddedStore`] lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Instance name, as reported by [`VectorStore::name`].
    pub name: String,
    /// The SQLite file. Its parent directory is created if missing; SQLite
    /// keeps `-wal` and `-shm` files beside it.
    pub path: PathBuf,
}

impl EmbeddedConfig {
    /// A configuration for the store `name` in the SQLite file `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            name: name.into(),
            path: path.into(),
        }
    }
}

/// The embedded vector store. Cheap to share behind an `Arc`; every method
/// takes `&self` and may run concurrently with the others.
///
/// Call [`VectorStore::ensure_schema`] once after [`EmbeddedStore::open`]:
/// it creates or checks the tables and loads the search index; every other
/// method fails with [`Error::Internal`] until it has succeeded.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    path: PathBuf,
    /// The only connection that writes. Holding this lock is what orders
    /// commits, and with them the updates of memory.
    writer: Mutex<Connection>,
    readers: Readers,
    /// Set once by the first successful `ensure_schema`.
    ready: RwLock<Option<Arc<Ready>>>,
}

/// What `ensure_schema` established: the spec the file holds and the index
/// built from it.
struct Ready {
    spec: IndexSpec,
    index: RwLock<MemIndex>,
}

/// Reader connections, handed out to whichever is free.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        for conn in &self.conns {
            if let Some(conn) = conn.try_lock() {
                return f(&conn);
            }
        }
        // All busy: queue on one, round robin.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        f(&self.conns[i].lock())
    }
}

/// What the blocking part of `ensure_schema` found.
enum Loaded {
    /// The index is ready (loaded now, or by a concurrent call) for this spec.
    Ready(IndexSpec),
    /// The file holds another spec.
    Mismatch(IndexSpec),
}

impl EmbeddedStore {
    /// Opens (creating if needed) the SQLite file and its parent directory.
    /// Does not read the data yet: [`VectorStore::ensure_schema`] does.
    pub async fn open(config: EmbeddedConfig) -> Result<EmbeddedStore> {
        let name = config.name.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Inner, DbError> {
            if let Some(parent) = config.path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            // The writer first: it switches the file to WAL mode.
            let writer = schema::open_connection(&config.path, true)?;
            let conns = (0..READERS)
                .map(|_| schema::open_connection(&config.path, false).map(Mutex::new))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Inner {
                name: config.name,
                path: config.path,
                writer: Mutex::new(writer),
                readers: Readers {
                    conns,
                    next: AtomicUsize::new(0),
                },
                ready: RwLock::new(None),
            })
        })
        .await;
        match opened {
            Ok(Ok(inner)) => Ok(EmbeddedStore {
                inner: Arc::new(inner),
            }),
            Ok(Err(e)) => Err(e.into_error(&name)),
            Err(e) => Err(Error::internal(name, format!("open task failed: {e}"))),
        }
    }

    fn ready(&self) -> Result<Arc<Ready>> {
        self.inner.ready.read().clone().ok_or_else(|| {
            Error::internal(
                &self.inner.name,
                "call ensure_schema first: the schema is not checked and the index not loaded",
            )
        })
    }

    fn mismatch(&self, expected: &IndexSpec, found: &IndexSpec) -> Error {
        Error::SchemaMismatch {
            store: self.inner.name.clone(),
            expected: expected.describe(),
            found: found.describe(),
        }
    }

    /// Runs `f` on the blocking pool and maps its failure to this store.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, DbError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result.map_err(|e| e.into_error(&self.inner.name)),
            Err(e) => Err(Error::internal(
                &self.inner.name,
                format!("blocking task failed: {e}"),
            )),
        }
    }
}

/// Same dimension and metric: the only parts of a spec this store uses
/// (the HNSW parameters do not apply to exact search).
fn same_index(a: &IndexSpec, b: &IndexSpec) -> bool {
    a.dim == b.dim && a.metric == b.metric
}

fn dim_of(spec: &IndexSpec) -> usize {
    // u32 -> usize cannot truncate on the 32/64-bit targets Rust supports.
    spec.dim as usize
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        validate::check_spec(spec)?;
        if let Some(ready) = self.inner.ready.read().clone() {
            return if same_index(&ready.spec, spec) {
                Ok(())
            } else {
                Err(self.mismatch(spec, &ready.spec))
            };
        }
        let wanted = *spec;
        let loaded = self
            .blocking(move |inner| {
                let mut conn = inner.writer.lock();
                // A concurrent call may have loaded while we waited.
                if let Some(ready) = inner.ready.read().as_ref() {
                    return Ok(Loaded::Ready(ready.spec));
                }
                if let Some(found) = schema::ensure(&mut conn, &wanted)? {
                    return Ok(Loaded::Mismatch(found));
                }
                let started = Instant::now();
                let mut index = MemIndex::new(dim_of(&wanted), wanted.metric);
                let rows = sql::for_each_row(&conn, dim_of(&wanted), |row| {
                    index
                        .upsert(
                            row.id,
                            row.team_id,
                            row.dataset_id,
                            row.collection_id,
                            row.vector,
                        )
                        .map_err(DbError::Corrupt)
                })?;
                index.shrink_to_fit();
                tracing::info!(
                    store = %inner.name,
                    path = %inner.path.display(),
                    rows,
                    buckets = index.bucket_count(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "embedded index loaded"
                );
                *inner.ready.write() = Some(Arc::new(Ready {
                    spec: wanted,
                    index: RwLock::new(index),
                }));
                Ok(Loaded::Ready(wanted))
            })
            .await?;
        match loaded {
            Loaded::Ready(found) if same_index(&found, spec) => Ok(()),
            Loaded::Ready(found) | Loaded::Mismatch(found) => Err(self.mismatch(spec, &found)),
        }
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let ready = self.ready()?;
        let prepared = validate::prepare_upsert(&ready.spec, records, validate::now_ms())?;
        let ids = prepared.ids;
        // Owned for the blocking task; a copy is cheap next to the fsync.
        let rows = prepared.records.into_owned();
        let taken = self
            .blocking(move |inner| {
                let mut conn = inner.writer.lock();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Check and write in one write transaction: no other writer,
                // in this process or another, runs in between.
                let taken = sql::taken_ids(&tx, &rows)?;
                if !taken.is_empty() {
                    // Dropping the transaction rolls it back; memory is
                    // untouched.
                    return Ok(taken);
                }
                sql::upsert(&tx, &rows)?;
                tx.commit()?;
                // Committed and durable; still under the writer lock, so memory
                // sees writes in commit order.
                let mut index = ready.index.write();
                for r in &rows {
                    index
                        .upsert(
                            &r.id,
                            &r.team_id,
                            &r.dataset_id,
                            &r.collection_id,
                            &r.vector,
                        )
                        .map_err(DbError::Corrupt)?;
                }
                Ok(taken)
            })
            .await?;
        // The first record of the request whose id another team holds.
        if let Some(i) = ids.iter().position(|id| taken.contains(id)) {
            return Err(Error::id_taken(format!("records[{i}].id"), &ids[i]));
        }
        Ok(UpsertOutcome { ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let ready = self.ready()?;
        let filter = validate::check_recall(&ready.spec, query)?;
        if filter == CollectionFilter::Nothing {
            return Ok(Vec::new());
        }
        let team = query.team_id.clone();
        let datasets = query.dataset_ids.clone();
        let vector = query.vector.clone();
        let limit = query.limit as usize;
        let with_payload = query.with_payload;
        self.blocking(move |inner| {
            let found = ready
                .index
                .read()
                .search(&vector, &team, &datasets, &filter, limit);
            let hit = |f: index::Found, payload| Hit {
                id: f.id.to_string(),
                dataset_id: f.dataset_id.to_string(),
                collection_id: f.collection_id.to_string(),
                score: f.score,
                payload,
            };
            if !with_payload || found.is_empty() {
                return Ok(found.into_iter().map(|f| hit(f, None)).collect());
            }
            let ids: Vec<String> = found.iter().map(|f| f.id.to_string()).collect();
            let mut payloads = inner.readers.with(|c| sql::payloads(c, &team, &ids))?;
            // A hit deleted (or moved to another team) since the search has
            // no row any more: leave it out rather than return a ghost.
            Ok(found
                .into_iter()
                .filter_map(|f| {
                    let payload = payloads.remove(&*f.id)?;
                    Some(hit(f, payload))
                })
                .collect())
        })
        .await
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        validate::check_delete(selector)?;
        let ready = self.ready()?;
        let selector = selector.clone();
        self.blocking(move |inner| {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = sql::delete(&tx, &selector)?;
            tx.commit()?;
            let mut index = ready.index.write();
            for id in &deleted {
                index.remove(id);
            }
            Ok(deleted.len() as u64)
        })
        .await
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        validate::check_count(scope)?;
        self.ready()?;
        let scope = scope.clone();
        self.blocking(move |inner| inner.readers.with(|c| sql::count(c, &scope)))
            .await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        validate::check_scan(request)?;
        let dim = dim_of(&self.ready()?.spec);
        let request = request.clone();
        self.blocking(move |inner| {
            let records = inner.readers.with(|c| sql::scan(c, &request, dim))?;
            let full = records.len() == request.limit as usize;
            let next_cursor = if full {
                records.last().map(|r| r.id.clone())
            } else {
                None
            };
            Ok(ScanPage {
                records,
                next_cursor,
            })
        })
        .await
    }

    async fn health(&self) -> Result<HealthReport> {
        let ready = self.ready()?;
        let started = Instant::now();
        let version: String = self
            .blocking(|inner| {
                inner.readers.with(|c| {
                    // Reads the meta row, so the file itself is touched, not
                    // just the library.
                    let version = c.query_row(
                        "SELECT sqlite_version() FROM vectorgate_meta WHERE singleton = 1",
                        [],
                        |row| row.get(0),
                    )?;
                    Ok(version)
                })
            })
            .await?;
        let latency = started.elapsed();
        let (records, buckets) = {
            let index = ready.index.read();
            (index.len(), index.bucket_count())
        };
        Ok(HealthReport {
            latency,
            detail: format!(
                "sqlite {version}, {}, {records} records in {buckets} (team, dataset) buckets \
                 in memory, file {}",
                ready.spec.describe(),
                self.inner.path.display()
            ),
        })
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ready = self.inner.ready.read().clone();
        f.debug_struct("EmbeddedStore")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .field("spec", &ready.as_ref().map(|r| r.spec))
            .field("records", &ready.as_ref().map(|r| r.index.read().len()))
            .finish()
    }
}
