//! Validation: every bad request is `InvalidInput` on the right field and changes nothing.

use super::*;

fn good(i: usize, rng: &mut StdRng) -> Record {
    record(
        &format!("new-{i}"),
        "team",
        "ds",
        "c",
        random_vector(rng, 8),
        BASE_MS + i as i64,
    )
}

async fn validation_store(
    factory: &dyn StoreFactory,
    check: &str,
) -> (DynStore, Vec<Record>, StdRng) {
    let store = fresh_store(factory, &spec(8, Metric::Cosine), check).await;
    let mut rng = rng(0x5eed_1000);
    let model: Vec<Record> = (0..3)
        .map(|i| {
            let mut r = record(
                &format!("keep-{i}"),
                "team",
                "ds",
                "c",
                random_vector(&mut rng, 8),
                BASE_MS + i,
            );
            r.payload = Some(json!({ "i": i }));
            r
        })
        .collect();
    upsert(&store, &model, check).await;
    (store, model, rng)
}

/// 10a. Every invalid upsert is `InvalidInput` on the right field and writes
///      nothing, not even the valid records of its batch.
pub async fn check_rejects_invalid_upserts(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_rejects_invalid_upserts";
    let (store, model, mut rng) = validation_store(factory, CHECK).await;

    let with = |rng: &mut StdRng, f: &dyn Fn(&mut Record)| {
        let mut r = good(0, rng);
        f(&mut r);
        r
    };
    let mut cases: Vec<(String, Vec<Record>, String, Option<&str>)> = Vec::new();
    let mut single = |desc: &str, r: Record, field: &str, reason: Option<&'static str>| {
        cases.push((desc.to_owned(), vec![r], field.to_owned(), reason));
    };
    single(
        "a vector of 3 values",
        with(&mut rng, &|r| r.vector = vec![1.0, 2.0, 3.0]),
        "records[0].vector",
        Some("vector has 3 values, index dimension is 8"),
    );
    single(
        "a NaN",
        with(&mut rng, &|r| r.vector[2] = f32::NAN),
        "records[0].vector[2]",
        None,
    );
    single(
        "+inf",
        with(&mut rng, &|r| r.vector[0] = f32::INFINITY),
        "records[0].vector[0]",
        None,
    );
    single(
        "-inf",
        with(&mut rng, &|r| r.vector[7] = f32::NEG_INFINITY),
        "records[0].vector[7]",
        None,
    );
    single(
        "a zero vector under cosine",
        with(&mut rng, &|r| r.vector = vec![0.0; 8]),
        "records[0].vector",
        None,
    );
    single(
        "an empty vector",
        with(&mut rng, &|r| r.vector.clear()),
        "records[0].vector",
        None,
    );
    let long_id = "x".repeat(MAX_ID_LEN + 1);
    for bad in [
        long_id.as_str(),
        "a'b",
        "a b",
        "a\"b",
        "a/b",
        "a;b",
        "a%b",
        "a\\b",
        "é",
        "a\nb",
        "a\0b",
        "a*",
    ] {
        single(
            &format!("record id {bad:?}"),
            with(&mut rng, &|r| r.id = bad.to_owned()),
            "records[0].id",
            None,
        );
        single(
            &format!("team id {bad:?}"),
            with(&mut rng, &|r| r.team_id = bad.to_owned()),
            "records[0].team_id",
            None,
        );
    }
    single(
        "an empty team id",
        with(&mut rng, &|r| r.team_id.clear()),
        "records[0].team_id",
        None,
    );
    single(
        "an empty dataset id",
        with(&mut rng, &|r| r.dataset_id.clear()),
        "records[0].dataset_id",
        None,
    );
    single(
        "an empty collection id",
        with(&mut rng, &|r| r.collection_id.clear()),
        "records[0].collection_id",
        None,
    );
    single(
        "dataset id \"d s\"",
        with(&mut rng, &|r| r.dataset_id = "d s".into()),
        "records[0].dataset_id",
        None,
    );
    single(
        "collection id \"c'\"",
        with(&mut rng, &|r| r.collection_id = "c'".into()),
        "records[0].collection_id",
        None,
    );
    single(
        "created_at_ms -1",
        with(&mut rng, &|r| r.created_at_ms = -1),
        "records[0].created_at_ms",
        None,
    );
    for (desc, payload) in [
        ("an array payload", json!([1, 2])),
        ("a string payload", json!("text")),
        ("a number payload", json!(42)),
        ("a null payload", serde_json::Value::Null),
        (
            "a payload over 64 KiB",
            json!({ "t": "x".repeat(MAX_PAYLOAD_BYTES) }),
        ),
    ] {
        single(
            desc,
            with(&mut rng, &|r| r.payload = Some(payload.clone())),
            "records[0].payload",
            None,
        );
    }
    cases.push(("an empty batch".into(), Vec::new(), "records".into(), None));
    cases.push((
        format!("{} records", MAX_UPSERT_BATCH + 1),
        (0..=MAX_UPSERT_BATCH).map(|i| good(i, &mut rng)).collect(),
        "records".into(),
        Some("limit is 1000"),
    ));
    // One bad record among good ones (one of them an update): none is written.
    let mut update = model[0].clone();
    update.vector = random_vector(&mut rng, 8);
    update.payload = Some(json!({ "changed": true }));
    let mut bad = good(2, &mut rng);
    bad.vector.push(1.0);
    cases.push((
        "a batch [update, new, bad vector, new]".into(),
        vec![update.clone(), good(1, &mut rng), bad, good(3, &mut rng)],
        "records[2].vector".into(),
        Some("vector has 9 values, index dimension is 8"),
    ));
    let mut bad = good(5, &mut rng);
    bad.id = "bad id".into();
    cases.push((
        "a batch [new, update, bad id]".into(),
        vec![good(4, &mut rng), update, bad],
        "records[2].id".into(),
        None,
    ));

    for (desc, records, field, reason) in cases {
        let ctx = format!("{CHECK}: upsert with {desc}");
        let got = expect_invalid(&ctx, store.upsert(&records).await, &field);
        if let Some(reason) = reason {
            assert!(
                got.contains(reason),
                "{ctx}: the reason {got:?} must contain {reason:?}"
            );
        }
        assert_count(&store, &model, None, None, None, &ctx).await;
        assert_contents(&store, &model, &ctx).await;
    }
}

