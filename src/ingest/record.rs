//! The WAL record: one accepted batch plus who sent it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const RECORD_VERSION: u8 = 1;

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
}

impl IngestRecord {
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.lines.len() as u64
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
        let mut buf = BytesMut::with_capacity(64 + self.lines.len());
        buf.put_u8(RECORD_VERSION);
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
        buf.put_slice(&self.lines);
        buf.to_vec()
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
        if version != RECORD_VERSION {
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

    #[test]
    fn truncated_records_are_errors() {
        let full = sample(b"x\n").encode();
        for cut in [0, 1, 5, 20] {
            assert!(IngestRecord::decode(Bytes::from(full[..cut].to_vec())).is_err());
        }
    }
}
