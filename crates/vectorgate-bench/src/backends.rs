//! The backends side by side on the same data: recall QPS (concurrent
//! clients, interleaved rounds) and recall@k against the exact neighbours,
//! computed here by brute force over each query's scope (team + datasets).
//!
//! Every backend is one entry of [`open`]: embedded always; PostgreSQL,
//! OceanBase and Milvus when their URL is set (`--pg-url`/
//! `VECTORGATE_TEST_PG_URL`, `--oceanbase-url`/`VECTORGATE_TEST_OCEANBASE_URL`,
//! `--milvus-url`/`VECTORGATE_TEST_MILVUS_URL`). A new backend = one more
//! arm there returning its store and how to clean it up.

use crate::load;
use crate::report;
use crate::workload::{Corpus, Query, RoundFigures, median, run_clients};
use clap::Args as ClapArgs;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{DynStore, IndexSpec, Metric, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_milvus::{MilvusConfig, MilvusStore};
use vectorgate_oceanbase::{OceanBaseConfig, OceanBaseStore};
use vectorgate_pg::PgStore;

/// Options of `vectorgate-bench backends`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// PostgreSQL URL; PostgreSQL is skipped without one.
    #[arg(long, env = "VECTORGATE_TEST_PG_URL")]
    pg_url: Option<String>,
    /// OceanBase (MySQL mode) URL; skipped without one.
    #[arg(long, env = "VECTORGATE_TEST_OCEANBASE_URL")]
    oceanbase_url: Option<String>,
    /// Milvus URL; skipped without one.
    #[arg(long, env = "VECTORGATE_TEST_MILVUS_URL")]
    milvus_url: Option<String>,
    /// Only these backends (comma-separated: embedded,postgres,oceanbase,milvus).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Vector dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Records loaded into every backend.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Distinct queries (recall@k is averaged over them).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// k.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Datasets each query names (each holds ~1% of the records).
    #[arg(long, default_value_t = 2)]
    datasets: usize,
    /// Concurrent clients for the QPS rounds.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds per measured round of one backend.
    #[arg(long, default_value_t = 3)]
    round_secs: u64,
    /// Measured rounds (interleaved across backends).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// What to remove after the run.
enum Cleanup {
    Nothing,
    Postgres(PgStore),
    OceanBase(Arc<OceanBaseStore>),
    Milvus(MilvusStore),
}

struct Backend {
    name: &'static str,
    store: DynStore,
    cleanup: Cleanup,
    load_secs: f64,
    recall_at_k: f64,
    /// Hits returned per query, on average (k when the scope is large enough).
    mean_hits: f64,
    rounds: Vec<RoundFigures>,
}

fn wanted(args: &Args, name: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| o == name)
}

