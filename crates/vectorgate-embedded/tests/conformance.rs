//! The shared backend conformance suite (`vectorgate-testkit`), run against
//! the embedded store: one test per check, each on its own files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;
use vectorgate::DynStore;
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

/// Locations are SQLite files in one temporary directory per check, which
/// is removed when the check's factory is dropped.
struct Factory {
    dir: TempDir,
    next: AtomicUsize,
}

impl Factory {
    fn new() -> Self {
        Factory {
            dir: TempDir::new().unwrap(),
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl vectorgate_testkit::StoreFactory for Factory {
    fn new_location(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir
            .path()
            .join(format!("store-{n}/vectors.db"))
            .to_string_lossy()
            .into_owned()
    }

    async fn open(&self, location: &str) -> DynStore {
        Arc::new(
            EmbeddedStore::open(EmbeddedConfig::new("embedded-conformance", location))
                .await
                .unwrap(),
        )
    }
}

vectorgate_testkit::conformance_tests!(Factory::new());
