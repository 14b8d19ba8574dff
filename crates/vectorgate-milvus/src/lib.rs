//! vectorgate's Milvus backend: one Milvus collection holds one index.
//!
//! ```no_run
//! # async fn demo() -> vectorgate::Result<()> {
//! use vectorgate::{IndexSpec, Metric, VectorStore};
//! use vectorgate_milvus::{MilvusConfig, MilvusStore};
//!
//! let config = MilvusConfig::new("milvus", "http://127.0.0.1:19530", "vectorgate_vectors");
//! let store = MilvusStore::connect(config)?; // no I/O: Milvus may be down
//! store.ensure_schema(&IndexSpec::new(768, Metric::Cosine)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//! - **Collection.** `id VARCHAR(64)` primary key (ids come from the
//!   caller, never auto-generated), `vector FLOAT_VECTOR(dim)`, `team_id`,
//!   `dataset_id`, `collection_id` `VARCHAR(64)`, `created_at_ms INT64` and
//!   `payload JSON` (`null` when the record has none). The vector field has
//!   an HNSW index (`M` and `efConstruction` from the [`IndexSpec`], metric
//!   `COSINE`, `IP` or `L2`); the scope fields have no scalar index (Milvus
//!   2.3.5 refuses `INVERTED`; its filters are evaluated on the segments).
//! - **No partition key.** `team_id` as Milvus' partition key would let a
//!   recall search only its team's partition, but Milvus 2.3.5 routes
//!   *upserted* rows to the wrong partition (they vanish from every
//!   team-filtered search and count; measured), and replacing upsert by
//!   delete + insert would make a replacement non-atomic. Teams are therefore
//!   a filtered scalar field of one partition; revisit on a Milvus whose
//!   upsert honours the partition key.
//! - **Schema check.** The dimension is read from the vector field and the
//!   metric from the vector index, so reopening a collection with another
//!   dimension or metric is [`Error::SchemaMismatch`]; the collection's
//!   description also states both, for people.
//! - **Read your writes.** Every read (recall, count, scan, and the reads
//!   that delete and scan make) runs with `Strong` consistency: Milvus'
//!   default, `Bounded`, returned no hits right after an insert for seconds.
//! - **Filters** are built by [`expr`] from validated ids only, every string
//!   literal escaped by one function.
//! - **Scores** follow vectorgate's convention: Milvus' `COSINE` and `IP`
//!   are similarities already; its `L2` is the *squared* distance, reported
//!   as `-sqrt(d)`.
//! - **Scan** pages are in ascending byte order of id, exactly once:
//!   Milvus' `query` does not order rows, so a page first narrows the id
//!   range until one query returns the whole range (ids only), sorts it,
//!   then fetches the page's rows (see [`MilvusStore::scan`]).
//! - **Deletes** first read the matching ids (strongly consistent, within
//!   the team), then delete them by primary key, so the count returned is the
//!   number of records that existed. The ids' locks (below) are held from
//!   the read to the delete, and a delete by scope reads its ids again
//!   within the team once it holds them, so a record another team created
//!   meanwhile under a freed id is never deleted.
//! - **Ids belong to their team.** Ids are unique across teams and a record
//!   never changes team. Milvus has no transactions, so an upsert first
//!   reads the team of each of its ids (`id in [...]`, strongly consistent)
//!   and, if another team holds one, fails with [`Error::Conflict`] on
//!   `records[i].id` (the first such record of the request) before writing
//!   anything. Check and write are made atomic among the calls of one
//!   [`MilvusStore`] (and its clones) by striped locks: each id hashes to
//!   one of 64 async mutexes, a call takes the stripes of its ids in
//!   ascending order (so calls never wait on each other in a cycle) and
//!   holds them across check and write (deletes across read and delete), so
//!   calls on distinct ids still run in parallel (a batch covering every
//!   stripe waits for all of them). Across separate processes writing one
//!   collection directly the check is **best effort**: two of them can
//!   still both create one fresh id, the later write winning, team
//!   included. vectorgate's manager applies each store's writes through one
//!   applier, so behind a manager the rule holds.
//! - **Connecting** is lazy: [`MilvusStore::connect`] does no I/O, the first
//!   call connects, and a failed connection is retried by the next call; once
//!   connected, the gRPC channel reconnects by itself after the server comes
//!   back. The SDK's client telemetry is off and its own retries are few and
//!   short (the failover manager retries and fails over).
//! - **Health** checks what serving needs: Milvus' own `CheckHealth` (which
//!   also reports quota states such as writes denied), and, once
//!   `ensure_schema` succeeded, the collection's load state: missing
//!   (dropped or renamed) or not loaded (released) is `Unavailable` naming
//!   the fix, so the manager fails over before callers see errors; loading
//!   (after a restart) is `Unavailable` until done. Errors are mapped in
//!   [`map_error`] (table of refusals there).
//! - **Empty answers are checked**: while a collection is being released,
//!   Milvus 2.3 answers searches and queries with no rows for a few hundred
//!   ms before it refuses them. An empty recall, a count of 0 or an empty
//!   scan page costs one `GetLoadState` call, and is `Unavailable` unless
//!   the collection is loaded.
//! - **Abandoned calls.** The manager stops waiting for an attempt after
//!   its `attempt_timeout_ms` and drops the call. Every RPC carries a gRPC
//!   deadline (`timeout_ms`, sent as `grpc-timeout`), and dropping the call
//!   resets its HTTP/2 stream, which cancels the request's context in the
//!   Milvus proxy: the server stops waiting on the work it scheduled for it
//!   (search, query, the consistency wait). A write already handed to
//!   Milvus' log is still applied — like a SQL statement that commits after
//!   its caller gave up: the caller was told `Timeout`, never "not written".

mod config;
mod errors;
pub mod expr;

