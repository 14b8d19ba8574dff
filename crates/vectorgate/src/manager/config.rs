//! Manager configuration: plain structs with documented defaults, readable
//! from TOML. Every duration is in milliseconds (`*_ms`), so a config file
//! never needs a unit parser.

use crate::error::{Error, Result};
use crate::model::IndexSpec;
use crate::validate;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the [`crate::VectorManager`] needs besides its stores.
///
/// ```toml
/// name = "vectors"
/// [index]
/// dim = 1536
/// metric = "cosine"
/// [health]
/// probe_interval_ms = 2000
/// [breaker]
/// open_ms = 5000
/// [retry]
/// attempts = 3
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// Name of the manager in logs and metrics. Default `manager`.
    #[serde(default = "default_name")]
    pub name: String,
    /// The one logical index every store holds.
    pub index: IndexSpec,
    /// Background health probing.
    #[serde(default)]
    pub health: HealthConfig,
    /// When a store is taken out of rotation and when it comes back.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Retries, timeouts and the per-request deadline.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The journal that keeps every store in sync.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

fn default_name() -> String {
    "manager".to_owned()
}

impl ManagerConfig {
    /// A config with every default and this index.
    pub fn new(index: IndexSpec) -> Self {
        ManagerConfig {
            name: default_name(),
            index,
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            replication: ReplicationConfig::default(),
        }
    }

    /// The same config with replication through a journal at `path`
    /// (mode `async`).
    pub fn with_journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.replication.mode = ReplicationMode::Async;
        self.replication.journal_path = Some(path.into());
        self
    }

    /// The same config without a journal (mode `off`): writes go to the
    /// serving store only and nothing copies them to the others.
    pub fn without_replication(mut self) -> Self {
        self.replication.mode = ReplicationMode::Off;
        self
    }

    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: ManagerConfig =
            toml::from_str(text).map_err(|e| Error::invalid("config", e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks every value; the manager refuses to start on a bad config.
    pub fn check(&self) -> Result<()> {
        validate::check_spec(&self.index)?;
        let positive = [
            ("health.probe_interval_ms", self.health.probe_interval_ms),
            ("health.probe_timeout_ms", self.health.probe_timeout_ms),
            ("breaker.open_ms", self.breaker.open_ms),
            ("retry.attempt_timeout_ms", self.retry.attempt_timeout_ms),
            ("retry.deadline_ms", self.retry.deadline_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::invalid(field, "must be greater than 0"));
            }
        }
        let b = &self.breaker;
        if b.consecutive_failures == 0 {
            return Err(Error::invalid(
                "breaker.consecutive_failures",
                "must be >= 1",
            ));
        }
        if b.window == 0 || b.window > 1000 {
            return Err(Error::invalid(
                "breaker.window",
                format!("is {}, must be 1..=1000", b.window),
            ));
        }
        if b.min_calls == 0 || b.min_calls > b.window {
            return Err(Error::invalid(
                "breaker.min_calls",
                format!("is {}, must be 1..=window ({})", b.min_calls, b.window),
            ));
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(Error::invalid(
                "breaker.failure_ratio",
                format!("is {}, must be in (0, 1]", b.failure_ratio),
            ));
        }
        if b.close_after_successes == 0 {
            return Err(Error::invalid(
                "breaker.close_after_successes",
                "must be >= 1",
            ));
        }
        let r = &self.retry;
        if r.attempts == 0 || r.attempts > 10 {
            return Err(Error::invalid(
                "retry.attempts",
                format!("is {}, must be 1..=10", r.attempts),
            ));
        }
        if r.max_delay_ms < r.base_delay_ms {
            return Err(Error::invalid(
                "retry.max_delay_ms",
                format!(
                    "is {}, below retry.base_delay_ms ({})",
                    r.max_delay_ms, r.base_delay_ms
                ),
            ));
        }
        let rep = &self.replication;
        if rep.mode != ReplicationMode::Off && rep.journal_path.is_none() {
            return Err(Error::invalid(
                "replication.journal_path",
                format!(
                    "is required when replication.mode is {:?}; set mode = \"off\" to run without a journal",
                    rep.mode.as_str()
                ),
            ));
        }
        let limits = [
            (
                "replication.max_batch_records",
                rep.max_batch_records,
                1,
                100_000,
            ),
            ("replication.queue", rep.queue, 1, 1_000_000),
            (
                "replication.apply_parallelism",
                rep.apply_parallelism,
                1,
                64,
            ),
        ];
        for (field, value, min, max) in limits {
            if !(min..=max).contains(&value) {
                return Err(Error::invalid(
                    field,
                    format!("is {value}, must be {min}..={max}"),
                ));
            }
        }
        if rep.dead_letter_after == 0 {
            return Err(Error::invalid(
                "replication.dead_letter_after",
                "must be >= 1",
            ));
        }
        let byte_limits = [
            ("replication.max_queue_bytes", rep.max_queue_bytes, 1 << 20),
            (
                "replication.max_journal_bytes",
                rep.max_journal_bytes,
                1 << 20,
            ),
            ("replication.max_dead_letters", rep.max_dead_letters, 1),
        ];
        for (field, value, min) in byte_limits {
            if value < min {
                return Err(Error::invalid(
                    field,
                    format!("is {value}, must be at least {min}"),
                ));
            }
        }
        Ok(())
    }
}

