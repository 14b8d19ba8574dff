//! What the manager costs over hand-written SQL: the same recall and
//! upsert workload against one PostgreSQL table
//!
//! - **direct**: what a user would write by hand with `sqlx` + `pgvector`:
//!   a pool (16 connections, like the pg store's default), recalls as
//!   `BEGIN; SET LOCAL hnsw.ef_search = ..; SET LOCAL hnsw.iterative_scan =
//!   relaxed_order; SELECT .. WHERE team_id = $2 AND dataset_id = ANY($3)
//!   ORDER BY vector <=> $1 LIMIT $4; COMMIT` and upserts as one `INSERT ..
//!   SELECT FROM UNNEST(..) ON CONFLICT (id) DO UPDATE` per batch — the same
//!   statement shapes (and round trips) as the backend, so the difference
//!   is the layers, not the SQL;
//! - **manager (off)**: `VectorManager` over [PostgreSQL, embedded] without
//!   a journal: validation, routing, breaker bookkeeping, the pg store;
//! - **manager (async)**: the same with the replication journal: every
//!   write is also appended (fsynced) to the journal and copied to the
//!   embedded fallback by its replicator.
//!
//! All three use the same table and data, in interleaved rounds (the order
//! rotates every round); figures are medians over rounds, and each ratio is
//! the median of the per-round ratios to direct. Between rounds the async
//! manager's fallback is brought level, so its replicator does not run
//! during another configuration's round.

