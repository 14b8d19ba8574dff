//! API keys against the real binary: authentication, roles, teams, and the
//! `hash-key` / `status` subcommands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, recall, record, req};
use std::io::Write;
use std::process::{Command, Stdio};
use tonic::Code;
use vectorgate_server::auth::hash_key;
use vectorgate_server::proto::{
    CountRequest, DeleteRequest, DrainRequest, ScanRequest, StatusRequest, UpsertRequest,
};

const ADMIN: &str = "admin-key-0123";
const WRITER_T1: &str = "writer-t1-key";
const READER_T1: &str = "reader-t1-key";
const READER_ALL: &str = "reader-all-key";

/// The digest as the operator would make it: with the binary.
fn hash_with_binary(key: &str, via_stdin: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vectorgate"));
    command.arg("hash-key").stdout(Stdio::piped());
    let output = if via_stdin {
        let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
        writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
        child.wait_with_output().unwrap()
    } else {
        command.arg(key).output().unwrap()
    };
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn config() -> String {
    let admin = hash_with_binary(ADMIN, false);
    assert_eq!(admin, hash_key(ADMIN));
    let writer = hash_with_binary(WRITER_T1, true);
    assert_eq!(writer, hash_key(WRITER_T1));
    format!(
        r#"
[[api_keys]]
name = "admin"
sha256 = "{admin}"
teams = ["*"]
role = "admin"

[[api_keys]]
name = "writer-t1"
sha256 = "{writer}"
teams = ["t1"]
role = "write"

[[api_keys]]
name = "reader-t1"
sha256 = "{reader}"
teams = ["t1"]
role = "read"

[[api_keys]]
name = "reader-all"
sha256 = "{reader_all}"
teams = ["*"]
role = "read"
"#,
        reader = hash_key(READER_T1),
        reader_all = hash_key(READER_ALL),
    )
}

fn count(team: &str) -> CountRequest {
    CountRequest {
        team_id: team.into(),
        ..CountRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_and_teams_are_enforced() {
    let server = Server::start(Some(&config()), &[]);
    let mut client = server.vectors().await;
    let upsert = |team: &str| UpsertRequest {
        records: vec![record("r1", team, "d1", "c1", 1)],
        ..Default::default()
    };
    fn code_of<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }

    // No key, wrong key, malformed header.
    assert_eq!(
        code_of(client.upsert(req(upsert("t1"), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(client.recall(req(recall("t1", &["d1"], 1, 1), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(client.upsert(req(upsert("t1"), Some("not-a-key"))).await),
        Code::Unauthenticated
    );
    let mut raw = tonic::Request::new(count("t1"));
    raw.metadata_mut()
        .insert("authorization", READER_T1.parse().unwrap());
    assert_eq!(code_of(client.count(raw).await), Code::Unauthenticated);
    let mut admin = server.admin().await;
    assert_eq!(
        code_of(admin.status(req(StatusRequest {}, None)).await),
        Code::Unauthenticated
    );

    // A write key for t1 writes t1, not t2 (nor a batch mixing both).
    assert_eq!(
        code_of(client.upsert(req(upsert("t1"), Some(WRITER_T1))).await),
        Code::Ok
    );
    let denied = client
        .upsert(req(upsert("t2"), Some(WRITER_T1)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("t2"), "{}", denied.message());
    let mixed = UpsertRequest {
        records: vec![
            record("m1", "t1", "d1", "c1", 1),
            record("m2", "t2", "d1", "c1", 2),
        ],
        ..Default::default()
    };
    assert_eq!(
        code_of(client.upsert(req(mixed, Some(WRITER_T1))).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code_of(
            client
                .delete(req(
                    DeleteRequest {
                        team_id: "t2".into(),
                        dataset_ids: vec!["d1".into()],
                        ..DeleteRequest::default()
                    },
                    Some(WRITER_T1)
                ))
                .await
        ),
        Code::PermissionDenied
    );

    // A read key cannot write, even its own team.
    let denied = client
        .upsert(req(upsert("t1"), Some(READER_T1)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("write"), "{}", denied.message());
    assert_eq!(
        code_of(
            client
                .delete(req(
                    DeleteRequest {
                        team_id: "t1".into(),
                        ids: vec!["r1".into()],
                        ..DeleteRequest::default()
                    },
                    Some(READER_T1)
                ))
                .await
        ),
        Code::PermissionDenied
    );

    // Reads: own team yes, other team no; unscoped only with "*".
    let hits = client
        .recall(req(recall("t1", &["d1"], 1, 5), Some(READER_T1)))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(
        code_of(
            client
                .recall(req(recall("t2", &["d1"], 1, 5), Some(READER_T1)))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code_of(client.count(req(count("t1"), Some(READER_T1))).await),
        Code::Ok
    );
    let denied = client
        .count(req(count(""), Some(READER_T1)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("team_id"), "{}", denied.message());
    assert_eq!(
        code_of(
            client
                .scan(req(ScanRequest::default(), Some(WRITER_T1)))
                .await
        ),
        Code::PermissionDenied
    );
    let all = client
        .count(req(count(""), Some(READER_ALL)))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(all, 1, "only the allowed write reached the store");

    // Admin RPCs: status for any key, overrides for admin keys only.
    let status = admin
        .status(req(StatusRequest {}, Some(READER_T1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.stores.len(), 1);
    assert_eq!(
        code_of(
            admin
                .drain(req(
                    DrainRequest {
                        store: "embedded".into()
                    },
                    Some(WRITER_T1)
                ))
                .await
        ),
        Code::PermissionDenied
    );
    let unknown = admin
        .drain(req(
            DrainRequest {
                store: "nope".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("embedded"),
        "{}",
        unknown.message()
    );

    // Health needs no key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_a_table() {
    let server = Server::start(Some(&config()), &[]);
    let addr = format!("http://{}", server.grpc);
    let run = move |key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vectorgate"));
        command
            .args(["status", "--addr", &addr])
            .env_remove("VECTORGATE_API_KEY");
        if let Some(key) = key {
            command.args(["--api-key", key]);
        }
        command.output().unwrap()
    };
    let output = tokio::task::spawn_blocking(move || (run(Some(READER_T1)), run(None)))
        .await
        .unwrap();
    let (with_key, without) = output;
    assert!(with_key.status.success(), "{with_key:?}");
    let table = String::from_utf8(with_key.stdout).unwrap();
    assert!(table.contains("STORE"), "{table}");
    assert!(table.contains("embedded"), "{table}");
    assert!(table.contains("closed"), "{table}");
    assert!(!without.status.success());
    let stderr = String::from_utf8(without.stderr).unwrap();
    assert!(stderr.contains("API key"), "{stderr}");
}

/// A write key of team t2 that knows an id of team t1 can neither take the
/// record over (ALREADY_EXISTS, nothing written) nor delete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_one_team_cannot_take_over_another_teams_record() {
    const WRITER_T2: &str = "writer-t2-key";
    let config = format!(
        r#"
[[api_keys]]
name = "writer-t1"
sha256 = "{}"
teams = ["t1"]
role = "write"

[[api_keys]]
name = "writer-t2"
sha256 = "{}"
teams = ["t2"]
role = "write"
"#,
        hash_key(WRITER_T1),
        hash_key(WRITER_T2)
    );
    let server = Server::start(Some(&config), &[]);
    let mut client = server.vectors().await;
    let mut original = record("shared-id", "t1", "d1", "c1", 1);
    original.payload_json = r#"{"owner":"t1"}"#.into();
    client
        .upsert(req(
            UpsertRequest {
                records: vec![original],
                ..Default::default()
            },
            Some(WRITER_T1),
        ))
        .await
        .unwrap();

    let takeover = UpsertRequest {
        records: vec![
            record("t2-own", "t2", "d1", "c1", 2),
            record("shared-id", "t2", "d1", "c1", 3),
        ],
        ..Default::default()
    };
    let refused = client
        .upsert(req(takeover, Some(WRITER_T2)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains("records[1].id"), "{refused:?}");
    assert!(refused.message().contains("shared-id"), "{refused:?}");
    assert!(
        !refused.message().contains("t1"),
        "the owner is not revealed: {refused:?}"
    );

    let deleted = client
        .delete(req(
            DeleteRequest {
                team_id: "t2".into(),
                ids: vec!["shared-id".into()],
                ..Default::default()
            },
            Some(WRITER_T2),
        ))
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 0);

    // Nothing of the refused upsert was written; t1's record is intact.
    let t2 = client
        .count(req(count("t2"), Some(WRITER_T2)))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(t2, 0);
    let mut query = recall("t1", &["d1"], 1, 5);
    query.with_payload = true;
    let hits = client
        .recall(req(query, Some(WRITER_T1)))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "shared-id");
    assert_eq!(hits[0].payload_json, r#"{"owner":"t1"}"#);
}
