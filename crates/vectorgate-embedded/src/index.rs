//! The in-memory search structure: exact search, organised so that a recall
//! only ever touches the vectors it may return.
//!
//! Every recall is scoped to one team and a few of its datasets, so rows are
//! grouped into one [`Bucket`] per `(team, dataset)`, each holding its
//! vectors in one contiguous, row-major `Vec<f32>`. A recall looks its
//! buckets up by key, resolves the collection filter once per bucket (on the
//! bucket's interned collection ids, not per row by string), and streams the
//! surviving rows through the SIMD kernel into a bounded top-k heap. Nothing
//! of another team or dataset is read, and nothing is allocated per row.
//!
//! Deletes keep buckets dense with `swap_remove` (the last row moves into
//! the hole), and an `id -> (bucket, row)` map makes re-upserts and deletes
//! O(dim). SQLite remains the source of truth: this is rebuilt from it at
//! `ensure_schema` and updated only after each commit succeeds.

use crate::kernels::{Scorer, inverse_norm};
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use vectorgate::Metric;
use vectorgate::validate::CollectionFilter;

/// One search result, before payloads are attached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    pub(crate) id: Arc<str>,
    pub(crate) dataset_id: Arc<str>,
    pub(crate) collection_id: Arc<str>,
    pub(crate) score: f32,
}

/// Where a record lives: its bucket's slot and its row inside the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    bucket: usize,
    row: usize,
}

/// Interned collection ids of one bucket, reference-counted so that a
/// collection whose last row leaves also leaves the table (collections come
/// and go as files are re-imported; the table must not grow forever).
#[derive(Debug, Default)]
struct Collections {
    names: Vec<Arc<str>>,
    rows: Vec<u32>,
    slots: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Collections {
    fn acquire(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.slots.get(name) {
            self.rows[slot as usize] += 1;
            return slot;
        }
        let name: Arc<str> = Arc::from(name);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.names[slot as usize] = Arc::clone(&name);
                self.rows[slot as usize] = 1;
                slot
            }
            None => {
                self.names.push(Arc::clone(&name));
                self.rows.push(1);
                // More than u32::MAX distinct collections in one dataset would
                // not fit in memory long before this saturates.
                u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.slots.insert(name, slot);
        slot
    }

    fn release(&mut self, slot: u32) {
        let i = slot as usize;
        if let Some(count) = self.rows.get_mut(i) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.slots.remove(&self.names[i]);
                self.free.push(slot);
            }
        }
    }

    /// Which slots the filter lets through, or `None` when all of them do.
    fn mask(&self, filter: &Resolved<'_>) -> Option<Vec<bool>> {
        match filter {
            Resolved::Any => None,
            Resolved::Only(set) => Some(self.names.iter().map(|n| set.contains(&**n)).collect()),
            Resolved::Except(set) => Some(self.names.iter().map(|n| !set.contains(&**n)).collect()),
        }
    }
}

/// A [`CollectionFilter`] turned into hash sets once per query.
enum Resolved<'f> {
    Any,
    Only(HashSet<&'f str>),
    Except(HashSet<&'f str>),
}

/// The rows of one `(team, dataset)`.
#[derive(Debug)]
struct Bucket {
    team: Arc<str>,
    dataset: Arc<str>,
    ids: Vec<Arc<str>>,
    /// Row -> slot in `collections`.
    collection_of: Vec<u32>,
    /// Row -> `1/‖v‖` (cosine only; empty for the other metrics).
    inverse_norms: Vec<f64>,
    /// `ids.len() * dim` values, row-major.
    vectors: Vec<f32>,
    collections: Collections,
}

impl Bucket {
    fn new(team: Arc<str>, dataset: Arc<str>) -> Self {
        Bucket {
            team,
            dataset,
            ids: Vec::new(),
            collection_of: Vec::new(),
            inverse_norms: Vec::new(),
            vectors: Vec::new(),
            collections: Collections::default(),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// One candidate in the top-k heap. The heap keeps the *worst* kept
/// candidate on top, so its `Ord` says "worse is greater": a lower score,
/// or the same score with a larger id (ties are broken by id so that equal
/// scores come back in the same order every time, ascending by id).
struct Candidate<'a> {
    score: f32,
    id: &'a Arc<str>,
    bucket: usize,
    row: usize,
}

impl Candidate<'_> {
    fn cmp_worse(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.as_bytes().cmp(other.id.as_bytes()))
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_worse(other) == Ordering::Equal
    }
}
impl Eq for Candidate<'_> {}
impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_worse(other)
    }
}

