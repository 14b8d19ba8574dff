//! What keeping a fallback in sync costs: upsert throughput through the
//! manager over [PostgreSQL, embedded] with replication `off` (writes reach
//! PostgreSQL only), `async` and `sync`, in interleaved rounds.
//!
//! For `async`, "sustained" throughput also counts the time the replicator
//! needs afterwards to bring the embedded fallback level: writes acknowledged
//! faster than the fallback can follow are not a sustainable rate.

use crate::report;
use crate::workload::{Sample, median, records, run_clients};
use clap::Args as ClapArgs;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::manager::config::ReplicationMode;
use vectorgate::{DynStore, IndexSpec, ManagerConfig, Metric, Record, VectorManager, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_pg::{PgConfig, PgStore};

/// Options of `vectorgate-bench replication`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// PostgreSQL URL (the primary).
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: String,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Records per upsert.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Seconds per measured round.
    #[arg(long, default_value_t = 3)]
    round_secs: u64,
    /// Rounds per mode (interleaved).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

struct Mode {
    name: &'static str,
    manager: Arc<VectorManager>,
    acked: Vec<f64>,
    sustained: Vec<f64>,
    latencies: Vec<Duration>,
}

pub async fn run(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = IndexSpec::new(args.dim as u32, Metric::Cosine);
    let table = format!("vgb_replication_{}", std::process::id());
    let pg = Arc::new(
        PgStore::connect(PgConfig::new("postgres", &args.pg_url).with_table(&table))
            .await
            .map_err(|e| e.to_string())?,
    );
    let embedded = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(
            "embedded",
            dir.path().join("embedded.db"),
        ))
        .await
        .map_err(|e| e.to_string())?,
    );
    let mut modes = Vec::new();
    for (name, mode) in [
        ("off", ReplicationMode::Off),
        ("async", ReplicationMode::Async),
        ("sync", ReplicationMode::Sync),
    ] {
        let mut config =
            ManagerConfig::new(spec).with_journal(dir.path().join(format!("journal-{name}.db")));
        config.replication.mode = mode;
        let manager = VectorManager::start(
            config,
            vec![pg.clone() as DynStore, embedded.clone() as DynStore],
        )
        .await
        .map_err(|e| e.to_string())?;
        modes.push(Mode {
            name,
            manager: Arc::new(manager),
            acked: Vec::new(),
            sustained: Vec::new(),
            latencies: Vec::new(),
        });
    }
    // A pool of vectors reused under fresh ids, so the clients measure the
    // write path, not the random number generator.
    let pool: Arc<Vec<Record>> = Arc::new(records("pool", 4000, args.dim, 7));
    println!(
        "replication: {} clients × {} records/upsert, dim {}, {} s rounds × {} per mode, interleaved",
        args.clients, args.batch, args.dim, args.round_secs, args.rounds
    );
    for round in 0..args.rounds {
        for mode in &mut modes {
            let manager = mode.manager.clone();
            let (pool, batch, name) = (pool.clone(), args.batch, mode.name);
            let sample: Sample = run_clients(
                args.clients,
                Duration::from_secs(args.round_secs),
                move |client, n| {
                    let manager = manager.clone();
                    let pool = pool.clone();
                    async move {
                        let start = (client * 997 + n as usize * batch) % (pool.len() - batch);
                        let rows: Vec<Record> = pool[start..start + batch]
                            .iter()
                            .enumerate()
                            .map(|(i, r)| Record {
                                id: format!("{name}-{round}-{client}-{n}-{i}"),
                                ..r.clone()
                            })
                            .collect();
                        manager
                            .upsert(&rows)
                            .await
                            .map(|_| batch as u64)
                            .map_err(|e| e.to_string())
                    }
                },
            )
            .await;
            // Wait for the fallback to be level before the next round, and
            // count that time for the modes that owe it.
            let drain_started = Instant::now();
            if mode.name != "off" {
                let until = Instant::now() + Duration::from_secs(120);
                while mode
                    .manager
                    .status()
                    .stores
                    .iter()
                    .any(|s| s.lag_entries > 0)
                {
                    if Instant::now() > until {
                        return Err(format!(
                            "{}: the fallback did not catch up in 120 s: {:#?}",
                            mode.name,
                            mode.manager.status()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let drain = drain_started.elapsed();
            if sample.errors > 0 {
                return Err(format!("{}: {} upserts failed", mode.name, sample.errors));
            }
            let sustained = sample.items as f64 / (sample.elapsed + drain).as_secs_f64();
            println!(
                "  round {round} {:<5} {:>9.0} rec/s acked, {:>9.0} rec/s sustained (drain {:?})",
                mode.name,
                sample.throughput(),
                sustained,
                drain
            );
            mode.acked.push(sample.throughput());
            mode.sustained.push(sustained);
            mode.latencies.extend(sample.latencies);
        }
    }

    let baseline = median(&mut modes[0].sustained.clone());
    println!(
        "\n| mode | acked rec/s | sustained rec/s | p50 upsert | p99 upsert | sustained vs off |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for mode in &mut modes {
        mode.latencies.sort();
        let sample = Sample {
            latencies: std::mem::take(&mut mode.latencies),
            ..Default::default()
        };
        let acked = median(&mut mode.acked);
        let sustained = median(&mut mode.sustained);
        let ratio = sustained / baseline;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.0} % |",
            mode.name,
            acked,
            sustained,
            sample.quantile(0.5).as_secs_f64() * 1e3,
            sample.quantile(0.99).as_secs_f64() * 1e3,
            ratio * 100.0
        );
        rows.push(serde_json::json!({
            "mode": mode.name,
            "acked_records_per_s": acked,
            "sustained_records_per_s": sustained,
            "p50_ms": sample.quantile(0.5).as_secs_f64() * 1e3,
            "p99_ms": sample.quantile(0.99).as_secs_f64() * 1e3,
            "sustained_vs_off": ratio,
        }));
        mode.manager.shutdown().await;
    }
    let path = report::save(
        "replication",
        &serde_json::json!({
            "benchmark": "replication",
            "command": "cargo run --release -p vectorgate-bench -- replication",
            "machine": report::machine(),
            "dim": args.dim, "clients": args.clients, "batch": args.batch,
            "round_secs": args.round_secs, "rounds": args.rounds,
            "results": rows,
        }),
    )
    .map_err(|e| e.to_string())?;
    println!("\nwritten to {}", path.display());
    pg.drop_table().await.map_err(|e| e.to_string())?;
    Ok(())
}
