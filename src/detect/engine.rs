//! The streaming engine: every rule on every line, state per key.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::compile::{order, quote, Builder, CompileError};
use super::field::{Field, LineRef};
use super::firing::Firing;
use super::keymap::{hash_key, Doorkeeper, Hint, KeyMap};
use super::kind::burn_rate::{self, BurnState};
use super::kind::pattern_key::{self, PatternKey};
use super::kind::spike::{self, OpenBuckets, MAX_OPEN_BUCKETS};
use super::kind::{
    compile_rule, flatline, match_, CompiledRule, Detect, Hit, KeyState, SourceRef,
    DEFAULT_MAX_KEYS,
};
use super::matcher::{Expr, MatchSet, Scratch};
use super::rule::{DetectKind, RuleSpec};
use super::snapshot::{Dec, DecodeError, Enc};
use super::window::{Samples, Sliding};
use crate::parse::Event;

/// Separates the tenant and the key's values inside state keys.
const SEP: char = '\u{1f}';
/// Ends a key's state key and starts its source's, in the state key of a
/// side window ([`late`]).
const SIDE: char = '\u{1e}';
/// Sources whose progress is kept ([`Sources`]); beyond, the half least
/// recently heard from are forgotten.
const MAX_SOURCES: usize = 65_536;

/// The snapshot codec of a key's state.
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
        e.i64(self.clock);
        e.i64(self.then_ts);
        e.u32(self.src.index);
        e.u32(self.src.gen);
        match &self.open {
            None => e.bool(false),
            Some(o) => {
                e.bool(true);
                e.f64(o.base.0);
                e.f64(o.base.1);
                e.u32(o.base.2);
                e.i64(o.from);
                e.u64(o.buckets.len() as u64);
                for &(bucket, count) in &o.buckets {
                    e.i64(bucket);
                    e.u64(count);
                }
            }
        }
        e.bool(self.burn.is_some());
        if let Some(b) = &self.burn {
            b.encode(e);
        }
        e.bool(self.pat.is_some());
        if let Some(p) = &self.pat {
            p.encode(e);
        }
    }

    /// `version` 1 (before per-key clocks) lacks the fields after `fired`;
    /// the key's clock is then its newest line in the other fields.
    /// Version 2 lacks the burn_rate rings.
    fn decode(d: &mut Dec<'_>, version: u32) -> Result<KeyState, DecodeError> {
        let a = Sliding::decode(d, version)?;
        let b = Sliding::decode(d, version)?;
        let samples = Samples::decode(d)?;
        let suppress_until = d.i64()?;
        let n = d.len()?;
        let mut distinct = HashMap::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            distinct.insert(d.u64()?, d.i64()?);
        }
        let mut st = KeyState {
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
            ..KeyState::default()
        };
        if version < 2 {
            let newest_value = st.distinct.values().copied().max().unwrap_or(i64::MIN);
            st.clock = [st.a.last_ts, st.b.last_ts, st.last_seen, newest_value]
                .into_iter()
                .max()
                .unwrap_or(0);
            return Ok(st);
        }
        st.clock = d.i64()?;
        st.then_ts = d.i64()?;
        st.src = SourceRef {
            index: d.u32()?,
            gen: d.u32()?,
        };
        if version < 4 {
            st.open = decode_open_v2(d)?;
        } else if d.bool()? {
            let base = (d.f64()?, d.f64()?, d.u32()?);
            let from = d.i64()?;
            let buckets = decode_open_buckets(d)?;
            st.open = Some(Box::new(OpenBuckets {
                base,
                from,
                buckets,
            }));
        }
        if version >= 3 && d.bool()? {
            st.burn = Some(Box::new(BurnState::decode(d)?));
        }
        if version >= 5 && d.bool()? {
            st.pat = Some(Box::new(PatternKey::decode(d)?));
        }
        Ok(st)
    }
}

/// Versions 2 and 3 kept a spike key's open buckets as a plain list
/// followed by the baseline before them; the first listed bucket is where
/// the open range starts.
fn decode_open_v2(d: &mut Dec<'_>) -> Result<Option<Box<OpenBuckets>>, DecodeError> {
    let buckets = decode_open_buckets(d)?;
    let base = (d.f64()?, d.f64()?, d.u32()?);
    Ok(buckets.first().map(|&(from, _)| from).map(|from| {
        Box::new(OpenBuckets {
            base,
            from,
            buckets,
        })
    }))
}

/// A spike key's open buckets as every snapshot version lists them.
fn decode_open_buckets(d: &mut Dec<'_>) -> Result<Vec<(i64, u64)>, DecodeError> {
    let n = d.len()?;
    if n as i64 > MAX_OPEN_BUCKETS {
        return Err(DecodeError(format!("{n} open spike buckets")));
    }
    let mut buckets = Vec::with_capacity(n);
    for _ in 0..n {
        buckets.push((d.i64()?, d.u64()?));
    }
    Ok(buckets)
}

/// Progress per source (tenant + agent + file, or whatever the caller
/// names in [`Engine::set_origin`]): its newest line, event time, and when
/// that line arrived. A source behind the others (buffered logs, an agent
/// draining its spool) has its own clock, `newest + (now - arrival)`: a
/// flatline key is silent by that clock, not by the wall clock, so a
/// source catching up does not look silent, and an idle source's clock
/// goes on with the wall clock (Flink's idleness). Bounded: beyond
/// [`MAX_SOURCES`], the half heard from least recently are forgotten.
#[derive(Default)]
struct Sources {
    index: HashMap<u64, u32>,
    /// (hash, newest line, its arrival, generation); hash 0: free.
    clocks: Vec<(u64, i64, i64, u32)>,
    free: Vec<u32>,
    /// The source of the lines being evaluated, and its short name in
    /// side windows' state keys.
    current: SourceRef,
    current_hash: u64,
    name: String,
    /// When the current lines arrived; `None` offline: at their own time.
    arrival: Option<i64>,
    /// Scratch for side windows' state keys.
    side: String,
}

impl Sources {
    fn set(&mut self, hash: u64, arrival: Option<i64>) {
        // 0 marks a free slot.
        let hash = hash.max(1);
        self.arrival = arrival;
        if hash == self.current_hash && !self.clocks.is_empty() {
            return;
        }
        self.current_hash = hash;
        self.name.clear();
        let _ = write!(self.name, "{hash:016x}");
        if let Some(&i) = self.index.get(&hash) {
            self.current = SourceRef {
                index: i,
                gen: self.clocks[i as usize].3,
            };
            return;
        }
        if self.index.len() >= MAX_SOURCES {
            self.forget_oldest_half();
        }
        let i = match self.free.pop() {
            Some(i) => {
                let c = &mut self.clocks[i as usize];
                *c = (hash, i64::MIN, i64::MIN, c.3.wrapping_add(1));
                i
            }
            None => {
                self.clocks.push((hash, i64::MIN, i64::MIN, 0));
                (self.clocks.len() - 1) as u32
            }
        };
        self.index.insert(hash, i);
        self.current = SourceRef {
            index: i,
            gen: self.clocks[i as usize].3,
        };
    }

