//! Search identifiers: a map of `field|modifiers: values` items (AND), a
//! list of maps (OR), or keywords; each value with its wildcards, and the
//! modifiers (contains, re, cidr, base64offset, ...) as nightowl tests.

use serde_yaml::{Mapping, Value};

use super::logsource::{map_field, NUMERIC};
use super::{and, fail, or, scalar_text, SigmaError};
use crate::detect::rule::{ExprSpec, OneOrMany, Scalar};

/// One search identifier: a map (AND of its items), a list of maps (OR),
/// or keywords (a string or list of strings, OR, anywhere in the line).
pub(super) fn search(name: &str, v: &Value) -> Result<ExprSpec, SigmaError> {
    match v {
        Value::Mapping(m) => selection_map(m),
        Value::Sequence(items) if items.is_empty() => {
            fail(Some(format!("{name}:")), format!("{name}: empty list"))
        }
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            let mut alts = Vec::new();
            for it in items {
                if let Value::Mapping(m) = it {
                    alts.push(selection_map(m)?);
                }
            }
            Ok(or(alts))
        }
        Value::Sequence(items) => {
            let mut words = Vec::new();
            for it in items {
                match scalar_text(it) {
                    Some(s) => words.push(s),
                    None => {
                        return fail(
                            Some(format!("{name}:")),
                            format!("{name}: a list mixes keywords and field maps"),
                        )
                    }
                }
            }
            keywords(&words, &[], name)
        }
        other => match scalar_text(other) {
            Some(s) => keywords(&[s], &[], name),
            None => fail(
                Some(format!("{name}:")),
                format!("{name}: expected a map of fields, a list of maps or keywords"),
            ),
        },
    }
}

pub(super) fn selection_map(m: &Mapping) -> Result<ExprSpec, SigmaError> {
    if m.is_empty() {
        return fail(None, "an empty selection matches nothing");
    }
    let mut parts = Vec::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            return fail(None, "selection keys must be field names");
        };
        parts.push(item(key, v)?);
    }
    Ok(and(parts))
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) enum Op {
    #[default]
    Equals,
    Contains,
    StartsWith,
    EndsWith,
    Re,
    Cidr,
    Exists,
    Cmp(Cmp),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Default)]
pub(super) struct Mods {
    op: Op,
    all: bool,
    cased: bool,
    base64: bool,
    base64offset: bool,
    re_flags: String,
}

pub(super) fn modifiers(key: &str, list: &[&str]) -> Result<Mods, SigmaError> {
    let mut m = Mods::default();
    let near = || Some(key.to_string());
    for &name in list {
        let op = match name {
            "contains" => Some(Op::Contains),
            "startswith" => Some(Op::StartsWith),
            "endswith" => Some(Op::EndsWith),
            "re" => Some(Op::Re),
            "cidr" => Some(Op::Cidr),
            "exists" => Some(Op::Exists),
            "gt" => Some(Op::Cmp(Cmp::Gt)),
            "gte" => Some(Op::Cmp(Cmp::Gte)),
            "lt" => Some(Op::Cmp(Cmp::Lt)),
            "lte" => Some(Op::Cmp(Cmp::Lte)),
            "all" => {
                m.all = true;
                None
            }
            "cased" => {
                m.cased = true;
                None
            }
            "base64" => {
                m.base64 = true;
                None
            }
            "base64offset" => {
                m.base64offset = true;
                None
            }
            "i" | "ignorecase" => {
                m.re_flags.push('i');
                None
            }
            "m" | "multiline" => {
                m.re_flags.push('m');
                None
            }
            "s" | "dotall" => {
                m.re_flags.push('s');
                None
            }
            other => {
                return fail(
                    near(),
                    format!(
                        "unsupported Sigma modifier |{other} in {key:?}; supported: contains, \
                         startswith, endswith, re (with i, m, s), cidr, all, cased, exists, \
                         base64, base64offset, gt, gte, lt, lte"
                    ),
                )
            }
        };
        if let Some(op) = op {
            if m.op != Op::Equals {
                return fail(
                    near(),
                    format!("{key:?}: more than one match modifier (|{name} after another)"),
                );
            }
            m.op = op;
        }
    }
    if !m.re_flags.is_empty() && m.op != Op::Re {
        return fail(near(), format!("{key:?}: |i, |m and |s only go with |re"));
    }
    if (m.base64 || m.base64offset) && matches!(m.op, Op::Re | Op::Cidr | Op::Exists | Op::Cmp(_)) {
        return fail(
            near(),
            format!("{key:?}: |base64 only goes with equals, contains, startswith, endswith"),
        );
    }
    if m.cased && matches!(m.op, Op::Cidr | Op::Exists | Op::Cmp(_)) {
        return fail(
            near(),
            format!("{key:?}: |cased only goes with string matches"),
        );
    }
    Ok(m)
}

