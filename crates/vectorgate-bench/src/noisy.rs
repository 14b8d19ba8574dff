//! `noisy-neighbor`: one team floods writes while another recalls, through
//! the real `vectorgate` server over PostgreSQL, with admission control on
//! (the flooding team limited) and off (limits too high to matter), side by
//! side in one run. Prints the quiet team's recall p50/p99 alone and during
//! the flood, its errors, and what the flood wrote and how often it was
//! throttled.
//!
//! The server binary is the `vectorgate` next to this one (build both:
//! `cargo build --release -p vectorgate-server -p vectorgate-bench`).

use crate::report;
use crate::workload::{Sample, vector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{RecallRequest, Record, UpsertRequest};

/// Options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: String,
    /// The `vectorgate` binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Records of the quiet team (one dataset).
    #[arg(long, default_value_t = 5_000)]
    records: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent flooding clients.
    #[arg(long, default_value_t = 8)]
    flooders: usize,
    /// Records per flooding upsert.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The flooding team's write limit when admission control is on
    /// (records/s; its bucket holds 1000, the smallest allowed). Set it
    /// below what the database absorbs, or the limit never engages.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Seconds the flood runs before the quiet team is measured (its
    /// burst is spent by then).
    #[arg(long, default_value_t = 8)]
    warmup: u64,
    /// PostgreSQL pool size of the server.
    #[arg(long, default_value_t = 16)]
    pool: u32,
}

struct Server {
    child: Child,
    client: VectorServiceClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_bin(args: &Args) -> Result<PathBuf, String> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name("vectorgate");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release -p vectorgate-server) or pass --server-bin",
            bin.display()
        ))
    }
}

async fn start(args: &Args, table: &str, admission: bool) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (flood_rate, flood_burst) = if admission {
        (args.limit, args.limit.max(1000))
    } else {
        (u32::MAX / 2, u32::MAX / 2)
    };
    let config = format!(
        r#"
[[stores]]
kind = "postgres"
name = "pg"
url = "{url}"
table = "{table}"
pool_max_connections = {pool}

[manager.replication]
mode = "off"

# Loading 768-dimension vectors into PostgreSQL's HNSW index is slow on a
# small machine: generous timeouts, so the figures are latencies, not
# timeouts.
[manager.retry]
attempt_timeout_ms = 10000
deadline_ms = 30000

[limits]
request_timeout_ms = 60000

[admission.default]
max_concurrent = 1000
records_per_second = {big}
burst_records = {big}

[[admission.teams]]
team = "flood"
records_per_second = {flood_rate}
burst_records = {flood_burst}
"#,
        url = args.pg_url,
        pool = args.pool,
        big = u32::MAX / 2,
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut child = Command::new(server_bin(args)?)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--dim", &args.dim.to_string()])
        .env("VECTORGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        first
    })
    .await
    .map_err(|e| e.to_string())?
    .ok_or("the server exited before listening")?
    .map_err(|e| e.to_string())?;
    let grpc = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .ok_or_else(|| format!("unexpected first line: {line}"))?
        .to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let client = VectorServiceClient::new(channel);
    Ok(Server {
        child,
        client,
        _dir: dir,
    })
}

async fn recall_loop(
    mut client: VectorServiceClient<Channel>,
    dim: usize,
    duration: Duration,
) -> Sample {
    let mut rng = StdRng::seed_from_u64(7);
    let mut sample = Sample::default();
    let started = Instant::now();
    while started.elapsed() < duration {
        let request = RecallRequest {
            team_id: "quiet".into(),
            dataset_ids: vec!["d1".into()],
            vector: vector(&mut rng, dim),
            limit: 10,
            ..Default::default()
        };
        let t = Instant::now();
        match client.recall(request).await {
            Ok(_) => {
                sample.ops += 1;
                sample.latencies.push(t.elapsed());
            }
            Err(_) => sample.errors += 1,
        }
    }
    sample.elapsed = started.elapsed();
    sample.items = sample.ops;
    sample.latencies.sort();
    sample
}

#[derive(Default)]
struct Flood {
    written: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
}

