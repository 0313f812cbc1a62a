//! The streaming engine: every rule on every line, state per key.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use lru::LruCache;

use super::compile::{quote, Builder, CompileError, CompiledRule, Detect};
use super::field::{Field, LineRef};
use super::firing::Firing;
use super::matcher::{Expr, MatchSet, Scratch};
use super::rule::{DetectKind, RuleSpec};
use super::window::{Samples, Sliding};
use crate::parse::Event;

/// Separates the tenant and the key's values inside state keys.
const SEP: char = '\u{1f}';

/// Per-key state. One struct for every kind keeps the code simple; the
/// parts a kind does not use stay empty and allocate nothing.
#[derive(Debug, Default)]
struct KeyState {
    a: Sliding,
    b: Sliding,
    samples: Samples,
    suppress_until: i64,
    distinct: HashMap<u64, i64>,
    distinct_first: i64,
    /// spike: current bucket, its count, EWMA mean/variance, buckets seen.
    bucket: Option<i64>,
    bucket_count: u64,
    mean: f64,
    var: f64,
    seen: u32,
    /// flatline: last line and whether the silence already fired.
    last_seen: i64,
    fired: bool,
}

/// One distinct key (list of fields) of the engine's rules, built at most
/// once per line and shared by every rule keyed on it.
struct KeySlot {
    fields: Vec<Field>,
    buf: String,
    gen: u64,
}

struct RuleState {
    rule: CompiledRule,
    key_slot: usize,
    keys: LruCache<String, KeyState>,
    watermark: i64,
    started: Option<i64>,
    evicted: u64,
    late: u64,
}

/// Counters per rule, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    pub id: String,
    pub keys: usize,
    /// Keys dropped by the per-rule cap (LRU).
    pub evicted: u64,
    /// Lines older than the rule's watermark minus its lateness, ignored.
    pub late: u64,
}

/// What the per-line loop reads for every rule, packed apart from the rule
/// state: most rules fail their filter, and a line should not pull each
/// rule's (large, often evicted) state into the cache just to find that.
struct Hot {
    required: u32,
    has_tenant: bool,
    matcher: Expr,
}

pub struct Engine {
    set: MatchSet,
    scratch: Scratch,
    hot: Vec<Hot>,
    rules: Vec<RuleState>,
    key_slots: Vec<KeySlot>,
    gen: u64,
}

impl Engine {
    /// Compiles enabled rules into one engine. Errors name the rule; the
    /// loader has already checked the files, so this fails only for specs
    /// built in code.
    pub fn new(specs: &[RuleSpec]) -> Result<Engine, (String, CompileError)> {
        let mut b = Builder::new();
        let mut rules = Vec::new();
        for s in specs.iter().filter(|s| s.enabled) {
            rules.push(super::compile::compile_rule(&mut b, s).map_err(|e| (s.id.clone(), e))?);
        }
        let set = b.finish().map_err(|e| (String::new(), e))?;
        Ok(Engine::from_compiled(set, rules))
    }