    #[cold]
    fn forget_oldest_half(&mut self) {
        let mut arrivals: Vec<i64> = self
            .clocks
            .iter()
            .filter(|c| c.0 != 0)
            .map(|c| c.2)
            .collect();
        let mid = arrivals.len() / 2;
        let (_, &mut cut, _) = arrivals.select_nth_unstable(mid);
        for (i, c) in self.clocks.iter_mut().enumerate() {
            if c.0 != 0 && c.2 <= cut && self.index.len() > mid {
                self.index.remove(&c.0);
                c.0 = 0;
                self.free.push(i as u32);
            }
        }
    }

    /// A line at `ts` from the current source.
    #[inline]
    fn saw(&mut self, ts: i64) {
        let arrival = self.arrival.unwrap_or(ts);
        if let Some(c) = self.clocks.get_mut(self.current.index as usize) {
            if ts >= c.1 {
                c.1 = ts;
                c.2 = arrival;
            }
        }
    }

    /// `now` (wall clock live, event time offline) on `src`'s clock: its
    /// newest line plus the time since it arrived. `now` for a source
    /// forgotten or never heard from.
    fn now_of(&self, src: SourceRef, now: i64) -> i64 {
        match self.clocks.get(src.index as usize) {
            Some(&(h, newest, arrival, gen)) if h != 0 && gen == src.gen && newest != i64::MIN => {
                newest
                    .saturating_add(now.saturating_sub(arrival).max(0))
                    .min(now)
            }
            _ => now,
        }
    }

    fn encode(&self, e: &mut Enc) {
        e.u64(self.clocks.len() as u64);
        for &(hash, newest, arrival, gen) in &self.clocks {
            e.u64(hash);
            e.i64(newest);
            e.i64(arrival);
            e.u32(gen);
        }
    }

    fn decode(d: &mut Dec<'_>) -> Result<Sources, DecodeError> {
        let n = d.len()?;
        if n > MAX_SOURCES {
            return Err(DecodeError(format!("{n} sources")));
        }
        let mut s = Sources::default();
        for i in 0..n {
            let c = (d.u64()?, d.i64()?, d.i64()?, d.u32()?);
            if c.0 == 0 {
                s.free.push(i as u32);
            } else if s.index.insert(c.0, i as u32).is_some() {
                return Err(DecodeError(format!("source {:016x} twice", c.0)));
            }
            s.clocks.push(c);
        }
        Ok(s)
    }

    /// How many sources are more than `behind` behind their arrival, and
    /// the largest lag (nanos).
    fn behind(&self, behind: i64, since: i64) -> (usize, i64) {
        self.clocks
            .iter()
            .filter(|c| c.0 != 0 && c.1 != i64::MIN && c.2 >= since)
            .map(|c| c.2.saturating_sub(c.1))
            .filter(|&lag| lag > behind)
            .fold((0, 0), |(n, max), lag| (n + 1, max.max(lag)))
    }
}

/// A rule's state as read from a snapshot, before it is matched to a rule.
struct SavedRule {
    hash: RuleHash,
    id: String,
    started: Option<i64>,
    evicted: u64,
    too_late: u64,
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
    /// At the key cap, for rules whose keys need several lines to fire.
    doorkeeper: Option<Doorkeeper>,
    started: Option<i64>,
    evicted: u64,
    /// Evictions not yet handed to the metrics ([`Engine::take_evicted`]).
    evicted_unreported: u64,
    /// Lines too old for every window they could count in ([`late`]).
    too_late: u64,
    too_late_unreported: u64,
}

/// The tenant of a state key: everything before the first separator (an
/// unkeyed rule's key is the tenant alone, a side window's adds its source).
fn state_key_tenant(key: &str) -> &str {
    key.split([SEP, SIDE]).next().unwrap_or_default()
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
            max_keys_per_rule: DEFAULT_MAX_KEYS,
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
    /// Lines too old for every window they could count in: older than
    /// their key's window and grace, and than their own source's side
    /// window for that key (see [`late`]). Stateless rules saw them.
    pub too_late: u64,
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
    /// This line's rules whose filter passed, and where their key's slot
    /// was found.
    passing: Vec<(u32, Hint)>,
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

/// Where the state of rules keyed across sources lives on a scale-out
/// cluster (docs/kafka.md, "Rules keyed across sources"). A line shard
/// holds only the lines of its sources, so a rule keyed by something
/// several sources share (a client IP behind a load balancer) is evaluated
/// by one owner per key instead: the shard runs the rule's filter and
/// names the owner partition of each passing line's key, and that owner
/// keeps the key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Every rule keeps its own state here (the embedded collector, and
    /// every offline use).
    #[default]
    Local,
    /// A line shard: rules keyed by `source` keep their state here; the
    /// others only report the owner partition of a passing line
    /// ([`Engine::take_routes`]), out of `partitions`.
    Forward { partitions: u32 },
    /// The owner of partition `mine` of `partitions`: only rules routed by
    /// the shards, and only keys owned here.
    Own { partitions: u32, mine: u32 },
}

