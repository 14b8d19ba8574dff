//! Every input rule, in one place.
//!
//! Each function checks one kind of request against the [`IndexSpec`] and
//! either returns it ready for a store or an [`Error::InvalidInput`] that names
//! the field and the limit. Nothing here does I/O, so a rejected request has
//! changed nothing. Stores call these at the top of each method; the manager
//! calls them at its edge and again nowhere else on its own path.

use crate::error::{Error, Result};
use crate::model::{
    CountScope, DeleteSelector, IndexSpec, Metric, RecallQuery, Record, ScanRequest,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest id (record, team, dataset, collection), in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Largest vector dimension any backend here supports (pgvector's HNSW
/// stops at 2000 for `vector`, Milvus at 32768; the spec check is generous
/// and each backend may refuse more).
pub const MAX_DIM: u32 = 16_000;
/// Records per upsert call.
pub const MAX_UPSERT_BATCH: usize = 1000;
/// Hits per recall.
pub const MAX_RECALL_LIMIT: u32 = 1000;
/// Datasets per recall or scoped delete.
pub const MAX_DATASETS: usize = 1000;
/// Collection ids per include/exclude list or scoped delete.
pub const MAX_COLLECTIONS: usize = 10_000;
/// Ids per delete.
pub const MAX_DELETE_IDS: usize = 10_000;
/// Serialized payload size, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Records per scan page.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Largest `ef_search` a query may ask for (pgvector's own limit).
pub const MAX_EF_SEARCH: u32 = 1000;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// True for 1..=64 bytes of `[A-Za-z0-9._:-]`: the charset every backend
/// can store and every filter language can quote without surprises.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Checks one id-like value (record, team, dataset or collection id).
pub fn check_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {MAX_ID_LEN}", id.len()),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(Error::invalid(
            field,
            format!("contains {bad:?}; allowed characters are A-Z a-z 0-9 . _ : -"),
        ));
    }
    Ok(())
}

fn check_id_list(field: &str, ids: &[String], min: usize, max: usize) -> Result<()> {
    if ids.len() < min {
        return Err(Error::invalid(
            field,
            format!("needs at least {min} value(s)"),
        ));
    }
    if ids.len() > max {
        return Err(Error::invalid(
            field,
            format!("has {} values, the limit is {max}", ids.len()),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(&format!("{field}[{i}]"), id)?;
    }
    Ok(())
}

/// Checks an index spec from configuration.
pub fn check_spec(spec: &IndexSpec) -> Result<()> {
    if spec.dim == 0 || spec.dim > MAX_DIM {
        return Err(Error::invalid(
            "dim",
            format!("is {}, must be 1..={MAX_DIM}", spec.dim),
        ));
    }
    let h = &spec.hnsw;
    if !(2..=100).contains(&h.m) {
        return Err(Error::invalid(
            "hnsw.m",
            format!("is {}, must be 2..=100", h.m),
        ));
    }
    if !(4..=1000).contains(&h.ef_construction) || h.ef_construction < 2 * h.m {
        return Err(Error::invalid(
            "hnsw.ef_construction",
            format!(
                "is {}, must be 4..=1000 and at least 2 * m ({})",
                h.ef_construction,
                2 * h.m
            ),
        ));
    }
    if !(1..=MAX_EF_SEARCH).contains(&h.ef_search) {
        return Err(Error::invalid(
            "hnsw.ef_search",
            format!("is {}, must be 1..={MAX_EF_SEARCH}", h.ef_search),
        ));
    }
    Ok(())
}

/// Checks a vector against the spec: exact length, finite values, and a
/// non-zero norm under the cosine metric (cosine similarity is undefined there).
pub fn check_vector(field: &str, vector: &[f32], spec: &IndexSpec) -> Result<()> {
    if vector.len() != spec.dim as usize {
        return Err(Error::invalid(
            field,
            format!(
                "vector has {} values, index dimension is {}",
                vector.len(),
                spec.dim
            ),
        ));
    }
    if let Some(i) = vector.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            format!("{field}[{i}]"),
            format!("is {}, values must be finite", vector[i]),
        ));
    }
    if spec.metric == Metric::Cosine && vector.iter().all(|v| *v == 0.0) {
        return Err(Error::invalid(
            field,
            "is all zeros; cosine similarity is undefined for a zero vector",
        ));
    }
    Ok(())
}