use crate::load::{self, PgTable};
use crate::report;
use crate::workload::{Corpus, Query, RoundFigures, Sample, median, run_clients};
use clap::Args as ClapArgs;
use pgvector::Vector;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{
    DynStore, IndexSpec, ManagerConfig, Metric, Record, VectorManager, VectorStore, validate,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_pg::{PgConfig, PgStore};

/// Options of `vectorgate-bench overhead`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: String,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Records preloaded into the table.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Records per upsert (existing ids are overwritten, so the table keeps its size).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Hits per recall (k).
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Datasets each recall names (each ~1% of the records).
    #[arg(long, default_value_t = 2)]
    datasets: usize,
    /// HNSW ef_search for every recall (the index default is 100).
    #[arg(long, default_value_t = 100)]
    ef_search: u32,
    /// Seconds per measured run of one configuration and workload.
    #[arg(long, default_value_t = 5)]
    round_secs: u64,
    /// Measured rounds (each runs every configuration and workload once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of the unmeasured warm-up round (page cache, pools,
    /// prepared statements).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Table to use; a table that already holds this corpus is reused
    /// as is. Default: `vgb_overhead_<pid>`.
    #[arg(long)]
    table: Option<String>,
    /// Keep the table afterwards (to reuse it with --table).
    #[arg(long)]
    keep: bool,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// The hand-written baseline.
struct Direct {
    pool: PgPool,
    settings: String,
    recall: String,
    upsert: String,
}

impl Direct {
    async fn connect(args: &Args, table: &str) -> Result<Direct, String> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&args.pg_url)
            .await
            .map_err(|e| format!("direct pool: {e}"))?;
        Ok(Direct {
            pool,
            settings: format!(
                "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order",
                args.ef_search
            ),
            recall: format!(
                "SELECT id, dataset_id, collection_id, (vector <=> $1)::float8 AS distance \
                 FROM {table} WHERE team_id = $2 AND dataset_id = ANY($3) \
                 ORDER BY vector <=> $1 LIMIT $4"
            ),
            upsert: format!(
                "INSERT INTO {table} \
                 (id, team_id, dataset_id, collection_id, vector, created_at_ms, payload) \
                 SELECT id, team_id, dataset_id, collection_id, vector, created_at_ms, NULL \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::vector[], \
                 $6::int8[]) AS r(id, team_id, dataset_id, collection_id, vector, created_at_ms) \
                 ON CONFLICT (id) DO UPDATE SET team_id = EXCLUDED.team_id, \
                 dataset_id = EXCLUDED.dataset_id, collection_id = EXCLUDED.collection_id, \
                 vector = EXCLUDED.vector, created_at_ms = EXCLUDED.created_at_ms, \
                 payload = EXCLUDED.payload"
            ),
        })
    }

    async fn recall(&self, query: &Query) -> Result<usize, String> {
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        sqlx::raw_sql(AssertSqlSafe(self.settings.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        let rows = sqlx::query(AssertSqlSafe(self.recall.as_str()))
            .bind(Vector::from(query.vector.clone()))
            .bind(&query.team_id)
            .bind(&query.dataset_ids)
            .bind(i64::from(query.limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id").map_err(|e| e.to_string())?;
            let distance: f64 = row.try_get("distance").map_err(|e| e.to_string())?;
            hits.push((id, 1.0 - distance));
        }
        Ok(hits.len())
    }

    async fn upsert(&self, records: &[Record]) -> Result<(), String> {
        let now = validate::now_ms();
        let n = records.len();
        let (mut ids, mut teams, mut datasets, mut collections) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut vectors, mut created) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in records {
            ids.push(r.id.as_str());
            teams.push(r.team_id.as_str());
            datasets.push(r.dataset_id.as_str());
            collections.push(r.collection_id.as_str());
            vectors.push(Vector::from(r.vector.clone()));
            created.push(now);
        }
        sqlx::query(AssertSqlSafe(self.upsert.as_str()))
            .bind(ids)
            .bind(teams)
            .bind(datasets)
            .bind(collections)
            .bind(vectors)
            .bind(created)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// One way of reaching the table.
enum Target {
    Direct(Direct),
    Manager(VectorManager),
}

impl Target {
    async fn recall(&self, query: &Query, ef_search: u32) -> Result<usize, String> {
        match self {
            Target::Direct(direct) => direct.recall(query).await,
            Target::Manager(manager) => {
                let mut recall = query.recall();
                recall.ef_search = Some(ef_search);
                manager
                    .recall(&recall)
                    .await
                    .map(|hits| hits.len())
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn upsert(&self, records: &[Record]) -> Result<(), String> {
        match self {
            Target::Direct(direct) => direct.upsert(records).await,
            Target::Manager(manager) => manager
                .upsert(records)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Waits until every store of a journaled manager applied every write.
    async fn settle(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let Target::Manager(manager) = self else {
            return Ok(Duration::ZERO);
        };
        while manager.status().stores.iter().any(|s| s.lag_entries > 0) {
            if started.elapsed() > Duration::from_secs(300) {
                return Err(format!(
                    "the fallback did not catch up in 300 s: {:#?}",
                    manager.status()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }
}

struct Config {
    name: &'static str,
    target: Arc<Target>,
    recall: Vec<RoundFigures>,
    upsert: Vec<RoundFigures>,
    settle: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Recall,
    Upsert,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Recall => "recall",
            Workload::Upsert => "upsert",
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    let table = args
        .table
        .clone()
        .unwrap_or_else(|| format!("vgb_overhead_{}", std::process::id()));
    let spec = IndexSpec::new(
        u32::try_from(args.dim).map_err(|e| e.to_string())?,
        Metric::Cosine,
    );
    let corpus = Corpus::new(args.dim, args.seed);
    println!(
        "overhead: table {table}, {} records × dim {}, {} clients",
        args.records, args.dim, args.clients
    );
    let PgTable {
        store: loader,
        reused,
        load_secs,
    } = load::prepare_pg(&args.pg_url, &table, &spec, &corpus, args.records).await?;
    let result = measure(&args, &table, spec, &corpus).await;
    if args.keep {
        println!("table {table} kept (reuse it with --table {table})");
    } else {
        loader.drop_table().await.map_err(|e| e.to_string())?;
        println!("table {table} dropped (--keep keeps it)");
    }
    loader.close().await;
    let mut value = result?;
    value["table_reused"] = serde_json::json!(reused);
    value["load_secs"] = serde_json::json!(load_secs);
    let path = report::save("overhead", &value).map_err(|e| e.to_string())?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

async fn measure(
    args: &Args,
    table: &str,
    spec: IndexSpec,
    corpus: &Corpus,
) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut configs = vec![Config {
        name: "direct",
        target: Arc::new(Target::Direct(Direct::connect(args, table).await?)),
        recall: Vec::new(),
        upsert: Vec::new(),
        settle: Vec::new(),
    }];
    for name in ["manager (off)", "manager (async)"] {
        let tag = if name.contains("async") {
            "async"
        } else {
            "off"
        };
        // Each manager has its own pg store (own pool) and fallback.
        let pg = PgStore::connect(PgConfig::new("postgres", &args.pg_url).with_table(table))
            .await
            .map_err(|e| e.to_string())?;
        let embedded = EmbeddedStore::open(EmbeddedConfig::new(
            "embedded",
            dir.path().join(format!("embedded-{tag}.db")),
        ))
        .await
        .map_err(|e| e.to_string())?;
        let config = if tag == "async" {
            ManagerConfig::new(spec).with_journal(dir.path().join("journal.db"))
        } else {
            ManagerConfig::new(spec).without_replication()
        };
        let manager = VectorManager::start(
            config,
            vec![Arc::new(pg) as DynStore, Arc::new(embedded) as DynStore],
        )
        .await
        .map_err(|e| e.to_string())?;
        configs.push(Config {
            name,
            target: Arc::new(Target::Manager(manager)),
            recall: Vec::new(),
            upsert: Vec::new(),
            settle: Vec::new(),
        });
    }

    let queries: Arc<Vec<Query>> =
        Arc::new(corpus.queries(1000, args.records, args.datasets, args.k));
    // Each client overwrites its own stripe of ids (id ≡ client mod
    // clients), so concurrent upserts never lock the same rows in
    // different orders; vectors are computed beforehand.
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

    println!(
        "{} s rounds × {} (+ a {} s warm-up), workloads recall (k {}, {} datasets, ef_search {}) \
         and upsert ({} records), interleaved",
        args.round_secs,
        args.rounds,
        args.warmup_secs,
        args.k,
        args.datasets,
        args.ef_search,
        args.batch
    );
    for round in 0..=args.rounds {
        let warmup = round == 0;
        let secs = if warmup {
            args.warmup_secs
        } else {
            args.round_secs
        };
        let n = configs.len();
        for workload in [Workload::Recall, Workload::Upsert] {
            for slot in 0..n {
                let config = &mut configs[(slot + round) % n];
                let target = config.target.clone();
                let (queries, stripes, batch, ef) =
                    (queries.clone(), stripes.clone(), args.batch, args.ef_search);
                let sample: Sample =
                    run_clients(args.clients, Duration::from_secs(secs), move |client, n| {
                        let target = target.clone();
                        let queries = queries.clone();
                        let stripes = stripes.clone();
                        async move {
                            match workload {
                                Workload::Recall => {
                                    let q = &queries[(client * 131 + n as usize) % queries.len()];
                                    target.recall(q, ef).await.map(|_| 1)
                                }
                                Workload::Upsert => {
                                    let stripe = &stripes[client];
                                    let start = (n as usize * batch) % stripe.len();
                                    let mut rows: Vec<Record> = (0..batch.min(stripe.len()))
                                        .map(|j| stripe[(start + j) % stripe.len()].clone())
                                        .collect();
                                    rows.sort_by(|a, b| a.id.cmp(&b.id));
                                    target.upsert(&rows).await.map(|()| rows.len() as u64)
                                }
                            }
                        }
                    })
                    .await;
                let settle = config.target.settle().await?;
                if sample.errors > 0 {
                    return Err(format!(
                        "{} {}: {} calls failed",
                        config.name,
                        workload.name(),
                        sample.errors
                    ));
                }
                let figures = RoundFigures::of(&sample);
                println!(
                    "  {} {:<16} {:<6} {:>8.1} ops/s  p50 {:>6.2} ms  p99 {:>7.2} ms{}",
                    if warmup {
                        "warm-up".to_owned()
                    } else {
                        format!("round {round}")
                    },
                    config.name,
                    workload.name(),
                    figures.ops_per_s,
                    figures.p50_ms,
                    figures.p99_ms,
                    if settle > Duration::from_millis(50) {
                        format!("  (fallback level after {:.1} s)", settle.as_secs_f64())
                    } else {
                        String::new()
                    }
                );
                if !warmup {
                    match workload {
                        Workload::Recall => config.recall.push(figures),
                        Workload::Upsert => config.upsert.push(figures),
                    }
                    config.settle.push(settle.as_secs_f64());
                }
            }
        }
    }

    println!(
        "\n| workload | path | ops/s | p50 | p99 | ops/s vs direct | p50 vs direct | p99 vs direct |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for workload in [Workload::Recall, Workload::Upsert] {
        let pick = |c: &Config| match workload {
            Workload::Recall => c.recall.clone(),
            Workload::Upsert => c.upsert.clone(),
        };
        let direct = pick(&configs[0]);
        for config in &configs {
            let rounds = pick(config);
            let med =
                |f: fn(&RoundFigures) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
            let ratio = |f: fn(&RoundFigures) -> f64| {
                median(
                    &mut rounds
                        .iter()
                        .zip(&direct)
                        .map(|(a, d)| f(a) / f(d).max(1e-12))
                        .collect::<Vec<_>>(),
                )
            };
            let (ops, p50, p99) = (med(|r| r.ops_per_s), med(|r| r.p50_ms), med(|r| r.p99_ms));
            let (r_ops, r_p50, r_p99) = (
                ratio(|r| r.ops_per_s),
                ratio(|r| r.p50_ms),
                ratio(|r| r.p99_ms),
            );
            println!(
                "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} % | {:.1} % | {:.1} % |",
                workload.name(),
                config.name,
                ops,
                p50,
                p99,
                r_ops * 100.0,
                r_p50 * 100.0,
                r_p99 * 100.0
            );
            rows.push(serde_json::json!({
                "workload": workload.name(),
                "path": config.name,
                "ops_per_s": ops,
                "records_per_s": if workload == Workload::Upsert { ops * args.batch as f64 } else { ops },
                "p50_ms": p50,
                "p99_ms": p99,
                "ops_vs_direct": r_ops,
                "p50_vs_direct": r_p50,
                "p99_vs_direct": r_p99,
                "rounds": rounds.iter().map(|r| serde_json::json!({
                    "ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                })).collect::<Vec<_>>(),
            }));
        }
    }
    let recall_of = |name: &str| {
        rows.iter()
            .find(|r| r["workload"] == "recall" && r["path"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let mut targets = Vec::new();
    for name in ["manager (off)", "manager (async)"] {
        let row = recall_of(name);
        let p50 = row["p50_vs_direct"].as_f64().unwrap_or(f64::NAN);
        let ops = row["ops_vs_direct"].as_f64().unwrap_or(f64::NAN);
        let met = p50 <= 1.05 && ops >= 0.95;
        println!(
            "target {name}: recall p50 {:.1} % of direct (≤ 105 %), throughput {:.1} % (≥ 95 %): {}",
            p50 * 100.0,
            ops * 100.0,
            if met { "met" } else { "NOT met" }
        );
        targets.push(serde_json::json!({ "path": name, "recall_p50_vs_direct": p50, "recall_ops_vs_direct": ops, "met": met }));
    }
    for config in &configs {
        if let Target::Manager(manager) = &*config.target {
            manager.shutdown().await;
        }
    }
    let settle: Vec<serde_json::Value> = configs
        .iter()
        .map(|c| serde_json::json!({ "path": c.name, "settle_secs": c.settle }))
        .collect();
    Ok(serde_json::json!({
        "benchmark": "overhead",
        "command": format!(
            "cargo run --release -p vectorgate-bench -- overhead --records {} --clients {} --rounds {} --round-secs {}",
            args.records, args.clients, args.rounds, args.round_secs
        ),
        "machine": report::machine(),
        "dim": args.dim, "records": args.records, "clients": args.clients,
        "upsert_batch": args.batch, "k": args.k, "datasets_per_query": args.datasets,
        "ef_search": args.ef_search, "round_secs": args.round_secs, "rounds": args.rounds,
        "results": rows,
        "targets": targets,
        "fallback_settle": settle,
    }))
}
