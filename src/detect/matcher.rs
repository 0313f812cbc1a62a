//! Compiled line filters and their per-line evaluation.
//!
//! All rules of an engine share one [`MatchSet`]: identical tests are
//! interned once (a pack where twenty rules ask `status >= 400` evaluates it
//! once per line), each `contains` test is one prefiltered Aho-Corasick
//! automaton, and field views (lowercased, optionally decoded) are built
//! lazily, at most once per line,
//! in buffers reused from line to line. So a line that matches nothing costs
//! no allocation, and a test no rule reaches costs nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use regex::Regex;

use super::field::{Field, LineRef, FIELD_COUNT};
use super::payload::{self, Payload, PayloadScratch};
use crate::parse::unescape::{decode_into, needs_decode};

/// A field as text: lowercased, and percent-decoded when `decoded`; or,
/// after those, as logged (case-sensitive tests, Sigma's `|re`, `|cased`).
pub const VIEWS: usize = FIELD_COUNT * 3;

pub fn view_of(field: Field, decoded: bool) -> usize {
    field.index() * 2 + usize::from(decoded)
}

/// The view of a field in its original case.
pub fn cased_view_of(field: Field) -> usize {
    FIELD_COUNT * 2 + field.index()
}

fn is_decoded(view: usize) -> bool {
    view < FIELD_COUNT * 2 && view % 2 == 1
}

fn view_field(view: usize) -> Field {
    // The index was made by `view_of` or `cased_view_of` from a real field.
    if view >= FIELD_COUNT * 2 {
        FIELD_ORDER[view - FIELD_COUNT * 2]
    } else {
        FIELD_ORDER[view / 2]
    }
}

const FIELD_ORDER: [Field; FIELD_COUNT] = [
    Field::ClientIp,
    Field::Method,
    Field::Path,
    Field::Status,
    Field::Bytes,
    Field::Referer,
    Field::UserAgent,
    Field::Host,
    Field::Source,
    Field::User,
    Field::Duration,
    Field::Raw,
    Field::Format,
    Field::App,
    Field::Message,
    Field::UriStem,
    Field::Query,
    Field::Protocol,
    Field::Route,
    Field::UrlHost,
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// An IP network: addresses are compared as u128 (IPv4 in the low 32 bits,
/// IPv4-mapped IPv6 treated as IPv4).
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub v4: bool,
    pub base: u128,
    pub mask: u128,
}

impl Net {
    pub fn parse(s: &str) -> Result<Net, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("bad CIDR {s:?}: {addr:?} is not an IP address"))?;
        let (v4, bits, width) = ip_bits(ip);
        let len: u32 = match len {
            Some(l) => l
                .trim()
                .parse()
                .ok()
                .filter(|l| *l <= width)
                .ok_or_else(|| format!("bad CIDR {s:?}: prefix length must be 0..={width}"))?,
            None => width,
        };
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (width - len)) & width_mask(width)
        };
        Ok(Net {
            v4,
            base: bits & mask,
            mask,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4, bits, _) = ip_bits(ip);
        v4 == self.v4 && bits & self.mask == self.base
    }
}

fn width_mask(width: u32) -> u128 {
    if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

fn ip_bits(ip: IpAddr) -> (bool, u128, u32) {
    match ip {
        IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => (true, u128::from(u32::from(a)), 32),
            None => (false, u128::from(a), 128),
        },
    }
}

/// One interned test.
#[derive(Debug)]
pub enum Leaf {
    /// Any of the needles occurs in the view. One automaton per leaf, so
    /// `is_match` can use its SIMD prefilter and stop at the first hit.
    /// A text the view's memo has not seen goes through the view's shared
    /// scan instead ([`ViewScan`]): with unique values (query strings,
    /// user-agent builds) one pass for all leaves measured 6–11% faster over
    /// 100 rules, and with repeating values the memo answers either way.
    Contains {
        view: usize,
        ac: AhoCorasick,
        /// What `ac` searches for, for the view's shared scan.
        needles: Vec<Box<str>>,
    },
    StartsWith {
        view: usize,
        needles: Vec<Box<str>>,
    },
    EndsWith {
        view: usize,
        needles: Vec<Box<str>>,
    },
    Equals {
        view: usize,
        needles: Vec<Box<str>>,
    },
    Regex {
        view: usize,
        re: Regex,
        /// Built case-insensitive (a view's shared [`ViewRegexes`] needs
        /// the same flag).
        insensitive: bool,
    },
    Cidr {
        nets: Vec<Net>,
    },
    Cmp {
        field: Field,
        op: CmpOp,
        value: f64,
    },
    NumIn {
        field: Field,
        values: Vec<f64>,
    },
    Exists {
        field: Field,
        yes: bool,
    },
    /// A payload detector (`sqli`, `xss`, `cmdi`, `traversal`) on the
    /// view's text; memoized like the scanning tests.
    Payload {
        view: usize,
        kind: Payload,
    },
}

