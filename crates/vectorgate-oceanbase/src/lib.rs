//! vectorgate backend for OceanBase in MySQL mode: records in one table with
//! a `VECTOR(dim)` column and an HNSW vector index (VSAG), spoken to over
//! the MySQL protocol with sqlx.
//!
//! ```no_run
//! # async fn demo() -> vectorgate::Result<()> {
//! use vectorgate::{IndexSpec, Metric, VectorStore};
//! use vectorgate_oceanbase::{OceanBaseConfig, OceanBaseStore};
//!
//! let config = OceanBaseConfig::new("oceanbase", "mysql://root@127.0.0.1:2881/test");
//! let store = OceanBaseStore::connect(config).await?; // no I/O yet
//! store.ensure_schema(&IndexSpec::new(768, Metric::Cosine)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//! - **Lazy pool.** [`OceanBaseStore::connect`] only parses the
//!   configuration: a service starts while the database is down, and the
//!   manager's probe brings the store in once it answers.
//! - **Schema** (`ensure_schema`): the vector table (`id`, the three scope
//!   columns, `vector VECTOR(dim)`, `vector_f32`, `created_at_ms BIGINT`,
//!   `payload JSON`, an index on the scope columns and one on
//!   `created_at_ms`), an HNSW vector index with the spec's metric, `m` and
//!   `ef_construction`, and one row in the `vectorgate_meta` table recording
//!   the dimension and metric, so reopening with another one is
//!   [`Error::SchemaMismatch`].
//! - **Recall** sets `ob_hnsw_ef_search` on the connection, then orders by
//!   the distance the vector index serves for the metric
//!   (`negative_inner_product`, `l2_distance`, `cosine_distance`, ascending)
//!   with `APPROXIMATE LIMIT`; the scope filter is applied inside the index
//!   scan (`VECTOR INDEX ADAPTIVE SCAN (PRE-FILTER)`). Distances are turned
//!   into the project's scores and re-sorted.
//! - **Exact vectors.** OceanBase prints a `VECTOR` with six significant
//!   digits, so the exact little-endian `f32` bytes are kept beside it in
//!   `vector_f32`; `scan` returns those (and parses the text only for rows
//!   written without them).
//! - **Writes** are multi-row `INSERT ... ON DUPLICATE KEY UPDATE`, cut by
//!   size, in id order (concurrent upserts lock rows in one order), all in
//!   one transaction.
//! - **Ids belong to their team.** Ids are unique across teams and a record
//!   never changes team. The upsert never assigns `team_id` and updates
//!   every other column only when the stored team is the record's
//!   (`col = IF(team_id = VALUES(team_id), VALUES(col), col)`); in the same
//!   transaction it then reads `id, team_id` of every id it sent (rows its
//!   statements locked). If one is not the record's team, the transaction is
//!   rolled back and the call fails with [`Error::Conflict`] on
//!   `records[i].id`, the first such record of the request: nothing of it is
//!   written. Every delete, recall and team-scoped count or scan filters by
//!   `team_id` in SQL.
//! - **Errors** are mapped in one function (module `errors`). A call that
//!   gets no connection is `Timeout` when every connection is busy (pool
//!   starvation) and `Unavailable` when none could be opened (server down;
//!   reported within `connect_timeout_ms`).
//! - **Health** (`health`) is one round trip (about 5 ms) that checks what
//!   serving needs, not just a live server: the table exists (once
//!   `ensure_schema` made it), the user holds SELECT, INSERT, UPDATE and
//!   DELETE on it (user-, database- or table-level grants), and the server
//!   takes its writes (`read_only` off, or the user has SUPER; the session
//!   not `tx_read_only`). Each problem is `Unavailable` naming the fix, so
//!   the manager fails over before callers see errors.
//! - **Abandoned statements.** The manager stops waiting for an attempt
//!   after its `attempt_timeout_ms` and drops the call; the statement goes
//!   on in the server. Every session bounds it: `ob_query_timeout` =
//!   `statement_timeout_ms` per statement (10x for `ensure_schema`'s DDL),
//!   `ob_trx_timeout` and `ob_trx_idle_timeout` = 10 x
//!   `statement_timeout_ms` per transaction, so locks of a write abandoned
//!   mid-transaction are released by then at the latest. sqlx does not
//!   reuse a connection whose call was dropped before it answered: on its
//!   way back to the pool the connection is pinged, which waits for the
//!   abandoned statement's answer (or the bound above), and a transaction
//!   left open is rolled back; it is closed if that fails.
//! - **Metrics** (label `store`): gauges `vectorgate_oceanbase_pool_size`,
//!   `vectorgate_oceanbase_pool_idle`, `vectorgate_oceanbase_pool_waiting`,
//!   `vectorgate_oceanbase_pool_max`, and the counter
//!   `vectorgate_oceanbase_pool_timeouts_total`.

mod config;
mod errors;
mod sql;

pub use config::{DEFAULT_TABLE, META_TABLE, OceanBaseConfig, check_table};

