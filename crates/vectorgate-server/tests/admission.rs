//! Admission control and the server's edges, through the real binary.
//!
//! The noisy-neighbour test needs PostgreSQL (`VECTORGATE_TEST_PG_URL`,
//! written by `bash scripts/services.sh up` to `target/services.env`); under
//! `CI=true` a missing database is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pg::{DropTable, pg_url, unique_table};
use common::{Server, recall, record};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{ScanRequest, ScanResponse, UpsertRequest};

/// Recalls of one team, one after another, for `duration`: latencies and errors.
async fn recall_loop(server: &Server, duration: Duration) -> (Vec<Duration>, Vec<String>) {
    let mut client = server.vectors().await;
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let end = Instant::now() + duration;
    let mut seed = 0;
    while Instant::now() < end {
        seed += 1;
        let started = Instant::now();
        match client.recall(recall("quiet", &["d1"], seed, 10)).await {
            Ok(reply) => {
                assert_eq!(reply.into_inner().hits.len(), 10);
                latencies.push(started.elapsed());
            }
            Err(status) => errors.push(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    (latencies, errors)
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let at = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[at]
}

fn scan_t1() -> ScanRequest {
    ScanRequest {
        team_id: "t1".into(),
        ..Default::default()
    }
}

/// Opens a scan of team t1 as soon as the key has a free scan slot (within
/// 60 s, generous for a loaded 2-core machine; `what` names what should
/// free it).
async fn scan_when_a_slot_frees(
    client: &mut VectorServiceClient<Channel>,
    what: &str,
) -> tonic::Streaming<ScanResponse> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.scan(scan_t1()).await {
            Ok(stream) => return stream.into_inner(),
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "{what} never freed its slot");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// One team floods writes at its limit while another recalls: the other
/// team gets no error, and the flood is throttled (RESOURCE_EXHAUSTED with
/// a retry hint), never queued. Latency figures are printed; the benchmark
/// (`vectorgate-bench noisy-neighbor`) is where they are measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_flood_of_one_team_does_not_fail_another_teams_recalls() {
    let Some(url) = pg_url() else { return };
    let table = unique_table("vgt_admission");
    let _cleanup = DropTable {
        url: url.clone(),
        table: table.clone(),
    };
    let config = format!(
        r#"
[[stores]]
kind = "postgres"
name = "pg"
url = "{url}"
table = "{table}"
pool_max_connections = 6

[[admission.teams]]
team = "flood"
max_concurrent = 4
records_per_second = 1000
burst_records = 1000
"#
    );
    let server = Server::start(Some(&config), &[]);
    let mut client = server.vectors().await;
    for chunk in 0..5 {
        let records = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                record(&format!("q{n}"), "quiet", "d1", "c1", n)
            })
            .collect();
        client
            .upsert(UpsertRequest {
                records,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let (mut alone, errors) = recall_loop(&server, Duration::from_secs(2)).await;
    assert!(
        errors.is_empty(),
        "recalls failed without a flood: {errors:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    for worker in 0..6u32 {
        let mut client = server.vectors().await;
        let (stop, written, throttled) = (stop.clone(), written.clone(), throttled.clone());
        flooders.push(tokio::spawn(async move {
            let mut other_errors = Vec::new();
            let mut batch = 0u32;
            while !stop.load(Ordering::Relaxed) {
                batch += 1;
                let records = (0..200)
                    .map(|i| record(&format!("f{worker}-{batch}-{i}"), "flood", "d1", "c1", i))
                    .collect();
                let request = UpsertRequest {
                    records,
                    ..Default::default()
                };
                match client.upsert(request).await {
                    Ok(_) => {
                        written.fetch_add(200, Ordering::Relaxed);
                    }
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        throttled.fetch_add(1, Ordering::Relaxed);
                        let hint: u64 = status
                            .metadata()
                            .get("retry-after-ms")
                            .expect("a throttled call carries retry-after-ms")
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(hint > 0 && hint <= 1000, "hint {hint} ms");
                        // A client at its limit: it retries after the hint.
                        tokio::time::sleep(Duration::from_millis(hint.min(200))).await;
                    }
                    Err(status) => other_errors.push(format!("{status:?}")),
                }
            }
            other_errors
        }));
    }
    // Let the flood reach its limit, then measure the other team.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood_started = Instant::now();
    let (mut flooded, errors) = recall_loop(&server, Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let other_errors = flooder.await.unwrap();
        assert!(
            other_errors.is_empty(),
            "the flood got errors other than throttling: {other_errors:?}"
        );
    }
    let flood_seconds = flood_started.elapsed().as_secs_f64() + 0.5;

    assert!(
        errors.is_empty(),
        "the quiet team's recalls failed during the flood: {errors:?}"
    );
    let throttled = throttled.load(Ordering::Relaxed);
    let written = written.load(Ordering::Relaxed);
    assert!(throttled > 0, "the flood was never throttled");
    assert!(written > 0, "the flood wrote nothing at all");
    // The bucket (1000/s, burst 1000) bounds what the flood wrote.
    let allowed = 1000.0 * flood_seconds + 1000.0 + 6.0 * 200.0;
    assert!(
        (written as f64) <= allowed,
        "the flood wrote {written} records in {flood_seconds:.1} s, more than its limit allows ({allowed:.0})"
    );
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("vectorgate_throttled_total{reason=\"team_write_rate\"}"),
        "throttling is exported by reason"
    );
    assert!(
        !metrics.contains("flood"),
        "team ids never appear in metric labels"
    );

    let (p50_alone, p99_alone) = (percentile(&mut alone, 0.5), percentile(&mut alone, 0.99));
    let (p50_flood, p99_flood) = (
        percentile(&mut flooded, 0.5),
        percentile(&mut flooded, 0.99),
    );
    println!(
        "quiet team recall: alone p50 {p50_alone:?} p99 {p99_alone:?} ({} calls); \
         during the flood p50 {p50_flood:?} p99 {p99_flood:?} ({} calls), p99 ratio {:.2}; \
         flood: {written} records written, {throttled} calls throttled",
        alone.len(),
        flooded.len(),
        p99_flood.as_secs_f64() / p99_alone.as_secs_f64()
    );
}

/// A key's open scans are bounded: one more is refused with a retry hint,
/// and a finished scan frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_scans_per_key_are_bounded() {
    let server = Server::start(
        Some("[limits]\nmax_scans_per_key = 1\nscan_page_size = 10\nscan_message_bytes = 1024\n"),
        &[],
    );
    let mut client = server.vectors().await;
    let records = (0..200)
        .map(|i| record(&format!("r{i}"), "t1", "d1", "c1", i))
        .collect();
    client
        .upsert(UpsertRequest {
            records,
            ..Default::default()
        })
        .await
        .unwrap();
    // Open and read one message only: the stream stays open.
    let mut open = client.scan(scan_t1()).await.unwrap().into_inner();
    assert!(open.message().await.unwrap().is_some());
    let refused = client.scan(scan_t1()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.metadata().get("retry-after-ms").is_some());
    assert!(
        refused.message().contains("max_scans_per_key"),
        "{refused:?}"
    );

    // Reading the first scan to its end frees the slot.
    let mut total = 0;
    while let Some(message) = open.message().await.unwrap() {
        total += message.records.len();
    }
    assert!(total > 0);
    drop(open);
    drop(scan_when_a_slot_frees(&mut client, "a finished scan").await);
}

