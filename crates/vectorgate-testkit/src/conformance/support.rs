//! Fixtures and assertions shared by the checks: seeded data, store helpers
//! that fail with the check's name, the brute-force recall reference and the
//! hit comparator.

use super::StoreFactory;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Display};
use vectorgate::{
    CountScope, DynStore, Error, Hit, HnswParams, IndexSpec, Metric, RecallQuery, Record,
    ScanRequest, UpsertOutcome,
};

/// Scores must be within `SCORE_TOLERANCE * max(1, |reference|)` of the reference.
pub(crate) const SCORE_TOLERANCE: f64 = 1e-3;
/// Reference scores closer than this (scaled like the tolerance) are a
/// near-tie: either order is accepted, and strict queries avoid them.
pub(crate) const NEAR_TIE: f64 = 1e-4;
/// A plausible `created_at_ms` for fixtures (2023-11-14).
pub(crate) const BASE_MS: i64 = 1_700_000_000_000;

/// The spec every check uses: `ef_search` high enough that HNSW is exact on
/// the few hundred vectors a check writes.
pub(crate) fn spec(dim: u32, metric: Metric) -> IndexSpec {
    IndexSpec {
        dim,
        metric,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 400,
        },
    }
}

pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform in `[-1, 1]^dim`, never all zeros.
pub(crate) fn random_vector(rng: &mut StdRng, dim: u32) -> Vec<f32> {
    loop {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
        if v.iter().any(|x| *x != 0.0) {
            return v;
        }
    }
}

pub(crate) fn record(
    id: &str,
    team: &str,
    dataset: &str,
    collection: &str,
    vector: Vec<f32>,
    created_at_ms: i64,
) -> Record {
    Record {
        id: id.to_owned(),
        team_id: team.to_owned(),
        dataset_id: dataset.to_owned(),
        collection_id: collection.to_owned(),
        vector,
        created_at_ms,
        payload: None,
    }
}

/// Unwraps a store result, failing with the context and the error.
#[track_caller]
pub(crate) fn ok<T>(ctx: impl Display, result: vectorgate::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{ctx}: the store returned an error: {err} ({err:?})"),
    }
}

/// Expects `Error::InvalidInput` naming exactly `field`; returns its reason.
#[track_caller]
pub(crate) fn expect_invalid<T: Debug>(
    ctx: impl Display,
    result: vectorgate::Result<T>,
    field: &str,
) -> String {
    match result {
        Err(Error::InvalidInput { field: got, reason }) => {
            assert_eq!(
                got, field,
                "{ctx}: InvalidInput names the wrong field (reason: {reason})"
            );
            reason
        }
        Err(other) => panic!(
            "{ctx}: expected Error::InvalidInput on field {field:?}, got another error: {other} ({other:?})"
        ),
        Ok(value) => panic!(
            "{ctx}: expected Error::InvalidInput on field {field:?}, but the call succeeded: {value:?}"
        ),
    }
}

/// Expects `Error::Conflict` naming exactly `field`; returns the error's
/// whole text (`conflict: {field}: {reason}`).
#[track_caller]
pub(crate) fn expect_conflict<T: Debug>(
    ctx: impl Display,
    result: vectorgate::Result<T>,
    field: &str,
) -> String {
    match result {
        Err(Error::Conflict { field: got, reason }) => {
            assert_eq!(
                got, field,
                "{ctx}: Conflict names the wrong field (reason: {reason})"
            );
            Error::Conflict { field: got, reason }.to_string()
        }
        Err(other) => panic!(
            "{ctx}: expected Error::Conflict on field {field:?}, got another error: {other} ({other:?})"
        ),
        Ok(value) => panic!(
            "{ctx}: expected Error::Conflict on field {field:?}, but the call succeeded: {value:?}"
        ),
    }
}

/// Opens a fresh location and creates the schema.
pub(crate) async fn fresh_store(
    factory: &dyn StoreFactory,
    spec: &IndexSpec,
    check: &str,
) -> DynStore {
    let location = factory.new_location();
    let store = factory.open(&location).await;
    ok(
        format!(
            "{check}: ensure_schema({}) on fresh location {location:?}",
            spec.describe()
        ),
        store.ensure_schema(spec).await,
    );
    store
}