/// Deepest nesting of a payload (MySQL/OceanBase JSON stops at 100).
pub const MAX_PAYLOAD_DEPTH: usize = 32;

/// Checks that every backend can hold the payload: PostgreSQL's JSONB
/// refuses the character U+0000 in any string or key, and OceanBase's JSON
/// nesting depth is limited. A value one backend cannot hold would leave
/// the stores different, so it is refused here, before any store is written.
fn check_payload_value(field: &str, value: &serde_json::Value, depth: usize) -> Result<()> {
    let nul = |what: &str| {
        Error::invalid(
            field,
            format!("{what} contains the character U+0000, which PostgreSQL's JSONB cannot store"),
        )
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Err(nul("a string")),
        serde_json::Value::Array(_) | serde_json::Value::Object(_)
            if depth >= MAX_PAYLOAD_DEPTH =>
        {
            Err(Error::invalid(
                field,
                format!("is nested more than {MAX_PAYLOAD_DEPTH} levels deep"),
            ))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_payload_value(field, v, depth + 1)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(nul("a key"));
            }
            check_payload_value(field, v, depth + 1)
        }),
        _ => Ok(()),
    }
}

fn check_payload(field: &str, payload: &serde_json::Value) -> Result<()> {
    if !payload.is_object() {
        return Err(Error::invalid(field, "must be a JSON object"));
    }
    check_payload_value(field, payload, 0)?;
    let size = serde_json::to_vec(payload)
        .map_err(|e| Error::invalid(field, format!("cannot be serialized: {e}")))?
        .len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(
            field,
            format!("is {size} bytes serialized, the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
    Ok(())
}

/// An upsert batch after validation: ids assigned, timestamps set,
/// duplicates collapsed.
#[derive(Debug, Clone)]
pub struct PreparedUpsert<'a> {
    /// Records to write, one per distinct id (the last occurrence wins).
    /// Borrowed when the input needed no change.
    pub records: Cow<'a, [Record]>,
    /// Ids in request order, one per input record.
    pub ids: Vec<String>,
}

/// Validates an upsert batch and normalises it: an empty id becomes a fresh
/// UUIDv7, `created_at_ms == 0` becomes `now`, and when an id appears twice
/// only its last record is kept (last write wins, and a store never sees two
/// rows with one id in one statement).
pub fn prepare_upsert<'a>(
    spec: &IndexSpec,
    records: &'a [Record],
    now_ms: i64,
) -> Result<PreparedUpsert<'a>> {
    if records.is_empty() {
        return Err(Error::invalid("records", "needs at least 1 record"));
    }
    if records.len() > MAX_UPSERT_BATCH {
        return Err(Error::invalid(
            "records",
            format!(
                "has {} records, the limit is {MAX_UPSERT_BATCH} per upsert",
                records.len()
            ),
        ));
    }
    let mut needs_change = false;
    for (i, r) in records.iter().enumerate() {
        if r.id.is_empty() {
            needs_change = true;
        } else {
            check_id(&format!("records[{i}].id"), &r.id)?;
        }
        check_id(&format!("records[{i}].team_id"), &r.team_id)?;
        check_id(&format!("records[{i}].dataset_id"), &r.dataset_id)?;
        check_id(&format!("records[{i}].collection_id"), &r.collection_id)?;
        check_vector(&format!("records[{i}].vector"), &r.vector, spec)?;
        if r.created_at_ms < 0 {
            return Err(Error::invalid(
                format!("records[{i}].created_at_ms"),
                format!("is {}, must be >= 0 (0 means now)", r.created_at_ms),
            ));
        }
        if r.created_at_ms == 0 {
            needs_change = true;
        }
        if let Some(p) = &r.payload {
            check_payload(&format!("records[{i}].payload"), p)?;
        }
    }

    let ids: Vec<String> = records
        .iter()
        .map(|r| {
            if r.id.is_empty() {
                uuid::Uuid::now_v7().to_string()
            } else {
                r.id.clone()
            }
        })
        .collect();

    // Last occurrence of each id wins; one id under two teams is a request
    // that contradicts itself (a record never changes team).
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(first) = last.insert(id.as_str(), i)
            && records[first].team_id != records[i].team_id
        {
            return Err(Error::invalid(
                format!("records[{i}].team_id"),
                format!(
                    "id {id:?} also appears at records[{first}] with another team; \
                     a record belongs to one team"
                ),
            ));
        }
    }
    let has_duplicates = last.len() != ids.len();

    let records = if needs_change || has_duplicates {
        let owned: Vec<Record> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| last.get(ids[*i].as_str()) == Some(i))
            .map(|(i, r)| {
                let mut r = r.clone();
                r.id.clone_from(&ids[i]);
                if r.created_at_ms == 0 {
                    r.created_at_ms = now_ms;
                }
                r
            })
            .collect();
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(records)
    };
    Ok(PreparedUpsert { records, ids })
}

