//! What a client sees while PostgreSQL dies and comes back: constant
//! recall + upsert load on a manager over [PostgreSQL, embedded] (async
//! journal, the manager's default probe, breaker and retry settings),
//! PostgreSQL's postmaster SIGKILLed at `--kill-at` and restarted with
//! `scripts/services.sh up postgres` at `--restart-at`.
//!
//! Recorded per 100 ms bucket (by completion time): recalls answered by
//! each store (`recall_routed(..).served_by`), upserts acknowledged, failed
//! calls, p99 latency; every manager status change (breaker, active store);
//! PostgreSQL's journal lag every 20 ms. Written to
//! `bench-results/failover.{json,png}`.
//!
//! This kills the machine's shared PostgreSQL: it refuses to start while a
//! `cargo test`/`nextest` run is on the machine (unless `--force`), and
//! restarts PostgreSQL on every way out (error, Ctrl-C, panic) once it
//! killed it.

use crate::chart::{self, Line, Marker, Timeline};
use crate::load;
use crate::report;
use crate::workload::{Corpus, Query};
use clap::Args as ClapArgs;
use plotters::style::RGBColor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{
    BreakerState, DynStore, IndexSpec, ManagerConfig, Metric, Record, VectorManager, VectorStore,
};

/// Options of `vectorgate-bench failover`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// PostgreSQL URL (the primary).
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: String,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Records loaded into both stores first.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Target calls per second, all clients together (each client paces
    /// itself; a slower store lowers the rate it reaches).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// One call in this many is an upsert; the others are recalls.
    #[arg(long, default_value_t = 5)]
    upsert_every: u64,
    /// Records per upsert.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Datasets each recall names.
    #[arg(long, default_value_t = 2)]
    datasets: usize,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// When PostgreSQL is killed, seconds into the run.
    #[arg(long, default_value_t = 15.0)]
    kill_at: f64,
    /// When PostgreSQL is restarted, seconds into the run.
    #[arg(long, default_value_t = 35.0)]
    restart_at: f64,
    /// Bucket width of the timeline, ms.
    #[arg(long, default_value_t = 100)]
    bucket_ms: u64,
    /// Health probe period of the manager, ms (the manager's default: 2000).
    #[arg(long, default_value_t = 2000)]
    probe_interval_ms: u64,
    /// How long a tripped breaker keeps PostgreSQL out, ms (default: 5000).
    #[arg(long, default_value_t = 5000)]
    open_ms: u64,
    /// The script that restarts PostgreSQL (`<script> up postgres`).
    #[arg(long, default_value = "scripts/services.sh")]
    services_script: PathBuf,
    /// PostgreSQL's postmaster.pid; default: the first
    /// /var/lib/postgresql/*/main/postmaster.pid.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// TrueType font for the chart's text (default: DejaVu Sans and others, see chart.rs).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Run even though tests seem to be running against the shared PostgreSQL.
    #[arg(long)]
    force: bool,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Restarts PostgreSQL when dropped while armed: on `?`, Ctrl-C (which the
/// run turns into an error) and panics alike.
pub(crate) struct RestartGuard {
    pub(crate) script: PathBuf,
    pub(crate) armed: bool,
}

impl RestartGuard {
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        let outcome = restart_postgres(&self.script);
        if outcome.is_ok() {
            self.armed = false;
        }
        outcome
    }
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("restarting PostgreSQL before exiting");
            if let Err(e) = restart_postgres(&self.script) {
                eprintln!(
                    "error: PostgreSQL could not be restarted ({e}); run `bash {} up postgres`",
                    self.script.display()
                );
            }
        }
    }
}

fn restart_postgres(script: &Path) -> Result<(), String> {
    let output = std::process::Command::new("bash")
        .arg(script)
        .args(["up", "postgres"])
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} up postgres failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ))
    }
}

