//! Sequential replay over segment files, opened independently of the writer.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{read_record, read_up_to, segment_path, MAGIC, MAGIC_LEN};
use super::{io_err, Position, Record, WalError};

const READ_BUF_BYTES: usize = 1 << 20;

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
    file: Option<BufReader<File>>,
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
            let path = segment_path(&self.dir, base);
            let offset = self.pos - base;
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(open_at(&path, offset)?),
            };
            let mut payload = Vec::new();
            let read = read_record(file, seg_end - self.pos, &mut payload)
                .map_err(io_err("read", &path))?;
            return match read {
                Ok(n) => {
                    let start = self.pos;
                    self.pos += n;
                    Ok(Some(Record {
                        start,
                        end: self.pos,
                        payload: Bytes::from(payload),
                    }))
                }
                Err(defect) => Err(WalError::Corrupt {
                    path,
                    offset,
                    position: self.pos,
                    reason: defect.to_string(),
                }),
            };
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

fn open_at(path: &Path, offset: u64) -> Result<BufReader<File>, WalError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut file, &mut magic).map_err(io_err("read", path))?;
    if got < magic.len() || magic != *MAGIC {
        return Err(WalError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    Ok(BufReader::with_capacity(READ_BUF_BYTES, file))
}
