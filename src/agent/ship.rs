//! The sending task: drains the spool to a collector, in order, pipelined.
//!
//! Each connection starts at the spool's acked position: whatever was in
//! flight when the last one broke is sent again, and the collector's
//! per-source dedup drops what it already has. Connection failures back off
//! (jittered, 100 ms → 10 s) and fail over to the next `--collector`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::mpsc;

use super::config::{LongLines, Settings};
use super::resume::{self, Gap};
use super::shared::{ResumeRequest, Shared};
use super::spool::{Record, SpoolReader};
use crate::transport::client::{Ack, ClientError, Connection, Resume};
use crate::transport::protocol::{
    compress_lines, Batch, Message, Resize, CAP_REDACT, CAP_RESUME, CAP_ZSTD,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session ended, when not by `--once` being done.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The spool cannot be read: no connection will fix that.
    #[error("spool: {0:#}")]
    Spool(anyhow::Error),
}

struct Inflight {
    /// `None`: nothing was sent for this spool record (every line dropped).
    seq: Option<u64>,
    source_id: String,
    /// Set on the last batch of a spool record: acked up to here.
    spool_end: Option<u64>,
    /// Lines and bytes of the batch, counted once acknowledged.
    lines: u64,
    bytes: u64,
    /// Read again from a file for a collector that lost it (`resume.rs`).
    resend: bool,
}

pub async fn run(
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    agent_id: String,
    spool_dir: PathBuf,
) -> anyhow::Result<()> {
    let tls = settings.tls_client()?;
    let mut attempt = 0u32;
    let mut index = 0usize;
    // CAP_REDACT is asked even with `redact = false`: the spool may hold
    // records redacted before the setting changed.
    let mut caps = Some(if settings.compression { CAP_ZSTD } else { 0 } | CAP_REDACT | CAP_RESUME);
    // `--once` gives up when no collector answered for this long.
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        if shared.is_shutdown() {
            return Ok(());
        }
        let addr = settings.collectors[index % settings.collectors.len()].clone();
        shared.set_connection("connecting", Some(&addr), None);
        let connect =
            Connection::connect_with(&addr, Arc::clone(&tls), &settings.token, &agent_id, caps);
        let failure = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(conn)) if conn.capabilities & CAP_REDACT == 0 && settings.redact => {
                // Its batches could not carry the source lengths of lines
                // redacted here, and dedup would go wrong: refused, loudly.
                let reason = format!(
                    "collector {addr} predates agent-side redaction; upgrade it, or set \
                     redact = false in the agent config (lines are then spooled as read)"
                );
                tracing::error!("{reason}");
                index += 1;
                reason
            }
            Ok(Ok(conn)) => {
                attempt = 0;
                unreachable_since = None;
                if let Some(json) = &conn.redact_rules {
                    match shared.rules.update(json) {
                        Ok(true) => {
                            tracing::info!(collector = %addr, "redacting with the collector's [redact] rules")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(collector = %addr, error = %format!("{e:#}"), "cannot use the collector's redaction rules; keeping the previous ones")
                        }
                    }
                }
                let zstd = conn.capabilities & CAP_ZSTD != 0;
                tracing::info!(collector = %addr, tenant = %conn.tenant, zstd, "connected");
                {
                    let mut inner = shared.lock();
                    inner.connection.compression = zstd;
                    inner.counters.connections += 1;
                    inner.max_line_bytes = conn.max_line_bytes.max(1);
                }
                shared.set_connection("connected", Some(&addr), None);
                shared.wake_reader();
                match session(&settings, &shared, &spool_dir, &addr, conn, zstd).await {
                    Ok(()) => return Ok(()),
                    Err(SessionError::Spool(e)) => return Err(e.context("reading the spool")),
                    Err(SessionError::Client(e)) if e.is_fatal() => return Err(e.into()),
                    Err(SessionError::Client(e)) => {
                        tracing::warn!(error = %e, "connection lost; resending from the last ack");
                        e.to_string()
                    }
                }
            }
            Ok(Err(e)) if e.is_fatal() => return Err(e.into()),
            // A collector older than capability negotiation refuses the
            // longer hello: speak the plain protocol to it.
            Ok(Err(ClientError::Rejected { reason, .. }))
                if caps.is_some() && reason.contains("trailing bytes after hello") =>
            {
                tracing::warn!(collector = %addr, "collector predates capability negotiation; sending plain batches");
                caps = None;
                reason
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach collector");
                index += 1;
                e.to_string()
            }
            Err(_) => {
                tracing::warn!(collector = %addr, "connecting timed out after {CONNECT_TIMEOUT:?}");
                index += 1;
                format!("connecting to {addr} timed out")
            }
        };
        let down = unreachable_since.get_or_insert_with(std::time::Instant::now);
        if settings.once && down.elapsed() >= settings.give_up_after {
            anyhow::bail!(
                "--once: gave up after {} s without a collector ({failure}); what was read stays \
                 in the spool under {} and ships on the next run",
                settings.give_up_after.as_secs(),
                settings.state_dir.display()
            );
        }
        shared.set_connection("backoff", Some(&addr), Some(failure));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt)) => {}
            _ = shared.spooled.notified(), if shared.is_shutdown() => {}
        }
    }
}