pub(crate) fn postmaster_pid(explicit: Option<&Path>) -> Result<String, String> {
    let file = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let mut found = None;
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/var/lib/postgresql")
                .map_err(|e| format!("/var/lib/postgresql: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            versions.sort();
            for dir in versions {
                let candidate = dir.join("main/postmaster.pid");
                if candidate.exists() {
                    found = Some(candidate);
                    break;
                }
            }
            found.ok_or("no /var/lib/postgresql/*/main/postmaster.pid: is PostgreSQL running?")?
        }
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let pid = text.lines().next().unwrap_or_default().trim().to_owned();
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{}: no pid on its first line", file.display()));
    }
    Ok(pid)
}

pub(crate) fn kill_postgres(explicit: Option<&Path>) -> Result<String, String> {
    let pid = postmaster_pid(explicit)?;
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .map_err(|e| format!("kill -KILL {pid}: {e}"))?;
    if status.success() {
        Ok(pid)
    } else {
        Err(format!("kill -KILL {pid}: {status}"))
    }
}

/// Test runs on this machine that may be using the shared PostgreSQL.
pub(crate) fn running_tests() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args.first().map(String::as_str).unwrap_or_default();
        let is_test = program.ends_with("cargo-nextest")
            || (program.ends_with("cargo") && args.iter().any(|a| a == "test" || a == "nextest"));
        if is_test {
            found.push(format!("{name}: {}", args.join(" ")));
        }
    }
    found
}

/// One finished call.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// Completion, ms since the start.
    end_ms: f64,
    latency_ms: f64,
    upsert: bool,
    ok: bool,
    /// 0: postgres, 1: embedded (recalls only).
    served_by: Option<usize>,
}

/// A manager status change or sample.
#[derive(Debug, Clone)]
struct StatusPoint {
    t_ms: f64,
    active: Option<String>,
    pg_breaker: BreakerState,
    pg_in_sync: bool,
    pg_lag: u64,
    /// PostgreSQL's last probe succeeded.
    pg_healthy: Option<bool>,
    /// Highest journal sequence number committed.
    committed: u64,
}

const STORES: [&str; 2] = ["postgres", "embedded"];

/// Buckets averaged for the chart's rate lines.
const SMOOTH: usize = 5;

