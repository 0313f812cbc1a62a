//! Payload detectors: detection and false-positive rates per class on the
//! labelled set (`tests/fixtures/payloads/`, dev and held-out splits), and
//! their throughput.
//!
//! `cargo bench --bench payloads` prints the rates, then criterion times
//! each detector over the benign values (the common case in real traffic)
//! and over the attacks, as request paths `/page?q=VALUE`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::detect::payload::eval::{load, rate, request_path, CLASSES};
use nightowl::detect::payload::{detect, Payload, PayloadScratch};

fn dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/payloads"
    ))
}

fn report() {
    let mut sc = PayloadScratch::new();
    println!("payload detection (flagged / total), benign = false positives");
    for split in ["dev", "heldout"] {
        for class in CLASSES {
            let samples = match load(dir(), split, class) {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
            let r = rate(class, &samples, &mut sc);
            println!(
                "  {split:8} {class:10} {:>6} / {:<6} {:7.3}%",
                r.flagged,
                r.total,
                r.rate() * 100.0
            );
        }
    }
}

fn paths(split: &str, class: &str) -> Vec<String> {
    match load(dir(), split, class) {
        Ok(s) => s.iter().map(|s| request_path(&s.value)).collect(),
        Err(e) => panic!("{e}"),
    }
}

fn bench(c: &mut Criterion) {
    report();
    let benign = paths("dev", "benign");
    let mut attacks = Vec::new();
    for class in ["sqli", "xss", "cmdi", "traversal"] {
        attacks.extend(paths("dev", class));
    }
    let mut g = c.benchmark_group("payloads");
    for (name, set) in [("benign", &benign), ("attacks", &attacks)] {
        g.throughput(Throughput::Elements(set.len() as u64));
        for kind in Payload::ALL {
            let mut sc = PayloadScratch::new();
            g.bench_function(format!("{}_{name}", kind.name()), |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for p in set.iter() {
                        n += usize::from(detect(kind, p, &mut sc));
                    }
                    black_box(n)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
