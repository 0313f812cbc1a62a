//! From the query text to a tantivy query per partition layout:
//! parsed once, negations completed, `pattern:` names expanded.

use std::ops::Bound;
use std::sync::Arc;

use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::query_grammar::{self, UserInputAst, UserInputLeaf};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, Term};

use super::{QueryLimits, SearchError, TimeRange};
use crate::index::catalog::{Catalog, Partition};
use crate::index::query::{self, ReadErrors};
use crate::index::schema::{Layout, LogSchema};
use crate::time::{day_of, NANOS_PER_DAY};

/// A parsed query, ready to run against any partition: built once per
/// partition layout it meets (`query.rs`).
pub struct CompiledQuery {
    /// `None`: every line.
    ast: Option<UserInputAst>,
    range: TimeRange,
    /// The query names the `pattern` field: partitions created before it
    /// existed hold no value for it and are not searched.
    pub(super) uses_pattern: bool,
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
        let text = operators_in_capitals(text.trim());
        let text = text.as_ref();
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
                    let message = match (unbalanced(text), parser.parse_query(text)) {
                        (Some(why), _) => why,
                        (None, Err(e)) => format!("{e}"),
                        (None, Ok(_)) => format!("cannot parse {text:?}"),
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
    pub(super) fn read_error(&self) -> Result<(), SearchError> {
        match self.errors.take() {
            Some(message) => Err(SearchError::Internal(anyhow::anyhow!(message))),
            None => Ok(()),
        }
    }

    pub(super) fn days(&self) -> (i64, i64) {
        (
            day_of(self.range.since),
            day_of(self.range.until.saturating_sub(1)),
        )
    }

    /// The query for one partition: the time clause is dropped when the
    /// whole day is inside the range.
    pub(super) fn for_partition(
        &self,
        partition: &Partition,
    ) -> Result<Box<dyn Query>, SearchError> {
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

/// `status:500 or status:502`, `a && b`: what people type from other
/// tools (KQL takes lowercase operators, shells and code `&&`/`||`). The
/// grammar knows only `AND`, `OR`, `NOT`, and read `or` as a required word:
/// zero hits, silently. Outside quotes, a whole word `and`/`or`/`not` in
/// any case, and `&&`/`||`, become the operator; a quoted `"or"` is still
/// the word.
fn operators_in_capitals(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut quoted = false;
    let mut last = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == b'"' {
            quoted = !quoted;
        }
        let starts_word = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'(');
        if quoted || !starts_word {
            i += 1;
            continue;
        }
        let end = bytes[i..]
            .iter()
            .position(|b| matches!(b, b' ' | b'\t' | b')'))
            .map_or(bytes.len(), |n| i + n);
        let word = &text[i..end];
        let operator = match word {
            "&&" => Some("AND"),
            "||" => Some("OR"),
            w if w.eq_ignore_ascii_case("and") => Some("AND"),
            w if w.eq_ignore_ascii_case("or") => Some("OR"),
            w if w.eq_ignore_ascii_case("not") => Some("NOT"),
            _ => None,
        };
        match operator {
            Some(op) => {
                if op != word {
                    out.push_str(&text[last..i]);
                    out.push_str(op);
                    last = end;
                }
                i = end;
            }
            // Read on byte by byte: a quote inside the word opens a phrase.
            None => i += 1,
        }
    }
    if last == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[last..]);
    std::borrow::Cow::Owned(out)
}

/// What is left open or closed twice in a query that does not parse,
/// named with its column: tantivy's own message only echoes the query.
fn unbalanced(text: &str) -> Option<String> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut quote: Option<usize> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        let column = text[..i].chars().count() + 1;
        if escaped {
            escaped = false;
            continue;
        }
        match (c, quote) {
            ('\\', _) => escaped = true,
            ('"', Some(_)) => quote = None,
            (_, Some(_)) => {}
            ('"', None) => quote = Some(column),
            ('(' | '[' | '{', None) => open.push((c, column)),
            (')' | ']' | '}', None) => {
                let opener = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some((o, _)) if o == opener || (opener != '(' && o != '(') => {}
                    Some((o, at)) => {
                        return Some(format!(
                            "'{c}' at column {column} does not close the '{o}' at column {at}"
                        ))
                    }
                    None => return Some(format!("'{c}' at column {column} closes nothing")),
                }
            }
            _ => {}
        }
    }
    if let Some(at) = quote {
        return Some(format!(
            "the quote at column {at} is never closed: close the phrase, or write \\\" for a quote inside it"
        ));
    }
    if let Some((o, at)) = open.pop() {
        let hint = if o == '(' {
            "add the ')'"
        } else {
            "a range reads status:[500 TO 599]"
        };
        return Some(format!("the '{o}' at column {at} is never closed: {hint}"));
    }
    None
}
