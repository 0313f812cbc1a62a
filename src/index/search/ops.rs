//! The search operations over a tenant's partitions: hits, counts,
//! histograms and top values.

use serde::Serialize;
use serde_json::Value as Json;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{
    AggContextParams, AggregationLimitsGuard, DistributedAggregationCollector,
};
use tantivy::collector::{Count, TopDocs};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, DocId, Order, TantivyDocument};

use super::{
    Bucket, Budget, CompiledQuery, Deadlined, Hit, QueryLimits, SearchError, TimeRange, TopValue,
};
use crate::index::catalog::{Catalog, Partition};
use crate::index::lines::{self, Columns};
use crate::index::schema::{LogSchema, TOP_FIELDS};
use crate::parse::{parse_line, Format, ParseContext};
use crate::time::format_rfc3339;

fn partitions(catalog: &Catalog, tenant: &str, query: &CompiledQuery) -> Vec<Partition> {
    let (from, to) = query.days();
    let mut partitions = catalog.partitions(tenant, from, to);
    if query.uses_pattern {
        partitions.retain(|p| p.schema.pattern.is_some());
    }
    partitions
}

/// The newest `limit` matching lines.
pub fn search(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    search_within(catalog, tenant, text, range, limit, &Budget::unlimited())
}

/// Hits loaded between two looks at the clock: loading one reads and
/// parses its stored line.
const HITS_PER_CHECK: usize = 256;

/// [`search`] within `budget`.
pub fn search_within(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    limit: usize,
    budget: &Budget,
) -> Result<Vec<Hit>, SearchError> {
    let limit = budget.limits().check_hits(limit)?;
    let query = CompiledQuery::for_tenant(catalog, tenant, text, range, budget.limits())?;
    let mut hits = Vec::new();
    newest_lines(
        &partitions(catalog, tenant, &query),
        &query,
        limit,
        budget,
        &mut |line| {
            hits.push(hit_from_doc(
                &line.partition.schema,
                line.doc,
                line.timestamp,
                line.columns,
                line.doc_id,
            ))
        },
    )?;
    Ok(hits)
}

/// One matching line read back, for [`newest_lines`]' visitor.
struct LineRead<'a> {
    partition: &'a Partition,
    doc: &'a TantivyDocument,
    timestamp: i64,
    columns: &'a Columns,
    doc_id: DocId,
}