pub async fn run(args: Args) -> Result<(), String> {
    if args.kill_at >= args.restart_at || args.restart_at >= args.duration {
        return Err("needs --kill-at < --restart-at < --duration".into());
    }
    let tests = running_tests();
    if !tests.is_empty() && !args.force {
        return Err(format!(
            "tests are running and may be using the shared PostgreSQL this benchmark kills; \
             wait for them (or pass --force):\n  {}",
            tests.join("\n  ")
        ));
    }
    if !args.services_script.exists() {
        return Err(format!(
            "{} not found: run from the repository root or pass --services-script",
            args.services_script.display()
        ));
    }
    postmaster_pid(args.pid_file.as_deref())?;
    let font = chart::init_font(args.font.as_deref());

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = IndexSpec::new(
        u32::try_from(args.dim).map_err(|e| e.to_string())?,
        Metric::Cosine,
    );
    let corpus = Corpus::new(args.dim, args.seed);
    let table = format!("vgb_failover_{}", std::process::id());
    println!(
        "failover: {} records × dim {} in PostgreSQL (table {table}) and embedded",
        args.records, args.dim
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
        outcome = timeline(&args, spec, &corpus, Arc::new(pg.clone()), embedded, dir.path(), &mut guard) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    // PostgreSQL first, then the table.
    if guard.armed {
        guard.restart()?;
    }
    drop(guard);
    if let Err(e) = drop_table_when_back(&pg).await {
        eprintln!("warning: could not drop table {table}: {e}");
    }
    let mut value = outcome?;
    let text = font.is_some();
    value["chart_font"] = serde_json::json!(font.as_ref().map(|p| p.display().to_string()));
    let json = report::save("failover", &value).map_err(|e| e.to_string())?;
    let png = json.with_extension("png");
    chart::render(&png, &chart_of(&args, &value), text)?;
    if !text {
        println!(
            "no TrueType font found (tried {:?}): the chart has no text; pass --font or install fonts-dejavu-core",
            chart::FONT_CANDIDATES
        );
    }
    println!("\nwritten to {} and {}", json.display(), png.display());
    Ok(())
}

pub(crate) async fn drop_table_when_back(pg: &vectorgate_pg::PgStore) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..30 {
        match pg.drop_table().await {
            Ok(()) => {
                pg.close().await;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

/// When the outage happened, ms since the start.
#[derive(Debug, Clone, Copy)]
struct Events {
    kill_ms: f64,
    restart_ms: f64,
    ready_ms: f64,
}

fn point(t_ms: f64, status: &vectorgate::ManagerStatus) -> StatusPoint {
    let pg = status.store(STORES[0]);
    StatusPoint {
        t_ms,
        active: status.active.clone(),
        pg_breaker: pg.map_or(BreakerState::Open, |s| s.breaker),
        pg_in_sync: pg.is_some_and(|s| s.in_sync),
        pg_lag: pg.map_or(0, |s| s.lag_entries),
        pg_healthy: pg.and_then(|s| s.healthy),
        committed: status.committed_seq,
    }
}

async fn timeline(
    args: &Args,
    spec: IndexSpec,
    corpus: &Corpus,
    pg: DynStore,
    embedded: DynStore,
    dir: &Path,
    guard: &mut RestartGuard,
) -> Result<serde_json::Value, String> {
    let mut config = ManagerConfig::new(spec).with_journal(dir.join("journal.db"));
    config.health.probe_interval_ms = args.probe_interval_ms;
    config.breaker.open_ms = args.open_ms;
    let manager = Arc::new(
        VectorManager::start(config.clone(), vec![pg, embedded])
            .await
            .map_err(|e| e.to_string())?,
    );
    let queries: Arc<Vec<Query>> = Arc::new(corpus.queries(1000, args.records, args.datasets, 10));
    let per_client = (args.records / args.clients.max(1)).clamp(1, 2000);
    let stripes: Arc<Vec<Vec<Record>>> = Arc::new(
        (0..args.clients)
            .map(|c| {
                (0..per_client)
                    .map(|k| corpus.record((c + k * args.clients) % args.records.max(1)))
                    .collect()
            })
            .collect(),
    );

    let started = Instant::now();
    let ms = move || started.elapsed().as_secs_f64() * 1e3;
    let end = started + Duration::from_secs_f64(args.duration);

    // Status changes, as they happen.
    let mut changes_rx = manager.subscribe();
    let changes = tokio::spawn(async move {
        let mut points = vec![point(ms(), &changes_rx.borrow_and_update())];
        while tokio::time::timeout_at(end.into(), changes_rx.changed())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            points.push(point(ms(), &changes_rx.borrow_and_update()));
        }
        points
    });
    // PostgreSQL's lag, sampled.
    let sampler = {
        let manager = manager.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while Instant::now() < end {
                tick.tick().await;
                samples.push(point(ms(), &manager.status()));
            }
            samples
        })
    };
    // The clients.
    let interval = Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate.max(1)));
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (manager, queries, stripes) = (manager.clone(), queries.clone(), stripes.clone());
        let (batch, every) = (args.batch, args.upsert_every.max(1));
        clients.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            // Spread the clients' first calls over one interval.
            tokio::time::sleep(interval.mul_f64(client as f64 / 8.0)).await;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let t = Instant::now();
                let upsert = (n + client as u64).is_multiple_of(every);
                let (ok, served_by) = if upsert {
                    let stripe = &stripes[client];
                    let start = (n as usize * batch) % stripe.len();
                    let mut rows: Vec<Record> = (0..batch.min(stripe.len()))
                        .map(|j| stripe[(start + j) % stripe.len()].clone())
                        .collect();
                    rows.sort_by(|a, b| a.id.cmp(&b.id));
                    (manager.upsert(&rows).await.is_ok(), None)
                } else {
                    let q = &queries[(client * 131 + n as usize) % queries.len()];
                    match manager.recall_routed(&q.recall()).await {
                        Ok(routed) => (true, STORES.iter().position(|s| *s == routed.served_by)),
                        Err(e) => {
                            eprintln!("  recall failed at {:.1} s: {e}", ms() / 1e3);
                            (false, None)
                        }
                    }
                };
                calls.push(Call {
                    end_ms: ms(),
                    latency_ms: t.elapsed().as_secs_f64() * 1e3,
                    upsert,
                    ok,
                    served_by,
                });
                n += 1;
            }
            calls
        }));
    }

    // The outage.
    tokio::time::sleep_until((started + Duration::from_secs_f64(args.kill_at)).into()).await;
    let pid = kill_postgres(args.pid_file.as_deref())?;
    guard.armed = true;
    let kill_ms = ms();
    println!(
        "  {:>5.1} s: SIGKILL to the postmaster (pid {pid})",
        kill_ms / 1e3
    );
    tokio::time::sleep_until((started + Duration::from_secs_f64(args.restart_at)).into()).await;
    let restart_ms = ms();
    println!(
        "  {:>5.1} s: restarting PostgreSQL ({} up postgres)",
        restart_ms / 1e3,
        args.services_script.display()
    );
    let script = guard.script.clone();
    let restarted = tokio::task::spawn_blocking(move || restart_postgres(&script))
        .await
        .map_err(|e| format!("restart task: {e}"))?;
    let ready_ms = ms();
    restarted?;
    guard.armed = false;
    println!(
        "  {:>5.1} s: PostgreSQL accepts connections again",
        ready_ms / 1e3
    );

    let mut calls: Vec<Call> = Vec::new();
    for client in clients {
        calls.extend(client.await.map_err(|e| format!("client task: {e}"))?);
    }
    let points = changes.await.map_err(|e| e.to_string())?;
    let samples = sampler.await.map_err(|e| e.to_string())?;
    let final_status = manager.status();
    manager.shutdown().await;
    calls.sort_by(|a, b| a.end_ms.total_cmp(&b.end_ms));

    let events = Events {
        kill_ms,
        restart_ms,
        ready_ms,
    };
    let value = summarize(args, &config, &calls, &points, &samples, events);
    println!(
        "  final: active {:?}, postgres lag {} entries",
        final_status.active,
        final_status.store(STORES[0]).map_or(0, |s| s.lag_entries)
    );
    Ok(value)
}

