//! The server over PostgreSQL (primary) and an embedded store (fallback).
//!
//! Needs `VECTORGATE_TEST_PG_URL` (`bash scripts/services.sh up` writes it
//! to `target/services.env`). Without it the test is skipped with a message,
//! except under CI (`CI=true`), where a missing database is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, recall, record};
use sqlx::Connection;
use vectorgate_server::proto::{CountRequest, DrainRequest, StatusRequest, UpsertRequest};

const URL_VAR: &str = "VECTORGATE_TEST_PG_URL";

fn pg_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{URL_VAR} is not set, and CI=true: start PostgreSQL with `bash scripts/services.sh up` \
             and `. target/services.env` before `cargo test`"
        ),
        _ => {
            eprintln!(
                "skipping: {URL_VAR} is not set (bash scripts/services.sh up && . target/services.env)"
            );
            None
        }
    }
}

/// Drops the test's table when the test ends, however it ends.
struct DropTable {
    url: String,
    table: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match sqlx::PgConnection::connect(&url).await {
                    Ok(mut conn) => {
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await
                        {
                            eprintln!("cleanup failed: {e}");
                        }
                    }
                    Err(e) => eprintln!("cleanup: cannot connect: {e}"),
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_primary_with_embedded_fallback() {
    let Some(url) = pg_url() else { return };
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    let table = format!("vgt_server_{}_{millis}", std::process::id());
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