/// One `field|mods: value(s)` item.
pub(super) fn item(key: &str, v: &Value) -> Result<ExprSpec, SigmaError> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default().trim();
    let mods: Vec<&str> = parts.map(str::trim).collect();
    let m = modifiers(key, &mods)?;
    let values: Vec<&Value> = match v {
        Value::Sequence(s) if s.is_empty() => {
            return fail(Some(key.to_string()), format!("{key:?}: empty value list"))
        }
        Value::Sequence(s) => s.iter().collect(),
        other => vec![other],
    };
    if name.is_empty() {
        // `'|all': [a, b]`: keywords that must all occur.
        let mut words = Vec::new();
        for v in &values {
            match scalar_text(v) {
                Some(s) => words.push(s),
                None => return fail(Some(key.to_string()), "keywords must be strings"),
            }
        }
        return keywords(&words, &mods, key);
    }
    if name.eq_ignore_ascii_case("c-uri-extension") {
        return uri_extension(key, &m, &values);
    }
    let field = map_field(name)?;
    let numeric = NUMERIC.contains(&field);
    let near = || Some(key.to_string());
    let leaf = |f: &str| ExprSpec {
        field: Some(OneOrMany::One(f.to_string())),
        cased: m.cased,
        ..ExprSpec::default()
    };

    if m.op == Op::Exists {
        let [Value::Bool(yes)] = values[..] else {
            return fail(near(), format!("{key:?}: |exists takes true or false"));
        };
        return Ok(ExprSpec {
            exists: Some(*yes),
            ..leaf(field)
        });
    }
    if let Op::Cmp(c) = m.op {
        if !numeric {
            return fail(near(), format!("{key:?}: |{c:?} needs a numeric field"));
        }
        let mut out = Vec::new();
        for v in &values {
            let Some(x) = v.as_f64() else {
                return fail(near(), format!("{key:?}: compares with numbers only"));
            };
            let mut e = leaf(field);
            match c {
                Cmp::Gt => e.gt = Some(x),
                Cmp::Gte => e.gte = Some(x),
                Cmp::Lt => e.lt = Some(x),
                Cmp::Lte => e.lte = Some(x),
            }
            out.push(e);
        }
        return Ok(if m.all { and(out) } else { or(out) });
    }
    if m.op == Op::Cidr {
        if field != "client_ip" {
            return fail(near(), format!("{key:?}: |cidr applies to c-ip only"));
        }
        let mut nets = Vec::new();
        for v in &values {
            match scalar_text(v) {
                Some(s) => nets.push(s),
                None => return fail(near(), format!("{key:?}: |cidr takes networks")),
            }
        }
        if m.all {
            return Ok(and(nets
                .into_iter()
                .map(|n| ExprSpec {
                    cidr: Some(OneOrMany::One(n)),
                    ..leaf(field)
                })
                .collect()));
        }
        return Ok(ExprSpec {
            cidr: Some(OneOrMany::Many(nets)),
            ..leaf(field)
        });
    }
    if m.op == Op::Re {
        let mut pats = Vec::new();
        for v in &values {
            let Some(p) = scalar_text(v) else {
                return fail(near(), format!("{key:?}: |re takes patterns"));
            };
            pats.push(p);
        }
        if numeric {
            return fail(near(), format!("{key:?}: |re on a numeric field"));
        }
        // Sigma regexes are case-sensitive unless `|i` or `(?i)`.
        let insensitive = m.re_flags.contains('i');
        let flags: String = ['m', 's']
            .into_iter()
            .filter(|c| m.re_flags.contains(*c))
            .collect();
        let pats: Vec<String> = pats
            .into_iter()
            .map(|p| {
                if flags.is_empty() {
                    p
                } else {
                    format!("(?{flags}){p}")
                }
            })
            .collect();
        let mk = |p: Vec<String>| ExprSpec {
            regex: Some(OneOrMany::Many(p)),
            cased: !insensitive,
            ..leaf(field)
        };
        return Ok(if m.all {
            and(pats.into_iter().map(|p| mk(vec![p])).collect())
        } else {
            mk(pats)
        });
    }

    // Plain values, with contains/startswith/endswith and wildcards.
    let mut tests: Vec<Test> = Vec::new();
    for v in &values {
        if v.is_null() {
            if m.op != Op::Equals || m.base64 || m.base64offset {
                return fail(near(), format!("{key:?}: null only goes without modifiers"));
            }
            tests.push(Test::Absent);
            continue;
        }
        // A field logged empty is absent once parsed (`""` and `-` alike),
        // so `c-useragent: ''` (SigmaHQ's empty user agent) means that.
        if m.op == Op::Equals && !m.base64 && !m.base64offset && v.as_str() == Some("") {
            tests.push(Test::Absent);
            continue;
        }
        if let (true, Some(n)) = (numeric, v.as_f64()) {
            if m.op == Op::Equals {
                tests.push(Test::Num(n));
                continue;
            }
            // `sc-status|contains: 200`: Sigma backends compare the code's
            // text; status codes are few, so it becomes the codes whose
            // text matches (below). Other numbers have no such bound.
            if field != "status" {
                return fail(
                    near(),
                    format!("{key:?}: string modifiers on the numeric field {field}"),
                );
            }
        }
        let Some(text) = scalar_text(v) else {
            return fail(near(), format!("{key:?}: values must be scalars"));
        };
        let encoded: Vec<String> = if m.base64offset {
            base64_offsets(text.as_bytes())
        } else if m.base64 {
            vec![base64(text.as_bytes())]
        } else {
            vec![text]
        };
        let mut alts = Vec::new();
        for t in encoded {
            let mut g = Glob::parse(&t, m.base64 || m.base64offset);
            match m.op {
                Op::Contains => g.wrap(true, true),
                Op::StartsWith => g.wrap(false, true),
                Op::EndsWith => g.wrap(true, false),
                _ => {}
            }
            if numeric {
                match g.plain() {
                    Some(s) => alts.push(Test::NumText(s)),
                    None if field == "status" => {
                        let codes: Vec<Test> = (0u16..=999)
                            .filter(|c| g.matches(&c.to_string()))
                            .map(|c| Test::Num(f64::from(c)))
                            .collect();
                        if codes.is_empty() {
                            return fail(
                                near(),
                                format!("{key:?}: matches no status code (0-999)"),
                            );
                        }
                        alts.push(Test::AnyOf(codes));
                    }
                    None => {
                        return fail(
                            near(),
                            format!("{key:?}: wildcards on the numeric field {field}"),
                        )
                    }
                }
            } else {
                alts.push(g.test());
            }
        }
        if alts.len() == 1 {
            tests.push(alts.remove(0));
        } else {
            tests.push(Test::AnyOf(alts));
        }
    }
    let specs = |tests: Vec<Test>| -> Vec<ExprSpec> { to_specs(tests, &leaf(field)) };
    Ok(if m.all {
        and(tests.into_iter().map(|t| or(specs(vec![t]))).collect())
    } else {
        or(specs(tests))
    })
}

