//! The agent ↔ collector wire protocol.
//!
//! Every message is one length-delimited frame (4-byte big-endian length, then
//! the body). The body starts with a one-byte message type. Strings are a
//! `u16` length plus UTF-8 bytes; the batch payload runs to the end of the
//! frame so it can be handed on as a zero-copy `Bytes` slice.
//!
//! Conversation: the agent sends `Hello`; the collector answers `Welcome` or
//! `Error` and closes. Then the agent streams `Batch` frames (pipelined) and
//! the collector answers each with an `Ack`, in order. Any protocol violation
//! gets an `Error` frame naming the reason, then the connection is closed.
//!
//! Capabilities (zstd batch payloads) are negotiated without a version bump:
//! a `Hello` may carry a trailing `u32` of capability bits, and only then does
//! the `Welcome` carry a trailing `u32` of the bits the collector accepts. So
//! agents that never ask are answered exactly as before. A compressed batch is
//! its own message type (`BatchZstd`): same layout, `lines` is one zstd frame.
//!
//! `CAP_REDACT` (agent-side redaction, docs/redaction.md): the `Welcome`
//! then also carries the collector's `[redact]` rules (a `u32` length and
//! their JSON) after its capabilities, and the agent may send
//! `BatchResized`: lines it redacted before its spool, with the source
//! length they stand for and the per-line length changes, so acks and
//! dedup stay in the source's byte offsets.
//!
//! `CAP_RESUME` (docs/backup.md, "What a restore brings back"): right
//! after the `Welcome`, the collector sends one or more `Resume` frames:
//! the id of its store of lines (a data dir, kept by its backups) and, for
//! every source of this agent it holds lines of, the offset it durably
//! holds them up to; the last frame has `more = false`. A source not named
//! is at 0. An agent that had a source acked further by the same store
//! sends the missing bytes again from the file. Only a collector whose
//! offsets are exact (the WAL's sequencer; not a Kafka front) accepts it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
/// First bytes of every `Hello`, so a stray client is told what it reached.
pub const HELLO_MAGIC: &[u8; 4] = b"NOWL";
/// Default upper bound of one frame; a batch is split by the agent below it.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Default upper bound of one log line inside a batch.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_BATCH: u8 = 3;
const TYPE_ACK: u8 = 4;
const TYPE_ERROR: u8 = 5;
const TYPE_BATCH_ZSTD: u8 = 6;
const TYPE_BATCH_RESIZED: u8 = 7;
const TYPE_RESUME: u8 = 8;

/// Capability bit: the peer sends (agent) or accepts (collector) `BatchZstd`.
pub const CAP_ZSTD: u32 = 1;
/// Capability bit: the agent redacts before its spool; the collector sends
/// its rules in the welcome and accepts `BatchResized`.
pub const CAP_REDACT: u32 = 2;
/// Capability bit: the collector follows its welcome with `Resume` frames
/// (its store id and this agent's per-source offsets).
pub const CAP_RESUME: u32 = 4;
/// Largest rules document a welcome may carry.
pub const MAX_RULES_BYTES: usize = 1024 * 1024;

/// How the lines of a redacted batch differ from the source bytes they
/// stand for: the batch covers `[first_offset, first_offset + source_len)`
/// of the source; `changed` holds, per line whose length changed, its index
/// in the batch and its source length minus its sent length (newlines not
/// counted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resize {
    pub source_len: u64,
    pub changed: Vec<(u32, i64)>,
}

impl Resize {
    /// Wire bytes of the change list.
    pub fn encoded_len(&self) -> usize {
        12 + 12 * self.changed.len()
    }

    /// Checks the change list against `lines` (what is sent): indices
    /// increasing and inside the batch, no line shorter than nothing in the
    /// source, and the deltas adding up to the source length.
    pub fn check(&self, lines: &[u8]) -> Result<(), String> {
        let count = memchr::memchr_iter(b'\n', lines).count() as u64;
        let mut total = lines.len() as i64;
        let mut last: Option<u32> = None;
        for &(index, delta) in &self.changed {
            if last.is_some_and(|l| index <= l) || u64::from(index) >= count {
                return Err(format!(
                    "line change index {index} is out of order or beyond the batch's {count} lines"
                ));
            }
            last = Some(index);
            total = total
                .checked_add(delta)
                .ok_or_else(|| "line changes overflow".to_string())?;
        }
        if total < 0 || total as u64 != self.source_len {
            return Err(format!(
                "line changes add up to {total} source bytes, the batch says {}",
                self.source_len
            ));
        }
        Ok(())
    }
}

