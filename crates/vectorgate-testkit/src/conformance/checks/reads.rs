//! Reads: counts, scans, the empty store.

use super::*;

/// 6. Count by each scope.
pub async fn check_count_scopes(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_count_scopes";
    let store = fresh_store(factory, &spec(8, Metric::InnerProduct), CHECK).await;
    let mut rng = rng(0x5eed_0600);
    let layout = [
        ("t-1", "d-1", "c-1", 3),
        ("t-1", "d-1", "c-2", 4),
        ("t-1", "d-2", "c-1", 5),
        ("t-2", "d-1", "c-1", 6),
        ("t-2", "d-3", "c-3", 7),
    ];
    let mut model = Vec::new();
    for (team, dataset, collection, n) in layout {
        for i in 0..n {
            model.push(record(
                &format!("{team}.{dataset}.{collection}.{i}"),
                team,
                dataset,
                collection,
                random_vector(&mut rng, 8),
                BASE_MS,
            ));
        }
    }
    assert_eq!(
        count(&store, None, None, None, CHECK).await,
        0,
        "{CHECK}: a fresh store counts 0"
    );
    upsert(&store, &model, CHECK).await;
    assert_eq!(
        count(&store, None, None, None, CHECK).await,
        25,
        "{CHECK}: count of everything"
    );
    let teams = [None, Some("t-1"), Some("t-2"), Some("t-unknown")];
    let datasets = [None, Some("d-1"), Some("d-2"), Some("d-3")];
    let collections = [None, Some("c-1"), Some("c-2"), Some("c-3")];
    for team in teams {
        for dataset in datasets {
            for collection in collections {
                assert_count(&store, &model, team, dataset, collection, CHECK).await;
            }
        }
    }
}

/// 7. Scan: paging visits every record once in ascending byte order, the
///    created window, the team filter, with/without vectors, payloads.
pub async fn check_scan_paging_and_filters(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_scan_paging_and_filters";
    let store = fresh_store(factory, &spec(8, Metric::L2), CHECK).await;
    let mut rng = rng(0x5eed_0700);
    // Ids whose byte order differs from any locale's: case, punctuation, digits.
    let mut ids: Vec<String> = [
        "B-1", "a-1", "A-2", "b-2", "_z", "-z", ".z", "0z", ":z", "Zz", "zZ", "a.1", "a_1", "a:1",
        "a-10", "a-9", "aa", "aA", "Aa", "AA",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    ids.extend((0..20).map(|i| format!("rec-{:03}", 37 * i % 101)));
    let mut model = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut r = record(
            id,
            if i % 3 == 0 { "t-2" } else { "t-1" },
            "ds",
            "c",
            random_vector(&mut rng, 8),
            BASE_MS + 10 * i as i64,
        );
        if i % 4 == 0 {
            r.payload = Some(json!({ "i": i, "id": id }));
        }
        model.push(r);
    }
    // Written in an order unrelated to the id order.
    upsert(&store, &model, CHECK).await;

    let mut sorted = model.clone();
    sorted.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    for page in [1u32, 7, 40, 41, 1000] {
        let ctx = format!("{CHECK}: full scan, page size {page}");
        let got = scan_all(&store, &scan_everything(None), page, &ctx).await;
        let got_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        let want_ids: Vec<&str> = sorted.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            got_ids, want_ids,
            "{ctx}: ids in ascending byte order, each once"
        );
        assert_same_records(&ctx, &got, &model);
    }

    // One page larger than the set: everything, and no cursor.
    let ctx = format!("{CHECK}: one page of 1000");
    let page = ok(
        &ctx,
        store
            .scan(&ScanRequest {
                limit: 1000,
                ..scan_everything(None)
            })
            .await,
    );
    assert_eq!(page.records.len(), model.len(), "{ctx}: every record");
    assert_eq!(
        page.next_cursor, None,
        "{ctx}: the last page has no next_cursor"
    );

    // Without vectors: the same records with empty vectors, payloads included.
    let ctx = format!("{CHECK}: scan with_vectors: false");
    let request = ScanRequest {
        with_vectors: false,
        ..scan_everything(None)
    };
    let got = scan_all(&store, &request, 7, &ctx).await;
    assert_same_records(&ctx, &got, &without_vectors(&model));

    // Team filter, with paging.
    for team in ["t-1", "t-2"] {
        let ctx = format!("{CHECK}: scan of team {team}, page size 3");
        let got = scan_all(&store, &scan_everything(Some(team)), 3, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.team_id == team)
            .cloned()
            .collect();
        assert_same_records(&ctx, &got, &expected);
    }

    // Created window: from inclusive, to exclusive; alone and with a team.
    let from = BASE_MS + 50;
    let to = BASE_MS + 250;
    for (window_from, window_to, team) in [
        (Some(from), Some(to), None),
        (Some(from), None, None),
        (None, Some(to), None),
        (Some(from), Some(to), Some("t-1")),
        (Some(from), Some(from), None),
    ] {
        let ctx =
            format!("{CHECK}: scan created in [{window_from:?}, {window_to:?}), team {team:?}");
        let request = ScanRequest {
            created_from_ms: window_from,
            created_to_ms: window_to,
            ..scan_everything(team)
        };
        let got = scan_all(&store, &request, 4, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| {
                window_from.is_none_or(|f| r.created_at_ms >= f)
                    && window_to.is_none_or(|t| r.created_at_ms < t)
                    && team.is_none_or(|t| r.team_id == t)
            })
            .cloned()
            .collect();
        assert_same_records(&ctx, &got, &expected);
    }

    // after_id need not exist: the walk resumes after it in byte order. And a
    // record deleted between pages does not derail the walk.
    for after in ["a-0", "rec-051", "Zzz", "zz"] {
        let ctx = format!("{CHECK}: scan after_id {after:?} (not a stored id)");
        let request = ScanRequest {
            after_id: Some(after.to_owned()),
            ..scan_everything(None)
        };
        let got = scan_all(&store, &request, 5, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.id.as_bytes() > after.as_bytes())
            .cloned()
            .collect();
        assert_same_records(&ctx, &got, &expected);
    }
    let ctx = format!("{CHECK}: deleting the cursor record between pages");
    let first = ok(
        &ctx,
        store
            .scan(&ScanRequest {
                limit: 5,
                ..scan_everything(None)
            })
            .await,
    );
    let Some(cursor) = first.next_cursor.clone() else {
        panic!(
            "{ctx}: a page of 5 out of {} must have a next_cursor",
            model.len()
        )
    };
    let removed = delete(
        &store,
        ids_selector(&sorted[4].team_id, &[cursor.as_str()]),
        &ctx,
    )
    .await;
    assert_eq!(removed, 1, "{ctx}: removed count");
    let request = ScanRequest {
        after_id: Some(cursor.clone()),
        ..scan_everything(None)
    };
    let rest = scan_all(&store, &request, 5, &ctx).await;
    assert_same_records(&ctx, &rest, &sorted[5..]);
}

