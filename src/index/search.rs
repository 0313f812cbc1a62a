//! Search over a tenant's day partitions: hits newest first, counts,
//! date histograms and top values.
//!
//! Only the partitions whose day overlaps the time range are opened. A
//! partition entirely inside the range is searched without a time clause.
//!
//! Queries from the API run under a [`Budget`]: the query's shape is
//! checked against [`QueryLimits`] before anything is opened, and the
//! search itself stops at the deadline (checked between partitions, every
//! few thousand documents inside a segment, and while loading hits), not
//! just its answer: the blocking thread is free again (docs/limits.md).

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{
    AggContextParams, AggregationLimitsGuard, DistributedAggregationCollector,
};
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::query_grammar::{self, UserInputAst, UserInputLeaf};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{
    DateTime, DocId, DocSet, Order, SegmentReader, TantivyDocument, Term, COLLECT_BLOCK_BUFFER_LEN,
    TERMINATED,
};

use super::catalog::{Catalog, Partition};
use super::lines::{self, Columns};
use super::query::{self, ReadErrors};
use super::schema::{Layout, LogSchema, TOP_FIELDS};
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
    /// The query or request is larger than a `[limits.query]` setting; the
    /// message names the setting and its value.
    #[error("{0}")]
    TooLarge(String),
    /// The search ran past `limits.query.timeout_ms` and was stopped.
    #[error("the search ran longer than {limit_ms} ms (limits.query.timeout_ms) and was stopped; narrow the time range or the query")]
    Timeout { limit_ms: u64 },
    /// Whoever asked is gone (the client disconnected).
    #[error("the search was cancelled")]
    Cancelled,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
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

/// `[limits.query]`: how big a query may be and how long it may run.
/// Every refusal names the setting, so an operator knows what to raise.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// Longest query text, bytes. Default 4096.
    pub max_query_bytes: usize,
    /// Most terms in one query: words, phrase words, set elements, ranges,
    /// regexes. Default 128.
    pub max_clauses: usize,
    /// Deepest nesting of parentheses and `NOT`s. Default 16 (the parser
    /// recurses per level: this also keeps its stack small).
    pub max_depth: usize,
    /// Most phrase-prefix (`"foo ba"*`) and regex (`raw:/fo+/`) terms in
    /// one query: each expands to the matching terms of the dictionary.
    /// Default 8.
    pub max_pattern_terms: usize,
    /// Longest regex, bytes. Default 256.
    pub max_regex_bytes: usize,
    /// A search is stopped after this long, ms. Default 10000.
    pub timeout_ms: u64,
    /// Largest `limit` of `/api/v1/search`. Default 10000.
    pub max_hits: usize,
    /// Largest `limit` of `/api/v1/top`. Default 1000.
    pub max_top_values: usize,
    /// Most buckets of one `/api/v1/histogram`. Default 10000.
    pub max_histogram_buckets: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_query_bytes: 4096,
            max_clauses: 128,
            max_depth: 16,
            max_pattern_terms: 8,
            max_regex_bytes: 256,
            timeout_ms: 10_000,
            max_hits: 10_000,
            max_top_values: 1000,
            max_histogram_buckets: 10_000,
        }
    }
}

impl QueryLimits {
    /// For internal callers (purge counts, backtests): no shape limits and
    /// no deadline. Still refuses nesting deep enough to overflow the
    /// parser's stack.
    pub fn unlimited() -> Self {
        QueryLimits {
            max_query_bytes: usize::MAX,
            max_clauses: usize::MAX,
            max_depth: 64,
            max_pattern_terms: usize::MAX,
            max_regex_bytes: usize::MAX,
            timeout_ms: 0,
            max_hits: usize::MAX,
            max_top_values: usize::MAX,
            max_histogram_buckets: usize::MAX,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("max_query_bytes", self.max_query_bytes),
            ("max_clauses", self.max_clauses),
            ("max_depth", self.max_depth),
            ("max_regex_bytes", self.max_regex_bytes),
            ("max_hits", self.max_hits),
            ("max_top_values", self.max_top_values),
            ("max_histogram_buckets", self.max_histogram_buckets),
        ] {
            anyhow::ensure!(value > 0, "limits.query.{name} must be > 0");
        }
        anyhow::ensure!(
            self.max_depth <= 64,
            "limits.query.max_depth must be at most 64 (the parser recurses per level)"
        );
        anyhow::ensure!(self.timeout_ms > 0, "limits.query.timeout_ms must be > 0");
        Ok(())
    }

