//! Sending again what a collector acknowledged and then lost.
//!
//! A collector restored from a backup (or started on an older copy of its
//! data dir) holds each source only up to the backup's cut, while the
//! agent was told more was durable. With `CAP_RESUME` the collector names
//! its store and, per source of this agent, the offset it holds. For every
//! source that store had acked further (`FileEntry::acked_by`), the agent
//! reads the missing stream bytes again from the file, before anything of
//! its spool, so the collector gets them in order; what the spool then
//! resends of the same source is a duplicate it drops. Bytes the file no
//! longer has (rotated away and deleted, truncated, replaced) are said to
//! be lost, loudly, and counted: never skipped in silence.
//!
//! Stream offsets (what the collector knows) equal file offsets plus a
//! constant until the reader changes a line: a cut long line, a skipped
//! one, a partial last line shipped with an added newline. Each such line
//! is a [`Span`]; between spans the two offsets move together. The spans
//! of a file (the last [`MAX_SPANS`], plus an anchor where its tracking
//! began) are enough to rebuild any stream range after the oldest one:
//! plain lines read as they are, changed lines changed the same way.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::spool::Record;
use crate::redact::Redactor;
use crate::transport::protocol::Resize;

/// Spans kept per file. Changed lines are rare (cut, skipped, partial);
/// a range starting before the oldest one kept cannot be rebuilt.
pub const MAX_SPANS: usize = 32;

/// A stretch where stream and file offsets stop moving together: the
/// line at file `file` (`file_len` bytes) went into the stream at
/// `stream` as `stream_len` bytes: nothing (skipped), or its first
/// `stream_len - 1` bytes and a newline (cut, or a partial line shipped).
/// An anchor (both lengths 0) only pins the two offsets together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub stream: u64,
    pub file: u64,
    #[serde(default)]
    pub file_len: u64,
    #[serde(default)]
    pub stream_len: u64,
}

impl Span {
    pub fn anchor(stream: u64, file: u64) -> Span {
        Span {
            stream,
            file,
            file_len: 0,
            stream_len: 0,
        }
    }

    fn stream_end(&self) -> u64 {
        self.stream + self.stream_len
    }

    fn file_end(&self) -> u64 {
        self.file + self.file_len
    }
}

/// Appends a span, forgetting the oldest beyond [`MAX_SPANS`].
pub fn record_span(spans: &mut Vec<Span>, span: Span) {
    spans.push(span);
    if spans.len() > MAX_SPANS {
        spans.remove(0);
    }
}

/// The most read at once for one line (any line limit is far below).
const MAX_READ: u64 = 64 << 20;

/// One stretch of a resend, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Whole lines exactly as the file has them.
    Lines { file: u64, stream: u64, len: u64 },
    /// One changed line: its first `take` bytes and a newline.
    Line { file: u64, stream: u64, take: u64 },
}

impl Part {
    fn stream(&self) -> u64 {
        match *self {
            Part::Lines { stream, .. } | Part::Line { stream, .. } => stream,
        }
    }
}

/// How to rebuild stream `[from, to)` from the file: the parts, and the
/// file offset the last one ends at (the file must still be that long).
/// `None` when the file position of `from` is unknown: below the oldest
/// span kept, or the spans do not add up (state lost in a crash).
pub fn plan(spans: &[Span], from: u64, to: u64) -> Option<(Vec<Part>, u64)> {
    let base = spans.iter().rposition(|s| s.stream_end() <= from)?;
    let (mut stream, mut file) = (
        from,
        spans[base].file_end() + (from - spans[base].stream_end()),
    );
    let mut parts = Vec::new();
    for span in &spans[base + 1..] {
        if span.stream >= to {
            break;
        }
        if span.stream < stream {
            // `from` inside a changed line: the whole line again (the
            // collector trims what it has).
            (stream, file) = (span.stream, span.file);
        }
        let len = span.stream - stream;
        if span.file.checked_sub(file) != Some(len) {
            return None;
        }
        if len > 0 {
            parts.push(Part::Lines { file, stream, len });
        }
        if span.stream_len > 0 {
            parts.push(Part::Line {
                file: span.file,
                stream: span.stream,
                take: span.stream_len - 1,
            });
        }
        (stream, file) = (span.stream_end(), span.file_end());
    }
    if stream < to {
        parts.push(Part::Lines {
            file,
            stream,
            len: to - stream,
        });
        file += to - stream;
    }
    Some((parts, file))
}

