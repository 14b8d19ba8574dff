//! Shared by the Milvus integration tests: where the server is, unique
//! collection names, and dropping what a test created.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use vectorgate_milvus::{MilvusConfig, MilvusStore};

/// The variable `scripts/services.sh up milvus` writes to target/services.env.
pub const URL_ENV: &str = "VECTORGATE_TEST_MILVUS_URL";

/// The Milvus URL to test against, or `None` (with the reason printed) when
/// the variable is not set. Under CI (`CI=true`) a missing server is a
/// failure, not a skip.
pub fn milvus_url(test: &str) -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{test}: {URL_ENV} is not set under CI; run `bash scripts/services.sh up milvus && . target/services.env` first"
                );
            }
            eprintln!(
                "SKIPPED {test}: {URL_ENV} is not set (run `bash scripts/services.sh up milvus && . target/services.env`)"
            );
            None
        }
    }
}

/// A collection name no other test (in this or another process) uses.
pub fn unique_collection(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "vgt_{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config(url: &str, collection: &str) -> MilvusConfig {
    MilvusConfig {
        // Generous: a check's schema work queues behind others on 2 cores.
        timeout_ms: 60_000,
        ..MilvusConfig::new("milvus-test", url, collection)
    }
}

/// Drops `collections` from a thread of its own (with its own runtime), so
/// it works from `Drop`, inside or outside a runtime, even while unwinding.
pub fn drop_collections(url: &str, collections: Vec<String>) {
    if collections.is_empty() {
        return;
    }
    let url = url.to_owned();
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            for collection in collections {
                let Ok(store) = MilvusStore::connect(config(&url, &collection)) else {
                    continue;
                };
                if let Err(err) = store.drop_collection().await {
                    eprintln!("cleanup: dropping {collection}: {err}");
                }
            }
        });
    });
    let _ = worker.join();
}

/// Releases (`loaded == false`) or loads (and waits for) `collection`, as an
/// operator would, with the SDK directly.
pub async fn set_loaded(url: &str, collection: &str, loaded: bool) {
    use milvus::v2::prelude::{
        ClientV2, ConnectConfig, LoadCollectionRequest, ReleaseCollectionRequest,
    };
    let client = ClientV2::new(&ConnectConfig::new().uri(url.to_owned()))
        .await
        .expect("connect to Milvus");
    if loaded {
        let request = LoadCollectionRequest::builder()
            .collection_name(collection)
            .sync(true)
            .build()
            .expect("load request");
        client.load_collection(request).await.expect("load");
    } else {
        let request = ReleaseCollectionRequest::builder()
            .collection_name(collection)
            .build()
            .expect("release request");
        client.release_collection(request).await.expect("release");
    }
}
