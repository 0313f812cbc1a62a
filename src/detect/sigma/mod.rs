//! Sigma rules of the webserver category, loaded unmodified and translated
//! into nightowl [`RuleSpec`]s, so they compile into the same interned
//! match set as native rules and cost the same per line.
//!
//! What maps to what (levels, fields, modifiers, conditions, aggregations)
//! is in `docs/sigma.md`; anything that does not map is an error naming the
//! key it is about, which the loader turns into `file:line`. This file
//! reads the document ([`to_spec`]); [`logsource`] says which log sources
//! and fields exist, [`modifiers`] turns search identifiers (`field|mods:
//! values`, keywords) into match expressions, and [`condition`] parses
//! the condition and its aggregation.

mod condition;
mod logsource;
mod modifiers;

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::rule::{parse_duration, ExprSpec, RuleSpec};
use condition::{parse_aggregation, tokenize, Aggregation, CondParser};
use logsource::check_logsource;
pub use logsource::map_field;
use modifiers::search;

/// A translation error; `near` is text of the rule document the error is
/// about, so the loader can point at its line.
#[derive(Debug, Clone)]
pub struct SigmaError {
    pub near: Option<String>,
    pub message: String,
    /// The rule is well formed but asks for a field access logs do not
    /// carry: it loads, disabled, instead of failing its directory.
    pub unavailable: bool,
}

fn fail<T>(near: impl Into<Option<String>>, message: impl Into<String>) -> Result<T, SigmaError> {
    Err(SigmaError {
        near: near.into(),
        message: message.into(),
        unavailable: false,
    })
}

/// The label naming why a Sigma rule loaded disabled.
pub const NOT_RUN_LABEL: &str = "sigma_not_run";

/// A YAML document is a Sigma rule when it has `logsource` or `detection`
/// (native rules have neither): a Sigma rule missing one of them, or with
/// one misspelled, is told so rather than read as a native rule.
pub fn is_sigma(doc: &Value) -> bool {
    doc.as_mapping()
        .is_some_and(|m| m.contains_key("logsource") || m.contains_key("detection"))
}