pub use config::{MilvusConfig, is_valid_identifier};
pub use errors::map_error;

use async_trait::async_trait;
use milvus::v2::prelude::{CheckHealthRequest, Error as SdkError};
use milvus::v2::prelude::{
    ClientV2, CollectionSchema, ConnectConfig, ConsistencyLevel, CreateCollectionRequest,
    CreateIndexRequest, DataType, DeleteRequest, DescribeCollectionRequest, DescribeIndexRequest,
    DropCollectionRequest, FieldData, FieldSchema, GetLoadStateRequest, HasCollectionRequest, Ids,
    IndexParam, IndexType, InsertRequest, LoadCollectionRequest, LoadState, MetricType,
    QueryRequest, RetryConfig, SearchRequest, SearchVectors, TelemetryConfig, UpsertRequest,
};
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, Error, HealthReport, Hit, IndexSpec, Metric, RecallQuery, Record,
    Result, ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// Field names of the collection.
pub mod fields {
    /// Primary key, `VARCHAR(64)`.
    pub const ID: &str = "id";
    /// `FLOAT_VECTOR(dim)`, HNSW-indexed.
    pub const VECTOR: &str = "vector";
    /// `VARCHAR(64)`.
    pub const TEAM: &str = "team_id";
    /// `VARCHAR(64)`.
    pub const DATASET: &str = "dataset_id";
    /// `VARCHAR(64)`.
    pub const COLLECTION: &str = "collection_id";
    /// `INT64`, epoch milliseconds.
    pub const CREATED: &str = "created_at_ms";
    /// `JSON`: the payload object, or `null`.
    pub const PAYLOAD: &str = "payload";
}

use fields::{COLLECTION, CREATED, DATASET, ID, PAYLOAD, TEAM, VECTOR};

/// Milvus' largest `limit + offset` for a query (`maxQueryResultWindow`).
const QUERY_WINDOW: usize = 16_384;
/// Ids per `id in [...]` expression.
const IDS_PER_EXPR: usize = 4_096;
/// Upper bound on the bytes of one insert message (the proxy accepts 64 MiB).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How many times a scan page is rebuilt when a selected row vanished
/// (deleted concurrently) before it could be read.
const SCAN_ATTEMPTS: usize = 4;
/// Prefix of the collection description; the rest is `IndexSpec::describe`.
const DESCRIPTION_PREFIX: &str = "vectorgate index: ";
/// Per-id write locks: an id's lock is stripe `hash(id) % ID_LOCK_STRIPES`.
const ID_LOCK_STRIPES: usize = 64;

/// A vector store on one Milvus collection. Cheap to clone (an `Arc`);
/// every method takes `&self` and may run concurrently with the others.
///
/// Call [`VectorStore::ensure_schema`] once after [`MilvusStore::connect`]:
/// it creates or checks the collection and loads it; the data methods fail
/// with [`Error::Internal`] until it has succeeded.
#[derive(Clone)]
pub struct MilvusStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: MilvusConfig,
    connect: ConnectConfig,
    /// The connected client, once a connection succeeded.
    client: RwLock<Option<ClientV2>>,
    /// Serialises connection attempts.
    connecting: tokio::sync::Mutex<()>,
    /// The spec `ensure_schema` established.
    spec: RwLock<Option<IndexSpec>>,
    /// Striped per-id locks held across an upsert's owner check and write,
    /// and a delete's read and delete (see the crate docs).
    id_locks: Vec<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for MilvusStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MilvusStore")
            .field("config", &self.inner.config)
            .field("connected", &self.inner.client.read().is_some())
            .field("spec", &*self.inner.spec.read())
            .finish()
    }
}

impl MilvusStore {
    /// A store for `config`. Checks the configuration but does no I/O: the
    /// connection is made by the first call that needs it, so a store can be
    /// built (and handed to the manager) while Milvus is down.
    pub fn connect(config: MilvusConfig) -> Result<MilvusStore> {
        config.check()?;
        let mut connect = ConnectConfig::new()
            .uri(config.url.clone())
            .connect_timeout(config.connect_timeout())
            // Per attempt; the whole call is bounded by `timeout_ms` too.
            .rpc_timeout(config.timeout())
            .telemetry(TelemetryConfig::new().enabled(false))
            .retry(
                RetryConfig::new()
                    .max_attempts(2)
                    .initial_backoff(Duration::from_millis(20))
                    .max_backoff(Duration::from_millis(100))
                    .max_retry_timeout(config.timeout()),
            );
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            connect = connect.username(user.clone()).password(password.clone());
        }
        if let Some(database) = &config.database {
            connect = connect.database(database.clone());
        }
        Ok(MilvusStore {
            inner: Arc::new(Inner {
                config,
                connect,
                client: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                spec: RwLock::new(None),
                id_locks: (0..ID_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        })
    }

    /// The configuration this store was built with.
    pub fn config(&self) -> &MilvusConfig {
        &self.inner.config
    }

    fn name(&self) -> &str {
        &self.inner.config.name
    }

    fn collection(&self) -> &str {
        &self.inner.config.collection
    }

    fn err(&self, what: &str, err: &SdkError) -> Error {
        map_error(self.name(), what, err)
    }

    /// The connected client, connecting first if needed.
    async fn client(&self) -> Result<ClientV2> {
        if let Some(client) = self.inner.client.read().clone() {
            return Ok(client);
        }
        let _turn = self.inner.connecting.lock().await;
        if let Some(client) = self.inner.client.read().clone() {
            return Ok(client);
        }
        let client = ClientV2::new(&self.inner.connect)
            .await
            .map_err(|e| self.err(&format!("connect to {}", self.inner.config.url), &e))?;
        *self.inner.client.write() = Some(client.clone());
        Ok(client)
    }

    /// Runs `work` within `limit`, as a `Timeout` error when it does not finish.
    async fn within<T>(
        &self,
        what: &str,
        limit: Duration,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(
                self.name(),
                format!("{what} did not finish within {} ms", limit.as_millis()),
            )),
        }
    }