use crate::errors::map_sqlx;
use async_trait::async_trait;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, Error, HealthReport, Hit, IndexSpec, Metric, RecallQuery, Record,
    Result, ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// The collation every connection uses. OceanBase rejects sqlx's default
/// `utf8mb4_unicode_ci` (error 1273).
const CONNECTION_COLLATION: &str = "utf8mb4_general_ci";

/// Extra time the client gives a statement beyond `statement_timeout_ms`
/// before giving up on the server.
const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// DDL (`ensure_schema`) may run this many times `statement_timeout_ms`:
/// building a vector index over existing rows takes a while.
const DDL_TIMEOUT_FACTOR: u32 = 10;

/// A vector store in one OceanBase table. Cheap to share behind an `Arc`;
/// every method takes `&self` and may run concurrently with the others.
///
/// Call [`VectorStore::ensure_schema`] once after
/// [`OceanBaseStore::connect`]: it creates or checks the table and learns
/// the spec; every other method fails with [`Error::Internal`] until it has
/// succeeded.
pub struct OceanBaseStore {
    config: OceanBaseConfig,
    pool: MySqlPool,
    /// Calls waiting for a pooled connection.
    waiting: AtomicUsize,
    /// Set by the first successful `ensure_schema`.
    spec: RwLock<Option<IndexSpec>>,
    /// The server's version string, read by the first successful health check.
    version: OnceLock<String>,
}

impl fmt::Debug for OceanBaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OceanBaseStore")
            .field("name", &self.config.name)
            .field("table", &self.config.table)
            .field("spec", &self.current_spec())
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
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

/// Decrements the waiting count when an acquire ends, however it ends.
struct Waiting<'a>(&'a OceanBaseStore);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.publish_pool_gauges();
    }
}

impl OceanBaseStore {
    /// Checks the configuration and sets up a lazy pool: no connection is
    /// made until the first call, so this succeeds while the server is down.
    /// A malformed URL or value is [`Error::InvalidInput`].
    pub async fn connect(config: OceanBaseConfig) -> Result<OceanBaseStore> {
        config.check()?;
        let options = MySqlConnectOptions::from_str(&config.url)
            .map_err(|e| {
                Error::invalid(
                    "url",
                    format!(
                        "is not a MySQL URL ({e}): {}",
                        config::redact_url(&config.url)
                    ),
                )
            })?
            .charset("utf8mb4")
            .collation(CONNECTION_COLLATION);
        let query_timeout_us = duration_us(config.statement_timeout());
        let trx_timeout_us = duration_us(config.statement_timeout() * DDL_TIMEOUT_FACTOR);
        let pool = MySqlPoolOptions::new()
            .max_connections(config.pool_max_connections)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(Duration::from_secs(300))
            .test_before_acquire(true)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // Bounds on server-side work, whoever stops waiting
                    // for it: see "Abandoned statements" in the crate docs.
                    conn.execute(AssertSqlSafe(format!(
                        "SET SESSION ob_query_timeout = {query_timeout_us}, \
                         ob_trx_timeout = {trx_timeout_us}, \
                         ob_trx_idle_timeout = {trx_timeout_us}"
                    )))
                    .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        describe_metrics();
        let store = OceanBaseStore {
            config,
            pool,
            waiting: AtomicUsize::new(0),
            spec: RwLock::new(None),
            version: OnceLock::new(),
        };
        store.publish_pool_gauges();
        Ok(store)
    }

