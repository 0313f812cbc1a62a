//! `kind: pattern_spike`: one pattern's lines in a `window`-wide bucket
//! stand `z` standard deviations above that pattern's own baseline (an
//! exponentially weighted mean and variance of its earlier buckets, silent
//! ones counting as zeros), after `warmup` buckets of the pattern and with
//! at least `count` lines: "a warning that was rare is now a thousand a
//! minute". Patterns are mined per key as `new_pattern` does.
//!
//! The deviation is at least the square root of the mean (the spread of a
//! steady Poisson rate), so a busy pattern with a smooth history does not
//! fire on noise; and the bucket must hold at least twice the baseline
//! mean. A line older than its pattern's current bucket is mined but not
//! counted (the bucket it belonged to is closed).

use super::pattern_key::{at_level, compile_level, PatternKey};
use super::spike::fold;
use super::{Hit, KeyState, Span};
use crate::detect::compile::{err, CompileError};
use crate::detect::field::LineRef;
use crate::detect::rule::DetectSpec;

pub const ACCEPTS: &[&str] = &["window", "count", "alpha", "z", "warmup", "level"];

#[derive(Debug, Clone)]
pub struct PatternSpike {
    pub alpha: f64,
    pub z: f64,
    pub warmup: u32,
    pub min_count: u64,
    pub level: Option<u8>,
}

pub fn compile(d: &DetectSpec, window: Option<i64>) -> Result<PatternSpike, CompileError> {
    window.ok_or_else(|| super::need(d.kind, "window (the bucket width)"))?;
    let alpha = d.alpha.unwrap_or(0.1);
    if !(alpha > 0.0 && alpha <= 1.0) {
        return err(Some("alpha:".into()), "alpha must be within (0, 1]");
    }
    let z = d.z.unwrap_or(6.0);
    if z.is_nan() || z <= 0.0 {
        return err(Some("z:".into()), "z must be > 0");
    }
    Ok(PatternSpike {
        alpha,
        z,
        warmup: d.warmup.unwrap_or(10).max(1),
        min_count: d.count.unwrap_or(100),
        level: compile_level(d.level.as_deref())?,
    })
}

impl PatternSpike {
    #[inline]
    pub fn step(&self, s: Span, st: &mut KeyState, line: &LineRef<'_, '_>, ts: i64) -> Option<Hit> {
        if self.level.is_some_and(|l| !at_level(line, l)) {
            return None;
        }
        let pk = st.pat.get_or_insert_with(|| Box::new(PatternKey::new(ts)));
        let mined = pk.mine(line, ts);
        let bucket = ts.div_euclid(s.window.max(1));
        let stat = pk.stat(mined.id, ts);
        if stat.seen == 0 && stat.count == 0 {
            stat.bucket = bucket;
        }
        if bucket < stat.bucket {
            return None;
        }
        if bucket > stat.bucket {
            fold(
                &mut stat.mean,
                &mut stat.var,
                &mut stat.seen,
                stat.count as f64,
                self.alpha,
            );
            // Silent buckets count as zeros; after a long gap the
            // baseline has decayed anyway.
            for _ in 0..(bucket - stat.bucket - 1).min(200) {
                fold(
                    &mut stat.mean,
                    &mut stat.var,
                    &mut stat.seen,
                    0.0,
                    self.alpha,
                );
            }
            stat.bucket = bucket;
            stat.count = 0;
            stat.samples.clear();
        }
        stat.count += 1;
        stat.last = stat.last.max(ts);
        stat.samples.push(line.raw);
        if stat.seen < self.warmup || stat.count < self.min_count || ts < stat.suppress_until {
            return None;
        }
        let n = stat.count as f64;
        let sd = stat.var.sqrt().max(stat.mean.sqrt()).max(1.0);
        let score = (n - stat.mean) / sd;
        if score < self.z || n < 2.0 * stat.mean {
            return None;
        }
        stat.suppress_until = ts.saturating_add(s.suppress);
        let start = bucket * s.window;
        let hit_samples = stat.samples.take();
        let count = stat.count;
        let template = pk.template(&mined);
        let mut hit = Hit::new(count, Some(score), start, ts, hit_samples);
        hit.pattern = Some(Box::new((mined.id, template)));
        Some(hit)
    }
}
