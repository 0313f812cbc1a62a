//! The on-disk spool: every batch read from a file is appended here, and
//! fsynced, before it is sent.
//!
//! A [`crate::seglog`] log: segment files `{base:020}.spool` start with
//! [`MAGIC`]; records are `[u32 BE len][u32 BE crc32][payload]`. A position
//! is `base + offset in the file`, and the next segment's base is the
//! previous one's end, so the bytes on disk are `end - first base`. The
//! collector's acks advance an acked position (kept in the checkpoint);
//! segments wholly below it are deleted. This file keeps what the segment
//! log does not know: the record codec, the sealing, and opening that
//! reads every record back (to rebuild each source's offsets).
//!
//! The spool is what makes the agent independent of the collector's
//! availability: files are read at their own pace into it (up to its byte
//! limit), and the sender drains it in order. After a crash, unacked records
//! are resent (the collector's dedup drops what it already has) and each
//! file resumes after the last offset recorded here.
//!
//! With a spool key (`spool_encryption_key_file`, `--spool-key-file`,
//! `NIGHTOWL_SPOOL_KEY_FILE`) each payload is sealed with AES-256-GCM:
//! `[0xE7][1][key id: 4][nonce: 12][ciphertext][tag: 16]`, the associated
//! data binding it to its spool position, so a record moved, swapped or cut
//! does not authenticate. The CRC stays over the stored bytes: a torn tail
//! is still told apart from a wrong key or tampering (CRC good, tag bad),
//! which is an error, never a cut. Plain records (version byte 1) written
//! before the key was configured still drain, but only ahead of the first
//! sealed one. See docs/encryption.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::crypto::{Key, NonceCounter, KEY_ID_LEN, NONCE_LEN, TAG_LEN};
use crate::seglog::{self, Format, Frame, SegLog, SegmentReader, FRAME_HEADER, SEGMENT_HEADER};
use crate::transport::protocol::Resize;

pub const MAGIC: &[u8; 8] = b"NOWLSPL1";
const HEADER: u64 = SEGMENT_HEADER;
const RECORD_HEADER: usize = FRAME_HEADER as usize;
/// A torn length field can claim anything; nothing the agent writes is larger.
const MAX_RECORD: u32 = 256 * 1024 * 1024;
/// The spool's on-disk format. Written through: a failed append (disk
/// full) is cut back and retried later, never left in front of the next.
static FORMAT: Format = Format {
    name: "spool",
    magic: MAGIC,
    suffix: ".spool",
    big_endian: true,
    max_payload: MAX_RECORD,
    write_buffer: 0,
    read_buffer: 256 * 1024,
};

/// First byte of a sealed payload (a plain one starts with its version, 1).
const SEALED: u8 = 0xE7;
const SEALED_VERSION: u8 = 1;
/// `[SEALED][version][key id]`, authenticated as associated data.
const SEAL_ID_LEN: usize = 2 + KEY_ID_LEN;
const SEAL_HEADER: usize = SEAL_ID_LEN + NONCE_LEN;
const AAD_PREFIX: &[u8; 24] = b"nightowl spool record v1";
use super::config::SPOOL_KEY_FILE_ENV as KEY_FILE_ENV;

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
    /// Set when redaction changed the lines' length: they stand for
    /// `source_len` stream bytes (payload version 2).
    pub resize: Option<Resize>,
}

