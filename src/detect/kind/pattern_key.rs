//! What `new_pattern` and `pattern_spike` keep per key: a pattern miner
//! (`src/patterns/`) over the key's lines that passed the rule's filter,
//! and a few numbers per pattern. The miner is the one the collector runs
//! before indexing, with the same bounds, so a statement gets the same id
//! here as in the index (ids are derived from the statement) and the
//! firing's `pattern:<id>` finds its lines.

use std::collections::HashMap;

use crate::detect::compile::{err, CompileError};
use crate::detect::field::LineRef;
use crate::detect::snapshot::{Dec, DecodeError, Enc};
use crate::detect::window::Samples;
use crate::patterns::{Miner, MinerState, StreamLimits};

/// Keys of a pattern rule that sets no `max_keys` (each holds a miner).
pub const MAX_KEYS: usize = 1_000;

/// Numbers kept per pattern at most, per key: beyond, the half seen least
/// recently are dropped (a dropped pattern starts its baseline over; for
/// `new_pattern` it is simply not pending any more).
const MAX_STATS: usize = 4_096;

/// One pattern of one key.
#[derive(Debug, Default)]
pub struct PatStat {
    /// spike: the current bucket and its lines; new_pattern: lines since
    /// the pattern was first seen (bucket unused).
    pub bucket: i64,
    pub count: u64,
    /// spike: EWMA mean and variance of the earlier buckets, buckets seen.
    pub mean: f64,
    pub var: f64,
    pub seen: u32,
    pub suppress_until: i64,
    /// Newest line, event time.
    pub last: i64,
    pub samples: Samples,
}

/// A key's miner and its patterns' numbers.
pub struct PatternKey {
    pub miner: Miner,
    /// The key's first line, event time: the learning period runs from it.
    pub first: i64,
    /// By pattern id. A pattern whose slot opens (the sixth user name) is
    /// renamed after its new template and starts its numbers over: its
    /// rate is another one from then on.
    pub stats: HashMap<u64, PatStat>,
    scratch: String,
}

impl std::fmt::Debug for PatternKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternKey")
            .field("patterns", &self.miner.len())
            .field("first", &self.first)
            .field("stats", &self.stats.len())
            .finish()
    }
}

/// A line as mined: its pattern's id (as stored, see
/// [`crate::patterns::PatternId`]) and whether the line opened it.
pub struct Mined {
    pub id: u64,
    pub is_new: bool,
    cluster: u32,
}

impl PatternKey {
    pub fn new(first: i64) -> PatternKey {
        PatternKey {
            miner: Miner::new(StreamLimits::default().miner),
            first,
            stats: HashMap::new(),
            scratch: String::new(),
        }
    }

    /// Mines the line's message (the part the collector mines, see
    /// [`crate::patterns::stream::message`]).
    pub fn mine(&mut self, line: &LineRef<'_, '_>, ts: i64) -> Mined {
        self.first = self.first.min(ts);
        let msg = crate::patterns::stream::message(Some(line.event), line.raw, &mut self.scratch);
        let c = self.miner.add(msg.as_bytes());
        // Merges matter to the index's aliases, not here: drop the list.
        if self.miner.has_merged() {
            self.miner.take_merged();
        }
        let cluster = self.miner.cluster(c);
        Mined {
            id: cluster.id,
            is_new: cluster.count == 1,
            cluster: c,
        }
    }

    pub fn template(&self, m: &Mined) -> String {
        self.miner.cluster(m.cluster).template()
    }

    /// The numbers of pattern `id`, made when missing.
    pub fn stat(&mut self, id: u64, ts: i64) -> &mut PatStat {
        if self.stats.len() >= MAX_STATS && !self.stats.contains_key(&id) {
            self.drop_coldest_half();
        }
        self.stats.entry(id).or_insert_with(|| PatStat {
            last: ts,
            ..PatStat::default()
        })
    }

    #[cold]
    fn drop_coldest_half(&mut self) {
        let mut lasts: Vec<i64> = self.stats.values().map(|s| s.last).collect();
        let mid = lasts.len() / 2;
        let (_, &mut cut, _) = lasts.select_nth_unstable(mid);
        self.stats.retain(|_, s| s.last > cut);
    }