async fn measure(args: &Args, server: &Server) -> serde_json::Value {
    let duration = Duration::from_secs(args.seconds);
    let alone = recall_loop(server.client.clone(), args.dim, duration).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flood = Arc::new(Flood::default());
    let mut tasks = Vec::new();
    for worker in 0..args.flooders {
        let (stop, flood, mut client) = (stop.clone(), flood.clone(), server.client.clone());
        let (dim, batch) = (args.dim, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let records = (0..batch)
                    .map(|i| Record {
                        id: format!("f{worker}-{n}-{i}"),
                        team_id: "flood".into(),
                        dataset_id: "d1".into(),
                        collection_id: "c1".into(),
                        vector: vector(&mut rng, dim),
                        ..Default::default()
                    })
                    .collect();
                let request = UpsertRequest {
                    records,
                    ..Default::default()
                };
                match client.upsert(request).await {
                    Ok(_) => {
                        flood.written.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        flood.throttled.fetch_add(1, Ordering::Relaxed);
                        let hint = status
                            .metadata()
                            .get("retry-after-ms")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(100);
                        tokio::time::sleep(Duration::from_millis(hint.min(1000))).await;
                    }
                    Err(_) => {
                        flood.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let written_before = flood.written.load(Ordering::Relaxed);
    let started = Instant::now();
    let during = recall_loop(server.client.clone(), args.dim, duration).await;
    let flood_seconds = started.elapsed().as_secs_f64();
    let written = flood.written.load(Ordering::Relaxed) - written_before;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    serde_json::json!({
        "alone": {"p50_ms": ms(alone.quantile(0.5)), "p99_ms": ms(alone.quantile(0.99)),
                  "calls": alone.ops, "errors": alone.errors},
        "flood": {"p50_ms": ms(during.quantile(0.5)), "p99_ms": ms(during.quantile(0.99)),
                  "calls": during.ops, "errors": during.errors},
        "p99_ratio": during.quantile(0.99).as_secs_f64() / alone.quantile(0.99).as_secs_f64().max(1e-9),
        "flood_records_per_s": written as f64 / flood_seconds,
        "flood_throttled_calls": flood.throttled.load(Ordering::Relaxed),
        "flood_errors": flood.errors.load(Ordering::Relaxed),
    })
}

/// Runs the benchmark.
pub async fn run(args: Args) -> Result<(), String> {
    let table = format!("vgb_noisy_{}", std::process::id());
    let mut results = serde_json::Map::new();
    let outcome = async {
        // Fill the quiet team once, through a first server.
        {
            let server = start(&args, &table, false).await?;
            let mut client = server.client.clone();
            let mut rng = StdRng::seed_from_u64(1);
            let started = Instant::now();
            // Small batches: each upsert stays well within the attempt timeout.
            const LOAD_BATCH: usize = 200;
            for chunk in 0..args.records.div_ceil(LOAD_BATCH) {
                let records = (chunk * LOAD_BATCH..((chunk + 1) * LOAD_BATCH).min(args.records))
                    .map(|i| Record {
                        id: format!("q{i}"),
                        team_id: "quiet".into(),
                        dataset_id: "d1".into(),
                        collection_id: "c1".into(),
                        vector: vector(&mut rng, args.dim),
                        ..Default::default()
                    })
                    .collect();
                client
                    .upsert(UpsertRequest {
                        records,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("loading: {e}"))?;
            }
            println!(
                "loaded {} records of the quiet team in {:.1} s",
                args.records,
                started.elapsed().as_secs_f64()
            );
        }
        for (name, admission) in [("admission_on", true), ("admission_off", false)] {
            let server = start(&args, &table, admission).await?;
            let figures = measure(&args, &server).await;
            println!("{name}: {figures}");
            results.insert(name.to_owned(), figures);
        }
        Ok::<(), String>(())
    }
    .await;
    drop_table(&args.pg_url, &table).await;
    outcome?;
    let value = serde_json::json!({
        "benchmark": "noisy-neighbor",
        "machine": report::machine(),
        "dim": args.dim,
        "records": args.records,
        "flooders": args.flooders,
        "batch": args.batch,
        "limit_records_per_s": args.limit,
        "pool": args.pool,
        "results": results,
    });
    let path = report::save("noisy-neighbor", &value).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}

async fn drop_table(url: &str, table: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
}