/// Upserts in batches of at most 1000; checks the returned ids for records
/// that had one.
pub(crate) async fn upsert(store: &DynStore, records: &[Record], ctx: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(records.len());
    for batch in records.chunks(vectorgate::validate::MAX_UPSERT_BATCH) {
        let UpsertOutcome { ids: got } = ok(
            format!("{ctx}: upsert of {} records", batch.len()),
            store.upsert(batch).await,
        );
        assert_eq!(
            got.len(),
            batch.len(),
            "{ctx}: upsert must return one id per input record, in request order"
        );
        for (i, (r, id)) in batch.iter().zip(&got).enumerate() {
            if !r.id.is_empty() {
                assert_eq!(
                    id, &r.id,
                    "{ctx}: upsert returned ids out of request order (position {i})"
                );
            }
        }
        ids.extend(got);
    }
    ids
}

pub(crate) async fn count(
    store: &DynStore,
    team: Option<&str>,
    dataset: Option<&str>,
    collection: Option<&str>,
    ctx: &str,
) -> u64 {
    let scope = CountScope {
        team_id: team.map(str::to_owned),
        dataset_id: dataset.map(str::to_owned),
        collection_id: collection.map(str::to_owned),
    };
    ok(
        format!("{ctx}: count({scope:?})"),
        store.count(&scope).await,
    )
}

/// Asserts `count(scope)` equals the number of `model` records in that scope.
pub(crate) async fn assert_count(
    store: &DynStore,
    model: &[Record],
    team: Option<&str>,
    dataset: Option<&str>,
    collection: Option<&str>,
    ctx: &str,
) {
    let expected = model
        .iter()
        .filter(|r| {
            team.is_none_or(|t| r.team_id == t)
                && dataset.is_none_or(|d| r.dataset_id == d)
                && collection.is_none_or(|c| r.collection_id == c)
        })
        .count() as u64;
    let got = count(store, team, dataset, collection, ctx).await;
    assert_eq!(
        got, expected,
        "{ctx}: count(team {team:?}, dataset {dataset:?}, collection {collection:?}) is wrong"
    );
}

/// Walks a whole scan with pages of `page` records, checking the paging
/// protocol on the way: ascending byte order across pages, nothing at or
/// before `after_id`, pages no larger than the limit, `Some(cursor)` only on
/// a full page and equal to its last id, vectors present iff asked for.
pub(crate) async fn scan_all(
    store: &DynStore,
    template: &ScanRequest,
    page: u32,
    ctx: &str,
) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut after = template.after_id.clone();
    let mut pages = 0usize;
    loop {
        pages += 1;
        assert!(
            pages <= 10_000,
            "{ctx}: scan with page size {page} does not terminate (10000 pages)"
        );
        let request = ScanRequest {
            after_id: after.clone(),
            limit: page,
            ..template.clone()
        };
        let result = ok(
            format!("{ctx}: scan page #{pages} ({request:?})"),
            store.scan(&request).await,
        );
        assert!(
            result.records.len() <= page as usize,
            "{ctx}: scan page #{pages} has {} records, more than the limit {page}",
            result.records.len()
        );
        for r in &result.records {
            if let Some(a) = &after {
                assert!(
                    r.id.as_bytes() > a.as_bytes(),
                    "{ctx}: scan page #{pages} after_id {a:?} returned {:?}, which is not after it in byte order",
                    r.id
                );
            }
            if let Some(prev) = out.last() {
                assert!(
                    prev.id.as_bytes() < r.id.as_bytes(),
                    "{ctx}: scan (page size {page}) is not in strictly ascending byte order of id: {:?} came before {:?}",
                    prev.id,
                    r.id
                );
            }
            if template.with_vectors {
                assert!(
                    !r.vector.is_empty(),
                    "{ctx}: scan with_vectors: true returned an empty vector for {:?}",
                    r.id
                );
            } else {
                assert!(
                    r.vector.is_empty(),
                    "{ctx}: scan with_vectors: false must return empty vectors, got {} values for {:?}",
                    r.vector.len(),
                    r.id
                );
            }
            out.push(r.clone());
        }
        match result.next_cursor {
            None => return out,
            Some(cursor) => {
                assert_eq!(
                    result.records.len(),
                    page as usize,
                    "{ctx}: scan page #{pages} is short ({} of {page}) but has next_cursor {cursor:?}; a short page must end the walk",
                    result.records.len()
                );
                let last = result.records.last().map(|r| r.id.as_str());
                assert_eq!(
                    Some(cursor.as_str()),
                    last,
                    "{ctx}: scan page #{pages}: next_cursor must be the page's last id"
                );
                after = Some(cursor);
            }
        }
    }
}

