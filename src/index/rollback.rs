//! Dropping a shard's lines from a log position on: how a Kafka indexer
//! gives back a commit interval that another indexer indexed again
//! (docs/kafka.md, "Exactly once"). Every line records the position of the
//! record it came in (`log_position`), so the lines of records at or past
//! a position are one range query, deleted by one commit per partition.

use std::ops::Bound;

use anyhow::{Context, Result};
use tantivy::collector::Count;
use tantivy::indexer::NoMergePolicy;
use tantivy::query::RangeQuery;
use tantivy::{TantivyDocument, Term};

use super::catalog::{Catalog, CommitPayload};
use crate::time::day_name;
use crate::wal::Position;

/// What [`rollback_shard`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RolledBack {
    /// Lines deleted.
    pub lines: u64,
    /// Partitions whose commit was lowered.
    pub partitions: u32,
    /// Partitions holding records at or past the position that cannot be
    /// cut: created before lines recorded their position.
    pub without_positions: Vec<String>,
}

/// The largest position any partition of `shard` claims to hold records
/// below (their commit payloads): 0 when it has none.
pub fn shard_end(catalog: &Catalog, shard: u32) -> Result<Position> {
    let mut end = 0;
    for partition in catalog.all().into_iter().filter(|p| p.shard == shard) {
        end = end.max(partition.committed_payload()?.wal_position);
    }
    Ok(end)
}

