//! PostgreSQL for the server tests: the URL from the environment (a
//! failure under `CI=true` when it is missing), unique table names, and
//! dropping a test's table however the test ends.

use sqlx::Connection;

pub const URL_VAR: &str = "VECTORGATE_TEST_PG_URL";

pub fn pg_url() -> Option<String> {
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
pub struct DropTable {
    pub url: String,
    pub table: String,
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

/// A table name no other test (in this or another process) uses.
pub fn unique_table(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}_{}_{millis}", std::process::id())
}
