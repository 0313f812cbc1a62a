//! `kind: flatline`: a key that has been sending lines falls silent for
//! `after`. Lines only mark the key alive; the engine's tick fires, by
//! the clock of the key's source (engine.rs, `Sources`).

use super::{need, positive, Hit, KeyState};
use crate::detect::compile::CompileError;
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["after"];

#[derive(Debug, Clone)]
pub struct Flatline {
    /// Silence that fires, nanos; also the rule's window.
    pub after: i64,
}

pub fn compile(d: &DetectSpec) -> Result<Flatline, CompileError> {
    let after = d.after.ok_or_else(|| need(d.kind, "after"))?.nanos();
    positive("after", Some(after))?;
    Ok(Flatline { after })
}

/// A line of the key, in time order (a late one says nothing about
/// silence: the key's last line is newer).
#[inline]
pub fn step(st: &mut KeyState, raw: &str, ts: i64) {
    if ts >= st.last_seen {
        st.last_seen = ts;
        st.samples.clear();
        st.samples.push(raw);
    }
    st.fired = false;
}

impl Flatline {
    /// The tick: `at` is now on the clock of the key's source. A silence
    /// fires once, until the key's next line.
    #[inline]
    pub fn tick(&self, st: &mut KeyState, at: i64) -> Option<Hit> {
        if st.fired || at.saturating_sub(st.last_seen) < self.after {
            return None;
        }
        st.fired = true;
        Some(Hit::new(0, None, st.last_seen, at, st.samples.take()))
    }
}
