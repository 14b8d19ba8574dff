//! Recall: exactness, score convention, collection filters, payloads.

use super::*;

/// 1. Recall returns exactly the brute-force top-k, for every metric, for a
///    single-dataset and a multi-dataset query, with the score convention
///    (cosine similarity, inner product, negative L2 distance) and in
///    descending order. Another team shares a dataset id and must never show.
pub async fn check_recall_matches_brute_force(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_recall_matches_brute_force";
    const DIM: u32 = 16;
    for (n, metric) in METRICS.into_iter().enumerate() {
        let ctx = format!("{CHECK} [{metric}]");
        let store = fresh_store(factory, &spec(DIM, metric), &ctx).await;
        let mut rng = rng(0x5eed_0100 + n as u64);
        let mut records = Vec::new();
        for (team, dataset) in [
            ("team-a", "ds-1"),
            ("team-a", "ds-2"),
            ("team-a", "ds-3"),
            ("team-b", "ds-1"),
        ] {
            for i in 0..60 {
                records.push(record(
                    &format!("{team}.{dataset}.{i:02}"),
                    team,
                    dataset,
                    &format!("c-{}", i % 4),
                    scaled_vector(&mut rng, DIM),
                    BASE_MS + i,
                ));
            }
        }
        upsert(&store, &records, &ctx).await;

        // Strict cases: three near-tie-free queries each; ids must come back
        // in exactly the reference order.
        let cases: [(&str, &[&str], u32, Option<u32>); 6] = [
            ("team-a", &["ds-1"], 10, None),
            ("team-a", &["ds-2", "ds-3"], 10, None),
            ("team-b", &["ds-1"], 10, None),
            ("team-a", &["ds-1", "ds-2", "ds-3"], 25, Some(MAX_EF_SEARCH)),
            ("team-a", &["ds-3"], 1, None),
            ("team-a", &["ds-2", "ds-unknown"], 5, None),
        ];
        for (team, datasets, limit, ef_search) in cases {
            let mut tried = 0;
            let mut done = 0;
            while done < 3 {
                tried += 1;
                assert!(
                    tried < 200,
                    "{ctx}: cannot find queries without near-ties (test data bug)"
                );
                let mut q = query(team, datasets, scaled_vector(&mut rng, DIM), limit);
                q.ef_search = ef_search;
                let expected = reference(metric, &records, &q);
                if has_near_tie(&expected, limit as usize) {
                    continue;
                }
                done += 1;
                let qctx = format!(
                    "{ctx} query #{done} (team {team}, datasets {datasets:?}, limit {limit}, ef_search {ef_search:?})"
                );
                assert!(expected.len() > limit as usize, "{qctx}: test data bug");
                let got = recall(&store, &q, &qctx).await;
                assert_hits(&qctx, &got, &expected, limit as usize);
            }
        }

        // A limit above the number of matches returns every match, sorted.
        let q = query(
            "team-a",
            &["ds-2", "ds-unknown"],
            scaled_vector(&mut rng, DIM),
            MAX_RECALL_LIMIT,
        );
        let expected = reference(metric, &records, &q);
        assert_eq!(expected.len(), 60, "{ctx}: test data bug");
        let qctx = format!("{ctx} (limit {MAX_RECALL_LIMIT} over 60 matches)");
        let got = recall(&store, &q, &qctx).await;
        assert_hits(&qctx, &got, &expected, MAX_RECALL_LIMIT as usize);

        // A tiny ef_search may be approximate, but whatever comes back must
        // be in scope and correctly scored.
        let mut q = query("team-a", &["ds-1"], scaled_vector(&mut rng, DIM), 5);
        q.ef_search = Some(1);
        let expected = reference(metric, &records, &q);
        let qctx = format!("{ctx} (ef_search 1, limit 5)");
        let got = recall(&store, &q, &qctx).await;
        assert_well_formed(&qctx, &got, &expected, 5);

        // Querying with a stored vector finds that record first, with the
        // best possible score for the metric.
        let target = &records[61];
        let q = query("team-a", &["ds-2"], target.vector.clone(), 3);
        let expected = reference(metric, &records, &q);
        let qctx = format!("{ctx} (query = the vector of {})", target.id);
        let got = recall(&store, &q, &qctx).await;
        assert_hits(&qctx, &got, &expected, 3);
        if metric != Metric::InnerProduct {
            assert_eq!(
                got.first().map(|h| h.id.as_str()),
                Some(target.id.as_str()),
                "{qctx}: a record must be its own nearest neighbour"
            );
        }
    }
}

