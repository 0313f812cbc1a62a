//! Sigma rules of the webserver category, loaded unmodified and translated
//! into nightowl [`RuleSpec`]s, so they compile into the same interned
//! match set as native rules and cost the same per line.
//!
//! What maps to what (levels, fields, modifiers, conditions, aggregations)
//! is in `docs/sigma.md`; anything that does not map is an error naming the
//! key it is about, which the loader turns into `file:line`.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::rule::{parse_duration, ExprSpec, OneOrMany, RuleSpec, Scalar};

/// A translation error; `near` is text of the rule document the error is
/// about, so the loader can point at its line.
#[derive(Debug, Clone)]
pub struct SigmaError {
    pub near: Option<String>,
    pub message: String,
}

fn fail<T>(near: impl Into<Option<String>>, message: impl Into<String>) -> Result<T, SigmaError> {
    Err(SigmaError {
        near: near.into(),
        message: message.into(),
    })
}

/// A YAML document is a Sigma rule when it has both `logsource` and
/// `detection` (native rules have neither).
pub fn is_sigma(doc: &Value) -> bool {
    doc.as_mapping()
        .is_some_and(|m| m.contains_key("logsource") && m.contains_key("detection"))
}

/// How long a per-line Sigma rule stays quiet for one client after firing;
/// a scanner sends thousands of matching lines and one page per client per
/// window is what a responder can act on.
const MATCH_WINDOW: &str = "10m";

/// Web server products whose access or error logs nightowl parses.
const PRODUCTS: &[&str] = &[
    "apache",
    "apache2",
    "httpd",
    "nginx",
    "openresty",
    "iis",
    "haproxy",
    "caddy",
    "lighttpd",
    "tomcat",
    "traefik",
    "envoy",
    "generic",
    "squid",
];

/// Log source categories: web servers' access logs, and forward proxies'
/// (Squid's native format, or any format nightowl parses).
const CATEGORIES: &[&str] = &["webserver", "proxy"];

/// Sigma's web field names (W3C extended log names, and the proxy
/// category's spellings that webserver rules borrow) → nightowl fields.
const FIELDS: &[(&str, &str)] = &[
    ("c-ip", "client_ip"),
    ("cs-method", "method"),
    ("cs-uri-stem", "uri_stem"),
    ("c-uri-stem", "uri_stem"),
    ("cs-uri-query", "query"),
    ("c-uri-query", "query"),
    ("cs-uri", "path"),
    ("c-uri", "path"),
    ("sc-status", "status"),
    ("cs-user-agent", "user_agent"),
    ("c-useragent", "user_agent"),
    ("cs-useragent", "user_agent"),
    ("cs-referer", "referer"),
    ("cs-referrer", "referer"),
    ("cs-host", "url_host"),
    ("r-dns", "url_host"),
    ("cs-username", "user"),
    ("sc-bytes", "bytes"),
    ("cs-version", "protocol"),
];

/// Fields of the Sigma taxonomy that access logs as nightowl parses them do
/// not carry, each with why; named separately so the error says so.
const UNAVAILABLE: &[(&str, &str)] = &[
    (
        "cs-cookie",
        "access logs (combined, common, Squid) do not log cookies",
    ),
    (
        "cs-content-type",
        "the request's Content-Type is not in the access log formats nightowl parses \
         (combined, common, Squid's native format logs the response's)",
    ),
    (
        "cs-bytes",
        "request sizes are not in combined or common logs",
    ),
    ("s-ip", "the server's address is not in the parsed lines"),
    ("s-port", "the server's port is not in the parsed lines"),
    ("s-sitename", "IIS site names are not parsed"),
    ("s-computername", "IIS server names are not parsed"),
    ("sc-substatus", "IIS sub-status codes are not parsed"),
    ("sc-win32-status", "IIS Win32 status codes are not parsed"),
    ("c-dns", "client host names are not parsed"),
    (
        "dst_ip",
        "the destination address is not parsed (Squid's hierarchy field names a peer, \
         not always the server)",
    ),
    (
        "date",
        "the line's date is its event time: use a timeframe, not a field",
    ),
    (
        "time",
        "the line's time is its event time: use a timeframe, not a field",
    ),
    // IIS logs it in milliseconds, nightowl's `duration` is seconds: a
    // silent unit mismatch would be worse than an error.
    (
        "time-taken",
        "IIS logs it in milliseconds and nightowl's duration is seconds",
    ),
];

