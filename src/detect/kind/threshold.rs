//! `kind: threshold`: `count` matching lines of a key within `window`, or
//! a numeric field's `sum` reaching `min_sum`.

use super::{need, Hit, KeyState, Span};
use crate::detect::compile::{err, CompileError};
use crate::detect::field::{Field, LineRef};
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["window", "count", "sum", "min_sum"];

#[derive(Debug, Clone)]
pub struct Threshold {
    pub count: u64,
    pub sum: Option<(Field, f64)>,
}

pub fn compile(d: &DetectSpec, window: Option<i64>) -> Result<Threshold, CompileError> {
    let sum = match (&d.sum, d.min_sum) {
        (Some(f), Some(min)) => {
            let f = Field::parse(f).or_else(|m| err(Some(f.clone()), m))?;
            if !f.is_numeric() {
                return err(
                    Some("sum:".into()),
                    format!("sum of non-numeric field {}", f.name()),
                );
            }
            Some((f, min))
        }
        (None, None) => None,
        _ => return err(Some("sum".into()), "sum and min_sum go together"),
    };
    if sum.is_none() && d.count.is_none() {
        return Err(need(d.kind, "count (or sum with min_sum)"));
    }
    window.ok_or_else(|| need(d.kind, "window"))?;
    Ok(Threshold {
        count: d.count.unwrap_or(1).max(1),
        sum,
    })
}

impl Threshold {
    /// What the line adds to the window: 1, or its `sum` field.
    #[inline]
    fn value(&self, line: &LineRef<'_, '_>) -> f64 {
        match self.sum {
            Some((f, _)) => line.number(f).unwrap_or(0.0),
            None => 1.0,
        }
    }

    #[inline]
    fn reached(&self, count: u64, sum: f64) -> bool {
        match self.sum {
            Some((_, min)) => sum >= min,
            None => count >= self.count,
        }
    }

    #[inline]
    pub fn step(&self, s: Span, st: &mut KeyState, line: &LineRef<'_, '_>, ts: i64) -> Option<Hit> {
        if ts < st.suppress_until {
            return None;
        }
        st.a.add(ts, s.window, s.lateness, self.value(line));
        if st.a.count() == 1 {
            st.samples.clear();
        }
        st.samples.push(line.raw);
        if !self.reached(st.a.count(), st.a.sum()) {
            return None;
        }
        let v = self.sum.map(|_| st.a.sum());
        let hit = Hit::new(
            st.a.count(),
            v,
            st.a.first_ts(),
            st.a.last_ts,
            st.samples.take(),
        );
        st.a.clear();
        st.suppress_until = ts.saturating_add(s.suppress);
        Some(hit)
    }

    #[inline]
    pub fn step_late(
        &self,
        s: Span,
        st: &mut KeyState,
        line: &LineRef<'_, '_>,
        ts: i64,
    ) -> Option<Hit> {
        if ts < st.suppress_until {
            return None; // in time order, the firing's window took it
        }
        st.a.add(ts, s.window, s.lateness, self.value(line));
        st.samples.push(line.raw);
        let mut hit = None;
        st.a.windows_containing(ts, s.window, |c, sum, first, end| {
            let ok = self.reached(c, sum);
            if ok {
                hit = Some((c, sum, first, end));
            }
            ok
        });
        let (c, sum, first, end) = hit?;
        let v = self.sum.map(|_| sum);
        let hit = Hit::new(c, v, first, end, st.samples.take());
        st.a.clear();
        st.suppress_until = st.suppress_until.max(end.saturating_add(s.suppress));
        Some(hit)
    }
}