/// 10b. Every invalid recall is `InvalidInput` on the right field, even when
///      its collection filter could match nothing.
pub async fn check_rejects_invalid_recalls(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_rejects_invalid_recalls";
    let (store, model, mut rng) = validation_store(factory, CHECK).await;
    let base = query("team", &["ds"], random_vector(&mut rng, 8), 10);
    // The base query is valid and finds the records.
    let got = recall(&store, &base, CHECK).await;
    assert_hits(CHECK, &got, &reference(Metric::Cosine, &model, &base), 10);

    let edit = |f: &dyn Fn(&mut RecallQuery)| {
        let mut q = base.clone();
        f(&mut q);
        q
    };
    let cases: Vec<(&str, RecallQuery, &str, Option<&str>)> = vec![
        ("limit 0", edit(&|q| q.limit = 0), "limit", None),
        (
            "limit 1001",
            edit(&|q| q.limit = MAX_RECALL_LIMIT + 1),
            "limit",
            None,
        ),
        (
            "limit 0 and an empty include list",
            edit(&|q| {
                q.limit = 0;
                q.collection_ids = Some(Vec::new());
            }),
            "limit",
            None,
        ),
        (
            "no dataset_ids",
            edit(&|q| q.dataset_ids.clear()),
            "dataset_ids",
            None,
        ),
        (
            "a bad dataset id",
            edit(&|q| q.dataset_ids = strings(&["ds", "d s"])),
            "dataset_ids[1]",
            None,
        ),
        (
            "an empty team",
            edit(&|q| q.team_id.clear()),
            "team_id",
            None,
        ),
        (
            "a team with a quote",
            edit(&|q| q.team_id = "t'".into()),
            "team_id",
            None,
        ),
        (
            "a vector of 3 values",
            edit(&|q| q.vector = vec![1.0, 2.0, 3.0]),
            "vector",
            Some("vector has 3 values, index dimension is 8"),
        ),
        (
            "a vector of 3 values and an emptied include list",
            edit(&|q| {
                q.vector = vec![1.0, 2.0, 3.0];
                q.collection_ids = Some(strings(&["c"]));
                q.exclude_collection_ids = strings(&["c"]);
            }),
            "vector",
            None,
        ),
        (
            "a NaN",
            edit(&|q| q.vector[3] = f32::NAN),
            "vector[3]",
            None,
        ),
        (
            "an inf",
            edit(&|q| q.vector[0] = f32::INFINITY),
            "vector[0]",
            None,
        ),
        (
            "a zero vector under cosine",
            edit(&|q| q.vector = vec![0.0; 8]),
            "vector",
            None,
        ),
        (
            "ef_search 0",
            edit(&|q| q.ef_search = Some(0)),
            "ef_search",
            None,
        ),
        (
            "ef_search above the limit",
            edit(&|q| q.ef_search = Some(MAX_EF_SEARCH + 1)),
            "ef_search",
            None,
        ),
        (
            "a bad include id",
            edit(&|q| q.collection_ids = Some(strings(&["c", ""]))),
            "collection_ids[1]",
            None,
        ),
        (
            "a bad exclude id",
            edit(&|q| q.exclude_collection_ids = strings(&["c d"])),
            "exclude_collection_ids[0]",
            None,
        ),
    ];
    for (desc, q, field, reason) in cases {
        let ctx = format!("{CHECK}: recall with {desc}");
        let got = expect_invalid(&ctx, store.recall(&q).await, field);
        if let Some(reason) = reason {
            assert!(
                got.contains(reason),
                "{ctx}: the reason {got:?} must contain {reason:?}"
            );
        }
    }
    assert_contents(&store, &model, CHECK).await;
}

