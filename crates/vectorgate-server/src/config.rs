//! Server configuration.
//!
//! Sources, lowest precedence first: built-in defaults, the TOML file
//! (`--config FILE` or `VECTORGATE_CONFIG`), `VECTORGATE_*` environment
//! variables, `serve` flags. The env vars and flags cover the few values a
//! script or a container changes (see [`Overrides`]); everything else lives
//! in the file. `vectorgate config-example` prints a commented example
//! ([`EXAMPLE`]), which the tests parse.
//!
//! With no file at all the server runs one embedded store named `embedded`
//! at `<data_dir>/vectors.db` (`./vectorgate-data/vectors.db`), dimension
//! 1536, cosine, gRPC on 127.0.0.1:50051, HTTP (metrics, readiness) on
//! 127.0.0.1:9464, without authentication: only loopback addresses may be
//! served without API keys.

use crate::auth::{self, Role};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vectorgate::manager::config::{ReplicationConfig, ReplicationMode};
use vectorgate::{
    BreakerConfig, HealthConfig, HnswParams, IndexSpec, ManagerConfig, Metric, RetryConfig,
    validate,
};
use vectorgate_pg::PgConfig;

/// A commented, complete configuration; `vectorgate config-example` prints it.
pub const EXAMPLE: &str = include_str!("../config.example.toml");

/// Default gRPC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default HTTP address (metrics, health, readiness).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./vectorgate-data";
/// Default largest gRPC request, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Default records per store page while streaming a scan.
pub const DEFAULT_SCAN_PAGE_SIZE: u32 = 256;
/// Default largest `ScanResponse` message, in bytes (a gRPC client's
/// default receive limit is 4 MiB).
pub const DEFAULT_SCAN_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default server-side deadline of a call whose client sends none.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default time a scan's client may read nothing before the scan is closed.
pub const DEFAULT_SCAN_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default number of scans one API key may have open at once.
pub const DEFAULT_MAX_SCANS_PER_KEY: u32 = 4;
/// Default time in-flight calls get to finish after SIGTERM/SIGINT.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC address. Default `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HTTP address for `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Where embedded stores live unless a store names its `path`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Time in-flight calls get to finish on shutdown. Default 30000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Serve without API keys on a non-loopback address. Never do this
    /// outside a private network. Default false.
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// The one logical index every store holds.
    #[serde(default)]
    pub index: IndexConfig,
    /// Failover manager knobs (health probes, breakers, retries).
    #[serde(default)]
    pub manager: ManagerSection,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Per-team admission control (concurrency, write rate).
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Serve `/metrics` and `/readyz` on a non-loopback `metrics_listen`.
    /// They show store names, errors and topology (never credentials):
    /// expose them only to a private network. Default false.
    #[serde(default)]
    pub insecure_metrics_listen: bool,
    /// Stores in priority order: the first is the primary. Empty: one
    /// embedded store `embedded` at `<data_dir>/vectors.db`.
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    /// API keys. Empty: no authentication (loopback addresses only).
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Serve gRPC over TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            data_dir: default_data_dir(),
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            insecure_no_auth: false,
            index: IndexConfig::default(),
            manager: ManagerSection::default(),
            limits: Limits::default(),
            admission: AdmissionConfig::default(),
            insecure_metrics_listen: false,
            stores: Vec::new(),
            api_keys: Vec::new(),
            tls: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

/// `[index]`: dimension, metric, HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Vector dimension. Default 1536.
    pub dim: u32,
    /// `cosine` (default), `inner_product` or `l2`.
    pub metric: Metric,
    /// HNSW parameters for backends that build an HNSW index.
    pub hnsw: HnswParams,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            dim: 1536,
            metric: Metric::Cosine,
            hnsw: HnswParams::default(),
        }
    }
}

impl IndexConfig {
    /// The index spec the manager gets.
    pub fn spec(&self) -> IndexSpec {
        IndexSpec {
            dim: self.dim,
            metric: self.metric,
            hnsw: self.hnsw,
        }
    }
}

