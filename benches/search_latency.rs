//! Search latency at scale (MISSION.md "Search": p99 < 100 ms for term +
//! time-range queries, < 300 ms for a date histogram, over 10M lines).
//!
//! A week of generated nginx lines (`nightowl::bench::generate_lines`),
//! indexed through the collector's own `Indexer` into day partitions: the
//! closed days compacted as the collector does, the newest day (the one
//! still receiving lines) left as ingest left it. Then the queries an ops
//! engineer types, each run many times through the functions the HTTP API
//! calls (`index::search::*_within` under the default query limits),
//! with p50, p99 and max per query, and each answer checked against what
//! the generator wrote.
//!
//! `NIGHTOWL_SEARCH_LINES` (default 100000, so `cargo bench` stays quick)
//! sets the size: `NIGHTOWL_SEARCH_LINES=10000000 cargo bench --bench
//! search_latency`. The index is built once and kept under
//! `target/search-latency/`, keyed by [`VERSION`], the size and the
//! schema; a rerun only searches. `NIGHTOWL_SEARCH_RUNS` (default 200)
//! sets the runs per query, `NIGHTOWL_SEARCH_ONLY` keeps the queries whose
//! name contains it (to profile one). docs/search-latency.md has the
//! figures and the method.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use nightowl::index::schema::LogSchema;
use nightowl::index::search::{self, Budget, QueryLimits, TimeRange};
use nightowl::index::Catalog;
use nightowl::time::NANOS_PER_DAY;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[path = "common/generated.rs"]
mod generated;

/// Bump when the generator, the timeline or the build steps change: the
/// cached index is then built again. (A schema change rebuilds by itself:
/// the schema is part of the key.)
const VERSION: &str = "1";
const LINES_PER_RECORD: usize = 1000;
const DAYS: i64 = 7;
const SEED: u64 = 17;
const SEC: i64 = 1_000_000_000;
/// The statuses `generate_lines` writes, in the order [`Record::status`] counts them.
const STATUSES: [u16; 6] = [200, 301, 304, 401, 404, 500];
const NETWORK: &str = "10.20.0.0/16";
const NETWORK_PREFIX: &str = "10.20.";
/// Commit every this many records, as a busy collector's commits make segments.
const COMMIT_EVERY: usize = 50;

/// What the generator wrote in one record: the truth answers are checked against.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// Every line's time, unix seconds.
    at: i64,
    lines: u64,
    status: [u64; STATUSES.len()],
    /// `GET /login`: the phrase `"GET /login"`.
    get_login: u64,
    /// Paths under `/api/`.
    api: u64,
    /// User agents with the word `curl`.
    curl: u64,
    /// Lines from [`Truth::ip`].
    ip: u64,
    /// Lines from [`NETWORK`].
    network: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Truth {
    lines: u64,
    /// One client address, as an operator copies it from a line.
    ip: String,
    records: Vec<Record>,
}

impl Truth {
    /// Newest line, unix nanoseconds.
    fn end(&self) -> i64 {
        self.records.last().map_or(0, |r| r.at * SEC)
    }

    /// Sum of `f` over the records inside `range`.
    fn sum(&self, range: TimeRange, f: impl Fn(&Record) -> u64) -> u64 {
        self.records
            .iter()
            .filter(|r| range.since <= r.at * SEC && r.at * SEC < range.until)
            .map(f)
            .sum()
    }
}

