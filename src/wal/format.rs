//! On-disk format shared by recovery and replay, so both judge a record the
//! same way.
//!
//! Segment: `MAGIC` then records. Record: `[u32 LE len][u32 LE crc32(payload)][payload]`.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::Position;

pub(crate) const MAGIC: &[u8; 8] = b"NOWLWAL1";
pub(crate) const MAGIC_LEN: u64 = MAGIC.len() as u64;
pub(crate) const RECORD_HEADER_LEN: u64 = 8;

pub(crate) fn segment_path(dir: &Path, base: Position) -> PathBuf {
    dir.join(format!("{base:020}.wal"))
}

/// Parses `{base:020}.wal`; anything else is not ours and is ignored.
pub(crate) fn parse_segment_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header(payload: &[u8], len: u32) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Defect {
    ShortHeader {
        available: u64,
    },
    /// Empty payloads are never written, so a zero length can only be
    /// zero-filled garbage (its CRC would otherwise match, crc32("") == 0).
    ZeroLength,
    LengthPastEnd {
        len: u32,
        available: u64,
    },
    ShortPayload {
        len: u32,
        got: u64,
    },
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ShortHeader { available } => write!(
                f,
                "short record header ({available} of {RECORD_HEADER_LEN} bytes)"
            ),
            Defect::ZeroLength => write!(f, "zero record length (zero-filled or garbage bytes)"),
            Defect::LengthPastEnd { len, available } => write!(
                f,
                "bad record length {len}: only {available} bytes remain in the segment"
            ),
            Defect::ShortPayload { len, got } => {
                write!(f, "short payload ({got} of {len} bytes)")
            }
            Defect::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Reads one record into `payload` (cleared first). `available` is how many
/// bytes the segment should still hold from here; a length beyond it is
/// rejected before allocating, so a corrupt length cannot trigger a huge
/// allocation. The outer `io::Result` is a real I/O failure; the inner
/// `Err(Defect)` means the bytes are not a valid record.
pub(crate) fn read_record(
    r: &mut impl Read,
    available: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Result<u64, Defect>> {
    payload.clear();
    if available < RECORD_HEADER_LEN {
        return Ok(Err(Defect::ShortHeader { available }));
    }
    let mut header = [0u8; 8];
    let got = read_up_to(r, &mut header)?;
    if got < header.len() {
        return Ok(Err(Defect::ShortHeader {
            available: got as u64,
        }));
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Ok(Err(Defect::ZeroLength));
    }
    let body_available = available - RECORD_HEADER_LEN;
    if u64::from(len) > body_available {
        return Ok(Err(Defect::LengthPastEnd {
            len,
            available: body_available,
        }));
    }
    payload.reserve_exact(len as usize);
    let got = r.take(u64::from(len)).read_to_end(payload)? as u64;
    if got < u64::from(len) {
        return Ok(Err(Defect::ShortPayload { len, got }));
    }
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Ok(Err(Defect::CrcMismatch { stored, computed }));
    }
    Ok(Ok(RECORD_HEADER_LEN + u64::from(len)))
}

/// Like `read_exact`, but reports how much was read instead of failing at EOF,
/// because a short read is a torn record to classify, not an I/O error.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(payload: &[u8]) -> Vec<u8> {
        let mut v = encode_header(payload, payload.len() as u32).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("00000000000000000042.wal"), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000042.wal.tmp"), None);
        assert_eq!(parse_segment_name("99999999999999999999.wal"), None);
        let p = segment_path(Path::new("/d"), 7);
        assert_eq!(p, Path::new("/d/00000000000000000007.wal"));
    }

    #[test]
    fn record_defects() {
        let rec = encode(b"hello");
        let mut buf = Vec::new();
        let n = rec.len() as u64;
        assert_eq!(read_record(&mut &rec[..], n, &mut buf).unwrap(), Ok(13));
        assert_eq!(buf, b"hello");

        assert!(matches!(
            read_record(&mut &rec[..5], n, &mut buf).unwrap(),
            Err(Defect::ShortHeader { available: 5 })
        ));
        assert!(matches!(
            read_record(&mut &rec[..10], n, &mut buf).unwrap(),
            Err(Defect::ShortPayload { len: 5, got: 2 })
        ));
        assert!(matches!(
            read_record(&mut &rec[..], n - 1, &mut buf).unwrap(),
            Err(Defect::LengthPastEnd { len: 5, .. })
        ));
        assert!(matches!(
            read_record(&mut &[0u8; 16][..], 16, &mut buf).unwrap(),
            Err(Defect::ZeroLength)
        ));
        let mut bad = rec.clone();
        bad[9] ^= 1;
        assert!(matches!(
            read_record(&mut &bad[..], n, &mut buf).unwrap(),
            Err(Defect::CrcMismatch { .. })
        ));
    }
}
