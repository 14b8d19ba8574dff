//! Proto ↔ model conversions, and [`to_status`], the one mapping from
//! [`vectorgate::Error`] to a gRPC status.
//!
//! Conversions only translate shapes (empty strings become `None`, JSON text
//! becomes a value); every input rule is `vectorgate::validate`'s, applied
//! by the manager before any store is touched.

use crate::proto;
use prost::Message;
use sha2::Digest;
use tonic::Status;
use vectorgate::{
    BreakerState, CountScope, DeleteSelector, Error, Hit, ManagerStatus, RecallQuery, Record,
    ScanRequest, StoreStatus,
};

/// Maps a library error to a gRPC status. The message is the error's text;
/// for bad input it starts with the field, e.g.
/// `records[3].vector: vector has 3 values, index dimension is 8`.
///
/// Every message goes through [`vectorgate::redact::text`]: a driver that
/// echoes its connection string never shows a password to a client.
pub fn to_status(error: Error) -> Status {
    let status = status_of(error);
    Status::new(status.code(), vectorgate::redact::text(status.message()))
}

fn status_of(error: Error) -> Status {
    match error {
        Error::InvalidInput { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        Error::Conflict { field, reason } => Status::already_exists(format!("{field}: {reason}")),
        Error::Unavailable { .. } | Error::AllStoresFailed(_) => {
            Status::unavailable(error.to_string())
        }
        Error::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
        Error::SchemaMismatch { .. } => Status::failed_precondition(error.to_string()),
        Error::Internal { .. } => Status::internal(error.to_string()),
        // `Error` is non-exhaustive: a kind added later is reported, not hidden.
        other => Status::internal(other.to_string()),
    }
}

/// Upsert records, in request order. `payload_json` must be empty or a JSON
/// object; anything else is `InvalidInput` naming `records[i].payload_json`.
pub fn records_from_proto(records: Vec<proto::Record>) -> Result<Vec<Record>, Error> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let payload = parse_payload(&format!("records[{i}].payload_json"), &r.payload_json)?;
            Ok(Record {
                id: r.id,
                team_id: r.team_id,
                dataset_id: r.dataset_id,
                collection_id: r.collection_id,
                vector: r.vector,
                created_at_ms: r.created_at_ms,
                payload,
            })
        })
        .collect()
}

fn parse_payload(field: &str, text: &str) -> Result<Option<serde_json::Value>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(field, format!("is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(
            field,
            "must be a JSON object (or empty for no payload)",
        ));
    }
    Ok(Some(value))
}

/// The library names a payload `records[i].payload`; the API calls it
/// `records[i].payload_json`.
pub fn rename_payload_field(error: Error) -> Error {
    match error {
        Error::InvalidInput { field, reason } if field.ends_with(".payload") => {
            Error::InvalidInput {
                field: format!("{field}_json"),
                reason,
            }
        }
        other => other,
    }
}

/// A recall query. An empty `collection_ids` means no include filter.
pub fn recall_query(request: proto::RecallRequest) -> RecallQuery {
    RecallQuery {
        team_id: request.team_id,
        dataset_ids: request.dataset_ids,
        vector: request.vector,
        limit: request.limit,
        collection_ids: non_empty(request.collection_ids),
        exclude_collection_ids: request.exclude_collection_ids,
        with_payload: request.with_payload,
        ef_search: request.ef_search,
    }
}

/// A delete selector: by `ids`, or by `dataset_ids` (+ `collection_ids`).
pub fn delete_selector(request: proto::DeleteRequest) -> Result<DeleteSelector, Error> {
    let proto::DeleteRequest {
        team_id,
        ids,
        dataset_ids,
        collection_ids,
    } = request;
    match (ids.is_empty(), dataset_ids.is_empty()) {
        (false, false) => Err(Error::invalid(
            "ids",
            "give either ids or dataset_ids (with optional collection_ids), not both",
        )),
        (true, true) => Err(Error::invalid(
            "ids",
            "give either ids or dataset_ids (with optional collection_ids); both are empty",
        )),
        (false, true) if !collection_ids.is_empty() => Err(Error::invalid(
            "collection_ids",
            "only applies with dataset_ids, not with ids",
        )),
        (false, true) => Ok(DeleteSelector::Ids { team_id, ids }),
        (true, false) => Ok(DeleteSelector::Scope {
            team_id,
            dataset_ids,
            collection_ids: non_empty(collection_ids),
        }),
    }
}

/// A count scope; empty fields are unconstrained.
pub fn count_scope(request: proto::CountRequest) -> CountScope {
    CountScope {
        team_id: non_blank(request.team_id),
        dataset_id: non_blank(request.dataset_id),
        collection_id: non_blank(request.collection_id),
    }
}

