//! The streaming engine: every rule on every line, state per key.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::burn::BurnState;
use super::compile::{quote, Builder, CompileError, CompiledRule, Detect};
use super::field::{Field, LineRef};
use super::firing::Firing;
use super::keymap::{hash_key, KeyMap};
use super::matcher::{Expr, MatchSet, Scratch};
use super::rule::{DetectKind, RuleSpec};
use super::snapshot::{Dec, DecodeError, Enc};
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
    /// burn_rate: its window rings (boxed: other kinds pay one word).
    burn: Option<Box<BurnState>>,
}

impl KeyState {
    fn encode(&self, e: &mut Enc) {
        self.a.encode(e);
        self.b.encode(e);
        self.samples.encode(e);
        e.i64(self.suppress_until);
        e.u64(self.distinct.len() as u64);
        for (h, t) in &self.distinct {
            e.u64(*h);
            e.i64(*t);
        }
        e.i64(self.distinct_first);
        e.opt_i64(self.bucket);
        e.u64(self.bucket_count);
        e.f64(self.mean);
        e.f64(self.var);
        e.u32(self.seen);
        e.i64(self.last_seen);
        e.bool(self.fired);
        e.bool(self.burn.is_some());
        if let Some(b) = &self.burn {
            b.encode(e);
        }
    }

    fn decode(d: &mut Dec<'_>) -> Result<KeyState, DecodeError> {
        let a = Sliding::decode(d)?;
        let b = Sliding::decode(d)?;
        let samples = Samples::decode(d)?;
        let suppress_until = d.i64()?;
        let n = d.len()?;
        let mut distinct = HashMap::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            distinct.insert(d.u64()?, d.i64()?);
        }
        Ok(KeyState {
            a,
            b,
            samples,
            suppress_until,
            distinct,
            distinct_first: d.i64()?,
            bucket: d.opt_i64()?,
            bucket_count: d.u64()?,
            mean: d.f64()?,
            var: d.f64()?,
            seen: d.u32()?,
            last_seen: d.i64()?,
            fired: d.bool()?,
            burn: if d.bool()? {
                Some(Box::new(BurnState::decode(d)?))
            } else {
                None
            },
        })
    }
}

/// A rule's state as read from a snapshot, before it is matched to a rule.
struct SavedRule {
    hash: RuleHash,
    id: String,
    watermark: i64,
    started: Option<i64>,
    evicted: u64,
    late: u64,
    keys: Vec<(String, KeyState)>,
}

/// One distinct key (list of fields) of the engine's rules, built at most
/// once per line and shared by every rule keyed on it.
struct KeySlot {
    fields: Vec<Field>,
    buf: String,
    /// [`hash_key`] of `buf`.
    hash: u64,
    gen: u64,
}

impl KeySlot {
    /// The state key of this line: tenant, then each field after [`SEP`].
    fn build(&mut self, line: &LineRef<'_, '_>, tenant: &str) {
        let key_buf = &mut self.buf;
        key_buf.clear();
        key_buf.push_str(tenant);
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                key_buf.push('|');
            }
            key_buf.push(SEP);
            line.write(*f, key_buf);
        }
        self.hash = hash_key(key_buf);
    }
}

struct RuleState {
    rule: CompiledRule,
    /// [`content_hash`] of the spec: state is carried across reloads and
    /// restarts only to a rule with the same hash.
    hash: RuleHash,
    key_slot: usize,
    keys: KeyMap<KeyState>,
    watermark: i64,
    started: Option<i64>,
    evicted: u64,
    /// Evictions not yet handed to the metrics ([`Engine::take_evicted`]).
    evicted_unreported: u64,
    late: u64,
}

/// The tenant of a state key: everything before the first separator (an
/// unkeyed rule's key is the tenant alone).
fn state_key_tenant(key: &str) -> &str {
    key.split(SEP).next().unwrap_or_default()
}

/// SHA-256 of the parts of a rule that give its state a meaning.
pub type RuleHash = [u8; 32];

/// What identifies a rule's state: its id, tenant scope, filter and
/// detection. Title, description, severity, labels, tags, evidence and
/// fixtures are left out, so retitling a rule or raising its severity keeps
/// its windows; `max_keys` too (a lower cap evicts on load). Hashed from
/// the specs' `Debug` text: stable within a build; a build that changes
/// these types may start some rules fresh once, which is the safe side.
pub fn content_hash(spec: &RuleSpec) -> RuleHash {
    use sha2::{Digest, Sha256};
    let mut detect = spec.detect.clone();
    detect.max_keys = None;
    let text = format!(
        "{:?}\u{1f}{:?}\u{1f}{:?}\u{1f}{:?}",
        spec.id, spec.tenant, spec.matcher, detect
    );
    Sha256::digest(text.as_bytes()).into()
}