/// 2. Include/exclude collection semantics.
pub async fn check_collection_include_exclude(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_collection_include_exclude";
    let metric = Metric::Cosine;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_0200);
    let mut records = Vec::new();
    for (dataset, collection, n) in [
        ("ds-1", "c-1", 12),
        ("ds-1", "c-2", 12),
        ("ds-1", "c-3", 12),
        ("ds-1", "c-4", 12),
        ("ds-2", "c-1", 12),
        ("ds-2", "c-5", 12),
    ] {
        for i in 0..n {
            records.push(record(
                &format!("{dataset}.{collection}.{i:02}"),
                "team",
                dataset,
                collection,
                random_vector(&mut rng, 8),
                BASE_MS,
            ));
        }
    }
    // The same collection ids in another team must never leak in.
    for i in 0..12 {
        records.push(record(
            &format!("other.{i:02}"),
            "other-team",
            "ds-1",
            "c-1",
            random_vector(&mut rng, 8),
            BASE_MS,
        ));
    }
    upsert(&store, &records, CHECK).await;

    type Case<'a> = (&'a [&'a str], Option<&'a [&'a str]>, &'a [&'a str], usize);
    // (datasets, include, exclude, expected number of matches)
    let cases: [Case<'_>; 9] = [
        (&["ds-1"], Some(&["c-1", "c-3"]), &[], 24),
        // Repeated ids in the lists change nothing (and never duplicate hits).
        (
            &["ds-1", "ds-1"],
            Some(&["c-1", "c-1"]),
            &["c-3", "c-3"],
            12,
        ),
        (&["ds-1"], None, &["c-2"], 36),
        (&["ds-1"], None, &["c-2", "c-4", "c-unknown"], 24),
        (&["ds-1"], Some(&["c-1", "c-2", "c-3"]), &["c-2"], 24),
        (&["ds-1", "ds-2"], Some(&["c-1", "c-5"]), &["c-5"], 24),
        (&["ds-1", "ds-2"], None, &["c-1"], 48),
        (&["ds-1"], Some(&["c-5"]), &[], 0),
        (&["ds-1"], Some(&["c-unknown"]), &[], 0),
    ];
    for (i, (datasets, include, exclude, matches)) in cases.into_iter().enumerate() {
        let mut q = query(
            "team",
            datasets,
            random_vector(&mut rng, 8),
            MAX_RECALL_LIMIT,
        );
        q.collection_ids = include.map(strings);
        q.exclude_collection_ids = strings(exclude);
        let ctx = format!(
            "{CHECK} case #{i} (datasets {datasets:?}, include {include:?}, exclude {exclude:?})"
        );
        let expected = reference(metric, &records, &q);
        assert_eq!(expected.len(), matches, "{ctx}: test data bug");
        let got = recall(&store, &q, &ctx).await;
        assert_hits(&ctx, &got, &expected, MAX_RECALL_LIMIT as usize);
        // And the top few, where the limit bites.
        q.limit = 5;
        let got = recall(&store, &q, &ctx).await;
        assert_hits(&format!("{ctx} limit 5"), &got, &expected, 5);
    }

    // An include list emptied by the exclusions, or given empty, matches
    // nothing: Ok(empty), not an error and not "everything".
    let emptied: [(Option<&[&str]>, &[&str]); 3] = [
        (Some(&["c-2"]), &["c-2"]),
        (Some(&["c-1", "c-2"]), &["c-2", "c-1", "c-3"]),
        (Some(&[]), &[]),
    ];
    for (include, exclude) in emptied {
        let mut q = query("team", &["ds-1", "ds-2"], random_vector(&mut rng, 8), 10);
        q.collection_ids = include.map(strings);
        q.exclude_collection_ids = strings(exclude);
        let ctx = format!("{CHECK} (include {include:?}, exclude {exclude:?})");
        let got = recall(&store, &q, &ctx).await;
        assert!(
            got.is_empty(),
            "{ctx}: an include list emptied by exclusions must match nothing, got {} hits: {:?}",
            got.len(),
            got.iter().map(|h| &h.id).collect::<Vec<_>>()
        );
    }
}

/// 8. Payloads round-trip through recall and scan.
pub async fn check_payload_round_trip(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_payload_round_trip";
    let metric = Metric::Cosine;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_0800);
    let payloads = [
        Some(json!({
            "title": "Grüße, 世界 🌍 — «ok»",
            "nested": {
                "list": [1, -2, 3.5, "дерево", null, true, { "deep": { "deeper": ["ok", []] } }],
                "empty_object": {},
                "empty_list": []
            },
            "quote": "she said \"hi\" \\ back",
            "control": "line\nbreak\ttab\r",
            "emoji_key_🔑": "value",
            "big": 12_345_678_901_i64,
            "negative": -42,
            "fraction": -0.125,
            "flag": false,
            "nothing": null
        })),
        None,
        Some(json!({ "source": "file.pdf", "page": 3, "q": "a'b; DROP TABLE x; --" })),
        Some(json!({})),
    ];
    let model: Vec<Record> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Record {
            payload: p.clone(),
            ..record(
                &format!("p-{i}"),
                "team",
                "ds",
                "c",
                random_vector(&mut rng, 8),
                BASE_MS,
            )
        })
        .collect();
    upsert(&store, &model, CHECK).await;

    let q = RecallQuery {
        with_payload: true,
        ..query("team", &["ds"], random_vector(&mut rng, 8), 10)
    };
    let ctx = format!("{CHECK}: recall with_payload: true");
    let got = recall(&store, &q, &ctx).await;
    let expected = reference(metric, &model, &q);
    assert_hits(&ctx, &got, &expected, 10);
    for hit in &got {
        let want = &model
            .iter()
            .find(|r| r.id == hit.id)
            .map(|r| r.payload.clone());
        assert_eq!(
            Some(&hit.payload),
            want.as_ref(),
            "{ctx}: payload of {:?} did not round-trip",
            hit.id
        );
    }

    let ctx = format!("{CHECK}: recall with_payload: false");
    let q = RecallQuery {
        with_payload: false,
        ..q
    };
    let got = recall(&store, &q, &ctx).await;
    assert_hits(&ctx, &got, &expected, 10);
    for hit in &got {
        assert!(
            hit.payload.is_none(),
            "{ctx}: hit {:?} has a payload: {:?}",
            hit.id,
            hit.payload
        );
    }

    let ctx = format!("{CHECK}: scan");
    for with_vectors in [true, false] {
        let request = ScanRequest {
            with_vectors,
            ..scan_everything(None)
        };
        let got = scan_all(&store, &request, 2, &ctx).await;
        let expected = if with_vectors {
            model.clone()
        } else {
            without_vectors(&model)
        };
        assert_same_records(
            &format!("{ctx} (with_vectors {with_vectors})"),
            &got,
            &expected,
        );
    }
}
