//! Start-up, readiness, health, reflection, metrics, operator overrides and
//! graceful shutdown of the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, eventually, recall, record};
use std::process::Command;
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{
    CountRequest, DrainRequest, ResumeAutoRequest, ScanRequest, StatusRequest, UpsertRequest,
};

#[test]
fn refuses_to_serve_without_keys_on_a_non_loopback_address() {
    // The check runs before any store is opened or any port bound.
    let failure = Server::try_start(None, &["--listen", "0.0.0.0:0"])
        .err()
        .expect("the server must refuse to start");
    let status = failure.status.expect("it exits by itself");
    assert!(!status.success(), "{status:?}");
    assert!(failure.log.contains("refusing to start"), "{}", failure.log);
    assert!(failure.log.contains("0.0.0.0:0"), "{}", failure.log);
    assert!(
        failure.log.contains("--insecure-no-auth"),
        "{}",
        failure.log
    );
    assert!(failure.log.contains("api_keys"), "{}", failure.log);
}

#[test]
fn config_example_is_a_working_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_vectorgate"))
        .arg("config-example")
        .output()
        .unwrap();
    assert!(output.status.success());
    let example = String::from_utf8(output.stdout).unwrap();
    assert!(example.contains("[[api_keys]]"), "{example}");
    // It starts a server (keys configured, two embedded stores).
    let server = Server::start(Some(&example), &[]);
    let (code, body) = server.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["status"], "healthy");
    assert_eq!(readiness["stores"][0]["name"], "primary");
    assert_eq!(readiness["stores"][1]["name"], "fallback");
}

