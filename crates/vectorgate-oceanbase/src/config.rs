//! [`OceanBaseConfig`]: where the store connects and how patient it is.
//! Plain serde struct with documented defaults; every duration is in
//! milliseconds (`*_ms`), like the manager's configuration.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use vectorgate::{Error, Result};

/// The table a store uses when the configuration names none.
pub const DEFAULT_TABLE: &str = "vectorgate_vectors";

/// The table where every store records the dimension and metric of its
/// vector table (one row per vector table). Not usable as a vector table.
pub const META_TABLE: &str = "vectorgate_meta";

/// Longest table name: MySQL's identifier limit.
pub const MAX_TABLE_LEN: usize = 64;

/// How to reach one OceanBase tenant and which table to use.
///
/// ```toml
/// name = "oceanbase"
/// url = "mysql://vectorgate%40app_tenant:secret@10.0.0.5:2883/vectors"
/// table = "kb_vectors"
/// pool_max_connections = 16
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OceanBaseConfig {
    /// Instance name, as reported by `VectorStore::name`. Default `oceanbase`.
    pub name: String,
    /// A MySQL URL: `mysql://USER[:PASSWORD]@HOST:PORT/DATABASE`, user in
    /// OceanBase's `user@tenant` or `user@tenant#cluster` form (the `@` and
    /// `#` percent-encoded as `%40` and `%23`), port 2881 for an observer,
    /// 2883 for OBProxy. Query options sqlx understands (`ssl-mode`, ...)
    /// may follow. The tenant must be in MySQL mode. Default
    /// `mysql://root@127.0.0.1:2881/test` (a local seekdb / single observer).
    ///
    /// The connection collation is forced to `utf8mb4_general_ci` whatever
    /// the URL says: OceanBase rejects sqlx's default `utf8mb4_unicode_ci`
    /// (error 1273). Comparisons on ids are binary regardless: the table's
    /// id and scope columns are declared `utf8mb4_bin`.
    pub url: String,
    /// The vector table: 1..=64 characters of `[a-z0-9_]`, not starting with
    /// a digit (lowercase only, so the name means the same table whatever
    /// the server's `lower_case_table_names`). Must not be `vectorgate_meta`.
    /// Default `vectorgate_vectors`.
    pub table: String,
    /// Connections the pool opens at most. Default 10.
    pub pool_max_connections: u32,
    /// How long a call waits for a pooled connection before it fails as
    /// `Unavailable`. Default 3000 ms.
    pub acquire_timeout_ms: u64,
    /// How long opening a new connection may take (TCP, handshake, session
    /// setup, including sqlx's retries while the server refuses
    /// connections): a call that must open one gives up after
    /// `min(connect_timeout_ms, acquire_timeout_ms)`, so a server that is
    /// down is reported quickly. Default 2000 ms.
    pub connect_timeout_ms: u64,
    /// Longest a single statement may run: set as the session's
    /// `ob_query_timeout` on the server, and enforced on the client too (plus
    /// one second of grace) in case the server stops answering. Reported
    /// as `Timeout`. `ensure_schema`'s DDL gets ten times as long. Default 10000 ms.
    pub statement_timeout_ms: u64,
}

impl Default for OceanBaseConfig {
    fn default() -> Self {
        OceanBaseConfig {
            name: "oceanbase".to_owned(),
            url: "mysql://root@127.0.0.1:2881/test".to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            pool_max_connections: 10,
            acquire_timeout_ms: 3000,
            connect_timeout_ms: 2000,
            statement_timeout_ms: 10_000,
        }
    }
}

impl OceanBaseConfig {
    /// The defaults, with this name and URL.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        OceanBaseConfig {
            name: name.into(),
            url: url.into(),
            ..OceanBaseConfig::default()
        }
    }

    /// The same configuration on another table.
    #[must_use]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Checks every value (the URL itself is parsed by `connect`).
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if !self.url.starts_with("mysql://") {
            return Err(Error::invalid(
                "url",
                format!(
                    "must start with mysql:// (OceanBase speaks the MySQL protocol), got {}",
                    redact_url(&self.url)
                ),
            ));
        }
        check_table(&self.table)?;
        if self.pool_max_connections == 0 {
            return Err(Error::invalid("pool_max_connections", "must be >= 1"));
        }
        for (field, value) in [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
    }

    pub(crate) fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

/// Hides the password of the URL.
impl fmt::Debug for OceanBaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OceanBaseConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("pool_max_connections", &self.pool_max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

/// The URL without its password (one implementation, in the core crate).
pub(crate) use vectorgate::redact::url as redact_url;

/// True for a table name this crate will put into SQL: `[a-z_][a-z0-9_]*`,
/// at most 64 bytes, not the meta table. The only identifiers ever
/// formatted into a statement are this one and constants.
pub fn check_table(table: &str) -> Result<()> {
    let field = "table";
    if table.is_empty() || table.len() > MAX_TABLE_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, must be 1..={MAX_TABLE_LEN}", table.len()),
        ));
    }
    if table.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::invalid(field, "must not start with a digit"));
    }
    if let Some(bad) = table
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(Error::invalid(
            field,
            format!("contains {bad:?}; allowed characters are a-z 0-9 _"),
        ));
    }
    if table == META_TABLE {
        return Err(Error::invalid(
            field,
            format!("{META_TABLE} is where vectorgate records schemas; pick another name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let config: OceanBaseConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, OceanBaseConfig::default());
        assert_eq!(config.url, "mysql://root@127.0.0.1:2881/test");
        assert_eq!(config.table, "vectorgate_vectors");
        assert_eq!(config.pool_max_connections, 10);
        assert_eq!(config.acquire_timeout_ms, 3000);
        assert_eq!(config.connect_timeout_ms, 2000);
        assert_eq!(config.statement_timeout_ms, 10_000);
        assert!(config.check().is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let config = OceanBaseConfig::new("ob", "mysql://app%40t%23c:s3cret@10.0.0.5:2883/db");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("mysql://app%40t%23c:***@10.0.0.5:2883/db"),
            "{shown}"
        );
        assert_eq!(
            redact_url("mysql://root@h:2881/test"),
            "mysql://root@h:2881/test"
        );
        let err = OceanBaseConfig::new("ob", "postgres://u:pw@h/db")
            .check()
            .unwrap_err();
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<OceanBaseConfig>(r#"{"tabel": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("tabel"), "{err}");
    }

    #[test]
    fn table_names_are_safe_identifiers() {
        for good in ["vectorgate_vectors", "_t", "t1", "a_b_c9", &"x".repeat(64)] {
            assert!(check_table(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1t",
            "T",
            "a-b",
            "a`b",
            "a b",
            "a;drop",
            "é",
            "vectorgate_meta",
            &"x".repeat(65),
        ] {
            let err = check_table(bad).unwrap_err();
            assert!(err.to_string().contains("table"), "{bad}: {err}");
        }
    }

    #[test]
    fn zero_values_are_named() {
        let config = OceanBaseConfig {
            statement_timeout_ms: 0,
            ..OceanBaseConfig::default()
        };
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("statement_timeout_ms")
        );
        let config = OceanBaseConfig {
            pool_max_connections: 0,
            ..OceanBaseConfig::default()
        };
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("pool_max_connections")
        );
    }
}
