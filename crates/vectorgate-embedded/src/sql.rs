//! Every statement on the `vectors` table. All values are bound parameters;
//! id lists go through the `rarray` table function, never through string
//! building. The SQL text itself only varies by which optional conditions
//! are present.

use crate::errors::DbError;
use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use rusqlite::{Connection, Row, Transaction, params, params_from_iter};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use vectorgate::{CountScope, DeleteSelector, Record, ScanRequest};

/// A vector as stored: `dim` f32, little-endian, no header.
pub(crate) fn encode_vector(vector: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes
}

/// Inverse of [`encode_vector`]; `id` and `dim` only serve the error message.
pub(crate) fn decode_vector(bytes: &[u8], dim: usize, id: &str) -> Result<Vec<f32>, DbError> {
    if bytes.len() != dim * 4 {
        return Err(DbError::Corrupt(format!(
            "record {id} has a {}-byte vector, expected {} ({dim} f32)",
            bytes.len(),
            dim * 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn encode_payload(payload: Option<&serde_json::Value>) -> Result<Option<String>, DbError> {
    payload
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("payload cannot be serialized: {e}")))
}

fn decode_payload(text: Option<String>, id: &str) -> Result<Option<serde_json::Value>, DbError> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("record {id} has a payload that is not JSON: {e}")))
}

fn array(values: &[String]) -> Array {
    Rc::new(values.iter().cloned().map(Value::Text).collect())
}

/// The ids among `records` that a row of another team holds, read inside
/// the write transaction (so nothing can change them before it ends).
pub(crate) fn taken_ids(
    tx: &Transaction<'_>,
    records: &[Record],
) -> Result<HashSet<String>, DbError> {
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let teams: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.id.as_str(), r.team_id.as_str()))
        .collect();
    let mut stmt = tx.prepare_cached("SELECT id, team_id FROM vectors WHERE id IN rarray(?1)")?;
    let mut rows = stmt.query(params![array(&ids)])?;
    let mut taken = HashSet::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let team: String = row.get(1)?;
        if teams.get(id.as_str()).is_some_and(|wanted| *wanted != team) {
            taken.insert(id);
        }
    }
    Ok(taken)
}

/// Writes prepared (validated, deduplicated) records inside `tx`, after
/// [`taken_ids`] found none held by another team. The statement is prepared
/// once and reused for every row; with SQLite that is as fast as a
/// multi-row insert and has no parameter-count limit. It never changes a
/// row's team: a row of another team would be left alone, which is
/// reported as corruption (the check before it must have seen it).
pub(crate) fn upsert(tx: &Transaction<'_>, records: &[Record]) -> Result<(), DbError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO vectors (id, team_id, dataset_id, collection_id, vector, created_at_ms, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET
             dataset_id = excluded.dataset_id,
             collection_id = excluded.collection_id,
             vector = excluded.vector,
             created_at_ms = excluded.created_at_ms,
             payload = excluded.payload
         WHERE vectors.team_id = excluded.team_id",
    )?;
    for r in records {
        let written = stmt.execute(params![
            r.id,
            r.team_id,
            r.dataset_id,
            r.collection_id,
            encode_vector(&r.vector),
            r.created_at_ms,
            encode_payload(r.payload.as_ref())?,
        ])?;
        if written != 1 {
            return Err(DbError::Corrupt(format!(
                "record {} is held by another team although the check before the write found \
                 none; nothing was written",
                r.id
            )));
        }
    }
    Ok(())
}

/// Deletes within the selector's team and returns the ids actually removed
/// (`RETURNING`), so that memory drops exactly what SQLite dropped.
pub(crate) fn delete(
    tx: &Transaction<'_>,
    selector: &DeleteSelector,
) -> Result<Vec<String>, DbError> {
    let collect = |mut rows: rusqlite::Rows<'_>| -> Result<Vec<String>, DbError> {
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(row.get(0)?);
        }
        Ok(ids)
    };
    match selector {
        DeleteSelector::Ids { team_id, ids } => {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM vectors WHERE team_id = ?1 AND id IN rarray(?2) RETURNING id",
            )?;
            collect(stmt.query(params![team_id, array(ids)])?)
        }
        DeleteSelector::Scope {
            team_id,
            dataset_ids,
            collection_ids: None,
        } => {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM vectors WHERE team_id = ?1 AND dataset_id IN rarray(?2) RETURNING id",
            )?;
            collect(stmt.query(params![team_id, array(dataset_ids)])?)
        }
        DeleteSelector::Scope {
            team_id,
            dataset_ids,
            collection_ids: Some(collections),
        } => {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM vectors WHERE team_id = ?1 AND dataset_id IN rarray(?2)
                 AND collection_id IN rarray(?3) RETURNING id",
            )?;
            collect(stmt.query(params![team_id, array(dataset_ids), array(collections)])?)
        }
    }
}

