//! One JSON object per line: nginx `log_format ... escape=json`, Caddy,
//! Elastic Common Schema, and the structured loggers that use similar names.
//!
//! The object is walked with a serde visitor instead of being built into a
//! `serde_json::Value`: unknown keys are skipped without allocating, and
//! strings without escapes are borrowed from the line. Keys are compared
//! lowercased with `-` read as `_`, and nested objects are addressed by dotted
//! paths, so `{"http":{"request":{"method":"GET"}}}` and
//! `{"http.request.method":"GET"}` mean the same. When several keys map to the
//! same field, the most specific one wins regardless of order (see
//! [`classify`]).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::combined::split_request;
use super::timestamp::{epoch_float, epoch_int, parse_any};
use super::{Event, Format, ParseError};

pub(super) fn parse(line: &[u8]) -> Result<Event<'_>, ParseError> {
    let mut builder = Builder::default();
    if let Err(e) = walk::<FromLine>(line, &mut builder) {
        // serde_json rejects invalid UTF-8 in strings, but nginx `escape=json`
        // passes bytes >= 0x80 through as the client sent them. Such lines
        // get a second, owning pass over a repaired copy; anything else was
        // not JSON and keeps the first error, whose column matches the line.
        let Cow::Owned(repaired) = String::from_utf8_lossy(line) else {
            return Err(json_error(&e, line.len()));
        };
        builder = Builder::default();
        walk::<FromCopy>(repaired.as_bytes(), &mut builder)
            .map_err(|_| json_error(&e, line.len()))?;
    }
    builder.ev.format = Format::Json;
    if let Some(forwarded) = builder.forwarded {
        let peer = builder.ev.client_ip;
        if peer.is_none_or(super::proxy::is_internal) {
            builder.ev.client_ip = Some(forwarded);
        }
    }
    Ok(builder.ev)
}

fn walk<'de, 'a, S: Source<'de, 'a>>(
    input: &'de [u8],
    builder: &mut Builder<'a>,
) -> Result<(), serde_json::Error> {
    let mut path = Path::default();
    let mut de = serde_json::Deserializer::from_slice(input);
    (&mut de).deserialize_map(ObjectVisitor::<S> {
        b: builder,
        path: &mut path,
        depth: 0,
        source: PhantomData,
    })?;
    de.end()
}

/// Where the deserializer's borrowed strings live: in the line itself, so
/// they can stay borrowed, or in a temporary repaired copy, so they must be
/// copied out.
trait Source<'de, 'a> {
    fn text(v: &'de str) -> Text<'a, 'de>;
}

struct FromLine;

impl<'a> Source<'a, 'a> for FromLine {
    fn text(v: &'a str) -> Text<'a, 'a> {
        Text::Line(v)
    }
}

struct FromCopy;

impl<'de, 'a> Source<'de, 'a> for FromCopy {
    fn text(v: &'de str) -> Text<'a, 'de> {
        Text::Transient(v)
    }
}

fn json_error(e: &serde_json::Error, len: usize) -> ParseError {
    use serde_json::error::Category;
    let reason = match e.classify() {
        Category::Eof => "unexpected end of JSON",
        Category::Syntax => "invalid JSON",
        Category::Data => "expected a JSON object",
        Category::Io => "unreadable JSON",
    };
    // serde_json counts columns from 1 and puts end-of-input errors on the
    // last byte; the column where more input was expected is the length.
    let column = match e.classify() {
        Category::Eof => len,
        _ => e.column().saturating_sub(1),
    };
    ParseError::invalid(Format::Json, reason, column)
}

/// Nesting below this is skipped: no log schema puts fields deeper.
const MAX_DEPTH: u8 = 6;

/// Dotted, normalised key path of the value being visited, kept on the stack
/// so nested keys cost no allocation.
struct Path {
    buf: [u8; 96],
    len: usize,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            buf: [0; 96],
            len: 0,
        }
    }
}

