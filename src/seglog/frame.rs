//! One frame: `[u32 len][u32 crc32(payload)][payload]`, in the byte order
//! of its [`Format`]. Recovery and replay both judge frames here, so a torn
//! tail is found the same way by both.

use std::fmt;
use std::io::{self, Read};

use super::Format;

/// Bytes of a frame before its payload.
pub const FRAME_HEADER: u64 = 8;

impl Format {
    /// The header of a frame holding `payload`. The caller has checked the
    /// length against [`Format::max_payload`].
    pub fn frame_header(&self, payload: &[u8]) -> [u8; 8] {
        let len = payload.len() as u32;
        let crc = crc32fast::hash(payload);
        let (len, crc) = if self.big_endian {
            (len.to_be_bytes(), crc.to_be_bytes())
        } else {
            (len.to_le_bytes(), crc.to_le_bytes())
        };
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&len);
        header[4..].copy_from_slice(&crc);
        header
    }

    /// Writes the header of a frame encoded in place: `frame` is
    /// [`FRAME_HEADER`] reserved bytes, then the payload.
    pub fn finish_frame(&self, frame: &mut [u8]) {
        let header = self.frame_header(&frame[FRAME_HEADER as usize..]);
        frame[..FRAME_HEADER as usize].copy_from_slice(&header);
    }

    fn parse_header(&self, h: [u8; 8]) -> (u32, u32) {
        let (len, crc) = ([h[0], h[1], h[2], h[3]], [h[4], h[5], h[6], h[7]]);
        if self.big_endian {
            (u32::from_be_bytes(len), u32::from_be_bytes(crc))
        } else {
            (u32::from_le_bytes(len), u32::from_le_bytes(crc))
        }
    }
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    ShortHeader {
        available: u64,
    },
    /// Empty payloads are never written, so a zero length can only be
    /// zero-filled garbage (its CRC would otherwise match, crc32("") == 0).
    ZeroLength,
    /// Longer than any payload this log writes: a torn length field.
    TooLong {
        len: u32,
        max: u32,
    },
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
    /// The frame is whole but its owner cannot make a record of it.
    NotARecord,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ShortHeader { available } => write!(
                f,
                "short record header ({available} of {FRAME_HEADER} bytes)"
            ),
            Defect::ZeroLength => write!(f, "zero record length (zero-filled or garbage bytes)"),
            Defect::TooLong { len, max } => {
                write!(f, "bad record length {len}: no record is longer than {max}")
            }
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
            Defect::NotARecord => write!(f, "the payload is not a valid record"),
        }
    }
}

/// Reads one frame's payload into `payload` (cleared first) and returns
/// the frame's size. `available` is how many bytes the segment should still
/// hold from here; a length beyond it is rejected before allocating, so a
/// corrupt length cannot trigger a huge allocation. The outer `io::Result`
/// is a real I/O failure; the inner `Err(Defect)` means the bytes are not a
/// valid frame.
pub fn read_frame(
    format: &Format,
    r: &mut impl Read,
    available: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Result<u64, Defect>> {
    payload.clear();
    if available < FRAME_HEADER {
        return Ok(Err(Defect::ShortHeader { available }));
    }
    let mut header = [0u8; 8];
    let got = read_up_to(r, &mut header)?;
    if got < header.len() {
        return Ok(Err(Defect::ShortHeader {
            available: got as u64,
        }));
    }
    let (len, stored) = format.parse_header(header);
    if len == 0 {
        return Ok(Err(Defect::ZeroLength));
    }
    if len > format.max_payload {
        return Ok(Err(Defect::TooLong {
            len,
            max: format.max_payload,
        }));
    }
    let body_available = available - FRAME_HEADER;
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
    Ok(Ok(FRAME_HEADER + u64::from(len)))
}

/// Like `read_exact`, but reports how much was read instead of failing at EOF,
/// because a short read is a torn frame to classify, not an I/O error.
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