/// Reason codes carried by an [`Message::Error`] frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    BadHandshake = 1,
    UnsupportedVersion = 2,
    Unauthorized = 3,
    Malformed = 4,
    FrameTooLarge = 5,
    LineTooLarge = 6,
    Unavailable = 7,
}

impl ErrorCode {
    fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::BadHandshake,
            2 => Self::UnsupportedVersion,
            3 => Self::Unauthorized,
            4 => Self::Malformed,
            5 => Self::FrameTooLarge,
            6 => Self::LineTooLarge,
            7 => Self::Unavailable,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadHandshake => "bad_handshake",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::LineTooLarge => "line_too_large",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A batch of consecutive, newline-terminated lines of one source.
///
/// `first_offset` is the byte offset of the first line in the source; the
/// batch covers `[first_offset, first_offset + lines.len())`. That range is
/// what the collector deduplicates on, so an agent must always cut batches
/// at line boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: u64,
    /// Stable identity of the stream inside the agent (dedup key).
    pub source_id: String,
    /// Human label, e.g. the file path; indexed as `source`.
    pub source: String,
    pub host: String,
    /// Parser hint (`auto`, `combined`, `json`, ...).
    pub format: String,
    pub first_offset: u64,
    pub lines: Bytes,
}

impl Batch {
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.lines.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello {
        version: u16,
        token: String,
        agent_id: String,
    },
    Welcome {
        version: u16,
        tenant: String,
        max_frame_bytes: u32,
        max_line_bytes: u32,
    },
    Batch(Batch),
    /// A `Hello` that also names the agent's capabilities (`CAP_*` bits).
    HelloCaps {
        version: u16,
        token: String,
        agent_id: String,
        capabilities: u32,
    },
    /// The answer to `HelloCaps`: `capabilities` are the bits accepted.
    /// `redact_rules` (the collector's `[redact]` section as JSON) is there
    /// exactly when `CAP_REDACT` is accepted.
    WelcomeCaps {
        version: u16,
        tenant: String,
        max_frame_bytes: u32,
        max_line_bytes: u32,
        capabilities: u32,
        redact_rules: Option<String>,
    },
    /// A batch whose `lines` is one zstd frame of the whole lines; only
    /// after `CAP_ZSTD` was accepted.
    BatchZstd(Batch),
    /// A batch the agent redacted: `lines` (a zstd frame when `zstd`, which
    /// needs `CAP_ZSTD`) stand for `resize.source_len` source bytes. Only
    /// after `CAP_REDACT` was accepted.
    BatchResized {
        batch: Batch,
        resize: Resize,
        zstd: bool,
    },
    /// After a welcome accepting `CAP_RESUME`: `store` names the
    /// collector's store of lines; `sources` are (source id, offset held
    /// durably) of this agent's sources; more frames follow while `more`.
    Resume {
        store: String,
        sources: Vec<(String, u64)>,
        more: bool,
    },
    /// `acked_offset`: every byte of the source below it is durable.
    Ack {
        seq: u64,
        acked_offset: u64,
        duplicate: bool,
    },
    Error {
        code: u16,
        message: String,
    },
}

impl Message {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Message::Error {
            code: code as u16,
            message: message.into(),
        }
    }

    /// Describes an error frame for humans: `unauthorized: invalid token`.
    pub fn describe_error(code: u16, message: &str) -> String {
        match ErrorCode::from_u16(code) {
            Some(code) => format!("{}: {message}", code.as_str()),
            None => format!("error {code}: {message}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Frames and unframes [`Message`]s with a hard limit on the frame size.
pub struct ProtocolCodec {
    frames: LengthDelimitedCodec,
    max_frame_bytes: usize,
}

impl ProtocolCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        let frames = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(max_frame_bytes)
            .new_codec();
        ProtocolCodec {
            frames,
            max_frame_bytes,
        }
    }
}

impl Decoder for ProtocolCodec {
    type Item = Message;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        // Framing by hand rather than LengthDelimitedCodec's decoder: the
        // size is checked from the header before any body byte is buffered,
        // and the error can name it.
        if src.len() < 4 {
            return Ok(None);
        }
        let size = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if size > self.max_frame_bytes {
            if let Some(what) = http_peer(&src[..4]) {
                return Err(ProtocolError::Malformed(what.to_string()));
            }
            return Err(ProtocolError::FrameTooLarge {
                size,
                limit: self.max_frame_bytes,
            });
        }
        if src.len() < 4 + size {
            src.reserve(4 + size - src.len());
            return Ok(None);
        }
        src.advance(4);
        let frame = src.split_to(size).freeze();
        decode_body(frame).map(Some)
    }
}

