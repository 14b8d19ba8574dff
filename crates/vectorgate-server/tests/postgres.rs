//! The server over PostgreSQL (primary) and an embedded store (fallback).
//!
//! Needs `VECTORGATE_TEST_PG_URL` (`bash scripts/services.sh up` writes it
//! to `target/services.env`). Without it the test is skipped with a message,
//! except under CI (`CI=true`), where a missing database is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pg::{DropTable, pg_url, unique_table};
use common::{Server, recall, record};
use vectorgate_server::proto::{CountRequest, DrainRequest, StatusRequest, UpsertRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_primary_with_embedded_fallback() {
    let Some(url) = pg_url() else { return };
    let table = unique_table("vgt_server");
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
pool_max_connections = 4

[[stores]]
kind = "embedded"
name = "local"
"#
    );
    let server = Server::start(Some(&config), &[]);
    assert!(
        !server.log().contains("vectorgate:vectorgate@"),
        "the password is not logged"
    );

    let mut admin = server.admin().await;
    let status = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.stores[0].kind, "postgres");
    assert_eq!(status.active, "pg");

    let mut client = server.vectors().await;
    let mut first = record("p1", "t1", "d1", "c1", 1);
    first.payload_json = r#"{"source":"pg"}"#.into();
    client
        .upsert(UpsertRequest {
            records: vec![first, record("p2", "t1", "d1", "c1", 2)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut query = recall("t1", &["d1"], 1, 5);
    query.with_payload = true;
    let reply = client.recall(query.clone()).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "pg");
    assert_eq!(reply.hits.len(), 2);
    assert_eq!(reply.hits[0].id, "p1");
    assert_eq!(reply.hits[0].payload_json, r#"{"source":"pg"}"#);
    let count = client
        .count(CountRequest {
            team_id: "t1".into(),
            ..CountRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 2);

    // The fallback answers with the same data once the primary is drained.
    admin
        .drain(DrainRequest { store: "pg".into() })
        .await
        .unwrap();
    let reply = client.recall(query).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "local");
    assert_eq!(reply.hits.len(), 2);
    assert_eq!(reply.hits[0].id, "p1");
}
