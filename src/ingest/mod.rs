//! Durable ingest: the single sequencer that deduplicates, appends to the
//! WAL with group commit, and only then answers the connections.
//!
//! All connections feed one bounded queue. A dedicated thread drains
//! whatever is queued (up to `group_commit_bytes`), appends it, fsyncs once,
//! replies to every waiter, then hands the records to the indexer. Doing the
//! dedup check on this one thread makes "at or below the acked offset" exact
//! even when an agent reconnects while its old connection is still draining.

mod bulk;
pub mod otlp;
mod record;

pub use bulk::{BulkIngest, Origin};
pub use record::{IngestRecord, Resized};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Metrics;
use crate::wal::cipher::WalCipher;
use crate::wal::{Position, Wal};

/// Durable end offset per source key (see [`IngestRecord::source_key`]).
/// Ordered, so one agent's sources (a key prefix) are a range: a
/// connecting agent is told its offsets without a scan of every source.
pub type SourceOffsets = BTreeMap<String, u64>;

/// `DATA_DIR/store-id`: names this data dir's store of lines to agents
/// (`CAP_RESUME`). Created with the data dir, carried by its backups and
/// brought back by a restore: an agent whose source this store acked
/// further than it now holds (a restore, an older copy of the data dir)
/// sends the missing lines again. Another collector (a failover peer, a
/// fresh data dir) has another id, so nothing acked elsewhere is resent
/// to it. Never copy it to another node.
pub const STORE_ID_FILE: &str = "store-id";

/// Reads `DATA_DIR/store-id`, creating it (16 random bytes, hex) if absent.
pub fn load_or_create_store_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = data_dir.join(STORE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!(
                    "{}: not a store id (expected a hex string); remove it to get a new one, \
                     and agents will not resend to this store what another one acked",
                    path.display()
                );
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
            let id = hex::encode(bytes);
            crate::fsutil::write_atomic(&path, format!("{id}\n").as_bytes(), 0o600)?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What the connection tells the agent once its batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    pub acked_offset: u64,
    pub duplicate: bool,
}

