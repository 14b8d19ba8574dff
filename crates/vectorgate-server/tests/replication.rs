//! The replication operator surface against the real binary: status and
//! `/readyz` fields, online resync (RPC and CLI) under live writes,
//! offline resync and the data directory lock, dead letter re-drive, and
//! the admin-only rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, eventually, record, req, vector};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tonic::Code;
use vectorgate::{IndexSpec, Metric, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_server::auth::hash_key;
use vectorgate_server::proto::{
    self, DeleteRequest, DrainRequest, RedriveRequest, ResumeAutoRequest, ResyncProgress,
    ResyncRequest, ScanRequest, StatusRequest, StatusResponse, UpsertRequest,
};

const TEAMS: [&str; 3] = ["t0", "t1", "t2"];
const WAIT: Duration = Duration::from_secs(30);

/// Stores `names`, each an embedded store at `<dir>/<name>.db`; fast probes.
fn stores_config(dir: &Path, names: &[&str]) -> String {
    let mut config = String::from("[manager.health]\nprobe_interval_ms = 100\n");
    for name in names {
        config.push_str(&format!(
            "\n[[stores]]\nkind = \"embedded\"\nname = \"{name}\"\npath = \"{}\"\n",
            dir.join(format!("{name}.db")).display()
        ));
    }
    config
}

fn model_record(id: &str, team: &str, seed: u32) -> vectorgate::Record {
    vectorgate::Record {
        id: id.to_owned(),
        team_id: team.to_owned(),
        dataset_id: "d1".to_owned(),
        collection_id: "c1".to_owned(),
        vector: vector(seed),
        created_at_ms: 1_700_000_000_000 + i64::from(seed),
        payload: Some(serde_json::json!({ "seed": seed })),
    }
}

/// Writes `count` records (ids `r00000`.., teams round-robin) straight into
/// the embedded store file, before any server runs.
async fn prefill(dir: &Path, name: &str, prefix: &str, count: u32) {
    let store = EmbeddedStore::open(EmbeddedConfig::new(name, dir.join(format!("{name}.db"))))
        .await
        .unwrap();
    store
        .ensure_schema(&IndexSpec::new(common::DIM as u32, Metric::Cosine))
        .await
        .unwrap();
    let records: Vec<vectorgate::Record> = (0..count)
        .map(|i| model_record(&format!("{prefix}{i:05}"), TEAMS[i as usize % 3], i))
        .collect();
    for chunk in records.chunks(1000) {
        store.upsert(chunk).await.unwrap();
    }
}

async fn status(server: &Server, key: Option<&str>) -> StatusResponse {
    server
        .admin()
        .await
        .status(req(StatusRequest {}, key))
        .await
        .unwrap()
        .into_inner()
}

/// Every store applied every committed entry.
async fn wait_all_caught_up(server: &Server) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = status(server, None).await;
        if status
            .stores
            .iter()
            .all(|s| s.in_sync && s.lag_entries == 0)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stores never caught up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record the active store holds, by id.
async fn contents(server: &Server) -> BTreeMap<String, proto::Record> {
    let mut stream = server
        .vectors()
        .await
        .scan(ScanRequest {
            with_vectors: true,
            ..ScanRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = BTreeMap::new();
    while let Some(message) = stream.message().await.unwrap() {
        for record in message.records {
            records.insert(record.id.clone(), record);
        }
    }
    records
}

/// The contents of store `name`: every other store drained meanwhile.
async fn contents_of(server: &Server, name: &str) -> BTreeMap<String, proto::Record> {
    let mut admin = server.admin().await;
    let before = status(server, None).await;
    for store in before.stores.iter().filter(|s| s.name != name) {
        admin
            .drain(DrainRequest {
                store: store.name.clone(),
            })
            .await
            .unwrap();
    }
    let after = status(server, None).await;
    assert_eq!(after.active, name, "{after:?}");
    let records = contents(server).await;
    admin.resume_auto(ResumeAutoRequest {}).await.unwrap();
    records
}

fn vectorgate(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vectorgate"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("VECTORGATE_") {
            command.env_remove(key);
        }
    }
    command.env("VECTORGATE_LOG", "warn").output().unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads a resync stream to its end: (progress messages, the result).
async fn drain_stream(
    mut stream: tonic::Streaming<ResyncProgress>,
) -> (Vec<ResyncProgress>, proto::ResyncResult) {
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(result) = message.result.clone() {
            assert!(message.done);
            assert!(
                stream.message().await.unwrap().is_none(),
                "nothing after the result"
            );
            return (messages, result);
        }
        messages.push(message);
    }
    panic!("the stream ended without a result after {messages:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_readyz_and_the_cli_show_replication() {
    let stores = tempfile::tempdir().unwrap();
    let server = Server::start(Some(&stores_config(stores.path(), &["a", "b"])), &[]);
    let mut client = server.vectors().await;
    for round in 0..3u32 {
        let records = (0..5)
            .map(|i| record(&format!("s{round}-{i}"), "t1", "d1", "c1", round * 5 + i))
            .collect();
        client
            .upsert(UpsertRequest {
                records,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    client
        .delete(DeleteRequest {
            team_id: "t1".into(),
            ids: vec!["s0-0".into()],
            ..DeleteRequest::default()
        })
        .await
        .unwrap();
    wait_all_caught_up(&server).await;

    // The RPC.
    let status = status(&server, None).await;
    assert_eq!(status.replication, "async");
    assert!(status.committed_seq >= 4, "{status:?}");
    for store in &status.stores {
        assert!(store.in_sync, "{store:?}");
        assert_eq!(store.lag_entries, 0, "{store:?}");
        assert_eq!(store.lag_seconds, 0.0, "{store:?}");
        assert_eq!(store.dead_letters, 0, "{store:?}");
    }

    // `vectorgate status`.
    let addr = format!("http://{}", server.grpc);
    let output = vectorgate(&["status", "--addr", &addr]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("replication async"), "{stdout}");
    assert!(
        lines[0].contains(&format!("committed_seq {}", status.committed_seq)),
        "{stdout}"
    );
    let header = lines[1];
    for column in ["IN_SYNC", "LAG", "DEAD"] {
        assert!(header.contains(column), "{stdout}");
    }
    for (line, name) in lines[2..].iter().zip(["a", "b"]) {
        assert!(line.starts_with(name), "{stdout}");
        let at = |column: &str| &line[header.find(column).unwrap()..];
        assert!(at("IN_SYNC").starts_with("yes"), "{stdout}");
        assert!(at("LAG").starts_with('0'), "{stdout}");
        assert!(at("DEAD").starts_with('0'), "{stdout}");
    }

    // `/readyz`.
    let (code, body) = server.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["replication"], "async", "{json}");
    assert_eq!(json["committed_seq"], status.committed_seq, "{json}");
    for store in json["stores"].as_array().unwrap() {
        assert_eq!(store["in_sync"], true, "{json}");
        assert_eq!(store["lag_entries"], 0, "{json}");
        assert_eq!(store["lag_seconds"], 0.0, "{json}");
        assert_eq!(store["dead_letters"], 0, "{json}");
    }

    // Re-drive: nothing to do on a store without dead letters; an unknown
    // store is the caller's mistake.
    let mut admin = server.admin().await;
    let reply = admin
        .redrive_dead_letters(RedriveRequest { store: "b".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.accepted, reply.still_refused), (0, 0));
    let error = admin
        .redrive_dead_letters(RedriveRequest {
            store: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("nope"), "{error:?}");
    let output = vectorgate(&["redrive", "--addr", &addr, "--store", "a"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("store a: 0 dead letters accepted, 0 still refused"),
        "{stdout}"
    );
    let output = vectorgate(&["redrive", "--addr", &addr, "--store", "nope"]);
    assert!(!output.status.success());
    let stderr = text(&output).1;
    assert!(
        stderr.contains("InvalidArgument: store: no store named \"nope\""),
        "{stderr}"
    );
}

/// 3000 records copied 10 per page while a client keeps overwriting,
/// adding and deleting records: the target ends up identical to the
/// source, record for record, and the per-team counts match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_resync_under_live_writes_leaves_the_target_identical() {
    const RECORDS: u32 = 3000;
    let stores = tempfile::tempdir().unwrap();
    prefill(stores.path(), "a", "r", RECORDS).await;
    let server = Server::start(Some(&stores_config(stores.path(), &["a", "b"])), &[]);
    // b is empty next to a store with records in a new deployment: it is
    // held out of rotation until a resync fills it (never serves empty).
    let before = status(&server, None).await;
    let b = before.stores.iter().find(|s| s.name == "b").unwrap();
    assert!(b.resync_pending && !b.active, "{before:?}");
    assert_eq!(before.active, "a", "{before:?}");
    let mut admin = server.admin().await;

    // Refused requests fail the call itself.
    for (request, field) in [
        (("a", "zz", Some(10)), "to"),
        (("zz", "b", Some(10)), "from"),
        (("a", "a", Some(10)), "to"),
        (("a", "b", Some(0)), "page_size"),
        (("a", "b", Some(1001)), "page_size"),
    ] {
        let ((from, to, page_size), field) = (request, field);
        let error = admin
            .resync(ResyncRequest {
                from: from.into(),
                to: to.into(),
                page_size,
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert!(error.message().starts_with(field), "{error:?}");
    }

    // A writer: each round overwrites 5 old records (new vector and
    // payload), adds 5 and deletes 1, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let mut client = server.vectors().await;
        let (stop, rounds) = (stop.clone(), rounds.clone());
        async move {
            let mut round = 0u32;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let mut records = Vec::new();
                for i in 0..5 {
                    let old = (round * 37 + i * 601) % RECORDS;
                    let mut r = record(
                        &format!("r{old:05}"),
                        TEAMS[old as usize % 3],
                        "d1",
                        "c1",
                        10_000 + round,
                    );
                    r.payload_json = format!(r#"{{"round":{round}}}"#);
                    records.push(r);
                    records.push(record(
                        &format!("n{round:05}-{i}"),
                        TEAMS[(round + i) as usize % 3],
                        "d2",
                        "c2",
                        round,
                    ));
                }
                client
                    .upsert(UpsertRequest {
                        records,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let gone = (round * 53 + 11) % RECORDS;
                client
                    .delete(DeleteRequest {
                        team_id: TEAMS[gone as usize % 3].into(),
                        ids: vec![format!("r{gone:05}")],
                        ..DeleteRequest::default()
                    })
                    .await
                    .unwrap();
                rounds.store(u64::from(round), Ordering::SeqCst);
            }
        }
    });
    eventually(WAIT, "the writer's first round", || {
        rounds.load(Ordering::SeqCst) > 0
    })
    .await;

    let mut stream = admin
        .resync(ResyncRequest {
            from: "a".into(),
            to: "b".into(),
            page_size: Some(10),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        !first.done && first.copied > 0 && first.copied < first.total,
        "{first:?}"
    );
    // One resync at a time.
    let error = server
        .admin()
        .await
        .resync(ResyncRequest {
            from: "b".into(),
            to: "a".into(),
            page_size: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("is running"), "{error:?}");

    // Progress until the copy is done; the writer stops there.
    let mut messages = vec![first];
    let result = loop {
        let message = stream.message().await.unwrap().expect("a result");
        if message.done {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(result) = message.result.clone() {
            break result;
        }
        messages.push(message);
    };
    assert!(stream.message().await.unwrap().is_none());
    assert!(
        messages.windows(2).all(|w| w[0].copied <= w[1].copied),
        "{messages:?}"
    );
    assert!(messages.last().unwrap().done, "{messages:?}");
    writer.await.unwrap();

    assert!(result.caught_up, "{result:?}");
    assert_eq!(result.mismatched_teams, 0, "{result:?}");
    assert!(result.copied >= u64::from(RECORDS) / 2, "{result:?}");
    assert_eq!(result.copied, result.copied_now, "nothing to resume");
    assert!(
        result.journal_entries_during_copy > 0,
        "the writer wrote during the copy: {result:?}"
    );
    let teams: Vec<&str> = result.teams.iter().map(|t| t.team_id.as_str()).collect();
    assert_eq!(teams, TEAMS, "{result:?}");
    assert!(
        result
            .teams
            .iter()
            .all(|t| t.source == t.target && t.source > 0),
        "{result:?}"
    );

    // Record for record: the copy and the journal replay left b equal to a.
    wait_all_caught_up(&server).await;
    let source = contents_of(&server, "a").await;
    let target = contents_of(&server, "b").await;
    assert_eq!(
        result.teams.iter().map(|t| t.source).sum::<u64>(),
        source.len() as u64
    );
    let rounds = rounds.load(Ordering::SeqCst) as u32;
    assert!(
        source.contains_key(&format!("n{rounds:05}-4")),
        "the last write is there"
    );
    assert_eq!(source.len(), target.len());
    let differing: Vec<&String> = source
        .iter()
        .filter(|(id, record)| target.get(*id) != Some(*record))
        .map(|(id, _)| id)
        .take(10)
        .collect();
    assert!(differing.is_empty(), "records differ: {differing:?}");
    assert!(
        server.data_dir().join("resync-a-b.json").exists(),
        "the checkpoint"
    );

    // The slot is free again, and the next resync goes on the same way.
    let (_, again) = drain_stream(
        admin
            .resync(ResyncRequest {
                from: "a".into(),
                to: "b".into(),
                page_size: None,
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(again.mismatched_teams, 0, "{again:?}");
    assert_eq!(again.journal_entries_during_copy, 0, "{again:?}");
}

/// `vectorgate resync --addr`: a clean copy prints the table and exits 0;
/// a target holding records the source lacks loses them (it ends equal to
/// the source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resync_cli_prints_the_verification_and_removes_the_targets_extras() {
    let stores = tempfile::tempdir().unwrap();
    prefill(stores.path(), "a", "r", 300).await;
    prefill(stores.path(), "c", "extra", 4).await;
    let server = Server::start(Some(&stores_config(stores.path(), &["a", "b", "c"])), &[]);
    let addr = format!("http://{}", server.grpc);

    let output = vectorgate(&[
        "resync",
        "--addr",
        &addr,
        "--from",
        "a",
        "--to",
        "b",
        "--page-size",
        "50",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("resync a -> b: 300 records copied (300 by this run)"),
        "{stdout}"
    );
    let table: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("TEAM"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(table[0], ["TEAM", "SOURCE", "TARGET", "CHECK"], "{stdout}");
    for (row, team) in table[1..4].iter().zip(TEAMS) {
        assert_eq!(row, &[team, "100", "100", "ok"], "{stdout}");
    }
    assert!(stdout.contains("3 teams, every count matches"), "{stdout}");
    // Not a terminal: plain progress lines instead of a bar.
    assert!(
        stderr.contains("resync a -> b: 300/300 records copied"),
        "{stderr}"
    );

    // c held 4 records of its own (t0, t1, t2, t0) that a lacks: the copy
    // deletes them, so c ends equal to a and every count matches.
    let output = vectorgate(&["resync", "--addr", &addr, "--from", "a", "--to", "c"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("TEAM"))
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["t0", "100", "100", "ok"],
            ["t1", "100", "100", "ok"],
            ["t2", "100", "100", "ok"],
        ],
        "{stdout}"
    );
    let (a, c) = (
        contents_of(&server, "a").await,
        contents_of(&server, "c").await,
    );
    assert_eq!(a, c, "the target ends equal to the source");
    assert!(
        !c.keys().any(|id| id.starts_with("extra")),
        "extras deleted"
    );

    // Refusals reach the operator.
    let output = vectorgate(&["resync", "--addr", &addr, "--from", "a", "--to", "nope"]);
    assert!(!output.status.success());
    let stderr = text(&output).1;
    assert!(
        stderr.contains("InvalidArgument: to: no store named \"nope\""),
        "{stderr}"
    );
}

/// A server killed in the middle of a copy: started again on the same data
/// directory, it warns about the unfinished copy, and the same resync goes
/// on from the checkpoint instead of starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_interrupted_by_a_restart_resumes_from_its_checkpoint() {
    const RECORDS: u64 = 3000;
    let stores = tempfile::tempdir().unwrap();
    prefill(stores.path(), "a", "r", RECORDS as u32).await;
    let config = stores_config(stores.path(), &["a", "b"]);
    let mut server = Server::start(Some(&config), &[]);
    let data_dir = server.data_dir();
    let resync = || ResyncRequest {
        from: "a".into(),
        to: "b".into(),
        page_size: Some(10),
    };
    let mut stream = server
        .admin()
        .await
        .resync(resync())
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().unwrap().copied < 200 {}
    server.kill();
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("resync-a-b.json")).unwrap())
            .unwrap();
    let interrupted_at = checkpoint["copied"].as_u64().unwrap();
    assert_eq!(checkpoint["done"], false, "{checkpoint}");
    assert!((200..RECORDS).contains(&interrupted_at), "{checkpoint}");

    let server = Server::start(Some(&config), &["--data-dir", data_dir.to_str().unwrap()]);
    let log = server.log();
    assert!(
        log.contains("an interrupted resync left store \"b\" incomplete"),
        "{log}"
    );
    let (_, result) = drain_stream(
        server
            .admin()
            .await
            .resync(resync())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(result.copied, RECORDS, "{result:?}");
    assert_eq!(result.copied_now, RECORDS - interrupted_at, "{result:?}");
    assert_eq!(result.mismatched_teams, 0, "{result:?}");
    assert_eq!(contents_of(&server, "b").await.len() as u64, RECORDS);
}

/// Offline resync takes the data directory lock the server holds: refused
/// (pointing at `--addr`) while the server runs, done once it stopped; the
/// server then serves the copied store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_resync_is_refused_while_the_server_runs_and_works_without_it() {
    let stores = tempfile::tempdir().unwrap();
    prefill(stores.path(), "a", "r", 90).await;
    let config = stores_config(stores.path(), &["a", "b"]);
    let mut server = Server::start(Some(&config), &[]);
    let config_path = server.dir.path().join("config.toml");
    let data_dir = server.data_dir();
    let offline = || {
        vectorgate(&[
            "resync",
            "--config",
            config_path.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--dim",
            "8",
            "--from",
            "a",
            "--to",
            "b",
        ])
    };

    let output = offline();
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("vectorgate.lock is locked"), "{stderr}");
    assert!(stderr.contains("serve"), "the holder is named: {stderr}");
    let hint = format!("vectorgate resync --addr http://{} ", server.grpc);
    assert!(
        stderr.contains(&hint),
        "the running server's address: {stderr}"
    );

    // A second server on the same data directory is refused too.
    let second = Server::try_start(Some(&config), &["--data-dir", data_dir.to_str().unwrap()])
        .err()
        .expect("a second server must not start");
    assert!(
        second.log.contains("vectorgate.lock is locked"),
        "{}",
        second.log
    );

    server.terminate();
    assert_eq!(server.wait_exit(WAIT).code(), Some(0), "{}", server.log());

    let output = offline();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("90 records copied"), "{stdout}");
    assert!(stdout.contains("3 teams, every count matches"), "{stdout}");

    // A server starts on the directory again, and b holds the records.
    let server = Server::start(Some(&config), &["--data-dir", data_dir.to_str().unwrap()]);
    let copied = contents_of(&server, "b").await;
    assert_eq!(copied.len(), 90);
    assert_eq!(copied["r00007"].payload_json, r#"{"seed":7}"#);
}

/// Resync and RedriveDeadLetters need an admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_and_redrive_are_admin_only() {
    const ADMIN: &str = "admin-key-0123";
    const WRITER: &str = "writer-key-0123";
    let stores = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[[api_keys]]\nname = \"admin\"\nsha256 = \"{}\"\nteams = [\"*\"]\nrole = \"admin\"\n\n[[api_keys]]\nname = \"writer\"\nsha256 = \"{}\"\nteams = [\"*\"]\nrole = \"write\"\n",
        stores_config(stores.path(), &["a", "b"]),
        hash_key(ADMIN),
        hash_key(WRITER),
    );
    let server = Server::start(Some(&config), &[]);
    let mut admin = server.admin().await;
    let resync = || ResyncRequest {
        from: "a".into(),
        to: "b".into(),
        page_size: None,
    };
    let redrive = || RedriveRequest { store: "b".into() };

    for key in [Some(WRITER), None] {
        let expected = if key.is_some() {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        let error = admin.resync(req(resync(), key)).await.unwrap_err();
        assert_eq!(error.code(), expected, "{key:?}: {error:?}");
        let error = admin
            .redrive_dead_letters(req(redrive(), key))
            .await
            .unwrap_err();
        assert_eq!(error.code(), expected, "{key:?}: {error:?}");
    }
    let error = admin.resync(req(resync(), Some(WRITER))).await.unwrap_err();
    assert!(error.message().contains("needs admin"), "{error:?}");

    // A writer's status shows the replication fields too.
    assert_eq!(status(&server, Some(WRITER)).await.replication, "async");

    // The admin key may.
    let reply = admin
        .redrive_dead_letters(req(redrive(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.accepted, reply.still_refused), (0, 0));
    let (_, result) = drain_stream(
        admin
            .resync(req(resync(), Some(ADMIN)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(result.teams.is_empty() && result.copied == 0, "{result:?}");

    // And the CLI with a write key is refused.
    let addr = format!("http://{}", server.grpc);
    let output = vectorgate(&[
        "resync",
        "--addr",
        &addr,
        "--api-key",
        WRITER,
        "--from",
        "a",
        "--to",
        "b",
    ]);
    assert!(!output.status.success());
    let stderr = text(&output).1;
    assert!(stderr.contains("PermissionDenied: API key"), "{stderr}");
}