impl Path {
    /// Appends a key, returning the length to truncate back to, or `None` if
    /// the path would not fit (such a key cannot be one we know).
    fn push(&mut self, key: &str) -> Option<usize> {
        let prev = self.len;
        let start = prev + usize::from(prev > 0);
        let end = start.checked_add(key.len())?;
        if end > self.buf.len() {
            return None;
        }
        if prev > 0 {
            self.buf[prev] = b'.';
        }
        for (dst, &c) in self.buf[start..end].iter_mut().zip(key.as_bytes()) {
            *dst = if c == b'-' {
                b'_'
            } else {
                c.to_ascii_lowercase()
            };
        }
        self.len = end;
        Some(prev)
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Time,
    Host,
    ClientIp,
    /// An `X-Forwarded-For` value (`proxy.rs`).
    Forwarded,
    User,
    Method,
    Path,
    Protocol,
    Status,
    Bytes,
    Referer,
    UserAgent,
    /// Multiplier from the key's unit to seconds.
    Duration(f64),
    App,
    Severity,
    Message,
    /// A whole `GET /x HTTP/1.1` request line.
    RequestLine,
}

/// Maps a normalised key path to a field and a rank; lower ranks win. ECS
/// names rank first, then the names of the nginx/Apache variables, then
/// generic names that other schemas use for something close.
fn classify(path: &[u8]) -> Option<(Field, u8)> {
    use Field::*;
    let f = match path {
        b"@timestamp" => (Time, 0),
        b"timestamp" | b"time_iso8601" => (Time, 1),
        b"time" | b"datetime" => (Time, 2),
        b"ts" | b"msec" | b"@t" => (Time, 3),
        b"time_local" => (Time, 4),
        b"date" => (Time, 5),
        b"event.created" => (Time, 6),

        b"client.ip" => (ClientIp, 0),
        b"client_ip" | b"clientip" | b"request.client_ip" => (ClientIp, 1),
        b"remote_addr" | b"remoteaddr" | b"remote_ip" | b"remoteip" | b"request.remote_ip"
        | b"client_addr" => (ClientIp, 2),
        b"source.ip" | b"src_ip" => (ClientIp, 3),
        b"ip" => (ClientIp, 4),
        b"client.address" | b"source.address" => (ClientIp, 5),
        b"remote_host" | b"client" => (ClientIp, 6),
        b"http_x_forwarded_for" | b"x_forwarded_for" | b"forwarded_for" | b"xff" => (Forwarded, 0),

        b"host.name" | b"host.hostname" => (Host, 0),
        b"hostname" => (Host, 1),
        b"host" => (Host, 2),
        b"server_name" | b"servername" | b"vhost" => (Host, 3),
        b"http_host" | b"request.host" => (Host, 4),
        b"url.domain" => (Host, 5),

        b"user.name" => (User, 0),
        b"remote_user" | b"remoteuser" => (User, 1),
        b"user" | b"username" | b"user_name" => (User, 2),
        b"user_id" => (User, 3),

        b"http.request.method" => (Method, 0),
        b"method" | b"request_method" | b"requestmethod" | b"http_method" | b"httpmethod"
        | b"request.method" => (Method, 1),
        b"verb" => (Method, 3),

        // Targets as sent (with query) before normalised paths: nginx $uri
        // and ECS url.path have lost the query string.
        b"url.original" => (Path, 0),
        b"request_uri" | b"requesturi" | b"request.uri" => (Path, 1),
        b"url" | b"request_url" => (Path, 3),
        b"uri" | b"path" => (Path, 4),
        b"url.path" | b"request_path" => (Path, 5),
        b"url.full" => (Path, 6),

        b"protocol" | b"server_protocol" | b"request_protocol" | b"proto" | b"request.proto"
        | b"http_version" | b"httpversion" | b"http.version" => (Protocol, 1),

        b"http.response.status_code" => (Status, 0),
        b"status" | b"status_code" | b"statuscode" => (Status, 1),
        b"http_status" | b"response_code" => (Status, 2),
        b"response" => (Status, 3),

        b"http.response.body.bytes" => (Bytes, 0),
        b"bytes" | b"body_bytes_sent" => (Bytes, 1),
        b"bytes_sent" | b"response_size" | b"responsesize" | b"http.response.bytes" => (Bytes, 2),
        b"size" => (Bytes, 3),

        b"http.request.referrer" => (Referer, 0),
        b"referer" | b"referrer" | b"http_referer" | b"http_referrer" => (Referer, 1),
        b"request.headers.referer" => (Referer, 2),

        b"user_agent.original" => (UserAgent, 0),
        b"user_agent" | b"useragent" | b"http_user_agent" => (UserAgent, 1),
        b"agent" | b"ua" | b"request.headers.user_agent" => (UserAgent, 2),

        b"event.duration" => (Duration(1e-9), 0),
        b"duration" | b"request_time" | b"requesttime" => (Duration(1.0), 1),
        b"duration_ms" => (Duration(1e-3), 1),
        b"duration_us" => (Duration(1e-6), 1),
        b"duration_ns" => (Duration(1e-9), 1),
        b"latency" | b"response_time" | b"responsetime" => (Duration(1.0), 2),
        b"latency_ms" => (Duration(1e-3), 2),
        b"elapsed" => (Duration(1.0), 3),
        // IIS `time-taken` is in milliseconds.
        b"time_taken" => (Duration(1e-3), 3),

        b"service.name" => (App, 0),
        b"app" | b"application" | b"app_name" | b"appname" => (App, 1),
        b"program" | b"service" | b"syslog_identifier" => (App, 2),
        b"process.name" => (App, 3),
        b"logger" => (App, 4),

        b"log.syslog.severity.code" => (Severity, 0),
        b"severity" | b"log.level" => (Severity, 1),
        b"level" | b"loglevel" => (Severity, 2),
        b"priority" => (Severity, 3),

        b"message" => (Message, 0),
        b"msg" => (Message, 1),
        b"short_message" => (Message, 2),
        // Docker's json-file driver.
        b"log" => (Message, 3),

        b"request" => (RequestLine, 2),
        _ => return None,
    };
    Some(f)
}

/// Objects worth descending into; everything else (headers, TLS details,
/// arbitrary payloads) is skipped unparsed.
fn is_parent(path: &[u8]) -> bool {
    matches!(
        path,
        b"client"
            | b"source"
            | b"http"
            | b"http.request"
            | b"http.response"
            | b"http.response.body"
            | b"url"
            | b"user_agent"
            | b"user"
            | b"host"
            | b"event"
            | b"log"
            | b"log.syslog"
            | b"log.syslog.severity"
            | b"service"
            | b"process"
            | b"request"
            | b"request.headers"
    )
}

/// A JSON string: borrowed from the line when it had no escapes, else only
/// valid during the visit.
#[derive(Clone, Copy)]
enum Text<'a, 't> {
    Line(&'a str),
    Transient(&'t str),
}

impl<'a> Text<'a, '_> {
    fn as_str(&self) -> &str {
        match *self {
            Text::Line(s) | Text::Transient(s) => s,
        }
    }

    fn to_cow(self) -> Cow<'a, str> {
        match self {
            Text::Line(s) => Cow::Borrowed(s),
            Text::Transient(s) => Cow::Owned(s.to_owned()),
        }
    }
}

#[derive(Clone, Copy)]
enum Scalar<'a, 't> {
    Str(Text<'a, 't>),
    U(u64),
    I(i64),
    F(f64),
}

impl Scalar<'_, '_> {
    fn uint(&self) -> Option<u64> {
        match *self {
            Scalar::U(v) => Some(v),
            Scalar::I(v) => u64::try_from(v).ok(),
            Scalar::F(v) if v >= 0.0 && v.fract() == 0.0 && v < 1.8e19 => Some(v as u64),
            Scalar::F(_) => None,
            Scalar::Str(t) => t.as_str().trim().parse().ok(),
        }
    }

