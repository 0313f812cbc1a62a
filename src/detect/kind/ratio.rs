//! `kind: ratio`: the share of a key's lines that match `numerator`
//! reaches `ratio` within `window`, over at least `min_volume` lines.

use super::{need, Hit, KeyState, Span};
use crate::detect::compile::{err, Builder, CompileError};
use crate::detect::field::LineRef;
use crate::detect::matcher::{Expr, MatchSet, Scratch};
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["window", "numerator", "ratio", "min_volume"];

#[derive(Debug, Clone)]
pub struct Ratio {
    pub numerator: Expr,
    pub ratio: f64,
    pub min_volume: u64,
}

pub fn compile(
    b: &mut Builder,
    d: &DetectSpec,
    window: Option<i64>,
) -> Result<Ratio, CompileError> {
    window.ok_or_else(|| need(d.kind, "window"))?;
    let ratio = d.ratio.ok_or_else(|| need(d.kind, "ratio"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return err(Some("ratio:".into()), "ratio must be within 0..=1");
    }
    let numerator = b.expr(
        d.numerator
            .as_ref()
            .ok_or_else(|| need(d.kind, "numerator"))?,
    )?;
    Ok(Ratio {
        numerator,
        ratio,
        min_volume: d.min_volume.unwrap_or(1).max(1),
    })
}

impl Ratio {
    #[inline]
    fn reached(&self, n: u64, d: u64) -> bool {
        d >= self.min_volume && n > 0 && n as f64 >= self.ratio * d as f64
    }

    #[inline]
    pub fn step(
        &self,
        s: Span,
        st: &mut KeyState,
        set: &MatchSet,
        scratch: &mut Scratch,
        line: &LineRef<'_, '_>,
        ts: i64,
    ) -> Option<Hit> {
        if ts < st.suppress_until {
            return None;
        }
        let (w, g) = (s.window, s.lateness);
        st.b.add(ts, w, g, 1.0);
        if scratch.eval(set, line, &self.numerator) {
            st.a.add(ts, w, g, 1.0);
            if st.a.count() == 1 {
                st.samples.clear();
            }
            st.samples.push(line.raw);
        } else {
            st.a.expire(ts, w, g);
        }
        let (n, d) = (st.a.count(), st.b.count());
        if !self.reached(n, d) {
            return None;
        }
        let first = st.b.first_ts();
        Some(fire(st, n, d, first, ts, ts.saturating_add(s.suppress)))
    }

    #[inline]
    pub fn step_late(
        &self,
        s: Span,
        st: &mut KeyState,
        set: &MatchSet,
        scratch: &mut Scratch,
        line: &LineRef<'_, '_>,
        ts: i64,
    ) -> Option<Hit> {
        if ts < st.suppress_until {
            return None;
        }
        let (w, g) = (s.window, s.lateness);
        st.b.add(ts, w, g, 1.0);
        if scratch.eval(set, line, &self.numerator) {
            st.a.add(ts, w, g, 1.0);
            st.samples.push(line.raw);
        }
        let mut hit = None;
        st.b.ratio_windows_containing(&st.a, ts, w, |n, d, first, end| {
            let ok = self.reached(n, d);
            if ok {
                hit = Some((n, d, first, end));
            }
            ok
        });
        let (n, d, first, end) = hit?;
        let until = st.suppress_until.max(end.saturating_add(s.suppress));
        Some(fire(st, n, d, first, end, until))
    }
}

/// `n` of `d` lines in the window `first..=end`: the hit; the key starts
/// over, suppressed until `until`.
#[inline]
fn fire(st: &mut KeyState, n: u64, d: u64, first: i64, end: i64, until: i64) -> Hit {
    let share = n as f64 / d as f64;
    let hit = Hit::new(n, Some(share), first, end, st.samples.take());
    st.a.clear();
    st.b.clear();
    st.suppress_until = until;
    hit
}
