//! `kind: burn_rate`: multiwindow, multi-burn-rate error-budget alerting
//! (Google SRE workbook, "Alerting on SLOs").
//!
//! A key (a host, a route of a host) has an SLO, e.g. 99.5% of requests
//! succeed, so an error budget of 0.5%. The burn rate over a window is the
//! window's error ratio divided by the budget: 1 spends the budget exactly
//! over the SLO period, 14.4 spends 2% of a 30-day budget in an hour. A
//! tier `{long, short, burn}` fires when both windows burn at least `burn`:
//! the long window says enough budget went, the short one that it is still
//! going (so the alert stops soon after the outage does). Several tiers
//! catch fast and slow burns.
//!
//! Two guards keep a low-traffic key from paging on noise: the long window
//! needs `min_requests`, and its error ratio must exceed the threshold with
//! confidence: the Wilson score lower bound at `z` standard deviations
//! (default 2), not the point estimate, is compared. 4 errors in 20
//! requests (20%) clear a 7.2% threshold; 3 (15%) do not; at high volume
//! the bound is the ratio.
//!
//! State per key is a ring of [`BUCKETS`] counters per distinct window
//! length, in event time: memory is fixed per key whatever its traffic, a
//! late line still counts in every window it falls in, and a window is
//! exact to 1/[`BUCKETS`] of its length.

use super::{Hit, KeyState, Span};
use crate::detect::compile::{Builder, CompileError};
use crate::detect::matcher::{Expr, MatchSet, Scratch};
use crate::detect::rule::{BurnWindowSpec, DetectSpec, ExprSpec, OneOrMany};
use crate::detect::snapshot::{Dec, DecodeError, Enc};

pub const ACCEPTS: &[&str] = &["slo", "error", "windows", "min_requests"];

/// Buckets per window ring.
pub const BUCKETS: usize = 16;
/// Distinct window lengths one rule may use.
const MAX_WINDOWS: usize = 8;

/// One tier: fires when both windows burn at least `burn`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// Index into [`BurnRate::windows`].
    pub long: usize,
    pub short: usize,
    pub burn: f64,
    /// `burn * budget`: the error ratio both windows must reach.
    pub threshold: f64,
}

/// A compiled `burn_rate` detection.
#[derive(Debug, Clone)]
pub struct BurnRate {
    /// Which of the rule's lines are errors.
    pub error: Expr,
    /// 1 - SLO.
    pub budget: f64,
    /// Distinct window lengths (nanos), ascending.
    pub windows: Vec<i64>,
    pub tiers: Vec<Tier>,
    pub min_requests: u64,
    /// Standard deviations of the Wilson lower bound; 0 compares the ratio.
    pub z: f64,
}

fn bad<T>(near: &str, message: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError {
        near: Some(near.to_string()),
        message: message.into(),
    })
}

/// The SRE workbook's two paging tiers: 2% of a 30-day budget in an hour,
/// 5% in six hours.
fn default_windows() -> Vec<BurnWindowSpec> {
    use crate::detect::rule::Dur;
    const MIN: i64 = 60_000_000_000;
    vec![
        BurnWindowSpec {
            long: Dur(60 * MIN),
            short: Dur(5 * MIN),
            burn: 14.4,
        },
        BurnWindowSpec {
            long: Dur(360 * MIN),
            short: Dur(30 * MIN),
            burn: 6.0,
        },
    ]
}

/// 5xx responses, when the rule names no `error`.
fn default_error() -> ExprSpec {
    ExprSpec {
        field: Some(OneOrMany::One("status".into())),
        gte: Some(500.0),
        lt: Some(600.0),
        ..ExprSpec::default()
    }
}

