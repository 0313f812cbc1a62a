//! The WAL record: one accepted batch plus who sent it.

use bytes::{Buf, BufMut, Bytes};

const RECORD_VERSION: u8 = 1;
/// Version 1 plus the batch's source length after the arrival time: only
/// for redacted batches, so unredacted records keep the version 1 layout.
const RECORD_VERSION_RESIZED: u8 = 2;

/// A batch as stored in the WAL. The tenant comes from the connection's
/// credential, never from the batch itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub tenant: String,
    pub agent_id: String,
    pub source_id: String,
    pub source: String,
    pub host: String,
    pub format: String,
    pub first_offset: u64,
    pub received_unix_nanos: i64,
    /// Newline-terminated lines.
    pub lines: Bytes,
    /// Set when redaction changed the lines' length: `lines` no longer
    /// spans the source's bytes one to one (see [`Resized`]).
    pub resized: Option<Box<Resized>>,
}

/// How redaction resized a batch. Offsets (acks, dedup, the checkpoint's
/// sources) stay in the source's byte space; `lines` holds the redacted
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resized {
    /// Bytes the batch spans in the source (its length before redaction).
    pub source_len: u64,
    /// Per changed line: (line index, source length minus stored length).
    /// Only needed to trim an overlapping resend, so it is kept in memory
    /// and not written to the WAL.
    pub changed: Vec<(u32, i64)>,
}

impl IngestRecord {
    pub fn end_offset(&self) -> u64 {
        let span = match &self.resized {
            Some(resized) => resized.source_len,
            None => self.lines.len() as u64,
        };
        self.first_offset + span
    }

    /// Drops the leading lines that end at or below the source offset
    /// `acked` (a line `acked` falls inside is dropped too). Works on
    /// redacted lines by walking them with their source lengths.
    pub fn trim_to(&mut self, acked: u64) {
        if acked <= self.first_offset {
            return;
        }
        let target = acked - self.first_offset;
        let Some(resized) = self.resized.take() else {
            let mut skip = target.min(self.lines.len() as u64) as usize;
            if skip > 0 && self.lines.get(skip - 1) != Some(&b'\n') {
                skip = match memchr::memchr(b'\n', &self.lines[skip..]) {
                    Some(i) => skip + i + 1,
                    None => self.lines.len(),
                };
            }
            let _ = self.lines.split_to(skip);
            self.first_offset += skip as u64;
            return;
        };
        let (mut stored, mut source, mut index) = (0usize, 0u64, 0u32);
        let mut deltas = resized.changed.iter().peekable();
        for newline in memchr::memchr_iter(b'\n', &self.lines) {
            if source >= target {
                break;
            }
            let mut len = (newline + 1 - stored) as i64;
            if let Some(&&(_, delta)) = deltas.peek().filter(|(i, _)| *i == index) {
                len += delta;
                deltas.next();
            }
            stored = newline + 1;
            source += len.max(0) as u64;
            index += 1;
        }
        let _ = self.lines.split_to(stored);
        self.first_offset += source;
        let source_len = resized.source_len.saturating_sub(source);
        let changed: Vec<(u32, i64)> = deltas.map(|&(i, d)| (i - index, d)).collect();
        if source_len != self.lines.len() as u64 {
            self.resized = Some(Box::new(Resized {
                source_len,
                changed,
            }));
        }
    }