/// A "frame size" that is really ASCII from an HTTP peer (a command pointed
/// at the wrong port): 1213486160 is "HTTP". Only looked at for frames over
/// the limit, so a real frame never pays for it.
fn http_peer(head: &[u8]) -> Option<&'static str> {
    match head {
        b"HTTP" => Some(
            "the other side answered in HTTP: this is an HTTPS API port (api_listen, \
             7443 by default), not the agent port (agent_listen, 7400 by default)",
        ),
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC" => Some(
            "an HTTP request reached the agent port: agents and `nightowl bench` speak \
             the agent protocol here; the HTTPS API is on api_listen (7443 by default)",
        ),
        _ => None,
    }
}

impl Encoder<Message> for ProtocolCodec {
    type Error = ProtocolError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let mut body = BytesMut::with_capacity(encoded_len_hint(&msg));
        encode_body(&msg, &mut body)?;
        if body.len() > self.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: body.len(),
                limit: self.max_frame_bytes,
            });
        }
        self.frames.encode(body.freeze(), dst)?;
        Ok(())
    }
}

fn encoded_len_hint(msg: &Message) -> usize {
    match msg {
        Message::Batch(b) | Message::BatchZstd(b) => {
            64 + b.source_id.len() + b.source.len() + b.host.len() + b.lines.len()
        }
        Message::BatchResized {
            batch: b, resize, ..
        } => {
            64 + b.source_id.len()
                + b.source.len()
                + b.host.len()
                + b.lines.len()
                + resize.encoded_len()
        }
        Message::WelcomeCaps {
            redact_rules: Some(rules),
            ..
        } => 128 + rules.len(),
        Message::Resume { store, sources, .. } => {
            16 + store.len() + sources.iter().map(|(id, _)| 10 + id.len()).sum::<usize>()
        }
        _ => 128,
    }
}

fn put_str(dst: &mut BytesMut, s: &str) -> Result<(), ProtocolError> {
    let len = u16::try_from(s.len()).map_err(|_| {
        ProtocolError::Malformed(format!("string of {} bytes is too long", s.len()))
    })?;
    dst.put_u16(len);
    dst.put_slice(s.as_bytes());
    Ok(())
}

/// A hello without capabilities: the `*Caps` variants append them, so
/// older peers read the same prefix.
fn encode_hello(
    dst: &mut BytesMut,
    version: u16,
    token: &str,
    agent_id: &str,
) -> Result<(), ProtocolError> {
    dst.put_u8(TYPE_HELLO);
    dst.put_slice(HELLO_MAGIC);
    dst.put_u16(version);
    put_str(dst, token)?;
    put_str(dst, agent_id)
}

fn encode_welcome(
    dst: &mut BytesMut,
    version: u16,
    tenant: &str,
    max_frame_bytes: u32,
    max_line_bytes: u32,
) -> Result<(), ProtocolError> {
    dst.put_u8(TYPE_WELCOME);
    dst.put_u16(version);
    put_str(dst, tenant)?;
    dst.put_u32(max_frame_bytes);
    dst.put_u32(max_line_bytes);
    Ok(())
}

/// What every batch message carries before its own fields; the lines come
/// last, as the rest of the frame.
fn encode_batch_head(dst: &mut BytesMut, b: &Batch) -> Result<(), ProtocolError> {
    dst.put_u64(b.seq);
    put_str(dst, &b.source_id)?;
    put_str(dst, &b.source)?;
    put_str(dst, &b.host)?;
    put_str(dst, &b.format)?;
    dst.put_u64(b.first_offset);
    Ok(())
}