impl Leaf {
    /// Rough relative cost, to evaluate cheap tests first in `all`/`any`.
    pub fn cost(&self) -> u32 {
        let view_cost = |v: usize| {
            let f = view_field(v);
            (if f == Field::Raw { 20 } else { 4 }) + if is_decoded(v) { 4 } else { 0 }
        };
        match self {
            Leaf::Cmp { .. } | Leaf::NumIn { .. } | Leaf::Exists { .. } => 1,
            Leaf::Cidr { .. } => 2,
            Leaf::StartsWith { view, .. }
            | Leaf::EndsWith { view, .. }
            | Leaf::Equals { view, .. } => view_cost(*view),
            Leaf::Contains { view, .. } => view_cost(*view) + 6,
            Leaf::Regex { view, .. } => view_cost(*view) * 2 + 40,
            Leaf::Payload { view, .. } => view_cost(*view) * 2 + 30,
        }
    }
}

/// A boolean expression over interned leaves.
#[derive(Debug, Clone)]
pub enum Expr {
    True,
    Leaf(u32),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
    /// An interned compound expression (`MatchSet::nodes`), evaluated at
    /// most once per line however many rules share it.
    Node(u32),
}

/// The interned tests of an engine.
#[derive(Debug, Default)]
pub struct MatchSet {
    pub leaves: Vec<Leaf>,
    /// Interned compound expressions; their children are interned too.
    pub nodes: Vec<Expr>,
    pub(super) node_keys: HashMap<String, u32>,
    /// `nodes` again, flat for evaluation: one entry per node and every
    /// node's children side by side in `kids`, so a line's walk over a
    /// hundred rules reads two small arrays instead of chasing a heap
    /// vector per node.
    pub(super) flat: Vec<FlatNode>,
    pub(super) kids: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FlatNode {
    op: FlatOp,
    start: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlatOp {
    All,
    Any,
    Not,
}

/// A child reference in `kids`: a leaf index, a node index with this bit
/// set, or [`KID_TRUE`].
const KID_NODE: u32 = 1 << 31;
const KID_TRUE: u32 = u32::MAX;

impl MatchSet {
    /// Replaces every compound part of `e` by a shared node, so rules with
    /// identical sub-expressions (the same filter in several variants of a
    /// rule) evaluate it once per line. Call after [`super::compile::order`]:
    /// the node keeps the children's order.
    pub fn intern(&mut self, e: &mut Expr) {
        match e {
            Expr::All(v) | Expr::Any(v) => {
                for c in v.iter_mut() {
                    self.intern(c);
                }
            }
            Expr::Not(c) => self.intern(c),
            Expr::True | Expr::Leaf(_) | Expr::Node(_) => return,
        }
        let key = format!("{e:?}");
        let id = match self.node_keys.get(&key) {
            Some(i) => *i,
            None => {
                let i = self.nodes.len() as u32;
                self.push_flat(e);
                self.nodes.push(e.clone());
                self.node_keys.insert(key, i);
                i
            }
        };
        *e = Expr::Node(id);
    }

    /// Appends the flat form of a node whose children are interned.
    fn push_flat(&mut self, e: &Expr) {
        let kid = |c: &Expr| match c {
            Expr::Leaf(i) => *i,
            Expr::Node(i) => *i | KID_NODE,
            // Children are interned before their parent, so only `True`
            // is left; it never has children of its own.
            _ => KID_TRUE,
        };
        let start = self.kids.len() as u32;
        let op = match e {
            Expr::All(v) | Expr::Any(v) => {
                self.kids.extend(v.iter().map(kid));
                if matches!(e, Expr::All(_)) {
                    FlatOp::All
                } else {
                    FlatOp::Any
                }
            }
            Expr::Not(c) => {
                self.kids.push(kid(c));
                FlatOp::Not
            }
            Expr::True | Expr::Leaf(_) | Expr::Node(_) => return,
        };
        let len = self.kids.len() as u32 - start;
        self.flat.push(FlatNode { op, start, len });
    }

    /// Tests the expression cannot be true without, as child references
    /// for [`Scratch::eval_kid`]: the expression itself, or the children
    /// of an `all`; with the filter's whole cost. Empty for `True` (every
    /// line). A rule is gated on one of them ([`MatchSet::gate_score`]):
    /// one shared evaluation per line rules out all the rules behind a
    /// gate that failed.
    pub fn gate_candidates(&self, e: &Expr) -> (Vec<u32>, f64) {
        match e {
            Expr::True => (Vec::new(), 0.0),
            Expr::Leaf(i) => (vec![*i], self.kid_cost(*i) as f64),
            Expr::Node(i) => {
                let me = *i | KID_NODE;
                let total = self.kid_cost(me) as f64;
                let n = self.flat[*i as usize];
                if n.op != FlatOp::All {
                    return (vec![me], total);
                }
                let kids: Vec<u32> = self.kids[n.start as usize..(n.start + n.len) as usize]
                    .iter()
                    .copied()
                    .filter(|&k| k != KID_TRUE)
                    .collect();
                (if kids.is_empty() { vec![me] } else { kids }, total)
            }
            // Not interned (only before `intern`): no shared result to gate on.
            Expr::All(_) | Expr::Any(_) | Expr::Not(_) => (Vec::new(), 0.0),
        }
    }

    /// Expected work per line of gating a filter costing `total` on `k`,
    /// a candidate of `uses` rules: the gate's share of its own cost (it
    /// is evaluated once per line for all of them), plus the whole filter
    /// on the share of lines it lets through. So a cheap status test beats
    /// a selective regex that would then run on every line, and a filter
    /// shared by several rules beats a test only one of them has.
    pub fn gate_score(&self, k: u32, total: f64, uses: usize) -> f64 {
        self.kid_cost(k) as f64 / uses.max(1) as f64 + self.pass_estimate(k) * total
    }

    fn kid_cost(&self, k: u32) -> u32 {
        if k == KID_TRUE {
            0
        } else if k & KID_NODE != 0 {
            self.cost(&self.nodes[(k & !KID_NODE) as usize])
        } else {
            self.leaves[k as usize].cost()
        }
    }

    /// A rough share of lines a child lets through, to pick selective
    /// gates; only the choice of gate depends on it, never a result.
    fn pass_estimate(&self, k: u32) -> f64 {
        if k == KID_TRUE {
            return 1.0;
        }
        if k & KID_NODE == 0 {
            return match &self.leaves[k as usize] {
                Leaf::Cmp { .. } => 0.5,
                Leaf::NumIn { .. } => 0.1,
                Leaf::Exists { yes: true, .. } => 0.9,
                Leaf::Exists { yes: false, .. } => 0.5,
                Leaf::Cidr { .. } => 0.3,
                Leaf::StartsWith { .. } | Leaf::EndsWith { .. } | Leaf::Equals { .. } => 0.1,
                Leaf::Contains { .. } => 0.05,
                Leaf::Regex { .. } => 0.03,
                Leaf::Payload { .. } => 0.01,
            };
        }
        let n = self.flat[(k & !KID_NODE) as usize];
        let kids = &self.kids[n.start as usize..(n.start + n.len) as usize];
        match n.op {
            FlatOp::All => kids
                .iter()
                .map(|&c| self.pass_estimate(c))
                .fold(1.0, f64::min),
            FlatOp::Any => kids
                .iter()
                .map(|&c| self.pass_estimate(c))
                .sum::<f64>()
                .min(1.0),
            FlatOp::Not => 1.0 - kids.first().map_or(1.0, |&c| self.pass_estimate(c)) * 0.5,
        }
    }

    pub fn cost(&self, e: &Expr) -> u32 {
        match e {
            Expr::Node(i) => self.cost(&self.nodes[*i as usize]),
            Expr::True => 0,
            Expr::Leaf(i) => self.leaves[*i as usize].cost(),
            Expr::All(v) | Expr::Any(v) => v.iter().map(|c| self.cost(c)).sum(),
            Expr::Not(c) => self.cost(c),
        }
    }

    /// Fields the expression cannot be true without (bit set).
    pub fn required(&self, e: &Expr) -> u32 {
        match e {
            Expr::Node(i) => self.required(&self.nodes[*i as usize]),
            Expr::True | Expr::Not(_) => 0,
            Expr::Leaf(i) => match &self.leaves[*i as usize] {
                Leaf::Contains { view, .. }
                | Leaf::StartsWith { view, .. }
                | Leaf::EndsWith { view, .. }
                | Leaf::Equals { view, .. }
                | Leaf::Regex { view, .. }
                | Leaf::Payload { view, .. } => view_field(*view).bit(),
                Leaf::Cidr { .. } => Field::ClientIp.bit(),
                Leaf::Cmp { field, .. } | Leaf::NumIn { field, .. } => field.bit(),
                Leaf::Exists { field, yes } => {
                    if *yes {
                        field.bit()
                    } else {
                        0
                    }
                }
            },
            Expr::All(v) => v.iter().fold(0, |m, c| m | self.required(c)),
            Expr::Any(v) => {
                if v.is_empty() {
                    0
                } else {
                    v.iter().fold(u32::MAX, |m, c| m & self.required(c))
                }
            }
        }
    }
}

/// Entries of a view's memo (two-way set-associative by the text's hash).
const MEMO_SLOTS: usize = 256;
/// `Scratch::leaf_memo` of a leaf that is not memoized.
const NO_MEMO: u8 = u8::MAX;

/// Results of a view's scanning tests (`contains`, `regex`) by the view's
/// text: they are pure functions of it, and field values repeat (user
/// agents, referers, hot paths), so a text seen recently is not scanned
/// again. Exact: a hit compares the whole text, not only its hash.
#[derive(Debug)]
struct ViewMemo {
    entries: Vec<MemoEntry>,
}

#[derive(Debug, Default)]
struct MemoEntry {
    hash: u64,
    text: String,
    /// Bit `ordinal` set: that leaf's result is in `value`.
    known: u64,
    value: u64,
}

/// All memoized `contains` leaves of one view as one automaton: a text
/// not in the memo is scanned once for all of them instead of once per
/// leaf.
#[derive(Debug)]
struct ViewScan {
    ac: AhoCorasick,
    /// Per pattern: the memo bit of its leaf.
    bit_of: Vec<u64>,
    /// Every leaf's memo bit.
    mask: u64,
}

impl ViewScan {
    fn new(leaves: &[(u8, &[Box<str>])]) -> Option<ViewScan> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut bit_of = Vec::new();
        let mut mask = 0u64;
        for (ord, needles) in leaves {
            mask |= 1 << ord;
            for n in needles.iter() {
                patterns.push(n);
                bit_of.push(1u64 << ord);
            }
        }
        // A DFA whatever the number of needles: past 100 the builder picks
        // a contiguous NFA, and this scan runs on every new value of a
        // view. Five rules' needles took the decoded path past 100 and
        // `rules run` 5.6% slower; as a DFA, the pack with them costs what
        // it did without (a table of a few hundred KiB).
        let ac = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&patterns)
            .ok()?;
        Some(ViewScan { ac, bit_of, mask })
    }