    fn spec(&self) -> Result<IndexSpec> {
        self.inner.spec.read().ok_or_else(|| {
            Error::internal(
                self.name(),
                "call ensure_schema first: the collection is not checked and loaded",
            )
        })
    }

    fn mismatch(&self, expected: &IndexSpec, found: String) -> Error {
        Error::SchemaMismatch {
            store: self.name().to_owned(),
            expected: expected.describe(),
            found,
        }
    }

    /// Drops the whole collection (every record of every team). For tests
    /// and administration; the store needs `ensure_schema` again afterwards.
    pub async fn drop_collection(&self) -> Result<()> {
        self.within(
            "drop_collection",
            self.inner.config.schema_timeout(),
            async {
                let client = self.client().await?;
                let request = DropCollectionRequest::builder()
                    .collection_name(self.collection())
                    .build()
                    .map_err(|e| self.err("drop_collection", &e))?;
                client
                    .drop_collection(request)
                    .await
                    .map_err(|e| self.err("drop_collection", &e))?;
                *self.inner.spec.write() = None;
                Ok(())
            },
        )
        .await
    }

    // ------------------------------------------------------------- schema

    async fn ensure_schema_inner(&self, spec: &IndexSpec) -> Result<()> {
        let client = self.client().await?;
        let name = self.collection();
        let exists = client
            .has_collection(
                HasCollectionRequest::builder()
                    .collection_name(name)
                    .build()
                    .map_err(|e| self.err("has_collection", &e))?,
            )
            .await
            .map_err(|e| self.err("has_collection", &e))?
            .exists();
        if !exists {
            let request = CreateCollectionRequest::builder()
                .collection_name(name)
                .description(format!("{DESCRIPTION_PREFIX}{}", spec.describe()))
                .schema(collection_schema(spec.dim))
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(|e| self.err("create_collection", &e))?;
            if let Err(e) = client.create_collection(request).await {
                // Another handle may have created it meanwhile: the checks
                // below decide.
                tracing::debug!(store = self.name(), error = %e, "create_collection failed");
            }
        }

        // The dimension, from the vector field.
        let described = client
            .describe_collection(
                DescribeCollectionRequest::builder()
                    .collection_name(name)
                    .build()
                    .map_err(|e| self.err("describe_collection", &e))?,
            )
            .await
            .map_err(|e| self.err("describe_collection", &e))?;
        let schema = described.description().get_schema();
        let field = |wanted: &str| schema.get_fields().iter().find(|f| f.get_name() == wanted);
        let Some(vector) = field(VECTOR).filter(|f| f.get_data_type() == DataType::FloatVector)
        else {
            return Err(Error::internal(
                self.name(),
                format!(
                    "collection {name:?} exists but is not a vectorgate collection: it has no FLOAT_VECTOR field {VECTOR:?}"
                ),
            ));
        };
        for (wanted, data_type) in [
            (ID, DataType::VarChar),
            (TEAM, DataType::VarChar),
            (DATASET, DataType::VarChar),
            (COLLECTION, DataType::VarChar),
            (CREATED, DataType::Int64),
            (PAYLOAD, DataType::Json),
        ] {
            if field(wanted).is_none_or(|f| f.get_data_type() != data_type) {
                return Err(Error::internal(
                    self.name(),
                    format!(
                        "collection {name:?} exists but is not a vectorgate collection: field {wanted:?} is missing or not {data_type:?}"
                    ),
                ));
            }
        }
        let dim = vector.get_dimension();
        if dim != spec.dim {
            let metric = self.index_metric(&client).await?;
            let found = match metric {
                Some(Ok(m)) => IndexSpec::new(dim, m).describe(),
                Some(Err(raw)) => format!("dim {dim}, metric {raw}"),
                None => format!("dim {dim}"),
            };
            return Err(self.mismatch(spec, found));
        }

        // The metric, from the index (created here when missing).
        match self.index_metric(&client).await? {
            Some(Ok(metric)) if metric == spec.metric => {}
            Some(Ok(metric)) => {
                return Err(self.mismatch(spec, IndexSpec::new(dim, metric).describe()));
            }
            Some(Err(raw)) => {
                return Err(self.mismatch(spec, format!("dim {dim}, metric {raw}")));
            }
            None => {
                let request = CreateIndexRequest::builder()
                    .collection_name(name)
                    .index_param(
                        IndexParam::new()
                            .field_name(VECTOR)
                            .index_type(IndexType::Hnsw)
                            .metric_type(metric_type(spec.metric))
                            .extra_params(HashMap::from([
                                ("M".to_owned(), spec.hnsw.m.to_string()),
                                (
                                    "efConstruction".to_owned(),
                                    spec.hnsw.ef_construction.to_string(),
                                ),
                            ])),
                    )
                    .sync(true)
                    .build()
                    .map_err(|e| self.err("create_index", &e))?;
                if let Err(e) = client.create_index(request).await {
                    // A concurrent ensure_schema may have won; re-check.
                    match self.index_metric(&client).await? {
                        Some(Ok(metric)) if metric == spec.metric => {}
                        Some(Ok(metric)) => {
                            return Err(self.mismatch(spec, IndexSpec::new(dim, metric).describe()));
                        }
                        _ => return Err(self.err("create_index", &e)),
                    }
                }
            }
        }

        let request = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .build()
            .map_err(|e| self.err("load_collection", &e))?;
        client
            .load_collection(request)
            .await
            .map_err(|e| self.err("load_collection", &e))?;
        *self.inner.spec.write() = Some(*spec);
        Ok(())
    }

