//! Turning sqlx and OceanBase failures into vectorgate's error kinds: the one
//! place that decides what is retriable.
//!
//! - **`Unavailable`** (retried, failed over): the server cannot be reached
//!   or dropped the connection (refused, reset, EOF, any I/O error, MySQL
//!   client codes 2002/2003/2006/2013), no pooled connection could be had,
//!   the server is shutting down or out of resources, or OceanBase says to
//!   try again (leader moved, memory, RPC failures, rolled-back transaction).
//! - **`Unavailable`, with the operator's fix** — the server answers but
//!   cannot serve this store (a "gray" failure: the *store* is failing, not
//!   the request, so the manager fails over):
//!
//!   | number | what | fix named in the message |
//!   |---|---|---|
//!   | 1146 | table doesn't exist (dropped or renamed) | rename it back / `ensure_schema` + resync |
//!   | 1049 | unknown database | create it or fix the URL |
//!   | 1044, 1045 | access denied to the database / bad credentials | user, password, `GRANT` |
//!   | 1142, 1143, 1227 | command / column / SUPER privilege denied | `GRANT SELECT, INSERT, UPDATE, DELETE` |
//!   | 1290, 1836, 1792 (SQLSTATE 25006), 1036, 5235 | read-only server (`read_only`), read-only transaction or table | `SET GLOBAL read_only = OFF` or the primary's address |
//!   | 1021, 1114, 4184, 4264 | disk full, table full, OceanBase data or log disk out of space | free space / raise `datafile_size`, `log_disk_size` |
//!
//! - **`Timeout`** (retried, failed over): the statement hit
//!   `ob_query_timeout` (4012), a transaction or lock wait timed out, or the
//!   client-side deadline passed.
//! - **`InvalidInput`**: the server refused the data itself: a vector of the
//!   wrong dimension (7600), a malformed vector literal (1210), bad JSON,
//!   values out of range or too long (SQLSTATE class 22). Validation
//!   catches all of these first; this is the backstop.
//! - **`Internal`** for everything else (syntax, decode failures), with the
//!   server's number and message.

use vectorgate::Error;

/// OceanBase / MySQL error numbers that mean "not now, try again".
const UNAVAILABLE_CODES: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1081, // cannot build socket
    1129, // host blocked
    1152, // aborted connection
    1153, // packet too large for the connection (proxy)
    1158, 1159, 1160, 1161, // network read/write errors and timeouts
    1213, // deadlock: the transaction was rolled back, a retry succeeds
    2002, 2003, 2006, 2013, 2055, // client-side connection errors (e.g. via OBProxy)
    4013, // OB_ALLOCATE_MEMORY_FAILED
    4023, // OB_EAGAIN
    4030, // OB_TENANT_OUT_OF_MEM
    4038, // OB_NOT_MASTER: the leader moved
    4121, 4122, 4124, // OB_RPC_SEND_ERROR / POST_ERROR / CONNECT_ERROR
    4653, // OB_LS_NOT_EXIST while a log stream migrates
    6002, // OB_TRANS_ROLLBACKED
    6005, // OB_TRANS_KILLED
    6224, // OB_TRANS_NEED_ROLLBACK
];

/// What to do about a read-only server.
const READ_ONLY_FIX: &str = "the server refuses writes (read-only: `read_only` is on, a standby, \
     or a read-only transaction or table): run `SET GLOBAL read_only = OFF`, or point the store's \
     URL at the primary";