    /// The memo bits of the leaves whose needles occur in `text`.
    fn scan(&self, text: &str) -> u64 {
        let mut found = 0;
        for m in self.ac.find_overlapping_iter(text) {
            found |= self.bit_of[m.pattern().as_usize()];
            if found == self.mask {
                break;
            }
        }
        found
    }
}

/// How well a view's memo answers. A memo that misses costs a hash, a
/// compare and a copy of the text on every line: a view whose texts
/// rarely repeat (request paths with ids, query strings) skips its memo
/// for a while and scans directly, then tries it again, since traffic
/// changes. Results are the same either way.
#[derive(Debug, Default, Clone, Copy)]
struct MemoStats {
    lookups: u32,
    hits: u32,
    skip: u32,
}

/// Lookups between verdicts on a memo.
const MEMO_VERDICT_EVERY: u32 = 1024;
/// A memo answering fewer than one lookup in this many is skipped...
const MEMO_MIN_HIT_RATIO: u32 = 8;
/// ... for this many evaluations of its leaves.
const MEMO_SKIP_EVALS: u32 = 64 * 1024;

/// Per view, one shared scanner (`build`) over its memoized leaves that
/// `pick` takes (their view and what the scanner needs), when it has at
/// least two: the scan of a text then answers all of them.
fn shared_per_view<'a, T, S>(
    set: &'a MatchSet,
    leaf_memo: &[u8],
    pick: impl Fn(&'a Leaf) -> Option<(usize, T)>,
    build: impl Fn(&[(u8, T)]) -> Option<S>,
) -> Vec<Option<S>> {
    let mut per_view: Vec<Vec<(u8, T)>> = (0..VIEWS).map(|_| Vec::new()).collect();
    for (leaf, &ord) in set.leaves.iter().zip(leaf_memo) {
        if ord == NO_MEMO {
            continue;
        }
        if let Some((view, part)) = pick(leaf) {
            per_view[view].push((ord, part));
        }
    }
    per_view
        .iter()
        .map(|leaves| (leaves.len() >= 2).then(|| build(leaves)).flatten())
        .collect()
}