/// `VECTORGATE_*` variables override the file; flags override both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_vars_override_the_file_and_flags_override_env() {
    let config = "[index]\ndim = 16\nmetric = \"cosine\"\n";
    let server = Server::try_start_with_env(
        Some(config),
        &["--metric", "l2"],
        &[
            ("VECTORGATE_DIM", "4"),
            ("VECTORGATE_METRIC", "inner_product"),
        ],
    )
    .unwrap();
    let mut client = server.vectors().await;
    let status = client
        .upsert(UpsertRequest {
            records: vec![record("e1", "t1", "d1", "c1", 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("index dimension is 4"),
        "{}",
        status.message()
    );
    // l2 (the flag), not cosine (the file): a zero vector is accepted.
    let mut zero = record("e2", "t1", "d1", "c1", 1);
    zero.vector = vec![0.0; 4];
    client
        .upsert(UpsertRequest {
            records: vec![zero],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut query = recall("t1", &["d1"], 1, 1);
    query.vector = vec![3.0, 4.0, 0.0, 0.0];
    let hits = client.recall(query).await.unwrap().into_inner().hits;
    assert!(
        (hits[0].score + 5.0).abs() < 1e-4,
        "negative L2 distance: {hits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics() {
    let server = Server::start(None, &[]);

    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "vectorgate.v1.VectorService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // Reflection lists the services (what `grpcurl -plaintext ADDR list` asks).
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "vectorgate.v1.VectorService",
        "vectorgate.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }

    // A call, then the metrics show it, the manager's metrics and memory.
    let mut client = server.vectors().await;
    client
        .upsert(UpsertRequest {
            records: vec![record("m1", "t1", "d1", "c1", 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    let (code, body) = server.http_get("/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = server.http_get("/metrics");
    assert_eq!(code, 200);
    for needle in [
        "vectorgate_grpc_requests_total{method=\"upsert\",code=\"ok\"} 1",
        "vectorgate_calls_total",
        "vectorgate_grpc_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_degrades_while_the_primary_is_drained() {
    let config = r#"
[[stores]]
kind = "embedded"
name = "primary"

[[stores]]
kind = "embedded"
name = "secondary"
"#;
    let server = Server::start(Some(config), &[]);
    let readyz = || {
        let (code, body) = server.http_get("/readyz");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        (code, json)
    };
    let (code, json) = readyz();
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["status"], "healthy", "{json}");
    assert_eq!(json["active"], "primary", "{json}");

    let mut client = server.vectors().await;
    client
        .upsert(UpsertRequest {
            records: vec![record("x", "t1", "d1", "c1", 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    let served_by =
        |r: tonic::Response<vectorgate_server::proto::RecallResponse>| r.into_inner().served_by;
    assert_eq!(
        served_by(client.recall(recall("t1", &["d1"], 1, 5)).await.unwrap()),
        "primary"
    );

    let mut admin = server.admin().await;
    let status = admin
        .drain(DrainRequest {
            store: "primary".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert!(status.stores[0].drained);
    assert_eq!(status.active, "secondary");

    let (code, json) = readyz();
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["status"], "degraded", "{json}");
    assert_eq!(json["active"], "secondary", "{json}");
    assert_eq!(json["stores"][0]["drained"], true, "{json}");
    assert_eq!(
        served_by(client.recall(recall("t1", &["d1"], 1, 5)).await.unwrap()),
        "secondary"
    );
    // Still serving, so health stays SERVING.
    let mut health = HealthClient::new(server.channel().await);
    let serving = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(serving, ServingStatus::Serving as i32);

    // No store left: unhealthy, 503, NOT_SERVING, and calls are UNAVAILABLE.
    admin
        .drain(DrainRequest {
            store: "secondary".into(),
        })
        .await
        .unwrap();
    let (code, json) = readyz();
    assert_eq!(code, 503, "{json}");
    assert_eq!(json["status"], "unhealthy", "{json}");
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.message().await.unwrap().unwrap().status != ServingStatus::NotServing as i32 {}
    })
    .await
    .expect("health never turned NOT_SERVING");
    let status = client
        .recall(recall("t1", &["d1"], 1, 5))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    admin.resume_auto(ResumeAutoRequest {}).await.unwrap();
    let serving = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("health never turned SERVING again")
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(serving, ServingStatus::Serving as i32);
    let (code, json) = readyz();
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["status"], "healthy", "{json}");
    let status = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.active, "primary");
    assert!(status.stores.iter().all(|s| !s.drained));
}

/// 60 records of ~20 KiB payload (about 1.2 MiB), scanned 5 per page.
const SCAN_CONFIG: &str = "[limits]\nscan_page_size = 5\nscan_message_bytes = 65536\n";
const SCAN_RECORDS: usize = 60;

async fn fill_for_a_long_scan(server: &Server) {
    let mut client = server.vectors().await;
    for batch in 0..3 {
        let records = (0..SCAN_RECORDS / 3)
            .map(|i| {
                let n = batch * (SCAN_RECORDS / 3) + i;
                let mut r = record(&format!("s{n:03}"), "t1", "d1", "c1", n as u32);
                r.payload_json = format!(r#"{{"text":"{}"}}"#, "z".repeat(20 * 1024));
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
}

/// A client whose HTTP/2 windows are 64 KiB: the server can only send what
/// the client has read, so a scan it does not read stays in flight.
async fn slow_reader(server: &Server) -> VectorServiceClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    VectorServiceClient::new(channel)
}

/// The in-flight request is a real streaming Scan of ~1.2 MiB that the
/// client reads slowly: flow control keeps it open on the server (no test
/// hook in the server). SIGTERM must refuse new calls, let this one finish
/// with every record, then exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_scan_then_exits_0() {
    let mut server = Server::start(Some(SCAN_CONFIG), &[]);
    fill_for_a_long_scan(&server).await;

    let mut reader = slow_reader(&server).await;
    let mut stream = reader
        .scan(ScanRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let mut received = first.records.len();
    assert!(received > 0 && received < SCAN_RECORDS);
    // A health watcher (a stream that never ends by itself).
    let mut watch = HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let serving = watch.message().await.unwrap().unwrap().status;
    assert_eq!(serving, ServingStatus::Serving as i32);

    server.terminate();

    // The watcher is told NOT_SERVING, then its stream ends: it does not
    // hold the drain.
    let not_serving = watch.message().await.unwrap().unwrap().status;
    assert_eq!(not_serving, ServingStatus::NotServing as i32);
    assert!(!matches!(watch.message().await, Ok(Some(_))));

    // Draining: /readyz turns 503, then new calls are refused.
    eventually(Duration::from_secs(10), "/readyz to turn 503", || {
        server.http_get("/readyz").0 == 503
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = match Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
        {
            Err(_) => true,
            Ok(channel) => VectorServiceClient::new(channel)
                .count(CountRequest::default())
                .await
                .is_err(),
        };
        if refused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new calls are still accepted after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The scan is still in flight, so the process is still up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.try_wait().is_none(), "exited with a scan in flight");

    while let Some(message) = stream.message().await.unwrap() {
        received += message.records.len();
    }
    assert_eq!(received, SCAN_RECORDS, "the in-flight scan was cut short");

    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    let log = server.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("vectorgate stopped"), "{log}");
}

/// A client that never reads does not hold the process beyond
/// `drain_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_the_wait() {
    let mut server = Server::start(Some(SCAN_CONFIG), &["--drain-timeout-ms", "300"]);
    fill_for_a_long_scan(&server).await;
    let mut reader = slow_reader(&server).await;
    let mut stream = reader
        .scan(ScanRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();

    server.terminate();
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(
        server.log().contains("drain timeout elapsed"),
        "{}",
        server.log()
    );
    drop(stream);
}