/// `SELECT count(*)` with only the scope columns that are constrained, so
/// the scope index serves every combination that starts with the team.
pub(crate) fn count(conn: &Connection, scope: &CountScope) -> Result<u64, DbError> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    for (column, value) in [
        ("team_id", &scope.team_id),
        ("dataset_id", &scope.dataset_id),
        ("collection_id", &scope.collection_id),
    ] {
        if let Some(v) = value {
            values.push(Value::Text(v.clone()));
            conditions.push(format!("{column} = ?{}", values.len()));
        }
    }
    let sql = format!("SELECT count(*) FROM vectors{}", where_clause(&conditions));
    let n: i64 = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(values), |row| row.get(0))?;
    u64::try_from(n).map_err(|_| DbError::Corrupt(format!("count(*) returned {n}")))
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// One page in ascending id order (the primary key's BINARY collation is
/// byte order). The vector column is only read when asked for.
pub(crate) fn scan(
    conn: &Connection,
    req: &ScanRequest,
    dim: usize,
) -> Result<Vec<Record>, DbError> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut bind = |condition: &str, value: Value, values: &mut Vec<Value>| {
        values.push(value);
        conditions.push(format!("{condition} ?{}", values.len()));
    };
    if let Some(after) = &req.after_id {
        bind("id >", Value::Text(after.clone()), &mut values);
    }
    if let Some(team) = &req.team_id {
        bind("team_id =", Value::Text(team.clone()), &mut values);
    }
    if let Some(from) = req.created_from_ms {
        bind("created_at_ms >=", Value::Integer(from), &mut values);
    }
    if let Some(to) = req.created_to_ms {
        bind("created_at_ms <", Value::Integer(to), &mut values);
    }
    values.push(Value::Integer(i64::from(req.limit)));
    let vector_column = if req.with_vectors { "vector" } else { "NULL" };
    let sql = format!(
        "SELECT id, team_id, dataset_id, collection_id, created_at_ms, payload, {vector_column}
         FROM vectors{} ORDER BY id LIMIT ?{}",
        where_clause(&conditions),
        values.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(values))?;
    let mut records = Vec::with_capacity(req.limit.min(1024) as usize);
    while let Some(row) = rows.next()? {
        records.push(scanned_record(row, req.with_vectors, dim)?);
    }
    Ok(records)
}

fn scanned_record(row: &Row<'_>, with_vector: bool, dim: usize) -> Result<Record, DbError> {
    let id: String = row.get(0)?;
    let vector = if with_vector {
        decode_vector(row.get_ref(6)?.as_blob()?, dim, &id)?
    } else {
        Vec::new()
    };
    let payload = decode_payload(row.get(5)?, &id)?;
    Ok(Record {
        team_id: row.get(1)?,
        dataset_id: row.get(2)?,
        collection_id: row.get(3)?,
        created_at_ms: row.get(4)?,
        vector,
        payload,
        id,
    })
}

/// Payloads of the given ids that still belong to `team` (a record moved to
/// another team since the search is absent from the map).
pub(crate) fn payloads(
    conn: &Connection,
    team: &str,
    ids: &[String],
) -> Result<HashMap<String, Option<serde_json::Value>>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, payload FROM vectors WHERE team_id = ?1 AND id IN rarray(?2)",
    )?;
    let mut rows = stmt.query(params![team, array(ids)])?;
    let mut out = HashMap::with_capacity(ids.len());
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let payload = decode_payload(row.get(1)?, &id)?;
        out.insert(id, payload);
    }
    Ok(out)
}

/// What the in-memory index needs of one stored row.
#[derive(Debug)]
pub(crate) struct IndexRow<'r> {
    pub(crate) id: &'r str,
    pub(crate) team_id: &'r str,
    pub(crate) dataset_id: &'r str,
    pub(crate) collection_id: &'r str,
    pub(crate) vector: &'r [f32],
}

/// Streams every row to `each` (used once, to build the index at
/// `ensure_schema`). A plain table scan in storage order: each bucket has
/// its own vector storage, so the order rows arrive in does not matter.
/// The decode buffer is reused across rows.
pub(crate) fn for_each_row(
    conn: &Connection,
    dim: usize,
    mut each: impl FnMut(IndexRow<'_>) -> Result<(), DbError>,
) -> Result<u64, DbError> {
    let mut stmt =
        conn.prepare("SELECT id, team_id, dataset_id, collection_id, vector FROM vectors")?;
    let mut rows = stmt.query([])?;
    let mut vector = vec![0.0_f32; dim];
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let text = |i| -> Result<&str, DbError> { Ok(row.get_ref(i)?.as_str()?) };
        let id = text(0)?;
        let bytes = row.get_ref(4)?.as_blob()?;
        if bytes.len() != dim * 4 {
            return Err(DbError::Corrupt(format!(
                "record {id} has a {}-byte vector, expected {} ({dim} f32)",
                bytes.len(),
                dim * 4
            )));
        }
        for (x, c) in vector.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        each(IndexRow {
            id,
            team_id: text(1)?,
            dataset_id: text(2)?,
            collection_id: text(3)?,
            vector: &vector,
        })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_bit_exact() {
        let v = [0.0_f32, -0.0, 1.5, f32::MIN_POSITIVE, -3.25e-7, f32::MAX];
        let bytes = encode_vector(&v);
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[8..12], &1.5_f32.to_le_bytes());
        let back = decode_vector(&bytes, 6, "x").unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
        assert!(decode_vector(&bytes, 5, "x").is_err());
    }
}