/// The first page of a scan; 0 means unbounded for the time fields.
pub fn scan_request(request: &proto::ScanRequest, page_size: u32) -> ScanRequest {
    ScanRequest {
        team_id: non_blank(request.team_id.clone()),
        created_from_ms: (request.created_from_ms != 0).then_some(request.created_from_ms),
        created_to_ms: (request.created_to_ms != 0).then_some(request.created_to_ms),
        after_id: None,
        limit: page_size,
        with_vectors: request.with_vectors,
    }
}

/// A stored record on the wire.
pub fn record_to_proto(record: Record) -> proto::Record {
    proto::Record {
        id: record.id,
        team_id: record.team_id,
        dataset_id: record.dataset_id,
        collection_id: record.collection_id,
        vector: record.vector,
        created_at_ms: record.created_at_ms,
        payload_json: payload_text(record.payload),
    }
}

/// A hit on the wire.
pub fn hit_to_proto(hit: Hit) -> proto::Hit {
    proto::Hit {
        id: hit.id,
        dataset_id: hit.dataset_id,
        collection_id: hit.collection_id,
        score: hit.score,
        payload_json: payload_text(hit.payload),
    }
}

fn payload_text(payload: Option<serde_json::Value>) -> String {
    payload.map(|p| p.to_string()).unwrap_or_default()
}

/// Splits records into `ScanResponse` messages of at most `max_bytes`
/// encoded (a single larger record still gets a message of its own).
pub fn scan_messages(records: Vec<Record>, max_bytes: usize) -> Vec<proto::ScanResponse> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut size = 0usize;
    for record in records {
        let record = record_to_proto(record);
        let len = record.encoded_len();
        // Field tag (1 byte) + length prefix (at most 10 bytes).
        let framed = len + 11;
        if !current.is_empty() && size + framed > max_bytes {
            messages.push(proto::ScanResponse {
                records: std::mem::take(&mut current),
            });
            size = 0;
        }
        size += framed;
        current.push(record);
    }
    if !current.is_empty() {
        messages.push(proto::ScanResponse { records: current });
    }
    messages
}

/// The manager's status on the wire.
pub fn status_to_proto(status: &ManagerStatus) -> proto::StatusResponse {
    proto::StatusResponse {
        manager: status.name.clone(),
        active: status.active.clone().unwrap_or_default(),
        shutting_down: status.shutting_down,
        stores: status.stores.iter().map(store_status_to_proto).collect(),
        replication: status.replication.to_owned(),
        committed_seq: status.committed_seq,
    }
}

fn store_status_to_proto(store: &StoreStatus) -> proto::StoreStatus {
    let breaker = match store.breaker {
        BreakerState::Closed => proto::BreakerState::Closed,
        BreakerState::Open => proto::BreakerState::Open,
        BreakerState::HalfOpen => proto::BreakerState::HalfOpen,
    };
    proto::StoreStatus {
        name: store.name.clone(),
        kind: store.kind.to_owned(),
        breaker: breaker.into(),
        healthy: store.healthy,
        last_probe_latency_ms: store.last_probe_latency.map(|d| d.as_secs_f64() * 1000.0),
        last_probe_error: store.last_probe_error.clone().unwrap_or_default(),
        active: store.active,
        schema_ready: store.schema_ready,
        drained: store.drained,
        forced: store.forced,
        consecutive_failures: store.consecutive_failures,
        in_sync: store.in_sync,
        lag_entries: store.lag_entries,
        lag_seconds: store.lag_seconds.unwrap_or(0.0),
        dead_letters: store.dead_letters,
        resync_pending: store.resync_pending,
        hold_reason: store.hold_reason.clone().unwrap_or_default(),
    }
}

