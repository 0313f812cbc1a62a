//! Segment log: the on-disk log under both the collector's WAL (`wal/`)
//! and the agent's spool (`agent/spool.rs`). It knows files, frames and
//! positions, never what a payload holds or whether it is encrypted: each
//! owner keeps its record codec, its encryption and its own rules for when
//! to roll and what may be deleted.
//!
//! # Layout
//! A directory of segment files `{base:020}{suffix}`. A segment starts with
//! an 8-byte magic, followed by frames `[u32 len][u32 crc32(payload)][payload]`
//! (byte order per [`Format`]).
//!
//! # Positions
//! A position is a global byte offset: the segment named `base` covers
//! positions `base..base + file_len`, its header sits at `base..base + 8`
//! and its first frame starts at `base + 8`. The next segment's base is the
//! previous segment's end, so positions are contiguous.
//!
//! # Durability
//! An append is durable once [`SegLog::sync`] returns. A segment is synced
//! before its successor is created, so only the last segment can be torn;
//! opening cuts a torn tail off it (short header or payload, bad length, CRC
//! mismatch, zeros) and fsyncs the result. One open log per directory
//! (`flock`).

mod frame;
mod reader;
#[cfg(test)]
mod tests;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

pub use frame::{Defect, FRAME_HEADER};
pub use reader::SegmentReader;

use frame::{read_frame, read_up_to};

/// Bytes of a segment's header (its magic).
pub const SEGMENT_HEADER: u64 = 8;

/// What tells one kind of segment log from another. The first five fields
/// are the on-disk format; the buffer sizes only how it is read and written.
#[derive(Debug)]
pub struct Format {
    /// Names the log in warnings ("WAL", "spool").
    pub name: &'static str,
    pub magic: &'static [u8; 8],
    /// Segment files are `{base:020}{suffix}`.
    pub suffix: &'static str,
    /// Byte order of a frame's length and CRC.
    pub big_endian: bool,
    /// A longer frame is a torn length field, never a record.
    pub max_payload: u32,
    /// 0: every append is written through, and a failed one is cut back so
    /// the log stays usable (the agent pauses and retries on a full disk).
    /// Otherwise appends are buffered until [`SegLog::sync`]; after a failed
    /// write or sync nobody knows what reached the file, so the owner must
    /// stop appending and reopen (the WAL poisons itself).
    pub write_buffer: usize,
    pub read_buffer: usize,
}

impl Format {
    pub fn segment_path(&self, dir: &Path, base: u64) -> PathBuf {
        dir.join(format!("{base:020}{}", self.suffix))
    }

    /// Parses `{base:020}{suffix}`; anything else is not a segment and is
    /// ignored.
    pub fn parse_name(&self, name: &str) -> Option<u64> {
        let digits = name.strip_suffix(self.suffix)?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("segment {}: bad header, expected magic \"{}\"", .path.display(), .expected.escape_ascii())]
    BadMagic {
        path: PathBuf,
        expected: &'static [u8; 8],
    },
    #[error("segment {} is damaged at byte offset {offset} (position {position}): {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: u64,
        reason: String,
    },
    #[error("{} is locked by another open log (another process?)", .dir.display())]
    Locked { dir: PathBuf },
    #[error("cannot append an empty payload to {}", .dir.display())]
    EmptyPayload { dir: PathBuf },
    #[error("payload of {len} bytes exceeds the {max}-byte record limit of {}", .dir.display())]
    PayloadTooLarge { len: usize, max: u32, dir: PathBuf },
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A whole frame met while opening, handed to the owner's visitor.
pub struct Frame<'a> {
    pub path: &'a Path,
    pub base: u64,
    /// Offset of the frame in its file (its position is `base + offset`).
    pub offset: u64,
    /// Take it (`std::mem::take`) to keep it.
    pub payload: &'a mut Vec<u8>,
}

/// The owner's check of each frame at open: `Ok(false)` when the payload
/// is not a record (a torn tail if in the last segment, else damage).
type Visit<'v, E> = &'v mut dyn FnMut(Frame<'_>) -> Result<bool, E>;

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    pub log: SegLog,
    /// Bytes cut off the last segment (a crash mid-append).
    pub torn_bytes: u64,
}

/// The writing end: appends to the last segment, rolls, syncs, deletes.
#[derive(Debug)]
pub struct SegLog {
    format: &'static Format,
    dir: PathBuf,
    /// Held open for the lifetime of the log: it carries the `flock` and is
    /// what gets fsynced to make segment creation and deletion durable.
    dir_file: File,
    /// Bases of the segments on disk, ascending; the last one is active.
    segments: Vec<u64>,
    writer: BufWriter<File>,
    end: u64,
    /// End of the durable prefix.
    synced: u64,
    dir_dirty: bool,
}

