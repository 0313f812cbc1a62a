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
/// own. The file is read once, on a thread of its own, in rounds of about
/// [`ROUND_BYTES`]. While each engine evaluates one round, the threads
/// parse the next, each a share sized by [`Balance`] so that they finish
/// together: the engines are unequally loaded, and a barrier between
/// parsing and evaluating left the quicker one idle. (Each engine used
/// to read and parse the whole file itself, so parsing, a seventh of the
/// work, was paid once per thread.) Firings are merged back in one order
/// whatever the number of threads: by line, a line's own firings before those of the tick
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
    let parser = Replay::with_context(format, OFFLINE_TENANT, ctx);
    let mut replays: Vec<Replay> = engines
        .iter()
        .map(|_| Replay::with_context(format, OFFLINE_TENANT, ctx))
        .collect();
    let mut run = Stepper {
        // One share per engine: `deal` may make fewer engines than threads.
        balance: Balance::new(engines.len()),
        engines: &mut engines,
        replays: &mut replays,
        parser: &parser,
        order: &order,
        placed: Vec::new(),
        spare: Vec::new(),
        out: &mut out,
        written: 0,
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (full_tx, full) = std::sync::mpsc::sync_channel(1);
        let (free, free_rx) = std::sync::mpsc::channel();
        scope.spawn(move || read_rounds(f, file, &full_tx, &free_rx));
        // A closed channel is the end of the file (the reader is done).
        let next_round = || full.recv().ok().transpose();
        // Two rounds in turn: one evaluated while the other is parsed.
        let Some(mut a) = next_round()? else {
            return Ok(());
        };
        let mut a_lines = a.lines();
        let mut read_a = run.step(&[], 0, &a_lines)?;
        let mut before = 0u64;
        loop {
            let Some(b) = next_round()? else {
                run.step(&read_a, before, &[])?;
                return Ok(());
            };
            let b_lines = b.lines();
            let read_b = run.step(&read_a, before, &b_lines)?;
            before += a_lines.len() as u64;
            run.recycle(read_a);
            drop(a_lines);
            let _ = free.send(a);
            let Some(c) = next_round()? else {
                run.step(&read_b, before, &[])?;
                return Ok(());
            };
            a = c;
            a_lines = a.lines();
            read_a = run.step(&read_b, before, &a_lines)?;
            before += b_lines.len() as u64;
            run.recycle(read_b);
            drop(b_lines);
            let _ = free.send(b);
        }
    })?;
    let written = run.written;
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

/// Whole lines of the file, read by [`read_rounds`].
struct Round {
    buf: Vec<u8>,
    /// The end of each line in `buf`.
    ends: Vec<usize>,
}

impl Round {
    fn lines(&self) -> Vec<&[u8]> {
        std::iter::once(0)
            .chain(self.ends.iter().copied())
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.buf[a..b])
            .collect()
    }
}

/// The reader thread of [`cli_run_threads`]: rounds of whole lines, in
/// buffers handed back through `free` once evaluated, so reading the
/// file overlaps its parsing and evaluation. Ends when the file does or
/// when nobody receives any more.
fn read_rounds(
    f: std::fs::File,
    file: &Path,
    full: &std::sync::mpsc::SyncSender<anyhow::Result<Round>>,
    free: &std::sync::mpsc::Receiver<Round>,
) {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    loop {
        let mut round = free.try_recv().unwrap_or_else(|_| Round {
            buf: Vec::with_capacity(ROUND_BYTES + (64 << 10)),
            ends: Vec::new(),
        });
        round.buf.clear();
        round.ends.clear();
        while round.buf.len() < ROUND_BYTES {
            match reader.read_until(b'\n', &mut round.buf) {
                Ok(0) => break,
                Ok(_) => round.ends.push(round.buf.len()),
                Err(e) => {
                    let _ = full.send(Err(
                        anyhow::Error::new(e).context(format!("reading {}", file.display()))
                    ));
                    return;
                }
            }
        }
        if round.ends.is_empty() || full.send(Ok(round)).is_err() {
            return;
        }
    }
}

/// How the next round's parsing is shared out, so that the threads finish
/// a step together: engines cost unequal time (the rules are dealt by a
/// calibration on the file's first lines, and rules keyed by client grow
/// costlier as their maps fill), and the quicker ones take more parsing.
struct Balance {
    /// Each engine's evaluation time per step, smoothed.
    eval: Vec<f64>,
    /// Parsing time of a whole round, smoothed.
    parse: f64,
}

impl Balance {
    fn new(threads: usize) -> Balance {
        Balance {
            eval: vec![0.0; threads],
            parse: 0.0,
        }
    }

    /// The share of the next round each thread parses (they sum to 1).
    fn shares(&self) -> Vec<f64> {
        let n = self.eval.len() as f64;
        let finish = (self.eval.iter().sum::<f64>() + self.parse) / n;
        let budgets: Vec<f64> = self.eval.iter().map(|e| (finish - e).max(0.0)).collect();
        let total: f64 = budgets.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return vec![1.0 / n; self.eval.len()];
        }
        budgets.iter().map(|b| b / total).collect()
    }

    /// What a step measured: per thread, (evaluation seconds, parsing
    /// seconds, lines parsed).
    fn learn(&mut self, measured: &[(f64, f64, usize)], round_lines: usize) {
        let parsed: usize = measured.iter().map(|m| m.2).sum();
        let parse_secs: f64 = measured.iter().map(|m| m.1).sum();
        if parsed > 0 {
            let whole = parse_secs * round_lines.max(parsed) as f64 / parsed as f64;
            self.parse = smooth(self.parse, whole);
        }
        for (e, m) in self.eval.iter_mut().zip(measured) {
            if m.0 > 0.0 {
                *e = smooth(*e, m.0);
            }
        }
    }
}

