//! Write-ahead log: the durability point between accepting a batch and
//! acknowledging it.
//!
//! # Layout
//! A [`crate::seglog`] log: a directory of segment files named
//! `{base:020}.wal`. A segment starts with the 8-byte magic `NOWLWAL1`,
//! followed by records `[u32 LE len][u32 LE crc32(payload)][payload]`.
//!
//! # Positions
//! A [`Position`] is a global byte offset: the segment named `base` covers
//! positions `base..base + file_len`, so its header sits at `base..base + 8`
//! and its first record starts at `base + 8`. The next segment's base is the
//! previous segment's end, so positions are contiguous and a record at
//! `start` ends at `start + 8 + len`.
//!
//! A record that ends exactly at a segment's end `E` is followed by the next
//! segment's first record at `E + 8`. Both `E` and `E + 8` name the same
//! boundary and [`Wal::read_from`] accepts either, so callers can store
//! `Record::end` and replay from it without knowing about segments. The flip
//! side: [`Wal::end_position`] may be `E` while the next [`Wal::append`]
//! returns `E + 8` if it rolls to a new segment; always use the position
//! `append` returns.
//!
//! # Durability
//! `append` only buffers. After [`Wal::sync`] returns `Ok`, every record
//! appended before it survives kill -9 and power loss. If any write or sync
//! fails, the `Wal` refuses further appends and syncs (an fsync error can
//! silently drop dirty pages, so retrying could falsely report success);
//! drop it and reopen, which recovers.
//!
//! Only one `Wal` may have a directory open at a time (enforced with
//! `flock`).

pub mod cipher;
mod reader;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::seglog::{self, Format, SegLog, FRAME_HEADER, SEGMENT_HEADER};
pub use reader::WalReader;

/// Global byte offset, monotonically increasing across segments.
pub type Position = u64;

/// The WAL's on-disk format; the WAL codec and cipher sit above it.
static FORMAT: Format = Format {
    name: "WAL",
    magic: b"NOWLWAL1",
    suffix: ".wal",
    big_endian: false,
    max_payload: u32::MAX,
    write_buffer: 1 << 20,
    read_buffer: 1 << 20,
};
const MAGIC_LEN: u64 = SEGMENT_HEADER;

fn segment_path(dir: &Path, base: Position) -> PathBuf {
    FORMAT.segment_path(dir, base)
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Target segment size. A segment is rolled before a record that would
    /// push it past this; a larger record still goes in, alone.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 128 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error: {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("WAL segment {}: bad header, expected magic \"NOWLWAL1\"", .path.display())]
    BadMagic { path: PathBuf },
    #[error("WAL segment {} corrupt at byte offset {offset} (position {position}): {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: Position,
        reason: String,
    },
    #[error("WAL position {position} was deleted: oldest retained segment is {}", .first_segment.display())]
    PositionGone {
        position: Position,
        first_segment: PathBuf,
    },
    #[error("WAL position {position} is beyond the synced end {end} of {}", .dir.display())]
    PositionPastEnd {
        position: Position,
        end: Position,
        dir: PathBuf,
    },
    #[error("WAL position {position} is not a record boundary (inside the header of {})", .path.display())]
    NotRecordBoundary { position: Position, path: PathBuf },
    #[error("cannot append an empty payload to WAL {}", .dir.display())]
    EmptyPayload { dir: PathBuf },
    #[error("payload of {len} bytes exceeds the 4 GiB record limit of WAL {}", .dir.display())]
    PayloadTooLarge { len: usize, dir: PathBuf },
    #[error("WAL {} is locked by another open Wal (another process?)", .dir.display())]
    Locked { dir: PathBuf },
    #[error("WAL {} is unusable after an earlier write or sync failure; reopen it to recover", .dir.display())]
    Poisoned { dir: PathBuf },
}

