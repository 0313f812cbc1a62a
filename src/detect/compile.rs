//! Match expressions → tests interned into one shared [`MatchSet`]. The
//! detection parameters of each kind compile in `kind/`.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::RegexBuilder;

use super::field::Field;
use super::matcher::{cased_view_of, view_of, CmpOp, Expr, Leaf, MatchSet, Net};
use super::rule::{ExprSpec, Scalar};

/// A compile error; `near` is text of the rule file the error is about, so
/// the loader can point at its line.
#[derive(Debug, Clone)]
pub struct CompileError {
    pub near: Option<String>,
    pub message: String,
}

pub fn err<T>(
    near: impl Into<Option<String>>,
    message: impl Into<String>,
) -> Result<T, CompileError> {
    Err(CompileError {
        near: near.into(),
        message: message.into(),
    })
}

/// Collects leaves and needles while rules are compiled.
#[derive(Default)]
pub struct Builder {
    leaves: Vec<Leaf>,
    interned: HashMap<String, u32>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    fn intern(&mut self, key: String, make: impl FnOnce(&mut Self) -> Leaf) -> u32 {
        if let Some(&i) = self.interned.get(&key) {
            return i;
        }
        let leaf = make(self);
        let i = self.leaves.len() as u32;
        self.leaves.push(leaf);
        self.interned.insert(key, i);
        i
    }

    pub fn finish(self) -> Result<MatchSet, CompileError> {
        Ok(MatchSet {
            leaves: self.leaves,
            ..MatchSet::default()
        })
    }