/// All memoized regex leaves of one view as one set: a text not in the
/// memo goes through one automaton for all of them instead of one per
/// leaf (the login, dot-file and admin-path regexes of a pack all read
/// the path; on unique request paths one pass measured 120 ns against
/// 284 ns for five separate ones).
#[derive(Debug)]
struct ViewRegexes {
    set: regex::RegexSet,
    /// Per pattern of `set`: the memo bit of its leaf.
    bit_of: Vec<u64>,
    /// Every leaf's memo bit.
    mask: u64,
}

impl ViewRegexes {
    fn new(leaves: &[(u8, (&Regex, bool))]) -> Option<ViewRegexes> {
        let insensitive = leaves.first()?.1 .1;
        if leaves.iter().any(|(_, (_, i))| *i != insensitive) {
            return None;
        }
        let set = regex::RegexSetBuilder::new(leaves.iter().map(|(_, (re, _))| re.as_str()))
            .case_insensitive(insensitive)
            .size_limit((1 << 20) * leaves.len())
            .build()
            .ok()?;
        Some(ViewRegexes {
            set,
            bit_of: leaves.iter().map(|l| 1u64 << l.0).collect(),
            mask: leaves.iter().fold(0, |m, l| m | 1u64 << l.0),
        })
    }

    /// The memo bits of the leaves whose regex matches `text`; `hits` is
    /// scratch of at least one entry per pattern.
    fn scan(&self, text: &str, hits: &mut Vec<bool>) -> u64 {
        hits.clear();
        hits.resize(self.bit_of.len(), false);
        if !self.set.matches_read_at(hits, text, 0) {
            return 0;
        }
        hits.iter()
            .zip(&self.bit_of)
            .filter(|(hit, _)| **hit)
            .fold(0, |found, (_, bit)| found | bit)
    }
}

