//! `rules backtest`: replays rules over a tenant's indexed history, in
//! event time, and reports what they would have fired — before a rule is
//! enabled, so the security team sees its noise on real traffic.
//!
//! Lines are read partition by partition, oldest day first, each day's
//! lines sorted by their indexed timestamp, so windows see the same order
//! a live engine would have seen with perfect delivery. Only the stored
//! raw line, host and source are read back; the parsed fields are derived
//! again from the raw line, exactly as search hits are.

use std::collections::HashMap;

use super::catalog::Catalog;
use super::scan;
use super::search::{self, TimeRange};
use crate::detect::{Engine, Firing};
use crate::parse::{parse_line, Event, Format, ParseContext};
use crate::time::{format_rfc3339, NANOS_PER_SEC};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How often flatline rules are ticked, in event time.
const TICK_EVERY: i64 = 10 * NANOS_PER_SEC;
/// Lines between two progress reports.
const PROGRESS_EVERY: u64 = 20_000;
/// Firings kept whole in the report; the rest are only counted.
const MAX_SAMPLE_FIRINGS: usize = 100;
/// Keys listed per rule, most firings first.
const MAX_KEYS_PER_RULE: usize = 20;
/// Histogram buckets over the range (fewer when the range is short).
const TARGET_BUCKETS: i64 = 60;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub scanned: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The range replayed, RFC 3339.
    pub since: String,
    pub until: String,
    /// Lines replayed and, of those, lines no parser understood.
    pub lines: u64,
    pub unparsed: u64,
    pub firings: u64,
    pub rules: Vec<RuleReport>,
    /// Firings over time, for a histogram next to the search histogram.
    pub interval_secs: i64,
    pub buckets: Vec<FiringBucket>,
    /// The first firings, whole (sample lines, evidence query).
    pub sample_firings: Vec<Firing>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleReport {
    pub rule_id: String,
    pub title: String,
    pub firings: u64,
    pub distinct_keys: u64,
    /// The keys with the most firings.
    pub keys: Vec<KeyReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyReport {
    pub key: String,
    pub firings: u64,
    pub first: String,
    pub last: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FiringBucket {
    pub start: String,
    pub firings: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("backtest cancelled")]
pub struct Cancelled;

/// Replays `engine`'s rules over `tenant`'s lines in `range`. `progress` is
/// called now and then; returning `false` cancels (the client went away).
pub fn run(
    catalog: &Catalog,
    tenant: &str,
    mut engine: Engine,
    range: TimeRange,
    mut progress: impl FnMut(Progress) -> bool,
) -> Result<Report> {
    let total = search::count(catalog, tenant, "*", range).context("counting lines to replay")?;
    let mut report = Aggregate::new(range);
    let mut firings: Vec<Firing> = Vec::new();
    let mut scanned = 0u64;
    let mut last_tick = i64::MIN;
    if !progress(Progress { scanned, total }) {
        return Err(Cancelled.into());
    }
    let mut cancelled = false;
    scan::in_time_order(catalog, tenant, range, |line| {
        let ts = line.timestamp;
        let event = match parse_line(
            line.raw.as_bytes(),
            Format::Auto,
            &ParseContext { now_nanos: ts },
        ) {
            Ok(event) => event,
            Err(_) => {
                report.unparsed += 1;
                Event {
                    format: Format::Raw,
                    ..Event::default()
                }
            }
        };
        engine.evaluate_source(&event, line.raw, line.source, ts, tenant, &mut firings);
        if ts.saturating_sub(last_tick) >= TICK_EVERY {
            last_tick = ts;
            engine.tick(ts, &mut firings);
        }
        for firing in firings.drain(..) {
            report.add(firing);
        }
        scanned += 1;
        if scanned.is_multiple_of(PROGRESS_EVERY) && !progress(Progress { scanned, total }) {
            cancelled = true;
            return Ok(false);
        }
        Ok(true)
    })?;
    if cancelled {
        return Err(Cancelled.into());
    }
    report.lines = scanned;
    progress(Progress {
        scanned,
        total: total.max(scanned),
    });
    Ok(report.finish())
}

struct Aggregate {
    range: TimeRange,
    interval: i64,
    lines: u64,
    unparsed: u64,
    firings: u64,
    rules: Vec<RuleAggregate>,
    rule_index: HashMap<String, usize>,
    buckets: HashMap<i64, u64>,
    samples: Vec<Firing>,
}

struct RuleAggregate {
    rule_id: String,
    title: String,
    firings: u64,
    keys: HashMap<String, (u64, i64, i64)>,
}

impl Aggregate {
    fn new(range: TimeRange) -> Self {
        Aggregate {
            range,
            interval: bucket_interval(range),
            lines: 0,
            unparsed: 0,
            firings: 0,
            rules: Vec::new(),
            rule_index: HashMap::new(),
            buckets: HashMap::new(),
            samples: Vec::new(),
        }
    }

    fn add(&mut self, firing: Firing) {
        self.firings += 1;
        let at = firing.last_ts;
        *self
            .buckets
            .entry(at.div_euclid(self.interval) * self.interval)
            .or_default() += 1;
        let index = match self.rule_index.get(&firing.rule_id) {
            Some(&i) => i,
            None => {
                self.rules.push(RuleAggregate {
                    rule_id: firing.rule_id.clone(),
                    title: firing.title.clone(),
                    firings: 0,
                    keys: HashMap::new(),
                });
                self.rule_index
                    .insert(firing.rule_id.clone(), self.rules.len() - 1);
                self.rules.len() - 1
            }
        };
        let rule = &mut self.rules[index];
        rule.firings += 1;
        let key = rule.keys.entry(firing.key.clone()).or_insert((0, at, at));
        key.0 += 1;
        key.1 = key.1.min(at);
        key.2 = key.2.max(at);
        if self.samples.len() < MAX_SAMPLE_FIRINGS {
            self.samples.push(firing);
        }
    }

    fn finish(self) -> Report {
        let mut rules: Vec<RuleReport> = self
            .rules
            .into_iter()
            .map(|r| {
                let distinct_keys = r.keys.len() as u64;
                let mut keys: Vec<KeyReport> = r
                    .keys
                    .into_iter()
                    .map(|(key, (firings, first, last))| KeyReport {
                        key,
                        firings,
                        first: format_rfc3339(first),
                        last: format_rfc3339(last),
                    })
                    .collect();
                keys.sort_by(|a, b| b.firings.cmp(&a.firings).then(a.key.cmp(&b.key)));
                keys.truncate(MAX_KEYS_PER_RULE);
                RuleReport {
                    rule_id: r.rule_id,
                    title: r.title,
                    firings: r.firings,
                    distinct_keys,
                    keys,
                }
            })
            .collect();
        rules.sort_by(|a, b| b.firings.cmp(&a.firings).then(a.rule_id.cmp(&b.rule_id)));
        let mut buckets: Vec<(i64, u64)> = self.buckets.into_iter().collect();
        buckets.sort_unstable();
        Report {
            since: format_rfc3339(self.range.since),
            until: format_rfc3339(self.range.until),
            lines: self.lines,
            unparsed: self.unparsed,
            firings: self.firings,
            rules,
            interval_secs: self.interval / NANOS_PER_SEC,
            buckets: buckets
                .into_iter()
                .map(|(start, firings)| FiringBucket {
                    start: format_rfc3339(start),
                    firings,
                })
                .collect(),
            sample_firings: self.samples,
        }
    }
}

/// A round bucket width giving about [`TARGET_BUCKETS`] buckets.
fn bucket_interval(range: TimeRange) -> i64 {
    const STEPS: [i64; 9] = [
        60,
        300,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
    ];
    let span = range.until.saturating_sub(range.since).max(1) / NANOS_PER_SEC;
    let wanted = span / TARGET_BUCKETS;
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= wanted)
        .unwrap_or(86_400)
        * NANOS_PER_SEC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_round_and_about_sixty() {
        let hour = 3600 * NANOS_PER_SEC;
        let at = |span| {
            bucket_interval(TimeRange {
                since: 0,
                until: span,
            }) / NANOS_PER_SEC
        };
        assert_eq!(at(hour), 60);
        assert_eq!(at(24 * hour), 1800);
        assert_eq!(at(7 * 24 * hour), 3 * 3600);
        assert_eq!(at(365 * 24 * hour), 86_400);
    }
}
