//! Tenancy and ids: teams never see each other; edge ids are data, not patterns.

use super::*;

/// 3. Team isolation: two teams with the same dataset and collection ids.
pub async fn check_team_isolation(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_team_isolation";
    let metric = Metric::L2;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_0300);
    let mut model = Vec::new();
    for (team, prefix) in [("team-a", "a"), ("team-b", "b")] {
        for i in 0..20 {
            model.push(record(
                &format!("{prefix}-{i:02}"),
                team,
                "ds-shared",
                if i % 2 == 0 { "c-1" } else { "c-2" },
                random_vector(&mut rng, 8),
                BASE_MS + i,
            ));
        }
    }
    upsert(&store, &model, CHECK).await;

    // Recall: everything in scope, and only that, for each team.
    for team in ["team-a", "team-b"] {
        for include in [None, Some(vec!["c-1".to_owned()])] {
            let mut q = query(
                team,
                &["ds-shared"],
                random_vector(&mut rng, 8),
                MAX_RECALL_LIMIT,
            );
            q.collection_ids = include.clone();
            let ctx = format!("{CHECK}: recall as {team} (include {include:?})");
            let expected = reference(metric, &model, &q);
            let got = recall(&store, &q, &ctx).await;
            assert_hits(&ctx, &got, &expected, MAX_RECALL_LIMIT as usize);
        }
    }

    // Count, team-scoped.
    for (team, dataset, collection) in [
        (Some("team-a"), None, None),
        (Some("team-b"), None, None),
        (Some("team-a"), Some("ds-shared"), None),
        (Some("team-b"), Some("ds-shared"), Some("c-1")),
        (None, Some("ds-shared"), Some("c-1")),
        (None, None, None),
    ] {
        assert_count(&store, &model, team, dataset, collection, CHECK).await;
    }

    // Scan with a team filter.
    for team in ["team-a", "team-b"] {
        let ctx = format!("{CHECK}: scan with team filter {team}");
        let got = scan_all(&store, &scan_everything(Some(team)), 7, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.team_id == team)
            .cloned()
            .collect();
        assert_same_records(&ctx, &got, &expected);
    }

    // Delete by ids of team B, issued as team A: nothing happens.
    let b_ids: Vec<String> = model
        .iter()
        .filter(|r| r.team_id == "team-b")
        .map(|r| r.id.clone())
        .collect();
    let ctx = format!("{CHECK}: team-a deleting team-b's ids");
    let removed = delete(
        &store,
        DeleteSelector::Ids {
            team_id: "team-a".into(),
            ids: b_ids,
        },
        &ctx,
    )
    .await;
    assert_eq!(removed, 0, "{ctx}: must remove nothing");
    assert_contents(&store, &model, &ctx).await;

    // Mixed: one id of its own, two of the other team.
    let ctx = format!("{CHECK}: team-a deleting [a-00, b-00, b-01]");
    let removed = delete(
        &store,
        ids_selector("team-a", &["a-00", "b-00", "b-01"]),
        &ctx,
    )
    .await;
    assert_eq!(removed, 1, "{ctx}: only a-00 belongs to team-a");
    model.retain(|r| r.id != "a-00");
    assert_contents(&store, &model, &ctx).await;

    // By scope: team A's collection c-1, then its whole dataset.
    let ctx = format!("{CHECK}: team-a deleting ds-shared/c-1");
    let removed = delete(
        &store,
        scope_selector("team-a", &["ds-shared"], Some(&["c-1"])),
        &ctx,
    )
    .await;
    let before = model.len();
    model.retain(|r| !(r.team_id == "team-a" && r.collection_id == "c-1"));
    assert_eq!(
        removed,
        (before - model.len()) as u64,
        "{ctx}: removed count"
    );
    assert_contents(&store, &model, &ctx).await;

    let ctx = format!("{CHECK}: team-a deleting ds-shared");
    let removed = delete(&store, scope_selector("team-a", &["ds-shared"], None), &ctx).await;
    let before = model.len();
    model.retain(|r| r.team_id != "team-a");
    assert_eq!(
        removed,
        (before - model.len()) as u64,
        "{ctx}: removed count"
    );
    assert_eq!(model.len(), 20, "{ctx}: test bug");
    assert_contents(&store, &model, &ctx).await;
    assert_count(&store, &model, Some("team-b"), None, None, &ctx).await;
    assert_count(&store, &model, Some("team-a"), None, None, &ctx).await;

    // Team B still recalls all of its records; team A recalls nothing.
    let q = query(
        "team-b",
        &["ds-shared"],
        random_vector(&mut rng, 8),
        MAX_RECALL_LIMIT,
    );
    let expected = reference(metric, &model, &q);
    let got = recall(&store, &q, &ctx).await;
    assert_hits(
        &format!("{ctx}, then recall as team-b"),
        &got,
        &expected,
        MAX_RECALL_LIMIT as usize,
    );
    let q = query(
        "team-a",
        &["ds-shared"],
        random_vector(&mut rng, 8),
        MAX_RECALL_LIMIT,
    );
    let got = recall(&store, &q, &ctx).await;
    assert!(
        got.is_empty(),
        "{ctx}, then recall as team-a: expected no hits, got {:?}",
        got.iter().map(|h| &h.id).collect::<Vec<_>>()
    );
}

