//! vectorgate backend for PostgreSQL with the pgvector extension.
//!
//! ```ignore
//! let store = PgStore::connect(PgConfig::new("primary", "postgres://u:p@127.0.0.1/db")).await?;
//! store.ensure_schema(&IndexSpec::new(768, Metric::Cosine)).await?;
//! ```
//!
//! # Design
//! - **One table** per store (`PgConfig::table`): `id TEXT COLLATE "C"
//!   PRIMARY KEY` (byte order, so `scan`'s `ORDER BY id` walks the primary
//!   key), the three scope columns `VARCHAR(64)`, `vector VECTOR(dim)`,
//!   `created_at_ms BIGINT`, `payload JSONB`; an HNSW index with the metric's
//!   operator class and the spec's `m`/`ef_construction`, a btree on
//!   `(team_id, dataset_id, collection_id)` and one on `created_at_ms`. The
//!   spec a table was made for is recorded in its `COMMENT`
//!   (`vectorgate {"dim":..,"metric":..}`, so it goes away with the table);
//!   a table without one is judged by its column type and index.
//! - **Lazy pool**: [`PgStore::connect`] opens no connection, so a service
//!   starts while PostgreSQL is down; `ensure_schema` (which the failover
//!   manager retries) is the first round trip.
//! - **Bound parameters only**: the table name is validated at configuration
//!   time and is the only name in SQL text; see [`mod@sql`].
//! - **Vectors travel in pgvector's binary format** through the `pgvector`
//!   crate's `Vector` (its `sqlx` feature). pgvector 0.4.2 accepts
//!   `sqlx >=0.8, <0.10`, so it uses the workspace's one sqlx 0.9 (`cargo
//!   tree -d -p vectorgate-pg` shows a single sqlx). Binary is exact (scan
//!   returns vectors bit for bit) and avoids printing and parsing floats;
//!   `Vec<Vector>` binds as `vector[]`, which is what lets an upsert batch be
//!   one `INSERT ... SELECT FROM UNNEST(...)` statement.
//! - **Ids belong to their team.** Ids are unique across teams and a record
//!   never changes team. An upsert is one transaction: `INSERT ... ON
//!   CONFLICT (id) DO UPDATE SET ... WHERE <table>.team_id =
//!   EXCLUDED.team_id RETURNING id` leaves a row another team holds as it
//!   is (locked, not returned); when fewer ids come back than were sent, the
//!   owners of the missing ones are read in the same transaction, it is
//!   rolled back, and the call fails with [`Error::Conflict`] on
//!   `records[i].id` (the first such record of the request): nothing of it
//!   is written. Rows are written in id order, so concurrent upserts lock in
//!   one order and do not deadlock each other. Every delete, recall and
//!   team-scoped count or scan filters by `team_id` in SQL.
//! - **Payloads travel as text** cast to `jsonb` (and back with
//!   `payload::text`): sqlx's `json` feature cannot be enabled in this
//!   workspace (its weak `sqlx-sqlite?/json` makes cargo's resolver pull
//!   sqlx-sqlite's `libsqlite3-sys` into conflict with rusqlite's).
//! - **Recall** runs in a transaction that sets `hnsw.ef_search`
//!   ([`validate::effective_ef_search`]) and, on pgvector >= 0.8,
//!   `hnsw.iterative_scan = relaxed_order` (so a selective filter still fills
//!   `limit`) with `set_config(.., true)` (SET cannot take parameters), then
//!   re-sorts the rows by score.
//! - **Errors**: see [`mod@error`] for the mapping. A pool timeout is
//!   diagnosed: with every connection busy it is `Timeout` (starvation);
//!   when the pool had room — it could not open a connection — one direct
//!   connection attempt (bounded by `connect_timeout_ms`) tells a down
//!   server (`Unavailable`, with the reason, e.g. connection refused) from a
//!   slow one (`Timeout`).
//! - **Health** ([`VectorStore::health`]) is one round trip ([`sql::HEALTH`])
//!   that checks what serving needs, not just a live server: the table
//!   exists (`to_regclass`, once `ensure_schema` made it), the role holds
//!   SELECT, INSERT, UPDATE and DELETE on it (`has_table_privilege`, each on
//!   its own), and the session takes writes (`transaction_read_only` off,
//!   `pg_is_in_recovery()` false). Each problem is `Unavailable` naming the
//!   fix, so the manager fails over before callers see errors.
//!   `default_transaction_read_only` set with `ALTER SYSTEM` reaches
//!   existing sessions at `pg_reload_conf()`, so the next probe sees it.
//! - **Abandoned statements.** The manager stops waiting for an attempt
//!   after its `attempt_timeout_ms` (default 1000) and drops the call; the
//!   statement goes on in the server, bounded by `statement_timeout`
//!   (`statement_timeout_ms`, default 5000 = the manager's default
//!   `deadline_ms`: no statement outlives the request that started it by
//!   more than the time it waited to start). It is not lower because an
//!   upsert batch (a caller's, or a replication part) is one statement that
//!   updates the HNSW index: 1000 x 768-d records take ~4.5 s of server
//!   time on a 2-core machine. sqlx does not reuse a connection whose
//!   call was dropped before it answered: on its way back to the pool it is
//!   pinged, which waits for the abandoned statement (or its timeout) and
//!   rolls back a transaction left open, and it is closed if that fails. So
//!   abandoned work holds a pool slot until `statement_timeout` at most.
//! - **Metrics** (label `store`): gauges `vectorgate_pg_pool_size`,
//!   `vectorgate_pg_pool_idle`, `vectorgate_pg_pool_waiting` (calls waiting
//!   for a connection), `vectorgate_pg_pool_max`, and the counter
//!   `vectorgate_pg_pool_timeouts_total`. Starvation shows as `size == max`
//!   with `waiting > 0`, then timeouts.

