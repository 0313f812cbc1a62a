//! Reading a tenant's stored lines back in event-time order, for replays
//! (backtest) and exports: partition by partition, oldest day first, each
//! day's lines sorted by their indexed timestamp (ties in index order).

use anyhow::{Context, Result};
use tantivy::{DocId, TantivyDocument};

use super::catalog::Catalog;
use super::lines::{self, Columns};
use super::schema::LogSchema;
use super::search::TimeRange;
use crate::time::{day_name, day_of};

/// One stored line.
pub struct StoredLine<'a> {
    /// Unix nanoseconds, as indexed.
    pub timestamp: i64,
    pub raw: &'a str,
    pub host: &'a str,
    pub source: &'a str,
}

/// Decompressed doc-store blocks kept per segment while reading in time
/// order: lines of one time are mostly in one block already.
const SCAN_CACHE_BLOCKS: usize = 4;

/// Calls `visit` on every line of `tenant` in `range`, oldest first, until
/// it returns `false`. Returns the number of lines visited.
pub fn in_time_order(
    catalog: &Catalog,
    tenant: &str,
    range: TimeRange,
    mut visit: impl FnMut(StoredLine<'_>) -> Result<bool>,
) -> Result<u64> {
    let mut visited = 0u64;
    let mut partitions = catalog.partitions(tenant, day_of(range.since), day_of(range.until));
    partitions.reverse();
    // A day may have several shards (Kafka partitions): they are merged
    // into one order, so segments are numbered across the day's shards.
    let mut days: Vec<Vec<crate::index::catalog::Partition>> = Vec::new();
    for partition in partitions {
        match days.last_mut() {
            Some(day) if day[0].day == partition.day => day.push(partition),
            _ => days.push(vec![partition]),
        }
    }
    for day in days {
        let searchers: Vec<_> = day.iter().map(|p| p.reader.searcher()).collect();
        // Each segment with its partition's layout.
        let segments: Vec<(&tantivy::SegmentReader, &LogSchema)> = searchers
            .iter()
            .zip(&day)
            .flat_map(|(s, p)| s.segment_readers().iter().map(|r| (r, &*p.schema)))
            .collect();
        let day_number = day[0].day;
        // (timestamp, segment, doc): one day's order costs 16 bytes a line.
        let mut order: Vec<(i64, u32, DocId)> = Vec::new();
        for (ord, (segment, _)) in segments.iter().enumerate() {
            let column = segment
                .fast_fields()
                .date("timestamp")
                .context("reading the timestamp column")?;
            for doc in segment.doc_ids_alive() {
                if let Some(ts) = column.first(doc) {
                    let ts = ts.into_timestamp_nanos();
                    if ts >= range.since && ts < range.until {
                        order.push((ts, ord as u32, doc));
                    }
                }
            }
        }
        order.sort_unstable();
        let stores = segments
            .iter()
            .map(|(s, _)| s.get_store_reader(SCAN_CACHE_BLOCKS))
            .collect::<std::io::Result<Vec<_>>>()
            .context("opening the document store")?;
        let columns = segments
            .iter()
            .map(|(s, _)| Columns::open(s))
            .collect::<Result<Vec<_>>>()?;
        for (timestamp, ord, doc) in order {
            let stored: TantivyDocument = stores[ord as usize].get(doc).with_context(|| {
                format!("reading a stored line of day {}", day_name(day_number))
            })?;
            let columns = &columns[ord as usize];
            let (host, source) = (columns.host(doc), columns.source(doc));
            visited += 1;
            let more = visit(StoredLine {
                timestamp,
                raw: lines::raw(segments[ord as usize].1, &stored).unwrap_or_default(),
                host: host.as_deref().unwrap_or_default(),
                source: source.as_deref().unwrap_or_default(),
            })?;
            if !more {
                return Ok(visited);
            }
        }
    }
    Ok(visited)
}
