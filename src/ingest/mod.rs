//! Durable ingest: the single sequencer that deduplicates, appends to the
//! WAL with group commit, and only then answers the connections.
//!
//! All connections feed one bounded queue. A dedicated thread drains
//! whatever is queued (up to `group_commit_bytes`), appends it, fsyncs once,
//! replies to every waiter, then hands the records to the indexer. Doing the
//! dedup check on this one thread makes "at or below the acked offset" exact
//! even when an agent reconnects while its old connection is still draining.

mod record;

pub use record::IngestRecord;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Metrics;
use crate::wal::{Position, Wal};

/// Durable end offset per source key (see [`IngestRecord::source_key`]).
pub type SourceOffsets = HashMap<String, u64>;

/// What the connection tells the agent once its batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    pub acked_offset: u64,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum IngestError {
    #[error("the write-ahead log failed, the collector is shutting down: {0}")]
    WalFailed(String),
    #[error("the collector is shutting down")]
    ShuttingDown,
}

/// A record that is durable in the WAL, on its way to the indexer.
pub struct Durable {
    pub start: Position,
    pub end: Position,
    pub record: IngestRecord,
    /// Set for live records (not replay): when the batch arrived.
    pub received: Option<Instant>,
}

struct AppendRequest {
    record: IngestRecord,
    received: Instant,
    reply: oneshot::Sender<Result<AckInfo, IngestError>>,
}

/// Cheap, cloneable handle the connections use.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<AppendRequest>,
}

impl Ingest {
    /// Queues a batch; the returned receiver resolves once it is durable.
    /// Waits (backpressure) while the sequencer's queue is full.
    pub async fn submit(
        &self,
        record: IngestRecord,
        received: Instant,
    ) -> Result<oneshot::Receiver<Result<AckInfo, IngestError>>, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(AppendRequest {
                record,
                received,
                reply,
            })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(rx)
    }
}

/// Everything the sequencer thread owns.
pub struct Sequencer {
    pub wal: Wal,
    pub offsets: SourceOffsets,
    pub group_commit_bytes: usize,
    pub to_indexer: SyncSender<Durable>,
    /// Written by the indexer after a durable index commit: WAL segments
    /// wholly below it may go.
    pub checkpoint: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
}

impl Sequencer {
    /// Starts the sequencer thread. It ends when every [`Ingest`] handle is
    /// dropped, or on a WAL failure (then it returns the error).
    pub fn spawn(
        self,
        queue: usize,
    ) -> std::io::Result<(Ingest, std::thread::JoinHandle<Result<(), IngestError>>)> {
        let (tx, rx) = mpsc::channel(queue);
        let handle = std::thread::Builder::new()
            .name("nightowl-wal".into())
            .spawn(move || self.run(rx))?;
        Ok((Ingest { tx }, handle))
    }

    fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) -> Result<(), IngestError> {
        let mut group: Vec<AppendRequest> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.record.lines.len();
            group.push(first);
            while bytes < self.group_commit_bytes {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.record.lines.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.commit_group(&mut group) {
                // An fsync that failed leaves the file's state unknown
                // (fsyncgate): refuse everything rather than ack on top of it.
                tracing::error!(error = %e, "wal append failed; stopping ingest");
                rx.close();
                while let Ok(req) = rx.try_recv() {
                    let _ = req.reply.send(Err(e.clone()));
                }
                return Err(e);
            }
            self.remove_checkpointed_segments();
        }
        Ok(())
    }

    fn commit_group(&mut self, group: &mut Vec<AppendRequest>) -> Result<(), IngestError> {
        let mut replies = Vec::with_capacity(group.len());
        let mut durable = Vec::with_capacity(group.len());
        let mut result: Result<(), IngestError> = Ok(());
        for AppendRequest {
            mut record,
            received,
            reply,
        } in group.drain(..)
        {
            if let Err(e) = &result {
                let _ = reply.send(Err(e.clone()));
                continue;
            }
            let key = record.source_key();
            let acked = self.offsets.get(&key).copied().unwrap_or(0);
            if record.end_offset() <= acked && !record.lines.is_empty() {
                self.metrics.batches_duplicate.inc();
                replies.push((
                    reply,
                    AckInfo {
                        acked_offset: acked,
                        duplicate: true,
                    },
                    received,
                ));
                continue;
            }
            if record.first_offset < acked {
                trim_already_acked(&mut record, acked);
            }
            let payload = record.encode();
            let start = match self.wal.append(&payload) {
                Ok(start) => start,
                Err(e) => {
                    let e = IngestError::WalFailed(e.to_string());
                    let _ = reply.send(Err(e.clone()));
                    result = Err(e);
                    continue;
                }
            };
            let end = self.wal.end_position();
            let end_offset = record.end_offset();
            self.offsets.insert(key, end_offset);
            self.metrics.lines_received.add(record.line_count() as u64);
            self.metrics.bytes_received.add(record.lines.len() as u64);
            self.metrics.wal_bytes.add(payload.len() as u64);
            replies.push((
                reply,
                AckInfo {
                    acked_offset: end_offset,
                    duplicate: false,
                },
                received,
            ));
            durable.push(Durable {
                start,
                end,
                record,
                received: Some(received),
            });
        }
        if result.is_ok() && !durable.is_empty() {
            let synced = Instant::now();
            result = self
                .wal
                .sync()
                .map_err(|e| IngestError::WalFailed(e.to_string()));
            self.metrics.wal_syncs.inc();
            self.metrics.wal_sync_latency.record(synced.elapsed());
        }
        if let Err(e) = &result {
            for (reply, _, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return result;
        }
        for (reply, ack, received) in replies {
            self.metrics.ingest_to_ack.record(received.elapsed());
            let _ = reply.send(Ok(ack));
        }
        for item in durable {
            if self.to_indexer.send(item).is_err() {
                return Err(IngestError::ShuttingDown);
            }
        }
        Ok(())
    }

    fn remove_checkpointed_segments(&mut self) {
        let checkpoint = self.checkpoint.load(Ordering::Acquire);
        if checkpoint > self.wal.start_position() {
            match self.wal.remove_segments_before(checkpoint) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, checkpoint, "removed indexed wal segments"),
                Err(e) => tracing::warn!(error = %e, "could not remove old wal segments"),
            }
        }
    }
}