pub mod config;
pub mod error;
pub mod sql;

pub use config::{DEFAULT_TABLE, PgConfig};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use pgvector::Vector;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, Error, HealthReport, Hit, IndexSpec, Metric, RecallQuery, Record,
    Result, ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

use crate::error::{map_sqlx, missing_extension};
use crate::sql::{FilterShape, Statements, Where};

/// How long a diagnosis of a failed acquire is reused.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// pgvector's HNSW index on `vector` columns stops at 2000 dimensions.
pub const MAX_HNSW_DIM: u32 = 2000;

/// First key of every advisory lock this crate takes (`'vg'`); the second is
/// 0 for `CREATE EXTENSION` and `hashtext(table)` for a table's DDL.
const LOCK_CLASS: i32 = 0x7667;

/// A [`VectorStore`] on one PostgreSQL table. Cheap to clone (shared pool).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: PgConfig,
    pool: PgPool,
    connect_options: PgConnectOptions,
    /// Calls inside `pool.acquire()` right now.
    waiting: AtomicUsize,
    /// Set by each successful `ensure_schema`.
    schema: RwLock<Option<Arc<Schema>>>,
    /// Client-side bound on one call (acquire + statement + 1 s).
    call_deadline: Duration,
    /// Client-side bound on `ensure_schema`.
    schema_deadline: Duration,
    /// The last diagnosis of a failed acquire, reused for a second so that
    /// callers piling up on a down server do not each probe it.
    last_probe: Mutex<Option<(Instant, Error)>>,
}

/// What `ensure_schema` established.
#[derive(Debug)]
struct Schema {
    spec: IndexSpec,
    statements: Statements,
    /// pgvector >= 0.8: `hnsw.iterative_scan` exists.
    iterative_scan: bool,
    pgvector_version: String,
}

/// A snapshot of the connection pool, as the gauges report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle or in use).
    pub size: u32,
    /// Open connections nobody uses.
    pub idle: u32,
    /// Calls waiting for a connection.
    pub waiting: u32,
    /// `pool_max_connections`.
    pub max: u32,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("name", &self.inner.config.name)
            .field("table", &self.inner.config.table)
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
}

/// Decrements the waiting count when an acquire ends, however it ends.
struct Waiting<'a>(&'a PgStore);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.publish_pool_gauges();
    }
}

