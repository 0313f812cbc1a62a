//! The rule engine's state on disk: `DATA_DIR/rules/state.snapshot` and the
//! firing high-water mark `DATA_DIR/rules/hwm` (see docs/rules-state.md).
//!
//! Snapshot layout (little endian):
//!
//! ```text
//! "NOWLSNAP" | version u32 | body length u64 | crc32(body) u32 | body
//! body = WAL position u64 | written at (unix nanos) i64 | engine state
//! ```
//!
//! A hand-written binary encoding rather than JSON: a snapshot is written at
//! every index checkpoint while lines flow, on the indexer thread, and may
//! hold every key of every rule; it must be cheap to write and exact for
//! floats.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::wal::Position;

const MAGIC: &[u8; 8] = b"NOWLSNAP";
/// Bumped whenever the body's layout changes. A newer version is not
/// decoded (the engine starts empty rather than misreading state); older
/// ones from [`OLDEST_READ`] on are migrated while decoding. 2: per-key
/// clocks, window history, open spike buckets and source progress
/// instead of one watermark per rule. 3: burn_rate window rings. 4: a
/// spike key's open buckets boxed with where they start. 5: the pattern
/// miners of new_pattern and pattern_spike keys.
pub const VERSION: u32 = 5;
pub const OLDEST_READ: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

/// Why a snapshot could not be used. Never fatal: the caller warns and
/// starts with empty state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Decoding error inside a body whose checksum matched: a bug or a layout
/// change without a version bump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot body: {0}")]
pub struct DecodeError(pub String);

/// Appends primitives to a byte buffer.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        // Bit pattern, so the value comes back exactly (EWMA baselines).
        self.u64(v.to_bits());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.i64(x);
            }
            None => self.u8(0),
        }
    }
}

/// Reads primitives back; every read is bounds-checked.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError(format!(
                    "truncated at byte {} (wanted {n} more of {})",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!(
                "bad bool {b} at byte {}",
                self.pos - 1
            ))),
        }
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?)
            .map_err(|e| DecodeError(format!("bad UTF-8 at byte {at}: {e}")))
    }
    pub fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.i64()?)
        } else {
            None
        })
    }
    /// A length or count, checked against what is left so a damaged
    /// length cannot make the reader allocate gigabytes.
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(DecodeError(format!(
                "length {n} at byte {} exceeds the {left} bytes left",
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// A snapshot as read from disk: the WAL position it covers and its body.
#[derive(Debug)]
pub struct Loaded {
    pub position: Position,
    pub written_unix_nanos: i64,
    /// The format the state is in (see [`VERSION`]).
    pub version: u32,
    pub state: Vec<u8>,
}

pub fn snapshot_path(rules_dir: &Path) -> PathBuf {
    rules_dir.join("state.snapshot")
}

pub fn hwm_path(rules_dir: &Path) -> PathBuf {
    rules_dir.join("hwm")
}

/// The snapshot file's bytes (into `out`, cleared first): what
/// [`write`] puts on disk, and what a backup stores.
pub fn encode(position: Position, written_unix_nanos: i64, state: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let body_len = 16 + state.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&position.to_le_bytes());
    crc.update(&written_unix_nanos.to_le_bytes());
    crc.update(state);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body_len as u64).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&written_unix_nanos.to_le_bytes());
    out.extend_from_slice(state);
}