/// Engine-wide settings (`[rules]` in the collector's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Key cap of rules that set no `max_keys` of their own.
    pub max_keys_per_rule: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_keys_per_rule: super::compile::DEFAULT_MAX_KEYS,
        }
    }
}

/// What [`Engine::adopt_state`] and [`Engine::restore_state`] did, by rule id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Rules whose state was taken over (same content hash).
    pub kept: Vec<String>,
    /// Rules of this engine that start empty (new or changed).
    pub fresh: Vec<String>,
    /// State of rules this engine does not have (removed or changed), dropped.
    pub dropped: Vec<String>,
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

/// Rules bucketed by a shared necessary test ([`MatchSet::gate`]): per
/// line each distinct gate is evaluated once, and only the rules behind the
/// gates that passed (plus the ungated ones) are visited, in rule order.
#[derive(Default)]
struct Gates {
    /// 64-bit words per rule bit set.
    words: usize,
    /// (gate, its rules as a bit set at `masks[i * words..]`).
    kids: Vec<u32>,
    masks: Vec<u64>,
    /// Rules without a gate (no filter: every line).
    always: Vec<u64>,
    /// This line's candidates.
    cand: Vec<u64>,
    /// This line's rules whose filter passed.
    passing: Vec<u32>,
    /// Evaluate every rule's filter in full (differential tests).
    off: bool,
}

impl Gates {
    fn new(set: &MatchSet, hot: &[Hot]) -> Gates {
        let words = hot.len().div_ceil(64).max(1);
        let mut g = Gates {
            words,
            always: vec![0; words],
            cand: vec![0; words],
            ..Gates::default()
        };
        let candidates: Vec<(Vec<u32>, f64)> = hot
            .iter()
            .map(|h| set.gate_candidates(&h.matcher))
            .collect();
        let mut uses: HashMap<u32, usize> = HashMap::new();
        for (kids, _) in &candidates {
            for &k in kids {
                *uses.entry(k).or_default() += 1;
            }
        }
        for (r, (kids, total)) in candidates.iter().enumerate() {
            let (w, bit) = (r / 64, 1u64 << (r % 64));
            let score = |k: u32| set.gate_score(k, *total, uses.get(&k).copied().unwrap_or(1));
            let gate = kids
                .iter()
                .copied()
                .min_by(|&a, &b| score(a).total_cmp(&score(b)));
            match gate {
                None => g.always[w] |= bit,
                Some(k) => {
                    let i = match g.kids.iter().position(|&x| x == k) {
                        Some(i) => i,
                        None => {
                            g.kids.push(k);
                            g.masks.extend(std::iter::repeat_n(0, words));
                            g.kids.len() - 1
                        }
                    };
                    g.masks[i * words + w] |= bit;
                }
            }
        }
        g
    }
}

pub struct Engine {
    set: MatchSet,
    scratch: Scratch,
    hot: Vec<Hot>,
    gates: Gates,
    rules: Vec<RuleState>,
    key_slots: Vec<KeySlot>,
    gen: u64,
    /// A `tick` changed state (a flatline fired) since the last
    /// [`Engine::take_ticked`]: lines are not the only thing a snapshot
    /// has to catch.
    ticked: bool,
}

impl Engine {
    /// Compiles enabled rules into one engine. Errors name the rule; the
    /// loader has already checked the files, so this fails only for specs
    /// built in code.
    pub fn new(specs: &[RuleSpec]) -> Result<Engine, (String, CompileError)> {
        Engine::with_options(specs, EngineOptions::default())
    }

    /// [`Engine::new`] with engine-wide settings.
    pub fn with_options(
        specs: &[RuleSpec],
        options: EngineOptions,
    ) -> Result<Engine, (String, CompileError)> {
        let mut b = Builder::new();
        let mut rules = Vec::new();
        for s in specs.iter().filter(|s| s.enabled) {
            let mut r = super::compile::compile_rule(&mut b, s).map_err(|e| (s.id.clone(), e))?;
            if s.detect.max_keys.is_none() {
                r.max_keys = options.max_keys_per_rule.max(1);
            }
            rules.push((r, content_hash(s)));
        }
        let set = b.finish().map_err(|e| (String::new(), e))?;
        Ok(Engine::from_compiled(set, rules))
    }

