//! From a parsed query to tantivy queries, for one partition layout
//! (`schema.rs`).
//!
//! Word semantics are the same in both layouts: a word of the line is a
//! token of the `default` tokenizer (lowercased, split on anything not
//! alphanumeric), a phrase is such tokens at consecutive positions. What
//! differs is how the index answers:
//!
//! - V1 keeps `raw` with positions: a word is a term of `raw`, a phrase a
//!   tantivy phrase query.
//! - V2 indexes each word of a line once, without positions: a word of the
//!   line is a term of `rest`, `path` or `referer`, or a word of one of the
//!   `user_agent` keywords of the segment (found by reading that field's
//!   term dictionary, small because agent strings repeat). A phrase is all
//!   its words (from the index), then checked against the stored line
//!   ([`Verified`]), the way Elasticsearch answers phrases on
//!   `match_only_text`.
//!
//! Field-scoped queries (`path:/api/v1/orders`, `user_agent:"curl/8.4.0"`)
//! mean the phrase inside that field's value, checked the same way; a
//! `path:/api/*` is a prefix of the path. Typed fields get typed errors
//! (`status:5*` names the range to use) and CIDR networks.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tantivy::columnar::StrColumn;
use tantivy::query::{
    AllQuery, BitSetDocSet, BooleanQuery, BoostQuery, ConstScorer, EmptyQuery, EnableScoring,
    Explanation, Occur, PhrasePrefixQuery, Query, QueryParser, RangeQuery, RegexQuery, Scorer,
    TermQuery, Weight,
};
use tantivy::query_grammar::{
    Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::store::StoreReader;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TantivyDocument, Term, TERMINATED};

use super::derived::{DerivedFields, DerivedWord, WordMatch};
use super::schema::{stored_ip, Layout, LogSchema};
use crate::parse::unescape::unescaped_target;
use crate::parse::{parse_line, Event, Format, ParseContext};

/// Why a query cannot be built: a sentence for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct BadQuery(pub String);

/// A failure while checking stored lines during a search (a damaged doc
/// store): the scorer cannot return it, so it is kept here and the search
/// reports it when it ends.
#[derive(Debug, Default)]
pub struct ReadErrors(Mutex<Option<String>>);

impl ReadErrors {
    fn record(&self, message: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(message);
        }
    }

    /// The first failure since the last call.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Builds the query of `ast` for partitions of `schema`'s layout.
pub fn build(
    ast: &UserInputAst,
    schema: &LogSchema,
    errors: &Arc<ReadErrors>,
) -> Result<Box<dyn Query>, BadQuery> {
    let mut parser = QueryParser::new(
        schema.schema.clone(),
        vec![schema.raw],
        TokenizerManager::default(),
    );
    parser.set_conjunction_by_default();
    // Bounded by `limits.query.max_regex_bytes` and `max_pattern_terms`.
    parser.allow_regexes();
    Builder {
        schema,
        parser,
        errors,
    }
    .ast(ast)
}

struct Builder<'a> {
    schema: &'a LogSchema,
    /// tantivy's own parser, for leaves whose meaning is tantivy's
    /// (keywords, ranges of numbers and dates, regexes on word fields).
    parser: QueryParser,
    errors: &'a Arc<ReadErrors>,
}

/// Where a text literal looks.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The whole line (no field, or `raw:`).
    Line,
    /// One parsed field: `path`, `referer` or `user_agent`.
    Field(TextField),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum TextField {
    Path,
    Referer,
    UserAgent,
}

impl TextField {
    fn value<'e>(self, event: &'e Event<'_>) -> Option<&'e str> {
        match self {
            TextField::Path => event.path.as_deref(),
            TextField::Referer => event.referer.as_deref(),
            TextField::UserAgent => event.user_agent.as_deref(),
        }
    }
}

/// A literal's words: (position, token) as the `default` tokenizer makes
/// them, the last one a prefix when the literal ends with `*`.
#[derive(Debug)]
struct Words {
    tokens: Vec<(usize, String)>,
    prefix: bool,
    slop: u32,
}