/// Keeps the best `k` candidates seen so far.
struct TopK<'a> {
    k: usize,
    heap: BinaryHeap<Candidate<'a>>,
}

impl<'a> TopK<'a> {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1)),
        }
    }

    /// The score a new candidate must reach to be considered at all (a cheap
    /// float comparison that rejects almost every row once the heap is full).
    #[inline]
    fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap
                .peek()
                .map_or(f32::NEG_INFINITY, |worst| worst.score)
        }
    }

    #[inline]
    fn offer(&mut self, candidate: Candidate<'a>) {
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && candidate < *worst
        {
            *worst = candidate;
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Candidate<'a>> {
        // Ascending in "worse" order is best first.
        self.heap.into_sorted_vec()
    }
}

/// Exact in-memory vector index over `(team, dataset)` buckets.
#[derive(Debug)]
pub(crate) struct MemIndex {
    dim: usize,
    metric: Metric,
    /// team -> dataset -> bucket slot.
    teams: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    /// Bucket slots; `None` once emptied, reused through `free`.
    buckets: Vec<Option<Bucket>>,
    free: Vec<usize>,
    locations: HashMap<Arc<str>, Location>,
}

impl MemIndex {
    /// An empty index for vectors of `dim` values scored with `metric`.
    pub(crate) fn new(dim: usize, metric: Metric) -> Self {
        MemIndex {
            dim,
            metric,
            teams: HashMap::new(),
            buckets: Vec::new(),
            free: Vec::new(),
            locations: HashMap::new(),
        }
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.locations.len()
    }