    fn from_compiled(mut set: MatchSet, mut rules: Vec<(CompiledRule, RuleHash)>) -> Engine {
        for (r, _) in rules.iter_mut() {
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
                Detect::BurnRate(br) => {
                    super::compile::order(&set, &mut br.error);
                    set.intern(&mut br.error);
                }
                _ => {}
            }
        }
        // Cheap rules first: no semantic effect, but an early rule that
        // builds a view shares it with the later ones.
        rules.sort_by_key(|(r, _)| set.cost(&r.matcher));
        let scratch = Scratch::new(&set);
        let mut key_slots: Vec<KeySlot> = Vec::new();
        let hot: Vec<Hot> = rules
            .iter()
            .map(|(r, _)| Hot {
                required: r.required,
                has_tenant: r.tenant.is_some(),
                matcher: r.matcher.clone(),
            })
            .collect();
        let gates = Gates::new(&set, &hot);
        Engine {
            set,
            scratch,
            hot,
            gates,
            rules: rules
                .into_iter()
                .map(|(rule, hash)| RuleState {
                    hash,
                    key_slot: match key_slots.iter().position(|k| k.fields == rule.key) {
                        Some(i) => i,
                        None => {
                            key_slots.push(KeySlot {
                                fields: rule.key.clone(),
                                buf: String::new(),
                                hash: 0,
                                gen: 0,
                            });
                            key_slots.len() - 1
                        }
                    },
                    rule,
                    keys: KeyMap::default(),
                    watermark: i64::MIN,
                    started: None,
                    evicted: 0,
                    evicted_unreported: 0,
                    late: 0,
                })
                .collect(),
            key_slots,
            gen: 0,
            ticked: false,
        }
    }

    /// With `true`, every line runs every rule's whole filter instead of
    /// going through the shared gates, and scans every text instead of
    /// reusing results for a text seen before: the plain path, for
    /// differential tests and benchmarks. Results are the same either way.
    pub fn set_plain_evaluation(&mut self, plain: bool) {
        self.gates.off = plain;
        self.scratch.memo_off = plain;
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

    /// Drops every key of `tenant` from every rule (a tenant purge): the
    /// keys hold the tenant's values (IPs, users, paths) and sample lines.
    /// Returns how many keys went.
    pub fn forget_tenant(&mut self, tenant: &str) -> u64 {
        let mut removed = 0u64;
        for rule in &mut self.rules {
            removed += rule.keys.remove_where(|k| state_key_tenant(k) == tenant) as u64;
        }
        if removed > 0 {
            // The next snapshot must not carry the forgotten keys over.
            self.ticked = true;
        }
        removed
    }

    /// Whether a `tick` changed state since the last call.
    pub fn take_ticked(&mut self) -> bool {
        std::mem::take(&mut self.ticked)
    }

    /// Evictions since the last call, summed over rules (for a counter).
    pub fn take_evicted(&mut self) -> u64 {
        self.rules
            .iter_mut()
            .map(|r| std::mem::take(&mut r.evicted_unreported))
            .sum()
    }

    /// Takes over the state of every rule of `old` with the same content
    /// hash (windows, baselines, learned values, counters); rules of `old`
    /// without a match are dropped, rules of `self` without one start
    /// empty. A lower key cap evicts the least recently seen keys now.
    pub fn adopt_state(&mut self, old: &mut Engine) -> Carried {
        let mut by_hash: HashMap<RuleHash, &mut RuleState> =
            old.rules.iter_mut().map(|r| (r.hash, r)).collect();
        let mut carried = Carried::default();
        for rs in self.rules.iter_mut() {
            match by_hash.remove(&rs.hash) {
                Some(prev) => {
                    std::mem::swap(&mut rs.keys, &mut prev.keys);
                    rs.watermark = prev.watermark;
                    rs.started = prev.started;
                    rs.evicted = prev.evicted;
                    rs.late = prev.late;
                    rs.evicted_unreported = std::mem::take(&mut prev.evicted_unreported);
                    evict(rs);
                    carried.kept.push(rs.rule.id.clone());
                }
                None => carried.fresh.push(rs.rule.id.clone()),
            }
        }
        carried.dropped = by_hash.into_values().map(|r| r.rule.id.clone()).collect();
        carried.dropped.sort();
        carried
    }

    /// Appends every rule's state to `e` (see [`Engine::restore_state`]).
    pub fn encode_state(&self, e: &mut Enc) {
        e.u64(self.rules.len() as u64);
        for rs in &self.rules {
            e.bytes(&rs.hash);
            e.str(&rs.rule.id);
            e.i64(rs.watermark);
            e.opt_i64(rs.started);
            e.u64(rs.evicted);
            e.u64(rs.late);
            e.u64(rs.keys.len() as u64);
            // Least recently used first, so pushing them back in this
            // order restores the eviction order too.
            for (key, st) in rs.keys.iter_lru_first() {
                e.str(key);
                st.encode(e);
            }
        }
    }

    /// Loads state written by [`Engine::encode_state`] (possibly by another
    /// rule set) into the rules with the same content hash. The whole body
    /// is decoded before anything is applied, so a bad body leaves the
    /// engine as it was.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<Carried, DecodeError> {
        let mut d = Dec::new(bytes);
        let n = d.len()?;
        let mut saved: Vec<SavedRule> = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let hash: RuleHash = d
                .bytes()?
                .try_into()
                .map_err(|_| DecodeError("rule hash is not 32 bytes".into()))?;
            let id = d.str()?.to_string();
            let watermark = d.i64()?;
            let started = d.opt_i64()?;
            let evicted = d.u64()?;
            let late = d.u64()?;
            let count = d.len()?;
            let mut keys = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let key = d.str()?.to_string();
                keys.push((key, KeyState::decode(&mut d)?));
            }
            saved.push(SavedRule {
                hash,
                id,
                watermark,
                started,
                evicted,
                late,
                keys,
            });
        }
        if !d.is_empty() {
            return Err(DecodeError("trailing bytes after the last rule".into()));
        }
        let mut by_hash: HashMap<RuleHash, SavedRule> =
            saved.into_iter().map(|r| (r.hash, r)).collect();
        let mut carried = Carried::default();
        for rs in self.rules.iter_mut() {
            let Some(prev) = by_hash.remove(&rs.hash) else {
                carried.fresh.push(rs.rule.id.clone());
                continue;
            };
            rs.keys.clear();
            for (key, st) in prev.keys {
                rs.keys.push(&key, st);
            }
            rs.watermark = prev.watermark;
            rs.started = prev.started;
            rs.evicted = prev.evicted;
            rs.late = prev.late;
            evict(rs);
            carried.kept.push(rs.rule.id.clone());
        }
        carried.dropped = by_hash.into_values().map(|r| r.id).collect();
        carried.dropped.sort();
        Ok(carried)
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
            gates,
            rules,
            key_slots,
            gen,
            ..
        } = self;
        *gen += 1;
        scratch.reset(&line);
        let present = scratch.present;
        let words = gates.words;
        if gates.off {
            gates.cand.iter_mut().for_each(|w| *w = u64::MAX);
        } else {
            gates.cand.copy_from_slice(&gates.always);
            for (i, &k) in gates.kids.iter().enumerate() {
                if scratch.eval_kid(set, &line, k) {
                    let m = &gates.masks[i * words..(i + 1) * words];
                    for (c, m) in gates.cand.iter_mut().zip(m) {
                        *c |= m;
                    }
                }
            }
        }
        // Two passes: first every candidate's filter and key (pure, and
        // the key's slot is prefetched), then the state of the rules that
        // passed, in rule order. The state of a few rules with many keys
        // each is cold; prefetching all of it before touching any overlaps
        // those misses.
        gates.passing.clear();
        for w in 0..words {
            let mut bits = gates.cand[w];
            while bits != 0 {
                let r = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if r >= rules.len() {
                    break;
                }
                let (h, rs) = (&hot[r], &rules[r]);
                if h.required & !present != 0
                    || (h.has_tenant && rs.rule.tenant.as_deref() != Some(tenant))
                    || !scratch.eval(set, &line, &h.matcher)
                {
                    continue;
                }
                let slot = &mut key_slots[rs.key_slot];
                if slot.gen != *gen {
                    slot.gen = *gen;
                    slot.build(&line, tenant);
                }
                rs.keys.prefetch(slot.hash);
                gates.passing.push(r as u32);
            }
        }
        for &r in &gates.passing {
            let rs = &mut rules[r as usize];
            let slot = &key_slots[rs.key_slot];
            update_rule(set, scratch, rs, &slot.buf, slot.hash, &line, ts, out);
        }
    }

    /// Advances time to `now` (unix nanos, event time offline, wall clock
    /// live): fires flatline rules whose keys have been silent too long.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Firing>) {
        for rs in self.rules.iter_mut() {
            let Detect::Flatline { after } = rs.rule.detect else {
                continue;
            };
            let ticked = &mut self.ticked;
            let rule = &rs.rule;
            rs.keys.for_each_mru_first(|key, st| {
                if !st.fired && now.saturating_sub(st.last_seen) >= after {
                    st.fired = true;
                    *ticked = true;
                    out.push(firing(
                        rule,
                        key,
                        0,
                        None,
                        st.last_seen,
                        now,
                        st.samples.take(),
                    ));
                }
            });
        }
    }
}