impl Builder<'_> {
    fn ast(&self, ast: &UserInputAst) -> Result<Box<dyn Query>, BadQuery> {
        match ast {
            UserInputAst::Clause(clauses) => {
                if clauses.is_empty() {
                    return Ok(Box::new(EmptyQuery));
                }
                let mut built = Vec::with_capacity(clauses.len());
                for (occur, sub) in clauses {
                    // Log search reads like grep: every word must match.
                    built.push((occur.unwrap_or(Occur::Must), self.ast(sub)?));
                }
                Ok(Box::new(BooleanQuery::new(built)))
            }
            UserInputAst::Boost(inner, boost) => Ok(Box::new(BoostQuery::new(
                self.ast(inner)?,
                boost.into_inner() as Score,
            ))),
            UserInputAst::Leaf(leaf) => self.leaf(leaf),
        }
    }

    /// tantivy's meaning of a leaf.
    fn tantivy(&self, leaf: &UserInputLeaf) -> Result<Box<dyn Query>, BadQuery> {
        self.parser
            .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(leaf.clone())))
            .map_err(|e| BadQuery(format!("{e}")))
    }

    fn leaf(&self, leaf: &UserInputLeaf) -> Result<Box<dyn Query>, BadQuery> {
        match leaf {
            UserInputLeaf::Literal(literal) => self.literal(literal),
            UserInputLeaf::All => Ok(Box::new(AllQuery)),
            UserInputLeaf::Range {
                field,
                lower,
                upper,
            } => self.range(field.as_deref(), lower, upper, leaf),
            UserInputLeaf::Set { field, elements } => match field.as_deref() {
                // `f: IN [a b]` means `f:a OR f:b`, with each element read
                // the way `f:a` is.
                Some(name) if special(name) => {
                    let mut any = Vec::with_capacity(elements.len());
                    for element in elements {
                        let literal = UserInputLiteral {
                            field_name: Some(name.to_string()),
                            phrase: element.clone(),
                            delimiter: Delimiter::None,
                            slop: 0,
                            prefix: false,
                        };
                        any.push((Occur::Should, self.literal(&literal)?));
                    }
                    Ok(Box::new(BooleanQuery::new(any)))
                }
                _ => self.tantivy(leaf),
            },
            UserInputLeaf::Regex { field, pattern } => self.regex(field.as_deref(), pattern, leaf),
            UserInputLeaf::Exists { field } => self.exists(field, leaf),
        }
    }

    /// `field:*`: lines with a value there. Only fast fields can be asked
    /// that of tantivy directly; an indexed field has a value when it has
    /// a term, and every line has its raw text.
    fn exists(&self, name: &str, leaf: &UserInputLeaf) -> Result<Box<dyn Query>, BadQuery> {
        let schema = &self.schema.schema;
        if name == "raw" {
            return Ok(Box::new(AllQuery));
        }
        if name == "route" {
            return Err(BadQuery(
                "route:* is not answered: a route is asked for whole, e.g. route:\"/orders/:id\""
                    .into(),
            ));
        }
        let Some(field) = schema.get_field(name).ok().filter(|_| name != "rest") else {
            return Err(BadQuery(format!("Field does not exist: '{name}'")));
        };
        let entry = schema.get_field_entry(field);
        if name == "path" {
            // A path with no word (`/`, `/?`) has no term: the lines with a
            // method but no path word are read to see whether they have one.
            let method = UserInputLeaf::Exists {
                field: "method".into(),
            };
            let wordless = BooleanQuery::new(vec![
                (Occur::Must, self.exists("method", &method)?),
                (Occur::MustNot, scan(field, |_, _| true)),
            ]);
            let checked = self.verified(Box::new(wordless), Check::PathPrefix(String::new()));
            return Ok(Box::new(BooleanQuery::new(vec![
                (Occur::Should, scan(field, |_, _| true)),
                (Occur::Should, checked),
            ])));
        }
        if entry.is_fast() {
            self.tantivy(leaf)
        } else if entry.is_indexed() {
            Ok(scan(field, |_, _| true))
        } else {
            Err(BadQuery(format!(
                "{name}:* is not answered: {name} is not indexed"
            )))
        }
    }

    fn literal(&self, literal: &UserInputLiteral) -> Result<Box<dyn Query>, BadQuery> {
        let field = literal.field_name.as_deref();
        match field {
            None | Some("raw") => self.text(Target::Line, literal),
            Some("path") => self.text(Target::Field(TextField::Path), literal),
            Some("route") if literal.prefix || literal.phrase.contains('*') => Err(BadQuery(
                "a route is matched whole (route:\"/orders/:id\"); for a prefix, ask the path: path:/orders/*"
                    .into(),
            )),
            Some("route") => Ok(self.route(&literal.phrase)),
            Some("referer") => self.text(Target::Field(TextField::Referer), literal),
            Some("user_agent") => self.text(Target::Field(TextField::UserAgent), literal),
            Some("rest") => Err(BadQuery("Field does not exist: 'rest'".into())),
            Some(name @ ("host" | "source" | "format" | "user" | "method" | "app")) => {
                match self.schema.schema.get_field(name) {
                    Ok(field) => Ok(keyword_glob(field, &literal.phrase, literal.prefix)),
                    Err(_) => Err(BadQuery(format!("Field does not exist: '{name}'"))),
                }
            }
            Some("client_ip") => {
                let (lower, upper) = ip_range(&literal.phrase).ok_or_else(|| ip_error(literal))?;
                Ok(self.ip_between(Bound::Included(lower), Bound::Included(upper)))
            }
            Some(name @ ("status" | "bytes" | "duration")) => self.number(name, literal),
            // One instant, as a range: V2 keeps time as a fast field only.
            Some("timestamp") => self.tantivy(&UserInputLeaf::Range {
                field: Some("timestamp".into()),
                lower: UserInputBound::Inclusive(literal.phrase.clone()),
                upper: UserInputBound::Inclusive(literal.phrase.clone()),
            }),
            _ => self.tantivy(&UserInputLeaf::Literal(literal.clone())),
        }
    }

    /// `status`, `bytes`, `duration`: a number, as a range on the fast
    /// field (V2 does not index `bytes` and `duration`).
    fn number(&self, name: &str, literal: &UserInputLiteral) -> Result<Box<dyn Query>, BadQuery> {
        let phrase = literal.phrase.trim();
        let field = self.number_field(name);
        if literal.prefix || phrase.contains('*') {
            return Err(number_error(name, phrase));
        }
        let term = number_term(field, name, phrase).ok_or_else(|| number_error(name, phrase))?;
        if name == "status" {
            return Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic)));
        }
        Ok(Box::new(RangeQuery::new(
            Bound::Included(term.clone()),
            Bound::Included(term),
        )))
    }

    fn number_field(&self, name: &str) -> Field {
        match name {
            "status" => self.schema.status,
            "bytes" => self.schema.bytes,
            _ => self.schema.duration,
        }
    }

    fn range(
        &self,
        field: Option<&str>,
        lower: &UserInputBound,
        upper: &UserInputBound,
        leaf: &UserInputLeaf,
    ) -> Result<Box<dyn Query>, BadQuery> {
        match field {
            Some(name @ ("status" | "bytes" | "duration")) => {
                let field = self.number_field(name);
                let bound = |b: &UserInputBound| -> Result<Bound<Term>, BadQuery> {
                    let text = b.term_str();
                    if text == "*" || matches!(b, UserInputBound::Unbounded) {
                        return Ok(Bound::Unbounded);
                    }
                    let term =
                        number_term(field, name, text).ok_or_else(|| number_error(name, text))?;
                    Ok(match b {
                        UserInputBound::Exclusive(_) => Bound::Excluded(term),
                        _ => Bound::Included(term),
                    })
                };
                Ok(Box::new(RangeQuery::new(bound(lower)?, bound(upper)?)))
            }
            Some("client_ip") => {
                let bound = |b: &UserInputBound| -> Result<Bound<Ipv6Addr>, BadQuery> {
                    let text = b.term_str();
                    if text == "*" || matches!(b, UserInputBound::Unbounded) {
                        return Ok(Bound::Unbounded);
                    }
                    let ip = IpAddr::from_str(text.trim()).map_err(|_| {
                        BadQuery(format!(
                            "client_ip range bound {text:?} is not an address: use client_ip:[203.0.113.0 TO 203.0.113.255] or client_ip:203.0.113.0/24"
                        ))
                    })?;
                    let ip = stored_ip(ip);
                    Ok(match b {
                        UserInputBound::Exclusive(_) => Bound::Excluded(ip),
                        _ => Bound::Included(ip),
                    })
                };
                Ok(self.ip_between(bound(lower)?, bound(upper)?))
            }
            None | Some("raw") if self.schema.layout.split_words() => {
                let mut any = Vec::new();
                for field in self.word_fields() {
                    let mut leaf = leaf.clone();
                    if let UserInputLeaf::Range { field: f, .. } = &mut leaf {
                        *f = Some(self.schema.schema.get_field_name(field).to_string());
                    }
                    any.push((Occur::Should, self.tantivy(&leaf)?));
                }
                let (lo, hi) = (lower.clone(), upper.clone());
                any.extend(self.keyword_words(Arc::new(move |t| in_range(t, &lo, &hi))));
                let (lo, hi) = (lower.clone(), upper.clone());
                any.extend(self.derived(WordMatch::Any(Arc::new(move |t| in_range(t, &lo, &hi)))));
                Ok(Box::new(BooleanQuery::new(any)))
            }
            None => self.tantivy(&UserInputLeaf::Range {
                field: Some("raw".into()),
                lower: lower.clone(),
                upper: upper.clone(),
            }),
            _ => self.tantivy(leaf),
        }
    }

    fn regex(
        &self,
        field: Option<&str>,
        pattern: &str,
        leaf: &UserInputLeaf,
    ) -> Result<Box<dyn Query>, BadQuery> {
        let bad = |e: String| BadQuery(format!("invalid regex /{pattern}/: {e}"));
        let whole_token =
            || regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| bad(e.to_string()));
        match (self.schema.layout, field) {
            (Layout::V2 | Layout::V3, None | Some("raw")) => {
                let mut any = Vec::new();
                for field in self.word_fields() {
                    let query =
                        RegexQuery::from_pattern(pattern, field).map_err(|e| bad(e.to_string()))?;
                    any.push((Occur::Should, Box::new(query) as Box<dyn Query>));
                }
                let re = whole_token()?;
                let derived_re = re.clone();
                any.extend(self.keyword_words(Arc::new(move |t| re.is_match(t))));
                any.extend(self.derived(WordMatch::Any(Arc::new(move |t| derived_re.is_match(t)))));
                Ok(Box::new(BooleanQuery::new(any)))
            }
            (Layout::V2 | Layout::V3, Some("user_agent")) => {
                let re = whole_token()?;
                Ok(word_scan(
                    self.schema.user_agent,
                    Arc::new(move |t| re.is_match(t)),
                ))
            }
            (_, None) => self.tantivy(&UserInputLeaf::Regex {
                field: Some("raw".into()),
                pattern: pattern.to_string(),
            }),
            _ => self.tantivy(leaf),
        }
    }

    /// The line's words kept in keyword fields instead of `rest` (V2 and
    /// later): the user agent's, and the method's (layout V3 cuts it from
    /// `rest` too; asking the method of older partitions finds lines
    /// their `rest` has already). Both have few values per segment.
    fn keyword_words(&self, word: WordPredicate) -> impl Iterator<Item = (Occur, Box<dyn Query>)> {
        [self.schema.user_agent, self.schema.method]
            .into_iter()
            .map(move |field| (Occur::Should, word_scan(field, Arc::clone(&word))))
    }

    /// The fields holding the words of a V2 line besides `user_agent`.
    fn word_fields(&self) -> Vec<Field> {
        let mut fields = vec![self.schema.path, self.schema.referer];
        fields.extend(self.schema.rest);
        fields
    }

    /// V3: the documents whose words rendered from fast fields match
    /// (`derived.rs`); nothing to ask in older layouts.
    fn derived(&self, word: WordMatch) -> Option<(Occur, Box<dyn Query>)> {
        let s = &self.schema;
        let fields = DerivedFields {
            derived: s.derived?,
            timestamp: s.timestamp,
            status: s.status,
            bytes: s.bytes,
        };
        Some((Occur::Should, Box::new(DerivedWord { fields, word })))
    }

    fn ip_between(&self, lower: Bound<Ipv6Addr>, upper: Bound<Ipv6Addr>) -> Box<dyn Query> {
        let term = |ip: Ipv6Addr| Term::from_field_ip_addr(self.schema.client_ip, ip);
        Box::new(RangeQuery::new(lower.map(term), upper.map(term)))
    }

    /// A literal on the line or on one of its text fields.
    fn text(&self, target: Target, literal: &UserInputLiteral) -> Result<Box<dyn Query>, BadQuery> {
        let (text, prefix) = unstarred(literal);
        // `path:/api/*`: the path starts with `/api/`.
        if target == Target::Field(TextField::Path) && prefix && text.starts_with('/') {
            return self.path_prefix(text);
        }
        let words = Words {
            tokens: positioned_tokens(text),
            // A prefix only when the `*` ends a word (`adm*`), not after
            // a separator (`api/*`: every word of it is whole).
            prefix: prefix && text.chars().next_back().is_some_and(char::is_alphanumeric),
            slop: literal.slop,
        };
        if words.tokens.is_empty() {
            return Ok(Box::new(EmptyQuery));
        }
        match target {
            Target::Field(TextField::UserAgent) if self.schema.layout.split_words() => {
                Ok(scan(self.schema.user_agent, move |agent, tokenizer| {
                    phrase_in(tokenizer.words(agent), &words)
                }))
            }
            Target::Line if self.schema.layout == Layout::V1 => self.line_v1(literal, &words),
            _ if words.tokens.len() == 1 => Ok(self.word(target, &words.tokens[0].1, words.prefix)),
            _ => {
                let candidates = self.all_words(target, &words);
                let check = match target {
                    Target::Line => Check::Line(words),
                    Target::Field(field) => Check::Field(field, words),
                };
                Ok(self.verified(candidates, check))
            }
        }
    }

    /// V1 lines keep positions: tantivy's own phrase queries.
    fn line_v1(
        &self,
        literal: &UserInputLiteral,
        words: &Words,
    ) -> Result<Box<dyn Query>, BadQuery> {
        let raw = self.schema.raw;
        if words.tokens.len() == 1 {
            return Ok(self.word(Target::Line, &words.tokens[0].1, words.prefix));
        }
        if words.prefix {
            let terms = words
                .tokens
                .iter()
                .map(|(pos, t)| (*pos, Term::from_field_text(raw, t)))
                .collect();
            return Ok(Box::new(PhrasePrefixQuery::new_with_offset(terms)));
        }
        let mut literal = literal.clone();
        literal.field_name = Some("raw".into());
        self.tantivy(&UserInputLeaf::Literal(literal))
    }

    /// Documents with one word (a prefix of one word with `prefix`).
    fn word(&self, target: Target, token: &str, prefix: bool) -> Box<dyn Query> {
        let term = |field: Field| -> Box<dyn Query> {
            if prefix {
                // Tokens are alphanumeric: nothing to escape.
                match RegexQuery::from_pattern(&format!("{token}.*"), field) {
                    Ok(query) => Box::new(query),
                    Err(_) => Box::new(EmptyQuery),
                }
            } else {
                Box::new(TermQuery::new(
                    Term::from_field_text(field, token),
                    IndexRecordOption::Basic,
                ))
            }
        };
        // The word among the words of a keyword value (`user_agent`).
        let wanted = token.to_string();
        let keyword_word: WordPredicate = Arc::new(move |t| {
            if prefix {
                t.starts_with(wanted.as_str())
            } else {
                *t == wanted
            }
        });
        match (self.schema.layout, target) {
            (Layout::V1, Target::Line) => term(self.schema.raw),
            (Layout::V2 | Layout::V3, Target::Line) => {
                let mut any: Vec<(Occur, Box<dyn Query>)> = self
                    .word_fields()
                    .into_iter()
                    .map(|f| (Occur::Should, term(f)))
                    .collect();
                any.extend(self.keyword_words(keyword_word));
                let derived = if prefix {
                    WordMatch::Prefix(token.to_string())
                } else {
                    WordMatch::Exact(token.to_string())
                };
                any.extend(self.derived(derived));
                Box::new(BooleanQuery::new(any))
            }
            (Layout::V2 | Layout::V3, Target::Field(TextField::UserAgent)) => {
                word_scan(self.schema.user_agent, keyword_word)
            }
            (_, Target::Field(field)) => term(self.text_field(field)),
        }
    }

    fn text_field(&self, field: TextField) -> Field {
        match field {
            TextField::Path => self.schema.path,
            TextField::Referer => self.schema.referer,
            TextField::UserAgent => self.schema.user_agent,
        }
    }

    /// Documents holding every word of `words` (where `target` looks).
    fn all_words(&self, target: Target, words: &Words) -> Box<dyn Query> {
        let last = words.tokens.len() - 1;
        let mut seen = HashSet::new();
        let mut all = Vec::with_capacity(words.tokens.len());
        for (i, (_, token)) in words.tokens.iter().enumerate() {
            let prefix = words.prefix && i == last;
            if seen.insert((token.as_str(), prefix)) {
                all.push((Occur::Must, self.word(target, token, prefix)));
            }
        }
        Box::new(BooleanQuery::new(all))
    }

    fn path_prefix(&self, text: &str) -> Result<Box<dyn Query>, BadQuery> {
        let target = Target::Field(TextField::Path);
        let words = Words {
            tokens: positioned_tokens(text),
            prefix: text.chars().next_back().is_some_and(char::is_alphanumeric),
            slop: 0,
        };
        let candidates: Box<dyn Query> = if words.tokens.is_empty() {
            Box::new(AllQuery)
        } else {
            self.all_words(target, &words)
        };
        Ok(self.verified(candidates, Check::PathPrefix(text.to_string())))
    }

    /// `route:"/orders/:id"`: lines whose path reduces to that endpoint, as
    /// the rules' `route` field reduces it (a route-keyed alert's
    /// evidence). The words of its literal start narrow the candidates;
    /// each is then checked, so `/orders/:id/items` is not one of them.
    fn route(&self, route: &str) -> Box<dyn Query> {
        let candidates: Box<dyn Query> = match crate::parse::route::literal_prefix(route) {
            Some(prefix) => {
                let words = Words {
                    tokens: positioned_tokens(prefix),
                    prefix: false,
                    slop: 0,
                };
                if words.tokens.is_empty() {
                    Box::new(AllQuery)
                } else {
                    self.all_words(Target::Field(TextField::Path), &words)
                }
            }
            None => Box::new(AllQuery),
        };
        self.verified(candidates, Check::Route(route.to_string()))
    }

    fn verified(&self, candidates: Box<dyn Query>, check: Check) -> Box<dyn Query> {
        Box::new(Verified {
            candidates,
            check: Arc::new(check),
            raw: self.schema.raw,
            errors: Arc::clone(self.errors),
        })
    }
}