/// How writes reach the stores that do not serve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// Acknowledge once the serving store applied the write and the journal
    /// holds it for the others (default).
    #[default]
    Async,
    /// Acknowledge once every healthy, caught-up store applied it; stores
    /// that are down get it from the journal later.
    Sync,
    /// No journal: writes reach only the store that serves them.
    Off,
}

impl ReplicationMode {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
            ReplicationMode::Off => "off",
        }
    }
}

/// The write pipeline and the replicators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `async` (default), `sync` or `off`.
    pub mode: ReplicationMode,
    /// The journal file (SQLite). Required unless `mode = "off"`.
    pub journal_path: Option<PathBuf>,
    /// Most records one group commit takes from the queue. Default 4000.
    pub max_batch_records: usize,
    /// Writes waiting for the pipeline before callers wait. Default 1024.
    pub queue: usize,
    /// How long a read waits for its store to apply every acknowledged
    /// write before it is answered anyway. Default 2000 ms.
    pub catchup_wait_ms: u64,
    /// Attempts before an entry a store refuses goes to its dead letters.
    /// Default 5.
    pub dead_letter_after: u32,
    /// Concurrent store calls one group commit of distinct-id upserts is
    /// applied with (1..=64). Default 8.
    pub apply_parallelism: usize,
    /// Bytes of writes waiting for the pipeline (the queue is bounded by
    /// this as well as by `queue`; a larger request waits until the queue
    /// is empty). Default 256 MiB.
    pub max_queue_bytes: u64,
    /// Bytes the journal may hold for stores that are behind. A store that
    /// falls further behind is held out of rotation as needing a resync
    /// (status and log say so) instead of the journal growing without
    /// bound. Default 1 GiB.
    pub max_journal_bytes: u64,
    /// Dead letters one store may keep; past that the store is held as
    /// needing a resync and its dead letters are dropped. Default 10 000.
    pub max_dead_letters: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            mode: ReplicationMode::Async,
            journal_path: None,
            max_batch_records: 4000,
            queue: 1024,
            catchup_wait_ms: 2000,
            dead_letter_after: 5,
            apply_parallelism: 8,
            max_queue_bytes: 256 << 20,
            max_journal_bytes: 1 << 30,
            max_dead_letters: 10_000,
        }
    }
}

/// Background probing: one task per store calls `health()` on this period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between two probes of one store. Default 2000 ms.
    pub probe_interval_ms: u64,
    /// A probe slower than this is a failure. Default 1000 ms.
    pub probe_timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval_ms: 2000,
            probe_timeout_ms: 1000,
        }
    }
}

impl HealthConfig {
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

/// Circuit breaker thresholds (per store).
///
/// Closed → Open after `consecutive_failures` failures in a row, or when at
/// least `min_calls` of the last `window` calls were made and the share of
/// failures among them is `>= failure_ratio`. Open → HalfOpen after
/// `open_ms`. HalfOpen → Closed after `close_after_successes` successful
/// trial probes in a row; any failed trial → Open again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Default 3.
    pub consecutive_failures: u32,
    /// Default 0.5.
    pub failure_ratio: f64,
    /// Size of the sliding window of recent outcomes. Default 20.
    pub window: usize,
    /// Outcomes needed in the window before the ratio applies. Default 10.
    pub min_calls: usize,
    /// How long a tripped breaker keeps the store out. Default 5000 ms.
    pub open_ms: u64,
    /// Successful trials needed to close again (hysteresis). Default 3.
    pub close_after_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window: 20,
            min_calls: 10,
            open_ms: 5000,
            close_after_successes: 3,
        }
    }
}

/// Retries and time limits for one caller request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts on one store before moving to the next. Default 3.
    pub attempts: u32,
    /// First backoff ceiling; each retry doubles it (full jitter). Default 20 ms.
    pub base_delay_ms: u64,
    /// Backoff ceiling. Default 500 ms.
    pub max_delay_ms: u64,
    /// One attempt slower than this counts as a timeout. Default 1000 ms.
    pub attempt_timeout_ms: u64,
    /// The whole request, across retries and stores. Default 5000 ms.
    pub deadline_ms: u64,
    /// Fixes the sequence of random backoff delays, for reproducible tests;
    /// leave unset in production (default: seeded from the OS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            base_delay_ms: 20,
            max_delay_ms: 500,
            attempt_timeout_ms: 1000,
            deadline_ms: 5000,
            jitter_seed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metric;

    #[test]
    fn toml_with_defaults() {
        let config = ManagerConfig::from_toml(
            r#"
            [index]
            dim = 8
            metric = "l2"
            [breaker]
            open_ms = 100
            [replication]
            journal_path = "/tmp/journal.db"
            "#,
        )
        .unwrap();
        assert_eq!(config.index.dim, 8);
        assert_eq!(config.index.metric, Metric::L2);
        assert_eq!(config.breaker.open_ms, 100);
        assert_eq!(config.breaker.consecutive_failures, 3);
        assert_eq!(config.retry, RetryConfig::default());
        assert_eq!(config.health, HealthConfig::default());
    }

    #[test]
    fn bad_values_are_named() {
        let err =
            ManagerConfig::from_toml("[index]\ndim = 8\n[retry]\nattempts = 0\n").unwrap_err();
        assert!(err.to_string().contains("retry.attempts"), "{err}");
        let err = ManagerConfig::from_toml("[index]\ndim = 8\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
