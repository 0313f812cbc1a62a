//! The reading thread: finds files, reads their new lines into the spool,
//! writes checkpoints and the status file, deletes acknowledged spool
//! segments.
//!
//! It runs on a plain thread because everything it does is blocking file
//! I/O (reads, appends, fsyncs). It wakes on inotify events in the watched
//! directories, on acks (spool space, checkpoints), and at least every
//! 250 ms as a fallback for what inotify does not see (NFS, a directory
//! created later, a file renamed out of a watched directory).

use std::collections::{BTreeMap, HashMap, HashSet};
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
use super::resume::{self, record_span, Gap, Span};
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
            if let Some(request) = self.shared.take_resume() {
                let gaps = self.plan_resume(&request.collector, &request.resume);
                let _ = request.reply.send(gaps);
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
        if first_scan {
            self.follow_rotated_while_stopped(&mut seen, now);
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

    /// Files the checkpoint was still reading that no glob matches now:
    /// renamed by a rotation while the agent was stopped (`access.log`
    /// became `access.log.1`, and the globs name only the live file). Each
    /// is looked for by its inode beside its last path and read to its end
    /// as the same source, as a rotation seen while running is; without
    /// this, the lines written after the last checkpoint and before the
    /// rotation were never shipped, and nothing said so.
    fn follow_rotated_while_stopped(&mut self, seen: &mut HashSet<(u64, u64)>, now: Instant) {
        let unfinished: Vec<FileEntry> = self
            .checkpoint
            .files
            .values()
            .filter(|e| !seen.contains(&(e.dev, e.ino)))
            .cloned()
            .collect();
        for entry in unfinished {
            let Some(path) = entry
                .path
                .parent()
                .and_then(|dir| same_inode_in(dir, &entry))
            else {
                continue; // deleted or compressed since: nothing to read
            };
            let Some(input_index) = self.input_of(&entry.path) else {
                continue; // no longer configured
            };
            let opened = File::open(&path).and_then(|file| {
                let size = file.metadata()?.len();
                let same = identity::check(entry.fingerprint.as_ref(), &file, size, entry.offset)?;
                Ok(matches!(same, Verdict::Same(_)) && size > entry.offset)
            });
            if !opened.unwrap_or(false) {
                continue; // read to its end before, or another file now
            }
            tracing::warn!(
                path = %path.display(),
                was = %entry.path.display(),
                offset = entry.offset,
                "rotated while the agent was stopped: reading it to its end"
            );
            self.open_file(input_index, path, false, now, seen);
            if let Some(f) = self
                .files
                .iter_mut()
                .find(|f| f.dev == entry.dev && f.ino == entry.ino)
            {
                f.detached_since = Some(now);
            }
        }
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
                        Some((id, fp, entry))
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
        // Where the file starts: its checkpoint entry, or a new stream.
        let (id, fp, offset, stream, entry) = match resumed {
            Some((id, fp, entry)) => {
                tracing::info!(path = %path.display(), source_id = %id, offset = entry.offset, "resuming");
                (id, fp, entry.offset, entry.stream, Some(entry))
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
                (String::new(), fp, offset, offset, None)
            }
        };
        let mut tracked = Tracked::new(
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
        match entry {
            Some(entry) => {
                // A file found under another name (rotated while the agent
                // was stopped, or a glob that now matches the rotated
                // names) keeps the source label its lines were sent with.
                if let (None, Some(label)) = (&input.source, &entry.label) {
                    tracked.label.clone_from(label);
                }
                tracked.generation = entry.generation;
                // An older agent's state has none: mapped from here on.
                if !entry.spans.is_empty() {
                    tracked.spans = entry.spans;
                }
                tracked.persisted = true;
            }
            None => tracked.generation = generation,
        }
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

    // ------------------------------------------------------- resume

    /// The ranges a collector's store acked and no longer holds, per
    /// source this agent knows (`resume.rs`); what the files cannot give
    /// again is logged and counted as lost.
    fn plan_resume(
        &mut self,
        collector: &str,
        resume: &crate::transport::client::Resume,
    ) -> Vec<Gap> {
        let store = resume.store.as_str();
        let in_memory: HashMap<String, u64> = self
            .shared
            .lock()
            .store_acked
            .iter()
            .filter_map(|(id, by)| by.get(store).map(|&acked| (id.clone(), acked)))
            .collect();
        let mut ids: Vec<&String> = self
            .checkpoint
            .files
            .keys()
            .chain(in_memory.keys())
            .collect();
        ids.sort();
        ids.dedup();
        let mut wanted = Vec::new();
        for id in ids {
            let stored = self
                .checkpoint
                .files
                .get(id)
                .and_then(|e| e.acked_by.get(store))
                .copied();
            let acked = stored.max(in_memory.get(id).copied()).unwrap_or(0);
            let held = resume.sources.get(id).copied().unwrap_or(0);
            if acked > held {
                wanted.push((id.clone(), held, acked));
            }
        }
        let mut gaps = Vec::new();
        for (id, from, to) in wanted {
            match self.gap(&id, from, to) {
                Ok(gap) => {
                    tracing::warn!(
                        %collector,
                        store,
                        source_id = %id,
                        path = %gap.path.display(),
                        from,
                        to,
                        "the collector holds this file only up to byte {from} but had acknowledged \
                         it up to {to} (restored from a backup?): sending {} bytes again from the file",
                        to - from
                    );
                    gaps.push(gap);
                }
                Err((path, why)) => {
                    {
                        let mut inner = self.shared.lock();
                        inner.counters.resend_lost_bytes += to - from;
                        inner.counters.resend_lost_ranges += 1;
                    }
                    tracing::warn!(
                        %collector,
                        store,
                        source_id = %id,
                        path = %path,
                        from,
                        to,
                        "LOST: bytes {from}..{to} of {path}: the collector had acknowledged them \
                         and no longer holds them (restored from a backup?), and {why}"
                    );
                }
            }
        }
        gaps
    }

    /// How to read stream `[from, to)` of source `id` again: from the
    /// tracked file, or the checkpoint's (found by device and inode at its
    /// last path or beside it: a rotation renames). `Err`: the path (as
    /// best known) and why not.
    fn gap(&self, id: &str, from: u64, to: u64) -> Result<Gap, (String, String)> {
        let tracked = self.files.iter().find(|f| f.source_id == id);
        let entry = self.checkpoint.files.get(id);
        let (path, file, spans, fingerprint, read_to, label, input) = match (tracked, entry) {
            (Some(f), _) => {
                let file = f.file.try_clone().map_err(|e| {
                    (
                        f.path.display().to_string(),
                        format!("it cannot be read: {e}"),
                    )
                })?;
                let label = f.label.clone();
                (
                    f.path.clone(),
                    file,
                    f.spans.clone(),
                    Some(f.fingerprint.clone()),
                    f.offset,
                    label,
                    Some(f.input),
                )
            }
            (None, Some(e)) => {
                let shown = e.path.display().to_string();
                let (path, file) = find_file(&e.path, e.dev, e.ino).ok_or_else(|| {
                    (
                        shown.clone(),
                        "the file is gone (rotated away and deleted?)".to_string(),
                    )
                })?;
                let spans = if e.spans.is_empty() {
                    vec![Span::anchor(e.stream, e.offset)]
                } else {
                    e.spans.clone()
                };
                let input = self.input_of(&path).or_else(|| self.input_of(&e.path));
                let label = e.label.clone().unwrap_or_else(|| shown.clone());
                (
                    path,
                    file,
                    spans,
                    e.fingerprint.clone(),
                    e.offset,
                    label,
                    input,
                )
            }
            (None, None) => {
                return Err((
                    format!("source {id}"),
                    "this agent no longer knows the file".into(),
                ))
            }
        };
        let shown = path.display().to_string();
        let Some(input) = input else {
            return Err((
                shown,
                "no input of this agent matches the file any more".into(),
            ));
        };
        let (parts, end) = resume::plan(&spans, from, to).ok_or_else(|| {
            (
                shown.clone(),
                "this agent no longer knows where those bytes are in the file (too many \
                 cut or partial lines since, or its state was lost); `nightowl agent rewind` \
                 reads every file again"
                    .to_string(),
            )
        })?;
        let size = file
            .metadata()
            .map_err(|e| (shown.clone(), format!("it cannot be read: {e}")))?
            .len();
        match identity::check(fingerprint.as_ref(), &file, size, read_to) {
            Ok(Verdict::Same(_)) if size >= end => {}
            Ok(Verdict::Same(_)) => {
                return Err((
                    shown,
                    format!("the file has {size} bytes, not the {end} it had"),
                ))
            }
            Ok(_) => return Err((shown, "the file was truncated or replaced".into())),
            Err(e) => return Err((shown, format!("it cannot be read: {e}"))),
        }
        let input = &self.settings.inputs[input];
        Ok(Gap {
            source_id: id.to_string(),
            label,
            host: input.host.clone(),
            format: input.format.clone(),
            path,
            file: Arc::new(file),
            parts: parts.into(),
            to,
        })
    }

    /// The input whose globs match `path` (and do not exclude it).
    fn input_of(&self, path: &Path) -> Option<usize> {
        self.settings.inputs.iter().position(|input| {
            !input.excludes(path)
                && input
                    .paths
                    .iter()
                    .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_path(path)))
        })
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
        let (acked, source_acked, store_acked, max_line) = {
            let mut inner = self.shared.lock();
            inner.durable_end = durable;
            (
                inner.acked,
                inner.source_acked.clone(),
                inner.store_acked.clone(),
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
                    label: None,
                    dev: f.dev,
                    ino: f.ino,
                    fingerprint: None,
                    generation: f.generation,
                    offset: 0,
                    stream: 0,
                    acked: 0,
                    last_seen_unix: now_unix,
                    acked_by: BTreeMap::new(),
                    spans: Vec::new(),
                });
            entry.generation = f.generation;
            entry.path = f.path.clone();
            entry.dev = f.dev;
            entry.ino = f.ino;
            entry.fingerprint = Some(f.fingerprint.clone());
            entry.offset = f.offset;
            entry.stream = f.stream;
            entry.last_seen_unix = now_unix;
            entry.label = Some(f.label.clone());
            entry.spans.clone_from(&f.spans);
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
            for (store, &a) in store_acked.get(id).into_iter().flatten() {
                e.note_acked_by(store, a);
            }
        }
        cp.save(&self.settings.state_dir)?;
        for f in &mut self.files {
            f.persisted = true;
        }
        {
            let mut inner = self.shared.lock();
            let files = &self.checkpoint.files;
            inner.source_acked.retain(|id, _| files.contains_key(id));
            inner.store_acked.retain(|id, _| files.contains_key(id));
        }
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

/// The file in `dir` with `entry`'s device and inode, if any.
fn same_inode_in(dir: &Path, entry: &FileEntry) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|d| d.path())
        .find(|p| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && m.dev() == entry.dev && m.ino() == entry.ino)
        })
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