/// Per-line caches, reused across lines. A generation counter invalidates
/// them all at once at the start of a line instead of clearing them.
#[derive(Debug)]
pub struct Scratch {
    /// Per leaf: its bit in its view's memo, or [`NO_MEMO`].
    leaf_memo: Vec<u8>,
    /// Per view with memoized leaves: its memo.
    memos: Vec<Option<ViewMemo>>,
    /// Per view with several memoized `contains` leaves: one scan that
    /// answers them all.
    scans: Vec<Option<ViewScan>>,
    /// Per view with several memoized regex leaves: one set for them all.
    regexes: Vec<Option<ViewRegexes>>,
    regex_hits: Vec<bool>,
    /// Per view: the line (`gen`) whose memo entry is `memo_slot`.
    memo_gen: [u64; VIEWS],
    memo_slot: [usize; VIEWS],
    /// Scan every time (the plain path of differential tests).
    pub memo_off: bool,
    /// Per view: lookups and hits since the last verdict on its memo, and
    /// leaf evaluations left to skip it ([`MemoStats`]).
    memo_stats: [MemoStats; VIEWS],
    /// Per view, while its memo is skipped: the line (`gen`) whose text
    /// `scan_found` holds the shared `contains` scan of.
    scan_gen: [u64; VIEWS],
    scan_found: [u64; VIEWS],
    /// As `scan_gen`, `scan_found`, for the view's regex set.
    regex_gen: [u64; VIEWS],
    regex_found: [u64; VIEWS],
    gen: u64,
    view_gen: [u64; VIEWS],
    view_present: [bool; VIEWS],
    /// A decoded view identical to its plain view is not copied.
    view_alias: [bool; VIEWS],
    bufs: Vec<String>,
    tmp: String,
    /// `gen << 1 | result` per leaf.
    leaf_cache: Vec<u64>,
    /// `gen << 1 | result` per interned node.
    node_cache: Vec<u64>,
    pub present: u32,
    /// For callers that need a field's text for a moment (distinct values).
    pub value_buf: String,
    /// The payload detectors' reused buffers.
    payload: PayloadScratch,
}