    /// The pool right now (also published as gauges on every acquire).
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            waiting: u32::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            max: self.config.pool_max_connections,
        }
    }

    /// Drops the table and its `vectorgate_meta` row. After this the store
    /// needs `ensure_schema` again. Destructive: for tests and operators,
    /// never called by the library itself.
    pub async fn drop_table(&self) -> Result<()> {
        let table = self.config.table.as_str();
        let mut conn = self.acquire("drop_table").await?;
        self.run(
            "drop_table",
            self.statement_timeout() * DDL_TIMEOUT_FACTOR,
            conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS `{table}`"))),
        )
        .await?;
        let forget = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM `{META_TABLE}` WHERE table_name = ?"
        )))
        .bind(table)
        .execute(&mut *conn);
        match self
            .run(
                "drop_table: forget the spec",
                self.statement_timeout(),
                forget,
            )
            .await
        {
            // No meta table: nothing to forget.
            Err(Error::Unavailable { message, .. }) if message.contains("server error 1146") => {}
            other => {
                other?;
            }
        }
        match self.spec.write() {
            Ok(mut guard) => *guard = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
        Ok(())
    }

    /// The configuration this store was built with.
    pub fn config(&self) -> &OceanBaseConfig {
        &self.config
    }

    /// The table this store uses.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// The SQL `recall` runs for `query` (after `SET ob_hnsw_ef_search`),
    /// with its placeholders, for plan checks (`EXPLAIN`) and debugging.
    /// Validates the query first, like `recall`; `Ok(None)` when the
    /// collection filter matches nothing (recall does not ask the server).
    pub fn recall_sql(&self, query: &RecallQuery) -> Result<Option<String>> {
        let spec = self.ready_spec()?;
        let filter = validate::check_recall(&spec, query)?;
        Ok(recall_statement(&self.config.table, &spec, query, &filter))
    }

    /// Closes the pool's connections (idempotent).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn name_str(&self) -> &str {
        &self.config.name
    }

    fn current_spec(&self) -> Option<IndexSpec> {
        match self.spec.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set_spec(&self, spec: IndexSpec) {
        match self.spec.write() {
            Ok(mut guard) => *guard = Some(spec),
            Err(poisoned) => *poisoned.into_inner() = Some(spec),
        }
    }

    fn ready_spec(&self) -> Result<IndexSpec> {
        self.current_spec().ok_or_else(|| {
            Error::internal(
                self.name_str(),
                "call ensure_schema first: the table and its spec are not checked yet",
            )
        })
    }

    fn err(&self, what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        let what = what.to_owned();
        move |e| map_sqlx(self.name_str(), &what, e)
    }

    /// A pooled connection. When the pool must open a new one, waits at
    /// most `connect_timeout_ms` (and never more than `acquire_timeout_ms`).
    /// Running out of time with every connection busy is `Timeout` (pool
    /// starvation); failing to open one is `Unavailable` (server down).
    async fn acquire(&self, what: &str) -> Result<PoolConnection<MySql>> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(self);
        self.publish_pool_gauges();
        let must_connect =
            self.pool.num_idle() == 0 && self.pool.size() < self.config.pool_max_connections;
        let limit = if must_connect {
            self.config
                .connect_timeout()
                .min(self.config.acquire_timeout())
        } else {
            self.config.acquire_timeout()
        };
        let result = tokio::time::timeout(limit, self.pool.acquire()).await;
        drop(waiting);
        match result {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                let store = self.name_str();
                metrics::counter!("vectorgate_oceanbase_pool_timeouts_total", "store" => store.to_owned())
                    .increment(1);
                let stats = self.pool_stats();
                if stats.size >= stats.max {
                    tracing::warn!(store, ?stats, "connection pool exhausted");
                    Err(Error::timeout(
                        store,
                        format!(
                            "{what}: no pooled connection free within {} ms: all {} connections busy, \
                             {} calls waiting (pool starvation: raise pool_max_connections or look \
                             for slow queries)",
                            limit.as_millis(),
                            stats.max,
                            stats.waiting
                        ),
                    ))
                } else {
                    Err(Error::unavailable(
                        store,
                        format!(
                            "{what}: could not open a connection to {} within {} ms (server down, \
                             unreachable or refusing connections)",
                            config::redact_url(&self.config.url),
                            limit.as_millis()
                        ),
                    ))
                }
            }
            Ok(Err(e)) => Err(map_sqlx(self.name_str(), what, e)),
        }
    }

    /// Runs one statement with the client-side deadline.
    async fn run<T>(
        &self,
        what: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit + CLIENT_GRACE, fut).await {
            Ok(result) => result.map_err(self.err(what)),
            Err(_) => Err(Error::timeout(
                self.name_str(),
                format!(
                    "{what}: no answer within {} ms",
                    (limit + CLIENT_GRACE).as_millis()
                ),
            )),
        }
    }

    fn statement_timeout(&self) -> Duration {
        self.config.statement_timeout()
    }

    fn publish_pool_gauges(&self) {
        let stats = self.pool_stats();
        let store = self.config.name.clone();
        metrics::gauge!("vectorgate_oceanbase_pool_size", "store" => store.clone()).set(stats.size);
        metrics::gauge!("vectorgate_oceanbase_pool_idle", "store" => store.clone()).set(stats.idle);
        metrics::gauge!("vectorgate_oceanbase_pool_waiting", "store" => store.clone())
            .set(stats.waiting);
        metrics::gauge!("vectorgate_oceanbase_pool_max", "store" => store).set(stats.max);
    }

    fn mismatch(&self, expected: &IndexSpec, found: String) -> Error {
        Error::SchemaMismatch {
            store: self.config.name.clone(),
            expected: expected.describe(),
            found,
        }
    }

    /// The DDL and checks of `ensure_schema`, on one connection whose
    /// statement timeout was raised for DDL.
    async fn ensure_schema_on(
        &self,
        conn: &mut PoolConnection<MySql>,
        spec: &IndexSpec,
    ) -> Result<()> {
        let table = self.config.table.as_str();
        let limit = self.statement_timeout() * DDL_TIMEOUT_FACTOR;
        self.ddl(
            conn,
            "ensure_schema: create the meta table",
            sql::create_meta_table(META_TABLE),
        )
        .await?;

        let stored = match self.stored_spec(conn, limit).await? {
            Some(stored) => stored,
            None => {
                // A table without a meta row (created by hand, or the meta
                // row was lost): its vector column still tells the dimension.
                if let Some(dim) = self.existing_dim(conn, limit).await?
                    && dim != spec.dim
                {
                    return Err(self.mismatch(
                        spec,
                        format!("dim {dim} (column `vector` of `{table}`, no {META_TABLE} row)"),
                    ));
                }
                self.run(
                    "ensure_schema: record the spec",
                    limit,
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT IGNORE INTO `{META_TABLE}` (table_name, dim, metric, hnsw_m, hnsw_ef_construction, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
                    )))
                    .bind(table)
                    .bind(spec.dim)
                    .bind(spec.metric.as_str())
                    .bind(spec.hnsw.m)
                    .bind(spec.hnsw.ef_construction)
                    .bind(validate::now_ms())
                    .execute(&mut **conn),
                )
                .await?;
                // Read back: a concurrent ensure_schema may have won the insert.
                self.stored_spec(conn, limit).await?.ok_or_else(|| {
                    Error::internal(
                        self.name_str(),
                        format!("ensure_schema: the {META_TABLE} row for `{table}` vanished right after it was written"),
                    )
                })?
            }
        };
        if stored.dim != spec.dim || stored.metric != spec.metric {
            return Err(self.mismatch(spec, stored.describe()));
        }

        self.ddl(
            conn,
            "ensure_schema: create the table",
            sql::create_table(table, spec.dim),
        )
        .await?;

        if !self.has_vector_index(conn, limit).await? {
            let created = self
                .ddl(
                    conn,
                    "ensure_schema: create the vector index",
                    sql::create_vector_index(
                        table,
                        stored.metric,
                        stored.hnsw.m,
                        stored.hnsw.ef_construction,
                    ),
                )
                .await;
            if let Err(error) = created {
                // A concurrent ensure_schema created it first (1235 "already
                // has a vector index", 1061 duplicate key name): fine.
                if !self.has_vector_index(conn, limit).await? {
                    return Err(error);
                }
            } else {
                tracing::info!(
                    store = self.name_str(),
                    table,
                    spec = %spec.describe(),
                    "created the HNSW vector index"
                );
            }
        }
        Ok(())
    }

    /// Runs one DDL statement, retrying while concurrent DDL holds the locks
    /// it needs (OceanBase serialises some DDL per tenant: 1205 lock wait
    /// timeout, 4023 try again). Other failures return at once.
    async fn ddl(
        &self,
        conn: &mut PoolConnection<MySql>,
        what: &str,
        statement: String,
    ) -> Result<()> {
        const ATTEMPTS: u32 = 6;
        let limit = self.statement_timeout() * DDL_TIMEOUT_FACTOR;
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            let result = tokio::time::timeout(
                limit + CLIENT_GRACE,
                conn.execute(AssertSqlSafe(statement.clone())),
            )
            .await;
            match result {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if attempt < ATTEMPTS && errors::is_ddl_contention(&e) => {
                    tracing::debug!(store = self.name_str(), what, error = %e, attempt, "DDL contention, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Ok(Err(e)) => return Err(map_sqlx(self.name_str(), what, e)),
                Err(_) => {
                    return Err(Error::timeout(
                        self.name_str(),
                        format!(
                            "{what}: no answer within {} ms",
                            (limit + CLIENT_GRACE).as_millis()
                        ),
                    ));
                }
            }
        }
        Err(Error::internal(
            self.name_str(),
            format!("{what}: retries exhausted"),
        ))
    }

    /// The spec recorded for this table in the meta table, if any.
    async fn stored_spec(
        &self,
        conn: &mut PoolConnection<MySql>,
        limit: Duration,
    ) -> Result<Option<IndexSpec>> {
        let row = self
            .run(
                "ensure_schema: read the recorded spec",
                limit,
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT dim, metric, hnsw_m, hnsw_ef_construction FROM `{META_TABLE}` WHERE table_name = ?"
                )))
                .bind(self.config.table.as_str())
                .fetch_optional(&mut **conn),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let decode = self.err("ensure_schema: decode the recorded spec");
        let read = || -> Result<(i64, String, i64, i64), sqlx::Error> {
            Ok((
                row.try_get::<i32, _>("dim")?.into(),
                row.try_get("metric")?,
                row.try_get::<i32, _>("hnsw_m")?.into(),
                row.try_get::<i32, _>("hnsw_ef_construction")?.into(),
            ))
        };
        let (dim, metric, m, ef_construction) = read().map_err(decode)?;
        let corrupt = |what: String| {
            Error::internal(
                self.name_str(),
                format!(
                    "{META_TABLE} row for `{}` is corrupt: {what}",
                    self.config.table
                ),
            )
        };
        let metric = Metric::parse(&metric).ok_or_else(|| corrupt(format!("metric {metric:?}")))?;
        let to_u32 =
            |v: i64, name: &str| u32::try_from(v).map_err(|_| corrupt(format!("{name} {v}")));
        let mut spec = IndexSpec::new(to_u32(dim, "dim")?, metric);
        spec.hnsw.m = to_u32(m, "hnsw_m")?;
        spec.hnsw.ef_construction = to_u32(ef_construction, "hnsw_ef_construction")?;
        Ok(Some(spec))
    }

    /// The dimension of the table's `vector` column, if the table exists.
    async fn existing_dim(
        &self,
        conn: &mut PoolConnection<MySql>,
        limit: Duration,
    ) -> Result<Option<u32>> {
        let row = self
            .run(
                "ensure_schema: inspect the existing table",
                limit,
                sqlx::query(
                    "SELECT CAST(column_type AS CHAR) AS column_type FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'vector'",
                )
                .bind(self.config.table.as_str())
                .fetch_optional(&mut **conn),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let column_type: String = row
            .try_get("column_type")
            .map_err(self.err("ensure_schema: inspect the existing table"))?;
        let lower = column_type.to_ascii_lowercase();
        let dim = lower
            .strip_prefix("vector(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.trim().parse::<u32>().ok());
        match dim {
            Some(dim) => Ok(Some(dim)),
            None => Err(Error::internal(
                self.name_str(),
                format!(
                    "table `{}` exists but its column `vector` is {column_type:?}, not VECTOR(dim): not a vectorgate table",
                    self.config.table
                ),
            )),
        }
    }

    /// True if the table has vectorgate's vector index. Checked before
    /// creating it: OceanBase fails a second `CREATE VECTOR INDEX` on the
    /// column with error 1235, even with `IF NOT EXISTS`.
    async fn has_vector_index(
        &self,
        conn: &mut PoolConnection<MySql>,
        limit: Duration,
    ) -> Result<bool> {
        let count: i64 = self
            .run(
                "ensure_schema: look for the vector index",
                limit,
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.statistics \
                     WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?",
                )
                .bind(self.config.table.as_str())
                .bind(sql::VECTOR_INDEX)
                .fetch_one(&mut **conn),
            )
            .await?;
        Ok(count > 0)
    }

    /// Decodes one scanned row.
    fn scan_record(&self, row: &MySqlRow, dim: usize, with_vectors: bool) -> Result<Record> {
        let id: String = row.try_get("id").map_err(&decode_ref(self, "scan"))?;
        let team_id: String = row.try_get("team_id").map_err(&decode_ref(self, "scan"))?;
        let dataset_id: String = row
            .try_get("dataset_id")
            .map_err(&decode_ref(self, "scan"))?;
        let collection_id: String = row
            .try_get("collection_id")
            .map_err(&decode_ref(self, "scan"))?;
        let created_at_ms: i64 = row
            .try_get("created_at_ms")
            .map_err(&decode_ref(self, "scan"))?;
        let payload = self.payload(row, "scan")?;
        let vector = if with_vectors {
            let exact: Option<Vec<u8>> = row
                .try_get("vector_f32")
                .map_err(&decode_ref(self, "scan"))?;
            match exact.and_then(|bytes| sql::vector_from_bytes(&bytes, dim)) {
                Some(vector) => vector,
                None => {
                    // Written without vector_f32: the server's text, which
                    // is exact to six significant digits only.
                    let text: Vec<u8> = row
                        .try_get_unchecked("vector")
                        .map_err(&decode_ref(self, "scan"))?;
                    sql::parse_vector_text(&text).map_err(|e| {
                        Error::internal(self.name_str(), format!("scan: record {id:?}: {e}"))
                    })?
                }
            }
        } else {
            Vec::new()
        };
        Ok(Record {
            id,
            team_id,
            dataset_id,
            collection_id,
            vector,
            created_at_ms,
            payload,
        })
    }

    /// The `payload` column of a row, parsed. JSON comes back typed `JSON`,
    /// which sqlx's `String` does not accept: decoded unchecked, as text.
    fn payload(&self, row: &MySqlRow, what: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = row
            .try_get_unchecked("payload")
            .map_err(&decode_ref(self, what))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                Error::internal(
                    self.name_str(),
                    format!("{what}: a stored payload is not JSON: {e}"),
                )
            })
        })
        .transpose()
    }
}