/// Drops the lines of a resent batch that are already durable. Batches are
/// cut at line boundaries, so `acked` normally lands on one; if it does not
/// (a confused agent), the partial line is dropped too rather than indexed
/// twice.
fn trim_already_acked(record: &mut IngestRecord, acked: u64) {
    let mut skip = (acked - record.first_offset) as usize;
    if skip > 0 && record.lines.get(skip - 1) != Some(&b'\n') {
        skip = match memchr::memchr(b'\n', &record.lines[skip..]) {
            Some(i) => skip + i + 1,
            None => record.lines.len(),
        };
    }
    let _ = record.lines.split_to(skip);
    record.first_offset += skip as u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(first_offset: u64, lines: &'static [u8]) -> IngestRecord {
        IngestRecord {
            tenant: "t".into(),
            agent_id: "a".into(),
            source_id: "s".into(),
            source: "f".into(),
            host: "h".into(),
            format: "auto".into(),
            first_offset,
            received_unix_nanos: 0,
            lines: Bytes::from_static(lines),
        }
    }

    #[test]
    fn trim_keeps_only_new_lines() {
        let mut r = record(10, b"aa\nbb\ncc\n");
        trim_already_acked(&mut r, 13);
        assert_eq!((r.first_offset, &r.lines[..]), (13, &b"bb\ncc\n"[..]));
        let mut r = record(10, b"aa\nbb\ncc\n");
        trim_already_acked(&mut r, 14);
        assert_eq!((r.first_offset, &r.lines[..]), (16, &b"cc\n"[..]));
    }

    fn run_group(seq: &mut Sequencer, records: Vec<IngestRecord>) -> Vec<AckInfo> {
        let mut rxs = Vec::new();
        let mut group = Vec::new();
        for record in records {
            let (reply, rx) = oneshot::channel();
            group.push(AppendRequest {
                record,
                received: Instant::now(),
                reply,
            });
            rxs.push(rx);
        }
        seq.commit_group(&mut group).expect("commit");
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().expect("replied").expect("ok"))
            .collect()
    }

    #[test]
    fn resends_are_acked_and_dropped_and_overlaps_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), crate::wal::WalOptions::default()).expect("wal");
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let mut seq = Sequencer {
            wal,
            offsets: SourceOffsets::new(),
            group_commit_bytes: 1 << 20,
            to_indexer: tx,
            checkpoint: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
        };
        let acks = run_group(
            &mut seq,
            vec![
                record(0, b"a\nb\n"),
                record(0, b"a\nb\n"),
                record(2, b"b\nc\n"),
            ],
        );
        assert_eq!(
            acks,
            vec![
                AckInfo {
                    acked_offset: 4,
                    duplicate: false
                },
                AckInfo {
                    acked_offset: 4,
                    duplicate: true
                },
                AckInfo {
                    acked_offset: 6,
                    duplicate: false
                },
            ]
        );
        let indexed: Vec<Bytes> = rx.try_iter().map(|d| d.record.lines).collect();
        assert_eq!(
            indexed,
            vec![Bytes::from_static(b"a\nb\n"), Bytes::from_static(b"c\n")]
        );
        assert_eq!(seq.metrics.batches_duplicate.get(), 1);
    }
}