fn summarize(
    args: &Args,
    config: &ManagerConfig,
    calls: &[Call],
    points: &[StatusPoint],
    samples: &[StatusPoint],
    events: Events,
) -> serde_json::Value {
    let Events {
        kill_ms,
        restart_ms,
        ready_ms,
    } = events;
    let after = |t: f64| calls.iter().filter(move |c| c.end_ms > t);
    let first_fallback = after(kill_ms)
        .find(|c| c.ok && c.served_by == Some(1))
        .map(|c| c.end_ms - kill_ms);
    let breaker_open = points
        .iter()
        .find(|p| p.t_ms >= kill_ms && p.pg_breaker == BreakerState::Open)
        .map(|p| p.t_ms - kill_ms);
    let active_fallback = points
        .iter()
        .find(|p| p.t_ms >= kill_ms && p.active.as_deref() == Some(STORES[1]))
        .map(|p| p.t_ms - kill_ms);
    let last_pg_before = calls
        .iter()
        .rev()
        .find(|c| c.end_ms >= kill_ms && c.end_ms < restart_ms && c.served_by == Some(0))
        .map(|c| c.end_ms - kill_ms);
    let pg_closed = points
        .iter()
        .find(|p| p.t_ms >= ready_ms && p.pg_breaker == BreakerState::Closed)
        .map(|p| p.t_ms);
    let pg_active = points
        .iter()
        .find(|p| p.t_ms >= ready_ms && p.active.as_deref() == Some(STORES[0]))
        .map(|p| p.t_ms);
    let failback = after(restart_ms)
        .find(|c| c.ok && c.served_by == Some(0))
        .map(|c| c.end_ms);
    let failed = calls.iter().filter(|c| !c.ok).count();
    let failed_recalls = calls.iter().filter(|c| !c.ok && !c.upsert).count();
    // The longest stretch after the kill with no call completing at all.
    let mut stall = (0.0f64, kill_ms);
    let mut previous = kill_ms;
    for c in calls
        .iter()
        .filter(|c| c.end_ms >= kill_ms && c.end_ms < kill_ms + 10_000.0)
    {
        if c.end_ms - previous > stall.0 {
            stall = (c.end_ms - previous, previous);
        }
        previous = c.end_ms;
    }
    let max_latency_outage = calls
        .iter()
        .filter(|c| c.end_ms >= kill_ms && c.end_ms < kill_ms + 10_000.0)
        .map(|c| c.latency_ms)
        .fold(0.0, f64::max);

    // Catch-up: from PostgreSQL's largest lag after the restart to lag 0.
    // Writes keep coming meanwhile (journaled for PostgreSQL too), so the
    // entries replayed are that lag plus what was committed during the replay.
    let after_restart: Vec<&StatusPoint> =
        samples.iter().filter(|s| s.t_ms >= restart_ms).collect();
    let peak = after_restart
        .iter()
        .copied()
        .fold(None::<&StatusPoint>, |best, s| match best {
            Some(b) if b.pg_lag >= s.pg_lag => Some(b),
            _ => Some(s),
        });
    let catch_up = peak.and_then(|peak| {
        let zero = after_restart
            .iter()
            .find(|s| s.t_ms > peak.t_ms && s.pg_lag == 0)?;
        // The last sample still at the peak: replay started after it.
        let start = after_restart
            .iter()
            .rev()
            .find(|s| s.t_ms <= zero.t_ms && s.pg_lag >= peak.pg_lag)
            .copied()
            .unwrap_or(peak);
        let entries = peak.pg_lag + zero.committed.saturating_sub(start.committed);
        let records = entries * args.batch as u64;
        let secs = ((zero.t_ms - start.t_ms) / 1e3).max(0.02);
        Some(serde_json::json!({
            "lag_at_start": peak.pg_lag,
            "entries": entries,
            "records": records,
            "replay_started_s": start.t_ms / 1e3,
            "level_s": zero.t_ms / 1e3,
            "seconds": secs,
            "entries_per_s": entries as f64 / secs,
            "records_per_s": records as f64 / secs,
            "resolution_ms": 20,
        }))
    });
    let pg_first_probe_ok = points
        .iter()
        .find(|p| p.t_ms >= restart_ms && p.pg_healthy == Some(true))
        .map(|p| p.t_ms);

    let secs = |v: Option<f64>| v.map(|ms| ms / 1e3);
    println!("\n| measure | value |");
    println!("|---|---:|");
    let show = |name: &str, v: Option<f64>| {
        println!(
            "| {name} | {} |",
            v.map_or("not seen".to_owned(), |s| format!("{s:.2} s"))
        );
    };
    show(
        "detection: kill → PostgreSQL breaker open",
        secs(breaker_open),
    );
    show(
        "kill → first answer from the fallback",
        secs(first_fallback),
    );
    show("kill → fallback is the active store", secs(active_fallback));
    show(
        "restart command → first answer from PostgreSQL again (failback)",
        secs(failback.map(|t| t - restart_ms)),
    );
    show(
        "first successful probe of PostgreSQL → failback",
        secs(failback.zip(pg_first_probe_ok).map(|(t, p)| t - p)),
    );
    println!(
        "| failed calls | {failed} ({failed_recalls} recalls) of {} |",
        calls.len()
    );
    println!("| slowest call in the 10 s after the kill | {max_latency_outage:.0} ms |");
    println!(
        "| longest time without any call completing, in the 10 s after the kill | {:.0} ms (from {:.2} s) |",
        stall.0,
        stall.1 / 1e3
    );
    match &catch_up {
        Some(c) => println!(
            "| catch-up: {} journal entries ({} records) replayed into PostgreSQL in {:.1} s | {:.0} entries/s ({:.0} records/s) |",
            c["entries"],
            c["records"],
            c["seconds"].as_f64().unwrap_or(0.0),
            c["entries_per_s"].as_f64().unwrap_or(0.0),
            c["records_per_s"].as_f64().unwrap_or(0.0)
        ),
        None => println!("| catch-up | not completed within the run |"),
    }

    let buckets = buckets(args, calls);
    serde_json::json!({
        "benchmark": "failover",
        "command": "cargo run --release -p vectorgate-bench -- failover",
        "machine": report::machine(),
        "dim": args.dim, "records": args.records, "clients": args.clients,
        "target_calls_per_s": args.rate, "upsert_every": args.upsert_every, "upsert_batch": args.batch,
        "duration_s": args.duration, "bucket_ms": args.bucket_ms,
        "manager": {
            "replication": "async",
            "probe_interval_ms": config.health.probe_interval_ms,
            "probe_timeout_ms": config.health.probe_timeout_ms,
            "breaker": {
                "consecutive_failures": config.breaker.consecutive_failures,
                "open_ms": config.breaker.open_ms,
                "close_after_successes": config.breaker.close_after_successes,
            },
            "retry": {
                "attempts": config.retry.attempts,
                "attempt_timeout_ms": config.retry.attempt_timeout_ms,
                "deadline_ms": config.retry.deadline_ms,
            },
        },
        "events_s": {
            "kill": kill_ms / 1e3,
            "restart_command": restart_ms / 1e3,
            "restart_command_returned": ready_ms / 1e3,
            "postgres_first_probe_ok": secs(pg_first_probe_ok),
            "postgres_breaker_closed": secs(pg_closed),
            "postgres_active_again": secs(pg_active),
            "first_postgres_answer_after_restart": secs(failback),
        },
        "results": {
            "detection_s": secs(breaker_open),
            "first_fallback_answer_s": secs(first_fallback),
            "fallback_active_s": secs(active_fallback),
            "last_postgres_answer_after_kill_s": secs(last_pg_before),
            "failback_after_restart_command_s": secs(failback.map(|t| t - restart_ms)),
            "failback_after_restart_command_returned_s": secs(failback.map(|t| t - ready_ms)),
            "failback_after_first_probe_ok_s": secs(failback.zip(pg_first_probe_ok).map(|(t, p)| t - p)),
            "failed_calls": failed,
            "failed_recalls": failed_recalls,
            "calls": calls.len(),
            "slowest_call_after_kill_ms": max_latency_outage,
            "longest_stall_after_kill_ms": stall.0,
            "longest_stall_from_s": stall.1 / 1e3,
            "catch_up": catch_up,
        },
        "status_changes": points.iter().map(|p| serde_json::json!({
            "t_s": p.t_ms / 1e3, "active": p.active, "postgres_breaker": format!("{:?}", p.pg_breaker),
            "postgres_in_sync": p.pg_in_sync, "postgres_lag": p.pg_lag,
            "postgres_healthy": p.pg_healthy, "committed_seq": p.committed,
        })).collect::<Vec<_>>(),
        "buckets": buckets,
    })
}