/// How long a per-line Sigma rule stays quiet for one client after firing;
/// a scanner sends thousands of matching lines and one page per client per
/// window is what a responder can act on.
const MATCH_WINDOW: &str = "10m";

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
    let meta = Meta {
        id,
        title,
        description,
        severity,
        level,
        status,
        tags,
    };
    let source = check_logsource(top)?;
    let web_access = source.web_access;

    let Some(Value::Mapping(det)) = top.get("detection") else {
        return fail(
            Some("detection:".to_string()),
            "a Sigma rule needs `detection`: a mapping of search identifiers and a condition",
        );
    };
    let mut searches: BTreeMap<String, ExprSpec> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut condition: Option<&Value> = None;
    let mut timeframe = top.get("timeframe");
    let mut not_run: Option<String> = None;
    for (k, v) in det {
        let Some(name) = k.as_str() else {
            return fail(None, "detection: keys must be strings");
        };
        match name {
            "condition" => condition = Some(v),
            "timeframe" => timeframe = Some(v),
            _ => match search(name, v) {
                Ok(e) => {
                    order.push(name.to_string());
                    searches.insert(name.to_string(), e);
                }
                Err(e) if e.unavailable => not_run = Some(e.message),
                Err(e) => return Err(e),
            },
        }
    }
    if let Some(why) = not_run {
        // SigmaHQ's web folders hold a few such rules; refusing them made
        // a directory of good rules fail to load over one of them.
        let mut detect = Mapping::new();
        detect.insert("kind".into(), "match".into());
        return assemble(meta, detect, None, Some(why));
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
    // A proxy rule's `not filter` on the visited host holds on every line
    // of a web server's own log, which names no other host: there it would
    // fire on the site's own downloads.
    let matcher = if source.proxy {
        and(vec![proxy_request(), matcher])
    } else {
        matcher
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

    assemble(meta, detect, Some(matcher), None)
}

/// What a Sigma rule's metadata becomes.
struct Meta {
    id: String,
    title: String,
    description: String,
    severity: &'static str,
    level: String,
    status: Option<String>,
    tags: Vec<String>,
}

/// The rule spec of a translated Sigma rule; `not_run` (why) makes it a
/// disabled rule that says so in its labels.
fn assemble(
    meta: Meta,
    detect: Mapping,
    matcher: Option<ExprSpec>,
    not_run: Option<String>,
) -> Result<RuleSpec, SigmaError> {
    let mut labels = Mapping::new();
    labels.insert("format".into(), "sigma".into());
    labels.insert("sigma_level".into(), meta.level.as_str().into());
    if let Some(s) = &meta.status {
        labels.insert("sigma_status".into(), s.as_str().into());
    }
    if let Some(why) = &not_run {
        labels.insert(NOT_RUN_LABEL.into(), why.as_str().into());
    }
    let mut m = Mapping::new();
    m.insert("id".into(), meta.id.into());
    m.insert("title".into(), meta.title.into());
    m.insert("description".into(), meta.description.into());
    m.insert("severity".into(), meta.severity.into());
    m.insert("labels".into(), Value::Mapping(labels));
    m.insert(
        "tags".into(),
        Value::Sequence(meta.tags.into_iter().map(Value::String).collect()),
    );
    // Sigma's own lifecycle: such rules stay checked but do not run.
    let enabled =
        not_run.is_none() && !matches!(meta.status.as_deref(), Some("deprecated" | "unsupported"));
    m.insert("enabled".into(), enabled.into());
    m.insert("detect".into(), Value::Mapping(detect));
    // Built through serde so defaults of fields added to RuleSpec later
    // apply here too.
    let mut spec: RuleSpec = serde_yaml::from_value(Value::Mapping(m))
        .or_else(|e| fail(None, format!("translating the Sigma rule: {e}")))?;
    spec.matcher = matcher;
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

fn or(mut alts: Vec<ExprSpec>) -> ExprSpec {
    if alts.len() == 1 {
        return alts.remove(0);
    }
    ExprSpec {
        any: Some(alts),
        ..ExprSpec::default()
    }
}

/// A request through a forward proxy: Squid's own log, an absolute URL
/// as the target (`GET http://host/...`), or a CONNECT tunnel.
fn proxy_request() -> ExprSpec {
    let yaml = "any:\n\
                - {field: format, equals: squid}\n\
                - {field: method, equals: CONNECT}\n\
                - {field: path, startswith: ['http://', 'https://', 'ftp://']}\n";
    serde_yaml::from_str(yaml).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::condition::*;
    use super::modifiers::*;
    use super::*;
    use crate::detect::rule::OneOrMany;

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
    fn a_misspelled_detection_is_named() {
        let doc: Value = serde_yaml::from_str(
            "title: t\nlogsource:\n  category: webserver\ndetecton:\n  s: {}\n",
        )
        .expect("yaml");
        assert!(is_sigma(&doc));
        let e = to_spec(&doc, "f").expect_err("no detection");
        assert!(e.message.contains("needs `detection`"), "{}", e.message);
    }

    #[test]
    fn proxy_rules_run_on_proxy_requests_only() {
        let proxy = proxy_request();
        assert_eq!(proxy.any.as_ref().map(Vec::len), Some(3), "{proxy:?}");
        let text = "title: t\nlogsource:\n  category: proxy\ndetection:\n  s:\n    cs-method: GET\n  condition: s\n";
        let doc: Value = serde_yaml::from_str(text).expect("yaml");
        let s = to_spec(&doc, "f").expect("valid");
        assert_eq!(
            shape(s.matcher.as_ref().expect("m")),
            "all(any(format,method,path),method)"
        );
        let webserver = text.replace("proxy", "webserver");
        let doc: Value = serde_yaml::from_str(&webserver).expect("yaml");
        let s = to_spec(&doc, "f").expect("valid");
        assert_eq!(shape(s.matcher.as_ref().expect("m")), "method");
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
