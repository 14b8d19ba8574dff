//! The shared conformance suite, run against a `VectorManager` over two
//! embedded stores with the replication journal on: the manager must be
//! indistinguishable from a single store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;
use tokio::sync::OnceCell;
use vectorgate::{
    CountScope, DeleteSelector, DynStore, Error, HealthReport, Hit, IndexSpec, ManagerConfig,
    RecallQuery, Record, Result, ScanPage, ScanRequest, UpsertOutcome, VectorManager, VectorStore,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

/// The suite opens a store and calls `ensure_schema` on it; a manager needs
/// its spec to start. This adapter starts the manager on `ensure_schema`.
struct LazyManager {
    dir: PathBuf,
    handle: usize,
    manager: OnceCell<VectorManager>,
}

impl LazyManager {
    fn get(&self) -> Result<&VectorManager> {
        self.manager
            .get()
            .ok_or_else(|| Error::internal("manager", "call ensure_schema first"))
    }
}

#[async_trait]
impl VectorStore for LazyManager {
    fn kind(&self) -> &'static str {
        "manager"
    }
    fn name(&self) -> &str {
        "manager-conformance"
    }
    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        if let Some(manager) = self.manager.get() {
            return manager.ensure_schema(spec).await;
        }
        vectorgate::validate::check_spec(spec)?;
        let mut stores: Vec<DynStore> = Vec::new();
        for name in ["primary", "fallback"] {
            let path = self.dir.join(format!("{name}.db"));
            stores.push(Arc::new(
                EmbeddedStore::open(EmbeddedConfig::new(name, path)).await?,
            ));
        }
        // One journal per handle: two handles on one location share the
        // stores' files, as two processes would, each with its own journal.
        let journal = self.dir.join(format!("journal-{}.db", self.handle));
        let config = ManagerConfig::new(*spec).with_journal(journal);
        let manager = VectorManager::start(config, stores).await?;
        // A concurrent ensure_schema may have won; keep one manager.
        if let Err(tokio::sync::SetError::AlreadyInitializedError(extra)) =
            self.manager.set(manager)
        {
            extra.shutdown().await;
        }
        Ok(())
    }
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        self.get()?.upsert(records).await
    }
    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        self.get()?.recall(query).await
    }
    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        self.get()?.delete(selector).await
    }
    async fn count(&self, scope: &CountScope) -> Result<u64> {
        self.get()?.count(scope).await
    }
    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        self.get()?.scan(request).await
    }
    async fn health(&self) -> Result<HealthReport> {
        self.get()?.health().await
    }
}

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

#[async_trait]
impl vectorgate_testkit::StoreFactory for Factory {
    fn new_location(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir
            .path()
            .join(format!("location-{n}"))
            .to_string_lossy()
            .into_owned()
    }

    async fn open(&self, location: &str) -> DynStore {
        Arc::new(LazyManager {
            dir: PathBuf::from(location),
            handle: self.next.fetch_add(1, Ordering::Relaxed),
            manager: OnceCell::new(),
        })
    }
}

vectorgate_testkit::conformance_tests!(Factory::new());