/// One rule on one line that passed its filter: its state under `key`.
#[allow(clippy::too_many_arguments)]
fn update_rule(
    set: &MatchSet,
    scratch: &mut Scratch,
    rs: &mut RuleState,
    key: &str,
    hash: u64,
    line: &LineRef<'_, '_>,
    ts: i64,
    out: &mut Vec<Firing>,
) {
    let r = &rs.rule;
    if rs.watermark != i64::MIN && ts < rs.watermark.saturating_sub(r.lateness) {
        rs.late += 1;
        return;
    }
    rs.watermark = rs.watermark.max(ts);
    if r.kind == DetectKind::NewValue {
        let started = *rs.started.get_or_insert(ts);
        if !rs.keys.get_or_insert(hash, key).1 {
            return;
        }
        evict(rs);
        let r = &rs.rule;
        if ts
            >= started.saturating_add(match r.detect {
                Detect::NewValue { learning } => learning,
                _ => 0,
            })
        {
            let mut samples = Samples::default();
            samples.push(line.raw);
            out.push(firing(r, key, 1, None, ts, ts, samples.take()));
        }
        return;
    }
    // One hash lookup whether the key is new or not. A new key is
    // the most recently used, so evicting after the step drops the
    // same keys as evicting before it.
    let (st, new) = rs.keys.get_or_insert(hash, key);
    step(&rs.rule, st, set, scratch, line, key, ts, out);
    if new {
        evict(rs);
    }
}

