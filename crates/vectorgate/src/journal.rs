//! The replication journal: a durable, totally ordered log of writes.
//!
//! Every write the manager accepts is appended here (in one fsynced SQLite
//! transaction per group of concurrent writes) before it is applied to any
//! store or acknowledged. Each store has a cursor: the highest sequence
//! number it has applied, with everything before it applied too. A store
//! that missed writes (down, slow, or the process was killed) catches up by
//! replaying entries after its cursor, in order. Replaying an entry twice is
//! harmless — upserts replace by id, deletes delete by id or scope — so
//! cursors may be persisted lazily: after a crash a store replays a little
//! more than it needs to, never less.
//!
//! Entries every store has applied are trimmed. Entries a store refused
//! permanently are moved to a per-store dead-letter table, with the error.
//!
//! Why SQLite: it is already the embedded backend's engine, it is crash-safe
//! with WAL + `synchronous=FULL`, and a journal is a table with a primary key.
//!
//! This type is blocking; the manager calls it from `spawn_blocking`.

use crate::error::{Error, Result};
use crate::model::{DeleteSelector, Record};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const STORE: &str = "journal";

/// One journaled write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace these records (ids and timestamps already assigned).
    Upsert(Vec<Record>),
    /// Delete within one team.
    Delete(DeleteSelector),
}

impl WriteOp {
    /// Approximate bytes it takes in memory and in the journal, for the
    /// write queue's byte bound.
    pub fn approx_bytes(&self) -> u64 {
        let bytes = match self {
            WriteOp::Upsert(records) => records
                .iter()
                .map(|r| {
                    128 + 4 * r.vector.len()
                        + r.id.len()
                        + r.team_id.len()
                        + r.dataset_id.len()
                        + r.collection_id.len()
                        + r.payload.as_ref().map_or(0, approx_json_bytes)
                })
                .sum(),
            WriteOp::Delete(selector) => 256 + approx_json_bytes(&serde_json::json!(selector)),
        };
        bytes as u64
    }

    /// Records it carries (1 for a delete), for batching limits.
    pub fn weight(&self) -> usize {
        match self {
            WriteOp::Upsert(records) => records.len().max(1),
            WriteOp::Delete(_) => 1,
        }
    }
}

fn approx_json_bytes(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(s) => s.len() + 2,
        serde_json::Value::Array(items) => 2 + items.iter().map(approx_json_bytes).sum::<usize>(),
        serde_json::Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + approx_json_bytes(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}

/// A write with its place in the total order.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Sequence number, from 1, strictly increasing.
    pub seq: u64,
    /// Epoch milliseconds when it was journaled (for lag in seconds).
    pub at_ms: i64,
    /// The write.
    pub op: WriteOp,
}

/// An entry a store refused permanently.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The store that refused it.
    pub store: String,
    /// The entry.
    pub entry: Entry,
    /// The store's last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

/// The durable log. See the module docs.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    faults: Arc<JournalFaults>,
}

/// Injected journal I/O errors, for the manager's fault-model tests: each
/// counter is how many of the next calls of that kind fail as if the disk
/// were full. Production code never sets them.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct JournalFaults {
    /// Failing `append` calls to come (nothing is written).
    pub append: AtomicU32,
    /// Failing `save_cursors` calls to come.
    pub save_cursors: AtomicU32,
    /// Failing `trim` calls to come.
    pub trim: AtomicU32,
}

impl JournalFaults {
    fn take(counter: &AtomicU32, what: &str) -> Result<()> {
        let hit = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hit {
            return Err(db_error(what, "injected fault: database or disk is full"));
        }
        Ok(())
    }
}

/// Record fields other than the vector, serialized as JSON; vectors follow
/// as raw little-endian f32 (JSON would make them 3–4× larger and slower).
#[derive(Serialize, Deserialize)]
struct RecordMeta {
    id: String,
    team_id: String,
    dataset_id: String,
    collection_id: String,
    created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
    dim: u32,
}

