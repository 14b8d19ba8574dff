//! The shared backend conformance suite (`vectorgate-testkit`), run against
//! a real OceanBase (seekdb) server: one test per check, each on its own
//! tables. Skipped with a message when `VECTORGATE_TEST_OCEANBASE_URL` is
//! not set (a failure under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use tokio::sync::OnceCell;
use vectorgate::DynStore;

/// Locations are table names, unique across processes.
struct Factory {
    url: String,
}

impl Factory {
    /// `None` when the server is not configured (the test returns early).
    async fn from_env(check: &str) -> Option<Factory> {
        static CLEANED: OnceCell<()> = OnceCell::const_new();
        let url = common::url_or_skip(check)?;
        CLEANED
            .get_or_init(|| common::drop_stale_tables(&url))
            .await;
        Some(Factory { url })
    }
}

#[async_trait::async_trait]
impl vectorgate_testkit::StoreFactory for Factory {
    fn new_location(&self) -> String {
        common::unique_table()
    }

    async fn open(&self, location: &str) -> DynStore {
        Arc::new(common::store(&self.url, "oceanbase-conformance", location).await)
    }
}

// `return` leaves the generated test's async block: the check is skipped.
vectorgate_testkit::conformance_tests!(match Factory::from_env("oceanbase conformance").await {
    Some(factory) => factory,
    None => return,
});