/// Checks and compiles the `burn_rate` parameters of `d`.
pub fn compile(b: &mut Builder, d: &DetectSpec) -> Result<BurnRate, CompileError> {
    let slo = match d.slo {
        Some(s) => s,
        None => return bad("kind:", "detect kind burn_rate needs slo (e.g. 99.5)"),
    };
    // 99.5 and 0.995 both say 99.5%.
    let target = if slo > 1.0 { slo / 100.0 } else { slo };
    if !(target > 0.0 && target < 1.0) {
        return bad(
            "slo:",
            format!(
                "slo {slo} must be a percentage below 100 (99.5) or a fraction below 1 (0.995)"
            ),
        );
    }
    let budget = 1.0 - target;
    let error = b.expr(d.error.as_ref().unwrap_or(&default_error()))?;
    let specs = d.windows.clone().unwrap_or_else(default_windows);
    if specs.is_empty() {
        return bad(
            "windows:",
            "windows: needs at least one {long, short, burn}",
        );
    }
    let mut windows: Vec<i64> = Vec::new();
    for w in &specs {
        let (long, short) = (w.long.nanos(), w.short.nanos());
        if short <= 0 || long <= 0 {
            return bad("windows:", "window lengths must be > 0");
        }
        if short > long {
            return bad(
                "short:",
                "a tier's short window must not be longer than its long window",
            );
        }
        // Written so that NaN is refused too.
        if w.burn.is_nan() || w.burn <= 0.0 {
            return bad("burn:", "burn must be > 0");
        }
        if w.burn * budget > 1.0 {
            return bad(
                "burn:",
                format!(
                    "burn {} on a {:.3}% budget needs an error ratio above 100%: it can never fire",
                    w.burn,
                    budget * 100.0
                ),
            );
        }
        for len in [long, short] {
            if !windows.contains(&len) {
                windows.push(len);
            }
        }
    }
    if windows.len() > MAX_WINDOWS {
        return bad(
            "windows:",
            format!("at most {MAX_WINDOWS} distinct window lengths per rule"),
        );
    }
    windows.sort_unstable();
    let at = |len: i64| windows.iter().position(|w| *w == len).unwrap_or(0);
    let tiers = specs
        .iter()
        .map(|w| Tier {
            long: at(w.long.nanos()),
            short: at(w.short.nanos()),
            burn: w.burn,
            threshold: w.burn * budget,
        })
        .collect();
    let z = d.z.unwrap_or(2.0);
    if !(0.0..=10.0).contains(&z) {
        return bad("z:", "z must be within 0..=10");
    }
    Ok(BurnRate {
        error,
        budget,
        windows,
        tiers,
        min_requests: d.min_requests.unwrap_or(20).max(1),
        z,
    })
}

/// The longest window: the span of a firing's evidence.
pub fn longest(br: &BurnRate) -> i64 {
    br.windows.last().copied().unwrap_or(0)
}

/// The shortest short window: how often a key still burning fires again
/// by default, so its alert stays open while the outage lasts.
pub fn default_suppress(br: &BurnRate) -> i64 {
    br.tiers
        .iter()
        .map(|t| br.windows[t.short])
        .min()
        .unwrap_or(0)
}

/// A line of the key, in time order or late alike: the rings place a late
/// line in every window it still falls in and drop what is older than
/// themselves.
#[inline]
pub fn step(
    br: &BurnRate,
    s: Span,
    st: &mut KeyState,
    set: &MatchSet,
    scratch: &mut Scratch,
    line: &crate::detect::field::LineRef<'_, '_>,
    ts: i64,
) -> Option<Hit> {
    let error = scratch.eval(set, line, &br.error);
    let burn = st.burn.get_or_insert_with(Box::default);
    if error {
        // A fresh set of sample lines once the errors had stopped.
        if burn.recent_errors(br, ts) == 0 {
            st.samples.clear();
        }
        st.samples.push(line.raw);
    }
    let b = burn.step(br, ts, error)?;
    if ts < st.suppress_until {
        return None;
    }
    let mut hit = Hit::new(
        b.errors,
        Some(b.burn),
        ts.saturating_sub(b.window),
        ts,
        st.samples.take(),
    );
    hit.window = Some(b.window);
    st.suppress_until = ts.saturating_add(s.suppress);
    Some(hit)
}

