//! Pattern mining throughput on Loghub's sixteen 2k datasets (set
//! `NIGHTOWL_LOGHUB`, see benches/loghub.md; without it the bench says so
//! and measures nothing).
//!
//! Two rates: *cold*, each dataset mined by a fresh miner (a new source:
//! most lines bring a signature never seen, the slow path), and *warm*,
//! the same lines again through miners that have seen them (a steady
//! stream: the hot path). Printed first in lines per second of thread CPU
//! time, best of 5, since the machine may be shared; criterion's wall-clock
//! numbers follow. Before measuring, a counting allocator checks that the
//! warm pass allocates nothing.
//!
//! A third rate needs no dataset: a miner at its cap, as the collector bounds
//! one stream, fed access-log path shapes where nearly every line is a new
//! statement (a crawler's or scanner's random paths), so it evicts all the
//! time.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::patterns::{eval, Config as MinerConfig, Miner};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

fn thread_cpu_nanos() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer to a timespec on the stack.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

fn cold(sets: &[eval::Labelled]) {
    for set in sets {
        let mut miner = Miner::default();
        for m in &set.messages {
            black_box(miner.add(m.as_bytes()));
        }
    }
}

fn warm(miners: &mut [Miner], sets: &[eval::Labelled]) {
    for (miner, set) in miners.iter_mut().zip(sets) {
        for m in &set.messages {
            black_box(miner.add(m.as_bytes()));
        }
    }
}

/// Lines per CPU-second of `f` over `lines` lines, best of 5.
fn cpu_rate(lines: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = thread_cpu_nanos();
        for _ in 0..10 {
            f();
        }
        best = best.min((thread_cpu_nanos() - t0) as f64 / 1e9 / 10.0);
    }
    lines as f64 / best
}

/// `lines` access-log messages as the collector mines them (method, then
/// one token per path segment), from random word paths: a deterministic
/// generator, so every run mines the same lines.
fn random_paths(lines: usize) -> Vec<String> {
    const WORDS: [&str; 30] = [
        "users", "cart", "posts", "orders", "img", "js", "css", "assets", "api", "v1", "v2",
        "login", "search", "tags", "feed", "news", "media", "docs", "static", "help", "items",
        "account", "archive", "blog", "category", "checkout", "products", "profile", "settings",
        "admin",
    ];
    const EXTS: [&str; 6] = ["", ".jpg", ".json", ".css", ".php", ".svg"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    (0..lines)
        .map(|_| {
            let mut m = String::from(if next(10) == 0 { "POST" } else { "GET" });
            for _ in 0..=next(5) {
                m.push_str(" /");
                m.push_str(WORDS[next(WORDS.len())]);
            }
            if next(2) == 0 {
                m.push_str(&format!(" /{}{}", next(1_000_000), EXTS[next(EXTS.len())]));
            }
            m
        })
        .collect()
}

fn capped(messages: &[String]) {
    let mut miner = Miner::new(MinerConfig {
        max_patterns: 2_000,
        max_shapes: 20_000,
        ..MinerConfig::default()
    });
    for m in messages {
        black_box(miner.add(m.as_bytes()));
    }
}

fn bench(c: &mut Criterion) {
    let paths = random_paths(50_000);
    println!(
        "patterns: {} random access-log paths through a miner capped at 2,000 patterns: {:.0} lines per CPU-second (best of 5)",
        paths.len(),
        cpu_rate(paths.len(), || capped(&paths))
    );
    let Some(dir) = std::env::var_os("NIGHTOWL_LOGHUB") else {
        eprintln!("patterns: NIGHTOWL_LOGHUB is not set (see benches/loghub.md); nothing measured");
        return;
    };
    let sets = eval::read_loghub(&PathBuf::from(dir)).unwrap_or_else(|e| panic!("{e:#}"));
    let lines: usize = sets.iter().map(|s| s.messages.len()).sum();
    let mut miners: Vec<Miner> = sets.iter().map(|_| Miner::default()).collect();
    warm(&mut miners, &sets);

    let before = counting_alloc::allocations();
    warm(&mut miners, &sets);
    let allocations = counting_alloc::allocations() - before;
    assert_eq!(
        allocations, 0,
        "the warm pass allocated {allocations} times over {lines} lines"
    );

    println!(
        "patterns: {lines} lines, cold {:.0} lines per CPU-second, warm {:.0} (best of 5)",
        cpu_rate(lines, || cold(&sets)),
        cpu_rate(lines, || warm(&mut miners, &sets)),
    );

    let mut group = c.benchmark_group("patterns");
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function("loghub 2k x16, cold", |b| b.iter(|| cold(&sets)));
    group.bench_function("loghub 2k x16, warm", |b| {
        b.iter(|| warm(&mut miners, &sets))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