/// Opens and loads every configured backend. Each is independent: one that
/// fails to open or load is reported and left out.
async fn open(
    args: &Args,
    spec: &IndexSpec,
    corpus: &Corpus,
    dir: &std::path::Path,
) -> Vec<Backend> {
    let tag = std::process::id();
    let mut backends = Vec::new();
    for name in ["embedded", "postgres", "oceanbase", "milvus"] {
        if !wanted(args, name) {
            continue;
        }
        let started = Instant::now();
        let opened: Result<Option<(DynStore, Cleanup)>, String> = match name {
            "embedded" => {
                async {
                    let store =
                        EmbeddedStore::open(EmbeddedConfig::new(name, dir.join("embedded.db")))
                            .await
                            .map_err(|e| e.to_string())?;
                    store.ensure_schema(spec).await.map_err(|e| e.to_string())?;
                    let store: DynStore = Arc::new(store);
                    load::load_store(&store, corpus, args.records, 1).await?;
                    Ok(Some((store, Cleanup::Nothing)))
                }
                .await
            }
            "postgres" => match &args.pg_url {
                None => Ok(None),
                Some(url) => {
                    async {
                        let table = format!("vgb_backends_{tag}");
                        let pg = load::prepare_pg(url, &table, spec, corpus, args.records).await?;
                        Ok(Some((
                            Arc::new(pg.store.clone()) as DynStore,
                            Cleanup::Postgres(pg.store),
                        )))
                    }
                    .await
                }
            },
            "oceanbase" => match &args.oceanbase_url {
                None => Ok(None),
                Some(url) => {
                    async {
                        let config = OceanBaseConfig::new(name, url)
                            .with_table(format!("vgb_backends_{tag}"));
                        let store = Arc::new(
                            OceanBaseStore::connect(config)
                                .await
                                .map_err(|e| e.to_string())?,
                        );
                        store.ensure_schema(spec).await.map_err(|e| e.to_string())?;
                        let dynamic: DynStore = store.clone();
                        load::load_store(&dynamic, corpus, args.records, 2).await?;
                        Ok(Some((dynamic, Cleanup::OceanBase(store))))
                    }
                    .await
                }
            },
            "milvus" => match &args.milvus_url {
                None => Ok(None),
                Some(url) => {
                    async {
                        let config = MilvusConfig::new(name, url, format!("vgb_backends_{tag}"));
                        let store = MilvusStore::connect(config).map_err(|e| e.to_string())?;
                        store.ensure_schema(spec).await.map_err(|e| e.to_string())?;
                        let dynamic: DynStore = Arc::new(store.clone());
                        load::load_store(&dynamic, corpus, args.records, 2).await?;
                        Ok(Some((dynamic, Cleanup::Milvus(store))))
                    }
                    .await
                }
            },
            _ => Ok(None),
        };
        match opened {
            Ok(Some((store, cleanup))) => backends.push(Backend {
                name,
                store,
                cleanup,
                load_secs: started.elapsed().as_secs_f64(),
                recall_at_k: 0.0,
                mean_hits: 0.0,
                rounds: Vec::new(),
            }),
            Ok(None) => println!("{name}: no URL given, skipped"),
            Err(e) => println!("{name}: left out: {e}"),
        }
    }
    backends
}

async fn clean(backend: &Backend) -> Result<(), String> {
    match &backend.cleanup {
        Cleanup::Nothing => Ok(()),
        Cleanup::Postgres(store) => {
            let dropped = store.drop_table().await;
            store.close().await;
            dropped.map_err(|e| e.to_string())
        }
        Cleanup::OceanBase(store) => {
            let dropped = store.drop_table().await;
            store.close().await;
            dropped.map_err(|e| e.to_string())
        }
        Cleanup::Milvus(store) => store.drop_collection().await.map_err(|e| e.to_string()),
    }
}

