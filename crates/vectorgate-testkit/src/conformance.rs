//! The backend conformance suite: the checks, the factory they get stores
//! from, and the macro that turns them into tests.
//!
//! See the [crate docs](crate) for the contract the checks enforce. Every
//! check is a public `async fn check_xxx(factory: &dyn StoreFactory)` that
//! panics, with a message naming the check and showing expected vs got, on
//! the first violation. [`CHECKS`] lists them all; [`run_all`] runs them in
//! sequence; [`conformance_tests!`](crate::conformance_tests) makes one test
//! of each.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

mod checks;
mod support;

#[cfg(test)]
mod mem_store;
#[cfg(test)]
mod tests;

pub use checks::{
    check_collection_include_exclude, check_concurrent_use, check_count_scopes,
    check_delete_by_ids_and_scope, check_edge_ids, check_empty_store, check_health_and_identity,
    check_id_ownership_under_concurrency, check_ids_belong_to_their_team, check_payload_round_trip,
    check_recall_matches_brute_force, check_rejects_invalid_deletes, check_rejects_invalid_reads,
    check_rejects_invalid_recalls, check_rejects_invalid_specs, check_rejects_invalid_upserts,
    check_scan_paging_and_filters, check_schema_mismatch_on_reopen, check_team_isolation,
    check_upsert_is_idempotent,
};

/// How the suite gets stores.
///
/// A "location" is whatever names independent storage for the backend: a
/// file path, a table name, a collection name.
#[async_trait::async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// A location no other test has used (fresh file / table / collection
    /// name). Must be unique across concurrently running tests, including
    /// tests in other processes sharing one database server.
    fn new_location(&self) -> String;

    /// Opens a handle on `location` WITHOUT calling `ensure_schema`. Opening
    /// the same location twice gives two handles on the same data (used for
    /// reopen checks).
    async fn open(&self, location: &str) -> vectorgate::DynStore;
}

#[async_trait::async_trait]
impl<F: StoreFactory + ?Sized> StoreFactory for Arc<F> {
    fn new_location(&self) -> String {
        (**self).new_location()
    }

    async fn open(&self, location: &str) -> vectorgate::DynStore {
        (**self).open(location).await
    }
}

#[async_trait::async_trait]
impl<F: StoreFactory + ?Sized> StoreFactory for Box<F> {
    fn new_location(&self) -> String {
        (**self).new_location()
    }

    async fn open(&self, location: &str) -> vectorgate::DynStore {
        (**self).open(location).await
    }
}

/// The future a check returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One check of the suite, by name.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's function name, e.g. `check_team_isolation`.
    pub name: &'static str,
    /// Runs the check; panics on a violation.
    pub run: for<'a> fn(&'a dyn StoreFactory) -> CheckFuture<'a>,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Lists every check, once, for both [`CHECKS`] and
/// [`conformance_tests!`](crate::conformance_tests): calls
/// `$crate::$callback!($($prefix)* check_a, check_b, ...)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($callback:ident ! ($($prefix:tt)*)) => {
        $crate::$callback!(
            $($prefix)*
            check_recall_matches_brute_force,
            check_collection_include_exclude,
            check_team_isolation,
            check_ids_belong_to_their_team,
            check_id_ownership_under_concurrency,
            check_delete_by_ids_and_scope,
            check_upsert_is_idempotent,
            check_count_scopes,
            check_scan_paging_and_filters,
            check_payload_round_trip,
            check_schema_mismatch_on_reopen,
            check_rejects_invalid_upserts,
            check_rejects_invalid_recalls,
            check_rejects_invalid_deletes,
            check_rejects_invalid_reads,
            check_rejects_invalid_specs,
            check_health_and_identity,
            check_edge_ids,
            check_empty_store,
            check_concurrent_use,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_check_list {
    ($($check:ident),+ $(,)?) => {
        /// Every check of the suite, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[$(
            Check {
                name: stringify!($check),
                run: |factory| Box::pin($crate::conformance::$check(factory)),
            },
        )+];
    };
}

crate::__conformance_checks!(__conformance_check_list!());

/// Runs every check in sequence on the current tokio runtime (which must be
/// able to spawn: a multi-thread runtime is best). Panics on the first
/// violation.
pub async fn run_all(factory: &dyn StoreFactory) {
    for check in CHECKS {
        (check.run)(factory).await;
    }
}

/// Generates one test per check, each calling `$factory` (an expression
/// evaluating to something implementing [`StoreFactory`], e.g.
/// `MyFactory::new()`), so the test runner shows each check by name and runs
/// them in parallel.
///
/// Each test runs on its own multi-thread tokio runtime with two workers
/// (what `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
/// builds), using the tokio this crate re-exports, so the calling crate need
/// not name tokio. The tests are defined where the macro is invoked; to run
/// the suite twice in one file (two factories), invoke it in two modules.
///
/// ```ignore
/// vectorgate_testkit::conformance_tests!(MyFactory::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__conformance_checks!(__conformance_tests!($factory;));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {$(
        #[test]
        fn $check() {
            $crate::conformance::__block_on(async {
                let factory = $factory;
                $crate::conformance::$check(&factory).await;
            });
        }
    )+};
}

/// Runs `future` to completion on a fresh multi-thread runtime with two
/// workers, as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
/// does. Used by [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
pub fn __block_on<F: Future<Output = ()>>(future: F) {
    crate::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("conformance: cannot build the tokio runtime")
        .block_on(future);
}