fn record_rng(i: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(SEED ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Record `i`'s lines: each record has its own generator, so one can be
/// made without the ones before it.
fn record_lines(i: usize, at: i64) -> String {
    nightowl::bench::generate_lines(&mut record_rng(i), LINES_PER_RECORD, at)
}

/// The fields of a generated line, read by hand (not by the parser the
/// index uses): `IP - - [T] "METHOD PATH?q HTTP/1.1" STATUS BYTES "REF" "UA"`.
fn tally(line: &str, ip: &str, record: &mut Record) -> Result<()> {
    let parts: Vec<&str> = line.split('"').collect();
    ensure!(parts.len() >= 6, "unexpected generated line {line:?}");
    let client = parts[0].split(' ').next().unwrap_or_default();
    let mut request = parts[1].split(' ');
    let method = request.next().unwrap_or_default();
    let target = request.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let status: u16 = parts[2]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {line:?}"))?;
    let agent = parts[5];
    record.lines += 1;
    let slot = STATUSES
        .iter()
        .position(|&s| s == status)
        .with_context(|| format!("status {status} not in STATUSES"))?;
    record.status[slot] += 1;
    record.get_login += u64::from(method == "GET" && path == "/login");
    record.api += u64::from(path.starts_with("/api/"));
    record.curl += u64::from(
        agent
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case("curl")),
    );
    record.ip += u64::from(client == ip);
    record.network += u64::from(client.starts_with(NETWORK_PREFIX));
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// The cached index of `lines` lines and its truth, built if missing.
fn index(lines: usize) -> Result<(Arc<Catalog>, Truth)> {
    let schema = serde_json::to_vec(&LogSchema::new().schema).context("schema")?;
    let key = format!("v{VERSION}-{lines}-{:08x}", crc32fast::hash(&schema));
    let root = target_dir().join("search-latency");
    let dir = root.join(&key);
    let truth_file = dir.join("truth.json");
    if truth_file.exists() {
        let truth: Truth = serde_json::from_slice(
            &std::fs::read(&truth_file).with_context(|| format!("{}", truth_file.display()))?,
        )
        .with_context(|| format!("{}", truth_file.display()))?;
        eprintln!("search_latency: cached index {}", dir.display());
        return Ok((Catalog::open(&dir.join("index"))?, truth));
    }
    // Other sizes and versions stay (a 10M index is worth keeping); a
    // build that did not finish is started again.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let truth = build(&dir.join("index"), lines)?;
    eprintln!(
        "search_latency: built {} lines in {:.0} s into {} ({} MB)",
        truth.lines,
        started.elapsed().as_secs_f64(),
        dir.display(),
        nightowl::index::compact::dir_bytes(&dir)? / 1_000_000,
    );
    let tmp = dir.join("truth.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&truth)?)
        .with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, &truth_file).with_context(|| format!("{}", truth_file.display()))?;
    Ok((Catalog::open(&dir.join("index"))?, truth))
}

/// A week of lines ending yesterday at 14:00 UTC (the same time of day
/// whenever it is built; in the past, so no line is ahead of its
/// received time): 8 day partitions, the first and last partial.
fn build(dir: &Path, lines: usize) -> Result<Truth> {
    let records = lines.div_ceil(LINES_PER_RECORD);
    ensure!(
        records >= 2,
        "NIGHTOWL_SEARCH_LINES must be at least {}",
        2 * LINES_PER_RECORD
    );
    let today = nightowl::time::now_nanos() / NANOS_PER_DAY;
    let end = ((today - 1) * NANOS_PER_DAY + 14 * 3600 * SEC) / SEC;
    let span = DAYS * 86_400;
    let at = |i: usize| end - ((records - 1 - i) as i64 * span) / records as i64;
    // The address of a line in the middle of the week.
    let middle = records / 2;
    let ip = record_lines(middle, at(middle))
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let last_day_start = (end * SEC / NANOS_PER_DAY) * NANOS_PER_DAY / SEC;
    let catalog = Catalog::open(dir)?;
    let mut truth = Truth {
        lines: 0,
        ip,
        records: Vec::with_capacity(records),
    };
    let mut position = 8u64;
    let mut indexer = generated::indexer(&catalog, dir);
    let mut compacted = false;
    for i in 0..records {
        let at = at(i);
        if !compacted && at >= last_day_start {
            // Every closed day is compacted, as the collector does an
            // hour after the day ends; the newest keeps ingest's segments.
            indexer.finish()?;
            compact(&catalog)?;
            indexer = generated::indexer(&catalog, dir);
            compacted = true;
        }
        let text = record_lines(i, at);
        let mut record = Record {
            at,
            ..Record::default()
        };
        for line in text.lines() {
            tally(line, &truth.ip, &mut record)?;
        }
        truth.lines += record.lines;
        truth.records.push(record);
        let (durable, next) = generated::record(Bytes::from(text), position, at * SEC + SEC);
        indexer.index(durable)?;
        position = next;
        if i % COMMIT_EVERY == COMMIT_EVERY - 1 {
            indexer.commit()?;
        }
        if i % 1000 == 999 {
            eprintln!("search_latency: indexed {} lines", truth.lines);
        }
    }
    indexer.finish()?;
    if !compacted {
        compact(&catalog)?;
    }
    Ok(truth)
}

fn compact(catalog: &Catalog) -> Result<()> {
    let summary = nightowl::index::compact::compact_all(catalog, 17, &|_| true, &mut |_| {})?;
    eprintln!(
        "search_latency: compacted {} partitions, {} -> {} MB",
        summary.partitions,
        summary.bytes_before / 1_000_000,
        summary.bytes_after / 1_000_000
    );
    Ok(())
}

/// What a query asks, as the API's handlers call it.
#[derive(Clone, Copy)]
enum Op {
    /// `GET /api/v1/count` (`nightowl search --count`).
    Count,
    /// `GET /api/v1/search?limit=100` (`nightowl search`).
    Hits,
    /// `GET /api/v1/histogram` with the interval the API picks for the
    /// range (about 60 buckets).
    Histogram(u64),
    /// `GET /api/v1/top?field=...`.
    Top(&'static str),
}

/// How a range reads on the command line: `--since` ago from now, no
/// `--until` (the API then searches up to the end of time).
#[derive(Clone, Copy)]
enum Since {
    Ago(i64),
    Ever,
}

struct Case {
    name: &'static str,
    query: String,
    since: Since,
    op: Op,
    /// Forget remembered phrase verdicts before each run: a query typed for
    /// the first time.
    cold: bool,
}

impl Case {
    fn new(name: &'static str, query: &str, since: Since, op: Op) -> Self {
        Case {
            name,
            query: query.to_string(),
            since,
            op,
            cold: true,
        }
    }

    fn bar(&self) -> Duration {
        match self.op {
            Op::Count | Op::Hits => Duration::from_millis(100),
            Op::Histogram(_) | Op::Top(_) => Duration::from_millis(300),
        }
    }
}

const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn cases(truth: &Truth) -> Vec<Case> {
    use Since::{Ago, Ever};
    let ip = format!("client_ip:{}", truth.ip);
    let network = format!("client_ip:{NETWORK}");
    let mut again = Case::new("phrase 24h again", "\"GET /login\"", Ago(DAY), Op::Count);
    again.cold = false;
    vec![
        Case::new("status 15m", "status:500", Ago(15 * MIN), Op::Count),
        Case::new("status 24h", "status:500", Ago(DAY), Op::Count),
        Case::new("status 7d", "status:500", Ago(7 * DAY), Op::Count),
        Case::new("status 15m hits", "status:500", Ago(15 * MIN), Op::Hits),
        Case::new("status 24h hits", "status:500", Ago(DAY), Op::Hits),
        Case::new("client_ip 7d", &ip, Ago(7 * DAY), Op::Count),
        Case::new("client_ip /16 7d", &network, Ago(7 * DAY), Op::Count),
        Case::new("path prefix 24h", "path:/api/*", Ago(DAY), Op::Count),
        Case::new("path prefix 7d", "path:/api/*", Ago(7 * DAY), Op::Count),
        Case::new(
            "user_agent word 7d",
            "user_agent:curl",
            Ago(7 * DAY),
            Op::Count,
        ),
        Case::new("phrase 24h", "\"GET /login\"", Ago(DAY), Op::Count),
        again,
        Case::new("phrase 7d", "\"GET /login\"", Ago(7 * DAY), Op::Count),
        Case::new("* 7d", "*", Ago(7 * DAY), Op::Count),
        Case::new("* ever", "*", Ever, Op::Count),
        Case::new("histogram * 24h", "*", Ago(DAY), Op::Histogram(1800)),
        Case::new("histogram * 7d", "*", Ago(7 * DAY), Op::Histogram(10_800)),
        Case::new(
            "histogram status 24h",
            "status:500",
            Ago(DAY),
            Op::Histogram(1800),
        ),
        Case::new("top status 7d", "*", Ago(7 * DAY), Op::Top("status")),
        Case::new("top path 24h", "*", Ago(DAY), Op::Top("path")),
    ]
}

/// What one run answered, reduced to what is checked.
#[derive(Debug, PartialEq)]
enum Answer {
    Count(u64),
    Hits(Vec<(i64, Option<u16>)>),
    Buckets(Vec<(i64, u64)>),
    Top(Vec<(String, u64)>, Option<u64>),
}

fn run(catalog: &Catalog, case: &Case, range: TimeRange) -> Result<Answer> {
    if case.cold {
        nightowl::index::query::forget_verdicts();
    }
    // The API's budget: default limits and deadline.
    let budget = Budget::new(QueryLimits::default());
    let q = case.query.as_str();
    Ok(match case.op {
        Op::Count => Answer::Count(search::count_within(catalog, "default", q, range, &budget)?),
        Op::Hits => Answer::Hits(
            search::search_within(catalog, "default", q, range, 100, &budget)?
                .into_iter()
                .map(|h| {
                    let at = nightowl::time::parse_instant(&h.timestamp, 0).unwrap_or(0);
                    (at, h.status)
                })
                .collect(),
        ),
        Op::Histogram(interval) => Answer::Buckets(
            search::histogram_within(catalog, "default", q, range, interval, &budget)?
                .into_iter()
                .map(|b| (b.start_ms, b.count))
                .collect(),
        ),
        Op::Top(field) => {
            let top = search::top_values_within(catalog, "default", q, range, field, 10, &budget)?;
            Answer::Top(
                top.values
                    .into_iter()
                    .map(|v| {
                        let key = v
                            .value
                            .as_str()
                            .map_or_else(|| v.value.to_string(), str::to_string);
                        (key, v.count)
                    })
                    .collect(),
                top.sampled_lines,
            )
        }
    })
}

/// Lines of `truth` matching `case`'s query in `range`.
fn expected_count(truth: &Truth, case: &Case, range: TimeRange) -> Result<u64> {
    let f: fn(&Record) -> u64 = match case.query.as_str() {
        "*" => |r| r.lines,
        "status:500" => |r| r.status[5],
        "path:/api/*" => |r| r.api,
        "user_agent:curl" => |r| r.curl,
        "\"GET /login\"" => |r| r.get_login,
        q if q == format!("client_ip:{NETWORK}") => |r| r.network,
        q if q.starts_with("client_ip:") => |r| r.ip,
        q => bail!("no expectation for {q:?}"),
    };
    Ok(truth.sum(range, f))
}

/// Checks `answer` against the generator's truth.
fn check(truth: &Truth, case: &Case, range: TimeRange, answer: &Answer) -> Result<u64> {
    let want = expected_count(truth, case, range)?;
    match (case.op, answer) {
        (Op::Count, Answer::Count(n)) => {
            ensure!(
                *n == want,
                "{}: counted {n}, the generator wrote {want}",
                case.name
            );
            Ok(*n)
        }
        (Op::Hits, Answer::Hits(hits)) => {
            ensure!(
                hits.len() as u64 == want.min(100),
                "{}: {} hits, want {}",
                case.name,
                hits.len(),
                want.min(100)
            );
            ensure!(
                hits.windows(2).all(|w| w[0].0 >= w[1].0),
                "{}: hits not newest first",
                case.name
            );
            ensure!(
                hits.iter().all(|(at, status)| *status == Some(500)
                    && range.since <= *at
                    && *at < range.until),
                "{}: a hit is not a status 500 in the range",
                case.name
            );
            // The newest 100 are the ones of the newest records.
            let newest = truth
                .records
                .iter()
                .filter(|r| range.since <= r.at * SEC)
                .rev()
                .flat_map(|r| std::iter::repeat_n(r.at * SEC, r.status[5] as usize))
                .take(100);
            ensure!(
                newest.eq(hits.iter().map(|h| h.0)),
                "{}: not the newest hits",
                case.name
            );
            Ok(want)
        }
        (Op::Histogram(interval), Answer::Buckets(buckets)) => {
            let width = interval as i64 * SEC;
            let total: u64 = buckets.iter().map(|b| b.1).sum();
            ensure!(
                total == want,
                "{}: buckets sum to {total}, want {want}",
                case.name
            );
            for &(start_ms, count) in buckets {
                let start = start_ms * 1_000_000;
                let bucket = TimeRange {
                    since: start.max(range.since),
                    until: (start + width).min(range.until),
                };
                let want = expected_count(truth, case, bucket)?;
                ensure!(
                    count == want,
                    "{}: bucket {start_ms} has {count}, want {want}",
                    case.name
                );
            }
            Ok(total)
        }
        (Op::Top("status"), Answer::Top(values, sampled)) => {
            ensure!(sampled.is_none(), "{}: status is a fast field", case.name);
            for (code, slot) in STATUSES.iter().zip(0..) {
                let want = truth.sum(range, |r| r.status[slot]);
                let got = values
                    .iter()
                    .find(|(k, _)| *k == code.to_string())
                    .map_or(0, |v| v.1);
                ensure!(
                    got == want,
                    "{}: status {code}: {got}, want {want}",
                    case.name
                );
            }
            Ok(want)
        }
        (Op::Top(_), Answer::Top(values, sampled)) => {
            // Path has no fast field: counted over the newest lines, here
            // whole records (they are cut at a record's end).
            let read = want.min(search::TOP_SAMPLE_LINES as u64);
            ensure!(
                *sampled == Some(read),
                "{}: sampled {sampled:?}, want {read}",
                case.name
            );
            let mut counts = std::collections::HashMap::<String, u64>::new();
            let mut lines = 0;
            for (i, record) in truth.records.iter().enumerate().rev() {
                if lines >= read || record.at * SEC < range.since {
                    break;
                }
                for line in record_lines(i, record.at).lines() {
                    let target = line.split('"').nth(1).and_then(|r| r.split(' ').nth(1));
                    *counts
                        .entry(target.unwrap_or_default().to_string())
                        .or_default() += 1;
                    lines += 1;
                }
            }
            ensure!(lines == read, "{}: the sample cuts a record", case.name);
            let mut top: Vec<(String, u64)> = counts.into_iter().collect();
            // As `top_values` ranks: most first, then by the JSON value.
            top.sort_by(|a, b| {
                b.1.cmp(&a.1).then_with(|| {
                    serde_json::Value::from(a.0.as_str())
                        .to_string()
                        .cmp(&serde_json::Value::from(b.0.as_str()).to_string())
                })
            });
            top.truncate(values.len().max(1));
            ensure!(
                *values == top,
                "{}: top {values:?}, want {top:?}",
                case.name
            );
            Ok(want)
        }
        _ => bail!("{}: unexpected answer", case.name),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

fn main() -> Result<()> {
    let lines = env_usize("NIGHTOWL_SEARCH_LINES", 100_000)?;
    let runs = env_usize("NIGHTOWL_SEARCH_RUNS", 200)?.max(1);
    let only = std::env::var("NIGHTOWL_SEARCH_ONLY").ok();
    let (catalog, truth) = index(lines)?;
    let now = truth.end() + 30 * SEC;
    let all = TimeRange {
        since: i64::MIN / 2,
        until: i64::MAX / 2,
    };
    let total = search::count(&catalog, "default", "*", all)?;
    ensure!(
        total == truth.lines,
        "'*' counts {total} lines, {} were indexed",
        truth.lines
    );
    // A query far slower than its bar is run for this long at most.
    let slow_budget = Duration::from_secs(30);
    let load_before = loadavg();
    println!(
        "\nsearch latency over {} lines, {} day partitions; {runs} runs a query (fewer when one takes over 250 ms: at most {} s); load average before: {load_before}\n",
        truth.lines,
        catalog.partitions("default", i64::MIN / 2, i64::MAX / 2).len(),
        slow_budget.as_secs(),
    );
    println!(
        "| query | text | op | matches | runs | p50 ms | p99 ms | max ms | bar ms | |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    let mut missed = 0;
    for case in cases(&truth) {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let mut range = match case.since {
            Since::Ago(ago) => TimeRange {
                since: now - ago,
                until: i64::MAX / 2,
            },
            Since::Ever => all,
        };
        if let Op::Histogram(_) = case.op {
            // The API's bucketed range ends now (`bucketed_range`).
            range.until = range.until.min(now);
        }
        // Warm-up, and the answer checked once: every run answers alike.
        let first = run(&catalog, &case, range)?;
        let matches = check(&truth, &case, range, &first)?;
        let mut samples = Vec::with_capacity(runs);
        let started = Instant::now();
        for _ in 0..runs {
            let t = Instant::now();
            let answer = run(&catalog, &case, range)?;
            samples.push(t.elapsed());
            ensure!(
                answer == first,
                "{}: answers differ between runs",
                case.name
            );
            if samples.len() >= 20
                && samples[0] > Duration::from_millis(250)
                && started.elapsed() > slow_budget
            {
                break;
            }
        }
        samples.sort();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        let (p50, p99, max) = (at(0.5), at(0.99), samples[samples.len() - 1]);
        let ok = p99 < case.bar();
        missed += usize::from(!ok);
        let op = match case.op {
            Op::Count => "count".to_string(),
            Op::Hits => "hits 100".to_string(),
            Op::Histogram(i) => format!("histogram {i}s"),
            Op::Top(f) => format!("top {f}"),
        };
        println!(
            "| {} | `{}` | {op} | {matches} | {} | {} | {} | {} | {} | {} |",
            case.name,
            case.query.replace('|', "\\|"),
            samples.len(),
            ms(p50),
            ms(p99),
            ms(max),
            case.bar().as_millis(),
            if ok { "ok" } else { "MISSED" },
        );
    }
    println!(
        "\nload average before: {load_before}, after: {}; {missed} queries over their bar",
        loadavg()
    );
    Ok(())
}
