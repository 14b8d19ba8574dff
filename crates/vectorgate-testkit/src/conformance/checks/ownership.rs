//! Ownership: ids are unique across teams and a record never changes team.
//! An upsert naming an id another team holds is refused as a whole with
//! `Error::Conflict` (field `records[i].id`, `i` the first such record of
//! the request) and writes nothing, also under concurrency.

use super::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Team names that appear nowhere else in the data (so a message that
/// leaks one is caught by a plain `contains`).
const OWNER: &str = "owner-team-7f";
const OTHER: &str = "other-team-2c";

/// Another team's upsert of an id is refused as a whole (`Error::Conflict`
/// on `records[i].id`, naming the id and nothing of its owner), writes none
/// of its records, and leaves the owner's record exactly as it was; the
/// other team cannot delete, count, scan or recall it either. The owner
/// updates it as before; once the owner deleted it, the id is free again.
pub async fn check_ids_belong_to_their_team(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_ids_belong_to_their_team";
    let metric = Metric::Cosine;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_1500);
    let mut model: Vec<Record> = Vec::new();
    let put = |model: &mut Vec<Record>, r: &Record| {
        model.retain(|m| m.id != r.id);
        model.push(r.clone());
    };

    // The owner's records: x in a dataset of its own, two more in a dataset
    // both teams use.
    let mut x = record(
        "shared-x",
        OWNER,
        "ds-owner-only",
        "c-owner-only",
        random_vector(&mut rng, 8),
        BASE_MS + 1,
    );
    x.payload = Some(json!({ "secret": "owner-data-9d" }));
    let owned: Vec<Record> = vec![
        x.clone(),
        record(
            "a-1",
            OWNER,
            "ds-shared",
            "c-1",
            random_vector(&mut rng, 8),
            BASE_MS + 2,
        ),
        record(
            "a-2",
            OWNER,
            "ds-shared",
            "c-2",
            random_vector(&mut rng, 8),
            BASE_MS + 3,
        ),
    ];
    upsert(&store, &owned, CHECK).await;
    for r in &owned {
        put(&mut model, r);
    }

    // The other team's attempts, each refused as a whole.
    let theirs = |id: &str, rng: &mut StdRng, n: i64| {
        let mut r = record(
            id,
            OTHER,
            "ds-shared",
            "c-1",
            random_vector(rng, 8),
            BASE_MS + 100 + n,
        );
        r.payload = Some(json!({ "by": "the other team", "n": n }));
        r
    };
    let x_taken = theirs("shared-x", &mut rng, 0);
    let y = theirs("other-y", &mut rng, 1);
    let y2 = theirs("other-y2", &mut rng, 2);
    let a2_taken = theirs("a-2", &mut rng, 3);
    let generated = theirs("", &mut rng, 4);
    let refused: Vec<(&str, Vec<Record>, &str)> = vec![
        (
            "[other-y, shared-x]",
            vec![y.clone(), x_taken.clone()],
            "records[1].id",
        ),
        (
            "[shared-x, other-y]",
            vec![x_taken.clone(), y.clone()],
            "records[0].id",
        ),
        (
            "[<empty id>, other-y, other-y2, shared-x, shared-x]",
            vec![
                generated,
                y.clone(),
                y2.clone(),
                x_taken.clone(),
                x_taken.clone(),
            ],
            "records[3].id",
        ),
        (
            "[other-y, a-2, shared-x]",
            vec![y.clone(), a2_taken.clone(), x_taken.clone()],
            "records[1].id",
        ),
    ];
    for (desc, batch, field) in refused {
        let ctx = format!("{CHECK}: {OTHER} upserting {desc} ({OWNER} holds shared-x and a-2)");
        let text = expect_conflict(&ctx, store.upsert(&batch).await, field);
        let named: &str = if field == "records[1].id" && batch[1].id == "a-2" {
            "a-2"
        } else {
            "shared-x"
        };
        assert!(
            text.contains(named),
            "{ctx}: the conflict must name the id {named:?}: {text}"
        );
        for secret in [OWNER, "ds-owner-only", "c-owner-only", "owner-data-9d"] {
            assert!(
                !text.contains(secret),
                "{ctx}: the conflict must not reveal the owner's team or data ({secret:?}): {text}"
            );
        }
        let ctx = format!("{ctx}: a refused upsert must write nothing");
        assert_eq!(
            count(&store, Some(OTHER), None, None, &ctx).await,
            0,
            "{ctx}: count of {OTHER}"
        );
        let got = scan_all(&store, &scan_everything(Some(OTHER)), 10, &ctx).await;
        assert_same_records(&format!("{ctx}: scan of {OTHER}"), &got, &[]);
        assert_contents(&store, &model, &ctx).await;
    }

    // The other team cannot delete the owner's records, by ids or by scope.
    let ctx = format!("{CHECK}: {OTHER} deleting [shared-x, a-1] by ids");
    let removed = delete(&store, ids_selector(OTHER, &["shared-x", "a-1"]), &ctx).await;
    assert_eq!(removed, 0, "{ctx}: must remove nothing");
    let ctx = format!("{CHECK}: {OTHER} deleting the owner's datasets by scope");
    let removed = delete(
        &store,
        scope_selector(OTHER, &["ds-owner-only", "ds-shared"], None),
        &ctx,
    )
    .await;
    assert_eq!(removed, 0, "{ctx}: must remove nothing");
    assert_contents(&store, &model, &ctx).await;

    // Nor recall them, even naming the owner's dataset.
    let q = RecallQuery {
        with_payload: true,
        ..query(
            OTHER,
            &["ds-owner-only", "ds-shared"],
            x.vector.clone(),
            MAX_RECALL_LIMIT,
        )
    };
    let ctx = format!("{CHECK}: {OTHER} recalling with shared-x's vector");
    let got = recall(&store, &q, &ctx).await;
    assert!(
        got.is_empty(),
        "{ctx}: expected no hits, got {:?}",
        got.iter().map(|h| &h.id).collect::<Vec<_>>()
    );

    // The owner updates its record as before, scope included.
    let mut x2 = record(
        "shared-x",
        OWNER,
        "ds-shared",
        "c-2",
        random_vector(&mut rng, 8),
        BASE_MS + 10,
    );
    x2.payload = Some(json!({ "version": 2 }));
    upsert(&store, std::slice::from_ref(&x2), CHECK).await;
    put(&mut model, &x2);
    let ctx = format!("{CHECK}: after {OWNER} updated shared-x");
    assert_contents(&store, &model, &ctx).await;
    let q = query(OWNER, &["ds-shared"], x2.vector.clone(), MAX_RECALL_LIMIT);
    let got = recall(&store, &q, &ctx).await;
    assert_hits(
        &ctx,
        &got,
        &reference(metric, &model, &q),
        MAX_RECALL_LIMIT as usize,
    );

    // A refused call does not update the other team's own records either.
    let mine = theirs("other-own", &mut rng, 5);
    upsert(&store, std::slice::from_ref(&mine), CHECK).await;
    put(&mut model, &mine);
    let mut mine2 = theirs("other-own", &mut rng, 6);
    mine2.dataset_id = "ds-moved".into();
    let ctx = format!("{CHECK}: {OTHER} upserting [other-own (its own, updated), shared-x]");
    expect_conflict(
        &ctx,
        store.upsert(&[mine2, x_taken.clone()]).await,
        "records[1].id",
    );
    assert_contents(
        &store,
        &model,
        &format!("{ctx}: a refused upsert must write nothing"),
    )
    .await;

    // Once the owner deleted it, the id is free: the other team takes it
    // and owns it from then on.
    let ctx = format!("{CHECK}: {OWNER} deleting shared-x");
    let removed = delete(&store, ids_selector(OWNER, &["shared-x"]), &ctx).await;
    assert_eq!(removed, 1, "{ctx}: removed count");
    model.retain(|r| r.id != "shared-x");
    upsert(&store, std::slice::from_ref(&x_taken), CHECK).await;
    put(&mut model, &x_taken);
    let ctx = format!("{CHECK}: after {OTHER} took the freed id shared-x");
    assert_contents(&store, &model, &ctx).await;
    for team in [OWNER, OTHER] {
        assert_count(&store, &model, Some(team), None, None, &ctx).await;
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.team_id == team)
            .cloned()
            .collect();
        let got = scan_all(&store, &scan_everything(Some(team)), 2, &ctx).await;
        assert_same_records(&format!("{ctx}: scan of {team}"), &got, &expected);
    }
    let q = query(
        OWNER,
        &["ds-shared"],
        x_taken.vector.clone(),
        MAX_RECALL_LIMIT,
    );
    let got = recall(&store, &q, &ctx).await;
    assert!(
        got.iter().all(|h| h.id != "shared-x"),
        "{ctx}: {OWNER}'s recall returned shared-x, which {OTHER} holds now"
    );
    assert_hits(
        &format!("{ctx}: recall as {OWNER}"),
        &got,
        &reference(metric, &model, &q),
        MAX_RECALL_LIMIT as usize,
    );

    // The rule holds the other way round now.
    let ctx = format!("{CHECK}: {OWNER} upserting shared-x, which {OTHER} holds now");
    let text = expect_conflict(&ctx, store.upsert(&[x2.clone()]).await, "records[0].id");
    assert!(
        !text.contains(OTHER),
        "{ctx}: the conflict must not name the team holding the id: {text}"
    );
    let removed = delete(&store, ids_selector(OWNER, &["shared-x"]), &ctx).await;
    assert_eq!(
        removed, 0,
        "{ctx}: its delete of shared-x must remove nothing"
    );
    assert_contents(&store, &model, &ctx).await;
}

