//! The rule file format, as written by the security team.
//!
//! These types mirror the YAML one to one and reject unknown keys, so a typo
//! (`treshold:`) is an error with a line number instead of a rule that
//! silently never fires. Meaning is checked later, in `compile`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// One rule: metadata, a line filter (`match`) and a detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only this tenant's lines are evaluated; all tenants when absent.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `false` keeps the rule loaded and checked but never evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Lines the rule looks at; every line when absent.
    #[serde(default, rename = "match")]
    pub matcher: Option<ExprSpec>,
    pub detect: DetectSpec,
    /// A search query for the evidence, appended to the key's terms. Derived
    /// from `match` when absent.
    #[serde(default)]
    pub evidence: Option<String>,
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A boolean expression over one line. Exactly one of the combinators
/// (`all`/`and`, `any`/`or`, `not`) or one field test (`field` plus one
/// operator) per mapping; `compile` enforces that.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExprSpec {
    #[serde(default, alias = "and")]
    pub all: Option<Vec<ExprSpec>>,
    #[serde(default, alias = "or")]
    pub any: Option<Vec<ExprSpec>>,
    #[serde(default)]
    pub not: Option<Box<ExprSpec>>,

    /// One field name or a list: the test holds if it holds on any of them.
    #[serde(default)]
    pub field: Option<OneOrMany<String>>,
    /// Percent-, `+`- and `\xHH`-decode the value (twice, for double
    /// encoding) before comparing. String tests are case-insensitive anyway.
    #[serde(default)]
    pub decode: bool,
    /// Compare with the value as logged, case-sensitively (string tests
    /// are case-insensitive otherwise). Not combined with `decode`.
    #[serde(default)]
    pub cased: bool,

    #[serde(default)]
    pub equals: Option<OneOrMany<Scalar>>,
    #[serde(default)]
    pub contains: Option<OneOrMany<String>>,
    #[serde(default)]
    pub startswith: Option<OneOrMany<String>>,
    #[serde(default)]
    pub endswith: Option<OneOrMany<String>>,
    #[serde(default)]
    pub regex: Option<OneOrMany<String>>,
    #[serde(default)]
    pub cidr: Option<OneOrMany<String>>,
    #[serde(default)]
    pub gt: Option<f64>,
    #[serde(default)]
    pub gte: Option<f64>,
    #[serde(default)]
    pub lt: Option<f64>,
    #[serde(default)]
    pub lte: Option<f64>,
    #[serde(default)]
    pub exists: Option<bool>,
    /// Payload detectors (`detect/payload`): the value (its path, each
    /// query parameter, decoded every way a server would) carries SQL
    /// injection, cross-site scripting, OS command injection or path
    /// traversal. `false` inverts.
    #[serde(default)]
    pub sqli: Option<bool>,
    #[serde(default)]
    pub xss: Option<bool>,
    #[serde(default)]
    pub cmdi: Option<bool>,
    #[serde(default)]
    pub traversal: Option<bool>,
}

impl ExprSpec {
    /// The payload operators set on this mapping.
    pub fn payload_ops(
        &self,
    ) -> impl Iterator<Item = (crate::detect::payload::Payload, bool)> + '_ {
        use crate::detect::payload::Payload;
        [
            (Payload::Sqli, self.sqli),
            (Payload::Xss, self.xss),
            (Payload::Cmdi, self.cmdi),
            (Payload::Traversal, self.traversal),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// YAML lets a list of one be written as the value itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A YAML scalar compared with `equals`: numbers for numeric fields,
/// strings for the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectKind {
    Match,
    Threshold,
    Distinct,
    Ratio,
    Sequence,
    NewValue,
    Spike,
    Flatline,
    BurnRate,
    NewPattern,
    PatternSpike,
}

impl DetectKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DetectKind::Match => "match",
            DetectKind::Threshold => "threshold",
            DetectKind::Distinct => "distinct",
            DetectKind::Ratio => "ratio",
            DetectKind::Sequence => "sequence",
            DetectKind::NewValue => "new_value",
            DetectKind::Spike => "spike",
            DetectKind::Flatline => "flatline",
            DetectKind::BurnRate => "burn_rate",
            DetectKind::NewPattern => "new_pattern",
            DetectKind::PatternSpike => "pattern_spike",
        }
    }
}