/// Two servers with different data directories but one journal: the second
/// is refused, naming the journal.
#[test]
fn two_servers_never_share_a_journal() {
    let shared = tempfile::tempdir().unwrap();
    let journal = shared.path().join("journal.db");
    let config = format!(
        "[manager.replication]\njournal_path = \"{}\"\n",
        journal.display()
    );
    let first = Server::start(Some(&config), &[]);
    let failure = match Server::try_start(Some(&config), &[]) {
        Err(failure) => failure,
        Ok(_) => panic!("a second server started on the same journal"),
    };
    assert!(
        failure.log.contains("journal") && failure.log.contains("in use"),
        "{}",
        failure.log
    );
    drop(first);
}

/// A scan whose client stops reading is closed after the idle timeout: its
/// task ends and frees the key's scan slot, and the client, reading again,
/// gets what was buffered and then DEADLINE_EXCEEDED, never a stream that
/// looks complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_client_stops_reading_is_closed() {
    let server = Server::start(
        Some(
            "[limits]\nmax_scans_per_key = 1\nscan_page_size = 10\nscan_message_bytes = 1024\n\
             scan_idle_timeout_ms = 300\nrequest_timeout_ms = 60000\n\
             # 12 MB of writes on a loaded machine: generous store timeouts.\n\
             [manager.retry]\nattempt_timeout_ms = 10000\ndeadline_ms = 30000\n",
        ),
        &[],
    );
    let mut client = server.vectors().await;
    // 12 MB of payloads: more than HTTP/2 flow-control windows and send
    // buffers hold, so a client that stops reading stalls the server's walk.
    const RECORDS: usize = 240;
    let filler = "x".repeat(50_000);
    for chunk in 0..RECORDS / 20 {
        let records = (0..20)
            .map(|i| {
                let n = (chunk * 20 + i) as u32;
                let mut r = record(&format!("r{n}"), "t1", "d1", "c1", n);
                r.payload_json = format!(r#"{{"text":"{filler}"}}"#);
                r
            })
            .collect();
        client
            .upsert(UpsertRequest {
                records,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut stalled = client.scan(scan_t1()).await.unwrap().into_inner();
    assert!(stalled.message().await.unwrap().is_some());
    // The client stops reading; its slot comes back once the scan is closed.
    let mut replacement = scan_when_a_slot_frees(&mut client, "the idle scan").await;
    let mut read = 0;
    let ending = loop {
        match stalled.message().await {
            Ok(Some(message)) => read += message.records.len(),
            Ok(None) => panic!("the idle scan ended as if complete after {read} more records"),
            Err(status) => break status,
        }
    };
    assert_eq!(ending.code(), Code::DeadlineExceeded, "{ending:?}");
    assert!(read < RECORDS, "{read}");
    // The replacement, read promptly, sees everything.
    let mut total = 0;
    while let Some(message) = replacement.message().await.unwrap() {
        total += message.records.len();
    }
    assert_eq!(total, RECORDS);
}
