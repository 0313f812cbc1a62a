//! Write-ahead log: the durability point between accepting a batch and
//! acknowledging it.
//!
//! # Layout
//! The log is a directory of segment files named `{base:020}.wal`. A segment
//! starts with the 8-byte magic `NOWLWAL1`, followed by records
//! `[u32 LE len][u32 LE crc32(payload)][payload]`.
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
mod format;
mod reader;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use format::{
    encode_header, parse_segment_name, read_record, read_up_to, segment_path, MAGIC, MAGIC_LEN,
    RECORD_HEADER_LEN,
};
pub use reader::WalReader;

/// Global byte offset, monotonically increasing across segments.
pub type Position = u64;

const WRITE_BUF_BYTES: usize = 1 << 20;
const SCAN_BUF_BYTES: usize = 1 << 20;

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

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
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
    dir: PathBuf,
    /// Held open for the lifetime of the `Wal`: it carries the `flock` and is
    /// what gets fsynced to make segment creation and deletion durable.
    dir_file: File,
    opts: WalOptions,
    /// Bases of the segments on disk, ascending; the last one is active.
    segments: Vec<Position>,
    writer: BufWriter<File>,
    end: Position,
    /// End of the durable prefix; readers stop here so replay never returns
    /// a record that a crash could still take back.
    synced_end: Position,
    dir_dirty: bool,
    poisoned: bool,
}