/// Error numbers where the server answers but refuses to serve this store,
/// with what the operator should do. Retriable (`Unavailable`): the store is
/// failing, not the request.
const REFUSALS: &[(&[u16], &str)] = &[
    (
        &[1146],
        "the table is missing (dropped or renamed behind the store): rename it back, or let \
         ensure_schema create it again and resync it from another store",
    ),
    (
        &[1049],
        "the database named in the store's URL does not exist: create it or fix the URL",
    ),
    (
        &[1044, 1045],
        "access denied: check the user and password in the store's URL and that the user may use \
         the database (`GRANT ALL ON <db>.* TO <user>`)",
    ),
    (
        &[1142, 1143, 1227],
        "the store's user lacks privileges: `GRANT SELECT, INSERT, UPDATE, DELETE ON <db>.<table> \
         TO <user>` (ensure_schema also needs CREATE, ALTER, INDEX)",
    ),
    (&[1290, 1836, 1792, 1036, 5235], READ_ONLY_FIX),
    (
        &[1021, 1114, 4184, 4264],
        "the server is out of disk space (data or log disk, or a full table): free space, or raise \
         datafile_size / log_disk_size",
    ),
];

/// Error numbers that mean "it took too long".
const TIMEOUT_CODES: &[u16] = &[
    1205, // lock wait timeout
    1317, // query interrupted
    3024, // max_execution_time exceeded
    4012, // OB_TIMEOUT: ob_query_timeout reached
    6210, // OB_TRANS_TIMEOUT
    6211, // OB_TRANS_STMT_TIMEOUT
];

/// Error numbers that reject the data of the request.
const INVALID_INPUT_CODES: &[u16] = &[
    1048, // column cannot be null
    1210, // invalid argument (a malformed vector literal)
    1264, // out of range
    1292, // truncated / incorrect value
    1366, // incorrect string value
    1406, // data too long
    3140, // invalid JSON text
    7600, // inconsistent vector dimension
];

/// The vectorgate error for a sqlx failure of store `store`; `what` says
/// what was being done (`recall`, `ensure_schema: create table`...) and is
/// the `field` of an `InvalidInput` (the server does not name one).
pub(crate) fn map_sqlx(store: &str, what: &str, err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::Io(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::timeout(store, format!("{what}: I/O timed out: {e}"))
            } else {
                Error::unavailable(store, format!("{what}: connection failed: {e}"))
            }
        }
        sqlx::Error::PoolTimedOut => Error::unavailable(
            store,
            format!(
                "{what}: no database connection within the acquire/connect timeout (server down, unreachable, or every pooled connection busy)"
            ),
        ),
        sqlx::Error::PoolClosed => {
            Error::unavailable(store, format!("{what}: the connection pool is closed"))
        }
        sqlx::Error::WorkerCrashed => Error::unavailable(
            store,
            format!("{what}: the connection's background worker crashed"),
        ),
        sqlx::Error::Database(db) => {
            let (number, state) = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(my) => (Some(my.number()), my.code().map(str::to_owned)),
                None => (None, db.code().map(|c| c.into_owned())),
            };
            let message = format!(
                "{what}: server error {} ({}): {}",
                number.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                state.as_deref().unwrap_or("-"),
                db.message()
            );
            classify(store, what, number, state.as_deref(), message)
        }
        other => Error::internal(store, format!("{what}: {other}")),
    }
}

/// True for the errors a DDL statement gets while another DDL holds the
/// locks it needs: lock wait timeout (1205), "try again" (4023), or
/// OceanBase's DDL-specific contention (4012 is not one: a real timeout).
pub(crate) fn is_ddl_contention(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|my| matches!(my.number(), 1205 | 4023 | 6002 | 6005)),
        _ => false,
    }
}

