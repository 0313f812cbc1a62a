//! Generated lines as the indexer receives them: one WAL record of a
//! file shipped by an agent (benches that build an index through the
//! collector's own `Indexer`).

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use nightowl::config::IndexConfig;
use nightowl::index::{Catalog, Checkpoint, Downstream, Indexer};
use nightowl::ingest::{Durable, IngestRecord};
use nightowl::telemetry::Metrics;

/// An indexer of `catalog` with the default settings and nothing
/// downstream (no rules, no pattern miner), from an empty checkpoint.
pub fn indexer(catalog: &Arc<Catalog>, dir: &Path) -> Indexer {
    Indexer::new(
        Arc::clone(catalog),
        IndexConfig::default(),
        dir.to_path_buf(),
        Checkpoint::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(Metrics::default()),
        Downstream::default(),
    )
}

/// `lines` as the durable record at WAL `position`, received at
/// `received_unix_nanos`; returns it and the position after it.
pub fn record(lines: Bytes, position: u64, received_unix_nanos: i64) -> (Durable, u64) {
    let end = position + lines.len() as u64 + 100;
    let durable = Durable {
        start: position,
        end,
        record: IngestRecord {
            tenant: "default".into(),
            agent_id: "bench".into(),
            source_id: "s".into(),
            source: "/var/log/nginx/access.log".into(),
            host: "web-1".into(),
            format: "combined".into(),
            first_offset: 0,
            received_unix_nanos,
            lines,
            resized: None,
        },
        received: None,
    };
    (durable, end)
}
