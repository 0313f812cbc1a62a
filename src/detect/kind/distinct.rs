//! `kind: distinct`: `count` distinct values of `field` for a key within
//! `window` (one client trying many user names).

use std::hash::{Hash, Hasher};

use super::{need, Hit, KeyState, Span};
use crate::detect::compile::{fields, CompileError};
use crate::detect::field::{Field, LineRef};
use crate::detect::matcher::Scratch;
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["window", "count", "field"];

/// Ends each value in the hashed text. Snapshots hold the hashes, so this
/// stays what it was when they were written.
const VALUE_END: char = '\u{1f}';

#[derive(Debug, Clone)]
pub struct Distinct {
    pub field: Vec<Field>,
    pub count: u64,
}

pub fn compile(d: &DetectSpec, window: Option<i64>) -> Result<Distinct, CompileError> {
    window.ok_or_else(|| need(d.kind, "window"))?;
    let field = fields(&d.field)?;
    if field.is_empty() {
        return Err(need(d.kind, "field"));
    }
    Ok(Distinct {
        field,
        count: d.count.ok_or_else(|| need(d.kind, "count"))?.max(1),
    })
}

impl Distinct {
    /// The hash of the line's values of `field`.
    #[inline]
    fn value_hash(&self, scratch: &mut Scratch, line: &LineRef<'_, '_>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let buf = &mut scratch.value_buf;
        buf.clear();
        for f in &self.field {
            line.write(*f, buf);
            buf.push(VALUE_END);
        }
        buf.hash(&mut h);
        h.finish()
    }

    /// Once enough values were seen: the values within the window ending
    /// at `end`, and a hit if they are still enough.
    #[inline]
    fn check(&self, s: Span, st: &mut KeyState, ts: i64, end: i64) -> Option<Hit> {
        if (st.distinct.len() as u64) < self.count {
            return None;
        }
        let since = end.saturating_sub(s.window);
        st.distinct.retain(|_, t| *t > since);
        let n = st.distinct.len() as u64;
        if n < self.count {
            return None;
        }
        let first = st.distinct.values().copied().min().unwrap_or(ts);
        let hit = Hit::new(n, None, first, end, st.samples.take());
        st.distinct.clear();
        st.suppress_until = end.saturating_add(s.suppress);
        Some(hit)
    }

    #[inline]
    pub fn step(
        &self,
        s: Span,
        st: &mut KeyState,
        scratch: &mut Scratch,
        line: &LineRef<'_, '_>,
        ts: i64,
    ) -> Option<Hit> {
        if ts < st.suppress_until {
            return None;
        }
        let hv = self.value_hash(scratch, line);
        if st.distinct.is_empty() {
            st.distinct_first = ts;
            st.samples.clear();
        }
        if st.distinct.insert(hv, ts).is_none() {
            st.samples.push(line.raw);
        }
        self.check(s, st, ts, ts)
    }

    #[inline]
    pub fn step_late(
        &self,
        s: Span,
        st: &mut KeyState,
        scratch: &mut Scratch,
        line: &LineRef<'_, '_>,
        ts: i64,
    ) -> Option<Hit> {
        if ts < st.suppress_until {
            return None;
        }
        let hv = self.value_hash(scratch, line);
        if st.distinct.is_empty() {
            st.distinct_first = ts;
            st.samples.clear();
        }
        match st.distinct.entry(hv) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if *e.get() < ts {
                    e.insert(ts);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(ts);
                st.samples.push(line.raw);
            }
        }
        // The window ending at the key's newest line.
        let end = st.clock;
        self.check(s, st, ts, end)
    }
}