impl SegLog {
    /// Creates the directory if needed and opens the log, repairing the last
    /// segment's torn tail. Older segments only have their header checked
    /// (and must not overlap), so opening costs one segment's read however
    /// long the log.
    pub fn open(dir: &Path, format: &'static Format) -> Result<Opened, Error> {
        open(dir, format, None)
    }

    /// Like [`SegLog::open`], but reads every frame of every segment and
    /// hands it to `visit`, for an owner that rebuilds state from the whole
    /// log. Damage in an older segment is an error naming the file and
    /// offset, and each segment must start where the one before it ends.
    pub fn open_reading_every<E: From<Error>>(
        dir: &Path,
        format: &'static Format,
        mut visit: impl FnMut(Frame<'_>) -> Result<bool, E>,
    ) -> Result<Opened, E> {
        open(dir, format, Some(&mut visit))
    }

    /// Starts an empty log in `dir` (which holds no segment yet) whose
    /// first frame will start at `base + 8`.
    pub fn create_at(dir: &Path, format: &'static Format, base: u64) -> Result<(), Error> {
        create_dir(dir)?;
        if let Some(&existing) = list_segments(dir, format)?.first() {
            return Err(Error::Corrupt {
                path: format.segment_path(dir, existing),
                offset: 0,
                position: existing,
                reason: "a new log was asked for where one exists".into(),
            });
        }
        let file = create_segment(dir, format, base)?;
        let path = format.segment_path(dir, base);
        file.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir_path(dir)
    }

    /// Checks a payload before anything is written or rolled for it.
    pub fn check_payload(&self, len: usize) -> Result<(), Error> {
        if len == 0 {
            // A zero length marks zero-filled garbage on disk.
            return Err(Error::EmptyPayload {
                dir: self.dir.clone(),
            });
        }
        if u32::try_from(len).map_or(true, |l| l > self.format.max_payload) {
            return Err(Error::PayloadTooLarge {
                len,
                max: self.format.max_payload,
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends one frame holding `payload` to the active segment (durable
    /// only after [`SegLog::sync`]); returns its start position.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, Error> {
        self.check_payload(payload.len())?;
        let header = self.format.frame_header(payload);
        let written = self
            .writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(payload));
        self.wrote(written, FRAME_HEADER + payload.len() as u64)
    }

    /// Appends a frame its owner encoded in place, header written by
    /// [`Format::finish_frame`]: one write, no copy. Returns its start.
    pub fn append_frame(&mut self, frame: &[u8]) -> Result<u64, Error> {
        self.check_payload(frame.len().saturating_sub(FRAME_HEADER as usize))?;
        let written = self.writer.write_all(frame);
        self.wrote(written, frame.len() as u64)
    }

    fn wrote(&mut self, written: io::Result<()>, size: u64) -> Result<u64, Error> {
        if let Err(e) = written {
            let path = self.active_path();
            if self.format.write_buffer == 0 {
                // A short write (disk full) must not stay in front of the
                // next frame: cut back to the last whole one. Best effort:
                // if this fails too, opening cuts it as a torn tail.
                let keep = self.active_len();
                let file = self.writer.get_mut();
                let _ = file.set_len(keep);
                let _ = file.seek(SeekFrom::Start(keep));
            }
            return Err(io_err("write", &path)(e));
        }
        let start = self.end;
        self.end += size;
        Ok(start)
    }

    /// Starts a new segment at the end. The old one is made durable first:
    /// recovery only repairs the last segment, so a segment must be whole
    /// before it stops being the last one. The new one's directory entry is
    /// made durable by the next [`SegLog::sync`].
    pub fn roll(&mut self) -> Result<(), Error> {
        self.sync_active()?;
        let base = self.end;
        let file = create_segment(&self.dir, self.format, base)?;
        self.writer = BufWriter::with_capacity(self.format.write_buffer, file);
        self.segments.push(base);
        self.end = base + SEGMENT_HEADER;
        self.dir_dirty = true;
        Ok(())
    }

    /// Makes every append durable (flush, fdatasync the active segment, and
    /// fsync the directory if a segment was created since); returns the
    /// durable end.
    pub fn sync(&mut self) -> Result<u64, Error> {
        if self.synced == self.end && !self.dir_dirty {
            return Ok(self.synced);
        }
        self.sync_active()?;
        if self.dir_dirty {
            self.sync_dir()?;
            self.dir_dirty = false;
        }
        self.synced = self.end;
        Ok(self.synced)
    }

    fn sync_active(&mut self) -> Result<(), Error> {
        let path = self.active_path();
        self.writer.flush().map_err(io_err("write", &path))?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(io_err("fdatasync", &path))
    }

    fn sync_dir(&self) -> Result<(), Error> {
        self.dir_file
            .sync_all()
            .map_err(io_err("fsync directory", &self.dir))
    }

    /// Deletes, oldest first, every segment whose successor's base is
    /// `<= position`, i.e. all of whose frames end at or before `position`.
    /// Never deletes the active segment. Returns how many were removed.
    pub fn remove_before(&mut self, position: u64) -> Result<usize, Error> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1] <= position {
            let path = self.format.segment_path(&self.dir, self.segments[0]);
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
            // directory is synced; a gap would make older reads fail.
            self.sync_dir()?;
        }
        Ok(removed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bases of the segments on disk, ascending (never empty).
    pub fn segments(&self) -> &[u64] {
        &self.segments
    }

    /// Where the next frame starts, unless a roll comes first.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// End of what the last [`SegLog::sync`] made durable.
    pub fn synced_end(&self) -> u64 {
        self.synced
    }

    pub fn active_base(&self) -> u64 {
        self.segments[self.segments.len() - 1]
    }

    /// Bytes in the active segment, its header included.
    pub fn active_len(&self) -> u64 {
        self.end - self.active_base()
    }

    fn active_path(&self) -> PathBuf {
        self.format.segment_path(&self.dir, self.active_base())
    }
}

fn open<E: From<Error>>(
    dir: &Path,
    format: &'static Format,
    mut visit: Option<Visit<'_, E>>,
) -> Result<Opened, E> {
    create_dir(dir)?;
    let dir_file = File::open(dir).map_err(io_err("open directory", dir))?;
    lock(&dir_file, dir)?;

    let mut segments = list_segments(dir, format)?;
    if segments.is_empty() {
        create_segment(dir, format, 0)?;
        segments.push(0);
    }
    let last = segments.len() - 1;
    // Where the next segment must start: exactly there when every frame
    // was read, else at least past the header.
    let mut follows: Option<(u64, u64)> = None;
    for (i, &base) in segments.iter().enumerate() {
        let path = format.segment_path(dir, base);
        if let Some((prev, end)) = follows {
            let reason = if visit.is_some() && base != end {
                Some(format!("the segment before it ends at {end}"))
            } else if base < end {
                Some(format!("base overlaps the header of segment {prev}"))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    position: base,
                    reason,
                }
                .into());
            }
        }
        if i == last {
            break;
        }
        let end = match visit.as_deref_mut() {
            Some(visit) => {
                let file = File::open(&path).map_err(io_err("open", &path))?;
                let scan = scan(format, &path, base, &file, Some(visit))?;
                if scan.header_missing {
                    return Err(Error::BadMagic {
                        path,
                        expected: format.magic,
                    }
                    .into());
                }
                if let Some(defect) = scan.defect {
                    return Err(Error::Corrupt {
                        path,
                        offset: scan.valid_len,
                        position: base + scan.valid_len,
                        reason: defect.to_string(),
                    }
                    .into());
                }
                base + scan.valid_len
            }
            None => {
                open_checked(format, &path)?;
                base + SEGMENT_HEADER
            }
        };
        follows = Some((base, end));
    }

    let base = segments[last];
    let (file, valid_len, torn_bytes) =
        recover_last(format, &format.segment_path(dir, base), base, visit)?;
    dir_file
        .sync_all()
        .map_err(io_err("fsync directory", dir))?;
    let end = base + valid_len;
    Ok(Opened {
        log: SegLog {
            format,
            dir: dir.to_path_buf(),
            dir_file,
            segments,
            writer: BufWriter::with_capacity(format.write_buffer, file),
            end,
            synced: end,
            dir_dirty: false,
        },
        torn_bytes,
    })
}

/// Creates `dir` (owner only: it holds logs) and, if it is new, makes its
/// entry durable: otherwise the whole directory, and every acknowledged
/// record in it, could vanish on power loss.
fn create_dir(dir: &Path) -> Result<(), Error> {
    let existed = match fs::metadata(dir) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err("stat", dir)(e)),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    if !existed {
        if let Some(parent) = dir.parent() {
            sync_dir_path(parent)?;
        }
    }
    Ok(())
}

fn lock(dir_file: &File, dir: &Path) -> Result<(), Error> {
    let Err(e) = crate::fsutil::lock_exclusive(dir_file) else {
        return Ok(());
    };
    if e.kind() == io::ErrorKind::WouldBlock {
        Err(Error::Locked {
            dir: dir.to_path_buf(),
        })
    } else {
        Err(io_err("flock", dir)(e))
    }
}

fn sync_dir_path(dir: &Path) -> Result<(), Error> {
    crate::fsutil::sync_dir(dir).map_err(io_err("fsync directory", dir))
}

/// Bases of the segments in `dir`, ascending.
pub fn list_segments(dir: &Path, format: &Format) -> Result<Vec<u64>, Error> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(|n| format.parse_name(n))
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// A new segment holding its header (owner only). The caller makes the file
/// and its directory entry durable.
fn create_segment(dir: &Path, format: &Format, base: u64) -> Result<File, Error> {
    let path = format.segment_path(dir, base);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("create", &path))?;
    if let Err(e) = file.write_all(format.magic) {
        // Else a retry would meet the half-made file (`create_new`).
        let _ = fs::remove_file(&path);
        return Err(io_err("write", &path)(e));
    }
    Ok(file)
}

