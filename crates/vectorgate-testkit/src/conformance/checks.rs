//! The checks, by theme, and the helpers they share. Each uses fresh
//! locations, seeded data and the spec from [`spec`], and panics with the
//! check's name on the first violation.

use super::StoreFactory;
use super::support::{
    BASE_MS, assert_contents, assert_count, assert_hits, assert_same_records, assert_well_formed,
    count, expect_conflict, expect_invalid, fresh_store, has_near_tie, is_uuid_v7, ok, query,
    random_vector, record, reference, rng, scan_all, scan_everything, spec, upsert,
    without_vectors,
};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use vectorgate::validate::{
    MAX_DELETE_IDS, MAX_EF_SEARCH, MAX_ID_LEN, MAX_PAYLOAD_BYTES, MAX_RECALL_LIMIT, MAX_SCAN_LIMIT,
    MAX_UPSERT_BATCH, now_ms,
};
use vectorgate::{
    CountScope, DeleteSelector, DynStore, Error, IndexSpec, Metric, RecallQuery, Record,
    ScanRequest,
};

const METRICS: [Metric; 3] = [Metric::Cosine, Metric::InnerProduct, Metric::L2];

mod ownership;
mod reads;
mod recall;
mod schema;
mod tenancy;
mod validation;
mod writes;

pub use ownership::{check_id_ownership_under_concurrency, check_ids_belong_to_their_team};
pub use reads::{check_count_scopes, check_empty_store, check_scan_paging_and_filters};
pub use recall::{
    check_collection_include_exclude, check_payload_round_trip, check_recall_matches_brute_force,
};
pub use schema::{check_health_and_identity, check_schema_mismatch_on_reopen};
pub use tenancy::{check_edge_ids, check_team_isolation};
pub use validation::{
    check_rejects_invalid_deletes, check_rejects_invalid_reads, check_rejects_invalid_recalls,
    check_rejects_invalid_specs, check_rejects_invalid_upserts,
};
pub use writes::{check_concurrent_use, check_delete_by_ids_and_scope, check_upsert_is_idempotent};

fn scaled_vector(rng: &mut StdRng, dim: u32) -> Vec<f32> {
    let scale = rng.random_range(0.25f32..4.0);
    random_vector(rng, dim)
        .into_iter()
        .map(|x| x * scale)
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn recall(store: &DynStore, q: &RecallQuery, ctx: &str) -> Vec<vectorgate::Hit> {
    ok(
        format!(
            "{ctx}: recall(team {:?}, datasets {:?}, include {:?}, exclude {:?}, limit {})",
            q.team_id, q.dataset_ids, q.collection_ids, q.exclude_collection_ids, q.limit
        ),
        store.recall(q).await,
    )
}

async fn delete(store: &DynStore, selector: DeleteSelector, ctx: &str) -> u64 {
    ok(
        format!("{ctx}: delete({selector:?})"),
        store.delete(&selector).await,
    )
}

fn ids_selector(team: &str, ids: &[&str]) -> DeleteSelector {
    DeleteSelector::Ids {
        team_id: team.to_owned(),
        ids: strings(ids),
    }
}

fn scope_selector(team: &str, datasets: &[&str], collections: Option<&[&str]>) -> DeleteSelector {
    DeleteSelector::Scope {
        team_id: team.to_owned(),
        dataset_ids: strings(datasets),
        collection_ids: collections.map(strings),
    }
}