    pub fn encode(&self, e: &mut Enc) {
        e.i64(self.first);
        // The miner's own saved form (serde); the rest in the snapshot's
        // codec. Encoding a serde struct to JSON cannot fail.
        let miner = serde_json::to_vec(&self.miner.state()).unwrap_or_default();
        e.bytes(&miner);
        e.u64(self.stats.len() as u64);
        for (id, s) in &self.stats {
            e.u64(*id);
            e.i64(s.bucket);
            e.u64(s.count);
            e.f64(s.mean);
            e.f64(s.var);
            e.u32(s.seen);
            e.i64(s.suppress_until);
            e.i64(s.last);
            s.samples.encode(e);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<PatternKey, DecodeError> {
        let first = d.i64()?;
        let state: MinerState = serde_json::from_slice(d.bytes()?)
            .map_err(|e| DecodeError(format!("pattern miner state: {e}")))?;
        let miner = Miner::from_state(StreamLimits::default().miner, state)
            .map_err(|e| DecodeError(format!("pattern miner state: {e}")))?;
        let n = d.len()?;
        if n > MAX_STATS {
            return Err(DecodeError(format!("{n} pattern stats")));
        }
        let mut stats = HashMap::with_capacity(n);
        for _ in 0..n {
            let id = d.u64()?;
            stats.insert(
                id,
                PatStat {
                    bucket: d.i64()?,
                    count: d.u64()?,
                    mean: d.f64()?,
                    var: d.f64()?,
                    seen: d.u32()?,
                    suppress_until: d.i64()?,
                    last: d.i64()?,
                    samples: Samples::decode(d)?,
                },
            );
        }
        Ok(PatternKey {
            miner,
            first,
            stats,
            scratch: String::new(),
        })
    }
}

/// Line levels, syslog's scale: 0 emergency .. 7 debug.
const LEVELS: &[(&str, u8)] = &[
    ("emerg", 0),
    ("emergency", 0),
    ("panic", 0),
    ("alert", 1),
    ("fatal", 2),
    ("crit", 2),
    ("critical", 2),
    ("severe", 3),
    ("err", 3),
    ("error", 3),
    ("warn", 4),
    ("warning", 4),
    ("notice", 5),
    ("info", 6),
    ("debug", 7),
    ("trace", 7),
];

/// The `level:` parameter: lines at this level or worse.
pub fn compile_level(name: Option<&str>) -> Result<Option<u8>, CompileError> {
    let Some(name) = name else { return Ok(None) };
    match LEVELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
    {
        Some(&(_, l)) => Ok(Some(l)),
        None => err(
            Some(format!("level: {name}")),
            format!(
                "unknown level {name:?}; use one of emergency, alert, critical, error, warning, notice, info, debug"
            ),
        ),
    }
}

/// Whether the line is at level `max` or worse: the syslog severity when
/// the line has one, else (not for access logs) the first level word in
/// its first 200 bytes, in capitals (`ERROR`, `WARN`) or after `level`
/// (`level=error`, `"level":"error"`). A line that names no level is not.
pub fn at_level(line: &LineRef<'_, '_>, max: u8) -> bool {
    line_level(line).is_some_and(|l| l <= max)
}

fn line_level(line: &LineRef<'_, '_>) -> Option<u8> {
    if let Some(s) = line.event.severity {
        return Some(s);
    }
    // An access log line has a status, not a level (and `GET /ERROR` is
    // a path).
    if line.event.path.is_some() {
        return None;
    }
    let head = {
        let mut end = line.raw.len().min(200);
        while !line.raw.is_char_boundary(end) {
            end -= 1;
        }
        &line.raw[..end]
    };
    let mut after_level = false;
    for word in head.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let capitals = word.bytes().all(|b| b.is_ascii_uppercase());
        if capitals || after_level {
            if let Some(&(_, l)) = LEVELS.iter().find(|(n, _)| n.eq_ignore_ascii_case(word)) {
                return Some(l);
            }
        }
        after_level = word.eq_ignore_ascii_case("level")
            || word.eq_ignore_ascii_case("severity")
            || word.eq_ignore_ascii_case("lvl");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Event;

    fn level(raw: &str) -> Option<u8> {
        let event = Event::default();
        line_level(&LineRef {
            event: &event,
            raw,
            source: "",
        })
    }

    #[test]
    fn levels_from_words_and_keys() {
        assert_eq!(level("2024-01-01 12:00:00 ERROR [main] boom"), Some(3));
        assert_eq!(level(r#"{"ts":1,"level":"warn","msg":"x"}"#), Some(4));
        assert_eq!(level("ts=1 level=info msg=ok"), Some(6));
        // A lowercase word in the message is not a level.
        assert_eq!(level("connection error while reading"), None);
        assert_eq!(level("FATAL: out of memory"), Some(2));
        assert!(compile_level(Some("loud")).is_err());
        assert_eq!(compile_level(Some("Error")).ok().flatten(), Some(3));
    }
}
