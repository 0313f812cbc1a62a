//! One indexing memory budget for the whole node, shared by every partition
//! writer (docs/ingest-profile.md, "Memory for many tenants").
//!
//! A tantivy writer's heap is fixed when it opens and bounds what its
//! indexing threads buffer before they flush a segment. A heap per writer
//! (256 MiB each) made memory grow with the number of tenants writing at
//! once: 100 tenants took 1.35 GiB. Here each open writer reserves its heap
//! from the node's budget instead:
//!
//! - a writer opens with its fair share, `budget / writers open`, within
//!   `[MIN_WRITER_BYTES, writer_heap_bytes]`, so one busy tenant alone
//!   still gets a big heap and `writer_threads` threads, and a hundred
//!   small ones get a small heap and one thread each;
//! - when the budget cannot hold another writer, the indexer commits and
//!   closes the writer holding more than its share (else the least recently
//!   used one), so the sum of the heaps never passes the budget: memory is
//!   flat in the number of tenants, and a tenant that comes back reopens
//!   at the share of the moment.
//!
//! The budget is the node's: every indexer of one catalog (the embedded
//! collector's, or each Kafka shard's) draws from it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Smallest heap a writer opens with. tantivy refuses less than 15 MB per
/// indexing thread; a little above that keeps its flushes from being
/// tiny, and its term hash table (4 MiB from a 12 MiB heap up) fits.
pub const MIN_WRITER_BYTES: usize = 24 * 1024 * 1024;

/// Heap of one indexing thread below which a writer gets one thread: two
/// threads on a small heap would each flush half-sized segments.
const MIN_THREAD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct IndexBudget {
    total: AtomicUsize,
    reserved: AtomicUsize,
    writers: AtomicUsize,
}

/// What a writer about to open may take, or that it must wait for a
/// writer to be closed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Open with this heap and this many threads (already reserved).
    Open { heap: usize, threads: usize },
    /// The budget is full: close a writer and ask again.
    Full,
}

/// The budget's state, for `/metrics` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: usize,
    pub reserved: usize,
    pub writers: usize,
}

impl IndexBudget {
    pub fn new(total: usize) -> IndexBudget {
        let budget = IndexBudget::default();
        budget.set_total(total);
        budget
    }

    /// The node's configured budget (`index.memory_budget_bytes`); never
    /// below one writer's minimum, so a writer can always open.
    pub fn set_total(&self, total: usize) {
        self.total
            .store(total.max(MIN_WRITER_BYTES), Ordering::Release);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            total: self.total.load(Ordering::Acquire),
            reserved: self.reserved.load(Ordering::Acquire),
            writers: self.writers.load(Ordering::Acquire),
        }
    }

    /// A writer's fair share when `wanted` writers are in use (open, or
    /// written to lately), within `[MIN_WRITER_BYTES, max_heap]`. Counting
    /// the recently used ones, not only the open ones, keeps a few tenants
    /// taking turns from closing each other to reopen at a full heap.
    pub fn share(&self, max_heap: usize, wanted: usize) -> usize {
        let total = self.total.load(Ordering::Acquire);
        let wanted = wanted.max(self.writers.load(Ordering::Acquire) + 1);
        (total / wanted).clamp(MIN_WRITER_BYTES, max_heap.max(MIN_WRITER_BYTES))
    }

    /// Reserves a heap for a writer about to open: its fair share, or as
    /// much of it as is free if that is still at least the minimum.
    /// `max_threads` is the configured thread count (`writer_threads`).
    pub fn reserve(&self, max_heap: usize, max_threads: usize, wanted: usize) -> Grant {
        let share = self.share(max_heap, wanted);
        let total = self.total.load(Ordering::Acquire);
        let mut reserved = self.reserved.load(Ordering::Acquire);
        loop {
            let free = total.saturating_sub(reserved);
            let heap = share.min(free);
            // The very first writer always opens, whatever the budget.
            if heap < MIN_WRITER_BYTES && reserved > 0 {
                return Grant::Full;
            }
            let heap = heap.max(MIN_WRITER_BYTES);
            match self.reserved.compare_exchange_weak(
                reserved,
                reserved + heap,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.writers.fetch_add(1, Ordering::AcqRel);
                    let threads = (heap / MIN_THREAD_BYTES).clamp(1, max_threads.max(1));
                    return Grant::Open { heap, threads };
                }
                Err(now) => reserved = now,
            }
        }
    }

    /// Reserves the minimum heap even past the budget: for an indexer
    /// with no writer of its own left to close (another indexer of the
    /// node holds the budget).
    pub fn reserve_over(&self) -> usize {
        self.reserved.fetch_add(MIN_WRITER_BYTES, Ordering::AcqRel);
        self.writers.fetch_add(1, Ordering::AcqRel);
        MIN_WRITER_BYTES
    }

    /// Gives back the heap of a writer that closed.
    pub fn release(&self, heap: usize) {
        let _ = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                Some(r.saturating_sub(heap))
            });
        let _ = self
            .writers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(1))
            });
    }
}

