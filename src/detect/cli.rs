//! `nightowl rules check|test|run`, as library functions: `main.rs` maps
//! their results to output and exit codes. A [`BadRules`] error (reachable
//! with `err.downcast_ref::<BadRules>()`) means bad input: exit code 2.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::Context as _;

use super::engine::Engine;
use super::firing::Firing;
use super::fixtures::{run_fixture, Replay, OFFLINE_TENANT};
use super::load::{load_dir, BadRules, LoadedRule, RuleError};
use super::rule::RuleSpec;
use crate::parse::{Format, ParseContext};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub rules: usize,
    pub fixtures: usize,
    /// `file:line: rule ID: why` of each Sigma rule loaded disabled.
    pub not_run: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: usize,
    pub failed: usize,
    /// Rules without any fixture.
    pub untested: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub lines: u64,
    pub unparsed: u64,
    pub firings: u64,
}

/// Loads and compiles every rule under `dir` for a live engine.
pub fn load_engine(dir: &Path) -> anyhow::Result<Engine> {
    Ok(load(dir)?.1)
}

fn load(dir: &Path) -> anyhow::Result<(Vec<LoadedRule>, Engine)> {
    let rules = load_dir(dir)?;
    let specs: Vec<_> = rules.iter().map(|r| r.spec.clone()).collect();
    let engine = Engine::new(&specs).map_err(|(id, e)| {
        let at = rules.iter().find(|r| r.spec.id == id);
        BadRules(vec![RuleError {
            file: at.map_or(dir.to_path_buf(), |r| r.file.clone()),
            line: at.map_or(0, |r| r.line),
            message: format!("rule {id:?}: {}", e.message),
        }])
    })?;
    Ok((rules, engine))
}