/// A reusable sqlx-error mapper for decode failures of `what`.
fn decode_ref<'a>(store: &'a OceanBaseStore, what: &'a str) -> impl Fn(sqlx::Error) -> Error + 'a {
    move |e| map_sqlx(store.name_str(), &format!("{what}: decode a row"), e)
}

/// One record of an upsert, encoded for binding.
struct EncodedRow<'a> {
    record: &'a Record,
    literal: String,
    bytes: Vec<u8>,
    payload: Option<String>,
}

type MySqlQuery<'q> = sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>;

/// The multi-row upsert of `rows`, bound.
fn upsert_query<'q>(table: &str, rows: &'q [EncodedRow<'q>]) -> MySqlQuery<'q> {
    let mut q = sqlx::query(AssertSqlSafe(sql::upsert(table, rows.len())));
    for row in rows {
        let r = row.record;
        q = q
            .bind(r.id.as_str())
            .bind(r.team_id.as_str())
            .bind(r.dataset_id.as_str())
            .bind(r.collection_id.as_str())
            .bind(row.literal.as_str())
            .bind(row.bytes.as_slice())
            .bind(r.created_at_ms)
            .bind(row.payload.as_deref());
    }
    q
}

/// `DELETE` of these ids within the team, bound.
fn delete_ids_query<'q>(table: &str, team_id: &'q str, ids: &'q [String]) -> MySqlQuery<'q> {
    let mut q = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM `{table}` WHERE team_id = ? AND id IN {}",
        sql::placeholders(ids.len())
    )))
    .bind(team_id);
    for id in ids {
        q = q.bind(id.as_str());
    }
    q
}

