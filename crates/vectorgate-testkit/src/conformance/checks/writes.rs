//! Writes: idempotent upserts, deletes with exact counts, concurrent use.

use super::*;

/// 5. Upsert is idempotent by id, last write wins (within the team that holds
///    the id); ids in request order, UUIDv7 for empty ids; `created_at_ms` 0
///    means now, otherwise preserved.
pub async fn check_upsert_is_idempotent(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_upsert_is_idempotent";
    let metric = Metric::Cosine;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_0500);
    let mut model: Vec<Record> = Vec::new();
    let put = |model: &mut Vec<Record>, r: &Record| {
        model.retain(|m| m.id != r.id);
        model.push(r.clone());
    };

    // A background of other records, so replacing one is not trivially visible.
    let background: Vec<Record> = (0..10)
        .map(|i| {
            record(
                &format!("bg-{i}"),
                "team",
                "ds-1",
                "c-1",
                random_vector(&mut rng, 8),
                BASE_MS + i,
            )
        })
        .collect();
    upsert(&store, &background, CHECK).await;
    for r in &background {
        put(&mut model, r);
    }

    // Two writes of one id in separate calls: the second replaces everything.
    let mut first = record(
        "r-1",
        "team",
        "ds-1",
        "c-1",
        random_vector(&mut rng, 8),
        BASE_MS + 100,
    );
    first.payload = Some(json!({ "version": 1 }));
    let mut second = record(
        "r-1",
        "team",
        "ds-2",
        "c-2",
        random_vector(&mut rng, 8),
        BASE_MS + 200,
    );
    second.payload = Some(json!({ "version": 2, "tag": "new" }));
    upsert(&store, std::slice::from_ref(&first), CHECK).await;
    upsert(&store, std::slice::from_ref(&second), CHECK).await;
    put(&mut model, &second);
    let ctx = format!("{CHECK}: after upserting r-1 twice");
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, None, None, None, &ctx).await;
    // Recall reflects the new vector and scope; the old scope no longer finds it.
    let mut q = query("team", &["ds-2"], second.vector.clone(), 5);
    q.with_payload = true;
    let got = recall(&store, &q, &ctx).await;
    assert_hits(&ctx, &got, &reference(metric, &model, &q), 5);
    assert_eq!(
        got.first().and_then(|h| h.payload.clone()),
        second.payload,
        "{ctx}: recall must return the last payload"
    );
    let q = query("team", &["ds-1"], first.vector.clone(), MAX_RECALL_LIMIT);
    let got = recall(&store, &q, &ctx).await;
    assert_hits(
        &format!("{ctx} (old scope)"),
        &got,
        &reference(metric, &model, &q),
        MAX_RECALL_LIMIT as usize,
    );

    // A third write without a payload removes it; a write in another team
    // is refused (a record never changes team) and changes nothing.
    let third = record(
        "r-1",
        "team",
        "ds-2",
        "c-2",
        random_vector(&mut rng, 8),
        BASE_MS + 300,
    );
    upsert(&store, std::slice::from_ref(&third), CHECK).await;
    put(&mut model, &third);
    let ctx = format!("{CHECK}: after a third write of r-1 without payload");
    assert_contents(&store, &model, &ctx).await;
    let moved = record(
        "r-1",
        "team-2",
        "ds-2",
        "c-2",
        random_vector(&mut rng, 8),
        BASE_MS + 400,
    );
    let ctx = format!("{CHECK}: writing r-1 in another team");
    expect_conflict(
        &ctx,
        store.upsert(std::slice::from_ref(&moved)).await,
        "records[0].id",
    );
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, Some("team"), None, None, &ctx).await;
    assert_count(&store, &model, Some("team-2"), None, None, &ctx).await;

    // Duplicate ids within one batch: one record, the last one. Ids come back
    // in request order (not sorted, not deduplicated).
    let batch = vec![
        record(
            "r-2",
            "team",
            "ds-1",
            "c-1",
            random_vector(&mut rng, 8),
            BASE_MS + 500,
        ),
        record(
            "r-0",
            "team",
            "ds-1",
            "c-1",
            random_vector(&mut rng, 8),
            BASE_MS + 501,
        ),
        record(
            "r-2",
            "team",
            "ds-3",
            "c-3",
            random_vector(&mut rng, 8),
            BASE_MS + 502,
        ),
    ];
    let ids = upsert(&store, &batch, CHECK).await;
    assert_eq!(
        ids,
        ["r-2", "r-0", "r-2"],
        "{CHECK}: upsert ids must follow the request"
    );
    put(&mut model, &batch[0]);
    put(&mut model, &batch[1]);
    put(&mut model, &batch[2]);
    let ctx = format!("{CHECK}: after a batch with r-2 twice");
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, None, None, None, &ctx).await;

    // Empty ids get fresh UUIDv7s; created_at_ms 0 becomes now.
    let before = now_ms();
    let batch = vec![
        record("", "team", "ds-1", "c-1", random_vector(&mut rng, 8), 0),
        record("r-3", "team", "ds-1", "c-1", random_vector(&mut rng, 8), 0),
        record(
            "",
            "team",
            "ds-1",
            "c-1",
            random_vector(&mut rng, 8),
            BASE_MS + 600,
        ),
    ];
    let ids = upsert(&store, &batch, CHECK).await;
    let after = now_ms();
    let ctx = format!("{CHECK}: upsert with empty ids");
    assert_eq!(ids[1], "r-3", "{ctx}: ids must follow the request");
    for i in [0, 2] {
        assert!(
            is_uuid_v7(&ids[i]),
            "{ctx}: the id generated for record #{i} must be a UUIDv7, got {:?}",
            ids[i]
        );
    }
    assert_ne!(ids[0], ids[2], "{ctx}: generated ids must be distinct");
    let all = scan_all(&store, &scan_everything(None), 1000, &ctx).await;
    for (i, input) in batch.iter().enumerate() {
        let Some(stored) = all.iter().find(|r| r.id == ids[i]) else {
            panic!(
                "{ctx}: record #{i} was stored under an id other than the returned {:?}",
                ids[i]
            )
        };
        assert_eq!(stored.vector, input.vector, "{ctx}: record #{i} vector");
        if input.created_at_ms == 0 {
            // "Now" is the writer's clock; allow a little skew for remote stores.
            assert!(
                (before - 5_000..=after + 5_000).contains(&stored.created_at_ms),
                "{ctx}: created_at_ms 0 must become now ({before}..={after}), got {}",
                stored.created_at_ms
            );
        } else {
            assert_eq!(
                stored.created_at_ms, input.created_at_ms,
                "{ctx}: a given created_at_ms must be preserved exactly"
            );
        }
        let mut expected = input.clone();
        expected.id.clone_from(&ids[i]);
        expected.created_at_ms = stored.created_at_ms;
        put(&mut model, &expected);
    }
    assert_contents(&store, &model, &ctx).await;
}

