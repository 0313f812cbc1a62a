//! The detect kinds, one file each: its parameters, how its `detect:`
//! block compiles (the keys it takes, their defaults and checks), and its
//! step: one line that passed the rule's filter, for one key, in time
//! order (`step`) and late (`step_late`, a line older than the key's
//! newest). A step reads and writes only the key's [`KeyState`] and
//! returns a [`Hit`] when the rule fires; the engine owns the key maps,
//! builds the firing, and writes the state into snapshots.
//!
//! A new kind is a new file here, its `DetectKind` in `rule.rs`, and one
//! arm in each dispatch: [`compile_rule`] and `engine.rs`'s `step`,
//! `step_late` and `too_old`.

pub mod burn_rate;
pub mod distinct;
pub mod flatline;
pub mod match_;
pub mod new_pattern;
pub mod new_value;
pub mod pattern_key;
pub mod pattern_spike;
pub mod ratio;
pub mod sequence;
pub mod spike;
pub mod threshold;

use std::collections::{BTreeMap, HashMap};

use super::compile::{err, evidence_terms, fields, Builder, CompileError};
use super::field::Field;
use super::matcher::Expr;
use super::rule::{DetectKind, DetectSpec, RuleSpec, Severity};
use super::window::{Samples, Sliding};

/// The detection, with every default filled in.
#[derive(Debug, Clone)]
pub enum Detect {
    Match,
    Threshold(threshold::Threshold),
    Distinct(distinct::Distinct),
    Ratio(ratio::Ratio),
    Sequence(sequence::Sequence),
    NewValue(new_value::NewValue),
    Spike(spike::Spike),
    Flatline(flatline::Flatline),
    BurnRate(Box<burn_rate::BurnRate>),
    NewPattern(new_pattern::NewPattern),
    PatternSpike(pattern_spike::PatternSpike),
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub tenant: Option<String>,
    pub kind: DetectKind,
    pub matcher: Expr,
    pub detect: Detect,
    pub key: Vec<Field>,
    pub window: i64,
    pub suppress: i64,
    /// The grace: how far before a key's window a late line still counts
    /// in the windows that contain it (engine.rs, `late`).
    pub lateness: i64,
    pub max_keys: usize,
    /// Fields a line must carry for the rule to look at it at all.
    pub required: u32,
    /// Query terms shown with the key's terms in a firing.
    pub evidence: String,
}

impl CompiledRule {
    #[inline]
    pub fn span(&self) -> Span {
        Span {
            window: self.window,
            lateness: self.lateness,
            suppress: self.suppress,
        }
    }
}

pub const MIN: i64 = 60_000_000_000;
/// Default `lateness`: a source a few minutes behind the others (nginx's
/// `flush=5m`, Apache logging a request's start) still counts in the
/// shared windows; beyond, its own side windows take over.
pub const DEFAULT_GRACE: i64 = 5 * MIN;
pub const DEFAULT_MAX_KEYS: usize = 20_000;
/// The window of the windowed kinds that set none.
const DEFAULT_WINDOW: i64 = 5 * MIN;

/// What a step reads of its rule besides the kind's own parameters.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub window: i64,
    /// See [`CompiledRule::lateness`].
    pub lateness: i64,
    pub suppress: i64,
}

impl Span {
    /// The windowed kinds (threshold, distinct, ratio, sequence): whether
    /// a line at `ts` is too old for every window of the key that could
    /// still count it, the window plus the grace before its newest line.
    #[inline]
    pub fn too_old(&self, st: &KeyState, ts: i64) -> bool {
        ts <= st
            .clock
            .saturating_sub(self.window)
            .saturating_sub(self.lateness)
    }
}

/// A rule fired for a key: what the firing says besides the rule and key.
pub struct Hit {
    pub count: u64,
    pub value: Option<f64>,
    pub first_ts: i64,
    pub last_ts: i64,
    pub samples: Vec<String>,
    /// The window shown when it is not the rule's (burn_rate: the firing
    /// tier's long window), nanos.
    pub window: Option<i64>,
    /// new_pattern, pattern_spike: the pattern's id and template (boxed:
    /// the other kinds pay one word).
    pub pattern: Option<Box<(u64, String)>>,
}

impl Hit {
    #[inline]
    pub fn new(
        count: u64,
        value: Option<f64>,
        first_ts: i64,
        last_ts: i64,
        samples: Vec<String>,
    ) -> Hit {
        Hit {
            count,
            value,
            first_ts,
            last_ts,
            samples,
            window: None,
            pattern: None,
        }
    }
}

