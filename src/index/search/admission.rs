//! Query admission: a query's size and shape are checked against
//! `[limits.query]` before anything is opened, each refusal naming the
//! setting to raise.

use serde::Deserialize;
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};

use super::SearchError;

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
    pub(super) fn check_text(&self, text: &str) -> Result<(), SearchError> {
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

    pub(super) fn check_ast(&self, ast: &UserInputAst) -> Result<(), SearchError> {
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