/// Exponential backoff from 100 ms to 10 s with full jitter, so a fleet of
/// agents does not reconnect in lockstep after a collector restart.
pub fn backoff(attempt: u32) -> Duration {
    let cap_ms = 100u64.saturating_mul(1 << attempt.min(7)).min(10_000);
    Duration::from_millis(rand::thread_rng().gen_range(cap_ms / 2..=cap_ms))
}

fn protocol_error(reason: String) -> SessionError {
    SessionError::Client(ClientError::Protocol {
        addr: String::new(),
        reason,
    })
}

/// Asks the reader what the collector's store lost of what it had acked
/// (`resume.rs`): the gaps to send before the spool.
async fn lost_by_collector(shared: &Shared, collector: &str, resume: Resume) -> VecDeque<Gap> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    shared.ask_resume(ResumeRequest {
        collector: collector.to_string(),
        resume,
        reply,
    });
    // No answer only when the reader stopped: the session ends anyway.
    answer.await.unwrap_or_default().into()
}

/// The next record of the first gap, read off the runtime's threads;
/// `None` once every gap is sent. A gap the file cannot give any more is
/// reported lost from where it stands, and the next one is read.
async fn next_gap_record(
    gaps: &mut VecDeque<Gap>,
    shared: &Shared,
    batch_bytes: usize,
) -> Option<Record> {
    while let Some(mut gap) = gaps.pop_front() {
        let redactor = shared.rules.current();
        let read = tokio::task::spawn_blocking(move || {
            let record = resume::next_record(&mut gap, batch_bytes, redactor.as_deref());
            (gap, record)
        })
        .await;
        let (gap, record) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "reading a file to send again failed");
                continue;
            }
        };
        match record {
            None => continue,
            Some(Ok(record)) => {
                gaps.push_front(gap);
                return Some(record);
            }
            Some(Err(why)) => {
                let from = resume::position(&gap);
                {
                    let mut inner = shared.lock();
                    inner.counters.resend_lost_bytes += gap.to - from;
                    inner.counters.resend_lost_ranges += 1;
                }
                tracing::warn!(
                    path = %gap.path.display(),
                    source_id = %gap.source_id,
                    from,
                    to = gap.to,
                    "LOST: bytes {from}..{} of {}: the collector had acknowledged them and no \
                     longer holds them, and the file cannot give them again ({why})",
                    gap.to,
                    gap.path.display()
                );
            }
        }
    }
    None
}

