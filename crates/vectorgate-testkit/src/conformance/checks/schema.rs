//! Schema and identity: mismatches on reopen, health.

use super::*;

/// 9. A location keeps its schema: another dimension or metric on reopen is
///    `SchemaMismatch`; the same spec is fine and the data is still there.
pub async fn check_schema_mismatch_on_reopen(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_schema_mismatch_on_reopen";
    let stored = spec(8, Metric::Cosine);
    let location = factory.new_location();
    let first = factory.open(&location).await;
    ok(
        format!("{CHECK}: ensure_schema({})", stored.describe()),
        first.ensure_schema(&stored).await,
    );
    ok(
        format!(
            "{CHECK}: ensure_schema({}) again on the same handle",
            stored.describe()
        ),
        first.ensure_schema(&stored).await,
    );
    let mut rng = rng(0x5eed_0900);
    let model: Vec<Record> = (0..5)
        .map(|i| {
            record(
                &format!("s-{i}"),
                "team",
                "ds",
                "c",
                random_vector(&mut rng, 8),
                BASE_MS + i,
            )
        })
        .collect();
    upsert(&first, &model, CHECK).await;

    let second = factory.open(&location).await;
    for other in [
        spec(16, Metric::Cosine),
        spec(8, Metric::L2),
        spec(8, Metric::InnerProduct),
        spec(4, Metric::L2),
    ] {
        let ctx = format!(
            "{CHECK}: ensure_schema({}) on a reopened location holding {}",
            other.describe(),
            stored.describe()
        );
        match second.ensure_schema(&other).await {
            Err(Error::SchemaMismatch {
                expected, found, ..
            }) => {
                assert!(
                    expected.contains(&format!("dim {}", other.dim))
                        && expected.contains(other.metric.as_str()),
                    "{ctx}: SchemaMismatch.expected must describe the requested spec ({}), got {expected:?}",
                    other.describe()
                );
                assert!(
                    found.contains(&format!("dim {}", stored.dim)),
                    "{ctx}: SchemaMismatch.found must describe the stored spec ({}), got {found:?}",
                    stored.describe()
                );
            }
            Err(err) => panic!("{ctx}: expected Error::SchemaMismatch, got {err} ({err:?})"),
            Ok(()) => panic!("{ctx}: expected Error::SchemaMismatch, got Ok"),
        }
    }
    let ctx = format!("{CHECK}: after the mismatches");
    assert_contents(&first, &model, &ctx).await;

    // The same spec (even with another ef_search) is fine, and the data is there.
    let same = IndexSpec {
        hnsw: vectorgate::HnswParams {
            ef_search: 123,
            ..stored.hnsw
        },
        ..stored
    };
    let third = factory.open(&location).await;
    ok(
        format!(
            "{CHECK}: ensure_schema({}) with another ef_search on reopen",
            stored.describe()
        ),
        third.ensure_schema(&same).await,
    );
    ok(
        format!("{CHECK}: ensure_schema({}) on reopen", stored.describe()),
        second.ensure_schema(&stored).await,
    );
    let ctx = format!("{CHECK}: reopened handle");
    assert_contents(&second, &model, &ctx).await;
    assert_count(&second, &model, Some("team"), Some("ds"), None, &ctx).await;
    let q = query("team", &["ds"], random_vector(&mut rng, 8), 10);
    let got = recall(&second, &q, &ctx).await;
    assert_hits(&ctx, &got, &reference(Metric::Cosine, &model, &q), 10);
    // Writes through one handle are visible through the other.
    let extra = record(
        "s-extra",
        "team",
        "ds",
        "c",
        random_vector(&mut rng, 8),
        BASE_MS,
    );
    upsert(&second, std::slice::from_ref(&extra), &ctx).await;
    let mut model = model;
    model.push(extra);
    assert_contents(
        &first,
        &model,
        &format!("{ctx}: write through the reopened handle, read through the first"),
    )
    .await;
}

/// 11. `health()` makes a round trip; `kind()` and `name()` are set.
pub async fn check_health_and_identity(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_health_and_identity";
    let store = fresh_store(factory, &spec(8, Metric::Cosine), CHECK).await;
    let kind = store.kind();
    assert!(
        !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "{CHECK}: kind() must be a non-empty lowercase label (it is a metrics label), got {kind:?}"
    );
    assert!(
        !store.name().is_empty(),
        "{CHECK}: name() must not be empty"
    );
    for round in 0..2 {
        let report = ok(format!("{CHECK}: health() #{round}"), store.health().await);
        assert!(
            report.latency < Duration::from_secs(30),
            "{CHECK}: health() reports a latency of {:?}",
            report.latency
        );
    }
    let mut rng = rng(0x5eed_1100);
    upsert(
        &store,
        &[record(
            "h-1",
            "team",
            "ds",
            "c",
            random_vector(&mut rng, 8),
            BASE_MS,
        )],
        CHECK,
    )
    .await;
    ok(
        format!("{CHECK}: health() after a write"),
        store.health().await,
    );
}
