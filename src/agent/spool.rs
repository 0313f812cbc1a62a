//! The on-disk spool: every batch read from a file is appended here, and
//! fsynced, before it is sent.
//!
//! Segment files `{base:020}.spool` start with [`MAGIC`]; records are
//! `[u32 len][u32 crc32][payload]`. A position is `base + offset in the
//! file`, and the next segment's base is the previous one's end, so the bytes
//! on disk are `end - first base`. The collector's acks advance an acked
//! position (kept in the checkpoint); segments wholly below it are deleted.
//!
//! The spool is what makes the agent independent of the collector's
//! availability: files are read at their own pace into it (up to its byte
//! limit), and the sender drains it in order. After a crash, unacked records
//! are resent (the collector's dedup drops what it already has) and each
//! file resumes after the last offset recorded here.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const MAGIC: &[u8; 8] = b"NOWLSPL1";
const HEADER: u64 = 8;
const RECORD_HEADER: usize = 8;
/// A torn length field can claim anything; nothing the agent writes is larger.
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// One spooled batch: consecutive whole lines of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub source_id: String,
    /// `source` label.
    pub source: String,
    pub host: String,
    pub format: String,
    /// Stream offset of the first line (what the collector dedups on).
    pub first_offset: u64,
    /// File offset just past the bytes this record came from (where reading
    /// resumes after a crash).
    pub file_end: u64,
    pub lines: Bytes,
}

impl Record {
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.lines.len() as u64
    }
}

/// How far a source got, according to the records still in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceEnd {
    pub stream: u64,
    pub file: u64,
}

fn put_str(dst: &mut BytesMut, s: &str) {
    // Labels are short; a path over 64 KiB is cut rather than refused.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst.put_u16(end as u16);
    dst.put_slice(&s.as_bytes()[..end]);
}