impl Record {
    pub fn end_offset(&self) -> u64 {
        let span = match &self.resize {
            Some(resize) => resize.source_len,
            None => self.lines.len() as u64,
        };
        self.first_offset + span
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

/// Associated data of the sealed record at spool position `pos`: the
/// position (segment base + offset, so also which file) and the seal header.
fn aad(pos: u64, seal_id: &[u8]) -> [u8; 24 + 8 + SEAL_ID_LEN] {
    let mut out = [0u8; 24 + 8 + SEAL_ID_LEN];
    out[..24].copy_from_slice(AAD_PREFIX);
    out[24..32].copy_from_slice(&pos.to_be_bytes());
    out[32..].copy_from_slice(seal_id);
    out
}

/// Seals records for the writer: one nonce sequence per open spool.
struct Sealer {
    key: Arc<Key>,
    nonces: NonceCounter,
}

impl Sealer {
    /// Seals the payload encoded at `buf[RECORD_HEADER + SEAL_HEADER..]`
    /// for position `pos`, filling the seal header and appending the tag.
    fn seal(&mut self, pos: u64, buf: &mut BytesMut) -> Result<()> {
        let nonce = self.nonces.next_nonce()?;
        let h = RECORD_HEADER;
        buf[h] = SEALED;
        buf[h + 1] = SEALED_VERSION;
        buf[h + 2..h + SEAL_ID_LEN].copy_from_slice(&self.key.id());
        buf[h + SEAL_ID_LEN..h + SEAL_HEADER].copy_from_slice(&nonce);
        let aad = aad(pos, &buf[h..h + SEAL_ID_LEN]);
        let tag = self
            .key
            .seal_in_place(nonce, &aad, &mut buf[h + SEAL_HEADER..])?;
        buf.put_slice(&tag);
        Ok(())
    }
}

/// Encodes a record whose lines are `parts` concatenated (so a cut line and
/// its added newline need no copy of their own), leaving room for a seal
/// header when `sealed`; [`finish`] writes the record header.
fn encode(meta: &Record, parts: &[&[u8]], out: &mut BytesMut, sealed: bool) {
    out.clear();
    out.put_bytes(0, RECORD_HEADER + if sealed { SEAL_HEADER } else { 0 });
    // Version 2 adds the source length and line changes of redacted lines;
    // unredacted records keep the version 1 layout.
    out.put_u8(if meta.resize.is_some() { 2 } else { 1 });
    put_str(out, &meta.source_id);
    put_str(out, &meta.source);
    put_str(out, &meta.host);
    put_str(out, &meta.format);
    out.put_u64(meta.first_offset);
    out.put_u64(meta.file_end);
    if let Some(resize) = &meta.resize {
        out.put_u64(resize.source_len);
        out.put_u32(resize.changed.len() as u32);
        for &(index, delta) in &resize.changed {
            out.put_u32(index);
            out.put_i64(delta);
        }
    }
    for part in parts {
        out.put_slice(part);
    }
}

fn finish(out: &mut BytesMut) {
    FORMAT.finish_frame(out);
}

fn decode(mut payload: Bytes) -> Option<Record> {
    if payload.remaining() < 1 {
        return None;
    }
    let version = payload.get_u8();
    if version != 1 && version != 2 {
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
    let resize = if version == 2 {
        if payload.remaining() < 12 {
            return None;
        }
        let source_len = payload.get_u64();
        let count = payload.get_u32() as usize;
        if payload.remaining() < count.checked_mul(12)? {
            return None;
        }
        let changed = (0..count)
            .map(|_| (payload.get_u32(), payload.get_i64()))
            .collect();
        Some(Resize {
            source_len,
            changed,
        })
    } else {
        None
    };
    Some(Record {
        source_id,
        source,
        host,
        format,
        first_offset,
        file_end,
        lines: payload,
        resize,
    })
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    FORMAT.segment_path(dir, base)
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    Ok(seglog::list_segments(dir, &FORMAT)?)
}

/// How records are opened, and what was met so far.
struct Opener {
    key: Option<Arc<Key>>,
    /// Records ending at or below this position were acknowledged by the
    /// collector: never sent again, so one sealed with another key (before
    /// a key change) is stepped over instead of refused.
    delivered_below: u64,
    /// Plain records may only come before sealed ones (unless delivered).
    seen_sealed: bool,
    plain: u64,
    sealed: u64,
    stepped_over: u64,
}

impl Opener {
    fn new(key: Option<Arc<Key>>, delivered_below: u64) -> Opener {
        Opener {
            key,
            delivered_below,
            seen_sealed: false,
            plain: 0,
            sealed: 0,
            stepped_over: 0,
        }
    }
}

/// Where a record sits, for positions in the AAD and for error messages.
struct At<'a> {
    path: &'a Path,
    base: u64,
    offset: u64,
}

impl At<'_> {
    fn describe(&self) -> String {
        format!(
            "spool record at byte {} of {} (spool position {})",
            self.offset,
            self.path.display(),
            self.base + self.offset
        )
    }
}

/// What a whole frame of the spool holds.
enum Spooled {
    Record(Record),
    /// Delivered, and sealed with another key than today's.
    SteppedOver,
    /// Not a record: a torn tail if it ends the spool, else damage.
    Malformed,
}

/// Opens the payload of the frame at `at`. A record whose CRC holds but
/// which cannot be opened (no key, another key, altered) is an error: no
/// crash produces one.
fn open_record(payload: Vec<u8>, at: &At, opener: &mut Opener) -> Result<Spooled> {
    let size = (RECORD_HEADER + payload.len()) as u64;
    let delivered = at.base + at.offset + size <= opener.delivered_below;
    if payload.first() != Some(&SEALED) {
        if opener.seen_sealed && opener.key.is_some() && !delivered {
            bail!(
                "{} is not encrypted but follows encrypted ones: records were \
                 inserted or replaced",
                at.describe()
            );
        }
        opener.plain += 1;
        return Ok(decode(Bytes::from(payload)).map_or(Spooled::Malformed, Spooled::Record));
    }
    let other_key = payload
        .get(2..SEAL_ID_LEN)
        .is_some_and(|id| opener.key.as_ref().is_none_or(|k| k.id() != id));
    if delivered && other_key {
        opener.stepped_over += 1;
        return Ok(Spooled::SteppedOver);
    }
    let plain = open_sealed(payload, at, opener.key.as_deref())?;
    opener.seen_sealed = true;
    opener.sealed += 1;
    match decode(plain) {
        Some(record) => Ok(Spooled::Record(record)),
        None => bail!("{} decrypts to a malformed record", at.describe()),
    }
}

/// Authenticates and decrypts a sealed payload; every failure says which
/// record and what is wrong.
fn open_sealed(mut payload: Vec<u8>, at: &At, key: Option<&Key>) -> Result<Bytes> {
    if payload.len() < SEAL_HEADER + TAG_LEN || payload[1] != SEALED_VERSION {
        bail!(
            "{} is encrypted in an unknown format (version {})",
            at.describe(),
            payload.get(1).copied().unwrap_or(0)
        );
    }
    let stored_id = hex::encode(&payload[2..SEAL_ID_LEN]);
    let Some(key) = key else {
        bail!(
            "{} is encrypted (key id {stored_id}) but no spool key is configured \
             (spool_encryption_key_file, --spool-key-file or {KEY_FILE_ENV}); \
             configure the key it was written with",
            at.describe()
        );
    };
    if payload[2..SEAL_ID_LEN] != key.id() {
        bail!(
            "{} was encrypted with another key (id {stored_id}) than the configured \
             spool key (id {}); configure the key it was written with",
            at.describe(),
            hex::encode(key.id())
        );
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&payload[SEAL_ID_LEN..SEAL_HEADER]);
    let aad = aad(at.base + at.offset, &payload[..SEAL_ID_LEN]);
    let plain_len = key
        .open_in_place(nonce, &aad, &mut payload[SEAL_HEADER..])
        .map_err(|_| {
            anyhow::anyhow!(
                "{} does not authenticate with the spool key (id {}): it was altered, \
                 moved or cut",
                at.describe(),
                hex::encode(key.id())
            )
        })?
        .len();
    Ok(Bytes::from(payload).slice(SEAL_HEADER..SEAL_HEADER + plain_len))
}

/// The writing end, owned by the reading thread.
pub struct Spool {
    log: SegLog,
    segment_bytes: u64,
    buf: BytesMut,
    sealer: Option<Sealer>,
}

/// What opening found.
pub struct Recovered {
    pub spool: Spool,
    /// Per source id, the furthest offsets of the records on disk.
    pub sources: HashMap<String, SourceEnd>,
    /// Bytes cut from a torn tail (a crash mid-append).
    pub torn_bytes: u64,
    /// Records on disk stored plain and sealed.
    pub plain_records: u64,
    pub sealed_records: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, checking every record: a torn
    /// tail of the last segment is cut off; damage anywhere else is an error
    /// naming the file, since it would mean lines acknowledged to nobody and
    /// readable by nobody. With `key`, new records are sealed and every
    /// sealed record not yet delivered (at or above `acked`, the
    /// checkpoint's acknowledged position) must open with it.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        key: Option<Arc<Key>>,
        acked: u64,
    ) -> Result<Recovered> {
        let mut sources: HashMap<String, SourceEnd> = HashMap::new();
        let mut opener = Opener::new(key.clone(), acked);
        let opened = SegLog::open_reading_every(dir, &FORMAT, |frame: Frame<'_>| -> Result<bool> {
            let at = At {
                path: frame.path,
                base: frame.base,
                offset: frame.offset,
            };
            match open_record(std::mem::take(frame.payload), &at, &mut opener)? {
                Spooled::Record(record) => {
                    let e = sources.entry(record.source_id.clone()).or_default();
                    e.stream = e.stream.max(record.end_offset());
                    e.file = e.file.max(record.file_end);
                    Ok(true)
                }
                // Delivered: the checkpoint already covers its offsets.
                Spooled::SteppedOver => Ok(true),
                Spooled::Malformed => Ok(false),
            }
        })
        .map_err(|e| match e.downcast_ref::<seglog::Error>() {
            // Not a key problem: nothing but a fresh spool gets past it.
            Some(seglog::Error::Corrupt { .. } | seglog::Error::BadMagic { .. }) => {
                e.context("the spool is damaged; move the spool directory away to start afresh")
            }
            _ => e,
        })?;
        let log = opened.log;
        if key.is_some() && opener.plain > 0 {
            tracing::info!(
                plain_records = opener.plain,
                "the spool holds records written before the spool key was configured; \
                 they drain as they are, new records are encrypted"
            );
        }
        if opener.stepped_over > 0 {
            tracing::info!(
                records = opener.stepped_over,
                "stepped over delivered spool records sealed with a previous key"
            );
        }
        // Segments are deleted only once wholly acknowledged, so a first
        // one starting above the acknowledged position means unacknowledged
        // ones were removed. Checked with a key only: without one the spool
        // is not protected against edits anyway, and an old checkpoint
        // without `spool_acked` must keep working.
        let first = log.segments()[0];
        if key.is_some() && first > acked {
            bail!(
                "the spool in {} starts at position {first}, but the checkpoint says \
                 only {acked} was acknowledged: unacknowledged segments were removed; \
                 move the spool directory away to start afresh",
                dir.display()
            );
        }
        Ok(Recovered {
            spool: Spool {
                log,
                segment_bytes: segment_bytes.max(HEADER + 1),
                buf: BytesMut::new(),
                sealer: match key {
                    Some(key) => Some(Sealer {
                        key,
                        nonces: NonceCounter::new()?,
                    }),
                    None => None,
                },
            },
            sources,
            torn_bytes: opened.torn_bytes,
            plain_records: opener.plain,
            sealed_records: opener.sealed,
        })
    }

    /// End of the last record written (synced or not).
    pub fn end(&self) -> u64 {
        self.log.end()
    }

    /// First position still on disk.
    pub fn start(&self) -> u64 {
        self.log.segments()[0]
    }

    /// Where the first record still on disk starts (after its segment's
    /// header).
    pub fn first_record(&self) -> u64 {
        self.start() + HEADER
    }

    /// Bytes the spool takes on disk.
    pub fn bytes(&self) -> u64 {
        self.end() - self.start()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segments().len()
    }

    /// Appends one record (not yet durable: see [`Spool::sync`]); returns
    /// its end position. `meta.lines` is ignored: the lines are `parts`.
    /// After an error nothing of the record is in the spool, and appending
    /// may be tried again.
    pub fn append(&mut self, meta: &Record, parts: &[&[u8]]) -> Result<u64> {
        if self.log.active_len() >= self.segment_bytes {
            self.log.roll()?;
        }
        encode(meta, parts, &mut self.buf, self.sealer.is_some());
        if let Some(sealer) = &mut self.sealer {
            sealer.seal(self.log.end(), &mut self.buf)?;
        }
        finish(&mut self.buf);
        self.log
            .append_frame(&self.buf)
            .context("appending to the spool")?;
        // Give back the memory of an unusually large record.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = BytesMut::new();
        }
        Ok(self.log.end())
    }

    /// Makes everything appended so far durable; returns the durable end.
    pub fn sync(&mut self) -> Result<u64> {
        Ok(self.log.sync()?)
    }

    /// Deletes the segments wholly below `acked`. When everything is acked
    /// and the active segment has grown past `roll_when_drained`, it is
    /// rolled first so that a keeping-up collector leaves a tiny spool.
    ///
    /// The caller must have persisted the files' offsets covering these
    /// records first: once deleted, only the checkpoint remembers them.
    pub fn remove_acked(&mut self, acked: u64, roll_when_drained: u64) -> Result<()> {
        if acked >= self.end() && self.log.active_len() > roll_when_drained {
            self.log.roll()?;
        }
        self.log.remove_before(acked)?;
        Ok(())
    }
}