/// A range to send again from one file, planned by the reader thread.
#[derive(Debug)]
pub struct Gap {
    pub source_id: String,
    pub label: String,
    pub host: String,
    pub format: String,
    pub path: PathBuf,
    /// A descriptor of its own: the reader may close its one meanwhile.
    pub file: Arc<File>,
    pub parts: VecDeque<Part>,
    /// Where the range ends, in the stream (for a loss report).
    pub to: u64,
}

/// Reads the next record of `gap` (blocking file reads): at most about
/// `batch_bytes` of whole lines, redacted as the reader would. `None`
/// once the gap is done; an error (the file no longer has the bytes as
/// they were shipped) leaves the part unread, so [`position`] says from
/// where on the gap is lost.
pub fn next_record(
    gap: &mut Gap,
    batch_bytes: usize,
    redactor: Option<&Redactor>,
) -> Option<Result<Record, String>> {
    let part = gap.parts.pop_front()?;
    let read = read_part(gap, part, batch_bytes);
    if read.is_err() {
        gap.parts.push_front(part);
    }
    let (lines, first_offset, file_end) = match read {
        Ok(read) => read,
        Err(e) => return Some(Err(e)),
    };
    let source_len = lines.len() as u64;
    let (lines, resize) = match redactor.and_then(|r| r.redact_batch(&lines)) {
        Some(out) if !out.changed.is_empty() => (
            out.lines,
            Some(Resize {
                source_len,
                changed: out.changed,
            }),
        ),
        _ => (Bytes::from(lines), None),
    };
    Some(Ok(Record {
        source_id: gap.source_id.clone(),
        source: gap.label.clone(),
        host: gap.host.clone(),
        format: gap.format.clone(),
        first_offset,
        file_end,
        lines,
        resize,
    }))
}

/// The stream bytes of (the start of) `part`: lines, their first stream
/// offset and the file offset they end at. What is left of a long part
/// goes back to the front of the gap.
fn read_part(gap: &mut Gap, part: Part, batch_bytes: usize) -> Result<(Vec<u8>, u64, u64), String> {
    match part {
        Part::Line { file, stream, take } => {
            if take > MAX_READ {
                return Err(format!(
                    "a changed line of {take} bytes at {file} (state damaged?)"
                ));
            }
            let mut lines = vec![0; take as usize];
            gap.file
                .read_exact_at(&mut lines, file)
                .map_err(|e| format!("reading {take} bytes at {file}: {e}"))?;
            lines.push(b'\n');
            Ok((lines, stream, file + take))
        }
        Part::Lines { file, stream, len } => {
            let mut want = (batch_bytes.max(1) as u64).min(len);
            let mut lines = Vec::new();
            let used = loop {
                lines.resize(want as usize, 0);
                gap.file
                    .read_exact_at(&mut lines, file)
                    .map_err(|e| format!("reading {want} bytes at {file}: {e}"))?;
                match memchr::memrchr(b'\n', &lines) {
                    Some(i) => break i as u64 + 1,
                    // A line longer than a batch (the batch size changed):
                    // read on to its end.
                    None if want < len && want < MAX_READ => want = (want * 2).min(len),
                    None => {
                        return Err(format!(
                            "the bytes at {file}..{} end in the middle of a line: the file \
                             is not what was shipped",
                            file + len
                        ))
                    }
                }
            };
            lines.truncate(used as usize);
            if used < len {
                gap.parts.push_front(Part::Lines {
                    file: file + used,
                    stream: stream + used,
                    len: len - used,
                });
            }
            Ok((lines, stream, file + used))
        }
    }
}

