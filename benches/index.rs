//! Indexing throughput: WAL records of generated nginx combined lines
//! through parse + document building + tantivy, committed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightowl::config::IndexConfig;
use nightowl::index::{Catalog, Checkpoint, Downstream, Indexer};
use nightowl::ingest::{Durable, IngestRecord};
use nightowl::telemetry::Metrics;
use rand::SeedableRng;

const LINES_PER_BATCH: usize = 2_000;
const BATCHES: usize = 25;

fn batches() -> Vec<Bytes> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = nightowl::time::now_nanos() / 1_000_000_000;
    (0..BATCHES)
        .map(|_| {
            Bytes::from(nightowl::bench::generate_lines(
                &mut rng,
                LINES_PER_BATCH,
                now,
            ))
        })
        .collect()
}

fn index_batches(c: &mut Criterion) {
    let batches = batches();
    let bytes: usize = batches.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    group.throughput(Throughput::Elements((LINES_PER_BATCH * BATCHES) as u64));
    group.bench_function("combined_50k_lines_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let catalog = Catalog::open(dir.path()).expect("catalog");
                let mut indexer = Indexer::new(
                    catalog,
                    IndexConfig::default(),
                    dir.path().to_path_buf(),
                    Checkpoint::default(),
                    Arc::new(AtomicU64::new(0)),
                    Arc::new(Metrics::default()),
                    Downstream::default(),
                );
                let started = Instant::now();
                let mut position = 8;
                for (i, lines) in batches.iter().enumerate() {
                    let end = position + lines.len() as u64 + 100;
                    indexer
                        .index(Durable {
                            start: position,
                            end,
                            record: IngestRecord {
                                tenant: "default".into(),
                                agent_id: "bench".into(),
                                source_id: format!("s{i}"),
                                source: "/var/log/nginx/access.log".into(),
                                host: "web-1".into(),
                                format: "combined".into(),
                                first_offset: 0,
                                received_unix_nanos: nightowl::time::now_nanos(),
                                lines: lines.clone(),
                                resized: None,
                            },
                            received: None,
                        })
                        .expect("index");
                    position = end;
                }
                indexer.commit().expect("commit");
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    eprintln!(
        "input: {bytes} bytes in {} lines",
        LINES_PER_BATCH * BATCHES
    );
}

criterion_group!(benches, index_batches);
criterion_main!(benches);
