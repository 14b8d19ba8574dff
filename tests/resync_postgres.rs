//! `resync` between two real backends: 100k records from PostgreSQL into
//! the embedded store, interrupted midway and resumed, verified per team.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;
use vectorgate::resync::{ResyncOptions, copy_store};
use vectorgate::{IndexSpec, Metric, Record, VectorStore};
use vectorgate_integration::{embedded, service_url};
use vectorgate_pg::{PgConfig, PgStore};

const RECORDS: usize = 100_000;
const TEAMS: usize = 7;
const DIM: usize = 8;

fn spec() -> IndexSpec {
    IndexSpec::new(DIM as u32, Metric::L2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_copies_100k_records_from_postgres_and_resumes_after_an_interruption() {
    let Some(url) = service_url("VECTORGATE_TEST_PG_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = format!("vgt_resync_{}", std::process::id());
    let pg = Arc::new(
        PgStore::connect(PgConfig::new("postgres", url).with_table(&table))
            .await
            .unwrap(),
    );
    pg.ensure_schema(&spec()).await.unwrap();
    let started = Instant::now();
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            id: format!("doc-{i:07}"),
            team_id: format!("team{}", i % TEAMS),
            dataset_id: format!("ds{}", i % 3),
            collection_id: format!("c{}", i % 11),
            vector: (0..DIM)
                .map(|d| ((i + d * 13) % 101) as f32 / 10.0)
                .collect(),
            created_at_ms: 1_700_000_000_000 + i as i64,
            payload: (i % 10 == 0)
                .then(|| serde_json::json!({ "n": i, "text": format!("chunk {i}") })),
        })
        .collect();
    for chunk in records.chunks(1000) {
        pg.upsert(chunk).await.unwrap();
    }
    eprintln!(
        "loaded {RECORDS} records into PostgreSQL in {:?}",
        started.elapsed()
    );

    let target = embedded(dir.path(), "embedded", &spec()).await;
    let options = ResyncOptions {
        checkpoint: Some(dir.path().join("resync.json")),
        ..Default::default()
    };

    // Interrupted: the copy task is aborted after 30k records.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = tokio::spawn({
        let (pg, target, options) = (pg.clone(), target.clone(), options.clone());
        async move {
            copy_store(pg.as_ref(), target.as_ref(), &options, |p| {
                let _ = tx.send(p.copied);
            })
            .await
        }
    });
    while let Some(copied) = rx.recv().await {
        if copied >= 30_000 {
            first.abort();
            break;
        }
    }
    assert!(
        first.await.unwrap_err().is_cancelled(),
        "the first copy was interrupted"
    );

    // Resumed: copies only the rest.
    let started = Instant::now();
    let report = copy_store(pg.as_ref(), target.as_ref(), &options, |_| {})
        .await
        .unwrap();
    eprintln!(
        "resumed copy of {} records took {:?}",
        report.copied_now,
        started.elapsed()
    );
    assert_eq!(report.copied, RECORDS as u64);
    assert!(
        report.copied_now <= (RECORDS - 30_000) as u64,
        "resumed, not restarted: {}",
        report.copied_now
    );
    assert_eq!(report.teams.len(), TEAMS);
    assert!(
        report.mismatches().is_empty(),
        "per-team counts differ: {:?}",
        report.mismatches()
    );
    for team in &report.teams {
        let expected = records.iter().filter(|r| r.team_id == team.team_id).count() as u64;
        assert_eq!(
            (team.source, team.target),
            (expected, expected),
            "{}",
            team.team_id
        );
    }
    assert_eq!(
        target.count(&Default::default()).await.unwrap(),
        RECORDS as u64
    );
    pg.drop_table().await.unwrap();
}
