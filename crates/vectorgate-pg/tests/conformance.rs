//! The shared backend conformance suite (`vectorgate-testkit`) against
//! PostgreSQL + pgvector: one test per check, each location a fresh table.
//! Needs `VECTORGATE_TEST_PG_URL` (see `common::pg_url` for what happens
//! without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use parking_lot::Mutex;
use std::sync::Arc;
use vectorgate::DynStore;
use vectorgate_pg::{PgConfig, PgStore};

/// Hands out table names and drops every one of them when the check ends
/// (the factory is dropped at the end of each generated test, pass or fail).
struct Factory {
    url: String,
    tables: Mutex<Vec<String>>,
}

impl Factory {
    fn from_env() -> Option<Self> {
        Some(Factory {
            url: common::pg_url()?,
            tables: Mutex::new(Vec::new()),
        })
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        common::drop_tables_blocking(&self.url, std::mem::take(&mut *self.tables.lock()));
    }
}

#[async_trait::async_trait]
impl vectorgate_testkit::StoreFactory for Factory {
    fn new_location(&self) -> String {
        let table = common::unique_table("conf");
        self.tables.lock().push(table.clone());
        table
    }

    async fn open(&self, location: &str) -> DynStore {
        let mut config = PgConfig::new("pg-conformance", &self.url).with_table(location);
        config.acquire_timeout_ms = common::TEST_ACQUIRE_TIMEOUT_MS;
        Arc::new(PgStore::connect(config).await.unwrap())
    }
}

// Without a server (and outside CI) each check returns at once: the
// expression's `return` leaves the generated test's async block.
vectorgate_testkit::conformance_tests!(match Factory::from_env() {
    Some(factory) => factory,
    None => return,
});