fn encode_body(msg: &Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
    match msg {
        Message::Hello {
            version,
            token,
            agent_id,
        } => encode_hello(dst, *version, token, agent_id)?,
        Message::HelloCaps {
            version,
            token,
            agent_id,
            capabilities,
        } => {
            encode_hello(dst, *version, token, agent_id)?;
            dst.put_u32(*capabilities);
        }
        Message::Welcome {
            version,
            tenant,
            max_frame_bytes,
            max_line_bytes,
        } => encode_welcome(dst, *version, tenant, *max_frame_bytes, *max_line_bytes)?,
        Message::WelcomeCaps {
            version,
            tenant,
            max_frame_bytes,
            max_line_bytes,
            capabilities,
            redact_rules,
        } => {
            encode_welcome(dst, *version, tenant, *max_frame_bytes, *max_line_bytes)?;
            dst.put_u32(*capabilities);
            if let Some(rules) = redact_rules {
                if rules.len() > MAX_RULES_BYTES {
                    return Err(ProtocolError::Malformed(format!(
                        "redaction rules of {} bytes exceed {MAX_RULES_BYTES}",
                        rules.len()
                    )));
                }
                dst.put_u32(rules.len() as u32);
                dst.put_slice(rules.as_bytes());
            }
        }
        Message::BatchResized {
            batch: b,
            resize,
            zstd,
        } => {
            dst.put_u8(TYPE_BATCH_RESIZED);
            dst.put_u8(u8::from(*zstd));
            encode_batch_head(dst, b)?;
            dst.put_u64(resize.source_len);
            let count = u32::try_from(resize.changed.len())
                .map_err(|_| ProtocolError::Malformed("too many line changes".into()))?;
            dst.put_u32(count);
            for &(index, delta) in &resize.changed {
                dst.put_u32(index);
                dst.put_i64(delta);
            }
            dst.put_slice(&b.lines);
        }
        Message::Batch(b) | Message::BatchZstd(b) => {
            let kind = if matches!(msg, Message::BatchZstd(_)) {
                TYPE_BATCH_ZSTD
            } else {
                TYPE_BATCH
            };
            dst.put_u8(kind);
            encode_batch_head(dst, b)?;
            dst.put_slice(&b.lines);
        }
        Message::Resume {
            store,
            sources,
            more,
        } => {
            dst.put_u8(TYPE_RESUME);
            dst.put_u8(u8::from(*more));
            put_str(dst, store)?;
            let count = u32::try_from(sources.len())
                .map_err(|_| ProtocolError::Malformed("too many sources".into()))?;
            dst.put_u32(count);
            for (id, offset) in sources {
                put_str(dst, id)?;
                dst.put_u64(*offset);
            }
        }
        Message::Ack {
            seq,
            acked_offset,
            duplicate,
        } => {
            dst.put_u8(TYPE_ACK);
            dst.put_u64(*seq);
            dst.put_u64(*acked_offset);
            dst.put_u8(u8::from(*duplicate));
        }
        Message::Error { code, message } => {
            dst.put_u8(TYPE_ERROR);
            dst.put_u16(*code);
            // Truncate on a char boundary: an error must always be sendable.
            let mut end = message.len().min(u16::MAX as usize);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            put_str(dst, &message[..end])?;
        }
    }
    Ok(())
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), ProtocolError> {
        if self.buf.remaining() < n {
            return Err(ProtocolError::Malformed(format!("truncated {what}")));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    fn string(&mut self, what: &str) -> Result<String, ProtocolError> {
        let len = self.u16(what)? as usize;
        self.need(len, what)?;
        let bytes = self.buf.split_to(len);
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ProtocolError::Malformed(format!("{what} is not valid UTF-8")))
    }
    /// What [`encode_batch_head`] wrote; the lines are left empty for the
    /// caller to take last.
    fn batch_head(&mut self) -> Result<Batch, ProtocolError> {
        // Fields are read in the order they are written here.
        Ok(Batch {
            seq: self.u64("batch seq")?,
            source_id: self.string("batch source id")?,
            source: self.string("batch source")?,
            host: self.string("batch host")?,
            format: self.string("batch format")?,
            first_offset: self.u64("batch offset")?,
            lines: Bytes::new(),
        })
    }
    fn finish(&self, what: &str) -> Result<(), ProtocolError> {
        if self.buf.has_remaining() {
            return Err(ProtocolError::Malformed(format!(
                "{} trailing bytes after {what}",
                self.buf.remaining()
            )));
        }
        Ok(())
    }
}