/// Fields whose leaves this module reads itself.
fn special(name: &str) -> bool {
    matches!(
        name,
        "raw"
            | "path"
            | "route"
            | "referer"
            | "user_agent"
            | "host"
            | "source"
            | "format"
            | "user"
            | "method"
            | "app"
            | "client_ip"
            | "status"
            | "bytes"
            | "duration"
    )
}

/// The literal's text without a trailing `*`, and whether it had one
/// (`adm*` and `"admin lo"*` are prefixes).
fn unstarred(literal: &UserInputLiteral) -> (&str, bool) {
    let phrase = literal.phrase.as_str();
    if literal.prefix {
        return (phrase, true);
    }
    match (literal.delimiter, phrase.strip_suffix('*')) {
        (Delimiter::None, Some(stripped)) if !stripped.is_empty() => (stripped, true),
        _ => (phrase, false),
    }
}

/// Lines whose keyword `field` is `pattern`, ignoring ASCII case (host
/// names, methods), where each `*` of the pattern stands for any text
/// (`host:web-*`, `source:*shop*`): keyword dictionaries are small, so the
/// terms are read and matched one by one.
fn keyword_glob(field: Field, pattern: &str, prefix: bool) -> Box<dyn Query> {
    let mut parts: Vec<String> = pattern.split('*').map(str::to_ascii_lowercase).collect();
    if prefix {
        parts.push(String::new());
    }
    scan(field, move |term, _| glob_matches(&parts, term))
}

