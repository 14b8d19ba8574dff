//! Opens the embedded store, inserts a few thousand random vectors, recalls,
//! and prints the hits and how long each step took.
//!
//! `cargo run --release --example quickstart`

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::time::Instant;
use vectorgate::{IndexSpec, Metric, RecallQuery, VectorStore};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_examples::{random_records, random_vector};

const DIM: usize = 768;
const RECORDS: usize = 5000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quickstart.db");
    let spec = IndexSpec::new(DIM as u32, Metric::Cosine);

    let started = Instant::now();
    let store = EmbeddedStore::open(EmbeddedConfig::new("quickstart", &path)).await?;
    store.ensure_schema(&spec).await?;
    println!("opened {} in {:?}", path.display(), started.elapsed());

    let mut rng = StdRng::seed_from_u64(7);
    let records = random_records(&mut rng, RECORDS, DIM, 4, 5);
    let started = Instant::now();
    for batch in records.chunks(1000) {
        store.upsert(batch).await?;
    }
    let took = started.elapsed();
    println!(
        "inserted {RECORDS} vectors of dim {DIM} in {took:?} ({:.0} records/s, durable on return)",
        RECORDS as f64 / took.as_secs_f64()
    );

    let query = RecallQuery {
        team_id: "team-0".into(),
        dataset_ids: vec!["ds-0".into(), "ds-1".into()],
        vector: random_vector(&mut rng, DIM),
        limit: 5,
        ..Default::default()
    };
    let mut timings = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        hits = store.recall(&query).await?;
        timings.push(started.elapsed());
    }
    timings.sort();
    println!(
        "recall (team + 2 datasets, top 5): p50 {:?}, p99 {:?} over {} queries",
        timings[timings.len() / 2],
        timings[timings.len() * 99 / 100],
        timings.len()
    );
    for hit in &hits {
        println!(
            "  {:<10} dataset {:<5} collection {:<6} score {:.4}",
            hit.id, hit.dataset_id, hit.collection_id, hit.score
        );
    }
    let count = store.count(&Default::default()).await?;
    println!("{count} records stored");
    Ok(())
}
