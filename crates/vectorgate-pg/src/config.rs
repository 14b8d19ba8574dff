//! [`PgConfig`]: where the store connects and how patient it is.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use vectorgate::{Error, Result};

/// Default table name.
pub const DEFAULT_TABLE: &str = "vectorgate_vectors";

/// Configuration of one PostgreSQL + pgvector store.
///
/// Every duration is in milliseconds (`*_ms`), like the manager's
/// configuration. As TOML, with the defaults spelled out:
///
/// ```toml
/// name = "primary"
/// url = "postgres://vectorgate:secret@127.0.0.1:5432/vectorgate"
/// table = "vectorgate_vectors"   # [a-z_][a-z0-9_]{0,62}
/// pool_max_connections = 16
/// acquire_timeout_ms = 2000      # wait for a pooled connection
/// connect_timeout_ms = 2000      # diagnose a failed acquire (see below)
/// statement_timeout_ms = 5000    # server-side statement_timeout
/// ```
///
/// `url` takes everything sqlx's `PgConnectOptions` parses (`sslmode`,
/// `sslrootcert`, `application_name`, `options`, ...).
///
/// The table name is checked here (identifiers cannot be bound parameters,
/// so it is the one name that is written into SQL text); every value is a
/// bound parameter.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// Instance name (metrics label, error messages), e.g. `primary`.
    pub name: String,
    /// `postgres://user:password@host:port/database?...`.
    pub url: String,
    /// Table holding the vectors. Default `vectorgate_vectors`; its indexes
    /// are named after it.
    #[serde(default = "default_table")]
    pub table: String,
    /// Most connections the pool opens. Default 16.
    #[serde(default = "default_pool_max_connections")]
    pub pool_max_connections: u32,
    /// How long a call waits for a pooled connection (including opening a
    /// new one) before failing with `Error::Timeout` — or `Unavailable`
    /// when the server turns out unreachable. Default 2000.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Bound on the one direct connection attempt made after an acquire
    /// timed out while the pool had room, to tell "server down" (Unavailable,
    /// with the reason) from "server slow" (Timeout). Default 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// PostgreSQL `statement_timeout` of every connection; a statement
    /// cancelled by it fails with `Error::Timeout`. Each call is also
    /// bounded on the client side by `acquire_timeout_ms +
    /// statement_timeout_ms + 1000`. `ensure_schema` lifts it (an index
    /// build may be long), uses it as `lock_timeout`, and is bounded on the
    /// client side by `acquire_timeout_ms + max(60000, 12 *
    /// statement_timeout_ms)`. Default 5000.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}
fn default_pool_max_connections() -> u32 {
    16
}
fn default_acquire_timeout_ms() -> u64 {
    2000
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_statement_timeout_ms() -> u64 {
    5000
}

impl PgConfig {
    /// A configuration with every default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        PgConfig {
            name: name.into(),
            url: url.into(),
            table: default_table(),
            pool_max_connections: default_pool_max_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            statement_timeout_ms: default_statement_timeout_ms(),
        }
    }

    /// Same configuration on another table.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// `acquire_timeout_ms` as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `statement_timeout_ms` as a duration.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }

    /// Checks every field; errors are `InvalidInput` naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        check_table_name(&self.table)?;
        if self.pool_max_connections == 0 {
            return Err(Error::invalid("pool_max_connections", "must be at least 1"));
        }
        for (field, value) in [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            // An hour: far above any sane value, and keeps the sums in range.
            if value == 0 || value > 3_600_000 {
                return Err(Error::invalid(
                    field,
                    format!("is {value}, must be 1..=3600000 (milliseconds)"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a table name: `[a-z_][a-z0-9_]{0,62}`, so it never needs quoting
/// and fits PostgreSQL's 63-byte identifiers.
pub fn check_table_name(table: &str) -> Result<()> {
    let bytes = table.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "table",
            format!("is {table:?}, must match [a-z_][a-z0-9_]{{0,62}}"),
        ))
    }
}

/// Hides the password of the URL.
impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_toml_like_json() {
        let config: PgConfig =
            serde_json::from_str(r#"{"name": "pg", "url": "postgres://localhost/x"}"#).unwrap();
        assert_eq!(config, PgConfig::new("pg", "postgres://localhost/x"));
        assert_eq!(config.table, "vectorgate_vectors");
        assert_eq!(config.pool_max_connections, 16);
        assert_eq!(config.acquire_timeout(), Duration::from_secs(2));
        assert_eq!(config.connect_timeout(), Duration::from_secs(2));
        assert_eq!(config.statement_timeout(), Duration::from_secs(5));
        assert!(config.validate().is_ok());
        let unknown =
            serde_json::from_str::<PgConfig>(r#"{"name": "pg", "url": "x", "tabel": "t"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn table_names() {
        for ok in ["t", "_t", "vectorgate_vectors", "a1_b2", &"x".repeat(63)] {
            assert!(check_table_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1t",
            "T",
            "a-b",
            "a b",
            "a;drop table x",
            "\"q\"",
            "é",
            &"x".repeat(64),
        ] {
            let err = check_table_name(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "table"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = PgConfig::new("pg", "postgres://localhost/x");
        c.pool_max_connections = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("pool_max_connections")
        );
        let mut c = PgConfig::new("pg", "postgres://localhost/x");
        c.statement_timeout_ms = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("statement_timeout_ms")
        );
        assert!(PgConfig::new("", "x").validate().is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = PgConfig::new("pg", "postgres://u:s3cret@h:5432/db?sslmode=require");
        let text = format!("{c:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("postgres://u:***@h:5432/db?sslmode=require"),
            "{text}"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