impl PgStore {
    /// Checks `config` and builds a lazy pool: no connection is opened until
    /// the first call, so this succeeds while PostgreSQL is down. Call
    /// [`VectorStore::ensure_schema`] before anything else.
    pub async fn connect(config: PgConfig) -> Result<PgStore> {
        config.validate()?;
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err(Error::invalid(
                "url",
                format!(
                    "must start with postgres:// or postgresql://, got {}",
                    config::redact_url(&config.url)
                ),
            ));
        }
        let mut connect_options: PgConnectOptions = config.url.parse().map_err(|e| {
            Error::invalid(
                "url",
                format!(
                    "is not a PostgreSQL URL ({e}): {}",
                    config::redact_url(&config.url)
                ),
            )
        })?;
        connect_options =
            connect_options.options([("statement_timeout", config.statement_timeout_ms)]);
        if connect_options.get_application_name().is_none() {
            connect_options = connect_options.application_name("vectorgate");
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_max_connections)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(connect_options.clone());
        describe_metrics();
        let call_deadline =
            config.acquire_timeout() + config.statement_timeout() + Duration::from_secs(1);
        let schema_deadline = config.acquire_timeout()
            + config
                .statement_timeout()
                .saturating_mul(12)
                .max(Duration::from_secs(60));
        let store = PgStore {
            inner: Arc::new(Inner {
                config,
                pool,
                connect_options,
                waiting: AtomicUsize::new(0),
                schema: RwLock::new(None),
                call_deadline,
                schema_deadline,
                last_probe: Mutex::new(None),
            }),
        };
        store.publish_pool_gauges();
        Ok(store)
    }

    /// The configuration this store was built from.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// The table this store uses.
    pub fn table(&self) -> &str {
        &self.inner.config.table
    }

    /// The pool right now (also published as gauges on every acquire).
    pub fn pool_stats(&self) -> PoolStats {
        let inner = &self.inner;
        PoolStats {
            size: inner.pool.size(),
            idle: u32::try_from(inner.pool.num_idle()).unwrap_or(u32::MAX),
            waiting: u32::try_from(inner.waiting.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            max: inner.config.pool_max_connections,
        }
    }

    /// The pgvector version `ensure_schema` found, once it succeeded.
    pub fn pgvector_version(&self) -> Option<String> {
        self.inner
            .schema
            .read()
            .as_ref()
            .map(|s| s.pgvector_version.clone())
    }

    /// Drops the table (and with it its indexes and recorded spec). After
    /// this the store needs `ensure_schema` again. Destructive: for tests
    /// and operators, never called by the library itself.
    pub async fn drop_table(&self) -> Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table());
        self.bounded("drop_table", async {
            let mut conn = self.acquire().await?;
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .map_err(|e| self.map(e))?;
            Ok(())
        })
        .await?;
        *self.inner.schema.write() = None;
        Ok(())
    }

    /// Closes the pool: in-use connections close when released.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn name_str(&self) -> &str {
        &self.inner.config.name
    }

    fn map(&self, err: sqlx::Error) -> Error {
        map_sqlx(&self.inner.config.name, &self.inner.config.table, err)
    }

    fn schema(&self) -> Result<Arc<Schema>> {
        self.inner.schema.read().clone().ok_or_else(|| {
            Error::internal(
                self.name_str(),
                "call ensure_schema first: the table is not checked yet",
            )
        })
    }

    fn publish_pool_gauges(&self) {
        let stats = self.pool_stats();
        let store = self.inner.config.name.clone();
        metrics::gauge!("vectorgate_pg_pool_size", "store" => store.clone()).set(stats.size);
        metrics::gauge!("vectorgate_pg_pool_idle", "store" => store.clone()).set(stats.idle);
        metrics::gauge!("vectorgate_pg_pool_waiting", "store" => store.clone()).set(stats.waiting);
        metrics::gauge!("vectorgate_pg_pool_max", "store" => store).set(stats.max);
    }

    /// A pooled connection, counting the wait; see the crate docs for how a
    /// timeout is diagnosed.
    async fn acquire(&self) -> Result<PoolConnection<Postgres>> {
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(self);
        self.publish_pool_gauges();
        let acquired = self.inner.pool.acquire().await;
        drop(waiting);
        match acquired {
            Ok(conn) => Ok(conn),
            Err(sqlx::Error::PoolTimedOut) => Err(self.diagnose_pool_timeout().await),
            Err(e) => Err(self.map(e)),
        }
    }

    async fn diagnose_pool_timeout(&self) -> Error {
        let store = self.name_str();
        metrics::counter!("vectorgate_pg_pool_timeouts_total", "store" => store.to_owned())
            .increment(1);
        let stats = self.pool_stats();
        let waited = self.inner.config.acquire_timeout_ms;
        if stats.size >= stats.max {
            tracing::warn!(store, ?stats, "connection pool exhausted");
            return Error::timeout(
                store,
                format!(
                    "no pooled connection free within {waited} ms: all {} connections busy, \
                     {} calls waiting (pool starvation: raise pool_max_connections or look for \
                     slow queries)",
                    stats.max, stats.waiting
                ),
            );
        }
        // The pool had room, so it was failing to connect: find out why.
        if let Some((at, diagnosis)) = &*self.inner.last_probe.lock()
            && at.elapsed() < PROBE_REUSE
        {
            return diagnosis.clone();
        }
        let diagnosis = self.probe_connect().await;
        *self.inner.last_probe.lock() = Some((Instant::now(), diagnosis.clone()));
        diagnosis
    }

    /// One direct connection attempt, bounded by `connect_timeout_ms`, after
    /// an acquire timed out while the pool had room.
    async fn probe_connect(&self) -> Error {
        let store = self.name_str();
        let waited = self.inner.config.acquire_timeout_ms;
        let connect_timeout = self.inner.config.connect_timeout();
        let probe = tokio::time::timeout(
            connect_timeout,
            PgConnection::connect_with(&self.inner.connect_options),
        )
        .await;
        match probe {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Error::timeout(
                    store,
                    format!(
                        "could not get a connection within {waited} ms (the server accepts \
                         connections again now)"
                    ),
                )
            }
            Ok(Err(e)) => match self.map(e) {
                Error::Unavailable { message, .. } => {
                    Error::unavailable(store, format!("cannot connect to PostgreSQL: {message}"))
                }
                Error::Timeout { message, .. } => Error::timeout(
                    store,
                    format!("connecting to PostgreSQL timed out: {message}"),
                ),
                // Auth, missing database...: still a failure to connect.
                other => {
                    Error::unavailable(store, format!("cannot connect to PostgreSQL: {other}"))
                }
            },
            Err(_) => Error::timeout(
                store,
                format!(
                    "could not connect within {waited} ms, and a direct connection attempt got \
                     no answer within {} ms",
                    connect_timeout.as_millis()
                ),
            ),
        }
    }

    /// Bounds a call on the client side, so a frozen server or network
    /// cannot hang it past what the timeouts promise.
    async fn bounded<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let deadline = self.inner.call_deadline;
        match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(
                self.name_str(),
                format!("{what} got no answer within {} ms", deadline.as_millis()),
            )),
        }
    }

    async fn ensure_schema_in_db(&self, spec: &IndexSpec) -> Result<Schema> {
        let store = self.name_str();
        let table = self.table();
        let mut conn = self.acquire().await?;
        let mut tx = conn.begin().await.map_err(|e| self.map(e))?;
        // DDL may legitimately take long (an HNSW build over existing rows);
        // waiting for another caller's locks may not.
        sqlx::query(
            "SELECT set_config('statement_timeout', '0', true), \
             set_config('lock_timeout', $1, true)",
        )
        .bind(self.inner.config.statement_timeout_ms.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.map(e))?;

        const EXT_VERSION: &str =
            "SELECT extversion::text FROM pg_extension WHERE extname = 'vector'";
        let mut version: Option<String> = sqlx::query_scalar(EXT_VERSION)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.map(e))?;
        if version.is_none() {
            sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
                .bind(LOCK_CLASS)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.map(e))?;
            if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
                .execute(&mut *tx)
                .await
            {
                let what = format!("CREATE EXTENSION vector failed: {}", error::describe(&e));
                // The role may not create it (42501): that needs a superuser,
                // not a retry.
                let denied = error::sqlstate(&e).as_deref() == Some("42501");
                let mapped = self.map(e);
                return Err(if mapped.is_retriable() && !denied {
                    mapped
                } else {
                    missing_extension(store, &what)
                });
            }
            version = sqlx::query_scalar(EXT_VERSION)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.map(e))?;
        }
        let Some(version) = version else {
            return Err(missing_extension(
                store,
                "CREATE EXTENSION vector left no extension",
            ));
        };
        let parsed = parse_version(&version);
        if parsed < (0, 5, 0) {
            return Err(Error::internal(
                store,
                format!(
                    "pgvector {version} has no HNSW index: install pgvector 0.5 or later (0.8+ \
                     for iterative index scans) and run `ALTER EXTENSION vector UPDATE;`"
                ),
            ));
        }

        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(table)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.map(e))?;
        let existing = sqlx::query(
            "SELECT obj_description(c.oid, 'pg_class') AS comment, \
             (SELECT a.atttypmod FROM pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attname = 'vector' AND NOT a.attisdropped) AS typmod, \
             (SELECT opc.opcname::text FROM pg_index i \
              JOIN pg_class ic ON ic.oid = i.indexrelid \
              JOIN pg_am am ON am.oid = ic.relam \
              JOIN pg_opclass opc ON opc.oid = i.indclass[0] \
              WHERE i.indrelid = c.oid AND am.amname = 'hnsw' \
              ORDER BY ic.relname LIMIT 1) AS opclass \
             FROM pg_class c \
             WHERE c.relname = $1 \
               AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
        )
        .bind(table)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.map(e))?;

        let mut needs_comment = true;
        if let Some(row) = existing {
            let comment: Option<String> = row.try_get("comment").map_err(|e| self.map(e))?;
            let typmod: Option<i32> = row.try_get("typmod").map_err(|e| self.map(e))?;
            let opclass: Option<String> = row.try_get("opclass").map_err(|e| self.map(e))?;
            let (dim, metric) = match comment.as_deref().and_then(sql::parse_spec_comment) {
                Some((dim, metric)) => {
                    needs_comment = false;
                    (Some(dim), Some(metric))
                }
                None => (
                    typmod
                        .and_then(|t| u32::try_from(t).ok())
                        .filter(|d| *d > 0),
                    opclass.as_deref().and_then(sql::metric_of_opclass),
                ),
            };
            if dim.is_some_and(|d| d != spec.dim) || metric.is_some_and(|m| m != spec.metric) {
                let found = match (dim, metric) {
                    (Some(d), Some(m)) => IndexSpec::new(d, m).describe(),
                    (Some(d), None) => format!("dim {d}, metric unknown"),
                    (None, Some(m)) => format!("dim unknown, metric {m}"),
                    (None, None) => "an unknown spec".to_owned(),
                };
                return Err(Error::SchemaMismatch {
                    store: store.to_owned(),
                    expected: spec.describe(),
                    found: format!("{found} (table {table})"),
                });
            }
        }
        for ddl in sql::create_statements(table, spec) {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.map(e))?;
        }
        if needs_comment {
            // COMMENT takes no parameters; the text is ours (numbers and a
            // metric name), quoted all the same.
            let comment = format!(
                "COMMENT ON TABLE {table} IS {}",
                sql::literal(&sql::spec_comment(spec))
            );
            sqlx::query(AssertSqlSafe(comment))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.map(e))?;
        }
        tx.commit().await.map_err(|e| self.map(e))?;
        Ok(Schema {
            spec: *spec,
            statements: Statements::new(table, spec.metric),
            iterative_scan: parsed >= (0, 8, 0),
            pgvector_version: version,
        })
    }

    async fn recall_in_db(
        &self,
        schema: &Schema,
        query: &RecallQuery,
        shape: FilterShape,
        collections: Option<Vec<String>>,
    ) -> Result<Vec<Hit>> {
        let ef_search = validate::effective_ef_search(&schema.spec, query).to_string();
        let mut conn = self.acquire().await?;
        let mut tx = conn.begin().await.map_err(|e| self.map(e))?;
        let settings = if schema.iterative_scan {
            "SELECT set_config('hnsw.ef_search', $1, true), \
             set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        } else {
            "SELECT set_config('hnsw.ef_search', $1, true)"
        };
        sqlx::query(settings)
            .bind(ef_search)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.map(e))?;
        let mut statement = sqlx::query(AssertSqlSafe(
            schema.statements.recall(shape, query.with_payload),
        ))
        .bind(Vector::from(query.vector.clone()))
        .bind(&query.team_id)
        .bind(&query.dataset_ids);
        if let Some(collections) = collections {
            statement = statement.bind(collections);
        }
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.map(e))?;
        tx.commit().await.map_err(|e| self.map(e))?;
        drop(conn);

        let metric = schema.spec.metric;
        let mut hits = rows
            .iter()
            .map(|row| self.hit(row, metric))
            .collect::<Result<Vec<Hit>>>()?;
        // relaxed_order may return rows slightly out of order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }

    fn serving_health(&self, row: &PgRow) -> Result<sql::ServingHealth> {
        Ok(sql::ServingHealth {
            version: row.try_get("version").map_err(|e| self.map(e))?,
            role: row.try_get("role").map_err(|e| self.map(e))?,
            table_exists: row.try_get("table_exists").map_err(|e| self.map(e))?,
            missing_privileges: row.try_get("missing_privileges").map_err(|e| self.map(e))?,
            read_only: row.try_get("read_only").map_err(|e| self.map(e))?,
            in_recovery: row.try_get("in_recovery").map_err(|e| self.map(e))?,
        })
    }

    fn hit(&self, row: &PgRow, metric: Metric) -> Result<Hit> {
        let distance: f64 = row.try_get("distance").map_err(|e| self.map(e))?;
        Ok(Hit {
            id: row.try_get("id").map_err(|e| self.map(e))?,
            dataset_id: row.try_get("dataset_id").map_err(|e| self.map(e))?,
            collection_id: row.try_get("collection_id").map_err(|e| self.map(e))?,
            score: sql::score(metric, distance),
            payload: self.payload(row)?,
        })
    }

    fn payload(&self, row: &PgRow) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = row.try_get("payload").map_err(|e| self.map(e))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                Error::internal(self.name_str(), format!("stored payload is not JSON: {e}"))
            })
        })
        .transpose()
    }
}