/// Whether a rule's key is held by one source, so that every line of a
/// key is in one partition of the lines topic (partitioned by source).
fn source_bound(r: &CompiledRule) -> bool {
    r.key.contains(&Field::Source)
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
    sources: Sources,
    routing: Routing,
    /// Per rule: kept by an owner rather than by this shard ([`Routing`]).
    routed: Vec<bool>,
    /// Owner partitions of the last line's routed rules, distinct.
    routes: Vec<u32>,
    /// Rule ids kept local even though keyed across sources.
    kept_local: Vec<String>,
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
            let mut r = compile_rule(&mut b, s).map_err(|e| (s.id.clone(), e))?;
            if s.detect.max_keys.is_none() {
                r.max_keys = options.max_keys_per_rule.max(1);
                // A key of the pattern kinds holds a miner (up to 2,000
                // patterns): keys are logs, not clients.
                if matches!(r.detect, Detect::NewPattern(_) | Detect::PatternSpike(_)) {
                    r.max_keys = r.max_keys.min(pattern_key::MAX_KEYS);
                }
            }
            rules.push((r, content_hash(s)));
        }
        let set = b.finish().map_err(|e| (String::new(), e))?;
        Ok(Engine::from_compiled(set, rules))
    }

    fn from_compiled(mut set: MatchSet, mut rules: Vec<(CompiledRule, RuleHash)>) -> Engine {
        for (r, _) in rules.iter_mut() {
            order(&set, &mut r.matcher);
            set.intern(&mut r.matcher);
            r.required |= set.required(&r.matcher);
            match &mut r.detect {
                Detect::Ratio(p) => {
                    order(&set, &mut p.numerator);
                    set.intern(&mut p.numerator);
                }
                Detect::Sequence(p) => {
                    order(&set, &mut p.first);
                    order(&set, &mut p.then);
                    set.intern(&mut p.first);
                    set.intern(&mut p.then);
                }
                Detect::Distinct(p) => r.required |= p.field.iter().fold(0, |m, f| m | f.bit()),
                Detect::BurnRate(br) => {
                    order(&set, &mut br.error);
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
                    doorkeeper: admits_on_second_sight(&rule)
                        .then(|| Doorkeeper::new(rule.max_keys)),
                    rule,
                    keys: KeyMap::default(),
                    started: None,
                    evicted: 0,
                    evicted_unreported: 0,
                    too_late: 0,
                    too_late_unreported: 0,
                })
                .collect(),
            key_slots,
            gen: 0,
            ticked: false,
            sources: Sources::default(),
            routing: Routing::Local,
            routed: Vec::new(),
            routes: Vec::new(),
            kept_local: Vec::new(),
        }
    }

    /// Rules (by id) evaluated where their lines are read even under a
    /// routing ([`Routing`]): per partition, their lines not sent twice.
    /// Takes effect at the next [`Engine::set_routing`].
    pub fn keep_local(&mut self, ids: &[String]) {
        self.kept_local = ids.to_vec();
    }

    /// Sets where rules keyed across sources keep their state (scale-out;
    /// the default is [`Routing::Local`]). Returns how many rules are
    /// routed to an owner.
    pub fn set_routing(&mut self, routing: Routing) -> usize {
        let partitions = match routing {
            Routing::Local => 0,
            Routing::Forward { partitions } | Routing::Own { partitions, .. } => partitions,
        };
        self.routing = if partitions == 0 {
            Routing::Local
        } else {
            routing
        };
        self.routed = self
            .rules
            .iter()
            .map(|rs| {
                self.routing != Routing::Local
                    && !source_bound(&rs.rule)
                    && !self.kept_local.contains(&rs.rule.id)
            })
            .collect();
        self.routes.clear();
        self.routed.iter().filter(|&&r| r).count()
    }

    /// Rules that keep their state in this engine: all of them but those
    /// routed to an owner ([`Engine::set_routing`]).
    pub fn local_rules(&self) -> usize {
        self.rules.len() - self.routed.iter().filter(|&&r| r).count()
    }

    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// The owner partitions of the last evaluated line's routed rules
    /// ([`Routing::Forward`]), each once.
    pub fn routes(&self) -> &[u32] {
        &self.routes
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
                too_late: r.too_late,
            })
            .collect()
    }

    /// Where the next lines come from: a source (e.g. tenant, agent and
    /// file), and when they arrived (unix nanos; `None` offline, where a
    /// line arrives at its own time). Sources keep their own progress, so
    /// one behind the others is judged by its own clock (flatline), and
    /// its lines too old for a key's shared windows are evaluated in a
    /// window of their own ([`late`]). Lines evaluated before any call
    /// belong to one unnamed source.
    pub fn set_origin(&mut self, source: &[&str], arrival: Option<i64>) {
        let buf = &mut self.sources.side;
        buf.clear();
        for part in source {
            buf.push_str(part);
            buf.push(SEP);
        }
        let hash = hash_key(buf);
        self.sources.set(hash, arrival);
    }

    /// Sources heard from since `since` (unix nanos) more than `behind`
    /// nanos behind (their newest line's event time before its arrival),
    /// and the largest lag.
    pub fn sources_behind(&self, behind: i64, since: i64) -> (usize, i64) {
        self.sources.behind(behind, since)
    }

    /// Per rule, lines found too late since the last call (for a counter
    /// labelled by rule); rules with none are left out.
    pub fn take_too_late(&mut self) -> Vec<(String, u64)> {
        self.rules
            .iter_mut()
            .filter(|r| r.too_late_unreported > 0)
            .map(|r| {
                (
                    r.rule.id.clone(),
                    std::mem::take(&mut r.too_late_unreported),
                )
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
                    rs.started = prev.started;
                    rs.evicted = prev.evicted;
                    rs.too_late = prev.too_late;
                    rs.evicted_unreported = std::mem::take(&mut prev.evicted_unreported);
                    rs.too_late_unreported = std::mem::take(&mut prev.too_late_unreported);
                    evict(rs);
                    carried.kept.push(rs.rule.id.clone());
                }
                None => carried.fresh.push(rs.rule.id.clone()),
            }
        }
        carried.dropped = by_hash.into_values().map(|r| r.rule.id.clone()).collect();
        carried.dropped.sort();
        // Flatline keys point into the source table.
        std::mem::swap(&mut self.sources, &mut old.sources);
        self.kept_local = std::mem::take(&mut old.kept_local);
        self.set_routing(old.routing);
        carried
    }

    /// Appends every rule's state to `e` (see [`Engine::restore_state`]).
    pub fn encode_state(&self, e: &mut Enc) {
        e.u64(self.rules.len() as u64);
        for rs in &self.rules {
            e.bytes(&rs.hash);
            e.str(&rs.rule.id);
            e.opt_i64(rs.started);
            e.u64(rs.evicted);
            e.u64(rs.too_late);
            e.u64(rs.keys.len() as u64);
            // Least recently used first, so pushing them back in this
            // order restores the eviction order too.
            for (key, st) in rs.keys.iter_lru_first() {
                e.str(key);
                st.encode(e);
            }
        }
        self.sources.encode(e);
    }

    /// Loads state written by [`Engine::encode_state`] (possibly by another
    /// rule set) into the rules with the same content hash. The whole body
    /// is decoded before anything is applied, so a bad body leaves the
    /// engine as it was.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<Carried, DecodeError> {
        self.restore_state_version(bytes, super::snapshot::VERSION)
    }

    /// [`Engine::restore_state`] of a body written by snapshot format
    /// `version` (1: one watermark per rule, no per-key clocks or source
    /// table; its keys get their clock from their newest line).
    pub fn restore_state_version(
        &mut self,
        bytes: &[u8],
        version: u32,
    ) -> Result<Carried, DecodeError> {
        let mut d = Dec::new(bytes);
        let n = d.len()?;
        let mut saved: Vec<SavedRule> = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let hash: RuleHash = d
                .bytes()?
                .try_into()
                .map_err(|_| DecodeError("rule hash is not 32 bytes".into()))?;
            let id = d.str()?.to_string();
            if version < 2 {
                let _watermark = d.i64()?;
            }
            let started = d.opt_i64()?;
            let evicted = d.u64()?;
            let too_late = d.u64()?;
            let count = d.len()?;
            let mut keys = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let key = d.str()?.to_string();
                keys.push((key, KeyState::decode(&mut d, version)?));
            }
            saved.push(SavedRule {
                hash,
                id,
                started,
                evicted,
                too_late,
                keys,
            });
        }
        let sources = if version >= 2 {
            Sources::decode(&mut d)?
        } else {
            Sources::default()
        };
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
            rs.started = prev.started;
            rs.evicted = prev.evicted;
            rs.too_late = prev.too_late;
            evict(rs);
            carried.kept.push(rs.rule.id.clone());
        }
        carried.dropped = by_hash.into_values().map(|r| r.id).collect();
        carried.dropped.sort();
        self.sources = sources;
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
            sources,
            routing,
            routed,
            routes,
            ..
        } = self;
        *gen += 1;
        routes.clear();
        sources.saw(ts);
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
                let hint = rs.keys.prefetch(slot.hash);
                gates.passing.push((r as u32, hint));
            }
        }
        for &(r, hint) in &gates.passing {
            let rs = &mut rules[r as usize];
            let slot = &key_slots[rs.key_slot];
            match *routing {
                Routing::Local => {}
                Routing::Forward { partitions } => {
                    if routed[r as usize] {
                        let owner = (slot.hash % u64::from(partitions)) as u32;
                        if !routes.contains(&owner) {
                            routes.push(owner);
                        }
                        continue;
                    }
                }
                Routing::Own { partitions, mine } => {
                    // The shards ran the other rules, and other owners
                    // hold the other keys.
                    if !routed[r as usize] || (slot.hash % u64::from(partitions)) as u32 != mine {
                        continue;
                    }
                }
            }
            update_rule(
                set, scratch, rs, &slot.buf, slot.hash, hint, &line, ts, sources, out,
            );
        }
    }

    /// Advances time to `now` (unix nanos, event time offline, wall clock
    /// live): fires flatline rules whose keys have been silent too long.
    /// A key is silent by its source's clock ([`Sources`]): a source
    /// catching up on a backlog is not silent, an idle one is.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Firing>) {
        for rs in self.rules.iter_mut() {
            let Detect::Flatline(fl) = &rs.rule.detect else {
                continue;
            };
            let ticked = &mut self.ticked;
            let rule = &rs.rule;
            let sources = &self.sources;
            rs.keys.for_each_mru_first(|key, st| {
                if let Some(hit) = fl.tick(st, sources.now_of(st.src, now)) {
                    *ticked = true;
                    out.push(firing(rule, key, hit));
                }
            });
        }
    }
}