const NATIVE: &[&str] = &[
    "client_ip",
    "method",
    "path",
    "uri_stem",
    "query",
    "route",
    "url_host",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "host",
    "user",
    "protocol",
    "duration",
    "raw",
    "message",
    "source",
    "app",
    "format",
];

const NUMERIC: &[&str] = &["status", "bytes", "duration"];

/// Maps a Sigma field name to a nightowl field name.
pub fn map_field(name: &str) -> Result<&'static str, SigmaError> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, f)) = FIELDS.iter().find(|(s, _)| *s == lower) {
        return Ok(f);
    }
    if let Some(f) = NATIVE.iter().find(|n| **n == name) {
        return Ok(f);
    }
    if let Some((_, why)) = UNAVAILABLE.iter().find(|(n, _)| *n == lower) {
        return fail(
            Some(name.to_string()),
            format!("Sigma field {name:?} is not available in nightowl's parsed web logs: {why}"),
        );
    }
    let known: Vec<&str> = FIELDS.iter().map(|(s, _)| *s).collect();
    fail(
        Some(name.to_string()),
        format!(
            "unknown field {name:?} for a webserver Sigma rule; known: {} (or nightowl's own: {})",
            known.join(", "),
            NATIVE.join(", ")
        ),
    )
}

/// Translates one Sigma rule document. `fallback_id` names the rule when
/// the document has no `id` (the file's stem).
pub fn to_spec(doc: &Value, fallback_id: &str) -> Result<RuleSpec, SigmaError> {
    let Some(top) = doc.as_mapping() else {
        return fail(None, "a Sigma rule must be a mapping");
    };
    for key in ["action", "correlation", "filter"] {
        if top.contains_key(key) {
            return fail(
                Some(format!("{key}:")),
                format!(
                    "Sigma `{key}` documents (collections, correlations, filters) are not \
                     supported; write each rule as one standalone document"
                ),
            );
        }
    }
    let title = req_str(top, "title")?;
    let id = match opt_str(top, "id")? {
        Some(id) => id,
        None => format!("sigma-{fallback_id}"),
    };
    let description = opt_str(top, "description")?.unwrap_or_default();
    let status = opt_str(top, "status")?;
    let level = opt_str(top, "level")?.unwrap_or_else(|| "medium".into());
    let severity = match level.as_str() {
        "informational" | "low" => "info",
        "medium" => "warning",
        "high" | "critical" => "critical",
        other => {
            return fail(
                Some("level:".to_string()),
                format!(
                    "unknown Sigma level {other:?}: informational, low, medium, high or critical"
                ),
            )
        }
    };
    let tags = match top.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|t| scalar_text(t).ok_or(()))
            .collect::<Result<Vec<_>, _>>()
            .or_else(|_| fail(Some("tags:".to_string()), "tags: a list of strings"))?,
        Some(_) => return fail(Some("tags:".to_string()), "tags: a list of strings"),
    };
    let web_access = check_logsource(top)?;

    let Some(Value::Mapping(det)) = top.get("detection") else {
        return fail(
            Some("detection:".to_string()),
            "detection: a mapping of search identifiers and a condition",
        );
    };
    let mut searches: BTreeMap<String, ExprSpec> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut condition: Option<&Value> = None;
    let mut timeframe = top.get("timeframe");
    for (k, v) in det {
        let Some(name) = k.as_str() else {
            return fail(None, "detection: keys must be strings");
        };
        match name {
            "condition" => condition = Some(v),
            "timeframe" => timeframe = Some(v),
            _ => {
                let e = search(name, v)?;
                order.push(name.to_string());
                searches.insert(name.to_string(), e);
            }
        }
    }
    let conditions: Vec<String> = match condition {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(list)) if !list.is_empty() => list
            .iter()
            .map(|c| c.as_str().map(str::to_string).ok_or(()))
            .collect::<Result<_, _>>()
            .or_else(|_| fail(Some("condition:".to_string()), "condition: a string"))?,
        _ => {
            return fail(
                Some("detection:".to_string()),
                "detection needs a condition (a string such as `selection and not filter`)",
            )
        }
    };
    let timeframe = match timeframe {
        None | Some(Value::Null) => None,
        Some(v) => {
            let t = scalar_text(v).unwrap_or_default();
            parse_duration(&t).or_else(|m| fail(Some("timeframe:".to_string()), m))?;
            Some(t)
        }
    };

    let mut alts = Vec::new();
    let mut agg: Option<Aggregation> = None;
    for c in &conditions {
        // The condition's own line; a list of conditions points at its item.
        let near = if conditions.len() == 1 {
            "condition:".to_string()
        } else {
            c.clone()
        };
        let (expr_text, agg_text) = match c.split_once('|') {
            Some((e, a)) => (e, Some(a)),
            None => (c.as_str(), None),
        };
        let toks = tokenize(expr_text).or_else(|m| fail(Some(near.clone()), m))?;
        let mut p = CondParser {
            toks: &toks,
            pos: 0,
            searches: &searches,
            order: &order,
        };
        let e = p.parse().or_else(|m| fail(Some(near.clone()), m))?;
        alts.push(e);
        if let Some(a) = agg_text {
            if conditions.len() > 1 {
                return fail(
                    Some(near.clone()),
                    "an aggregation needs a single condition, not a list",
                );
            }
            agg = Some(parse_aggregation(a).or_else(|m| fail(Some(near.clone()), m))?);
        }
    }
    let matcher = if alts.len() == 1 {
        alts.remove(0)
    } else {
        ExprSpec {
            any: Some(alts),
            ..ExprSpec::default()
        }
    };

    let mut detect = Mapping::new();
    match &agg {
        None => {
            detect.insert("kind".into(), "match".into());
            if web_access {
                detect.insert("key".into(), "client_ip".into());
            }
            detect.insert("window".into(), MATCH_WINDOW.into());
        }
        Some(a) => {
            let Some(tf) = &timeframe else {
                return fail(
                    Some("condition:".to_string()),
                    "an aggregation (`| count() ...`) needs a `timeframe` (e.g. 5m)",
                );
            };
            match &a.counted {
                None => detect.insert("kind".into(), "threshold".into()),
                Some(f) => {
                    detect.insert("field".into(), (*f).into());
                    detect.insert("kind".into(), "distinct".into())
                }
            };
            if let Some(by) = a.by {
                detect.insert("key".into(), by.into());
            }
            detect.insert("window".into(), tf.as_str().into());
            detect.insert("count".into(), a.count.into());
        }
    }

    let mut labels = Mapping::new();
    labels.insert("format".into(), "sigma".into());
    labels.insert("sigma_level".into(), level.as_str().into());
    if let Some(s) = &status {
        labels.insert("sigma_status".into(), s.as_str().into());
    }
    let mut m = Mapping::new();
    m.insert("id".into(), id.into());
    m.insert("title".into(), title.into());
    m.insert("description".into(), description.into());
    m.insert("severity".into(), severity.into());
    m.insert("labels".into(), Value::Mapping(labels));
    m.insert(
        "tags".into(),
        Value::Sequence(tags.into_iter().map(Value::String).collect()),
    );
    // Sigma's own lifecycle: such rules stay checked but do not run.
    let enabled = !matches!(status.as_deref(), Some("deprecated" | "unsupported"));
    m.insert("enabled".into(), enabled.into());
    m.insert("detect".into(), Value::Mapping(detect));
    // Built through serde so defaults of fields added to RuleSpec later
    // apply here too.
    let mut spec: RuleSpec = serde_yaml::from_value(Value::Mapping(m))
        .or_else(|e| fail(None, format!("translating the Sigma rule: {e}")))?;
    spec.matcher = Some(matcher);
    Ok(spec)
}