impl Scratch {
    pub fn new(set: &MatchSet) -> Scratch {
        let mut per_view = [0u8; VIEWS];
        let mut memos: Vec<Option<ViewMemo>> = (0..VIEWS).map(|_| None).collect();
        let leaf_memo: Vec<u8> = set
            .leaves
            .iter()
            .map(|l| match l {
                Leaf::Contains { view, .. }
                | Leaf::Regex { view, .. }
                | Leaf::Payload { view, .. }
                    if per_view[*view] < 64 =>
                {
                    per_view[*view] += 1;
                    memos[*view].get_or_insert_with(|| ViewMemo {
                        entries: (0..MEMO_SLOTS).map(|_| MemoEntry::default()).collect(),
                    });
                    per_view[*view] - 1
                }
                _ => NO_MEMO,
            })
            .collect();
        let scans = shared_per_view(
            set,
            &leaf_memo,
            |l| match l {
                Leaf::Contains { view, needles, .. } => Some((*view, needles.as_slice())),
                _ => None,
            },
            ViewScan::new,
        );
        let regexes = shared_per_view(
            set,
            &leaf_memo,
            |l| match l {
                Leaf::Regex {
                    view,
                    re,
                    insensitive,
                } => Some((*view, (re, *insensitive))),
                _ => None,
            },
            ViewRegexes::new,
        );
        Scratch {
            leaf_memo,
            memos,
            scans,
            memo_gen: [0; VIEWS],
            memo_slot: [0; VIEWS],
            memo_off: false,
            memo_stats: [MemoStats::default(); VIEWS],
            scan_gen: [0; VIEWS],
            scan_found: [0; VIEWS],
            regexes,
            regex_hits: Vec::new(),
            regex_gen: [0; VIEWS],
            regex_found: [0; VIEWS],
            gen: 0,
            view_gen: [0; VIEWS],
            view_present: [false; VIEWS],
            view_alias: [false; VIEWS],
            bufs: vec![String::new(); VIEWS],
            tmp: String::new(),
            leaf_cache: vec![0; set.leaves.len()],
            node_cache: vec![0; set.nodes.len()],
            present: 0,
            value_buf: String::new(),
            payload: PayloadScratch::new(),
        }
    }

    /// Starts a new line.
    pub fn reset(&mut self, line: &LineRef<'_, '_>) {
        self.gen += 1;
        self.present = line.present();
    }

    /// The view's text, computed at most once per line; `None` when the
    /// line does not carry the field.
    pub fn view(&mut self, line: &LineRef<'_, '_>, v: usize) -> Option<&str> {
        if self.view_gen[v] != self.gen {
            self.compute_view(line, v);
        }
        if !self.view_present[v] {
            return None;
        }
        let v = if self.view_alias[v] { v - 1 } else { v };
        Some(self.bufs[v].as_str())
    }

    fn compute_view(&mut self, line: &LineRef<'_, '_>, v: usize) {
        self.view_gen[v] = self.gen;
        self.view_alias[v] = false;
        let field = view_field(v);
        if v >= FIELD_COUNT * 2 {
            let buf = &mut self.bufs[v];
            buf.clear();
            self.view_present[v] = line.write(field, buf);
            return;
        }
        if v % 2 == 1 {
            // Decoded views start from the plain one.
            if self.view_gen[v - 1] != self.gen {
                self.compute_view(line, v - 1);
            }
            self.view_present[v] = self.view_present[v - 1];
            if !self.view_present[v] || !needs_decode(&self.bufs[v - 1]) {
                self.view_alias[v] = true;
                return;
            }
            let mut out = std::mem::take(&mut self.bufs[v]);
            decode_into(&self.bufs[v - 1], &mut out);
            // Double encoding (`%252e`) is common in evasion; a third
            // layer is not decoded by servers either.
            if needs_decode(&out) {
                let mut tmp = std::mem::take(&mut self.tmp);
                decode_into(&out, &mut tmp);
                std::mem::swap(&mut out, &mut tmp);
                self.tmp = tmp;
            }
            out.make_ascii_lowercase();
            self.bufs[v] = out;
            return;
        }
        let buf = &mut self.bufs[v];
        buf.clear();
        self.view_present[v] = line.write(field, buf);
        buf.make_ascii_lowercase();
    }

    fn leaf(&mut self, set: &MatchSet, line: &LineRef<'_, '_>, i: u32) -> bool {
        let c = self.leaf_cache[i as usize];
        if c >> 1 == self.gen {
            return c & 1 == 1;
        }
        let ord = self.leaf_memo[i as usize];
        let r = if ord == NO_MEMO || self.memo_off {
            self.eval_leaf(line, &set.leaves[i as usize])
        } else {
            self.eval_memo(line, &set.leaves[i as usize], ord)
        };
        self.leaf_cache[i as usize] = self.gen << 1 | u64::from(r);
        r
    }

