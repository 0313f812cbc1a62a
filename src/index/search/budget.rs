//! A request's budget: its deadline and cancellation, checked between
//! partitions and every few thousand documents inside a segment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::{DocId, DocSet, SegmentReader, COLLECT_BLOCK_BUFFER_LEN, TERMINATED};

use super::{QueryLimits, SearchError};

/// One request's allowance: its query limits, its deadline, and a flag
/// that stops it when the client is gone. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: QueryLimits,
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
}

impl Budget {
    /// `limits`, with a deadline `limits.timeout_ms` from now.
    pub fn new(limits: QueryLimits) -> Self {
        let deadline = (limits.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(limits.timeout_ms));
        Budget {
            limits,
            deadline,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// No shape limits and no deadline (internal callers).
    pub fn unlimited() -> Self {
        Budget::new(QueryLimits::unlimited())
    }

    /// A budget whose deadline has already passed; for tests of what a
    /// timed-out search answers.
    pub fn expired(limits: QueryLimits) -> Self {
        Budget {
            limits,
            deadline: Some(Instant::now()),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Stops the search when dropped: the API holds one while it awaits
    /// the blocking search, so a client that hangs up frees the thread.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Arc::clone(&self.cancelled))
    }

    /// Err once the deadline passed or the search was cancelled.
    pub fn check(&self) -> Result<(), SearchError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(SearchError::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(SearchError::Timeout {
                limit_ms: self.limits.timeout_ms,
            }),
            _ => Ok(()),
        }
    }

    /// The error of a search that failed: the budget's own when it ran
    /// out (the collector can only say so through a tantivy error).
    pub(super) fn explain(&self, e: tantivy::TantivyError) -> SearchError {
        match self.check() {
            Err(out) => out,
            Ok(()) => e.into(),
        }
    }
}

/// See [`Budget::cancel_on_drop`].
pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Documents between two looks at the clock inside a segment: a clock
/// read costs ~20 ns, a batch of 4096 documents far more.
pub(super) const DOCS_PER_CHECK: usize = 4096;

/// Wraps any collector so a segment's scan stops at the budget's deadline.
/// tantivy's own loop cannot be interrupted (a segment collector returns
/// nothing), so this one drives the scorer itself, in tantivy's batches.
pub struct Deadlined<C> {
    inner: C,
    budget: Budget,
}

impl<C> Deadlined<C> {
    pub fn new(inner: C, budget: &Budget) -> Self {
        Deadlined {
            inner,
            budget: budget.clone(),
        }
    }
}

impl<C: Collector> Collector for Deadlined<C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn check_schema(&self, schema: &tantivy::schema::Schema) -> tantivy::Result<()> {
        self.inner.check_schema(schema)
    }

    fn for_segment(&self, ord: u32, reader: &SegmentReader) -> tantivy::Result<C::Child> {
        self.inner.for_segment(ord, reader)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<C::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        let stop = |budget: &Budget| {
            budget
                .check()
                .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))
        };
        stop(&self.budget)?;
        let mut child = self.inner.for_segment(segment_ord, reader)?;
        let mut scorer = weight.scorer(reader, 1.0)?;
        let alive = reader.alive_bitset();
        let mut since_check = 0usize;
        if self.inner.requires_scoring() {
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    child.collect(doc, scorer.score());
                }
                since_check += 1;
                if since_check == DOCS_PER_CHECK {
                    since_check = 0;
                    stop(&self.budget)?;
                }
                doc = scorer.advance();
            }
        } else {
            let mut buffer: [DocId; COLLECT_BLOCK_BUFFER_LEN] = [0; COLLECT_BLOCK_BUFFER_LEN];
            loop {
                let n = scorer.fill_buffer(&mut buffer);
                if n == 0 {
                    break;
                }
                match alive {
                    None => child.collect_block(&buffer[..n]),
                    Some(alive) => {
                        for &doc in &buffer[..n] {
                            if alive.is_alive(doc) {
                                child.collect(doc, 0.0);
                            }
                        }
                    }
                }
                since_check += n;
                if since_check >= DOCS_PER_CHECK {
                    since_check = 0;
                    stop(&self.budget)?;
                }
            }
        }
        Ok(child.harvest())
    }
}