/// Opens a segment that must be whole, positioned after its header.
fn open_checked(format: &'static Format, path: &Path) -> Result<File, Error> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut file, &mut magic).map_err(io_err("read", path))?;
    if got < magic.len() || magic != *format.magic {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            expected: format.magic,
        });
    }
    Ok(file)
}

struct Scan {
    /// The file is shorter than a header, or all zeros: nothing in it was
    /// ever synced, since the header is written before any frame.
    header_missing: bool,
    file_len: u64,
    /// End of the last whole frame (the visitor accepted).
    valid_len: u64,
    defect: Option<Defect>,
}

/// Reads a segment's frames up to the first defect. A header that is
/// present but wrong is an error: no crash writes one.
fn scan<E: From<Error>>(
    format: &'static Format,
    path: &Path,
    base: u64,
    file: &File,
    mut visit: Option<Visit<'_, E>>,
) -> Result<Scan, E> {
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut reader = BufReader::with_capacity(format.read_buffer, file);
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut reader, &mut magic).map_err(io_err("read", path))?;
    if got < magic.len()
        || (magic == [0u8; 8] && rest_is_zero(&mut reader).map_err(io_err("read", path))?)
    {
        return Ok(Scan {
            header_missing: true,
            file_len,
            valid_len: 0,
            defect: None,
        });
    }
    if magic != *format.magic {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            expected: format.magic,
        }
        .into());
    }
    let mut offset = SEGMENT_HEADER;
    let mut payload = Vec::new();
    let mut defect = None;
    while offset < file_len {
        match read_frame(format, &mut reader, file_len - offset, &mut payload)
            .map_err(io_err("read", path))?
        {
            Ok(size) => {
                if let Some(visit) = visit.as_mut() {
                    let frame = Frame {
                        path,
                        base,
                        offset,
                        payload: &mut payload,
                    };
                    if !visit(frame)? {
                        defect = Some(Defect::NotARecord);
                        break;
                    }
                }
                offset += size;
            }
            Err(d) => {
                defect = Some(d);
                break;
            }
        }
    }
    Ok(Scan {
        header_missing: false,
        file_len,
        valid_len: offset,
        defect,
    })
}