fn decode_body(buf: Bytes) -> Result<Message, ProtocolError> {
    let mut r = Reader { buf };
    let kind = r.u8("message type")?;
    let msg = match kind {
        TYPE_HELLO => {
            r.need(4, "hello magic")?;
            let magic = r.buf.split_to(4);
            if magic.as_ref() != HELLO_MAGIC {
                return Err(ProtocolError::Malformed("bad hello magic".into()));
            }
            let version = r.u16("hello version")?;
            let token = r.string("hello token")?;
            let agent_id = r.string("hello agent id")?;
            if r.buf.has_remaining() {
                let capabilities = r.u32("hello capabilities")?;
                r.finish("hello")?;
                Message::HelloCaps {
                    version,
                    token,
                    agent_id,
                    capabilities,
                }
            } else {
                Message::Hello {
                    version,
                    token,
                    agent_id,
                }
            }
        }
        TYPE_WELCOME => {
            let version = r.u16("welcome version")?;
            let tenant = r.string("welcome tenant")?;
            let max_frame_bytes = r.u32("welcome max frame")?;
            let max_line_bytes = r.u32("welcome max line")?;
            if r.buf.has_remaining() {
                let capabilities = r.u32("welcome capabilities")?;
                let redact_rules = if capabilities & CAP_REDACT != 0 {
                    let len = r.u32("welcome redaction rules")? as usize;
                    if len > MAX_RULES_BYTES {
                        return Err(ProtocolError::Malformed(format!(
                            "redaction rules of {len} bytes exceed {MAX_RULES_BYTES}"
                        )));
                    }
                    r.need(len, "welcome redaction rules")?;
                    let bytes = r.buf.split_to(len);
                    Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                        ProtocolError::Malformed("redaction rules are not valid UTF-8".into())
                    })?)
                } else {
                    None
                };
                r.finish("welcome")?;
                Message::WelcomeCaps {
                    version,
                    tenant,
                    max_frame_bytes,
                    max_line_bytes,
                    capabilities,
                    redact_rules,
                }
            } else {
                Message::Welcome {
                    version,
                    tenant,
                    max_frame_bytes,
                    max_line_bytes,
                }
            }
        }
        TYPE_BATCH | TYPE_BATCH_ZSTD => {
            let mut batch = r.batch_head()?;
            batch.lines = std::mem::take(&mut r.buf);
            if kind == TYPE_BATCH_ZSTD {
                Message::BatchZstd(batch)
            } else {
                Message::Batch(batch)
            }
        }
        TYPE_BATCH_RESIZED => {
            let flags = r.u8("batch flags")?;
            let mut batch = r.batch_head()?;
            let source_len = r.u64("batch source length")?;
            let count = r.u32("batch line changes")? as usize;
            // Checked against what is there before anything is allocated.
            r.need(count.saturating_mul(12), "batch line changes")?;
            let mut changed = Vec::with_capacity(count);
            for _ in 0..count {
                let index = r.u32("batch line change")?;
                let delta = r.u64("batch line change")? as i64;
                changed.push((index, delta));
            }
            batch.lines = std::mem::take(&mut r.buf);
            Message::BatchResized {
                batch,
                resize: Resize {
                    source_len,
                    changed,
                },
                zstd: flags & 1 != 0,
            }
        }
        TYPE_RESUME => {
            let more = r.u8("resume flags")? & 1 != 0;
            let store = r.string("resume store")?;
            let count = r.u32("resume sources")? as usize;
            // Each entry takes at least 10 bytes: checked before allocating.
            r.need(count.saturating_mul(10), "resume sources")?;
            let mut sources = Vec::with_capacity(count);
            for _ in 0..count {
                let id = r.string("resume source id")?;
                let offset = r.u64("resume source offset")?;
                sources.push((id, offset));
            }
            r.finish("resume")?;
            Message::Resume {
                store,
                sources,
                more,
            }
        }
        TYPE_ACK => {
            let seq = r.u64("ack seq")?;
            let acked_offset = r.u64("ack offset")?;
            let duplicate = r.u8("ack flags")? != 0;
            r.finish("ack")?;
            Message::Ack {
                seq,
                acked_offset,
                duplicate,
            }
        }
        TYPE_ERROR => {
            let code = r.u16("error code")?;
            let message = r.string("error message")?;
            Message::Error { code, message }
        }
        other => {
            return Err(ProtocolError::Malformed(format!(
                "unknown message type {other}"
            )))
        }
    };
    Ok(msg)
}

