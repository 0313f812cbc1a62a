//! One tailed file: turning its bytes into batches of whole lines.
//!
//! The file is read through a descriptor kept open, so a rename (rotation)
//! or a delete does not cut it off: it is read to its end as the same
//! source. A file that shrinks below the offset already read was truncated
//! in place (copytruncate), and one whose first bytes changed is another
//! file: both restart at 0 as a new source (a new source id, because the
//! collector dedups on offsets and these offsets start over).
//!
//! Offsets: `offset` is the position in the file; `stream` the position in
//! the stream of lines sent for this source. They are equal until a line is
//! cut (the stream holds fewer bytes) or a partial line is shipped with an
//! added newline (one more). Both are checkpointed together.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::LongLines;
use super::identity::{self, Fingerprint, Verdict};
use super::resume::{record_span, Span};

/// Reading limits, per poll.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub batch_bytes: usize,
    /// Longest line shipped whole (below `batch_bytes`).
    pub max_line: usize,
    pub linger: Duration,
    pub partial_timeout: Duration,
    pub long_lines: LongLines,
    /// Ship what is there now: no linger, partial last lines included
    /// (`--once`, once the files are read to their end).
    pub flush_now: bool,
}

/// Why a chunk is special (for counters and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A line of `len` bytes cut to the limit.
    Truncated { len: u64 },
    /// A last line shipped without waiting longer for its newline.
    PartialFlush,
}

/// Lines to spool: `buf[range]`, plus a newline when `newline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range<usize>,
    pub newline: bool,
    pub first_stream: u64,
    pub file_end: u64,
    pub note: Option<Note>,
}

impl Chunk {
    pub fn stream_len(&self) -> u64 {
        (self.range.len() + usize::from(self.newline)) as u64
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the file changes or a deadline passes.
    Idle,
    /// Lines to spool; call [`Tracked::commit`] once they are appended.
    Emit(Chunk),
    /// A line of `len` bytes at `at` was dropped (long-line `skip` mode).
    Skipped { at: u64, len: u64 },
    /// The file was truncated or replaced: it is a new source now.
    Restarted { truncated: bool },
    /// State moved (e.g. scanning a long line); poll again.
    Again,
}

pub struct Tracked {
    /// Empty until the first line is complete (see `identity::stream_id`).
    pub source_id: String,
    /// Restarts (truncation, replacement) of this inode so far.
    pub generation: u32,
    /// `source` label sent with the lines.
    pub label: String,
    pub path: PathBuf,
    pub input: usize,
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub stream: u64,
    /// Size at the last poll.
    pub size: u64,
    pub last_growth: Instant,
    /// Since when a small amount of data waits for more (linger).
    pending_since: Option<Instant>,
    /// The file size at which only a partial line was left to read.
    stalled_at: Option<u64>,
    /// Scanning for the end of an over-long line that starts at `offset`:
    /// the next byte to look at.
    long_line: Option<u64>,
    /// Checkpointed since it became this source (see `checkpoint.rs`).
    pub persisted: bool,
    /// Since when the globs no longer yield this file (rotated or deleted).
    pub detached_since: Option<Instant>,
    /// Where stream and file offsets part (see `resume.rs`), from an
    /// anchor where tracking began; checkpointed.
    pub spans: Vec<Span>,
}

impl Tracked {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source_id: String,
        label: String,
        path: PathBuf,
        input: usize,
        file: File,
        dev: u64,
        ino: u64,
        fingerprint: Fingerprint,
        offset: u64,
        stream: u64,
        now: Instant,
    ) -> Tracked {
        Tracked {
            source_id,
            generation: 0,
            label,
            path,
            input,
            file,
            dev,
            ino,
            fingerprint,
            offset,
            stream,
            size: offset,
            last_growth: now,
            pending_since: None,
            stalled_at: None,
            long_line: None,
            persisted: false,
            detached_since: None,
            spans: vec![Span::anchor(stream, offset)],
        }
    }

    /// Read to its end, with nothing held back.
    pub fn is_drained(&self) -> bool {
        self.offset >= self.size && self.long_line.is_none()
    }

