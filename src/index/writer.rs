//! The indexer: WAL records in, tantivy commits out, each commit carrying
//! the WAL position it covers.
//!
//! Checkpoint contract (see ARCHITECTURE.md):
//! - a partition's commit payload `P` means "every line of every WAL record
//!   starting below `P` that belongs to this partition is in this commit";
//! - `index/checkpoint.json` holds `G`, written after a commit round of all
//!   dirty partitions succeeded, plus the per-source acked offsets as of `G`;
//! - on restart the WAL is replayed from `G`; a partition skips records
//!   starting below its own `P` (it already has them). So a crash between
//!   two partition commits neither loses nor repeats a line;
//! - WAL segments wholly below `G` may be deleted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tantivy::indexer::UserOperation;
use tantivy::{IndexReader, IndexWriter, TantivyDocument};

use super::budget::{Grant, Reservation};
use super::catalog::{Catalog, CommitPayload, Partition};
use super::cut::{self, Cut, CutBytes, CutFile, CutPartition};
use super::lifecycle::{self, Keep};
use super::merges::Behind;
use super::IndexConfig;
use crate::detect::live::FiringOut;
/// Detection on the ingest path lives in `detect::live`; the indexer
/// only feeds it.
pub use crate::detect::live::LiveRules;
use crate::detect::Engine;
use crate::ingest::{CheckpointNotifier, Durable, SourceOffsets};
use crate::parse::{parse_with_text, Event, Format, ParseContext};
use crate::patterns::SharedPatterns;
use crate::telemetry::Metrics;
use crate::time::{day_of, now_nanos, NANOS_PER_DAY};
use crate::wal::Position;

/// `index/checkpoint.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub wal_position: Position,
    pub sources: SourceOffsets,
    /// Kafka shards: per source, the position of the last record that moved
    /// its offset, so that a rollback ([`Checkpoint::roll_back`]) knows which
    /// offsets still hold. Empty on the collector.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub source_positions: HashMap<String, Position>,
}

impl Checkpoint {
    pub fn path(index_dir: &std::path::Path) -> PathBuf {
        index_dir.join("checkpoint.json")
    }

    pub fn load(index_dir: &std::path::Path) -> Result<Option<Checkpoint>> {
        let path = Self::path(index_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Moves the checkpoint in `index_dir` back to `position` if it is
    /// past it (its lines from there on were deleted, `rollback.rs`).
    /// A source offset moved by a record at or past `position` is dropped,
    /// not guessed: a missing offset admits everything, so a resend across
    /// the rollback may be indexed twice, but no line is refused. Returns
    /// whether it moved.
    pub fn roll_back(index_dir: &std::path::Path, position: Position) -> Result<bool> {
        let Some(mut checkpoint) = Self::load(index_dir)? else {
            return Ok(false);
        };
        if checkpoint.wal_position <= position {
            return Ok(false);
        }
        checkpoint.wal_position = position;
        let positions = std::mem::take(&mut checkpoint.source_positions);
        checkpoint
            .sources
            .retain(|key, _| positions.get(key).is_some_and(|&at| at < position));
        checkpoint.source_positions = positions
            .into_iter()
            .filter(|(key, _)| checkpoint.sources.contains_key(key))
            .collect();
        let json = serde_json::to_vec(&checkpoint)?;
        crate::fsutil::write_atomic(&Self::path(index_dir), &json, 0o600)?;
        Ok(true)
    }
}

struct OpenWriter {
    partition: Partition,
    /// Shared with the thread of a commit round while it commits
    /// (`committing`); nobody else locks it.
    writer: Arc<Mutex<IndexWriter>>,
    /// A background commit round holds the writer: documents wait in
    /// `pending` until it is done.
    committing: bool,
    /// The partition already holds records starting below this.
    committed: Position,
    dirty: bool,
    last_used: Instant,
    /// Start of the last WAL record that added lines here: a writer holding
    /// lines of the record being indexed is never evicted, as its commit
    /// would claim a record it has only part of.
    touched: Option<Position>,
    /// Its heap, held in the node's budget until the writer closes.
    reservation: Reservation,
    /// Documents not yet handed to tantivy: they go as one batch per WAL
    /// record. One `add_document` per line woke an indexing thread per
    /// line, which then spun on the empty channel (docs/ingest-profile.md).
    pending: Vec<TantivyDocument>,
}

/// Documents handed to tantivy at once, at most: a record of many lines
/// is not held whole.
const BATCH_DOCS: usize = 1024;

/// Lines of a record from which its rules run on a thread of their own,
/// beside the index side (a scoped thread costs tens of microseconds).
const PARALLEL_RULES_LINES: usize = 256;

/// One line of a record, parsed once for the rules and the index side.
struct ParsedLine<'a> {
    raw: std::borrow::Cow<'a, str>,
    event: Option<Event<'a>>,
    /// Event time (the arrival time when the line has none, or one too far
    /// ahead): picks the partition, and the rules' clock.
    timestamp: i64,
}

impl ParsedLine<'_> {
    fn detect(&self, rules: &mut LiveRules, source: &str, tenant: &str) {
        let unparsed = Event::default();
        rules.line(
            self.event.as_ref().unwrap_or(&unparsed),
            &self.raw,
            source,
            self.timestamp,
            tenant,
        );
    }
}

impl OpenWriter {
    /// Hands the pending documents to tantivy's indexing threads, unless a
    /// commit round holds the writer.
    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() && !self.committing {
            self.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .run(self.pending.drain(..).map(UserOperation::Add))
                .with_context(|| {
                    let p = &self.partition;
                    format!("indexing into {}/{}", p.tenant, p.day)
                })?;
        }
        Ok(())
    }

    /// Waits for the writer's merges and closes it. Only called with no
    /// commit round in flight, so the writer is this one's alone.
    fn close(self) {
        if let Ok(writer) = Arc::try_unwrap(self.writer) {
            let writer = writer.into_inner().unwrap_or_else(PoisonError::into_inner);
            let _ = writer.wait_merging_threads();
        }
    }
}