/// `[manager]`: the [`ManagerConfig`] sections besides the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerSection {
    /// Name in logs and metrics. Default `vectorgate`.
    pub name: String,
    /// `[manager.health]`
    pub health: HealthConfig,
    /// `[manager.breaker]`
    pub breaker: BreakerConfig,
    /// `[manager.retry]`
    pub retry: RetryConfig,
    /// `[manager.replication]`: the write journal that keeps every store
    /// in sync. `journal_path` defaults to `<data_dir>/journal.db`.
    pub replication: ReplicationConfig,
}

impl Default for ManagerSection {
    fn default() -> Self {
        ManagerSection {
            name: "vectorgate".to_owned(),
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            replication: ReplicationConfig::default(),
        }
    }
}

/// `[limits]`. The per-request rules (1000 records per upsert, recall
/// limit 1..=1000, 10000 ids per delete, 64 KiB payloads...) are
/// `vectorgate::validate`'s and are not configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC request message, in bytes. Default 64 MiB.
    pub max_request_bytes: usize,
    /// Records fetched from the store per scan page. Default 256.
    pub scan_page_size: u32,
    /// Largest `ScanResponse` message, in bytes (a page is split into
    /// several messages above it). Default 1 MiB.
    pub scan_message_bytes: usize,
    /// The server-side deadline of a unary call (and of a scan's first
    /// page) when the client sends none or a longer one; the call then
    /// ends with `DEADLINE_EXCEEDED`. Must leave the manager time for its
    /// own deadline and read catch-up wait, whose answers are clearer.
    /// Default 30000.
    pub request_timeout_ms: u64,
    /// Scans one API key may have open at once (further ones are refused
    /// with `RESOURCE_EXHAUSTED`). Default 4.
    pub max_scans_per_key: u32,
    /// A scan whose client reads nothing for this long is closed (its task
    /// ends, its slots are freed; the client gets `DEADLINE_EXCEEDED`).
    /// Default 60000.
    pub scan_idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            scan_page_size: DEFAULT_SCAN_PAGE_SIZE,
            scan_message_bytes: DEFAULT_SCAN_MESSAGE_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_scans_per_key: DEFAULT_MAX_SCANS_PER_KEY,
            scan_idle_timeout_ms: DEFAULT_SCAN_IDLE_TIMEOUT_MS,
        }
    }
}

/// `[admission]`: per-team limits (see [`crate::admission`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// `[admission.default]`: the limits of every team not listed.
    pub default: TeamLimits,
    /// `[[admission.teams]]`: teams with their own limits; an omitted field
    /// takes the default's value.
    pub teams: Vec<TeamLimitsEntry>,
}

impl AdmissionConfig {
    /// The limits that apply to `team`.
    pub fn limits_for(&self, team: &str) -> TeamLimits {
        let d = self.default;
        match self.teams.iter().find(|t| t.team == team) {
            Some(t) => TeamLimits {
                max_concurrent: t.max_concurrent.unwrap_or(d.max_concurrent),
                records_per_second: t.records_per_second.unwrap_or(d.records_per_second),
                burst_records: t.burst_records.unwrap_or(d.burst_records),
            },
            None => d,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        let check = |at: &str, limits: TeamLimits| -> anyhow::Result<()> {
            if limits.max_concurrent == 0 {
                bail!("{at}.max_concurrent must be at least 1");
            }
            if limits.records_per_second == 0 {
                bail!("{at}.records_per_second must be at least 1");
            }
            if (limits.burst_records as usize) < validate::MAX_UPSERT_BATCH {
                bail!(
                    "{at}.burst_records is {}, must be at least {} (the largest upsert), or such an upsert could never pass",
                    limits.burst_records,
                    validate::MAX_UPSERT_BATCH
                );
            }
            Ok(())
        };
        check("admission.default", self.default)?;
        for (i, team) in self.teams.iter().enumerate() {
            if !validate::is_valid_id(&team.team) {
                bail!(
                    "admission.teams[{i}].team {:?} is not a team id (1-64 characters of A-Z a-z 0-9 . _ : -)",
                    team.team
                );
            }
            if self.teams[..i].iter().any(|t| t.team == team.team) {
                bail!("admission.teams[{i}]: team {:?} is listed twice", team.team);
            }
            check(
                &format!("admission.teams[{i}]"),
                self.limits_for(&team.team),
            )?;
        }
        Ok(())
    }
}

/// One team's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamLimits {
    /// Calls in flight at once (a scan counts until its stream ends).
    /// Default 64.
    pub max_concurrent: u32,
    /// Records written per second, sustained (upserted records, deleted
    /// ids). Default 5000.
    pub records_per_second: u32,
    /// Records that may be written at once after a quiet period (the
    /// bucket's size); at least 1000, the largest upsert. Default 10000.
    pub burst_records: u32,
}