/// Requests and errors of one window length, in [`BUCKETS`] buckets of
/// `window / BUCKETS`; `head` is the bucket number (event time / width) of
/// the newest line.
#[derive(Debug, Clone, PartialEq)]
struct Ring {
    head: i64,
    /// Event time where bucket `head` starts (`i64::MAX`: not known, as
    /// after a restore), so a line in the head bucket, the common case,
    /// needs no division.
    head_start: i64,
    total: u64,
    errors: u64,
    /// (requests, errors) of bucket `n` at `n % BUCKETS`.
    buckets: [(u32, u32); BUCKETS],
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            head: 0,
            head_start: i64::MAX,
            total: 0,
            errors: 0,
            buckets: [(0, 0); BUCKETS],
        }
    }
}

impl Ring {
    /// Counts a line at `ts` in a window of `window`.
    fn add_at(&mut self, ts: i64, window: i64, error: bool) {
        let width = width_of(window);
        if self.total > 0 && ts >= self.head_start && ts - self.head_start < width {
            let slot = &mut self.buckets[self.head.rem_euclid(BUCKETS as i64) as usize];
            slot.0 = slot.0.saturating_add(1);
            slot.1 = slot.1.saturating_add(u32::from(error));
            self.total += 1;
            self.errors += u64::from(error);
            return;
        }
        self.add(ts.div_euclid(width), error);
        self.head_start = self.head.saturating_mul(width);
    }

    fn add(&mut self, bucket: i64, error: bool) {
        let n = BUCKETS as i64;
        if self.total == 0 || bucket > self.head {
            // Zero the buckets the window slid past (all of them after a
            // gap longer than the window).
            let steps = if self.total == 0 {
                n
            } else {
                (bucket - self.head).min(n)
            };
            for k in 0..steps {
                let slot = &mut self.buckets[(bucket - k).rem_euclid(n) as usize];
                self.total -= u64::from(slot.0);
                self.errors -= u64::from(slot.1);
                *slot = (0, 0);
            }
            self.head = bucket;
        } else if bucket <= self.head - n {
            // Older than this window: it still counts in longer ones.
            return;
        }
        let slot = &mut self.buckets[bucket.rem_euclid(n) as usize];
        slot.0 = slot.0.saturating_add(1);
        slot.1 = slot.1.saturating_add(u32::from(error));
        self.total += 1;
        self.errors += u64::from(error);
    }

    /// Requests and errors in the window ending at bucket `now`.
    fn counts(&self, now: i64) -> (u64, u64) {
        let n = BUCKETS as i64;
        if self.total == 0 || now - self.head >= n {
            return (0, 0);
        }
        if now <= self.head {
            return (self.total, self.errors);
        }
        // Lines of other keys moved time on; this ring has not seen it.
        let (mut t, mut e) = (self.total, self.errors);
        for k in 0..(now - self.head) {
            let slot = self.buckets[(now - k).rem_euclid(n) as usize];
            t -= u64::from(slot.0);
            e -= u64::from(slot.1);
        }
        (t, e)
    }
}

/// Per-key state: one ring per window length of the rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BurnState {
    rings: Vec<Ring>,
}

/// What a line did to a key: fire or not.
pub struct Burning {
    /// Errors in the firing tier's long window.
    pub errors: u64,
    /// Its long window's burn rate (error ratio / budget).
    pub burn: f64,
    /// The firing tier's long window, nanos.
    pub window: i64,
}

fn width_of(window: i64) -> i64 {
    (window / BUCKETS as i64).max(1)
}

fn bucket_of(ts: i64, window: i64) -> i64 {
    ts.div_euclid(width_of(window))
}

impl BurnState {
    /// Empties every ring, keeping their memory: as a new key's.
    pub fn reset(&mut self) {
        self.rings.iter_mut().for_each(|r| *r = Ring::default());
    }