/// Reads the newest `limit` lines matching `query` in `partitions` (newest
/// day first), in time order, handing each to `visit`; returns how many.
fn newest_lines(
    partitions: &[Partition],
    query: &CompiledQuery,
    limit: usize,
    budget: &Budget,
    visit: &mut dyn FnMut(LineRead<'_>),
) -> Result<usize, SearchError> {
    let mut read = 0usize;
    for partition in partitions {
        budget.check()?;
        let remaining = limit.saturating_sub(read);
        if remaining == 0 {
            break;
        }
        let searcher = partition.reader.searcher();
        let top = TopDocs::with_limit(remaining)
            .order_by_fast_field::<DateTime>("timestamp", Order::Desc);
        let found = searcher
            .search(
                &*query.for_partition(partition)?,
                &Deadlined::new(top, budget),
            )
            .map_err(|e| budget.explain(e))?;
        query.read_error()?;
        let mut columns: Vec<Option<Columns>> = Vec::new();
        columns.resize_with(searcher.segment_readers().len(), || None);
        for (i, (timestamp, address)) in found.into_iter().enumerate() {
            if i % HITS_PER_CHECK == HITS_PER_CHECK - 1 {
                budget.check()?;
            }
            read += 1;
            let doc: TantivyDocument = searcher.doc(address)?;
            let columns = match &mut columns[address.segment_ord as usize] {
                Some(columns) => columns,
                slot => slot.insert(Columns::open(searcher.segment_reader(address.segment_ord))?),
            };
            visit(LineRead {
                partition,
                doc: &doc,
                timestamp: timestamp.map_or(0, DateTime::into_timestamp_nanos),
                columns,
                doc_id: address.doc_id,
            });
        }
    }
    Ok(read)
}

fn hit_from_doc(
    schema: &LogSchema,
    doc: &TantivyDocument,
    nanos: i64,
    columns: &Columns,
    doc_id: DocId,
) -> Hit {
    let raw = lines::raw(schema, doc).unwrap_or_default().to_string();
    // Parsed fields are not stored: derive them again from the raw line,
    // with the parser that read it when it was indexed.
    let hint = lines::parser_of(columns.format(doc_id).as_deref()).unwrap_or(Format::Auto);
    let event = parse_line(raw.as_bytes(), hint, &ParseContext { now_nanos: nanos }).ok();
    let field = |f: fn(&crate::parse::Event<'_>) -> Option<String>| event.as_ref().and_then(f);
    Hit {
        timestamp: format_rfc3339(nanos),
        host: columns.host(doc_id),
        source: columns.source(doc_id),
        client_ip: field(|e| e.client_ip.map(|ip| ip.to_string())),
        method: field(|e| e.method.as_deref().map(str::to_string)),
        path: field(|e| e.path.as_deref().map(str::to_string)),
        status: event.as_ref().and_then(|e| e.status),
        bytes: event.as_ref().and_then(|e| e.bytes),
        user_agent: field(|e| e.user_agent.as_deref().map(str::to_string)),
        referer: field(|e| e.referer.as_deref().map(str::to_string)),
        duration: event.as_ref().and_then(|e| e.duration),
        raw,
    }
}

/// Number of matching lines.
pub fn count(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
) -> Result<u64, SearchError> {
    count_within(catalog, tenant, text, range, &Budget::unlimited())
}

/// [`count`] within `budget`.
pub fn count_within(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    budget: &Budget,
) -> Result<u64, SearchError> {
    let query = CompiledQuery::for_tenant(catalog, tenant, text, range, budget.limits())?;
    let mut total = 0u64;
    for partition in partitions(catalog, tenant, &query) {
        budget.check()?;
        total += partition
            .reader
            .searcher()
            .search(
                &*query.for_partition(&partition)?,
                &Deadlined::new(Count, budget),
            )
            .map_err(|e| budget.explain(e))? as u64;
        query.read_error()?;
    }
    Ok(total)
}

fn aggregate(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    request: Json,
    budget: &Budget,
) -> Result<Json, SearchError> {
    let query = CompiledQuery::for_tenant(catalog, tenant, text, range, budget.limits())?;
    aggregate_partitions(
        &partitions(catalog, tenant, &query),
        &query,
        request,
        budget,
    )
}

/// Runs the aggregation `request` over `partitions`, merged.
fn aggregate_partitions(
    partitions: &[Partition],
    query: &CompiledQuery,
    request: Json,
    budget: &Budget,
) -> Result<Json, SearchError> {
    let aggs: Aggregations =
        serde_json::from_value(request).map_err(|e| SearchError::Internal(e.into()))?;
    let limits = || AggregationLimitsGuard::new(Some(512 * 1024 * 1024), Some(65_000));
    let mut merged: Option<IntermediateAggregationResults> = None;
    for partition in partitions {
        budget.check()?;
        let collector = DistributedAggregationCollector::from_aggs(
            aggs.clone(),
            AggContextParams::new(limits(), TokenizerManager::default()),
        );
        let fruit = partition
            .reader
            .searcher()
            .search(
                &*query.for_partition(partition)?,
                &Deadlined::new(collector, budget),
            )
            .map_err(|e| budget.explain(e))?;
        query.read_error()?;
        match &mut merged {
            Some(acc) => acc.merge_fruits(fruit)?,
            None => merged = Some(fruit),
        }
    }
    let Some(merged) = merged else {
        return Ok(Json::Null);
    };
    let result = merged.into_final_result(aggs, limits())?;
    serde_json::to_value(result).map_err(|e| SearchError::Internal(e.into()))
}

/// Counts per `interval_secs` bucket, oldest first, empty buckets included.
pub fn histogram(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    interval_secs: u64,
) -> Result<Vec<Bucket>, SearchError> {
    let limits = QueryLimits {
        max_histogram_buckets: 10_000,
        ..QueryLimits::unlimited()
    };
    histogram_within(
        catalog,
        tenant,
        text,
        range,
        interval_secs,
        &Budget::new(limits),
    )
}

/// [`histogram`] within `budget`.
pub fn histogram_within(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    interval_secs: u64,
    budget: &Budget,
) -> Result<Vec<Bucket>, SearchError> {
    let interval_secs = interval_secs.max(1);
    let buckets_wanted = (range.until - range.since) / (interval_secs as i64 * 1_000_000_000);
    let max = budget.limits().max_histogram_buckets;
    if buckets_wanted > max as i64 {
        return Err(SearchError::TooLarge(format!(
            "{buckets_wanted} buckets of {interval_secs}s requested, above the limit of {max} (limits.query.max_histogram_buckets); pick a larger interval or a shorter range"
        )));
    }
    let request = serde_json::json!({
        "h": {"date_histogram": {
            "field": "timestamp",
            "fixed_interval": format!("{interval_secs}s"),
            "min_doc_count": 0,
            "extended_bounds": {"min": range.since / 1_000_000, "max": (range.until - 1) / 1_000_000},
        }}
    });
    let result = aggregate(catalog, tenant, text, range, request, budget)?;
    let buckets = result["h"]["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(buckets
        .iter()
        .filter_map(|b| {
            Some(Bucket {
                start_ms: b["key"].as_f64()? as i64,
                count: b["doc_count"].as_u64()?,
            })
        })
        .collect())
}

/// One pattern among a query's matching lines (`GET /api/v1/patterns`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatternCount {
    /// The id as indexed (`pattern:<id>`).
    pub id: String,
    pub count: u64,
    /// Lines per interval, oldest first, from the range's start.
    pub series: Vec<u64>,
}

/// The `limit` patterns with the most matching lines, most first, each
/// with its lines per `interval_secs` over `range`. Lines indexed under a
/// pattern that merged into another since count under the survivor.
/// Partitions from before the `pattern` field have none to count.
pub fn pattern_counts_within(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    interval_secs: u64,
    limit: usize,
    budget: &Budget,
) -> Result<Vec<PatternCount>, SearchError> {
    use crate::index::pattern_top::{merge, PatternTally, Tally};
    let limit = budget.limits().check_top(limit)?;
    let width = interval_secs.max(1) as i64 * 1_000_000_000;
    let buckets = (range.until - range.since + width - 1) / width;
    let max = budget.limits().max_histogram_buckets;
    if buckets > max as i64 {
        return Err(SearchError::TooLarge(format!(
            "{buckets} buckets of {interval_secs}s requested, above the limit of {max} (limits.query.max_histogram_buckets); pick a larger interval or a shorter range"
        )));
    }
    let query = CompiledQuery::for_tenant(catalog, tenant, text, range, budget.limits())?;
    let mut all = Tally::new();
    for partition in partitions(catalog, tenant, &query) {
        budget.check()?;
        let Some(pattern) = partition.schema.pattern else {
            continue;
        };
        let tally = PatternTally {
            pattern,
            start: range.since,
            width,
            buckets: buckets.max(1) as usize,
        };
        let fruit = partition
            .reader
            .searcher()
            .search(
                &*query.for_partition(&partition)?,
                &Deadlined::new(tally, budget),
            )
            .map_err(|e| budget.explain(e))?;
        query.read_error()?;
        merge(&mut all, fruit);
    }
    let survivors = catalog.pattern_aliases.survivors(tenant);
    let mut merged = Tally::new();
    for (id, counts) in all {
        let id = survivors.get(&id).cloned().unwrap_or(id);
        merge(&mut merged, std::collections::HashMap::from([(id, counts)]));
    }
    let mut out: Vec<PatternCount> = merged
        .into_iter()
        .map(|(id, (count, series))| PatternCount { id, count, series })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
    out.truncate(limit);
    Ok(out)
}

/// The most frequent values of `field` among matching lines.
pub fn top_values(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    field: &str,
    limit: usize,
) -> Result<TopValues, SearchError> {
    top_values_within(
        catalog,
        tenant,
        text,
        range,
        field,
        limit,
        &Budget::unlimited(),
    )
}

/// Top values, and whether some were counted over a sample of the lines.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TopValues {
    pub values: Vec<TopValue>,
    /// Set when (some of) the values were counted over the newest matching
    /// lines only, up to [`TOP_SAMPLE_LINES`]: the lines read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_lines: Option<u64>,
}