fn buckets(args: &Args, calls: &[Call]) -> Vec<serde_json::Value> {
    let width = args.bucket_ms.max(1) as f64;
    let n = (args.duration * 1e3 / width).ceil() as usize;
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    for b in 0..n {
        let (from, to) = (b as f64 * width, (b + 1) as f64 * width);
        let mut served = [0u64; 2];
        let (mut upserts, mut failed) = (0u64, 0u64);
        let mut latencies = Vec::new();
        while i < calls.len() && calls[i].end_ms < to {
            let c = &calls[i];
            if c.end_ms >= from {
                latencies.push(c.latency_ms);
                match (c.ok, c.upsert, c.served_by) {
                    (false, _, _) => failed += 1,
                    (true, true, _) => upserts += 1,
                    (true, false, Some(s)) => served[s] += 1,
                    (true, false, None) => {}
                }
            }
            i += 1;
        }
        latencies.sort_by(f64::total_cmp);
        let p99 = if latencies.is_empty() {
            None
        } else {
            Some(latencies[((latencies.len() - 1) as f64 * 0.99).round() as usize])
        };
        out.push(serde_json::json!({
            "t_s": from / 1e3,
            "recalls_postgres": served[0],
            "recalls_embedded": served[1],
            "upserts_ok": upserts,
            "failed": failed,
            "p99_ms": p99,
        }));
    }
    out
}