impl From<seglog::Error> for WalError {
    fn from(e: seglog::Error) -> WalError {
        match e {
            seglog::Error::Io { op, path, source } => WalError::Io { op, path, source },
            seglog::Error::BadMagic { path, .. } => WalError::BadMagic { path },
            seglog::Error::Corrupt {
                path,
                offset,
                position,
                reason,
            } => WalError::Corrupt {
                path,
                offset,
                position,
                reason,
            },
            seglog::Error::Locked { dir } => WalError::Locked { dir },
            seglog::Error::EmptyPayload { dir } => WalError::EmptyPayload { dir },
            seglog::Error::PayloadTooLarge { len, dir, .. } => {
                WalError::PayloadTooLarge { len, dir }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub start: Position,
    /// Where the next record starts (or, at a segment's end, that segment's
    /// end; see the module docs).
    pub end: Position,
    pub payload: Bytes,
}

#[derive(Debug)]
pub struct Wal {
    log: SegLog,
    opts: WalOptions,
    poisoned: bool,
}

impl Wal {
    /// Creates the dir if needed, then recovers the last segment: a torn
    /// tail (short header, short payload, bad length, CRC mismatch or
    /// zero-filled bytes after the last valid record) is truncated with a
    /// warning, and the result is fsynced. Only the last segment can be torn,
    /// because a segment is synced before its successor is created.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Wal, WalError> {
        let opened = SegLog::open(dir, &FORMAT)?;
        Ok(Wal {
            log: opened.log,
            opts,
            poisoned: false,
        })
    }

    /// Starts an empty log in `dir` (which holds no segment yet) whose
    /// first record will start at `base + 8`: a restored index holds every
    /// record below `base` (`src/backup/`), and new records must come after
    /// the positions its commits name.
    pub fn create_at(dir: &Path, base: Position) -> Result<(), WalError> {
        Ok(SegLog::create_at(dir, &FORMAT, base)?)
    }

    /// Buffers one record (no fsync) and returns its start position.
    /// Empty payloads are rejected: a zero length marks zero-filled garbage.
    pub fn append(&mut self, payload: &[u8]) -> Result<Position, WalError> {
        self.check_usable()?;
        // Not a write failure: the log stays usable.
        self.log.check_payload(payload.len())?;
        let result = self.write_record(payload);
        self.poison_on_err(result)
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<Position, WalError> {
        let record_bytes = FRAME_HEADER + payload.len() as u64;
        let active_len = self.log.active_len();
        if active_len > MAGIC_LEN && active_len + record_bytes > self.opts.segment_bytes {
            self.log.roll()?;
        }
        Ok(self.log.append(payload)?)
    }

    /// Starts a new segment now if the active one holds records, so that
    /// they can be deleted once indexed (a tenant purge must not leave its
    /// records in a segment that lives on for 128 MB more). True if rolled.
    pub fn roll_now(&mut self) -> Result<bool, WalError> {
        self.check_usable()?;
        if self.log.active_len() <= MAGIC_LEN {
            return Ok(false);
        }
        let result = self.log.roll().map(|()| true).map_err(WalError::from);
        self.poison_on_err(result)
    }

    /// Position where the next record will start, unless `append` rolls to a
    /// new segment first (then it starts 8 bytes later; see module docs).
    pub fn end_position(&self) -> Position {
        self.log.end()
    }

    /// Makes every appended record durable: flush, fdatasync the active
    /// segment, and fsync the directory if a segment was created since.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.log.sync().map(|_| ()).map_err(WalError::from);
        self.poison_on_err(result)
    }

    /// Deletes, oldest first, every segment whose successor's base is
    /// `<= position`, i.e. all of whose records end at or before `position`.
    /// Never deletes the active segment. Returns how many were removed.
    pub fn remove_segments_before(&mut self, position: Position) -> Result<usize, WalError> {
        Ok(self.log.remove_before(position)?)
    }

    /// Oldest position still on disk: the first record of the first segment
    /// (equal to `end_position` when the log holds no records).
    pub fn start_position(&self) -> Position {
        self.segments()[0] + MAGIC_LEN
    }

    /// Reads records from `from`, which must be a record boundary in
    /// `[start_position, end_position]` (a segment's base is accepted as an
    /// alias of its first record, `base + 8`).
    ///
    /// Only synced records are visible: call `sync` before reading records
    /// appended by this `Wal`. A `from` that is not a record boundary is not
    /// detected up front; it shows up as a corrupt record.
    pub fn read_from(&self, from: Position) -> Result<WalReader, WalError> {
        let segments = self.segments();
        let dir = self.log.dir();
        let first = segments[0];
        if from < first {
            return Err(WalError::PositionGone {
                position: from,
                first_segment: segment_path(dir, first),
            });
        }
        let limit = self.log.synced_end();
        if from > limit {
            return Err(WalError::PositionPastEnd {
                position: from,
                end: limit,
                dir: dir.to_path_buf(),
            });
        }
        if from == limit {
            return Ok(WalReader::new(dir.to_path_buf(), Vec::new(), from));
        }
        // Segments created after the last sync hold nothing visible.
        let visible = &segments[..segments.partition_point(|&b| b < limit)];
        let idx = visible.partition_point(|&b| b <= from) - 1;
        let base = visible[idx];
        let from = if from == base { base + MAGIC_LEN } else { from };
        if from < base + MAGIC_LEN {
            return Err(WalError::NotRecordBoundary {
                position: from,
                path: segment_path(dir, base),
            });
        }
        let bounds = (idx..visible.len())
            .map(|i| (visible[i], visible.get(i + 1).copied().unwrap_or(limit)))
            .collect();
        Ok(WalReader::new(dir.to_path_buf(), bounds, from))
    }

    /// Bases of the segments on disk, ascending; the last one is active.
    fn segments(&self) -> &[Position] {
        self.log.segments()
    }

    #[cfg(test)]
    fn active_base(&self) -> Position {
        self.log.active_base()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned {
                dir: self.log.dir().to_path_buf(),
            });
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}