/// A partition commit of a round: what its thread needs.
struct PartitionCommit {
    key: (String, i64),
    writer: Arc<Mutex<IndexWriter>>,
    reader: IndexReader,
}

/// A commit round: every dirty partition committed with the WAL position
/// `checkpoint.wal_position`, then the checkpoint written. The tantivy
/// commits may run on a thread of their own ([`Indexer::run`]): they wait
/// for tantivy to index its backlog and write the segments, which left
/// the parsing and the rules idle for a fifth of the time
/// (docs/ingest-profile.md). Meanwhile the next records are parsed,
/// evaluated and turned into documents, which wait in `pending`.
struct CommitRound {
    checkpoint: Checkpoint,
    partitions: Vec<(String, i64)>,
    lines: u64,
    /// Of `lines`: replayed from the WAL, received before this start.
    replayed: u64,
    searchable: Vec<Instant>,
    commits: RoundCommits,
}

enum RoundCommits {
    Done(Result<()>),
    Running(JoinHandle<Result<()>>),
}

impl RoundCommits {
    fn is_done(&self) -> bool {
        match self {
            RoundCommits::Done(_) => true,
            RoundCommits::Running(handle) => handle.is_finished(),
        }
    }

    fn wait(self) -> Result<()> {
        match self {
            RoundCommits::Done(result) => result,
            RoundCommits::Running(handle) => handle
                .join()
                .map_err(|_| anyhow::anyhow!("an index commit panicked"))?,
        }
    }
}

/// Commits one partition's writer with `payload` and makes its lines
/// searchable.
fn commit_partition(
    writer: &mut IndexWriter,
    reader: &IndexReader,
    (tenant, day): &(String, i64),
    payload: &str,
    metrics: &Metrics,
) -> Result<()> {
    let mut prepared = writer
        .prepare_commit()
        .with_context(|| format!("preparing commit of {tenant}/{day}"))?;
    prepared.set_payload(payload);
    prepared
        .commit()
        .with_context(|| format!("committing {tenant}/{day}"))?;
    reader.reload().context("reloading index reader")?;
    metrics.index_commits.inc();
    Ok(())
}

fn commit_all(commits: &[PartitionCommit], payload: &str, metrics: &Metrics) -> Result<()> {
    for c in commits {
        let mut writer = c.writer.lock().unwrap_or_else(PoisonError::into_inner);
        commit_partition(&mut writer, &c.reader, &c.key, payload, metrics)?;
    }
    Ok(())
}

/// With a backlog, a queue that stays empty this long means caught up:
/// longer than a WAL group commit's pause between records.
const CAUGHT_UP_QUIET: Duration = Duration::from_millis(20);

/// How long a clean stop or a backup cut waits for the alert stage to
/// store the firings published.
const STOP_STORE_WAIT: Duration = Duration::from_secs(2);

/// While firings wait to be stored by the alert stage, how often a quiet
/// indexer looks whether the rules' high-water mark can follow.
const STORE_POLL: Duration = Duration::from_millis(20);

/// How long a partition written to counts as wanted for the budget's
/// share after its writer closed.
const WANTED_WINDOW: Duration = Duration::from_secs(10);

pub struct Indexer {
    catalog: Arc<Catalog>,
    config: IndexConfig,
    index_dir: PathBuf,
    writers: HashMap<(String, i64), OpenWriter>,
    consumed: Position,
    offsets: SourceOffsets,
    /// Per source, the record that last moved its offset (Kafka shards).
    source_positions: HashMap<String, Position>,
    checkpoint: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    docs_since_commit: usize,
    lines_since_commit: u64,
    replayed_since_commit: u64,
    waiting_for_searchable: Vec<Instant>,
    /// Set before each commit: whether lines waited more than two commit
    /// intervals, which holds merges back (`merges.rs`).
    behind: Behind,
    /// The commit round in flight, if any: settled before anything else
    /// touches a writer or the checkpoint.
    round: Option<CommitRound>,
    on_checkpoint: Option<CheckpointNotifier>,
    rules: Option<LiveRules>,
    alerts: Option<Box<dyn FiringOut>>,
    /// Unix nanos of the last look for partitions past their retention.
    retention_checked: i64,
    /// Lines left out for being past their tenant's retention since the
    /// last warning, and when that was (at most one a minute).
    past_retention: (u64, Option<Instant>),
    /// Which of a day's partitions this indexer writes (`Catalog`).
    shard: u32,
    /// Every line's pattern (`src/patterns/`), indexed as `pattern`.
    patterns: Option<SharedPatterns>,
    /// Partitions whose writer was closed lately, and when they were last
    /// written: they still count in the budget's share (`budget.rs`).
    wanted: HashMap<(String, i64), Instant>,
    /// The parsed lines' vector, kept empty between records: a record's
    /// lines take hundreds of kilobytes, and a fresh vector per record was
    /// fresh pages, a page fault each (the allocator returns freed memory
    /// at once, `main.rs`).
    parsed_lines: Vec<ParsedLine<'static>>,
}

/// The empty vector `lines` was, for lines of another lifetime: the same
/// allocation, since the types have the same layout (in-place collect).
fn recycle<'b>(mut lines: Vec<ParsedLine<'_>>) -> Vec<ParsedLine<'b>> {
    lines.clear();
    lines.into_iter().map(|_| unreachable!("cleared")).collect()
}

/// What the indexer thread hands each line to besides the index, given
/// when it is built: the live rules and where their firings go, the
/// node's pattern store that names each line's pattern (shared by every
/// shard of a Kafka indexer), and which shard of each day it writes (a
/// Kafka partition's own indexes; 0 on a collector).
#[derive(Default)]
pub struct Downstream {
    pub rules: Option<LiveRules>,
    pub alerts: Option<Box<dyn FiringOut>>,
    pub patterns: Option<SharedPatterns>,
    pub shard: u32,
}