    /// Compiles an expression; children of `all`/`any` are put cheapest
    /// first (they have no side effects, so order only changes cost).
    pub fn expr(&mut self, spec: &ExprSpec) -> Result<Expr, CompileError> {
        let combinators = [spec.all.is_some(), spec.any.is_some(), spec.not.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let is_leaf = spec.field.is_some();
        if combinators + usize::from(is_leaf) != 1 {
            return err(
                None,
                "a match expression needs exactly one of: all/and, any/or, not, or a field test",
            );
        }
        if let Some(children) = spec.all.as_ref().or(spec.any.as_ref()) {
            if has_ops(spec) || spec.decode || spec.cased {
                return err(None, "all/any cannot also carry a field operator");
            }
            let mut out = Vec::with_capacity(children.len());
            for c in children {
                out.push(self.expr(c)?);
            }
            return Ok(if spec.all.is_some() {
                if out.len() == 1 {
                    out.remove(0)
                } else {
                    Expr::All(out)
                }
            } else if out.len() == 1 {
                out.remove(0)
            } else {
                Expr::Any(out)
            });
        }
        if let Some(c) = &spec.not {
            if has_ops(spec) || spec.decode || spec.cased {
                return err(None, "not cannot also carry a field operator");
            }
            return Ok(Expr::Not(Box::new(self.expr(c)?)));
        }
        let fields = spec.field.as_ref().map(|f| f.as_slice()).unwrap_or(&[]);
        if fields.is_empty() {
            return err(None, "field: needs at least one field name");
        }
        let mut per_field = Vec::new();
        for name in fields {
            let f = Field::parse(name).or_else(|m| err(Some(name.clone()), m))?;
            per_field.push(self.field_test(f, spec)?);
        }
        Ok(if per_field.len() == 1 {
            per_field.remove(0)
        } else {
            Expr::Any(per_field)
        })
    }

    /// A case-sensitive test on the value as logged: every operator becomes
    /// an anchored or unanchored regex over the cased view.
    fn cased_test(&mut self, f: Field, s: &ExprSpec) -> Result<Expr, CompileError> {
        if s.decode {
            return err(None, "cased cannot be combined with decode");
        }
        if s.cidr.is_some()
            || has_numeric_ops(s)
            || s.exists.is_some()
            || s.payload_ops().next().is_some()
        {
            return err(
                None,
                "cased applies to equals, contains, startswith, endswith and regex only",
            );
        }
        string_field(f, "cased")?;
        let v = cased_view_of(f);
        let esc = |list: &[String], pre: &str, post: &str| -> Vec<String> {
            list.iter()
                .map(|x| format!("{pre}{}{post}", regex::escape(x)))
                .collect()
        };
        let mut groups: Vec<Vec<String>> = Vec::new();
        if let Some(eq) = &s.equals {
            let list: Vec<String> = eq.as_slice().iter().map(|x| x.to_string()).collect();
            groups.push(esc(&list, "^(?:", ")$"));
        }
        if let Some(l) = &s.contains {
            groups.push(esc(l.as_slice(), "", ""));
        }
        if let Some(l) = &s.startswith {
            groups.push(esc(l.as_slice(), "^(?:", ")"));
        }
        if let Some(l) = &s.endswith {
            groups.push(esc(l.as_slice(), "(?:", ")$"));
        }
        if let Some(l) = &s.regex {
            groups.push(l.as_slice().to_vec());
        }
        let mut tests = Vec::new();
        for pats in groups {
            if pats.is_empty() {
                return err(None, "cased: empty list");
            }
            tests.push(self.regex_any(v, &pats, false)?);
        }
        match tests.len() {
            0 => err(None, format!("field {} has no operator", f.name())),
            1 => Ok(tests.remove(0)),
            _ => Ok(Expr::All(tests)),
        }
    }

    /// One leaf for "any of these regexes matches the view": the patterns
    /// are joined into one alternation, so a line is scanned once (with one
    /// literal prefilter over all of them) instead of once per pattern.
    fn regex_any(
        &mut self,
        v: usize,
        pats: &[String],
        insensitive: bool,
    ) -> Result<Expr, CompileError> {
        if pats.is_empty() {
            return err(None, "regex: empty list");
        }
        let build = |p: &str| {
            RegexBuilder::new(p)
                .case_insensitive(insensitive)
                .size_limit(1 << 20)
                .build()
        };
        // A pattern in verbose mode may end in a `#` comment that would
        // swallow the closing parenthesis of the alternation.
        let joinable = pats.len() > 1 && !pats.iter().any(|p| verbose(p));
        let groups: Vec<Vec<&String>> = if joinable {
            vec![pats.iter().collect()]
        } else {
            pats.iter().map(|p| vec![p]).collect()
        };
        let mut alts = Vec::new();
        for g in groups {
            let key = format!("re|{v}|{insensitive}|{g:?}");
            if let Some(&i) = self.interned.get(&key) {
                alts.push(Expr::Leaf(i));
                continue;
            }
            let pattern = if g.len() == 1 {
                g[0].clone()
            } else {
                let parts: Vec<String> = g.iter().map(|p| format!("(?:{p})")).collect();
                parts.join("|")
            };
            let re = match build(&pattern) {
                Ok(re) => re,
                Err(joined) => {
                    // Name the pattern at fault; if each is fine alone, the
                    // alternation only outgrew the size limit.
                    for p in &g {
                        if let Err(e) = build(p) {
                            return err(Some(p.to_string()), format!("bad regex {p:?}: {e}"));
                        }
                    }
                    return err(Some(g[0].to_string()), format!("regex list: {joined}"));
                }
            };
            let i = self.intern(key, |_| Leaf::Regex {
                view: v,
                re,
                insensitive,
            });
            alts.push(Expr::Leaf(i));
        }
        Ok(if alts.len() == 1 {
            alts.remove(0)
        } else {
            Expr::Any(alts)
        })
    }

    fn field_test(&mut self, f: Field, s: &ExprSpec) -> Result<Expr, CompileError> {
        if s.cased {
            return self.cased_test(f, s);
        }
        let mut tests = Vec::new();
        let decode = s.decode;
        let v = view_of(f, decode);
        let needles = |list: &[String], what: &str| -> Result<Vec<String>, CompileError> {
            if list.is_empty() {
                return err(None, format!("{what}: empty list"));
            }
            Ok(list.iter().map(|n| n.to_ascii_lowercase()).collect())
        };
        if let Some(eq) = &s.equals {
            if f.is_numeric() {
                let mut values = Vec::new();
                for x in eq.as_slice() {
                    values.push(match x {
                        Scalar::Int(i) => *i as f64,
                        Scalar::Float(x) => *x,
                        Scalar::Str(t) => t.trim().parse().or_else(|_| {
                            err(
                                Some(t.clone()),
                                format!("{}: {t:?} is not a number", f.name()),
                            )
                        })?,
                    });
                }
                let key = format!("in|{f:?}|{values:?}");
                let i = self.intern(key, |_| Leaf::NumIn { field: f, values });
                tests.push(Expr::Leaf(i));
            } else {
                let list: Vec<String> = eq.as_slice().iter().map(|x| x.to_string()).collect();
                if list.iter().any(String::is_empty) {
                    // Parsers fold `""` and `-` into "no value": an empty
                    // needle would never match, silently.
                    return err(
                        None,
                        format!(
                            "{}: equals \"\" never matches: a field logged empty or as '-' \
                             is absent; use exists: false",
                            f.name()
                        ),
                    );
                }
                let n = needles(&list, "equals")?;
                let key = format!("eq|{v}|{n:?}");
                let i = self.intern(key, |_| Leaf::Equals {
                    view: v,
                    needles: n.into_iter().map(String::into_boxed_str).collect(),
                });
                tests.push(Expr::Leaf(i));
            }
        }
        for (list, what) in [(&s.startswith, "startswith"), (&s.endswith, "endswith")] {
            if let Some(list) = list {
                string_field(f, what)?;
                let n = needles(list.as_slice(), what)?;
                let key = format!("{what}|{v}|{n:?}");
                let starts = what == "startswith";
                let i = self.intern(key, |_| {
                    let needles = n.into_iter().map(String::into_boxed_str).collect();
                    if starts {
                        Leaf::StartsWith { view: v, needles }
                    } else {
                        Leaf::EndsWith { view: v, needles }
                    }
                });
                tests.push(Expr::Leaf(i));
            }
        }
        if let Some(list) = &s.contains {
            string_field(f, "contains")?;
            let n = needles(list.as_slice(), "contains")?;
            if let Some(bad) = n.iter().find(|x| x.is_empty()) {
                return err(None, format!("contains: empty needle {bad:?}"));
            }
            let key = format!("contains|{v}|{n:?}");
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&n)
                .or_else(|e| err(None, format!("contains: {e}")))?;
            let i = self.intern(key, |_| Leaf::Contains {
                view: v,
                ac,
                needles: n.into_iter().map(String::into_boxed_str).collect(),
            });
            tests.push(Expr::Leaf(i));
        }
        if let Some(list) = &s.regex {
            string_field(f, "regex")?;
            tests.push(self.regex_any(v, list.as_slice(), true)?);
        }
        if let Some(list) = &s.cidr {
            if f != Field::ClientIp {
                return err(None, format!("cidr applies to client_ip, not {}", f.name()));
            }
            let mut nets = Vec::new();
            for c in list.as_slice() {
                nets.push(Net::parse(c).or_else(|m| err(Some(c.clone()), m))?);
            }
            let key = format!("cidr|{:?}", list.as_slice());
            let i = self.intern(key, |_| Leaf::Cidr { nets });
            tests.push(Expr::Leaf(i));
        }
        for (val, op) in [
            (s.gt, CmpOp::Gt),
            (s.gte, CmpOp::Gte),
            (s.lt, CmpOp::Lt),
            (s.lte, CmpOp::Lte),
        ] {
            if let Some(value) = val {
                if !f.is_numeric() {
                    return err(
                        None,
                        format!("numeric comparison on {}, which is not a number", f.name()),
                    );
                }
                let key = format!("cmp|{f:?}|{op:?}|{value}");
                let i = self.intern(key, |_| Leaf::Cmp {
                    field: f,
                    op,
                    value,
                });
                tests.push(Expr::Leaf(i));
            }
        }
        if let Some(yes) = s.exists {
            let key = format!("exists|{f:?}|{yes}");
            let i = self.intern(key, |_| Leaf::Exists { field: f, yes });
            tests.push(Expr::Leaf(i));
        }
        for (kind, yes) in s.payload_ops() {
            string_field(f, kind.name())?;
            // The detectors decode on their own, from the lowercased value
            // as logged (the view most string tests already computed).
            let view = view_of(f, false);
            let key = format!("payload|{view}|{kind:?}");
            let i = self.intern(key, |_| Leaf::Payload { view, kind });
            tests.push(if yes {
                Expr::Leaf(i)
            } else {
                Expr::Not(Box::new(Expr::Leaf(i)))
            });
        }
        match tests.len() {
            0 => err(
                None,
                format!(
                    "field {} has no operator (equals, contains, startswith, endswith, regex, \
                     cidr, gt, gte, lt, lte, exists, sqli, xss, cmdi, traversal)",
                    f.name()
                ),
            ),
            // Several operators on one mapping all have to hold
            // (`gte: 500` with `lt: 600`).
            1 => Ok(tests.remove(0)),
            _ => Ok(Expr::All(tests)),
        }
    }
}