    /// The metric of the vector field's index: `None` when there is no
    /// index, `Some(Err(raw))` for a metric vectorgate does not use.
    async fn index_metric(
        &self,
        client: &ClientV2,
    ) -> Result<Option<std::result::Result<Metric, String>>> {
        let request = DescribeIndexRequest::builder()
            .collection_name(self.collection())
            .field_name(VECTOR)
            .build()
            .map_err(|e| self.err("describe_index", &e))?;
        let indexes = match client.describe_index(request).await {
            Ok(response) => response,
            Err(SdkError::Server(e))
                if e.code() == 700 || e.reason().to_ascii_lowercase().contains("index not") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.err("describe_index", &e)),
        };
        Ok(indexes
            .indexes()
            .iter()
            .find(|index| index.get_field_name() == VECTOR)
            .map(|index| match index.get_metric_type() {
                MetricType::Cosine => Ok(Metric::Cosine),
                MetricType::Ip => Ok(Metric::InnerProduct),
                MetricType::L2 => Ok(Metric::L2),
                other => Err(format!("{other:?}")),
            }))
    }

    // --------------------------------------------------------------- reads

    /// Rows matching `filter` (ids only when `fields` is just `[ID]`), at
    /// most `limit`, in no particular order.
    async fn query(
        &self,
        client: &ClientV2,
        what: &str,
        filter: String,
        fields: &[&str],
        limit: usize,
    ) -> Result<milvus::v2::prelude::QueryResponse> {
        let request = QueryRequest::builder()
            .collection_name(self.collection())
            .filter(filter)
            .output_fields(fields.iter().copied())
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err(what, &e))?;
        client.query(request).await.map_err(|e| self.err(what, &e))
    }

    /// Ids matching `filter`, at most `limit`, unordered.
    async fn query_ids(
        &self,
        client: &ClientV2,
        what: &str,
        filter: String,
        limit: usize,
    ) -> Result<Vec<String>> {
        let response = self.query(client, what, filter, &[ID], limit).await?;
        let results = response.results();
        if results.get_row_count() == 0 {
            return Ok(Vec::new());
        }
        let ids = results
            .get_output_field(ID)
            .and_then(|f| f.as_varchar())
            .ok_or_else(|| self.malformed(what, "no id column"))?;
        Ok(ids.to_vec())
    }

    fn malformed(&self, what: &str, detail: &str) -> Error {
        Error::internal(
            self.name(),
            format!("{what}: unexpected response from Milvus: {detail}"),
        )
    }

    /// Full rows for `ids` (vectors when asked), keyed by id.
    async fn fetch_rows(
        &self,
        client: &ClientV2,
        ids: &[String],
        with_vectors: bool,
    ) -> Result<HashMap<String, Record>> {
        let mut fields = vec![ID, TEAM, DATASET, COLLECTION, CREATED, PAYLOAD];
        if with_vectors {
            fields.push(VECTOR);
        }
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_EXPR) {
            let response = self
                .query(
                    client,
                    "scan",
                    expr::one_of(ID, chunk),
                    &fields,
                    chunk.len(),
                )
                .await?;
            let results = response.results();
            if results.get_row_count() == 0 {
                continue;
            }
            let column = |name: &str| {
                results
                    .get_output_field(name)
                    .ok_or_else(|| self.malformed("scan", &format!("no {name} column")))
            };
            let text = |name: &str| {
                column(name)?
                    .as_varchar()
                    .ok_or_else(|| self.malformed("scan", &format!("{name} is not VARCHAR")))
            };
            let row_ids = text(ID)?;
            let teams = text(TEAM)?;
            let datasets = text(DATASET)?;
            let collections = text(COLLECTION)?;
            let created = column(CREATED)?
                .as_int64()
                .ok_or_else(|| self.malformed("scan", "created_at_ms is not INT64"))?;
            let payloads = column(PAYLOAD)?
                .as_json()
                .ok_or_else(|| self.malformed("scan", "payload is not JSON"))?;
            let vectors = if with_vectors {
                Some(
                    column(VECTOR)?
                        .as_float_vectors()
                        .ok_or_else(|| self.malformed("scan", "vector is not FLOAT_VECTOR"))?,
                )
            } else {
                None
            };
            let n = row_ids.len();
            if [
                teams.len(),
                datasets.len(),
                collections.len(),
                created.len(),
                payloads.len(),
            ]
            .iter()
            .any(|len| *len != n)
                || vectors.is_some_and(|v| v.len() != n)
            {
                return Err(self.malformed("scan", "columns of different lengths"));
            }
            for i in 0..n {
                let record = Record {
                    id: row_ids[i].clone(),
                    team_id: teams[i].clone(),
                    dataset_id: datasets[i].clone(),
                    collection_id: collections[i].clone(),
                    vector: vectors.map(|v| v[i].clone()).unwrap_or_default(),
                    created_at_ms: created[i],
                    payload: payload_from_json(&payloads[i]),
                };
                out.insert(record.id.clone(), record);
            }
        }
        Ok(out)
    }

    /// The `limit` smallest ids (byte order) matching `base` and above
    /// `after`, sorted.
    ///
    /// Milvus' `query` returns at most `window` rows in no promised order.
    /// When a query over the id range returns fewer than `window` rows it
    /// returned the whole range, which is then sorted. Otherwise the
    /// `limit`-th smallest id returned bounds the range from above (at least
    /// `limit` ids lie at or below it) and the query is repeated on the
    /// narrower range, which holds strictly fewer rows each time (the
    /// `window - limit` larger ids returned fall out of it).
    async fn smallest_ids(
        &self,
        client: &ClientV2,
        base: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let window = QUERY_WINDOW.min((2 * limit).max(limit + 1024));
        let mut upper: Option<String> = None;
        loop {
            let mut parts = base.to_vec();
            if let Some(after) = after {
                parts.push(expr::greater(ID, after));
            }
            if let Some(upper) = &upper {
                parts.push(expr::at_most(ID, upper));
            }
            let mut ids = self
                .query_ids(client, "scan", expr::and(&parts), window)
                .await?;
            let complete = ids.len() < window;
            ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            ids.dedup();
            if complete || ids.len() < limit {
                ids.truncate(limit);
                return Ok(ids);
            }
            upper = Some(ids.swap_remove(limit - 1));
        }
    }

    // -------------------------------------------------------------- writes

    /// Locks the stripes of `ids`, each once, in ascending order: two calls
    /// never wait on each other in a cycle. Held until the guards drop.
    async fn lock_ids<'a, S: AsRef<str>>(
        &'a self,
        ids: &[S],
    ) -> Vec<tokio::sync::MutexGuard<'a, ()>> {
        let stripes: BTreeSet<usize> = ids.iter().map(|id| stripe_of(id.as_ref())).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.inner.id_locks[stripe].lock().await);
        }
        guards
    }

    /// The request index of the first record whose id another team holds
    /// (`ids` are the prepared ids, one per input record).
    async fn taken_at(
        &self,
        client: &ClientV2,
        ids: &[String],
        records: &[Record],
    ) -> Result<Option<usize>> {
        let unique: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let unique: Vec<&str> = unique.into_iter().collect();
        let mut owners: HashMap<String, String> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(IDS_PER_EXPR) {
            let what = "upsert: check owners";
            let response = self
                .query(
                    client,
                    what,
                    expr::one_of(ID, chunk),
                    &[ID, TEAM],
                    chunk.len(),
                )
                .await?;
            let results = response.results();
            if results.get_row_count() == 0 {
                continue;
            }
            let text = |name: &str| {
                results
                    .get_output_field(name)
                    .and_then(|f| f.as_varchar())
                    .ok_or_else(|| self.malformed(what, &format!("no VARCHAR {name} column")))
            };
            let (found, teams) = (text(ID)?, text(TEAM)?);
            if found.len() != teams.len() {
                return Err(self.malformed(what, "columns of different lengths"));
            }
            owners.extend(found.iter().cloned().zip(teams.iter().cloned()));
        }
        Ok(ids
            .iter()
            .zip(records)
            .position(|(id, r)| owners.get(id).is_some_and(|team| *team != r.team_id)))
    }

    /// Refuses the upsert if another team holds one of its ids, then writes
    /// it; the ids' locks are held across both.
    async fn checked_upsert(
        &self,
        spec: &IndexSpec,
        ids: &[String],
        input: &[Record],
        records: &[Record],
    ) -> Result<()> {
        let _locks = self.lock_ids(ids).await;
        let client = self.client().await?;
        if let Some(i) = self.taken_at(&client, ids, input).await? {
            return Err(Error::id_taken(format!("records[{i}].id"), &ids[i]));
        }
        self.upsert_inner(spec, records).await
    }

    async fn upsert_inner(&self, spec: &IndexSpec, records: &[Record]) -> Result<()> {
        let client = self.client().await?;
        for batch in byte_batches(spec.dim, records) {
            let columns = vec![
                FieldData::varchar(ID, batch.iter().map(|r| r.id.clone()).collect()),
                FieldData::float_vector(VECTOR, batch.iter().map(|r| r.vector.clone()).collect()),
                FieldData::varchar(TEAM, batch.iter().map(|r| r.team_id.clone()).collect()),
                FieldData::varchar(
                    DATASET,
                    batch.iter().map(|r| r.dataset_id.clone()).collect(),
                ),
                FieldData::varchar(
                    COLLECTION,
                    batch.iter().map(|r| r.collection_id.clone()).collect(),
                ),
                FieldData::int64(CREATED, batch.iter().map(|r| r.created_at_ms).collect()),
                FieldData::json(
                    PAYLOAD,
                    batch
                        .iter()
                        .map(|r| r.payload.clone().unwrap_or(serde_json::Value::Null))
                        .collect(),
                ),
            ];
            let insert = InsertRequest::builder()
                .collection_name(self.collection())
                .columns(columns)
                .build()
                .map_err(|e| self.err("upsert", &e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| self.err("upsert", &e))?;
            client
                .upsert(request)
                .await
                .map_err(|e| self.err("upsert", &e))?;
        }
        Ok(())
    }

    /// Deletes these ids by primary key (they were read within the team).
    async fn delete_ids(&self, client: &ClientV2, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(IDS_PER_EXPR) {
            let request = DeleteRequest::builder()
                .collection_name(self.collection())
                .filter(expr::one_of(ID, chunk))
                .build()
                .map_err(|e| self.err("delete", &e))?;
            client
                .delete(request)
                .await
                .map_err(|e| self.err("delete", &e))?;
        }
        Ok(())
    }

    async fn delete_inner(&self, selector: &DeleteSelector) -> Result<u64> {
        let client = self.client().await?;
        let team = expr::eq(TEAM, selector.team_id());
        let mut removed = 0u64;
        match selector {
            DeleteSelector::Ids { ids, .. } => {
                let unique: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
                let unique: Vec<&str> = unique.into_iter().collect();
                // Held from the read to the delete: no upsert of this store
                // can hand one of these ids to another team in between.
                let _locks = self.lock_ids(&unique).await;
                for chunk in unique.chunks(IDS_PER_EXPR) {
                    let filter = expr::and(&[team.clone(), expr::one_of(ID, chunk)]);
                    let found = self
                        .query_ids(&client, "delete", filter, chunk.len())
                        .await?;
                    if !found.is_empty() {
                        self.delete_ids(&client, &found).await?;
                        removed += found.len() as u64;
                    }
                }
            }
            DeleteSelector::Scope {
                dataset_ids,
                collection_ids,
                ..
            } => {
                let mut parts = vec![team.clone(), expr::one_of(DATASET, dataset_ids)];
                if let Some(collections) = collection_ids {
                    parts.push(expr::one_of(COLLECTION, collections));
                }
                let filter = expr::and(&parts);
                // Each round deletes what it found; a strongly consistent
                // read no longer sees it, so the rounds end.
                loop {
                    let found = self
                        .query_ids(&client, "delete", filter.clone(), QUERY_WINDOW)
                        .await?;
                    if found.is_empty() {
                        break;
                    }
                    // The ids were read before their locks were held: read
                    // them again within the team under the locks, so an id
                    // freed and taken by another team meanwhile is left alone.
                    let _locks = self.lock_ids(&found).await;
                    let mut confirmed = Vec::with_capacity(found.len());
                    for chunk in found.chunks(IDS_PER_EXPR) {
                        let again = expr::and(&[team.clone(), expr::one_of(ID, chunk)]);
                        confirmed.extend(
                            self.query_ids(&client, "delete", again, chunk.len())
                                .await?,
                        );
                    }
                    if !confirmed.is_empty() {
                        self.delete_ids(&client, &confirmed).await?;
                        removed += confirmed.len() as u64;
                    }
                    if found.len() < QUERY_WINDOW {
                        break;
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn recall_inner(
        &self,
        spec: &IndexSpec,
        query: &RecallQuery,
        filter: &CollectionFilter,
    ) -> Result<Vec<Hit>> {
        let mut parts = vec![
            expr::eq(TEAM, &query.team_id),
            expr::one_of(DATASET, &query.dataset_ids),
        ];
        match filter {
            CollectionFilter::Any => {}
            CollectionFilter::Only(ids) => parts.push(expr::one_of(COLLECTION, ids)),
            CollectionFilter::Except(ids) => parts.push(expr::none_of(COLLECTION, ids)),
            CollectionFilter::Nothing => return Ok(Vec::new()),
        }
        let mut output = vec![DATASET, COLLECTION];
        if query.with_payload {
            output.push(PAYLOAD);
        }
        let ef = validate::effective_ef_search(spec, query);
        let client = self.client().await?;
        let request = SearchRequest::builder()
            .collection_name(self.collection())
            .vector_field(VECTOR)
            .vectors(SearchVectors::Float(vec![query.vector.clone()]))
            .filter(expr::and(&parts))
            .output_fields(output)
            .limit(i64::from(query.limit))
            .metric_type(metric_type(spec.metric))
            .extra_params(HashMap::from([("ef".to_owned(), ef.to_string())]))
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("recall", &e))?;
        let response = client
            .search(request)
            .await
            .map_err(|e| self.err("recall", &e))?;
        // Milvus 2.3.5 does not name the primary-key field in search results
        // (the SDK's row reader refuses them): read the columns directly.
        let Some(result) = response.results().get_results().first() else {
            return Ok(Vec::new());
        };
        let ids = match result.get_ids() {
            Ids::VarChar(ids) => ids.as_slice(),
            other if other.is_empty() => &[],
            _ => return Err(self.malformed("recall", "ids that are not VARCHAR")),
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let scores = result.get_scores();
        let column = |name: &str| {
            result
                .get_output_field(name)
                .ok_or_else(|| self.malformed("recall", &format!("no {name} column")))
        };
        let text = |name: &str| {
            column(name)?
                .as_varchar()
                .ok_or_else(|| self.malformed("recall", &format!("{name} is not VARCHAR")))
        };
        let datasets = text(DATASET)?;
        let collections = text(COLLECTION)?;
        let payloads = if query.with_payload {
            Some(
                column(PAYLOAD)?
                    .as_json()
                    .ok_or_else(|| self.malformed("recall", "payload is not JSON"))?,
            )
        } else {
            None
        };
        let n = ids.len();
        if scores.len() != n
            || datasets.len() != n
            || collections.len() != n
            || payloads.is_some_and(|p| p.len() != n)
        {
            return Err(self.malformed("recall", "columns of different lengths"));
        }
        let mut hits: Vec<Hit> = (0..n)
            .map(|i| Hit {
                id: ids[i].clone(),
                dataset_id: datasets[i].clone(),
                collection_id: collections[i].clone(),
                score: to_score(spec.metric, scores[i]),
                payload: payloads.and_then(|p| payload_from_json(&p[i])),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    async fn count_inner(&self, scope: &CountScope) -> Result<u64> {
        let mut parts = Vec::new();
        if let Some(team) = &scope.team_id {
            parts.push(expr::eq(TEAM, team));
        }
        if let Some(dataset) = &scope.dataset_id {
            parts.push(expr::eq(DATASET, dataset));
        }
        if let Some(collection) = &scope.collection_id {
            parts.push(expr::eq(COLLECTION, collection));
        }
        let client = self.client().await?;
        let request = QueryRequest::builder()
            .collection_name(self.collection())
            .filter(expr::and(&parts))
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("count", &e))?;
        let response = client
            .query(request)
            .await
            .map_err(|e| self.err("count", &e))?;
        Ok(response.results().get_row_count())
    }

    async fn scan_inner(&self, request: &ScanRequest) -> Result<ScanPage> {
        let mut base = Vec::new();
        if let Some(team) = &request.team_id {
            base.push(expr::eq(TEAM, team));
        }
        if let Some(from) = request.created_from_ms {
            base.push(expr::int_at_least(CREATED, from));
        }
        if let Some(to) = request.created_to_ms {
            base.push(expr::int_below(CREATED, to));
        }
        let limit = request.limit as usize;
        let client = self.client().await?;
        for _ in 0..SCAN_ATTEMPTS {
            let ids = self
                .smallest_ids(&client, &base, request.after_id.as_deref(), limit)
                .await?;
            let mut rows = self.fetch_rows(&client, &ids, request.with_vectors).await?;
            if rows.len() != ids.len() {
                // A selected record was deleted before its row was read: the
                // page would be short (ending the walk early); select again.
                continue;
            }
            let records: Vec<Record> = ids.iter().filter_map(|id| rows.remove(id)).collect();
            let next_cursor = if records.len() == limit {
                records.last().map(|r| r.id.clone())
            } else {
                None
            };
            return Ok(ScanPage {
                records,
                next_cursor,
            });
        }
        Err(Error::unavailable(
            self.name(),
            format!(
                "scan: records kept disappearing between selecting and reading a page ({SCAN_ATTEMPTS} attempts)"
            ),
        ))
    }

    /// An empty answer is checked before it is believed: while a collection
    /// is being released, Milvus 2.3 answers searches and queries with no
    /// rows (for a few hundred ms, before it starts refusing them with
    /// "collection not loaded"), and an empty answer is a wrong one then.
    /// One `GetLoadState` call, only for empty answers: a collection that is
    /// not loaded at that point makes the call `Unavailable`.
    async fn confirm_empty(&self, what: &str) -> Result<()> {
        let client = self.client().await?;
        let request = GetLoadStateRequest::builder()
            .collection_name(self.collection())
            .build()
            .map_err(|e| self.err(what, &e))?;
        let load = client
            .get_load_state(request)
            .await
            .map_err(|e| self.err(what, &e))?;
        match load.state() {
            LoadState::Loaded => Ok(()),
            other => Err(Error::unavailable(
                self.name(),
                format!(
                    "{what}: an empty answer while collection {} is {other:?}: not trusted \
                     (Milvus answers with no rows while a collection is being released); load \
                     the collection again",
                    self.collection()
                ),
            )),
        }
    }

    async fn health_inner(&self) -> Result<HealthReport> {
        let started = Instant::now();
        let client = self.client().await?;
        let request = CheckHealthRequest::builder()
            .build()
            .map_err(|e| self.err("health", &e))?;
        let response = client
            .check_health(request)
            .await
            .map_err(|e| self.err("health", &e))?;
        if !response.is_healthy() {
            return Err(Error::unavailable(
                self.name(),
                format!(
                    "Milvus reports unhealthy: {}",
                    response.reasons().join("; ")
                ),
            ));
        }
        // Once the schema is established, healthy also means "the collection
        // can serve": after a restart Milvus reloads it, and until then every
        // read fails.
        let mut detail = format!(
            "milvus {} collection {}",
            self.inner.config.url,
            self.collection()
        );
        if self.inner.spec.read().is_some() {
            let request = GetLoadStateRequest::builder()
                .collection_name(self.collection())
                .build()
                .map_err(|e| self.err("health", &e))?;
            let load = client
                .get_load_state(request)
                .await
                .map_err(|e| self.err("health", &e))?;
            match load.state() {
                LoadState::Loaded => detail.push_str(" (loaded)"),
                LoadState::Loading => {
                    return Err(Error::unavailable(
                        self.name(),
                        format!(
                            "collection {} is loading ({}%)",
                            self.collection(),
                            load.progress()
                        ),
                    ));
                }
                LoadState::NotLoad => {
                    return Err(Error::unavailable(
                        self.name(),
                        format!(
                            "collection {} is not loaded (released): load it again \
                             (`load_collection`, or pymilvus `Collection(name).load()`)",
                            self.collection()
                        ),
                    ));
                }
                other => {
                    return Err(Error::unavailable(
                        self.name(),
                        format!(
                            "collection {} is {other:?} (dropped or renamed behind the store): \
                             restore it, or let ensure_schema create it again and resync it \
                             from another store",
                            self.collection()
                        ),
                    ));
                }
            }
        }
        Ok(HealthReport {
            latency: started.elapsed(),
            detail,
        })
    }
}

#[async_trait]
impl VectorStore for MilvusStore {
    fn kind(&self) -> &'static str {
        "milvus"
    }

    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        validate::check_spec(spec)?;
        self.within(
            "ensure_schema",
            self.inner.config.schema_timeout(),
            self.ensure_schema_inner(spec),
        )
        .await
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let spec = self.spec()?;
        let prepared = validate::prepare_upsert(&spec, records, validate::now_ms())?;
        self.within(
            "upsert",
            self.inner.config.timeout(),
            self.checked_upsert(&spec, &prepared.ids, records, &prepared.records),
        )
        .await?;
        Ok(UpsertOutcome { ids: prepared.ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let spec = self.spec()?;
        let filter = validate::check_recall(&spec, query)?;
        if filter == CollectionFilter::Nothing {
            return Ok(Vec::new());
        }
        self.within("recall", self.inner.config.timeout(), async {
            let hits = self.recall_inner(&spec, query, &filter).await?;
            if hits.is_empty() {
                self.confirm_empty("recall").await?;
            }
            Ok(hits)
        })
        .await
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        validate::check_delete(selector)?;
        self.spec()?;
        self.within(
            "delete",
            self.inner.config.timeout(),
            self.delete_inner(selector),
        )
        .await
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        validate::check_count(scope)?;
        self.spec()?;
        self.within("count", self.inner.config.timeout(), async {
            let n = self.count_inner(scope).await?;
            if n == 0 {
                self.confirm_empty("count").await?;
            }
            Ok(n)
        })
        .await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        validate::check_scan(request)?;
        self.spec()?;
        self.within("scan", self.inner.config.timeout(), async {
            let page = self.scan_inner(request).await?;
            if page.records.is_empty() {
                self.confirm_empty("scan").await?;
            }
            Ok(page)
        })
        .await
    }

    async fn health(&self) -> Result<HealthReport> {
        self.within("health", self.inner.config.timeout(), self.health_inner())
            .await
    }
}

/// The collection's fields for vectors of `dim` values.
fn collection_schema(dim: u32) -> CollectionSchema {
    let varchar = |name: &str| {
        FieldSchema::new()
            .name(name)
            .data_type(DataType::VarChar)
            .max_length(validate::MAX_ID_LEN as u32)
    };
    CollectionSchema::new()
        .add_field(varchar(ID).primary_key(true).auto_id(false))
        .add_field(
            FieldSchema::new()
                .name(VECTOR)
                .data_type(DataType::FloatVector)
                .dimension(dim),
        )
        .add_field(varchar(TEAM))
        .add_field(varchar(DATASET))
        .add_field(varchar(COLLECTION))
        .add_field(FieldSchema::new().name(CREATED).data_type(DataType::Int64))
        .add_field(FieldSchema::new().name(PAYLOAD).data_type(DataType::Json))
}

fn metric_type(metric: Metric) -> MetricType {
    match metric {
        Metric::Cosine => MetricType::Cosine,
        Metric::InnerProduct => MetricType::Ip,
        Metric::L2 => MetricType::L2,
    }
}

/// Milvus' raw search score as vectorgate's score: `COSINE` and `IP` are
/// similarities already; `L2` is the squared distance, reported as
/// `-sqrt(d)` (clamped at 0 against rounding below zero).
pub fn to_score(metric: Metric, raw: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::InnerProduct => raw,
        Metric::L2 => -raw.max(0.0).sqrt(),
    }
}

fn payload_from_json(value: &serde_json::Value) -> Option<serde_json::Value> {
    match value {
        serde_json::Value::Null => None,
        other => Some(other.clone()),
    }
}

/// The lock stripe of `id` (FNV-1a, stable across runs).
fn stripe_of(id: &str) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % ID_LOCK_STRIPES as u64) as usize
}

/// Splits `records` into batches of at most [`MAX_BATCH_BYTES`] (estimated),
/// never empty.
fn byte_batches(dim: u32, records: &[Record]) -> Vec<&[Record]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, r) in records.iter().enumerate() {
        let size = dim as usize * 4
            + 4 * validate::MAX_ID_LEN
            + 8
            + r.payload
                .as_ref()
                .map_or(4, |p| serde_json::to_vec(p).map_or(0, |v| v.len()));
        if i > start && bytes + size > MAX_BATCH_BYTES {
            batches.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        batches.push(&records[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_convention() {
        assert_eq!(to_score(Metric::Cosine, 0.5), 0.5);
        assert_eq!(to_score(Metric::InnerProduct, -3.0), -3.0);
        assert_eq!(to_score(Metric::L2, 4.0), -2.0);
        assert_eq!(to_score(Metric::L2, -1e-7), 0.0);
    }

    #[test]
    fn batches_respect_the_byte_budget() {
        let record = |dim: usize| Record {
            id: "a".into(),
            team_id: "t".into(),
            dataset_id: "d".into(),
            collection_id: "c".into(),
            vector: vec![0.5; dim],
            created_at_ms: 1,
            payload: None,
        };
        let small: Vec<Record> = (0..1000).map(|_| record(8)).collect();
        assert_eq!(byte_batches(8, &small).len(), 1);
        let big: Vec<Record> = (0..1000).map(|_| record(16_000)).collect();
        let batches = byte_batches(16_000, &big);
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 1000);
        assert!(batches.iter().all(|b| !b.is_empty()));
        assert!(byte_batches(8, &[]).is_empty());
    }

    #[test]
    fn ids_spread_over_the_lock_stripes() {
        let mut used = BTreeSet::new();
        for i in 0..1000 {
            let stripe = stripe_of(&format!("id-{i}"));
            assert!(stripe < ID_LOCK_STRIPES);
            used.insert(stripe);
        }
        assert_eq!(used.len(), ID_LOCK_STRIPES, "1000 ids reach every stripe");
        assert_eq!(stripe_of("x"), stripe_of("x"));
    }

    #[tokio::test]
    async fn id_locks_are_taken_once_per_stripe() {
        let store =
            MilvusStore::connect(MilvusConfig::new("m", "http://127.0.0.1:1", "c")).unwrap();
        let ids: Vec<String> = (0..1000).map(|i| format!("id-{i}")).collect();
        let all = store.lock_ids(&ids).await;
        assert_eq!(all.len(), ID_LOCK_STRIPES);
        drop(all);
        // Duplicates and one stripe: one guard; another call on a distinct
        // stripe is not blocked by it.
        let a = store.lock_ids(&["a", "a"]).await;
        assert_eq!(a.len(), 1);
        let other = (0..100)
            .map(|i| format!("b{i}"))
            .find(|id| stripe_of(id) != stripe_of("a"))
            .unwrap();
        let b = tokio::time::timeout(Duration::from_secs(1), store.lock_ids(&[other]))
            .await
            .unwrap();
        assert_eq!(b.len(), 1);
        // The same stripe waits.
        let same = tokio::time::timeout(Duration::from_millis(50), store.lock_ids(&["a"])).await;
        assert!(same.is_err(), "a held stripe must block");
    }

    #[test]
    fn connect_does_no_io_and_checks_the_config() {
        let store =
            MilvusStore::connect(MilvusConfig::new("m", "http://127.0.0.1:1", "c")).unwrap();
        assert_eq!(store.kind(), "milvus");
        assert_eq!(VectorStore::name(&store), "m");
        let bad = MilvusStore::connect(MilvusConfig::new("m", "http://x", "bad-name"));
        assert!(matches!(bad, Err(Error::InvalidInput { .. })));
    }
}