    /// Counts a line at `ts` and checks the tiers.
    pub fn step(&mut self, br: &BurnRate, ts: i64, error: bool) -> Option<Burning> {
        if self.rings.len() != br.windows.len() {
            self.rings = vec![Ring::default(); br.windows.len()];
        }
        for (ring, w) in self.rings.iter_mut().zip(&br.windows) {
            ring.add_at(ts, *w, error);
        }
        if !error {
            // A success lowers every ratio: nothing new can fire.
            return None;
        }
        for t in &br.tiers {
            let (lw, sw) = (br.windows[t.long], br.windows[t.short]);
            let (n, e) = self.rings[t.long].counts(bucket_of(ts, lw));
            if n < br.min_requests || (e as f64) < t.threshold * n as f64 {
                continue;
            }
            let (sn, se) = self.rings[t.short].counts(bucket_of(ts, sw));
            if sn == 0 || (se as f64) < t.threshold * sn as f64 {
                continue;
            }
            if wilson_lower(e, n, br.z) < t.threshold {
                continue;
            }
            return Some(Burning {
                errors: e,
                burn: e as f64 / n as f64 / br.budget,
                window: lw,
            });
        }
        None
    }

    /// Errors in the shortest window as of `ts` (to start a fresh set of
    /// sample lines after a quiet spell).
    pub fn recent_errors(&self, br: &BurnRate, ts: i64) -> u64 {
        match (self.rings.first(), br.windows.first()) {
            (Some(r), Some(w)) => r.counts(bucket_of(ts, *w)).1,
            _ => 0,
        }
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.rings.len() as u64);
        for r in &self.rings {
            e.i64(r.head);
            for (t, x) in &r.buckets {
                e.u32(*t);
                e.u32(*x);
            }
        }
    }

    /// The sums are recomputed from the buckets: they are integers, so
    /// this is exact and a damaged file cannot make them disagree.
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<BurnState, DecodeError> {
        let n = d.len()?;
        if n > MAX_WINDOWS {
            return Err(DecodeError(format!("{n} burn-rate windows")));
        }
        let mut rings = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = Ring {
                head: d.i64()?,
                ..Ring::default()
            };
            for b in r.buckets.iter_mut() {
                *b = (d.u32()?, d.u32()?);
                if b.1 > b.0 {
                    return Err(DecodeError(
                        "burn-rate bucket with more errors than requests".into(),
                    ));
                }
                r.total += u64::from(b.0);
                r.errors += u64::from(b.1);
            }
            rings.push(r);
        }
        Ok(BurnState { rings })
    }
}