/// Drops `tenant`'s patterns from the node's store and its aliases from
/// the catalog (a purge), the state file rewritten without them now.
pub fn forget_patterns(patterns: &SharedPatterns, catalog: &Catalog, tenant: &str) -> Result<()> {
    patterns
        .lock()
        .forget_tenant(tenant)
        .context("rewriting the pattern state without the tenant")?;
    catalog.pattern_aliases.forget_tenant(tenant);
    Ok(())
}

/// Writes the store if its interval has passed, and its bounds into
/// `/metrics`.
pub fn save_patterns_if_due(patterns: &SharedPatterns, metrics: &Metrics) -> Result<()> {
    let mut patterns = patterns.lock();
    patterns.save_if_due()?;
    let streams = patterns.streams();
    metrics.patterns_live.set(streams.patterns() as i64);
    metrics.patterns_evicted.set(streams.evicted() as i64);
    metrics
        .pattern_streams_dropped
        .set(streams.dropped_streams() as i64);
    Ok(())
}

impl Indexer {
    pub fn new(
        catalog: Arc<Catalog>,
        config: IndexConfig,
        index_dir: PathBuf,
        start: Checkpoint,
        checkpoint: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
        downstream: Downstream,
    ) -> Self {
        checkpoint.store(start.wal_position, Ordering::Release);
        metrics
            .index_memory_budget
            .set(catalog.budget.usage().total as i64);
        let Downstream {
            rules,
            alerts,
            patterns,
            shard,
        } = downstream;
        Indexer {
            catalog,
            config,
            index_dir,
            writers: HashMap::new(),
            consumed: start.wal_position,
            offsets: start.sources,
            source_positions: start.source_positions,
            checkpoint,
            metrics,
            docs_since_commit: 0,
            lines_since_commit: 0,
            replayed_since_commit: 0,
            waiting_for_searchable: Vec::new(),
            behind: Behind::default(),
            round: None,
            on_checkpoint: None,
            rules,
            alerts,
            retention_checked: i64::MIN,
            past_retention: (0, None),
            shard,
            patterns,
            wanted: HashMap::new(),
            parsed_lines: Vec::new(),
        }
    }

    /// Swaps in `engine` (a hot reload where no `LiveState` does it:
    /// Kafka shards), carrying over the state of unchanged rules.
    pub fn swap_rules(&mut self, engine: Engine) -> Option<crate::detect::Carried> {
        Some(self.rules.as_mut()?.swap(engine))
    }

    /// Its live rules, if any.
    pub fn rules(&self) -> Option<&LiveRules> {
        self.rules.as_ref()
    }

    /// The last indexed record's lines for the owners of rules keyed
    /// across sources (a Kafka shard, `detect::Routing::Forward`); empty
    /// elsewhere. The caller sends them and clears the buffer.
    pub fn routed(&mut self) -> Option<&mut crate::detect::live::Routed> {
        self.rules.as_mut().map(|r| &mut r.routed)
    }

    /// Who to tell when the checkpoint advances (the WAL's owner).
    pub fn on_checkpoint(&mut self, notifier: CheckpointNotifier) {
        self.on_checkpoint = Some(notifier);
    }

    /// Every source's durable end offset as of [`Indexer::consumed`].
    pub fn source_offsets(&self) -> &SourceOffsets {
        &self.offsets
    }

    /// End of the last WAL record handed to the index.
    pub fn consumed(&self) -> Position {
        self.consumed
    }