    /// A scanning leaf through its view's memo.
    fn eval_memo(&mut self, line: &LineRef<'_, '_>, leaf: &Leaf, ord: u8) -> bool {
        let v = match leaf {
            Leaf::Contains { view, .. } | Leaf::Regex { view, .. } | Leaf::Payload { view, .. } => {
                *view
            }
            _ => return self.eval_leaf(line, leaf),
        };
        if self.view(line, v).is_none() {
            return false;
        }
        let b = if self.view_alias[v] { v - 1 } else { v };
        let text = self.bufs[b].as_str();
        let Some(memo) = self.memos[v].as_mut() else {
            return self.eval_leaf(line, leaf);
        };
        if self.memo_gen[v] != self.gen {
            let stats = &mut self.memo_stats[v];
            if stats.skip > 0 {
                return self.eval_unmemoized(line, leaf, v, b, ord);
            }
            self.memo_gen[v] = self.gen;
            let h = super::keymap::hash_key(text);
            // Two ways per set, the most recently used first: with a
            // direct-mapped memo two hot texts (two paths of the same
            // site) that shared a slot evicted each other on every line.
            let slot = h as usize % (MEMO_SLOTS / 2) * 2;
            let hit = |e: &MemoEntry| e.hash == h && e.text == text;
            let mut found = true;
            if !hit(&memo.entries[slot]) {
                memo.entries.swap(slot, slot + 1);
                let e = &mut memo.entries[slot];
                if !hit(e) {
                    found = false;
                    e.hash = h;
                    e.text.clear();
                    e.text.push_str(text);
                    e.known = 0;
                    e.value = 0;
                }
            }
            self.memo_slot[v] = slot;
            stats.lookups += 1;
            stats.hits += u32::from(found);
            if stats.lookups == MEMO_VERDICT_EVERY {
                if stats.hits * MEMO_MIN_HIT_RATIO < stats.lookups {
                    stats.skip = MEMO_SKIP_EVALS;
                }
                stats.lookups = 0;
                stats.hits = 0;
            }
        }
        let e = &mut memo.entries[self.memo_slot[v]];
        let bit = 1u64 << ord;
        if e.known & bit != 0 {
            return e.value & bit != 0;
        }
        let r = match leaf {
            Leaf::Contains { ac, .. } => match &self.scans[v] {
                Some(scan) => {
                    let found = scan.scan(text);
                    e.known |= scan.mask;
                    e.value |= found;
                    return found & bit != 0;
                }
                None => ac.is_match(text),
            },
            Leaf::Regex { re, .. } => match &self.regexes[v] {
                Some(set) => {
                    let found = set.scan(text, &mut self.regex_hits);
                    e.known |= set.mask;
                    e.value |= found;
                    return found & bit != 0;
                }
                None => re.is_match(text),
            },
            Leaf::Payload { kind, .. } => payload::detect(*kind, text, &mut self.payload),
            _ => false,
        };
        e.known |= bit;
        if r {
            e.value |= bit;
        }
        r
    }

    /// A scanning leaf while its view's memo is skipped: the view's
    /// `contains` leaves still share one scan per line, and its regex
    /// leaves one set pass.
    /// `b` is the buffer holding the view's text (its plain view's when
    /// decoding changed nothing).
    fn eval_unmemoized(
        &mut self,
        line: &LineRef<'_, '_>,
        leaf: &Leaf,
        v: usize,
        b: usize,
        ord: u8,
    ) -> bool {
        self.memo_stats[v].skip -= 1;
        match (leaf, &self.scans[v], &self.regexes[v]) {
            (Leaf::Contains { .. }, Some(scan), _) => {
                if self.scan_gen[v] != self.gen {
                    self.scan_gen[v] = self.gen;
                    self.scan_found[v] = scan.scan(&self.bufs[b]);
                }
                self.scan_found[v] & (1u64 << ord) != 0
            }
            (Leaf::Regex { .. }, _, Some(set)) => {
                if self.regex_gen[v] != self.gen {
                    self.regex_gen[v] = self.gen;
                    self.regex_found[v] = set.scan(&self.bufs[b], &mut self.regex_hits);
                }
                self.regex_found[v] & (1u64 << ord) != 0
            }
            _ => self.eval_leaf(line, leaf),
        }
    }