    /// Whether the file waits for a deadline (linger or partial line), and
    /// which.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if let Some(t) = self.pending_since {
            return Some(t + limits.linger);
        }
        let unnamed = self.source_id.is_empty() && self.size > self.offset;
        if self.stalled_at.is_some() || self.long_line.is_some() || unnamed {
            return Some(self.last_growth + limits.partial_timeout);
        }
        None
    }

    /// Looks at the file once; may fill `buf` with the lines of a chunk.
    pub fn poll(&mut self, limits: &Limits, buf: &mut Vec<u8>, now: Instant) -> io::Result<Step> {
        let size = self.file.metadata()?.len();
        if size != self.size {
            if size > self.size {
                self.last_growth = now;
            }
            self.size = size;
            match identity::check(Some(&self.fingerprint), &self.file, size, self.offset)? {
                Verdict::Same(Some(grown)) => self.fingerprint = grown,
                Verdict::Same(None) => {}
                Verdict::Truncated => return self.restart(size, true),
                Verdict::Replaced => return self.restart(size, false),
            }
        }
        if self.offset >= size {
            self.pending_since = None;
            self.stalled_at = None;
            return Ok(Step::Idle);
        }
        let timed_out = limits.flush_now || now >= self.last_growth + limits.partial_timeout;
        if self.source_id.is_empty() {
            let id = identity::stream_id(
                &self.file,
                size,
                self.dev,
                self.ino,
                self.generation,
                timed_out,
            )?;
            return Ok(match id {
                Some(id) => {
                    // The caller checkpoints the new id before its first record.
                    self.source_id = id;
                    self.persisted = false;
                    Step::Again
                }
                None => Step::Idle,
            });
        }
        if let Some(scan) = self.long_line {
            return self.scan_long_line(scan, size, timed_out, limits, buf);
        }
        if self.stalled_at == Some(size) {
            if !timed_out {
                return Ok(Step::Idle);
            }
            // Below max_line, or it would be a long line.
            let len = (size - self.offset) as usize;
            read_at(&self.file, buf, self.offset, len)?;
            return Ok(Step::Emit(Chunk {
                range: 0..len,
                newline: true,
                first_stream: self.stream,
                file_end: size,
                note: Some(Note::PartialFlush),
            }));
        }
        let available = size - self.offset;
        if available < limits.batch_bytes as u64 && !limits.flush_now {
            match self.pending_since {
                None => {
                    self.pending_since = Some(now);
                    if !limits.linger.is_zero() {
                        return Ok(Step::Idle);
                    }
                }
                Some(since) if now < since + limits.linger => return Ok(Step::Idle),
                Some(_) => {}
            }
        }
        self.pending_since = None;
        let want = available.min(limits.batch_bytes as u64) as usize;
        read_at(&self.file, buf, self.offset, want)?;
        let Some(last) = memchr::memrchr(b'\n', &buf[..want]) else {
            if want > limits.max_line {
                self.long_line = Some(self.offset + want as u64);
                return Ok(Step::Again);
            }
            self.stalled_at = Some(size);
            return Ok(if timed_out { Step::Again } else { Step::Idle });
        };
        match first_overlong_line(&buf[..=last], limits.max_line) {
            None => Ok(Step::Emit(Chunk {
                range: 0..last + 1,
                newline: false,
                first_stream: self.stream,
                file_end: self.offset + last as u64 + 1,
                note: None,
            })),
            Some((start, _)) if start > 0 => Ok(Step::Emit(Chunk {
                range: 0..start,
                newline: false,
                first_stream: self.stream,
                file_end: self.offset + start as u64,
                note: None,
            })),
            Some((_, end)) => self.finish_long_line(self.offset + end as u64, limits, buf),
        }
    }

    /// Continues looking for the newline ending the long line at `offset`.
    fn scan_long_line(
        &mut self,
        scan: u64,
        size: u64,
        timed_out: bool,
        limits: &Limits,
        buf: &mut Vec<u8>,
    ) -> io::Result<Step> {
        if scan >= size {
            // No newline yet: the line may still be being written.
            return if timed_out {
                self.finish_long_line(size, limits, buf)
            } else {
                Ok(Step::Idle)
            };
        }
        let want = (size - scan).min(limits.batch_bytes as u64) as usize;
        read_at(&self.file, buf, scan, want)?;
        match memchr::memchr(b'\n', &buf[..want]) {
            Some(i) => self.finish_long_line(scan + i as u64 + 1, limits, buf),
            None => {
                self.long_line = Some(scan + want as u64);
                Ok(Step::Again)
            }
        }
    }

    /// The long line at `offset` ends just before `end` (past its newline,
    /// or at the end of the file when it timed out without one).
    fn finish_long_line(
        &mut self,
        end: u64,
        limits: &Limits,
        buf: &mut Vec<u8>,
    ) -> io::Result<Step> {
        self.long_line = None;
        let len = end - self.offset;
        match limits.long_lines {
            LongLines::Skip => {
                let at = self.offset;
                record_span(
                    &mut self.spans,
                    Span {
                        stream: self.stream,
                        file: at,
                        file_len: len,
                        stream_len: 0,
                    },
                );
                self.offset = end;
                Ok(Step::Skipped { at, len })
            }
            LongLines::Truncate => {
                read_at(&self.file, buf, self.offset, limits.max_line)?;
                Ok(Step::Emit(Chunk {
                    range: 0..limits.max_line,
                    newline: true,
                    first_stream: self.stream,
                    file_end: end,
                    note: Some(Note::Truncated { len }),
                }))
            }
        }
    }

    fn restart(&mut self, size: u64, truncated: bool) -> io::Result<Step> {
        self.source_id = String::new();
        self.generation += 1;
        self.fingerprint = identity::fingerprint(&self.file, size)?;
        self.offset = 0;
        self.stream = 0;
        self.pending_since = None;
        self.stalled_at = None;
        self.long_line = None;
        self.persisted = false;
        self.spans = vec![Span::anchor(0, 0)];
        Ok(Step::Restarted { truncated })
    }

    /// Records that `chunk` is in the spool.
    pub fn commit(&mut self, chunk: &Chunk) {
        if chunk.newline {
            // A line shipped other than the file has it (cut, or partial).
            record_span(
                &mut self.spans,
                Span {
                    stream: chunk.first_stream,
                    file: self.offset,
                    file_len: chunk.file_end - self.offset,
                    stream_len: chunk.stream_len(),
                },
            );
        }
        self.offset = chunk.file_end;
        self.stream = chunk.first_stream + chunk.stream_len();
        self.stalled_at = None;
    }
}

