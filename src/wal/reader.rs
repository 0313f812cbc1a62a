//! Sequential replay over segment files, opened independently of the writer.

use std::path::PathBuf;

use bytes::Bytes;

use super::{Position, Record, WalError, FORMAT, MAGIC_LEN};
use crate::seglog::SegmentReader;

/// Yields records in order; after the first `Err` it yields nothing more,
/// since nothing after a corrupt record can be located reliably.
#[derive(Debug)]
pub struct WalReader {
    dir: PathBuf,
    /// `(base, end)` of each segment to read; `end` is where its last
    /// visible record ends (the successor's base, or the synced end).
    segments: Vec<(Position, Position)>,
    idx: usize,
    pos: Position,
    file: Option<SegmentReader>,
    done: bool,
}

impl WalReader {
    pub(crate) fn new(dir: PathBuf, segments: Vec<(Position, Position)>, pos: Position) -> Self {
        WalReader {
            dir,
            segments,
            idx: 0,
            pos,
            file: None,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Record>, WalError> {
        loop {
            let Some(&(base, seg_end)) = self.segments.get(self.idx) else {
                return Ok(None);
            };
            if self.pos >= seg_end {
                self.idx += 1;
                self.file = None;
                if let Some(&(next_base, _)) = self.segments.get(self.idx) {
                    self.pos = next_base + MAGIC_LEN;
                }
                continue;
            }
            let file = match &mut self.file {
                Some(f) => f,
                None => self
                    .file
                    .insert(SegmentReader::open(&FORMAT, &self.dir, base, self.pos)?),
            };
            let mut payload = Vec::new();
            let start = file.read(seg_end, &mut payload)?;
            self.pos = file.position();
            return Ok(Some(Record {
                start,
                end: self.pos,
                payload: Bytes::from(payload),
            }));
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.file = None;
                Some(Err(e))
            }
        }
    }
}
