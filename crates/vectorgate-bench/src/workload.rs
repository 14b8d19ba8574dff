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