/// Writes a snapshot atomically: temp file, fsync, rename, fsync of the
/// directory, so a crash leaves either the old or the new one, whole.
/// `scratch` is reused between snapshots to keep a large state from
/// costing a fresh allocation each time.
pub fn write(
    path: &Path,
    position: Position,
    written_unix_nanos: i64,
    state: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<u64> {
    encode(position, written_unix_nanos, state, scratch);
    let tmp = path.with_extension("snapshot.tmp");
    crate::fsutil::write_atomic_via(path, &tmp, scratch, 0o600)?;
    Ok(scratch.len() as u64)
}

/// Reads and verifies a snapshot; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<Loaded>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |message: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes, shorter than a header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic (not a nightowl rule snapshot)".into()));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = word(8);
    if !(OLDEST_READ..=VERSION).contains(&version) {
        return Err(corrupt(format!(
            "version {version}, this build reads versions {OLDEST_READ} to {VERSION}"
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let body_len = u64::from_le_bytes(len);
    let body = &bytes[HEADER..];
    if body.len() as u64 != body_len || body_len < 16 {
        return Err(corrupt(format!(
            "body is {} bytes, header says {body_len}",
            body.len()
        )));
    }
    if crc32fast::hash(body) != word(20) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut d = Dec::new(body);
    let position = d.u64().map_err(|e| corrupt(e.to_string()))?;
    let written_unix_nanos = d.i64().map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(Loaded {
        position,
        written_unix_nanos,
        version,
        state: body[16..].to_vec(),
    }))
}

/// The firing high-water mark: the end of the last live WAL record whose
/// firings were published. Rewritten in place (12 bytes, one `pwrite`) so
/// that keeping it current costs one syscall per record that fired.
pub struct HighWater {
    file: File,
    path: PathBuf,
    value: Position,
}

impl HighWater {
    /// Opens (creating) the file; a missing, short or damaged one reads as
    /// 0, i.e. nothing to suppress, and is logged.
    pub fn open(path: &Path) -> Result<HighWater> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut buf = [0u8; 12];
        let value = match file.read_exact_at(&mut buf, 0) {
            Ok(()) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&buf[..8]);
                let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
                if crc32fast::hash(&p) == crc {
                    u64::from_le_bytes(p)
                } else {
                    tracing::warn!(path = %path.display(), "firing high-water mark damaged; replayed firings will not be suppressed");
                    0
                }
            }
            Err(_) => 0,
        };
        Ok(HighWater {
            file,
            path: path.to_path_buf(),
            value,
        })
    }

    pub fn get(&self) -> Position {
        self.value
    }

    /// Records that firings of records ending at or below `position` were
    /// published. Not fsynced here: a kill -9 keeps the page cache; the
    /// checkpoint's [`HighWater::sync`] bounds what a power loss forgets.
    pub fn advance(&mut self, position: Position) -> Result<()> {
        if position <= self.value {
            return Ok(());
        }
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&position.to_le_bytes());
        buf[8..].copy_from_slice(&crc32fast::hash(&position.to_le_bytes()).to_le_bytes());
        self.file
            .write_all_at(&buf, 0)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.value = position;
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_every_primitive() {
        let mut e = Enc::default();
        e.u8(7);
        e.u32(u32::MAX);
        e.u64(1 << 40);
        e.i64(-5);
        e.f64(0.1 + 0.2);
        e.bool(true);
        e.str("héllo");
        e.opt_i64(None);
        e.opt_i64(Some(i64::MIN));
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u32().unwrap(), u32::MAX);
        assert_eq!(d.u64().unwrap(), 1 << 40);
        assert_eq!(d.i64().unwrap(), -5);
        assert_eq!(d.f64().unwrap().to_bits(), (0.1f64 + 0.2).to_bits());
        assert!(d.bool().unwrap());
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.opt_i64().unwrap(), None);
        assert_eq!(d.opt_i64().unwrap(), Some(i64::MIN));
        assert!(d.is_empty());
        assert!(d.u8().is_err(), "reading past the end must fail");
    }

    #[test]
    fn a_huge_length_is_an_error_not_an_allocation() {
        let mut e = Enc::default();
        e.u64(u64::MAX);
        let err = Dec::new(&e.buf).bytes().unwrap_err();
        assert!(err.0.contains("exceeds"), "{err}");
    }

    #[test]
    fn file_round_trip_and_every_kind_of_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(dir.path());
        assert!(read(&path).unwrap().is_none());
        let mut scratch = Vec::new();
        write(&path, 1234, 99, b"state bytes", &mut scratch).unwrap();
        let loaded = read(&path).unwrap().unwrap();
        assert_eq!(loaded.position, 1234);
        assert_eq!(loaded.written_unix_nanos, 99);
        assert_eq!(loaded.state, b"state bytes");
        assert!(!path.with_extension("snapshot.tmp").exists());

        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");

        fs::write(&path, &good[..good.len() - 3]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("header says"), "{err}");

        let mut other = good.clone();
        other[8] = 9;
        fs::write(&path, &other).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("version 9"));

        fs::write(&path, b"garbage").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn high_water_mark_persists_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = hwm_path(dir.path());
        let mut h = HighWater::open(&path).unwrap();
        assert_eq!(h.get(), 0);
        h.advance(500).unwrap();
        h.advance(300).unwrap();
        drop(h);
        assert_eq!(HighWater::open(&path).unwrap().get(), 500);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            HighWater::open(&path).unwrap().get(),
            0,
            "damage reads as 0"
        );
    }
}
