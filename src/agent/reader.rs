//! The reading thread: finds files, reads their new lines into the spool,
//! writes checkpoints and the status file, deletes acknowledged spool
//! segments.
//!
//! It runs on a plain thread because everything it does is blocking file
//! I/O (reads, appends, fsyncs). It wakes on inotify events in the watched
//! directories, on acks (spool space, checkpoints), and at least every
//! 250 ms as a fallback for what inotify does not see (NFS, a directory
//! created later, a file renamed out of a watched directory).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::checkpoint::{Checkpoint, FileEntry};
use super::config::{Settings, StartAt};
use super::identity::{self, Verdict};
use super::shared::Shared;
use super::spool::{Record, Spool};
use super::status::{self, FileStatus, SpoolStatus, Status};
use super::tail::{self, Limits, Note, Step, Tracked};
use crate::transport::protocol::Resize;

const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
const STATUS_EVERY: Duration = Duration::from_secs(1);
const FALLBACK_POLL: Duration = Duration::from_millis(250);
/// Steps one file may take per round before the next file's turn.
const STEPS_PER_FILE: usize = 8;
/// Checkpoint entries of files no longer open are forgotten after this.
const FORGET_AFTER_SECS: i64 = 24 * 3600;

pub struct Reader {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    checkpoint: Checkpoint,
    spool: Spool,
    spool_peak: u64,
    spool_full: bool,
    files: Vec<Tracked>,
    buf: Vec<u8>,
    next_file: usize,
    /// The last round changed some file's state (more may be ready).
    progressed: bool,
    dirty: bool,
    last_checkpoint: Instant,
    last_status: Instant,
    last_scan: Option<Instant>,
    /// Set by the inotify callback: a file appeared or moved.
    rescan: Arc<AtomicBool>,
    /// Problems already logged, so a persistent one is not logged every second.
    warned: HashSet<String>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Reader {
    pub fn new(
        settings: Arc<Settings>,
        shared: Arc<Shared>,
        checkpoint: Checkpoint,
        spool: Spool,
    ) -> Reader {
        let rescan = Arc::new(AtomicBool::new(true));
        let watcher = watch_dirs(&settings, &shared, &rescan);
        Reader {
            spool_peak: spool.bytes(),
            settings,
            shared,
            checkpoint,
            spool,
            spool_full: false,
            files: Vec::new(),
            buf: Vec::new(),
            next_file: 0,
            progressed: false,
            dirty: false,
            last_checkpoint: Instant::now(),
            last_status: Instant::now() - STATUS_EVERY,
            last_scan: None,
            rescan,
            warned: HashSet::new(),
            _watcher: watcher,
        }
    }

    pub fn run(mut self, wake: Receiver<()>) -> Result<()> {
        let result = self.run_loop(&wake);
        // Whatever happened, leave the best checkpoint possible behind.
        let saved = self.save_checkpoint_and_trim();
        self.write_status();
        result.and(saved)
    }

    fn run_loop(&mut self, wake: &Receiver<()>) -> Result<()> {
        loop {
            if self.shared.is_shutdown() {
                return Ok(());
            }
            let now = Instant::now();
            let first_scan = self.last_scan.is_none();
            if self.rescan.swap(false, Ordering::AcqRel)
                || self
                    .last_scan
                    .is_none_or(|t| now >= t + self.settings.rescan_interval)
            {
                self.discover(first_scan);
                self.last_scan = Some(now);
            }
            let appended = self.read_round()?;
            if appended {
                let durable = self.spool.sync()?;
                self.shared.lock().durable_end = durable;
                self.shared.spooled.notify_one();
                self.spool_peak = self.spool_peak.max(self.spool.bytes());
            }
            if self.settings.once && !appended {
                self.check_once_done();
            }
            if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
                && (self.dirty || self.trimmable() || self.spool_full)
            {
                self.save_checkpoint_and_trim()?;
            }
            if self.last_status.elapsed() >= STATUS_EVERY {
                self.write_status();
            }
            if appended || self.progressed {
                continue;
            }
            let wait = self.next_wait();
            match wake.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Coalesce a burst of wake-ups into one round.
            while wake.try_recv().is_ok() {}
        }
    }

    fn limits(&self) -> Limits {
        let collector_max = self.shared.lock().max_line_bytes.max(1);
        Limits {
            batch_bytes: self.settings.batch_bytes,
            // A line that fills a batch alone is a long line: every record
            // stays within `batch_bytes` (plus a newline).
            max_line: collector_max.min(self.settings.batch_bytes - 1),
            linger: self.settings.linger,
            partial_timeout: self.settings.partial_line_timeout,
            long_lines: self.settings.long_lines,
            flush_now: self.settings.once,
        }
    }

    fn next_wait(&self) -> Duration {
        let limits = self.limits();
        let now = Instant::now();
        let mut wait = FALLBACK_POLL;
        for f in &self.files {
            if let Some(deadline) = f.deadline(&limits) {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
        }
        wait.max(Duration::from_millis(1))
    }

    fn warn_once(&mut self, key: String, message: impl FnOnce() -> String) {
        if self.warned.insert(key) {
            tracing::warn!("{}", message());
        }
    }

    // ------------------------------------------------------- discovery

    fn discover(&mut self, first_scan: bool) {
        let now = Instant::now();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let settings = Arc::clone(&self.settings);
        for (input_index, input) in settings.inputs.iter().enumerate() {
            for pattern in &input.paths {
                let paths = match glob::glob(pattern) {
                    Ok(paths) => paths,
                    Err(e) => {
                        self.warn_once(format!("glob {pattern}"), || {
                            format!("invalid glob {pattern:?}: {e}")
                        });
                        continue;
                    }
                };
                for entry in paths {
                    let path = match entry {
                        Ok(path) => path,
                        Err(e) => {
                            let where_ = e.path().display().to_string();
                            self.warn_once(format!("glob-error {where_}"), || {
                                format!(
                                    "cannot look into {where_}: {}; its files are not shipped",
                                    e.error()
                                )
                            });
                            continue;
                        }
                    };
                    if input.excludes(&path) {
                        continue;
                    }
                    let meta = match std::fs::metadata(&path) {
                        Ok(meta) => meta,
                        Err(_) => continue, // gone between the listing and now
                    };
                    if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
                        continue;
                    }
                    if let Some(f) = self
                        .files
                        .iter_mut()
                        .find(|f| f.dev == meta.dev() && f.ino == meta.ino())
                    {
                        if f.detached_since.take().is_some() {
                            tracing::info!(path = %path.display(), "file matches the globs again");
                        }
                        f.path = path;
                        continue;
                    }
                    self.open_file(input_index, path, first_scan, now, &mut seen);
                }
            }
        }
        for f in &mut self.files {
            if !seen.contains(&(f.dev, f.ino)) && f.detached_since.is_none() {
                tracing::info!(
                    path = %f.path.display(),
                    source_id = %f.source_id,
                    "file renamed away or deleted; reading it to its end"
                );
                f.detached_since = Some(now);
            }
        }
        self.close_finished(now);
    }

    fn open_file(
        &mut self,
        input_index: usize,
        path: PathBuf,
        first_scan: bool,
        now: Instant,
        seen: &mut HashSet<(u64, u64)>,
    ) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.warn_once(format!("open {}", path.display()), || {
                    format!(
                        "cannot open {}: {e}; retrying at every rescan",
                        path.display()
                    )
                });
                return;
            }
        };
        self.warned.remove(&format!("open {}", path.display()));
        // The descriptor's identity counts: the path may have been
        // replaced between the listing and the open.
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(_) => return,
        };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        seen.insert((dev, ino));
        if self.files.iter().any(|f| f.dev == dev && f.ino == ino) {
            return;
        }
        let input = &self.settings.inputs[input_index];
        let label = input
            .source
            .clone()
            .unwrap_or_else(|| path.display().to_string());
        let known = self
            .checkpoint
            .find(dev, ino)
            .map(|(id, e)| (id.clone(), e.clone()));
        let mut generation = 0;
        let resumed = match known {
            Some((id, entry)) => {
                match identity::check(entry.fingerprint.as_ref(), &file, size, entry.offset) {
                    Ok(Verdict::Same(grown)) => {
                        let fp = match grown.or(entry.fingerprint.clone()) {
                            Some(fp) => fp,
                            None => match identity::fingerprint(&file, size) {
                                Ok(fp) => fp,
                                Err(_) => return,
                            },
                        };
                        Some((id, fp, entry.offset, entry.stream, entry.generation))
                    }
                    Ok(verdict) => {
                        tracing::info!(
                            path = %path.display(),
                            ?verdict,
                            "same inode as a file shipped before, but not the same content: a new source"
                        );
                        // The old entry stays until the new stream has its
                        // id, so a crash in between still counts generations.
                        generation = entry.generation + 1;
                        None
                    }
                    Err(e) => {
                        self.warn_once(format!("read {}", path.display()), || {
                            format!("cannot read {}: {e}", path.display())
                        });
                        return;
                    }
                }
            }
            None => None,
        };
        let tracked = match resumed {
            Some((id, fp, offset, stream, generation)) => {
                tracing::info!(path = %path.display(), source_id = %id, offset, "resuming");
                let mut t = Tracked::new(
                    id,
                    label,
                    path,
                    input_index,
                    file,
                    dev,
                    ino,
                    fp,
                    offset,
                    stream,
                    now,
                );
                t.generation = generation;
                t.persisted = true;
                t
            }
            None => {
                let fp = match identity::fingerprint(&file, size) {
                    Ok(fp) => fp,
                    Err(_) => return,
                };
                let offset = if first_scan && input.start_at == StartAt::End {
                    tail::start_of_last_line(&file, size).unwrap_or(size)
                } else {
                    0
                };
                tracing::info!(path = %path.display(), offset, generation, "new file");
                // The id comes with the first complete line (`Tracked::poll`).
                let mut t = Tracked::new(
                    String::new(),
                    label,
                    path,
                    input_index,
                    file,
                    dev,
                    ino,
                    fp,
                    offset,
                    offset,
                    now,
                );
                t.generation = generation;
                t
            }
        };
        self.files.push(tracked);
        self.dirty = true;
    }

    /// Closes rotated-away or deleted files once read to their end and idle.
    fn close_finished(&mut self, now: Instant) {
        let close_after = self.settings.close_inactive;
        self.files.retain(|f| {
            let done = f.detached_since.is_some_and(|since| {
                f.is_drained() && now >= since.max(f.last_growth) + close_after
            });
            if done {
                tracing::info!(path = %f.path.display(), source_id = %f.source_id, offset = f.offset, "closing a finished rotated or deleted file");
            }
            !done
        });
    }

    // ------------------------------------------------------- reading

    /// Reads what is ready into the spool; true if anything was appended.
    fn read_round(&mut self) -> Result<bool> {
        let limits = self.limits();
        let now = Instant::now();
        let mut appended = false;
        let n = self.files.len();
        let was_full = self.spool_full;
        self.spool_full = false;
        self.progressed = false;
        for k in 0..n {
            let i = (self.next_file + k) % n;
            for _ in 0..STEPS_PER_FILE {
                if !self.files[i].persisted {
                    // Its identity must be on disk before its first record.
                    self.save_checkpoint_and_trim()?;
                }
                if !self.has_room(&limits) {
                    if !was_full {
                        tracing::warn!(
                            bytes = self.spool.bytes(),
                            limit = self.settings.spool_limit_bytes,
                            "spool full: reading pauses until the collector acknowledges"
                        );
                    }
                    self.spool_full = true;
                    self.next_file = i;
                    return Ok(appended);
                }
                let step = match self.files[i].poll(&limits, &mut self.buf, now) {
                    Ok(step) => step,
                    Err(e) => {
                        let path = self.files[i].path.display().to_string();
                        self.warn_once(format!("read {path}"), || format!("reading {path}: {e}"));
                        break;
                    }
                };
                match step {
                    Step::Idle => break,
                    Step::Again => self.progressed = true,
                    Step::Restarted { truncated } => {
                        let f = &self.files[i];
                        if truncated {
                            tracing::warn!(path = %f.path.display(), source_id = %f.source_id, "file truncated (copytruncate?): reading it again from the start as a new source");
                        } else {
                            tracing::warn!(path = %f.path.display(), source_id = %f.source_id, "file content replaced: reading it from the start as a new source");
                        }
                        self.progressed = true;
                        self.dirty = true;
                    }
                    Step::Skipped { at, len } => {
                        self.progressed = true;
                        self.shared.lock().counters.lines_skipped += 1;
                        tracing::warn!(path = %self.files[i].path.display(), offset = at, len, limit = limits.max_line, "skipping a line longer than {} bytes (long_lines = \"skip\")", limits.max_line);
                        self.dirty = true;
                    }
                    Step::Emit(chunk) => {
                        let f = &self.files[i];
                        let input = &self.settings.inputs[f.input];
                        let mut meta = Record {
                            source_id: f.source_id.clone(),
                            source: f.label.clone(),
                            host: input.host.clone(),
                            format: input.format.clone(),
                            first_offset: chunk.first_stream,
                            file_end: chunk.file_end,
                            lines: bytes::Bytes::new(),
                            resize: None,
                        };
                        let mut lines = &self.buf[chunk.range.clone()];
                        // Secrets out before anything is written: the
                        // spool holds the redacted lines, with the stream
                        // length they stand for.
                        let redacted = self
                            .shared
                            .rules
                            .current()
                            .and_then(|redactor| redactor.redact_batch(lines));
                        if let Some(out) = &redacted {
                            let secrets: u64 = out.counts.iter().map(|(_, n)| n).sum();
                            self.shared.lock().counters.secrets_redacted += secrets;
                            if !out.changed.is_empty() {
                                meta.resize = Some(Resize {
                                    source_len: (lines.len() + usize::from(chunk.newline)) as u64,
                                    changed: out.changed.clone(),
                                });
                            }
                            lines = &out.lines;
                        }
                        let parts: &[&[u8]] = if chunk.newline {
                            &[lines, b"\n"]
                        } else {
                            &[lines]
                        };
                        if let Err(e) = self.spool.append(&meta, parts) {
                            // Disk full or failing: nothing is lost (the file
                            // is re-read from here), so wait and retry.
                            tracing::error!(error = %format!("{e:#}"), "cannot write to the spool; reading pauses");
                            return Ok(appended);
                        }
                        let f = &mut self.files[i];
                        f.commit(&chunk);
                        appended = true;
                        self.dirty = true;
                        match chunk.note {
                            Some(Note::Truncated { len }) => {
                                self.shared.lock().counters.lines_truncated += 1;
                                tracing::warn!(path = %f.path.display(), offset = chunk.file_end - len, len, limit = limits.max_line, "cut a line longer than the collector's limit to its first {} bytes", limits.max_line);
                            }
                            Some(Note::PartialFlush) => {
                                self.shared.lock().counters.partial_lines_flushed += 1;
                                tracing::info!(path = %f.path.display(), offset = chunk.file_end, "shipped a last line that has no newline (waited {:?})", limits.partial_timeout);
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        self.next_file = self.next_file.wrapping_add(1);
        Ok(appended)
    }

    fn has_room(&self, limits: &Limits) -> bool {
        // The largest record this round can produce, with a segment header.
        let worst = limits.batch_bytes as u64 + 1 + 64 * 1024;
        self.spool.bytes() + worst <= self.settings.spool_limit_bytes
    }

    /// `--once`: everything present was read; tell the sender where it ends.
    fn check_once_done(&mut self) {
        if self.shared.lock().reader_done.is_some() || self.last_scan.is_none() {
            return;
        }
        if self.files.iter().all(Tracked::is_drained) {
            let end = self.spool.end();
            self.shared.lock().reader_done = Some(end);
            self.shared.spooled.notify_one();
        }
    }

    // ------------------------------------------------------- checkpoints

    fn trimmable(&self) -> bool {
        self.shared.lock().acked > self.spool.start() + 1024 * 1024
    }

    /// Spool fsync, then the checkpoint, then deletion of acked segments
    /// (in that order: see `checkpoint.rs`).
    fn save_checkpoint_and_trim(&mut self) -> Result<()> {
        let durable = self.spool.sync()?;
        let (acked, source_acked, max_line) = {
            let mut inner = self.shared.lock();
            inner.durable_end = durable;
            (
                inner.acked,
                inner.source_acked.clone(),
                inner.max_line_bytes,
            )
        };
        let now_unix = crate::time::now_nanos() / 1_000_000_000;
        let cp = &mut self.checkpoint;
        cp.spool_acked = acked;
        cp.max_line_bytes = Some(max_line);
        for f in self.files.iter().filter(|f| !f.source_id.is_empty()) {
            let entry = cp
                .files
                .entry(f.source_id.clone())
                .or_insert_with(|| FileEntry {
                    path: f.path.clone(),
                    dev: f.dev,
                    ino: f.ino,
                    fingerprint: None,
                    generation: f.generation,
                    offset: 0,
                    stream: 0,
                    acked: 0,
                    last_seen_unix: now_unix,
                });
            entry.generation = f.generation;
            entry.path = f.path.clone();
            entry.dev = f.dev;
            entry.ino = f.ino;
            entry.fingerprint = Some(f.fingerprint.clone());
            entry.offset = f.offset;
            entry.stream = f.stream;
            entry.last_seen_unix = now_unix;
        }
        // A source restarted under a new id (copytruncate) leaves its old
        // entry behind with the same inode: the new one replaces it.
        let current: HashMap<(u64, u64), &str> = self
            .files
            .iter()
            .filter(|f| !f.source_id.is_empty())
            .map(|f| ((f.dev, f.ino), f.source_id.as_str()))
            .collect();
        cp.files.retain(|id, e| match current.get(&(e.dev, e.ino)) {
            Some(live) => *live == id,
            None => now_unix - e.last_seen_unix < FORGET_AFTER_SECS,
        });
        for (id, e) in cp.files.iter_mut() {
            if let Some(&a) = source_acked.get(id) {
                e.acked = e.acked.max(a);
            }
        }
        cp.save(&self.settings.state_dir)?;
        for f in &mut self.files {
            f.persisted = true;
        }
        self.shared
            .lock()
            .source_acked
            .retain(|id, _| self.checkpoint.files.contains_key(id));
        let roll_when_drained = (1024 * 1024).min(self.settings.spool_limit_bytes / 8);
        self.spool.remove_acked(acked, roll_when_drained)?;
        // A roll moved the end past a new segment's header: publish it, or
        // the sender (and `--once`) would wait for a position never read.
        let durable = self.spool.sync()?;
        let moved = {
            let mut inner = self.shared.lock();
            let moved = inner.durable_end != durable;
            inner.durable_end = durable;
            moved
        };
        if moved {
            self.shared.spooled.notify_one();
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    // ------------------------------------------------------- status

    fn write_status(&mut self) {
        self.last_status = Instant::now();
        let (acked, durable, source_acked, connection, counters) = {
            let inner = self.shared.lock();
            (
                inner.acked,
                inner.durable_end,
                inner.source_acked.clone(),
                serde_json::to_value(&inner.connection).unwrap_or_default(),
                serde_json::to_value(&inner.counters).unwrap_or_default(),
            )
        };
        self.spool_peak = self.spool_peak.max(self.spool.bytes());
        let files = self
            .files
            .iter()
            .map(|f| {
                let acked = source_acked
                    .get(&f.source_id)
                    .copied()
                    .or_else(|| self.checkpoint.files.get(&f.source_id).map(|e| e.acked))
                    .unwrap_or(0);
                // Fresh: the tracked size is only as new as the last poll,
                // which a full spool suspends.
                let size = f.file.metadata().map_or(f.size, |m| m.len());
                FileStatus {
                    path: f.path.clone(),
                    source_id: f.source_id.clone(),
                    state: if f.detached_since.is_some() {
                        "rotated".into()
                    } else {
                        "active".into()
                    },
                    size,
                    offset: f.offset,
                    acked,
                    bytes_behind: size.saturating_sub(f.offset) + f.stream.saturating_sub(acked),
                }
            })
            .collect();
        let status = Status {
            pid: std::process::id(),
            agent_id: self.checkpoint.agent_id.clone(),
            updated_unix_ms: crate::time::now_nanos() / 1_000_000,
            connection,
            spool: SpoolStatus {
                bytes: self.spool.bytes(),
                peak_bytes: self.spool_peak,
                limit_bytes: self.settings.spool_limit_bytes,
                segments: self.spool.segment_count(),
                unacked_bytes: durable.saturating_sub(acked),
                full: self.spool_full,
            },
            files,
            counters,
        };
        if let Err(e) = status::write(&self.settings.state_dir, &status) {
            self.warn_once("status".into(), || {
                format!("cannot write the status file: {e:#}")
            });
        }
    }
}

/// inotify on the directories the globs read (the part before the first
/// wildcard). Any event wakes the reader; creations and renames also ask
/// for a rescan. Without inotify (limits, exotic filesystems) the periodic
/// poll still does everything, only later.
fn watch_dirs(
    settings: &Settings,
    shared: &Arc<Shared>,
    rescan: &Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let shared = Arc::clone(shared);
    let rescan = Arc::clone(rescan);
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_))
                    || matches!(
                        event.kind,
                        EventKind::Modify(notify::event::ModifyKind::Name(_))
                    )
                {
                    rescan.store(true, Ordering::Release);
                }
            }
            shared.wake_reader();
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; polling files every {FALLBACK_POLL:?}");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = settings
        .inputs
        .iter()
        .flat_map(|i| i.paths.iter())
        .map(|p| static_prefix_dir(p))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %dir.display(), error = %e, "not watching (polling instead)");
        }
    }
    Some(watcher)
}

/// The directory a glob's matches live in, up to its first wildcard.
fn static_prefix_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    let components: Vec<&str> = pattern.split('/').collect();
    for (i, c) in components.iter().enumerate() {
        if i + 1 == components.len() || c.contains(['*', '?', '[']) {
            break;
        }
        if c.is_empty() && i == 0 {
            dir.push("/");
        } else {
            dir.push(c);
        }
    }
    if dir.as_os_str().is_empty() {
        dir.push(".");
    }
    dir
}

pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

/// Applies what the spool knows to the checkpoint: after a crash the spool
/// may be ahead of the last checkpoint (it is fsynced first).
pub fn reconcile(
    checkpoint: &mut Checkpoint,
    spool_sources: &HashMap<String, super::spool::SourceEnd>,
) {
    for (id, end) in spool_sources {
        if let Some(entry) = checkpoint.files.get_mut(id) {
            if end.stream > entry.stream {
                entry.stream = end.stream;
                entry.offset = end.file;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_dir_is_the_part_before_the_wildcard() {
        assert_eq!(
            static_prefix_dir("/var/log/nginx/*.log"),
            PathBuf::from("/var/log/nginx")
        );
        assert_eq!(
            static_prefix_dir("/var/log/*/access.log"),
            PathBuf::from("/var/log")
        );
        assert_eq!(static_prefix_dir("/tmp/a.log"), PathBuf::from("/tmp"));
        assert_eq!(static_prefix_dir("a.log"), PathBuf::from("."));
    }

    #[test]
    fn the_spool_wins_over_an_older_checkpoint() {
        let mut cp = Checkpoint::default();
        cp.files.insert(
            "s".into(),
            FileEntry {
                path: "/x".into(),
                dev: 1,
                ino: 2,
                fingerprint: None,
                generation: 0,
                offset: 10,
                stream: 10,
                acked: 0,
                last_seen_unix: 0,
            },
        );
        let mut ends = HashMap::new();
        ends.insert(
            "s".to_string(),
            super::super::spool::SourceEnd {
                stream: 31,
                file: 30,
            },
        );
        reconcile(&mut cp, &ends);
        assert_eq!((cp.files["s"].offset, cp.files["s"].stream), (30, 31));
    }
}