/// One rule on one line that passed its filter: its state under `key`.
/// `hint`: the key's [`KeyMap::prefetch`] of this line (the rule's keys
/// have not changed since).
#[allow(clippy::too_many_arguments)]
fn update_rule(
    set: &MatchSet,
    scratch: &mut Scratch,
    rs: &mut RuleState,
    key: &str,
    hash: u64,
    hint: Hint,
    line: &LineRef<'_, '_>,
    ts: i64,
    sources: &mut Sources,
    out: &mut Vec<Firing>,
) {
    let r = &rs.rule;
    if r.kind == DetectKind::NewValue {
        let started = *rs.started.get_or_insert(ts);
        if !rs.keys.get_or_insert_hinted(hash, key, hint).1 {
            return;
        }
        evict(rs);
        let r = &rs.rule;
        if let Detect::NewValue(nv) = &r.detect {
            if let Some(hit) = nv.new_key(started, line.raw, ts) {
                out.push(firing(r, key, hit));
            }
        }
        return;
    }
    if hint.absent() && rs.keys.len() >= r.max_keys {
        if let Some(door) = &mut rs.doorkeeper {
            if !door.admit(hash) {
                // Counted as an eviction: a key's line whose state the cap
                // did not keep.
                count_evicted(rs);
                return;
            }
        }
    }
    // One hash lookup whether the key is new or not. A new key is
    // the most recently used, so evicting after the step drops the
    // same keys as evicting before it.
    let (st, new) = rs.keys.get_or_insert_hinted(hash, key, hint);
    if ts >= st.clock || new {
        st.clock = ts;
        if rs.rule.kind == DetectKind::Flatline {
            st.src = sources.current;
        }
        step(&rs.rule, st, set, scratch, line, key, ts, out);
    } else {
        late(set, scratch, rs, key, hash, line, ts, sources, out);
    }
    if new {
        evict(rs);
    }
}

/// Whether a line at `ts` is too old for every window of `st`'s key that
/// could still count it: older than the window plus the rule's grace
/// before the key's newest line (spike: than the buckets kept open).
/// Stateless kinds take every line.
fn too_old(r: &CompiledRule, st: &KeyState, ts: i64) -> bool {
    match r.detect {
        Detect::Threshold(_) | Detect::Distinct(_) | Detect::Ratio(_) | Detect::Sequence(_) => {
            r.span().too_old(st, ts)
        }
        Detect::Spike(_) => spike::too_old(r.span(), st, ts),
        // burn_rate's rings place a late line in every window it still
        // falls in and drop what is older than the ring themselves.
        // A pattern is new in any order; a pattern's spike bucket drops
        // lines older than itself.
        Detect::Match
        | Detect::NewValue(_)
        | Detect::Flatline(_)
        | Detect::BurnRate(_)
        | Detect::NewPattern(_)
        | Detect::PatternSpike(_) => false,
    }
}

/// A line older than its key's newest (its source is behind another one
/// feeding the key, or the source itself is out of order). It counts in
/// the key's windows that contain it, up to the grace. Older still, the
/// windows it belonged to are gone; it is then evaluated in a side
/// window: the same key as seen by the line's source alone, in that
/// source's own time (state key `key SIDE source`, bounded by the key cap
/// like any key). Only a line too old for that side window too is left
/// out, and counted: stateless rules saw it anyway.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn late(
    set: &MatchSet,
    scratch: &mut Scratch,
    rs: &mut RuleState,
    key: &str,
    hash: u64,
    line: &LineRef<'_, '_>,
    ts: i64,
    sources: &mut Sources,
    out: &mut Vec<Firing>,
) {
    let (st, _) = rs.keys.get_or_insert(hash, key);
    if !too_old(&rs.rule, st, ts) {
        step_late(&rs.rule, st, set, scratch, line, key, ts, out);
        return;
    }
    let side = &mut sources.side;
    side.clear();
    side.push_str(key);
    side.push(SIDE);
    side.push_str(&sources.name);
    let (st, new) = rs.keys.get_or_insert(hash_key(side), side);
    if ts >= st.clock || new {
        st.clock = ts;
        step(&rs.rule, st, set, scratch, line, side, ts, out);
    } else if !too_old(&rs.rule, st, ts) {
        step_late(&rs.rule, st, set, scratch, line, side, ts, out);
    } else {
        rs.too_late += 1;
        rs.too_late_unreported += 1;
    }
    if new {
        evict(rs);
    }
}

