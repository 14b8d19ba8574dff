//! The shared backend conformance suite (`vectorgate-testkit`), run against
//! a real Milvus server (`bash scripts/services.sh up milvus`): one test per
//! check, each on collections of its own, dropped when the check ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use vectorgate::DynStore;
use vectorgate_milvus::MilvusStore;

/// Locations are collection names unique to the check (and the process);
/// the factory drops every collection it handed out when it is dropped,
/// which the generated test does when its check ends, passed or failed.
struct Factory {
    url: String,
    created: Mutex<Vec<String>>,
}

impl Factory {
    fn new(url: String) -> Self {
        Factory {
            url,
            created: Mutex::new(Vec::new()),
        }
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        common::drop_collections(&self.url, created);
    }
}

#[async_trait::async_trait]
impl vectorgate_testkit::StoreFactory for Factory {
    fn new_location(&self) -> String {
        let name = common::unique_collection("conf");
        self.created.lock().unwrap().push(name.clone());
        name
    }

    async fn open(&self, location: &str) -> DynStore {
        Arc::new(MilvusStore::connect(common::config(&self.url, location)).unwrap())
    }
}

// Without a server (and outside CI) each check prints why it is skipped and
// returns: `return` leaves the async block the generated test runs.
vectorgate_testkit::conformance_tests!(match common::milvus_url("conformance") {
    Some(url) => Factory::new(url),
    None => return,
});