/// The reading end, used by the sender: walks records from a position up to
/// the durable end, opening segments by name (the writer may add and delete
/// them meanwhile; deleted ones are behind any position still to be read).
pub struct SpoolReader {
    dir: PathBuf,
    pos: u64,
    /// The segment being read, and its length as last seen.
    current: Option<(SegmentReader, u64)>,
    opener: Opener,
}

impl SpoolReader {
    pub fn new(dir: &Path, pos: u64, key: Option<Arc<Key>>) -> SpoolReader {
        SpoolReader {
            dir: dir.to_path_buf(),
            pos,
            current: None,
            // It starts at the acknowledged position: nothing it reads
            // was delivered.
            opener: Opener::new(key, 0),
        }
    }

    /// Position of the next record to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next record and its end position, if one is complete below
    /// `durable_end`.
    pub fn next(&mut self, durable_end: u64) -> Result<Option<(Record, u64)>> {
        let next = self.step(durable_end);
        if next.is_err() {
            // The segment reader's place is lost: start again at `pos`.
            self.current = None;
        }
        next
    }

    fn step(&mut self, durable_end: u64) -> Result<Option<(Record, u64)>> {
        loop {
            if self.pos >= durable_end {
                return Ok(None);
            }
            let Some((reader, len)) = self.current.as_mut() else {
                // May step over a segment header, to the durable end.
                self.open_at()?;
                continue;
            };
            if self.pos >= reader.base() + *len {
                // Past this segment's end as last seen: it may have grown
                // (the active one), or the next one starts here.
                if segment_path(&self.dir, self.pos).exists() {
                    self.current = None;
                    continue;
                }
                let grown = reader.file_len()?;
                if grown == *len {
                    bail!(
                        "spool record at {} is missing (durable end {durable_end})",
                        self.pos
                    );
                }
                *len = grown;
                continue;
            }
            let mut payload = Vec::new();
            let start = reader.read(durable_end, &mut payload).with_context(|| {
                format!(
                    "spool record at {} below the durable end {durable_end} does not read back",
                    self.pos
                )
            })?;
            let at = At {
                path: reader.path(),
                base: reader.base(),
                offset: start - reader.base(),
            };
            let end = reader.position();
            match open_record(payload, &at, &mut self.opener)? {
                Spooled::Record(record) => {
                    self.pos = end;
                    return Ok(Some((record, end)));
                }
                Spooled::SteppedOver => self.pos = end,
                Spooled::Malformed => bail!("{} does not decode", at.describe()),
            }
        }
    }

