//! "Durable when `upsert` returns", checked the hard way: a writer process
//! is SIGKILLed mid-stream, and every batch it acknowledged must be in the
//! file afterwards, bit for bit.
//!
//! The writer is this test binary itself, re-executed with an environment
//! variable that turns [`writer_child_process`] from a no-op into the
//! writer, so no extra binary target is needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vectorgate::{IndexSpec, Metric, RecallQuery, Record, ScanRequest, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

/// Set in the child only: the SQLite file to write to.
const WRITER_ENV: &str = "VECTORGATE_EMBEDDED_KILL_TEST_DB";
/// Set in the child only: which round this writer is (ids are per round).
const ROUND_ENV: &str = "VECTORGATE_EMBEDDED_KILL_TEST_ROUND";
/// Writers killed one after the other on the same file: the second one
/// first recovers what the first left in the WAL, then is killed in turn.
const ROUNDS: usize = 2;
const DIM: usize = 96;
const BATCH: usize = 50;
/// Acknowledgements the parent waits for before pulling the plug.
const ACKS_BEFORE_KILL: usize = 30;

fn spec() -> IndexSpec {
    IndexSpec::new(DIM as u32, Metric::Cosine)
}

/// The vector of an id, derived from the id alone, so the parent can check
/// exact contents without the child reporting them.
fn vector_of(id: &str) -> Vec<f32> {
    let seed = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn team_of(writer: usize) -> String {
    format!("team{writer}")
}

/// The child: two concurrent writers append batches until killed (or, if
/// the parent died, until a minute has passed), printing `ACK <ids>` only
/// after `upsert` has returned.
#[test]
fn writer_child_process() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return; // A normal test run: nothing to do.
    };
    let round = std::env::var(ROUND_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = EmbeddedStore::open(EmbeddedConfig::new("killed", path))
            .await
            .unwrap();
        store.ensure_schema(&spec()).await.unwrap();
        let store = std::sync::Arc::new(store);
        let deadline = Instant::now() + Duration::from_secs(60);
        let writers = (0..2).map(|writer| {
            let store = std::sync::Arc::clone(&store);
            let round = round.clone();
            tokio::spawn(async move {
                let mut batch = 0;
                while Instant::now() < deadline {
                    let records: Vec<Record> = (0..BATCH)
                        .map(|i| {
                            let id = format!("r{round}-w{writer}-b{batch}-{i}");
                            Record {
                                vector: vector_of(&id),
                                team_id: team_of(writer),
                                dataset_id: format!("d{}", i % 3),
                                collection_id: "c".into(),
                                created_at_ms: 1 + batch,
                                payload: Some(serde_json::json!({ "batch": batch })),
                                id,
                            }
                        })
                        .collect();
                    let outcome = store.upsert(&records).await.unwrap();
                    let line = format!("ACK {}\n", outcome.ids.join(" "));
                    // One write per line: a kill can cut the stream only
                    // between lines (a torn last line is ignored anyway).
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                    batch += 1;
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.unwrap();
        }
    });
}

/// Reads complete `ACK` lines from the child, forwarding their ids.
fn forward_acks(stdout: impl std::io::Read, acks: mpsc::Sender<Vec<String>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // No newline: cut by the kill, not a whole acknowledgement.
        let Some(complete) = line.strip_suffix('\n') else {
            return;
        };
        if let Some(ids) = complete.strip_prefix("ACK ") {
            let ids = ids.split(' ').map(str::to_owned).collect();
            if acks.send(ids).is_err() {
                return;
            }
        }
    }
}

fn spawn_writer(db: &Path, round: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "writer_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, db)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs one writer until it has acknowledged [`ACKS_BEFORE_KILL`] batches,
/// SIGKILLs it, and returns every id it acknowledged.
fn run_and_kill(db: &Path, round: usize) -> Vec<String> {
    let mut child = spawn_writer(db, round);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || forward_acks(stdout, tx));

    let mut acknowledged: Vec<String> = Vec::new();
    let mut batches = 0;
    while batches < ACKS_BEFORE_KILL {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(ids) => {
                acknowledged.extend(ids);
                batches += 1;
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the writer stopped acknowledging after {batches} batches: {e}");
            }
        }
    }
    // SIGKILL on Unix: no destructor, no flush, no checkpoint.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status}"
    );
    reader.join().unwrap();
    // Lines the writer printed before dying are acknowledgements too.
    while let Ok(ids) = rx.try_recv() {
        acknowledged.extend(ids);
        batches += 1;
    }
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL * BATCH);
    eprintln!(
        "killed the writer ({status}) after {batches} acknowledged batches ({} records)",
        acknowledged.len()
    );

    acknowledged
}

#[test]
fn acknowledged_upserts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        acknowledged.extend(run_and_kill(&db, round));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new("reopened", &db))
            .await
            .unwrap();
        store.ensure_schema(&spec()).await.unwrap();
        let mut stored: HashMap<String, Record> = HashMap::new();
        let mut cursor = None;
        loop {
            let page = store
                .scan(&ScanRequest {
                    after_id: cursor,
                    limit: 1000,
                    with_vectors: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            stored.extend(page.records.into_iter().map(|r| (r.id.clone(), r)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut missing = Vec::new();
        for id in &acknowledged {
            match stored.get(id) {
                None => missing.push(id.clone()),
                Some(record) => {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&record.vector), bits(&vector_of(id)), "vector of {id}");
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged records lost after SIGKILL, e.g. {:?}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(5)]
        );

        // The index rebuilt from the file serves them too.
        for id in [&acknowledged[0], acknowledged.last().unwrap()] {
            let record = &stored[id];
            let hits = store
                .recall(&RecallQuery {
                    team_id: record.team_id.clone(),
                    dataset_ids: vec![record.dataset_id.clone()],
                    vector: vector_of(id),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(&hits[0].id, id);
        }
    });
}