/// Rules whose key needs more than one line to fire: at the cap, a new
/// key's first line is not worth a tracked key's state ([`Doorkeeper`]).
fn admits_on_second_sight(rule: &CompiledRule) -> bool {
    matches!(&rule.detect, Detect::BurnRate(br) if br.min_requests >= 2)
}

fn evict(rs: &mut RuleState) {
    // The cap bounds memory against floods of random keys; the least
    // recently seen key goes, and the metric says how often.
    while rs.keys.len() > rs.rule.max_keys {
        rs.keys.evict_lru();
        count_evicted(rs);
    }
}

fn count_evicted(rs: &mut RuleState) {
    rs.evicted += 1;
    rs.evicted_unreported += 1;
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
    let s = r.span();
    let hit = match &r.detect {
        Detect::Match => match_::step(s, st, line.raw, ts),
        Detect::Threshold(p) => p.step(s, st, line, ts),
        Detect::Distinct(p) => p.step(s, st, scratch, line, ts),
        Detect::Ratio(p) => p.step(s, st, set, scratch, line, ts),
        Detect::Sequence(p) => p.step(s, st, set, scratch, line, ts),
        Detect::Spike(p) => p.step(s, st, line.raw, ts),
        Detect::Flatline(_) => {
            flatline::step(st, line.raw, ts);
            None
        }
        Detect::NewValue(_) => None,
        Detect::BurnRate(br) => burn_rate::step(br, s, st, set, scratch, line, ts),
        Detect::NewPattern(p) => p.step(st, line, ts),
        Detect::PatternSpike(p) => p.step(s, st, line, ts),
    };
    if let Some(hit) = hit {
        out.push(firing(r, key, hit));
    }
}

/// [`step`] for a line older than its key's newest one, within the reach
/// of the key's windows ([`too_old`] is false): it counts where it
/// belongs in event time, and fires if it completes any window that
/// contains it, as it would have in time order.
#[allow(clippy::too_many_arguments)]
fn step_late(
    r: &CompiledRule,
    st: &mut KeyState,
    set: &MatchSet,
    scratch: &mut Scratch,
    line: &LineRef<'_, '_>,
    key: &str,
    ts: i64,
    out: &mut Vec<Firing>,
) {
    let s = r.span();
    let hit = match &r.detect {
        Detect::Match => match_::step_late(s, st, line.raw, ts),
        Detect::Threshold(p) => p.step_late(s, st, line, ts),
        Detect::Distinct(p) => p.step_late(s, st, scratch, line, ts),
        Detect::Ratio(p) => p.step_late(s, st, set, scratch, line, ts),
        Detect::Sequence(p) => p.step_late(s, st, set, scratch, line, ts),
        Detect::Spike(p) => p.step_late(s, st, line.raw, ts),
        Detect::BurnRate(br) => burn_rate::step(br, s, st, set, scratch, line, ts),
        Detect::NewPattern(p) => p.step(st, line, ts),
        Detect::PatternSpike(p) => p.step(s, st, line, ts),
        // Its last line is newer; a late one says nothing about silence.
        Detect::Flatline(_) | Detect::NewValue(_) => None,
    };
    if let Some(hit) = hit {
        out.push(firing(r, key, hit));
    }
}

