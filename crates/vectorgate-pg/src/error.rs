//! The one place where sqlx and PostgreSQL errors become vectorgate errors.
//!
//! A server that answers but cannot serve — read-only, table gone, role
//! without privileges, disk full — is the *store* failing, not the request:
//! those are `Unavailable` (retriable), so the manager's breaker opens and it
//! fails over, and the message names the fix for the operator.
//!
//! | what happened | kind |
//! |---|---|
//! | connection refused / reset / closed, any other I/O or TLS error, protocol desync | `Unavailable` |
//! | `PoolTimedOut` (see [`crate::PgStore`] for how a pool timeout is diagnosed) | `Timeout` |
//! | an I/O error of kind `TimedOut`, SQLSTATE `57014` (statement timeout, cancel) | `Timeout` |
//! | SQLSTATE `57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now, `57P04` database dropped, `08xxx` connection exceptions, `40001`/`40P01` serialization failure / deadlock, `55P03` lock not available | `Unavailable` |
//! | SQLSTATE `25006` read-only transaction (a standby after a switchover, `default_transaction_read_only`, `transaction_read_only`) | `Unavailable`, with the fix |
//! | SQLSTATE `42501` insufficient privilege (table or schema privileges revoked) | `Unavailable`, with the `GRANT` |
//! | SQLSTATE `42P01` undefined table (dropped or renamed behind the store) | `Unavailable`, with the fix |
//! | SQLSTATE `53xxx` insufficient resources (`53100` disk full, `53200` out of memory, `53300` too many connections) | `Unavailable`, with the fix |
//! | SQLSTATE `28xxx` authentication, `3D000` database does not exist, `3F000` schema does not exist | `Unavailable`, with the fix |
//! | SQLSTATE `22xxx` data exceptions (pgvector's "expected N dimensions, not M" is `22000`) | `InvalidInput` |
//! | missing pgvector: sqlx's `TypeNotFound` for `vector`, SQLSTATE `42704` / `42883` naming `vector`, `58P01` / `0A000` from `CREATE EXTENSION` | `Internal`, with the fix |
//! | SQLSTATE `42704` undefined object not about `vector` (a role, a schema object renamed away) | `Unavailable` |
//! | everything else (decoding, syntax, bugs) | `Internal` |
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
    let refused = |fix: String| Error::unavailable(store, format!("{message}: {fix}"));
    match (code.as_str(), class) {
        ("57014", _) => Error::timeout(store, message),
        ("57P01" | "57P02" | "57P03" | "57P04" | "55P03" | "40001" | "40P01", _) | (_, "08") => {
            Error::unavailable(store, message)
        }
        ("25006", _) => refused(format!(
            "the server refuses writes to {table} (read-only: a standby after a switchover, or \
             default_transaction_read_only = on); point the store's URL at the primary, or run \
             `ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();`"
        )),
        ("42501", _) => refused(format!(
            "the store's role lacks privileges; as the table's owner or a superuser run \
             `GRANT USAGE ON SCHEMA <schema> TO <role>; GRANT SELECT, INSERT, UPDATE, DELETE \
             ON {table} TO <role>;`"
        )),
        ("42P01", _) => refused(format!(
            "table {table} is missing (dropped or renamed); rename it back, or let \
             ensure_schema create it again and resync it from another store"
        )),
        ("53100", _) => refused(
            "the server's disk is full; free space on the PostgreSQL data directory (or its \
             WAL volume)"
                .to_owned(),
        ),
        ("53300", _) => refused(
            "the server has no connection slot left; raise max_connections or lower \
             pool_max_connections of the clients"
                .to_owned(),
        ),
        (_, "53") => refused("the server is out of resources (memory, disk, slots)".to_owned()),
        (_, "28") => refused(
            "authentication failed; check the user and password in the store's URL and \
             pg_hba.conf"
                .to_owned(),
        ),
        ("3D000", _) => refused(
            "the database named in the store's URL does not exist; create it or fix the URL"
                .to_owned(),
        ),
        ("3F000", _) => refused(
            "the schema the store's table lives in does not exist; restore it or fix the \
             role's search_path"
                .to_owned(),
        ),
        (_, "22") => Error::invalid("request", message),
        ("42704" | "42883", _) if mentions_vector(db.message()) => {
            missing_extension(store, &message)
        }
        ("42704", _) => refused(
            "an object the store needs is missing (dropped or renamed behind it); restore it"
                .to_owned(),
        ),
        ("58P01" | "0A000", _) if db.message().contains("extension") => {
            missing_extension(store, &message)
        }
        _ => Error::internal(store, message),
    }
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.code().map(|c| c.into_owned()))
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

    /// A database error with a SQLSTATE, as PostgreSQL would send it.
    #[derive(Debug)]
    struct FakeDb {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for FakeDb {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl std::error::Error for FakeDb {}

    impl DatabaseError for FakeDb {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str, message: &'static str) -> Error {
        map_sqlx(
            "pg",
            "vectors",
            sqlx::Error::Database(Box::new(FakeDb { code, message })),
        )
    }

    /// (SQLSTATE, server message, expected kind, a piece of the message
    /// that tells the operator the fix).
    const SQLSTATES: &[(&str, &str, ErrorKind, &str)] = &[
        (
            "57014",
            "canceling statement due to statement timeout",
            ErrorKind::Timeout,
            "57014",
        ),
        (
            "57P01",
            "terminating connection due to administrator command",
            ErrorKind::Unavailable,
            "57P01",
        ),
        (
            "57P03",
            "the database system is starting up",
            ErrorKind::Unavailable,
            "57P03",
        ),
        (
            "08006",
            "connection failure",
            ErrorKind::Unavailable,
            "08006",
        ),
        (
            "40P01",
            "deadlock detected",
            ErrorKind::Unavailable,
            "40P01",
        ),
        (
            "25006",
            "cannot execute INSERT in a read-only transaction",
            ErrorKind::Unavailable,
            "default_transaction_read_only",
        ),
        (
            "42501",
            "permission denied for table vectors",
            ErrorKind::Unavailable,
            "GRANT SELECT, INSERT, UPDATE, DELETE ON vectors",
        ),
        (
            "42501",
            "permission denied for schema public",
            ErrorKind::Unavailable,
            "GRANT USAGE ON SCHEMA",
        ),
        (
            "42P01",
            "relation \"vectors\" does not exist",
            ErrorKind::Unavailable,
            "rename it back",
        ),
        (
            "53100",
            "could not extend file: No space left on device",
            ErrorKind::Unavailable,
            "disk is full",
        ),
        (
            "53200",
            "out of memory",
            ErrorKind::Unavailable,
            "out of resources",
        ),
        (
            "53300",
            "sorry, too many clients already",
            ErrorKind::Unavailable,
            "max_connections",
        ),
        (
            "28P01",
            "password authentication failed for user \"vectorgate\"",
            ErrorKind::Unavailable,
            "password",
        ),
        (
            "28000",
            "no pg_hba.conf entry",
            ErrorKind::Unavailable,
            "pg_hba.conf",
        ),
        (
            "3D000",
            "database \"vg\" does not exist",
            ErrorKind::Unavailable,
            "fix the URL",
        ),
        (
            "3F000",
            "schema \"vg\" does not exist",
            ErrorKind::Unavailable,
            "search_path",
        ),
        (
            "42704",
            "role \"vg\" does not exist",
            ErrorKind::Unavailable,
            "restore it",
        ),
        (
            "42704",
            "type \"vector\" does not exist",
            ErrorKind::Internal,
            "CREATE EXTENSION vector",
        ),
        (
            "42883",
            "operator does not exist: vector <=> vector",
            ErrorKind::Internal,
            "CREATE EXTENSION vector",
        ),
        (
            "22000",
            "expected 8 dimensions, not 4",
            ErrorKind::InvalidInput,
            "dimensions",
        ),
        (
            "22P02",
            "invalid input syntax",
            ErrorKind::InvalidInput,
            "22P02",
        ),
        (
            "42601",
            "syntax error at or near",
            ErrorKind::Internal,
            "42601",
        ),
    ];

    #[test]
    fn sqlstates_map_to_kinds_with_the_fix() {
        for &(code, message, expected, fix) in SQLSTATES {
            let err = db(code, message);
            assert_eq!(err.kind(), expected, "{code} {message}: {err}");
            let text = err.to_string();
            assert!(text.contains(fix), "{code}: {text:?} lacks {fix:?}");
            assert!(
                text.contains(message),
                "{code}: {text:?} lacks the server's words"
            );
        }
    }

    #[test]
    fn refusals_are_retriable() {
        for code in ["25006", "42501", "42P01", "53100", "3D000"] {
            assert!(db(code, "refused").is_retriable(), "{code}");
        }
        assert!(!db("22000", "bad").is_retriable());
        assert!(!db("42601", "bug").is_retriable());
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