/// 4. Delete by ids, by dataset, by dataset and collections: exact counts.
pub async fn check_delete_by_ids_and_scope(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_delete_by_ids_and_scope";
    let store = fresh_store(factory, &spec(8, Metric::Cosine), CHECK).await;
    let mut rng = rng(0x5eed_0400);
    let mut model = Vec::new();
    for (dataset, collection) in [
        ("ds-1", "c-1"),
        ("ds-1", "c-2"),
        ("ds-1", "c-3"),
        ("ds-2", "c-1"),
        ("ds-2", "c-2"),
        ("ds-3", "c-1"),
        ("ds-4", "c-1"),
    ] {
        for i in 0..5 {
            model.push(record(
                &format!("{dataset}.{collection}.{i}"),
                "team",
                dataset,
                collection,
                random_vector(&mut rng, 8),
                BASE_MS + i,
            ));
        }
    }
    upsert(&store, &model, CHECK).await;
    assert_contents(&store, &model, CHECK).await;

    let step =
        |desc: &str, removed: u64, model: &mut Vec<Record>, gone: &dyn Fn(&Record) -> bool| {
            let before = model.len();
            model.retain(|r| !gone(r));
            let expected = (before - model.len()) as u64;
            assert_eq!(
                removed, expected,
                "{CHECK}: {desc}: delete must return the number of records removed"
            );
            format!("{CHECK}: after {desc}")
        };

    // By ids: three existing, two unknown.
    let sel = ids_selector(
        "team",
        &["ds-2.c-1.0", "ds-2.c-1.1", "ds-3.c-1.4", "nope-1", "nope-2"],
    );
    let removed = delete(&store, sel, CHECK).await;
    let gone = ["ds-2.c-1.0", "ds-2.c-1.1", "ds-3.c-1.4"];
    let ctx = step(
        "delete of 3 known + 2 unknown ids",
        removed,
        &mut model,
        &|r| gone.contains(&r.id.as_str()),
    );
    assert_eq!(removed, 3, "{ctx}");
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, Some("team"), Some("ds-2"), None, &ctx).await;

    // The same ids again: nothing left to remove.
    let removed = delete(&store, ids_selector("team", &gone), CHECK).await;
    let ctx = step("repeating that delete", removed, &mut model, &|_| false);
    assert_contents(&store, &model, &ctx).await;

    // By dataset + collections.
    let removed = delete(
        &store,
        scope_selector("team", &["ds-1"], Some(&["c-1", "c-3", "c-unknown"])),
        CHECK,
    )
    .await;
    let ctx = step(
        "delete of ds-1 / [c-1, c-3, c-unknown]",
        removed,
        &mut model,
        &|r| r.dataset_id == "ds-1" && (r.collection_id == "c-1" || r.collection_id == "c-3"),
    );
    assert_contents(&store, &model, &ctx).await;
    for c in ["c-1", "c-2", "c-3"] {
        assert_count(&store, &model, Some("team"), Some("ds-1"), Some(c), &ctx).await;
    }

    // Collections of one dataset do not reach into another.
    let removed = delete(
        &store,
        scope_selector("team", &["ds-2", "ds-3"], Some(&["c-2"])),
        CHECK,
    )
    .await;
    let ctx = step(
        "delete of [ds-2, ds-3] / [c-2] (ds-1 also has a c-2)",
        removed,
        &mut model,
        &|r| (r.dataset_id == "ds-2" || r.dataset_id == "ds-3") && r.collection_id == "c-2",
    );
    assert_contents(&store, &model, &ctx).await;

    // By whole datasets, one of them unknown.
    let removed = delete(
        &store,
        scope_selector("team", &["ds-2", "ds-3", "ds-unknown"], None),
        CHECK,
    )
    .await;
    let ctx = step(
        "delete of datasets [ds-2, ds-3, ds-unknown]",
        removed,
        &mut model,
        &|r| r.dataset_id == "ds-2" || r.dataset_id == "ds-3",
    );
    assert!(removed > 0, "{ctx}: test data bug");
    assert_contents(&store, &model, &ctx).await;
    for (d, c) in [
        (None, None),
        (Some("ds-1"), None),
        (Some("ds-2"), None),
        (Some("ds-3"), None),
        (Some("ds-4"), Some("c-1")),
    ] {
        assert_count(&store, &model, Some("team"), d, c, &ctx).await;
        assert_count(&store, &model, None, d, c, &ctx).await;
    }

    // A scope with nothing in it.
    let removed = delete(&store, scope_selector("team", &["ds-unknown"], None), CHECK).await;
    let ctx = step("delete of an unknown dataset", removed, &mut model, &|_| {
        false
    });
    assert_eq!(model.len(), 10, "{ctx}: test bug");
    assert_contents(&store, &model, &ctx).await;

    // Deleted records are gone from recall too.
    let q = query(
        "team",
        &["ds-1", "ds-2", "ds-3", "ds-4"],
        random_vector(&mut rng, 8),
        MAX_RECALL_LIMIT,
    );
    let expected = reference(Metric::Cosine, &model, &q);
    let got = recall(&store, &q, &ctx).await;
    assert_hits(
        &format!("{ctx}: recall"),
        &got,
        &expected,
        MAX_RECALL_LIMIT as usize,
    );
}

