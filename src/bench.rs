//! `nightowl bench`: a load generator that ships generated access-log
//! lines over real TLS connections and reports throughput and ack latency.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::transport::client::Connection;
use crate::transport::protocol::Batch;
use crate::transport::tls;

pub struct BenchOptions {
    pub collector: String,
    pub ca: PathBuf,
    pub token: String,
    pub lines: u64,
    pub connections: usize,
    pub batch_lines: usize,
    pub window: usize,
}

#[derive(Debug)]
pub struct BenchReport {
    pub lines: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub ack_p50: Duration,
    pub ack_p99: Duration,
    pub ack_p999: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "lines={} bytes={} elapsed={:.2}s rate={:.0} lines/s {:.1} MB/s ack_p50={:.2}ms ack_p99={:.2}ms ack_p999={:.2}ms",
            self.lines,
            self.bytes,
            secs,
            self.lines as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            self.ack_p50.as_secs_f64() * 1e3,
            self.ack_p99.as_secs_f64() * 1e3,
            self.ack_p999.as_secs_f64() * 1e3,
        )
    }
}

/// Realistic nginx combined lines: varied clients, paths, statuses, agents.
pub fn generate_lines(rng: &mut StdRng, count: usize, unix_secs: i64) -> String {
    const METHODS: [&str; 5] = ["GET", "GET", "GET", "POST", "HEAD"];
    const PATHS: [&str; 8] = [
        "/",
        "/index.html",
        "/api/v1/orders",
        "/login",
        "/static/app.js",
        "/images/logo.png",
        "/api/v1/users/42",
        "/search",
    ];
    const STATUSES: [u16; 8] = [200, 200, 200, 304, 301, 404, 401, 500];
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "curl/8.4.0",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    ];
    let stamp = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            ))
            .ok()
        })
        .unwrap_or_else(|| "10/Oct/2000:13:55:36 +0000".into());
    let mut out = String::with_capacity(count * 220);
    for _ in 0..count {
        let _ = writeln!(
            out,
            "{}.{}.{}.{} - - [{stamp}] \"{} {}?id={} HTTP/1.1\" {} {} \"https://example.com/\" \"{}\"",
            rng.gen_range(1..224),
            rng.gen_range(0..256),
            rng.gen_range(0..256),
            rng.gen_range(1..255),
            METHODS[rng.gen_range(0..METHODS.len())],
            PATHS[rng.gen_range(0..PATHS.len())],
            rng.gen_range(0..100_000),
            STATUSES[rng.gen_range(0..STATUSES.len())],
            rng.gen_range(100..60_000),
            AGENTS[rng.gen_range(0..AGENTS.len())],
        );
    }
    out
}

pub async fn run(opts: BenchOptions) -> Result<BenchReport> {
    let tls = tls::client_config(&opts.ca)?;
    let connections = opts.connections.max(1);
    let batch_lines = opts.batch_lines.max(1);
    let now = crate::time::now_nanos() / 1_000_000_000;
    let mut rng = StdRng::seed_from_u64(now as u64);
    // Pre-generate, so the generator's cost is not measured.
    let pool: Arc<Vec<Bytes>> = Arc::new(
        (0..64)
            .map(|_| Bytes::from(generate_lines(&mut rng, batch_lines, now)))
            .collect(),
    );
    let run_id: u64 = rng.gen();
    let per_connection = opts.lines.div_ceil(connections as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let conn = Connection::connect(
            &opts.collector,
            Arc::clone(&tls),
            &opts.token,
            &format!("bench-{run_id:x}"),
        )
        .await
        .with_context(|| format!("connection {c}"))?;
        let pool = Arc::clone(&pool);
        let window = opts.window.max(1);
        let lines = per_connection.min(opts.lines.saturating_sub(c as u64 * per_connection));
        tasks.push(tokio::spawn(drive(
            conn,
            pool,
            format!("bench-{c}"),
            lines,
            batch_lines as u64,
            window,
        )));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let (mut lines, mut bytes) = (0u64, 0u64);
    for task in tasks {
        let (l, b, h) = task.await.context("bench task")??;
        lines += l;
        bytes += b;
        hist.add(h).context("merging histograms")?;
    }
    let elapsed = started.elapsed();
    let q = |q: f64| Duration::from_micros(hist.value_at_quantile(q));
    Ok(BenchReport {
        lines,
        bytes,
        elapsed,
        ack_p50: q(0.5),
        ack_p99: q(0.99),
        ack_p999: q(0.999),
    })
}

async fn drive(
    conn: Connection,
    pool: Arc<Vec<Bytes>>,
    source_id: String,
    lines: u64,
    batch_lines: u64,
    window: usize,
) -> Result<(u64, u64, Histogram<u64>)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let (mut acks, mut writer) = conn.split();
    let mut inflight: VecDeque<Instant> = VecDeque::new();
    let (mut sent_lines, mut sent_bytes, mut offset, mut seq) = (0u64, 0u64, 0u64, 0u64);
    while sent_lines < lines || !inflight.is_empty() {
        while sent_lines < lines && inflight.len() < window {
            let body = pool[(seq as usize) % pool.len()].clone();
            let take = batch_lines.min(lines - sent_lines);
            let body = if take < batch_lines {
                let cut = body
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .nth(take as usize - 1)
                    .map_or(body.len(), |(i, _)| i + 1);
                body.slice(..cut)
            } else {
                body
            };
            seq += 1;
            let len = body.len() as u64;
            writer
                .feed(Batch {
                    seq,
                    source_id: source_id.clone(),
                    source: "bench".into(),
                    host: "bench-host".into(),
                    format: "combined".into(),
                    first_offset: offset,
                    lines: body,
                })
                .await?;
            offset += len;
            sent_lines += take;
            sent_bytes += len;
            inflight.push_back(Instant::now());
        }
        writer.flush().await?;
        acks.recv_ack().await?;
        if let Some(sent) = inflight.pop_front() {
            hist.saturating_record(sent.elapsed().as_micros() as u64);
        }
    }
    Ok((sent_lines, sent_bytes, hist))
}
