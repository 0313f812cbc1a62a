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
use tantivy::query_grammar::{self, UserInputAst, UserInputLeaf};
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
            match query_grammar::parse_query(text) {
                Ok(ast) => parser
                    .build_query_from_user_input_ast(complete_negations(ast))
                    .map_err(|e| SearchError::BadQuery(format!("{e}")))?,
                // The grammar's own error says nothing; the parser's names the problem.
                Err(_) => {
                    let message = match parser.parse_query(text) {
                        Err(e) => format!("{e}"),
                        Ok(_) => format!("cannot parse {text:?}"),
                    };
                    return Err(SearchError::BadQuery(message));
                }
            }
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

/// A group of only negated terms matches nothing in tantivy, so `a AND NOT b`
/// or a bare `NOT status:200` would find no line. Lucene users mean "all
/// lines except": give every such group an implicit `*`.
fn complete_negations(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut clauses: Vec<(Option<Occur>, UserInputAst)> = clauses
                .into_iter()
                .map(|(occur, sub)| (occur, complete_negations(sub)))
                .collect();
            if !clauses.is_empty()
                && clauses
                    .iter()
                    .all(|(occur, _)| *occur == Some(Occur::MustNot))
            {
                clauses.push((
                    Some(Occur::Must),
                    UserInputAst::Leaf(Box::new(UserInputLeaf::All)),
                ));
            }
            UserInputAst::Clause(clauses)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(complete_negations(*inner)), boost)
        }
        leaf @ UserInputAst::Leaf(_) => leaf,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::Index;

    fn count_in_ram(texts: &[(&str, u64)], query: &str) -> usize {
        let schema = LogSchema::new();
        let index = Index::create_in_ram(schema.schema.clone());
        let mut writer = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        for (raw, status) in texts {
            let mut doc = schema.document(None, raw, 0, "h", "s");
            doc.add_u64(schema.status, *status);
            writer.add_document(doc).expect("add");
        }
        writer.commit().expect("commit");
        let range = TimeRange {
            since: -1,
            until: 1,
        };
        let compiled = CompiledQuery::new(&schema, query, range).expect("query parses");
        let searcher = index.reader().expect("reader").searcher();
        searcher.search(&*compiled.user, &Count).expect("search")
    }

    #[test]
    fn negations_mean_all_lines_except() {
        let docs = [("curl one", 200), ("curl two", 500), ("wget three", 500)];
        assert_eq!(count_in_ram(&docs, "curl AND NOT status:200"), 1);
        assert_eq!(count_in_ram(&docs, "NOT status:200"), 2);
        assert_eq!(count_in_ram(&docs, "-status:500"), 1);
        assert_eq!(count_in_ram(&docs, "curl AND (NOT status:200)"), 1);
        assert_eq!(count_in_ram(&docs, "wget OR (curl AND NOT status:500)"), 2);
        assert_eq!(count_in_ram(&docs, "curl status:500"), 1);
        assert_eq!(count_in_ram(&docs, "*"), 3);
    }

    #[test]
    fn syntax_errors_name_the_problem() {
        let schema = LogSchema::new();
        let range = TimeRange { since: 0, until: 1 };
        for bad in ["status:(", "nosuchfield:x"] {
            match CompiledQuery::new(&schema, bad, range) {
                Err(SearchError::BadQuery(msg)) => assert!(!msg.is_empty(), "{bad}"),
                _ => panic!("{bad} must be a bad query"),
            }
        }
    }
}