/// Sigma's `c-uri-extension` (the file extension of the URL's path):
/// `exe` is the path, query left out, ending in `.exe`.
pub(super) fn uri_extension(
    key: &str,
    m: &Mods,
    values: &[&Value],
) -> Result<ExprSpec, SigmaError> {
    let near = || Some(key.to_string());
    if m.op != Op::Equals || m.base64 || m.base64offset || m.all {
        return fail(
            near(),
            format!("{key:?}: c-uri-extension takes plain extensions (no modifiers)"),
        );
    }
    let mut ends = Vec::new();
    for v in values {
        match scalar_text(v) {
            Some(ext) if !ext.is_empty() && !ext.contains(['*', '?', '/']) => {
                ends.push(format!(".{}", ext.trim_start_matches('.')));
            }
            _ => {
                return fail(
                    near(),
                    format!("{key:?}: extensions are plain words such as exe"),
                )
            }
        }
    }
    Ok(ExprSpec {
        field: Some(OneOrMany::One("uri_stem".into())),
        endswith: Some(OneOrMany::Many(ends)),
        cased: m.cased,
        ..ExprSpec::default()
    })
}

/// Keywords: each is searched anywhere in the raw line (Sigma's full-text
/// search), OR unless `|all`.
pub(super) fn keywords(
    words: &[String],
    mods: &[&str],
    near: &str,
) -> Result<ExprSpec, SigmaError> {
    let mut all = false;
    for m in mods {
        match *m {
            "all" => all = true,
            "contains" => {}
            other => {
                return fail(
                    Some(near.to_string()),
                    format!("keywords take only |all, not |{other}"),
                )
            }
        }
    }
    if words.is_empty() {
        return fail(Some(near.to_string()), "empty keyword list");
    }
    let leaf = ExprSpec {
        field: Some(OneOrMany::One("raw".into())),
        ..ExprSpec::default()
    };
    let tests: Vec<Test> = words
        .iter()
        .map(|w| {
            let mut g = Glob::parse(w, false);
            g.wrap(true, true);
            g.test()
        })
        .collect();
    Ok(if all {
        and(tests
            .into_iter()
            .map(|t| or(to_specs(vec![t], &leaf)))
            .collect())
    } else {
        or(to_specs(tests, &leaf))
    })
}