const KIND_UPSERT: i64 = 1;
const KIND_DELETE: i64 = 2;

fn db_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(STORE, format!("{context}: {e}"))
}

fn encode(op: &WriteOp) -> Result<(i64, Vec<u8>)> {
    match op {
        WriteOp::Upsert(records) => {
            let meta: Vec<RecordMeta> = records
                .iter()
                .map(|r| RecordMeta {
                    id: r.id.clone(),
                    team_id: r.team_id.clone(),
                    dataset_id: r.dataset_id.clone(),
                    collection_id: r.collection_id.clone(),
                    created_at_ms: r.created_at_ms,
                    payload: r.payload.clone(),
                    dim: u32::try_from(r.vector.len()).unwrap_or(u32::MAX),
                })
                .collect();
            let header = serde_json::to_vec(&meta).map_err(|e| db_error("encoding an entry", e))?;
            let floats: usize = records.iter().map(|r| r.vector.len()).sum();
            let mut body = Vec::with_capacity(4 + header.len() + 4 * floats);
            let header_len =
                u32::try_from(header.len()).map_err(|e| db_error("entry header too large", e))?;
            body.extend_from_slice(&header_len.to_le_bytes());
            body.extend_from_slice(&header);
            for r in records {
                for v in &r.vector {
                    body.extend_from_slice(&v.to_le_bytes());
                }
            }
            Ok((KIND_UPSERT, body))
        }
        WriteOp::Delete(selector) => Ok((
            KIND_DELETE,
            serde_json::to_vec(selector).map_err(|e| db_error("encoding an entry", e))?,
        )),
    }
}