    /// Indexes until the channel closes, committing on the configured
    /// interval or document count; commits a last time before returning.
    pub fn run(mut self, rx: Receiver<Durable>) -> Result<()> {
        let interval = Duration::from_millis(self.config.commit_interval_ms.max(10));
        let mut deadline = Instant::now() + interval;
        loop {
            let mut wait = deadline.saturating_duration_since(Instant::now());
            let behind = self.behind.get();
            // The rules' high-water mark follows the alert store, also
            // when no record comes to carry it.
            let awaits_store = self.rules.as_ref().is_some_and(LiveRules::awaits_store);
            if awaits_store {
                wait = wait.min(STORE_POLL);
            }
            if behind {
                // A backlog's last lines are published as soon as the
                // queue runs dry, not at the next deadline: up to an
                // interval sooner, and the burst's throughput until
                // searchable counts that wait.
                wait = wait.min(CAUGHT_UP_QUIET);
            }
            match rx.recv_timeout(wait) {
                Ok(item) => {
                    self.index(item)?;
                    if self.round.as_ref().is_some_and(|r| r.commits.is_done()) {
                        self.settle()?;
                    }
                    self.maintain()?;
                    if let Some(rules) = &mut self.rules {
                        rules.poll_reload();
                    }
                    // Under steady load the queue never runs dry, so the
                    // interval is checked here too, not only on timeouts.
                    if self.docs_since_commit >= self.config.commit_docs
                        || Instant::now() >= deadline
                    {
                        // Lines that waited over an interval more than
                        // their round: a backlog.
                        self.behind.set(
                            self.waiting_for_searchable
                                .first()
                                .is_some_and(|received| received.elapsed() > 2 * interval),
                        );
                        self.settle()?;
                        self.begin_round(true)?;
                        deadline = Instant::now() + interval;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline && !behind => {
                    if let Some(rules) = &mut self.rules {
                        rules.follow_store(self.alerts.as_deref());
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    // Caught up with a backlog before the deadline.
                    self.caught_up();
                    self.settle()?;
                    self.begin_round(true)?;
                    deadline = Instant::now() + interval;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.caught_up();
                    self.idle()?;
                    self.commit()?;
                    deadline = Instant::now() + interval;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish()
    }

    /// The queue ran dry. After a backlog, the next commit is of every
    /// writer, empty or not, so the policy merges what it held back.
    fn caught_up(&mut self) {
        if self.behind.get() {
            self.behind.set(false);
            self.writers.values_mut().for_each(|w| w.dirty = true);
        }
    }

    /// What a quiet input leaves time for: flatline rules (they fire on
    /// silence, which only a clock sees), purges and retention, closing
    /// idle writers.
    pub fn idle(&mut self) -> Result<()> {
        if let Some(rules) = &mut self.rules {
            rules.idle(&self.metrics, self.alerts.as_deref());
        }
        self.maintain()?;
        self.close_idle_writers();
        Ok(())
    }

    /// Commits a last time and waits for tantivy's merges.
    pub fn finish(mut self) -> Result<()> {
        // The last firings into the alert store before a clean stop, so
        // the high-water mark covers them and the next start does not
        // publish them again.
        if let Some(rules) = &mut self.rules {
            rules.wait_for_store(self.alerts.as_deref(), STOP_STORE_WAIT);
        }
        self.commit()?;
        // A Kafka shard's store is saved by its node (`kafka/indexer.rs`).
        if let (Some(patterns), 0) = (&self.patterns, self.shard) {
            patterns.lock().save_if_dirty()?;
        }
        for (_, open) in self.writers.drain() {
            open.close();
        }
        Ok(())
    }

    /// Adds one durable record's lines to their day partitions.
    pub fn index(&mut self, item: Durable) -> Result<()> {
        let record = &item.record;
        let hint = record.format.parse::<Format>().unwrap_or_default();
        let received = record.received_unix_nanos;
        let ctx = ParseContext {
            now_nanos: received,
        };
        // A clock far ahead on the sender must not create future partitions.
        let latest_allowed = received.saturating_add(NANOS_PER_DAY);
        // Partition key of the previous line: most batches stay in one day,
        // so the key is built once per batch, not once per line.
        let mut key = (record.tenant.clone(), i64::MIN);
        let mut lines = 0u64;
        let evaluate = self.rules.as_ref().is_some_and(|r| r.evaluates(item.start));
        let keep = self
            .catalog
            .lifecycle
            .keep(&record.tenant, received, now_nanos());
        if let (Some(rules), true) = (&mut self.rules, evaluate) {
            rules.begin_record(
                &[&record.tenant, &record.agent_id, &record.source_id],
                received,
            );
        }
        // Parsed once, then read by the rules and by the index side at the
        // same time (below).
        let mut parsed = recycle(std::mem::take(&mut self.parsed_lines));
        // Lines past retention, and the first day the tenant keeps.
        let mut past_retention = (0u64, 0i64);
        for line in record.lines() {
            if keep == Keep::Nothing {
                break; // purged: neither indexed nor seen by the rules
            }
            lines += 1;
            let (raw, result) = parse_with_text(line, hint, &ctx);
            if result.is_err() {
                self.metrics.lines_unparsed.inc();
            }
            let mut event = result.ok();
            // A line that names no host is the shipper's (the agent's
            // `--host`), as the index stores it: rules keyed by host (a
            // server gone quiet, its own outage) see the same host that
            // search shows.
            if let Some(e) = event.as_mut().filter(|e| e.host.is_none()) {
                if !record.host.is_empty() {
                    e.host = Some(std::borrow::Cow::Borrowed(record.host.as_str()));
                }
            }
            let timestamp = event
                .as_ref()
                .and_then(|e| e.timestamp)
                .filter(|&ts| ts <= latest_allowed)
                .unwrap_or(received);
            if let Keep::FromDay(first) = keep {
                if day_of(timestamp) < first {
                    // Past retention: do not recreate its day. It was
                    // acknowledged (durable), so say so, not silently.
                    past_retention = (past_retention.0 + 1, first);
                    continue;
                }
            }
            parsed.push(ParsedLine {
                raw,
                event,
                timestamp,
            });
        }
        if let (lines @ 1.., first_kept_day) = past_retention {
            self.note_past_retention(&record.tenant, &record.source, lines, first_kept_day);
        }
        // The rules and the index side share nothing but the parsed lines:
        // on a record of many lines they run on two cores (the indexer
        // thread was the pipeline's critical path, docs/ingest-profile.md).
        // A small record stays on this thread: a thread costs more.
        let mut rules = if evaluate { self.rules.take() } else { None };
        let (tenant, source) = (&record.tenant, &record.source);
        let indexed = std::thread::scope(|scope| {
            let detect = match rules.as_mut() {
                Some(rules) if parsed.len() >= PARALLEL_RULES_LINES => {
                    let parsed = &parsed;
                    Some(scope.spawn(move || {
                        for line in parsed {
                            line.detect(rules, source, tenant);
                        }
                    }))
                }
                Some(rules) => {
                    for line in &parsed {
                        line.detect(rules, source, tenant);
                    }
                    None
                }
                None => None,
            };
            let indexed = self.index_parsed(&item, &parsed, &mut key);
            let detected = detect.map_or(Ok(()), |handle| {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("the rule engine panicked on a record"))
            });
            indexed.and(detected)
        });
        if evaluate {
            self.rules = rules;
        }
        self.parsed_lines = recycle(parsed);
        indexed?;
        for open in self.writers.values_mut() {
            open.flush()?;
        }
        self.lines_since_commit += lines;
        if item.received.is_none() {
            self.replayed_since_commit += lines;
        }
        if let (Some(rules), true) = (&mut self.rules, evaluate) {
            let live = item.received.is_some();
            rules.end_record(item.end, live, &self.metrics, self.alerts.as_deref());
        }
        crate::ingest::advance(&mut self.offsets, record);
        if self.shard != 0 && !record.source_id.is_empty() {
            self.source_positions
                .insert(record.source_key(), item.start);
        }
        self.consumed = self.consumed.max(item.end);
        if let Some(received) = item.received {
            self.waiting_for_searchable.push(received);
        }
        Ok(())
    }

    /// Counts lines left out for being past their tenant's retention, and
    /// says so in the log at most once a minute.
    fn note_past_retention(&mut self, tenant: &str, source: &str, lines: u64, first_kept_day: i64) {
        self.metrics.lines_past_retention.add(lines);
        self.past_retention.0 += lines;
        let due = self
            .past_retention
            .1
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(60));
        if due {
            tracing::warn!(
                tenant, source, lines, since_last_warning = self.past_retention.0,
                first_kept_day = %crate::time::day_name(first_kept_day),
                "lines dated before the tenant's retention were left out of the index \
                 (nightowl_lines_past_retention_total)"
            );
            self.past_retention = (0, Some(Instant::now()));
        }
    }

    /// The index side of [`Indexer::index`]: mines each parsed line's
    /// pattern and hands its document to its partition's writer.
    fn index_parsed(
        &mut self,
        item: &Durable,
        parsed: &[ParsedLine<'_>],
        key: &mut (String, i64),
    ) -> Result<()> {
        let record = &item.record;
        // Locked once per record, not per line (the store is the node's).
        let store = self.patterns.clone();
        let mut miner = store.as_ref().map(SharedPatterns::lock);
        // One clock read a record: it only ranks writers for closing.
        let now = Instant::now();
        for line in parsed {
            let (raw, event, timestamp) = (&line.raw, line.event.as_ref(), line.timestamp);
            key.1 = day_of(timestamp);
            // Mined on replay too, like the rules: the miner's state is
            // saved apart from the index and may be behind it.
            let pattern = miner
                .as_mut()
                .map(|p| p.pattern(&record.tenant, &record.source, event, raw));
            let open = self.writer_for(key, item.start)?;
            if item.start < open.committed {
                continue; // replay: this partition committed the record already
            }
            // The partition's own layout: a day created before an
            // upgrade keeps the fields it was created with.
            let schema = &open.partition.schema;
            let mut doc = schema.document(event, raw, timestamp, &record.host, &record.source);
            if let (Some(pattern), Some(field)) = (pattern, schema.pattern) {
                let hex = pattern.hex();
                doc.add_text(field, std::str::from_utf8(&hex).unwrap_or_default());
            }
            // Only a Kafka shard may have to give a commit interval back
            // (`rollback.rs`); the collector's WAL never needs it, and an
            // empty column costs nothing.
            if let (Some(field), true) = (schema.log_position, open.partition.shard != 0) {
                doc.add_u64(field, item.start);
            }
            open.pending.push(doc);
            if open.pending.len() >= BATCH_DOCS {
                open.flush()?;
            }
            open.dirty = true;
            open.last_used = now;
            open.touched = Some(item.start);
            self.docs_since_commit += 1;
        }
        if let Some(miner) = &mut miner {
            for merge in miner.take_merges() {
                self.catalog
                    .pattern_aliases
                    .set(&merge.tenant, &merge.id, merge.aliases);
            }
        }
        Ok(())
    }

    /// Purges asked for by the API, and retention every few minutes: the
    /// writers of the days concerned are committed and closed first, so no
    /// directory is deleted under an open writer. A Kafka shard leaves this
    /// to its indexer, which closes every shard's writers together.
    fn maintain(&mut self) -> Result<()> {
        if self.shard != 0 {
            return Ok(());
        }
        let waiters = self.catalog.cuts.take();
        if !waiters.is_empty() {
            let cut = self.cut().map_err(|e| format!("{e:#}"));
            for waiter in waiters {
                let _ = waiter.send(cut.clone());
            }
        }
        let catalog = Arc::clone(&self.catalog);
        let mut checked = self.retention_checked;
        let mut purged = false;
        let outcome = lifecycle::maintain(&catalog, &mut checked, |step| match step {
            lifecycle::WriterStep::Commit => self.commit(),
            lifecycle::WriterStep::Close(tenant, before_day) => {
                self.close_writers(tenant, before_day)
            }
            lifecycle::WriterStep::CloseDay(tenant, day, shard) => {
                self.close_day(tenant, day, shard)
            }
            lifecycle::WriterStep::ForgetRules(tenant, removed) => {
                purged = true;
                *removed += self.forget_tenant_rules(tenant)?;
                Ok(())
            }
        });
        self.retention_checked = checked;
        if let (true, Some(notifier)) = (purged, &self.on_checkpoint) {
            notifier.roll_segment();
        }
        outcome
    }

    /// A backup's consistent cut (`cut.rs`): commits, then links every
    /// partition's committed files and encodes the checkpoint, the rule
    /// state and the pattern state, all as of the consumed position.
    pub fn cut(&mut self) -> Result<Cut> {
        self.commit()?;
        let root = self.index_dir.join(cut::STAGING_DIR);
        // One backup at a time (`src/backup/`): anything here was left by
        // a crash.
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("clearing {}", root.display()))?;
        }
        let staging = root.join(now_nanos().to_string());
        let mut files = Vec::new();
        let mut generated = Vec::new();
        let mut partitions = Vec::new();
        for partition in self.catalog.all() {
            if partition.shard != self.shard {
                continue;
            }
            let dir = self
                .catalog
                .partition_dir(&partition.tenant, partition.day, partition.shard);
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if !dir.join("meta.json").exists() {
                continue;
            }
            let into = staging.join(&partition.tenant).join(&name);
            let (linked, docs) = cut::link_partition(&dir, &into)?;
            let rel = format!("index/{}/{name}", partition.tenant);
            generated.push(CutBytes {
                path: format!("{rel}/.managed.json"),
                bytes: cut::managed_json(&linked),
                tenant: Some(partition.tenant.clone()),
            });
            for (file, size) in linked {
                files.push(CutFile {
                    path: format!("{rel}/{file}"),
                    staged: into.join(&file),
                    size,
                    tenant: Some(partition.tenant.clone()),
                });
            }
            partitions.push(CutPartition {
                tenant: partition.tenant.clone(),
                dir: rel,
                docs,
            });
        }
        let checkpoint = self.checkpoint_now();
        generated.push(CutBytes {
            path: "index/checkpoint.json".into(),
            bytes: serde_json::to_vec(&checkpoint)?,
            tenant: None,
        });
        let deletions = self.index_dir.join("deletions.json");
        match std::fs::read(&deletions) {
            Ok(bytes) => generated.push(CutBytes {
                path: "index/deletions.json".into(),
                bytes,
                tenant: None,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", deletions.display())),
        }
        // The cut's rule state must not pass a firing its alert store
        // lacks: the restored collector would neither replay nor page it.
        if let Some(rules) = &mut self.rules {
            if !rules.wait_for_store(self.alerts.as_deref(), STOP_STORE_WAIT) {
                tracing::warn!(
                    "backup cut taken while the alert stage had not stored the latest firings"
                );
            }
        }
        if let Some(bytes) = self
            .rules
            .as_mut()
            .and_then(|r| r.state_snapshot(self.consumed))
        {
            generated.push(CutBytes {
                path: "rules/state.snapshot".into(),
                bytes,
                tenant: None,
            });
        }
        if let Some(patterns) = &self.patterns {
            generated.push(CutBytes {
                path: "patterns/state.json".into(),
                bytes: patterns.lock().encode()?,
                tenant: None,
            });
        }
        Ok(Cut {
            staging,
            wal_position: self.consumed,
            files,
            generated,
            partitions,
            sources: self.offsets.clone(),
        })
    }

    /// Drops `tenant`'s rule state and recent firings (a purge), and has
    /// the rule snapshot on disk rewritten without them now. Returns the
    /// state keys removed.
    pub fn forget_tenant_rules(&mut self, tenant: &str) -> Result<u64> {
        if let Some(patterns) = &self.patterns {
            forget_patterns(patterns, &self.catalog, tenant)?;
        }
        let Some(rules) = &mut self.rules else {
            return Ok(0);
        };
        let removed = rules.forget_tenant(tenant);
        // The snapshot is written at a commit.
        self.commit()?;
        Ok(removed)
    }

    /// Commits, then closes the writers of `tenant`'s days before
    /// `before_day` (every day with `None`), ahead of their deletion.
    pub fn close_writers(&mut self, tenant: &str, before_day: Option<i64>) -> Result<()> {
        self.commit()?;
        let doomed: Vec<(String, i64)> = self
            .writers
            .keys()
            .filter(|(t, d)| t == tenant && before_day.is_none_or(|b| *d < b))
            .cloned()
            .collect();
        for key in doomed {
            if let Some(open) = self.writers.remove(&key) {
                open.close();
            }
        }
        self.publish_budget();
        Ok(())
    }

    /// Commits, then closes the writer of `tenant`'s `day` if this indexer
    /// writes `shard` (compaction swaps that partition next).
    pub fn close_day(&mut self, tenant: &str, day: i64, shard: u32) -> Result<()> {
        if shard != self.shard {
            return Ok(());
        }
        self.commit()?;
        if let Some(open) = self.writers.remove(&(tenant.to_string(), day)) {
            open.close();
        }
        self.publish_budget();
        Ok(())
    }

    /// The open writer of `key`, opened with a heap from the node's budget
    /// if needed. `record` is the start of the WAL record being indexed.
    fn writer_for(&mut self, key: &(String, i64), record: Position) -> Result<&mut OpenWriter> {
        if !self.writers.contains_key(key) {
            let (heap, threads) = self.reserve_heap(key, record)?;
            let reservation = Reservation::new(&self.catalog.budget, heap);
            let partition = self.catalog.get_or_create(&key.0, key.1, self.shard)?;
            let committed = partition.committed_payload()?.wal_position;
            let writer = partition
                .index
                .writer_with_num_threads(threads, heap)
                .with_context(|| format!("opening index writer for {}/{}", key.0, key.1))?;
            writer.set_merge_policy(self.behind.policy());
            self.wanted.remove(key);
            self.writers.insert(
                key.clone(),
                OpenWriter {
                    partition,
                    writer: Arc::new(Mutex::new(writer)),
                    committing: false,
                    committed,
                    dirty: false,
                    last_used: Instant::now(),
                    touched: None,
                    reservation,
                    pending: Vec::new(),
                },
            );
            self.publish_budget();
        }
        self.writers.get_mut(key).context("index writer vanished")
    }

    /// A heap and a thread count for `key`'s writer, reserved in the
    /// node's budget: when it is full, writers are committed and closed
    /// first, the one holding most above its share, else the least
    /// recently used, never one holding lines of `record`.
    fn reserve_heap(&mut self, key: &(String, i64), record: Position) -> Result<(usize, usize)> {
        let now = Instant::now();
        self.wanted
            .retain(|_, used| now.duration_since(*used) < WANTED_WINDOW);
        let wanted = 1
            + self.wanted.keys().filter(|k| *k != key).count()
            + self
                .writers
                .values()
                .filter(|w| now.duration_since(w.last_used) < WANTED_WINDOW)
                .count();
        let budget = Arc::clone(&self.catalog.budget);
        let max_heap = self.config.writer_heap_bytes;
        loop {
            if let Grant::Open { heap, threads } =
                budget.reserve(max_heap, self.config.writer_threads, wanted)
            {
                return Ok((heap, threads));
            }
            let share = budget.share(max_heap, wanted);
            let victim = self
                .writers
                .iter()
                .filter(|(_, w)| w.touched != Some(record))
                .max_by_key(|(_, w)| {
                    let over = w.reservation.heap().saturating_sub(share);
                    (over, std::cmp::Reverse(w.last_used))
                })
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                // Another indexer of the node holds the budget: open small
                // rather than stall, and let its writers close in turn.
                return Ok((budget.reserve_over(), 1));
            };
            self.evict(&victim)?;
        }
    }

    /// Commits `key`'s writer if it holds lines, and closes it.
    fn evict(&mut self, key: &(String, i64)) -> Result<()> {
        self.settle()?;
        let Some(mut open) = self.writers.remove(key) else {
            return Ok(());
        };
        if open.dirty {
            let payload = self.payload()?;
            open.flush()?;
            let mut writer = open.writer.lock().unwrap_or_else(PoisonError::into_inner);
            commit_partition(
                &mut writer,
                &open.partition.reader,
                key,
                &payload,
                &self.metrics,
            )?;
        }
        self.wanted.insert(key.clone(), open.last_used);
        open.close();
        self.metrics.index_writers_evicted.inc();
        self.publish_budget();
        Ok(())
    }

    /// The budget's state into `/metrics` (and so `status`).
    fn publish_budget(&self) {
        let usage = self.catalog.budget.usage();
        self.metrics.index_memory_budget.set(usage.total as i64);
        self.metrics
            .index_memory_reserved
            .set(usage.reserved as i64);
        self.metrics.index_writers_open.set(usage.writers as i64);
    }

    /// The payload of a commit made now.
    fn payload(&self) -> Result<String> {
        // New lines undo a compaction: `compacted` is left out.
        Ok(serde_json::to_string(&CommitPayload {
            wal_position: self.consumed,
            compacted: false,
        })?)
    }

    /// Commits every dirty partition with the consumed WAL position, then
    /// advances the checkpoint; waits for a round in flight first.
    pub fn commit(&mut self) -> Result<()> {
        self.settle()?;
        self.begin_round(false)?;
        self.settle()
    }

    /// Starts a commit round of every dirty partition at the consumed
    /// position: on a thread of its own with `background`, else here.
    /// No round may be in flight.
    fn begin_round(&mut self, background: bool) -> Result<()> {
        debug_assert!(self.round.is_none(), "a commit round is in flight");
        let payload = self.payload()?;
        // A Kafka shard's node saves the store after the group commit
        // (`kafka/indexer.rs`): here, between this index commit and the
        // group's, a write would widen the window docs/kafka.md ("Exactly
        // once") keeps to microseconds.
        if let (Some(patterns), 0) = (&self.patterns, self.shard) {
            save_patterns_if_due(patterns, &self.metrics)?;
        }
        // Before the checkpoint, so the WAL floor (see `retain`) is never
        // above a snapshot that is on disk; and before the next record's
        // lines reach the rules.
        if let Some(rules) = &mut self.rules {
            rules.before_checkpoint(self.consumed, &self.metrics, self.alerts.as_deref());
        }
        let mut commits = Vec::new();
        for (key, open) in self.writers.iter_mut().filter(|(_, w)| w.dirty) {
            open.flush()?;
            open.dirty = false;
            open.committing = background;
            commits.push(PartitionCommit {
                key: key.clone(),
                writer: Arc::clone(&open.writer),
                reader: open.partition.reader.clone(),
            });
        }
        let partitions = commits.iter().map(|c| c.key.clone()).collect();
        let commits = if background && !commits.is_empty() {
            let metrics = Arc::clone(&self.metrics);
            RoundCommits::Running(
                std::thread::Builder::new()
                    .name("nightowl-commit".into())
                    .spawn(move || commit_all(&commits, &payload, &metrics))
                    .context("starting an index commit thread")?,
            )
        } else {
            RoundCommits::Done(commit_all(&commits, &payload, &self.metrics))
        };
        self.docs_since_commit = 0;
        self.round = Some(CommitRound {
            checkpoint: self.checkpoint_now(),
            partitions,
            lines: std::mem::take(&mut self.lines_since_commit),
            replayed: std::mem::take(&mut self.replayed_since_commit),
            searchable: std::mem::take(&mut self.waiting_for_searchable),
            commits,
        });
        Ok(())
    }

    /// The checkpoint as of the consumed position.
    fn checkpoint_now(&self) -> Checkpoint {
        Checkpoint {
            wal_position: self.consumed,
            sources: self.offsets.clone(),
            source_positions: self.source_positions.clone(),
        }
    }

    /// Waits for the commit round in flight, if any, then writes its
    /// checkpoint and hands its writers the documents that waited.
    fn settle(&mut self) -> Result<()> {
        let Some(round) = self.round.take() else {
            return Ok(());
        };
        let committed = round.commits.wait();
        let position = round.checkpoint.wal_position;
        for key in &round.partitions {
            if let Some(open) = self.writers.get_mut(key) {
                open.committing = false;
                if committed.is_ok() {
                    open.committed = position;
                }
            }
        }
        committed?;
        let previous = self.checkpoint.load(Ordering::Acquire);
        let advanced = position > previous;
        if advanced {
            self.write_checkpoint(&round.checkpoint)?;
            self.checkpoint.store(position, Ordering::Release);
        }
        if let Some(rules) = &self.rules {
            rules.after_checkpoint(self.checkpoint.load(Ordering::Acquire));
        }
        // After the rules' floor moved too: the sequencer's cleanup reads it.
        if let (true, Some(notifier)) = (advanced, &self.on_checkpoint) {
            notifier.notify();
        }
        self.metrics.lines_indexed.add(round.lines);
        self.metrics.lines_replayed.add(round.replayed);
        for received in round.searchable {
            self.metrics.ingest_to_searchable.record(received.elapsed());
        }
        for open in self.writers.values_mut() {
            open.flush()?;
        }
        Ok(())
    }

    fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let json = serde_json::to_vec(checkpoint)?;
        crate::fsutil::write_atomic(&Checkpoint::path(&self.index_dir), &json, 0o600)
    }

    fn close_idle_writers(&mut self) {
        if self.round.is_some() {
            return; // its writers are busy; the next quiet moment will do
        }
        let idle = Duration::from_secs(self.config.idle_writer_secs);
        let stale: Vec<(String, i64)> = self
            .writers
            .iter()
            .filter(|(_, w)| !w.dirty && w.last_used.elapsed() >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(open) = self.writers.remove(&key) {
                open.close();
            }
        }
        self.publish_budget();
    }
}

/// The consumed position a fresh indexer should start from, and the
/// checkpointed source offsets.
pub fn load_start(index_dir: &std::path::Path, wal_start: Position) -> Result<Checkpoint> {
    Ok(Checkpoint::load(index_dir)?.unwrap_or(Checkpoint {
        wal_position: wal_start,
        sources: SourceOffsets::new(),
        source_positions: HashMap::new(),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;

    use bytes::Bytes;

    use super::*;
    use crate::index::search::{count, TimeRange};
    use crate::ingest::IngestRecord;

    #[test]
    fn the_parsed_lines_vector_is_reused_across_records() {
        let line = String::from("a line");
        let mut lines = Vec::with_capacity(64);
        lines.push(ParsedLine {
            raw: std::borrow::Cow::Borrowed(line.as_str()),
            event: None,
            timestamp: 0,
        });
        let at = lines.as_ptr() as usize;
        let kept: Vec<ParsedLine<'static>> = recycle(lines);
        assert!(kept.is_empty());
        assert_eq!((kept.as_ptr() as usize, kept.capacity()), (at, 64));
    }

    const LINES_PER_RECORD: u64 = 50;

    fn record(n: u64, now: i64) -> Durable {
        let lines: String = (0..LINES_PER_RECORD)
            .map(|i| format!("rec{n} line{i}\n"))
            .collect();
        Durable {
            start: n,
            end: n + 1,
            record: IngestRecord {
                tenant: "t".into(),
                agent_id: "a".into(),
                source_id: "s".into(),
                source: "/var/log/s.log".into(),
                host: "h".into(),
                format: "raw".into(),
                first_offset: n * lines.len() as u64,
                received_unix_nanos: now,
                lines: Bytes::from(lines),
                resized: None,
            },
            received: None,
        }
    }

    fn indexer(catalog: &Arc<Catalog>, dir: &std::path::Path, metrics: &Arc<Metrics>) -> Indexer {
        let start = Checkpoint::load(dir).expect("loads").unwrap_or_default();
        Indexer::new(
            Arc::clone(catalog),
            IndexConfig {
                writer_threads: 1,
                // A round every few records: most records are indexed while
                // one commits in the background.
                commit_interval_ms: 10,
                ..IndexConfig::default()
            },
            dir.to_path_buf(),
            start,
            Arc::new(AtomicU64::new(0)),
            Arc::clone(metrics),
            Downstream::default(),
        )
    }

    fn search(catalog: &Catalog, query: &str) -> u64 {
        let all = TimeRange {
            since: 0,
            until: i64::MAX,
        };
        count(catalog, "t", query, all).expect("counts")
    }

    /// A data root (kept alive by the caller), its catalog, index dir and
    /// metrics.
    fn setup() -> (tempfile::TempDir, Arc<Catalog>, PathBuf, Arc<Metrics>) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("index");
        let catalog = Catalog::open(&dir).expect("catalog");
        (root, catalog, dir, Arc::new(Metrics::default()))
    }

    #[test]
    fn background_commit_rounds_neither_lose_nor_repeat_a_line() {
        let (_root, catalog, dir, metrics) = setup();
        let now = now_nanos();
        let records = 400;

        let (tx, rx) = mpsc::channel();
        let run = {
            let indexer = indexer(&catalog, &dir, &metrics);
            std::thread::spawn(move || indexer.run(rx))
        };
        for n in 0..records {
            tx.send(record(n, now)).expect("indexer alive");
        }
        drop(tx);
        run.join().expect("no panic").expect("runs");

        assert!(
            metrics.index_commits.get() > 2,
            "only {} commits: no round ran beside indexing",
            metrics.index_commits.get()
        );
        assert_eq!(search(&catalog, "*"), records * LINES_PER_RECORD);
        for n in [0, 1, 199, 200, records - 1] {
            assert_eq!(
                search(&catalog, &format!("rec{n}")),
                LINES_PER_RECORD,
                "rec{n}"
            );
        }
        let checkpoint = Checkpoint::load(&dir).expect("loads").expect("written");
        assert_eq!(checkpoint.wal_position, records);
        assert_eq!(metrics.lines_indexed.get(), records * LINES_PER_RECORD);

        // A replay of the whole WAL after a restart finds every record
        // committed: nothing is indexed twice.
        let mut again = indexer(&catalog, &dir, &metrics);
        for n in 0..records {
            again.index(record(n, now)).expect("indexes");
        }
        again.finish().expect("finishes");
        assert_eq!(search(&catalog, "*"), records * LINES_PER_RECORD);
    }

    /// With a backlog, lines are searchable once the queue runs dry, not at
    /// the next deadline (an hour away here); without one they wait for it.
    #[test]
    fn a_backlog_is_published_when_the_queue_runs_dry() {
        let (_root, catalog, dir, metrics) = setup();
        let now = now_nanos();
        let mut indexer = indexer(&catalog, &dir, &metrics);
        indexer.config.commit_interval_ms = 3_600_000;
        let behind = indexer.behind.clone();
        behind.set(true);
        let (tx, rx) = mpsc::channel();
        let run = std::thread::spawn(move || indexer.run(rx));
        for n in 0..3 {
            tx.send(record(n, now)).expect("indexer alive");
        }
        let mut waited = 0;
        while search(&catalog, "*") < 3 * LINES_PER_RECORD {
            // Bounded so that a regression fails instead of hanging.
            assert!(waited < 60_000, "not published while the channel is open");
            std::thread::sleep(Duration::from_millis(10));
            waited += 10;
        }
        assert!(!behind.get(), "caught up: merges may run again");

        // No backlog now: a new line waits for the deadline.
        tx.send(record(3, now)).expect("indexer alive");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(search(&catalog, "*"), 3 * LINES_PER_RECORD);
        drop(tx);
        run.join().expect("no panic").expect("runs");
        assert_eq!(search(&catalog, "*"), 4 * LINES_PER_RECORD);
    }
}