/// Whether `text` is `parts` joined by runs of any text, ignoring ASCII
/// case (`parts` are lowercase; one part is an exact match).
fn glob_matches(parts: &[String], text: &str) -> bool {
    let text = text.as_bytes();
    let starts = |at: usize, part: &str| {
        text.len() >= at + part.len()
            && text[at..at + part.len()].eq_ignore_ascii_case(part.as_bytes())
    };
    let Some((first, rest)) = parts.split_first() else {
        return text.is_empty();
    };
    if !starts(0, first) {
        return false;
    }
    let Some((last, middle)) = rest.split_last() else {
        return text.len() == first.len();
    };
    let mut at = first.len();
    for part in middle {
        // Leftmost match of each middle part leaves the most room after it.
        match (at..=text.len().saturating_sub(part.len())).find(|&i| starts(i, part)) {
            Some(i) => at = i + part.len(),
            None => return false,
        }
    }
    text.len() >= at + last.len() && starts(text.len() - last.len(), last)
}

fn number_term(field: Field, name: &str, text: &str) -> Option<Term> {
    let text = text.trim();
    match name {
        "duration" => f64::from_str(text)
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| Term::from_field_f64(field, v)),
        _ => u64::from_str(text)
            .ok()
            .map(|v| Term::from_field_u64(field, v)),
    }
}

/// `status:5*` → "status is a number: use status:[500 TO 599]".
fn number_error(name: &str, text: &str) -> BadQuery {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let example = match (name, digits.len()) {
        ("status", 1..=2) => {
            let scale = 10u64.pow(3 - digits.len() as u32);
            let low = digits.parse::<u64>().unwrap_or(0) * scale;
            format!("status:[{low} TO {}]", low + scale - 1)
        }
        ("status", _) => "status:404 or status:[500 TO 599]".to_string(),
        ("duration", _) => "duration:[0.5 TO *] (seconds)".to_string(),
        _ => format!("{name}:[1000 TO 9999]"),
    };
    BadQuery(format!("{name} is a number: use {example}"))
}

fn ip_error(literal: &UserInputLiteral) -> BadQuery {
    BadQuery(format!(
        "client_ip:{} is not an address or network: use client_ip:203.0.113.7 or client_ip:203.0.113.0/24",
        literal.phrase
    ))
}

/// IPv4 is indexed as its IPv6-mapped form.
/// `203.0.113.7` or a CIDR network `203.0.113.0/24`, as the first and last
/// address (IPv6-mapped).
pub fn ip_range(text: &str) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let text = text.trim();
    let (addr, bits) = match text.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits.parse::<u32>().ok()?)),
        None => (text, None),
    };
    let ip = IpAddr::from_str(addr).ok()?;
    let (max, offset) = match ip {
        IpAddr::V4(_) => (32, 96),
        IpAddr::V6(_) => (128, 0),
    };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return None;
    }
    let value = u128::from(stored_ip(ip));
    let host_bits = 128 - (offset + bits);
    let hosts = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let first = value & !hosts;
    Some((Ipv6Addr::from(first), Ipv6Addr::from(first | hosts)))
}

fn in_range(token: &str, lower: &UserInputBound, upper: &UserInputBound) -> bool {
    let above = match lower {
        UserInputBound::Inclusive(b) => b == "*" || token >= b.as_str(),
        UserInputBound::Exclusive(b) => b == "*" || token > b.as_str(),
        UserInputBound::Unbounded => true,
    };
    let below = match upper {
        UserInputBound::Inclusive(b) => b == "*" || token <= b.as_str(),
        UserInputBound::Exclusive(b) => b == "*" || token < b.as_str(),
        UserInputBound::Unbounded => true,
    };
    above && below
}

/// The `default` tokenizer's words of `text`, with their positions.
pub fn positioned_tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if let Some(mut tokenizer) = TokenizerManager::default().get("default") {
        let mut stream = tokenizer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            out.push((token.position, token.text.clone()));
        }
    }
    out
}

/// The `default` tokenizer for many texts in a row (a phrase check per
/// candidate line, a dictionary scan): built once, its buffers reused.
pub(crate) struct Tokenizer {
    analyzer: Option<tantivy::tokenizer::TextAnalyzer>,
    words: Vec<(usize, String)>,
}

impl Tokenizer {
    pub(crate) fn new() -> Self {
        Tokenizer {
            analyzer: TokenizerManager::default().get("default"),
            words: Vec::new(),
        }
    }

    /// The words of `text` with their positions, as [`positioned_tokens`].
    pub(crate) fn words(&mut self, text: &str) -> &[(usize, String)] {
        let Some(analyzer) = &mut self.analyzer else {
            return &[];
        };
        let mut n = 0;
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            match self.words.get_mut(n) {
                Some((position, word)) => {
                    *position = token.position;
                    word.clear();
                    word.push_str(&token.text);
                }
                None => self.words.push((token.position, token.text.clone())),
            }
            n += 1;
        }
        &self.words[..n]
    }
}

