//! What the integration tests share: the server's URL, unique table names,
//! and the clean-up of tables left by earlier runs.
#![allow(dead_code)]

use sqlx::{AssertSqlSafe, Executor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use vectorgate_oceanbase::{META_TABLE, OceanBaseConfig, OceanBaseStore};

/// Where `scripts/services.sh up oceanbase` says the server is.
pub const URL_ENV: &str = "VECTORGATE_TEST_OCEANBASE_URL";

/// Prefix of every table the tests create; tables of runs older than
/// [`STALE_AFTER_SECS`] are dropped by the next run.
pub const TABLE_PREFIX: &str = "vgt_";
const STALE_AFTER_SECS: u64 = 3600;

/// The server's URL, or `None` (after saying why) when the test should be
/// skipped. Under CI (`CI=true`) a missing server is a failure.
pub fn url_or_skip(test: &str) -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "{test}: {URL_ENV} is not set under CI: start the server with \
                 `bash scripts/services.sh up oceanbase` and source target/services.env"
            );
            eprintln!(
                "SKIPPED {test}: {URL_ENV} is not set (run `bash scripts/services.sh up oceanbase` \
                 and `. target/services.env` to run it against a real OceanBase)"
            );
            None
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A table name no other test, in this process or another, uses:
/// `vgt_<unix seconds>_<pid>_<n>`.
pub fn unique_table() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TABLE_PREFIX}{}_{}_{n}", now_secs(), std::process::id())
}

/// A store on `table` with small pools (many tests run at once).
pub async fn store(url: &str, name: &str, table: &str) -> OceanBaseStore {
    let config = OceanBaseConfig {
        pool_max_connections: 4,
        ..OceanBaseConfig::new(name, url).with_table(table)
    };
    OceanBaseStore::connect(config)
        .await
        .expect("test config must be valid")
}

/// Drops the tables (and meta rows) that test runs left more than an hour
/// ago. Best effort: a failure here fails nothing.
pub async fn drop_stale_tables(url: &str) {
    let Ok(options) = url.parse::<sqlx::mysql::MySqlConnectOptions>() else {
        return;
    };
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.collation("utf8mb4_general_ci"));
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'vgt\\_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    let cutoff = now_secs().saturating_sub(STALE_AFTER_SECS);
    for name in names {
        let created = name
            .strip_prefix(TABLE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff)
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            let _ = pool
                .execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS `{name}`")))
                .await;
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM `{META_TABLE}` WHERE table_name = ?"
            )))
            .bind(&name)
            .execute(&pool)
            .await;
        }
    }
    pool.close().await;
}