/// A scan request over everything (optionally one team), with vectors.
pub(crate) fn scan_everything(team: Option<&str>) -> ScanRequest {
    ScanRequest {
        team_id: team.map(str::to_owned),
        limit: 1,
        with_vectors: true,
        ..ScanRequest::default()
    }
}

/// Asserts the store holds exactly `model` (compared record by record,
/// vectors bit-exact), by a full scan.
pub(crate) async fn assert_contents(store: &DynStore, model: &[Record], ctx: &str) {
    let got = scan_all(store, &scan_everything(None), 1000, ctx).await;
    assert_same_records(ctx, &got, model);
}

/// Compares two record sets by id, with a readable diff.
#[track_caller]
pub(crate) fn assert_same_records(ctx: &str, got: &[Record], expected: &[Record]) {
    let want: BTreeMap<&str, &Record> = expected.iter().map(|r| (r.id.as_str(), r)).collect();
    let have: BTreeMap<&str, &Record> = got.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(
        have.len(),
        got.len(),
        "{ctx}: the store returned an id more than once"
    );
    let missing: Vec<&str> = want
        .keys()
        .filter(|k| !have.contains_key(*k))
        .copied()
        .collect();
    let unexpected: Vec<&str> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{ctx}: wrong set of records ({} expected, {} found)\n  missing:    {missing:?}\n  unexpected: {unexpected:?}",
        want.len(),
        have.len()
    );
    for (id, w) in &want {
        let h = have[id];
        assert!(
            h == *w,
            "{ctx}: record {id:?} differs\n  expected: {w:?}\n  got:      {h:?}"
        );
    }
}

/// `records` with empty vectors, as a scan without vectors returns them.
pub(crate) fn without_vectors(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .map(|r| Record {
            vector: Vec::new(),
            ..r.clone()
        })
        .collect()
}

/// A recall query with the common defaults.
pub(crate) fn query(team: &str, datasets: &[&str], vector: Vec<f32>, limit: u32) -> RecallQuery {
    RecallQuery {
        team_id: team.to_owned(),
        dataset_ids: datasets.iter().map(|d| (*d).to_owned()).collect(),
        vector,
        limit,
        ..RecallQuery::default()
    }
}

/// One entry of the brute-force reference.
#[derive(Debug, Clone)]
pub(crate) struct RefHit {
    pub id: String,
    pub dataset_id: String,
    pub collection_id: String,
    pub score: f64,
    pub payload: Option<serde_json::Value>,
}

/// Every record in the query's scope, best first (ties by id), scored with
/// [`Metric::reference_score`]. Independent of `vectorgate::validate`: the
/// scope rules are spelled out here.
pub(crate) fn reference(metric: Metric, records: &[Record], q: &RecallQuery) -> Vec<RefHit> {
    let mut hits: Vec<RefHit> = records
        .iter()
        .filter(|r| r.team_id == q.team_id && q.dataset_ids.contains(&r.dataset_id))
        .filter(|r| {
            let included = q
                .collection_ids
                .as_ref()
                .is_none_or(|inc| inc.contains(&r.collection_id));
            included && !q.exclude_collection_ids.contains(&r.collection_id)
        })
        .map(|r| RefHit {
            id: r.id.clone(),
            dataset_id: r.dataset_id.clone(),
            collection_id: r.collection_id.clone(),
            score: metric.reference_score(&q.vector, &r.vector),
            payload: r.payload.clone(),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits
}

fn scale(score: f64) -> f64 {
    score.abs().max(1.0)
}

/// True if any two neighbours among the first `limit + 1` reference hits are
/// a near-tie (so the expected order, or the top-k set, is ambiguous).
pub(crate) fn has_near_tie(reference: &[RefHit], limit: usize) -> bool {
    let end = reference.len().min(limit + 1);
    reference[..end]
        .windows(2)
        .any(|w| (w[0].score - w[1].score).abs() < NEAR_TIE * scale(w[0].score))
}

struct Ids<'a>(Vec<(&'a str, f64)>);

impl Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (id, score)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id} ({score:.6})")?;
        }
        f.write_str("]")
    }
}

