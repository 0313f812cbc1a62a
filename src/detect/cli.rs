//! `nightowl rules check|test|run`, as library functions: `main.rs` maps
//! their results to output and exit codes. A [`BadRules`] error (reachable
//! with `err.downcast_ref::<BadRules>()`) means bad input: exit code 2.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;

use super::engine::Engine;
use super::firing::Firing;
use super::fixtures::{run_fixture, ReadLine, Replay, OFFLINE_TENANT};
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

/// [`cli_run`] on up to `threads` engines. The rules are dealt by their
/// measured cost ([`rule_costs`], [`deal`]) to engines on threads of their
/// own. The file is read once, in rounds of about [`ROUND_BYTES`]: the
/// threads parse a round's lines together (each a share), then each
/// engine evaluates all of them. Each engine used to read and parse the
/// whole file itself, so parsing, a seventh of the work, was paid once
/// per thread. Firings are merged back in one order whatever the number
/// of threads: by line, a line's own firings before those of the tick
/// that followed it, then in the rules' order in the directory. Rules
/// keep no state across one another, so each engine fires as the whole
/// set would.
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
    // The calibration reads the file's first lines a second time: a pipe
    // (`--file /dev/stdin`) can be read once, and gets one engine.
    let threads = if std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        threads
    } else {
        1
    };
    let ctx = ParseContext::now();
    let mut engines = if threads == 1 {
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
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut replays: Vec<Replay> = engines
        .iter()
        .map(|_| Replay::with_context(format, OFFLINE_TENANT, ctx))
        .collect();
    let mut buf: Vec<u8> = Vec::with_capacity(ROUND_BYTES + (64 << 10));
    let mut ends: Vec<usize> = Vec::new();
    let mut placed: Vec<Placed> = Vec::new();
    let mut before = 0u64;
    let mut written = 0u64;
    loop {
        buf.clear();
        ends.clear();
        while buf.len() < ROUND_BYTES {
            let n = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {}", file.display()))?;
            if n == 0 {
                break;
            }
            ends.push(buf.len());
        }
        if ends.is_empty() {
            break;
        }
        let lines: Vec<&[u8]> = std::iter::once(0)
            .chain(ends.iter().copied())
            .zip(ends.iter().copied())
            .map(|(a, b)| &buf[a..b])
            .collect();
        let read = read_round(&replays[0], &lines, engines.len())?;
        placed.clear();
        let order = &order;
        std::thread::scope(|scope| {
            let (first_engine, other_engines) = engines.split_at_mut(1);
            let (first_replay, other_replays) = replays.split_at_mut(1);
            let mut parts = Vec::new();
            for (engine, replay) in other_engines.iter_mut().zip(other_replays.iter_mut()) {
                let read = &read;
                parts
                    .push(scope.spawn(move || evaluate_round(engine, replay, read, before, order)));
            }
            placed.extend(evaluate_round(
                &mut first_engine[0],
                &mut first_replay[0],
                &read,
                before,
                order,
            ));
            for part in parts {
                match part.join() {
                    Ok(p) => placed.extend(p),
                    Err(_) => return Err(anyhow::anyhow!("a rules run thread panicked")),
                }
            }
            Ok(())
        })?;
        // Each engine's firings are in order already; a stable sort merges
        // them (one rule's firings come from one engine).
        placed.sort_by_key(Placed::place);
        for p in &placed {
            write_firing(&mut out, &p.firing)?;
        }
        written += placed.len() as u64;
        before += lines.len() as u64;
    }
    out.flush().context("flushing output")?;
    Ok(RunSummary {
        lines: replays[0].lines,
        unparsed: replays[0].unparsed,
        firings: written,
    })
}

/// Bytes of whole lines read per round of [`cli_run_threads`]: large
/// enough that the threads' start and join per round cost nothing, small
/// enough that a round's parsed lines stay in memory whatever the file.
const ROUND_BYTES: usize = 4 << 20;

/// A round's lines parsed, `threads` shares at once (blank lines are
/// `None`).
fn read_round<'a>(
    replay: &Replay,
    lines: &[&'a [u8]],
    threads: usize,
) -> anyhow::Result<Vec<Option<ReadLine<'a>>>> {
    let share = lines.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let mut shares = lines.chunks(share);
        let first = shares.next().unwrap_or_default();
        let others: Vec<_> = shares
            .map(|part| {
                scope.spawn(move || part.iter().map(|l| replay.read(l)).collect::<Vec<_>>())
            })
            .collect();
        let mut read: Vec<Option<ReadLine<'a>>> = first.iter().map(|l| replay.read(l)).collect();
        for other in others {
            let part = other
                .join()
                .map_err(|_| anyhow::anyhow!("a rules run thread panicked"))?;
            read.extend(part);
        }
        Ok(read)
    })
}

/// One engine over a round's lines: its firings, placed, in the order it
/// made them. `before`: lines of the earlier rounds.
fn evaluate_round(
    engine: &mut Engine,
    replay: &mut Replay,
    read: &[Option<ReadLine<'_>>],
    before: u64,
    order: &HashMap<&str, usize>,
) -> Vec<Placed> {
    let mut firings = Vec::new();
    let mut placed = Vec::new();
    for (i, line) in read.iter().enumerate() {
        let Some(line) = line else {
            continue;
        };
        let own = replay.evaluate(engine, line, &mut firings);
        for (k, firing) in firings.drain(..).enumerate() {
            let rule = order
                .get(firing.rule_id.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            placed.push(Placed {
                line: before + i as u64 + 1,
                from_tick: k >= own,
                rule,
                firing,
            });
        }
    }
    placed
}

fn write_firing(out: &mut impl Write, f: &Firing) -> anyhow::Result<()> {
    let printed = PrintedFiring {
        first_time: crate::time::format_rfc3339(f.first_ts),
        last_time: crate::time::format_rfc3339(f.last_ts),
        firing: f,
    };
    serde_json::to_writer(&mut *out, &printed).context("writing a firing")?;
    out.write_all(b"\n").context("writing a firing")
}

/// Lines each rule is timed on, alone, before the rules are dealt: on
/// 2,048 the timer's noise dealt them differently on every run.
const CALIBRATION_LINES: usize = 8192;

/// Each rule's time on the file's first lines (parsed beforehand), alone
/// in an engine of its own. Costs differ by two
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
    // Parsed once: the rules' time is what is measured (parsing them again
    // for each rule was most of the calibration).
    let reader = Replay::with_context(format, OFFLINE_TENANT, ctx);
    let read: Vec<ReadLine<'_>> = lines.iter().filter_map(|l| reader.read(l)).collect();
    let mut firings = Vec::new();
    let mut time = |engine: &mut Engine| {
        let mut replay = Replay::with_context(format, OFFLINE_TENANT, ctx);
        let start = std::time::Instant::now();
        for line in &read {
            replay.evaluate(engine, line, &mut firings);
            firings.clear();
        }
        start.elapsed().as_secs_f64()
    };
    specs
        .iter()
        .map(|spec| Ok(time(&mut compile(std::slice::from_ref(spec))?)))
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