/// The file with device `dev` and inode `ino`: at `path`, or renamed
/// within its directory (a rotation). Checked on the open descriptor.
fn find_file(path: &Path, dev: u64, ino: u64) -> Option<(PathBuf, File)> {
    let open = |p: &Path| {
        let file = File::open(p).ok()?;
        let meta = file.metadata().ok()?;
        (meta.dev() == dev && meta.ino() == ino).then_some(file)
    };
    if let Some(file) = open(path) {
        return Some((path.to_path_buf(), file));
    }
    use std::os::unix::fs::DirEntryExt;
    let dir = path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| entry.ino() == ino)
        .find_map(|entry| {
            let p = entry.path();
            open(&p).map(|file| (p, file))
        })
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
                // A changed line among the records checkpointed too late
                // moved the offsets apart: pin them here again, and
                // nothing before is rebuilt from the file (`resume.rs`).
                if end.stream - entry.stream != end.file.saturating_sub(entry.offset) {
                    record_span(&mut entry.spans, Span::anchor(end.stream, end.file));
                }
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
                label: None,
                acked_by: BTreeMap::new(),
                spans: Vec::new(),
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
        // A line changed in what the checkpoint missed: the offsets are
        // pinned there, and nothing before is rebuilt from the file.
        assert_eq!(cp.files["s"].spans, vec![Span::anchor(31, 30)]);
        assert!(resume::plan(&cp.files["s"].spans, 10, 40).is_none());
        assert!(resume::plan(&cp.files["s"].spans, 31, 40).is_some());
    }
}
