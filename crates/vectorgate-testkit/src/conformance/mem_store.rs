//! A tiny, obviously-correct brute-force store, to prove the suite passes a
//! correct store; and deliberately broken variants of it ([`Fault`]), to prove
//! each check can fail.

use super::StoreFactory;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, DynStore, Error, HealthReport, Hit, IndexSpec, Metric, RecallQuery,
    Record, Result, ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// One deliberate bug, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    RecallIgnoresTeam,
    CountIgnoresTeam,
    DeleteIgnoresTeam,
    ScanIgnoresTeam,
    /// L2 scored as the (positive) distance, nearest first.
    L2AsPositiveDistance,
    /// Cosine reported as `1 - similarity` (a distance), nearest first.
    CosineAsDistance,
    /// The right hits, worst first.
    AscendingHits,
    /// Recall returns one hit fewer than it should.
    DropsLastHit,
    IgnoresExclusions,
    /// An include list emptied by exclusions means "any collection".
    EmptiedIncludeMeansAll,
    /// Scan pages start at `after_id` instead of after it.
    ScanAfterInclusive,
    ScanIgnoresCreatedTo,
    /// Scan orders ids case-insensitively, as a locale collation would.
    ScanCaseInsensitiveOrder,
    ScanDropsVectors,
    /// Upsert keeps the first write of an id.
    FirstWriteWins,
    /// Upsert writes the valid records before the first invalid one.
    PartialBatch,
    /// `created_at_ms` is always set to now.
    OverwritesCreatedAt,
    /// Generated ids are not UUIDv7s.
    SequentialIds,
    RecallSkipsValidation,
    /// ensure_schema never reports a mismatch.
    NoSchemaCheck,
    /// delete by ids reports how many ids it was given.
    DeleteCountsRequested,
    /// delete by ids treats `_` as a wildcard, as SQL LIKE does.
    DeleteLikePattern,
    DropsPayload,
    HealthFails,
    /// Count with a dataset ignores the collection.
    CountIgnoresCollection,
    /// Every handle on a location sees its own, separate data.
    ForgetsOnReopen,
    /// Delete by ids removes the valid ids before validating the rest.
    DeleteBeforeValidation,
    /// Scan treats limit 0 as "a default page".
    ScanAcceptsZeroLimit,
    /// ensure_schema does not validate the spec.
    SpecNotValidated,
    /// Recall fails while the location holds no record (an index not built yet).
    EmptyIndexErrors,
    /// Upsert is a read-modify-write of the whole location: concurrent
    /// upserts overwrite each other.
    LostUpdates,
    /// Scan always returns a cursor on a non-empty page, even a short last one.
    ScanAlwaysCursor,
    /// Upsert of an id another team holds takes the record over (team
    /// included), as every backend did before ids belonged to their team.
    TeamTakeover,
    /// An upsert naming an id another team holds is refused, but the batch's
    /// other records are written anyway.
    ConflictAfterPartialWrite,
    /// The ownership check and the write are two steps with the lock released
    /// in between: two teams creating one id at once both succeed.
    RacyOwnershipCheck,
}

#[derive(Debug, Default)]
struct Location {
    spec: Option<IndexSpec>,
    records: BTreeMap<String, Record>,
}

#[derive(Debug)]
pub(super) struct MemFactory {
    fault: Fault,
    next: AtomicU64,
    locations: Mutex<HashMap<String, Arc<Mutex<Location>>>>,
}

impl MemFactory {
    pub(super) fn new() -> Self {
        Self::with_fault(Fault::None)
    }

