//! A manager over two embedded stores. Faults are injected into the primary
//! (hard errors, then a hang, then recovery) while a client keeps recalling;
//! no request fails, and the status is printed before, during and after.
//!
//! `cargo run --release --example failover`

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{
    DynStore, ErrorKind, IndexSpec, ManagerConfig, ManagerStatus, Metric, RecallQuery,
    VectorManager, VectorStore,
};
use vectorgate_embedded::{EmbeddedConfig, EmbeddedStore};
use vectorgate_examples::{random_records, random_vector};
use vectorgate_testkit::fault::{Fault, FaultyStore};

const DIM: usize = 64;

fn print_status(label: &str, status: &ManagerStatus) {
    println!("\n== {label}: active store {:?}", status.active);
    println!(
        "   {:<9} {:<9} {:<10} {:<8} {:<6} {:>12}  last probe error",
        "store", "kind", "breaker", "healthy", "fails", "probe"
    );
    for s in &status.stores {
        println!(
            "   {:<9} {:<9} {:<10} {:<8} {:<6} {:>12}  {}",
            s.name,
            s.kind,
            s.breaker.as_str(),
            s.healthy.map_or("?", |h| if h { "yes" } else { "no" }),
            s.consecutive_failures,
            s.last_probe_latency
                .map_or("-".to_owned(), |l| format!("{l:?}")),
            s.last_probe_error.as_deref().unwrap_or("")
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("vectorgate=info")
        .init();
    let dir = tempfile::tempdir()?;
    let spec = IndexSpec::new(DIM as u32, Metric::Cosine);
    let mut rng = StdRng::seed_from_u64(1);
    let records = random_records(&mut rng, 2000, DIM, 2, 2);

    let mut wrapped = Vec::new();
    for name in ["primary", "fallback"] {
        let store = EmbeddedStore::open(EmbeddedConfig::new(
            name,
            dir.path().join(format!("{name}.db")),
        ))
        .await?;
        store.ensure_schema(&spec).await?;
        // Both stores start with the same data (keeping them in sync while
        // the service runs is the replication journal's job).
        for batch in records.chunks(1000) {
            store.upsert(batch).await?;
        }
        wrapped.push(FaultyStore::wrap(Arc::new(store)));
    }
    let primary = wrapped[0].clone();
    let mut config = ManagerConfig::new(spec).with_journal(dir.path().join("journal.db"));
    config.health.probe_interval_ms = 500;
    config.breaker.open_ms = 2000;
    let manager = Arc::new(
        VectorManager::start(
            config,
            wrapped.iter().map(|s| s.clone() as DynStore).collect(),
        )
        .await?,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    print_status("before", &manager.status());

    // A client recalling every 10 ms for the whole run.
    let client = {
        let manager = manager.clone();
        let vector = random_vector(&mut rng, DIM);
        tokio::spawn(async move {
            let query = RecallQuery {
                team_id: "team-0".into(),
                dataset_ids: vec!["ds-0".into(), "ds-1".into()],
                vector,
                limit: 10,
                ..Default::default()
            };
            let (mut ok, mut failed) = (0u32, 0u32);
            let mut served = std::collections::BTreeMap::<String, u32>::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(12) {
                match manager.recall_routed(&query).await {
                    Ok(routed) => {
                        ok += 1;
                        *served.entry(routed.served_by).or_default() += 1;
                    }
                    Err(error) => {
                        failed += 1;
                        eprintln!("request failed: {error}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed, served)
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("\n>> primary starts failing every call (Unavailable)");
    primary.set(Fault::Fail(ErrorKind::Unavailable));
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_status("during: primary failing", &manager.status());

    println!("\n>> primary hangs instead (no answer at all)");
    primary.set(Fault::Hang);
    tokio::time::sleep(Duration::from_secs(3)).await;
    print_status("during: primary hung", &manager.status());

    println!("\n>> primary recovers");
    primary.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(5)).await;
    print_status("after recovery", &manager.status());

    let (ok, failed, served) = client.await?;
    println!("\nclient: {ok} requests answered, {failed} failed; served by {served:?}");
    manager.shutdown().await;
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}
