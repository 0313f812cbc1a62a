//! The condition (`selection and not 1 of filter_*`) and its aggregation
//! (`| count(field) by field > N`).

use std::collections::BTreeMap;

use super::logsource::map_field;
use super::{and, or};
use crate::detect::rule::ExprSpec;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    One,
    All,
    Of,
    Them,
    Ident(String),
}

pub(super) fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' {
            out.push(Tok::LParen);
            chars.next();
        } else if c == ')' {
            out.push(Tok::RParen);
            chars.next();
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '(' || c == ')' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(match w.to_ascii_lowercase().as_str() {
                "and" => Tok::And,
                "or" => Tok::Or,
                "not" => Tok::Not,
                "1" | "any" => Tok::One,
                "all" => Tok::All,
                "of" => Tok::Of,
                "them" => Tok::Them,
                _ => {
                    if !w
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'))
                    {
                        return Err(format!("condition: unexpected {w:?}"));
                    }
                    Tok::Ident(w)
                }
            });
        }
    }
    Ok(out)
}

pub(super) struct CondParser<'a> {
    pub(super) toks: &'a [Tok],
    pub(super) pos: usize,
    pub(super) searches: &'a BTreeMap<String, ExprSpec>,
    pub(super) order: &'a [String],
}

impl CondParser<'_> {
    pub(super) fn parse(&mut self) -> Result<ExprSpec, String> {
        if self.toks.is_empty() {
            return Err("empty condition".into());
        }
        let e = self.or()?;
        match self.toks.get(self.pos) {
            None => Ok(e),
            Some(t) => Err(format!(
                "condition: unexpected {t:?} after a complete expression"
            )),
        }
    }

    fn next_is(&self, t: &Tok) -> bool {
        self.toks.get(self.pos) == Some(t)
    }

    fn or(&mut self) -> Result<ExprSpec, String> {
        let mut alts = vec![self.and()?];
        while self.next_is(&Tok::Or) {
            self.pos += 1;
            alts.push(self.and()?);
        }
        Ok(or(alts))
    }

    fn and(&mut self) -> Result<ExprSpec, String> {
        let mut parts = vec![self.not()?];
        while self.next_is(&Tok::And) {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(and(parts))
    }

    fn not(&mut self) -> Result<ExprSpec, String> {
        if self.next_is(&Tok::Not) {
            self.pos += 1;
            let inner = self.not()?;
            return Ok(ExprSpec {
                not: Some(Box::new(inner)),
                ..ExprSpec::default()
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<ExprSpec, String> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("condition ends too early")?;
        self.pos += 1;
        match t {
            Tok::LParen => {
                let e = self.or()?;
                if !self.next_is(&Tok::RParen) {
                    return Err("condition: missing `)`".into());
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::One | Tok::All => {
                if !self.next_is(&Tok::Of) {
                    return Err("condition: expected `of` after `1`/`all`".into());
                }
                self.pos += 1;
                let target = self.toks.get(self.pos).cloned();
                self.pos += 1;
                let names: Vec<&String> = match &target {
                    Some(Tok::Them) => self.order.iter().filter(|n| !n.starts_with('_')).collect(),
                    Some(Tok::Ident(p)) => {
                        self.order.iter().filter(|n| name_matches(p, n)).collect()
                    }
                    _ => {
                        return Err("condition: expected a name pattern or `them` after `of`".into())
                    }
                };
                if names.is_empty() {
                    return Err(format!(
                        "condition: {} matches no search identifier",
                        match &target {
                            Some(Tok::Ident(p)) => p.as_str(),
                            _ => "them",
                        }
                    ));
                }
                let parts: Vec<ExprSpec> = names
                    .iter()
                    .filter_map(|n| self.searches.get(*n).cloned())
                    .collect();
                Ok(if t == Tok::All { and(parts) } else { or(parts) })
            }
            Tok::Ident(name) => {
                if name.contains('*') {
                    return Err(format!(
                        "condition: {name:?} has a wildcard; write `1 of {name}` or `all of {name}`"
                    ));
                }
                self.searches
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| format!("condition: unknown search identifier {name:?}"))
            }
            other => Err(format!("condition: unexpected {other:?}")),
        }
    }
}

/// Search identifier patterns allow `*` anywhere.
pub(super) fn name_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

#[derive(Debug)]
pub(super) struct Aggregation {
    pub(super) counted: Option<&'static str>,
    pub(super) by: Option<&'static str>,
    pub(super) count: u64,
}

/// `count() [by field] >|>= N` and `count(field) [by field] >|>= N`; the
/// only aggregations that can fire as lines arrive.
pub(super) fn parse_aggregation(s: &str) -> Result<Aggregation, String> {
    let s = s.trim();
    let Some(rest) = s.strip_prefix("count(") else {
        return Err(format!(
            "unsupported aggregation {s:?}: only count() and count(field), with `by` and \
             `>`/`>=`, map to nightowl (threshold and distinct rules)"
        ));
    };
    let (inner, rest) = rest
        .split_once(')')
        .ok_or_else(|| format!("aggregation {s:?}: missing `)`"))?;
    let counted = match inner.trim() {
        "" => None,
        f => Some(map_field(f).map_err(|e| e.message)?),
    };
    let rest = rest.trim();
    let (by, rest) = match rest.strip_prefix("by ") {
        Some(r) => {
            let r = r.trim_start();
            let end = r.find(|c: char| c.is_whitespace() || c == '>' || c == '<' || c == '=');
            let (f, r) = r.split_at(end.unwrap_or(r.len()));
            if f.contains(',') {
                return Err(format!("aggregation {s:?}: group by one field"));
            }
            (Some(map_field(f).map_err(|e| e.message)?), r.trim())
        }
        None => (None, rest),
    };
    let (strict, n) = if let Some(n) = rest.strip_prefix(">=") {
        (false, n)
    } else if let Some(n) = rest.strip_prefix('>') {
        (true, n)
    } else {
        return Err(format!(
            "aggregation {s:?}: only `>` and `>=` comparisons fire as counts grow"
        ));
    };
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("aggregation {s:?}: the count must be a whole number"))?;
    Ok(Aggregation {
        counted,
        by,
        count: if strict { n + 1 } else { n.max(1) },
    })
}
