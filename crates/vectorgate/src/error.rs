//! One error type for every store and for the manager.
//!
//! Callers act on the *kind* of an error, not on its text: a bad request is
//! fixed by the caller ([`Error::InvalidInput`]), a transient fault is retried
//! or failed over ([`Error::is_retriable`]), and everything else is reported.

use std::fmt;

/// Result alias used throughout vectorgate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a vector store or in the manager.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's request breaks a rule; it was rejected before any store
    /// was touched (or the store refused the data itself). Never retried.
    #[error("invalid input: {field}: {reason}")]
    InvalidInput {
        /// The request field at fault, e.g. `records[3].vector`.
        field: String,
        /// What is wrong, naming the limit.
        reason: String,
    },

    /// The request names a record another team owns: an upsert of an id that
    /// another team holds. Ids are unique across teams and a record never
    /// changes team, so the write was refused as a whole and changed nothing.
    /// Never retried; the caller picks another id.
    #[error("conflict: {field}: {reason}")]
    Conflict {
        /// The request field at fault, e.g. `records[3].id`.
        field: String,
        /// What conflicts, naming the id (never the other team or its data).
        reason: String,
    },

    /// The store already holds an index with another dimension or metric.
    #[error(
        "schema mismatch in {store}: the store has {found}, the configuration asks for {expected}"
    )]
    SchemaMismatch {
        /// Store name.
        store: String,
        /// What the configuration asks for, e.g. `dim 768, metric cosine`.
        expected: String,
        /// What the store holds.
        found: String,
    },

    /// The store cannot be reached or refused to serve for now (connection
    /// refused or reset, server shutting down, pool exhausted). Retriable.
    #[error("{store} unavailable: {message}")]
    Unavailable {
        /// Store name.
        store: String,
        /// What happened.
        message: String,
    },

    /// The call did not finish in time. Retriable.
    #[error("{store} timed out: {message}")]
    Timeout {
        /// Store name (or `manager` for the per-request deadline).
        store: String,
        /// What timed out.
        message: String,
    },

    /// Every store the manager could use failed for this request.
    #[error("all stores failed: {}", DisplayFailures(.0))]
    AllStoresFailed(Vec<StoreFailure>),

    /// A bug, a corrupted file, a missing extension: something a retry will
    /// not fix. The message says what to do where we know it.
    #[error("internal error in {store}: {message}")]
    Internal {
        /// Store name.
        store: String,
        /// What happened, with the fix where known.
        message: String,
    },
}

/// Why one store failed a request, inside [`Error::AllStoresFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// Store name.
    pub store: String,
    /// How many attempts were made on it (0: skipped, e.g. breaker open).
    pub attempts: u32,
    /// The kind of its last error.
    pub kind: ErrorKind,
    /// The last error it returned (or why it was skipped).
    pub error: String,
}

struct DisplayFailures<'a>(&'a [StoreFailure]);

impl fmt::Display for DisplayFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no store was configured or usable");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} ({} attempt{}): {}",
                failure.store,
                failure.attempts,
                if failure.attempts == 1 { "" } else { "s" },
                failure.error
            )?;
        }
        Ok(())
    }
}

/// The kinds a caller can act on; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Fix the request.
    InvalidInput,
    /// Choose another id: this one belongs to another team.
    Conflict,
    /// Fix the configuration or the store.
    SchemaMismatch,
    /// Try again later or elsewhere.
    Unavailable,
    /// Try again later or elsewhere.
    Timeout,
    /// Report it.
    Internal,
}

impl ErrorKind {
    /// Short stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Conflict => "conflict",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An upsert of `id` (at `field`, e.g. `records[3].id`) that another
    /// team holds: [`Error::Conflict`] with the wording every backend uses.
    pub fn id_taken(field: impl Into<String>, id: &str) -> Self {
        Error::Conflict {
            field: field.into(),
            reason: format!(
                "id {id:?} belongs to another team; ids are unique across teams \
                 and a record never changes team: choose another id"
            ),
        }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(store: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Unavailable {
            store: store.into(),
            message: message.to_string(),
        }
    }

    /// Shorthand for [`Error::Timeout`].
    pub fn timeout(store: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Timeout {
            store: store.into(),
            message: message.to_string(),
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(store: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Internal {
            store: store.into(),
            message: message.to_string(),
        }
    }

    /// The kind of this error. [`Error::AllStoresFailed`] is `Timeout` when
    /// every store timed out and `Unavailable` otherwise.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Internal { .. } => ErrorKind::Internal,
            Error::AllStoresFailed(failures) => {
                if !failures.is_empty() && failures.iter().all(|f| f.kind == ErrorKind::Timeout) {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Unavailable
                }
            }
        }
    }

    /// True only for transient faults that a retry or another store may cure
    /// (`Unavailable`, `Timeout`). Bad input, schema conflicts and internal
    /// errors are never retried and never count against a store's health.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::AllStoresFailed(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retriable() {
        assert!(Error::unavailable("pg", "refused").is_retriable());
        assert!(Error::timeout("pg", "1s").is_retriable());
        assert!(!Error::invalid("limit", "must be 1..=1000").is_retriable());
        assert!(!Error::internal("pg", "bug").is_retriable());
        let mismatch = Error::SchemaMismatch {
            store: "pg".into(),
            expected: "dim 8".into(),
            found: "dim 4".into(),
        };
        assert!(!mismatch.is_retriable());
        assert_eq!(mismatch.kind(), ErrorKind::SchemaMismatch);
    }

    #[test]
    fn all_stores_failed_lists_every_store() {
        let err = Error::AllStoresFailed(vec![
            StoreFailure {
                store: "pg".into(),
                attempts: 3,
                kind: ErrorKind::Unavailable,
                error: "pg unavailable: connection refused".into(),
            },
            StoreFailure {
                store: "local".into(),
                attempts: 1,
                kind: ErrorKind::Timeout,
                error: "local timed out: after 1s".into(),
            },
        ]);
        let text = err.to_string();
        assert!(
            text.contains("pg (3 attempts): pg unavailable: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("local (1 attempt): local timed out"),
            "{text}"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
