//! The one place a Milvus SDK error becomes a [`vectorgate::Error`].
//!
//! - the server cannot be reached, is starting, is overloaded, or a
//!   collection is (re)loading after a restart → `Unavailable` (retriable:
//!   the manager retries or fails over);
//! - the server answers but cannot serve this store — a "gray" failure: the
//!   *store* is failing, not the request, so the manager fails over — →
//!   `Unavailable`, naming the operator's fix:
//!
//!   | Milvus says | codes | fix in the message |
//!   |---|---|---|
//!   | collection not found (dropped or renamed) | merr 100, legacy `CollectionNotExists` (4), `CollectionNameNotFound` (28) | restore it, or `ensure_schema` + resync |
//!   | collection not loaded / released, not fully loaded | merr 101, 103 (already "not now") | `load_collection` |
//!   | index missing (so it cannot load) | legacy `IndexNotExist` (25) | create the index, load |
//!   | database not found | merr 800 | create it or fix `database` |
//!   | not authenticated / permission denied | merr 1400, 1401, legacy `PermissionDenied` (3), gRPC `Unauthenticated`, `PermissionDenied` | credentials, `GRANT` |
//!   | quota: disk or memory quota exceeded, "deny to write", rate limited | merr 8, 9, legacy `ForceDeny` (48), `RateLimit` (49), `MemoryQuotaExhausted` (53), `DiskQuotaExhausted` (54), or those words in the reason | free disk / raise `quotaAndLimits` |
//!
//! - a deadline passed → `Timeout`;
//! - the server refused the data or a parameter → `InvalidInput`;
//! - anything else (a malformed response, an SDK conversion failure) →
//!   `Internal`.

use milvus::v2::error::Error as SdkError;
use tonic::Code;
use vectorgate::Error;

/// Milvus 2.3 `merr` codes that mean "not now": service not ready or
/// unavailable, rate limited, collection/partition/replica/channel/segment
/// not (fully) loaded or not available, node offline/lacking/mismatched.
const TRANSIENT_CODES: &[i32] = &[
    1, 2, 3, 4, 8, 9, 101, 103, 201, 202, 401, 501, 503, 601, 602, 902, 903, 904, 905,
];
/// Milvus 2.3 `merr` codes of a quota refusal: rate limit (8), force deny
/// (9, set when a disk or memory quota is exceeded).
const QUOTA_CODES: &[i32] = &[8, 9];
/// Legacy `ErrorCode`s of a quota refusal: ForceDeny (48), RateLimit (49),
/// MemoryQuotaExhausted (53), DiskQuotaExhausted (54).
const QUOTA_LEGACY_CODES: &[i32] = &[48, 49, 53, 54];
/// Milvus 2.3 `merr` codes for a bad parameter or a missing one.
const BAD_INPUT_CODES: &[i32] = &[1100, 1101];
/// Legacy `ErrorCode`s that mean "not now": ForceDeny (48), RateLimit (49),
/// MemoryQuotaExhausted (53), DiskQuotaExhausted (54), TimeTickLongDelay
/// (55), NotReadyServe (56), NotReadyCoordActivating (57).
const TRANSIENT_LEGACY_CODES: &[i32] = &[48, 49, 53, 54, 55, 56, 57];
/// Legacy `ErrorCode`s for a bad request: IllegalArgument (5),
/// IllegalDimension (7), IllegalIndexType (8), IllegalTOPK (10),
/// IllegalRowRecord (11), IllegalMetricType (23).
const BAD_INPUT_LEGACY_CODES: &[i32] = &[5, 7, 8, 10, 11, 23];

/// What to do about a missing collection.
const MISSING_FIX: &str = "the collection is missing (dropped or renamed behind the store): \
     restore it, or let ensure_schema create it again and resync it from another store";

/// Server refusals that need the operator, with the fix: (merr codes,
/// legacy `ErrorCode`s, fix).
const REFUSALS: &[(&[i32], &[i32], &str)] = &[
    (&[100], &[4, 28], MISSING_FIX),
    (
        &[],
        &[25],
        "the collection has no index, so it cannot be loaded: create the index and load the \
         collection (ensure_schema does both)",
    ),
    (
        &[800],
        &[],
        "the database named in the store's configuration does not exist: create it or fix \
         `database`",
    ),
    (
        &[1400, 1401],
        &[3],
        "the store's user is not authenticated or lacks privileges: check `username` and \
         `password`, and grant the user the collection's privileges (Insert, Delete, Upsert, \
         Search, Query, Load, GetLoadState, DescribeCollection)",
    ),
];