fn chart_of(args: &Args, value: &serde_json::Value) -> Timeline {
    let per_s = 1000.0 / args.bucket_ms.max(1) as f64;
    let empty = Vec::new();
    let buckets = value["buckets"].as_array().unwrap_or(&empty);
    let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .map(|b| {
                (
                    b["t_s"].as_f64().unwrap_or(0.0),
                    b[key].as_f64().unwrap_or(0.0) * scale,
                )
            })
            .collect()
    };
    // Paced clients make 100 ms counts alias (15, 16, 15, ...): rates are
    // drawn as a centred moving average over `SMOOTH` buckets.
    let smooth = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        let half = SMOOTH / 2;
        (0..points.len())
            .map(|i| {
                let window = &points[i.saturating_sub(half)..(i + half + 1).min(points.len())];
                let mean = window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64;
                (points[i].0, mean)
            })
            .collect()
    };
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    let red = RGBColor(214, 39, 40);
    let grey = RGBColor(90, 90, 90);
    let events = &value["events_s"];
    let mut markers = vec![
        Marker {
            label: "SIGKILL".into(),
            x: events["kill"].as_f64().unwrap_or(0.0),
            color: red,
        },
        Marker {
            label: "restart command".into(),
            x: events["restart_command"].as_f64().unwrap_or(0.0),
            color: green,
        },
    ];
    if let Some(x) = events["first_postgres_answer_after_restart"].as_f64() {
        markers.push(Marker {
            label: "failback".into(),
            x,
            color: blue,
        });
    }
    let results = &value["results"];
    let title = format!(
        "PostgreSQL SIGKILLed and restarted under load: manager over [postgres, embedded], async journal \
         ({} failed calls of {})",
        results["failed_calls"], results["calls"]
    );
    Timeline {
        title,
        x_label: "seconds".into(),
        x_max: args.duration,
        top_label: format!(
            "calls/s ({} ms moving average)",
            SMOOTH as u64 * args.bucket_ms
        ),
        top: vec![
            Line {
                label: "recalls answered by postgres".into(),
                color: blue,
                points: smooth(series("recalls_postgres", per_s)),
            },
            Line {
                label: "recalls answered by embedded".into(),
                color: orange,
                points: smooth(series("recalls_embedded", per_s)),
            },
            Line {
                label: "upserts acknowledged".into(),
                color: grey,
                points: smooth(series("upserts_ok", per_s)),
            },
            Line {
                label: "failed calls".into(),
                color: red,
                points: smooth(series("failed", per_s)),
            },
        ],
        bottom_label: "p99 latency, ms (log)".into(),
        bottom: vec![Line {
            label: format!("p99 latency per {} ms", args.bucket_ms),
            color: RGBColor(148, 103, 189),
            points: series("p99_ms", 1.0),
        }],
        markers,
    }
}