    /// Opens the segment holding `pos` and seeks to it.
    fn open_at(&mut self) -> Result<()> {
        let bases = list_segments(&self.dir)?;
        let Some(&base) = bases.iter().rev().find(|&&b| b <= self.pos) else {
            bail!("spool position {} is below every segment", self.pos);
        };
        let reader = SegmentReader::open(&FORMAT, &self.dir, base, self.pos)?;
        self.pos = reader.position();
        let len = reader.file_len()?;
        self.current = Some((reader, len));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

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
            resize: None,
        }
    }

    /// An empty spool in `dir` with 1 MiB segments.
    fn fresh(dir: &Path, key: Option<Arc<Key>>) -> Spool {
        Spool::open(dir, 1 << 20, key, 0).expect("open").spool
    }

    /// A crash mid-append: the first segment loses its last `bytes`.
    fn cut_first_segment(dir: &Path, bytes: u64) {
        let path = segment_path(dir, 0);
        let len = fs::metadata(&path).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - bytes)
            .expect("truncate");
    }

    fn append(spool: &mut Spool, r: &Record) -> u64 {
        spool.append(r, &[&r.lines]).expect("append")
    }

    fn read_all(dir: &Path, from: u64, end: u64) -> Vec<Record> {
        read_all_with(dir, from, end, None).expect("read")
    }

    fn read_all_with(
        dir: &Path,
        from: u64,
        end: u64,
        key: Option<Arc<Key>>,
    ) -> Result<Vec<Record>> {
        let mut reader = SpoolReader::new(dir, from, key);
        let mut out = Vec::new();
        while let Some((r, _)) = reader.next(end)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn a_new_spool_holds_no_record_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), None);
        assert!(spool.end() > spool.start(), "the segment's header");
        assert_eq!(spool.end(), spool.first_record());
        append(&mut spool, &record("s", 0, b"a\n"));
        assert!(spool.end() > spool.first_record());
    }

    #[test]
    fn records_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 100, None, 0).expect("open").spool;
        let recs: Vec<Record> = (0..10).map(|i| record("s", i * 6, b"hello\n")).collect();
        for r in &recs {
            append(&mut spool, r);
        }
        let end = spool.sync().expect("sync");
        assert!(spool.segment_count() > 2, "small segments roll");
        assert_eq!(read_all(dir.path(), 0, end), recs);
        drop(spool);
        let again = Spool::open(dir.path(), 100, None, 0).expect("reopen");
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
    fn redacted_records_keep_their_source_length_plain_and_sealed() {
        for key in [None, Some(Arc::new(Key::new(&[7u8; 32]).expect("key")))] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut spool = fresh(dir.path(), key.clone());
            let plain = record("s", 0, b"a\n");
            let mut redacted = record("s", 2, b"password=[REDACTED:password]\nb\n");
            redacted.resize = Some(Resize {
                source_len: 14,
                changed: vec![(0, -17)],
            });
            redacted.file_end = 16;
            append(&mut spool, &plain);
            append(&mut spool, &redacted);
            let end = spool.sync().expect("sync");
            drop(spool);
            let back = read_all_with(dir.path(), 0, end, key.clone()).expect("read");
            assert_eq!(back, vec![plain.clone(), redacted.clone()]);
            assert_eq!(back[1].end_offset(), 16);
            let again = Spool::open(dir.path(), 1 << 20, key, 0).expect("reopen");
            assert_eq!(
                again.sources["s"],
                SourceEnd {
                    stream: 16,
                    file: 16
                }
            );
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), None);
        append(&mut spool, &record("s", 0, b"one\n"));
        let good_end = spool.sync().expect("sync");
        append(&mut spool, &record("s", 4, b"two\n"));
        spool.sync().expect("sync");
        drop(spool);
        // A crash mid-append: the second record is cut short.
        cut_first_segment(dir.path(), 3);
        let rec = Spool::open(dir.path(), 1 << 20, None, 0).expect("reopen");
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
        let mut spool = Spool::open(dir.path(), 60, None, 0).expect("open").spool;
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
        let err = Spool::open(dir.path(), 60, None, 0)
            .err()
            .expect("damage is reported");
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
    }

    #[test]
    fn acked_segments_are_deleted_and_a_drained_spool_rolls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 50, None, 0).expect("open").spool;
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
        let spool = fresh(dir.path(), None);
        assert!(read_all(dir.path(), 0, spool.end()).is_empty());
    }

    /// `cargo test --release --lib -- --ignored bench_sealed_vs_plain --nocapture`:
    /// append, recover (open) and read 64 MiB in 64 KiB records, plain and
    /// sealed. Prints rates; asserts only that everything read back.
    #[test]
    #[ignore]
    fn bench_sealed_vs_plain() {
        let lines = Bytes::from(
            b"10.0.0.1 - - [25/Nov/2026:06:00:00 +0000] \"GET /x HTTP/1.1\" 200 5\n".repeat(1000),
        );
        let total: u64 = 64 << 20;
        let n = total / lines.len() as u64;
        // Alternating rounds: the first runs also warm the page cache.
        for key in [None, key(1), None, key(1), None, key(1)] {
            let label = if key.is_some() { "sealed" } else { "plain" };
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = record("s", 0, b"");
            let mut spool = Spool::open(dir.path(), 4 << 20, key.clone(), 0)
                .expect("open")
                .spool;
            let started = std::time::Instant::now();
            for _ in 0..n {
                spool.append(&meta, &[&lines]).expect("append");
            }
            let append = started.elapsed();
            let end = spool.sync().expect("sync");
            drop(spool);
            let started = std::time::Instant::now();
            Spool::open(dir.path(), 4 << 20, key.clone(), 0).expect("reopen");
            let open = started.elapsed();
            let started = std::time::Instant::now();
            let read = read_all_with(dir.path(), 0, end, key).expect("read");
            let reading = started.elapsed();
            assert_eq!(read.len() as u64, n);
            let mb = (n * lines.len() as u64) as f64 / 1e6;
            eprintln!(
                "{label}: append {:.0} MB/s, open (recovery scan) {:.0} MB/s, read {:.0} MB/s",
                mb / append.as_secs_f64(),
                mb / open.as_secs_f64(),
                mb / reading.as_secs_f64()
            );
        }
    }

    #[test]
    fn parts_are_concatenated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), None);
        let meta = record("s", 0, b"");
        spool.append(&meta, &[b"cut", b"\n"]).expect("append");
        let end = spool.sync().expect("sync");
        assert_eq!(&read_all(dir.path(), 0, end)[0].lines[..], b"cut\n");
    }

    // ------------------------------------------------------- encryption

    fn key(byte: u8) -> Option<Arc<Key>> {
        Some(Arc::new(Key::new(&[byte; 32]).expect("key")))
    }

    /// `(start, payload len)` of each record of a segment file's bytes.
    fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = HEADER as usize;
        while at + RECORD_HEADER <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            out.push((at, len));
            at += RECORD_HEADER + len;
        }
        out
    }

    /// Rewrites the record at `start` with `payload`, with a valid CRC: what
    /// someone editing the file on purpose would do.
    fn rewrite(bytes: &mut Vec<u8>, start: usize, payload: &[u8]) {
        let old = u32::from_be_bytes(bytes[start..start + 4].try_into().expect("4")) as usize;
        let mut rec = Vec::new();
        rec.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        rec.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        rec.extend_from_slice(payload);
        bytes.splice(start..start + RECORD_HEADER + old, rec);
    }

    fn marked(i: u64) -> Record {
        let lines = format!("line {i:02} carries SECRET-MARKER-7\n");
        Record {
            lines: Bytes::from(lines.into_bytes()),
            resize: None,
            ..record("s", i * 33, b"")
        }
    }

    fn spool_bytes(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for base in list_segments(dir).expect("list") {
            all.extend(fs::read(segment_path(dir, base)).expect("read"));
        }
        all
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn sealed_records_hold_no_plaintext_and_read_back_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 200, key(1), 0).expect("open").spool;
        let recs: Vec<Record> = (0..10).map(marked).collect();
        for r in &recs {
            append(&mut spool, r);
        }
        let end = spool.sync().expect("sync");
        assert!(spool.segment_count() > 2, "small segments roll");
        let disk = spool_bytes(dir.path());
        assert!(!contains(&disk, b"SECRET-MARKER"));
        assert!(!contains(&disk, b"/var/log/a.log"), "labels are sealed too");
        assert_eq!(
            read_all_with(dir.path(), 0, end, key(1)).expect("read"),
            recs
        );
        drop(spool);
        let again = Spool::open(dir.path(), 200, key(1), 0).expect("reopen");
        assert_eq!(again.spool.end(), end);
        assert_eq!((again.plain_records, again.sealed_records), (0, 10));
        assert_eq!(again.sources["s"].stream, recs[9].end_offset());
        // Appends after a reopen (a new nonce sequence) read back too.
        let mut spool = again.spool;
        append(&mut spool, &marked(10));
        let end = spool.sync().expect("sync");
        assert_eq!(
            read_all_with(dir.path(), 0, end, key(1))
                .expect("read")
                .len(),
            11
        );
    }

    #[test]
    fn a_sealed_spool_without_its_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), key(1));
        append(&mut spool, &marked(0));
        let end = spool.sync().expect("sync");
        drop(spool);
        let segment = segment_path(dir.path(), 0).display().to_string();
        let before = fs::read(&segment).expect("read");

        let err = format!(
            "{:#}",
            Spool::open(dir.path(), 1 << 20, None, 0)
                .err()
                .expect("no key")
        );
        assert!(
            err.contains(&segment) && err.contains("no spool key is configured"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Spool::open(dir.path(), 1 << 20, key(2), 0)
                .err()
                .expect("other key")
        );
        assert!(
            err.contains(&segment) && err.contains("another key"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            read_all_with(dir.path(), 0, end, key(2)).expect_err("reader, other key")
        );
        assert!(err.contains("another key"), "{err}");
        // Nothing was cut as if it were a torn tail: the right key still reads it.
        assert_eq!(fs::read(&segment).expect("read"), before);
        assert_eq!(
            read_all_with(dir.path(), 0, end, key(1))
                .expect("read")
                .len(),
            1
        );
    }

    #[test]
    fn altered_swapped_or_cut_records_do_not_authenticate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), key(1));
        for i in 0..3 {
            append(&mut spool, &marked(i));
        }
        spool.sync().expect("sync");
        drop(spool);
        let path = segment_path(dir.path(), 0);
        let original = fs::read(&path).expect("read");
        let spans = record_spans(&original);
        assert_eq!(spans.len(), 3);
        let payload = |i: usize| {
            let (at, len) = spans[i];
            original[at + RECORD_HEADER..at + RECORD_HEADER + len].to_vec()
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a flipped ciphertext byte", {
                let mut b = original.clone();
                let mut p = payload(2);
                p[SEAL_HEADER + 3] ^= 1;
                rewrite(&mut b, spans[2].0, &p);
                b
            }),
            ("two records swapped", {
                let mut b = original.clone();
                let (p0, p1) = (payload(0), payload(1));
                assert_eq!(p0.len(), p1.len());
                rewrite(&mut b, spans[0].0, &p1);
                rewrite(&mut b, spans[1].0, &p0);
                b
            }),
            ("a record cut short", {
                let mut b = original.clone();
                let p = payload(2);
                rewrite(&mut b, spans[2].0, &p[..p.len() - 5]);
                b
            }),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).expect("write");
            let err = format!(
                "{:#}",
                Spool::open(dir.path(), 1 << 20, key(1), 0)
                    .err()
                    .unwrap_or_else(|| panic!("{what} went unnoticed"))
            );
            assert!(
                err.contains("does not authenticate") && err.contains(&path.display().to_string()),
                "{what}: {err}"
            );
            // An error, not a torn tail cut off: the file is as it was.
            assert_eq!(fs::read(&path).expect("read"), bytes, "{what}");
        }
    }

    #[test]
    fn a_plain_spool_from_before_the_key_drains_then_records_are_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), None);
        append(&mut spool, &marked(0));
        append(&mut spool, &marked(1));
        spool.sync().expect("sync");
        drop(spool);

        let rec = Spool::open(dir.path(), 1 << 20, key(1), 0).expect("open with a key");
        assert_eq!((rec.plain_records, rec.sealed_records), (2, 0));
        let mut spool = rec.spool;
        append(&mut spool, &marked(2));
        let end = spool.sync().expect("sync");
        drop(spool);
        let all = read_all_with(dir.path(), 0, end, key(1)).expect("mixed reads");
        assert_eq!(all, (0..3).map(marked).collect::<Vec<_>>());
        let disk = spool_bytes(dir.path());
        assert!(
            contains(&disk, b"line 01 carries"),
            "old records stay as written"
        );
        assert!(!contains(&disk, b"line 02 carries"), "new ones are sealed");
        let rec = Spool::open(dir.path(), 1 << 20, key(1), 0).expect("reopen");
        assert_eq!((rec.plain_records, rec.sealed_records), (2, 1));
        drop(rec);

        // A plain record after a sealed one was not written by the agent.
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).expect("read");
        let mut buf = BytesMut::new();
        encode(&marked(3), &[&marked(3).lines], &mut buf, false);
        finish(&mut buf);
        bytes.extend_from_slice(&buf);
        fs::write(&path, &bytes).expect("write");
        let err = format!(
            "{:#}",
            Spool::open(dir.path(), 1 << 20, key(1), 0)
                .err()
                .expect("injected")
        );
        assert!(err.contains("follows encrypted ones"), "{err}");
    }

    #[test]
    fn a_torn_sealed_tail_is_still_cut_as_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), key(1));
        append(&mut spool, &marked(0));
        let good_end = spool.sync().expect("sync");
        append(&mut spool, &marked(1));
        spool.sync().expect("sync");
        drop(spool);
        cut_first_segment(dir.path(), 3);
        let rec = Spool::open(dir.path(), 1 << 20, key(1), 0).expect("reopen");
        assert_eq!(rec.spool.end(), good_end);
        assert!(rec.torn_bytes > 0);
        assert_eq!(
            read_all_with(dir.path(), 0, good_end, key(1)).expect("read"),
            vec![marked(0)]
        );
    }

    #[test]
    fn removed_unacknowledged_segments_are_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 150, key(1), 0).expect("open").spool;
        for i in 0..6 {
            append(&mut spool, &marked(i));
        }
        spool.sync().expect("sync");
        drop(spool);
        let bases = list_segments(dir.path()).expect("list");
        assert!(bases.len() >= 3);
        fs::remove_file(segment_path(dir.path(), bases[0])).expect("remove");
        let err = format!(
            "{:#}",
            Spool::open(dir.path(), 150, key(1), HEADER)
                .err()
                .expect("noticed")
        );
        assert!(
            err.contains("unacknowledged segments were removed"),
            "{err}"
        );
        // Acknowledged up to there: a normal deletion.
        Spool::open(dir.path(), 150, key(1), bases[1]).expect("acked");
    }

    #[test]
    fn a_new_key_steps_over_delivered_records_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = fresh(dir.path(), key(1));
        append(&mut spool, &marked(0));
        let first_end = append(&mut spool, &marked(1));
        append(&mut spool, &marked(2));
        let end = spool.sync().expect("sync");
        drop(spool);
        // Record 2 is not delivered yet: key 1 is still needed.
        let err = format!(
            "{:#}",
            Spool::open(dir.path(), 1 << 20, key(2), first_end)
                .err()
                .expect("undelivered")
        );
        assert!(err.contains("another key"), "{err}");
        // Everything delivered (drained): key 2 takes over; so does no key.
        Spool::open(dir.path(), 1 << 20, None, end).expect("no key after a drain");
        let rec = Spool::open(dir.path(), 1 << 20, key(2), end).expect("rotated");
        assert!(
            rec.sources.is_empty(),
            "delivered records were stepped over"
        );
        let mut spool = rec.spool;
        let from = spool.end();
        append(&mut spool, &marked(3));
        let end = spool.sync().expect("sync");
        drop(spool);
        assert_eq!(
            read_all_with(dir.path(), from, end, key(2)).expect("read"),
            vec![marked(3)]
        );
        // A reader from the start would need key 1 for records 0-2.
        assert!(read_all_with(dir.path(), 0, end, key(2)).is_err());
    }
}