/// The detection. One flat struct rather than a tagged enum so that serde
/// reports unknown keys and an unknown `kind` with their exact line; which
/// keys each kind needs is checked in `compile`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSpec {
    pub kind: DetectKind,
    /// Group-by fields; one global group when empty.
    #[serde(default)]
    pub key: Option<OneOrMany<String>>,
    /// Sliding event-time window (threshold, distinct, ratio, sequence), the
    /// dedup window (match), the bucket width (spike).
    #[serde(default)]
    pub window: Option<Dur>,
    /// Minimum count: lines (threshold), distinct values (distinct), lines
    /// of `first` (sequence), lines per bucket (spike).
    #[serde(default)]
    pub count: Option<u64>,
    /// threshold: sum this numeric field instead of counting lines.
    #[serde(default)]
    pub sum: Option<String>,
    /// threshold with `sum`: the minimum sum.
    #[serde(default)]
    pub min_sum: Option<f64>,
    /// distinct: the field whose distinct values are counted; new_value: the
    /// value that is new for its key.
    #[serde(default)]
    pub field: Option<OneOrMany<String>>,
    /// ratio: the numerator, evaluated on lines that matched `match`.
    #[serde(default)]
    pub numerator: Option<ExprSpec>,
    /// ratio: share in 0..=1.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// ratio: minimum number of matching lines in the window.
    #[serde(default)]
    pub min_volume: Option<u64>,
    /// sequence: the first step, which must happen `count` times.
    #[serde(default)]
    pub first: Option<ExprSpec>,
    /// sequence: the second step.
    #[serde(default)]
    pub then: Option<ExprSpec>,
    /// new_value: how long after the first line keys are only learned.
    #[serde(default)]
    pub learning: Option<Dur>,
    /// spike: EWMA smoothing factor in (0, 1].
    #[serde(default)]
    pub alpha: Option<f64>,
    /// spike: z-score above the baseline that fires.
    #[serde(default)]
    pub z: Option<f64>,
    /// spike: buckets observed before the baseline is trusted.
    #[serde(default)]
    pub warmup: Option<u32>,
    /// flatline: how long a key may be silent.
    #[serde(default)]
    pub after: Option<Dur>,
    /// After firing for a key, stay quiet for this long for that key.
    /// Defaults to the window (match: 1 h; spike: 4 buckets).
    #[serde(default)]
    pub suppress: Option<Dur>,
    /// How far behind the newest line a line's timestamp may be and still
    /// count. Default 1 minute.
    #[serde(default)]
    pub lateness: Option<Dur>,
    /// Per-rule cap on tracked keys (LRU eviction beyond). Default 20 000.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// burn_rate: the SLO target, `99.5` (percent) or `0.995`.
    #[serde(default)]
    pub slo: Option<f64>,
    /// burn_rate: which lines are errors (default: status 500-599).
    #[serde(default)]
    pub error: Option<ExprSpec>,
    /// burn_rate: the tiers, each `{long, short, burn}`.
    #[serde(default)]
    pub windows: Option<Vec<BurnWindowSpec>>,
    /// burn_rate: requests a tier's long window needs (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// new_pattern, pattern_spike: only lines at this level or worse
    /// (`error`: error, critical, alert, emergency).
    #[serde(default)]
    pub level: Option<String>,
}

/// One tier of a burn_rate rule: both windows burn at least `burn` times
/// the error budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnWindowSpec {
    pub long: Dur,
    pub short: Dur,
    pub burn: f64,
}

/// A fixture: log lines and the firings they must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub name: String,
    /// `auto` when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// Inline lines, one per line of the string.
    #[serde(default)]
    pub lines: Option<String>,
    /// A log file, relative to the rule file.
    #[serde(default)]
    pub file: Option<String>,
    /// After the last line, advance event time by this much (for flatline
    /// and other timers).
    #[serde(default)]
    pub advance: Option<Dur>,
    /// Firings expected, in any order; no others may happen.
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// The rule under test when absent.
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// At least this count.
    #[serde(default)]
    pub count: Option<u64>,
}

/// A duration written `90s`, `15m`, `24h`, `7d`, `500ms` (or bare seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub i64);

impl Dur {
    pub fn nanos(&self) -> i64 {
        self.0
    }
}

pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 90s, 15m, 24h, 7d"))?;
    let mult: f64 = match unit.trim() {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        other => {
            return Err(format!(
                "bad duration unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    let nanos = n * mult;
    if !(0.0..9.0e18).contains(&nanos) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(nanos as i64)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => i64::try_from(s)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .map(Dur)
                .ok_or_else(|| de::Error::custom("duration out of range")),
            Raw::Text(t) => parse_duration(&t).map(Dur).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000_000_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}
