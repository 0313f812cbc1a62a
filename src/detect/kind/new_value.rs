//! `kind: new_value`: a key (the `key` fields' values) never seen before
//! fires, once `learning` has passed since the rule started.

use super::{match_, need, Hit, MIN};
use crate::detect::compile::CompileError;
use crate::detect::field::Field;
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["learning"];

#[derive(Debug, Clone)]
pub struct NewValue {
    pub learning: i64,
}

pub fn compile(d: &DetectSpec, key: &[Field]) -> Result<NewValue, CompileError> {
    let learning = d.learning.map(|l| l.nanos()).unwrap_or(24 * 60 * MIN);
    if key.is_empty() {
        return Err(need(d.kind, "key (the fields whose new values fire)"));
    }
    Ok(NewValue { learning })
}

impl NewValue {
    /// A key first seen at `ts` by a rule that started at `started`: the
    /// engine keeps no state for the key beyond its presence in the map.
    #[inline]
    pub fn new_key(&self, started: i64, raw: &str, ts: i64) -> Option<Hit> {
        (ts >= started.saturating_add(self.learning)).then(|| match_::one_line(raw, ts))
    }
}