/// Deletes every line of `shard` that came in a record at or past `from`,
/// and lowers each partition's commit payload to `from`, so a later owner
/// of the records indexes them again into it (a partition skips records
/// below its payload). Only partitions whose payload is above `from` can
/// hold such lines. The caller holds no writer of the shard.
pub fn rollback_shard(catalog: &Catalog, shard: u32, from: Position) -> Result<RolledBack> {
    let mut done = RolledBack::default();
    for partition in catalog.all().into_iter().filter(|p| p.shard == shard) {
        let payload = partition.committed_payload()?;
        if payload.wal_position <= from {
            continue;
        }
        let name = format!(
            "{}/{}.shard{}",
            partition.tenant,
            day_name(partition.day),
            partition.shard
        );
        let Some(field) = partition.schema.log_position else {
            done.without_positions.push(name);
            continue;
        };
        let query = RangeQuery::new(
            Bound::Included(Term::from_field_u64(field, from)),
            Bound::Unbounded,
        );
        partition
            .reader
            .reload()
            .with_context(|| format!("reloading the reader of {name}"))?;
        let doomed = partition
            .reader
            .searcher()
            .search(&query, &Count)
            .with_context(|| format!("counting the lines of {name} from position {from}"))?;
        // The smallest heap tantivy takes: deletes need next to none.
        let mut writer = partition
            .index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .with_context(|| format!("opening a writer of {name}"))?;
        // A rollback runs inside a rebalance or before the API serves: it
        // deletes and leaves merging to the shard's own writer.
        writer.set_merge_policy(Box::new(NoMergePolicy));
        writer
            .delete_query(Box::new(query))
            .with_context(|| format!("deleting the lines of {name} from position {from}"))?;
        let mut prepared = writer
            .prepare_commit()
            .with_context(|| format!("preparing the commit of {name}"))?;
        prepared.set_payload(&serde_json::to_string(&CommitPayload {
            wal_position: from,
            compacted: false,
        })?);
        prepared
            .commit()
            .with_context(|| format!("committing {name}"))?;
        writer
            .wait_merging_threads()
            .with_context(|| format!("closing the writer of {name}"))?;
        partition
            .reader
            .reload()
            .with_context(|| format!("reloading the reader of {name}"))?;
        done.lines += doomed as u64;
        done.partitions += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use bytes::Bytes;
    use tantivy::Index;

    use super::*;
    use crate::index::search::{count, TimeRange};
    use crate::index::writer::{Checkpoint, Downstream, Indexer};
    use crate::index::IndexConfig;
    use crate::ingest::{Durable, IngestRecord};
    use crate::telemetry::Metrics;

    /// Kafka partition 0's shard.
    const SHARD: u32 = 1;

    fn indexer(catalog: &Arc<Catalog>, dir: &std::path::Path) -> Indexer {
        let start = Checkpoint::load(dir).expect("loads").unwrap_or_default();
        Indexer::new(
            Arc::clone(catalog),
            IndexConfig {
                writer_threads: 1,
                ..IndexConfig::default()
            },
            dir.to_path_buf(),
            start,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Metrics::default()),
            Downstream {
                shard: SHARD,
                ..Downstream::default()
            },
        )
    }

    /// Record `offset`: three lines of source `s<offset % 2>`, offsets
    /// going on where its last record ended.
    fn record(offset: u64, now: i64) -> Durable {
        let source = offset % 2;
        let lines = format!("r{offset} a\nr{offset} b\nr{offset} c\n");
        Durable {
            start: offset,
            end: offset + 1,
            record: IngestRecord {
                tenant: "t".into(),
                agent_id: "a".into(),
                source_id: format!("s{source}"),
                source: format!("/var/log/{source}.log"),
                host: "h".into(),
                format: "raw".into(),
                first_offset: (offset / 2) * lines.len() as u64,
                received_unix_nanos: now,
                lines: Bytes::from(lines),
                resized: None,
            },
            received: None,
        }
    }

    /// A catalog and a shard directory, with `offsets` indexed and
    /// committed at `now`.
    fn shard_with(offsets: &[u64], now: i64) -> (tempfile::TempDir, Arc<Catalog>, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&root.path().join("index")).expect("catalog");
        let dir = root.path().join("kafka").join("p0");
        std::fs::create_dir_all(&dir).expect("shard dir");
        index(&catalog, &dir, offsets, now);
        (root, catalog, dir)
    }

    fn index(catalog: &Arc<Catalog>, dir: &std::path::Path, offsets: &[u64], now: i64) {
        let mut shard = indexer(catalog, dir);
        for &offset in offsets {
            shard.index(record(offset, now)).expect("indexes");
        }
        shard.commit().expect("commits");
        shard.finish().expect("finishes");
    }

    fn all(catalog: &Catalog) -> u64 {
        count(
            catalog,
            "t",
            "*",
            TimeRange {
                since: 0,
                until: i64::MAX,
            },
        )
        .expect("counts")
    }

    #[test]
    fn a_rollback_deletes_the_lines_from_a_position_on_and_they_index_again_once() {
        let now = crate::time::now_nanos();
        let offsets: Vec<u64> = (0..10).collect();
        let (_root, catalog, dir) = shard_with(&offsets, now);
        assert_eq!(all(&catalog), 30);
        assert_eq!(shard_end(&catalog, SHARD).expect("end"), 10);

        // Another indexer started at offset 7 (records 7, 8, 9 are its).
        let done = rollback_shard(&catalog, SHARD, 7).expect("rolls back");
        assert_eq!((done.lines, done.partitions), (9, 1));
        assert!(done.without_positions.is_empty());
        assert_eq!(all(&catalog), 21);
        assert_eq!(shard_end(&catalog, SHARD).expect("end"), 7);
        assert!(Checkpoint::roll_back(&dir, 7).expect("moves back"));
        let checkpoint = Checkpoint::load(&dir).expect("loads").expect("exists");
        assert_eq!(checkpoint.wal_position, 7);
        // Source s0 was last moved by record 8, s1 by record 9: both are
        // past 7, so neither offset is trusted any more.
        assert!(checkpoint.sources.is_empty(), "{checkpoint:?}");
        // Again: nothing more to do.
        assert_eq!(
            rollback_shard(&catalog, SHARD, 7).expect("again"),
            RolledBack::default()
        );
        assert!(!Checkpoint::roll_back(&dir, 7).expect("again"));

        // This indexer gets the partition back from 7: each line once.
        index(&catalog, &dir, &offsets[7..], now);
        assert_eq!(all(&catalog), 30);
    }

    #[test]
    fn a_source_offset_moved_only_before_the_rollback_is_kept() {
        let (_root, _catalog, dir) = shard_with(&[0, 1, 2, 4, 6], crate::time::now_nanos());
        assert!(Checkpoint::roll_back(&dir, 3).expect("moves back"));
        let checkpoint = Checkpoint::load(&dir).expect("loads").expect("exists");
        // s1 moved last at record 1, below 3: still right. s0 at 6: dropped.
        assert_eq!(checkpoint.sources.keys().collect::<Vec<_>>(), ["t/a/s1"]);
        assert_eq!(checkpoint.source_positions.get("t/a/s1"), Some(&1));
    }

    #[test]
    fn a_partition_from_before_positions_is_left_as_it_is_and_named() {
        let root = tempfile::tempdir().expect("tempdir");
        let index_root = root.path().join("index");
        let now = crate::time::now_nanos();
        let day = crate::time::day_of(now);
        {
            // The current layout without its last field, as created before it.
            let current = crate::index::schema::LogSchema::new();
            let mut old = tantivy::schema::Schema::builder();
            for (_, entry) in current.schema.fields() {
                if entry.name() != "log_position" {
                    old.add_field(entry.clone());
                }
            }
            let old = crate::index::schema::LogSchema::from_schema(old.build()).expect("schema");
            let catalog = Catalog::open(&index_root).expect("catalog");
            let path = catalog.partition_dir("t", day, SHARD);
            std::fs::create_dir_all(&path).expect("dir");
            let index = Index::create_in_dir(&path, old.schema.clone()).expect("old index");
            let mut writer = index.writer::<TantivyDocument>(15_000_000).expect("writer");
            writer
                .add_document(old.document(None, "old line", now, "h", "s"))
                .expect("adds");
            let mut prepared = writer.prepare_commit().expect("prepares");
            prepared.set_payload(r#"{"wal_position":5}"#);
            prepared.commit().expect("commits");
        }
        let catalog = Catalog::open(&index_root).expect("reopens");
        assert!(catalog.all()[0].schema.log_position.is_none());
        let done = rollback_shard(&catalog, SHARD, 2).expect("rolls back");
        assert_eq!(done.lines, 0);
        assert_eq!(done.without_positions.len(), 1, "{done:?}");
        assert_eq!(all(&catalog), 1, "its lines stay");
        assert_eq!(
            shard_end(&catalog, SHARD).expect("end"),
            5,
            "and its payload"
        );
    }
}
