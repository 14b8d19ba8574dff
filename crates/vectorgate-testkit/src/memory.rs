//! A brute-force in-memory store: obviously correct, never blocks, never
//! touches the disk. It is the reference the conformance suite is proven
//! against, and the store under the manager's paused-clock tests (a store
//! that uses `spawn_blocking` would let tokio's paused clock jump ahead while
//! a blocking thread works, firing timeouts that never happen in real time).
//!
//! Not a product backend: exact search over a `BTreeMap`.

use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::Duration;
use vectorgate::validate::{self, CollectionFilter};
use vectorgate::{
    CountScope, DeleteSelector, Error, HealthReport, Hit, IndexSpec, RecallQuery, Record, Result,
    ScanPage, ScanRequest, UpsertOutcome, VectorStore,
};

/// See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spec: Option<IndexSpec>,
    records: BTreeMap<String, Record>,
}

impl MemoryStore {
    /// An empty store without a schema.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryStore {
            name: name.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// How many records it holds, without going through the trait.
    pub fn len(&self) -> usize {
        self.state.lock().records.len()
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spec(&self) -> Result<IndexSpec> {
        self.state
            .lock()
            .spec
            .ok_or_else(|| Error::internal(&self.name, "call ensure_schema first"))
    }
}

#[async_trait]
impl VectorStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure_schema(&self, spec: &IndexSpec) -> Result<()> {
        validate::check_spec(spec)?;
        let mut state = self.state.lock();
        match &state.spec {
            Some(found) if found.dim != spec.dim || found.metric != spec.metric => {
                Err(Error::SchemaMismatch {
                    store: self.name.clone(),
                    expected: spec.describe(),
                    found: found.describe(),
                })
            }
            _ => {
                state.spec = Some(*spec);
                Ok(())
            }
        }
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let spec = self.spec()?;
        let prepared = validate::prepare_upsert(&spec, records, validate::now_ms())?;
        let mut state = self.state.lock();
        // A record never changes team: an id another team holds refuses the
        // whole call, before anything is written (all under one lock).
        if let Some(i) = prepared.ids.iter().zip(records).position(|(id, r)| {
            state
                .records
                .get(id)
                .is_some_and(|held| held.team_id != r.team_id)
        }) {
            return Err(Error::id_taken(
                format!("records[{i}].id"),
                &prepared.ids[i],
            ));
        }
        for record in prepared.records.iter() {
            state.records.insert(record.id.clone(), record.clone());
        }
        Ok(UpsertOutcome { ids: prepared.ids })
    }

    async fn recall(&self, query: &RecallQuery) -> Result<Vec<Hit>> {
        let spec = self.spec()?;
        let filter = validate::check_recall(&spec, query)?;
        if filter == CollectionFilter::Nothing {
            return Ok(Vec::new());
        }
        let state = self.state.lock();
        let mut hits: Vec<Hit> = state
            .records
            .values()
            .filter(|r| {
                r.team_id == query.team_id
                    && query.dataset_ids.contains(&r.dataset_id)
                    && filter.allows(&r.collection_id)
            })
            .map(|r| Hit {
                id: r.id.clone(),
                dataset_id: r.dataset_id.clone(),
                collection_id: r.collection_id.clone(),
                score: spec.metric.reference_score(&r.vector, &query.vector) as f32,
                payload: if query.with_payload {
                    r.payload.clone()
                } else {
                    None
                },
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(query.limit as usize);
        Ok(hits)
    }

    async fn delete(&self, selector: &DeleteSelector) -> Result<u64> {
        self.spec()?;
        validate::check_delete(selector)?;
        let mut state = self.state.lock();
        let before = state.records.len();
        match selector {
            DeleteSelector::Ids { team_id, ids } => {
                for id in ids {
                    if state.records.get(id).is_some_and(|r| &r.team_id == team_id) {
                        state.records.remove(id);
                    }
                }
            }
            DeleteSelector::Scope {
                team_id,
                dataset_ids,
                collection_ids,
            } => state.records.retain(|_, r| {
                !(&r.team_id == team_id
                    && dataset_ids.contains(&r.dataset_id)
                    && collection_ids
                        .as_ref()
                        .is_none_or(|c| c.contains(&r.collection_id)))
            }),
        }
        Ok((before - state.records.len()) as u64)
    }

    async fn count(&self, scope: &CountScope) -> Result<u64> {
        self.spec()?;
        validate::check_count(scope)?;
        let state = self.state.lock();
        Ok(state
            .records
            .values()
            .filter(|r| {
                scope.team_id.as_ref().is_none_or(|t| &r.team_id == t)
                    && scope.dataset_id.as_ref().is_none_or(|d| &r.dataset_id == d)
                    && scope
                        .collection_id
                        .as_ref()
                        .is_none_or(|c| &r.collection_id == c)
            })
            .count() as u64)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage> {
        self.spec()?;
        validate::check_scan(request)?;
        let state = self.state.lock();
        let limit = request.limit as usize;
        let records: Vec<Record> = state
            .records
            .values()
            .filter(|r| request.after_id.as_ref().is_none_or(|a| &r.id > a))
            .filter(|r| request.team_id.as_ref().is_none_or(|t| &r.team_id == t))
            .filter(|r| request.created_from_ms.is_none_or(|f| r.created_at_ms >= f))
            .filter(|r| request.created_to_ms.is_none_or(|t| r.created_at_ms < t))
            .take(limit)
            .map(|r| {
                let mut r = r.clone();
                if !request.with_vectors {
                    r.vector = Vec::new();
                }
                r
            })
            .collect();
        let next_cursor = if records.len() == limit {
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
        Ok(HealthReport {
            latency: Duration::ZERO,
            detail: format!("{} records in memory", self.len()),
        })
    }
}