/// 12. Ids at the edges of the charset round-trip everywhere and are never
///     treated as patterns (`x_y` is not `xay`, `...` is not `.`).
pub async fn check_edge_ids(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_edge_ids";
    let metric = Metric::InnerProduct;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_1200);
    let charset64 = "-.0123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwx";
    assert_eq!(charset64.len(), MAX_ID_LEN, "test bug");
    let long_z = "z".repeat(MAX_ID_LEN);
    // Pairs that only a pattern match would confuse share a team: (x_y, xay),
    // (..., .).
    let ids: Vec<&str> = vec![
        "x_y",
        "xay",
        "...",
        ".",
        "a.b:c-d_e",
        charset64,
        &long_z,
        "x--y",
        "1:2:3",
        "..",
        "-",
        "_",
        ":",
        "X_Y",
        "x%y",
        "0",
        "00",
        "-1",
        "1e5",
        "0.0",
        "NaN",
        "null",
        "true",
        "NULL",
        "A",
        "a",
    ]
    .into_iter()
    .filter(|id| vectorgate::validate::is_valid_id(id))
    .collect();
    assert!(ids.len() >= 25, "test bug: {ids:?}");
    let teams = ["t.e:a-m_1", charset64];
    let datasets = ["...", "d_1", "dx1", &long_z];
    let collections = ["x_y", "xay", "-", "1:2:3"];
    let mut model = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut r = record(
            id,
            teams[(i / 2) % 2],
            datasets[i % 4],
            collections[(i / 3) % 4],
            random_vector(&mut rng, 8),
            BASE_MS + i as i64,
        );
        r.payload = Some(json!({ "id": id }));
        model.push(r);
    }
    upsert(&store, &model, CHECK).await;
    let ctx = format!("{CHECK}: after upsert");
    assert_contents(&store, &model, &ctx).await;
    for page in [1, 3] {
        let got = scan_all(&store, &scan_everything(Some(charset64)), page, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.team_id == charset64)
            .cloned()
            .collect();
        assert_same_records(
            &format!("{ctx}: scan of the 64-byte team, page {page}"),
            &got,
            &expected,
        );
    }

    // Recall in every (team, dataset) and with a pattern-looking include list.
    for team in teams {
        for dataset in datasets {
            let q = RecallQuery {
                with_payload: true,
                ..query(
                    team,
                    &[dataset],
                    random_vector(&mut rng, 8),
                    MAX_RECALL_LIMIT,
                )
            };
            let qctx = format!("{ctx}: recall team {team:?} dataset {dataset:?}");
            let got = recall(&store, &q, &qctx).await;
            let expected = reference(metric, &model, &q);
            assert_hits(&qctx, &got, &expected, MAX_RECALL_LIMIT as usize);
            for hit in &got {
                assert_eq!(
                    hit.payload,
                    Some(json!({ "id": hit.id })),
                    "{qctx}: payload of {:?}",
                    hit.id
                );
            }
        }
        let q = RecallQuery {
            collection_ids: Some(strings(&["x_y"])),
            exclude_collection_ids: strings(&["-"]),
            ..query(
                team,
                &datasets,
                random_vector(&mut rng, 8),
                MAX_RECALL_LIMIT,
            )
        };
        let qctx = format!("{ctx}: recall team {team:?}, collection x_y only");
        let got = recall(&store, &q, &qctx).await;
        let expected = reference(metric, &model, &q);
        assert!(!expected.is_empty(), "{qctx}: test data bug");
        assert_hits(&qctx, &got, &expected, MAX_RECALL_LIMIT as usize);
    }

    // Counts with edge scope ids.
    for team in [None, Some(teams[0]), Some(teams[1])] {
        for collection in [None, Some("x_y"), Some("xay")] {
            assert_count(&store, &model, team, Some("..."), collection, &ctx).await;
            assert_count(&store, &model, team, Some(&long_z), collection, &ctx).await;
            assert_count(&store, &model, team, None, collection, &ctx).await;
        }
    }

    // Deletes by id, one at a time: exactly that record.
    for id in ["x_y", "...", "x--y", charset64, "-", "1:2:3", "null"] {
        let Some(target) = model.iter().find(|r| r.id == id).cloned() else {
            panic!("test bug: {id:?} not in the data")
        };
        let dctx = format!("{CHECK}: delete of id {id:?}");
        let removed = delete(&store, ids_selector(&target.team_id, &[id]), &dctx).await;
        assert_eq!(removed, 1, "{dctx}: must remove exactly that record");
        model.retain(|r| r.id != id);
        assert_contents(&store, &model, &dctx).await;
    }
    // Deletes by scope with pattern-looking collection and dataset ids, each
    // aimed at a record still there.
    for (dataset, by_collection) in [("...", true), ("d_1", false), (long_z.as_str(), true)] {
        let Some(target) = model.iter().find(|r| r.dataset_id == dataset).cloned() else {
            panic!("test bug: no record left in dataset {dataset:?}")
        };
        let team = target.team_id.as_str();
        let collection = by_collection.then_some(target.collection_id.as_str());
        let dctx = format!(
            "{CHECK}: delete of team {team:?} dataset {dataset:?} collection {collection:?}"
        );
        let collections_list = collection.map(|c| vec![c]);
        let removed = delete(
            &store,
            scope_selector(team, &[dataset], collections_list.as_deref()),
            &dctx,
        )
        .await;
        let before = model.len();
        model.retain(|r| {
            !(r.team_id == team
                && r.dataset_id == dataset
                && collection.is_none_or(|c| r.collection_id == c))
        });
        assert_eq!(
            removed,
            (before - model.len()) as u64,
            "{dctx}: removed count"
        );
        assert_contents(&store, &model, &dctx).await;
    }
    assert!(
        !model.is_empty(),
        "{CHECK}: test bug: everything was deleted"
    );
}