/// Newest matching lines read to rank a field without a fast field
/// (`path` everywhere, `user_agent` in V1 partitions): each is parsed
/// again from its stored line.
pub const TOP_SAMPLE_LINES: usize = 20_000;

/// Whether partitions of `schema` can aggregate `field` in the index.
fn aggregates(schema: &LogSchema, field: &str) -> bool {
    match field {
        "path" => false,
        "user_agent" => schema.layout.split_words(),
        _ => true,
    }
}

/// [`top_values`] within `budget`.
pub fn top_values_within(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    field: &str,
    limit: usize,
    budget: &Budget,
) -> Result<TopValues, SearchError> {
    let limit = budget.limits().check_top(limit)?;
    if !TOP_FIELDS.contains(&field) {
        return Err(SearchError::BadQuery(format!(
            "cannot aggregate on {field:?}; use one of {}",
            TOP_FIELDS.join(", ")
        )));
    }
    let query = CompiledQuery::for_tenant(catalog, tenant, text, range, budget.limits())?;
    let all = partitions(catalog, tenant, &query);
    let (indexed, read): (Vec<Partition>, Vec<Partition>) =
        all.into_iter().partition(|p| aggregates(&p.schema, field));
    let mut counts: std::collections::HashMap<String, (Json, u64)> = Default::default();
    if !indexed.is_empty() {
        let request =
            serde_json::json!({"t": {"terms": {"field": field, "size": limit.clamp(1, 1000)}}});
        let result = aggregate_partitions(&indexed, &query, request, budget)?;
        for b in result["t"]["buckets"].as_array().into_iter().flatten() {
            if let (Some(key), Some(n)) = (b.get("key"), b["doc_count"].as_u64()) {
                let name = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                counts.insert(name, (key.clone(), n));
            }
        }
    }
    let mut sampled_lines = None;
    if !read.is_empty() {
        let lines = count_stored(&read, &query, field, budget, &mut counts)?;
        sampled_lines = Some(lines);
    }
    let mut values: Vec<TopValue> = counts
        .into_values()
        .map(|(value, count)| TopValue { value, count })
        .collect();
    values.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.value.to_string().cmp(&b.value.to_string()))
    });
    values.truncate(limit);
    Ok(TopValues {
        values,
        sampled_lines,
    })
}

/// Counts `field` over the newest matching lines of `partitions` (newest
/// day first), up to [`TOP_SAMPLE_LINES`]; returns the lines read.
fn count_stored(
    partitions: &[Partition],
    query: &CompiledQuery,
    field: &str,
    budget: &Budget,
    counts: &mut std::collections::HashMap<String, (Json, u64)>,
) -> Result<u64, SearchError> {
    let read = newest_lines(partitions, query, TOP_SAMPLE_LINES, budget, &mut |line| {
        let raw = lines::raw(&line.partition.schema, line.doc).unwrap_or_default();
        let Some(hint) = lines::parser_of(line.columns.format(line.doc_id).as_deref()) else {
            return;
        };
        let Ok(event) = parse_line(raw.as_bytes(), hint, &ParseContext { now_nanos: 0 }) else {
            return;
        };
        let value = match field {
            "path" => event.path.as_deref(),
            _ => event.user_agent.as_deref(),
        };
        if let Some(value) = value {
            counts
                .entry(value.to_string())
                .or_insert_with(|| (Json::String(value.to_string()), 0))
                .1 += 1;
        }
    })?;
    Ok(read as u64)
}
