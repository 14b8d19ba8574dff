//! The data model: what is stored, what is asked for, what comes back.
//!
//! One configuration is one logical index: a fixed dimension and metric
//! ([`IndexSpec`]). Records carry the three scope columns FastGPT's vector
//! layer filters on (`team_id`, `dataset_id`, `collection_id`); every backend
//! indexes them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How similarity is measured. Whatever the backend, a [`Hit::score`] is
/// *larger for more similar* vectors:
///
/// | metric | score |
/// |---|---|
/// | `Cosine` | cosine similarity, in `[-1, 1]` |
/// | `InnerProduct` | the inner product `a·b` |
/// | `L2` | the negative Euclidean distance `-‖a-b‖` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Cosine similarity.
    #[default]
    Cosine,
    /// Inner (dot) product.
    InnerProduct,
    /// Euclidean distance, reported negated.
    L2,
}

impl Metric {
    /// Stable lowercase name, as used in configuration and stored schemas.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "inner_product",
            Metric::L2 => "l2",
        }
    }

    /// Inverse of [`Metric::as_str`].
    pub fn parse(text: &str) -> Option<Metric> {
        match text {
            "cosine" => Some(Metric::Cosine),
            "inner_product" | "ip" => Some(Metric::InnerProduct),
            "l2" => Some(Metric::L2),
            _ => None,
        }
    }

    /// The score of `b` against `a` under the project's convention, computed
    /// naively in f64. Backends use faster kernels; tests and reference code
    /// use this.
    pub fn reference_score(self, a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        match self {
            Metric::InnerProduct => dot,
            Metric::Cosine => {
                let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                if na == 0.0 || nb == 0.0 {
                    0.0
                } else {
                    dot / (na * nb)
                }
            }
            Metric::L2 => {
                let sq: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                    .sum();
                -sq.sqrt()
            }
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HNSW graph parameters, for the backends that build an HNSW index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node (`m`). Default 16.
    pub m: u32,
    /// Candidate list size while building (`ef_construction`). Default 64.
    pub ef_construction: u32,
    /// Candidate list size while searching, unless a query says otherwise.
    /// Default 100: recall@10 near 1 on the sizes vectorgate targets.
    pub ef_search: u32,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 64,
            ef_search: 100,
        }
    }
}

/// The one logical index a configuration describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// Vector dimension, 1..=16000.
    pub dim: u32,
    /// Similarity metric.
    #[serde(default)]
    pub metric: Metric,
    /// HNSW parameters.
    #[serde(default)]
    pub hnsw: HnswParams,
}

impl IndexSpec {
    /// A spec with default HNSW parameters.
    pub fn new(dim: u32, metric: Metric) -> Self {
        IndexSpec {
            dim,
            metric,
            hnsw: HnswParams::default(),
        }
    }

    /// `dim 768, metric cosine`: how schema mismatches describe a spec.
    pub fn describe(&self) -> String {
        format!("dim {}, metric {}", self.dim, self.metric)
    }
}

/// One stored vector with its scope and optional payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Record {
    /// 1..=64 bytes of `[A-Za-z0-9._:-]`. Left empty, the library assigns a
    /// UUIDv7 before any store is written, so a record has the same id in
    /// every store.
    pub id: String,
    /// The tenant. Every read and delete is scoped to one team.
    pub team_id: String,
    /// FastGPT dataset (knowledge base).
    pub dataset_id: String,
    /// FastGPT collection (a file or source inside a dataset).
    pub collection_id: String,
    /// Exactly `dim` finite values.
    pub vector: Vec<f32>,
    /// Epoch milliseconds. 0 means "now": set once at write time by the
    /// library, then preserved when the record is copied between stores.
    pub created_at_ms: i64,
    /// Optional JSON object, at most 64 KiB serialized.
    pub payload: Option<serde_json::Value>,
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpsertOutcome {
    /// The ids written, in request order (generated where the request had none).
    pub ids: Vec<String>,
}

/// A similarity search, scoped to one team and at least one dataset.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecallQuery {
    /// The tenant.
    pub team_id: String,
    /// Datasets to search, at least one.
    pub dataset_ids: Vec<String>,
    /// The query vector, exactly `dim` finite values.
    pub vector: Vec<f32>,
    /// How many hits at most, 1..=1000.
    pub limit: u32,
    /// Include only these collections. `Some(empty)` after exclusions means
    /// "no collection qualifies": no hits, and no store is asked.
    pub collection_ids: Option<Vec<String>>,
    /// Never return hits from these collections.
    pub exclude_collection_ids: Vec<String>,
    /// Return each hit's payload.
    pub with_payload: bool,
    /// Override the index's HNSW `ef_search` for this query (1..=10000).
    pub ef_search: Option<u32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Record id.
    pub id: String,
    /// Its dataset.
    pub dataset_id: String,
    /// Its collection.
    pub collection_id: String,
    /// Larger is more similar; see [`Metric`].
    pub score: f32,
    /// The payload, when asked for and present.
    pub payload: Option<serde_json::Value>,
}

/// What to delete. Always within one team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum DeleteSelector {
    /// These records (1..=10000 ids), if they belong to the team.
    Ids {
        /// The tenant.
        team_id: String,
        /// Record ids.
        ids: Vec<String>,
    },
    /// Every record of these datasets, optionally only in these collections.
    Scope {
        /// The tenant.
        team_id: String,
        /// At least one dataset.
        dataset_ids: Vec<String>,
        /// When given (non-empty), only these collections.
        collection_ids: Option<Vec<String>>,
    },
}

impl DeleteSelector {
    /// The team this delete is confined to.
    pub fn team_id(&self) -> &str {
        match self {
            DeleteSelector::Ids { team_id, .. } | DeleteSelector::Scope { team_id, .. } => team_id,
        }
    }
}

/// Which records to count; `None` fields are unconstrained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CountScope {
    /// Only this team.
    pub team_id: Option<String>,
    /// Only this dataset.
    pub dataset_id: Option<String>,
    /// Only this collection.
    pub collection_id: Option<String>,
}

/// One page of a stable walk over every record, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanRequest {
    /// Only this team, when given.
    pub team_id: Option<String>,
    /// Only records created at or after this instant (epoch ms).
    pub created_from_ms: Option<i64>,
    /// Only records created strictly before this instant (epoch ms).
    pub created_to_ms: Option<i64>,
    /// Resume after this id (the previous page's `next_cursor`).
    pub after_id: Option<String>,
    /// Page size, 1..=10000.
    pub limit: u32,
    /// Include vectors (needed to copy records between stores).
    pub with_vectors: bool,
}

/// A page of records; `vector` is empty unless asked for, and `payload`
/// is always included.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanPage {
    /// Records in ascending id order (byte order).
    pub records: Vec<Record>,
    /// Pass as `after_id` for the next page; `None` when this was the last.
    pub next_cursor: Option<String>,
}

/// The result of a real round trip to a store.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// How long the round trip took.
    pub latency: Duration,
    /// Free-form detail (server version, row count...), for status pages.
    pub detail: String,
}
