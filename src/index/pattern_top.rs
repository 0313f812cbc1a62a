//! Lines per pattern among a query's matches, with a time series each
//! (`GET /api/v1/patterns`). The `pattern` field is indexed, not a fast
//! field: per segment the matching documents are marked with their time
//! bucket, then the field's terms (one per pattern, a few thousand at most)
//! are walked and their postings tallied against the marks: one pass over
//! the matches and one over the field's postings, no stored line read.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED};

/// Per pattern id: lines, and lines per bucket.
pub type Tally = HashMap<String, (u64, Vec<u64>)>;

/// Marks no bucket: the document did not match.
const NONE: u32 = u32::MAX;

pub struct PatternTally {
    pub pattern: Field,
    /// Bucket 0 starts here (unix nanos); `buckets` of `width` nanos.
    pub start: i64,
    pub width: i64,
    pub buckets: usize,
}

pub struct SegmentTally {
    reader: SegmentReader,
    pattern: Field,
    time: Option<tantivy::columnar::Column<tantivy::DateTime>>,
    start: i64,
    width: i64,
    buckets: usize,
    marks: Vec<u32>,
    matched: usize,
}

impl Collector for PatternTally {
    type Fruit = Tally;
    type Child = SegmentTally;

    fn for_segment(&self, _: u32, reader: &SegmentReader) -> tantivy::Result<SegmentTally> {
        Ok(SegmentTally {
            reader: reader.clone(),
            pattern: self.pattern,
            time: reader.fast_fields().date("timestamp").ok(),
            start: self.start,
            width: self.width.max(1),
            buckets: self.buckets.max(1),
            marks: vec![NONE; reader.max_doc() as usize],
            matched: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Tally>) -> tantivy::Result<Tally> {
        let mut all = Tally::new();
        for fruit in fruits {
            merge(&mut all, fruit);
        }
        Ok(all)
    }
}

/// Adds `from` into `into`, bucket by bucket.
pub fn merge(into: &mut Tally, from: Tally) {
    for (id, (n, series)) in from {
        let e = into.entry(id).or_insert_with(|| (0, vec![0; series.len()]));
        e.0 += n;
        for (a, b) in e.1.iter_mut().zip(series) {
            *a += b;
        }
    }
}

impl SegmentCollector for SegmentTally {
    type Fruit = Tally;

    fn collect(&mut self, doc: DocId, _: Score) {
        let ts = self
            .time
            .as_ref()
            .and_then(|c| c.first(doc))
            .map_or(self.start, |t| t.into_timestamp_nanos());
        let b = (ts.saturating_sub(self.start) / self.width).clamp(0, self.buckets as i64 - 1);
        if let Some(m) = self.marks.get_mut(doc as usize) {
            *m = b as u32;
            self.matched += 1;
        }
    }

    fn harvest(self) -> Tally {
        let mut out = Tally::new();
        if self.matched == 0 {
            return out;
        }
        // A segment without the field (older layout) tallies nothing.
        let Ok(inverted) = self.reader.inverted_index(self.pattern) else {
            return out;
        };
        let Ok(mut terms) = inverted.terms().stream() else {
            return out;
        };
        while terms.advance() {
            let Ok(mut postings) =
                inverted.read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
            else {
                continue;
            };
            let mut n = 0u64;
            let mut series: Vec<u64> = Vec::new();
            let mut doc = postings.doc();
            while doc != TERMINATED {
                let b = self.marks.get(doc as usize).copied().unwrap_or(NONE);
                if b != NONE {
                    if series.is_empty() {
                        series = vec![0; self.buckets];
                    }
                    n += 1;
                    series[b as usize] += 1;
                }
                doc = postings.advance();
            }
            if n > 0 {
                let id = String::from_utf8_lossy(terms.key()).into_owned();
                merge(&mut out, HashMap::from([(id, (n, series))]));
            }
        }
        out
    }
}
