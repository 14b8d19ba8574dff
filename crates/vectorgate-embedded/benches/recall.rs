//! Recall latency of the embedded store against a plain scalar loop.
//!
//! `cargo bench -p vectorgate-embedded --bench recall`
//!
//! 100k random vectors of dim 768 (cosine) over 10 teams x 10 datasets
//! (1000 per dataset). For each query the store's `recall` (the full public
//! path: validation, `spawn_blocking`, bucket lookup, SIMD kernel, top-k)
//! and a scalar f32 loop over the same rows are timed back to back, so both
//! see the same machine state. Reported: p50/p99 per filter shape and the
//! scalar/store ratio. Takes about a minute on 2 cores.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::error::Error;
use std::time::{Duration, Instant};
use vectorgate::{IndexSpec, Metric, RecallQuery, Record, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};

const DIM: usize = 768;
const TEAMS: usize = 10;
const DATASETS: usize = 10;
const PER_DATASET: usize = 1000;
const QUERIES: usize = 300;
const K: usize = 10;

/// The rows of one (team, dataset), as a naive implementation would keep them.
struct Plain {
    ids: Vec<String>,
    vectors: Vec<f32>,
}

#[derive(PartialEq)]
struct Scored(f32, usize, usize);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    // Min-heap on score: the worst kept candidate on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// The baseline: one scalar f32 loop per row (dot product and the row's
/// norm; the query norm once), the same top-k heap. Returns the best id.
fn scalar_recall(data: &[Plain], datasets: &[usize], query: &[f32]) -> Option<String> {
    let mut qq = 0.0_f32;
    for x in query {
        qq += x * x;
    }
    let qn = qq.sqrt();
    let mut heap = BinaryHeap::with_capacity(K + 1);
    for &d in datasets {
        let plain = &data[d];
        for (row, v) in plain.vectors.chunks_exact(DIM).enumerate() {
            let (mut dot, mut vv) = (0.0_f32, 0.0_f32);
            for i in 0..DIM {
                dot += query[i] * v[i];
                vv += v[i] * v[i];
            }
            let score = dot / (qn * vv.sqrt());
            if heap.len() < K {
                heap.push(Scored(score, d, row));
            } else if heap.peek().is_some_and(|w| score > w.0) {
                heap.pop();
                heap.push(Scored(score, d, row));
            }
        }
    }
    let best = heap.into_sorted_vec().into_iter().next()?;
    Some(data[best.1].ids[best.2].clone())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let spec = IndexSpec::new(DIM as u32, Metric::Cosine);
    let mut rng = StdRng::seed_from_u64(7);

    // Data: bucket b = team * DATASETS + dataset.
    let started = Instant::now();
    let mut plain: Vec<Plain> = Vec::with_capacity(TEAMS * DATASETS);
    for t in 0..TEAMS {
        for d in 0..DATASETS {
            let ids = (0..PER_DATASET).map(|i| format!("t{t}-d{d}-{i}")).collect();
            let vectors = (0..PER_DATASET * DIM)
                .map(|_| rng.random_range(-1.0_f32..1.0))
                .collect();
            plain.push(Plain { ids, vectors });
        }
    }
    println!(
        "generated {} vectors of dim {DIM} in {:.1} s",
        TEAMS * DATASETS * PER_DATASET,
        started.elapsed().as_secs_f64()
    );

    let store = runtime.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new("bench", &path)).await?;
        store.ensure_schema(&spec).await?;
        let started = Instant::now();
        for (b, p) in plain.iter().enumerate() {
            let (t, d) = (b / DATASETS, b % DATASETS);
            let records: Vec<Record> = p
                .ids
                .iter()
                .zip(p.vectors.chunks_exact(DIM))
                .enumerate()
                .map(|(i, (id, v))| Record {
                    id: id.clone(),
                    team_id: format!("t{t}"),
                    dataset_id: format!("d{d}"),
                    collection_id: format!("c{}", i % 20),
                    vector: v.to_vec(),
                    created_at_ms: 1,
                    payload: None,
                })
                .collect();
            store.upsert(&records).await?;
        }
        println!(
            "upserted in batches of {PER_DATASET} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        drop(store);
        // Reopen: what a restart costs (the index is rebuilt from SQLite).
        let started = Instant::now();
        let store = EmbeddedStore::open(EmbeddedConfig::new("bench", &path)).await?;
        store.ensure_schema(&spec).await?;
        println!(
            "reopened and loaded the index in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok::<_, vectorgate::Error>(store)
    })?;

    println!(
        "\n{QUERIES} queries per row, k = {K}, cosine; store = EmbeddedStore::recall end to end\n"
    );
    println!(
        "| filter | rows scored | store p50 | store p99 | scalar p50 | scalar p99 | speed-up (p50) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for datasets_per_query in [1, 10] {
        let mut store_times = Vec::with_capacity(QUERIES);
        let mut scalar_times = Vec::with_capacity(QUERIES);
        let mut agree = 0;
        for q in 0..QUERIES {
            let team = q % TEAMS;
            let first = (q / TEAMS) % DATASETS;
            let datasets: Vec<usize> = (0..datasets_per_query)
                .map(|i| (first + i) % DATASETS)
                .collect();
            let vector: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0_f32..1.0)).collect();
            let query = RecallQuery {
                team_id: format!("t{team}"),
                dataset_ids: datasets.iter().map(|d| format!("d{d}")).collect(),
                vector: vector.clone(),
                limit: K as u32,
                ..Default::default()
            };
            let buckets: Vec<usize> = datasets.iter().map(|d| team * DATASETS + d).collect();

            // Alternate which goes first so neither always gets a warm cache.
            let run_store = || -> Result<(Duration, Option<String>), vectorgate::Error> {
                let started = Instant::now();
                let hits = runtime.block_on(store.recall(&query))?;
                Ok((started.elapsed(), hits.into_iter().next().map(|h| h.id)))
            };
            let run_scalar = || {
                let started = Instant::now();
                let best = std::hint::black_box(scalar_recall(&plain, &buckets, &vector));
                (started.elapsed(), best)
            };
            let ((st, sbest), (pt, pbest)) = if q % 2 == 0 {
                let s = run_store()?;
                (s, run_scalar())
            } else {
                let p = run_scalar();
                (run_store()?, p)
            };
            store_times.push(st);
            scalar_times.push(pt);
            agree += usize::from(sbest == pbest);
        }
        store_times.sort();
        scalar_times.sort();
        let filter = if datasets_per_query == 1 {
            "team + 1 dataset".to_string()
        } else {
            format!("team + {datasets_per_query} datasets")
        };
        println!(
            "| {filter} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.1}x |",
            datasets_per_query * PER_DATASET,
            ms(percentile(&store_times, 0.5)),
            ms(percentile(&store_times, 0.99)),
            ms(percentile(&scalar_times, 0.5)),
            ms(percentile(&scalar_times, 0.99)),
            ms(percentile(&scalar_times, 0.5)) / ms(percentile(&store_times, 0.5)),
        );
        if agree != QUERIES {
            println!(
                "  note: top-1 differed from the scalar loop in {} queries",
                QUERIES - agree
            );
        }
    }

    // The fixed cost of the public path (validation, spawn_blocking, an
    // empty bucket lookup), to read the figures above against.
    let mut empty = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let query = RecallQuery {
            team_id: "nobody".into(),
            dataset_ids: vec!["d0".into()],
            vector: (0..DIM).map(|_| rng.random_range(-1.0_f32..1.0)).collect(),
            limit: K as u32,
            ..Default::default()
        };
        let started = Instant::now();
        runtime.block_on(store.recall(&query))?;
        empty.push(started.elapsed());
    }
    empty.sort();
    println!(
        "\nfixed cost of a recall (team without data): p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&empty, 0.5)),
        ms(percentile(&empty, 0.99))
    );
    Ok(())
}