/// A writer's heap, given back to the budget when the writer closes
/// (however it closes: idle, purge, eviction, shutdown).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<IndexBudget>,
    heap: usize,
}

impl Reservation {
    pub fn new(budget: &Arc<IndexBudget>, heap: usize) -> Reservation {
        Reservation {
            budget: Arc::clone(budget),
            heap,
        }
    }

    pub fn heap(&self) -> usize {
        self.heap
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.heap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn open(grant: Grant) -> (usize, usize) {
        match grant {
            Grant::Open { heap, threads } => (heap, threads),
            Grant::Full => panic!("budget full"),
        }
    }

    #[test]
    fn one_writer_alone_gets_the_configured_heap_and_threads() {
        let budget = IndexBudget::new(512 * MIB);
        assert_eq!(open(budget.reserve(256 * MIB, 2, 1)), (256 * MIB, 2));
        assert_eq!(budget.usage().reserved, 256 * MIB);
        assert_eq!(budget.usage().writers, 1);
    }

    #[test]
    fn many_writers_share_the_budget_and_the_sum_never_passes_it() {
        let budget = IndexBudget::new(512 * MIB);
        let mut heaps = Vec::new();
        // Forty partitions wanted at once: more than fit at the minimum.
        while let Grant::Open { heap, threads } = budget.reserve(256 * MIB, 2, 40) {
            assert!(heap >= MIN_WRITER_BYTES);
            assert_eq!(threads, 1, "{heap}");
            heaps.push(heap);
            assert!(heaps.len() < 100, "never full");
        }
        let sum: usize = heaps.iter().sum();
        assert!(sum <= 512 * MIB, "{sum}");
        assert_eq!(heaps.len(), 512 / 24, "{heaps:?}");
        // Closing one makes room for another.
        budget.release(heaps[0]);
        assert!(matches!(
            budget.reserve(256 * MIB, 2, 40),
            Grant::Open { .. }
        ));
        assert_eq!(budget.usage().writers, heaps.len());
    }

    #[test]
    fn writers_taking_turns_count_as_wanted_and_get_their_share() {
        let budget = IndexBudget::new(512 * MIB);
        // Three tenants written to lately, one open: each gets a third,
        // not the whole heap it would get alone.
        let (heap, _) = open(budget.reserve(256 * MIB, 2, 3));
        assert_eq!(heap, 512 * MIB / 3);
    }

    #[test]
    fn a_reservation_gives_its_heap_back_when_dropped() {
        let budget = Arc::new(IndexBudget::new(512 * MIB));
        let (heap, _) = open(budget.reserve(256 * MIB, 2, 1));
        let reservation = Reservation::new(&budget, heap);
        assert_eq!(budget.usage().reserved, heap);
        drop(reservation);
        assert_eq!(budget.usage().reserved, 0);
        assert_eq!(budget.usage().writers, 0);
    }

    #[test]
    fn a_small_heap_gets_one_thread() {
        let budget = IndexBudget::new(100 * MIB);
        let (heap, threads) = open(budget.reserve(256 * MIB, 2, 3));
        assert!(heap < MIN_THREAD_BYTES * 2, "{heap}");
        assert_eq!(threads, 1);
    }

    #[test]
    fn a_budget_below_one_writer_still_opens_one() {
        let budget = IndexBudget::new(1);
        assert_eq!(open(budget.reserve(256 * MIB, 2, 1)).0, MIN_WRITER_BYTES);
        assert_eq!(budget.reserve(256 * MIB, 2, 1), Grant::Full);
    }
}