fn get_str(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_u16() as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

/// Encodes a record whose lines are `parts` concatenated (so a cut line and
/// its added newline need no copy of their own).
fn encode(meta: &Record, parts: &[&[u8]], out: &mut BytesMut) {
    out.clear();
    out.put_bytes(0, RECORD_HEADER);
    out.put_u8(1);
    put_str(out, &meta.source_id);
    put_str(out, &meta.source);
    put_str(out, &meta.host);
    put_str(out, &meta.format);
    out.put_u64(meta.first_offset);
    out.put_u64(meta.file_end);
    for part in parts {
        out.put_slice(part);
    }
    let payload_len = (out.len() - RECORD_HEADER) as u32;
    let crc = crc32fast::hash(&out[RECORD_HEADER..]);
    out[0..4].copy_from_slice(&payload_len.to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
}

fn decode(mut payload: Bytes) -> Option<Record> {
    if payload.remaining() < 1 || payload.get_u8() != 1 {
        return None;
    }
    let source_id = get_str(&mut payload)?;
    let source = get_str(&mut payload)?;
    let host = get_str(&mut payload)?;
    let format = get_str(&mut payload)?;
    if payload.remaining() < 16 {
        return None;
    }
    let first_offset = payload.get_u64();
    let file_end = payload.get_u64();
    Some(Record {
        source_id,
        source,
        host,
        format,
        first_offset,
        file_end,
        lines: payload,
    })
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.spool"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name
            .strip_suffix(".spool")
            .and_then(|b| b.parse::<u64>().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Reads the next record of a segment at `pos` (a position inside the file).
/// `Ok(None)`: a clean end, or a torn/corrupt tail (the caller tells which
/// by comparing with the file's length).
fn read_record(reader: &mut impl Read) -> io::Result<Option<(Record, u64)>> {
    let mut header = [0u8; RECORD_HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(decode(Bytes::from(payload)).map(|r| (r, (RECORD_HEADER + len) as u64)))
}

/// The writing end, owned by the reading thread.
pub struct Spool {
    dir: PathBuf,
    segment_bytes: u64,
    /// Bases of the segments on disk, oldest first; the last is active.
    segments: Vec<u64>,
    active: File,
    end: u64,
    synced: u64,
    buf: BytesMut,
}

/// What opening found.
pub struct Recovered {
    pub spool: Spool,
    /// Per source id, the furthest offsets of the records on disk.
    pub sources: HashMap<String, SourceEnd>,
    /// Bytes cut from a torn tail (a crash mid-append).
    pub torn_bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, checking every record: a torn
    /// tail of the last segment is cut off; damage anywhere else is an error
    /// naming the file, since it would mean lines acknowledged to nobody and
    /// readable by nobody.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Recovered> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut segments = list_segments(dir)?;
        let mut sources: HashMap<String, SourceEnd> = HashMap::new();
        let mut torn_bytes = 0;
        let mut end = 0;
        for (i, &base) in segments.iter().enumerate() {
            let path = segment_path(dir, base);
            let last = i + 1 == segments.len();
            if i > 0 && base != end {
                bail!(
                    "spool segment {} starts at {base}, but the one before it ends at {end}; \
                     move the spool directory away to start afresh",
                    path.display()
                );
            }
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let len = file.metadata()?.len();
            let mut reader = BufReader::with_capacity(256 * 1024, file);
            let mut magic = [0u8; 8];
            let mut pos = HEADER;
            let header_ok = reader.read_exact(&mut magic).is_ok() && &magic == MAGIC;
            if header_ok {
                while let Some((record, size)) = read_record(&mut reader)
                    .with_context(|| format!("reading {}", path.display()))?
                {
                    let e = sources.entry(record.source_id.clone()).or_default();
                    e.stream = e.stream.max(record.end_offset());
                    e.file = e.file.max(record.file_end);
                    pos += size;
                }
            } else {
                pos = 0;
            }
            if pos < len || !header_ok {
                if !last {
                    bail!(
                        "spool segment {} is damaged at byte {pos} of {len}; \
                         move the spool directory away to start afresh",
                        path.display()
                    );
                }
                tracing::warn!(
                    segment = %path.display(),
                    at = pos,
                    len,
                    "cutting a torn spool tail (the agent stopped mid-write)"
                );
                torn_bytes = len - pos;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                if header_ok {
                    f.set_len(pos)?;
                } else {
                    f.set_len(0)?;
                    (&f).write_all(MAGIC)?;
                    pos = HEADER;
                }
                f.sync_all()?;
            }
            end = base + pos;
        }
        let active = match segments.last() {
            Some(&base) => {
                let path = segment_path(dir, base);
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.seek(SeekFrom::End(0))?;
                f
            }
            None => {
                segments.push(0);
                end = HEADER;
                Self::create_segment(dir, 0)?
            }
        };
        Ok(Recovered {
            spool: Spool {
                dir: dir.to_path_buf(),
                segment_bytes: segment_bytes.max(HEADER + 1),
                segments,
                active,
                end,
                synced: end,
                buf: BytesMut::new(),
            },
            sources,
            torn_bytes,
        })
    }

    fn create_segment(dir: &Path, base: u64) -> Result<File> {
        let path = segment_path(dir, base);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(MAGIC)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        sync_dir(dir)?;
        Ok(f)
    }

    /// End of the last record written (synced or not).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// First position still on disk.
    pub fn start(&self) -> u64 {
        self.segments.first().copied().unwrap_or(0)
    }

    /// Bytes the spool takes on disk.
    pub fn bytes(&self) -> u64 {
        self.end - self.start()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends one record (not yet durable: see [`Spool::sync`]); returns
    /// its end position. `meta.lines` is ignored: the lines are `parts`.
    pub fn append(&mut self, meta: &Record, parts: &[&[u8]]) -> Result<u64> {
        let active_base = self.segments.last().copied().unwrap_or(0);
        if self.end - active_base >= self.segment_bytes {
            self.roll()?;
        }
        encode(meta, parts, &mut self.buf);
        let active_base = self.segments.last().copied().unwrap_or(0);
        if let Err(e) = self.active.write_all(&self.buf) {
            // A short write (disk full) must not stay in front of the next
            // record: cut back to the last whole one.
            let _ = self.active.set_len(self.end - active_base);
            let _ = self.active.seek(SeekFrom::End(0));
            return Err(e).with_context(|| {
                format!(
                    "appending to spool segment {}",
                    segment_path(&self.dir, active_base).display()
                )
            });
        }
        self.end += self.buf.len() as u64;
        // Give back the memory of an unusually large record.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = BytesMut::new();
        }
        Ok(self.end)
    }

    /// Makes everything appended so far durable; returns the durable end.
    pub fn sync(&mut self) -> Result<u64> {
        if self.synced < self.end {
            self.active.sync_data().context("syncing the spool")?;
            self.synced = self.end;
        }
        Ok(self.synced)
    }

    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let base = self.end;
        self.active = Self::create_segment(&self.dir, base)?;
        self.segments.push(base);
        self.end = base + HEADER;
        self.synced = self.end;
        Ok(())
    }

    /// Deletes the segments wholly below `acked`. When everything is acked
    /// and the active segment has grown past `roll_when_drained`, it is
    /// rolled first so that a keeping-up collector leaves a tiny spool.
    ///
    /// The caller must have persisted the files' offsets covering these
    /// records first: once deleted, only the checkpoint remembers them.
    pub fn remove_acked(&mut self, acked: u64, roll_when_drained: u64) -> Result<()> {
        let active_base = self.segments.last().copied().unwrap_or(0);
        if acked >= self.end && self.end - active_base > roll_when_drained {
            self.roll()?;
        }
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1] <= acked {
            let base = self.segments.remove(0);
            let path = segment_path(&self.dir, base);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The reading end, used by the sender: walks records from a position up to
/// the durable end, opening segments by name (the writer may add and delete
/// them meanwhile; deleted ones are behind any position still to be read).
pub struct SpoolReader {
    dir: PathBuf,
    pos: u64,
    current: Option<(u64, u64, BufReader<File>)>,
}

impl SpoolReader {
    pub fn new(dir: &Path, pos: u64) -> SpoolReader {
        SpoolReader {
            dir: dir.to_path_buf(),
            pos,
            current: None,
        }
    }

    /// Position of the next record to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next record and its end position, if one is complete below
    /// `durable_end`.
    pub fn next(&mut self, durable_end: u64) -> Result<Option<(Record, u64)>> {
        loop {
            if self.pos >= durable_end {
                return Ok(None);
            }
            if self.current.is_none() {
                // May step over a segment header, to the durable end.
                self.open_at()?;
                continue;
            }
            let Some((base, len, reader)) = self.current.as_mut() else {
                bail!("spool position {} is in no segment", self.pos);
            };
            if self.pos >= *base + *len {
                // Past this segment's end as last seen: it may have grown
                // (the active one), or the next one starts here.
                let next = segment_path(&self.dir, self.pos);
                if next.exists() {
                    self.current = None;
                    continue;
                }
                let grown = reader.get_ref().metadata()?.len();
                if grown == *len {
                    bail!(
                        "spool record at {} is missing (durable end {durable_end})",
                        self.pos
                    );
                }
                *len = grown;
                continue;
            }
            match read_record(reader).context("reading the spool")? {
                Some((record, size)) => {
                    self.pos += size;
                    return Ok(Some((record, self.pos)));
                }
                None => bail!(
                    "spool record at {} below the durable end {durable_end} does not read back",
                    self.pos
                ),
            }
        }
    }

    /// Opens the segment holding `pos` and seeks to it.
    fn open_at(&mut self) -> Result<()> {
        let bases = list_segments(&self.dir)?;
        let Some(&base) = bases.iter().rev().find(|&&b| b <= self.pos) else {
            bail!("spool position {} is below every segment", self.pos);
        };
        let path = segment_path(&self.dir, base);
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        if self.pos < base + HEADER {
            self.pos = base + HEADER;
        }
        file.seek(SeekFrom::Start(self.pos - base))?;
        self.current = Some((base, len, BufReader::with_capacity(256 * 1024, file)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, first: u64, lines: &'static [u8]) -> Record {
        Record {
            source_id: source.into(),
            source: "/var/log/a.log".into(),
            host: "h".into(),
            format: "auto".into(),
            first_offset: first,
            file_end: first + lines.len() as u64,
            lines: Bytes::from_static(lines),
        }
    }

    fn append(spool: &mut Spool, r: &Record) -> u64 {
        spool.append(r, &[&r.lines]).expect("append")
    }

    fn read_all(dir: &Path, from: u64, end: u64) -> Vec<Record> {
        let mut reader = SpoolReader::new(dir, from);
        let mut out = Vec::new();
        while let Some((r, _)) = reader.next(end).expect("read") {
            out.push(r);
        }
        out
    }

    #[test]
    fn records_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 100).expect("open").spool;
        let recs: Vec<Record> = (0..10).map(|i| record("s", i * 6, b"hello\n")).collect();
        for r in &recs {
            append(&mut spool, r);
        }
        let end = spool.sync().expect("sync");
        assert!(spool.segment_count() > 2, "small segments roll");
        assert_eq!(read_all(dir.path(), 0, end), recs);
        drop(spool);
        let again = Spool::open(dir.path(), 100).expect("reopen");
        assert_eq!(again.spool.end(), end);
        assert_eq!(again.torn_bytes, 0);
        assert_eq!(
            again.sources["s"],
            SourceEnd {
                stream: 60,
                file: 60
            }
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open").spool;
        append(&mut spool, &record("s", 0, b"one\n"));
        let good_end = spool.sync().expect("sync");
        append(&mut spool, &record("s", 4, b"two\n"));
        spool.sync().expect("sync");
        drop(spool);
        // A crash mid-append: the second record is cut short.
        let path = segment_path(dir.path(), 0);
        let len = fs::metadata(&path).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 3)
            .expect("truncate");
        let rec = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(rec.spool.end(), good_end);
        assert!(rec.torn_bytes > 0);
        assert_eq!(rec.sources["s"].stream, 4);
        let mut spool = rec.spool;
        append(&mut spool, &record("s", 4, b"two\n"));
        let end = spool.sync().expect("sync");
        let lines: Vec<Bytes> = read_all(dir.path(), 0, end)
            .into_iter()
            .map(|r| r.lines)
            .collect();
        assert_eq!(
            lines,
            vec![Bytes::from_static(b"one\n"), Bytes::from_static(b"two\n")]
        );
    }

    #[test]
    fn a_corrupt_record_in_the_tail_is_cut_but_older_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 60).expect("open").spool;
        for i in 0..6 {
            append(&mut spool, &record("s", i * 6, b"hello\n"));
        }
        spool.sync().expect("sync");
        drop(spool);
        let bases = list_segments(dir.path()).expect("list");
        assert!(bases.len() >= 2);
        // Flip a byte in the first (not last) segment's payload.
        let first = segment_path(dir.path(), bases[0]);
        let mut bytes = fs::read(&first).expect("read");
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        fs::write(&first, &bytes).expect("write");
        let err = Spool::open(dir.path(), 60)
            .err()
            .expect("damage is reported");
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
    }

    #[test]
    fn acked_segments_are_deleted_and_a_drained_spool_rolls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 50).expect("open").spool;
        let mut ends = Vec::new();
        for i in 0..8 {
            ends.push(append(&mut spool, &record("s", i * 6, b"hello\n")));
        }
        spool.sync().expect("sync");
        let before = spool.segment_count();
        spool.remove_acked(ends[3], u64::MAX).expect("remove");
        assert!(spool.segment_count() < before);
        assert!(spool.start() <= ends[3]);
        // Everything still unacked reads back from the acked position.
        let rest = read_all(dir.path(), ends[3], spool.end());
        assert_eq!(rest.len(), 4);
        // Fully acked: rolled and emptied.
        spool.remove_acked(spool.end(), 0).expect("remove");
        assert_eq!(spool.segment_count(), 1);
        assert_eq!(spool.bytes(), HEADER);
        assert_eq!(list_segments(dir.path()).expect("list").len(), 1);
    }

    #[test]
    fn an_empty_spool_reads_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1 << 20).expect("open").spool;
        assert!(read_all(dir.path(), 0, spool.end()).is_empty());
    }

    #[test]
    fn parts_are_concatenated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open").spool;
        let meta = record("s", 0, b"");
        spool.append(&meta, &[b"cut", b"\n"]).expect("append");
        let end = spool.sync().expect("sync");
        assert_eq!(&read_all(dir.path(), 0, end)[0].lines[..], b"cut\n");
    }
}
