//! `kind: spike`: a key's count in a `window`-wide bucket is `z` standard
//! deviations above its own baseline (an exponentially weighted mean and
//! variance of its earlier buckets, silent ones counting as zeros), after
//! `warmup` buckets and with at least `count` lines.
//!
//! A late line lands in its own bucket: closed buckets stay open to late
//! lines for the rule's grace ([`OpenBuckets`]), and the baseline after
//! them is folded again.

use super::{Hit, KeyState, Span};
use crate::detect::compile::{err, CompileError};
use crate::detect::rule::DetectSpec;
use crate::detect::window::Samples;

pub const ACCEPTS: &[&str] = &["window", "count", "alpha", "z", "warmup"];
/// Open spike buckets per key at most, whatever the grace.
pub const MAX_OPEN_BUCKETS: i64 = 16;

#[derive(Debug, Clone)]
pub struct Spike {
    pub alpha: f64,
    pub z: f64,
    pub warmup: u32,
    pub min_count: u64,
}

pub fn compile(d: &DetectSpec, window: Option<i64>) -> Result<Spike, CompileError> {
    window.ok_or_else(|| super::need(d.kind, "window (the bucket width)"))?;
    let alpha = d.alpha.unwrap_or(0.1);
    if !(alpha > 0.0 && alpha <= 1.0) {
        return err(Some("alpha:".into()), "alpha must be within (0, 1]");
    }
    Ok(Spike {
        alpha,
        z: d.z.unwrap_or(4.0),
        warmup: d.warmup.unwrap_or(10).max(1),
        min_count: d.count.unwrap_or(100),
    })
}

/// A spike fires at most once per four buckets by default.
pub fn default_suppress(window: i64) -> i64 {
    window * 4
}

/// A spike key's closed buckets that late lines may still change: the
/// baseline before `from`, and the non-empty buckets from `from` on,
/// oldest first. The key's `mean`/`var`/`seen` fold them in (and zeros for
/// the silent buckets); a late line changes one and they are folded again
/// ([`fold_open`]).
#[derive(Debug)]
pub struct OpenBuckets {
    pub base: (f64, f64, u32),
    pub from: i64,
    pub buckets: Vec<(i64, u64)>,
}

/// Closed spike buckets kept open to late lines: the grace in buckets.
fn open_buckets(s: Span) -> i64 {
    (s.lateness.saturating_add(s.window - 1) / s.window.max(1)).clamp(0, MAX_OPEN_BUCKETS)
}

