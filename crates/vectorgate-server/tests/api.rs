//! Every VectorService RPC against the real binary, and every
//! INVALID_ARGUMENT case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, recall, record, req, vector};
use tonic::Code;
use vectorgate_server::proto::{CountRequest, DeleteRequest, Record, ScanRequest, UpsertRequest};

const SMALL_PAGES: &str = "[limits]\nscan_page_size = 4\n";

fn count(team: &str, dataset: &str, collection: &str) -> CountRequest {
    CountRequest {
        team_id: team.into(),
        dataset_id: dataset.into(),
        collection_id: collection.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_round_trips() {
    let server = Server::start(None, &[]);
    let mut client = server.vectors().await;

    let mut with_payload = record("a", "t1", "d1", "c1", 1);
    with_payload.payload_json = r#"{"q":"what?","n":[1,2]}"#.into();
    let records = vec![
        record("a", "t1", "d1", "c1", 5),
        with_payload,
        record("", "t1", "d1", "c2", 2),
        record("b", "t1", "d2", "c1", 3),
        record("x", "t2", "d1", "c1", 1),
    ];
    // "a" twice: the last one wins.
    let ids = client
        .upsert(UpsertRequest {
            records,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 5);
    assert_eq!((ids[0].as_str(), ids[1].as_str()), ("a", "a"));
    assert_eq!((ids[3].as_str(), ids[4].as_str()), ("b", "x"));
    assert_eq!(ids[2].len(), 36, "a generated UUID: {}", ids[2]);

    // Recall: exact, best first, served by the only store.
    let mut query = recall("t1", &["d1", "d2"], 1, 10);
    query.with_payload = true;
    let reply = client.recall(query).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "embedded");
    assert_eq!(reply.hits.len(), 3);
    assert_eq!(reply.hits[0].id, "a");
    assert!(
        (reply.hits[0].score - 1.0).abs() < 1e-4,
        "{:?}",
        reply.hits[0]
    );
    assert!(reply.hits.windows(2).all(|w| w[0].score >= w[1].score));
    let payload: serde_json::Value = serde_json::from_str(&reply.hits[0].payload_json).unwrap();
    assert_eq!(payload, serde_json::json!({"q": "what?", "n": [1, 2]}));

    // Collection filters: include, exclude, and "empty include = no filter".
    let mut query = recall("t1", &["d1", "d2"], 1, 10);
    query.collection_ids = vec!["c1".into()];
    let hits = client.recall(query).await.unwrap().into_inner().hits;
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter()
            .all(|h| h.collection_id == "c1" && h.payload_json.is_empty())
    );
    let mut query = recall("t1", &["d1", "d2"], 1, 10);
    query.exclude_collection_ids = vec!["c1".into()];
    let hits = client.recall(query).await.unwrap().into_inner().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, ids[2]);
    let mut query = recall("t1", &["d1"], 1, 1);
    query.ef_search = Some(50);
    assert_eq!(
        client.recall(query).await.unwrap().into_inner().hits.len(),
        1
    );

    // Count: scoped and unscoped.
    let n = |r: tonic::Response<vectorgate_server::proto::CountResponse>| r.into_inner().count;
    assert_eq!(n(client.count(count("", "", "")).await.unwrap()), 4);
    assert_eq!(n(client.count(count("t1", "", "")).await.unwrap()), 3);
    assert_eq!(n(client.count(count("t1", "d1", "")).await.unwrap()), 2);
    assert_eq!(n(client.count(count("t1", "d1", "c2")).await.unwrap()), 1);
    assert_eq!(n(client.count(count("t2", "", "")).await.unwrap()), 1);

    // Delete by ids (only the team's own), then by dataset + collection.
    let deleted = client
        .delete(DeleteRequest {
            team_id: "t1".into(),
            ids: vec!["a".into(), "x".into(), "missing".into()],
            ..DeleteRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    assert_eq!(
        n(client.count(count("t2", "", "")).await.unwrap()),
        1,
        "t2's `x` survives"
    );
    let deleted = client
        .delete(DeleteRequest {
            team_id: "t1".into(),
            dataset_ids: vec!["d1".into()],
            collection_ids: vec!["c2".into()],
            ..DeleteRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    let deleted = client
        .delete(DeleteRequest {
            team_id: "t1".into(),
            dataset_ids: vec!["d2".into()],
            ..DeleteRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    assert_eq!(n(client.count(count("t1", "", "")).await.unwrap()), 0);
    assert_eq!(n(client.count(count("", "", "")).await.unwrap()), 1);
}

async fn scan_all(
    client: &mut vectorgate_server::proto::vector_service_client::VectorServiceClient<
        tonic::transport::Channel,
    >,
    request: ScanRequest,
) -> (usize, Vec<Record>) {
    let mut stream = client.scan(request).await.unwrap().into_inner();
    let mut messages = 0;
    let mut records = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages += 1;
        records.extend(message.records);
    }
    (messages, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_streams_every_page() {
    let server = Server::start(Some(SMALL_PAGES), &[]);
    let mut client = server.vectors().await;
    let mut records: Vec<Record> = (0..25)
        .map(|i| {
            let mut r = record(&format!("r{i:02}"), "t1", "d1", "c1", i);
            r.created_at_ms = 1000 + i64::from(i);
            r.payload_json = format!(r#"{{"i":{i}}}"#);
            r
        })
        .collect();
    records.push(record("other", "t2", "d1", "c1", 99));
    client
        .upsert(UpsertRequest {
            records,
            ..Default::default()
        })
        .await
        .unwrap();

    // 26 records, 4 per page: 7 pages, each id once, in order.
    let (messages, all) = scan_all(&mut client, ScanRequest::default()).await;
    assert!(messages >= 7, "{messages} messages");
    assert_eq!(all.len(), 26);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        all.iter().all(|r| r.vector.is_empty()),
        "no vectors unless asked"
    );
    let r07 = all.iter().find(|r| r.id == "r07").unwrap();
    assert_eq!(r07.created_at_ms, 1007);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r07.payload_json).unwrap(),
        serde_json::json!({"i": 7})
    );

    // Team filter, vectors, time range [1005, 1015).
    let (_, team) = scan_all(
        &mut client,
        ScanRequest {
            team_id: "t1".into(),
            with_vectors: true,
            created_from_ms: 1005,
            created_to_ms: 1015,
        },
    )
    .await;
    let ids: Vec<&str> = team.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, (5..15).map(|i| format!("r{i:02}")).collect::<Vec<_>>());
    assert_eq!(team[0].vector, vector(5));

    // A bad request fails the call itself.
    let err = client
        .scan(ScanRequest {
            created_from_ms: 10,
            created_to_ms: 5,
            ..ScanRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("created_from_ms"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_field_and_change_nothing() {
    let server = Server::start(Some("[limits]\nmax_request_bytes = 1048576\n"), &[]);
    let mut client = server.vectors().await;

    async fn upsert_err(
        client: &mut vectorgate_server::proto::vector_service_client::VectorServiceClient<
            tonic::transport::Channel,
        >,
        records: Vec<Record>,
    ) -> tonic::Status {
        client
            .upsert(UpsertRequest {
                records,
                ..Default::default()
            })
            .await
            .expect_err("the upsert must fail")
    }
    let check = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "expected the message to start with {field:?}: {:?}",
            status.message()
        );
    };

    let good = || record("ok", "t1", "d1", "c1", 1);

    // Wrong dimension.
    let mut bad = good();
    bad.vector = vec![1.0; 3];
    let status = upsert_err(&mut client, vec![good(), bad]).await;
    check(status.clone(), "records[1].vector");
    assert!(
        status.message().contains("index dimension is 8"),
        "{}",
        status.message()
    );
    // NaN.
    let mut bad = good();
    bad.vector[2] = f32::NAN;
    check(
        upsert_err(&mut client, vec![bad]).await,
        "records[0].vector[2]",
    );
    // Bad ids.
    let mut bad = good();
    bad.id = "no spaces".into();
    check(upsert_err(&mut client, vec![bad]).await, "records[0].id");
    let mut bad = good();
    bad.team_id = String::new();
    check(
        upsert_err(&mut client, vec![bad]).await,
        "records[0].team_id",
    );
    // Too many records.
    let many: Vec<Record> = (0..1001)
        .map(|i| record(&format!("m{i}"), "t1", "d1", "c1", i))
        .collect();
    let status = upsert_err(&mut client, many).await;
    check(status.clone(), "records");
    assert!(status.message().contains("1000"), "{}", status.message());
    // No records.
    check(upsert_err(&mut client, Vec::new()).await, "records");
    // payload_json: not JSON, not an object, too large.
    let mut bad = good();
    bad.payload_json = "{not json".into();
    check(
        upsert_err(&mut client, vec![good(), bad]).await,
        "records[1].payload_json",
    );
    let mut bad = good();
    bad.payload_json = "[1,2]".into();
    check(
        upsert_err(&mut client, vec![bad]).await,
        "records[0].payload_json",
    );
    let mut bad = good();
    bad.payload_json = format!(r#"{{"text":"{}"}}"#, "x".repeat(70 * 1024));
    let status = upsert_err(&mut client, vec![bad]).await;
    check(status.clone(), "records[0].payload_json");
    assert!(status.message().contains("65536"), "{}", status.message());
    // A request above limits.max_request_bytes (1 MiB here).
    let big: Vec<Record> = (0..20)
        .map(|i| {
            let mut r = record(&format!("big{i}"), "t1", "d1", "c1", i);
            r.payload_json = format!(r#"{{"text":"{}"}}"#, "y".repeat(60 * 1024));
            r
        })
        .collect();
    let status = upsert_err(&mut client, big).await;
    check(status.clone(), "request");
    assert!(status.message().contains("1048576"), "{}", status.message());

    // Recall limits and scope.
    check(
        client
            .recall(recall("t1", &["d1"], 1, 0))
            .await
            .unwrap_err(),
        "limit",
    );
    check(
        client
            .recall(recall("t1", &["d1"], 1, 1001))
            .await
            .unwrap_err(),
        "limit",
    );
    check(
        client.recall(recall("t1", &[], 1, 10)).await.unwrap_err(),
        "dataset_ids",
    );
    let mut query = recall("t1", &["d1"], 1, 10);
    query.vector.pop();
    check(client.recall(query).await.unwrap_err(), "vector");
    let mut query = recall("t1", &["d1"], 1, 10);
    query.vector = vec![0.0; 8];
    check(client.recall(query).await.unwrap_err(), "vector");

    // Delete: both selectors, neither, too many ids.
    let both = DeleteRequest {
        team_id: "t1".into(),
        ids: vec!["a".into()],
        dataset_ids: vec!["d1".into()],
        collection_ids: Vec::new(),
    };
    let status = client.delete(both).await.unwrap_err();
    check(status.clone(), "ids");
    assert!(
        status.message().contains("not both"),
        "{}",
        status.message()
    );
    let neither = DeleteRequest {
        team_id: "t1".into(),
        ..DeleteRequest::default()
    };
    check(client.delete(neither).await.unwrap_err(), "ids");
    let too_many = DeleteRequest {
        team_id: "t1".into(),
        ids: (0..10_001).map(|i| format!("id{i}")).collect(),
        ..DeleteRequest::default()
    };
    let status = client.delete(too_many).await.unwrap_err();
    check(status.clone(), "ids");
    assert!(status.message().contains("10000"), "{}", status.message());

    // Count with a bad id.
    check(
        client.count(count("t 1", "", "")).await.unwrap_err(),
        "team_id",
    );

    // Nothing above wrote anything.
    let total = client
        .count(req(count("", "", ""), None))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(total, 0);
}

/// An id-less upsert sent again with the same `request_id` (a client retry
/// after a lost answer) writes the same records, not copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upsert_with_a_request_id_writes_no_copies() {
    let server = Server::start(None, &[]);
    let mut client = server.vectors().await;
    let request = || UpsertRequest {
        records: vec![
            record("", "t1", "d1", "c1", 1),
            record("", "t1", "d1", "c1", 2),
            record("kept", "t1", "d1", "c1", 3),
        ],
        request_id: "import-7:batch-3".into(),
    };
    let first = client.upsert(request()).await.unwrap().into_inner().ids;
    let again = client.upsert(request()).await.unwrap().into_inner().ids;
    assert_eq!(first, again, "the retry got the same ids");
    assert_eq!(first[2], "kept");
    assert_ne!(first[0], first[1]);
    let counted = client
        .count(count("t1", "", ""))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(counted, 3, "no copies");
    // Without a request id, a retry is a new write.
    let mut plain = request();
    plain.request_id.clear();
    client.upsert(plain).await.unwrap();
    let counted = client
        .count(count("t1", "", ""))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(counted, 5);
    let mut bad = request();
    bad.request_id = "has spaces".into();
    let error = client.upsert(bad).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().starts_with("request_id"), "{error:?}");
}
