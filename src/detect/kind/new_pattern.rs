//! `kind: new_pattern`: a pattern (a log statement, `src/patterns/`) never
//! seen before for the key (by default the tenant; `key: source` or `app`
//! for one per log) fires once the key's learning period has passed:
//! "a new ERROR pattern on the checkout service". The rule's `match:`
//! narrows the lines mined (a field, a service); `level:` keeps the lines at
//! that level or worse. It fires when the new pattern reached `count` lines
//! (default 1), with the template, its first lines and `pattern:<id>`.
//!
//! A pattern is new when the line opened it in the key's miner: a line
//! that joins a known pattern, or opens a variable in one (a sixth user
//! name), is not. A pattern evicted from the miner (beyond 2,000 per key,
//! the least recently seen) can be new again.

use super::pattern_key::{at_level, compile_level, PatternKey};
use super::{Hit, KeyState, MIN};
use crate::detect::compile::{err, CompileError};
use crate::detect::field::LineRef;
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["learning", "count", "level"];

#[derive(Debug, Clone)]
pub struct NewPattern {
    pub learning: i64,
    pub count: u64,
    pub level: Option<u8>,
}

pub fn compile(d: &DetectSpec) -> Result<NewPattern, CompileError> {
    let learning = d.learning.map(|l| l.nanos()).unwrap_or(24 * 60 * MIN);
    let count = d.count.unwrap_or(1);
    if count == 0 {
        return err(Some("count:".into()), "count must be > 0");
    }
    Ok(NewPattern {
        learning,
        count,
        level: compile_level(d.level.as_deref())?,
    })
}

impl NewPattern {
    /// One line of the key, in any order: a pattern is new or not
    /// whatever the order its lines arrive in.
    #[inline]
    pub fn step(&self, st: &mut KeyState, line: &LineRef<'_, '_>, ts: i64) -> Option<Hit> {
        if self.level.is_some_and(|l| !at_level(line, l)) {
            return None;
        }
        let pk = st.pat.get_or_insert_with(|| Box::new(PatternKey::new(ts)));
        let mined = pk.mine(line, ts);
        let learned = ts >= pk.first.saturating_add(self.learning);
        if mined.is_new {
            if !learned {
                return None;
            }
        } else if !pk.stats.contains_key(&mined.id) {
            // Known, or new and fired already.
            return None;
        }
        // Pending: new after learning, fewer than `count` lines so far.
        let stat = pk.stat(mined.id, ts);
        if mined.is_new {
            stat.bucket = ts;
        }
        stat.count += 1;
        stat.last = ts;
        stat.samples.push(line.raw);
        if stat.count < self.count {
            return None;
        }
        let (count, first_ts, samples) = (stat.count, stat.bucket, stat.samples.take());
        pk.stats.remove(&mined.id);
        let template = pk.template(&mined);
        let mut hit = Hit::new(count, None, first_ts, ts, samples);
        hit.pattern = Some(Box::new((mined.id, template)));
        Some(hit)
    }
}
