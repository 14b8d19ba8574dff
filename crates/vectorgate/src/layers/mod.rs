//! Layers: stores that wrap another store and add one behaviour, keeping
//! the [`VectorStore`](crate::VectorStore) contract (as OpenDAL's layers and
//! `object_store`'s `LimitStore` do).
//!
//! - [`lanes`]: separate concurrency budgets for reads and writes, so a
//!   flood of writes never takes the connections a recall needs.

pub mod lanes;

pub use lanes::{LaneLimits, LanedStore};