    pub(super) fn with_fault(fault: Fault) -> Self {
        MemFactory {
            fault,
            next: AtomicU64::new(0),
            locations: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl StoreFactory for MemFactory {
    fn new_location(&self) -> String {
        format!("mem-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    async fn open(&self, location: &str) -> DynStore {
        let shared = if self.fault == Fault::ForgetsOnReopen {
            Arc::default()
        } else {
            self.locations
                .lock()
                .unwrap()
                .entry(location.to_owned())
                .or_default()
                .clone()
        };
        Arc::new(MemStore {
            name: format!("memory:{location}"),
            fault: self.fault,
            location: shared,
        })
    }
}

#[derive(Debug)]
struct MemStore {
    name: String,
    fault: Fault,
    location: Arc<Mutex<Location>>,
}

impl MemStore {
    fn has(&self, fault: Fault) -> bool {
        self.fault == fault
    }

    fn spec(&self, loc: &Location) -> Result<IndexSpec> {
        loc.spec
            .ok_or_else(|| Error::internal(&self.name, "ensure_schema was not called"))
    }

    fn score(&self, metric: Metric, query: &[f32], vector: &[f32]) -> f64 {
        let score = metric.reference_score(query, vector);
        match metric {
            Metric::L2 if self.has(Fault::L2AsPositiveDistance) => -score,
            Metric::Cosine if self.has(Fault::CosineAsDistance) => 1.0 - score,
            _ => score,
        }
    }
}

/// The request index of the first record whose id another team holds.
fn taken_at(loc: &Location, ids: &[String], input: &[Record]) -> Option<usize> {
    ids.iter().zip(input).position(|(id, r)| {
        loc.records
            .get(id)
            .is_some_and(|held| held.team_id != r.team_id)
    })
}

#[async_trait::async_trait]
impl VectorStore for MemStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        if !self.has(Fault::SpecNotValidated) {
            validate::check_spec(spec)?;
        }
        let mut loc = self.location.lock().unwrap();
        match loc.spec {
            Some(found)
                if (found.dim != spec.dim || found.metric != spec.metric)
                    && !self.has(Fault::NoSchemaCheck) =>
            {
                Err(Error::SchemaMismatch {
                    store: self.name.clone(),
                    expected: spec.describe(),
                    found: found.describe(),
                })
            }
            Some(_) => Ok(()),
            None => {
                loc.spec = Some(*spec);
                Ok(())
            }
        }
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        if self.has(Fault::LostUpdates) {
            let (spec, mut snapshot) = {
                let loc = self.location.lock().unwrap();
                (self.spec(&loc)?, loc.records.clone())
            };
            let prepared = validate::prepare_upsert(&spec, records, validate::now_ms())?;
            crate::tokio::task::yield_now().await;
            for r in prepared.records.iter() {
                snapshot.insert(r.id.clone(), r.clone());
            }
            self.location.lock().unwrap().records = snapshot;
            return Ok(UpsertOutcome { ids: prepared.ids });
        }
        if self.has(Fault::RacyOwnershipCheck) {
            let prepared = {
                let loc = self.location.lock().unwrap();
                let spec = self.spec(&loc)?;
                let prepared = validate::prepare_upsert(&spec, records, validate::now_ms())?;
                if let Some(i) = taken_at(&loc, &prepared.ids, records) {
                    return Err(Error::id_taken(
                        format!("records[{i}].id"),
                        &prepared.ids[i],
                    ));
                }
                prepared
            };
            crate::tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let mut loc = self.location.lock().unwrap();
            for r in prepared.records.iter() {
                loc.records.insert(r.id.clone(), r.clone());
            }
            return Ok(UpsertOutcome { ids: prepared.ids });
        }
        let mut loc = self.location.lock().unwrap();
        let spec = self.spec(&loc)?;
        let mut input = records.to_vec();
        if self.has(Fault::SequentialIds) {
            for r in &mut input {
                if r.id.is_empty() {
                    r.id = format!("gen-{}", loc.records.len());
                }
            }
        }
        let prepared = match validate::prepare_upsert(&spec, &input, validate::now_ms()) {
            Ok(prepared) => prepared,
            Err(err) => {
                if self.has(Fault::PartialBatch) {
                    for r in &input {
                        match validate::prepare_upsert(&spec, std::slice::from_ref(r), 1) {
                            Ok(one) => {
                                let r = one.records[0].clone();
                                loc.records.insert(r.id.clone(), r);
                            }
                            Err(_) => break,
                        }
                    }
                }
                return Err(err);
            }
        };
        if !self.has(Fault::TeamTakeover)
            && let Some(i) = taken_at(&loc, &prepared.ids, &input)
        {
            if self.has(Fault::ConflictAfterPartialWrite) {
                for r in prepared.records.iter() {
                    if loc
                        .records
                        .get(&r.id)
                        .is_none_or(|held| held.team_id == r.team_id)
                    {
                        loc.records.insert(r.id.clone(), r.clone());
                    }
                }
            }
            return Err(Error::id_taken(
                format!("records[{i}].id"),
                &prepared.ids[i],
            ));
        }
        for r in prepared.records.iter() {
            let mut r = r.clone();
            if self.has(Fault::OverwritesCreatedAt) {
                r.created_at_ms = validate::now_ms();
            }
            if self.has(Fault::FirstWriteWins) && loc.records.contains_key(&r.id) {
                continue;
            }
            loc.records.insert(r.id.clone(), r);
        }
        Ok(UpsertOutcome { ids: prepared.ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        if self.has(Fault::RecallSkipsValidation) && query.limit == 0 {
            return Ok(Vec::new());
        }
        let loc = self.location.lock().unwrap();
        let spec = self.spec(&loc)?;
        let mut filter = validate::check_recall(&spec, query)?;
        if self.has(Fault::EmptyIndexErrors) && loc.records.is_empty() {
            return Err(Error::internal(&self.name, "the index is not built yet"));
        }
        if self.has(Fault::IgnoresExclusions)
            && let CollectionFilter::Except(_) = filter
        {
            filter = CollectionFilter::Any;
        }
        if filter == CollectionFilter::Nothing {
            if !self.has(Fault::EmptiedIncludeMeansAll) {
                return Ok(Vec::new());
            }
            filter = CollectionFilter::Any;
        }
        let mut hits: Vec<(f64, &Record)> = loc
            .records
            .values()
            .filter(|r| r.team_id == query.team_id || self.has(Fault::RecallIgnoresTeam))
            .filter(|r| query.dataset_ids.contains(&r.dataset_id))
            .filter(|r| filter.allows(&r.collection_id))
            .map(|r| (self.score(spec.metric, &query.vector, &r.vector), r))
            .collect();
        let nearest_first = (spec.metric == Metric::L2 && self.has(Fault::L2AsPositiveDistance))
            || (spec.metric == Metric::Cosine && self.has(Fault::CosineAsDistance));
        hits.sort_by(|a, b| {
            let order = if nearest_first {
                a.0.total_cmp(&b.0)
            } else {
                b.0.total_cmp(&a.0)
            };
            order.then_with(|| a.1.id.cmp(&b.1.id))
        });
        hits.truncate(query.limit as usize);
        if self.has(Fault::DropsLastHit) {
            hits.pop();
        }
        if self.has(Fault::AscendingHits) {
            hits.reverse();
        }
        Ok(hits
            .into_iter()
            .map(|(score, r)| Hit {
                id: r.id.clone(),
                dataset_id: r.dataset_id.clone(),
                collection_id: r.collection_id.clone(),
                score: score as f32,
                payload: if query.with_payload && !self.has(Fault::DropsPayload) {
                    r.payload.clone()
                } else {
                    None
                },
            })
            .collect())
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        let mut loc = self.location.lock().unwrap();
        if self.has(Fault::DeleteBeforeValidation)
            && let DeleteSelector::Ids { team_id, ids } = selector
        {
            for id in ids.iter().filter(|id| validate::is_valid_id(id)) {
                if loc.records.get(id).is_some_and(|r| r.team_id == *team_id) {
                    loc.records.remove(id);
                }
            }
        }
        validate::check_delete(selector)?;
        self.spec(&loc)?;
        let team = selector.team_id();
        let ignores_team = self.has(Fault::DeleteIgnoresTeam);
        let before = loc.records.len();
        match selector {
            DeleteSelector::Ids { ids, .. } => {
                let like = self.has(Fault::DeleteLikePattern);
                loc.records.retain(|id, r| {
                    let hit = ids.iter().any(|pattern| {
                        pattern == id
                            || (like
                                && pattern.len() == id.len()
                                && pattern
                                    .bytes()
                                    .zip(id.bytes())
                                    .all(|(p, c)| p == b'_' || p == c))
                    });
                    !(hit && (r.team_id == team || ignores_team))
                });
                if self.has(Fault::DeleteCountsRequested) {
                    return Ok(ids.len() as u64);
                }
            }
            DeleteSelector::Scope {
                dataset_ids,
                collection_ids,
                ..
            } => loc.records.retain(|_, r| {
                let hit = (r.team_id == team || ignores_team)
                    && dataset_ids.contains(&r.dataset_id)
                    && collection_ids
                        .as_ref()
                        .is_none_or(|c| c.contains(&r.collection_id));
                !hit
            }),
        }
        Ok((before - loc.records.len()) as u64)
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        validate::check_count(scope)?;
        let loc = self.location.lock().unwrap();
        self.spec(&loc)?;
        let ignores_collection =
            self.has(Fault::CountIgnoresCollection) && scope.dataset_id.is_some();
        Ok(loc
            .records
            .values()
            .filter(|r| {
                scope
                    .team_id
                    .as_ref()
                    .is_none_or(|t| *t == r.team_id || self.has(Fault::CountIgnoresTeam))
                    && scope.dataset_id.as_ref().is_none_or(|d| *d == r.dataset_id)
                    && (ignores_collection
                        || scope
                            .collection_id
                            .as_ref()
                            .is_none_or(|c| *c == r.collection_id))
            })
            .count() as u64)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        let mut request = request.clone();
        if self.has(Fault::ScanAcceptsZeroLimit) && request.limit == 0 {
            request.limit = 100;
        }
        validate::check_scan(&request)?;
        let loc = self.location.lock().unwrap();
        self.spec(&loc)?;
        let key = |id: &str| {
            if self.has(Fault::ScanCaseInsensitiveOrder) {
                id.to_ascii_lowercase()
            } else {
                id.to_owned()
            }
        };
        let mut matching: Vec<&Record> = loc
            .records
            .values()
            .filter(|r| {
                request
                    .team_id
                    .as_ref()
                    .is_none_or(|t| *t == r.team_id || self.has(Fault::ScanIgnoresTeam))
                    && request.created_from_ms.is_none_or(|f| r.created_at_ms >= f)
                    && (self.has(Fault::ScanIgnoresCreatedTo)
                        || request.created_to_ms.is_none_or(|t| r.created_at_ms < t))
                    && request.after_id.as_ref().is_none_or(|a| {
                        if self.has(Fault::ScanAfterInclusive) {
                            key(&r.id) >= key(a)
                        } else {
                            key(&r.id) > key(a)
                        }
                    })
            })
            .collect();
        matching.sort_by_key(|r| key(&r.id));
        let limit = request.limit as usize;
        let more = matching.len() > limit;
        matching.truncate(limit);
        let records: Vec<Record> = matching
            .into_iter()
            .map(|r| Record {
                vector: if request.with_vectors && !self.has(Fault::ScanDropsVectors) {
                    r.vector.clone()
                } else {
                    Vec::new()
                },
                ..r.clone()
            })
            .collect();
        let next_cursor = if more || self.has(Fault::ScanAlwaysCursor) {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(ScanPage {
            records,
            next_cursor,
        })
    }

    async fn health(&self) -> Result<HealthReport> {
        if self.has(Fault::HealthFails) {
            return Err(Error::unavailable(&self.name, "deliberately down"));
        }
        let start = Instant::now();
        let rows = self.location.lock().unwrap().records.len();
        Ok(HealthReport {
            latency: start.elapsed(),
            detail: format!("{rows} records"),
        })
    }
}