    /// The dedup key: one agent's one source within one tenant.
    pub fn source_key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.agent_id, self.source_id)
    }

    /// Iterates the lines without their terminator (and without a trailing `\r`).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let body = self.lines.strip_suffix(b"\n").unwrap_or(&self.lines);
        let mut parts = (!body.is_empty()).then(|| body.split(|&b| b == b'\n'));
        std::iter::from_fn(move || parts.as_mut()?.next())
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
    }

    pub fn line_count(&self) -> usize {
        if self.lines.is_empty() {
            return 0;
        }
        let newlines = memchr::memchr_iter(b'\n', &self.lines).count();
        newlines + usize::from(!self.lines.ends_with(b"\n"))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + self.lines.len());
        self.encode_into(&mut buf);
        buf
    }

    /// [`IngestRecord::encode`] appended to `buf`, which the WAL thread
    /// reuses: a record is hundreds of kilobytes, and fresh buffers were a
    /// quarter of the collector's page faults.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.reserve(64 + self.lines.len());
        buf.put_u8(if self.resized.is_some() {
            RECORD_VERSION_RESIZED
        } else {
            RECORD_VERSION
        });
        for s in [
            &self.tenant,
            &self.agent_id,
            &self.source_id,
            &self.source,
            &self.host,
            &self.format,
        ] {
            // Lengths are bounded by the wire protocol's u16 strings.
            buf.put_u16(s.len().min(u16::MAX as usize) as u16);
            buf.put_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
        }
        buf.put_u64(self.first_offset);
        buf.put_i64(self.received_unix_nanos);
        if let Some(resized) = &self.resized {
            buf.put_u64(resized.source_len);
        }
        buf.put_slice(&self.lines);
    }

    pub fn decode(mut buf: Bytes) -> Result<Self, String> {
        fn string(buf: &mut Bytes, what: &str) -> Result<String, String> {
            if buf.remaining() < 2 {
                return Err(format!("truncated {what}"));
            }
            let len = buf.get_u16() as usize;
            if buf.remaining() < len {
                return Err(format!("truncated {what}"));
            }
            String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| format!("{what} not UTF-8"))
        }
        if buf.remaining() < 1 {
            return Err("empty record".into());
        }
        let version = buf.get_u8();
        if version != RECORD_VERSION && version != RECORD_VERSION_RESIZED {
            return Err(format!("unknown record version {version}"));
        }
        let tenant = string(&mut buf, "tenant")?;
        let agent_id = string(&mut buf, "agent id")?;
        let source_id = string(&mut buf, "source id")?;
        let source = string(&mut buf, "source")?;
        let host = string(&mut buf, "host")?;
        let format = string(&mut buf, "format")?;
        if buf.remaining() < 16 {
            return Err("truncated offsets".into());
        }
        let first_offset = buf.get_u64();
        let received_unix_nanos = buf.get_i64();
        let resized = if version == RECORD_VERSION_RESIZED {
            if buf.remaining() < 8 {
                return Err("truncated source length".into());
            }
            Some(Box::new(Resized {
                source_len: buf.get_u64(),
                changed: Vec::new(),
            }))
        } else {
            None
        };
        Ok(IngestRecord {
            tenant,
            agent_id,
            source_id,
            source,
            host,
            format,
            first_offset,
            received_unix_nanos,
            lines: buf,
            resized,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lines: &'static [u8]) -> IngestRecord {
        IngestRecord {
            tenant: "default".into(),
            agent_id: "a1".into(),
            source_id: "7:42".into(),
            source: "/var/log/nginx/access.log".into(),
            host: "web-1".into(),
            format: "auto".into(),
            first_offset: 100,
            received_unix_nanos: 1_700_000_000_000_000_000,
            lines: Bytes::from_static(lines),
            resized: None,
        }
    }

    #[test]
    fn roundtrip() {
        let r = sample(b"one\ntwo\n");
        let back = IngestRecord::decode(Bytes::from(r.encode())).expect("decode");
        assert_eq!(back, r);
        assert_eq!(back.end_offset(), 108);
    }

    #[test]
    fn lines_split_and_count() {
        let r = sample(b"one\r\ntwo\n\nfour\n");
        let lines: Vec<&[u8]> = r.lines().collect();
        assert_eq!(lines, vec![&b"one"[..], b"two", b"", b"four"]);
        assert_eq!(r.line_count(), 4);
        assert_eq!(sample(b"").lines().count(), 0);
        assert_eq!(sample(b"").line_count(), 0);
    }

    /// "aa\n" + "pw=[R]\n" (source "pw=secret\n": 3 bytes longer) + "cc\n".
    fn redacted() -> IngestRecord {
        let mut r = sample(b"aa\npw=[R]\ncc\n");
        r.resized = Some(Box::new(Resized {
            source_len: 3 + 10 + 3,
            changed: vec![(1, 3)],
        }));
        r
    }

    #[test]
    fn redacted_records_keep_source_offsets_through_the_wal() {
        let r = redacted();
        assert_eq!(r.end_offset(), 116);
        let back = IngestRecord::decode(Bytes::from(r.encode())).expect("decode");
        assert_eq!(back.end_offset(), 116);
        assert_eq!(back.lines, r.lines);
        // Unredacted records keep the version 1 layout.
        assert_eq!(sample(b"x\n").encode()[0], RECORD_VERSION);
    }

    #[test]
    fn trimming_a_redacted_record_counts_source_bytes() {
        let mut r = redacted();
        r.trim_to(103);
        assert_eq!((r.first_offset, &r.lines[..]), (103, &b"pw=[R]\ncc\n"[..]));
        assert_eq!(r.end_offset(), 116);
        let mut r = redacted();
        r.trim_to(113);
        assert_eq!((r.first_offset, &r.lines[..]), (113, &b"cc\n"[..]));
        assert!(r.resized.is_none(), "nothing resized is left");
        // Mid-line: the partial line goes too.
        let mut r = redacted();
        r.trim_to(105);
        assert_eq!((r.first_offset, &r.lines[..]), (113, &b"cc\n"[..]));
        assert_eq!(r.end_offset(), 116);
    }

    #[test]
    fn truncated_records_are_errors() {
        let full = sample(b"x\n").encode();
        for cut in [0, 1, 5, 20] {
            assert!(IngestRecord::decode(Bytes::from(full[..cut].to_vec())).is_err());
        }
    }
}