/// Words of a server's reason that mean a quota or rate limit refuses the
/// call for now (Milvus' `quotaAndLimits`).
const QUOTA_WORDS: &[&str] = &[
    "quota exceeded",
    "quota exhausted",
    "deny to write",
    "deny to read",
    "rate limit",
    "memory limit",
    "disk limit",
];

/// What to do about a quota refusal.
const QUOTA_FIX: &str = "Milvus refuses the call by quota (disk or memory quota exceeded, \
     writes denied, or rate limited): free disk or memory on the Milvus nodes, or raise \
     `quotaAndLimits` in milvus.yaml";

/// What to do when credentials are refused.
const AUTH_FIX: &str = "Milvus refused the credentials or the privilege: check `username` and \
     `password` of the store, and the user's privileges on the collection";

/// Words in a transport failure's text: the connection was refused, reset or
/// closed under a call (a killed server), or could not be made.
const TRANSPORT_WORDS: &[&str] = &[
    "transport error",
    "connection refused",
    "connection reset",
    "broken pipe",
    "connection closed",
    "tcp connect",
    "h2 protocol error",
    "error trying to connect",
    "channel closed",
    "not ready",
    "not loaded",
    "no available shard delegator",
    "channel not available",
    "delegator closed",
    "server unavailable",
];

/// Maps an SDK error from `what` (e.g. `search`) on store `store`.
pub fn map_error(store: &str, what: &str, err: &SdkError) -> Error {
    let message = format!("{what}: {err}");
    match err {
        SdkError::RetryExhausted { source, .. } => map_error(store, what, source),
        SdkError::Grpc(status) => match status.code() {
            Code::DeadlineExceeded => Error::timeout(store, message),
            Code::Unavailable
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
                if status.code() != Code::Unknown || mentions_transport(&message) =>
            {
                Error::unavailable(store, message)
            }
            Code::Internal if mentions_transport(&message) => Error::unavailable(store, message),
            Code::InvalidArgument | Code::OutOfRange => Error::invalid("request", message),
            Code::Unauthenticated | Code::PermissionDenied => {
                Error::unavailable(store, format!("{message}: {AUTH_FIX}"))
            }
            _ => Error::internal(store, message),
        },
        SdkError::Server(server) => {
            let (code, legacy) = (server.code(), server.legacy_code());
            let refusal = REFUSALS
                .iter()
                .find(|(codes, legacies, _)| codes.contains(&code) || legacies.contains(&legacy))
                .map(|(_, _, fix)| *fix)
                .or_else(|| {
                    // A query node may report the collection gone with the
                    // generic code (65535), e.g. while it is being released.
                    mentions(server.reason(), &["collection not found"]).then_some(MISSING_FIX)
                });
            if let Some(fix) = refusal {
                Error::unavailable(store, format!("{message}: {fix}"))
            } else if QUOTA_CODES.contains(&code)
                || QUOTA_LEGACY_CODES.contains(&legacy)
                || mentions(server.reason(), QUOTA_WORDS)
            {
                Error::unavailable(store, format!("{message}: {QUOTA_FIX}"))
            } else if TRANSIENT_CODES.contains(&code)
                || TRANSIENT_LEGACY_CODES.contains(&legacy)
                || mentions_transport(server.reason())
            {
                Error::unavailable(store, message)
            } else if BAD_INPUT_CODES.contains(&code) || BAD_INPUT_LEGACY_CODES.contains(&legacy) {
                Error::invalid("request", message)
            } else {
                Error::internal(store, message)
            }
        }
        SdkError::Timeout(_) => {
            // The SDK reports "could not connect within connect_timeout" as a
            // timeout; for the caller that is an unreachable server.
            if message.contains("connecting to Milvus") {
                Error::unavailable(store, message)
            } else {
                Error::timeout(store, message)
            }
        }
        SdkError::Cancelled(_) => Error::unavailable(store, message),
        SdkError::Validation(v) => Error::invalid("request", format!("{what}: {v}")),
        _ => Error::internal(store, message),
    }
}

fn mentions_transport(text: &str) -> bool {
    mentions(text, TRANSPORT_WORDS)
}