impl AckInfo {
    /// A batch taken (durable, or dropped by a tenant purge) up to `end`.
    pub fn taken(end: u64) -> AckInfo {
        AckInfo {
            acked_offset: end,
            duplicate: false,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum IngestError {
    #[error("the write-ahead log failed, the collector is shutting down: {0}")]
    WalFailed(String),
    #[error("the collector is shutting down")]
    ShuttingDown,
    /// Kafka did not take the batch (`--kafka`): the sender retries it.
    #[error("the durable log is unavailable: {0}")]
    LogUnavailable(String),
}

/// A record that is durable in the WAL, on its way to the indexer.
pub struct Durable {
    pub start: Position,
    pub end: Position,
    pub record: IngestRecord,
    /// Set for live records (not replay): when the batch arrived.
    pub received: Option<Instant>,
}

// Nearly every request is an append: boxing it to shrink the rare
// variant would add an allocation per batch for nothing.
#[allow(clippy::large_enum_variant)]
enum Request {
    Append(AppendRequest),
    /// The indexer advanced the checkpoint: old segments may go now, even
    /// if no batch arrives to trigger the usual after-commit cleanup.
    Checkpointed,
    /// A tenant purge's tombstone is durable: roll the WAL and answer the
    /// position below which every purged record lies (`None`: no WAL).
    PurgeBarrier(oneshot::Sender<Option<Position>>),
    /// A connecting agent's durable offsets: every source key starting
    /// with the prefix (`tenant/agent/`), answered once what was queued
    /// before is durable. `None`: this log's offsets are not exact (Kafka).
    Offsets(String, oneshot::Sender<Option<Vec<(String, u64)>>>),
}

/// Whether a record of `tenant` received at `received` (unix nanos) was
/// purged: the sequencer drops it instead of writing it.
pub type PurgedCheck = Arc<dyn Fn(&str, i64) -> bool + Send + Sync>;

/// A batch waiting to become durable, and whom to tell.
pub struct AppendRequest {
    pub record: IngestRecord,
    pub received: Instant,
    reply: oneshot::Sender<Result<AckInfo, IngestError>>,
}

impl AppendRequest {
    /// Answers the connection; a connection that went away is no error.
    pub fn answer(self, outcome: Result<AckInfo, IngestError>) {
        let _ = self.reply.send(outcome);
    }
}

/// Cheap, cloneable handle the connections use.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Request>,
    /// Set by [`CheckpointNotifier::roll_segment`], read by the sequencer.
    roll: Arc<AtomicBool>,
    /// The WAL's oldest position on disk, published by the sequencer.
    wal_start: Arc<AtomicU64>,
}

/// The sequencer's end of the queue, handed to [`Sequencer::spawn`].
pub struct Inbox(mpsc::Receiver<Request>, Arc<AtomicBool>, Arc<AtomicU64>);

impl Inbox {
    /// The next batch, for a durable log other than the WAL (Kafka).
    /// `None` once every [`Ingest`] handle is gone.
    pub async fn next_append(&mut self) -> Option<AppendRequest> {
        loop {
            match self.0.recv().await? {
                Request::Append(append) => return Some(append),
                Request::Checkpointed => continue,
                Request::PurgeBarrier(reply) => {
                    let _ = reply.send(None);
                }
                // The indexers own the exact offsets; the front's are a
                // shortcut that may lag (or be forgotten): not answered.
                Request::Offsets(_, reply) => {
                    let _ = reply.send(None);
                }
            }
        }
    }
}

/// Creates the queue between the connections and the sequencer.
pub fn queue(capacity: usize) -> (Ingest, Inbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let roll = Arc::new(AtomicBool::new(false));
    let wal_start = Arc::new(AtomicU64::new(0));
    (
        Ingest {
            tx,
            roll: Arc::clone(&roll),
            wal_start: Arc::clone(&wal_start),
        },
        Inbox(rx, roll, wal_start),
    )
}

/// Lets the indexer tell the sequencer about a new checkpoint. Holds only a
/// weak reference, so it never keeps the sequencer alive at shutdown.
pub struct CheckpointNotifier(mpsc::WeakSender<Request>, Arc<AtomicBool>);

impl CheckpointNotifier {
    pub fn notify(&self) {
        if let Some(tx) = self.0.upgrade() {
            // A full queue means batches are flowing: their group commit
            // cleans up anyway.
            let _ = tx.try_send(Request::Checkpointed);
        }
    }

    /// Asks for a new WAL segment (after a tenant purge), so the segments
    /// holding the purged records go as soon as the checkpoint passes
    /// them. A flag, not a message: it must not be lost to a full queue,
    /// and the indexer must never wait on the sequencer (which may be
    /// waiting on the indexer).
    pub fn roll_segment(&self) {
        self.1.store(true, Ordering::Release);
        self.notify();
    }
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
            .send(Request::Append(AppendRequest {
                record,
                received,
                reply,
            }))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(rx)
    }

    /// The durable offsets of one agent's sources (`tenant`, `agent_id`),
    /// source id → offset, as of every batch queued before the question;
    /// `None` when the durable log cannot say exactly (Kafka) or is gone.
    pub async fn source_offsets(&self, tenant: &str, agent_id: &str) -> Option<Vec<(String, u64)>> {
        let (reply, answer) = oneshot::channel();
        let prefix = format!("{tenant}/{agent_id}/");
        self.tx.send(Request::Offsets(prefix, reply)).await.ok()?;
        answer.await.ok()?
    }

    pub fn checkpoint_notifier(&self) -> CheckpointNotifier {
        CheckpointNotifier(self.tx.downgrade(), Arc::clone(&self.roll))
    }

    /// After a purge's tombstone is durable: waits (up to `deadline`)
    /// until no WAL segment holding a record received before it is left on
    /// disk. The sequencer drops such records from then on and rolls the
    /// WAL; the segments before the roll go once the index checkpoint
    /// passes them. `None` without a WAL (Kafka); `Some(false)` when the
    /// deadline passed first (they still go, later).
    pub async fn clear_purged(&self, deadline: std::time::Duration) -> Option<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request::PurgeBarrier(reply)).await.ok()?;
        let below = answer.await.ok()??;
        let give_up = Instant::now() + deadline;
        loop {
            if self.wal_start.load(Ordering::Acquire) >= below {
                return Some(true);
            }
            if Instant::now() >= give_up {
                return Some(false);
            }
            // The cleanup runs after each commit; nudge it in case the
            // last commit came before the floor moved.
            let _ = self.tx.try_send(Request::Checkpointed);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
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
    /// Seals each record before it is written (`[wal] encryption_key_file`).
    pub cipher: Option<Arc<WalCipher>>,
    /// Tenant purges: records received before one are acked and dropped,
    /// never written (see [`Ingest::clear_purged`]).
    pub purged: Option<PurgedCheck>,
}

impl Sequencer {
    /// Starts the sequencer thread. It ends when every [`Ingest`] handle is
    /// dropped, or on a WAL failure (then it returns the error).
    pub fn spawn(
        self,
        inbox: Inbox,
    ) -> std::io::Result<std::thread::JoinHandle<Result<(), IngestError>>> {
        std::thread::Builder::new()
            .name("nightowl-wal".into())
            .spawn(move || self.run(inbox.0, inbox.1, inbox.2))
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        roll: Arc<AtomicBool>,
        wal_start: Arc<AtomicU64>,
    ) -> Result<(), IngestError> {
        let mut group: Vec<AppendRequest> = Vec::new();
        let mut barriers = Vec::new();
        let mut questions = Vec::new();
        // One payload buffer for every record (see `encode_into`).
        let mut payload = Vec::new();
        wal_start.store(self.wal.start_position(), Ordering::Release);
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append(append) => {
                        bytes += append.record.lines.len();
                        group.push(append);
                    }
                    Request::PurgeBarrier(reply) => barriers.push(reply),
                    Request::Offsets(prefix, reply) => questions.push((prefix, reply)),
                    Request::Checkpointed => {}
                }
                if bytes < self.group_commit_bytes {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = self.commit_group(&mut group, &mut payload) {
                // An fsync that failed leaves the file's state unknown
                // (fsyncgate): refuse everything rather than ack on top of it.
                tracing::error!(error = %e, "wal append failed; stopping ingest");
                rx.close();
                while let Ok(request) = rx.try_recv() {
                    if let Request::Append(append) = request {
                        let _ = append.reply.send(Err(e.clone()));
                    }
                }
                return Err(e);
            }
            // Every record checked after a purge's tombstone is dropped, so
            // the records it purges all lie before this roll.
            if roll.swap(false, Ordering::AcqRel) || !barriers.is_empty() {
                match self.wal.roll_now() {
                    Ok(rolled) => tracing::debug!(rolled, "wal segment rolled after a purge"),
                    Err(e) => {
                        // Only the purged records' lifetime on disk is at
                        // stake; appends report a broken WAL themselves.
                        tracing::warn!(error = %e, "could not roll the wal after a purge")
                    }
                }
            }
            let below = self.wal.end_position();
            for reply in barriers.drain(..) {
                let _ = reply.send(Some(below));
            }
            // After the group's fsync: every offset answered is durable.
            for (prefix, reply) in questions.drain(..) {
                let _ = reply.send(Some(agent_offsets(&self.offsets, &prefix)));
            }
            self.remove_checkpointed_segments();
            wal_start.store(self.wal.start_position(), Ordering::Release);
        }
        Ok(())
    }