impl Default for TeamLimits {
    fn default() -> Self {
        TeamLimits {
            max_concurrent: 64,
            records_per_second: 5000,
            burst_records: 10_000,
        }
    }
}

/// One `[[admission.teams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamLimitsEntry {
    /// The team id.
    pub team: String,
    /// See [`TeamLimits::max_concurrent`]; default: `[admission.default]`'s.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// See [`TeamLimits::records_per_second`].
    #[serde(default)]
    pub records_per_second: Option<u32>,
    /// See [`TeamLimits::burst_records`].
    #[serde(default)]
    pub burst_records: Option<u32>,
}

/// One `[[stores]]` entry, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded SQLite store.
    Embedded {
        /// Unique store name (logs, metrics, `served_by`, admin RPCs).
        name: String,
        /// The SQLite file. Default `<data_dir>/<name>.db`.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// PostgreSQL + pgvector: the fields of [`PgConfig`] (`name`, `url`,
    /// `table`, `pool_max_connections`, `acquire_timeout_ms`,
    /// `connect_timeout_ms`, `statement_timeout_ms`).
    Postgres(PgConfig),
}

impl StoreConfig {
    /// The store's configured name.
    pub fn name(&self) -> &str {
        match self {
            StoreConfig::Embedded { name, .. } => name,
            StoreConfig::Postgres(pg) => &pg.name,
        }
    }
}

/// One `[[api_keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A label for logs (never the key).
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the key, as printed by `vectorgate hash-key`.
    pub sha256: String,
    /// Teams the key may read or write; `["*"]` for every team (needed for
    /// unscoped Count and Scan).
    pub teams: Vec<String>,
    /// `read`, `write` or `admin`.
    pub role: Role,
}

/// `[tls]`: PEM files for gRPC over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_path: PathBuf,
    /// Private key (PEM).
    pub key_path: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM).
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

/// Values the environment and the `serve` flags may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--listen` / `VECTORGATE_LISTEN`
    pub listen: Option<SocketAddr>,
    /// `--metrics-listen` / `VECTORGATE_METRICS_LISTEN`
    pub metrics_listen: Option<SocketAddr>,
    /// `--data-dir` / `VECTORGATE_DATA_DIR`
    pub data_dir: Option<PathBuf>,
    /// `--dim` / `VECTORGATE_DIM`
    pub dim: Option<u32>,
    /// `--metric` / `VECTORGATE_METRIC`
    pub metric: Option<Metric>,
    /// `--drain-timeout-ms` / `VECTORGATE_DRAIN_TIMEOUT_MS`
    pub drain_timeout_ms: Option<u64>,
    /// `--insecure-no-auth` / `VECTORGATE_INSECURE_NO_AUTH`
    pub insecure_no_auth: bool,
    /// `--insecure-metrics-listen` / `VECTORGATE_INSECURE_METRICS_LISTEN`
    pub insecure_metrics_listen: bool,
}

impl Config {
    /// Parses a TOML document (without checking it: see [`Config::check`]).
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Applies env/flag overrides.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(listen) = overrides.metrics_listen {
            self.metrics_listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(dim) = overrides.dim {
            self.index.dim = dim;
        }
        if let Some(metric) = overrides.metric {
            self.index.metric = metric;
        }
        if let Some(ms) = overrides.drain_timeout_ms {
            self.drain_timeout_ms = ms;
        }
        if overrides.insecure_no_auth {
            self.insecure_no_auth = true;
        }
        if overrides.insecure_metrics_listen {
            self.insecure_metrics_listen = true;
        }
    }

    /// The manager's configuration.
    pub fn manager_config(&self) -> ManagerConfig {
        let mut config = ManagerConfig::new(self.index.spec());
        config.name.clone_from(&self.manager.name);
        config.health = self.manager.health;
        config.breaker = self.manager.breaker;
        config.retry = self.manager.retry;
        config.replication = self.manager.replication.clone();
        if config.replication.mode != ReplicationMode::Off
            && config.replication.journal_path.is_none()
        {
            config.replication.journal_path = Some(self.data_dir.join("journal.db"));
        }
        config
    }

