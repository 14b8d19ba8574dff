//! The one place where sqlx and PostgreSQL errors become vectorgate errors.
//!
//! | what happened | kind |
//! |---|---|
//! | connection refused / reset / closed, any other I/O or TLS error, protocol desync | `Unavailable` |
//! | `PoolTimedOut` (see [`crate::PgStore`] for how a pool timeout is diagnosed) | `Timeout` |
//! | an I/O error of kind `TimedOut`, SQLSTATE `57014` (statement timeout, cancel) | `Timeout` |
//! | SQLSTATE `57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now, `08xxx` connection exceptions, `53xxx` insufficient resources, `40001`/`40P01` serialization failure / deadlock, `55P03` lock not available, `28xxx` authentication | `Unavailable` |
//! | SQLSTATE `22xxx` data exceptions (pgvector's "expected N dimensions, not M" is `22000`) | `InvalidInput` |
//! | SQLSTATE `42P01` undefined table | `Internal`: call `ensure_schema` |
//! | missing pgvector: sqlx's `TypeNotFound` for `vector`, SQLSTATE `42704` / `42883` naming `vector`, `58P01` / `0A000` from `CREATE EXTENSION` | `Internal`, with the fix |
//! | everything else (privileges, decoding, bugs) | `Internal` |
//!
//! Only `Unavailable` and `Timeout` are retried or failed over by the manager.

use sqlx::error::DatabaseError;
use sqlx::postgres::PgDatabaseError;
use std::io;
use vectorgate::Error;

/// How to get pgvector, for error messages.
pub(crate) const PGVECTOR_FIX: &str = "install pgvector for this PostgreSQL major \
     (Debian/Ubuntu: apt-get install postgresql-<major>-pgvector, or `scripts/services.sh up postgres`, \
     which builds it where no package exists), then run `CREATE EXTENSION vector;` as a superuser \
     in this database (ensure_schema does that when the store's role may)";

/// Maps a sqlx error from a call of store `store` to a vectorgate error.
/// `table` is named in the messages that need it.
pub(crate) fn map_sqlx(store: &str, table: &str, err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::Io(e) => map_io(store, &e),
        sqlx::Error::Tls(e) => Error::unavailable(store, format!("TLS error: {e}")),
        sqlx::Error::Protocol(msg) => {
            Error::unavailable(store, format!("protocol error (connection lost?): {msg}"))
        }
        sqlx::Error::PoolTimedOut => {
            Error::timeout(store, "timed out waiting for a pooled connection")
        }
        sqlx::Error::PoolClosed => Error::unavailable(store, "the connection pool is closed"),
        sqlx::Error::WorkerCrashed => Error::unavailable(store, "the connection worker crashed"),
        sqlx::Error::TypeNotFound { type_name } if is_pgvector_type(&type_name) => {
            missing_extension(store, &format!("type {type_name:?} does not exist"))
        }
        sqlx::Error::Database(db) => map_database(store, table, &*db),
        other => Error::internal(store, other),
    }
}

fn map_io(store: &str, e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut => Error::timeout(store, format!("I/O timed out: {e}")),
        io::ErrorKind::ConnectionRefused => {
            Error::unavailable(store, format!("connection refused: {e}"))
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => {
            Error::unavailable(store, format!("connection lost: {e}"))
        }
        _ => Error::unavailable(store, format!("I/O error: {e}")),
    }
}

fn map_database(store: &str, table: &str, db: &dyn DatabaseError) -> Error {
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let message = describe_db(db, &code);
    let class = code.get(..2).unwrap_or("");
    match (code.as_str(), class) {
        ("57014", _) => Error::timeout(store, message),
        ("57P01" | "57P02" | "57P03" | "57P04" | "55P03" | "40001" | "40P01", _)
        | (_, "08" | "53" | "28") => Error::unavailable(store, message),
        (_, "22") => Error::invalid("request", message),
        ("42P01", _) => Error::internal(
            store,
            format!("{message}: table {table} is missing; call ensure_schema to create it"),
        ),
        ("42704" | "42883", _) if mentions_vector(db.message()) => {
            missing_extension(store, &message)
        }
        ("58P01" | "0A000", _) if db.message().contains("extension") => {
            missing_extension(store, &message)
        }
        _ => Error::internal(store, message),
    }
}

/// What a sqlx error says, with SQLSTATE, detail and hint for a database
/// error; for messages that wrap it.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => describe_db(db, &db.code().map(|c| c.into_owned()).unwrap_or_default()),
        None => err.to_string(),
    }
}

/// `message [SQLSTATE code] detail: ... hint: ...`.
fn describe_db(db: &dyn DatabaseError, code: &str) -> String {
    let mut text = format!("{} [SQLSTATE {code}]", db.message());
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = pg.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
    }
    text
}

fn is_pgvector_type(name: &str) -> bool {
    matches!(name, "vector" | "_vector")
}

fn mentions_vector(message: &str) -> bool {
    message.contains("\"vector\"") || message.contains("vector <") || message.contains("vector)")
}

/// The pgvector extension is missing or cannot be created.
pub(crate) fn missing_extension(store: &str, what: &str) -> Error {
    Error::internal(
        store,
        format!("the pgvector extension is missing ({what}): {PGVECTOR_FIX}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vectorgate::ErrorKind;

    fn kind(err: sqlx::Error) -> ErrorKind {
        map_sqlx("pg", "t", err).kind()
    }

    #[test]
    fn transport_errors_are_retriable() {
        for k in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::Other,
        ] {
            assert_eq!(
                kind(sqlx::Error::Io(io::Error::from(k))),
                ErrorKind::Unavailable,
                "{k:?}"
            );
        }
        assert_eq!(
            kind(sqlx::Error::Io(io::Error::from(io::ErrorKind::TimedOut))),
            ErrorKind::Timeout
        );
        assert_eq!(kind(sqlx::Error::PoolTimedOut), ErrorKind::Timeout);
        assert_eq!(kind(sqlx::Error::PoolClosed), ErrorKind::Unavailable);
        assert_eq!(
            kind(sqlx::Error::Protocol("eof".into())),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn missing_vector_type_names_the_fix() {
        let err = map_sqlx(
            "pg",
            "t",
            sqlx::Error::TypeNotFound {
                type_name: "vector".into(),
            },
        );
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("CREATE EXTENSION vector"), "{err}");
        assert_eq!(kind(sqlx::Error::RowNotFound), ErrorKind::Internal);
    }
}