    fn from_compiled(mut set: MatchSet, mut rules: Vec<CompiledRule>) -> Engine {
        for r in rules.iter_mut() {
            super::compile::order(&set, &mut r.matcher);
            set.intern(&mut r.matcher);
            r.required |= set.required(&r.matcher);
            match &mut r.detect {
                Detect::Ratio { numerator: e, .. } => {
                    super::compile::order(&set, e);
                    set.intern(e);
                }
                Detect::Sequence { first, then, .. } => {
                    super::compile::order(&set, first);
                    super::compile::order(&set, then);
                    set.intern(first);
                    set.intern(then);
                }
                Detect::Distinct { field, .. } => {
                    r.required |= field.iter().fold(0, |m, f| m | f.bit())
                }
                _ => {}
            }
        }
        // Cheap rules first: no semantic effect, but an early rule that
        // builds a view shares it with the later ones.
        rules.sort_by_key(|r| set.cost(&r.matcher));
        let scratch = Scratch::new(&set);
        let mut key_slots: Vec<KeySlot> = Vec::new();
        let hot = rules
            .iter()
            .map(|r| Hot {
                required: r.required,
                has_tenant: r.tenant.is_some(),
                matcher: r.matcher.clone(),
            })
            .collect();
        Engine {
            set,
            scratch,
            hot,
            rules: rules
                .into_iter()
                .map(|rule| RuleState {
                    key_slot: match key_slots.iter().position(|k| k.fields == rule.key) {
                        Some(i) => i,
                        None => {
                            key_slots.push(KeySlot {
                                fields: rule.key.clone(),
                                buf: String::new(),
                                gen: 0,
                            });
                            key_slots.len() - 1
                        }
                    },
                    rule,
                    keys: LruCache::unbounded(),
                    watermark: i64::MIN,
                    started: None,
                    evicted: 0,
                    late: 0,
                })
                .collect(),
            key_slots,
            gen: 0,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .map(|r| RuleStats {
                id: r.rule.id.clone(),
                keys: r.keys.len(),
                evicted: r.evicted,
                late: r.late,
            })
            .collect()
    }

    /// Evaluates every rule on one line at event time `ts` (unix nanos);
    /// firings are appended to `out`.
    pub fn evaluate(
        &mut self,
        event: &Event<'_>,
        raw: &str,
        ts: i64,
        tenant: &str,
        out: &mut Vec<Firing>,
    ) {
        self.evaluate_source(event, raw, "", ts, tenant, out)
    }

    /// [`Engine::evaluate`] for a line whose source label is known.
    pub fn evaluate_source(
        &mut self,
        event: &Event<'_>,
        raw: &str,
        source: &str,
        ts: i64,
        tenant: &str,
        out: &mut Vec<Firing>,
    ) {
        let line = LineRef { event, raw, source };
        let Engine {
            set,
            scratch,
            hot,
            rules,
            key_slots,
            gen,
        } = self;
        *gen += 1;
        scratch.reset(&line);
        let present = scratch.present;
        for (h, rs) in hot.iter().zip(rules.iter_mut()) {
            if h.required & !present != 0 {
                continue;
            }
            if h.has_tenant && rs.rule.tenant.as_deref() != Some(tenant) {
                continue;
            }
            if !scratch.eval(set, &line, &h.matcher) {
                continue;
            }
            let r = &rs.rule;
            if rs.watermark != i64::MIN && ts < rs.watermark.saturating_sub(r.lateness) {
                rs.late += 1;
                continue;
            }
            rs.watermark = rs.watermark.max(ts);
            let slot = &mut key_slots[rs.key_slot];
            if slot.gen != *gen {
                slot.gen = *gen;
                let key_buf = &mut slot.buf;
                key_buf.clear();
                key_buf.push_str(tenant);
                for (i, f) in slot.fields.iter().enumerate() {
                    if i > 0 {
                        key_buf.push('|');
                    }
                    key_buf.push(SEP);
                    line.write(*f, key_buf);
                }
            }
            let key = slot.buf.as_str();
            if r.kind == DetectKind::NewValue {
                let started = *rs.started.get_or_insert(ts);
                if rs.keys.get(key).is_some() {
                    continue;
                }
                insert(rs, key);
                let r = &rs.rule;
                if ts
                    >= started.saturating_add(match r.detect {
                        Detect::NewValue { learning } => learning,
                        _ => 0,
                    })
                {
                    let mut samples = Samples::default();
                    samples.push(raw);
                    out.push(firing(r, key, 1, None, ts, ts, samples.take()));
                }
                continue;
            }
            // One hash lookup whether the key is new or not. A new key is
            // the most recently used, so evicting after the step drops the
            // same keys as evicting before it.
            let mut new = false;
            let st = rs.keys.get_or_insert_mut_ref(key, || {
                new = true;
                KeyState::default()
            });
            step(&rs.rule, st, set, scratch, &line, key, ts, out);
            if new {
                evict(rs);
            }
        }
    }

    /// Advances time to `now` (unix nanos, event time offline, wall clock
    /// live): fires flatline rules whose keys have been silent too long.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Firing>) {
        for rs in self.rules.iter_mut() {
            let Detect::Flatline { after } = rs.rule.detect else {
                continue;
            };
            for (key, st) in rs.keys.iter_mut() {
                if !st.fired && now.saturating_sub(st.last_seen) >= after {
                    st.fired = true;
                    out.push(firing(
                        &rs.rule,
                        key,
                        0,
                        None,
                        st.last_seen,
                        now,
                        st.samples.take(),
                    ));
                }
            }
        }
    }
}