fn decode(kind: i64, body: &[u8]) -> Result<WriteOp> {
    let corrupt = |what: &str| db_error("corrupt journal entry", what);
    match kind {
        KIND_UPSERT => {
            let len_bytes: [u8; 4] = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("short header"))?;
            let header_len = u32::from_le_bytes(len_bytes) as usize;
            let header = body
                .get(4..4 + header_len)
                .ok_or_else(|| corrupt("header past end"))?;
            let meta: Vec<RecordMeta> =
                serde_json::from_slice(header).map_err(|e| db_error("corrupt journal entry", e))?;
            let mut floats = body[4 + header_len..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            let mut records = Vec::with_capacity(meta.len());
            for m in meta {
                let vector: Vec<f32> = floats.by_ref().take(m.dim as usize).collect();
                if vector.len() != m.dim as usize {
                    return Err(corrupt("vector data past end"));
                }
                records.push(Record {
                    id: m.id,
                    team_id: m.team_id,
                    dataset_id: m.dataset_id,
                    collection_id: m.collection_id,
                    vector,
                    created_at_ms: m.created_at_ms,
                    payload: m.payload,
                });
            }
            Ok(WriteOp::Upsert(records))
        }
        KIND_DELETE => Ok(WriteOp::Delete(
            serde_json::from_slice(body).map_err(|e| db_error("corrupt journal entry", e))?,
        )),
        other => Err(corrupt(&format!("unknown kind {other}"))),
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::internal(STORE, format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| db_error(&format!("cannot open {}", path.display()), e))?;
        // A new file shrinks as it is trimmed (incremental vacuum); this must
        // be set before the first table exists.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(|e| db_error("cannot initialise the journal", e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS entries (
                 seq   INTEGER PRIMARY KEY AUTOINCREMENT,
                 at_ms INTEGER NOT NULL,
                 kind  INTEGER NOT NULL,
                 body  BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS cursors (
                 store   TEXT PRIMARY KEY,
                 applied INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS holds (
                 store    TEXT PRIMARY KEY,
                 reason   TEXT NOT NULL,
                 since_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS dead_letters (
                 store    TEXT NOT NULL,
                 seq      INTEGER NOT NULL,
                 at_ms    INTEGER NOT NULL,
                 kind     INTEGER NOT NULL,
                 body     BLOB NOT NULL,
                 error    TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 PRIMARY KEY (store, seq)
             );",
        )
        .map_err(|e| db_error("cannot initialise the journal", e))?;
        Ok(Journal {
            conn,
            path: path.to_owned(),
            faults: Arc::default(),
        })
    }

    /// The fault injection counters of this journal (tests only).
    #[doc(hidden)]
    pub fn faults(&self) -> Arc<JournalFaults> {
        self.faults.clone()
    }

    /// The file it lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `ops` in one durable transaction; returns their sequence
    /// numbers, in order, and the bytes they take. When this returns, the
    /// writes survive a crash.
    pub fn append(&mut self, ops: &[&WriteOp], at_ms: i64) -> Result<(Vec<u64>, u64)> {
        JournalFaults::take(&self.faults.append, "journal append")?;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error("journal append", e))?;
        let mut seqs = Vec::with_capacity(ops.len());
        let mut bytes = 0u64;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO entries (at_ms, kind, body) VALUES (?1, ?2, ?3)")
                .map_err(|e| db_error("journal append", e))?;
            for op in ops {
                let (kind, body) = encode(op)?;
                bytes += body.len() as u64;
                insert
                    .execute(params![at_ms, kind, body])
                    .map_err(|e| db_error("journal append", e))?;
                seqs.push(
                    u64::try_from(tx.last_insert_rowid())
                        .map_err(|e| db_error("journal sequence", e))?,
                );
            }
        }
        tx.commit().map_err(|e| db_error("journal commit", e))?;
        Ok((seqs, bytes))
    }

    /// Removes entries that no store applied (writes refused by the store
    /// that served them, or that no store could apply), so no store ever
    /// sees them. All or none. Returns the bytes removed.
    pub fn remove(&mut self, seqs: &[u64]) -> Result<u64> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error("journal remove", e))?;
        let mut bytes = 0u64;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM entries WHERE seq = ?1 RETURNING length(body)")
                .map_err(|e| db_error("journal remove", e))?;
            for seq in seqs {
                let removed: Option<i64> = stmt
                    .query_row(params![to_i64(*seq)], |row| row.get(0))
                    .optional()
                    .map_err(|e| db_error("journal remove", e))?;
                bytes += removed.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            }
        }
        tx.commit().map_err(|e| db_error("journal remove", e))?;
        Ok(bytes)
    }

    /// Entries with `after < seq <= through`, in order, stopping once
    /// `max_weight` records were read (at least one entry is returned).
    pub fn read(&self, after: u64, through: u64, max_weight: usize) -> Result<Vec<Entry>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at_ms, kind, body FROM entries
                 WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 1000",
            )
            .map_err(|e| db_error("journal read", e))?;
        let mut rows = stmt
            .query(params![to_i64(after), to_i64(through)])
            .map_err(|e| db_error("journal read", e))?;
        let mut entries = Vec::new();
        let mut weight = 0;
        while let Some(row) = rows.next().map_err(|e| db_error("journal read", e))? {
            let seq: i64 = row.get(0).map_err(|e| db_error("journal read", e))?;
            let at_ms: i64 = row.get(1).map_err(|e| db_error("journal read", e))?;
            let kind: i64 = row.get(2).map_err(|e| db_error("journal read", e))?;
            let body: Vec<u8> = row.get(3).map_err(|e| db_error("journal read", e))?;
            let op = decode(kind, &body)?;
            weight += op.weight();
            entries.push(Entry {
                seq: u64::try_from(seq).unwrap_or(0),
                at_ms,
                op,
            });
            if weight >= max_weight {
                break;
            }
        }
        Ok(entries)
    }

    /// The highest sequence number ever assigned (0 for a new journal).
    /// Survives trimming: SQLite's AUTOINCREMENT never reuses numbers.
    pub fn last_seq(&self) -> Result<u64> {
        let from_sequence: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'entries'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_error("journal last seq", e))?;
        Ok(u64::try_from(from_sequence.unwrap_or(0)).unwrap_or(0))
    }

    /// Bytes of the entries held (their encoded bodies).
    pub fn bytes(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT total(length(body)) FROM entries", [], |row| {
                row.get::<_, f64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| db_error("journal size", e))
    }

    /// Number of entries held, and the oldest entry's time.
    pub fn size(&self) -> Result<(u64, Option<i64>)> {
        self.conn
            .query_row("SELECT count(*), min(at_ms) FROM entries", [], |row| {
                Ok((
                    u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    row.get(1)?,
                ))
            })
            .map_err(|e| db_error("journal size", e))
    }

    /// When the first entry after `seq` was journaled, if there is one.
    pub fn time_after(&self, seq: u64) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT at_ms FROM entries WHERE seq > ?1 ORDER BY seq LIMIT 1",
                params![to_i64(seq)],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_error("journal lag", e))
    }

    /// Every store's persisted cursor.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT store, applied FROM cursors")
            .map_err(|e| db_error("journal cursors", e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .map_err(|e| db_error("journal cursors", e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_error("journal cursors", e))
    }

    /// Persists cursors (never moves one backwards).
    pub fn save_cursors(&mut self, cursors: &[(&str, u64)]) -> Result<()> {
        JournalFaults::take(&self.faults.save_cursors, "journal cursors")?;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error("journal cursors", e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO cursors (store, applied) VALUES (?1, ?2)
                     ON CONFLICT (store) DO UPDATE SET applied = max(applied, excluded.applied)",
                )
                .map_err(|e| db_error("journal cursors", e))?;
            for (store, applied) in cursors {
                stmt.execute(params![store, to_i64(*applied)])
                    .map_err(|e| db_error("journal cursors", e))?;
            }
        }
        tx.commit().map_err(|e| db_error("journal cursors", e))
    }

    /// Deletes entries every store has applied (`seq <= through`), and
    /// gives the freed pages back to the file system once enough piled up.
    /// Returns the number of entries and bytes deleted.
    pub fn trim(&mut self, through: u64) -> Result<(u64, u64)> {
        JournalFaults::take(&self.faults.trim, "journal trim")?;
        let bytes: f64 = self
            .conn
            .query_row(
                "SELECT total(length(body)) FROM entries WHERE seq <= ?1",
                params![to_i64(through)],
                |row| row.get(0),
            )
            .map_err(|e| db_error("journal trim", e))?;
        let n = self
            .conn
            .execute(
                "DELETE FROM entries WHERE seq <= ?1",
                params![to_i64(through)],
            )
            .map_err(|e| db_error("journal trim", e))?;
        if n > 0 {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |row| row.get(0))
                .map_err(|e| db_error("journal trim", e))?;
            // 4 MiB of free 4 KiB pages: worth one incremental vacuum.
            if free > 1024 {
                self.conn
                    .execute_batch("PRAGMA incremental_vacuum;")
                    .map_err(|e| db_error("journal vacuum", e))?;
            }
        }
        Ok((n as u64, bytes as u64))
    }

    /// Keeps `store` out of rotation across restarts (an unfinished resync
    /// left it with a partial copy), until [`Journal::clear_hold`].
    pub fn set_hold(&mut self, store: &str, reason: &str, since_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO holds (store, reason, since_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store) DO UPDATE SET reason = excluded.reason",
                params![store, reason, since_ms],
            )
            .map_err(|e| db_error("journal hold", e))?;
        Ok(())
    }

    /// Lifts `store`'s hold.
    pub fn clear_hold(&mut self, store: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM holds WHERE store = ?1", params![store])
            .map_err(|e| db_error("journal hold", e))?;
        Ok(())
    }

    /// Stores on hold, with the reason.
    pub fn holds(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT store, reason FROM holds ORDER BY store")
            .map_err(|e| db_error("journal holds", e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| db_error("journal holds", e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_error("journal holds", e))
    }

    /// Moves an entry to `store`'s dead letters.
    pub fn dead_letter(
        &mut self,
        store: &str,
        entry: &Entry,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        let (kind, body) = encode(&entry.op)?;
        self.conn
            .execute(
                "INSERT INTO dead_letters (store, seq, at_ms, kind, body, error, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (store, seq) DO UPDATE SET error = excluded.error, attempts = excluded.attempts",
                params![store, to_i64(entry.seq), entry.at_ms, kind, body, error, attempts],
            )
            .map_err(|e| db_error("journal dead letter", e))?;
        Ok(())
    }

    /// `store`'s dead letters, oldest first (at most `limit`).
    pub fn dead_letters(&self, store: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_ms, kind, body, error, attempts FROM dead_letters
                 WHERE store = ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| db_error("journal dead letters", e))?;
        let mut rows = stmt
            .query(params![store, i64::try_from(limit).unwrap_or(i64::MAX)])
            .map_err(|e| db_error("journal dead letters", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(|e| db_error("journal dead letters", e))?
        {
            let get = |e: rusqlite::Error| db_error("journal dead letters", e);
            let seq: i64 = row.get(0).map_err(get)?;
            let kind: i64 = row.get(2).map_err(get)?;
            let body: Vec<u8> = row.get(3).map_err(get)?;
            out.push(DeadLetter {
                store: store.to_owned(),
                entry: Entry {
                    seq: u64::try_from(seq).unwrap_or(0),
                    at_ms: row.get(1).map_err(get)?,
                    op: decode(kind, &body)?,
                },
                error: row.get(4).map_err(get)?,
                attempts: row.get(5).map_err(get)?,
            });
        }
        Ok(out)
    }

    /// How many dead letters `store` has.
    pub fn dead_letter_count(&self, store: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM dead_letters WHERE store = ?1",
                params![store],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| db_error("journal dead letters", e))
    }

    /// The oldest dead letter of every store that has one: the journal keeps
    /// every entry from there on, so a redrive can replay them in order.
    pub fn oldest_dead_letters(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT store, min(seq) FROM dead_letters GROUP BY store")
            .map_err(|e| db_error("journal dead letters", e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .map_err(|e| db_error("journal dead letters", e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_error("journal dead letters", e))
    }

    /// Drops every dead letter of `store` (an operator accepts that the
    /// store lacks them); returns how many there were.
    pub fn discard_dead_letters(&mut self, store: &str) -> Result<u64> {
        let dropped = self
            .conn
            .execute("DELETE FROM dead_letters WHERE store = ?1", params![store])
            .map_err(|e| db_error("journal dead letters", e))?;
        Ok(dropped as u64)
    }

    /// Re-drives every dead letter of `store`: removes them and, in the same
    /// transaction, moves the store's saved cursor back to just before the
    /// oldest one, so the store replays the journal from there even if the
    /// process stops before its next cursor save (a re-drive is never
    /// lost). Returns the oldest one's sequence number, if any.
    pub fn redrive_dead_letters(&mut self, store: &str) -> Result<Option<u64>> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error("journal dead letters", e))?;
        let oldest: Option<i64> = tx
            .query_row(
                "SELECT min(seq) FROM dead_letters WHERE store = ?1",
                params![store],
                |row| row.get(0),
            )
            .map_err(|e| db_error("journal dead letters", e))?;
        if let Some(oldest) = oldest {
            tx.execute(
                "UPDATE cursors SET applied = min(applied, ?2) WHERE store = ?1",
                params![store, oldest - 1],
            )
            .map_err(|e| db_error("journal cursors", e))?;
        }
        tx.execute("DELETE FROM dead_letters WHERE store = ?1", params![store])
            .map_err(|e| db_error("journal dead letters", e))?;
        tx.commit()
            .map_err(|e| db_error("journal dead letters", e))?;
        Ok(oldest.and_then(|s| u64::try_from(s).ok()))
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, v: f32) -> Record {
        Record {
            id: id.into(),
            team_id: "t".into(),
            dataset_id: "d".into(),
            collection_id: "c".into(),
            vector: vec![v, -v, 0.5],
            created_at_ms: 42,
            payload: Some(serde_json::json!({"text": "héllo"})),
        }
    }

    #[test]
    fn append_read_trim_and_cursors_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let upsert = WriteOp::Upsert(vec![record("a", 1.0), record("b", 2.0)]);
        let delete = WriteOp::Delete(DeleteSelector::Ids {
            team_id: "t".into(),
            ids: vec!["a".into()],
        });
        {
            let mut journal = Journal::open(&path).unwrap();
            assert_eq!(
                journal.append(&[&upsert, &delete], 7).unwrap().0,
                vec![1, 2]
            );
            journal.save_cursors(&[("pg", 1), ("local", 2)]).unwrap();
            journal.save_cursors(&[("pg", 0)]).unwrap();
        }
        let mut journal = Journal::open(&path).unwrap();
        let entries = journal.read(0, 2, 10_000).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].op, upsert);
        assert_eq!(entries[1].op, delete);
        assert_eq!(entries[0].at_ms, 7);
        let mut cursors = journal.cursors().unwrap();
        cursors.sort();
        assert_eq!(
            cursors,
            vec![("local".into(), 2), ("pg".into(), 1)],
            "never backwards"
        );
        assert_eq!(journal.read(1, 2, 10).unwrap().len(), 1);
        assert_eq!(journal.read(0, 2, 1).unwrap().len(), 1, "weight limit");

        assert_eq!(journal.trim(2).unwrap().0, 2);
        assert_eq!(journal.size().unwrap().0, 0);
        assert_eq!(journal.last_seq().unwrap(), 2, "numbers are never reused");
        assert_eq!(journal.append(&[&delete], 8).unwrap().0, vec![3]);
    }

    #[test]
    fn dead_letters_keep_the_entry_and_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let op = WriteOp::Upsert(vec![record("x", 3.0)]);
        journal.append(&[&op], 1).unwrap();
        let entry = journal.read(0, 1, 10).unwrap().remove(0);
        journal.dead_letter("pg", &entry, "rejected", 5).unwrap();
        assert_eq!(journal.dead_letter_count("pg").unwrap(), 1);
        assert_eq!(journal.dead_letter_count("local").unwrap(), 0);
        let letters = journal.dead_letters("pg", 10).unwrap();
        assert_eq!(letters[0].entry, entry);
        assert_eq!(letters[0].error, "rejected");
        assert_eq!(
            journal.oldest_dead_letters().unwrap(),
            vec![("pg".into(), 1)]
        );
        journal.save_cursors(&[("pg", 1), ("local", 1)]).unwrap();
        assert_eq!(journal.redrive_dead_letters("pg").unwrap(), Some(1));
        assert_eq!(journal.dead_letter_count("pg").unwrap(), 0);
        // The saved cursor moved back with the re-drive, in one transaction.
        let mut cursors = journal.cursors().unwrap();
        cursors.sort();
        assert_eq!(cursors, vec![("local".into(), 1), ("pg".into(), 0)]);
        assert_eq!(journal.redrive_dead_letters("pg").unwrap(), None);
        journal.dead_letter("pg", &entry, "rejected", 5).unwrap();
        assert_eq!(journal.discard_dead_letters("pg").unwrap(), 1);
        assert_eq!(journal.dead_letter_count("pg").unwrap(), 0);

        journal.set_hold("local", "resync", 5).unwrap();
        assert_eq!(
            journal.holds().unwrap(),
            vec![("local".into(), "resync".into())]
        );
        journal.clear_hold("local").unwrap();
        assert!(journal.holds().unwrap().is_empty());
    }
}
