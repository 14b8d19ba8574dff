//! Loading a [`Corpus`] into stores: PostgreSQL tables (reusable across
//! runs) and any other store.
//!
//! PostgreSQL: rows go in through the pg store's own batched upsert (1000
//! records per `INSERT ... SELECT FROM UNNEST`), with the HNSW index dropped
//! meanwhile and built once at the end — pgvector's advice for bulk loads:
//! one build is many times faster than 100k incremental inserts into the
//! graph. The index is rebuilt with exactly the DDL the store itself issues
//! (same name, operator class, `m`, `ef_construction`), so the store's
//! `ensure_schema` afterwards finds it as its own.

use crate::workload::Corpus;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vectorgate::{CountScope, DynStore, IndexSpec, ScanRequest, VectorStore};
use vectorgate_pg::{PgConfig, PgStore};

/// Records per upsert while loading (the library's maximum).
pub const LOAD_BATCH: usize = 1000;

/// Longest table name the bench accepts: `{table}_hnsw` must stay within
/// PostgreSQL's 63-byte identifiers for the store's index name to be the
/// plain one.
const MAX_TABLE: usize = 50;

/// A PostgreSQL table holding `records` records of the corpus, and whether
/// it was there already.
#[derive(Debug)]
pub struct PgTable {
    /// A store on the table (schema ensured).
    pub store: PgStore,
    /// True when the table already held the corpus and nothing was loaded.
    pub reused: bool,
    /// Seconds spent loading rows and building the index (0 when reused).
    pub load_secs: f64,
}

/// Checks a table name given on the command line.
pub fn check_table(table: &str) -> Result<(), String> {
    vectorgate_pg::config::check_table_name(table).map_err(|e| e.to_string())?;
    if table.len() > MAX_TABLE {
        return Err(format!(
            "--table {table:?} is longer than {MAX_TABLE} characters"
        ));
    }
    Ok(())
}

