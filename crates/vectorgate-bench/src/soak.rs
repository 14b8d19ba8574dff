//! `vectorgate-bench soak`: the manager over [PostgreSQL, embedded] with the
//! journal, at a constant mixed load (upserts, deletes, recalls) for a long
//! time, with PostgreSQL SIGKILLed and restarted every few minutes. Every
//! `--report-every` seconds it prints the process's resident memory, the
//! journal file's size (with its WAL), the number of live tokio tasks, the
//! calls made and failed, and PostgreSQL's lag, so growth shows up.
//!
//! What it should show: RSS flat after warm-up (growth from minute 5 to
//! the end under 5 %), the journal back to its floor after each catch-up,
//! a constant task count, and 0 failed calls.
//!
//! Like `failover`, it kills the machine's shared PostgreSQL: it refuses to
//! start while tests run, and restarts PostgreSQL on every way out.

use crate::failover::{
    RestartGuard, drop_table_when_back, kill_postgres, postmaster_pid, running_tests,
};
use crate::load;
use crate::report;
use crate::workload::Corpus;
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vectorgate::{
    DeleteSelector, DynStore, IndexSpec, ManagerConfig, Metric, VectorManager, VectorStore,
};

/// Options of `vectorgate-bench soak`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// PostgreSQL URL (the primary).
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: String,
    /// Vector dimension.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Records loaded first (ids the load overwrites and deletes).
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Calls per second, all clients together.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Records per upsert.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Length of the run, minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// PostgreSQL is killed every this many minutes...
    #[arg(long, default_value_t = 5.0)]
    kill_every: f64,
    /// ...and restarted this many seconds later.
    #[arg(long, default_value_t = 20.0)]
    outage: f64,
    /// Seconds between two report lines.
    #[arg(long, default_value_t = 60)]
    report_every: u64,
    /// The script that restarts PostgreSQL (`<script> up postgres`).
    #[arg(long, default_value = "scripts/services.sh")]
    services_script: PathBuf,
    /// PostgreSQL's postmaster.pid; default: the first
    /// /var/lib/postgresql/*/main/postmaster.pid.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Run even though tests seem to be running against the shared PostgreSQL.
    #[arg(long)]
    force: bool,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Bytes of the journal file and its WAL.