/// Whether a line at `ts` is too old for every bucket of the key still
/// open to it.
#[inline]
pub fn too_old(s: Span, st: &KeyState, ts: i64) -> bool {
    let bucket = ts.div_euclid(s.window.max(1));
    match (st.bucket, &st.open) {
        (Some(b), _) if bucket >= b => false,
        (Some(b), Some(o)) => bucket < o.from || bucket < b - open_buckets(s),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl Spike {
    #[inline]
    pub fn step(&self, s: Span, st: &mut KeyState, raw: &str, ts: i64) -> Option<Hit> {
        let w = s.window;
        let bucket = ts.div_euclid(w.max(1));
        match st.bucket {
            // Late lines go to `step_late`; in order, a line is never
            // in a bucket before the key's current one.
            Some(b) if bucket < b => return None,
            Some(b) if bucket > b => {
                close_bucket(s, st, b, bucket, self.alpha);
                st.bucket = Some(bucket);
                st.bucket_count = 0;
                st.samples.clear();
            }
            Some(_) => {}
            None => st.bucket = Some(bucket),
        }
        st.bucket_count += 1;
        st.samples.push(raw);
        if st.seen >= self.warmup && st.bucket_count >= self.min_count && ts >= st.suppress_until {
            let sd = st.var.sqrt().max(1.0);
            let score = (st.bucket_count as f64 - st.mean) / sd;
            if score >= self.z {
                let start = bucket * w;
                let hit = Hit::new(st.bucket_count, Some(score), start, ts, st.samples.take());
                st.suppress_until = ts.saturating_add(s.suppress);
                return Some(hit);
            }
        }
        None
    }

    #[inline]
    pub fn step_late(&self, s: Span, st: &mut KeyState, raw: &str, ts: i64) -> Option<Hit> {
        let w = s.window;
        let bucket = ts.div_euclid(w.max(1));
        if st.bucket.is_none_or(|b| bucket >= b) {
            // The current bucket: as in time order.
            return self.step(s, st, raw, ts);
        }
        // Open: `too_old` sent older buckets to a side window.
        let open = st.open.as_mut()?;
        match open.buckets.binary_search_by_key(&bucket, |o| o.0) {
            Ok(i) => open.buckets[i].1 += 1,
            // A bucket that was silent until now (folded as a zero).
            Err(i) => open.buckets.insert(i, (bucket, 1)),
        }
        let mut fire = None;
        fold_open(st, self.alpha, |b, n, (mean, var, seen)| {
            if b == bucket && seen >= self.warmup && n >= self.min_count {
                let score = (n as f64 - mean) / var.sqrt().max(1.0);
                if score >= self.z {
                    fire = Some((n, score));
                }
            }
        });
        if let (Some((n, score)), true) = (fire, ts >= st.suppress_until) {
            let mut samples = Samples::default();
            samples.push(raw);
            st.suppress_until = ts.saturating_add(s.suppress);
            return Some(Hit::new(n, Some(score), bucket * w, ts, samples.take()));
        }
        None
    }
}

/// Bucket `b` (holding `st.bucket_count`) closes as `next` opens. It
/// stays open to late lines for the grace ([`open_buckets`]).
fn close_bucket(s: Span, st: &mut KeyState, b: i64, next: i64, alpha: f64) {
    let keep = open_buckets(s);
    if keep > 0 {
        let before = (st.mean, st.var, st.seen);
        let open = st.open.get_or_insert_with(|| {
            Box::new(OpenBuckets {
                base: before,
                from: b,
                buckets: Vec::new(),
            })
        });
        open.buckets.push((b, st.bucket_count));
        // Buckets older than the grace close for good: into the base.
        let from = next - keep;
        if from > open.from {
            let done = open.buckets.partition_point(|o| o.0 < from);
            open.base = fold_buckets(
                open.base,
                open.from,
                &open.buckets[..done],
                from,
                alpha,
                |_, _, _| {},
            );
            open.buckets.drain(..done);
            open.from = from;
        }
    }
    ewma(st, st.bucket_count as f64, alpha);
    // Silent buckets in between count as zeros; after a long gap the
    // baseline has decayed anyway.
    for _ in 0..(next - b - 1).min(200) {
        ewma(st, 0.0, alpha);
    }
}

/// Folds `base` (the baseline before bucket `from`) through `buckets`
/// (non-empty, in order, all before `upto`) and the silent buckets between
/// them up to `upto` (zeros, 200 at most per run, as [`close_bucket`]
/// does); `at(bucket, count, baseline before it)` for each bucket.
fn fold_buckets(
    base: (f64, f64, u32),
    from: i64,
    buckets: &[(i64, u64)],
    upto: i64,
    alpha: f64,
    mut at: impl FnMut(i64, u64, (f64, f64, u32)),
) -> (f64, f64, u32) {
    let (mut mean, mut var, mut seen) = base;
    let mut next = from;
    for &(bucket, count) in buckets {
        for _ in 0..(bucket - next).min(200) {
            fold(&mut mean, &mut var, &mut seen, 0.0, alpha);
        }
        at(bucket, count, (mean, var, seen));
        fold(&mut mean, &mut var, &mut seen, count as f64, alpha);
        next = bucket + 1;
    }
    for _ in 0..(upto - next).min(200) {
        fold(&mut mean, &mut var, &mut seen, 0.0, alpha);
    }
    (mean, var, seen)
}

/// The key's baseline again from its open buckets (after a late line
/// changed one), with `at` as in [`fold_buckets`].
fn fold_open(st: &mut KeyState, alpha: f64, at: impl FnMut(i64, u64, (f64, f64, u32))) {
    let (Some(open), Some(current)) = (&st.open, st.bucket) else {
        return;
    };
    let (mean, var, seen) = fold_buckets(open.base, open.from, &open.buckets, current, alpha, at);
    st.mean = mean;
    st.var = var;
    st.seen = seen;
}

/// Exponentially weighted mean and variance (West's update).
pub(super) fn fold(mean: &mut f64, var: &mut f64, seen: &mut u32, x: f64, alpha: f64) {
    if *seen == 0 {
        *mean = x;
        *var = 0.0;
    } else {
        let diff = x - *mean;
        let incr = alpha * diff;
        *mean += incr;
        *var = (1.0 - alpha) * (*var + diff * incr);
    }
    *seen = seen.saturating_add(1);
}

/// [`fold`] into the key's running baseline.
fn ewma(st: &mut KeyState, x: f64, alpha: f64) {
    fold(&mut st.mean, &mut st.var, &mut st.seen, x, alpha);
}
