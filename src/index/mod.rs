//! The tantivy index: schema, day partitions per tenant, the indexer that
//! commits with WAL positions, and search.

pub mod backtest;
pub mod catalog;
pub mod lifecycle;
pub mod scan;
pub mod schema;
pub mod search;
pub mod writer;

pub use catalog::Catalog;
pub use writer::{Checkpoint, Indexer};
