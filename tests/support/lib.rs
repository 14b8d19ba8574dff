//! Shared by the workspace-level tests: where the real servers are, how to
//! kill and restart them, and small polling helpers.
//!
//! Tests whose names start with `chaos_` kill shared servers; the test
//! command (`scripts/test.sh`) runs them after every other test, one at a
//! time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use vectorgate::{DynStore, IndexSpec, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

/// The URL in `var`. Under `CI=true` a missing service is a failure (panic);
/// elsewhere the test prints why it is skipped and gets `None`.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{var} is not set and CI=true: start the services with `bash scripts/services.sh up` \
             and `. target/services.env` (scripts/test.sh does both)"
        ),
        _ => {
            eprintln!(
                "skipping: {var} is not set (run `bash scripts/services.sh up && . target/services.env`)"
            );
            None
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap()
}

/// `bash scripts/services.sh <action> <service>`; panics if it fails.
pub fn services(action: &str, service: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/services.sh"))
        .args([action, service])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/services.sh {action} {service} failed: {status}"
    );
}

/// Starts `service` again when dropped, so a failing chaos test never leaves
/// a shared server down for the tests after it.
#[derive(Debug)]
pub struct RestartOnDrop(pub &'static str);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        services("up", self.0);
    }
}

/// SIGKILLs PostgreSQL's postmaster (the running cluster's, found through
/// its pid file) and waits until it is gone. Its backends notice and exit.
pub fn kill_postgres() {
    let output = Command::new("sh")
        .args([
            "-c",
            "cat /var/lib/postgresql/*/main/postmaster.pid 2>/dev/null | head -n 1",
        ])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no running PostgreSQL cluster found");
    kill_9(&pid);
}

/// `kill -9 <pid>`, then waits (up to 10 s) for the process to vanish.
pub fn kill_9(pid: &str) {
    let status = Command::new("kill").args(["-9", pid]).status().unwrap();
    assert!(status.success(), "kill -9 {pid} failed");
    for _ in 0..100 {
        let alive = Command::new("kill")
            .args(["-0", pid])
            .status()
            .unwrap()
            .success();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if !alive || zombie {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("process {pid} survived SIGKILL for 10 s");
}

/// An embedded store in `dir`, schema ensured.
pub async fn embedded(dir: &std::path::Path, name: &str, spec: &IndexSpec) -> Arc<EmbeddedStore> {
    let store = EmbeddedStore::open(EmbeddedConfig::new(name, dir.join(format!("{name}.db"))))
        .await
        .unwrap();
    store.ensure_schema(spec).await.unwrap();
    Arc::new(store)
}

/// Polls `check` every 50 ms until it holds; panics after `secs` seconds
/// with `what` and the last `describe()`.
pub async fn eventually(
    secs: u64,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
    describe: impl Fn() -> String,
) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {secs} s waiting for {what}; last state: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every id in `store`, walking `scan`.
pub async fn ids(
    store: &dyn VectorStore,
    team: Option<&str>,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = store
            .scan(&vectorgate::ScanRequest {
                after_id: cursor,
                team_id: team.map(str::to_owned),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// A type-erased store.
pub fn dyn_store<S: VectorStore>(store: Arc<S>) -> DynStore {
    store
}