    /// `limit` of a search, refused above `max_hits`.
    pub fn check_hits(&self, limit: usize) -> Result<usize, SearchError> {
        check_at_most("limit", limit, self.max_hits, "max_hits")
    }

    /// `limit` of a top-values request, refused above `max_top_values`.
    pub fn check_top(&self, limit: usize) -> Result<usize, SearchError> {
        check_at_most("limit", limit, self.max_top_values, "max_top_values")
    }

    /// Refuses a query whose text or parsed shape is over a limit. Runs
    /// before the parser on the raw text (length, nesting) and after it on
    /// the tree (terms, patterns).
    fn check_text(&self, text: &str) -> Result<(), SearchError> {
        check_at_most(
            "query length in bytes",
            text.len(),
            self.max_query_bytes,
            "max_query_bytes",
        )?;
        check_at_most(
            "query nesting depth",
            nesting_depth(text),
            self.max_depth,
            "max_depth",
        )?;
        Ok(())
    }

    fn check_ast(&self, ast: &UserInputAst) -> Result<(), SearchError> {
        let mut shape = Shape::default();
        shape.walk(ast, 0, self)?;
        check_at_most(
            "query terms",
            shape.clauses,
            self.max_clauses,
            "max_clauses",
        )?;
        check_at_most(
            "prefix and regex terms",
            shape.patterns,
            self.max_pattern_terms,
            "max_pattern_terms",
        )?;
        check_at_most(
            "query nesting depth",
            shape.depth,
            self.max_depth,
            "max_depth",
        )?;
        Ok(())
    }
}

fn check_at_most(what: &str, value: usize, max: usize, key: &str) -> Result<usize, SearchError> {
    if value > max {
        return Err(SearchError::TooLarge(format!(
            "{what} is {value}, above the limit of {max} (limits.query.{key})"
        )));
    }
    Ok(value)
}

/// Deepest run of unclosed `(` and `NOT`/`-` prefixes: an upper bound of
/// the parser's recursion, known before it runs. Quotes are not skipped on
/// purpose: an unclosed one must not hide a deep tail from this count (the
/// parser may well read past it), and nobody quotes sixteen parentheses.
fn nesting_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut negations) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || matches!(bytes[i - 1], b' ' | b'(');
        match bytes[i] {
            b'\\' => i += 1,
            b'(' => {
                depth += 1;
                negations = 0;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                negations = 0;
            }
            b'-' | b'!' if starts_word => negations += 1,
            b'N' if starts_word && bytes[i..].starts_with(b"NOT ") => {
                negations += 1;
                i += 3;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => negations = 0,
        }
        deepest = deepest.max(depth + negations);
        i += 1;
    }
    deepest
}

/// What a parsed query is made of, for [`QueryLimits::check_ast`].
#[derive(Default)]
struct Shape {
    clauses: usize,
    patterns: usize,
    depth: usize,
}