/// A source in the engine's source table: slot and generation (a reused
/// slot has a new one, so a key never reads another source's clock).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceRef {
    pub index: u32,
    pub gen: u32,
}

/// Per-key state. One struct for every kind keeps the code simple; the
/// parts a kind does not use stay empty and allocate nothing.
///
/// `repr(C)`, what most lines touch first: with the slot's hash and key
/// these fill the cache lines `KeyMap::prefetch` loads, and the rest
/// (kinds with fewer keys, or rarely read) follows.
#[derive(Debug, Default)]
#[repr(C)]
pub struct KeyState {
    /// Newest line of the key, event time. An older line is late for the
    /// key (engine.rs, `late`): it still counts in the windows that
    /// contain it, up to the rule's grace before the key's window.
    pub clock: i64,
    pub suppress_until: i64,
    pub a: Sliding,
    pub samples: Samples,
    pub b: Sliding,
    pub distinct: HashMap<u64, i64>,
    pub distinct_first: i64,
    /// spike: current bucket, its count, EWMA mean/variance, buckets seen.
    pub bucket: Option<i64>,
    pub bucket_count: u64,
    pub mean: f64,
    pub var: f64,
    pub seen: u32,
    pub fired: bool,
    /// flatline: last line and whether the silence already fired.
    pub last_seen: i64,
    /// sequence: the newest `then` line that found too few `first` lines
    /// before it, so `first` lines arriving late (from a source behind)
    /// can still complete the sequence.
    pub then_ts: i64,
    /// flatline: the source of the key's newest line, whose own clock
    /// says how long the key has been silent.
    pub src: SourceRef,
    /// spike: closed buckets still open to late lines (once one closed).
    pub open: Option<Box<spike::OpenBuckets>>,
    /// burn_rate: its window rings (boxed: other kinds pay one word).
    pub burn: Option<Box<burn_rate::BurnState>>,
    /// new_pattern, pattern_spike: the key's miner and its patterns.
    pub pat: Option<Box<pattern_key::PatternKey>>,
}

impl crate::detect::keymap::Recycle for KeyState {
    /// What an evicted key leaves to the next new key: the memory of its
    /// windows, samples and distinct set, emptied; every other field as a
    /// new key's. Saves the frees and mallocs of a key churn (scanners,
    /// random client IPs past the key cap), on every new key.
    fn recycle(&mut self) {
        let mut a = std::mem::take(&mut self.a);
        let mut b = std::mem::take(&mut self.b);
        let mut samples = std::mem::take(&mut self.samples);
        let mut distinct = std::mem::take(&mut self.distinct);
        a.reset();
        b.reset();
        samples.clear();
        distinct.clear();
        if distinct.capacity() > 64 {
            distinct = HashMap::default();
        }
        // A burn-rate rule's keys all have rings of one size: a route
        // past the key cap reuses the evicted route's.
        let burn = self.burn.take().map(|mut burn| {
            burn.reset();
            burn
        });
        *self = KeyState {
            a,
            b,
            samples,
            distinct,
            burn,
            ..KeyState::default()
        };
    }
}

/// The error for a parameter the kind cannot do without.
pub fn need(kind: DetectKind, name: &str) -> CompileError {
    CompileError {
        near: Some("kind:".into()),
        message: format!("detect kind {} needs {name}", kind.as_str()),
    }
}

/// A duration parameter that must be positive when given.
pub fn positive(name: &str, v: Option<i64>) -> Result<(), CompileError> {
    match v {
        Some(x) if x <= 0 => err(Some(format!("{name}:")), format!("{name} must be > 0")),
        _ => Ok(()),
    }
}