fn describe_metrics() {
    metrics::describe_gauge!(
        "vectorgate_pg_pool_size",
        "Open PostgreSQL connections of the store's pool (idle or in use)."
    );
    metrics::describe_gauge!(
        "vectorgate_pg_pool_idle",
        "Idle PostgreSQL connections of the store's pool."
    );
    metrics::describe_gauge!(
        "vectorgate_pg_pool_waiting",
        "Calls waiting for a PostgreSQL connection from the store's pool."
    );
    metrics::describe_gauge!(
        "vectorgate_pg_pool_max",
        "pool_max_connections of the store."
    );
    metrics::describe_counter!(
        "vectorgate_pg_pool_timeouts_total",
        "Calls that got no PostgreSQL connection within acquire_timeout_ms."
    );
}

/// `0.8.0` → (0, 8, 0); missing or odd parts count as 0.
fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text
        .split(['.', '-'])
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[async_trait]
impl VectorStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn name(&self) -> &str {
        self.name_str()
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        validate::check_spec(spec)?;
        if spec.dim > MAX_HNSW_DIM {
            return Err(Error::invalid(
                "dim",
                format!(
                    "is {}, pgvector's HNSW index supports at most {MAX_HNSW_DIM} dimensions",
                    spec.dim
                ),
            ));
        }
        // A longer client-side bound than other calls: the server-side
        // statement_timeout is lifted for the DDL (lock_timeout bounds the
        // waits), and an index build over existing rows may take its time.
        let deadline = self.inner.schema_deadline;
        let schema = tokio::time::timeout(deadline, self.ensure_schema_in_db(spec))
            .await
            .map_err(|_| {
                Error::timeout(
                    self.name_str(),
                    format!(
                        "ensure_schema got no answer within {} ms",
                        deadline.as_millis()
                    ),
                )
            })??;
        *self.inner.schema.write() = Some(Arc::new(schema));
        Ok(())
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let schema = self.schema()?;
        let prepared = validate::prepare_upsert(&schema.spec, records, validate::now_ms())?;
        let n = prepared.records.len();
        let mut ids = Vec::with_capacity(n);
        let mut teams = Vec::with_capacity(n);
        let mut datasets = Vec::with_capacity(n);
        let mut collections = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for r in prepared.records.iter() {
            ids.push(r.id.as_str());
            teams.push(r.team_id.as_str());
            datasets.push(r.dataset_id.as_str());
            collections.push(r.collection_id.as_str());
            vectors.push(Vector::from(r.vector.clone()));
            created.push(r.created_at_ms);
            payloads.push(
                r.payload
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| Error::internal(self.name_str(), e))?,
            );
        }
        let held = self
            .bounded("upsert", async {
                let mut conn = self.acquire().await?;
                let mut tx = conn.begin().await.map_err(|e| self.map(e))?;
                let written: Vec<String> =
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&schema.statements.upsert)))
                        .bind(&ids)
                        .bind(teams)
                        .bind(datasets)
                        .bind(collections)
                        .bind(vectors)
                        .bind(created)
                        .bind(payloads)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(|e| self.map(e))?;
                if written.len() == n {
                    tx.commit().await.map_err(|e| self.map(e))?;
                    return Ok(None);
                }
                // Some ids are held by another team: their rows are locked by
                // this transaction, so their owners are read before anything
                // can change, then everything is rolled back.
                let written: HashSet<&str> = written.iter().map(String::as_str).collect();
                let skipped: Vec<&str> = ids
                    .iter()
                    .copied()
                    .filter(|id| !written.contains(id))
                    .collect();
                let rows = sqlx::query(AssertSqlSafe(Arc::clone(&schema.statements.owners)))
                    .bind(&skipped)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.map(e))?;
                tx.rollback().await.map_err(|e| self.map(e))?;
                let mut held = HashMap::with_capacity(rows.len());
                for row in &rows {
                    let id: String = row.try_get("id").map_err(|e| self.map(e))?;
                    let team: String = row.try_get("team_id").map_err(|e| self.map(e))?;
                    held.insert(id, team);
                }
                Ok(Some((written.len(), held)))
            })
            .await?;
        if let Some((written, held)) = held {
            // The first record of the request, in request order, whose id
            // another team holds.
            let taken = prepared
                .ids
                .iter()
                .zip(records)
                .position(|(id, r)| held.get(id).is_some_and(|team| *team != r.team_id));
            return Err(match taken {
                Some(i) => Error::id_taken(format!("records[{i}].id"), &prepared.ids[i]),
                None => Error::internal(
                    self.name_str(),
                    format!(
                        "upsert wrote {written} of {n} records, yet no id is held by another \
                         team; rolled back, nothing was written"
                    ),
                ),
            });
        }
        Ok(UpsertOutcome { ids: prepared.ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let schema = self.schema()?;
        let (shape, collections) = match validate::check_recall(&schema.spec, query)? {
            CollectionFilter::Nothing => return Ok(Vec::new()),
            CollectionFilter::Any => (FilterShape::Any, None),
            CollectionFilter::Only(c) => (FilterShape::Only, Some(c)),
            CollectionFilter::Except(c) => (FilterShape::Except, Some(c)),
        };
        self.bounded(
            "recall",
            self.recall_in_db(&schema, query, shape, collections),
        )
        .await
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        validate::check_delete(selector)?;
        let schema = self.schema()?;
        let s = &schema.statements;
        let statement = match selector {
            DeleteSelector::Ids { team_id, ids } => {
                sqlx::query(AssertSqlSafe(Arc::clone(&s.delete_ids)))
                    .bind(team_id)
                    .bind(ids)
            }
            DeleteSelector::Scope {
                team_id,
                dataset_ids,
                collection_ids: None,
            } => sqlx::query(AssertSqlSafe(Arc::clone(&s.delete_datasets)))
                .bind(team_id)
                .bind(dataset_ids),
            DeleteSelector::Scope {
                team_id,
                dataset_ids,
                collection_ids: Some(collections),
            } => sqlx::query(AssertSqlSafe(Arc::clone(&s.delete_collections)))
                .bind(team_id)
                .bind(dataset_ids)
                .bind(collections),
        };
        self.bounded("delete", async {
            let mut conn = self.acquire().await?;
            let done = statement
                .execute(&mut *conn)
                .await
                .map_err(|e| self.map(e))?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        validate::check_count(scope)?;
        let _schema = self.schema()?;
        let mut filter = Where::default();
        let mut values: Vec<&str> = Vec::new();
        for (column, value) in [
            ("team_id", &scope.team_id),
            ("dataset_id", &scope.dataset_id),
            ("collection_id", &scope.collection_id),
        ] {
            if let Some(value) = value {
                filter.push(column, "=");
                values.push(value);
            }
        }
        let sql = format!("SELECT count(*) FROM {}{}", self.table(), filter.sql());
        self.bounded("count", async {
            let mut conn = self.acquire().await?;
            let mut statement = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
            for value in values {
                statement = statement.bind(value);
            }
            let n = statement
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| self.map(e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        validate::check_scan(request)?;
        let _schema = self.schema()?;
        let mut filter = Where::default();
        if request.team_id.is_some() {
            filter.push("team_id", "=");
        }
        if request.after_id.is_some() {
            filter.push("id COLLATE \"C\"", ">");
        }
        if request.created_from_ms.is_some() {
            filter.push("created_at_ms", ">=");
        }
        if request.created_to_ms.is_some() {
            filter.push("created_at_ms", "<");
        }
        let limit = filter.placeholder();
        let sql = format!(
            "SELECT id, team_id, dataset_id, collection_id, created_at_ms, \
             payload::text AS payload{} FROM {}{} ORDER BY id COLLATE \"C\" LIMIT {limit}",
            if request.with_vectors { ", vector" } else { "" },
            self.table(),
            filter.sql()
        );
        let rows = self
            .bounded("scan", async {
                let mut conn = self.acquire().await?;
                let mut statement = sqlx::query(AssertSqlSafe(sql));
                if let Some(team) = &request.team_id {
                    statement = statement.bind(team);
                }
                if let Some(after) = &request.after_id {
                    statement = statement.bind(after);
                }
                if let Some(from) = request.created_from_ms {
                    statement = statement.bind(from);
                }
                if let Some(to) = request.created_to_ms {
                    statement = statement.bind(to);
                }
                statement
                    .bind(i64::from(request.limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| self.map(e))
            })
            .await?;
        let records = rows
            .iter()
            .map(|row| {
                let vector = if request.with_vectors {
                    row.try_get::<Vector, _>("vector")
                        .map_err(|e| self.map(e))?
                        .to_vec()
                } else {
                    Vec::new()
                };
                Ok(Record {
                    id: row.try_get("id").map_err(|e| self.map(e))?,
                    team_id: row.try_get("team_id").map_err(|e| self.map(e))?,
                    dataset_id: row.try_get("dataset_id").map_err(|e| self.map(e))?,
                    collection_id: row.try_get("collection_id").map_err(|e| self.map(e))?,
                    vector,
                    created_at_ms: row.try_get("created_at_ms").map_err(|e| self.map(e))?,
                    payload: self.payload(row)?,
                })
            })
            .collect::<Result<Vec<Record>>>()?;
        let full = u32::try_from(records.len()).is_ok_and(|n| n == request.limit);
        let next_cursor = if full {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(ScanPage {
            records,
            next_cursor,
        })
    }

    async fn health(&self) -> Result<HealthReport> {
        let started = Instant::now();
        let row = self
            .bounded("health", async {
                let mut conn = self.acquire().await?;
                sqlx::query(sql::HEALTH)
                    .bind(self.table())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| self.map(e))
            })
            .await?;
        let latency = started.elapsed();
        let health = self.serving_health(&row)?;
        if let Some(problem) = health.problem(self.table(), self.inner.schema.read().is_some()) {
            return Err(Error::unavailable(self.name_str(), problem));
        }
        let stats = self.pool_stats();
        let pgvector = self
            .pgvector_version()
            .unwrap_or_else(|| "unchecked (ensure_schema pending)".to_owned());
        Ok(HealthReport {
            latency,
            detail: format!(
                "PostgreSQL {}, pgvector {pgvector}, table {} ({}), pool {}/{} open, {} idle, \
                 {} waiting",
                health.version,
                self.table(),
                if health.table_exists {
                    "present, writable"
                } else {
                    "not created yet"
                },
                stats.size,
                stats.max,
                stats.idle,
                stats.waiting
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert_eq!(parse_version("0.8.0"), (0, 8, 0));
        assert_eq!(parse_version("0.7.4"), (0, 7, 4));
        assert_eq!(parse_version("0.5"), (0, 5, 0));
        assert!(parse_version("0.10.1") >= (0, 8, 0));
        assert!(parse_version("0.4.4") < (0, 5, 0));
    }

    #[tokio::test]
    async fn connect_is_lazy_and_checks_the_config() {
        // Nothing listens on port 1: connect must still succeed.
        let store = PgStore::connect(PgConfig::new("lazy", "postgres://u:p@127.0.0.1:1/db"))
            .await
            .unwrap();
        assert_eq!(store.kind(), "postgres");
        assert_eq!(store.pool_stats().size, 0);
        let err = PgStore::connect(PgConfig::new("bad", "postgres://u:p@h/db").with_table("A"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("table"), "{err}");
        let err = PgStore::connect(PgConfig::new("bad", "mysql://u:p@h/db"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "url"),
            "{err}"
        );
        assert!(!err.to_string().contains(":p@"), "{err}");
    }

    #[tokio::test]
    async fn calls_before_ensure_schema_say_so() {
        let store = PgStore::connect(PgConfig::new("early", "postgres://u:p@127.0.0.1:1/db"))
            .await
            .unwrap();
        let err = store.count(&CountScope::default()).await.unwrap_err();
        assert!(err.to_string().contains("ensure_schema"), "{err}");
    }
}