fn show_hits(hits: &[Hit]) -> Ids<'_> {
    Ids(hits
        .iter()
        .map(|h| (h.id.as_str(), f64::from(h.score)))
        .collect())
}

fn show_ref(hits: &[RefHit], n: usize) -> Ids<'_> {
    Ids(hits
        .iter()
        .take(n)
        .map(|h| (h.id.as_str(), h.score))
        .collect())
}

/// Asserts `got` is the reference top-`limit`: same length, same ids in the
/// same order (near-ties may swap), each hit's score within tolerance of its
/// own and of its position's reference score, scores non-increasing, and each
/// hit's dataset and collection those of its record.
#[track_caller]
pub(crate) fn assert_hits(ctx: &str, got: &[Hit], reference: &[RefHit], limit: usize) {
    let expected_len = limit.min(reference.len());
    assert_well_formed(ctx, got, reference, limit);
    assert_eq!(
        got.len(),
        expected_len,
        "{ctx}: wrong number of hits (limit {limit}, {} records in scope)\n  expected: {}\n  got:      {}",
        reference.len(),
        show_ref(reference, expected_len),
        show_hits(got)
    );
    for (i, hit) in got.iter().enumerate() {
        let want = &reference[i];
        if hit.id != want.id {
            let own = reference
                .iter()
                .find(|r| r.id == hit.id)
                .map_or(f64::NAN, |r| r.score);
            assert!(
                (own - want.score).abs() <= NEAR_TIE * scale(want.score),
                "{ctx}: hit #{i} should be {:?} (reference score {:.6}) but is {:?} (reference score {own:.6})\n  expected: {}\n  got:      {}",
                want.id,
                want.score,
                hit.id,
                show_ref(reference, expected_len),
                show_hits(got)
            );
        }
        assert!(
            close(hit.score, want.score),
            "{ctx}: hit #{i} ({:?}) has score {}, the reference score at that rank is {:.6}",
            hit.id,
            hit.score,
            want.score
        );
    }
}

/// What every recall result must satisfy even when it need not be exact: at
/// most `limit` hits, no duplicates, each in scope with its record's dataset,
/// collection and (approximately) reference score, scores non-increasing.
#[track_caller]
pub(crate) fn assert_well_formed(ctx: &str, got: &[Hit], reference: &[RefHit], limit: usize) {
    assert!(
        got.len() <= limit,
        "{ctx}: {} hits for limit {limit}",
        got.len()
    );
    let by_id: HashMap<&str, &RefHit> = reference.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut seen = HashSet::new();
    for (i, hit) in got.iter().enumerate() {
        assert!(
            seen.insert(hit.id.as_str()),
            "{ctx}: id {:?} returned twice\n  got: {}",
            hit.id,
            show_hits(got)
        );
        let Some(r) = by_id.get(hit.id.as_str()) else {
            panic!(
                "{ctx}: hit #{i} {:?} (dataset {:?}, collection {:?}) is outside the query's scope: wrong team, dataset or collection, or deleted\n  got: {}",
                hit.id,
                hit.dataset_id,
                hit.collection_id,
                show_hits(got)
            )
        };
        assert!(
            hit.dataset_id == r.dataset_id && hit.collection_id == r.collection_id,
            "{ctx}: hit {:?} reports dataset {:?} / collection {:?}, its record has {:?} / {:?}",
            hit.id,
            hit.dataset_id,
            hit.collection_id,
            r.dataset_id,
            r.collection_id
        );
        assert!(
            hit.payload.is_none() || hit.payload == r.payload,
            "{ctx}: hit {:?} carries the payload {:?}, its record has {:?}",
            hit.id,
            hit.payload,
            r.payload
        );
        assert!(
            close(hit.score, r.score),
            "{ctx}: hit {:?} has score {}, its reference score is {:.6} (cosine: similarity; inner_product: a·b; l2: NEGATIVE distance)",
            hit.id,
            hit.score,
            r.score
        );
        if i > 0 {
            assert!(
                got[i - 1].score >= hit.score,
                "{ctx}: hits are not sorted by score descending at #{i}: {}",
                show_hits(got)
            );
        }
    }
}

fn close(got: f32, want: f64) -> bool {
    (f64::from(got) - want).abs() <= SCORE_TOLERANCE * scale(want)
}

/// `xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx`.
pub(crate) fn is_uuid_v7(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
        && b[14] == b'7'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}
