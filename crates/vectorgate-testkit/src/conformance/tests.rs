//! The suite, tested: it passes on a correct store, and every check fails on
//! at least one deliberately broken store, with a message naming the check.

use super::mem_store::{Fault, MemFactory};
use super::{CHECKS, run_all};
use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

/// The macro, exactly as a backend uses it: one test per check.
mod suite {
    crate::conformance_tests!(super::super::mem_store::MemFactory::new());
}

/// The crate's public [`MemoryStore`](crate::memory::MemoryStore) (the
/// manager tests' store) passes too: a location is one shared instance.
mod public_memory_store {
    use crate::StoreFactory;
    use crate::memory::MemoryStore;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use vectorgate::DynStore;

    #[derive(Debug, Default)]
    struct Factory {
        next: AtomicU64,
        stores: Mutex<HashMap<String, Arc<MemoryStore>>>,
    }

    #[async_trait::async_trait]
    impl StoreFactory for Factory {
        fn new_location(&self) -> String {
            format!("memory-{}", self.next.fetch_add(1, Ordering::Relaxed))
        }

        async fn open(&self, location: &str) -> DynStore {
            let mut stores = self.stores.lock().unwrap();
            let store = stores
                .entry(location.to_owned())
                .or_insert_with(|| Arc::new(MemoryStore::new(location)));
            store.clone()
        }
    }

    crate::conformance_tests!(Factory::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_a_correct_store() {
    // Through `Arc`, to exercise the blanket impl too.
    run_all(&Arc::new(MemFactory::new())).await;
}

#[test]
fn checks_are_listed_once() {
    let names: HashSet<&str> = CHECKS.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), CHECKS.len(), "a check is listed twice");
    assert!(CHECKS.len() >= 20, "{} checks", CHECKS.len());
    assert!(CHECKS.iter().all(|c| c.name.starts_with("check_")));
}

