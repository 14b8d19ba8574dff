//! Synthetic data and the timing of concurrent clients.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::Record;

/// A random unit-ish vector.
pub fn vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `n` records with ids `{prefix}-{i}`, spread over 10 teams × 10 datasets.
pub fn records(prefix: &str, n: usize, dim: usize, seed: u64) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| Record {
            id: format!("{prefix}-{i}"),
            team_id: format!("team{}", i % 10),
            dataset_id: format!("ds{}", (i / 10) % 10),
            collection_id: format!("c{}", i % 7),
            vector: vector(&mut rng, dim),
            created_at_ms: 0,
            payload: None,
        })
        .collect()
}

/// Latencies and count of one measured run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Operations completed.
    pub ops: u64,
    /// Items (records) processed.
    pub items: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Every operation's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Operations that failed.
    pub errors: u64,
}

impl Sample {
    /// Items per second.
    pub fn throughput(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }
}

/// Runs `clients` concurrent loops of `op` for `duration`; `op(client, n)`
/// returns how many items it processed.
pub async fn run_clients<F, Fut>(clients: usize, duration: Duration, op: F) -> Sample
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, String>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let mut n = 0;
            while started.elapsed() < duration {
                let t = Instant::now();
                match op(client, n).await {
                    Ok(items) => {
                        sample.ops += 1;
                        sample.items += items;
                        sample.latencies.push(t.elapsed());
                    }
                    Err(error) => {
                        sample.errors += 1;
                        if sample.errors <= 3 {
                            eprintln!("client {client}: {error}");
                        }
                    }
                }
                n += 1;
            }
            sample
        }));
    }
    let mut total = Sample::default();
    for task in tasks {
        if let Ok(sample) = task.await {
            total.ops += sample.ops;
            total.items += sample.items;
            total.errors += sample.errors;
            total.latencies.extend(sample.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort();
    total
}

/// The median of `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        0.0
    } else {
        values[values.len() / 2]
    }
}

/// Number of topic clusters of a [`Corpus`].
const CLUSTERS: usize = 64;
/// Directions each cluster varies along (its intrinsic dimension).
const CLUSTER_RANK: usize = 8;

/// A deterministic, clustered corpus: record `i` is the same vector in every
/// run with the same `dim` and `seed`, so a table loaded once can be reused
/// and exact neighbours can be recomputed without keeping every vector.
///
/// Uniform random vectors are the worst case for HNSW and unlike text
/// embeddings; here each record lies near one of 64 topic centroids, on a
/// low-rank spread around it, plus a little noise. Scopes follow
/// [`records`]: team `i % 10`, dataset `(i / 10) % 10`, collection `i % 7`.
#[derive(Debug, Clone)]
pub struct Corpus {
    dim: usize,
    seed: u64,
    centroids: Vec<Vec<f32>>,
    bases: Vec<Vec<Vec<f32>>>,
}

impl Corpus {
    /// The corpus of this dimension and seed.
    pub fn new(dim: usize, seed: u64) -> Corpus {
        let mut rng = StdRng::seed_from_u64(seed);
        let centroids = (0..CLUSTERS).map(|_| vector(&mut rng, dim)).collect();
        let bases = (0..CLUSTERS)
            .map(|_| {
                (0..CLUSTER_RANK)
                    .map(|_| vector(&mut rng, dim).iter().map(|x| x * 0.7).collect())
                    .collect()
            })
            .collect();
        Corpus {
            dim,
            seed,
            centroids,
            bases,
        }
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The id of record `i` (zero-padded, so byte order is index order).
    pub fn id(i: usize) -> String {
        format!("r-{i:08}")
    }

    /// Team of record `i`.
    pub fn team(i: usize) -> String {
        format!("team{}", i % 10)
    }

    /// Dataset of record `i`.
    pub fn dataset(i: usize) -> String {
        format!("ds{}", (i / 10) % 10)
    }

    fn sample(&self, rng: &mut StdRng, cluster: usize) -> Vec<f32> {
        let mut v = self.centroids[cluster].clone();
        for direction in &self.bases[cluster] {
            let a = rng.random_range(-1.0f32..1.0);
            for (x, d) in v.iter_mut().zip(direction) {
                *x += a * d;
            }
        }
        for x in &mut v {
            *x += rng.random_range(-0.15f32..0.15);
        }
        v
    }

    /// The vector of record `i`.
    pub fn vector(&self, i: usize) -> Vec<f32> {
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cluster = rng.random_range(0..CLUSTERS);
        self.sample(&mut rng, cluster)
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> Record {
        Record {
            id: Corpus::id(i),
            team_id: Corpus::team(i),
            dataset_id: Corpus::dataset(i),
            collection_id: format!("c{}", i % 7),
            vector: self.vector(i),
            created_at_ms: 0,
            payload: None,
        }
    }

    /// Records `range`.
    pub fn records(&self, range: std::ops::Range<usize>) -> Vec<Record> {
        range.map(|i| self.record(i)).collect()
    }

    /// `n` recall queries over a corpus of `records` records: each names
    /// the team of a random record and `datasets` datasets (that record's
    /// first), with a new vector from the same topic as that record.
    pub fn queries(&self, n: usize, records: usize, datasets: usize, limit: u32) -> Vec<Query> {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(1));
        (0..n)
            .map(|_| {
                let i = rng.random_range(0..records.max(1));
                let mut pick = StdRng::seed_from_u64(
                    self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let cluster = pick.random_range(0..CLUSTERS);
                let first = (i / 10) % 10;
                let dataset_ids = (0..datasets.clamp(1, 10))
                    .map(|k| format!("ds{}", (first + k) % 10))
                    .collect();
                Query {
                    team_id: Corpus::team(i),
                    dataset_ids,
                    vector: self.sample(&mut rng, cluster),
                    limit,
                }
            })
            .collect()
    }

    /// Indexes of the records a query's scope holds, among `0..records`.
    pub fn scope(query: &Query, records: usize) -> impl Iterator<Item = usize> + '_ {
        let team: usize = query
            .team_id
            .strip_prefix("team")
            .and_then(|t| t.parse().ok())
            .unwrap_or(usize::MAX);
        (0..records).filter(move |i| {
            i % 10 == team && query.dataset_ids.iter().any(|d| *d == Corpus::dataset(*i))
        })
    }
}

/// One recall, in the shape both the direct SQL and the stores take.
#[derive(Debug, Clone)]
pub struct Query {
    /// The tenant.
    pub team_id: String,
    /// Datasets searched.
    pub dataset_ids: Vec<String>,
    /// Query vector.
    pub vector: Vec<f32>,
    /// k.
    pub limit: u32,
}

impl Query {
    /// As a [`vectorgate::RecallQuery`].
    pub fn recall(&self) -> vectorgate::RecallQuery {
        vectorgate::RecallQuery {
            team_id: self.team_id.clone(),
            dataset_ids: self.dataset_ids.clone(),
            vector: self.vector.clone(),
            limit: self.limit,
            ..Default::default()
        }
    }
}

/// Per-round figures of one configuration: throughput and latency quantiles.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundFigures {
    /// Operations per second.
    pub ops_per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

impl RoundFigures {
    /// The figures of a sample.
    pub fn of(sample: &Sample) -> RoundFigures {
        RoundFigures {
            ops_per_s: sample.ops as f64 / sample.elapsed.as_secs_f64().max(1e-9),
            p50_ms: sample.quantile(0.5).as_secs_f64() * 1e3,
            p99_ms: sample.quantile(0.99).as_secs_f64() * 1e3,
        }
    }
}