/// The collection filter of a recall after FastGPT's rules were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionFilter {
    /// No constraint on collections.
    Any,
    /// Only these collections (never empty).
    Only(Vec<String>),
    /// Any collection but these (never empty).
    Except(Vec<String>),
    /// Nothing can match: the include list was emptied by the exclusions.
    /// Return no hits without asking the store.
    Nothing,
}

impl CollectionFilter {
    /// True if a record in `collection_id` passes the filter.
    pub fn allows(&self, collection_id: &str) -> bool {
        match self {
            CollectionFilter::Any => true,
            CollectionFilter::Only(ids) => ids.iter().any(|c| c == collection_id),
            CollectionFilter::Except(ids) => !ids.iter().any(|c| c == collection_id),
            CollectionFilter::Nothing => false,
        }
    }
}

/// Validates a recall and resolves its collection filter: excluded ids are
/// removed from the include list; an include list that ends up empty (or was
/// given empty) matches nothing.
pub fn check_recall(spec: &IndexSpec, query: &RecallQuery) -> Result<CollectionFilter> {
    check_id("team_id", &query.team_id)?;
    check_id_list("dataset_ids", &query.dataset_ids, 1, MAX_DATASETS)?;
    check_vector("vector", &query.vector, spec)?;
    if query.limit == 0 || query.limit > MAX_RECALL_LIMIT {
        return Err(Error::invalid(
            "limit",
            format!("is {}, must be 1..={MAX_RECALL_LIMIT}", query.limit),
        ));
    }
    if let Some(ef) = query.ef_search
        && !(1..=MAX_EF_SEARCH).contains(&ef)
    {
        return Err(Error::invalid(
            "ef_search",
            format!("is {ef}, must be 1..={MAX_EF_SEARCH}"),
        ));
    }
    if let Some(include) = &query.collection_ids {
        check_id_list("collection_ids", include, 0, MAX_COLLECTIONS)?;
    }
    check_id_list(
        "exclude_collection_ids",
        &query.exclude_collection_ids,
        0,
        MAX_COLLECTIONS,
    )?;
    Ok(match &query.collection_ids {
        Some(include) => {
            let mut kept: Vec<String> = include
                .iter()
                .filter(|c| !query.exclude_collection_ids.contains(c))
                .cloned()
                .collect();
            kept.sort();
            kept.dedup();
            if kept.is_empty() {
                CollectionFilter::Nothing
            } else {
                CollectionFilter::Only(kept)
            }
        }
        None if query.exclude_collection_ids.is_empty() => CollectionFilter::Any,
        None => {
            let mut excluded = query.exclude_collection_ids.clone();
            excluded.sort();
            excluded.dedup();
            CollectionFilter::Except(excluded)
        }
    })
}

/// The `ef_search` a recall runs with: the query's, else the spec's, and
/// never below the limit (an HNSW search cannot return more than `ef` rows).
pub fn effective_ef_search(spec: &IndexSpec, query: &RecallQuery) -> u32 {
    query
        .ef_search
        .unwrap_or(spec.hnsw.ef_search)
        .max(query.limit)
}

