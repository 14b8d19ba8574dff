//! Shared by the failover tests that kill real database servers: a client
//! that keeps recalling through a manager and records who answered, what
//! failed and what was wrong, and a polling helper.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::Instant;
use tokio::task::JoinHandle;
use vectorgate::{RecallQuery, VectorManager};

/// What the client loop saw.
#[derive(Debug, Default, Clone)]
pub struct RecallLog {
    /// When each answer came and which store gave it.
    pub served_by: Vec<(Instant, String)>,
    /// Errors returned to the client.
    pub failures: Vec<String>,
    /// Answers that differed from the expected ids.
    pub wrong: Vec<String>,
}

impl RecallLog {
    /// Answers from `store` at or after `since`.
    pub fn served_since(&self, store: &str, since: Instant) -> usize {
        self.served_by
            .iter()
            .filter(|(t, s)| *t >= since && s == store)
            .count()
    }

    /// Answers from `store` in all.
    pub fn served_by(&self, store: &str) -> usize {
        self.served_by.iter().filter(|(_, s)| s == store).count()
    }

    /// Recalls made (answered or failed).
    pub fn total(&self) -> usize {
        self.served_by.len() + self.failures.len()
    }
}

/// A client recalling through a manager every `every`, cycling over
/// queries with known answers, until [`RecallClient::stop`].
#[derive(Debug)]
pub struct RecallClient {
    log: Arc<Mutex<RecallLog>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl RecallClient {
    /// Starts the loop; each query comes with the ids it must return.
    pub fn start(
        manager: Arc<VectorManager>,
        queries: Vec<(RecallQuery, Vec<String>)>,
        every: Duration,
    ) -> RecallClient {
        let log: Arc<Mutex<RecallLog>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (log, stop) = (log.clone(), stop.clone());
            async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) && !queries.is_empty() {
                    let (query, expected) = &queries[i % queries.len()];
                    i += 1;
                    let result = manager.recall_routed(query).await;
                    {
                        let mut log = log.lock();
                        match result {
                            Ok(routed) => {
                                let ids: Vec<String> =
                                    routed.value.iter().map(|h| h.id.clone()).collect();
                                if &ids != expected {
                                    log.wrong.push(format!(
                                        "{} answered {ids:?}, expected {expected:?}",
                                        routed.served_by
                                    ));
                                }
                                log.served_by.push((Instant::now(), routed.served_by));
                            }
                            Err(e) => log.failures.push(e.to_string()),
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            }
        });
        RecallClient { log, stop, task }
    }

    /// Answers from `store` at or after `since`, so far.
    pub fn served_since(&self, store: &str, since: Instant) -> usize {
        self.log.lock().served_since(store, since)
    }

    /// Stops the loop and returns everything it saw.
    pub async fn stop(self) -> RecallLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = self.task.await {
            panic!("the recall client panicked: {error}");
        }
        self.log.lock().clone()
    }
}

/// Polls `done` every 20 ms; panics after `limit` naming `what`.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `bash scripts/services.sh up <service>` from the repository root; returns
/// how long it took, or its output when it failed.
pub fn services_up(service: &str) -> Result<Duration, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .args(["scripts/services.sh", "up", service])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run scripts/services.sh: {e}"))?;
    if out.status.success() {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "scripts/services.sh up {service} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts the service again when dropped, so a chaos test that fails midway
/// leaves the shared server up for the tests after it.
#[derive(Debug)]
pub struct RestartOnDrop(pub &'static str);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if let Err(e) = services_up(self.0) {
            eprintln!("chaos guard: {e}");
        }
    }
}

/// SIGKILLs the process whose pid is in `pid_file`; returns the pid.
pub fn kill_pid_file(pid_file: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pid_file.display()));
    let pid: u32 = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds no pid: {e}", pid_file.display()));
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill -KILL {pid} failed");
    pid
}
