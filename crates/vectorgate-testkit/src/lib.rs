//! Test kit for vectorgate backends.
//!
//! # The conformance suite
//!
//! [`conformance`] holds the contract every [`vectorgate::VectorStore`] must
//! pass *unchanged*: the embedded SQLite store, PostgreSQL + pgvector,
//! OceanBase, Milvus, and the failover manager over two stores. A backend
//! plugs in by implementing [`StoreFactory`] (how the suite gets fresh,
//! independent storage) and invoking [`conformance_tests!`] in an
//! integration test:
//!
//! ```ignore
//! // crates/my-backend/tests/conformance.rs
//! struct Factory { /* a temp dir, a connection URL, a name prefix... */ }
//!
//! #[async_trait::async_trait]
//! impl vectorgate_testkit::StoreFactory for Factory {
//!     fn new_location(&self) -> String { /* unique table / file / collection name */ }
//!     async fn open(&self, location: &str) -> vectorgate::DynStore { /* no ensure_schema */ }
//! }
//!
//! vectorgate_testkit::conformance_tests!(Factory::new());
//! ```
//!
//! That generates one test per check (named after it, e.g.
//! `check_team_isolation`), each on its own multi-thread tokio runtime with
//! two workers, so the runner shows every check by name and runs them in
//! parallel. [`conformance::run_all`] runs every check in sequence, from any
//! tokio runtime (handy to run the suite over a manager built in the test).
//!
//! # The contract, as checked
//!
//! Each check uses its own fresh location(s), small seeded data (dimension 8
//! or 16, at most 240 records per location) and an [`vectorgate::IndexSpec`]
//! whose `hnsw.ef_search` is 400, so that HNSW backends are exact: with
//! `ef_search` above the record count a search visits the whole graph.
//! Stores must read their own writes: a check recalls, counts and scans right
//! after the upsert or delete returns. Every failure message names the check
//! and its step, and shows expected vs got; in `assert_eq!` failures `left` is what the
//! store returned and `right` what the contract expects.
//!
//! - **Recall is exact and scored by convention.** Hits are the brute-force
//!   top-k computed with [`vectorgate::Metric::reference_score`], in that
//!   order, with scores within `1e-3 * max(1, |reference|)`: cosine
//!   similarity, the inner product, or the *negative* L2 distance, sorted by
//!   score descending. A hit's `dataset_id`/`collection_id` are its record's.
//!   A limit above the number of matches returns every match.
//! - **Scope.** Recall sees one team and the listed datasets only.
//!   `collection_ids` includes, `exclude_collection_ids` excludes (exclusion
//!   wins); an include list that is empty, or emptied by exclusions, gives
//!   `Ok(vec![])`.
//! - **Tenancy.** Recall, delete, team-scoped count and team-filtered scan
//!   never see or touch another team's records, even with identical dataset,
//!   collection ids, or record ids of the other team passed to a delete.
//! - **Writes.** Upsert is idempotent by id within the team that holds it,
//!   last write wins (dataset, collection, vector, payload and
//!   `created_at_ms` are replaced; a duplicate id within a batch keeps the
//!   last one). The team never changes: an upsert naming an id another
//!   team holds is `Error::Conflict` on `records[i].id` and writes nothing. It returns the ids in
//!   request order, with a fresh UUIDv7 for each empty id. `created_at_ms == 0`
//!   becomes "now"; any other value is stored exactly.
//! - **Deletes** return how many records were removed (unknown ids count 0),
//!   by ids, by datasets, by datasets and collections.
//! - **Counts** are exact for every combination of team, dataset and collection.
//! - **Scan** walks records in ascending *byte* order of id (so `"B" < "_" < "a"`:
//!   SQL backends need a binary collation), each exactly once whatever the page
//!   size; a page with `next_cursor: Some(c)` is full and `c` is its last id;
//!   an empty or short page ends the walk with `None`. `after_id` need not
//!   exist. `created_from_ms` is inclusive, `created_to_ms` exclusive.
//!   Vectors come back bit-exact when asked for and empty otherwise; payloads
//!   and `created_at_ms` always come back exactly.
//! - **Payloads** (nested JSON objects, unicode, escapes) round-trip through
//!   recall (`with_payload: true`; `None` with `false`) and scan.
//! - **Schema.** `ensure_schema` is idempotent, ignores a different
//!   `ef_search`, and on a location holding another dimension or metric fails
//!   with `Error::SchemaMismatch` (`expected` names the requested spec,
//!   `found` the stored dimension); data survives reopening.
//! - **Validation.** Every rule of [`vectorgate::validate`] is enforced before
//!   any I/O: each bad request returns `Error::InvalidInput` naming exactly the
//!   field `vectorgate::validate` names, and changes nothing (a batch with one
//!   bad record writes none of them).
//! - **Ids** at the edges of the charset (64 bytes, `...`, `x--y`, `x_y`
//!   next to `xay`, `1:2:3`, numeric-looking ids) round-trip everywhere and
//!   are never treated as patterns.
//! - **Concurrency.** Two handles may run `ensure_schema` on one fresh
//!   location at once; concurrent upserts, recalls and deletes from several
//!   tasks lose nothing.
//! - **Health.** `health()` makes a round trip and reports its latency;
//!   `kind()` and `name()` are non-empty.
//!
//! The suite checks itself: the crate's own tests run it against a tiny
//! brute-force in-memory store and against [`memory::MemoryStore`], and run
//! each check against deliberately broken variants of the former (ignoring the
//! team filter, L2 scored as a positive distance, partial batches, locale
//! ordering, SQL `LIKE` ids, lost concurrent updates...) that it must reject.

// A test kit fails by panicking: every assertion is a panic with a message
// naming the check, and unwrapping a store's result is the point. The
// workspace denies these lints for production code only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod conformance;
pub mod fault;
pub mod memory;
pub mod walk;

pub use conformance::{StoreFactory, run_all};

/// The tokio the generated tests run on, so that [`conformance_tests!`] works
/// in crates that do not depend on tokio themselves.
#[doc(hidden)]
pub use tokio;
