//! Turning SQLite and I/O failures into vectorgate's error kinds.
//!
//! The kind decides what the manager does: `Unavailable` is retried or
//! failed over, `Internal` is reported. So a busy or locked database (another
//! process holds the write lock longer than the busy timeout), a full disk
//! and an I/O error are `Unavailable`: the next attempt or another store may
//! well succeed. Corruption, a file that is not a database, constraint
//! violations and everything unexpected are `Internal`: retrying will not
//! fix them, and the message says what SQLite said.

use rusqlite::ErrorCode;
use vectorgate::Error;

/// What can go wrong below the store, before the store's name is attached.
#[derive(Debug)]
pub(crate) enum DbError {
    /// A failure reported by SQLite or rusqlite.
    Sqlite(rusqlite::Error),
    /// A file-system failure outside SQLite (creating the parent directory).
    Io(std::io::Error),
    /// Data that SQLite returned but that cannot be right (a vector blob of
    /// the wrong size, a payload that is not JSON, an unknown metric...).
    Corrupt(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<rusqlite::types::FromSqlError> for DbError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        DbError::Sqlite(e.into())
    }
}

impl From<std::io::Error> for DbError {
    fn from(e: std::io::Error) -> Self {
        DbError::Io(e)
    }
}

impl DbError {
    /// The vectorgate error for store `store`.
    pub(crate) fn into_error(self, store: &str) -> Error {
        match self {
            DbError::Sqlite(e) => match e.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    Error::unavailable(store, format!("SQLite database is busy: {e}"))
                }
                Some(ErrorCode::DiskFull) => Error::unavailable(store, format!("disk full: {e}")),
                Some(ErrorCode::SystemIoFailure) => {
                    Error::unavailable(store, format!("SQLite I/O error: {e}"))
                }
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Error::internal(
                    store,
                    format!("the SQLite file is corrupt or not a database: {e}"),
                ),
                _ => Error::internal(store, format!("SQLite: {e}")),
            },
            DbError::Io(e) => Error::unavailable(store, format!("I/O error: {e}")),
            DbError::Corrupt(message) => {
                Error::internal(store, format!("corrupt data in the SQLite file: {message}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vectorgate::ErrorKind;

    fn sqlite(code: i32) -> DbError {
        DbError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some("detail".into()),
        ))
    }

    #[test]
    fn transient_failures_are_unavailable() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_IOERR_FSYNC,
        ] {
            let err = sqlite(code).into_error("local");
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{code}: {err}");
        }
        let io = DbError::Io(std::io::Error::other("boom")).into_error("local");
        assert_eq!(io.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn everything_else_is_internal_with_the_message() {
        for code in [
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_NOTADB,
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_ERROR,
        ] {
            let err = sqlite(code).into_error("local");
            assert_eq!(err.kind(), ErrorKind::Internal, "{code}: {err}");
            assert!(err.to_string().contains("detail"), "{err}");
            assert!(err.to_string().contains("local"), "{err}");
        }
        let err = DbError::Corrupt("bad blob".into()).into_error("local");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("bad blob"));
    }
}