fn evict(rs: &mut RuleState) {
    // The cap bounds memory against floods of random keys; the least
    // recently seen key goes, and the metric says how often.
    while rs.keys.len() > rs.rule.max_keys {
        rs.keys.pop_lru();
        rs.evicted += 1;
        rs.evicted_unreported += 1;
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
        Detect::BurnRate(br) => {
            let error = scratch.eval(set, line, &br.error);
            let burn = st.burn.get_or_insert_with(Box::default);
            if error {
                // A fresh set of sample lines once the errors had stopped.
                if burn.recent_errors(br, ts) == 0 {
                    st.samples.clear();
                }
                st.samples.push(line.raw);
            }
            let Some(b) = burn.step(br, ts, error) else {
                return;
            };
            if ts < st.suppress_until {
                return;
            }
            let mut f = firing(
                r,
                key,
                b.errors,
                Some(b.burn),
                ts.saturating_sub(b.window),
                ts,
                st.samples.take(),
            );
            f.window = b.window as f64 / 1e9;
            out.push(f);
            st.suppress_until = ts.saturating_add(r.suppress);
        }
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
        .filter_map(|(f, v)| match f {
            // The index has no route: its literal start, as a path phrase.
            Field::Route => super::route::literal_prefix(v).map(|p| format!("path:{}", quote(p))),
            _ => Some(format!("{}:{}", f.name(), quote(v))),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, Format, ParseContext};

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_730_000_000 * S;

    fn specs(yaml: &str) -> Vec<RuleSpec> {
        super::super::load::parse_str(yaml, std::path::Path::new("test.yaml"))
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(|r| r.spec)
            .collect()
    }

    fn line(ip: &str, path: &str, status: u16) -> String {
        format!(
            "{ip} - - [10/Oct/2024:12:00:00 +0000] \"GET {path} HTTP/1.1\" {status} 10 \"-\" \"curl/8\""
        )
    }

    /// (line, seconds after T0)
    type Feed = Vec<(String, i64)>;

    fn feed(e: &mut Engine, lines: &Feed, out: &mut Vec<Firing>) {
        let ctx = ParseContext { now_nanos: T0 };
        for (l, secs) in lines {
            let ev = parse_line(l.as_bytes(), Format::Auto, &ctx).expect("line parses");
            e.evaluate(&ev, l, T0 + secs * S, "default", out);
        }
    }

    /// Feeds `before`, snapshots, restores into a fresh engine, feeds
    /// `after` (and ticks at `tick`) to the original and the restored
    /// engine: both must fire the same, and differently from an engine
    /// that only saw `after` (so the test shows that state was carried).
    fn round_trip(yaml: &str, before: Feed, after: Feed, tick: Option<i64>) -> Vec<Firing> {
        let specs = specs(yaml);
        let mut original = Engine::new(&specs).unwrap();
        let mut ignored = Vec::new();
        feed(&mut original, &before, &mut ignored);
        let mut e = Enc::default();
        original.encode_state(&mut e);
        let mut restored = Engine::new(&specs).unwrap();
        let carried = restored.restore_state(&e.buf).expect("state decodes");
        assert_eq!(carried.kept.len(), specs.len(), "{carried:?}");
        // The restored engine encodes to the same bytes, key order included
        // (only the order of a distinct set's hash map may differ).
        let mut again = Enc::default();
        restored.encode_state(&mut again);
        assert_eq!(again.buf.len(), e.buf.len());

        let run = |eng: &mut Engine| {
            let mut out = Vec::new();
            feed(eng, &after, &mut out);
            if let Some(t) = tick {
                eng.tick(T0 + t * S, &mut out);
            }
            out
        };
        let want = run(&mut original);
        let got = run(&mut restored);
        assert_eq!(got, want);
        let cold = run(&mut Engine::new(&specs).unwrap());
        assert_ne!(
            cold, want,
            "state made no difference: the test proves nothing"
        );
        want
    }

    fn fails(ip: &str, n: usize, from: i64) -> Feed {
        (0..n)
            .map(|i| (line(ip, "/login", 401), from + i as i64))
            .collect()
    }

    #[test]
    fn forgetting_a_tenant_drops_its_keys_and_no_other() {
        let specs = specs(
            "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 5}\n",
        );
        let mut e = Engine::new(&specs).unwrap();
        let ctx = ParseContext { now_nanos: T0 };
        let mut out = Vec::new();
        // "acme" is a prefix of "acme2": the separator keeps them apart.
        for tenant in ["acme", "acme2", "other"] {
            for (l, secs) in fails("1.2.3.4", 4, 0) {
                let ev = parse_line(l.as_bytes(), Format::Auto, &ctx).unwrap();
                e.evaluate(&ev, &l, T0 + secs * S, tenant, &mut out);
            }
        }
        assert_eq!(e.stats()[0].keys, 3);
        assert_eq!(e.forget_tenant("acme"), 1);
        assert!(e.take_ticked(), "a purge must reach the next snapshot");
        assert_eq!(e.forget_tenant("acme"), 0);
        // The purged tenant starts over; the others keep their counts.
        let fifth = |e: &mut Engine, tenant: &str| {
            let l = line("1.2.3.4", "/login", 401);
            let ev = parse_line(l.as_bytes(), Format::Auto, &ctx).unwrap();
            let mut out = Vec::new();
            e.evaluate(&ev, &l, T0 + 10 * S, tenant, &mut out);
            out.len()
        };
        assert_eq!(fifth(&mut e, "acme"), 0);
        assert_eq!(fifth(&mut e, "acme2"), 1);
        assert_eq!(fifth(&mut e, "other"), 1);
    }

    #[test]
    fn threshold_window_survives_a_snapshot() {
        let fired = round_trip(
            "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 5}\n",
            fails("1.2.3.4", 3, 0),
            fails("1.2.3.4", 2, 10),
            None,
        );
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].count, fired[0].first_ts), (5, T0));
    }

    #[test]
    fn distinct_values_survive_a_snapshot() {
        let paths = |ps: &[&str], from: i64| -> Feed {
            ps.iter()
                .enumerate()
                .map(|(i, p)| (line("9.9.9.9", p, 404), from + i as i64))
                .collect()
        };
        let fired = round_trip(
            "id: d\ntitle: d\nseverity: info\n\
             detect: {kind: distinct, key: client_ip, field: path, window: 5m, count: 4}\n",
            paths(&["/a", "/b"], 0),
            paths(&["/c", "/a", "/d"], 5),
            None,
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].count, 4);
    }

    #[test]
    fn ratio_numerator_and_volume_survive_a_snapshot() {
        let fired = round_trip(
            "id: r\ntitle: r\nseverity: info\n\
             detect:\n  kind: ratio\n  key: client_ip\n  window: 5m\n  ratio: 0.5\n  min_volume: 4\n  \
             numerator: {field: status, gte: 500}\n",
            vec![(line("5.5.5.5", "/", 500), 0), (line("5.5.5.5", "/", 502), 1)],
            vec![(line("5.5.5.5", "/", 503), 2), (line("5.5.5.5", "/", 200), 3)],
            None,
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].count, 3);
        assert_eq!(fired[0].value, Some(0.75));
    }

    #[test]
    fn sequence_first_steps_survive_a_snapshot() {
        let fired = round_trip(
            "id: s\ntitle: s\nseverity: critical\n\
             detect:\n  kind: sequence\n  key: client_ip\n  window: 5m\n  count: 3\n  \
             first: {field: status, equals: 401}\n  then: {field: status, equals: 200}\n",
            fails("7.7.7.7", 3, 0),
            vec![(line("7.7.7.7", "/login", 200), 30)],
            None,
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].count, 3);
    }

    #[test]
    fn new_value_memory_and_learning_start_survive_a_snapshot() {
        let fired = round_trip(
            "id: n\ntitle: n\nseverity: info\n\
             detect: {kind: new_value, key: client_ip, learning: 1m}\n",
            vec![(line("1.1.1.1", "/admin", 200), 0)],
            vec![
                (line("1.1.1.1", "/admin", 200), 120),
                (line("2.2.2.2", "/admin", 200), 121),
            ],
            None,
        );
        let keys: Vec<&str> = fired.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, vec!["2.2.2.2"], "the learned key must stay known");
    }

    #[test]
    fn spike_baseline_survives_a_snapshot() {
        let baseline: Feed = (0..6)
            .map(|b| (line("3.3.3.3", "/", 200), b * 10))
            .collect();
        let burst: Feed = (0..10)
            .map(|i| (line("3.3.3.3", "/", 200), 60 + i / 2))
            .collect();
        let fired = round_trip(
            "id: k\ntitle: k\nseverity: warning\n\
             detect: {kind: spike, key: client_ip, window: 10s, count: 5, warmup: 3, z: 3, alpha: 0.3}\n",
            baseline,
            burst,
            None,
        );
        assert_eq!(fired.len(), 1);
        assert!(fired[0].value.unwrap_or(0.0) >= 3.0, "{:?}", fired[0]);
    }

    #[test]
    fn flatline_last_seen_survives_a_snapshot() {
        let fired = round_trip(
            "id: f\ntitle: f\nseverity: critical\n\
             detect: {kind: flatline, key: client_ip, after: 1m}\n",
            vec![(line("4.4.4.4", "/", 200), 0)],
            vec![],
            Some(120),
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].key.as_str(), fired[0].last_ts),
            ("4.4.4.4", T0 + 120 * S)
        );
    }

    #[test]
    fn a_fired_flatline_stays_fired_after_a_snapshot_and_marks_the_tick() {
        let specs = specs(
            "id: f\ntitle: f\nseverity: critical\n\
             detect: {kind: flatline, key: client_ip, after: 1m}\n",
        );
        let mut a = Engine::new(&specs).unwrap();
        let mut out = Vec::new();
        feed(&mut a, &vec![(line("4.4.4.4", "/", 200), 0)], &mut out);
        a.tick(T0 + 30 * S, &mut out);
        assert!(!a.take_ticked(), "nothing fired, nothing to persist");
        a.tick(T0 + 120 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(a.take_ticked());
        assert!(!a.take_ticked());
        let mut e = Enc::default();
        a.encode_state(&mut e);
        let mut b = Engine::new(&specs).unwrap();
        b.restore_state(&e.buf).unwrap();
        b.tick(T0 + 300 * S, &mut out);
        assert_eq!(out.len(), 1, "the silence already paged before the restart");
    }

    #[test]
    fn match_suppression_survives_a_snapshot() {
        let fired = round_trip(
            "id: m\ntitle: m\nseverity: info\nmatch: {field: path, contains: etc/passwd}\n\
             detect: {kind: match, key: client_ip, window: 1h}\n",
            vec![(line("6.6.6.6", "/../../etc/passwd", 404), 0)],
            vec![
                (line("6.6.6.6", "/../../etc/passwd", 404), 10),
                (line("8.8.8.8", "/../../etc/passwd", 404), 11),
            ],
            None,
        );
        let keys: Vec<&str> = fired.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, vec!["8.8.8.8"], "the first key is still suppressed");
    }

    #[test]
    fn lru_order_survives_a_snapshot() {
        let yaml = "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 50, max_keys: 2}\n";
        let specs = specs(yaml);
        let mut a = Engine::new(&specs).unwrap();
        let mut out = Vec::new();
        // 1.1.1.1 is used last, so 2.2.2.2 is the least recent.
        let mut f = fails("2.2.2.2", 1, 0);
        f.extend(fails("1.1.1.1", 1, 1));
        feed(&mut a, &f, &mut out);
        let mut e = Enc::default();
        a.encode_state(&mut e);
        let mut b = Engine::new(&specs).unwrap();
        b.restore_state(&e.buf).unwrap();
        feed(&mut b, &fails("3.3.3.3", 1, 2), &mut out);
        let keys: Vec<String> = b.rules[0]
            .keys
            .iter_lru_first()
            .map(|(k, _)| k.to_string())
            .collect();
        assert!(keys.iter().all(|k| !k.ends_with("2.2.2.2")), "{keys:?}");
        assert_eq!(b.stats()[0].evicted, 1);
        assert_eq!(b.take_evicted(), 1);
        assert_eq!(b.take_evicted(), 0);
    }

    #[test]
    fn content_hash_decides_what_is_carried() {
        let base = "id: t\ntitle: T\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 5}\n";
        let retitled = base
            .replace("title: T", "title: Renamed")
            .replace("warning", "critical");
        let changed = base.replace("count: 5", "count: 6");
        let added = "id: other\ntitle: o\nseverity: info\ndetect: {kind: match}\n";
        let mut old = Engine::new(&specs(base)).unwrap();
        let mut out = Vec::new();
        feed(&mut old, &fails("1.2.3.4", 4, 0), &mut out);

        let mut same = Engine::new(&specs(&format!("{retitled}---\n{added}"))).unwrap();
        let c = same.adopt_state(&mut old);
        assert_eq!(
            (c.kept, c.fresh, c.dropped.len()),
            (vec!["t".to_string()], vec!["other".to_string()], 0)
        );
        feed(&mut same, &fails("1.2.3.4", 1, 10), &mut out);
        let t: Vec<&Firing> = out.iter().filter(|f| f.rule_id == "t").collect();
        assert_eq!(t.len(), 1, "4 + 1 reached 5");
        assert_eq!(
            t[0].severity,
            crate::detect::Severity::Critical,
            "new metadata applies"
        );

        let mut old = Engine::new(&specs(base)).unwrap();
        feed(&mut old, &fails("1.2.3.4", 4, 0), &mut out);
        let mut e = Enc::default();
        old.encode_state(&mut e);
        let mut fresh = Engine::new(&specs(&changed)).unwrap();
        let c = fresh.restore_state(&e.buf).unwrap();
        assert_eq!(
            (c.kept.len(), c.fresh, c.dropped),
            (0, vec!["t".to_string()], vec!["t".to_string()])
        );
        assert_eq!(fresh.stats()[0].keys, 0);
    }

    #[test]
    fn a_damaged_body_leaves_the_engine_untouched() {
        let yaml = "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 5}\n";
        let specs = specs(yaml);
        let mut a = Engine::new(&specs).unwrap();
        feed(&mut a, &fails("1.2.3.4", 3, 0), &mut Vec::new());
        let mut e = Enc::default();
        a.encode_state(&mut e);
        let mut b = Engine::new(&specs).unwrap();
        feed(&mut b, &fails("5.5.5.5", 1, 0), &mut Vec::new());
        let cut = &e.buf[..e.buf.len() - 5];
        assert!(b.restore_state(cut).is_err());
        assert_eq!(b.stats()[0].keys, 1, "nothing applied from a bad body");
    }

    #[test]
    fn the_configured_key_cap_applies_unless_a_rule_sets_its_own() {
        let yaml = "id: a\ntitle: a\nseverity: info\ndetect: {kind: threshold, key: client_ip, window: 1m, count: 99}\n\
             ---\nid: b\ntitle: b\nseverity: info\ndetect: {kind: threshold, key: client_ip, window: 1m, count: 99, max_keys: 5}\n";
        let mut e = Engine::with_options(
            &specs(yaml),
            EngineOptions {
                max_keys_per_rule: 2,
            },
        )
        .unwrap();
        let mut f = Feed::new();
        for i in 0..4 {
            f.extend(fails(&format!("10.0.0.{i}"), 1, i));
        }
        feed(&mut e, &f, &mut Vec::new());
        let mut st = e.stats();
        st.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!((st[0].keys, st[0].evicted), (2, 2));
        assert_eq!((st[1].keys, st[1].evicted), (4, 0));
        assert_eq!(e.take_evicted(), 2);
    }
}
