//! The SQLite file: connection settings, tables, and the stored index spec.
//!
//! Layout (format version [`FORMAT_VERSION`]):
//! - `vectors`: one row per record; the vector is a BLOB of `dim` f32 in
//!   little-endian order (fixed, so a file moves between machines), the
//!   payload JSON text or NULL. Indexed on the scope columns (count, scoped
//!   delete) and on `created_at_ms` (scan ranges); `id` is the primary key,
//!   whose index also gives scans their byte order (BINARY collation).
//! - `vectorgate_meta`: a single row with the format version, dimension and
//!   metric, so that a file is never silently read with another spec.

use crate::errors::DbError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;
use vectorgate::{IndexSpec, Metric};

/// The on-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: i64 = 1;

/// How long a statement waits for another connection's lock before SQLite
/// reports `SQLITE_BUSY` (then mapped to `Unavailable`). Writers of this
/// process are serialised by a mutex, so this only matters when another
/// process opens the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// See `journal_size_limit` in [`open_connection`].
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS vectorgate_meta (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    format_version INTEGER NOT NULL,
    dim            INTEGER NOT NULL,
    metric         TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    id            TEXT    NOT NULL PRIMARY KEY,
    team_id       TEXT    NOT NULL,
    dataset_id    TEXT    NOT NULL,
    collection_id TEXT    NOT NULL,
    vector        BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    payload       TEXT    NULL
);
CREATE INDEX IF NOT EXISTS vectors_scope ON vectors (team_id, dataset_id, collection_id);
CREATE INDEX IF NOT EXISTS vectors_created ON vectors (created_at_ms);
";

/// Opens a connection with the settings every connection needs:
/// `synchronous=FULL` (with WAL, a commit fsyncs the log before returning,
/// so an acknowledged upsert survives a crash or power loss), a busy
/// timeout, and the `rarray` table function for binding id lists.
///
/// The writer also switches the file to WAL mode (persistent in the file),
/// which lets readers run while a write transaction is open.
pub(crate) fn open_connection(path: &Path, writer: bool) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // count and scan build one statement per combination of optional
    // filters (a few dozen); keep them all prepared.
    conn.set_prepared_statement_cache_capacity(64);
    if writer {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Corrupt(format!(
                "could not switch {} to WAL mode (SQLite kept {mode:?}); \
                 is the file on a file system without shared memory support?",
                path.display()
            )));
        }
        // A checkpoint rewinds the WAL but leaves the file at its largest;
        // truncate it back to this size (bytes) after each checkpoint.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    rusqlite::vtab::array::load_module(&conn)?;
    Ok(conn)
}

/// Creates what is missing and compares the stored spec with `spec`.
/// Returns `Ok(None)` when the file now holds `spec`, `Ok(Some(found))` when
/// it holds another dimension or metric (nothing is changed then).
///
/// Runs in one `IMMEDIATE` transaction, so two processes initialising the
/// same new file cannot both write a meta row.
pub(crate) fn ensure(
    conn: &mut Connection,
    spec: &IndexSpec,
) -> Result<Option<IndexSpec>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(CREATE_TABLES)?;
    let stored: Option<(i64, i64, String)> = tx
        .query_row(
            "SELECT format_version, dim, metric FROM vectorgate_meta WHERE singleton = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let found = match stored {
        None => {
            tx.execute(
                "INSERT INTO vectorgate_meta (singleton, format_version, dim, metric) \
                 VALUES (1, ?1, ?2, ?3)",
                params![FORMAT_VERSION, i64::from(spec.dim), spec.metric.as_str()],
            )?;
            None
        }
        Some((version, dim, metric)) => {
            if version != FORMAT_VERSION {
                return Err(DbError::Corrupt(format!(
                    "the file has format version {version}, this build reads version \
                     {FORMAT_VERSION}; open it with a matching vectorgate"
                )));
            }
            let metric = Metric::parse(&metric).ok_or_else(|| {
                DbError::Corrupt(format!("the stored metric {metric:?} is unknown"))
            })?;
            let dim = u32::try_from(dim)
                .map_err(|_| DbError::Corrupt(format!("the stored dimension {dim} is invalid")))?;
            if dim == spec.dim && metric == spec.metric {
                None
            } else {
                Some(IndexSpec::new(dim, metric))
            }
        }
    };
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_compares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = open_connection(&path, true).unwrap();
        let spec = IndexSpec::new(4, Metric::L2);
        assert_eq!(ensure(&mut conn, &spec).unwrap(), None);
        assert_eq!(ensure(&mut conn, &spec).unwrap(), None);
        let other = IndexSpec::new(4, Metric::Cosine);
        assert_eq!(ensure(&mut conn, &other).unwrap(), Some(spec));

        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let reader = open_connection(&path, false).unwrap();
        let sync: i64 = reader
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn refuses_other_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("s.db"), true).unwrap();
        let spec = IndexSpec::new(4, Metric::L2);
        ensure(&mut conn, &spec).unwrap();
        conn.execute("UPDATE vectorgate_meta SET format_version = 99", [])
            .unwrap();
        let err = ensure(&mut conn, &spec).unwrap_err().into_error("local");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }
}