/// Compresses a batch's lines into one zstd frame (level 1: the agent's
/// CPU matters more than the last few percent of bytes on the wire).
pub fn compress_lines(lines: &[u8]) -> std::io::Result<Bytes> {
    zstd::bulk::compress(lines, 1).map(Bytes::from)
}

/// Decompresses a `BatchZstd` payload, refusing to produce more than
/// `limit` bytes: a tiny frame must not expand into gigabytes (zip bomb).
pub fn decompress_lines(frame: &[u8], limit: usize) -> Result<Bytes, ProtocolError> {
    use std::io::Read;
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten();
    if let Some(size) = size.filter(|&size| size <= limit as u64) {
        // The agent's frames say their size: decompressed in one call
        // into a buffer of exactly that, not zeroed first. Anything else
        // (several frames, a size that lies) takes the streaming way.
        let mut out = Vec::with_capacity(size as usize);
        if zstd::bulk::decompress_to_buffer(frame, &mut out).is_ok() {
            return Ok(Bytes::from(out));
        }
    }
    let hint = size.unwrap_or(0).min(limit as u64) as usize;
    let mut out = Vec::with_capacity(hint);
    let decoder = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(|e| ProtocolError::Malformed(format!("zstd: {e}")))?;
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ProtocolError::Malformed(format!("zstd payload does not decompress: {e}")))?;
    if out.len() > limit {
        return Err(ProtocolError::Malformed(format!(
            "zstd payload decompresses to more than {limit} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: Message) {
        let mut codec = ProtocolCodec::new(1024);
        let mut buf = BytesMut::new();
        codec.encode(msg.clone(), &mut buf).expect("encode");
        let decoded = codec
            .decode(&mut buf)
            .expect("decode")
            .expect("complete frame");
        assert_eq!(decoded, msg);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Message::Hello {
            version: 1,
            token: "t".into(),
            agent_id: "a".into(),
        });
        roundtrip(Message::Welcome {
            version: 1,
            tenant: "default".into(),
            max_frame_bytes: 10,
            max_line_bytes: 5,
        });
        roundtrip(Message::Batch(Batch {
            seq: 7,
            source_id: "1:2".into(),
            source: "/var/log/x".into(),
            host: "web1".into(),
            format: "auto".into(),
            first_offset: 42,
            lines: Bytes::from_static(b"a\nb\n"),
        }));
        roundtrip(Message::Ack {
            seq: 7,
            acked_offset: 46,
            duplicate: true,
        });
        roundtrip(Message::error(ErrorCode::Unauthorized, "invalid token"));
        roundtrip(Message::HelloCaps {
            version: 1,
            token: "t".into(),
            agent_id: "a".into(),
            capabilities: CAP_ZSTD,
        });
        roundtrip(Message::WelcomeCaps {
            version: 1,
            tenant: "default".into(),
            max_frame_bytes: 10,
            max_line_bytes: 5,
            capabilities: CAP_ZSTD,
            redact_rules: None,
        });
        roundtrip(Message::WelcomeCaps {
            version: 1,
            tenant: "default".into(),
            max_frame_bytes: 10,
            max_line_bytes: 5,
            capabilities: CAP_ZSTD | CAP_REDACT,
            redact_rules: Some(r#"{"names":["pin"]}"#.into()),
        });
        roundtrip(Message::BatchResized {
            batch: Batch {
                seq: 9,
                source_id: "1:2".into(),
                source: "/var/log/x".into(),
                host: "web1".into(),
                format: "auto".into(),
                first_offset: 47,
                lines: Bytes::from_static(b"a\npassword=[REDACTED:password]\n"),
            },
            resize: Resize {
                source_len: 16,
                changed: vec![(1, -18)],
            },
            zstd: false,
        });
        roundtrip(Message::Resume {
            store: "0123abcd".into(),
            sources: vec![("1:2:ab".into(), 4096), ("1:3:cd/1".into(), 0)],
            more: true,
        });
        roundtrip(Message::Resume {
            store: "0123abcd".into(),
            sources: Vec::new(),
            more: false,
        });
        roundtrip(Message::BatchZstd(Batch {
            seq: 8,
            source_id: "1:2".into(),
            source: "/var/log/x".into(),
            host: "web1".into(),
            format: "auto".into(),
            first_offset: 46,
            lines: compress_lines(b"c\n").expect("compress"),
        }));
    }

    #[test]
    fn resize_lists_are_checked_against_the_lines() {
        let lines = b"a\npassword=[REDACTED:password]\nb\n";
        let ok = Resize {
            source_len: lines.len() as u64 - 18,
            changed: vec![(1, -18)],
        };
        assert_eq!(ok.check(lines), Ok(()));
        for (bad, why) in [
            (vec![(3, -18)], "beyond"),
            (vec![(1, -9), (1, -9)], "out of order"),
            (vec![(1, -17)], "add up"),
        ] {
            let resize = Resize {
                source_len: ok.source_len,
                changed: bad,
            };
            let err = resize.check(lines).expect_err("must be refused");
            assert!(err.contains(why), "{err}");
        }
        // A huge count in a short frame is refused before allocating.
        let mut resume = BytesMut::new();
        resume.put_u8(TYPE_RESUME);
        resume.put_u8(0);
        resume.put_u16(1);
        resume.put_slice(b"s");
        resume.put_u32(u32::MAX);
        assert!(decode_body(resume.freeze()).is_err());
        let mut body = BytesMut::new();
        body.put_u8(TYPE_BATCH_RESIZED);
        body.put_u8(0);
        body.put_u64(1);
        for s in ["s", "x", "h", "auto"] {
            body.put_u16(s.len() as u16);
            body.put_slice(s.as_bytes());
        }
        body.put_u64(0);
        body.put_u64(10);
        body.put_u32(u32::MAX);
        assert!(decode_body(body.freeze()).is_err());
    }

    #[test]
    fn zstd_lines_roundtrip_and_bombs_are_refused() {
        let lines = b"GET / 200\n".repeat(1000);
        let frame = compress_lines(&lines).expect("compress");
        assert!(frame.len() < lines.len() / 10);
        assert_eq!(
            &decompress_lines(&frame, lines.len()).expect("fits")[..],
            &lines[..]
        );
        let err = decompress_lines(&frame, lines.len() - 1).expect_err("over the limit");
        assert_eq!(err.code(), ErrorCode::Malformed);
        assert!(decompress_lines(b"not zstd at all", 1024).is_err());
        // Two frames: the first's size is no bound on the whole.
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        let both = decompress_lines(&two, 2 * lines.len()).expect("both frames");
        assert_eq!(both.len(), 2 * lines.len());
        assert!(
            decompress_lines(&two, lines.len()).is_err(),
            "over the limit"
        );
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_header() {
        let mut codec = ProtocolCodec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 1, 0][..]);
        match codec.decode(&mut buf) {
            Err(ProtocolError::FrameTooLarge { size, limit }) => {
                assert_eq!((size, limit), (256, 16));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn an_http_peer_is_named_instead_of_a_huge_frame() {
        let mut codec = ProtocolCodec::new(16 << 20);
        for (wire, says) in [
            (&b"HTTP/1.1 400 Bad Request\r\n"[..], "answered in HTTP"),
            (
                &b"GET /api/v1/search HTTP/1.1\r\n"[..],
                "HTTP request reached the agent port",
            ),
        ] {
            match codec.decode(&mut BytesMut::from(wire)) {
                Err(e @ ProtocolError::Malformed(_)) => {
                    assert!(e.to_string().contains(says), "{e}");
                }
                other => panic!("expected the HTTP peer to be named, got {other:?}"),
            }
        }
    }

    #[test]
    fn frames_arriving_byte_by_byte_decode_once_complete() {
        let mut codec = ProtocolCodec::new(1024);
        let mut wire = BytesMut::new();
        let msgs = [
            Message::Ack {
                seq: 1,
                acked_offset: 2,
                duplicate: false,
            },
            Message::error(ErrorCode::Malformed, "x"),
        ];
        for m in msgs.iter().cloned() {
            codec.encode(m, &mut wire).expect("encode");
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            if let Some(m) = codec.decode(&mut buf).expect("decode") {
                decoded.push(m);
            }
        }
        assert_eq!(decoded, msgs);
    }

    #[test]
    fn partial_frame_needs_more_bytes() {
        let mut codec = ProtocolCodec::new(1024);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 9, TYPE_ACK][..]);
        assert!(codec.decode(&mut buf).expect("no error").is_none());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut codec = ProtocolCodec::new(1024);
        for body in [&[99u8][..], &[TYPE_HELLO, b'X'], &[TYPE_ACK, 1, 2], &[]] {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.put_slice(body);
            assert!(codec.decode(&mut buf).is_err(), "body {body:?}");
        }
    }
}