fn non_blank(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tonic::Code;
    use vectorgate::{ErrorKind, StoreFailure};

    #[test]
    fn errors_map_to_codes() {
        let cases = [
            (
                Error::invalid("limit", "is 0, must be 1..=1000"),
                Code::InvalidArgument,
            ),
            (Error::unavailable("pg", "refused"), Code::Unavailable),
            (Error::timeout("pg", "1s"), Code::DeadlineExceeded),
            (Error::internal("pg", "bug"), Code::Internal),
            (
                Error::SchemaMismatch {
                    store: "pg".into(),
                    expected: "dim 8".into(),
                    found: "dim 4".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                Error::AllStoresFailed(vec![StoreFailure {
                    store: "pg".into(),
                    attempts: 3,
                    kind: ErrorKind::Timeout,
                    error: "slow".into(),
                }]),
                Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
        let status = to_status(Error::invalid("limit", "is 0, must be 1..=1000"));
        assert_eq!(status.message(), "limit: is 0, must be 1..=1000");
    }

    #[test]
    fn payloads_must_be_objects() {
        let record = |payload: &str| proto::Record {
            payload_json: payload.to_owned(),
            ..proto::Record::default()
        };
        let converted = records_from_proto(vec![record(""), record(r#"{"a":[1]}"#)]).unwrap();
        assert_eq!(converted[0].payload, None);
        assert_eq!(converted[1].payload, Some(serde_json::json!({"a": [1]})));
        for bad in ["[1]", "3", "{", "\"x\""] {
            let err = records_from_proto(vec![record(""), record(bad)]).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "records[1].payload_json"),
                "{bad}: {err}"
            );
        }
        let renamed = rename_payload_field(Error::invalid("records[2].payload", "too big"));
        assert!(
            matches!(&renamed, Error::InvalidInput { field, .. } if field == "records[2].payload_json")
        );
    }

    #[test]
    fn delete_needs_exactly_one_selector() {
        let request =
            |ids: &[&str], datasets: &[&str], collections: &[&str]| proto::DeleteRequest {
                team_id: "t".into(),
                ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                dataset_ids: datasets.iter().map(|s| (*s).to_owned()).collect(),
                collection_ids: collections.iter().map(|s| (*s).to_owned()).collect(),
            };
        assert!(delete_selector(request(&["a"], &["d"], &[])).is_err());
        assert!(delete_selector(request(&[], &[], &[])).is_err());
        assert!(delete_selector(request(&["a"], &[], &["c"])).is_err());
        assert_eq!(
            delete_selector(request(&["a"], &[], &[])).unwrap(),
            DeleteSelector::Ids {
                team_id: "t".into(),
                ids: vec!["a".into()]
            }
        );
        assert_eq!(
            delete_selector(request(&[], &["d"], &[])).unwrap(),
            DeleteSelector::Scope {
                team_id: "t".into(),
                dataset_ids: vec!["d".into()],
                collection_ids: None
            }
        );
    }

    #[test]
    fn scan_messages_stay_below_the_limit() {
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                id: format!("r{i:03}"),
                team_id: "t".into(),
                dataset_id: "d".into(),
                collection_id: "c".into(),
                vector: vec![0.5; 64],
                created_at_ms: 1,
                payload: Some(serde_json::json!({"text": "x".repeat(500)})),
            })
            .collect();
        let messages = scan_messages(records, 8 * 1024);
        assert!(messages.len() > 5, "{}", messages.len());
        assert!(messages.iter().all(|m| m.encoded_len() <= 8 * 1024));
        let ids: Vec<&str> = messages
            .iter()
            .flat_map(|m| m.records.iter().map(|r| r.id.as_str()))
            .collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(scan_messages(Vec::new(), 1024).is_empty());
    }
}

/// Gives the records without an id an id derived from (team, `request_id`,
/// position): a retried request writes the same records again instead of
/// new copies. The id is a UUID (version 8) made of a SHA-256 digest.
pub(crate) fn ids_from_request_id(records: &mut [Record], request_id: &str) -> Result<(), Error> {
    let valid = !request_id.is_empty()
        && request_id.len() <= 128
        && request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        return Err(Error::invalid(
            "request_id",
            "must be 1..=128 bytes of [A-Za-z0-9._:-]",
        ));
    }
    for (position, record) in records.iter_mut().enumerate() {
        if !record.id.is_empty() {
            continue;
        }
        let mut digest = sha2::Sha256::new();
        for part in [record.team_id.as_bytes(), request_id.as_bytes()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        digest.update((position as u64).to_le_bytes());
        let hash = digest.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        record.id = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
    }
    Ok(())
}

#[cfg(test)]
mod request_id_tests {
    use super::*;

    fn blank(team: &str) -> Record {
        Record {
            id: String::new(),
            team_id: team.into(),
            dataset_id: "d".into(),
            collection_id: "c".into(),
            vector: vec![1.0],
            created_at_ms: 1,
            payload: None,
        }
    }

    #[test]
    fn a_retry_gets_the_same_ids_and_other_requests_other_ids() {
        let mut first = vec![blank("a"), blank("a")];
        let mut retry = first.clone();
        ids_from_request_id(&mut first, "req-1").unwrap();
        ids_from_request_id(&mut retry, "req-1").unwrap();
        assert_eq!(first, retry);
        assert_ne!(first[0].id, first[1].id, "positions differ");
        assert!(
            vectorgate::validate::is_valid_id(&first[0].id),
            "{}",
            first[0].id
        );
        let mut other = vec![blank("a")];
        ids_from_request_id(&mut other, "req-2").unwrap();
        assert_ne!(other[0].id, first[0].id);
        let mut other_team = vec![blank("b")];
        ids_from_request_id(&mut other_team, "req-1").unwrap();
        assert_ne!(
            other_team[0].id, first[0].id,
            "teams never share derived ids"
        );
        let mut kept = vec![Record {
            id: "mine".into(),
            ..blank("a")
        }];
        ids_from_request_id(&mut kept, "req-1").unwrap();
        assert_eq!(kept[0].id, "mine");
        assert!(ids_from_request_id(&mut kept, "bad id").is_err());
    }
}