/// Loads and compiles rules sent as text (a backtest over the API). The
/// text goes through the same loader as a rules directory, in a private
/// scratch directory, so native and Sigma rules behave exactly as on disk;
/// errors name `label` instead of the scratch file.
pub fn load_engine_from_text(label: &str, text: &str) -> anyhow::Result<Engine> {
    use rand::Rng as _;
    let scratch = std::env::temp_dir().join(format!(
        "nightowl-rules-{}-{:016x}",
        std::process::id(),
        rand::thread_rng().gen::<u64>()
    ));
    std::fs::create_dir(&scratch)
        .with_context(|| format!("creating scratch directory {}", scratch.display()))?;
    let file = scratch.join("rules.yaml");
    let loaded = std::fs::write(&file, text)
        .with_context(|| format!("writing {}", file.display()))
        .and_then(|()| load(&scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    loaded
        .map(|(_, engine)| engine)
        .map_err(|e| match e.downcast::<BadRules>() {
            Ok(BadRules(errors)) => BadRules(
                errors
                    .into_iter()
                    .map(|mut e| {
                        e.file = label.into();
                        e
                    })
                    .collect(),
            )
            .into(),
            Err(e) => e,
        })
}

/// `rules check DIR`: loads and compiles every rule. Errors are
/// [`BadRules`] listing `file:line: reason` for each problem.
pub fn cli_check(dir: &Path) -> anyhow::Result<CheckSummary> {
    let (rules, _) = load(dir)?;
    Ok(CheckSummary {
        rules: rules.len(),
        fixtures: rules
            .iter()
            .map(|r| r.spec.tests.len() + r.extra_tests.len())
            .sum(),
        not_run: rules
            .iter()
            .filter_map(|r| {
                let why = r.spec.labels.get(super::sigma::NOT_RUN_LABEL)?;
                Some(format!(
                    "{}:{}: rule {:?}: {why}",
                    r.file.display(),
                    r.line,
                    r.spec.id
                ))
            })
            .collect(),
    })
}

/// `rules test DIR`: runs every fixture, printing one line per fixture and
/// a diff per failure to `out`. Failed fixtures are in the summary, not an
/// error (main exits 1 when `failed > 0`).
pub fn cli_test(dir: &Path, mut out: impl Write) -> anyhow::Result<TestSummary> {
    let (rules, _) = load(dir)?;
    let mut s = TestSummary {
        passed: 0,
        failed: 0,
        untested: Vec::new(),
    };
    for r in &rules {
        let tests = r
            .spec
            .tests
            .iter()
            .map(|t| (r.file.as_path(), t))
            .chain(r.extra_tests.iter().map(|(f, t)| (f.as_path(), t)));
        let mut any = false;
        for (base, t) in tests {
            any = true;
            let o = run_fixture(r, t, base).with_context(|| {
                format!("{}:{}: rule {:?}", r.file.display(), r.line, r.spec.id)
            })?;
            if o.passed {
                s.passed += 1;
                writeln!(out, "ok      {} :: {}", o.rule_id, o.name)?;
            } else {
                s.failed += 1;
                writeln!(out, "FAILED  {} :: {}\n{}", o.rule_id, o.name, o.diff)?;
            }
        }
        if !any {
            s.untested.push(r.spec.id.clone());
        }
    }
    writeln!(
        out,
        "{} passed, {} failed{}",
        s.passed,
        s.failed,
        if s.untested.is_empty() {
            String::new()
        } else {
            format!(" ({} rules without fixtures)", s.untested.len())
        }
    )?;
    Ok(s)
}

/// `rules run RULES_DIR --file LOG [--format F]`: evaluates all enabled
/// rules over the file in event time and writes each firing as one JSON
/// line to `out`, on as many threads as the machine has cores.
pub fn cli_run(
    rules_dir: &Path,
    file: &Path,
    format: Format,
    out: impl Write,
) -> anyhow::Result<RunSummary> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    cli_run_threads(rules_dir, file, format, out, threads)
}

/// At most this many engines for one `rules run`.
const MAX_RUN_THREADS: usize = 8;
/// A worker hands its firings over in batches of this many, and at least
/// every [`BATCH_LINES`] lines, so the merge keeps pace and memory stays
/// bounded whatever the file.
const BATCH_FIRINGS: usize = 1024;
const BATCH_LINES: u64 = 1 << 16;

/// [`cli_run`] on up to `threads` engines. The rules are dealt by their
/// measured cost ([`rule_costs`], [`deal`]) to engines that each read and
/// parse the whole file on a thread of their own (parsing is about a tenth of the work; handing parsed lines between
/// threads would cost more than it saves), and their firings are merged
/// back in one order whatever the number of threads: by line, a line's own
/// firings before those of the tick that followed it, then in the rules'
/// order in the directory. Rules keep no state across one another, so
/// each engine fires as the whole set would.
pub fn cli_run_threads(
    rules_dir: &Path,
    file: &Path,
    format: Format,
    mut out: impl Write,
    threads: usize,
) -> anyhow::Result<RunSummary> {
    let (rules, engine) = load(rules_dir)?;
    let specs: Vec<_> = rules.iter().map(|r| r.spec.clone()).collect();
    let threads = threads.clamp(1, MAX_RUN_THREADS).min(specs.len().max(1));
    // Every engine reads the file from its start: a pipe (`--file
    // /dev/stdin`) can be read once, by one.
    let threads = if std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        threads
    } else {
        1
    };
    let ctx = ParseContext::now();
    let engines = if threads == 1 {
        vec![engine]
    } else {
        drop(engine);
        let compile = |part: &[RuleSpec]| {
            // The whole set compiled above; a part of it compiles too.
            Engine::new(part).map_err(|(id, e)| anyhow::anyhow!("rule {id:?}: {}", e.message))
        };
        let costs = rule_costs(&specs, file, format, ctx, compile)?;
        deal(&specs, &costs, threads)
            .iter()
            .map(|part| compile(part))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let order: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    std::thread::scope(|scope| {
        let mut streams = Vec::new();
        let mut workers = Vec::new();
        for engine in engines {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            let order = &order;
            workers.push(scope.spawn(move || run_part(engine, file, format, ctx, order, tx)));
            streams.push(Stream {
                rx,
                batch: VecDeque::new(),
            });
        }
        let written = merge(&mut streams, &mut out);
        // A failed write leaves the workers nobody to send to: they stop.
        drop(streams);
        let mut summary = RunSummary {
            lines: 0,
            unparsed: 0,
            firings: 0,
        };
        for w in workers {
            let (lines, unparsed) = w
                .join()
                .map_err(|_| anyhow::anyhow!("a rules run thread panicked"))??;
            (summary.lines, summary.unparsed) = (lines, unparsed);
        }
        summary.firings = written?;
        Ok(summary)
    })
}

/// Lines each rule is timed on, alone, before the rules are dealt: on
/// 2,048 the timer's noise dealt them differently on every run.
const CALIBRATION_LINES: usize = 8192;

/// Each rule's time on the file's first lines, alone in an engine of its
/// own, less what reading and parsing them takes. Costs differ by two
/// orders of magnitude (a keyed window every line updates against a
/// signature that rules most lines out with one shared scan) and depend
/// on the traffic, so dealing the rules round-robin left one thread with
/// twice the other's work.
fn rule_costs(
    specs: &[RuleSpec],
    file: &Path,
    format: Format,
    ctx: ParseContext,
    compile: impl Fn(&[RuleSpec]) -> anyhow::Result<Engine>,
) -> anyhow::Result<Vec<f64>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(f)
        .split(b'\n')
        .take(CALIBRATION_LINES)
    {
        lines.push(line.with_context(|| format!("reading {}", file.display()))?);
    }
    let mut firings = Vec::new();
    let mut time = |engine: &mut Engine| {
        let mut replay = Replay::with_context(format, OFFLINE_TENANT, ctx);
        let start = std::time::Instant::now();
        for line in &lines {
            replay.line(engine, line, &mut firings);
            firings.clear();
        }
        start.elapsed().as_secs_f64()
    };
    let parsing = time(&mut compile(&[])?);
    specs
        .iter()
        .map(|spec| Ok((time(&mut compile(std::slice::from_ref(spec))?) - parsing).max(0.0)))
        .collect()
}

