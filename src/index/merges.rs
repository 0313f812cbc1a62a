//! When the live writers merge segments: tantivy's log merge policy, held
//! back while ingest is behind.
//!
//! Every commit round writes a segment per partition, and the log policy
//! merges them as they pile up, a level at a time: each line is rewritten
//! once per level. During a burst that leaves the indexer behind (its
//! lines wait longer than a commit interval), a merge takes a core from the
//! lines still waiting to become searchable, for segments that will be
//! merged again soon. So while behind, merges wait, up to
//! [`MAX_HELD_SEGMENTS`] segments a partition (a search opens each one, and
//! an overload that never ends must not grow them without bound); the first
//! commit after the indexer caught up lets the policy merge them. Lucene's
//! merge scheduler and Elasticsearch's merge throttling trade the same way,
//! the other way round: they slow indexing for merges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};
use tantivy::SegmentMeta;

/// Segments a partition may hold before merges go on while behind: twice
/// what the log policy merges at once.
pub const MAX_HELD_SEGMENTS: usize = 16;

/// Whether the indexer is behind: shared by the indexer, which sets it
/// before each commit, and every live writer's merge policy.
#[derive(Clone, Debug, Default)]
pub struct Behind(Arc<AtomicBool>);

impl Behind {
    pub fn set(&self, behind: bool) {
        self.0.store(behind, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The merge policy of a live writer.
    pub fn policy(&self) -> Box<dyn MergePolicy> {
        Box::new(HeldWhileBehind {
            inner: LogMergePolicy::default(),
            behind: self.clone(),
        })
    }
}

#[derive(Debug)]
struct HeldWhileBehind {
    inner: LogMergePolicy,
    behind: Behind,
}

impl MergePolicy for HeldWhileBehind {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        if self.behind.get() && segments.len() < MAX_HELD_SEGMENTS {
            return Vec::new();
        }
        self.inner.compute_merge_candidates(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::index::SegmentId;
    use tantivy::Index;

    fn segments(index: &Index, n: usize) -> Vec<SegmentMeta> {
        (0..n)
            .map(|_| index.new_segment_meta(SegmentId::generate_random(), 100_000))
            .collect()
    }

    #[test]
    fn merges_wait_while_behind_up_to_the_cap() {
        let index = Index::create_in_ram(crate::index::schema::LogSchema::new().schema);
        let behind = Behind::default();
        let policy = behind.policy();
        let nine = segments(&index, 9);
        assert!(
            !policy.compute_merge_candidates(&nine).is_empty(),
            "caught up: the log policy merges nine equal segments"
        );
        behind.set(true);
        assert!(policy.compute_merge_candidates(&nine).is_empty());
        let many = segments(&index, MAX_HELD_SEGMENTS);
        assert!(
            !policy.compute_merge_candidates(&many).is_empty(),
            "at the cap merges go on, behind or not"
        );
        behind.set(false);
        assert!(!policy.compute_merge_candidates(&nine).is_empty());
    }
}
