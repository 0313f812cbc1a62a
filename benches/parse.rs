//! Parser throughput on generated but realistic traffic.
//!
//! Before measuring, a counting allocator checks the hot-path promise: a
//! pass over the combined corpus must not allocate at all.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::parse::{parse_line, Format, ParseContext};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

const LINES: usize = 10_000;

/// 2024-11-24T00:00:00Z
const BASE_SECS: i64 = 1_732_406_400;

const CTX: ParseContext = ParseContext {
    now_nanos: (BASE_SECS + 86_400) * 1_000_000_000,
};

/// xorshift64: deterministic corpora without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const PATHS: [&str; 14] = [
    "/",
    "/index.html",
    "/favicon.ico",
    "/robots.txt",
    "/static/js/app.3f9a1c.js",
    "/static/css/main.css",
    "/api/v1/users/{id}",
    "/api/v1/orders?page={id}&per_page=50",
    "/search?q=rust+log+parser&lang=en",
    "/products/{id}/reviews",
    "/wp-login.php",
    "/.env",
    "/images/banner-{id}.webp",
    "/cart?add={id}",
];

const METHODS: [&str; 8] = ["GET", "GET", "GET", "GET", "POST", "POST", "HEAD", "PUT"];

const STATUSES: [&str; 12] = [
    "200", "200", "200", "200", "200", "304", "301", "404", "404", "403", "500", "502",
];

const AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "-",
];

const REFERERS: [&str; 5] = [
    "-",
    "-",
    "https://www.google.com/",
    "https://example.com/products/42",
    "https://news.ycombinator.com/item?id=42200000",
];

fn client_ip(rng: &mut Rng) -> String {
    if rng.below(10) == 0 {
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.below(0xffff),
            rng.below(0xffff),
            rng.below(0xffff)
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        )
    }
}

fn clf_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // The corpus stays within November 2024, so the date arithmetic is trivial.
    let day = 24 + days - BASE_SECS / 86_400;
    format!(
        "{:02}/{}/2024:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[10],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn combined_corpus() -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..LINES)
        .map(|i| {
            let path = rng
                .pick(&PATHS)
                .replace("{id}", &rng.below(100_000).to_string());
            let user = if rng.below(20) == 0 { "alice" } else { "-" };
            let mut line = format!(
                "{} - {} [{}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"",
                client_ip(&mut rng),
                user,
                clf_time(BASE_SECS + i as i64 * 3),
                rng.pick(&METHODS),
                path,
                rng.pick(&STATUSES),
                rng.below(200_000),
                rng.pick(&REFERERS),
                rng.pick(&AGENTS),
            );
            // A third of the fleet logs request time like many nginx configs.
            if i % 3 == 0 {
                line.push_str(&format!(" rt=0.{:03}", rng.below(1000)));
            }
            line
        })
        .collect()
}

fn json_corpus() -> Vec<String> {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    (0..LINES)
        .map(|i| {
            let path = rng.pick(&PATHS).replace("{id}", &rng.below(100_000).to_string());
            format!(
                r#"{{"time_local":"{}","remote_addr":"{}","remote_user":"","request":"{} {} HTTP/1.1","status":"{}","body_bytes_sent":"{}","request_time":"0.{:03}","http_referrer":"{}","http_user_agent":"{}","http_x_forwarded_for":"","host":"example.com"}}"#,
                clf_time(BASE_SECS + i as i64 * 3),
                client_ip(&mut rng),
                rng.pick(&METHODS),
                path,
                rng.pick(&STATUSES),
                rng.below(200_000),
                rng.below(1000),
                rng.pick(&REFERERS),
                rng.pick(&AGENTS),
            )
        })
        .collect()
}

fn syslog_corpus() -> Vec<String> {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let apps = ["sshd", "systemd", "kernel", "cron", "postfix", "nginx"];
    let msgs = [
        "Accepted publickey for deploy from 198.51.100.4 port 50022 ssh2",
        "Started Session 42 of User root.",
        "eth0: link up, 1000Mbps, full-duplex",
        "(root) CMD (run-parts /etc/cron.hourly)",
        "connect from unknown[203.0.113.9]",
        "upstream timed out (110: Connection timed out) while reading response header",
    ];
    (0..LINES)
        .map(|i| {
            let k = rng.below(apps.len());
            let secs = BASE_SECS + i as i64 * 3;
            let sd = if i % 4 == 0 {
                r#"[origin ip="192.0.2.10" software="rsyslogd"][meta sequenceId="17"]"#
            } else {
                "-"
            };
            format!(
                "<{}>1 2024-11-24T{:02}:{:02}:{:02}.{:06}Z web-{:02}.example.com {} {} - {} {}",
                8 * (rng.below(24) as u32) + rng.below(8) as u32,
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60,
                rng.below(1_000_000),
                rng.below(40),
                apps[k],
                rng.below(65_536),
                sd,
                msgs[k],
            )
        })
        .collect()
}

/// Fails loudly if the corpus stops parsing: a benchmark of the error path
/// would report flattering numbers.
fn check(name: &str, lines: &[String], want: Format) {
    for line in lines {
        match parse_line(line.as_bytes(), Format::Auto, &CTX) {
            Ok(ev) if ev.format == want => {}
            other => panic!("{name}: {line:?} -> {other:?}"),
        }
    }
}

fn check_combined_allocations(lines: &[String]) {
    let before = counting_alloc::allocations();
    for line in lines {
        black_box(parse_line(black_box(line.as_bytes()), Format::Auto, &CTX).ok());
    }
    let allocations = counting_alloc::allocations() - before;
    assert_eq!(
        allocations,
        0,
        "combined parsing allocated {allocations} times over {} lines",
        lines.len()
    );
    eprintln!("combined: 0 allocations over {} lines", lines.len());
}

fn bench_corpus(c: &mut Criterion, name: &str, lines: &[String], hint: Format) {
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut group = c.benchmark_group(name);
    for (label, throughput) in [
        ("lines", Throughput::Elements(lines.len() as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ] {
        group.throughput(throughput);
        group.bench_function(label, |b| {
            b.iter(|| {
                for line in lines {
                    // Event is consumed so that nothing is optimised out.
                    let _ = black_box(parse_line(black_box(line.as_bytes()), hint, &CTX));
                }
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let combined = combined_corpus();
    let json = json_corpus();
    let syslog = syslog_corpus();
    check("combined", &combined, Format::Combined);
    check("json", &json, Format::Json);
    check("syslog5424", &syslog, Format::Syslog5424);
    check_combined_allocations(&combined);

    bench_corpus(c, "combined", &combined, Format::Auto);
    bench_corpus(c, "json", &json, Format::Auto);
    bench_corpus(c, "syslog5424", &syslog, Format::Auto);
}

criterion_group!(parsers, benches);
criterion_main!(parsers);