/// One value's test before grouping.
#[derive(Debug, Clone)]
pub(super) enum Test {
    Equals(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Regex(String),
    Present,
    Absent,
    Num(f64),
    NumText(String),
    AnyOf(Vec<Test>),
}

/// Groups same-kind tests into one list each (one automaton for all the
/// `contains` values of an item), OR.
pub(super) fn to_specs(tests: Vec<Test>, leaf: &ExprSpec) -> Vec<ExprSpec> {
    let mut eq = Vec::new();
    let mut num = Vec::new();
    let mut co = Vec::new();
    let mut sw = Vec::new();
    let mut ew = Vec::new();
    let mut re = Vec::new();
    let mut out = Vec::new();
    let mut stack = tests;
    while let Some(t) = stack.pop() {
        match t {
            Test::Equals(s) => eq.push(Scalar::Str(s)),
            Test::NumText(s) => num.push(Scalar::Str(s)),
            Test::Num(n) => num.push(if n.fract() == 0.0 && n.abs() < 1e15 {
                Scalar::Int(n as i64)
            } else {
                Scalar::Float(n)
            }),
            Test::Contains(s) => co.push(s),
            Test::StartsWith(s) => sw.push(s),
            Test::EndsWith(s) => ew.push(s),
            Test::Regex(s) => re.push(s),
            Test::Present => out.push(ExprSpec {
                exists: Some(true),
                cased: false,
                ..leaf.clone()
            }),
            Test::Absent => out.push(ExprSpec {
                exists: Some(false),
                cased: false,
                ..leaf.clone()
            }),
            Test::AnyOf(v) => stack.extend(v),
        }
    }
    // Popping reversed the order; keep the rule's order in the lists.
    for v in [&mut co, &mut sw, &mut ew, &mut re] {
        v.reverse();
    }
    eq.reverse();
    num.reverse();
    let many = |v: Vec<String>| Some(OneOrMany::Many(v));
    if !eq.is_empty() {
        out.push(ExprSpec {
            equals: Some(OneOrMany::Many(eq)),
            ..leaf.clone()
        });
    }
    if !num.is_empty() {
        out.push(ExprSpec {
            equals: Some(OneOrMany::Many(num)),
            cased: false,
            ..leaf.clone()
        });
    }
    if !co.is_empty() {
        out.push(ExprSpec {
            contains: many(co),
            ..leaf.clone()
        });
    }
    if !sw.is_empty() {
        out.push(ExprSpec {
            startswith: many(sw),
            ..leaf.clone()
        });
    }
    if !ew.is_empty() {
        out.push(ExprSpec {
            endswith: many(ew),
            ..leaf.clone()
        });
    }
    if !re.is_empty() {
        out.push(ExprSpec {
            regex: many(re),
            ..leaf.clone()
        });
    }
    out
}

/// A Sigma value with its wildcards: `*` any run, `?` one character, `\`
/// escaping either (and itself); a lone backslash is literal.
#[derive(Debug)]
pub(super) struct Glob(Vec<GlobTok>);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum GlobTok {
    Lit(String),
    Star,
    One,
}

impl Glob {
    pub(super) fn parse(s: &str, literal: bool) -> Glob {
        if literal {
            return Glob(vec![GlobTok::Lit(s.to_string())]);
        }
        let mut toks = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&n @ ('*' | '?' | '\\')) => {
                        lit.push(n);
                        chars.next();
                    }
                    _ => lit.push('\\'),
                },
                '*' | '?' => {
                    if !lit.is_empty() {
                        toks.push(GlobTok::Lit(std::mem::take(&mut lit)));
                    }
                    let t = if c == '*' {
                        GlobTok::Star
                    } else {
                        GlobTok::One
                    };
                    // `**` is `*`.
                    if !(t == GlobTok::Star && toks.last() == Some(&GlobTok::Star)) {
                        toks.push(t);
                    }
                }
                _ => lit.push(c),
            }
        }
        if !lit.is_empty() {
            toks.push(GlobTok::Lit(lit));
        }
        Glob(toks)
    }

    fn wrap(&mut self, front: bool, back: bool) {
        if front && self.0.first() != Some(&GlobTok::Star) {
            self.0.insert(0, GlobTok::Star);
        }
        if back && self.0.last() != Some(&GlobTok::Star) {
            self.0.push(GlobTok::Star);
        }
    }

    /// Whether `text` matches, case-sensitively (for status codes' digits).
    pub(super) fn matches(&self, text: &str) -> bool {
        fn go(toks: &[GlobTok], text: &str) -> bool {
            match toks.split_first() {
                None => text.is_empty(),
                Some((GlobTok::Lit(l), rest)) => {
                    text.strip_prefix(l.as_str()).is_some_and(|t| go(rest, t))
                }
                Some((GlobTok::One, rest)) => {
                    let mut c = text.chars();
                    c.next().is_some() && go(rest, c.as_str())
                }
                Some((GlobTok::Star, rest)) => text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(text.len()))
                    .any(|i| go(rest, &text[i..])),
            }
        }
        go(&self.0, text)
    }

    /// The literal when there is no wildcard at all.
    fn plain(&self) -> Option<String> {
        match &self.0[..] {
            [] => Some(String::new()),
            [GlobTok::Lit(s)] => Some(s.clone()),
            _ => None,
        }
    }

    /// The cheapest test: equality, an affix, a substring, or a regex.
    pub(super) fn test(&self) -> Test {
        use GlobTok::*;
        match &self.0[..] {
            [] => Test::Equals(String::new()),
            [Lit(s)] => Test::Equals(s.clone()),
            [Star] => Test::Present,
            [Star, Lit(s), Star] => Test::Contains(s.clone()),
            [Lit(s), Star] => Test::StartsWith(s.clone()),
            [Star, Lit(s)] => Test::EndsWith(s.clone()),
            toks => {
                let mut re = String::from("(?s)^");
                for t in toks {
                    match t {
                        Lit(s) => re.push_str(&regex::escape(s)),
                        Star => re.push_str(".*"),
                        One => re.push('.'),
                    }
                }
                re.push('$');
                Test::Regex(re)
            }
        }
    }
}

pub(super) const B64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sigma's `base64offset`: the value's encodings at the three byte offsets
/// it may sit at inside a longer encoded string, cut to the characters that
/// do not depend on its neighbours.
pub(super) fn base64_offsets(data: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END_TRIM: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(data);
            let enc = base64(&padded);
            let end = enc.len() - END_TRIM[(data.len() + i) % 3];
            enc.get(START[i]..end).unwrap_or_default().to_string()
        })
        .collect()
}