fn has_ops(s: &ExprSpec) -> bool {
    s.field.is_some()
        || s.equals.is_some()
        || s.contains.is_some()
        || s.startswith.is_some()
        || s.endswith.is_some()
        || s.regex.is_some()
        || s.cidr.is_some()
        || s.gt.is_some()
        || s.gte.is_some()
        || s.lt.is_some()
        || s.lte.is_some()
        || s.exists.is_some()
        || s.payload_ops().next().is_some()
}

/// True when the pattern turns on verbose mode (`(?x)`, `(?ix:`...).
fn verbose(p: &str) -> bool {
    p.match_indices("(?").any(|(i, _)| {
        p[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '-')
            .take_while(|c| *c != '-')
            .any(|c| c == 'x')
    })
}

fn has_numeric_ops(s: &ExprSpec) -> bool {
    s.gt.is_some() || s.gte.is_some() || s.lt.is_some() || s.lte.is_some()
}

fn string_field(f: Field, op: &str) -> Result<(), CompileError> {
    if f.is_numeric() {
        return err(
            None,
            format!(
                "{op} on numeric field {}: use equals or gt/gte/lt/lte",
                f.name()
            ),
        );
    }
    Ok(())
}

/// Sorts the children of every `all`/`any` by cost, cheapest first.
pub fn order(set: &MatchSet, e: &mut Expr) {
    match e {
        Expr::All(v) | Expr::Any(v) => {
            for c in v.iter_mut() {
                order(set, c);
            }
            v.sort_by_key(|c| set.cost(c));
        }
        Expr::Not(c) => order(set, c),
        Expr::True | Expr::Leaf(_) | Expr::Node(_) => {}
    }
}