fn journal_size(dir: &Path) -> u64 {
    ["journal.db", "journal.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub async fn run(args: Args) -> Result<(), String> {
    let tests = running_tests();
    if !tests.is_empty() && !args.force {
        return Err(format!(
            "tests are running and may be using the shared PostgreSQL this benchmark kills; \
             wait for them (or pass --force):\n  {}",
            tests.join("\n  ")
        ));
    }
    if args.outage >= args.kill_every * 60.0 {
        return Err("needs --outage (s) shorter than --kill-every (min)".into());
    }
    postmaster_pid(args.pid_file.as_deref())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = IndexSpec::new(
        u32::try_from(args.dim).map_err(|e| e.to_string())?,
        Metric::Cosine,
    );
    let corpus = Corpus::new(args.dim, args.seed);
    let table = format!("vgb_soak_{}", std::process::id());
    println!(
        "soak: {} min, {} calls/s, PostgreSQL killed every {} min for {} s ({} records × dim {} loaded into both stores first)",
        args.minutes, args.rate, args.kill_every, args.outage, args.records, args.dim
    );
    let (pg, embedded) = load::prepare_pair(
        &args.pg_url,
        &table,
        &spec,
        &corpus,
        args.records,
        dir.path(),
    )
    .await?;

    let mut guard = RestartGuard {
        script: args.services_script.clone(),
        armed: false,
    };
    let outcome = tokio::select! {
        outcome = soak(&args, spec, &corpus, Arc::new(pg.clone()), embedded, dir.path(), &mut guard) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if guard.armed {
        guard.restart()?;
    }
    drop(guard);
    if let Err(e) = drop_table_when_back(&pg).await {
        eprintln!("warning: could not drop table {table}: {e}");
    }
    let value = outcome?;
    let json = report::save("soak", &value).map_err(|e| e.to_string())?;
    println!("\nwritten to {}", json.display());
    Ok(())
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn soak(
    args: &Args,
    spec: IndexSpec,
    corpus: &Corpus,
    pg: DynStore,
    embedded: DynStore,
    dir: &Path,
    guard: &mut RestartGuard,
) -> Result<serde_json::Value, String> {
    let config = ManagerConfig::new(spec).with_journal(dir.join("journal.db"));
    let manager = Arc::new(
        VectorManager::start(config, vec![pg, embedded])
            .await
            .map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let counts = Arc::new(Counts::default());
    let queries = Arc::new(corpus.queries(1000, args.records, 2, 10));
    let interval = Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate.max(1)));
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (manager, counts, queries) = (manager.clone(), counts.clone(), queries.clone());
        let records: Vec<vectorgate::Record> = (0..args.records)
            .filter(|i| i % args.clients == client)
            .map(|i| corpus.record(i))
            .collect();
        let batch = args.batch.max(1);
        clients.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n: usize = 0;
            while Instant::now() < end {
                tick.tick().await;
                // 3 recalls, 1 upsert, 1 delete of what an upsert wrote.
                let ok = match n % 5 {
                    0 | 2 | 4 => {
                        let q = &queries[(client * 131 + n) % queries.len()];
                        manager.recall(&q.recall()).await.map(|_| ())
                    }
                    1 => {
                        let start = (n * batch) % records.len().max(1);
                        let rows: Vec<_> = (0..batch)
                            .map(|j| records[(start + j) % records.len()].clone())
                            .collect();
                        manager.upsert(&rows).await.map(|_| ())
                    }
                    _ => {
                        let r = &records[(n * 7) % records.len()];
                        let selector = DeleteSelector::Ids {
                            team_id: r.team_id.clone(),
                            ids: vec![r.id.clone()],
                        };
                        manager.delete(&selector).await.map(|_| ())
                    }
                };
                match ok {
                    Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!(
                            "  call failed at {:.0} s: {e}",
                            started.elapsed().as_secs_f64()
                        );
                        counts.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                n += 1;
            }
        }));
    }

    println!(
        "{:>6} {:>10} {:>12} {:>6} {:>9} {:>7} {:>8} {:>7}",
        "minute", "rss_kib", "journal_b", "tasks", "calls", "failed", "pg_lag", "pg_sync"
    );
    let mut rows = Vec::new();
    let mut next_report = started + Duration::from_secs(args.report_every);
    let mut next_kill = started + Duration::from_secs_f64(args.kill_every * 60.0);
    let mut restart_at: Option<Instant> = None;
    let mut kills = 0;
    while Instant::now() < end {
        let now = Instant::now();
        let wake = [Some(next_report), Some(next_kill), restart_at, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        if wake > now {
            tokio::time::sleep(wake - now).await;
        }
        let now = Instant::now();
        if now >= next_kill
            && restart_at.is_none()
            && now + Duration::from_secs_f64(args.outage) < end
        {
            let pid = kill_postgres(args.pid_file.as_deref())?;
            guard.armed = true;
            kills += 1;
            println!(
                "  {:>5.1} min: PostgreSQL (pid {pid}) SIGKILLed",
                started.elapsed().as_secs_f64() / 60.0
            );
            restart_at = Some(now + Duration::from_secs_f64(args.outage));
            next_kill += Duration::from_secs_f64(args.kill_every * 60.0);
        }
        if let Some(at) = restart_at
            && now >= at
        {
            let script = guard.script.clone();
            tokio::task::spawn_blocking(move || {
                let mut g = RestartGuard {
                    script,
                    armed: true,
                };
                let outcome = g.restart();
                g.armed = false;
                outcome
            })
            .await
            .map_err(|e| format!("restart task: {e}"))??;
            guard.armed = false;
            restart_at = None;
            println!(
                "  {:>5.1} min: PostgreSQL restarted",
                started.elapsed().as_secs_f64() / 60.0
            );
        }
        if now >= next_report {
            let status = manager.status();
            let pg = status.store("postgres");
            let row = serde_json::json!({
                "minute": (started.elapsed().as_secs_f64() / 60.0 * 10.0).round() / 10.0,
                "rss_kib": rss_kib(),
                "journal_bytes": journal_size(dir),
                "journal_entry_bytes": manager.journal_bytes(),
                "tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                "calls_ok": counts.ok.load(Ordering::Relaxed),
                "calls_failed": counts.failed.load(Ordering::Relaxed),
                "pg_lag": pg.map_or(0, |s| s.lag_entries),
                "pg_in_sync": pg.is_some_and(|s| s.in_sync),
            });
            println!(
                "{:>6} {:>10} {:>12} {:>6} {:>9} {:>7} {:>8} {:>7}",
                row["minute"],
                row["rss_kib"],
                row["journal_bytes"],
                row["tasks"],
                row["calls_ok"],
                row["calls_failed"],
                row["pg_lag"],
                row["pg_in_sync"]
            );
            rows.push(row);
            next_report += Duration::from_secs(args.report_every);
        }
    }
    for client in clients {
        let _ = client.await;
    }
    manager.shutdown().await;
    let rss_at = |minute: f64| {
        rows.iter()
            .find(|r| r["minute"].as_f64().is_some_and(|m| m >= minute))
            .and_then(|r| r["rss_kib"].as_u64())
    };
    let growth = match (rss_at(5.0), rows.last().and_then(|r| r["rss_kib"].as_u64())) {
        (Some(a), Some(b)) if a > 0 => Some((b as f64 - a as f64) / a as f64 * 100.0),
        _ => None,
    };
    let failed = counts.failed.load(Ordering::Relaxed);
    println!(
        "\n{} kills; {} calls, {failed} failed; RSS growth from minute 5 to the end: {}",
        kills,
        counts.ok.load(Ordering::Relaxed) + failed,
        growth.map_or("n/a (run under 5 min)".to_owned(), |g| format!("{g:+.1} %"))
    );
    Ok(serde_json::json!({
        "machine": report::machine(),
        "args": format!("{args:?}"),
        "kills": kills,
        "calls_failed": failed,
        "rss_growth_pct_from_minute_5": growth,
        "rows": rows,
    }))
}
