//! The tantivy index: schema, day partitions per tenant, the indexer that
//! commits with WAL positions, and search.

pub mod backtest;
pub mod budget;
pub mod catalog;
pub mod compact;
pub mod cut;
pub mod derived;
pub mod lifecycle;
pub mod lines;
pub mod merges;
pub mod pattern_top;
pub mod query;
pub mod rollback;
pub mod scan;
pub mod schema;
pub mod search;
pub mod writer;

pub use catalog::Catalog;
pub use writer::{Checkpoint, Downstream, Indexer};

use serde::Deserialize;

/// `[index]` in the collector's config (composed by `config.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Largest tantivy heap of one partition writer, bytes: what a tenant
    /// writing alone gets. Default 256 MiB.
    pub writer_heap_bytes: usize,
    /// Indexing memory of the whole node, bytes, shared by every partition
    /// writer (`budget.rs`): with many tenants writing at once each writer
    /// gets a smaller heap, and past it the least recently used writer is
    /// committed and closed. Default 512 MiB.
    pub memory_budget_bytes: usize,
    /// tantivy indexing threads per writer. Default 1: documents reach
    /// tantivy a WAL record at a time, and one thread indexes the 1M-line
    /// acceptance file with half a core to spare; a second thread made
    /// twice the segments, and merging them cost 13% more CPU for the
    /// file (docs/ingest-profile.md).
    pub writer_threads: usize,
    /// Commit (and make searchable) at least this often, ms. Default 1000.
    pub commit_interval_ms: u64,
    /// Commit early after this many documents. Default 500000.
    pub commit_docs: usize,
    /// Close the writer of a day partition idle this long, seconds. Default 600.
    pub idle_writer_secs: u64,
    /// Compact a day partition on its own this long after the day ended
    /// (UTC), seconds; 0 turns it off (`nightowl index compact` still
    /// works). Default 3600.
    pub compact_after_secs: u64,
    /// How often the collector looks for closed days to compact, seconds.
    /// Default 600.
    pub compact_check_secs: u64,
    /// zstd level of a compacted partition's doc store (1-22): higher is
    /// smaller and slower to compact, reading is as fast. Default 17.
    pub compact_zstd_level: i32,
}

impl IndexConfig {
    /// What `compact.rs` needs of this.
    pub fn compact_settings(&self) -> compact::CompactSettings {
        compact::CompactSettings {
            zstd_level: self.compact_zstd_level,
            closed_after: (self.compact_after_secs > 0)
                .then(|| std::time::Duration::from_secs(self.compact_after_secs)),
            check_every: std::time::Duration::from_secs(self.compact_check_secs.max(1)),
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            writer_heap_bytes: 256 * 1024 * 1024,
            memory_budget_bytes: 512 * 1024 * 1024,
            writer_threads: 1,
            commit_interval_ms: 1000,
            commit_docs: 500_000,
            idle_writer_secs: 600,
            compact_after_secs: 3600,
            compact_check_secs: 600,
            compact_zstd_level: 17,
        }
    }
}