    fn float(&self) -> Option<f64> {
        match *self {
            Scalar::U(v) => Some(v as f64),
            Scalar::I(v) => Some(v as f64),
            Scalar::F(v) => Some(v),
            Scalar::Str(t) => t.as_str().trim().parse().ok(),
        }
    }
}

const SLOTS: usize = 15;

#[derive(Default)]
struct Builder<'a> {
    ev: Event<'a>,
    /// The client an `X-Forwarded-For` key names, applied once every key
    /// is read (the peer's key may come after it).
    forwarded: Option<IpAddr>,
    /// Per Event field: 0 when unset, else 1 + rank of the key that set it.
    taken: [u8; SLOTS],
}

impl<'a> Builder<'a> {
    /// Whether a key of `rank` may (over)write `slot`; claims it if so.
    fn claim(&mut self, slot: usize, rank: u8) -> bool {
        let cur = self.taken[slot];
        if cur == 0 || rank + 1 < cur {
            self.taken[slot] = rank + 1;
            true
        } else {
            false
        }
    }

    fn apply(&mut self, path: &[u8], v: Scalar<'a, '_>) {
        let Some((field, rank)) = classify(path) else {
            return;
        };
        match field {
            Field::Time => {
                let t = match v {
                    Scalar::Str(t) => parse_any(t.as_str()),
                    Scalar::U(n) => i64::try_from(n).ok().and_then(epoch_int),
                    Scalar::I(n) => epoch_int(n),
                    Scalar::F(f) => epoch_float(f),
                };
                if let Some(t) = t {
                    if self.claim(0, rank) {
                        self.ev.timestamp = Some(t);
                    }
                }
            }
            Field::Host => {
                if let Some(s) = text_value(v) {
                    if self.claim(1, rank) {
                        self.ev.host = Some(s.to_cow());
                    }
                }
            }
            Field::ClientIp => {
                if let Some(ip) = text_value(v).and_then(|t| loose_ip(t.as_str())) {
                    if self.claim(2, rank) {
                        self.ev.client_ip = Some(ip);
                    }
                }
            }
            Field::Forwarded => {
                if let Some(t) = text_value(v) {
                    // Internal-only peers are the caller's to judge: give
                    // the hop that would be the client.
                    self.forwarded = super::proxy::client_behind(None, t.as_str());
                }
            }
            Field::User => {
                if let Some(s) = text_value(v) {
                    if self.claim(3, rank) {
                        self.ev.user = Some(s.to_cow());
                    }
                }
            }
            Field::Method => {
                if let Some(s) = text_value(v) {
                    if self.claim(4, rank) {
                        self.ev.method = Some(s.to_cow());
                    }
                }
            }
            Field::Path => {
                if let Some(s) = text_value(v) {
                    if self.claim(5, rank) {
                        self.ev.path = Some(s.to_cow());
                    }
                }
            }
            Field::Protocol => {
                if let Some(s) = text_value(v) {
                    if self.claim(6, rank) {
                        self.ev.protocol = Some(protocol(s));
                    }
                }
            }
            Field::Status => {
                if let Some(code) = v.uint().filter(|&c| c <= 999) {
                    if self.claim(7, rank) {
                        self.ev.status = Some(code as u16);
                    }
                }
            }
            Field::Bytes => {
                if let Some(n) = v.uint() {
                    if self.claim(8, rank) {
                        self.ev.bytes = Some(n);
                    }
                }
            }
            Field::Referer => {
                if let Some(s) = text_value(v) {
                    if self.claim(9, rank) {
                        self.ev.referer = Some(s.to_cow());
                    }
                }
            }
            Field::UserAgent => {
                if let Some(s) = text_value(v) {
                    if self.claim(10, rank) {
                        self.ev.user_agent = Some(s.to_cow());
                    }
                }
            }
            Field::Duration(scale) => {
                let d = match v {
                    Scalar::Str(t) => duration_text(t.as_str(), scale),
                    _ => v.float().map(|f| f * scale),
                };
                if let Some(d) = d.filter(|d| d.is_finite() && *d >= 0.0) {
                    if self.claim(11, rank) {
                        self.ev.duration = Some(d);
                    }
                }
            }
            Field::App => {
                if let Some(s) = text_value(v) {
                    if self.claim(12, rank) {
                        self.ev.app = Some(s.to_cow());
                    }
                }
            }
            Field::Severity => {
                let sev = match v {
                    Scalar::Str(t) => severity_name(t.as_str()),
                    _ => v.uint().and_then(severity_number),
                };
                if let Some(sev) = sev {
                    if self.claim(13, rank) {
                        self.ev.severity = Some(sev);
                    }
                }
            }
            Field::Message => {
                if let Scalar::Str(t) = v {
                    if !t.as_str().is_empty() && self.claim(14, rank) {
                        self.ev.message = Some(t.to_cow());
                    }
                }
            }
            Field::RequestLine => {
                if let Scalar::Str(t) = v {
                    self.request_line(t, rank);
                }
            }
        }
    }

