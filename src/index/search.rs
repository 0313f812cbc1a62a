//! Search over a tenant's day partitions: hits newest first, counts,
//! date histograms and top values.
//!
//! Only the partitions whose day overlaps the time range are opened. A
//! partition entirely inside the range is searched without a time clause.

use std::ops::Bound;

use serde::Serialize;
use serde_json::Value as Json;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{
    AggContextParams, AggregationLimitsGuard, DistributedAggregationCollector,
};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::Value;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, Order, TantivyDocument, Term};

use super::catalog::{Catalog, Partition};
use super::schema::{LogSchema, TOP_FIELDS};
use crate::parse::{parse_line, Format, ParseContext};
use crate::time::{day_of, format_rfc3339, NANOS_PER_DAY};

/// `[since, until)` in unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    pub since: i64,
    pub until: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("search failed: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Internal(e.into())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub raw: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Bucket {
    /// Bucket start, unix milliseconds.
    pub start_ms: i64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopValue {
    pub value: Json,
    pub count: u64,
}

/// A parsed query, ready to run against any partition.
pub struct CompiledQuery {
    user: Box<dyn Query>,
    range: TimeRange,
    timestamp_field: tantivy::schema::Field,
}

impl CompiledQuery {
    pub fn new(schema: &LogSchema, text: &str, range: TimeRange) -> Result<Self, SearchError> {
        let text = text.trim();
        let user: Box<dyn Query> = if text.is_empty() || text == "*" {
            Box::new(AllQuery)
        } else {
            let mut parser = QueryParser::new(
                schema.schema.clone(),
                vec![schema.raw],
                TokenizerManager::default(),
            );
            // Log search reads like grep: every word must match.
            parser.set_conjunction_by_default();
            parser
                .parse_query(text)
                .map_err(|e| SearchError::BadQuery(format!("{e}")))?
        };
        Ok(CompiledQuery {
            user,
            range,
            timestamp_field: schema.timestamp,
        })
    }

    fn days(&self) -> (i64, i64) {
        (
            day_of(self.range.since),
            day_of(self.range.until.saturating_sub(1)),
        )
    }

    /// The query for one partition: the time clause is dropped when the
    /// whole day is inside the range.
    fn for_partition(&self, partition: &Partition) -> Box<dyn Query> {
        let day_start = partition.day * NANOS_PER_DAY;
        let day_end = day_start + NANOS_PER_DAY;
        if self.range.since <= day_start && day_end <= self.range.until {
            return self.user.box_clone();
        }
        let lower = Term::from_field_date(
            self.timestamp_field,
            DateTime::from_timestamp_nanos(self.range.since),
        );
        let upper = Term::from_field_date(
            self.timestamp_field,
            DateTime::from_timestamp_nanos(self.range.until),
        );
        let time: Box<dyn Query> = Box::new(RangeQuery::new(
            Bound::Included(lower),
            Bound::Excluded(upper),
        ));
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, self.user.box_clone()),
            (Occur::Must, time),
        ]))
    }
}

fn partitions(catalog: &Catalog, tenant: &str, query: &CompiledQuery) -> Vec<Partition> {
    let (from, to) = query.days();
    catalog.partitions(tenant, from, to)
}

/// The newest `limit` matching lines.
pub fn search(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let query = CompiledQuery::new(&catalog.schema, text, range)?;
    let mut hits = Vec::new();
    for partition in partitions(catalog, tenant, &query) {
        let remaining = limit.saturating_sub(hits.len());
        if remaining == 0 {
            break;
        }
        let searcher = partition.reader.searcher();
        let top = TopDocs::with_limit(remaining)
            .order_by_fast_field::<DateTime>("timestamp", Order::Desc);
        for (_, address) in searcher.search(&*query.for_partition(&partition), &top)? {
            let doc: TantivyDocument = searcher.doc(address)?;
            hits.push(hit_from_doc(&catalog.schema, &doc));
        }
    }
    Ok(hits)
}

fn hit_from_doc(schema: &LogSchema, doc: &TantivyDocument) -> Hit {
    let text = |field| {
        doc.get_first(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let nanos = doc
        .get_first(schema.timestamp)
        .and_then(|v| v.as_datetime())
        .map(|d| d.into_timestamp_nanos())
        .unwrap_or_default();
    let raw = text(schema.raw).unwrap_or_default();
    // Parsed fields are not stored: derive them again from the raw line.
    let event = parse_line(
        raw.as_bytes(),
        Format::Auto,
        &ParseContext { now_nanos: nanos },
    )
    .ok();
    let field = |f: fn(&crate::parse::Event<'_>) -> Option<String>| event.as_ref().and_then(f);
    Hit {
        timestamp: format_rfc3339(nanos),
        host: text(schema.host),
        source: text(schema.source),
        client_ip: field(|e| e.client_ip.map(|ip| ip.to_string())),
        method: field(|e| e.method.as_deref().map(str::to_string)),
        path: field(|e| e.path.as_deref().map(str::to_string)),
        status: event.as_ref().and_then(|e| e.status),
        bytes: event.as_ref().and_then(|e| e.bytes),
        user_agent: field(|e| e.user_agent.as_deref().map(str::to_string)),
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
    let query = CompiledQuery::new(&catalog.schema, text, range)?;
    let mut total = 0u64;
    for partition in partitions(catalog, tenant, &query) {
        total += partition
            .reader
            .searcher()
            .search(&*query.for_partition(&partition), &Count)? as u64;
    }
    Ok(total)
}

fn aggregate(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    request: Json,
) -> Result<Json, SearchError> {
    let query = CompiledQuery::new(&catalog.schema, text, range)?;
    let aggs: Aggregations =
        serde_json::from_value(request).map_err(|e| SearchError::Internal(e.into()))?;
    let limits = || AggregationLimitsGuard::new(Some(512 * 1024 * 1024), Some(65_000));
    let mut merged: Option<IntermediateAggregationResults> = None;
    for partition in partitions(catalog, tenant, &query) {
        let collector = DistributedAggregationCollector::from_aggs(
            aggs.clone(),
            AggContextParams::new(limits(), TokenizerManager::default()),
        );
        let fruit = partition
            .reader
            .searcher()
            .search(&*query.for_partition(&partition), &collector)?;
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
    let interval_secs = interval_secs.max(1);
    let buckets_wanted = (range.until - range.since) / (interval_secs as i64 * 1_000_000_000);
    if buckets_wanted > 10_000 {
        return Err(SearchError::BadQuery(format!(
            "{buckets_wanted} buckets of {interval_secs}s requested; at most 10000, pick a larger interval"
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
    let result = aggregate(catalog, tenant, text, range, request)?;
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

/// The most frequent values of `field` among matching lines.
pub fn top_values(
    catalog: &Catalog,
    tenant: &str,
    text: &str,
    range: TimeRange,
    field: &str,
    limit: usize,
) -> Result<Vec<TopValue>, SearchError> {
    if !TOP_FIELDS.contains(&field) {
        return Err(SearchError::BadQuery(format!(
            "cannot aggregate on {field:?}; use one of {}",
            TOP_FIELDS.join(", ")
        )));
    }
    let request =
        serde_json::json!({"t": {"terms": {"field": field, "size": limit.clamp(1, 1000)}}});
    let result = aggregate(catalog, tenant, text, range, request)?;
    let buckets = result["t"]["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(buckets
        .into_iter()
        .filter_map(|b| {
            Some(TopValue {
                count: b["doc_count"].as_u64()?,
                value: b.get("key")?.clone(),
            })
        })
        .collect())
}
