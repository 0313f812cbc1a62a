//! Offline evaluation in event time, and the rules' fixtures on top of it.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context as _;

use super::engine::Engine;
use super::firing::Firing;
use super::load::LoadedRule;
use super::rule::TestSpec;
use crate::parse::{parse_with_text, Event, Format, ParseContext};

/// A line parsed for [`Replay::evaluate`] (`event` is `None` when no
/// parser understood it).
pub struct ReadLine<'a> {
    pub raw: std::borrow::Cow<'a, str>,
    pub event: Option<Event<'a>>,
}

/// Tenant used for offline runs when a rule names none.
pub const OFFLINE_TENANT: &str = "default";

/// How often, in event time, offline runs call [`Engine::tick`].
const TICK_EVERY: i64 = 1_000_000_000;

/// Feeds lines to an engine in order, the way the collector would, with
/// event time taken from each line (a line without a timestamp gets the
/// previous line's). Returns (lines, unparsed lines, last event time).
pub struct Replay {
    pub format: Format,
    pub tenant: String,
    ctx: ParseContext,
    last_ts: i64,
    last_tick: i64,
    pub lines: u64,
    pub unparsed: u64,
}

impl Replay {
    pub fn new(format: Format, tenant: &str) -> Replay {
        Replay::with_context(format, tenant, ParseContext::now())
    }

    /// A replay whose parser reads dates as of `ctx` (so several replays of
    /// one file read it alike).
    pub fn with_context(format: Format, tenant: &str, ctx: ParseContext) -> Replay {
        Replay {
            format,
            tenant: tenant.to_string(),
            ctx,
            last_ts: 0,
            last_tick: i64::MIN,
            lines: 0,
            unparsed: 0,
        }
    }

    /// Evaluates one line; returns how many of the firings it appended
    /// came from the line itself (the rest from the tick of event time
    /// that followed it).
    pub fn line(&mut self, engine: &mut Engine, bytes: &[u8], out: &mut Vec<Firing>) -> usize {
        match self.read(bytes) {
            Some(line) => self.evaluate(engine, &line, out),
            None => 0,
        }
    }

    /// The parse half of [`Replay::line`], which keeps no state: several
    /// threads may read the lines one replay then evaluates. `None` for a
    /// blank line, which is not a line at all.
    pub fn read<'a>(&self, bytes: &'a [u8]) -> Option<ReadLine<'a>> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let (raw, parsed) = parse_with_text(bytes, self.format, &self.ctx);
        Some(ReadLine {
            raw,
            event: parsed.ok(),
        })
    }

    /// The evaluation half of [`Replay::line`].
    pub fn evaluate(
        &mut self,
        engine: &mut Engine,
        line: &ReadLine<'_>,
        out: &mut Vec<Firing>,
    ) -> usize {
        let before = out.len();
        self.lines += 1;
        let unparsed;
        let event = match &line.event {
            Some(e) => e,
            None => {
                self.unparsed += 1;
                unparsed = Event {
                    format: Format::Raw,
                    ..Event::default()
                };
                &unparsed
            }
        };
        let ts = event.timestamp.unwrap_or(self.last_ts);
        self.last_ts = self.last_ts.max(ts);
        engine.evaluate(event, &line.raw, ts, &self.tenant, out);
        let evaluated = out.len() - before;
        if self.last_ts.saturating_sub(self.last_tick) >= TICK_EVERY {
            self.last_tick = self.last_ts;
            engine.tick(self.last_ts, out);
        }
        evaluated
    }

    /// Advances event time past the last line (flatline fixtures).
    pub fn advance(&mut self, engine: &mut Engine, by: i64, out: &mut Vec<Firing>) {
        self.last_ts = self.last_ts.saturating_add(by);
        engine.tick(self.last_ts, out);
    }
}

/// Result of one fixture.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rule_id: String,
    pub name: String,
    pub passed: bool,
    /// Expected vs got, for a failed fixture.
    pub diff: String,
}

/// Runs one fixture against its rule alone. `base` is the file the
/// fixture was declared in (its `file:` is relative to it).
pub fn run_fixture(rule: &LoadedRule, test: &TestSpec, base: &Path) -> anyhow::Result<Outcome> {
    let mut spec = rule.spec.clone();
    spec.enabled = true;
    spec.tests.clear();
    let mut engine = Engine::new(std::slice::from_ref(&spec))
        .map_err(|(id, e)| anyhow::anyhow!("rule {id:?}: {}", e.message))?;
    let format = match &test.format {
        Some(f) => f
            .parse::<Format>()
            .map_err(|e| anyhow::anyhow!("fixture {:?}: {e}", test.name))?,
        None => Format::Auto,
    };
    let tenant = spec.tenant.as_deref().unwrap_or(OFFLINE_TENANT);
    let mut replay = Replay::new(format, tenant);
    let mut got = Vec::new();
    match (&test.lines, &test.file) {
        (Some(lines), None) => {
            for l in lines.lines() {
                replay.line(&mut engine, l.as_bytes(), &mut got);
            }
        }
        (None, Some(file)) => {
            let path = base.parent().unwrap_or(Path::new(".")).join(file);
            let f = std::fs::File::open(&path)
                .with_context(|| format!("fixture {:?}: opening {}", test.name, path.display()))?;
            let mut r = std::io::BufReader::new(f);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = r
                    .read_until(b'\n', &mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                replay.line(&mut engine, &buf, &mut got);
            }
        }
        _ => anyhow::bail!(
            "fixture {:?} of rule {:?}: give exactly one of lines or file",
            test.name,
            spec.id
        ),
    }
    if let Some(a) = test.advance {
        replay.advance(&mut engine, a.nanos(), &mut got);
    }
    let (passed, diff) = compare(&spec.id, test, &got);
    Ok(Outcome {
        rule_id: spec.id.clone(),
        name: test.name.clone(),
        passed,
        diff,
    })
}

/// Pairs each expectation with a distinct firing; leftovers on either side
/// fail the fixture.
fn compare(rule_id: &str, test: &TestSpec, got: &[Firing]) -> (bool, String) {
    let mut used = vec![false; got.len()];
    let mut missing = Vec::new();
    for e in &test.expect {
        let rule = e.rule.as_deref().unwrap_or(rule_id);
        let hit = got.iter().enumerate().position(|(i, f)| {
            !used[i]
                && f.rule_id == rule
                && e.key.as_ref().is_none_or(|k| *k == f.key)
                && e.count.is_none_or(|c| f.count >= c)
        });
        match hit {
            Some(i) => used[i] = true,
            None => missing.push(e),
        }
    }
    let extra: Vec<&Firing> = got
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(f, _)| f)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return (true, String::new());
    }
    let mut d = String::new();
    for e in &missing {
        let _ = writeln!(
            d,
            "  - expected: rule={} key={} count>={}",
            e.rule.as_deref().unwrap_or(rule_id),
            e.key.as_deref().unwrap_or("*"),
            e.count.map_or("*".into(), |c| c.to_string())
        );
    }
    for f in &extra {
        let _ = writeln!(
            d,
            "  + unexpected: rule={} key={} count={}",
            f.rule_id, f.key, f.count
        );
    }
    for f in got {
        let _ = writeln!(
            d,
            "    got: rule={} key={} count={}",
            f.rule_id, f.key, f.count
        );
    }
    (false, d)
}