    /// Number of non-empty `(team, dataset)` buckets.
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len() - self.free.len()
    }

    /// Inserts or replaces a record. A record that changes team or dataset
    /// leaves its old bucket; one that stays is overwritten in place.
    ///
    /// Fails (changing nothing) when `vector` does not have `dim` values;
    /// callers validate first, so this only guards against corrupt rows.
    pub(crate) fn upsert(
        &mut self,
        id: &str,
        team: &str,
        dataset: &str,
        collection: &str,
        vector: &[f32],
    ) -> Result<(), String> {
        if vector.len() != self.dim {
            return Err(format!(
                "record {id} has {} values, the index dimension is {}",
                vector.len(),
                self.dim
            ));
        }
        let inverse = match self.metric {
            Metric::Cosine => Some(inverse_norm(vector)),
            Metric::InnerProduct | Metric::L2 => None,
        };

        if let Some(&loc) = self.locations.get(id)
            && let Some(bucket) = self.buckets.get_mut(loc.bucket).and_then(Option::as_mut)
            && &*bucket.team == team
            && &*bucket.dataset == dataset
        {
            let start = loc.row * self.dim;
            bucket.vectors[start..start + self.dim].copy_from_slice(vector);
            if let Some(inverse) = inverse {
                bucket.inverse_norms[loc.row] = inverse;
            }
            let old = bucket.collection_of[loc.row];
            if *bucket.collections.names[old as usize] != *collection {
                let new = bucket.collections.acquire(collection);
                bucket.collections.release(old);
                bucket.collection_of[loc.row] = new;
            }
            return Ok(());
        }

        // New, or moving to another bucket.
        self.remove(id);
        let slot = self.bucket_slot(team, dataset);
        let Some(bucket) = self.buckets.get_mut(slot).and_then(Option::as_mut) else {
            return Err(format!("bucket slot {slot} vanished while inserting {id}"));
        };
        let id: Arc<str> = Arc::from(id);
        let row = bucket.len();
        bucket.ids.push(Arc::clone(&id));
        let collection_slot = bucket.collections.acquire(collection);
        bucket.collection_of.push(collection_slot);
        if let Some(inverse) = inverse {
            bucket.inverse_norms.push(inverse);
        }
        bucket.vectors.extend_from_slice(vector);
        self.locations.insert(id, Location { bucket: slot, row });
        Ok(())
    }

    /// Removes a record; returns whether it was present.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(loc) = self.locations.remove(id) else {
            return false;
        };
        let dim = self.dim;
        let Some(bucket) = self.buckets.get_mut(loc.bucket).and_then(Option::as_mut) else {
            return true;
        };
        let last = bucket.len() - 1;
        if loc.row != last {
            bucket
                .vectors
                .copy_within(last * dim..(last + 1) * dim, loc.row * dim);
        }
        bucket.vectors.truncate(last * dim);
        bucket.ids.swap_remove(loc.row);
        if !bucket.inverse_norms.is_empty() {
            bucket.inverse_norms.swap_remove(loc.row);
        }
        let collection = bucket.collection_of.swap_remove(loc.row);
        bucket.collections.release(collection);

        if loc.row != last {
            // The former last row now lives at `loc.row`.
            if let Some(moved) = bucket.ids.get(loc.row)
                && let Some(moved_loc) = self.locations.get_mut(&**moved)
            {
                moved_loc.row = loc.row;
            }
        }
        if bucket.ids.is_empty() {
            self.drop_bucket(loc.bucket);
        }
        true
    }

    /// Scores every row of `team`'s `datasets` that passes `filter` against
    /// `query` (already validated to `dim` values) and returns the best `k`,
    /// best first; equal scores in ascending id order.
    pub(crate) fn search(
        &self,
        query: &[f32],
        team: &str,
        datasets: &[String],
        filter: &CollectionFilter,
        k: usize,
    ) -> Vec<Found> {
        let resolved = match filter {
            CollectionFilter::Nothing => return Vec::new(),
            CollectionFilter::Any => Resolved::Any,
            CollectionFilter::Only(c) => Resolved::Only(c.iter().map(String::as_str).collect()),
            CollectionFilter::Except(c) => Resolved::Except(c.iter().map(String::as_str).collect()),
        };
        let Some(team_buckets) = self.teams.get(team) else {
            return Vec::new();
        };
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }

        // A dataset named twice must not be searched twice.
        let mut slots: Vec<usize> = datasets
            .iter()
            .filter_map(|d| team_buckets.get(d.as_str()).copied())
            .collect();
        slots.sort_unstable();
        slots.dedup();

        let scorer = Scorer::new(self.metric, query);
        let mut top = TopK::new(k);
        for slot in slots {
            let Some(bucket) = self.buckets.get(slot).and_then(Option::as_ref) else {
                continue;
            };
            let mask = bucket.collections.mask(&resolved);
            if let Some(mask) = &mask
                && !mask.iter().any(|allowed| *allowed)
            {
                continue;
            }
            self.scan_bucket(&scorer, slot, bucket, mask.as_deref(), &mut top);
        }

        top.into_sorted()
            .into_iter()
            .filter_map(|c| {
                let bucket = self.buckets.get(c.bucket)?.as_ref()?;
                let collection = bucket.collection_of.get(c.row)?;
                Some(Found {
                    id: Arc::clone(c.id),
                    dataset_id: Arc::clone(&bucket.dataset),
                    collection_id: Arc::clone(bucket.collections.names.get(*collection as usize)?),
                    score: c.score,
                })
            })
            .collect()
    }

    /// The hot loop: contiguous rows, one kernel call each, a float compare
    /// against the heap's worst before anything else.
    fn scan_bucket<'a>(
        &self,
        scorer: &Scorer<'_>,
        slot: usize,
        bucket: &'a Bucket,
        mask: Option<&[bool]>,
        top: &mut TopK<'a>,
    ) {
        let rows = bucket.vectors.chunks_exact(self.dim);
        for (row, vector) in rows.enumerate() {
            if let Some(mask) = mask
                && !mask[bucket.collection_of[row] as usize]
            {
                continue;
            }
            let inverse = bucket.inverse_norms.get(row).copied().unwrap_or(0.0);
            let score = scorer.score(vector, inverse);
            if score < top.threshold() {
                continue;
            }
            top.offer(Candidate {
                score,
                id: &bucket.ids[row],
                bucket: slot,
                row,
            });
        }
    }

    /// Releases the spare capacity left by growing the buckets one row at a
    /// time (up to half of the vector memory right after a bulk load).
    pub(crate) fn shrink_to_fit(&mut self) {
        for bucket in self.buckets.iter_mut().flatten() {
            bucket.vectors.shrink_to_fit();
            bucket.ids.shrink_to_fit();
            bucket.collection_of.shrink_to_fit();
            bucket.inverse_norms.shrink_to_fit();
        }
    }

    fn bucket_slot(&mut self, team: &str, dataset: &str) -> usize {
        if let Some(&slot) = self.teams.get(team).and_then(|d| d.get(dataset)) {
            return slot;
        }
        let team: Arc<str> = match self.teams.get_key_value(team) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(team),
        };
        let dataset: Arc<str> = Arc::from(dataset);
        let bucket = Bucket::new(Arc::clone(&team), Arc::clone(&dataset));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.buckets[slot] = Some(bucket);
                slot
            }
            None => {
                self.buckets.push(Some(bucket));
                self.buckets.len() - 1
            }
        };
        self.teams.entry(team).or_default().insert(dataset, slot);
        slot
    }

    fn drop_bucket(&mut self, slot: usize) {
        let Some(bucket) = self.buckets.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if let Entry::Occupied(mut datasets) = self.teams.entry(Arc::clone(&bucket.team)) {
            datasets.get_mut().remove(&*bucket.dataset);
            if datasets.get().is_empty() {
                datasets.remove();
            }
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    struct Row {
        id: String,
        team: String,
        dataset: String,
        collection: String,
        vector: Vec<f32>,
    }

    /// 600 rows over 2 teams x 3 datasets x 4 collections.
    fn fill(metric: Metric, dim: usize, seed: u64) -> (MemIndex, Vec<Row>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut index = MemIndex::new(dim, metric);
        let mut rows = Vec::new();
        for i in 0..600 {
            let row = Row {
                id: format!("r{i:04}"),
                team: format!("t{}", i % 2),
                dataset: format!("d{}", i % 3),
                collection: format!("c{}", i % 4),
                vector: random_vector(&mut rng, dim),
            };
            index
                .upsert(
                    &row.id,
                    &row.team,
                    &row.dataset,
                    &row.collection,
                    &row.vector,
                )
                .unwrap();
            rows.push(row);
        }
        (index, rows)
    }

    /// Checks `found` against a brute-force ranking in f64: the same number
    /// of hits, each score close to its reference, and the k-th best
    /// reference score reached (so nothing better was missed; ids may only
    /// differ where reference scores are within rounding of each other).
    fn assert_exact(metric: Metric, found: &[Found], rows: &[&Row], query: &[f32], k: usize) {
        let mut reference: Vec<(f64, &str)> = rows
            .iter()
            .map(|r| (metric.reference_score(query, &r.vector), r.id.as_str()))
            .collect();
        reference.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        reference.truncate(k);
        assert_eq!(found.len(), reference.len(), "{metric}: hit count");
        let by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), *r)).collect();
        for (hit, (want, _)) in found.iter().zip(&reference) {
            let row = by_id
                .get(&*hit.id)
                .unwrap_or_else(|| panic!("{metric}: hit {} is out of scope", hit.id));
            let own = metric.reference_score(query, &row.vector);
            let tolerance = 1e-4 * own.abs().max(1.0);
            assert!(
                (f64::from(hit.score) - own).abs() <= tolerance,
                "{metric}: {} scored {}, reference {own}",
                hit.id,
                hit.score
            );
            assert!(
                (own - want).abs() <= 2.0 * tolerance,
                "{metric}: rank mismatch, {} has {own}, expected {want}",
                hit.id
            );
            assert_eq!(&*hit.dataset_id, row.dataset);
            assert_eq!(&*hit.collection_id, row.collection);
        }
        for pair in found.windows(2) {
            assert!(
                pair[0].score > pair[1].score
                    || (pair[0].score == pair[1].score && pair[0].id < pair[1].id),
                "{metric}: not sorted: {pair:?}"
            );
        }
    }

    #[test]
    fn top_k_is_exact_for_every_metric() {
        let dim = 33; // not a multiple of any SIMD width: exercises the tails
        for (seed, metric) in [
            (1, Metric::Cosine),
            (2, Metric::InnerProduct),
            (3, Metric::L2),
        ] {
            let (index, rows) = fill(metric, dim, seed);
            let mut rng = StdRng::seed_from_u64(seed + 100);
            for k in [1, 7, 50, 1000] {
                let query = random_vector(&mut rng, dim);
                let datasets = vec!["d0".to_string(), "d2".to_string()];
                let found = index.search(&query, "t1", &datasets, &CollectionFilter::Any, k);
                let scope: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.team == "t1" && (r.dataset == "d0" || r.dataset == "d2"))
                    .collect();
                assert_exact(metric, &found, &scope, &query, k);
            }
        }
    }

    #[test]
    fn collection_filters_apply_before_ranking() {
        let (index, rows) = fill(Metric::Cosine, 16, 4);
        let query = random_vector(&mut StdRng::seed_from_u64(5), 16);
        let datasets = vec!["d0".to_string(), "d1".to_string(), "d2".to_string()];
        let only = CollectionFilter::Only(vec!["c1".into(), "c3".into(), "missing".into()]);
        let found = index.search(&query, "t1", &datasets, &only, 20);
        let scope: Vec<&Row> = rows
            .iter()
            .filter(|r| r.team == "t1" && (r.collection == "c1" || r.collection == "c3"))
            .collect();
        assert_exact(Metric::Cosine, &found, &scope, &query, 20);

        let except = CollectionFilter::Except(vec!["c1".into()]);
        let found = index.search(&query, "t1", &datasets, &except, 500);
        let scope: Vec<&Row> = rows
            .iter()
            .filter(|r| r.team == "t1" && r.collection != "c1")
            .collect();
        assert_exact(Metric::Cosine, &found, &scope, &query, 500);

        assert!(
            index
                .search(&query, "t1", &datasets, &CollectionFilter::Nothing, 5)
                .is_empty()
        );
        // Team t0 holds the even rows, so only collections c0 and c2.
        let none = CollectionFilter::Only(vec!["c1".into()]);
        assert!(index.search(&query, "t0", &datasets, &none, 5).is_empty());
    }

    #[test]
    fn scope_is_team_and_datasets_only() {
        let (index, _) = fill(Metric::L2, 8, 6);
        let query = vec![0.1; 8];
        let found = index.search(
            &query,
            "t0",
            &["d1".to_string()],
            &CollectionFilter::Any,
            1000,
        );
        assert_eq!(found.len(), 100);
        assert!(found.iter().all(|f| &*f.dataset_id == "d1"));
        let ids: HashSet<&str> = found.iter().map(|f| &*f.id).collect();
        // Team t0 holds the even rows.
        assert!(
            ids.iter()
                .all(|id| id[1..].parse::<u32>().unwrap() % 2 == 0)
        );
        assert!(
            index
                .search(
                    &query,
                    "nobody",
                    &["d1".to_string()],
                    &CollectionFilter::Any,
                    5
                )
                .is_empty()
        );
        // Naming a dataset twice does not duplicate hits.
        let twice = vec!["d1".to_string(), "d1".to_string()];
        assert_eq!(
            index
                .search(&query, "t0", &twice, &CollectionFilter::Any, 1000)
                .len(),
            100
        );
    }

    #[test]
    fn ties_break_by_id() {
        let mut index = MemIndex::new(2, Metric::InnerProduct);
        for id in ["b", "c", "a", "d"] {
            index.upsert(id, "t", "d", "c", &[1.0, 1.0]).unwrap();
        }
        let found = index.search(&[1.0, 0.0], "t", &["d".into()], &CollectionFilter::Any, 3);
        let ids: Vec<&str> = found.iter().map(|f| &*f.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn reupsert_moves_between_buckets() {
        let mut index = MemIndex::new(2, Metric::InnerProduct);
        index.upsert("x", "t", "d1", "c", &[1.0, 0.0]).unwrap();
        index.upsert("y", "t", "d1", "c", &[0.5, 0.0]).unwrap();
        index.upsert("x", "t", "d2", "c9", &[2.0, 0.0]).unwrap();
        assert_eq!(index.len(), 2);
        let any = CollectionFilter::Any;
        let in_d1 = index.search(&[1.0, 0.0], "t", &["d1".into()], &any, 10);
        assert_eq!(in_d1.len(), 1);
        assert_eq!(&*in_d1[0].id, "y");
        let in_d2 = index.search(&[1.0, 0.0], "t", &["d2".into()], &any, 10);
        assert_eq!(&*in_d2[0].id, "x");
        assert_eq!(&*in_d2[0].collection_id, "c9");
        assert_eq!(in_d2[0].score, 2.0);

        // Another team entirely: gone from t's view.
        index.upsert("x", "u", "d2", "c", &[3.0, 0.0]).unwrap();
        assert!(
            index
                .search(&[1.0, 0.0], "t", &["d2".into()], &any, 10)
                .is_empty()
        );
        assert_eq!(
            index.search(&[1.0, 0.0], "u", &["d2".into()], &any, 10)[0].score,
            3.0
        );
        assert_eq!(index.bucket_count(), 2);

        // Same bucket, new collection and vector: updated in place.
        index.upsert("y", "t", "d1", "c2", &[0.0, 4.0]).unwrap();
        let hit = &index.search(&[0.0, 1.0], "t", &["d1".into()], &any, 1)[0];
        assert_eq!((&*hit.collection_id, hit.score), ("c2", 4.0));
        let old = CollectionFilter::Only(vec!["c".into()]);
        assert!(
            index
                .search(&[0.0, 1.0], "t", &["d1".into()], &old, 1)
                .is_empty()
        );
    }

    #[test]
    fn delete_keeps_buckets_dense_and_consistent() {
        let (mut index, rows) = fill(Metric::Cosine, 8, 7);
        let mut alive: Vec<&Row> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if i % 3 == 0 {
                assert!(index.remove(&row.id));
            } else {
                alive.push(row);
            }
        }
        assert!(!index.remove("r0000"));
        assert_eq!(index.len(), alive.len());
        let query = random_vector(&mut StdRng::seed_from_u64(8), 8);
        let datasets = vec!["d0".to_string(), "d1".to_string(), "d2".to_string()];
        for team in ["t0", "t1"] {
            let found = index.search(&query, team, &datasets, &CollectionFilter::Any, 1000);
            let scope: Vec<&Row> = alive.iter().copied().filter(|r| r.team == team).collect();
            assert_exact(Metric::Cosine, &found, &scope, &query, 1000);
        }
        // Emptying everything frees every bucket and slot.
        for row in &alive {
            assert!(index.remove(&row.id));
        }
        assert_eq!((index.len(), index.bucket_count()), (0, 0));
        assert!(index.teams.is_empty());
        index.upsert("again", "t0", "d0", "c", &[1.0; 8]).unwrap();
        assert_eq!(index.bucket_count(), 1);
    }

    #[test]
    fn collections_are_released_when_empty() {
        let mut index = MemIndex::new(1, Metric::L2);
        for i in 0..100 {
            index
                .upsert(&format!("r{i}"), "t", "d", &format!("c{i}"), &[1.0])
                .unwrap();
        }
        index.upsert("keep", "t", "d", "c", &[1.0]).unwrap();
        for i in 0..100 {
            assert!(index.remove(&format!("r{i}")));
        }
        let bucket = index.buckets.iter().flatten().next().unwrap();
        assert_eq!(bucket.collections.slots.len(), 1);
    }

    #[test]
    fn wrong_dimension_is_refused() {
        let mut index = MemIndex::new(3, Metric::L2);
        assert!(index.upsert("x", "t", "d", "c", &[1.0]).is_err());
        assert_eq!(index.len(), 0);
    }
}