/// The stream offset the next part of `gap` starts at (for a loss report).
pub fn position(gap: &Gap) -> u64 {
    gap.parts.front().map_or(gap.to, Part::stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(stream: u64, file: u64, file_len: u64, stream_len: u64) -> Span {
        Span {
            stream,
            file,
            file_len,
            stream_len,
        }
    }

    #[test]
    fn plain_files_map_one_to_one_from_their_anchor() {
        let spans = [Span::anchor(0, 0)];
        assert_eq!(
            plan(&spans, 100, 250),
            Some((
                vec![Part::Lines {
                    file: 100,
                    stream: 100,
                    len: 150
                }],
                250
            ))
        );
        // Started at the end of a file: offsets equal from there on.
        let spans = [Span::anchor(5000, 5000)];
        assert_eq!(plan(&spans, 4000, 6000), None);
        assert!(plan(&spans, 5000, 6000).is_some());
    }

    /// A cut line (300 file bytes, 17 stream bytes), a skipped one (200
    /// file bytes, none in the stream) and a partial line shipped with a
    /// newline (10 file bytes, 11 stream bytes) shift the file offsets;
    /// each is rebuilt the way it was shipped.
    #[test]
    fn changed_lines_are_rebuilt_as_they_were_shipped() {
        let spans = [
            Span::anchor(0, 0),
            span(100, 100, 300, 17),
            span(217, 500, 200, 0),
            span(300, 783, 10, 11),
        ];
        let (parts, end) = plan(&spans, 50, 400).expect("mapped");
        assert_eq!(
            parts,
            vec![
                Part::Lines {
                    file: 50,
                    stream: 50,
                    len: 50
                },
                Part::Line {
                    file: 100,
                    stream: 100,
                    take: 16
                },
                Part::Lines {
                    file: 400,
                    stream: 117,
                    len: 100
                },
                Part::Lines {
                    file: 700,
                    stream: 217,
                    len: 83
                },
                Part::Line {
                    file: 783,
                    stream: 300,
                    take: 10
                },
                Part::Lines {
                    file: 793,
                    stream: 311,
                    len: 89
                },
            ]
        );
        assert_eq!(end, 882);
        // Starting after the changes: one stretch, shifted.
        assert_eq!(
            plan(&spans, 311, 400),
            Some((
                vec![Part::Lines {
                    file: 793,
                    stream: 311,
                    len: 89
                }],
                882
            ))
        );
        // Spans that do not add up (lost in a crash) are not guessed over.
        let broken = [Span::anchor(0, 0), span(100, 90, 10, 11)];
        assert_eq!(plan(&broken, 0, 200), None);
        assert!(plan(&broken, 111, 200).is_some());
    }

    #[test]
    fn the_oldest_spans_are_forgotten() {
        let mut spans = vec![Span::anchor(0, 0)];
        for i in 0..(MAX_SPANS as u64 + 5) {
            record_span(&mut spans, span(100 * (i + 1), 100 * (i + 1) - i, 10, 11));
        }
        assert_eq!(spans.len(), MAX_SPANS);
        assert_eq!(plan(&spans, 0, 50), None);
        let last = spans[MAX_SPANS - 1];
        assert!(plan(&spans, last.stream + 11, last.stream + 50).is_some());
    }

    fn gap_over(text: &[u8], parts: Vec<Part>) -> (tempfile::TempDir, Gap) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, text).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let gap = Gap {
            source_id: "s".into(),
            label: "l".into(),
            host: "h".into(),
            format: "auto".into(),
            path,
            file,
            parts: parts.into(),
            to: 0,
        };
        (dir, gap)
    }

    #[test]
    fn gaps_are_read_in_batches_of_whole_lines() {
        let text = b"aaaa\nbbbb\ncccc\nlong line that was cut\ndddd\n";
        let (_dir, mut gap) = gap_over(
            text,
            vec![
                Part::Lines {
                    file: 0,
                    stream: 0,
                    len: 15,
                },
                Part::Line {
                    file: 15,
                    stream: 15,
                    take: 4,
                },
                Part::Lines {
                    file: 38,
                    stream: 20,
                    len: 5,
                },
            ],
        );
        let mut got = Vec::new();
        while let Some(record) = next_record(&mut gap, 12, None) {
            let r = record.expect("read");
            got.push((
                r.first_offset,
                String::from_utf8_lossy(&r.lines).into_owned(),
            ));
        }
        assert_eq!(
            got,
            vec![
                (0, "aaaa\nbbbb\n".to_string()),
                (10, "cccc\n".into()),
                (15, "long\n".into()),
                (20, "dddd\n".into()),
            ]
        );
        // Bytes that no longer end a line: the file is not what was sent.
        let (_dir, mut gap) = gap_over(
            b"aaaa\nbb",
            vec![Part::Lines {
                file: 0,
                stream: 0,
                len: 7,
            }],
        );
        assert!(next_record(&mut gap, 100, None).expect("a part").is_ok());
        assert!(next_record(&mut gap, 100, None).expect("a part").is_err());
        // A file shorter than planned.
        let (_dir, mut gap) = gap_over(
            b"aaaa\n",
            vec![Part::Lines {
                file: 0,
                stream: 0,
                len: 10,
            }],
        );
        let err = next_record(&mut gap, 100, None).expect("a part");
        assert!(err.is_err());
        assert_eq!(position(&gap), 0);
    }
}
