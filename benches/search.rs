//! Search latency over one day of 200k generated nginx lines, indexed
//! through the collector's indexer and then compacted (as a closed day
//! is): a word, a term, phrases (checked against the stored line in the
//! current layout), field phrases, a histogram and a page of hits.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use nightowl::index::search::{self, TimeRange};
use nightowl::index::Catalog;
use rand::SeedableRng;

#[path = "common/generated.rs"]
mod generated;

const LINES: usize = 200_000;
const PER_RECORD: usize = 2_000;

fn build(dir: &std::path::Path, day_start: i64) -> Arc<Catalog> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let catalog = Catalog::open(dir).expect("catalog");
    let mut indexer = generated::indexer(&catalog, dir);
    let mut position = 8;
    for i in 0..LINES / PER_RECORD {
        // Spread over the day, one record per ~7 minutes of event time.
        let at = day_start / 1_000_000_000 + (i as i64) * 420;
        let lines = Bytes::from(nightowl::bench::generate_lines(&mut rng, PER_RECORD, at));
        let (record, end) = generated::record(lines, position, nightowl::time::now_nanos());
        indexer.index(record).expect("index");
        position = end;
        if i % 25 == 24 {
            indexer.commit().expect("commit");
        }
    }
    indexer.finish().expect("finish");
    let catalog = Catalog::open(dir).expect("reopen");
    compact(&catalog);
    catalog
}

/// Compacts the day, as the collector does once it is closed.
fn compact(catalog: &Catalog) {
    nightowl::index::compact::compact_all(catalog, 17, &|_| true, &mut |_| {}).expect("compacts");
}

fn searches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = nightowl::time::now_nanos() / nightowl::time::NANOS_PER_DAY - 2;
    let day_start = day * nightowl::time::NANOS_PER_DAY;
    let catalog = build(dir.path(), day_start);
    let whole_day = TimeRange {
        since: day_start,
        until: day_start + nightowl::time::NANOS_PER_DAY,
    };
    // A range that cuts the day: the time clause is applied.
    let six_hours = TimeRange {
        since: day_start + 6 * 3_600_000_000_000,
        until: day_start + 12 * 3_600_000_000_000,
    };
    let total = search::count(&catalog, "default", "*", whole_day).expect("count");
    assert_eq!(total, LINES as u64);
    let mut group = c.benchmark_group("search_200k");
    group.sample_size(10);
    for (name, query, range) in [
        ("term_status", "status:500", whole_day),
        ("term_status_6h", "status:500", six_hours),
        ("word", "curl", whole_day),
        ("phrase", "\"GET /login\"", whole_day),
        ("phrase_ip", "\"10.1.2.3\"", whole_day),
        ("field_phrase_agent", "user_agent:\"curl/8.4.0\"", whole_day),
        ("field_phrase_path", "path:/api/v1/orders", whole_day),
    ] {
        let n = search::count(&catalog, "default", query, range).expect(query);
        eprintln!("{name}: {query} matches {n} lines");
        // A first query: nothing remembered from the previous run.
        group.bench_function(name, |b| {
            b.iter(|| {
                nightowl::index::query::forget_verdicts();
                search::count(&catalog, "default", query, range).expect(query)
            })
        });
    }
    // The same phrase again (the web page asks count, hits, histogram and
    // facets of one query): the lines checked once are not read again.
    group.bench_function("phrase_again", |b| {
        b.iter(|| search::count(&catalog, "default", "\"GET /login\"", whole_day).expect("phrase"))
    });
    group.bench_function("histogram_5m", |b| {
        b.iter(|| search::histogram(&catalog, "default", "*", whole_day, 300).expect("histogram"))
    });
    group.bench_function("hits_100_word", |b| {
        b.iter(|| search::search(&catalog, "default", "curl", whole_day, 100).expect("search"))
    });
    group.finish();
}

criterion_group!(benches, searches);
criterion_main!(benches);
