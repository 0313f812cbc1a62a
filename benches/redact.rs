//! Redaction throughput on realistic access-log traffic: batches with no
//! secret (the common case) and with 10% of lines holding one.
//!
//! Before measuring, a counting allocator checks the promise of the common
//! case: a batch without secrets is returned as is, with no allocation.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::redact::{RedactConfig, Redactor};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

/// Lines per batch, about what an agent sends at full speed.
const BATCH: usize = 2_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/static/app.3f9c1b.js",
    "/static/css/main.css",
    "/api/v1/orders/48213/items",
    "/api/v1/users/me",
    "/products/shoes?page=2&sort=price_asc&size=42",
    "/search?q=winter+jacket&utm_source=newsletter&utm_medium=email&utm_campaign=nov",
    "/blog/2024/11/how-we-scaled-our-session-store",
    "/oauth/authorize?client_id=web&response_type=code&redirect_uri=https%3A%2F%2Fexample.com%2Fcb",
    "/images/banner-1200x400.webp",
    "/account/keys/list",
    "/checkout/confirm?order=ORD-20241124-88812",
    "/api/v2/metrics?from=1732406400&to=1732492800&step=60",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "curl/8.4.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "okhttp/4.12.0",
];
const REFERERS: &[&str] = &[
    "-",
    "https://www.google.com/",
    "https://example.com/products/shoes",
    "https://example.com/account/settings",
];
const SECRET_PATHS: &[&str] = &[
    "/login?user=bob&password=hunter2Xq",
    "/api/v1/export?access_token=ya29.a0AfB_byC3x9Q",
    "/reset?token=8f14e45fceea167a5a36dedd4bea2543",
    "/pay?card=4111111111111111&amount=12",
    "/hook?api_key=AIzaSyA-1234567890abcdefghijklmnopqrstu",
];

fn corpus(secret_every: u64, seed: u64) -> Bytes {
    let mut rng = Rng(seed);
    let mut out = String::new();
    for i in 0..BATCH as u64 {
        let ip = format!(
            "{}.{}.{}.{}",
            rng.below(223) + 1,
            rng.below(256),
            rng.below(256),
            rng.below(256)
        );
        let path = if secret_every > 0 && i % secret_every == 0 {
            rng.pick(SECRET_PATHS)
        } else {
            rng.pick(PATHS)
        };
        let status = [200, 200, 200, 304, 404, 500][rng.below(6) as usize];
        out.push_str(&format!(
            "{ip} - - [24/Nov/2024:{:02}:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" {status} {} \"{}\" \"{}\" rt={}.{:03}\n",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(200_000),
            rng.pick(REFERERS),
            rng.pick(AGENTS),
            rng.below(3),
            rng.below(1000),
        ));
    }
    Bytes::from(out)
}

fn bench(c: &mut Criterion) {
    let redactor = Redactor::new(&RedactConfig::default()).expect("default redactor");
    let clean = corpus(0, 0x9e37_79b9_7f4a_7c15);
    let mixed = corpus(10, 0x2545_f491_4f6c_dd1d);

    let before = counting_alloc::allocations();
    let none = redactor.redact_batch(&clean);
    let allocations = counting_alloc::allocations() - before;
    assert!(
        none.is_none(),
        "the clean corpus must have nothing to redact"
    );
    assert_eq!(
        allocations, 0,
        "a clean batch allocated {allocations} times"
    );
    let redacted = redactor.redact_batch(&mixed).expect("10% secrets");
    let replaced: u64 = redacted.counts.iter().map(|(_, n)| n).sum();
    assert_eq!(replaced, (BATCH / 10) as u64, "one secret per tenth line");

    let mut group = c.benchmark_group("redact");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch, no secrets", |b| {
        b.iter(|| black_box(redactor.redact_batch(black_box(&clean))))
    });
    group.bench_function("batch, 10% secrets", |b| {
        b.iter(|| black_box(redactor.redact_batch(black_box(&mixed))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