    fn commit_group(
        &mut self,
        group: &mut Vec<AppendRequest>,
        payload: &mut Vec<u8>,
    ) -> Result<(), IngestError> {
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
            if self
                .purged
                .as_ref()
                .is_some_and(|purged| purged(&record.tenant, record.received_unix_nanos))
            {
                // Received before a purge that already happened: handled
                // by deleting it, so acked, and never written.
                advance(&mut self.offsets, &record);
                self.metrics.batches_purged.inc();
                replies.push((reply, AckInfo::taken(record.end_offset()), received));
                continue;
            }
            if let Some(duplicate) = admit(&self.offsets, &mut record) {
                self.metrics.batches_duplicate.inc();
                replies.push((reply, duplicate, received));
                continue;
            }
            payload.clear();
            match &self.cipher {
                None => record.encode_into(payload),
                Some(cipher) => {
                    if let Err(e) = cipher.seal_into(payload, |out| record.encode_into(out)) {
                        let e = IngestError::WalFailed(format!("{e:#}"));
                        let _ = reply.send(Err(e.clone()));
                        result = Err(e);
                        continue;
                    }
                }
            }
            let start = match self.wal.append(payload) {
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
            advance(&mut self.offsets, &record);
            self.metrics.lines_received.add(record.line_count() as u64);
            self.metrics.bytes_received.add(record.lines.len() as u64);
            self.metrics.wal_bytes.add(payload.len() as u64);
            replies.push((reply, AckInfo::taken(end_offset), received));
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

/// The dedup rule every durable log applies, per source, in the order the
/// log holds the records: a batch ending at or below its source's durable
/// offset is a duplicate (the answer is returned); one overlapping it is
/// trimmed to its new lines. HTTP ingest has no source id and no byte
/// offsets: each request is new data, with nothing to dedup against.
pub fn admit(offsets: &SourceOffsets, record: &mut IngestRecord) -> Option<AckInfo> {
    if record.source_id.is_empty() {
        return None;
    }
    let acked = offsets.get(&record.source_key()).copied().unwrap_or(0);
    if record.end_offset() <= acked && !record.lines.is_empty() {
        return Some(AckInfo {
            acked_offset: acked,
            duplicate: true,
        });
    }
    if record.first_offset < acked {
        trim_already_acked(record, acked);
    }
    None
}

/// The offsets of the source keys starting with `prefix`, by the rest of
/// the key (the source id). A range of the ordered map, not a scan.
pub fn agent_offsets(offsets: &SourceOffsets, prefix: &str) -> Vec<(String, u64)> {
    offsets
        .range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(key, _)| key.starts_with(prefix))
        .map(|(key, &offset)| (key[prefix.len()..].to_string(), offset))
        .collect()
}

/// Records that `record` is durable: its source's offset moves to its end.
pub fn advance(offsets: &mut SourceOffsets, record: &IngestRecord) {
    if !record.source_id.is_empty() {
        let acked = offsets.entry(record.source_key()).or_insert(0);
        *acked = (*acked).max(record.end_offset());
    }
}

/// Drops the lines of a resent batch that are already durable. Batches are
/// cut at line boundaries, so `acked` normally lands on one; if it does not
/// (a confused agent), the partial line is dropped too rather than indexed
/// twice. Redacted batches are trimmed in source offsets too.
fn trim_already_acked(record: &mut IngestRecord, acked: u64) {
    record.trim_to(acked);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A sequencer over `wal` sending to `tx`, with no offsets, key or purge.
    fn test_sequencer(wal: Wal, tx: std::sync::mpsc::SyncSender<Durable>) -> Sequencer {
        Sequencer {
            wal,
            offsets: SourceOffsets::new(),
            group_commit_bytes: 1 << 20,
            to_indexer: tx,
            checkpoint: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
            cipher: None,
            purged: None,
        }
    }

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
            resized: None,
        }
    }