/// The firing of `r` for the key of `state_key`.
fn firing(r: &CompiledRule, state_key: &str, hit: Hit) -> Firing {
    // A side window fires for its key.
    let state_key = state_key.split(SIDE).next().unwrap_or(state_key);
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
        // Joined to the key's terms by AND: an evidence with an OR of its
        // own is grouped, or the key would bind to its first branch only.
        terms.push(if r.evidence.contains(" OR ") {
            format!("({})", r.evidence)
        } else {
            r.evidence.clone()
        });
    }
    let mut key = values.join("|");
    let mut labels = r.labels.clone();
    if let Some(p) = hit.pattern {
        // One alert per pattern of the key, and the evidence is the
        // pattern's lines (as the index names them).
        let (id, template) = *p;
        let id = crate::patterns::PatternId(id).to_string();
        terms.push(format!("pattern:{id}"));
        if !key.is_empty() {
            key.push('|');
        }
        key.push_str(&id);
        labels.insert("pattern".into(), id);
        labels.insert("pattern_template".into(), template);
    }
    Firing {
        rule_id: r.id.clone(),
        title: r.title.clone(),
        severity: r.severity,
        tenant,
        key,
        count: hit.count,
        value: hit.value,
        window: hit.window.unwrap_or(r.window) as f64 / 1e9,
        first_ts: hit.first_ts,
        last_ts: hit.last_ts,
        sample_lines: hit.samples,
        labels,
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

    #[test]
    fn an_empty_equals_is_refused_with_what_to_write_instead() {
        let yaml = "id: empty-ua\ntitle: t\nseverity: info\n\
                    match: {field: user_agent, equals: \"\"}\ndetect: {kind: match}\n";
        let errors = super::super::load::parse_str(yaml, std::path::Path::new("test.yaml"))
            .expect_err("an empty equals is refused");
        let message = format!("{errors:?}");
        assert!(
            message.contains("empty-ua") && message.contains("use exists: false"),
            "{message}"
        );
    }

    /// Two line shards each see half of a key's lines; neither alone
    /// crosses the threshold. Routed to the owners of the key's partition,
    /// the lines fire once, on one owner; a rule keyed by source stays
    /// with the shards.
    #[test]
    fn routed_rules_meet_at_one_owner_and_source_rules_stay_local() {
        let specs = specs(
            "id: brute\ntitle: t\nseverity: warning\nmatch: {field: status, equals: [401]}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 4}\n---\n\
             id: per-source\ntitle: t\nseverity: warning\nmatch: {field: status, equals: [401]}\n\
             detect: {kind: threshold, key: source, window: 5m, count: 2}\n",
        );
        let n = 3;
        let mut shards: Vec<Engine> = (0..2).map(|_| Engine::new(&specs).unwrap()).collect();
        for shard in &mut shards {
            assert_eq!(shard.local_rules(), 2);
            assert_eq!(shard.set_routing(Routing::Forward { partitions: n }), 1);
            // The rule keyed by source keeps its state in the shard.
            assert_eq!(shard.local_rules(), 1);
        }
        let mut owners: Vec<Engine> = (0..n)
            .map(|mine| {
                let mut e = Engine::new(&specs).unwrap();
                e.set_routing(Routing::Own {
                    partitions: n,
                    mine,
                });
                e
            })
            .collect();
        let ctx = ParseContext { now_nanos: T0 };
        let (mut local, mut owned) = (Vec::new(), Vec::new());
        let mut targets = Vec::new();
        for i in 0..6i64 {
            let l = line("203.0.113.9", "/login", 401);
            let ev = parse_line(l.as_bytes(), Format::Auto, &ctx).expect("line parses");
            let shard = &mut shards[(i % 2) as usize];
            shard.evaluate_source(&ev, &l, "web.log", T0 + i * S, "default", &mut local);
            assert_eq!(shard.routes().len(), 1, "one key, one owner");
            let owner = shard.routes()[0];
            targets.push(owner);
            for e in owners.iter_mut() {
                // Every owner may see the line; only the key's owner counts it.
                e.evaluate_source(&ev, &l, "web.log", T0 + i * S, "default", &mut owned);
            }
        }
        assert!(targets.windows(2).all(|w| w[0] == w[1]), "{targets:?}");
        assert!(local.iter().all(|f| f.rule_id == "per-source"), "{local:?}");
        assert_eq!(
            local.len(),
            2,
            "each shard's source fires on its own: {local:?}"
        );
        assert_eq!(owned.len(), 1, "{owned:?}");
        assert_eq!(owned[0].rule_id, "brute");
        assert_eq!(owned[0].key, "203.0.113.9");
        // A local engine (the embedded collector) routes nothing.
        let mut embedded = Engine::new(&specs).unwrap();
        let l = line("203.0.113.9", "/login", 401);
        let ev = parse_line(l.as_bytes(), Format::Auto, &ctx).expect("line parses");
        embedded.evaluate_source(&ev, &l, "web.log", T0, "default", &mut Vec::new());
        assert!(embedded.routes().is_empty());
        // A rule kept local is evaluated by the shard, not routed.
        let mut kept = Engine::new(&specs).unwrap();
        kept.keep_local(&["brute".to_string()]);
        assert_eq!(kept.set_routing(Routing::Forward { partitions: n }), 0);
        assert_eq!(kept.local_rules(), 2);
        let mut fired = Vec::new();
        for i in 0..4 {
            kept.evaluate_source(&ev, &l, "web.log", T0 + i * S, "default", &mut fired);
            assert!(kept.routes().is_empty());
        }
        assert!(fired.iter().any(|f| f.rule_id == "brute"), "{fired:?}");
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

    /// An RFC 5424 line of app `app` at syslog severity `sev`.
    fn app_line(sev: u8, msg: &str) -> String {
        format!(
            "<{}>1 2024-10-11T22:14:15.003Z web1 app 42 - - {msg}",
            8 + sev
        )
    }

    #[test]
    fn new_pattern_memory_and_learning_start_survive_a_snapshot() {
        let learned: Feed = (0..20)
            .map(|i| {
                (
                    app_line(3, &format!("payment {i} failed for order {}", i * 7)),
                    i,
                )
            })
            .chain((0..5).map(|i| (app_line(6, &format!("cache warmed in {i} ms")), 30 + i)))
            .collect();
        let fired = round_trip(
            "id: np\ntitle: np\nseverity: warning\n\
             detect: {kind: new_pattern, key: app, learning: 1m, level: error}\n",
            learned,
            vec![
                (app_line(3, "payment 99 failed for order 12"), 120),
                // Below the level: not mined, not new.
                (app_line(6, "config reloaded from disk"), 121),
                (app_line(3, "disk /dev/sda1 is full, writes refused"), 122),
                (app_line(3, "disk /dev/sdb1 is full, writes refused"), 123),
            ],
            None,
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        let f = &fired[0];
        let id = f.labels.get("pattern").expect("pattern label");
        assert_eq!(f.key, format!("app|{id}"));
        assert_eq!(
            f.labels.get("pattern_template").map(String::as_str),
            Some("disk <*> is full, writes refused")
        );
        assert!(f.evidence_query.contains(&format!("pattern:{id}")), "{f:?}");
        assert_eq!(f.count, 1);
        assert_eq!(f.sample_lines.len(), 1);
        // The id is the index's: the collector's miner names the line so.
        let raw = app_line(3, "disk /dev/sda1 is full, writes refused");
        let ev = parse_line(
            raw.as_bytes(),
            Format::Auto,
            &ParseContext { now_nanos: T0 },
        )
        .expect("parses");
        let mut streams = crate::patterns::Streams::default();
        assert_eq!(
            &streams.pattern("default", "", Some(&ev), &raw).to_string(),
            id
        );
    }

    #[test]
    fn pattern_spike_baseline_survives_a_snapshot() {
        // Two patterns, each a few lines per 10 s bucket.
        let steady = |from: i64, buckets: i64| -> Feed {
            (0..buckets)
                .flat_map(|b| {
                    (0..3).flat_map(move |i| {
                        [
                            (
                                app_line(4, &format!("slow query took {} ms", 100 + i)),
                                from + b * 10 + i,
                            ),
                            (
                                app_line(6, &format!("request {} served", b * 3 + i)),
                                from + b * 10 + i,
                            ),
                        ]
                    })
                })
                .collect()
        };
        let mut after = steady(100, 2);
        after.extend(
            (0..40).map(|i| (app_line(4, &format!("slow query took {} ms", 200 + i)), 125)),
        );
        let fired = round_trip(
            "id: ps\ntitle: ps\nseverity: warning\n\
             detect: {kind: pattern_spike, key: app, window: 10s, count: 20, warmup: 5, z: 4}\n",
            steady(0, 10),
            after,
            None,
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        let f = &fired[0];
        assert_eq!(
            f.labels.get("pattern_template").map(String::as_str),
            Some("slow query took <*>")
        );
        assert_eq!(f.count, 20);
        assert!(f.value.unwrap_or(0.0) >= 4.0, "{f:?}");
        assert_eq!(f.sample_lines.len(), 5);
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

    /// A full key map of a burn-rate rule: keys seen once (a scan of
    /// random paths) do not evict a key that keeps coming less often than
    /// the cap cycles; a new key seen twice gets state.
    #[test]
    fn a_full_burn_rate_map_admits_keys_seen_twice() {
        let yaml = "id: t\ntitle: t\nseverity: warning\n\
             detect:\n  kind: burn_rate\n  key: client_ip\n  slo: 99\n\
             \x20 error: {field: status, gte: 500}\n  min_requests: 5\n  max_keys: 4\n\
             \x20 windows:\n    - {long: 5m, short: 1m, burn: 2}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        let mut lines: Feed = ["1.0.0.1", "1.0.0.2", "1.0.0.3"]
            .iter()
            .map(|ip| (line(ip, "/", 200), 0))
            .collect();
        for i in 0..60 {
            if i % 10 == 0 {
                lines.push((line("9.9.9.9", "/pay", 503), 1 + i / 10));
            }
            lines.push((
                line(&format!("10.0.{}.{}", i / 200, i % 200), "/", 200),
                1 + i / 10,
            ));
        }
        lines.push((line("7.7.7.7", "/pay", 503), 10));
        for _ in 0..5 {
            lines.push((line("7.7.7.7", "/pay", 503), 11));
        }
        feed(&mut e, &lines, &mut out);
        let keys: Vec<&str> = out.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["9.9.9.9", "7.7.7.7"],
            "six errors of 9.9.9.9 among 60 one-off keys, and 7.7.7.7's \
             five errors after the line that had it admitted"
        );
        assert_eq!(e.rules[0].keys.len(), 4);
        assert!(e.take_evicted() >= 60);
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

    fn req(ip: &str, method: &str, path: &str, status: u16) -> String {
        format!(
            "{ip} - - [10/Oct/2024:12:00:00 +0000] \"{method} {path} HTTP/1.1\" {status} 10 \"-\" \"curl/8\""
        )
    }

    /// Feeds `lines` as coming from `source`, arriving at `arrival`
    /// seconds after T0 (`None`: offline).
    fn feed_from(
        e: &mut Engine,
        source: &str,
        arrival: Option<i64>,
        lines: &Feed,
        out: &mut Vec<Firing>,
    ) {
        e.set_origin(&["default", source], arrival.map(|a| T0 + a * S));
        feed(e, lines, out);
    }

    #[test]
    fn a_line_too_old_for_every_window_is_counted_and_still_matched() {
        let specs = specs(
            "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 1m, count: 3, lateness: 10s}\n\
             ---\nid: m\ntitle: m\nseverity: info\nmatch: {field: status, equals: 401}\n\
             detect: {kind: match, window: 1s}\n",
        );
        let mut e = Engine::new(&specs).unwrap();
        let mut out = Vec::new();
        // The key is at 300 s. A line at 100 s is too old for its window
        // (and grace): it goes to its source's side window, new, so it
        // counts there. A line at 10 s is too old for that one too.
        feed(&mut e, &fails("1.2.3.4", 1, 300), &mut out);
        feed(&mut e, &fails("1.2.3.4", 1, 100), &mut out);
        let st = |e: &Engine, id: &str| e.stats().into_iter().find(|s| s.id == id).unwrap();
        assert_eq!((st(&e, "t").too_late, st(&e, "t").keys), (0, 2));
        feed(&mut e, &fails("1.2.3.4", 1, 10), &mut out);
        assert_eq!(st(&e, "t").too_late, 1);
        assert_eq!(st(&e, "m").too_late, 0, "a stateless rule takes every line");
        // The stateless rule saw all three lines, whatever their age.
        let matched: Vec<i64> = out
            .iter()
            .filter(|f| f.rule_id == "m")
            .map(|f| (f.first_ts - T0) / S)
            .collect();
        assert_eq!(matched, vec![300, 100, 10]);
        assert_eq!(e.take_too_late(), vec![("t".to_string(), 1)]);
        assert!(e.take_too_late().is_empty());
        // Counted, and carried by a snapshot.
        let mut enc = Enc::default();
        e.encode_state(&mut enc);
        let mut back = Engine::new(&specs).unwrap();
        back.restore_state(&enc.buf).unwrap();
        assert_eq!(st(&back, "t").too_late, 1);
    }

    #[test]
    fn a_late_line_counts_in_its_keys_window() {
        let yaml = "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 3}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        feed_from(
            &mut e,
            "web-1",
            Some(200),
            &fails("1.2.3.4", 1, 100),
            &mut out,
        );
        feed_from(
            &mut e,
            "web-1",
            Some(200),
            &fails("1.2.3.4", 1, 200),
            &mut out,
        );
        assert!(out.is_empty());
        // web-2 is behind: its line at 150 s arrives after web-1's at 200 s.
        feed_from(
            &mut e,
            "web-2",
            Some(400),
            &fails("1.2.3.4", 1, 150),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].count, out[0].first_ts, out[0].last_ts),
            (3, T0 + 100 * S, T0 + 200 * S)
        );
    }

    #[test]
    fn a_late_line_past_the_window_counts_with_its_neighbours_within_the_grace() {
        let yaml = "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 1m, count: 3, lateness: 5m}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        let mut early = fails("1.2.3.4", 2, 0);
        early.extend(fails("1.2.3.4", 1, 200));
        feed_from(&mut e, "web-1", None, &early, &mut out);
        assert!(out.is_empty());
        // 190 s behind the key: out of its window, inside the grace. In
        // time order the lines at 0, 1 and 10 s made three in a minute.
        feed_from(&mut e, "web-2", None, &fails("1.2.3.4", 1, 10), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].count, out[0].first_ts, out[0].last_ts),
            (3, T0, T0 + 10 * S)
        );
        assert_eq!(e.stats()[0].too_late, 0);
    }

    #[test]
    fn a_source_far_behind_is_evaluated_in_its_own_time() {
        // One 5xx ratio over every host. web-1 is healthy and on time;
        // web-2 is half an hour behind and was failing then.
        let yaml = "id: r\ntitle: r\nseverity: critical\nmatch: {field: status, exists: true}\n\
             detect:\n  kind: ratio\n  window: 2m\n  ratio: 0.2\n  min_volume: 20\n  \
             numerator: {field: status, gte: 500}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        let healthy: Feed = (0..60)
            .map(|i| (line("10.0.0.1", "/", 200), 1800 + i))
            .collect();
        feed_from(&mut e, "web-1", Some(1860), &healthy, &mut out);
        let failing: Feed = (0..40)
            .map(|i| (line("10.0.0.2", "/", if i % 2 == 0 { 503 } else { 200 }), i))
            .collect();
        feed_from(&mut e, "web-2", Some(1900), &failing, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(f.key, "", "the side window fires for the rule's own key");
        assert!(f.first_ts < T0 + 40 * S && f.last_ts < T0 + 40 * S, "{f:?}");
        assert_eq!(e.stats()[0].too_late, 0);
    }

    #[test]
    fn a_sequence_completes_when_its_first_steps_arrive_after_the_last() {
        let yaml = "id: s\ntitle: s\nseverity: critical\n\
             detect:\n  kind: sequence\n  key: client_ip\n  window: 10m\n  count: 3\n  \
             first: {field: status, equals: 401}\n  then: {all: [{field: method, equals: POST}, {field: status, equals: 302}]}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        // The success was logged by web-1 on time; the failures before it
        // by web-2, which ships late.
        feed_from(
            &mut e,
            "web-1",
            Some(100),
            &vec![(req("7.7.7.7", "POST", "/login", 302), 100)],
            &mut out,
        );
        let failures: Feed = (0..3)
            .map(|i| (req("7.7.7.7", "POST", "/login", 401), 50 + i))
            .collect();
        feed_from(&mut e, "web-2", Some(400), &failures, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].count, out[0].first_ts, out[0].last_ts),
            (3, T0 + 50 * S, T0 + 100 * S)
        );
    }

    #[test]
    fn a_late_line_reopens_its_spike_bucket() {
        let yaml = "id: k\ntitle: k\nseverity: warning\n\
             detect: {kind: spike, window: 1m, count: 50, warmup: 5, z: 4, alpha: 0.2, lateness: 3m}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        // Offsets from the start of T0's minute.
        let m0 = T0.rem_euclid(60 * S) / S;
        let mut quiet: Feed = Vec::new();
        for minute in 0..10 {
            for i in 0..10 {
                quiet.push((line("1.1.1.1", "/", 200), minute * 60 + i - m0));
            }
        }
        // Minute 10 has begun on web-1 when web-2's burst in minute 9
        // arrives.
        quiet.push((line("1.1.1.1", "/", 200), 600 - m0));
        feed_from(&mut e, "web-1", None, &quiet, &mut out);
        let burst: Feed = (0..200)
            .map(|i| (line("1.1.1.2", "/", 200), 540 + i % 60 - m0))
            .collect();
        feed_from(&mut e, "web-2", None, &burst, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            out[0].first_ts,
            T0 + (540 - m0) * S,
            "the burst's own minute"
        );
        assert!(out[0].count >= 50 && out[0].value.unwrap_or(0.0) >= 4.0);
        // The baseline took the whole burst in once minute 9 closed for good.
        let later: Feed = (0..5)
            .map(|i| (line("1.1.1.1", "/", 200), 600 + 60 * i - m0))
            .collect();
        feed_from(&mut e, "web-1", None, &later, &mut out);
        let mean = e.rules[0]
            .keys
            .iter_lru_first()
            .map(|(_, st)| st.mean)
            .sum::<f64>();
        assert!(mean > 15.0, "baseline {mean}");
        assert_eq!(e.stats()[0].too_late, 0);
    }

    #[test]
    fn a_source_catching_up_is_not_silent_by_its_own_clock() {
        let yaml = "id: f\ntitle: f\nseverity: critical\n\
             detect: {kind: flatline, key: client_ip, after: 10m}\n";
        let mut e = Engine::new(&specs(yaml)).unwrap();
        let mut out = Vec::new();
        // Lines from half an hour ago, arriving now (an agent draining
        // its spool): by the wall clock the key is 30 minutes silent, by
        // its source's clock it spoke a moment ago.
        feed_from(
            &mut e,
            "web-2",
            Some(1800),
            &vec![(line("4.4.4.4", "/", 200), 0)],
            &mut out,
        );
        e.tick(T0 + 1830 * S, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Then the source goes quiet: its clock runs on with the wall's.
        e.tick(T0 + (1800 + 601) * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].first_ts, out[0].last_ts), (T0, T0 + 601 * S));
        // The source table is bounded and carried by snapshots.
        let mut enc = Enc::default();
        e.encode_state(&mut enc);
        let mut back = Engine::new(&specs(yaml)).unwrap();
        back.restore_state(&enc.buf).unwrap();
        assert_eq!(back.sources.clocks.len(), 1);
    }

    #[test]
    fn the_source_table_forgets_the_least_recent_half_when_full() {
        let mut s = Sources::default();
        let first = {
            s.set(1, Some(1000));
            s.saw(0);
            s.current
        };
        for i in 1..MAX_SOURCES as u64 + 1 {
            // Each source's newest line is 1000 ns older than its arrival.
            s.set(i + 1, Some(i as i64 + 1000));
            s.saw(i as i64);
        }
        assert!(s.index.len() <= MAX_SOURCES / 2 + 2, "{}", s.index.len());
        assert!(s.clocks.len() <= MAX_SOURCES);
        // The newest stayed, on its own clock; a forgotten one reads as
        // the wall clock.
        let now = 1 << 40;
        assert_eq!(s.now_of(s.current, now), now - 1000);
        assert_eq!(s.now_of(first, now), now);
    }

    #[test]
    fn a_version_1_snapshot_is_migrated() {
        let yaml = "id: t\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\n\
             detect: {kind: threshold, key: client_ip, window: 5m, count: 5}\n";
        let specs = specs(yaml);
        // The version 1 layout, written out by hand: one rule with its
        // watermark, one key with three lines at T0 in one slot.
        let width = (5 * 60 * S) / 64;
        let mut v1 = Enc::default();
        v1.u64(1);
        v1.bytes(&content_hash(&specs[0]));
        v1.str("t");
        v1.i64(T0); // watermark
        v1.opt_i64(None);
        v1.u64(0);
        v1.u64(7); // late
        v1.u64(1);
        v1.str("default\u{1f}1.2.3.4");
        // a: one slot; b: empty
        v1.u64(1);
        v1.i64(T0 - T0.rem_euclid(width));
        v1.u64(3);
        v1.f64(3.0);
        v1.i64(T0);
        v1.u64(3);
        v1.f64(3.0);
        v1.i64(T0);
        v1.u64(0);
        v1.u64(0);
        v1.f64(0.0);
        v1.i64(0);
        v1.u64(0); // samples
        v1.i64(0); // suppress_until
        v1.u64(0); // distinct
        v1.i64(0);
        v1.opt_i64(None);
        v1.u64(0);
        v1.f64(0.0);
        v1.f64(0.0);
        v1.u32(0);
        v1.i64(0);
        v1.bool(false);
        let mut e = Engine::new(&specs).unwrap();
        assert!(
            e.restore_state_version(&v1.buf, 2).is_err(),
            "not a v2 body"
        );
        let carried = e.restore_state_version(&v1.buf, 1).expect("v1 decodes");
        assert_eq!(carried.kept, vec!["t".to_string()]);
        assert_eq!(e.stats()[0].too_late, 7);
        let mut out = Vec::new();
        // A late line (the key's clock came from its window) and one more.
        feed(&mut e, &fails("1.2.3.4", 1, -5), &mut out);
        feed(&mut e, &fails("1.2.3.4", 1, 10), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].count, out[0].first_ts), (5, T0 - 5 * S));
        // And it is written back in the current version.
        let mut v2 = Enc::default();
        e.encode_state(&mut v2);
        Engine::new(&specs)
            .unwrap()
            .restore_state(&v2.buf)
            .expect("v2 decodes");
    }
}