/// Whether `words` occur in `hay` as a phrase: at the same relative
/// positions (slop 0), or each within `slop` positions of where the
/// previous one allows (the last a prefix with `words.prefix`).
fn phrase_in(hay: &[(usize, String)], words: &Words) -> bool {
    let Some(((first_offset, _), _)) = words.tokens.split_first() else {
        return false;
    };
    let last = words.tokens.len() - 1;
    let matches = |i: usize, token: &str| {
        let want = words.tokens[i].1.as_str();
        if words.prefix && i == last {
            token.starts_with(want)
        } else {
            token == want
        }
    };
    // Reachable adjusted positions (position minus the word's offset in
    // the phrase) after each word.
    let mut reach: Vec<i64> = hay
        .iter()
        .filter(|(_, t)| matches(0, t))
        .map(|(p, _)| *p as i64 - *first_offset as i64)
        .collect();
    for i in 1..words.tokens.len() {
        if reach.is_empty() {
            return false;
        }
        let offset = words.tokens[i].0 as i64;
        let slop = i64::from(words.slop);
        reach = hay
            .iter()
            .filter(|(_, t)| matches(i, t))
            .map(|(p, _)| *p as i64 - offset)
            .filter(|adjusted| {
                reach.iter().any(|r| {
                    if slop == 0 {
                        r == adjusted
                    } else {
                        (adjusted - r).abs() <= slop
                    }
                })
            })
            .collect();
    }
    !reach.is_empty()
}

/// What a [`Verified`] query asks of the stored line.
#[derive(Debug)]
enum Check {
    /// The phrase among the line's words.
    Line(Words),
    /// The phrase among the words of one parsed field.
    Field(TextField, Words),
    /// The path starts with this, ASCII case aside.
    PathPrefix(String),
    /// The path's route (`parse::route`) is this.
    Route(String),
}

impl Check {
    fn accepts(&self, raw: &str, format: Option<&str>, tokenizer: &mut Tokenizer) -> bool {
        match self {
            Check::Line(words) => {
                phrase_in(tokenizer.words(raw), words)
                    || (memchr::memchr2(b'%', b'\\', raw.as_bytes()).is_some()
                        && with_event(raw, format, |e| unescaped_path_has(e, words, tokenizer)))
            }
            Check::Field(field, words) => with_event(raw, format, |e| {
                field
                    .value(e)
                    .is_some_and(|v| phrase_in(tokenizer.words(v), words))
                    || (*field == TextField::Path && unescaped_path_has(e, words, tokenizer))
            }),
            Check::Route(route) => with_event(raw, format, |e| {
                e.path.as_deref().is_some_and(|p| {
                    let mut of_line = String::with_capacity(route.len() + 8);
                    crate::parse::route::write_route(p, &mut of_line);
                    of_line == *route
                })
            }),
            Check::PathPrefix(prefix) => with_event(raw, format, |e| {
                e.path.as_deref().is_some_and(|p| {
                    p.len() >= prefix.len()
                        && p.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                })
            }),
        }
    }

    fn needs_event(&self) -> bool {
        !matches!(self, Check::Line(_))
    }
}

/// Whether the phrase is among the words of the event's unescaped path,
/// which the index keeps beside the path as written (`schema.rs`).
fn unescaped_path_has(e: &Event<'_>, words: &Words, tokenizer: &mut Tokenizer) -> bool {
    e.path
        .as_deref()
        .and_then(unescaped_target)
        .is_some_and(|decoded| phrase_in(tokenizer.words(&decoded), words))
}

