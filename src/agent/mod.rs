//! The first agent: ships the files matching its globs to a collector.
//!
//! The files themselves are the resend buffer: the agent keeps, per file,
//! the offset the collector has acknowledged (durably, in `--state-dir`),
//! and after any reconnect it re-reads from there. The collector's per-source
//! dedup turns those resends into exactly-once. Rotation handling, the disk
//! spool and inotify belong to the full agent (issue 3).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::transport::client::{Ack, ClientError, Connection};
use crate::transport::protocol::Batch;
use crate::transport::tls;

pub struct AgentOptions {
    /// Collectors to try, in order (failover on connection errors).
    pub collectors: Vec<String>,
    pub ca: PathBuf,
    pub token: String,
    pub state_dir: PathBuf,
    pub globs: Vec<String>,
    /// `host` label sent with every batch.
    pub host: String,
    /// Parser hint for every file.
    pub format: String,
    /// Exit once every file is shipped and acknowledged (scripts, tests).
    pub once: bool,
    pub batch_bytes: usize,
    pub max_inflight: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    agent_id: String,
    /// source id → acknowledged offset and last known path.
    files: BTreeMap<String, FileCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileCheckpoint {
    path: PathBuf,
    acked: u64,
}

struct Tailed {
    source_id: String,
    path: PathBuf,
    /// Next byte to read.
    read: u64,
    acked: u64,
}

pub async fn run(opts: AgentOptions) -> Result<()> {
    if opts.collectors.is_empty() {
        bail!("no collector address given");
    }
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating state dir {}", opts.state_dir.display()))?;
    let tls = tls::client_config(&opts.ca)?;
    let mut state = load_state(&opts.state_dir)?;
    let mut files: Vec<Tailed> = Vec::new();
    let mut attempt = 0u32;
    let mut collector_index = 0usize;
    loop {
        discover(&opts.globs, &state, &mut files)?;
        let addr = &opts.collectors[collector_index % opts.collectors.len()];
        match Connection::connect(addr, Arc::clone(&tls), &opts.token, &state.agent_id).await {
            Ok(conn) => {
                attempt = 0;
                tracing::info!(collector = %addr, tenant = %conn.tenant, "connected");
                match ship(&opts, conn, &mut state, &mut files).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_fatal() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "connection lost; resending from the last ack")
                    }
                }
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach collector");
                collector_index += 1;
            }
        }
        // Everything unacknowledged is re-read from the files.
        for f in &mut files {
            f.read = f.acked;
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// Exponential backoff from 100 ms to 10 s with full jitter, so a fleet
/// of agents does not reconnect in lockstep after a collector restart.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 100u64.saturating_mul(1 << attempt.min(7)).min(10_000);
    Duration::from_millis(rand::thread_rng().gen_range(cap_ms / 2..=cap_ms))
}

fn load_state(dir: &Path) -> Result<State> {
    let path = dir.join("agent-state.json");
    let mut state: State = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if state.agent_id.is_empty() {
        let mut id = [0u8; 8];
        rand::thread_rng().fill(&mut id);
        state.agent_id = hex::encode(id);
        save_state(dir, &state)?;
    }
    Ok(state)
}

fn save_state(dir: &Path, state: &State) -> Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    tls::write_file(&dir.join("agent-state.json"), &json, 0o600)
}

fn discover(globs: &[String], state: &State, files: &mut Vec<Tailed>) -> Result<()> {
    for pattern in globs {
        let paths = glob::glob(pattern).with_context(|| format!("invalid glob {pattern:?}"))?;
        for path in paths.flatten() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let source_id = format!("{}:{}", meta.dev(), meta.ino());
            if files.iter().any(|f| f.source_id == source_id) {
                continue;
            }
            let acked = state.files.get(&source_id).map_or(0, |c| c.acked);
            files.push(Tailed {
                source_id,
                path,
                read: acked,
                acked,
            });
        }
    }
    Ok(())
}