    /// A connecting agent is told its own sources only (not those of an
    /// agent whose id extends its own, nor of another tenant), once what
    /// was queued before the question is durable; a fresh store answers
    /// nothing.
    #[tokio::test]
    async fn an_agent_is_told_its_durable_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), crate::wal::WalOptions::default()).expect("wal");
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let mut offsets = SourceOffsets::new();
        offsets.insert("t/a/old".into(), 7);
        offsets.insert("t/ab/x".into(), 9);
        offsets.insert("t/a2/y".into(), 3);
        offsets.insert("u/a/z".into(), 5);
        let mut sequencer = test_sequencer(wal, tx);
        sequencer.offsets = offsets;
        let (ingest, inbox) = queue(16);
        let thread = sequencer.spawn(inbox).expect("spawn");
        let ack = ingest
            .submit(record(0, b"a\nb\n"), Instant::now())
            .await
            .expect("queued");
        let mut told = ingest.source_offsets("t", "a").await.expect("exact");
        told.sort();
        assert_eq!(told, vec![("old".to_string(), 7), ("s".to_string(), 4)]);
        assert!(ack.await.expect("answered").is_ok());
        assert_eq!(ingest.source_offsets("t", "nobody").await, Some(vec![]));
        drop(ingest);
        thread.join().expect("join").expect("clean end");
        drop(rx);
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
        seq.commit_group(&mut group, &mut Vec::new())
            .expect("commit");
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().expect("replied").expect("ok"))
            .collect()
    }

    #[test]
    fn resends_are_acked_and_dropped_and_overlaps_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), crate::wal::WalOptions::default()).expect("wal");
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let mut seq = test_sequencer(wal, tx);
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

    /// After a purge's tombstone, a record received before it is acked but
    /// never written; the barrier rolls the WAL and waits until the
    /// segments holding the purged records are gone, which takes the index
    /// checkpoint passing them.
    #[test]
    fn purged_records_are_dropped_and_the_barrier_waits_for_their_segments() {
        use std::sync::atomic::AtomicI64;
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), crate::wal::WalOptions::default()).expect("wal");
        let (tx, indexed) = std::sync::mpsc::sync_channel(16);
        let checkpoint = Arc::new(AtomicU64::new(0));
        let purged_before = Arc::new(AtomicI64::new(i64::MIN));
        let metrics = Arc::new(Metrics::default());
        let tombstone = Arc::clone(&purged_before);
        let mut sequencer = test_sequencer(wal, tx);
        sequencer.checkpoint = Arc::clone(&checkpoint);
        sequencer.metrics = Arc::clone(&metrics);
        sequencer.purged = Some(Arc::new(move |tenant: &str, received: i64| {
            tenant == "acme" && received < tombstone.load(Ordering::Acquire)
        }));
        let (ingest, inbox) = queue(16);
        let thread = sequencer.spawn(inbox).expect("spawn");
        let of = |tenant: &str, first: u64, lines: &'static [u8], received: i64| IngestRecord {
            tenant: tenant.into(),
            received_unix_nanos: received,
            ..record(first, lines)
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let wal_holds = |needle: &[u8]| {
            std::fs::read_dir(dir.path())
                .expect("wal dir")
                .filter_map(|e| std::fs::read(e.expect("entry").path()).ok())
                .any(|b| b.windows(needle.len()).any(|w| w == needle))
        };
        runtime.block_on(async {
            let submit = |record| {
                let ingest = ingest.clone();
                async move {
                    let rx = ingest.submit(record, Instant::now()).await.expect("submit");
                    rx.await.expect("reply").expect("acked")
                }
            };
            submit(of("acme", 0, b"acme-before\n", 100)).await;
            submit(of("other", 0, b"other-before\n", 100)).await;
            purged_before.store(200, Ordering::Release);
            // Queued before the purge, checked after it: acked, not written.
            let ack = submit(of("acme", 12, b"acme-queued\n", 150)).await;
            assert_eq!((ack.acked_offset, ack.duplicate), (24, false));
            submit(of("acme", 24, b"acme-after\n", 300)).await;
            assert_eq!(metrics.batches_purged.get(), 1);
            assert!(!wal_holds(b"acme-queued"));
            assert!(wal_holds(b"acme-before"));
            // The index has not passed the purged records yet.
            let waited = ingest
                .clear_purged(std::time::Duration::from_millis(300))
                .await;
            assert_eq!(waited, Some(false));
            assert!(wal_holds(b"acme-before"));
            // It has now (and everything after the roll too).
            let ends: Vec<u64> = indexed.try_iter().map(|d: Durable| d.end).collect();
            checkpoint.store(
                ends.iter().copied().max().expect("indexed"),
                Ordering::Release,
            );
            let waited = ingest
                .clear_purged(std::time::Duration::from_secs(30))
                .await;
            assert_eq!(waited, Some(true));
            assert!(!wal_holds(b"acme-before"));
        });
        drop(ingest);
        thread.join().expect("join").expect("sequencer");
    }

    /// A redacted batch is acked at its source end, its resend is a
    /// duplicate, an overlapping resend is trimmed in source bytes; with a
    /// key, the WAL holds no plaintext and reads back through the cipher.
    #[test]
    fn redacted_batches_keep_source_offsets_and_encrypted_wal_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), crate::wal::WalOptions::default()).expect("wal");
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let cipher = Arc::new(WalCipher::new(&[3u8; 32]).expect("cipher"));
        let mut seq = test_sequencer(wal, tx);
        seq.cipher = Some(Arc::clone(&cipher));
        // Source: "a\n" "pw=secret\n" "c\n" (14 bytes); stored with a marker.
        let redacted = || {
            let mut r = record(0, b"a\npw=[R]\nc\n");
            r.resized = Some(Box::new(Resized {
                source_len: 14,
                changed: vec![(1, 3)],
            }));
            r
        };
        // A resend cut differently: source 2..16, "pw=secret\n" "c\n" "d\n",
        // overlapping up to 14: only "d\n" is new.
        let mut overlap = record(2, b"pw=[R]\nc\nd\n");
        overlap.resized = Some(Box::new(Resized {
            source_len: 14,
            changed: vec![(0, 3)],
        }));
        let acks = run_group(&mut seq, vec![redacted(), redacted(), overlap]);
        assert_eq!(
            acks.iter()
                .map(|a| (a.acked_offset, a.duplicate))
                .collect::<Vec<_>>(),
            vec![(14, false), (14, true), (16, false)]
        );
        let indexed: Vec<Bytes> = rx.try_iter().map(|d| d.record.lines).collect();
        assert_eq!(
            indexed,
            vec![
                Bytes::from_static(b"a\npw=[R]\nc\n"),
                Bytes::from_static(b"d\n")
            ]
        );
        seq.wal.sync().expect("sync");
        for entry in std::fs::read_dir(dir.path()).expect("read dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(
                !bytes.windows(6).any(|w| w == b"pw=[R]"),
                "plaintext in the WAL"
            );
        }
        let mut back = Vec::new();
        for record in seq.wal.read_from(0).expect("read") {
            let payload =
                crate::wal::cipher::open_payload(Some(&cipher), record.expect("record").payload)
                    .expect("open");
            back.push(IngestRecord::decode(payload).expect("decode"));
        }
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].end_offset(), 14, "the source end survives the WAL");
        assert_eq!(&back[1].lines[..], b"d\n");
    }

    #[test]
    fn a_checkpoint_notice_removes_indexed_segments_without_new_traffic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::wal::WalOptions { segment_bytes: 256 };
        let wal = Wal::open(dir.path(), options).expect("wal");
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let checkpoint = Arc::new(AtomicU64::new(0));
        let mut seq = test_sequencer(wal, tx);
        seq.checkpoint = Arc::clone(&checkpoint);
        let lines: &'static [u8] = &[b'x'; 199];
        let mut records = Vec::new();
        for i in 0..6u64 {
            let mut r = record(i * 200, lines);
            r.lines = Bytes::from(lines.iter().copied().chain([b'\n']).collect::<Vec<u8>>());
            records.push(r);
        }
        run_group(&mut seq, records);
        let last_end = rx.try_iter().map(|d| d.end).max().expect("indexed");
        let segments = || std::fs::read_dir(dir.path()).expect("ls").count();
        let before = segments();
        assert!(before >= 3, "{before} segments");

        let (ingest, inbox) = queue(4);
        let thread = seq.spawn(inbox).expect("spawn");
        checkpoint.store(last_end, Ordering::Release);
        ingest.checkpoint_notifier().notify();
        drop(ingest);
        thread.join().expect("join").expect("sequencer ok");
        assert!(segments() < before, "segments were not removed");
    }
}
