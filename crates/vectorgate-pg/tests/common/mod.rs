//! Shared by the integration tests: the server URL, unique table names,
//! raw connections, and cleanup.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

/// The variable naming the test server (`scripts/services.sh up postgres`
/// writes it to `target/services.env`).
pub const URL_VAR: &str = "VECTORGATE_TEST_PG_URL";

/// `acquire_timeout_ms` of the tests' stores, unless a test sets its own.
/// Opening a connection costs ~180 ms of client CPU in a debug build (sqlx's
/// SCRAM-SHA-256, 4096 PBKDF2 rounds, unoptimised) on the runtime's worker
/// threads: twelve at once took 1.2 s on an idle 2-core machine, and over
/// the default 2 s while other tests loaded it (`check_concurrent_use`
/// failed with "could not get a connection within 2000 ms (the server
/// accepts connections again now)"). The tests are not about that budget.
pub const TEST_ACQUIRE_TIMEOUT_MS: u64 = 10_000;

/// The test server's URL. Without one: under CI (`CI=true`) a missing
/// service is a failure, so this panics; elsewhere it prints why the test is
/// skipped and returns `None`.
pub fn pg_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{URL_VAR} is not set, and CI=true: PostgreSQL tests must run under CI. \
             Start the server with `bash scripts/services.sh up postgres` and \
             `. target/services.env` before `cargo test`."
        ),
        _ => {
            eprintln!(
                "skipping: {URL_VAR} is not set (run `bash scripts/services.sh up postgres && \
                 . target/services.env`)"
            );
            None
        }
    }
}

/// A table name no other test (in this or a concurrent process) uses:
/// `vgt_<prefix>_<pid>_<process start, ms mod 1e8>_<counter>`.
pub fn unique_table(prefix: &str) -> String {
    static START: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() % 100_000_000)
            .unwrap_or(0)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("vgt_{prefix}_{}_{start}_{n}", std::process::id())
}

/// A plain connection, for what the store API cannot do (locks, catalog
/// checks, sabotage).
pub async fn raw(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .expect("raw connection to the test server")
}

/// Drops `tables` from a thread of its own (usable from `Drop`, inside or
/// outside a runtime).
pub fn drop_tables_blocking(url: &str, tables: Vec<String>) {
    if tables.is_empty() {
        return;
    }
    let url = url.to_owned();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        runtime.block_on(async move {
            let Ok(mut conn) = PgConnection::connect(&url).await else {
                eprintln!("cleanup: cannot connect; leaving {} tables", tables.len());
                return;
            };
            for table in tables {
                let sql = format!("DROP TABLE IF EXISTS {table}");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                {
                    eprintln!("cleanup: DROP TABLE {table}: {e}");
                }
            }
        });
    })
    .join();
    if joined.is_err() {
        eprintln!("cleanup thread panicked");
    }
}
