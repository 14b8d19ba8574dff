//! Helpers shared by the examples. See `README.md` in this folder.
//!
//! - [`random_records`], [`random_vector`]: test data for `quickstart` and
//!   `failover`;
//! - [`http_api`]: the configuration, stores and axum router of the
//!   `service` example (here so that `tests/service.rs` can run the router
//!   in-process).

pub mod http_api;

use rand::Rng;
use rand::rngs::StdRng;
use vectorgate::Record;

/// `n` records with random vectors, spread over `teams` teams and
/// `datasets` datasets per team.
pub fn random_records(
    rng: &mut StdRng,
    n: usize,
    dim: usize,
    teams: usize,
    datasets: usize,
) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            id: format!("doc-{i}"),
            team_id: format!("team-{}", i % teams),
            dataset_id: format!("ds-{}", (i / teams) % datasets),
            collection_id: format!("col-{}", i % 7),
            vector: random_vector(rng, dim),
            created_at_ms: 0,
            payload: None,
        })
        .collect()
}

/// A random vector with values in [-1, 1).
pub fn random_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()
}