/// Field names → fields, each checked.
pub fn fields(list: &Option<super::rule::OneOrMany<String>>) -> Result<Vec<Field>, CompileError> {
    let mut out = Vec::new();
    if let Some(l) = list {
        for name in l.as_slice() {
            out.push(Field::parse(name).or_else(|m| err(Some(name.clone()), m))?);
        }
    }
    Ok(out)
}

/// Query terms for the parts of a match that the search language can
/// express exactly (numeric equality and ranges, keyword equality on the
/// top-level `all`); the rest is left to the reader of the sample lines.
pub fn evidence_terms(spec: &ExprSpec) -> String {
    let mut terms = Vec::new();
    collect_terms(spec, &mut terms);
    terms.join(" AND ")
}

fn collect_terms(spec: &ExprSpec, out: &mut Vec<String>) {
    if let Some(children) = &spec.all {
        for c in children {
            collect_terms(c, out);
        }
        return;
    }
    let Some(fields) = &spec.field else { return };
    let [name] = fields.as_slice() else { return };
    let Ok(f) = Field::parse(name) else { return };
    let keyword = matches!(
        f,
        Field::Method | Field::Host | Field::User | Field::Format | Field::Source
    );
    if let Some(eq) = &spec.equals {
        if f.is_numeric() || keyword {
            let alts: Vec<String> = eq
                .as_slice()
                .iter()
                .map(|v| format!("{}:{}", f.name(), quote(&v.to_string())))
                .collect();
            out.push(if alts.len() == 1 {
                alts[0].clone()
            } else {
                format!("({})", alts.join(" OR "))
            });
        }
    }
    if f.is_numeric() {
        let lo = spec
            .gte
            .map(|v| format!("[{v}"))
            .or(spec.gt.map(|v| format!("{{{v}")));
        let hi = spec
            .lte
            .map(|v| format!("{v}]"))
            .or(spec.lt.map(|v| format!("{v}}}")));
        if lo.is_some() || hi.is_some() {
            out.push(format!(
                "{}:{} TO {}",
                f.name(),
                lo.unwrap_or_else(|| "[*".into()),
                hi.unwrap_or_else(|| "*]".into())
            ));
        }
    }
}

/// Quotes a value for the query language unless it is a plain token.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod regex_list_tests {
    use super::*;

    #[test]
    fn verbose_mode_is_recognised() {
        assert!(verbose("(?x) a # comment"));
        assert!(verbose("(?ix:a b)"));
        assert!(!verbose("(?i)x+"));
        assert!(!verbose("(?-x)a"));
        assert!(!verbose("a(?:x)b"));
    }

    #[test]
    fn a_regex_list_is_one_leaf_matching_any_pattern() {
        let mut b = Builder::new();
        let list = vec!["^/a$".to_string(), "b+c".to_string(), "(?-i)Z".to_string()];
        let e = b.regex_any(0, &list, true).expect("valid");
        assert!(matches!(e, Expr::Leaf(_)), "{e:?}");
        let set = b.finish().expect("set");
        let Leaf::Regex { re, .. } = &set.leaves[0] else {
            panic!("not a regex leaf")
        };
        assert!(re.is_match("/a"));
        assert!(re.is_match("xxbbc"));
        assert!(re.is_match("Z"));
        // Each alternative keeps its own anchors and flags.
        assert!(!re.is_match("/a/"));
        assert!(!re.is_match("z"));
    }
}