fn insert(rs: &mut RuleState, key: &str) {
    rs.keys.push(key.to_owned(), KeyState::default());
    evict(rs);
}

fn evict(rs: &mut RuleState) {
    // The cap bounds memory against floods of random keys; the least
    // recently seen key goes, and the metric says how often.
    while rs.keys.len() > rs.rule.max_keys {
        rs.keys.pop_lru();
        rs.evicted += 1;
    }
}

/// One matching line for one key of a windowed or per-line rule.
#[allow(clippy::too_many_arguments)]
fn step(
    r: &CompiledRule,
    st: &mut KeyState,
    set: &MatchSet,
    scratch: &mut Scratch,
    line: &LineRef<'_, '_>,
    key: &str,
    ts: i64,
    out: &mut Vec<Firing>,
) {
    let w = r.window;
    match &r.detect {
        Detect::Match => {
            if ts < st.suppress_until {
                return;
            }
            st.suppress_until = ts.saturating_add(r.suppress);
            let mut s = Samples::default();
            s.push(line.raw);
            out.push(firing(r, key, 1, None, ts, ts, s.take()));
        }
        Detect::Threshold { count, sum } => {
            if ts < st.suppress_until {
                return;
            }
            let value = match sum {
                Some((f, _)) => line.number(*f).unwrap_or(0.0),
                None => 1.0,
            };
            st.a.add(ts, w, value);
            if st.a.count() == 1 {
                st.samples.clear();
            }
            st.samples.push(line.raw);
            let hit = match sum {
                Some((_, min)) => st.a.sum() >= *min,
                None => st.a.count() >= *count,
            };
            if hit {
                let v = sum.map(|_| st.a.sum());
                out.push(firing(
                    r,
                    key,
                    st.a.count(),
                    v,
                    st.a.first_ts(),
                    st.a.last_ts,
                    st.samples.take(),
                ));
                st.a.clear();
                st.suppress_until = ts.saturating_add(r.suppress);
            }
        }
        Detect::Distinct { field, count } => {
            if ts < st.suppress_until {
                return;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let buf = &mut scratch.value_buf;
            buf.clear();
            for f in field {
                line.write(*f, buf);
                buf.push(SEP);
            }
            buf.hash(&mut h);
            let hv = h.finish();
            if st.distinct.is_empty() {
                st.distinct_first = ts;
                st.samples.clear();
            }
            if st.distinct.insert(hv, ts).is_none() {
                st.samples.push(line.raw);
            }
            if st.distinct.len() as u64 >= *count {
                let since = ts.saturating_sub(w);
                st.distinct.retain(|_, t| *t > since);
                let n = st.distinct.len() as u64;
                if n >= *count {
                    let first = st.distinct.values().copied().min().unwrap_or(ts);
                    out.push(firing(r, key, n, None, first, ts, st.samples.take()));
                    st.distinct.clear();
                    st.suppress_until = ts.saturating_add(r.suppress);
                }
            }
        }
        Detect::Ratio {
            numerator,
            ratio,
            min_volume,
        } => {
            if ts < st.suppress_until {
                return;
            }
            st.b.add(ts, w, 1.0);
            if scratch.eval(set, line, numerator) {
                st.a.add(ts, w, 1.0);
                if st.a.count() == 1 {
                    st.samples.clear();
                }
                st.samples.push(line.raw);
            } else {
                st.a.expire(ts, w);
            }
            let (n, d) = (st.a.count(), st.b.count());
            if d >= *min_volume && n > 0 && n as f64 >= *ratio * d as f64 {
                let share = n as f64 / d as f64;
                out.push(firing(
                    r,
                    key,
                    n,
                    Some(share),
                    st.b.first_ts(),
                    ts,
                    st.samples.take(),
                ));
                st.a.clear();
                st.b.clear();
                st.suppress_until = ts.saturating_add(r.suppress);
            }
        }
        Detect::Sequence { first, then, count } => {
            if ts < st.suppress_until {
                return;
            }
            st.a.expire(ts, w);
            if st.a.count() >= *count && scratch.eval(set, line, then) {
                st.samples.push(line.raw);
                out.push(firing(
                    r,
                    key,
                    st.a.count(),
                    None,
                    st.a.first_ts(),
                    ts,
                    st.samples.take(),
                ));
                st.a.clear();
                st.suppress_until = ts.saturating_add(r.suppress);
            } else if scratch.eval(set, line, first) {
                st.a.add(ts, w, 1.0);
                if st.a.count() == 1 {
                    st.samples.clear();
                }
                // Keep one slot for the line that completes the sequence.
                if st.samples.len() < super::window::MAX_SAMPLES - 1 {
                    st.samples.push(line.raw);
                }
            }
        }
        Detect::Spike {
            alpha,
            z,
            warmup,
            min_count,
        } => {
            let bucket = ts.div_euclid(w.max(1));
            match st.bucket {
                Some(b) if bucket < b => return, // late: its bucket is closed
                Some(b) if bucket > b => {
                    ewma(st, st.bucket_count as f64, *alpha);
                    // Silent buckets in between count as zeros; after a
                    // long gap the baseline has decayed anyway.
                    for _ in 0..(bucket - b - 1).min(200) {
                        ewma(st, 0.0, *alpha);
                    }
                    st.bucket = Some(bucket);
                    st.bucket_count = 0;
                    st.samples.clear();
                }
                Some(_) => {}
                None => st.bucket = Some(bucket),
            }
            st.bucket_count += 1;
            st.samples.push(line.raw);
            if st.seen >= *warmup && st.bucket_count >= *min_count && ts >= st.suppress_until {
                let sd = st.var.sqrt().max(1.0);
                let score = (st.bucket_count as f64 - st.mean) / sd;
                if score >= *z {
                    let start = bucket * w;
                    out.push(firing(
                        r,
                        key,
                        st.bucket_count,
                        Some(score),
                        start,
                        ts,
                        st.samples.take(),
                    ));
                    st.suppress_until = ts.saturating_add(r.suppress);
                }
            }
        }
        Detect::Flatline { .. } => {
            if ts >= st.last_seen {
                st.last_seen = ts;
                st.samples.clear();
                st.samples.push(line.raw);
            }
            st.fired = false;
        }
        Detect::NewValue { .. } => {}
    }
}

/// Exponentially weighted mean and variance (West's update).
fn ewma(st: &mut KeyState, x: f64, alpha: f64) {
    if st.seen == 0 {
        st.mean = x;
        st.var = 0.0;
    } else {
        let diff = x - st.mean;
        let incr = alpha * diff;
        st.mean += incr;
        st.var = (1.0 - alpha) * (st.var + diff * incr);
    }
    st.seen = st.seen.saturating_add(1);
}

fn firing(
    r: &CompiledRule,
    state_key: &str,
    count: u64,
    value: Option<f64>,
    first_ts: i64,
    last_ts: i64,
    sample_lines: Vec<String>,
) -> Firing {
    let mut parts = state_key.split(SEP);
    let tenant = parts.next().unwrap_or_default().to_string();
    let values: Vec<&str> = parts.map(|p| p.strip_suffix('|').unwrap_or(p)).collect();
    let mut terms: Vec<String> = r
        .key
        .iter()
        .zip(&values)
        .map(|(f, v)| format!("{}:{}", f.name(), quote(v)))
        .collect();
    if !r.evidence.is_empty() {
        terms.push(r.evidence.clone());
    }
    Firing {
        rule_id: r.id.clone(),
        title: r.title.clone(),
        severity: r.severity,
        tenant,
        key: values.join("|"),
        count,
        value,
        window: r.window as f64 / 1e9,
        first_ts,
        last_ts,
        sample_lines,
        labels: r.labels.clone(),
        tags: r.tags.clone(),
        evidence_query: if terms.is_empty() {
            "*".into()
        } else {
            terms.join(" AND ")
        },
    }
}