    fn request_line(&mut self, t: Text<'a, '_>, rank: u8) {
        let (method, target, proto) = split_request(t.as_str().as_bytes());
        // The parts are ASCII-delimited subslices of a str, so they are str
        // too; re-slicing by offset keeps them borrowed from the line.
        let base = t.as_str().as_ptr() as usize;
        let part = |b: Option<&[u8]>| {
            let b = b?;
            let start = b.as_ptr() as usize - base;
            Some(match t {
                Text::Line(s) => Cow::Borrowed(s.get(start..start + b.len())?),
                Text::Transient(s) => Cow::Owned(s.get(start..start + b.len())?.to_owned()),
            })
        };
        if let Some(m) = part(method) {
            if self.claim(4, rank) {
                self.ev.method = Some(m);
            }
        }
        if let Some(p) = part(target) {
            if self.claim(5, rank) {
                self.ev.path = Some(p);
            }
        }
        if let Some(p) = part(proto) {
            if self.claim(6, rank) {
                self.ev.protocol = Some(p);
            }
        }
    }
}

/// Strings only; nginx writes `""` for unset variables and `-` in some
/// templates, neither is a value.
fn text_value<'a, 't>(v: Scalar<'a, 't>) -> Option<Text<'a, 't>> {
    match v {
        Scalar::Str(t) if !t.as_str().is_empty() && t.as_str() != "-" => Some(t),
        _ => None,
    }
}