/// The exact top `k` ids of `query` among records `0..records`.
fn exact(vectors: &[Vec<f32>], query: &Query, records: usize) -> Vec<String> {
    let mut scored: Vec<(f64, usize)> = Corpus::scope(query, records)
        .map(|i| {
            (
                Metric::Cosine.reference_score(&query.vector, &vectors[i]),
                i,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(query.limit as usize)
        .map(|(_, i)| Corpus::id(i))
        .collect()
}

pub async fn run(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = IndexSpec::new(
        u32::try_from(args.dim).map_err(|e| e.to_string())?,
        Metric::Cosine,
    );
    let corpus = Corpus::new(args.dim, args.seed);
    println!(
        "backends: {} records × dim {}, {} queries (k {}, team + {} datasets), {} clients",
        args.records, args.dim, args.queries, args.k, args.datasets, args.clients
    );
    let mut backends = open(&args, &spec, &corpus, dir.path()).await;
    let result = measure(&args, &corpus, &mut backends).await;
    for backend in &backends {
        if let Err(e) = clean(backend).await {
            eprintln!("warning: cleaning up {}: {e}", backend.name);
        }
    }
    let value = result?;
    let path = report::save("backends", &value).map_err(|e| e.to_string())?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

async fn measure(
    args: &Args,
    corpus: &Corpus,
    backends: &mut [Backend],
) -> Result<serde_json::Value, String> {
    if backends.is_empty() {
        return Err("no backend to measure".into());
    }
    let queries: Arc<Vec<Query>> =
        Arc::new(corpus.queries(args.queries, args.records, args.datasets, args.k));
    let vectors: Vec<Vec<f32>> = (0..args.records).map(|i| corpus.vector(i)).collect();
    let truth: Vec<HashSet<String>> = queries
        .iter()
        .map(|q| exact(&vectors, q, args.records).into_iter().collect())
        .collect();
    drop(vectors);

    for backend in backends.iter_mut() {
        let mut found = 0usize;
        let mut wanted = 0usize;
        let mut returned = 0usize;
        for (query, truth) in queries.iter().zip(&truth) {
            let hits = backend
                .store
                .recall(&query.recall())
                .await
                .map_err(|e| format!("{}: {e}", backend.name))?;
            returned += hits.len();
            found += hits.iter().filter(|h| truth.contains(&h.id)).count();
            wanted += truth.len();
        }
        backend.recall_at_k = found as f64 / wanted.max(1) as f64;
        backend.mean_hits = returned as f64 / queries.len().max(1) as f64;
        println!(
            "  {:<10} recall@{} {:.3} ({:.1} hits per query)",
            backend.name, args.k, backend.recall_at_k, backend.mean_hits
        );
    }

    for round in 0..args.rounds {
        let n = backends.len();
        for slot in 0..n {
            let backend = &mut backends[(slot + round) % n];
            let (store, queries) = (backend.store.clone(), queries.clone());
            let sample = run_clients(
                args.clients,
                Duration::from_secs(args.round_secs),
                move |client, n| {
                    let (store, queries) = (store.clone(), queries.clone());
                    async move {
                        let q = &queries[(client * 37 + n as usize) % queries.len()];
                        store
                            .recall(&q.recall())
                            .await
                            .map(|_| 1)
                            .map_err(|e| e.to_string())
                    }
                },
            )
            .await;
            if sample.errors > 0 {
                return Err(format!(
                    "{}: {} recalls failed",
                    backend.name, sample.errors
                ));
            }
            let figures = RoundFigures::of(&sample);
            println!(
                "  round {round} {:<10} {:>8.1} QPS  p50 {:>6.2} ms  p99 {:>7.2} ms",
                backend.name, figures.ops_per_s, figures.p50_ms, figures.p99_ms
            );
            backend.rounds.push(figures);
        }
    }

    println!(
        "\n| backend | recall@{} | hits/query | QPS ({} clients) | p50 | p99 | load + index |",
        args.k, args.clients
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for backend in backends.iter() {
        let med = |f: fn(&RoundFigures) -> f64| {
            median(&mut backend.rounds.iter().map(f).collect::<Vec<_>>())
        };
        let (qps, p50, p99) = (med(|r| r.ops_per_s), med(|r| r.p50_ms), med(|r| r.p99_ms));
        println!(
            "| {} | {:.3} | {:.1} | {:.0} | {:.2} ms | {:.2} ms | {:.0} s |",
            backend.name, backend.recall_at_k, backend.mean_hits, qps, p50, p99, backend.load_secs
        );
        rows.push(serde_json::json!({
            "backend": backend.name,
            "kind": backend.store.kind(),
            "recall_at_k": backend.recall_at_k,
            "mean_hits": backend.mean_hits,
            "qps": qps, "p50_ms": p50, "p99_ms": p99,
            "load_secs": backend.load_secs,
        }));
    }
    Ok(serde_json::json!({
        "benchmark": "backends",
        "command": format!(
            "cargo run --release -p vectorgate-bench -- backends --records {} --queries {}",
            args.records, args.queries
        ),
        "machine": report::machine(),
        "dim": args.dim, "records": args.records, "queries": args.queries, "k": args.k,
        "datasets_per_query": args.datasets, "clients": args.clients,
        "round_secs": args.round_secs, "rounds": args.rounds,
        "ef_search": "index default (100)",
        "results": rows,
    }))
}