fn req_str(m: &Mapping, key: &str) -> Result<String, SigmaError> {
    match opt_str(m, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => fail(None, format!("a Sigma rule needs `{key}`")),
    }
}

fn opt_str(m: &Mapping, key: &str) -> Result<Option<String>, SigmaError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match scalar_text(v) {
            Some(s) => Ok(Some(s)),
            None => fail(Some(format!("{key}:")), format!("{key}: expected a string")),
        },
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Accepts the webserver category and web server products; returns whether
/// lines are access-log requests (grouped per client IP).
fn check_logsource(top: &Mapping) -> Result<bool, SigmaError> {
    let Some(Value::Mapping(ls)) = top.get("logsource") else {
        return fail(Some("logsource:".to_string()), "logsource: a mapping");
    };
    let get = |k: &str| -> Result<Option<String>, SigmaError> {
        opt_str(ls, k).map(|o| o.map(|s| s.to_ascii_lowercase()))
    };
    let category = get("category")?;
    let product = get("product")?;
    let service = get("service")?;
    let what = format!(
        "category: {}, product: {}, service: {}",
        category.as_deref().unwrap_or("-"),
        product.as_deref().unwrap_or("-"),
        service.as_deref().unwrap_or("-")
    );
    let unsupported = |near: &str| -> Result<bool, SigmaError> {
        fail(
            Some(near.to_string()),
            format!(
                "unsupported Sigma logsource ({what}): nightowl runs the webserver and proxy \
                 categories and web server and proxy products ({})",
                PRODUCTS.join(", ")
            ),
        )
    };
    if let Some(c) = &category {
        if !CATEGORIES.contains(&c.as_str()) {
            return unsupported("category:");
        }
    }
    if let Some(p) = &product {
        if !PRODUCTS.contains(&p.as_str()) {
            return unsupported("product:");
        }
    }
    if let Some(s) = &service {
        if !(s == "access" || s == "error" || PRODUCTS.contains(&s.as_str())) {
            return unsupported("service:");
        }
    }
    // `service: apache` alone is how SigmaHQ marks web server error-log
    // rules; the service check above already held it to a web server.
    if category.is_none() && product.is_none() && service.is_none() {
        return unsupported("logsource:");
    }
    Ok(category.is_some() || service.as_deref() == Some("access"))
}