/// The rules in `threads` parts of about equal cost: the costliest first,
/// each to the part with the least so far. Each part keeps the rules'
/// order.
fn deal<T: Clone>(specs: &[T], costs: &[f64], threads: usize) -> Vec<Vec<T>> {
    let mut by_cost: Vec<usize> = (0..specs.len()).collect();
    by_cost.sort_by(|a, b| costs[*b].total_cmp(&costs[*a]));
    let mut load = vec![0.0f64; threads];
    let mut owner = vec![0usize; specs.len()];
    for i in by_cost {
        let t = (0..threads)
            .min_by(|a, b| load[*a].total_cmp(&load[*b]))
            .unwrap_or(0);
        load[t] += costs[i];
        owner[i] = t;
    }
    (0..threads)
        .map(|t| {
            specs
                .iter()
                .zip(&owner)
                .filter(|(_, o)| **o == t)
                .map(|(s, _)| s.clone())
                .collect()
        })
        .filter(|part: &Vec<T>| !part.is_empty())
        .collect()
}

/// A firing, where it stands in the order `rules run` prints.
struct Placed {
    line: u64,
    from_tick: bool,
    rule: usize,
    firing: Firing,
}

impl Placed {
    fn place(&self) -> (u64, bool, usize) {
        (self.line, self.from_tick, self.rule)
    }
}

struct Stream {
    rx: Receiver<Vec<Placed>>,
    batch: VecDeque<Placed>,
}

/// One engine over the whole file; its firings go to `tx` in batches.
fn run_part(
    mut engine: Engine,
    file: &Path,
    format: Format,
    ctx: ParseContext,
    order: &HashMap<&str, usize>,
    tx: SyncSender<Vec<Placed>>,
) -> anyhow::Result<(u64, u64)> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut replay = Replay::with_context(format, OFFLINE_TENANT, ctx);
    let mut buf = Vec::new();
    let mut firings = Vec::new();
    let mut batch = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        line += 1;
        let own = replay.line(&mut engine, &buf, &mut firings);
        for (i, firing) in firings.drain(..).enumerate() {
            let rule = order
                .get(firing.rule_id.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            batch.push(Placed {
                line,
                from_tick: i >= own,
                rule,
                firing,
            });
        }
        let due =
            batch.len() >= BATCH_FIRINGS || (line.is_multiple_of(BATCH_LINES) && !batch.is_empty());
        if due && tx.send(std::mem::take(&mut batch)).is_err() {
            // The merge stopped (its output failed) and says why.
            return Ok((replay.lines, replay.unparsed));
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok((replay.lines, replay.unparsed))
}

/// Writes the streams' firings in order; returns how many.
fn merge(streams: &mut [Stream], out: &mut impl Write) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut done = vec![false; streams.len()];
    loop {
        let mut next: Option<(usize, (u64, bool, usize))> = None;
        for (i, s) in streams.iter_mut().enumerate() {
            if s.batch.is_empty() && !done[i] {
                match s.rx.recv() {
                    Ok(b) => s.batch = b.into(),
                    Err(_) => done[i] = true,
                }
            }
            if let Some(head) = s.batch.front() {
                if next.is_none_or(|(_, place)| head.place() < place) {
                    next = Some((i, head.place()));
                }
            }
        }
        let Some((i, _)) = next else {
            break;
        };
        let Some(placed) = streams[i].batch.pop_front() else {
            break;
        };
        let f = &placed.firing;
        let printed = PrintedFiring {
            first_time: crate::time::format_rfc3339(f.first_ts),
            last_time: crate::time::format_rfc3339(f.last_ts),
            firing: f,
        };
        serde_json::to_writer(&mut *out, &printed).context("writing a firing")?;
        out.write_all(b"\n").context("writing a firing")?;
        total += 1;
    }
    out.flush().context("flushing output")?;
    Ok(total)
}

/// A firing as `rules run` prints it: the nanosecond fields for programs,
/// and the same instants in RFC 3339 for people.
#[derive(serde::Serialize)]
struct PrintedFiring<'a> {
    #[serde(flatten)]
    firing: &'a Firing,
    first_time: String,
    last_time: String,
}

#[cfg(test)]
mod tests {
    use super::deal;

    #[test]
    fn rules_are_dealt_by_cost_and_keep_their_order() {
        let rules = ["a", "b", "c", "d", "e", "f"];
        let parts = deal(&rules, &[5.0, 1.0, 1.0, 3.0, 1.0, 1.0], 2);
        assert_eq!(parts, vec![vec!["a", "e"], vec!["b", "c", "d", "f"]]);
        // Never an empty engine, whatever the thread count.
        assert_eq!(deal(&rules[..1], &[1.0], 3), vec![vec!["a"]]);
        let total = |p: &Vec<&str>| p.len();
        assert_eq!(
            deal(&rules, &[0.0; 6], 3).iter().map(total).sum::<usize>(),
            6
        );
    }
}