/// Reads the next whole lines of `file`, at most `max_bytes`.
fn read_chunk(
    file: &mut Tailed,
    max_bytes: usize,
    max_line: usize,
) -> Result<Option<(u64, Bytes)>> {
    let mut handle = std::fs::File::open(&file.path)
        .with_context(|| format!("opening {}", file.path.display()))?;
    let len = handle.metadata()?.len();
    loop {
        if file.read >= len {
            return Ok(None);
        }
        handle.seek(SeekFrom::Start(file.read))?;
        let want = ((len - file.read) as usize).min(max_bytes);
        let mut buf = vec![0u8; want];
        handle
            .read_exact(&mut buf)
            .with_context(|| format!("reading {}", file.path.display()))?;
        match memchr::memrchr(b'\n', &buf) {
            Some(last) => {
                buf.truncate(last + 1);
                // The collector refuses a whole batch holding a line above
                // its limit, on every resend: ship the lines before such a
                // line, and skip the line itself.
                if let Some((start, end)) = first_overlong_line(&buf, max_line) {
                    if start > 0 {
                        buf.truncate(start);
                    } else {
                        tracing::warn!(file = %file.path.display(), offset = file.read, "skipping a line longer than {max_line} bytes");
                        file.read += end as u64;
                        continue;
                    }
                }
                let first = file.read;
                file.read += buf.len() as u64;
                return Ok(Some((first, Bytes::from(buf))));
            }
            // A partial last line waits for its newline...
            None if want < max_bytes && want <= max_line => return Ok(None),
            // ...unless it can never fit a frame: skip it, loudly.
            None => {
                let skip_to = memchr_in_file(&mut handle, file.read + want as u64, len)?;
                tracing::warn!(file = %file.path.display(), offset = file.read, "skipping a line longer than {max_line} bytes");
                match skip_to {
                    Some(next) => file.read = next,
                    None => return Ok(None),
                }
            }
        }
    }
}

/// Start and end (past its newline) of the first line of `buf` longer than
/// `max_line` bytes, measured as the collector does (without the newline).
fn first_overlong_line(buf: &[u8], max_line: usize) -> Option<(usize, usize)> {
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', buf) {
        if newline - start > max_line {
            return Some((start, newline + 1));
        }
        start = newline + 1;
    }
    None
}

fn memchr_in_file(handle: &mut std::fs::File, from: u64, len: u64) -> Result<Option<u64>> {
    let mut pos = from;
    let mut buf = vec![0u8; 64 * 1024];
    handle.seek(SeekFrom::Start(pos))?;
    while pos < len {
        let n = handle.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(pos + i as u64 + 1));
        }
        pos += n as u64;
    }
    Ok(None)
}