/// One search identifier: a map (AND of its items), a list of maps (OR),
/// or keywords (a string or list of strings, OR, anywhere in the line).
fn search(name: &str, v: &Value) -> Result<ExprSpec, SigmaError> {
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

fn or(mut alts: Vec<ExprSpec>) -> ExprSpec {
    if alts.len() == 1 {
        return alts.remove(0);
    }
    ExprSpec {
        any: Some(alts),
        ..ExprSpec::default()
    }
}

fn and(mut parts: Vec<ExprSpec>) -> ExprSpec {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    ExprSpec {
        all: Some(parts),
        ..ExprSpec::default()
    }
}

fn selection_map(m: &Mapping) -> Result<ExprSpec, SigmaError> {
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
enum Op {
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
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Default)]
struct Mods {
    op: Op,
    all: bool,
    cased: bool,
    base64: bool,
    base64offset: bool,
    re_flags: String,
}

fn modifiers(key: &str, list: &[&str]) -> Result<Mods, SigmaError> {
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
fn item(key: &str, v: &Value) -> Result<ExprSpec, SigmaError> {
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
fn uri_extension(key: &str, m: &Mods, values: &[&Value]) -> Result<ExprSpec, SigmaError> {
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
fn keywords(words: &[String], mods: &[&str], near: &str) -> Result<ExprSpec, SigmaError> {
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
enum Test {
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
fn to_specs(tests: Vec<Test>, leaf: &ExprSpec) -> Vec<ExprSpec> {
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
struct Glob(Vec<GlobTok>);

#[derive(Debug, Clone, PartialEq)]
enum GlobTok {
    Lit(String),
    Star,
    One,
}

impl Glob {
    fn parse(s: &str, literal: bool) -> Glob {
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
    fn matches(&self, text: &str) -> bool {
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
    fn test(&self) -> Test {
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

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
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
fn base64_offsets(data: &[u8]) -> Vec<String> {
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

// ---- conditions ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
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

struct CondParser<'a> {
    toks: &'a [Tok],
    pos: usize,
    searches: &'a BTreeMap<String, ExprSpec>,
    order: &'a [String],
}

impl CondParser<'_> {
    fn parse(&mut self) -> Result<ExprSpec, String> {
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
fn name_matches(pattern: &str, name: &str) -> bool {
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
struct Aggregation {
    counted: Option<&'static str>,
    by: Option<&'static str>,
    count: u64,
}

/// `count() [by field] >|>= N` and `count(field) [by field] >|>= N`; the
/// only aggregations that can fire as lines arrive.
fn parse_aggregation(s: &str) -> Result<Aggregation, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // The three offsets of "http://", checked against Python's base64
        // with pySigma's start and end cuts.
        assert_eq!(
            base64_offsets(b"http://"),
            ["aHR0cDovL", "h0dHA6Ly", "odHRwOi8v"]
        );
    }

    #[test]
    fn globs_pick_the_cheapest_test() {
        let t = |s: &str| format!("{:?}", Glob::parse(s, false).test());
        assert_eq!(t("abc"), r#"Equals("abc")"#);
        assert_eq!(t("*abc*"), r#"Contains("abc")"#);
        assert_eq!(t("abc*"), r#"StartsWith("abc")"#);
        assert_eq!(t("*abc"), r#"EndsWith("abc")"#);
        assert_eq!(t("*"), "Present");
        assert_eq!(t(r"a\*b"), r#"Equals("a*b")"#);
        assert_eq!(t(r"c:\windows"), r#"Equals("c:\\windows")"#);
        assert_eq!(t("/a*/b?.php"), r#"Regex("(?s)^/a.*/b.\\.php$")"#);
    }

    #[test]
    fn status_text_modifiers_become_the_codes_they_match() {
        let codes = |d: &str| -> Vec<String> {
            let s = spec(&format!("  sel:\n    {d}\n  condition: sel\n")).expect("valid");
            let m = s.matcher.expect("matcher");
            match m.equals {
                Some(OneOrMany::Many(v)) => v.iter().map(|x| x.to_string()).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(codes("sc-status|contains: '200'"), ["200"]);
        assert_eq!(codes("sc-status|contains: 200"), ["200"]);
        // 40 and 400-409; 104, 204, ... 904.
        assert_eq!(codes("sc-status|startswith: '40'").len(), 11);
        assert_eq!(codes("sc-status|endswith: '04'").len(), 9);
        assert_eq!(
            codes("sc-status: '5?3'"),
            ["503", "513", "523", "533", "543", "553", "563", "573", "583", "593"]
        );
        let e = spec("  sel:\n    sc-status|contains: 'x'\n  condition: sel\n").unwrap_err();
        assert!(
            e.message.contains("matches no status code"),
            "{}",
            e.message
        );
        let e = spec("  sel:\n    sc-bytes|contains: '200'\n  condition: sel\n").unwrap_err();
        assert!(
            e.message.contains("on the numeric field bytes"),
            "{}",
            e.message
        );
        let g = |p: &str, t: &str| Glob::parse(p, false).matches(t);
        assert!(g("*20*", "200") && g("2?0", "210") && g("*", "") && !g("2?0", "20"));
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("selection*", "selection_uri"));
        assert!(name_matches("sel*uri", "selection_uri"));
        assert!(!name_matches("filter*", "selection"));
        assert!(name_matches("exact", "exact"));
    }

    fn spec(detection: &str) -> Result<RuleSpec, SigmaError> {
        let text = format!("title: t\nlogsource:\n  category: webserver\ndetection:\n{detection}");
        let doc: Value = serde_yaml::from_str(&text).expect("yaml");
        to_spec(&doc, "f")
    }

    fn shape(e: &ExprSpec) -> String {
        if let Some(v) = &e.all {
            let parts: Vec<String> = v.iter().map(shape).collect();
            return format!("all({})", parts.join(","));
        }
        if let Some(v) = &e.any {
            let parts: Vec<String> = v.iter().map(shape).collect();
            return format!("any({})", parts.join(","));
        }
        if let Some(n) = &e.not {
            return format!("not({})", shape(n));
        }
        match &e.field {
            Some(OneOrMany::One(f)) => f.clone(),
            _ => "?".into(),
        }
    }

    #[test]
    fn them_skips_underscore_names_and_precedence_holds() {
        let d =
            "  a:\n    cs-method: GET\n  b:\n    sc-status: 404\n  _helper:\n    c-ip: 1.2.3.4\n";
        let s = spec(&format!("{d}  condition: all of them\n")).expect("valid");
        assert_eq!(shape(s.matcher.as_ref().expect("m")), "all(method,status)");
        let s = spec(&format!("{d}  condition: 1 of them\n")).expect("valid");
        assert_eq!(shape(s.matcher.as_ref().expect("m")), "any(method,status)");
        let s = spec(&format!("{d}  condition: a or b and not _helper\n")).expect("valid");
        assert_eq!(
            shape(s.matcher.as_ref().expect("m")),
            "any(method,all(status,not(client_ip)))"
        );
        let s = spec(&format!("{d}  condition: (a or b) and not _helper\n")).expect("valid");
        assert_eq!(
            shape(s.matcher.as_ref().expect("m")),
            "all(any(method,status),not(client_ip))"
        );
        assert!(spec(&format!("{d}  condition: a and\n")).is_err());
        assert!(spec(&format!("{d}  condition: (a or b\n")).is_err());
        assert!(spec(&format!("{d}  condition: a*\n")).is_err());
    }

    #[test]
    fn levels_map_to_severities() {
        for (level, sev) in [
            ("informational", "info"),
            ("low", "info"),
            ("medium", "warning"),
            ("high", "critical"),
            ("critical", "critical"),
        ] {
            let text = format!(
                "title: t\nlevel: {level}\nlogsource:\n  category: webserver\ndetection:\n  s:\n    cs-method: GET\n  condition: s\n"
            );
            let doc: Value = serde_yaml::from_str(&text).expect("yaml");
            let s = to_spec(&doc, "f").expect("valid");
            assert_eq!(s.severity.as_str(), sev, "{level}");
            assert_eq!(s.id, "sigma-f");
        }
    }

    #[test]
    fn aggregations() {
        let a = parse_aggregation(" count() by c-ip > 10").expect("valid");
        assert_eq!((a.counted, a.by, a.count), (None, Some("client_ip"), 11));
        let a = parse_aggregation("count(cs-uri-stem) by c-ip >= 50").expect("valid");
        assert_eq!(
            (a.counted, a.by, a.count),
            (Some("uri_stem"), Some("client_ip"), 50)
        );
        assert!(parse_aggregation("count() by c-ip < 3").is_err());
        assert!(parse_aggregation("max(sc-bytes) > 3").is_err());
    }
}