    fn eval_leaf(&mut self, line: &LineRef<'_, '_>, leaf: &Leaf) -> bool {
        match leaf {
            Leaf::Cmp { field, op, value } => match line.number(*field) {
                Some(x) => match op {
                    CmpOp::Gt => x > *value,
                    CmpOp::Gte => x >= *value,
                    CmpOp::Lt => x < *value,
                    CmpOp::Lte => x <= *value,
                },
                None => false,
            },
            Leaf::NumIn { field, values } => match line.number(*field) {
                Some(x) => values.contains(&x),
                None => false,
            },
            Leaf::Exists { field, yes } => (self.present & field.bit() != 0) == *yes,
            Leaf::Cidr { nets } => match line.event.client_ip {
                Some(ip) => nets.iter().any(|n| n.contains(ip)),
                None => false,
            },
            Leaf::Contains { view, ac, .. } => {
                self.view(line, *view).is_some_and(|t| ac.is_match(t))
            }
            Leaf::StartsWith { view, needles } => self
                .view(line, *view)
                .is_some_and(|t| needles.iter().any(|n| t.starts_with(&**n))),
            Leaf::EndsWith { view, needles } => self
                .view(line, *view)
                .is_some_and(|t| needles.iter().any(|n| t.ends_with(&**n))),
            Leaf::Equals { view, needles } => self
                .view(line, *view)
                .is_some_and(|t| needles.iter().any(|n| t == &**n)),
            Leaf::Regex { view, re, .. } => self.view(line, *view).is_some_and(|t| re.is_match(t)),
            Leaf::Payload { view, kind } => {
                if self.view(line, *view).is_none() {
                    return false;
                }
                let b = if self.view_alias[*view] {
                    view - 1
                } else {
                    *view
                };
                payload::detect(*kind, &self.bufs[b], &mut self.payload)
            }
        }
    }

    fn node(&mut self, set: &MatchSet, line: &LineRef<'_, '_>, i: u32) -> bool {
        let c = self.node_cache[i as usize];
        if c >> 1 == self.gen {
            return c & 1 == 1;
        }
        let n = set.flat[i as usize];
        let kids = &set.kids[n.start as usize..(n.start + n.len) as usize];
        let r = match n.op {
            FlatOp::All => kids.iter().all(|&k| self.kid(set, line, k)),
            FlatOp::Any => kids.iter().any(|&k| self.kid(set, line, k)),
            FlatOp::Not => !kids.iter().all(|&k| self.kid(set, line, k)),
        };
        self.node_cache[i as usize] = self.gen << 1 | u64::from(r);
        r
    }

    /// Evaluates a child reference from [`MatchSet::gate`].
    #[inline]
    pub fn eval_kid(&mut self, set: &MatchSet, line: &LineRef<'_, '_>, k: u32) -> bool {
        self.kid(set, line, k)
    }

    #[inline]
    fn kid(&mut self, set: &MatchSet, line: &LineRef<'_, '_>, k: u32) -> bool {
        if k == KID_TRUE {
            true
        } else if k & KID_NODE != 0 {
            self.node(set, line, k & !KID_NODE)
        } else {
            self.leaf(set, line, k)
        }
    }

    pub fn eval(&mut self, set: &MatchSet, line: &LineRef<'_, '_>, e: &Expr) -> bool {
        match e {
            Expr::True => true,
            Expr::Leaf(i) => self.leaf(set, line, *i),
            Expr::Node(i) => self.node(set, line, *i),
            Expr::All(v) => v.iter().all(|c| self.eval(set, line, c)),
            Expr::Any(v) => v.iter().any(|c| self.eval(set, line, c)),
            Expr::Not(c) => !self.eval(set, line, c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let n = Net::parse("10.0.0.0/8").expect("valid");
        assert!(n.contains("10.1.2.3".parse().expect("ip")));
        assert!(!n.contains("11.1.2.3".parse().expect("ip")));
        assert!(n.contains("::ffff:10.9.9.9".parse().expect("ip")));
        let n = Net::parse("2001:db8::/32").expect("valid");
        assert!(n.contains("2001:db8::1".parse().expect("ip")));
        assert!(!n.contains("10.0.0.1".parse().expect("ip")));
        let n = Net::parse("0.0.0.0/0").expect("valid");
        assert!(n.contains("8.8.8.8".parse().expect("ip")));
        let n = Net::parse("1.2.3.4").expect("valid");
        assert!(n.contains("1.2.3.4".parse().expect("ip")));
        assert!(!n.contains("1.2.3.5".parse().expect("ip")));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("10.0.0/8").is_err());
    }
}