/// ECS `http.version` is a bare `1.1`; the Event keeps request-line spelling.
fn protocol<'a>(t: Text<'a, '_>) -> Cow<'a, str> {
    let s = t.as_str();
    if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        Cow::Owned(format!("HTTP/{s}"))
    } else {
        t.to_cow()
    }
}

/// Addresses as proxies and frameworks write them: bare, with a port, in
/// brackets, or an X-Forwarded-For list (the first entry is the client).
fn loose_ip(s: &str) -> Option<IpAddr> {
    let first = s.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            first
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
}

/// A number in the key's unit, or a number with its own unit suffix as Go
/// and Traefik-style loggers write (`"12.5ms"`).
fn duration_text(s: &str, scale: f64) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some(v * scale);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let unit_scale = match unit.trim() {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" | "μs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(v * unit_scale)
}

fn severity_name(s: &str) -> Option<u8> {
    const NAMES: [(&str, u8); 17] = [
        ("emerg", 0),
        ("emergency", 0),
        ("panic", 0),
        ("alert", 1),
        ("crit", 2),
        ("critical", 2),
        ("fatal", 2),
        ("err", 3),
        ("error", 3),
        ("warn", 4),
        ("warning", 4),
        ("notice", 5),
        ("info", 6),
        ("information", 6),
        ("informational", 6),
        ("debug", 7),
        ("trace", 7),
    ];
    let s = s.trim();
    if let Some(&(_, sev)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Some(sev);
    }
    s.parse().ok().and_then(severity_number)
}

/// Syslog numbers as is; bunyan/pino levels (10 trace … 60 fatal) mapped.
fn severity_number(n: u64) -> Option<u8> {
    match n {
        0..=7 => Some(n as u8),
        10 | 20 => Some(7),
        30 => Some(6),
        40 => Some(4),
        50 => Some(3),
        60 => Some(2),
        _ => None,
    }
}

struct ObjectVisitor<'x, 'a, S> {
    b: &'x mut Builder<'a>,
    path: &'x mut Path,
    depth: u8,
    source: PhantomData<S>,
}

impl<'de, 'a, S: Source<'de, 'a>> Visitor<'de> for ObjectVisitor<'_, 'a, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(pushed) = map.next_key_seed(KeySeed(&mut *self.path))? {
            let Some(prev) = pushed else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let here = self.path.bytes();
            if classify(here).is_some() || is_parent(here) {
                map.next_value_seed(ValueSeed::<S> {
                    b: &mut *self.b,
                    path: &mut *self.path,
                    depth: self.depth + 1,
                    source: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            self.path.len = prev;
        }
        Ok(())
    }
}

/// Writes each key straight into the path buffer, so escaped keys need no
/// allocation either.
struct KeySeed<'p>(&'p mut Path);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.push(key))
    }
}

struct ValueSeed<'x, 'a, S> {
    b: &'x mut Builder<'a>,
    path: &'x mut Path,
    depth: u8,
    source: PhantomData<S>,
}