impl Wal {
    /// Creates the dir if needed, then recovers the last segment: a torn
    /// tail (short header, short payload, bad length, CRC mismatch or
    /// zero-filled bytes after the last valid record) is truncated with a
    /// warning, and the result is fsynced. Only the last segment can be torn,
    /// because a segment is synced before its successor is created.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Wal, WalError> {
        let existed = match fs::metadata(dir) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("stat", dir)(e)),
        };
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        if !existed {
            // Otherwise the whole directory, and every acked record in it,
            // could vanish on power loss.
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                sync_dir_path(parent)?;
            }
        }

        let dir_file = File::open(dir).map_err(io_err("open directory", dir))?;
        lock(&dir_file, dir)?;

        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            create_segment(dir, 0)?;
            segments.push(0);
        }
        for pair in segments.windows(2) {
            if pair[1] < pair[0] + MAGIC_LEN {
                return Err(WalError::Corrupt {
                    path: segment_path(dir, pair[1]),
                    offset: 0,
                    position: pair[1],
                    reason: format!("base overlaps the header of segment {}", pair[0]),
                });
            }
        }
        let active_base = segments[segments.len() - 1];
        for &base in &segments[..segments.len() - 1] {
            check_magic(&segment_path(dir, base))?;
        }

        let (file, len) = recover_segment(&segment_path(dir, active_base), active_base)?;
        dir_file
            .sync_all()
            .map_err(io_err("fsync directory", dir))?;
        let end = active_base + len;
        Ok(Wal {
            dir: dir.to_path_buf(),
            dir_file,
            opts,
            segments,
            writer: BufWriter::with_capacity(WRITE_BUF_BYTES, file),
            end,
            synced_end: end,
            dir_dirty: false,
            poisoned: false,
        })
    }

    /// Starts an empty log in `dir` (which holds no segment yet) whose
    /// first record will start at `base + 8`: a restored index holds every
    /// record below `base` (`src/backup/`), and new records must come after
    /// the positions its commits name.
    pub fn create_at(dir: &Path, base: Position) -> Result<(), WalError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        if let Some(&existing) = list_segments(dir)?.first() {
            return Err(WalError::Corrupt {
                path: segment_path(dir, existing),
                offset: 0,
                position: existing,
                reason: "a new log was asked for where one exists".into(),
            });
        }
        let file = create_segment(dir, base)?;
        let path = segment_path(dir, base);
        file.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir_path(dir)
    }

    /// Buffers one record (no fsync) and returns its start position.
    /// Empty payloads are rejected: a zero length marks zero-filled garbage.
    pub fn append(&mut self, payload: &[u8]) -> Result<Position, WalError> {
        self.check_usable()?;
        if payload.is_empty() {
            return Err(WalError::EmptyPayload {
                dir: self.dir.clone(),
            });
        }
        let len = u32::try_from(payload.len()).map_err(|_| WalError::PayloadTooLarge {
            len: payload.len(),
            dir: self.dir.clone(),
        })?;
        let result = self.write_record(payload, len);
        self.poison_on_err(result)
    }

    fn write_record(&mut self, payload: &[u8], len: u32) -> Result<Position, WalError> {
        let record_bytes = RECORD_HEADER_LEN + u64::from(len);
        let active_len = self.end - self.active_base();
        if active_len > MAGIC_LEN && active_len + record_bytes > self.opts.segment_bytes {
            self.roll()?;
        }
        let start = self.end;
        let header = encode_header(payload, len);
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(payload))
            .map_err(io_err(
                "write",
                &segment_path(&self.dir, self.active_base()),
            ))?;
        self.end = start + record_bytes;
        Ok(start)
    }

    /// Starts a new segment now if the active one holds records, so that
    /// they can be deleted once indexed (a tenant purge must not leave its
    /// records in a segment that lives on for 128 MB more). True if rolled.
    pub fn roll_now(&mut self) -> Result<bool, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        if self.end - self.active_base() <= MAGIC_LEN {
            return Ok(false);
        }
        let result = self.roll().map(|()| true);
        self.poison_on_err(result)
    }

    fn roll(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.active_base());
        self.writer.flush().map_err(io_err("write", &path))?;
        // Recovery only repairs the last segment, so a segment must be fully
        // durable before it stops being the last one.
        self.writer
            .get_ref()
            .sync_data()
            .map_err(io_err("fdatasync", &path))?;
        let base = self.end;
        let file = create_segment(&self.dir, base)?;
        self.writer = BufWriter::with_capacity(WRITE_BUF_BYTES, file);
        self.segments.push(base);
        self.end = base + MAGIC_LEN;
        self.dir_dirty = true;
        Ok(())
    }

    /// Position where the next record will start, unless `append` rolls to a
    /// new segment first (then it starts 8 bytes later; see module docs).
    pub fn end_position(&self) -> Position {
        self.end
    }

    /// Makes every appended record durable: flush, fdatasync the active
    /// segment, and fsync the directory if a segment was created since.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.sync_inner();
        self.poison_on_err(result)
    }

    fn sync_inner(&mut self) -> Result<(), WalError> {
        if self.synced_end == self.end && !self.dir_dirty {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.active_base());
        self.writer.flush().map_err(io_err("write", &path))?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(io_err("fdatasync", &path))?;
        if self.dir_dirty {
            self.dir_file
                .sync_all()
                .map_err(io_err("fsync directory", &self.dir))?;
            self.dir_dirty = false;
        }
        self.synced_end = self.end;
        Ok(())
    }

    /// Deletes, oldest first, every segment whose successor's base is
    /// `<= position`, i.e. all of whose records end at or before `position`.
    /// Never deletes the active segment. Returns how many were removed.
    pub fn remove_segments_before(&mut self, position: Position) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1] <= position {
            let path = segment_path(&self.dir, self.segments[0]);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            // Oldest-first deletion is only gap-free on disk once the
            // directory is synced; a gap would make older replays fail.
            self.dir_file
                .sync_all()
                .map_err(io_err("fsync directory", &self.dir))?;
        }
        Ok(removed)
    }

    /// Oldest position still on disk: the first record of the first segment
    /// (equal to `end_position` when the log holds no records).
    pub fn start_position(&self) -> Position {
        self.segments[0] + MAGIC_LEN
    }

    /// Reads records from `from`, which must be a record boundary in
    /// `[start_position, end_position]` (a segment's base is accepted as an
    /// alias of its first record, `base + 8`).
    ///
    /// Only synced records are visible: call `sync` before reading records
    /// appended by this `Wal`. A `from` that is not a record boundary is not
    /// detected up front; it shows up as a corrupt record.
    pub fn read_from(&self, from: Position) -> Result<WalReader, WalError> {
        let first = self.segments[0];
        if from < first {
            return Err(WalError::PositionGone {
                position: from,
                first_segment: segment_path(&self.dir, first),
            });
        }
        let limit = self.synced_end;
        if from > limit {
            return Err(WalError::PositionPastEnd {
                position: from,
                end: limit,
                dir: self.dir.clone(),
            });
        }
        if from == limit {
            return Ok(WalReader::new(self.dir.clone(), Vec::new(), from));
        }
        // Segments created after the last sync hold nothing visible.
        let visible = &self.segments[..self.segments.partition_point(|&b| b < limit)];
        let idx = visible.partition_point(|&b| b <= from) - 1;
        let base = visible[idx];
        let from = if from == base { base + MAGIC_LEN } else { from };
        if from < base + MAGIC_LEN {
            return Err(WalError::NotRecordBoundary {
                position: from,
                path: segment_path(&self.dir, base),
            });
        }
        let bounds = (idx..visible.len())
            .map(|i| (visible[i], visible.get(i + 1).copied().unwrap_or(limit)))
            .collect();
        Ok(WalReader::new(self.dir.clone(), bounds, from))
    }

    fn active_base(&self) -> Position {
        self.segments[self.segments.len() - 1]
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned {
                dir: self.dir.clone(),
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

fn lock(dir_file: &File, dir: &Path) -> Result<(), WalError> {
    let Err(e) = crate::fsutil::lock_exclusive(dir_file) else {
        return Ok(());
    };
    if e.kind() == io::ErrorKind::WouldBlock {
        Err(WalError::Locked {
            dir: dir.to_path_buf(),
        })
    } else {
        Err(io_err("flock", dir)(e))
    }
}

fn sync_dir_path(dir: &Path) -> Result<(), WalError> {
    crate::fsutil::sync_dir(dir).map_err(io_err("fsync directory", dir))
}

fn list_segments(dir: &Path) -> Result<Vec<Position>, WalError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The caller makes the new file and its directory entry durable.
fn create_segment(dir: &Path, base: Position) -> Result<File, WalError> {
    let path = segment_path(dir, base);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    file.write_all(MAGIC).map_err(io_err("write", &path))?;
    Ok(file)
}

fn check_magic(path: &Path) -> Result<(), WalError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut file, &mut magic).map_err(io_err("read", path))?;
    if got < magic.len() || magic != *MAGIC {
        return Err(WalError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Truncates a torn tail off the last segment, fsyncs it, and returns it
/// positioned for appending, with its valid length.
fn recover_segment(path: &Path, base: Position) -> Result<(File, u64), WalError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();

    let mut scan = BufReader::with_capacity(SCAN_BUF_BYTES, &file);
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut scan, &mut magic).map_err(io_err("read", path))?;
    let header_missing = got < magic.len()
        || (magic == [0u8; 8] && rest_is_zero(&mut scan).map_err(io_err("read", path))?);
    let valid_len = if header_missing {
        // The header is written before any record, so every completed sync of
        // this file covers it: without it, nothing here was ever acked. A
        // crash right after creating the file (or zero-filled blocks after
        // power loss) leaves exactly this.
        warn!(
            file = %path.display(),
            offset = 0,
            bytes_dropped = file_len,
            "WAL segment has no durable header; reinitialising it"
        );
        drop(scan);
        file.set_len(0).map_err(io_err("truncate", path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", path))?;
        file.write_all(MAGIC).map_err(io_err("write", path))?;
        MAGIC_LEN
    } else if magic != *MAGIC {
        return Err(WalError::BadMagic {
            path: path.to_path_buf(),
        });
    } else {
        let mut offset = MAGIC_LEN;
        let mut payload = Vec::new();
        let mut defect = None;
        while offset < file_len {
            match read_record(&mut scan, file_len - offset, &mut payload)
                .map_err(io_err("read", path))?
            {
                Ok(n) => offset += n,
                Err(d) => {
                    defect = Some(d);
                    break;
                }
            }
        }
        drop(scan);
        if let Some(defect) = defect {
            warn!(
                file = %path.display(),
                offset,
                position = base + offset,
                bytes_dropped = file_len - offset,
                reason = %defect,
                "truncating torn WAL tail"
            );
            file.set_len(offset).map_err(io_err("truncate", path))?;
        }
        offset
    };
    // Also covers bytes a killed predecessor left only in the page cache:
    // they are about to be replayed and indexed, so they must not vanish.
    file.sync_data().map_err(io_err("fdatasync", path))?;
    file.seek(SeekFrom::Start(valid_len))
        .map_err(io_err("seek", path))?;
    Ok((file, valid_len))
}

fn rest_is_zero(r: &mut impl io::Read) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = read_up_to(r, &mut buf)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
    }
}
