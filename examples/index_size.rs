//! Where an index's bytes go: indexes a log file through the collector's
//! own indexer (parse, patterns, documents, 1-second-sized commits), then
//! prints the bytes per tantivy component and per field.
//!
//! `cargo run --release --example index_size -- LOG DATA_DIR`
//! (DATA_DIR must not exist). With `--report-only INDEX_DIR` it only prints
//! the breakdown of an index directory (e.g. a collector's `index/`).
//! `--compact` then compacts the index (`nightowl index compact` without a
//! collector) and prints the breakdown again; `--zstd-level N` (default
//! the collector's) sets the compacted doc store's level.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use nightowl::config::IndexConfig;
use nightowl::index::{Catalog, Checkpoint, Downstream, Indexer};
use nightowl::ingest::{Durable, IngestRecord};
use nightowl::telemetry::Metrics;

/// About one agent batch (1 MiB of 215-byte lines).
const LINES_PER_RECORD: usize = 4_800;
/// About one second of ingest at the collector's measured rate: the
/// commit cadence, so segments look like a live collector's.
const LINES_PER_COMMIT: usize = 60_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let report_only = args.iter().any(|a| a == "--report-only");
    let compact = args.iter().any(|a| a == "--compact");
    let level = match args.iter().position(|a| a == "--zstd-level") {
        Some(i) => args.get(i + 1).context("--zstd-level N")?.parse()?,
        None => IndexConfig::default().compact_zstd_level,
    };
    let paths: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<i32>().is_err())
        .collect();
    let (index_dir, raw_bytes) = if report_only {
        let dir = paths
            .first()
            .context("usage: index_size --report-only INDEX_DIR [--compact]")?;
        let dir = Path::new(dir.as_str()).to_path_buf();
        report(&dir)?;
        (dir, None)
    } else {
        let (Some(log), Some(data)) = (paths.first(), paths.get(1)) else {
            anyhow::bail!("usage: index_size LOG DATA_DIR [--compact]");
        };
        let data = Path::new(data.as_str());
        anyhow::ensure!(!data.exists(), "{} exists already", data.display());
        let index_dir = data.join("index");
        let raw_bytes = ingest(Path::new(log.as_str()), &index_dir)?;
        println!("raw log: {raw_bytes} bytes");
        report(&index_dir)?;
        (index_dir, Some(raw_bytes))
    };
    if compact {
        let catalog = Catalog::open(&index_dir)?;
        let started = std::time::Instant::now();
        let summary =
            nightowl::index::compact::compact_all(&catalog, level, &|_| true, &mut |p| {
                println!(
                    "  compacted {}/{}: {} -> {} bytes",
                    p.tenant, p.day, p.bytes_before, p.bytes_after
                )
            })?;
        println!(
            "\ncompacted {} of {} partitions in {:.1} s (zstd {level}): index {} -> {} bytes",
            summary.compacted,
            summary.partitions,
            started.elapsed().as_secs_f64(),
            summary.bytes_before,
            summary.bytes_after
        );
        if let Some(raw) = raw_bytes {
            println!(
                "index/ after compaction: {:.3}x the raw log",
                summary.bytes_after as f64 / raw as f64
            );
        }
        drop(catalog);
        report(&index_dir)?;
    }
    Ok(())
}

fn ingest(log: &Path, index_dir: &Path) -> Result<u64> {
    let catalog = Catalog::open(index_dir)?;
    let patterns_dir = index_dir
        .parent()
        .context("index dir has a parent")?
        .join("patterns");
    let patterns = nightowl::patterns::SharedPatterns::new(nightowl::patterns::PatternStore::open(
        patterns_dir.join("state.json"),
        nightowl::patterns::StreamLimits::default(),
        std::time::Duration::from_secs(3600),
    )?);
    let mut indexer = Indexer::new(
        catalog,
        IndexConfig::default(),
        index_dir.to_path_buf(),
        Checkpoint::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(Metrics::default()),
        Downstream {
            patterns: Some(patterns),
            ..Downstream::default()
        },
    );
    let file = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut position, mut raw_bytes, mut since_commit) = (8u64, 0u64, 0usize);
    let mut batch = Vec::with_capacity(1 << 21);
    let mut line = Vec::new();
    let mut in_batch = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", log.display()))?;
        if n > 0 {
            raw_bytes += n as u64;
            batch.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                batch.push(b'\n');
            }
            in_batch += 1;
        }
        if in_batch == LINES_PER_RECORD || (n == 0 && in_batch > 0) {
            let end = position + batch.len() as u64 + 100;
            indexer.index(Durable {
                start: position,
                end,
                record: IngestRecord {
                    tenant: "default".into(),
                    agent_id: "index_size".into(),
                    source_id: "s0".into(),
                    source: log.display().to_string(),
                    host: "web-1".into(),
                    format: "auto".into(),
                    first_offset: raw_bytes - batch.len() as u64,
                    received_unix_nanos: nightowl::time::now_nanos(),
                    lines: Bytes::from(std::mem::take(&mut batch)),
                    resized: None,
                },
                received: None,
            })?;
            position = end;
            since_commit += in_batch;
            in_batch = 0;
            if since_commit >= LINES_PER_COMMIT {
                indexer.commit()?;
                since_commit = 0;
            }
        }
        if n == 0 {
            break;
        }
    }
    indexer.finish()?;
    Ok(raw_bytes)
}

fn by_extension(dir: &Path, into: &mut BTreeMap<String, u64>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            by_extension(&path, into)?;
        } else {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("(none)")
                .to_string();
            *into.entry(ext).or_default() += meta.len();
        }
    }
    Ok(())
}

fn report(index_dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    by_extension(index_dir, &mut files)?;
    let total: u64 = files.values().sum();
    println!("\nfiles under {} by extension:", index_dir.display());
    for (ext, bytes) in &files {
        println!(
            "  {ext:<10} {:>12} bytes  {:>5.1}%",
            bytes,
            100.0 * *bytes as f64 / total as f64
        );
    }
    println!("  {:<10} {:>12} bytes", "total", total);

    let catalog = Catalog::open(index_dir)?;
    // component -> field -> bytes
    let mut per: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut store, mut segments, mut docs) = (0u64, 0usize, 0u64);
    for partition in catalog.all() {
        let searcher = partition.reader.searcher();
        let usage = searcher.space_usage()?;
        for segment in usage.segments() {
            segments += 1;
            docs += u64::from(segment.num_docs());
            store += segment.store().total().get_bytes();
            for (name, fields) in [
                ("term", segment.termdict()),
                ("idx", segment.postings()),
                ("pos", segment.positions()),
                ("fast", segment.fast_fields()),
                ("fieldnorm", segment.fieldnorms()),
            ] {
                for field in fields.fields() {
                    *per.entry(name)
                        .or_default()
                        .entry(field.field_name().to_string())
                        .or_default() += field.total().get_bytes();
                }
            }
        }
    }
    println!("\n{docs} docs in {segments} segments; per component and field:");
    println!("  store      {store:>12} bytes");
    for (component, fields) in &per {
        let sum: u64 = fields.values().sum();
        println!("  {component:<10} {sum:>12} bytes");
        let mut fields: Vec<_> = fields.iter().filter(|(_, b)| **b > 0).collect();
        fields.sort_by(|a, b| b.1.cmp(a.1));
        for (field, bytes) in fields {
            println!("      {field:<12} {bytes:>12}");
        }
    }
    Ok(())
}