/// (bug, the check that must catch it, a fragment its panic message must contain).
const MUTANTS: &[(Fault, &str, &str)] = &[
    (
        Fault::RecallIgnoresTeam,
        "check_team_isolation",
        "outside the query's scope",
    ),
    (
        Fault::RecallIgnoresTeam,
        "check_recall_matches_brute_force",
        "outside the query's scope",
    ),
    (
        Fault::CountIgnoresTeam,
        "check_count_scopes",
        "count(team Some(\"t-1\")",
    ),
    (
        Fault::CountIgnoresTeam,
        "check_team_isolation",
        "count(team Some(\"team-a\")",
    ),
    (
        Fault::DeleteIgnoresTeam,
        "check_team_isolation",
        "must remove nothing",
    ),
    (
        Fault::ScanIgnoresTeam,
        "check_team_isolation",
        "scan with team filter",
    ),
    (
        Fault::ScanIgnoresTeam,
        "check_scan_paging_and_filters",
        "scan of team",
    ),
    (
        Fault::L2AsPositiveDistance,
        "check_recall_matches_brute_force",
        "[l2]",
    ),
    (
        Fault::CosineAsDistance,
        "check_recall_matches_brute_force",
        "[cosine]",
    ),
    (
        Fault::AscendingHits,
        "check_recall_matches_brute_force",
        "descending",
    ),
    (
        Fault::DropsLastHit,
        "check_recall_matches_brute_force",
        "wrong number of hits",
    ),
    (
        Fault::IgnoresExclusions,
        "check_collection_include_exclude",
        "outside the query's scope",
    ),
    (
        Fault::EmptiedIncludeMeansAll,
        "check_collection_include_exclude",
        "must match nothing",
    ),
    (
        Fault::ScanAfterInclusive,
        "check_scan_paging_and_filters",
        "not after it in byte order",
    ),
    (
        Fault::ScanIgnoresCreatedTo,
        "check_scan_paging_and_filters",
        "scan created in",
    ),
    (
        Fault::ScanCaseInsensitiveOrder,
        "check_scan_paging_and_filters",
        "byte order",
    ),
    (
        Fault::ScanCaseInsensitiveOrder,
        "check_edge_ids",
        "byte order",
    ),
    (
        Fault::ScanDropsVectors,
        "check_scan_paging_and_filters",
        "with_vectors: true returned an empty vector",
    ),
    (
        Fault::ScanAlwaysCursor,
        "check_scan_paging_and_filters",
        "a short page must end the walk",
    ),
    (
        Fault::FirstWriteWins,
        "check_upsert_is_idempotent",
        "after upserting r-1 twice",
    ),
    (
        Fault::PartialBatch,
        "check_rejects_invalid_upserts",
        "upsert with",
    ),
    (
        Fault::OverwritesCreatedAt,
        "check_upsert_is_idempotent",
        "differs",
    ),
    (
        Fault::OverwritesCreatedAt,
        "check_scan_paging_and_filters",
        "differs",
    ),
    (
        Fault::SequentialIds,
        "check_upsert_is_idempotent",
        "must be a UUIDv7",
    ),
    (
        Fault::RecallSkipsValidation,
        "check_rejects_invalid_recalls",
        "on field \"limit\"",
    ),
    (
        Fault::NoSchemaCheck,
        "check_schema_mismatch_on_reopen",
        "expected Error::SchemaMismatch, got Ok",
    ),
    (
        Fault::NoSchemaCheck,
        "check_rejects_invalid_specs",
        "expected SchemaMismatch",
    ),
    (
        Fault::ForgetsOnReopen,
        "check_schema_mismatch_on_reopen",
        "reopened location",
    ),
    (
        Fault::SpecNotValidated,
        "check_rejects_invalid_specs",
        "on field \"dim\"",
    ),
    (
        Fault::DeleteCountsRequested,
        "check_delete_by_ids_and_scope",
        "number of records removed",
    ),
    (
        Fault::DeleteLikePattern,
        "check_edge_ids",
        "delete of id \"x_y\"",
    ),
    (
        Fault::DeleteBeforeValidation,
        "check_rejects_invalid_deletes",
        "a valid id then a bad one",
    ),
    (
        Fault::ScanAcceptsZeroLimit,
        "check_rejects_invalid_reads",
        "scan with limit 0",
    ),
    (
        Fault::DropsPayload,
        "check_payload_round_trip",
        "payload of",
    ),
    (Fault::HealthFails, "check_health_and_identity", "health()"),
    (
        Fault::CountIgnoresCollection,
        "check_count_scopes",
        "collection Some(\"c-",
    ),
    (
        Fault::EmptyIndexErrors,
        "check_empty_store",
        "the store returned an error",
    ),
    (Fault::LostUpdates, "check_concurrent_use", "missing"),
    (
        Fault::TeamTakeover,
        "check_ids_belong_to_their_team",
        "expected Error::Conflict on field \"records[1].id\", but the call succeeded",
    ),
    (
        Fault::TeamTakeover,
        "check_id_ownership_under_concurrency",
        "took over",
    ),
    (
        Fault::TeamTakeover,
        "check_upsert_is_idempotent",
        "writing r-1 in another team",
    ),
    (
        Fault::ConflictAfterPartialWrite,
        "check_ids_belong_to_their_team",
        "a refused upsert must write nothing",
    ),
    (
        Fault::ConflictAfterPartialWrite,
        "check_id_ownership_under_concurrency",
        "must remove nothing",
    ),
    (
        Fault::RacyOwnershipCheck,
        "check_id_ownership_under_concurrency",
        "by both teams succeeded",
    ),
];

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|_| "<non-string panic>".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_fails_on_a_broken_store() {
    for check in CHECKS {
        assert!(
            MUTANTS.iter().any(|m| m.1 == check.name),
            "no broken store proves that {} can fail",
            check.name
        );
    }
    let mut problems = Vec::new();
    for &(fault, name, fragment) in MUTANTS {
        let Some(check) = CHECKS.iter().find(|c| c.name == name).copied() else {
            panic!("unknown check {name}")
        };
        let outcome = tokio::spawn(async move {
            let factory = MemFactory::with_fault(fault);
            (check.run)(&factory).await;
        })
        .await;
        match outcome {
            Ok(()) => problems.push(format!("{name} passed on a store with {fault:?}")),
            Err(err) if err.is_panic() => {
                let message = panic_message(err.into_panic());
                if !message.contains(name) || !message.contains(fragment) {
                    problems.push(format!(
                        "{name} failed on {fault:?}, but its message lacks the check name or {fragment:?}:\n{message}"
                    ));
                }
            }
            Err(err) => problems.push(format!("{name} on {fault:?}: {err}")),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}