/// An empty store answers every read with nothing, and counts its first write.
pub async fn check_empty_store(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_empty_store";
    let store = fresh_store(factory, &spec(8, Metric::L2), CHECK).await;
    let mut rng = rng(0x5eed_1300);
    assert_eq!(
        count(&store, None, None, None, CHECK).await,
        0,
        "{CHECK}: count"
    );
    assert_eq!(
        count(&store, Some("team"), Some("ds"), None, CHECK).await,
        0,
        "{CHECK}: scoped count"
    );
    let q = query("team", &["ds"], random_vector(&mut rng, 8), 10);
    let got = recall(&store, &q, CHECK).await;
    assert!(
        got.is_empty(),
        "{CHECK}: recall on an empty store returned {got:?}"
    );
    let page = ok(
        CHECK,
        store
            .scan(&ScanRequest {
                limit: 10,
                ..ScanRequest::default()
            })
            .await,
    );
    assert!(
        page.records.is_empty() && page.next_cursor.is_none(),
        "{CHECK}: scan of an empty store returned {page:?}"
    );
    assert_eq!(
        delete(&store, ids_selector("team", &["x"]), CHECK).await,
        0,
        "{CHECK}: delete by id"
    );
    assert_eq!(
        delete(&store, scope_selector("team", &["ds"], None), CHECK).await,
        0,
        "{CHECK}: delete by scope"
    );
    let r = record(
        "first",
        "team",
        "ds",
        "c",
        random_vector(&mut rng, 8),
        BASE_MS,
    );
    upsert(&store, std::slice::from_ref(&r), CHECK).await;
    assert_eq!(
        count(&store, None, None, None, CHECK).await,
        1,
        "{CHECK}: count after one write"
    );
    let got = recall(&store, &q, CHECK).await;
    assert_hits(
        CHECK,
        &got,
        &reference(Metric::L2, std::slice::from_ref(&r), &q),
        10,
    );
}