fn classify(
    store: &str,
    what: &str,
    number: Option<u16>,
    state: Option<&str>,
    message: String,
) -> Error {
    let is = |codes: &[u16]| number.is_some_and(|n| codes.contains(&n));
    if is(TIMEOUT_CODES) {
        Error::timeout(store, message)
    } else if is(UNAVAILABLE_CODES) || state.is_some_and(|s| s.starts_with("08")) {
        // SQLSTATE class 08: connection exception.
        Error::unavailable(store, message)
    } else if is(INVALID_INPUT_CODES) || state.is_some_and(|s| s.starts_with("22")) {
        // SQLSTATE class 22: data exception. The server does not say which
        // field; the operation stands in for it.
        Error::invalid(what, message)
    } else if let Some((_, fix)) = REFUSALS.iter().find(|(codes, _)| is(codes)) {
        Error::unavailable(store, format!("{message}: {fix}"))
    } else if state == Some("25006") {
        // SQLSTATE 25006: read-only transaction, whatever the number.
        Error::unavailable(store, format!("{message}: {READ_ONLY_FIX}"))
    } else {
        Error::internal(store, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vectorgate::ErrorKind;

    fn kind_of(number: u16, state: &str) -> ErrorKind {
        classify(
            "ob",
            "upsert",
            Some(number),
            Some(state),
            format!("error {number}"),
        )
        .kind()
    }

    #[test]
    fn transport_failures_are_retriable() {
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let err = map_sqlx("ob", "recall", sqlx::Error::Io(kind.into()));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{kind:?}");
            assert!(err.to_string().contains("recall"), "{err}");
        }
        let err = map_sqlx(
            "ob",
            "recall",
            sqlx::Error::Io(std::io::ErrorKind::TimedOut.into()),
        );
        assert_eq!(err.kind(), ErrorKind::Timeout);
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert_eq!(map_sqlx("ob", "count", err).kind(), ErrorKind::Unavailable);
        }
    }

    #[test]
    fn server_codes_map_to_kinds() {
        assert_eq!(kind_of(2006, "HY000"), ErrorKind::Unavailable);
        assert_eq!(kind_of(2013, "HY000"), ErrorKind::Unavailable);
        assert_eq!(kind_of(4038, "HY000"), ErrorKind::Unavailable);
        assert_eq!(kind_of(1053, "08S01"), ErrorKind::Unavailable);
        assert_eq!(kind_of(9999, "08S01"), ErrorKind::Unavailable);
        assert_eq!(kind_of(4012, "HY000"), ErrorKind::Timeout);
        assert_eq!(kind_of(1205, "HY000"), ErrorKind::Timeout);
        assert_eq!(kind_of(7600, "22000"), ErrorKind::InvalidInput);
        assert_eq!(kind_of(1210, "HY000"), ErrorKind::InvalidInput);
        assert_eq!(kind_of(3140, "22032"), ErrorKind::InvalidInput);
        assert_eq!(kind_of(1064, "42000"), ErrorKind::Internal);
    }

    /// The server answers but cannot serve: `Unavailable`, naming the fix.
    #[test]
    fn refusals_are_unavailable_with_the_fix() {
        let cases: &[(u16, &str, &str)] = &[
            (1146, "42S02", "rename it back"),
            (1049, "42000", "fix the URL"),
            (1044, "42000", "access denied"),
            (1045, "28000", "password"),
            (1142, "42000", "GRANT SELECT, INSERT, UPDATE, DELETE"),
            (1143, "42000", "GRANT SELECT"),
            (1227, "42000", "lacks privileges"),
            (1290, "HY000", "SET GLOBAL read_only = OFF"),
            (1836, "HY000", "read-only"),
            (1792, "25006", "read-only"),
            (5235, "HY000", "read-only"),
            (1021, "HY000", "disk space"),
            (1114, "HY000", "full table"),
            (4184, "HY000", "datafile_size"),
            (4264, "HY000", "log_disk_size"),
            (9998, "25006", "read-only"),
        ];
        for &(number, state, fix) in cases {
            let err = classify(
                "ob",
                "upsert",
                Some(number),
                Some(state),
                format!("upsert: server error {number}"),
            );
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{number}: {err}");
            assert!(err.is_retriable(), "{number}");
            let text = err.to_string();
            assert!(text.contains(fix), "{number}: {text:?} lacks {fix:?}");
            assert!(text.contains(&number.to_string()), "{number}: {text}");
        }
    }

    #[test]
    fn other_failures_are_internal_with_context() {
        let err = map_sqlx(
            "ob",
            "scan",
            sqlx::Error::Protocol("unexpected packet".into()),
        );
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("scan: "), "{err}");
        assert!(err.to_string().contains("unexpected packet"), "{err}");
        let err = map_sqlx("ob", "scan", sqlx::Error::ColumnNotFound("id".into()));
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
}