impl Shape {
    fn walk(
        &mut self,
        ast: &UserInputAst,
        depth: usize,
        limits: &QueryLimits,
    ) -> Result<(), SearchError> {
        self.depth = self.depth.max(depth);
        match ast {
            UserInputAst::Clause(clauses) => {
                for (_, sub) in clauses {
                    self.walk(sub, depth + 1, limits)?;
                }
            }
            UserInputAst::Boost(inner, _) => self.walk(inner, depth, limits)?,
            UserInputAst::Leaf(leaf) => match leaf.as_ref() {
                UserInputLeaf::Literal(literal) => {
                    self.clauses += literal.phrase.split_whitespace().count().max(1);
                    if literal.prefix {
                        if literal.phrase.trim().is_empty() {
                            return Err(SearchError::TooLarge(
                                "a wildcard needs at least one character before the `*`: a leading wildcard reads every term of the index".into(),
                            ));
                        }
                        self.patterns += 1;
                    }
                }
                UserInputLeaf::Set { elements, .. } => self.clauses += elements.len().max(1),
                UserInputLeaf::Regex { pattern, .. } => {
                    self.clauses += 1;
                    self.patterns += 1;
                    check_at_most(
                        "regex length in bytes",
                        pattern.len(),
                        limits.max_regex_bytes,
                        "max_regex_bytes",
                    )?;
                    let unanchored = [".*", ".+", ".?", ".{"];
                    if pattern.is_empty() || unanchored.iter().any(|p| pattern.starts_with(p)) {
                        return Err(SearchError::TooLarge(format!(
                            "regex /{pattern}/ starts with a wildcard: it reads every term of the index; start it with a literal"
                        )));
                    }
                }
                UserInputLeaf::All => {}
                UserInputLeaf::Range { .. } | UserInputLeaf::Exists { .. } => self.clauses += 1,
            },
        }
        Ok(())
    }
}

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
    fn explain(&self, e: tantivy::TantivyError) -> SearchError {
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
const DOCS_PER_CHECK: usize = 4096;

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

/// A parsed query, ready to run against any partition: built once per
/// partition layout it meets (`query.rs`).
pub struct CompiledQuery {
    /// `None`: every line.
    ast: Option<UserInputAst>,
    range: TimeRange,
    /// The query names the `pattern` field: partitions created before it
    /// existed hold no value for it and are not searched.
    uses_pattern: bool,
    built: std::sync::Mutex<Vec<(Layout, Box<dyn Query>)>>,
    /// Failures of phrase checks while searching (`query::ReadErrors`).
    errors: Arc<ReadErrors>,
}

impl CompiledQuery {
    pub fn new(schema: &LogSchema, text: &str, range: TimeRange) -> Result<Self, SearchError> {
        Self::with_limits(schema, text, range, &QueryLimits::unlimited())
    }

    /// Parses `text`, refusing it when it is over `limits`.
    pub fn with_limits(
        schema: &LogSchema,
        text: &str,
        range: TimeRange,
        limits: &QueryLimits,
    ) -> Result<Self, SearchError> {
        Self::compile(schema, text, range, limits, None)
    }

    /// [`CompiledQuery::with_limits`] for `tenant`'s lines: `pattern:<id>`
    /// also finds the lines indexed under the ids merged into it since.
    pub fn for_tenant(
        catalog: &Catalog,
        tenant: &str,
        text: &str,
        range: TimeRange,
        limits: &QueryLimits,
    ) -> Result<Self, SearchError> {
        Self::compile(
            &catalog.schema,
            text,
            range,
            limits,
            Some((&catalog.pattern_aliases, tenant)),
        )
    }

    /// Parses and checks `text`, and builds it for `schema`'s layout (the
    /// one of new partitions), so a bad query fails before any search.
    fn compile(
        schema: &LogSchema,
        text: &str,
        range: TimeRange,
        limits: &QueryLimits,
        aliases: Option<(&crate::patterns::PatternAliases, &str)>,
    ) -> Result<Self, SearchError> {
        let text = text.trim();
        limits.check_text(text)?;
        let ast = if text.is_empty() || text == "*" {
            None
        } else {
            match query_grammar::parse_query(text) {
                Ok(ast) => {
                    limits.check_ast(&ast)?;
                    let mut ast = complete_negations(ast);
                    if let Some((aliases, tenant)) = aliases {
                        ast = expand_patterns(ast, aliases, tenant);
                    }
                    Some(ast)
                }
                // The grammar's own error says nothing; the parser's names the problem.
                Err(_) => {
                    let parser = QueryParser::new(
                        schema.schema.clone(),
                        vec![schema.raw],
                        TokenizerManager::default(),
                    );
                    let message = match parser.parse_query(text) {
                        Err(e) => format!("{e}"),
                        Ok(_) => format!("cannot parse {text:?}"),
                    };
                    return Err(SearchError::BadQuery(message));
                }
            }
        };
        let uses_pattern = ast.as_ref().is_some_and(names_pattern);
        let compiled = CompiledQuery {
            ast,
            range,
            uses_pattern,
            built: std::sync::Mutex::new(Vec::new()),
            errors: Arc::new(ReadErrors::default()),
        };
        compiled.query(schema)?;
        Ok(compiled)
    }

    /// The query (without time clause) for partitions of `schema`'s layout.
    pub fn query(&self, schema: &LogSchema) -> Result<Box<dyn Query>, SearchError> {
        let Some(ast) = &self.ast else {
            return Ok(Box::new(AllQuery));
        };
        let mut built = self
            .built
            .lock()
            .map_err(|_| anyhow::anyhow!("query cache lock poisoned"))?;
        if let Some((_, query)) = built.iter().find(|(l, _)| *l == schema.layout) {
            return Ok(query.box_clone());
        }
        let query = query::build(ast, schema, &self.errors)
            .map_err(|query::BadQuery(message)| SearchError::BadQuery(message))?;
        built.push((schema.layout, query.box_clone()));
        Ok(query)
    }

    /// The first failure of a phrase check since the last call.
    fn read_error(&self) -> Result<(), SearchError> {
        match self.errors.take() {
            Some(message) => Err(SearchError::Internal(anyhow::anyhow!(message))),
            None => Ok(()),
        }
    }

    fn days(&self) -> (i64, i64) {
        (
            day_of(self.range.since),
            day_of(self.range.until.saturating_sub(1)),
        )
    }

    /// The query for one partition: the time clause is dropped when the
    /// whole day is inside the range.
    fn for_partition(&self, partition: &Partition) -> Result<Box<dyn Query>, SearchError> {
        let user = self.query(&partition.schema)?;
        let day_start = partition.day * NANOS_PER_DAY;
        let day_end = day_start + NANOS_PER_DAY;
        if self.range.since <= day_start && day_end <= self.range.until {
            return Ok(user);
        }
        let field = partition.schema.timestamp;
        let lower = Term::from_field_date(field, DateTime::from_timestamp_nanos(self.range.since));
        let upper = Term::from_field_date(field, DateTime::from_timestamp_nanos(self.range.until));
        let time: Box<dyn Query> = Box::new(RangeQuery::new(
            Bound::Included(lower),
            Bound::Excluded(upper),
        ));
        Ok(Box::new(BooleanQuery::new(vec![
            (Occur::Must, user),
            (Occur::Must, time),
        ])))
    }
}

/// Whether a query names the `pattern` field anywhere.
fn names_pattern(ast: &UserInputAst) -> bool {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().any(|(_, sub)| names_pattern(sub)),
        UserInputAst::Boost(inner, _) => names_pattern(inner),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Literal(l) => l.field_name.as_deref() == Some("pattern"),
            UserInputLeaf::Range { field, .. }
            | UserInputLeaf::Set { field, .. }
            | UserInputLeaf::Regex { field, .. } => field.as_deref() == Some("pattern"),
            UserInputLeaf::Exists { field } => field == "pattern",
            UserInputLeaf::All => false,
        },
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

/// `pattern:X` becomes `(pattern:X OR pattern:A ...)` with the ids merged
/// into X (after the limits were checked: the user did not write them).
fn expand_patterns(
    ast: UserInputAst,
    aliases: &crate::patterns::PatternAliases,
    tenant: &str,
) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => UserInputAst::Clause(
            clauses
                .into_iter()
                .map(|(occur, sub)| (occur, expand_patterns(sub, aliases, tenant)))
                .collect(),
        ),
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(expand_patterns(*inner, aliases, tenant)), boost)
        }
        UserInputAst::Leaf(leaf) => match *leaf {
            UserInputLeaf::Literal(literal) if literal.field_name.as_deref() == Some("pattern") => {
                let Some(old) = aliases.get(tenant, &literal.phrase) else {
                    return UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(literal)));
                };
                let mut clauses = Vec::with_capacity(old.len() + 1);
                for id in old {
                    let mut alias = literal.clone();
                    alias.phrase = id;
                    clauses.push((
                        Some(Occur::Should),
                        UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(alias))),
                    ));
                }
                clauses.push((
                    Some(Occur::Should),
                    UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(literal))),
                ));
                UserInputAst::Clause(clauses)
            }
            other => UserInputAst::Leaf(Box::new(other)),
        },
    }
}

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
    use super::pattern_top::{merge, PatternTally, Tally};
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
        "user_agent" => schema.layout == Layout::V2,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::Index;

    #[test]
    fn a_pattern_query_finds_the_lines_of_the_patterns_merged_into_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let day = 20_000;
        let partition = catalog.get_or_create("t", day, 0).expect("partition");
        let mut writer = partition
            .index
            .writer::<TantivyDocument>(15_000_000)
            .expect("writer");
        for (raw, pattern) in [
            ("one", "aaaaaaaaaaaa"),
            ("two", "bbbbbbbbbbbb"),
            ("three", "cccccccccccc"),
        ] {
            let mut doc = catalog
                .schema
                .document(None, raw, day * NANOS_PER_DAY + 1, "h", "s");
            doc.add_text(catalog.schema.pattern.expect("pattern field"), pattern);
            writer.add_document(doc).expect("adds");
        }
        writer.commit().expect("commits");
        partition.reader.reload().expect("reloads");
        let range = TimeRange {
            since: day * NANOS_PER_DAY,
            until: (day + 1) * NANOS_PER_DAY,
        };
        let n = |q: &str| count(&catalog, "t", q, range).expect("counts");
        assert_eq!(n("pattern:aaaaaaaaaaaa"), 1);
        catalog
            .pattern_aliases
            .set("t", "aaaaaaaaaaaa", vec!["bbbbbbbbbbbb".into()]);
        assert_eq!(n("pattern:aaaaaaaaaaaa"), 2);
        assert_eq!(n("pattern:aaaaaaaaaaaa AND two"), 1);
        assert_eq!(n("NOT pattern:aaaaaaaaaaaa"), 1);
        assert_eq!(
            n("pattern:bbbbbbbbbbbb"),
            1,
            "an alias alone is its own lines"
        );
        assert_eq!(
            count(&catalog, "u", "pattern:aaaaaaaaaaaa", range).ok(),
            Some(0),
            "another tenant's merges are not this one's"
        );
    }

    #[test]
    fn partitions_from_before_the_pattern_field_are_left_out_of_pattern_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = 20_000;
        let at = day * NANOS_PER_DAY + 1;
        {
            let catalog = Catalog::open(dir.path()).expect("catalog");
            // A V1 partition as created before `pattern` existed: every
            // other field, with the same ids (it is the schema's last field).
            let v1 = LogSchema::v1();
            let mut old = tantivy::schema::Schema::builder();
            for (_, entry) in v1.schema.fields() {
                if entry.name() != "pattern" {
                    old.add_field(entry.clone());
                }
            }
            let old = LogSchema::from_schema(old.build()).expect("old schema");
            let path = catalog.partition_dir("t", day, 0);
            std::fs::create_dir_all(&path).expect("dir");
            let index = Index::create_in_dir(&path, old.schema.clone()).expect("old index");
            let mut writer = index.writer::<TantivyDocument>(15_000_000).expect("writer");
            writer
                .add_document(old.document(None, "old line", at, "h", "s"))
                .expect("adds");
            writer.commit().expect("commits");
        }
        let catalog = Catalog::open(dir.path()).expect("reopens");
        let range = TimeRange {
            since: day * NANOS_PER_DAY,
            until: (day + 2) * NANOS_PER_DAY,
        };
        let old = catalog.partitions("t", day, day);
        assert!(old[0].schema.pattern.is_none());
        assert_eq!(old[0].schema.layout, Layout::V1);
        assert_eq!(
            search(&catalog, "t", "old", range, 10)
                .expect("searches")
                .len(),
            1
        );
        for query in ["pattern:0123456789ab", "old AND pattern:0123456789ab"] {
            assert!(search(&catalog, "t", query, range, 10)
                .expect("searches")
                .is_empty());
        }
        let new = catalog
            .get_or_create("t", day + 1, 0)
            .expect("new partition");
        assert!(new.schema.pattern.is_some());
    }

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
        let query = compiled.query(&schema).expect("builds");
        searcher.search(&*query, &Count).expect("search")
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

    fn too_large(query: &str, limits: &QueryLimits) -> String {
        let schema = LogSchema::new();
        let range = TimeRange { since: 0, until: 1 };
        match CompiledQuery::with_limits(&schema, query, range, limits) {
            Err(SearchError::TooLarge(msg)) => msg,
            Err(e) => panic!("{query:?}: expected a limit refusal, got {e}"),
            Ok(_) => panic!("{query:?}: expected a limit refusal, it parsed"),
        }
    }

    #[test]
    fn oversized_queries_are_refused_naming_the_limit() {
        let limits = QueryLimits::default();
        let long = "a".repeat(limits.max_query_bytes + 1);
        let msg = too_large(&long, &limits);
        assert!(
            msg.contains("limits.query.max_query_bytes") && msg.contains("4096"),
            "{msg}"
        );

        let many = (0..200)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let msg = too_large(&many, &limits);
        assert!(
            msg.contains("limits.query.max_clauses") && msg.contains("200"),
            "{msg}"
        );

        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        let msg = too_large(&deep, &limits);
        assert!(msg.contains("limits.query.max_depth"), "{msg}");
        let hidden = format!("\"open {}a{}", "(".repeat(40), ")".repeat(40));
        let msg = too_large(&hidden, &limits);
        assert!(msg.contains("limits.query.max_depth"), "{msg}");
        let negations = format!("{}a", "NOT ".repeat(40));
        let msg = too_large(&negations, &limits);
        assert!(msg.contains("limits.query.max_depth"), "{msg}");

        let patterns = (0..9)
            .map(|i| format!("\"p{i}\"*"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let msg = too_large(&patterns, &limits);
        assert!(msg.contains("limits.query.max_pattern_terms"), "{msg}");

        let msg = too_large(&format!("raw:/a{}/", "b".repeat(300)), &limits);
        assert!(msg.contains("limits.query.max_regex_bytes"), "{msg}");
        let msg = too_large("raw:/.*admin/", &limits);
        assert!(msg.contains("starts with a wildcard"), "{msg}");
        let msg = too_large("\"\"*", &limits);
        assert!(msg.contains("leading wildcard"), "{msg}");

        // Within the limits the same kinds of query are fine.
        let schema = LogSchema::new();
        let range = TimeRange { since: 0, until: 1 };
        for ok in [
            "(a OR b) AND NOT c",
            "adm*",
            "\"admin lo\"*",
            "\"((((\" x",
            "path:/login -status:200",
        ] {
            CompiledQuery::with_limits(&schema, ok, range, &limits)
                .unwrap_or_else(|e| panic!("{ok:?} must pass: {e}"));
        }
    }

    #[test]
    fn result_size_limits_name_the_setting() {
        let limits = QueryLimits::default();
        assert_eq!(limits.check_hits(10_000).ok(), Some(10_000));
        let err = limits.check_hits(50_000).expect_err("above max_hits");
        assert!(err.to_string().contains("limits.query.max_hits"), "{err}");
        let err = limits.check_top(5000).expect_err("above max_top_values");
        assert!(
            err.to_string().contains("limits.query.max_top_values"),
            "{err}"
        );
    }

    fn ram_index(docs: usize) -> (LogSchema, Index) {
        let schema = LogSchema::new();
        let index = Index::create_in_ram(schema.schema.clone());
        let mut writer = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        for i in 0..docs {
            let raw = format!("line {i} curl");
            writer
                .add_document(schema.document(None, &raw, i as i64, "h", "s"))
                .expect("add");
        }
        writer.commit().expect("commit");
        (schema, index)
    }

    #[test]
    fn multi_word_path_and_agent_queries_match_without_positions() {
        let schema = LogSchema::new();
        let index = Index::create_in_ram(schema.schema.clone());
        let mut writer = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        let ctx = ParseContext::now();
        let lines = [
            r#"10.0.0.1 - - [10/Oct/2024:12:00:00 +0000] "GET /api/v1/items?id=3 HTTP/1.1" 200 5 "-" "curl/8.4.0""#,
            r#"10.0.0.2 - - [10/Oct/2024:12:00:01 +0000] "GET /items/v1/api HTTP/1.1" 200 5 "-" "Mozilla/5.0 (8.4.0) curl""#,
            r#"10.0.0.3 - - [10/Oct/2024:12:00:02 +0000] "GET /login HTTP/1.1" 200 5 "-" "curl/7.1""#,
        ];
        for (i, raw) in lines.iter().enumerate() {
            let event = parse_line(str::as_bytes(raw), Format::Combined, &ctx).expect("parses");
            writer
                .add_document(schema.document(Some(&event), raw, i as i64, "h", "s"))
                .expect("add");
        }
        writer.commit().expect("commit");
        let searcher = index.reader().expect("reader").searcher();
        let range = TimeRange {
            since: -1,
            until: i64::MAX / 2,
        };
        let count = |q: &str| {
            let query = CompiledQuery::new(&schema, q, range).expect(q);
            let query = query.query(&schema).expect(q);
            searcher.search(&*query, &Count).expect(q)
        };
        // The words in that order: not the line with the same words reordered.
        assert_eq!(count("path:/api/v1/items"), 1);
        assert_eq!(count("user_agent:curl/8.4.0"), 1);
        assert_eq!(count("user_agent:\"curl/8.4.0\""), 1);
        assert_eq!(count("NOT path:/api/v1/items"), 2);
        assert_eq!(count("path:login"), 1);
        assert_eq!(count("user_agent:curl"), 3);
    }

    #[test]
    fn deadlined_collector_counts_like_tantivy_within_budget() {
        let (schema, index) = ram_index(10_000);
        let searcher = index.reader().expect("reader").searcher();
        let range = TimeRange {
            since: -1,
            until: i64::MAX / 2,
        };
        let query = CompiledQuery::new(&schema, "curl", range)
            .and_then(|q| q.query(&schema))
            .expect("query");
        let budget = Budget::new(QueryLimits::default());
        let plain = searcher.search(&*query, &Count).expect("plain");
        let bounded = searcher
            .search(&*query, &Deadlined::new(Count, &budget))
            .expect("within budget");
        assert_eq!((plain, bounded), (10_000, 10_000));
        // A scoring collector goes through the per-document path.
        let top = searcher
            .search(
                &*query,
                &Deadlined::new(TopDocs::with_limit(3).order_by_score(), &budget),
            )
            .expect("top by score");
        assert_eq!(top.len(), 3);
    }

    #[test]
    fn expired_deadline_answers_timeout_naming_the_limit() {
        let (schema, index) = ram_index(100);
        let searcher = index.reader().expect("reader").searcher();
        let range = TimeRange {
            since: -1,
            until: i64::MAX / 2,
        };
        let query = CompiledQuery::new(&schema, "*", range)
            .and_then(|q| q.query(&schema))
            .expect("query");
        let budget = Budget::expired(QueryLimits::default());
        let err = searcher
            .search(&*query, &Deadlined::new(Count, &budget))
            .map_err(|e| budget.explain(e))
            .expect_err("past the deadline");
        assert!(
            matches!(err, SearchError::Timeout { limit_ms: 10_000 }),
            "{err}"
        );
        assert!(err.to_string().contains("limits.query.timeout_ms"), "{err}");
    }

    /// Counts, and drops the cancel guard after `cancel_at` documents: a
    /// client hanging up in the middle of a segment.
    struct HangUp {
        cancel_at: usize,
        guard: std::sync::Mutex<Option<CancelOnDrop>>,
        seen: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct HangUpSegment {
        cancel_at: usize,
        guard: Option<CancelOnDrop>,
        seen: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Collector for HangUp {
        type Fruit = ();
        type Child = HangUpSegment;
        fn for_segment(&self, _: u32, _: &SegmentReader) -> tantivy::Result<HangUpSegment> {
            Ok(HangUpSegment {
                cancel_at: self.cancel_at,
                guard: self.guard.lock().expect("lock").take(),
                seen: Arc::clone(&self.seen),
            })
        }
        fn requires_scoring(&self) -> bool {
            false
        }
        fn merge_fruits(&self, _: Vec<()>) -> tantivy::Result<()> {
            Ok(())
        }
    }

    impl SegmentCollector for HangUpSegment {
        type Fruit = ();
        fn collect(&mut self, _: DocId, _: tantivy::Score) {
            if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.cancel_at {
                self.guard.take();
            }
        }
        fn harvest(self) {}
    }

    #[test]
    fn search_stops_inside_a_segment_when_cancelled() {
        let docs = 4 * DOCS_PER_CHECK;
        let (schema, index) = ram_index(docs);
        let searcher = index.reader().expect("reader").searcher();
        assert_eq!(searcher.segment_readers().len(), 1, "one segment");
        let range = TimeRange {
            since: -1,
            until: i64::MAX / 2,
        };
        let query = CompiledQuery::new(&schema, "*", range)
            .and_then(|q| q.query(&schema))
            .expect("query");
        let budget = Budget::new(QueryLimits::default());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let collector = HangUp {
            cancel_at: 100,
            guard: std::sync::Mutex::new(Some(budget.cancel_on_drop())),
            seen: Arc::clone(&seen),
        };
        let err = searcher
            .search(&*query, &Deadlined::new(collector, &budget))
            .map_err(|e| budget.explain(e))
            .expect_err("cancelled mid-segment");
        assert!(matches!(err, SearchError::Cancelled), "{err}");
        let seen = seen.load(Ordering::Relaxed);
        assert!(
            seen < docs,
            "stopped at the next check ({seen} of {docs} documents read)"
        );
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
