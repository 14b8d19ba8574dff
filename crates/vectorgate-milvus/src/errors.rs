//! The one place a Milvus SDK error becomes a [`vectorgate::Error`].
//!
//! - the server cannot be reached, is starting, is overloaded, or a
//!   collection is (re)loading after a restart → `Unavailable` (retriable:
//!   the manager retries or fails over);
//! - a deadline passed → `Timeout`;
//! - the server refused the data or a parameter → `InvalidInput`;
//! - anything else (a missing collection, a malformed response, an SDK
//!   conversion failure) → `Internal`.

use milvus::v2::error::Error as SdkError;
use tonic::Code;
use vectorgate::Error;

/// Milvus 2.3 `merr` codes that mean "not now": service not ready or
/// unavailable, rate limited, collection/partition/replica/channel/segment
/// not (fully) loaded or not available, node offline/lacking/mismatched.
const TRANSIENT_CODES: &[i32] = &[
    1, 2, 3, 4, 8, 9, 101, 103, 201, 202, 401, 501, 503, 601, 602, 902, 903, 904, 905,
];
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
            Code::Unauthenticated | Code::PermissionDenied => Error::internal(
                store,
                format!("{message} (check the configured username and password)"),
            ),
            _ => Error::internal(store, message),
        },
        SdkError::Server(server) => {
            let (code, legacy) = (server.code(), server.legacy_code());
            if TRANSIENT_CODES.contains(&code)
                || TRANSIENT_LEGACY_CODES.contains(&legacy)
                || mentions_transport(server.reason())
            {
                Error::unavailable(store, message)
            } else if BAD_INPUT_CODES.contains(&code) || BAD_INPUT_LEGACY_CODES.contains(&legacy) {
                Error::invalid("request", message)
            } else if code == 100 || legacy == 4 {
                Error::internal(
                    store,
                    format!("{message} (the collection is gone: run ensure_schema to recreate it)"),
                )
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
    let lower = text.to_ascii_lowercase();
    TRANSPORT_WORDS.iter().any(|w| lower.contains(w))
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
        // A missing collection is not transient.
        let err = map_error("m", "search", &server(100, 4, "collection not found"));
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("ensure_schema"), "{err}");
        assert_eq!(kind(server(65535, 1, "boom")), ErrorKind::Internal);
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
        assert_eq!(
            kind(SdkError::Grpc(Status::unauthenticated("who"))),
            ErrorKind::Internal
        );
    }
}