fn describe_metrics() {
    metrics::describe_gauge!(
        "vectorgate_oceanbase_pool_size",
        "Open OceanBase connections of the store's pool (idle or in use)."
    );
    metrics::describe_gauge!(
        "vectorgate_oceanbase_pool_idle",
        "Idle OceanBase connections of the store's pool."
    );
    metrics::describe_gauge!(
        "vectorgate_oceanbase_pool_waiting",
        "Calls waiting for an OceanBase connection from the store's pool."
    );
    metrics::describe_gauge!(
        "vectorgate_oceanbase_pool_max",
        "pool_max_connections of the store."
    );
    metrics::describe_counter!(
        "vectorgate_oceanbase_pool_timeouts_total",
        "Calls that got no OceanBase connection in time (pool starvation or server down)."
    );
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The recall statement for a validated query; `None` when nothing can match.
///
/// Parameters, in order: the query vector (as `[..]` text), the team, each
/// dataset, each collection of the filter, the limit.
fn recall_statement(
    table: &str,
    spec: &IndexSpec,
    query: &RecallQuery,
    filter: &CollectionFilter,
) -> Option<String> {
    let collections = match filter {
        CollectionFilter::Nothing => return None,
        CollectionFilter::Any => String::new(),
        CollectionFilter::Only(ids) => {
            format!(" AND collection_id IN {}", sql::placeholders(ids.len()))
        }
        CollectionFilter::Except(ids) => {
            format!(" AND collection_id NOT IN {}", sql::placeholders(ids.len()))
        }
    };
    let payload = if query.with_payload { ", payload" } else { "" };
    Some(format!(
        "SELECT id, dataset_id, collection_id, {} AS distance{payload} FROM `{table}` \
         WHERE team_id = ? AND dataset_id IN {}{collections} \
         ORDER BY distance APPROXIMATE LIMIT ?",
        sql::distance_expr(spec.metric),
        sql::placeholders(query.dataset_ids.len()),
    ))
}

#[async_trait]
impl VectorStore for OceanBaseStore {
    fn kind(&self) -> &'static str {
        "oceanbase"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        validate::check_spec(spec)?;
        if let Some(known) = self.current_spec() {
            if known.dim == spec.dim && known.metric == spec.metric {
                return Ok(());
            }
            return Err(self.mismatch(spec, known.describe()));
        }
        let mut conn = self.acquire("ensure_schema").await?;
        let ddl_timeout_us = duration_us(self.statement_timeout() * DDL_TIMEOUT_FACTOR);
        let raise = self
            .run(
                "ensure_schema: raise the statement timeout",
                self.statement_timeout(),
                conn.execute(AssertSqlSafe(format!(
                    "SET SESSION ob_query_timeout = {ddl_timeout_us}"
                ))),
            )
            .await;
        let result = match raise {
            Ok(_) => self.ensure_schema_on(&mut conn, spec).await,
            Err(e) => Err(e),
        };
        // Put the session back as the pool hands it out; a connection in an
        // unknown state is closed instead of reused.
        let restored = result.is_ok()
            && self
                .run(
                    "ensure_schema: restore the statement timeout",
                    self.statement_timeout(),
                    conn.execute(AssertSqlSafe(format!(
                        "SET SESSION ob_query_timeout = {}",
                        duration_us(self.statement_timeout())
                    ))),
                )
                .await
                .is_ok();
        if !restored {
            conn.close_on_drop();
        }
        result?;
        self.set_spec(*spec);
        Ok(())
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let spec = self.ready_spec()?;
        let prepared = validate::prepare_upsert(&spec, records, validate::now_ms())?;
        let table = self.config.table.as_str();

        // Encode everything before touching the server.
        let mut rows = Vec::with_capacity(prepared.records.len());
        for (i, record) in prepared.records.iter().enumerate() {
            let payload = match &record.payload {
                Some(p) => Some(serde_json::to_string(p).map_err(|e| {
                    Error::invalid(
                        format!("records[{i}].payload"),
                        format!("cannot be serialized: {e}"),
                    )
                })?),
                None => None,
            };
            rows.push(EncodedRow {
                record,
                literal: sql::vector_literal(&record.vector),
                bytes: sql::vector_bytes(&record.vector),
                payload,
            });
        }
        // In id order, so concurrent upserts lock rows in one order and do
        // not deadlock each other.
        rows.sort_unstable_by(|a, b| a.record.id.cmp(&b.record.id));
        // Cut into statements of bounded size.
        let mut chunks: Vec<&[EncodedRow<'_>]> = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, row) in rows.iter().enumerate() {
            let size = sql::estimated_row_bytes(
                spec.dim as usize,
                row.payload.as_ref().map_or(0, String::len),
            );
            if i > start && bytes + size > sql::UPSERT_STATEMENT_BYTES {
                chunks.push(&rows[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < rows.len() {
            chunks.push(&rows[start..]);
        }

        let limit = self.statement_timeout();
        let mut conn = self.acquire("upsert").await?;
        // One transaction: the statements, then the owner check, all or
        // nothing.
        let mut tx = self.run("upsert: begin", limit, conn.begin()).await?;
        for chunk in &chunks {
            self.run(
                "upsert",
                limit,
                upsert_query(table, chunk).execute(&mut *tx),
            )
            .await?;
        }
        // Every row the statements touched is locked by this transaction
        // now (inserted, updated, or left alone as another team's), so the
        // owners read here stay the owners until it ends.
        let ids: Vec<&str> = rows.iter().map(|row| row.record.id.as_str()).collect();
        let mut owners: HashMap<String, String> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(sql::IDS_PER_STATEMENT) {
            let mut q = sqlx::query(AssertSqlSafe(sql::owners(table, chunk.len())));
            for id in chunk {
                q = q.bind(*id);
            }
            let found = self
                .run("upsert: check owners", limit, q.fetch_all(&mut *tx))
                .await?;
            for row in &found {
                let read = |row: &MySqlRow| -> Result<(String, String), sqlx::Error> {
                    Ok((row.try_get("id")?, row.try_get("team_id")?))
                };
                let (id, team) = read(row).map_err(decode_ref(self, "upsert: check owners"))?;
                owners.insert(id, team);
            }
        }
        // The first record of the request whose id is not its team's (held
        // by another team, or gone with it: the statement did not write it).
        let taken = prepared
            .ids
            .iter()
            .zip(records)
            .position(|(id, r)| owners.get(id) != Some(&r.team_id));
        if let Some(i) = taken {
            self.run("upsert: rollback", limit, tx.rollback()).await?;
            return Err(Error::id_taken(
                format!("records[{i}].id"),
                &prepared.ids[i],
            ));
        }
        self.run("upsert: commit", limit, tx.commit()).await?;
        Ok(UpsertOutcome { ids: prepared.ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let spec = self.ready_spec()?;
        let filter = validate::check_recall(&spec, query)?;
        let Some(statement) = recall_statement(&self.config.table, &spec, query, &filter) else {
            return Ok(Vec::new());
        };
        let ef_search = validate::effective_ef_search(&spec, query);
        let literal = sql::vector_literal(&query.vector);

        let mut conn = self.acquire("recall").await?;
        self.run(
            "recall: set ob_hnsw_ef_search",
            self.statement_timeout(),
            conn.execute(AssertSqlSafe(format!(
                "SET ob_hnsw_ef_search = {ef_search}"
            ))),
        )
        .await?;
        let mut q = sqlx::query(AssertSqlSafe(statement))
            .bind(literal.as_str())
            .bind(query.team_id.as_str());
        for dataset in &query.dataset_ids {
            q = q.bind(dataset.as_str());
        }
        match &filter {
            CollectionFilter::Only(ids) | CollectionFilter::Except(ids) => {
                for id in ids {
                    q = q.bind(id.as_str());
                }
            }
            CollectionFilter::Any | CollectionFilter::Nothing => {}
        }
        q = q.bind(query.limit);
        let rows = self
            .run("recall", self.statement_timeout(), q.fetch_all(&mut *conn))
            .await?;
        drop(conn);

        let mut hits = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = |row: &MySqlRow| -> Result<(String, String, String, f64), sqlx::Error> {
                Ok((
                    row.try_get("id")?,
                    row.try_get("dataset_id")?,
                    row.try_get("collection_id")?,
                    row.try_get("distance")?,
                ))
            };
            let (id, dataset_id, collection_id, distance) =
                read(row).map_err(decode_ref(self, "recall"))?;
            let payload = if query.with_payload {
                self.payload(row, "recall")?
            } else {
                None
            };
            let score = sql::score_from_distance(spec.metric, distance) as f32;
            hits.push(Hit {
                id,
                dataset_id,
                collection_id,
                score,
                payload,
            });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(query.limit as usize);
        Ok(hits)
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        validate::check_delete(selector)?;
        self.ready_spec()?;
        let table = self.config.table.as_str();
        let mut conn = self.acquire("delete").await?;
        match selector {
            DeleteSelector::Ids { team_id, ids } => {
                let limit = self.statement_timeout();
                let chunks: Vec<&[String]> = ids.chunks(sql::IDS_PER_STATEMENT).collect();
                let mut removed = 0;
                if let [only] = chunks.as_slice() {
                    let done = self
                        .run(
                            "delete",
                            limit,
                            delete_ids_query(table, team_id, only).execute(&mut *conn),
                        )
                        .await?;
                    removed += done.rows_affected();
                } else {
                    let mut tx = self.run("delete: begin", limit, conn.begin()).await?;
                    for chunk in &chunks {
                        let done = self
                            .run(
                                "delete",
                                limit,
                                delete_ids_query(table, team_id, chunk).execute(&mut *tx),
                            )
                            .await?;
                        removed += done.rows_affected();
                    }
                    self.run("delete: commit", limit, tx.commit()).await?;
                }
                Ok(removed)
            }
            DeleteSelector::Scope {
                team_id,
                dataset_ids,
                collection_ids,
            } => {
                let mut statement = format!(
                    "DELETE FROM `{table}` WHERE team_id = ? AND dataset_id IN {}",
                    sql::placeholders(dataset_ids.len())
                );
                if let Some(collections) = collection_ids {
                    statement.push_str(&format!(
                        " AND collection_id IN {}",
                        sql::placeholders(collections.len())
                    ));
                }
                let mut q = sqlx::query(AssertSqlSafe(statement)).bind(team_id.as_str());
                for dataset in dataset_ids {
                    q = q.bind(dataset.as_str());
                }
                for collection in collection_ids.iter().flatten() {
                    q = q.bind(collection.as_str());
                }
                let done = self
                    .run("delete", self.statement_timeout(), q.execute(&mut *conn))
                    .await?;
                Ok(done.rows_affected())
            }
        }
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        validate::check_count(scope)?;
        self.ready_spec()?;
        let mut statement = format!("SELECT COUNT(*) FROM `{}` WHERE 1 = 1", self.config.table);
        let mut binds: Vec<&str> = Vec::new();
        for (column, value) in [
            ("team_id", &scope.team_id),
            ("dataset_id", &scope.dataset_id),
            ("collection_id", &scope.collection_id),
        ] {
            if let Some(value) = value {
                statement.push_str(&format!(" AND {column} = ?"));
                binds.push(value);
            }
        }
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(statement));
        for value in binds {
            q = q.bind(value);
        }
        let mut conn = self.acquire("count").await?;
        let n = self
            .run("count", self.statement_timeout(), q.fetch_one(&mut *conn))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        validate::check_scan(request)?;
        let spec = self.ready_spec()?;
        let vectors = if request.with_vectors {
            ", vector_f32, vector"
        } else {
            ""
        };
        let mut statement = format!(
            "SELECT id, team_id, dataset_id, collection_id, created_at_ms, payload{vectors} FROM `{}` WHERE 1 = 1",
            self.config.table
        );
        if request.team_id.is_some() {
            statement.push_str(" AND team_id = ?");
        }
        if request.created_from_ms.is_some() {
            statement.push_str(" AND created_at_ms >= ?");
        }
        if request.created_to_ms.is_some() {
            statement.push_str(" AND created_at_ms < ?");
        }
        if request.after_id.is_some() {
            statement.push_str(" AND id > ?");
        }
        // `id` is utf8mb4_bin: this is byte order.
        statement.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(statement));
        if let Some(team) = &request.team_id {
            q = q.bind(team.as_str());
        }
        if let Some(from) = request.created_from_ms {
            q = q.bind(from);
        }
        if let Some(to) = request.created_to_ms {
            q = q.bind(to);
        }
        if let Some(after) = &request.after_id {
            q = q.bind(after.as_str());
        }
        q = q.bind(request.limit);
        let mut conn = self.acquire("scan").await?;
        let rows = self
            .run("scan", self.statement_timeout(), q.fetch_all(&mut *conn))
            .await?;
        drop(conn);
        let records = rows
            .iter()
            .map(|row| self.scan_record(row, spec.dim as usize, request.with_vectors))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if records.len() == request.limit as usize {
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
        let mut conn = self.acquire("health").await?;
        let table = self.config.table.as_str();
        let row = self
            .run(
                "health",
                self.statement_timeout(),
                sqlx::query(sql::HEALTH)
                    .bind(table)
                    .bind(table)
                    .fetch_one(&mut *conn),
            )
            .await?;
        let latency = started.elapsed();
        drop(conn);
        self.publish_pool_gauges();
        let column = |e: sqlx::Error| Error::internal(self.name_str(), format!("health: {e}"));
        let health = sql::ServingHealth {
            version: row.try_get("version").map_err(column)?,
            user: row.try_get("user_name").map_err(column)?,
            read_only: row.try_get::<i64, _>("read_only").map_err(column)? != 0,
            tx_read_only: row.try_get::<i64, _>("tx_read_only").map_err(column)? != 0,
            table_exists: row.try_get::<i64, _>("table_exists").map_err(column)? > 0,
            privileges: row
                .try_get::<Option<String>, _>("privileges")
                .map_err(column)?
                .unwrap_or_default(),
        };
        if let Some(problem) = health.problem(table, self.current_spec().is_some()) {
            return Err(Error::unavailable(self.name_str(), problem));
        }
        let _ = self.version.set(health.version.clone());
        Ok(HealthReport {
            latency,
            detail: format!(
                "{}, table {} ({}), pool {}/{} connections ({} idle)",
                health.version,
                self.config.table,
                if health.table_exists {
                    "present, writable"
                } else {
                    "not created yet"
                },
                self.pool.size(),
                self.config.pool_max_connections,
                self.pool.num_idle()
            ),
        })
    }
}