/// Parses the line again with the parser that indexed it.
fn with_event(raw: &str, format: Option<&str>, f: impl FnOnce(&Event<'_>) -> bool) -> bool {
    let hint = super::lines::parser_of(format).unwrap_or(Format::Auto);
    let ctx = ParseContext { now_nanos: 0 };
    parse_line(raw.as_bytes(), hint, &ctx)
        .ok()
        .is_some_and(|event| f(&event))
}

/// Documents of `candidates` whose stored line passes `check`.
struct Verified {
    candidates: Box<dyn Query>,
    check: Arc<Check>,
    raw: Field,
    errors: Arc<ReadErrors>,
}

impl Clone for Verified {
    fn clone(&self) -> Self {
        Verified {
            candidates: self.candidates.box_clone(),
            check: Arc::clone(&self.check),
            raw: self.raw,
            errors: Arc::clone(&self.errors),
        }
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

impl Query for Verified {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(VerifiedWeight {
            candidates: self.candidates.weight(enable_scoring)?,
            check: Arc::clone(&self.check),
            raw: self.raw,
            errors: Arc::clone(&self.errors),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.candidates.query_terms(visitor);
    }
}

struct VerifiedWeight {
    candidates: Box<dyn Weight>,
    check: Arc<Check>,
    raw: Field,
    errors: Arc<ReadErrors>,
}

/// Decompressed blocks a phrase check keeps: candidates come in doc order.
const CHECK_CACHE_BLOCKS: usize = 2;

/// Which documents of one segment were checked against one [`Check`], and
/// which passed. Segments never change, so a line checked once need not
/// be read again: the web page asks each query several times (count,
/// hits, histogram, facets), and paging asks again.
struct Verdicts {
    checked: Mutex<(BitSet, BitSet)>,
    bytes: usize,
}

impl Verdicts {
    fn get(&self, doc: DocId) -> Option<bool> {
        let sets = self.checked.lock().ok()?;
        sets.0.contains(doc).then(|| sets.1.contains(doc))
    }

    fn set(&self, doc: DocId, accepted: bool) {
        if let Ok(mut sets) = self.checked.lock() {
            sets.0.insert(doc);
            if accepted {
                sets.1.insert(doc);
            }
        }
    }
}

/// Bytes of verdicts kept for the whole process (two bits a document).
const VERDICT_BYTES: usize = 32 << 20;

type VerdictKey = (tantivy::index::SegmentId, String);

/// A use counter, and each entry with the count of its last use.
type VerdictEntries = (
    u64,
    std::collections::HashMap<VerdictKey, (u64, Arc<Verdicts>)>,
);

/// The recently used [`Verdicts`], least recently used dropped first.
struct VerdictCache {
    entries: Mutex<VerdictEntries>,
}

static VERDICTS: std::sync::LazyLock<VerdictCache> = std::sync::LazyLock::new(|| VerdictCache {
    entries: Mutex::new((0, std::collections::HashMap::new())),
});

/// Forgets every remembered phrase verdict (benches measure a first
/// query with it).
#[doc(hidden)]
pub fn forget_verdicts() {
    if let Ok(mut entries) = VERDICTS.entries.lock() {
        entries.1.clear();
    }
}

impl VerdictCache {
    fn entry(&self, key: VerdictKey, max_doc: DocId) -> Option<Arc<Verdicts>> {
        let mut guard = self.entries.lock().ok()?;
        let (tick, entries) = &mut *guard;
        *tick += 1;
        let now = *tick;
        if let Some((used, verdicts)) = entries.get_mut(&key) {
            *used = now;
            return Some(Arc::clone(verdicts));
        }
        let bytes = 2 * (max_doc as usize / 8 + 8);
        if bytes > VERDICT_BYTES {
            return None;
        }
        let mut total: usize = entries.values().map(|(_, v)| v.bytes).sum::<usize>() + bytes;
        while total > VERDICT_BYTES {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, gone)) = entries.remove(&oldest) {
                total -= gone.bytes;
            }
        }
        let verdicts = Arc::new(Verdicts {
            checked: Mutex::new((
                BitSet::with_max_value(max_doc),
                BitSet::with_max_value(max_doc),
            )),
            bytes,
        });
        entries.insert(key, (now, Arc::clone(&verdicts)));
        Some(verdicts)
    }
}

impl Weight for VerifiedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inner = self.candidates.scorer(reader, boost)?;
        let format = if self.check.needs_event() {
            reader.fast_fields().str("format")?
        } else {
            None
        };
        let key = (reader.segment_id(), format!("{:?}", self.check));
        let mut scorer = VerifiedScorer {
            inner,
            verdicts: VERDICTS.entry(key, reader.max_doc()),
            tokenizer: Tokenizer::new(),
            store: reader.get_store_reader(CHECK_CACHE_BLOCKS)?,
            format,
            check: Arc::clone(&self.check),
            raw: self.raw,
            errors: Arc::clone(&self.errors),
        };
        let first = scorer.inner.doc();
        scorer.settle(first);
        Ok(Box::new(scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain(self, reader, doc, "phrase checked on the stored line")
    }
}

struct VerifiedScorer {
    inner: Box<dyn Scorer>,
    /// Verdicts already known for this segment and check.
    verdicts: Option<Arc<Verdicts>>,
    tokenizer: Tokenizer,
    store: StoreReader,
    format: Option<StrColumn>,
    check: Arc<Check>,
    raw: Field,
    errors: Arc<ReadErrors>,
}

impl VerifiedScorer {
    fn accepts(&mut self, doc: DocId) -> bool {
        if let Some(known) = self.verdicts.as_ref().and_then(|v| v.get(doc)) {
            return known;
        }
        // A line that could not be read is reported, and not remembered.
        let Some(verdict) = self.check_line(doc) else {
            return false;
        };
        if let Some(verdicts) = &self.verdicts {
            verdicts.set(doc, verdict);
        }
        verdict
    }

    /// `None` when the stored line could not be read (recorded in `errors`).
    fn check_line(&mut self, doc: DocId) -> Option<bool> {
        let stored: TantivyDocument = match self.store.get(doc) {
            Ok(stored) => stored,
            Err(e) => {
                self.errors
                    .record(format!("reading stored line {doc} to check a phrase: {e}"));
                return None;
            }
        };
        let Some(raw) = stored.get_first(self.raw).and_then(|v| v.as_str()) else {
            return Some(false);
        };
        let format = self.format.as_ref().and_then(|column| {
            let ord = column.term_ords(doc).next()?;
            let mut out = String::new();
            column.ord_to_str(ord, &mut out).ok()?.then_some(out)
        });
        Some(
            self.check
                .accepts(raw, format.as_deref(), &mut self.tokenizer),
        )
    }

    /// Moves on from `doc` (the inner scorer's) to the first accepted one.
    fn settle(&mut self, mut doc: DocId) -> DocId {
        while doc != TERMINATED && !self.accepts(doc) {
            doc = self.inner.advance();
        }
        doc
    }
}

impl DocSet for VerifiedScorer {
    fn advance(&mut self) -> DocId {
        let next = self.inner.advance();
        self.settle(next)
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.inner.doc() >= target {
            return self.inner.doc();
        }
        let next = self.inner.seek(target);
        self.settle(next)
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        // Reading a stored line costs far more than a posting.
        self.inner.cost().saturating_mul(50)
    }
}

impl Scorer for VerifiedScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

/// Documents with a term of `field` that `accepts`: the term dictionary
/// is read whole, so only for fields with few distinct values per segment
/// (`user_agent` in V2, `method`).
fn scan(
    field: Field,
    accepts: impl Fn(&str, &mut Tokenizer) -> bool + Send + Sync + 'static,
) -> Box<dyn Query> {
    Box::new(TermScan {
        field,
        accepts: Arc::new(accepts),
    })
}

type TermPredicate = Arc<dyn Fn(&str, &mut Tokenizer) -> bool + Send + Sync>;

/// Accepts a word (a lowercase token of the `default` tokenizer).
type WordPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Documents of a keyword field whose value has a word `word` accepts
/// (see [`scan`]).
fn word_scan(field: Field, word: WordPredicate) -> Box<dyn Query> {
    scan(field, move |value, tokenizer| {
        tokenizer.words(value).iter().any(|(_, t)| word(t))
    })
}

#[derive(Clone)]
struct TermScan {
    field: Field,
    accepts: TermPredicate,
}

impl fmt::Debug for TermScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TermScan")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl Query for TermScan {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for TermScan {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let mut docs = BitSet::with_max_value(reader.max_doc());
        let index = reader.inverted_index(self.field)?;
        let mut terms = index.terms().stream()?;
        let mut tokenizer = Tokenizer::new();
        while terms.advance() {
            let Ok(text) = std::str::from_utf8(terms.key()) else {
                continue;
            };
            if !(self.accepts)(text, &mut tokenizer) {
                continue;
            }
            let mut postings =
                index.read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
            let mut doc = postings.doc();
            while doc != TERMINATED {
                docs.insert(doc);
                doc = postings.advance();
            }
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain(self, reader, doc, "term of the field's dictionary")
    }
}

/// Whether `weight` matches `doc`, said the way tantivy's weights do.
fn explain(
    weight: &dyn Weight,
    reader: &SegmentReader,
    doc: DocId,
    why: &'static str,
) -> tantivy::Result<Explanation> {
    let mut scorer = weight.scorer(reader, 1.0)?;
    if scorer.doc() <= doc && scorer.seek(doc) == doc {
        Ok(Explanation::new(why, 1.0))
    } else {
        Err(tantivy::TantivyError::InvalidArgument(format!(
            "document {doc} does not match"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::index::search::{CompiledQuery, TimeRange};
    use rand::{Rng, SeedableRng};
    use tantivy::collector::DocSetCollector;
    use tantivy::Index;

    /// Lines of every kind the index meets: combined with varied agents,
    /// paths and referers, IPv6 clients, syslog, JSON, and junk.
    pub(crate) fn lines() -> Vec<String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let paths = [
            "/",
            "/login",
            "/api/v1/orders",
            "/api/v1/orders/17?page=2",
            "/api/v2/items",
            "/wp-admin/setup-config.php",
            "/v1/api/orders",
            "/static/app.js",
            "/API/v1/Orders",
            "/search?q=admin+login",
            "/apis/x",
            "/download/curl/8.4.0/curl.tgz",
        ];
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "curl/8.4.0", "curl/7.1", "python-requests/2.31.0", "Go-http-client/1.1",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 zgrab/0.x", "8.4.0 curl",
        ];
        let referers = [
            "-",
            "https://www.google.com/",
            "https://example.com/login?next=/admin",
            "-",
        ];
        let methods = ["GET", "GET", "POST", "HEAD", "DELETE"];
        let mut out = Vec::new();
        for i in 0..1500 {
            let ip = if i % 17 == 0 {
                format!("2001:db8::{:x}", rng.gen_range(1..0xffff))
            } else if i % 5 == 0 {
                format!("203.0.113.{}", rng.gen_range(1..255))
            } else {
                format!(
                    "10.{}.{}.{}",
                    rng.gen_range(0..4),
                    rng.gen_range(0..256),
                    rng.gen_range(1..255)
                )
            };
            let user = if i % 11 == 0 { "admin" } else { "-" };
            // Chosen by the line's number, not the generator, so the
            // rest of the fixture stays as it was.
            let protocol = [
                "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/2", "HTTP/3", "HTTP/1.1",
            ][i % 7];
            let method = methods[rng.gen_range(0..methods.len())];
            let method = match i % 29 {
                0 => "get",
                1 => "M-SEARCH",
                _ => method,
            };
            out.push(format!(
                "{ip} - {user} [10/Oct/2024:12:{:02}:{:02} +0000] \"{} {} {protocol}\" {} {} \"{}\" \"{}\"",
                (i / 60) % 60,
                i % 60,
                method,
                paths[rng.gen_range(0..paths.len())],
                [200, 200, 304, 404, 500, 503, 401][rng.gen_range(0..7)],
                rng.gen_range(0..50_000),
                referers[rng.gen_range(0..referers.len())],
                agents[rng.gen_range(0..agents.len())],
            ));
        }
        out.extend([
            "<34>1 2024-10-10T12:00:00Z web-3 sshd 42 - - Failed password for admin from 10.0.0.1 port 22".to_string(),
            "<13>Oct 10 12:00:01 web-4 cron[7]: (root) CMD (curl/8.4.0 https://example.com/api/v1/orders)".to_string(),
            r#"{"remote_addr":"10.0.0.9","request":"GET /api/v1/orders HTTP/1.1","status":502,"http_user_agent":"curl/8.4.0","time":"2024-10-10T12:00:02Z"}"#.to_string(),
            "plain text that no parser reads: admin login from 10.0.0.1 via curl/8.4.0".to_string(),
            // A local time zone, an address written twice, a size of 0,
            // and a status that is also an octet.
            r#"10.0.0.200 - - [10/Oct/2024:14:05:09 +0200] "GET /login HTTP/1.1" 200 0 "-" "curl/8.4.0""#.to_string(),
            r#"203.0.113.7 - - [10/Oct/2024:12:00:09 +0000] "GET /?ip=203.0.113.7 HTTP/1.1" 404 - "-" "curl/8.4.0""#.to_string(),
            "GET /login HTTP/1.1 but not a log line 8.4.0".to_string(),
        ]);
        out
    }

    fn index(schema: &LogSchema, lines: &[String]) -> Index {
        let index = Index::create_in_ram(schema.schema.clone());
        let mut writer = index
            .writer_with_num_threads(1, 30_000_000)
            .expect("writer");
        let ctx = ParseContext {
            now_nanos: 1_728_561_600_000_000_000,
        };
        for (i, line) in lines.iter().enumerate() {
            let event = parse_line(line.as_bytes(), Format::Auto, &ctx).ok();
            // Half the lines keep their own time (V3 answers its words from
            // the timestamp field), half get one that differs from it.
            let at = match event.as_ref().and_then(|e| e.timestamp) {
                Some(t) if i % 2 == 0 => t,
                _ => i as i64,
            };
            writer
                .add_document(schema.document(event.as_ref(), line, at, "web-1", "/var/log/x"))
                .expect("adds");
        }
        writer.commit().expect("commits");
        index
    }

    fn matching(schema: &LogSchema, index: &Index, query: &str) -> Result<Vec<u32>, String> {
        let range = TimeRange {
            since: -1,
            until: i64::MAX / 2,
        };
        let compiled = CompiledQuery::new(schema, query, range).map_err(|e| e.to_string())?;
        let built = compiled.query(schema).map_err(|e| e.to_string())?;
        let searcher = index.reader().expect("reader").searcher();
        let mut docs: Vec<u32> = searcher
            .search(&*built, &DocSetCollector)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|a| a.doc_id)
            .collect();
        docs.sort_unstable();
        Ok(docs)
    }

    /// Queries with their meaning spelled out as a check on the lines, so
    /// each layout is compared with the truth, not only with the other.
    fn truth(line: &str, query: &str) -> Option<bool> {
        let words = positioned_tokens(line);
        let has = |w: &str| words.iter().any(|(_, t)| t == w);
        let phrase = |p: &str| {
            let tokens = positioned_tokens(p);
            phrase_in(
                &words,
                &Words {
                    tokens,
                    prefix: false,
                    slop: 0,
                },
            )
        };
        let event = parse_line(
            line.as_bytes(),
            Format::Auto,
            &ParseContext {
                now_nanos: 1_728_561_600_000_000_000,
            },
        )
        .ok();
        let path = event.as_ref().and_then(|e| e.path.as_deref()).unwrap_or("");
        let agent = event
            .as_ref()
            .and_then(|e| e.user_agent.as_deref())
            .unwrap_or("");
        Some(match query {
            "admin" => has("admin"),
            "curl" => has("curl"),
            "mozilla" => has("mozilla"),
            "dec" | "oct" => has(query),
            "curl/8.4.0" | "\"curl/8.4.0\"" => phrase("curl/8.4.0"),
            "\"GET /login\"" => phrase("GET /login"),
            "10.0.0.1" => phrase("10.0.0.1"),
            "adm*" => words.iter().any(|(_, t)| t.starts_with("adm")),
            "path:/api/v1/orders" => phrase_in(
                &positioned_tokens(path),
                &Words {
                    tokens: positioned_tokens("/api/v1/orders"),
                    prefix: false,
                    slop: 0,
                },
            ),
            "path:/api/*" => path.to_ascii_lowercase().starts_with("/api/"),
            "path:*" => event.as_ref().is_some_and(|e| e.path.is_some()),
            q if q.starts_with("route:") => {
                let route = q["route:".len()..].trim_matches('"');
                let mut of_line = String::new();
                crate::parse::route::write_route(path, &mut of_line);
                event.as_ref().is_some_and(|e| e.path.is_some()) && of_line == route
            }
            "user_agent:python-requests" => agent.to_ascii_lowercase().contains("python-requests"),
            "user_agent:\"curl/8.4.0\"" => phrase_in(
                &positioned_tokens(agent),
                &Words {
                    tokens: positioned_tokens("curl/8.4.0"),
                    prefix: false,
                    slop: 0,
                },
            ),
            "method:post" => event.as_ref().and_then(|e| e.method.as_deref()) == Some("POST"),
            "client_ip:203.0.113.0/24" => event
                .as_ref()
                .and_then(|e| e.client_ip)
                .is_some_and(|ip| ip.to_string().starts_with("203.0.113.")),
            // A number is one word, wherever it is on the line.
            q if q.bytes().all(|b| b.is_ascii_digit()) => has(q),
            _ => return None,
        })
    }

    pub(crate) const QUERIES: &[&str] = &[
        "admin",
        "curl",
        "mozilla",
        "oct",
        "dec",
        "nosuchword",
        "curl/8.4.0",
        "\"curl/8.4.0\"",
        "\"GET /login\"",
        "10.0.0.1",
        "adm*",
        "moz* AND status:200",
        "\"admin lo\"*",
        "\"mozilla x11\"~2",
        "raw:/adm.n/",
        "raw:admin AND NOT status:200",
        "path:login",
        "path:/api/v1/orders",
        "path:\"/api/v1/orders\"",
        "path:/api/*",
        "path:/api/v1/ord*",
        // Not `/api/v1/orders/17?page=2`, nor `/API/v1/Orders`.
        "route:\"/api/v1/orders\"",
        "route:\"/api/v1/orders/:id\"",
        "route:\"/\"",
        "path:wp-admin",
        "path:api*",
        "path:/*",
        "path:*",
        "referer:google",
        "referer:\"next=/admin\"",
        "user_agent:curl",
        "user_agent:\"curl/8.4.0\"",
        "user_agent:python-requests",
        "user_agent:moz*",
        "user_agent:/go.*/",
        "method:post",
        "method:POST",
        "method:po*",
        "status:500",
        "status:[500 TO 599]",
        "status:{500 TO 503}",
        "bytes:>40000",
        "bytes:[0 TO 100]",
        "client_ip:10.0.0.1",
        "client_ip:203.0.113.0/24",
        "client_ip:\"2001:db8::/32\"",
        "client_ip:[10.0.0.0 TO 10.1.255.255]",
        "host:web-1",
        "host:web-3",
        "format:raw",
        "user:admin",
        "app:sshd",
        "status: IN [404 500]",
        "method: IN [post head]",
        "(curl OR wget) AND -status:200",
        "NOT mozilla",
        "curl 8",
        "12",
        "00",
        "09",
        "2024",
        "0000",
        "10",
        "200",
        "404",
        "113",
        "203",
        "0",
        "1",
        "14",
        "0200",
        "20*",
        "1*",
        "o*",
        "octo*",
        "raw:/20.*/",
        "raw:/oc./",
        "raw:[400 TO 410]",
        "\"12:05\"",
        "\"10/oct/2024\"",
        "\"203.0.113\"",
        "\"+0000\"",
        "\"200 0\"",
        "status:200 AND 0000",
        "timestamp:\"1970-01-01T00:00:00Z\"",
        "timestamp:[1970-01-01T00:00:00Z TO 1970-01-02T00:00:00Z] AND curl",
        "*",
        "http",
        "HTTP",
        "get",
        "GET",
        "search",
        "m",
        "m-search",
        "ht*",
        "g*",
        "raw:/htt./",
        "raw:/ge./",
        "raw:[get TO http]",
        "\"GET / HTTP/1.1\"",
        "\"HTTP/1.0\"",
        "\"http 2\"",
        "2",
        "3",
        "\"1.1\"",
        "\"get /login http\"",
        "method:get",
    ];

    #[test]
    fn globs_match_whole_values_ignoring_case() {
        let glob = |p: &str| {
            p.split('*')
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
        };
        for (pattern, text, expected) in [
            ("web-1", "WEB-1", true),
            ("web-1", "web-10", false),
            ("web-*", "web-", true),
            ("*-1", "api-1", true),
            ("*shop*", "/var/log/shop/access.log", true),
            ("*shop*", "/var/log/blog/access.log", false),
            ("a*b*a", "aba", true),
            ("a*b*a", "ab", false),
            ("ab*ba", "aba", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(
                glob_matches(&glob(pattern), text),
                expected,
                "{pattern} {text}"
            );
        }
    }

    #[test]
    fn both_layouts_answer_every_query_alike_and_truly() {
        let lines = lines();
        let (v1, v2, v3) = (LogSchema::v1(), LogSchema::v2(), LogSchema::new());
        let (i1, i2, i3) = (index(&v1, &lines), index(&v2, &lines), index(&v3, &lines));
        for query in QUERIES {
            let a = matching(&v1, &i1, query).unwrap_or_else(|e| panic!("{query} on V1: {e}"));
            let b = matching(&v2, &i2, query).unwrap_or_else(|e| panic!("{query} on V2: {e}"));
            assert_eq!(a, b, "{query}: V1 and V2 differ");
            let c = matching(&v3, &i3, query).unwrap_or_else(|e| panic!("{query} on V3: {e}"));
            assert_eq!(a, c, "{query}: V1 and V3 differ");
            // Asked again, the lines checked once answer from memory.
            let again = matching(&v2, &i2, query).expect("asks again");
            assert_eq!(again, b, "{query}: a different answer the second time");
            if let Some(expected) = truth_set(&lines, query) {
                assert_eq!(b, expected, "{query}: not what it means");
            }
        }
        // V3 took the words out: most lines answer them from fast fields.
        let searcher = i3.reader().expect("reader").searcher();
        let mut flags = std::collections::BTreeMap::new();
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64("derived").expect("derived");
            for doc in 0..segment.max_doc() {
                *flags.entry(column.first(doc).unwrap_or(0)).or_insert(0) += 1;
            }
        }
        // Time, status and size: bits 2, 4 and 8; and one protocol bit.
        let all_three = flags
            .iter()
            .filter(|(f, _)| *f & 14 == 14)
            .map(|(_, n)| n)
            .sum::<usize>();
        assert!(all_three > 600, "lines with every value derived: {flags:?}");
        let protocol = flags
            .iter()
            .filter(|(f, _)| *f & !15 != 0)
            .map(|(_, n)| n)
            .sum::<usize>();
        assert!(
            protocol > 1400,
            "lines with their protocol derived: {flags:?}"
        );
        assert!(flags.len() >= 3, "and lines with fewer: {flags:?}");
        // Each query of the list that has a spelled-out meaning finds something.
        for query in QUERIES {
            if let Some(expected) = truth_set(&lines, query) {
                if *query != "dec" {
                    assert!(!expected.is_empty(), "{query} finds nothing in the fixture");
                }
            }
        }
    }

    fn truth_set(lines: &[String], query: &str) -> Option<Vec<u32>> {
        truth("", query)?;
        Some(
            (0..lines.len() as u32)
                .filter(|&i| truth(&lines[i as usize], query) == Some(true))
                .collect(),
        )
    }

    #[test]
    fn typed_fields_answer_clean_errors() {
        let schema = LogSchema::new();
        let range = TimeRange { since: 0, until: 1 };
        let error = |q: &str| match CompiledQuery::new(&schema, q, range) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{q} must be refused"),
        };
        assert_eq!(
            error("status:5*"),
            "bad query: status is a number: use status:[500 TO 599]"
        );
        assert_eq!(
            error("status:40*"),
            "bad query: status is a number: use status:[400 TO 409]"
        );
        assert!(error("status:abc").contains("status is a number"));
        assert!(error("status:[abc TO 5]").contains("status is a number"));
        assert!(error("bytes:1k").contains("bytes is a number"));
        assert!(error("client_ip:10.0.0.0/33").contains("not an address or network"));
        assert!(error("client_ip:foo").contains("client_ip:203.0.113.0/24"));
        assert!(error("rest:x").contains("rest"));
        assert!(error("route:\"/orders/*\"").contains("path:/orders/*"));
        assert!(error("route:/orders*").contains("matched whole"));
        assert!(error("route:*").contains("route:*"));
    }

    #[test]
    fn cidr_networks_cover_their_addresses() {
        let (first, last) = ip_range("203.0.113.77/24").expect("v4 network");
        assert_eq!(
            first,
            "203.0.113.0"
                .parse::<std::net::Ipv4Addr>()
                .expect("ip")
                .to_ipv6_mapped()
        );
        assert_eq!(
            last,
            "203.0.113.255"
                .parse::<std::net::Ipv4Addr>()
                .expect("ip")
                .to_ipv6_mapped()
        );
        let (first, last) = ip_range("2001:db8::/32").expect("v6 network");
        assert_eq!(first, "2001:db8::".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(
            last,
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<Ipv6Addr>()
                .expect("ip")
        );
        assert_eq!(
            ip_range("0.0.0.0/0").map(|r| r.0),
            Some(Ipv6Addr::from(0xffff_0000_0000u128))
        );
        assert!(ip_range("10.0.0.1/40").is_none() && ip_range("10.0.0/8").is_none());
    }
}
