//! `nightowl rules check|test|run`, as library functions: `main.rs` maps
//! their results to output and exit codes. A [`BadRules`] error (reachable
//! with `err.downcast_ref::<BadRules>()`) means bad input: exit code 2.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;

use super::engine::Engine;
use super::firing::Firing;
use super::fixtures::{run_fixture, Replay, OFFLINE_TENANT};
use super::load::{load_dir, BadRules, LoadedRule, RuleError};
use crate::parse::Format;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub rules: usize,
    pub fixtures: usize,
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
/// line to `out`.
pub fn cli_run(
    rules_dir: &Path,
    file: &Path,
    format: Format,
    mut out: impl Write,
) -> anyhow::Result<RunSummary> {
    let (_, mut engine) = load(rules_dir)?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut replay = Replay::new(format, OFFLINE_TENANT);
    let mut buf = Vec::new();
    let mut firings = Vec::new();
    let mut total = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        replay.line(&mut engine, &buf, &mut firings);
        for f in firings.drain(..) {
            let printed = PrintedFiring {
                first_time: crate::time::format_rfc3339(f.first_ts),
                last_time: crate::time::format_rfc3339(f.last_ts),
                firing: &f,
            };
            serde_json::to_writer(&mut out, &printed).context("writing a firing")?;
            out.write_all(b"\n").context("writing a firing")?;
            total += 1;
        }
    }
    out.flush().context("flushing output")?;
    Ok(RunSummary {
        lines: replay.lines,
        unparsed: replay.unparsed,
        firings: total,
    })
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