/// 10c. Every invalid delete is `InvalidInput` on the right field and deletes nothing.
pub async fn check_rejects_invalid_deletes(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_rejects_invalid_deletes";
    let (store, model, _) = validation_store(factory, CHECK).await;
    let too_many: Vec<String> = (0..=MAX_DELETE_IDS).map(|i| format!("keep-{i}")).collect();
    let cases: Vec<(&str, DeleteSelector, &str)> = vec![
        (
            "no ids",
            DeleteSelector::Ids {
                team_id: "team".into(),
                ids: Vec::new(),
            },
            "ids",
        ),
        (
            "a valid id then a bad one",
            ids_selector("team", &["keep-0", "keep 1"]),
            "ids[1]",
        ),
        (
            "an empty id",
            ids_selector("team", &["keep-0", ""]),
            "ids[1]",
        ),
        (
            "a 65-byte id",
            DeleteSelector::Ids {
                team_id: "team".into(),
                ids: vec!["keep-1".into(), "k".repeat(MAX_ID_LEN + 1)],
            },
            "ids[1]",
        ),
        (
            "too many ids",
            DeleteSelector::Ids {
                team_id: "team".into(),
                ids: too_many,
            },
            "ids",
        ),
        ("an empty team", ids_selector("", &["keep-0"]), "team_id"),
        (
            "a bad team",
            scope_selector("team\"", &["ds"], None),
            "team_id",
        ),
        (
            "no datasets",
            scope_selector("team", &[], None),
            "dataset_ids",
        ),
        (
            "a bad dataset",
            scope_selector("team", &["ds", "d'"], None),
            "dataset_ids[1]",
        ),
        (
            "an empty collection list",
            scope_selector("team", &["ds"], Some(&[])),
            "collection_ids",
        ),
        (
            "a bad collection",
            scope_selector("team", &["ds"], Some(&["c", "c c"])),
            "collection_ids[1]",
        ),
    ];
    for (desc, selector, field) in cases {
        let ctx = format!("{CHECK}: delete with {desc}");
        expect_invalid(&ctx, store.delete(&selector).await, field);
        assert_count(&store, &model, None, None, None, &ctx).await;
    }
    assert_contents(&store, &model, CHECK).await;
}