/// How an upsert under contention ended.
#[derive(Debug)]
enum Outcome {
    Written,
    Refused { field: String },
}

/// Transient faults (`Unavailable`, `Timeout`: a deadlock victim, a busy
/// file) are retried this many times before the check fails.
const ATTEMPTS: u32 = 5;

/// An upsert that must either succeed or be refused with `Error::Conflict`.
async fn contended_upsert(store: &DynStore, records: &[Record], ctx: &str) -> Outcome {
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.upsert(records).await {
            Ok(outcome) => {
                assert_eq!(
                    outcome.ids, ids,
                    "{ctx}: upsert of {ids:?} returned other ids"
                );
                return Outcome::Written;
            }
            Err(Error::Conflict { field, .. }) => return Outcome::Refused { field },
            Err(err) if err.is_retriable() && attempt < ATTEMPTS => {
                crate::tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(err) => panic!(
                "{ctx}: upsert of {ids:?}: expected success or Error::Conflict, got {err} ({err:?})"
            ),
        }
    }
}

/// A delete by ids that must succeed; returns how many records it removed.
async fn contended_delete(store: &DynStore, team: &str, ids: &[String], ctx: &str) -> u64 {
    let selector = DeleteSelector::Ids {
        team_id: team.to_owned(),
        ids: ids.to_vec(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.delete(&selector).await {
            Ok(n) => return n,
            Err(err) if err.is_retriable() && attempt < ATTEMPTS => {
                crate::tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(err) => panic!("{ctx}: delete({selector:?}): {err} ({err:?})"),
        }
    }
}

/// Ownership holds under concurrency: tasks of the other team keep trying
/// to upsert and delete the owner's ids while the owner works, and both
/// teams race to create the same fresh ids. At the end every record the
/// owner kept is exactly its last write, each contested id was created by
/// exactly one team (whose upserts of it all succeeded, the other's all
/// refused) and holds that team's record, no refused call left anything,
/// the teams' scans are disjoint and each team's count is its scan's length.
pub async fn check_id_ownership_under_concurrency(factory: &dyn StoreFactory) {
    const CHECK: &str = "check_id_ownership_under_concurrency";
    /// The owner's ids the other team goes after; the owner keeps them.
    const KEPT: usize = 24;
    /// The owner's ids it deletes during the run.
    const DOOMED: usize = 8;
    /// Fresh ids both teams race to create.
    const CONTESTED: usize = 12;
    /// Tasks of the other team.
    const RIVALS: usize = 3;
    let metric = Metric::L2;
    let store = fresh_store(factory, &spec(8, metric), CHECK).await;
    let mut rng = rng(0x5eed_1600);

    let owned: Vec<Record> = (0..KEPT + DOOMED)
        .map(|i| {
            record(
                &format!("a-{i:02}"),
                OWNER,
                "ds-shared",
                "c-1",
                random_vector(&mut rng, 8),
                BASE_MS + i as i64,
            )
        })
        .collect();
    upsert(&store, &owned, CHECK).await;
    // What each team writes when it creates a contested id: the same record
    // from every task of a team, so the winner's content is known.
    let contested = |team: &str, rng: &mut StdRng| -> Vec<Record> {
        (0..CONTESTED)
            .map(|k| {
                let mut r = record(
                    &format!("z-{k:02}"),
                    team,
                    "ds-shared",
                    "c-2",
                    random_vector(rng, 8),
                    BASE_MS + 1000 + k as i64,
                );
                r.payload = Some(json!({ "created_by": team }));
                r
            })
            .collect()
    };
    let owner_z = contested(OWNER, &mut rng);
    let other_z = Arc::new(contested(OTHER, &mut rng));
    let owner_updates: Vec<Record> = (0..CONTESTED)
        .map(|k| {
            let mut r = owned[k % KEPT].clone();
            r.vector = random_vector(&mut rng, 8);
            r.payload = Some(json!({ "update": k }));
            r
        })
        .collect();
    let start = Arc::new(crate::tokio::sync::Barrier::new(1 + RIVALS));

    // The owner: one task, so its expected state is exact.
    let owner_task = {
        let store = store.clone();
        let start = Arc::clone(&start);
        let mut model = owned.clone();
        crate::tokio::spawn(async move {
            let put = |model: &mut Vec<Record>, r: &Record| {
                model.retain(|m| m.id != r.id);
                model.push(r.clone());
            };
            let mut won = BTreeSet::new();
            start.wait().await;
            for k in 0..CONTESTED {
                let z = &owner_z[k];
                let ctx = format!("{CHECK}: {OWNER} creating {}", z.id);
                match contended_upsert(&store, std::slice::from_ref(z), &ctx).await {
                    Outcome::Written => {
                        won.insert(z.id.clone());
                        put(&mut model, z);
                    }
                    Outcome::Refused { field } => {
                        assert_eq!(field, "records[0].id", "{ctx}: conflict field");
                    }
                }
                // An update of its own, a fresh id and the contested id in
                // one call: written as a whole or not at all.
                let mut fresh = owned[0].clone();
                fresh.id = format!("a-new-{k:02}");
                let batch = vec![owner_updates[k].clone(), fresh, z.clone()];
                let ctx = format!(
                    "{CHECK}: {OWNER} upserting [{}, a-new-{k:02}, {}]",
                    batch[0].id, z.id
                );
                match contended_upsert(&store, &batch, &ctx).await {
                    Outcome::Written => {
                        assert!(
                            won.contains(&z.id),
                            "{ctx}: succeeded, although {OWNER}'s upsert of {0} was refused \
                             before ({OTHER} held it): upserts of {0} by both teams succeeded, \
                             one of them took a record the other held",
                            z.id
                        );
                        for r in &batch {
                            put(&mut model, r);
                        }
                    }
                    Outcome::Refused { field } => {
                        assert_eq!(field, "records[2].id", "{ctx}: conflict field");
                        assert!(
                            !won.contains(&z.id),
                            "{ctx}: refused, although {OWNER} created {0} itself: upserts of \
                             {0} by both teams succeeded, one of them took a record the other \
                             held",
                            z.id
                        );
                    }
                }
                if k < DOOMED {
                    let id = format!("a-{:02}", KEPT + k);
                    let ctx = format!("{CHECK}: {OWNER} deleting {id}");
                    let removed =
                        contended_delete(&store, OWNER, std::slice::from_ref(&id), &ctx).await;
                    assert_eq!(removed, 1, "{ctx}: removed count");
                    model.retain(|r| r.id != id);
                }
            }
            (model, won)
        })
    };

    // The other team: several tasks racing the owner and each other.
    let mut rivals = Vec::new();
    for t in 0..RIVALS {
        let store = store.clone();
        let start = Arc::clone(&start);
        let other_z = Arc::clone(&other_z);
        let mut rng = super::rng(0x5eed_1610 + t as u64);
        rivals.push(crate::tokio::spawn(async move {
            let mut won = BTreeSet::new();
            start.wait().await;
            for k in 0..CONTESTED {
                let z = &other_z[k];
                let ctx = format!("{CHECK}: {OTHER} task #{t} creating {}", z.id);
                // Refused: the owner holds it for good (it never deletes
                // contested ids), so it goes into the deletes below.
                let lost = match contended_upsert(&store, std::slice::from_ref(z), &ctx).await {
                    Outcome::Written => {
                        won.insert(z.id.clone());
                        None
                    }
                    Outcome::Refused { field } => {
                        assert_eq!(field, "records[0].id", "{ctx}: conflict field");
                        Some(z.id.clone())
                    }
                };
                // One of the owner's ids, behind a fresh id of its own.
                let target = format!("a-{:02}", (k * RIVALS + t) % KEPT);
                let fresh = format!("b{t}-{k:02}");
                let batch = vec![
                    record(
                        &fresh,
                        OTHER,
                        "ds-shared",
                        "c-1",
                        random_vector(&mut rng, 8),
                        BASE_MS,
                    ),
                    record(
                        &target,
                        OTHER,
                        "ds-shared",
                        "c-1",
                        random_vector(&mut rng, 8),
                        BASE_MS,
                    ),
                ];
                let ctx = format!("{CHECK}: {OTHER} task #{t} upserting [{fresh}, {target}]");
                match contended_upsert(&store, &batch, &ctx).await {
                    Outcome::Written => panic!(
                        "{ctx}: expected Error::Conflict on field \"records[1].id\", but the call \
                         succeeded: {OTHER} took over {target}, which {OWNER} holds"
                    ),
                    Outcome::Refused { field } => {
                        assert_eq!(field, "records[1].id", "{ctx}: conflict field");
                    }
                }
                // Deletes of the owner's ids (kept, doomed, and the contested
                // id it lost) and of its own refused fresh id: nothing is its
                // to remove.
                let mut ids = vec![target, format!("a-{:02}", KEPT + k % DOOMED), fresh];
                ids.extend(lost);
                let ctx = format!("{CHECK}: {OTHER} task #{t} deleting {ids:?}");
                let removed = contended_delete(&store, OTHER, &ids, &ctx).await;
                assert_eq!(removed, 0, "{ctx}: must remove nothing");
                if k % 4 == t % 4 {
                    let q = query(
                        OTHER,
                        &["ds-shared"],
                        random_vector(&mut rng, 8),
                        MAX_RECALL_LIMIT,
                    );
                    let ctx = format!("{CHECK}: {OTHER} task #{t} recalling");
                    let got = recall(&store, &q, &ctx).await;
                    let foreign: Vec<&str> = got
                        .iter()
                        .map(|h| h.id.as_str())
                        .filter(|id| id.starts_with("a-"))
                        .collect();
                    assert!(
                        foreign.is_empty(),
                        "{ctx}: recall returned {OWNER}'s records {foreign:?}"
                    );
                }
            }
            won
        }));
    }

    let (mut model, owner_won) = join(owner_task).await;
    let mut other_won = BTreeSet::new();
    for task in rivals {
        other_won.extend(join(task).await);
    }

    // Each contested id was created by exactly one team and holds its record.
    let ctx = format!("{CHECK}: after the race");
    for (k, z) in other_z.iter().enumerate() {
        let id = &z.id;
        let by_owner = owner_won.contains(id);
        let by_other = other_won.contains(id);
        assert!(
            !(by_owner && by_other),
            "{ctx}: upserts of {id} by both teams succeeded ({OWNER} and {OTHER}), one of \
             them took a record the other held"
        );
        assert!(
            by_owner || by_other,
            "{ctx}: every upsert of the fresh id {id} was refused, by both teams"
        );
        if by_other {
            model.push(other_z[k].clone());
        }
    }
    assert_contents(&store, &model, &ctx).await;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for team in [OWNER, OTHER] {
        let got = scan_all(&store, &scan_everything(Some(team)), 16, &ctx).await;
        for r in &got {
            assert!(
                seen.insert(r.id.clone()),
                "{ctx}: {:?} is in the scans of both teams",
                r.id
            );
        }
        let expected: Vec<Record> = model
            .iter()
            .filter(|r| r.team_id == team)
            .cloned()
            .collect();
        assert_same_records(&format!("{ctx}: scan of {team}"), &got, &expected);
        assert_eq!(
            count(&store, Some(team), None, None, &ctx).await,
            got.len() as u64,
            "{ctx}: count of {team} must equal its scan"
        );
        total += got.len();
    }
    assert_eq!(
        count(&store, None, None, None, &ctx).await,
        total as u64,
        "{ctx}: count of everything must equal the teams' scans"
    );
}

/// Waits for a task, re-raising its panic with its own message.
async fn join<T>(task: crate::tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("conformance: a task was cancelled: {err}"),
    }
}