impl<'de, 'a, S: Source<'de, 'a>> DeserializeSeed<'de> for ValueSeed<'_, 'a, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'a, S: Source<'de, 'a>> Visitor<'de> for ValueSeed<'_, 'a, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.b.apply(self.path.bytes(), Scalar::Str(S::text(v)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.b
            .apply(self.path.bytes(), Scalar::Str(Text::Transient(v)));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.b.apply(self.path.bytes(), Scalar::U(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.b.apply(self.path.bytes(), Scalar::I(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.b.apply(self.path.bytes(), Scalar::F(v));
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth < MAX_DEPTH && is_parent(self.path.bytes()) {
            ObjectVisitor::<S> {
                b: self.b,
                path: self.path,
                depth: self.depth,
                source: PhantomData,
            }
            .visit_map(map)
        } else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }

    /// Header values come as arrays (Caddy: `"User-Agent": ["curl/8"]`); the
    /// first element stands for the field.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth < MAX_DEPTH {
            seq.next_element_seed(ValueSeed::<S> {
                b: self.b,
                path: self.path,
                depth: self.depth + 1,
                source: PhantomData,
            })?;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, ParseContext};
    use std::net::Ipv4Addr;

    const CTX: ParseContext = ParseContext {
        now_nanos: 1_700_000_000_000_000_000,
    };

    fn json(line: &str) -> Event<'_> {
        match parse_line(line.as_bytes(), Format::Auto, &CTX) {
            Ok(ev) => ev,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn s(v: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(v))
    }

    #[test]
    fn a_forwarded_header_names_the_client_behind_an_internal_peer() {
        let line = |peer: &str, xff: &str| {
            format!(
                r#"{{"remote_addr":"{peer}","request":"GET / HTTP/1.1","status":200,"http_x_forwarded_for":"{xff}"}}"#
            )
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("address"));
        let client = |l: String| parse(l.as_bytes()).expect("parses").client_ip;
        assert_eq!(
            client(line("10.0.0.2", "203.0.113.50, 10.0.1.1")),
            ip("203.0.113.50")
        );
        assert_eq!(
            client(line("198.51.100.4", "203.0.113.50")),
            ip("198.51.100.4")
        );
        assert_eq!(client(line("10.0.0.2", "")), ip("10.0.0.2"));
        // The header first, the peer after it.
        let l = r#"{"http_x_forwarded_for":"203.0.113.50","remote_addr":"10.0.0.2"}"#;
        assert_eq!(
            parse(l.as_bytes()).expect("parses").client_ip,
            ip("203.0.113.50")
        );
    }

    #[test]
    fn nginx_escape_json() {
        // log_format json escape=json '{"time_local":"$time_local","remote_addr":"$remote_addr",...}'
        let line = r#"{"time_local":"24/Nov/2024:06:25:02 +0000","remote_addr":"203.0.113.50","remote_user":"","request":"GET /api/v2/items?page=2 HTTP/1.1","status": "200","body_bytes_sent":"5120","request_time":"0.042","http_referrer":"https://example.com/","http_user_agent":"Mozilla/5.0 (compatible; \"Bot\"/1.0)","http_x_forwarded_for":"","host":"api.example.com"}"#;
        let ev = json(line);
        assert_eq!(
            ev,
            Event {
                format: Format::Json,
                timestamp: Some(1_732_429_502_000_000_000),
                host: s("api.example.com"),
                client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50))),
                user: None,
                method: s("GET"),
                path: s("/api/v2/items?page=2"),
                protocol: s("HTTP/1.1"),
                status: Some(200),
                bytes: Some(5120),
                referer: s("https://example.com/"),
                user_agent: Some(Cow::Owned("Mozilla/5.0 (compatible; \"Bot\"/1.0)".into())),
                duration: Some(0.042),
                ..Event::default()
            }
        );
        assert!(matches!(ev.method, Some(Cow::Borrowed(_))));
        assert!(matches!(ev.user_agent, Some(Cow::Owned(_))));
    }

    #[test]
    fn nginx_json_with_numbers_and_iso_time() {
        let ev = json(
            r#"{"time_iso8601":"2024-11-24T07:25:02+01:00","msec":"1732429502.123","remote_addr":"2001:db8::1","request_method":"POST","request_uri":"/login?next=%2F","uri":"/login","server_protocol":"HTTP/2.0","status":401,"bytes_sent":900,"body_bytes_sent":312,"request_time":0.003,"upstream_response_time":"0.002","http_user_agent":"curl/8.5.0","server_name":"example.com"}"#,
        );
        // time_iso8601 outranks msec whatever the order.
        assert_eq!(ev.timestamp, Some(1_732_429_502_000_000_000));
        assert_eq!(ev.client_ip, "2001:db8::1".parse().ok());
        assert_eq!(ev.method, s("POST"));
        assert_eq!(ev.path, s("/login?next=%2F"));
        assert_eq!(ev.protocol, s("HTTP/2.0"));
        assert_eq!(ev.status, Some(401));
        assert_eq!(ev.bytes, Some(312));
        assert_eq!(ev.duration, Some(0.003));
        assert_eq!(ev.host, s("example.com"));
    }

    #[test]
    fn ecs() {
        let ev = json(
            r#"{"@timestamp":"2024-11-24T06:25:02.123456Z","log.level":"warn","message":"GET /cart","ecs.version":"8.11.0","service.name":"shop","host":{"name":"web-01","ip":["10.0.0.5"]},"client":{"ip":"198.51.100.23","port":51234},"http":{"version":"1.1","request":{"method":"GET","referrer":"https://shop.example/","body":{"bytes":0}},"response":{"status_code":503,"body":{"bytes":1234}}},"url":{"original":"/cart?id=7","path":"/cart"},"user_agent":{"original":"Mozilla/5.0","name":"Firefox"},"event":{"duration":125000000},"user":{"name":"jdoe"}}"#,
        );
        assert_eq!(ev.timestamp, Some(1_732_429_502_123_456_000));
        assert_eq!(ev.severity, Some(4));
        assert_eq!(ev.message, s("GET /cart"));
        assert_eq!(ev.app, s("shop"));
        assert_eq!(ev.host, s("web-01"));
        assert_eq!(ev.client_ip, "198.51.100.23".parse().ok());
        assert_eq!(ev.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(ev.method, s("GET"));
        assert_eq!(ev.referer, s("https://shop.example/"));
        assert_eq!(ev.status, Some(503));
        assert_eq!(ev.bytes, Some(1234));
        assert_eq!(ev.path, s("/cart?id=7"));
        assert_eq!(ev.user_agent, s("Mozilla/5.0"));
        assert_eq!(ev.duration, Some(0.125));
        assert_eq!(ev.user, s("jdoe"));
    }

    #[test]
    fn ecs_flat_dotted_keys() {
        let ev = json(
            r#"{"@timestamp":"2024-11-24T06:25:02Z","client.ip":"192.0.2.1","http.request.method":"PUT","url.path":"/x","http.response.status_code":"204","user_agent.original":"k6/0.50"}"#,
        );
        assert_eq!(ev.timestamp, Some(1_732_429_502_000_000_000));
        assert_eq!(ev.client_ip, "192.0.2.1".parse().ok());
        assert_eq!(ev.method, s("PUT"));
        assert_eq!(ev.path, s("/x"));
        assert_eq!(ev.status, Some(204));
        assert_eq!(ev.user_agent, s("k6/0.50"));
    }

    #[test]
    fn caddy() {
        let ev = json(
            r#"{"level":"info","ts":1646861401.5241024,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","remote_port":"41342","proto":"HTTP/1.1","method":"GET","host":"localhost","uri":"/?a=1","headers":{"User-Agent":["curl/7.82.0"],"Accept":["*/*"]}},"bytes_read":0,"user_id":"","duration":0.000929675,"size":10900,"status":200,"resp_headers":{"Server":["Caddy"]}}"#,
        );
        assert_eq!(ev.timestamp, Some(1_646_861_401_524_102_000));
        assert_eq!(ev.severity, Some(6));
        assert_eq!(ev.app, s("http.log.access"));
        assert_eq!(ev.message, s("handled request"));
        assert_eq!(ev.client_ip, "127.0.0.1".parse().ok());
        assert_eq!(ev.protocol, s("HTTP/1.1"));
        assert_eq!(ev.method, s("GET"));
        assert_eq!(ev.host, s("localhost"));
        assert_eq!(ev.path, s("/?a=1"));
        assert_eq!(ev.user_agent, s("curl/7.82.0"));
        assert_eq!(ev.user, None);
        assert_eq!(ev.duration, Some(0.000929675));
        assert_eq!(ev.bytes, Some(10900));
        assert_eq!(ev.status, Some(200));
    }

    #[test]
    fn epoch_units_and_aliases() {
        let cases = [
            (r#"{"ts":1700000000}"#, 1_700_000_000_000_000_000),
            (r#"{"ts":1700000000.25}"#, 1_700_000_000_250_000_000),
            (r#"{"time":1700000000123}"#, 1_700_000_000_123_000_000),
            (
                r#"{"timestamp":1700000000123456}"#,
                1_700_000_000_123_456_000,
            ),
            (r#"{"date":1700000000123456789}"#, 1_700_000_000_123_456_789),
            (r#"{"time":"1700000000.5"}"#, 1_700_000_000_500_000_000),
            (
                r#"{"time":"2023-11-14 22:13:20,5"}"#,
                1_700_000_000_500_000_000,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(json(line).timestamp, Some(want), "{line}");
        }
        let ev = json(
            r#"{"Remote-Addr":"10.1.1.1:5555","UserAgent":"x","Verb":"DELETE","url":"/a","response":"404","size":"-","duration_ms":12,"level":50,"msg":"done","app":"api","Hostname":"h1"}"#,
        );
        assert_eq!(ev.client_ip, "10.1.1.1".parse().ok());
        assert_eq!(ev.user_agent, s("x"));
        assert_eq!(ev.method, s("DELETE"));
        assert_eq!(ev.path, s("/a"));
        assert_eq!(ev.status, Some(404));
        assert_eq!(ev.bytes, None);
        assert_eq!(ev.duration, Some(0.012));
        assert_eq!(ev.severity, Some(3));
        assert_eq!(ev.message, s("done"));
        assert_eq!(ev.app, s("api"));
        assert_eq!(ev.host, s("h1"));
        let ev = json(
            r#"{"ip":"203.0.113.7, 10.0.0.1","latency":"12.5ms","message":"m","msg":"ignored"}"#,
        );
        assert_eq!(ev.client_ip, "203.0.113.7".parse().ok());
        assert_eq!(ev.duration, Some(0.0125));
        assert_eq!(ev.message, s("m"));
    }

    #[test]
    fn unknown_and_empty_objects_parse() {
        let ev = json(r#"{"a":{"b":[1,2,{"c":null}]},"ok":true}"#);
        assert_eq!(
            ev,
            Event {
                format: Format::Json,
                ..Event::default()
            }
        );
        let ev = json("{}");
        assert_eq!(ev.format, Format::Json);
    }

    fn err(line: &str) -> (&'static str, usize) {
        match parse_line(line.as_bytes(), Format::Auto, &CTX) {
            Err(ParseError::Invalid {
                format: Format::Json,
                reason,
                column,
            }) => (reason, column),
            other => panic!("{line}: expected JSON error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_json_fails() {
        assert_eq!(err(r#"{"status":200"#), ("unexpected end of JSON", 13));
        assert_eq!(err(r#"{"status":20x}"#).0, "invalid JSON");
        assert_eq!(err(r#"{"status":200} trailing"#), ("invalid JSON", 15));
        assert_eq!(err("{not json"), ("invalid JSON", 1));
        assert_eq!(err("{\"a\":\"\u{1}\"}").0, "invalid JSON");
        let e = parse_line(b"[1,2]", Format::Json, &CTX).expect_err("array");
        assert!(matches!(
            e,
            ParseError::Invalid {
                reason: "expected a JSON object",
                ..
            }
        ));
        // Invalid UTF-8 is repaired, not rejected.
        let line = b"{\"a\":\"\xff\",\"message\":\"caf\xe9\",\"status\":200}";
        let ev = parse_line(line, Format::Json, &CTX).expect("lossy");
        assert_eq!(ev.message.as_deref(), Some("caf\u{fffd}"));
        assert_eq!(ev.status, Some(200));
        let e = parse_line(b"{\"a\":\"\xff\" x}", Format::Json, &CTX).expect_err("still bad");
        assert_eq!(e.column(), Some(9));
        let line = r#"{"remote_addr":"1.2.3.4","request":"GET / HTTP/1.1","status":200}"#;
        for cut in 1..line.len() {
            assert!(parse_line(&line.as_bytes()[..cut], Format::Json, &CTX).is_err());
        }
        let deep = "[".repeat(500);
        assert!(parse_line(format!("{{\"a\":{deep}").as_bytes(), Format::Json, &CTX).is_err());
    }

    #[test]
    fn path_buffer_limits() {
        let long_key = "k".repeat(200);
        let line = format!(r#"{{"{long_key}":{{"{long_key}":1}},"msg":"ok"}}"#);
        let ev = json(&line);
        assert_eq!(ev.message, s("ok"));
        let mut p = Path::default();
        assert_eq!(p.push("Http"), Some(0));
        assert_eq!(p.push("Status-Code"), Some(4));
        assert_eq!(p.bytes(), b"http.status_code");
    }
}