fn read_at(file: &File, buf: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    file.read_exact_at(&mut buf[..len], offset)
}

/// Start and end (past its newline) of the first line of `buf` longer than
/// `max_line` bytes, measured as the collector does (without the newline).
pub fn first_overlong_line(buf: &[u8], max_line: usize) -> Option<(usize, usize)> {
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', buf) {
        if newline - start > max_line {
            return Some((start, newline + 1));
        }
        start = newline + 1;
    }
    None
}

/// Where to start in a file first seen with `start_at = end`: after its last
/// newline (a partial last line is shipped whole once it ends).
pub fn start_of_last_line(file: &File, size: u64) -> io::Result<u64> {
    let from = size.saturating_sub(64 * 1024);
    let mut buf = vec![0u8; (size - from) as usize];
    file.read_exact_at(&mut buf, from)?;
    Ok(match memchr::memrchr(b'\n', &buf) {
        Some(i) => from + i as u64 + 1,
        None => size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: Limits = Limits {
        batch_bytes: 64,
        max_line: 16,
        linger: Duration::ZERO,
        partial_timeout: Duration::from_secs(3600),
        long_lines: LongLines::Truncate,
        flush_now: false,
    };

    fn tracked(path: &std::path::Path) -> Tracked {
        let file = File::open(path).expect("open");
        let size = file.metadata().expect("meta").len();
        let fp = identity::fingerprint(&file, size).expect("fp");
        Tracked::new(
            "s".into(),
            "l".into(),
            path.into(),
            0,
            file,
            1,
            2,
            fp,
            0,
            0,
            Instant::now(),
        )
    }

    /// Polls until idle, returning what was shipped as text.
    fn drain(t: &mut Tracked, limits: &Limits) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for _ in 0..1000 {
            match t.poll(limits, &mut buf, Instant::now()).expect("poll") {
                Step::Idle => return out,
                Step::Emit(chunk) => {
                    let mut text = String::from_utf8_lossy(&buf[chunk.range.clone()]).into_owned();
                    if chunk.newline {
                        text.push('\n');
                    }
                    out.push(text);
                    t.commit(&chunk);
                }
                Step::Skipped { .. } | Step::Again | Step::Restarted { .. } => {}
            }
        }
        panic!("never idle");
    }

    fn append(path: &std::path::Path, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(text).expect("append");
    }

    #[test]
    fn whole_lines_only_and_the_rest_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntwo\nthr").expect("write");
        let mut t = tracked(&path);
        assert_eq!(drain(&mut t, &LIMITS), vec!["one\ntwo\n"]);
        append(&path, b"ee\n");
        assert_eq!(drain(&mut t, &LIMITS), vec!["three\n"]);
        assert_eq!((t.offset, t.stream), (14, 14));
    }

    #[test]
    fn batches_split_on_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"aaaaaaaaa\n".repeat(10)).expect("write");
        let mut t = tracked(&path);
        let chunks = drain(&mut t, &LIMITS);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= 64 && c.ends_with('\n')));
        assert_eq!(chunks.concat().len(), 100);
    }

    #[test]
    fn partial_last_line_is_flushed_after_the_timeout_with_a_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\nno newline").expect("write");
        let mut t = tracked(&path);
        assert_eq!(drain(&mut t, &LIMITS), vec!["one\n"]);
        let limits = Limits {
            partial_timeout: Duration::ZERO,
            ..LIMITS
        };
        assert_eq!(drain(&mut t, &limits), vec!["no newline\n"]);
        // The stream holds one byte more than the file: the added newline.
        assert_eq!((t.offset, t.stream), (14, 15));
        append(&path, b"next\n");
        assert_eq!(drain(&mut t, &limits), vec!["next\n"]);
        assert_eq!((t.offset, t.stream), (19, 20));
    }

    #[test]
    fn long_lines_are_cut_or_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut content = b"short\n".to_vec();
        content.extend_from_slice(&[b'x'; 300]);
        content.extend_from_slice(b"\nafter\n");
        std::fs::write(&path, &content).expect("write");
        let mut t = tracked(&path);
        let cut = drain(&mut t, &LIMITS);
        assert_eq!(
            cut,
            vec![
                "short\n".to_string(),
                format!("{}\n", "x".repeat(16)),
                "after\n".into()
            ]
        );
        assert_eq!(t.offset, content.len() as u64);
        assert_eq!(t.stream, 6 + 17 + 6);

        let mut t = tracked(&path);
        let skip = Limits {
            long_lines: LongLines::Skip,
            ..LIMITS
        };
        assert_eq!(drain(&mut t, &skip), vec!["short\n", "after\n"]);
        assert_eq!((t.offset, t.stream), (content.len() as u64, 12));
    }

    /// What was shipped, rebuilt from the file with the spans the reading
    /// recorded (as after a collector lost it): the same stream bytes.
    #[test]
    fn the_spans_rebuild_the_stream_from_the_file() {
        use crate::agent::resume::{next_record, plan, Gap};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut content = b"short\n".to_vec();
        content.extend_from_slice(&[b'x'; 300]);
        content.extend_from_slice(b"\nafter\npartial");
        std::fs::write(&path, &content).expect("write");
        let mut t = tracked(&path);
        let limits = Limits {
            partial_timeout: Duration::ZERO,
            ..LIMITS
        };
        let mut shipped = drain(&mut t, &limits).concat();
        append(&path, b" rest\nlast\n");
        shipped.push_str(&drain(&mut t, &limits).concat());
        assert_eq!(t.stream, shipped.len() as u64);
        for from in [0u64, 6, 23, 29] {
            let (parts, end) = plan(&t.spans, from, t.stream).expect("mapped");
            assert_eq!(end, t.offset);
            let mut gap = Gap {
                source_id: "s".into(),
                label: "l".into(),
                host: "h".into(),
                format: "auto".into(),
                path: path.clone(),
                file: std::sync::Arc::new(File::open(&path).expect("open")),
                parts: parts.into(),
                to: t.stream,
            };
            let mut rebuilt = String::new();
            while let Some(record) = next_record(&mut gap, 64, None) {
                rebuilt.push_str(&String::from_utf8_lossy(&record.expect("read").lines));
            }
            assert_eq!(rebuilt, shipped[from as usize..], "from {from}");
        }
    }

    #[test]
    fn copytruncate_restarts_as_a_new_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"line one\nline two\n").expect("write");
        let mut t = tracked(&path);
        drain(&mut t, &LIMITS);
        let old_id = t.source_id.clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&path, b"new\n");
        let mut buf = Vec::new();
        assert_eq!(
            t.poll(&LIMITS, &mut buf, Instant::now()).expect("poll"),
            Step::Restarted { truncated: true }
        );
        assert_ne!(t.source_id, old_id);
        assert_eq!(drain(&mut t, &LIMITS), vec!["new\n"]);
    }

    #[test]
    fn a_rewritten_file_past_the_offset_is_a_new_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"aaaa\n").expect("write");
        let mut t = tracked(&path);
        drain(&mut t, &LIMITS);
        // Truncated and refilled beyond our offset before we looked.
        std::fs::write(&path, b"bbbbbbbb\n").expect("rewrite");
        let mut buf = Vec::new();
        assert_eq!(
            t.poll(&LIMITS, &mut buf, Instant::now()).expect("poll"),
            Step::Restarted { truncated: false }
        );
        assert_eq!(drain(&mut t, &LIMITS), vec!["bbbbbbbb\n"]);
    }

    #[test]
    fn a_renamed_file_is_read_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"before\n").expect("write");
        let mut t = tracked(&path);
        drain(&mut t, &LIMITS);
        let rotated = dir.path().join("a.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        append(&rotated, b"after rename\n");
        std::fs::write(&path, b"new file\n").expect("new file");
        assert_eq!(drain(&mut t, &LIMITS), vec!["after rename\n"]);
    }

    #[test]
    fn start_at_end_skips_to_after_the_last_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"old\nold\npart").expect("write");
        let f = File::open(&path).expect("open");
        assert_eq!(start_of_last_line(&f, 12).expect("scan"), 8);
    }
}