/// Makes sure `table` holds records `0..records` of `corpus`: reuses it
/// when it does (same count, same first vector), loads it when it is empty,
/// refuses when it holds something else.
pub async fn prepare_pg(
    url: &str,
    table: &str,
    spec: &IndexSpec,
    corpus: &Corpus,
    records: usize,
) -> Result<PgTable, String> {
    check_table(table)?;
    let store = PgStore::connect(PgConfig::new("postgres", url).with_table(table))
        .await
        .map_err(|e| e.to_string())?;
    store.ensure_schema(spec).await.map_err(|e| e.to_string())?;
    let count = store
        .count(&CountScope::default())
        .await
        .map_err(|e| e.to_string())?;
    if count > 0 {
        let expected = u64::try_from(records).unwrap_or(u64::MAX);
        let first = store
            .scan(&ScanRequest {
                limit: 1,
                with_vectors: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let same_first = first
            .records
            .first()
            .is_some_and(|r| r.id == Corpus::id(0) && r.vector == corpus.vector(0));
        if count == expected && same_first {
            println!("table {table}: reusing {count} records already loaded");
            return Ok(PgTable {
                store,
                reused: true,
                load_secs: 0.0,
            });
        }
        return Err(format!(
            "table {table} holds {count} records{}, not the {records} of this corpus \
             (dim {}); drop it or pick another --table",
            if same_first { "" } else { " of another corpus" },
            corpus.dim()
        ));
    }

    let started = Instant::now();
    let mut admin = PgConnection::connect(url)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    let index = format!("{table}_hnsw");
    sqlx::raw_sql(AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("dropping {index} for the load: {e}"))?;
    load_store(&(Arc::new(store.clone()) as DynStore), corpus, records, 2).await?;

    println!("table {table}: building the HNSW index over {records} records");
    let build = format!(
        "CREATE INDEX IF NOT EXISTS {index} ON {table} USING hnsw (vector {ops}) \
         WITH (m = {m}, ef_construction = {ef})",
        ops = match spec.metric {
            vectorgate::Metric::Cosine => "vector_cosine_ops",
            vectorgate::Metric::InnerProduct => "vector_ip_ops",
            vectorgate::Metric::L2 => "vector_l2_ops",
        },
        m = spec.hnsw.m,
        ef = spec.hnsw.ef_construction
    );
    // In memory (the graph of 100k × 768 is ~350 MB), one parallel worker
    // beside the leader, no statement timeout.
    sqlx::raw_sql(
        "SET statement_timeout = 0; SET maintenance_work_mem = '1GB'; \
         SET max_parallel_maintenance_workers = 1",
    )
    .execute(&mut admin)
    .await
    .map_err(|e| format!("preparing the index build: {e}"))?;
    let build_started = Instant::now();
    let progress = tokio::spawn(report_index_progress(url.to_owned(), table.to_owned()));
    let built = sqlx::raw_sql(AssertSqlSafe(build))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("building {index}: {e}"));
    progress.abort();
    built?;
    sqlx::raw_sql(AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("ANALYZE {table}: {e}"))?;
    let _ = admin.close().await;
    println!(
        "table {table}: index built in {:.0} s; loaded and indexed in {:.0} s",
        build_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(PgTable {
        store,
        reused: false,
        load_secs: started.elapsed().as_secs_f64(),
    })
}

/// Prints `pg_stat_progress_create_index` every 10 s until aborted.
async fn report_index_progress(url: String, table: String) {
    let Ok(mut conn) = PgConnection::connect(&url).await else {
        return;
    };
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let row: Result<Option<(String, i64, i64)>, _> = sqlx::query_as(
            "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index \
             WHERE relid = $1::regclass",
        )
        .bind(&table)
        .fetch_optional(&mut conn)
        .await;
        if let Ok(Some((phase, done, total))) = row {
            println!(
                "  index build {:>4.0} s: {phase}, {done}/{total} tuples",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The PostgreSQL table `table` and an embedded store in `dir`, both
/// holding records `0..records` of `corpus`: the pair the failover and
/// soak benchmarks run the manager over.
pub async fn prepare_pair(
    pg_url: &str,
    table: &str,
    spec: &vectorgate::IndexSpec,
    corpus: &Corpus,
    records: usize,
    dir: &std::path::Path,
) -> Result<(PgStore, DynStore), String> {
    let pg = prepare_pg(pg_url, table, spec, corpus, records)
        .await?
        .store;
    let embedded = vectorgate_embedded::EmbeddedStore::open(
        vectorgate_embedded::EmbeddedConfig::new("embedded", dir.join("embedded.db")),
    )
    .await
    .map_err(|e| e.to_string())?;
    embedded
        .ensure_schema(spec)
        .await
        .map_err(|e| e.to_string())?;
    let embedded: DynStore = Arc::new(embedded);
    load_store(&embedded, corpus, records, 1).await?;
    Ok((pg, embedded))
}

/// Upserts records `0..records` of `corpus` into `store`, `parallel`
/// batches at a time, printing progress about every 10%.
pub async fn load_store(
    store: &DynStore,
    corpus: &Corpus,
    records: usize,
    parallel: usize,
) -> Result<(), String> {
    let started = Instant::now();
    let batches = records.div_ceil(LOAD_BATCH);
    let every = (batches / 10).max(1);
    let corpus = Arc::new(corpus.clone());
    let mut next = 0usize;
    let mut done = 0usize;
    let mut running = tokio::task::JoinSet::new();
    while done < batches {
        while next < batches && running.len() < parallel.max(1) {
            let (store, corpus) = (store.clone(), corpus.clone());
            let range = next * LOAD_BATCH..((next + 1) * LOAD_BATCH).min(records);
            running.spawn(async move {
                let rows = corpus.records(range);
                store.upsert(&rows).await.map(|_| ())
            });
            next += 1;
        }
        match running.join_next().await {
            Some(Ok(Ok(()))) => done += 1,
            Some(Ok(Err(e))) => return Err(format!("loading {}: {e}", store.name())),
            Some(Err(e)) => return Err(format!("loading {}: task failed: {e}", store.name())),
            None => break,
        }
        if done.is_multiple_of(every) || done == batches {
            let loaded = (done * LOAD_BATCH).min(records);
            println!(
                "  {}: loaded {loaded}/{records} records ({:.0} rec/s)",
                store.name(),
                loaded as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}
