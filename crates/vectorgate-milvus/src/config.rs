//! [`MilvusConfig`]: where the Milvus store lives and how long it may take.
//! Plain serde struct with documented defaults; durations in milliseconds
//! (`*_ms`), like the rest of vectorgate's configuration.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use vectorgate::{Error, Result};

/// Longest collection name Milvus accepts (`proxy.maxNameLength`).
pub const MAX_COLLECTION_NAME_LEN: usize = 255;

/// Where and how to reach one Milvus collection.
///
/// ```toml
/// name = "milvus"
/// url = "http://milvus.internal:19530"
/// collection = "vectorgate_vectors"
/// username = "vectorgate"
/// password = "secret"
/// timeout_ms = 10000
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilvusConfig {
    /// Instance name, as reported by `VectorStore::name`. Default `milvus`.
    pub name: String,
    /// The Milvus proxy's gRPC address. `https://` (or a TLS-terminating
    /// proxy) for TLS. Default `http://127.0.0.1:19530`.
    pub url: String,
    /// The collection that holds this index: `[A-Za-z_][A-Za-z0-9_]{0,254}`.
    /// Created by `ensure_schema` when missing. Default `vectorgate_vectors`.
    pub collection: String,
    /// User for Milvus authentication (`common.security.authorizationEnabled`).
    /// Used only together with `password`. Default none.
    pub username: Option<String>,
    /// Password of `username`. Default none.
    pub password: Option<String>,
    /// Milvus database. Default none: the server's `default` database.
    pub database: Option<String>,
    /// Limit for one data call (upsert, recall, delete, count, scan, health),
    /// including connecting when the client is not connected yet. Default
    /// 10000 ms.
    pub timeout_ms: u64,
    /// How long connecting may take before a call gives up with
    /// `Unavailable`; never more than `timeout_ms`. Default 3000 ms.
    pub connect_timeout_ms: u64,
    /// Limit for `ensure_schema`, which may create the collection, build its
    /// index and load it. Default 120000 ms.
    pub schema_timeout_ms: u64,
}

impl Default for MilvusConfig {
    fn default() -> Self {
        MilvusConfig {
            name: "milvus".to_owned(),
            url: "http://127.0.0.1:19530".to_owned(),
            collection: "vectorgate_vectors".to_owned(),
            username: None,
            password: None,
            database: None,
            timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            schema_timeout_ms: 120_000,
        }
    }
}

/// The password is never printed.
impl fmt::Debug for MilvusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MilvusConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("database", &self.database)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("schema_timeout_ms", &self.schema_timeout_ms)
            .finish()
    }
}

impl MilvusConfig {
    /// Defaults for everything but the instance name, URL and collection.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        collection: impl Into<String>,
    ) -> Self {
        MilvusConfig {
            name: name.into(),
            url: url.into(),
            collection: collection.into(),
            ..MilvusConfig::default()
        }
    }

    /// Checks every value; [`crate::MilvusStore::connect`] refuses a bad config.
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::invalid(
                "url",
                format!("is {:?}, must start with http:// or https://", self.url),
            ));
        }
        check_identifier("collection", &self.collection)?;
        if let Some(database) = &self.database {
            check_identifier("database", database)?;
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::invalid(
                "username",
                "username and password must be given together",
            ));
        }
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("schema_timeout_ms", self.schema_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.min(self.timeout_ms))
    }

    pub(crate) fn schema_timeout(&self) -> Duration {
        Duration::from_millis(self.schema_timeout_ms)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]{0,254}`: what Milvus accepts as a collection or
/// database name.
pub fn is_valid_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphabetic() || *first == b'_' => {}
        _ => return false,
    }
    bytes.len() <= MAX_COLLECTION_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn check_identifier(field: &str, name: &str) -> Result<()> {
    if is_valid_identifier(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "is {name:?}; must match [A-Za-z_][A-Za-z0-9_]{{0,{}}}",
                MAX_COLLECTION_NAME_LEN - 1
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = MilvusConfig::default();
        config.check().unwrap();
        assert_eq!(config.url, "http://127.0.0.1:19530");
        assert_eq!(config.collection, "vectorgate_vectors");
        assert_eq!(config.timeout_ms, 10_000);
    }

    #[test]
    fn reads_toml_with_defaults_and_rejects_unknown_fields() {
        let config: MilvusConfig =
            toml::from_str("url = \"http://m:19530\"\ncollection = \"c_1\"\n").unwrap();
        assert_eq!(config.collection, "c_1");
        assert_eq!(config.name, "milvus");
        assert_eq!(config.schema_timeout_ms, 120_000);
        assert!(toml::from_str::<MilvusConfig>("bogus = 1\n").is_err());
    }

    #[test]
    fn collection_names_are_identifiers() {
        for good in ["a", "_", "A_1", "vectorgate_vectors", &"x".repeat(255)] {
            assert!(is_valid_identifier(good), "{good}");
        }
        for bad in ["", "1a", "a-b", "a b", "a.b", "é", "a\"b", &"x".repeat(256)] {
            assert!(!is_valid_identifier(bad), "{bad}");
            let config = MilvusConfig {
                collection: bad.to_owned(),
                ..MilvusConfig::default()
            };
            assert_eq!(field_of(config.check().unwrap_err()), "collection");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let bad = [
            (
                MilvusConfig {
                    url: "127.0.0.1:19530".into(),
                    ..MilvusConfig::default()
                },
                "url",
            ),
            (
                MilvusConfig {
                    username: Some("u".into()),
                    ..MilvusConfig::default()
                },
                "username",
            ),
            (
                MilvusConfig {
                    timeout_ms: 0,
                    ..MilvusConfig::default()
                },
                "timeout_ms",
            ),
            (
                MilvusConfig {
                    name: String::new(),
                    ..MilvusConfig::default()
                },
                "name",
            ),
        ];
        for (config, field) in bad {
            assert_eq!(field_of(config.check().unwrap_err()), field);
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let config = MilvusConfig {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..MilvusConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("REDACTED"), "{text}");
    }
}