/// Validates a delete selector.
pub fn check_delete(selector: &DeleteSelector) -> Result<()> {
    match selector {
        DeleteSelector::Ids { team_id, ids } => {
            check_id("team_id", team_id)?;
            check_id_list("ids", ids, 1, MAX_DELETE_IDS)
        }
        DeleteSelector::Scope {
            team_id,
            dataset_ids,
            collection_ids,
        } => {
            check_id("team_id", team_id)?;
            check_id_list("dataset_ids", dataset_ids, 1, MAX_DATASETS)?;
            if let Some(collections) = collection_ids {
                if collections.is_empty() {
                    return Err(Error::invalid(
                        "collection_ids",
                        "is an empty list; omit it to delete whole datasets",
                    ));
                }
                check_id_list("collection_ids", collections, 1, MAX_COLLECTIONS)?;
            }
            Ok(())
        }
    }
}

/// Validates a count scope.
pub fn check_count(scope: &CountScope) -> Result<()> {
    if let Some(t) = &scope.team_id {
        check_id("team_id", t)?;
    }
    if let Some(d) = &scope.dataset_id {
        check_id("dataset_id", d)?;
    }
    if let Some(c) = &scope.collection_id {
        check_id("collection_id", c)?;
    }
    Ok(())
}

/// Validates a scan request.
pub fn check_scan(request: &ScanRequest) -> Result<()> {
    if request.limit == 0 || request.limit > MAX_SCAN_LIMIT {
        return Err(Error::invalid(
            "limit",
            format!("is {}, must be 1..={MAX_SCAN_LIMIT}", request.limit),
        ));
    }
    if let Some(t) = &request.team_id {
        check_id("team_id", t)?;
    }
    if let Some(cursor) = &request.after_id {
        check_id("after_id", cursor)?;
    }
    if let (Some(from), Some(to)) = (request.created_from_ms, request.created_to_ms)
        && from > to
    {
        return Err(Error::invalid(
            "created_from_ms",
            format!("is {from}, after created_to_ms ({to})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IndexSpec {
        IndexSpec::new(3, Metric::Cosine)
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            team_id: "t".into(),
            dataset_id: "d".into(),
            collection_id: "c".into(),
            vector: vec![1.0, 0.0, 0.0],
            created_at_ms: 5,
            payload: None,
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn ids_follow_the_charset_and_length() {
        assert!(is_valid_id("a.b_c:d-9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a'b"));
        let err = check_id("team_id", "é").err().map(field_of);
        assert_eq!(err.as_deref(), Some("team_id"));
    }

    #[test]
    fn vector_errors_name_the_dimension() {
        let err = check_vector("vector", &[1.0], &spec()).unwrap_err();
        assert!(
            err.to_string()
                .contains("vector has 1 values, index dimension is 3")
        );
        let err = check_vector("vector", &[1.0, f32::NAN, 0.0], &spec()).unwrap_err();
        assert_eq!(field_of(err), "vector[1]");
        let err = check_vector("vector", &[0.0; 3], &spec()).unwrap_err();
        assert!(err.to_string().contains("zero"));
        assert!(check_vector("vector", &[0.0; 3], &IndexSpec::new(3, Metric::L2)).is_ok());
    }

    #[test]
    fn prepare_upsert_assigns_ids_and_keeps_last_duplicate() {
        let mut a = record("");
        a.created_at_ms = 0;
        let mut b1 = record("b");
        b1.vector = vec![0.0, 1.0, 0.0];
        let b2 = record("b");
        let input = vec![a, b1, b2];
        let prepared = prepare_upsert(&spec(), &input, 42).unwrap();
        assert_eq!(prepared.ids.len(), 3);
        assert_eq!(prepared.ids[1], "b");
        assert_eq!(prepared.ids[2], "b");
        assert!(uuid::Uuid::parse_str(&prepared.ids[0]).is_ok());
        assert_eq!(prepared.records.len(), 2);
        assert_eq!(prepared.records[0].created_at_ms, 42);
        assert_eq!(prepared.records[1].vector, vec![1.0, 0.0, 0.0]);
        assert!(matches!(prepared.records, Cow::Owned(_)));
    }

    #[test]
    fn prepare_upsert_refuses_one_id_under_two_teams() {
        let mut other = record("b");
        other.team_id = "another-team".into();
        let input = vec![record("a"), record("b"), other];
        let err = prepare_upsert(&spec(), &input, 42).unwrap_err();
        assert!(err.to_string().contains("records[1]"), "{err}");
        assert_eq!(field_of(err), "records[2].team_id");
    }

    #[test]
    fn prepare_upsert_borrows_when_nothing_changes() {
        let input = vec![record("a"), record("b")];
        let prepared = prepare_upsert(&spec(), &input, 42).unwrap();
        assert!(matches!(prepared.records, Cow::Borrowed(_)));
    }

    #[test]
    fn prepare_upsert_limits() {
        let many = vec![record("a"); MAX_UPSERT_BATCH + 1];
        let err = prepare_upsert(&spec(), &many, 1).unwrap_err();
        assert!(err.to_string().contains("limit is 1000"));
        let mut big = record("a");
        big.payload = Some(serde_json::json!({ "t": "x".repeat(MAX_PAYLOAD_BYTES) }));
        assert_eq!(
            field_of(prepare_upsert(&spec(), &[big], 1).unwrap_err()),
            "records[0].payload"
        );
        let mut not_object = record("a");
        let index = spec();
        let mut nul = record("a");
        nul.payload = Some(serde_json::json!({ "text": "a\u{0}b" }));
        let err = prepare_upsert(&index, std::slice::from_ref(&nul), 1).unwrap_err();
        assert!(err.to_string().contains("U+0000"), "{err}");
        nul.payload = Some(serde_json::json!({ "k\u{0}": 1 }));
        assert!(prepare_upsert(&index, std::slice::from_ref(&nul), 1).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_PAYLOAD_DEPTH + 1 {
            deep = serde_json::json!({ "d": deep });
        }
        nul.payload = Some(deep);
        let err = prepare_upsert(&index, std::slice::from_ref(&nul), 1).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        not_object.payload = Some(serde_json::json!([1, 2]));
        assert!(prepare_upsert(&spec(), &[not_object], 1).is_err());
        assert!(prepare_upsert(&spec(), &[], 1).is_err());
    }

    #[test]
    fn recall_collection_rules() {
        let mut q = RecallQuery {
            team_id: "t".into(),
            dataset_ids: vec!["d".into()],
            vector: vec![1.0, 0.0, 0.0],
            limit: 5,
            ..Default::default()
        };
        assert_eq!(check_recall(&spec(), &q).unwrap(), CollectionFilter::Any);
        q.exclude_collection_ids = vec!["x".into()];
        assert_eq!(
            check_recall(&spec(), &q).unwrap(),
            CollectionFilter::Except(vec!["x".into()])
        );
        q.collection_ids = Some(vec!["x".into(), "y".into()]);
        assert_eq!(
            check_recall(&spec(), &q).unwrap(),
            CollectionFilter::Only(vec!["y".into()])
        );
        q.collection_ids = Some(vec!["x".into()]);
        assert_eq!(
            check_recall(&spec(), &q).unwrap(),
            CollectionFilter::Nothing
        );
        q.limit = 0;
        assert_eq!(field_of(check_recall(&spec(), &q).unwrap_err()), "limit");
    }

    #[test]
    fn delete_and_scan_rules() {
        let empty_collections = DeleteSelector::Scope {
            team_id: "t".into(),
            dataset_ids: vec!["d".into()],
            collection_ids: Some(vec![]),
        };
        assert_eq!(
            field_of(check_delete(&empty_collections).unwrap_err()),
            "collection_ids"
        );
        let no_ids = DeleteSelector::Ids {
            team_id: "t".into(),
            ids: vec![],
        };
        assert_eq!(field_of(check_delete(&no_ids).unwrap_err()), "ids");
        let scan = ScanRequest {
            limit: 10,
            created_from_ms: Some(10),
            created_to_ms: Some(5),
            ..Default::default()
        };
        assert_eq!(field_of(check_scan(&scan).unwrap_err()), "created_from_ms");
    }

    #[test]
    fn spec_rules() {
        assert!(check_spec(&IndexSpec::new(768, Metric::Cosine)).is_ok());
        assert_eq!(
            field_of(check_spec(&IndexSpec::new(0, Metric::L2)).unwrap_err()),
            "dim"
        );
    }
}