/// Wilson score interval's lower bound of `errors / n` at `z` standard
/// deviations: what the true error ratio is at least, with that confidence.
pub fn wilson_lower(errors: u64, n: u64, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = errors as f64 / n;
    if z == 0.0 {
        return p;
    }
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MIN: i64 = 60 * S;

    fn rate(windows: &[(i64, i64, f64)], slo: f64, min_requests: u64, z: f64) -> BurnRate {
        let mut lens: Vec<i64> = windows.iter().flat_map(|w| [w.0, w.1]).collect();
        lens.sort_unstable();
        lens.dedup();
        let at = |l: i64| lens.iter().position(|x| *x == l).unwrap();
        BurnRate {
            error: Expr::True,
            budget: 1.0 - slo,
            tiers: windows
                .iter()
                .map(|w| Tier {
                    long: at(w.0),
                    short: at(w.1),
                    burn: w.2,
                    threshold: w.2 * (1.0 - slo),
                })
                .collect(),
            windows: lens,
            min_requests,
            z,
        }
    }

    #[test]
    fn wilson_bound_is_below_the_ratio_and_tightens_with_volume() {
        assert_eq!(wilson_lower(0, 0, 2.0), 0.0);
        assert_eq!(wilson_lower(3, 10, 0.0), 0.3);
        let small = wilson_lower(8, 20, 2.0);
        let large = wilson_lower(8000, 20000, 2.0);
        assert!(
            small < 0.4 && large < 0.4 && large > small,
            "{small} {large}"
        );
        assert!((large - 0.4).abs() < 0.01);
        // The worked numbers of the module doc, at 99.5% and 14.4x.
        assert!(wilson_lower(4, 20, 2.0) >= 0.072);
        assert!(wilson_lower(3, 20, 2.0) < 0.072);
    }

    #[test]
    fn ring_counts_a_sliding_window_and_late_lines() {
        let w = 16 * S; // 1 s buckets
        let mut r = Ring::default();
        for t in 0..16 {
            r.add(bucket_of(t * S, w), t % 4 == 0);
        }
        assert_eq!((r.total, r.errors), (16, 4));
        // A line 3 s late lands in its bucket.
        r.add(bucket_of(12 * S, w), true);
        assert_eq!((r.total, r.errors), (17, 5));
        // 20 s: buckets 0..=4 slid out (5 lines, 2 errors).
        r.add(bucket_of(20 * S, w), false);
        assert_eq!((r.total, r.errors), (13, 3));
        // Too late for this window: ignored.
        r.add(bucket_of(2 * S, w), true);
        assert_eq!((r.total, r.errors), (13, 3));
        // Read ahead of the ring: what is left of the window then.
        assert_eq!(r.counts(bucket_of(30 * S, w)), (2, 0));
        assert_eq!(r.counts(bucket_of(40 * S, w)), (0, 0));
        // A gap longer than the window empties it.
        r.add(bucket_of(100 * S, w), true);
        assert_eq!((r.total, r.errors), (1, 1));
    }

    #[test]
    fn the_head_bucket_shortcut_counts_like_the_division() {
        let w = 60 * S;
        let (mut fast, mut plain) = (Ring::default(), Ring::default());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut t = 1_700_000_000 * S;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += match x % 50 {
                0 => 90 * S,
                1..=5 => -((x >> 8) as i64 % (20 * S)),
                _ => (x >> 8) as i64 % (S / 2),
            };
            let error = x.is_multiple_of(7);
            fast.add_at(t, w, error);
            plain.add(bucket_of(t, w), error);
            assert_eq!(
                (fast.head, fast.total, fast.errors, fast.buckets),
                (plain.head, plain.total, plain.errors, plain.buckets),
                "line {i}"
            );
        }
    }

    #[test]
    fn a_tier_needs_both_windows_volume_and_confidence() {
        // 99.5%: 14.4x is a 7.2% error ratio.
        let br = rate(&[(5 * MIN, MIN, 14.4)], 0.995, 20, 2.0);
        let mut st = BurnState::default();
        let mut t = 0;
        // Ten minutes at 1%: never.
        for i in 0..1200 {
            t = i * S / 2;
            assert!(st.step(&br, t, i % 100 == 0).is_none(), "line {i}");
        }
        // Then 40% errors: fires within a minute and a half.
        let start = t;
        let fired = (1..).find_map(|i| {
            t = start + i * S / 2;
            st.step(&br, t, i % 5 < 2).map(|b| (t - start, b))
        });
        let (after, b) = fired.expect("fires");
        assert!(after <= 90 * S, "after {}s", after / S);
        assert!(b.burn >= 14.4 && b.window == 5 * MIN, "{}", b.burn);

        // The same errors at low volume: 3 of 15 requests is too few.
        let mut st = BurnState::default();
        for i in 0..15 {
            assert!(st.step(&br, i * 10 * S, i % 5 == 0).is_none());
        }
    }

    #[test]
    fn short_window_stops_a_finished_outage_from_firing() {
        let br = rate(&[(60 * MIN, 5 * MIN, 14.4)], 0.995, 20, 0.0);
        let mut st = BurnState::default();
        // 10 minutes at 50%: the hour burns.
        for i in 0..600 {
            st.step(&br, i * S, i % 2 == 0);
        }
        // Then 10 minutes clean; one error later: the 5m window is at 1/300.
        for i in 600..1200 {
            assert!(st.step(&br, i * S, false).is_none());
        }
        assert!(st.step(&br, 1200 * S, true).is_none());
    }

    fn load_err(detect: &str) -> String {
        let yaml = format!("id: b\ntitle: b\nseverity: critical\ndetect:\n{detect}");
        match crate::detect::load::parse_str(&yaml, std::path::Path::new("b.yaml")) {
            Ok(_) => panic!("accepted: {detect}"),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn bad_parameters_are_named_with_their_line() {
        let e = load_err("  kind: burn_rate\n");
        assert!(e.contains("needs slo"), "{e}");
        let e = load_err("  kind: burn_rate\n  slo: 100\n");
        assert!(e.contains("percentage below 100"), "{e}");
        let e = load_err(
            "  kind: burn_rate\n  slo: 99.5\n  windows:\n    - {long: 5m, short: 1h, burn: 2}\n",
        );
        assert!(
            e.contains("short window must not be longer") && e.contains("line: 8"),
            "{e}"
        );
        let e = load_err(
            "  kind: burn_rate\n  slo: 99.5\n  windows:\n    - {long: 1h, short: 5m, burn: 300}\n",
        );
        assert!(e.contains("can never fire"), "{e}");
        let e = load_err(
            "  kind: burn_rate\n  slo: 99.5\n  windows:\n    - {long: 1h, shrt: 5m, burn: 3}\n",
        );
        assert!(e.contains("unknown field `shrt`"), "{e}");
        let e = load_err("  kind: burn_rate\n  slo: 99.5\n  window: 5m\n");
        assert!(
            e.contains("window is not used by detect kind burn_rate"),
            "{e}"
        );
        let e = load_err("  kind: spike\n  window: 1m\n  slo: 99\n");
        assert!(e.contains("slo is not used by detect kind spike"), "{e}");
    }

    #[test]
    fn defaults_are_the_workbook_pages_on_5xx() {
        let yaml = "id: b\ntitle: b\nseverity: critical\ndetect: {kind: burn_rate, slo: 0.999}\n";
        let rules = crate::detect::load::parse_str(yaml, std::path::Path::new("b.yaml")).unwrap();
        let mut b = Builder::new();
        let br = compile(&mut b, &rules[0].spec.detect).unwrap();
        assert!((br.budget - 0.001).abs() < 1e-12);
        assert_eq!(br.windows, vec![5 * MIN, 30 * MIN, 60 * MIN, 360 * MIN]);
        let tiers: Vec<(i64, i64, f64)> = br
            .tiers
            .iter()
            .map(|t| (br.windows[t.long], br.windows[t.short], t.burn))
            .collect();
        assert_eq!(
            tiers,
            vec![(60 * MIN, 5 * MIN, 14.4), (360 * MIN, 30 * MIN, 6.0)]
        );
        assert_eq!((br.min_requests, br.z), (20, 2.0));
        assert_eq!(default_suppress(&br), 5 * MIN);
    }

    #[test]
    fn state_round_trips() {
        let br = rate(
            &[(5 * MIN, MIN, 14.4), (60 * MIN, 5 * MIN, 14.4)],
            0.995,
            20,
            2.0,
        );
        let mut st = BurnState::default();
        for i in 0..500 {
            st.step(&br, i * S, i % 7 == 0);
        }
        let mut e = Enc::default();
        st.encode(&mut e);
        let mut d = Dec::new(&e.buf);
        let mut back = BurnState::decode(&mut d).expect("decodes");
        assert!(d.is_empty());
        let mut again = Enc::default();
        back.encode(&mut again);
        assert_eq!(again.buf, e.buf);
        // The restored state goes on counting like the original.
        for i in 500..700 {
            assert_eq!(
                back.step(&br, i * S, i % 3 == 0).map(|b| b.errors),
                st.step(&br, i * S, i % 3 == 0).map(|b| b.errors),
                "line {i}"
            );
        }
        let (mut x, mut y) = (Enc::default(), Enc::default());
        back.encode(&mut x);
        st.encode(&mut y);
        assert_eq!(x.buf, y.buf);
    }
}