async fn ship(
    opts: &AgentOptions,
    conn: Connection,
    state: &mut State,
    files: &mut Vec<Tailed>,
) -> Result<(), ClientError> {
    let max_line = conn.max_line_bytes.max(1);
    let batch_bytes = opts
        .batch_bytes
        .min(conn.max_frame_bytes.saturating_sub(4096))
        .max(1);
    let (mut acks, mut writer) = conn.split();
    let (ack_tx, mut ack_rx) = mpsc::channel::<Result<Ack, ClientError>>(opts.max_inflight.max(1));
    let reader = tokio::spawn(async move {
        loop {
            let ack = acks.recv_ack().await;
            let failed = ack.is_err();
            if ack_tx.send(ack).await.is_err() || failed {
                break;
            }
        }
    });
    let result = async {
        let mut inflight: VecDeque<(u64, String, u64)> = VecDeque::new();
        let mut seq = 0u64;
        let mut dirty_since: Option<Instant> = None;
        let mut last_discover = Instant::now();
        loop {
            // Fill the window.
            let mut sent_any = false;
            'fill: while inflight.len() < opts.max_inflight {
                let mut progressed = false;
                for f in files.iter_mut() {
                    if inflight.len() >= opts.max_inflight {
                        break 'fill;
                    }
                    let chunk = match read_chunk(f, batch_bytes, max_line) {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "read failed");
                            None
                        }
                    };
                    if let Some((first_offset, lines)) = chunk {
                        seq += 1;
                        let end = first_offset + lines.len() as u64;
                        writer
                            .feed(Batch {
                                seq,
                                source_id: f.source_id.clone(),
                                source: f.path.display().to_string(),
                                host: opts.host.clone(),
                                format: opts.format.clone(),
                                first_offset,
                                lines,
                            })
                            .await?;
                        inflight.push_back((seq, f.source_id.clone(), end));
                        progressed = true;
                        sent_any = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
            if sent_any {
                writer.flush().await?;
            }
            if opts.once && inflight.is_empty() && !sent_any {
                persist(opts, state, files);
                return Ok(());
            }
            // Wait for acks, or poll the files again shortly.
            let wait = tokio::time::sleep(Duration::from_millis(if inflight.is_empty() { 200 } else { 50 }));
            tokio::select! {
                ack = ack_rx.recv() => {
                    let ack = ack.unwrap_or_else(|| Err(ClientError::Closed { addr: String::new() }))?;
                    let Some((expected, source_id, _end)) = inflight.pop_front() else {
                        return Err(ClientError::Protocol { addr: String::new(), reason: format!("unexpected ack {}", ack.seq) });
                    };
                    if ack.seq != expected {
                        return Err(ClientError::Protocol { addr: String::new(), reason: format!("ack {} out of order, expected {expected}", ack.seq) });
                    }
                    if let Some(f) = files.iter_mut().find(|f| f.source_id == source_id) {
                        f.acked = f.acked.max(ack.acked_offset);
                    }
                    dirty_since.get_or_insert_with(Instant::now);
                }
                _ = wait => {}
            }
            // Checkpoints are written at most every 200 ms: a crash between
            // writes only causes resends, which the collector drops.
            if dirty_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(200)) || (inflight.is_empty() && dirty_since.is_some()) {
                persist(opts, state, files);
                dirty_since = None;
            }
            if last_discover.elapsed() >= Duration::from_secs(1) {
                last_discover = Instant::now();
                if let Err(e) = discover(&opts.globs, state, files) {
                    tracing::warn!(error = %format!("{e:#}"), "file discovery failed");
                }
            }
        }
    }
    .await;
    reader.abort();
    result
}

fn persist(opts: &AgentOptions, state: &mut State, files: &[Tailed]) {
    for f in files {
        state.files.insert(
            f.source_id.clone(),
            FileCheckpoint {
                path: f.path.clone(),
                acked: f.acked,
            },
        );
    }
    if let Err(e) = save_state(&opts.state_dir, state) {
        tracing::warn!(error = %format!("{e:#}"), "could not save the checkpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_line_boundaries_and_wait_for_partial_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntwo\nthr").expect("write");
        let mut f = Tailed {
            source_id: "x".into(),
            path: path.clone(),
            read: 0,
            acked: 0,
        };
        let (first, lines) = read_chunk(&mut f, 1024, 1024)
            .expect("read")
            .expect("chunk");
        assert_eq!((first, &lines[..]), (0, &b"one\ntwo\n"[..]));
        assert!(read_chunk(&mut f, 1024, 1024).expect("read").is_none());
        std::fs::write(&path, b"one\ntwo\nthree\n").expect("write");
        let (first, lines) = read_chunk(&mut f, 1024, 1024)
            .expect("read")
            .expect("chunk");
        assert_eq!((first, &lines[..]), (8, &b"three\n"[..]));
    }

    #[test]
    fn small_batches_split_on_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"aaaa\nbbbb\ncccc\n").expect("write");
        let mut f = Tailed {
            source_id: "x".into(),
            path,
            read: 0,
            acked: 0,
        };
        let (_, lines) = read_chunk(&mut f, 12, 1024).expect("read").expect("chunk");
        assert_eq!(&lines[..], b"aaaa\nbbbb\n");
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"xxxxxxxxxxxxxxxxxxxx\nok\n").expect("write");
        let mut f = Tailed {
            source_id: "x".into(),
            path,
            read: 0,
            acked: 0,
        };
        let (first, lines) = read_chunk(&mut f, 8, 8).expect("read").expect("chunk");
        assert_eq!((first, &lines[..]), (21, &b"ok\n"[..]));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= Duration::from_secs(10));
        }
    }
}
