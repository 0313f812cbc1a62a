//! `kind: match`: every matching line fires, once per `suppress` per key.

use super::{Hit, KeyState, Span, MIN};
use crate::detect::window::Samples;

pub const ACCEPTS: &[&str] = &["window"];
/// The window shown in a firing (and the default suppression).
pub const DEFAULT_WINDOW: i64 = 60 * MIN;

#[inline]
pub fn step(s: Span, st: &mut KeyState, raw: &str, ts: i64) -> Option<Hit> {
    if ts < st.suppress_until {
        return None;
    }
    st.suppress_until = ts.saturating_add(s.suppress);
    Some(one_line(raw, ts))
}

#[inline]
pub fn step_late(s: Span, st: &mut KeyState, raw: &str, ts: i64) -> Option<Hit> {
    // Suppression is symmetric for a late line: in time order it
    // would have fired and muted the later firing instead.
    let last = st.suppress_until.saturating_sub(s.suppress);
    if st.suppress_until != 0 && ts.abs_diff(last) < s.suppress.unsigned_abs() {
        return None;
    }
    st.suppress_until = st.suppress_until.max(ts.saturating_add(s.suppress));
    Some(one_line(raw, ts))
}

/// A firing on one line alone (match, new_value).
#[inline]
pub fn one_line(raw: &str, ts: i64) -> Hit {
    let mut samples = Samples::default();
    samples.push(raw);
    Hit::new(1, None, ts, ts, samples.take())
}