fn mentions(text: &str, words: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    words.iter().any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;
    use vectorgate::ErrorKind;

    fn kind(err: SdkError) -> ErrorKind {
        map_error("m", "test", &err).kind()
    }

    #[test]
    fn transport_failures_are_retriable() {
        assert_eq!(
            kind(SdkError::Grpc(Status::unavailable("tcp connect error"))),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(SdkError::Grpc(Status::unknown("transport error"))),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(SdkError::Grpc(Status::internal(
                "h2 protocol error: broken pipe"
            ))),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(SdkError::Grpc(Status::deadline_exceeded("late"))),
            ErrorKind::Timeout
        );
        assert_eq!(
            kind(SdkError::Timeout(
                "connecting to Milvus after 3000ms".into()
            )),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(SdkError::Timeout("operation took 10s".into())),
            ErrorKind::Timeout
        );
        assert_eq!(
            kind(SdkError::RetryExhausted {
                attempts: 2,
                source: Box::new(SdkError::Grpc(Status::unavailable("refused"))),
            }),
            ErrorKind::Unavailable
        );
    }

    #[allow(deprecated)]
    fn server(code: i32, legacy: i32, reason: &str) -> SdkError {
        SdkError::from(milvus::proto::common::Status {
            code,
            error_code: legacy,
            reason: reason.into(),
            ..Default::default()
        })
    }

    #[test]
    fn server_statuses_by_code() {
        // Collection not loaded (after a restart, while Milvus reloads it).
        assert_eq!(
            kind(server(101, 1, "collection not loaded")),
            ErrorKind::Unavailable
        );
        // Rate limited, service not ready.
        assert_eq!(
            kind(server(8, 49, "rate limit exceeded")),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(server(1, 1, "service not ready")),
            ErrorKind::Unavailable
        );
        // A bad parameter.
        assert_eq!(
            kind(server(1100, 5, "invalid parameter[expected=...]")),
            ErrorKind::InvalidInput
        );
        assert_eq!(kind(server(65535, 1, "boom")), ErrorKind::Internal);
    }

    /// The server answers but cannot serve this store: `Unavailable`,
    /// naming the fix.
    #[test]
    fn refusals_are_unavailable_with_the_fix() {
        let cases: &[(i32, i32, &str, &str)] = &[
            (
                100,
                4,
                "collection not found[collection=vg]",
                "ensure_schema",
            ),
            (0, 4, "can't find collection", "restore it"),
            (0, 28, "collection name not found", "restore it"),
            (
                65535,
                1,
                "failed to search/query delegator 1 for channel by-dev-rootcoord-dml_1v0: fail to \
                 Search, QueryNode ID=1, reason=collection not found[collection=4708]",
                "restore it",
            ),
            (65535, 1, "no available shard delegator found", "delegator"),
            (
                65535,
                1,
                "fail to Search, reason=delegator closed during wait tsafe: channel not \
                 available[channel=dml_3v0]",
                "channel not available",
            ),
            (
                101,
                1,
                "collection not loaded[collection=vg]",
                "collection not loaded",
            ),
            (103, 1, "collection not fully loaded", "not fully loaded"),
            (0, 25, "index doesn't exist", "create the index"),
            (800, 1, "database not found[database=vg]", "fix `database`"),
            (1400, 1, "not authenticated", "`username`"),
            (1401, 3, "permission deny to vg", "grant the user"),
            (0, 3, "permission denied", "grant the user"),
            (9, 48, "deny to write", "quotaAndLimits"),
            (8, 49, "rate limit exceeded", "quotaAndLimits"),
            (0, 54, "disk quota exhausted", "free disk"),
            (0, 53, "memory quota exhausted", "free disk or memory"),
            (
                65535,
                1,
                "quota exceeded[reason=disk quota exceeded]",
                "quotaAndLimits",
            ),
        ];
        for &(code, legacy, reason, fix) in cases {
            let err = map_error("m", "upsert", &server(code, legacy, reason));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{code}/{legacy}: {err}");
            assert!(err.is_retriable());
            let text = err.to_string();
            assert!(
                text.contains(fix),
                "{code}/{legacy}: {text:?} lacks {fix:?}"
            );
        }
        for status in [
            Status::unauthenticated("who"),
            Status::permission_denied("no"),
        ] {
            let err = map_error("m", "search", &SdkError::Grpc(status));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            assert!(err.to_string().contains("password"), "{err}");
        }
    }

    #[test]
    fn other_failures_are_not() {
        assert_eq!(
            kind(SdkError::Grpc(Status::unknown("something odd"))),
            ErrorKind::Internal
        );
        assert_eq!(
            kind(SdkError::Grpc(Status::invalid_argument("bad"))),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(SdkError::MalformedResponse("no status".into())),
            ErrorKind::Internal
        );
    }
}