/// 10d. Invalid counts and scans are `InvalidInput` on the right field.
pub async fn check_rejects_invalid_reads(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_rejects_invalid_reads";
    let (store, model, _) = validation_store(factory, CHECK).await;
    let counts: Vec<(&str, CountScope, &str)> = vec![
        (
            "an empty team",
            CountScope {
                team_id: Some(String::new()),
                ..CountScope::default()
            },
            "team_id",
        ),
        (
            "a bad dataset",
            CountScope {
                dataset_id: Some("d s".into()),
                ..CountScope::default()
            },
            "dataset_id",
        ),
        (
            "a bad collection",
            CountScope {
                collection_id: Some("c'".into()),
                ..CountScope::default()
            },
            "collection_id",
        ),
    ];
    for (desc, scope, field) in counts {
        expect_invalid(
            format!("{CHECK}: count with {desc}"),
            store.count(&scope).await,
            field,
        );
    }
    let scans: Vec<(&str, ScanRequest, &str)> = vec![
        (
            "limit 0",
            ScanRequest {
                limit: 0,
                ..ScanRequest::default()
            },
            "limit",
        ),
        (
            "limit 10001",
            ScanRequest {
                limit: MAX_SCAN_LIMIT + 1,
                ..ScanRequest::default()
            },
            "limit",
        ),
        (
            "a bad after_id",
            ScanRequest {
                limit: 10,
                after_id: Some("a b".into()),
                ..ScanRequest::default()
            },
            "after_id",
        ),
        (
            "an empty team",
            ScanRequest {
                limit: 10,
                team_id: Some(String::new()),
                ..ScanRequest::default()
            },
            "team_id",
        ),
        (
            "created_from after created_to",
            ScanRequest {
                limit: 10,
                created_from_ms: Some(BASE_MS + 1),
                created_to_ms: Some(BASE_MS),
                ..ScanRequest::default()
            },
            "created_from_ms",
        ),
    ];
    for (desc, request, field) in scans {
        expect_invalid(
            format!("{CHECK}: scan with {desc}"),
            store.scan(&request).await,
            field,
        );
    }
    assert_contents(&store, &model, CHECK).await;
}

/// 10e. `ensure_schema` rejects an invalid spec as `InvalidInput`, and the
///      rejected call creates nothing.
pub async fn check_rejects_invalid_specs(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_rejects_invalid_specs";
    let location = factory.new_location();
    let store = factory.open(&location).await;
    let with = |f: &dyn Fn(&mut IndexSpec)| {
        let mut s = spec(8, Metric::Cosine);
        f(&mut s);
        s
    };
    let cases: Vec<(&str, IndexSpec, &str)> = vec![
        ("dim 0", with(&|s| s.dim = 0), "dim"),
        (
            "dim 16001",
            with(&|s| s.dim = vectorgate::validate::MAX_DIM + 1),
            "dim",
        ),
        (
            "hnsw.ef_search 0",
            with(&|s| s.hnsw.ef_search = 0),
            "hnsw.ef_search",
        ),
        (
            "hnsw.ef_search 1001",
            with(&|s| s.hnsw.ef_search = MAX_EF_SEARCH + 1),
            "hnsw.ef_search",
        ),
        ("hnsw.m 1", with(&|s| s.hnsw.m = 1), "hnsw.m"),
        (
            "hnsw.ef_construction < 2m",
            with(&|s| s.hnsw.ef_construction = 20),
            "hnsw.ef_construction",
        ),
    ];
    for (desc, bad, field) in cases {
        expect_invalid(
            format!("{CHECK}: ensure_schema with {desc} on a fresh location"),
            store.ensure_schema(&bad).await,
            field,
        );
    }
    // Nothing was created: a different valid spec is accepted on this location...
    let wanted = spec(16, Metric::L2);
    ok(
        format!(
            "{CHECK}: ensure_schema({}) after the rejected specs (they must not have created a schema)",
            wanted.describe()
        ),
        store.ensure_schema(&wanted).await,
    );
    // ...and it is the one that sticks.
    let ctx = format!("{CHECK}: ensure_schema(dim 8) after ensure_schema(dim 16)");
    match store.ensure_schema(&spec(8, Metric::L2)).await {
        Err(Error::SchemaMismatch { .. }) => {}
        other => panic!("{ctx}: expected SchemaMismatch, got {other:?}"),
    }
    // A bad spec on an existing location is still InvalidInput, not a mismatch.
    let reopened = factory.open(&location).await;
    expect_invalid(
        format!("{CHECK}: ensure_schema with hnsw.ef_search 0 on an existing location"),
        reopened
            .ensure_schema(&IndexSpec {
                hnsw: vectorgate::HnswParams {
                    ef_search: 0,
                    ..wanted.hnsw
                },
                ..wanted
            })
            .await,
        "hnsw.ef_search",
    );
}