/// Concurrent upserts, recalls and deletes from several tasks lose nothing.
pub async fn check_concurrent_use(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_concurrent_use";
    let metric = Metric::Cosine;
    // Two handles creating the schema of one fresh location at once (two
    // servers starting together): both succeed.
    let location = factory.new_location();
    let wanted = spec(8, metric);
    let mut tasks = crate::tokio::task::JoinSet::new();
    for n in 0..2 {
        let handle = factory.open(&location).await;
        tasks.spawn(async move {
            let result = handle.ensure_schema(&wanted).await;
            ok(
                format!("{CHECK}: concurrent ensure_schema on handle #{n}"),
                result,
            );
        });
    }
    join_all(&mut tasks).await;
    let store = factory.open(&location).await;
    ok(
        format!("{CHECK}: ensure_schema after the concurrent ones"),
        store.ensure_schema(&wanted).await,
    );
    let mut rng = rng(0x5eed_1400);
    let mut model = Vec::new();
    let mut batches = Vec::new();
    for task in 0..8 {
        let batch: Vec<Record> = (0..25)
            .map(|i| {
                record(
                    &format!("w{task}-{i:02}"),
                    "team",
                    if task % 2 == 0 { "ds-even" } else { "ds-odd" },
                    "c",
                    random_vector(&mut rng, 8),
                    BASE_MS + i,
                )
            })
            .collect();
        model.extend(batch.iter().cloned());
        batches.push(batch);
    }
    for batch in batches {
        let store = store.clone();
        tasks.spawn(async move {
            // Five calls of five records each, so the writes interleave.
            for chunk in batch.chunks(5) {
                ok(
                    format!("{CHECK}: concurrent upsert"),
                    store.upsert(chunk).await,
                );
            }
        });
    }
    for _ in 0..4 {
        let store = store.clone();
        let q = query(
            "team",
            &["ds-even", "ds-odd"],
            random_vector(&mut rng, 8),
            10,
        );
        tasks.spawn(async move {
            for _ in 0..5 {
                let hits = ok(
                    format!("{CHECK}: concurrent recall"),
                    store.recall(&q).await,
                );
                assert!(
                    hits.len() <= 10,
                    "{CHECK}: concurrent recall returned {} hits",
                    hits.len()
                );
            }
        });
    }
    join_all(&mut tasks).await;
    let ctx = format!("{CHECK}: after 8 concurrent writers");
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, Some("team"), Some("ds-even"), None, &ctx).await;

    // Concurrent deletes of disjoint ids: the removed counts add up.
    for task in 0..4 {
        let store = store.clone();
        let ids: Vec<String> = (0..10).map(|i| format!("w{task}-{i:02}")).collect();
        tasks.spawn(async move {
            let removed = ok(
                format!("{CHECK}: concurrent delete"),
                store
                    .delete(&DeleteSelector::Ids {
                        team_id: "team".into(),
                        ids,
                    })
                    .await,
            );
            assert_eq!(
                removed, 10,
                "{CHECK}: concurrent delete of 10 ids of one writer"
            );
        });
    }
    join_all(&mut tasks).await;
    let deleted: HashSet<String> = (0..4)
        .flat_map(|t| (0..10).map(move |i| format!("w{t}-{i:02}")))
        .collect();
    model.retain(|r| !deleted.contains(&r.id));
    let ctx = format!("{CHECK}: after 4 concurrent deletes");
    assert_contents(&store, &model, &ctx).await;
    let q = query(
        "team",
        &["ds-even", "ds-odd"],
        random_vector(&mut rng, 8),
        MAX_RECALL_LIMIT,
    );
    let got = recall(&store, &q, &ctx).await;
    assert_hits(
        &ctx,
        &got,
        &reference(metric, &model, &q),
        MAX_RECALL_LIMIT as usize,
    );
}

/// Waits for every task, re-raising a task's panic with its own message.
async fn join_all(tasks: &mut crate::tokio::task::JoinSet<()>) {
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = result {
            if err.is_panic() {
                std::panic::resume_unwind(err.into_panic());
            }
            panic!("conformance: a task was cancelled: {err}");
        }
    }
}