    /// The stores to open, in priority order, with defaults filled in.
    pub fn resolved_stores(&self) -> Vec<StoreConfig> {
        if self.stores.is_empty() {
            return vec![StoreConfig::Embedded {
                name: "embedded".to_owned(),
                path: Some(self.data_dir.join("vectors.db")),
            }];
        }
        self.stores
            .iter()
            .map(|store| match store {
                StoreConfig::Embedded { name, path } => StoreConfig::Embedded {
                    name: name.clone(),
                    path: Some(
                        path.clone()
                            .unwrap_or_else(|| self.data_dir.join(format!("{name}.db"))),
                    ),
                },
                other => other.clone(),
            })
            .collect()
    }

    /// Checks every value, including the security rule: without API keys
    /// the gRPC address must be a loopback address (unless
    /// `insecure_no_auth`). The server refuses to start on any error.
    pub fn check(&self) -> anyhow::Result<()> {
        self.manager_config()
            .check()
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("invalid input: ", "", 1)))
            .context("invalid [index] or [manager] section")?;

        if self.drain_timeout_ms == 0 {
            bail!("drain_timeout_ms must be greater than 0");
        }
        let limits = &self.limits;
        if limits.max_request_bytes < 1024 {
            bail!(
                "limits.max_request_bytes is {}, must be at least 1024",
                limits.max_request_bytes
            );
        }
        if limits.scan_page_size == 0 || limits.scan_page_size > validate::MAX_SCAN_LIMIT {
            bail!(
                "limits.scan_page_size is {}, must be 1..={}",
                limits.scan_page_size,
                validate::MAX_SCAN_LIMIT
            );
        }
        if limits.scan_message_bytes < 1024 {
            bail!(
                "limits.scan_message_bytes is {}, must be at least 1024",
                limits.scan_message_bytes
            );
        }
        if limits.max_scans_per_key == 0 {
            bail!("limits.max_scans_per_key must be at least 1");
        }
        if limits.scan_idle_timeout_ms < 100 {
            bail!(
                "limits.scan_idle_timeout_ms is {}, must be at least 100",
                limits.scan_idle_timeout_ms
            );
        }
        // The manager's own answers (its deadline, the read catch-up wait)
        // say more than a cut-off call: they must come first.
        let manager = &self.manager;
        let needed = manager.retry.deadline_ms + manager.replication.catchup_wait_ms;
        if limits.request_timeout_ms <= needed {
            bail!(
                "limits.request_timeout_ms is {}, must be more than manager.retry.deadline_ms + manager.replication.catchup_wait_ms ({needed}) so the manager's own deadline answers first",
                limits.request_timeout_ms
            );
        }
        self.admission.check()?;

        for (i, store) in self.stores.iter().enumerate() {
            let name = store.name();
            if !validate::is_valid_id(name) {
                bail!("stores[{i}].name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ : -");
            }
            if self.stores[..i].iter().any(|s| s.name() == name) {
                bail!("stores[{i}].name: two stores are named {name:?}; names must be unique");
            }
            if let StoreConfig::Postgres(pg) = store {
                pg.validate()
                    .map_err(|e| anyhow::anyhow!("stores[{i}] ({name}): {e}"))?;
            }
        }

        for (i, key) in self.api_keys.iter().enumerate() {
            if auth::parse_digest(&key.sha256).is_none() {
                bail!(
                    "api_keys[{i}].sha256 must be 64 hex characters (the output of `vectorgate hash-key`)"
                );
            }
            if key.teams.is_empty() {
                bail!("api_keys[{i}].teams is empty; list team ids, or \"*\" for every team");
            }
            for (j, team) in key.teams.iter().enumerate() {
                if team != "*" && !validate::is_valid_id(team) {
                    bail!(
                        "api_keys[{i}].teams[{j}] {team:?} is not a team id (1-64 characters of A-Z a-z 0-9 . _ : -) nor \"*\""
                    );
                }
            }
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if self.api_keys[..i]
                .iter()
                .any(|k| k.sha256.eq_ignore_ascii_case(&key.sha256))
            {
                bail!("api_keys[{i}]: the same key is configured twice");
            }
        }

        if !self.metrics_listen.ip().is_loopback() && !self.insecure_metrics_listen {
            bail!(
                "refusing to start: metrics_listen {} is not a loopback address, and /metrics and /readyz show store names, errors and topology to anyone who reaches it. \
                 Listen on 127.0.0.1 (scrape through a local agent or a proxy), or set insecure_metrics_listen = true (--insecure-metrics-listen) if this network is private",
                self.metrics_listen
            );
        }

        if self.api_keys.is_empty() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            bail!(
                "refusing to start: no API keys are configured and the gRPC address {} is not a loopback address, \
                 so anyone who can reach it could read and write every team's vectors. \
                 Add [[api_keys]] to the config (create a digest with `vectorgate hash-key`), \
                 listen on 127.0.0.1, or pass --insecure-no-auth if this network is private",
                self.listen
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.metrics_listen.to_string(), DEFAULT_METRICS_LISTEN);
        assert_eq!(config.index.dim, 1536);
        assert_eq!(config.index.metric, Metric::Cosine);
        assert_eq!(config.drain_timeout_ms, 30_000);
        config.check().unwrap();
        assert_eq!(
            config.resolved_stores(),
            vec![StoreConfig::Embedded {
                name: "embedded".into(),
                path: Some(PathBuf::from("./vectorgate-data/vectors.db")),
            }]
        );
    }

    #[test]
    fn the_example_parses_and_checks() {
        let config = Config::from_toml(EXAMPLE).unwrap();
        config.check().unwrap();
        assert_eq!(config.stores.len(), 2);
        assert_eq!(config.api_keys.len(), 3);
        assert!(config.tls.is_none(), "the example keeps TLS commented out");
        assert_eq!(config.index.dim, 1536);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.admission.default, TeamLimits::default());
        let big = config.admission.limits_for("bulk-importer");
        assert_eq!((big.max_concurrent, big.records_per_second), (16, 1000));
        assert_eq!(big.burst_records, TeamLimits::default().burst_records);
        assert_eq!(config.admission.limits_for("other"), TeamLimits::default());
    }

    #[test]
    fn metrics_on_a_non_loopback_address_needs_an_explicit_setting() {
        let mut config = Config::from_toml("metrics_listen = \"0.0.0.0:9464\"").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("insecure_metrics_listen"), "{err}");
        assert!(err.contains("0.0.0.0:9464"), "{err}");
        config.apply(&Overrides {
            insecure_metrics_listen: true,
            ..Overrides::default()
        });
        config.check().unwrap();
    }

    #[test]
    fn the_example_postgres_block_parses_once_uncommented() {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let start = lines
            .iter()
            .position(|l| *l == "# kind = \"postgres\"")
            .unwrap()
            - 1;
        let block: Vec<&str> = lines[start..]
            .iter()
            .take_while(|l| l.starts_with("# "))
            .map(|l| &l[2..])
            .collect();
        let config = Config::from_toml(&block.join("\n")).unwrap();
        config.check().unwrap();
        assert!(matches!(&config.stores[0], StoreConfig::Postgres(pg) if pg.name == "pg"));
    }

    /// The README's server excerpt (issue 5): PostgreSQL first, the
    /// embedded store as its fallback, exactly as the README shows it.
    #[test]
    fn the_readme_postgres_primary_embedded_fallback_config_parses() {
        const README: &str = include_str!("../../../README.md");
        let server = README
            .find("\n## Server\n")
            .expect("the README has a Server section");
        let rest = &README[server..];
        let start = rest.find("```toml\n").expect("a TOML block") + "```toml\n".len();
        let block = &rest[start..start + rest[start..].find("```").unwrap()];
        let config = Config::from_toml(block).unwrap();
        assert!(
            matches!(&config.stores[..], [StoreConfig::Postgres(pg), StoreConfig::Embedded { name, path: None }]
                if pg.name == "pg" && name == "local"),
            "{:?}",
            config.stores
        );
        assert_eq!(config.index.dim, 1536);
        let resolved = config.resolved_stores();
        assert_eq!(
            resolved[1],
            StoreConfig::Embedded {
                name: "local".into(),
                path: Some(config.data_dir.join("local.db")),
            }
        );
    }

    #[test]
    fn overrides_win() {
        let mut config = Config::from_toml("listen = \"127.0.0.1:1\"\n[index]\ndim = 4\n").unwrap();
        config.apply(&Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            dim: Some(8),
            metric: Some(Metric::L2),
            data_dir: Some("/tmp/x".into()),
            ..Overrides::default()
        });
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.index.dim, 8);
        assert_eq!(config.index.metric, Metric::L2);
        assert_eq!(
            config.resolved_stores()[0],
            StoreConfig::Embedded {
                name: "embedded".into(),
                path: Some("/tmp/x/vectors.db".into())
            }
        );
    }

    #[test]
    fn postgres_stores_take_the_pg_config_fields() {
        let config = Config::from_toml(
            r#"
            [[stores]]
            kind = "postgres"
            name = "pg"
            url = "postgres://u:secret@db:5432/vectors"
            pool_max_connections = 4

            [[stores]]
            kind = "embedded"
            name = "local"
            "#,
        )
        .unwrap();
        config.check().unwrap();
        let mut expected = PgConfig::new("pg", "postgres://u:secret@db:5432/vectors");
        expected.pool_max_connections = 4;
        assert_eq!(config.stores[0], StoreConfig::Postgres(expected));
        assert_eq!(config.stores[1].name(), "local");
        assert!(
            !format!("{config:?}").contains("secret"),
            "the password is redacted"
        );
    }

    #[test]
    fn open_non_loopback_is_refused() {
        let mut config = Config::from_toml("listen = \"0.0.0.0:50051\"").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("refusing to start"), "{err}");
        assert!(err.contains("0.0.0.0:50051"), "{err}");
        config.insecure_no_auth = true;
        config.check().unwrap();
        let config = Config::from_toml("listen = \"[::1]:50051\"").unwrap();
        config.check().unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("bogus = 1", "bogus"),
            ("[index]\ndim = 0", "dim"),
            ("[manager.retry]\nattempts = 0", "retry.attempts"),
            ("[limits]\nscan_page_size = 0", "scan_page_size"),
            ("[limits]\nmax_scans_per_key = 0", "max_scans_per_key"),
            ("[limits]\nrequest_timeout_ms = 7000", "request_timeout_ms"),
            (
                "[admission.default]\nburst_records = 999",
                "admission.default.burst_records",
            ),
            ("[admission.default]\nmax_concurrent = 0", "max_concurrent"),
            (
                "[[admission.teams]]\nteam = \"a\"\nrecords_per_second = 0",
                "admission.teams[0].records_per_second",
            ),
            (
                "[[admission.teams]]\nteam = \"a\"\n[[admission.teams]]\nteam = \"a\"",
                "listed twice",
            ),
            (
                "[[stores]]\nkind = \"embedded\"\nname = \"a\"\n[[stores]]\nkind = \"embedded\"\nname = \"a\"",
                "unique",
            ),
            ("[[stores]]\nkind = \"nope\"\nname = \"a\"", "nope"),
            (
                "[[stores]]\nkind = \"postgres\"\nname = \"pg\"\nurl = \"postgres://h/db\"\nport = 1",
                "port",
            ),
            (
                "[[stores]]\nkind = \"postgres\"\nname = \"pg\"\nurl = \"postgres://h/db\"\ntable = \"bad table\"",
                "table",
            ),
            (
                "[[stores]]\nkind = \"embedded\"\nname = \"a\"\nport = 1",
                "port",
            ),
            (
                "[[api_keys]]\nsha256 = \"abc\"\nteams = [\"*\"]\nrole = \"read\"",
                "api_keys[0].sha256",
            ),
            (
                "[[api_keys]]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nteams = [\"*\"]\nrole = \"root\"",
                "root",
            ),
            (
                "[[api_keys]]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nteams = []\nrole = \"read\"",
                "teams",
            ),
        ];
        for (text, needle) in cases {
            let err = match Config::from_toml(text) {
                Err(e) => format!("{e:#}"),
                Ok(config) => format!("{:#}", config.check().unwrap_err()),
            };
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