/// Compiles one rule's spec; the match set is finished after all rules.
pub fn compile_rule(b: &mut Builder, spec: &RuleSpec) -> Result<CompiledRule, CompileError> {
    if spec.id.trim().is_empty()
        || !spec
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return err(
            Some(format!("id: {}", spec.id)),
            format!("rule id {:?} must be non-empty [A-Za-z0-9._-]", spec.id),
        );
    }
    let d = &spec.detect;
    let matcher = match &spec.matcher {
        Some(m) => b.expr(m)?,
        None => Expr::True,
    };
    let key = fields(&d.key)?;
    let kind = d.kind;
    // Which optional keys each kind accepts; anything else set is an error
    // so a misplaced key is not silently ignored.
    let accepts: &[&str] = match kind {
        DetectKind::Match => match_::ACCEPTS,
        DetectKind::Threshold => threshold::ACCEPTS,
        DetectKind::Distinct => distinct::ACCEPTS,
        DetectKind::Ratio => ratio::ACCEPTS,
        DetectKind::Sequence => sequence::ACCEPTS,
        DetectKind::NewValue => new_value::ACCEPTS,
        DetectKind::Spike => spike::ACCEPTS,
        DetectKind::Flatline => flatline::ACCEPTS,
        DetectKind::BurnRate => burn_rate::ACCEPTS,
        DetectKind::NewPattern => new_pattern::ACCEPTS,
        DetectKind::PatternSpike => pattern_spike::ACCEPTS,
    };
    for (name, set) in detect_keys(d) {
        if set && !accepts.contains(&name) {
            return err(
                Some(format!("{name}:")),
                format!("{name} is not used by detect kind {}", kind.as_str()),
            );
        }
    }
    let window = d.window.map(|w| w.nanos());
    positive("window", window)?;
    let detect = match kind {
        DetectKind::Match => Detect::Match,
        DetectKind::Threshold => Detect::Threshold(threshold::compile(d, window)?),
        DetectKind::Distinct => Detect::Distinct(distinct::compile(d, window)?),
        DetectKind::Ratio => Detect::Ratio(ratio::compile(b, d, window)?),
        DetectKind::Sequence => Detect::Sequence(sequence::compile(b, d, window)?),
        DetectKind::NewValue => Detect::NewValue(new_value::compile(d, &key)?),
        DetectKind::Spike => Detect::Spike(spike::compile(d, window)?),
        DetectKind::Flatline => Detect::Flatline(flatline::compile(d)?),
        DetectKind::BurnRate => Detect::BurnRate(Box::new(burn_rate::compile(b, d)?)),
        DetectKind::NewPattern => Detect::NewPattern(new_pattern::compile(d)?),
        DetectKind::PatternSpike => Detect::PatternSpike(pattern_spike::compile(d, window)?),
    };
    let window = match &detect {
        Detect::Match => window.unwrap_or(match_::DEFAULT_WINDOW),
        Detect::NewValue(_) | Detect::NewPattern(_) => 0,
        Detect::Flatline(f) => f.after,
        Detect::BurnRate(br) => burn_rate::longest(br),
        _ => window.unwrap_or(DEFAULT_WINDOW),
    };
    let suppress = match d.suppress {
        Some(s) => s.nanos(),
        None => match &detect {
            Detect::Spike(_) | Detect::PatternSpike(_) => spike::default_suppress(window),
            Detect::NewValue(_) | Detect::NewPattern(_) => 0,
            Detect::BurnRate(br) => burn_rate::default_suppress(br),
            _ => window,
        },
    };
    let max_keys = d.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        return err(Some("max_keys:".into()), "max_keys must be > 0");
    }
    let evidence = match &spec.evidence {
        Some(e) => e.clone(),
        None => spec
            .matcher
            .as_ref()
            .map(evidence_terms)
            .unwrap_or_default(),
    };
    Ok(CompiledRule {
        id: spec.id.clone(),
        title: spec.title.clone(),
        severity: spec.severity,
        labels: spec.labels.clone(),
        tags: spec.tags.clone(),
        tenant: spec.tenant.clone(),
        kind,
        matcher,
        detect,
        required: key.iter().fold(0, |m, f| m | f.bit()),
        key,
        window,
        suppress,
        lateness: d.lateness.map(|l| l.nanos()).unwrap_or(DEFAULT_GRACE),
        max_keys,
        evidence,
    })
}

fn detect_keys(d: &DetectSpec) -> [(&'static str, bool); 18] {
    [
        ("window", d.window.is_some()),
        ("count", d.count.is_some()),
        ("sum", d.sum.is_some()),
        ("min_sum", d.min_sum.is_some()),
        ("field", d.field.is_some()),
        ("numerator", d.numerator.is_some()),
        ("ratio", d.ratio.is_some()),
        ("min_volume", d.min_volume.is_some()),
        ("first", d.first.is_some()),
        ("then", d.then.is_some()),
        ("learning", d.learning.is_some()),
        // burn_rate takes `z` (its confidence) but not the others.
        (
            "alpha",
            d.alpha.is_some()
                || d.warmup.is_some()
                || (d.z.is_some() && d.kind != DetectKind::BurnRate),
        ),
        ("after", d.after.is_some()),
        ("slo", d.slo.is_some()),
        ("error", d.error.is_some()),
        ("windows", d.windows.is_some()),
        ("min_requests", d.min_requests.is_some()),
        ("level", d.level.is_some()),
    ]
}