/// Cuts a torn tail off the last segment (or gives a headerless one its
/// header), fsyncs it, and returns it positioned for appending, with its
/// valid length and the bytes cut.
fn recover_last<E: From<Error>>(
    format: &'static Format,
    path: &Path,
    base: u64,
    visit: Option<Visit<'_, E>>,
) -> Result<(File, u64, u64), E> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let scan = scan(format, path, base, &file, visit)?;
    let (valid_len, torn) = if scan.header_missing {
        // A crash right after creating the file (or zero-filled blocks
        // after power loss) leaves exactly this.
        warn!(
            file = %path.display(),
            offset = 0,
            bytes_dropped = scan.file_len,
            "{} segment has no durable header; reinitialising it",
            format.name
        );
        file.set_len(0).map_err(io_err("truncate", path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", path))?;
        file.write_all(format.magic)
            .map_err(io_err("write", path))?;
        (SEGMENT_HEADER, scan.file_len)
    } else if let Some(defect) = scan.defect {
        let offset = scan.valid_len;
        warn!(
            file = %path.display(),
            offset,
            position = base + offset,
            bytes_dropped = scan.file_len - offset,
            reason = %defect,
            "truncating torn {} tail",
            format.name
        );
        file.set_len(offset).map_err(io_err("truncate", path))?;
        (offset, scan.file_len - offset)
    } else {
        (scan.valid_len, 0)
    };
    // Also covers bytes a killed predecessor left only in the page cache:
    // they are about to be read back and acted on, so they must not vanish.
    file.sync_data().map_err(io_err("fdatasync", path))?;
    file.seek(SeekFrom::Start(valid_len))
        .map_err(io_err("seek", path))?;
    Ok((file, valid_len, torn))
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