async fn session(
    settings: &Settings,
    shared: &Shared,
    spool_dir: &std::path::Path,
    collector: &str,
    mut conn: Connection,
    zstd: bool,
) -> Result<(), SessionError> {
    let max_line = conn.max_line_bytes.max(1);
    let budget = conn.max_frame_bytes.saturating_sub(4096).max(1024);
    let redact_ok = conn.capabilities & CAP_REDACT != 0;
    // Acks are noted per store only from collectors that name theirs, and
    // per tenant: the collector's offsets are per tenant, and an agent
    // given another tenant's token must not copy the old one's lines.
    let resume = conn
        .resume
        .take()
        .filter(|r| !r.store.is_empty())
        .map(|mut r| {
            r.store = format!("{}/{}", r.store, conn.tenant);
            r
        });
    let store = resume.as_ref().map(|r| r.store.clone());
    let mut gaps = match resume {
        Some(resume) => lost_by_collector(shared, collector, resume).await,
        None => VecDeque::new(),
    };
    let (mut acks, mut writer) = conn.split();
    let (ack_tx, mut ack_rx) = mpsc::channel::<Result<Ack, ClientError>>(settings.max_inflight);
    let ack_task = tokio::spawn(async move {
        loop {
            let ack = acks.recv_ack().await;
            let failed = ack.is_err();
            if ack_tx.send(ack).await.is_err() || failed {
                break;
            }
        }
    });
    let start = shared.lock().acked;
    let mut spool = SpoolReader::new(spool_dir, start, settings.spool_key.clone());
    let mut inflight: VecDeque<Inflight> = VecDeque::new();
    let mut seq = 0u64;
    let result = async {
        loop {
            if shared.is_shutdown() {
                return Ok(());
            }
            let mut fed = false;
            while inflight.iter().filter(|i| i.seq.is_some()).count() < settings.max_inflight {
                // What the collector lost goes first: before the spool's
                // records of the same sources, or it would take those as
                // new and the resent bytes as duplicates.
                let (record, end) = match next_gap_record(&mut gaps, shared, settings.batch_bytes).await {
                    Some(record) => {
                        shared.lock().counters.resend_bytes += record.end_offset() - record.first_offset;
                        (record, None)
                    }
                    None => {
                        let durable_end = shared.lock().durable_end;
                        match spool.next(durable_end).map_err(SessionError::Spool)? {
                            Some((record, end)) => (record, Some(end)),
                            None => break,
                        }
                    }
                };
                let resend = end.is_none();
                let (pieces, long) = split(&record, max_line, budget, settings.long_lines);
                if long > 0 {
                    let mut inner = shared.lock();
                    match settings.long_lines {
                        LongLines::Skip => {
                            inner.counters.lines_skipped += long;
                            tracing::warn!(source = %record.source, lines = long, "skipping a line longer than {max_line} bytes (long_lines = \"skip\")");
                        }
                        LongLines::Truncate => {
                            inner.counters.lines_truncated += long;
                            tracing::warn!(source = %record.source, lines = long, "cut a line longer than the collector's limit to its first {max_line} bytes");
                        }
                    }
                }
                let count = pieces.len();
                if count == 0 {
                    inflight.push_back(Inflight { seq: None, source_id: record.source_id.clone(), spool_end: end, lines: 0, bytes: 0, resend });
                }
                for (k, piece) in pieces.into_iter().enumerate() {
                    seq += 1;
                    let raw_len = piece.lines.len() as u64;
                    if piece.resize.is_some() && !redact_ok {
                        return Err(protocol_error(
                            "the spool holds lines redacted by this agent, which this collector \
                             predates (it cannot take their source lengths); upgrade it"
                                .into(),
                        ));
                    }
                    // One pass over a whole batch (not per line) for the
                    // `--once` summary and the status file.
                    let line_count = memchr::memchr_iter(b'\n', &piece.lines).count() as u64;
                    let (msg, wire_len) = batch_message(&record, seq, piece, zstd)?;
                    writer.feed_message(msg).await?;
                    {
                        let mut inner = shared.lock();
                        inner.counters.batches_sent += 1;
                        inner.counters.bytes_sent += raw_len;
                        inner.counters.payload_bytes_sent += wire_len;
                    }
                    inflight.push_back(Inflight {
                        seq: Some(seq),
                        source_id: record.source_id.clone(),
                        spool_end: if k + 1 == count { end } else { None },
                        lines: line_count,
                        bytes: raw_len,
                        resend,
                    });
                    fed = true;
                }
                settle_unsent(shared, &mut inflight);
            }
            if fed {
                writer.flush().await?;
            }
            if inflight.is_empty() {
                // Everything read was acked: the position may also have
                // stepped over a segment header, which has no ack of its own.
                let mut inner = shared.lock();
                inner.acked = inner.acked.max(spool.position());
            }
            if settings.once && gaps.is_empty() && !inflight.iter().any(|i| i.resend) {
                let inner = shared.lock();
                if inner.reader_done.is_some_and(|done| inner.acked >= done) {
                    return Ok(());
                }
            }
            tokio::select! {
                ack = ack_rx.recv() => {
                    let ack = ack.unwrap_or_else(|| Err(ClientError::Closed { addr: String::new() }))?;
                    let Some(front) = inflight.pop_front() else {
                        return Err(protocol_error(format!("unexpected ack {}", ack.seq)));
                    };
                    if front.seq != Some(ack.seq) {
                        return Err(protocol_error(format!("ack {} out of order, expected {:?}", ack.seq, front.seq)));
                    }
                    {
                        let mut inner = shared.lock();
                        if let Some(store) = &store {
                            let noted = inner.store_acked.get_mut(&front.source_id).and_then(|by| by.get_mut(store));
                            match noted {
                                Some(acked) => *acked = (*acked).max(ack.acked_offset),
                                None => {
                                    let by = inner.store_acked.entry(front.source_id.clone()).or_default();
                                    by.insert(store.clone(), ack.acked_offset);
                                }
                            }
                        }
                        let acked = inner.source_acked.entry(front.source_id).or_insert(0);
                        *acked = (*acked).max(ack.acked_offset);
                        if let Some(end) = front.spool_end {
                            inner.acked = inner.acked.max(end);
                        }
                        inner.counters.batches_acked += 1;
                        inner.counters.lines_acked += front.lines;
                        inner.counters.bytes_acked += front.bytes;
                        if ack.duplicate {
                            inner.counters.batches_duplicate += 1;
                        }
                    }
                    settle_unsent(shared, &mut inflight);
                    shared.wake_reader();
                }
                _ = shared.spooled.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
    .await;
    ack_task.abort();
    result
}

/// Records with nothing sent count as acked once everything before them is.
fn settle_unsent(shared: &Shared, inflight: &mut VecDeque<Inflight>) {
    while inflight.front().is_some_and(|f| f.seq.is_none()) {
        if let Some(f) = inflight.pop_front() {
            if let Some(end) = f.spool_end {
                let mut inner = shared.lock();
                inner.acked = inner.acked.max(end);
            }
        }
    }
}

fn batch_message(
    record: &Record,
    seq: u64,
    piece: Piece,
    zstd: bool,
) -> Result<(Message, u64), SessionError> {
    let lines = if zstd {
        compress_lines(&piece.lines).map_err(|e| protocol_error(format!("zstd: {e}")))?
    } else {
        piece.lines
    };
    let wire_len = lines.len() as u64;
    let batch = Batch {
        seq,
        source_id: record.source_id.clone(),
        source: record.source.clone(),
        host: record.host.clone(),
        format: record.format.clone(),
        first_offset: piece.first_offset,
        lines,
    };
    let msg = match piece.resize {
        Some(resize) => Message::BatchResized {
            batch,
            resize,
            zstd,
        },
        None if zstd => Message::BatchZstd(batch),
        None => Message::Batch(batch),
    };
    Ok((msg, wire_len))
}

/// One batch to send: its first stream offset, its lines, and for lines
/// redacted here the stream length they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub first_offset: u64,
    pub lines: Bytes,
    pub resize: Option<Resize>,
}

/// The piece being cut: where it starts, in the record and in the stream.
struct Cut {
    stored_start: usize,
    first_offset: u64,
    first_line: u32,
    source_len: u64,
    changed: Vec<(u32, i64)>,
}

impl Cut {
    fn at(stored_start: usize, first_offset: u64, first_line: u32) -> Cut {
        Cut {
            stored_start,
            first_offset,
            first_line,
            source_len: 0,
            changed: Vec::new(),
        }
    }

    fn piece(&mut self, lines: &Bytes, stored_end: usize) -> Piece {
        let changed = std::mem::take(&mut self.changed);
        Piece {
            first_offset: self.first_offset,
            lines: lines.slice(self.stored_start..stored_end),
            resize: (!changed.is_empty()).then_some(Resize {
                source_len: self.source_len,
                changed,
            }),
        }
    }
}

/// Cuts a spool record into batches the connection accepts: at most
/// `budget` bytes (with the line changes of redacted lines), no line above
/// `max_line`. Such a line (spooled before this collector's limit was
/// known) is handled as the reader would have: skipped, or cut into a
/// batch of its own. Either way it leaves a gap in the stream offsets,
/// which the collector's dedup takes as it comes (a cut redacted line
/// instead says it stands for its whole source line). Returns the batches
/// and the number of lines skipped or cut.
pub fn split(
    record: &Record,
    max_line: usize,
    budget: usize,
    long_lines: LongLines,
) -> (Vec<Piece>, u64) {
    let lines = &record.lines;
    let overhead = record.resize.as_ref().map_or(0, Resize::encoded_len);
    let fits = lines.len() + overhead <= budget
        && super::tail::first_overlong_line(lines, max_line).is_none();
    if fits {
        let resize = record.resize.clone().filter(|r| !r.changed.is_empty());
        return (
            vec![Piece {
                first_offset: record.first_offset,
                lines: lines.clone(),
                resize,
            }],
            0,
        );
    }
    let deltas: &[(u32, i64)] = record.resize.as_ref().map_or(&[], |r| &r.changed);
    let mut next_delta = 0;
    let mut pieces = Vec::new();
    let mut dropped = 0;
    let mut cut = Cut::at(0, record.first_offset, 0);
    let mut line_start = 0usize;
    let mut source = record.first_offset;
    for (index, newline) in memchr::memchr_iter(b'\n', lines).enumerate() {
        let index = index as u32;
        let line_end = newline + 1;
        let delta = match deltas.get(next_delta) {
            Some(&(i, d)) if i == index => {
                next_delta += 1;
                d
            }
            _ => 0,
        };
        let source_len = ((line_end - line_start) as i64 + delta).max(0) as u64;
        if newline - line_start > max_line {
            if line_start > cut.stored_start {
                pieces.push(cut.piece(lines, line_start));
            }
            dropped += 1;
            if long_lines == LongLines::Truncate {
                let mut bytes = bytes::BytesMut::with_capacity(max_line + 1);
                bytes.extend_from_slice(&lines[line_start..line_start + max_line]);
                bytes.extend_from_slice(b"\n");
                let cut_delta = source_len as i64 - (max_line + 1) as i64;
                let resize = (delta != 0 && cut_delta != 0).then(|| Resize {
                    source_len,
                    changed: vec![(0, cut_delta)],
                });
                pieces.push(Piece {
                    first_offset: source,
                    lines: bytes.freeze(),
                    resize,
                });
            }
            cut = Cut::at(line_end, source + source_len, index + 1);
        } else {
            let extra = 12 * (cut.changed.len() + usize::from(delta != 0));
            if line_end - cut.stored_start + extra > budget && line_start > cut.stored_start {
                pieces.push(cut.piece(lines, line_start));
                cut = Cut::at(line_start, source, index);
            }
            cut.source_len += source_len;
            if delta != 0 {
                cut.changed.push((index - cut.first_line, delta));
            }
        }
        source += source_len;
        line_start = line_end;
    }
    if line_start > cut.stored_start {
        pieces.push(cut.piece(lines, line_start));
    }
    (pieces, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lines: &'static [u8]) -> Record {
        Record {
            source_id: "s".into(),
            source: "x".into(),
            host: "h".into(),
            format: "auto".into(),
            first_offset: 100,
            file_end: 100,
            lines: Bytes::from_static(lines),
            resize: None,
        }
    }

    fn plain(pieces: Vec<Piece>) -> Vec<(u64, Bytes)> {
        pieces
            .into_iter()
            .map(|p| {
                assert_eq!(p.resize, None);
                (p.first_offset, p.lines)
            })
            .collect()
    }

    #[test]
    fn a_record_that_fits_is_one_batch() {
        let (pieces, dropped) = split(&record(b"a\nb\n"), 10, 100, LongLines::Skip);
        assert_eq!(plain(pieces), vec![(100, Bytes::from_static(b"a\nb\n"))]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn records_split_at_lines_and_drop_overlong_ones() {
        let rec = record(b"aaa\nbbb\nxxxxxxxxxxxx\nccc\n");
        let (pieces, dropped) = split(&rec, 5, 8, LongLines::Skip);
        assert_eq!(
            plain(pieces),
            vec![
                (100, Bytes::from_static(b"aaa\nbbb\n")),
                (121, Bytes::from_static(b"ccc\n")),
            ]
        );
        assert_eq!(dropped, 1);
        let (pieces, cut) = split(&rec, 5, 8, LongLines::Truncate);
        assert_eq!(
            plain(pieces),
            vec![
                (100, Bytes::from_static(b"aaa\nbbb\n")),
                (108, Bytes::from_static(b"xxxxx\n")),
                (121, Bytes::from_static(b"ccc\n")),
            ]
        );
        assert_eq!(cut, 1);
    }

    /// Redacted lines keep their source lengths through every cut: each
    /// piece starts at its first line's source offset and says how long it
    /// is in the source.
    #[test]
    fn redacted_records_split_in_source_offsets() {
        // Source: "p=secret\n" (9) "aaa\n" (4) "p=s\n" (4) "bbb\n" (4).
        let mut rec = record(b"p=[R:password]\naaa\np=[R:password]\nbbb\n");
        rec.resize = Some(Resize {
            source_len: 21,
            changed: vec![(0, -6), (2, -11)],
        });
        let (pieces, _) = split(&rec, 100, 1000, LongLines::Skip);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].resize, rec.resize);

        let (pieces, dropped) = split(&rec, 100, 40, LongLines::Skip);
        assert_eq!(dropped, 0);
        let got: Vec<(u64, &[u8], Option<Resize>)> = pieces
            .iter()
            .map(|p| (p.first_offset, &p.lines[..], p.resize.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    100,
                    &b"p=[R:password]\naaa\n"[..],
                    Some(Resize {
                        source_len: 13,
                        changed: vec![(0, -6)]
                    })
                ),
                (
                    113,
                    &b"p=[R:password]\nbbb\n"[..],
                    Some(Resize {
                        source_len: 8,
                        changed: vec![(0, -11)]
                    })
                ),
            ]
        );
        for p in &pieces {
            if let Some(r) = &p.resize {
                assert_eq!(r.check(&p.lines), Ok(()));
            }
        }

        // A redacted line over the limit, cut: it stands for its whole
        // source line, so the next piece starts where the source says.
        let (pieces, cut) = split(&rec, 5, 30, LongLines::Truncate);
        assert_eq!(cut, 2);
        assert_eq!(pieces[0].first_offset, 100);
        assert_eq!(&pieces[0].lines[..], b"p=[R:\n");
        assert_eq!(
            pieces[0].resize,
            Some(Resize {
                source_len: 9,
                changed: vec![(0, 3)]
            })
        );
        assert_eq!(
            (pieces[1].first_offset, &pieces[1].lines[..]),
            (109, &b"aaa\n"[..])
        );
        assert_eq!(pieces[2].first_offset, 113);
        assert_eq!(pieces[3].first_offset, 117);
        assert_eq!(&pieces[3].lines[..], b"bbb\n");
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= Duration::from_secs(10));
        }
    }
}
