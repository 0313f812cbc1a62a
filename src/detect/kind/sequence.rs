//! `kind: sequence`: `count` lines matching `first`, then one matching
//! `then`, for a key within `window` (failures, then a success).

use super::{need, Hit, KeyState, Span};
use crate::detect::compile::{Builder, CompileError};
use crate::detect::field::LineRef;
use crate::detect::matcher::{Expr, MatchSet, Scratch};
use crate::detect::rule::DetectSpec;
use crate::detect::window::MAX_SAMPLES;

pub const ACCEPTS: &[&str] = &["window", "count", "first", "then"];

#[derive(Debug, Clone)]
pub struct Sequence {
    pub first: Expr,
    pub then: Expr,
    pub count: u64,
}

pub fn compile(
    b: &mut Builder,
    d: &DetectSpec,
    window: Option<i64>,
) -> Result<Sequence, CompileError> {
    window.ok_or_else(|| need(d.kind, "window"))?;
    Ok(Sequence {
        first: b.expr(d.first.as_ref().ok_or_else(|| need(d.kind, "first"))?)?,
        then: b.expr(d.then.as_ref().ok_or_else(|| need(d.kind, "then"))?)?,
        count: d.count.unwrap_or(1).max(1),
    })
}

impl Sequence {
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
        st.a.expire(ts, w, g);
        let enough = st.a.count() >= self.count;
        if enough && scratch.eval(set, line, &self.then) {
            st.samples.push(line.raw);
            let hit = Hit::new(st.a.count(), None, st.a.first_ts(), ts, st.samples.take());
            st.a.clear();
            st.suppress_until = ts.saturating_add(s.suppress);
            return Some(hit);
        } else if scratch.eval(set, line, &self.first) {
            st.a.add(ts, w, g, 1.0);
            if st.a.count() == 1 {
                st.samples.clear();
            }
            // Keep one slot for the line that completes the sequence.
            if st.samples.len() < MAX_SAMPLES - 1 {
                st.samples.push(line.raw);
            }
        } else if !enough && scratch.eval(set, line, &self.then) {
            // Too early for now; `first` lines from a source behind
            // may still arrive (see `step_late`).
            st.then_ts = ts;
        }
        None
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
        let is_then = scratch.eval(set, line, &self.then);
        if is_then {
            let (n, _, from) = st.a.window_at(ts, w);
            if n >= self.count {
                st.samples.push(line.raw);
                let hit = Hit::new(n, None, from, ts, st.samples.take());
                st.a.clear();
                st.suppress_until = st.suppress_until.max(ts.saturating_add(s.suppress));
                return Some(hit);
            }
        }
        if scratch.eval(set, line, &self.first) {
            st.a.add(ts, w, g, 1.0);
            if st.samples.len() < MAX_SAMPLES - 1 {
                st.samples.push(line.raw);
            }
            // A `then` line already seen after this one may now have
            // enough `first` lines before it.
            let then_ts = st.then_ts;
            if then_ts > ts && then_ts > st.suppress_until {
                let (n, _, from) = st.a.window_at(then_ts, w);
                if n >= self.count {
                    let hit = Hit::new(n, None, from, then_ts, st.samples.take());
                    st.a.clear();
                    st.suppress_until = st.suppress_until.max(then_ts.saturating_add(s.suppress));
                    return Some(hit);
                }
            }
        } else if is_then {
            st.then_ts = st.then_ts.max(ts);
        }
        None
    }
}