fn smooth(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        0.5 * old + 0.5 * new
    }
}

/// The engines of [`cli_run_threads`] and what their steps share.
struct Stepper<'r, W> {
    engines: &'r mut [Engine],
    replays: &'r mut [Replay],
    parser: &'r Replay,
    balance: Balance,
    order: &'r HashMap<&'r str, usize>,
    placed: Vec<Placed>,
    /// Emptied vectors of parsed lines, kept for the next rounds: a round's
    /// lines take megabytes, and fresh memory for each round was a fifth of
    /// a run in page faults and copies.
    spare: Vec<Parsed<'static>>,
    out: W,
    written: u64,
}

/// A share of a round's lines, parsed (`None`: a line the format refuses).
type Parsed<'n> = Vec<Option<ReadLine<'n>>>;

/// An emptied vector of parsed lines, for lines that borrow another round.
fn relabel<'b>(mut parsed: Parsed<'_>) -> Parsed<'b> {
    parsed.clear();
    // Collecting an empty vector in place keeps its allocation: std reuses
    // the buffer when the element layouts match, as they do here.
    parsed.into_iter().map(|_| None).collect()
}

impl<W: Write> Stepper<'_, W> {
    /// Each engine, on a thread of its own, evaluates the parsed round
    /// `current`, then parses its share of the next round's lines `next`,
    /// returned parsed; `current`'s firings are written in `rules run`'s
    /// order. `before`: lines of the rounds before `current`.
    fn step<'n>(
        &mut self,
        current: &[Parsed<'_>],
        before: u64,
        next: &[&'n [u8]],
    ) -> anyhow::Result<Vec<Parsed<'n>>> {
        let shares = self.balance.shares();
        let mut cuts = Vec::with_capacity(shares.len());
        let (mut at, mut sum) = (0usize, 0.0);
        for share in &shares {
            sum += share;
            let end = ((sum * next.len() as f64).round() as usize).clamp(at, next.len());
            cuts.push((at, end));
            at = end;
        }
        if let Some(last) = cuts.last_mut() {
            last.1 = next.len();
        }
        let (parser, order) = (self.parser, self.order);
        let spare = &mut self.spare;
        let results = std::thread::scope(|scope| {
            let mut work: Vec<_> = self
                .engines
                .iter_mut()
                .zip(self.replays.iter_mut())
                .zip(&cuts)
                .map(|((engine, replay), &(from, to))| {
                    let mut read: Parsed<'n> = relabel(spare.pop().unwrap_or_default());
                    move || {
                        let start = std::time::Instant::now();
                        let fired = evaluate_round(engine, replay, current, before, order);
                        let evaluated = start.elapsed().as_secs_f64();
                        let start = std::time::Instant::now();
                        read.extend(next[from..to].iter().map(|l| parser.read(l)));
                        let parsed = start.elapsed().as_secs_f64();
                        (fired, read, (evaluated, parsed, to - from))
                    }
                })
                .collect();
            let first = work.remove(0);
            let others: Vec<_> = work.into_iter().map(|w| scope.spawn(w)).collect();
            let mut results = vec![first()];
            for other in others {
                results.push(
                    other
                        .join()
                        .map_err(|_| anyhow::anyhow!("a rules run thread panicked"))?,
                );
            }
            anyhow::Ok(results)
        })?;
        let mut read = Vec::with_capacity(results.len());
        let mut measured = Vec::with_capacity(results.len());
        for (fired, part, m) in results {
            self.placed.extend(fired);
            read.push(part);
            measured.push(m);
        }
        if !current.is_empty() {
            self.balance.learn(&measured, next.len());
        }
        // Each engine's firings are in order already; a stable sort merges
        // them (one rule's firings come from one engine).
        self.placed.sort_by_key(Placed::place);
        for p in &self.placed {
            write_firing(&mut self.out, &p.firing)?;
        }
        self.written += self.placed.len() as u64;
        self.placed.clear();
        Ok(read)
    }

    /// Keeps an evaluated round's vectors for the rounds to come.
    fn recycle(&mut self, evaluated: Vec<Parsed<'_>>) {
        self.spare.extend(evaluated.into_iter().map(relabel));
    }
}

/// One engine over a round's lines: its firings, placed, in the order it
/// made them. `before`: lines of the earlier rounds.
fn evaluate_round(
    engine: &mut Engine,
    replay: &mut Replay,
    read: &[Parsed<'_>],
    before: u64,
    order: &HashMap<&str, usize>,
) -> Vec<Placed> {
    let mut firings = Vec::new();
    let mut placed = Vec::new();
    for (i, line) in read.iter().flatten().enumerate() {
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
    use super::{deal, Balance};

    #[test]
    fn the_quicker_engine_parses_more_of_the_next_round() {
        let mut b = Balance::new(2);
        assert_eq!(b.shares(), vec![0.5, 0.5], "nothing measured yet");
        // Engine 0 evaluates in 30 ms, engine 1 in 20; parsing a round
        // takes 20 ms: both finish at 35 ms when 0 parses 5 and 1 parses 15.
        b.learn(&[(0.030, 0.010, 1000), (0.020, 0.010, 1000)], 2000);
        let s = b.shares();
        assert!(
            (s[0] - 0.25).abs() < 1e-9 && (s[1] - 0.75).abs() < 1e-9,
            "{s:?}"
        );
        // More imbalance than parsing can make up: the slow one parses none.
        let mut b = Balance::new(2);
        b.learn(&[(0.050, 0.001, 10), (0.010, 0.001, 10)], 20);
        assert_eq!(b.shares(), vec![0.0, 1.0]);
    }

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
