//! Parsers: bytes of one log line → [`Event`].
//!
//! [`parse_line`] is the only entry point. Field values borrow from the line
//! wherever they can ([`Cow::Borrowed`]); a value is owned only when the bytes
//! are not valid UTF-8 (repaired lossily), when a JSON string had escapes, or
//! when ECS's bare `http.version` (`1.1`) is spelled out as `HTTP/1.1`.
//! Combined/common values are kept exactly as the server logged them, escapes
//! such as `\"` or `\x16` included: unescaping would cost an allocation per
//! line for no gain in search, and keeps what was on the wire visible.
//!
//! Error columns are 0-based byte offsets into the line (after a trailing
//! `\r` has been dropped).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

mod combined;
mod elb;
mod haproxy;
mod json;
pub mod proxy;
pub mod route;
mod squid;
mod syslog;
mod timestamp;
pub mod unescape;
mod w3c;

pub use timestamp::civil_from_days;

/// A log line layout. `Auto` detects per line; the others force one parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Auto,
    /// NCSA combined (nginx default `combined`, Apache `combined`,
    /// `vhost_combined`), optionally followed by extra fields.
    Combined,
    /// NCSA common log format (Apache `common`).
    Common,
    Json,
    Syslog5424,
    Syslog3164,
    /// Not parsed at all: the caller indexes the line as is.
    Raw,
    /// Squid's native access log (proxies).
    Squid,
    /// The W3C extended format in IIS's default fields (`w3c.rs`).
    W3c,
    /// AWS Application and Classic Load Balancer access logs (`elb.rs`).
    Elb,
    /// HAProxy's HTTP log (`haproxy.rs`).
    Haproxy,
}

const FORMAT_NAMES: &str =
    "auto, combined, common, json, syslog5424, syslog3164, squid, w3c, elb, \
                            haproxy, raw (aliases: nginx, apache, rfc5424, rfc3164, syslog, iis, alb)";

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Combined => "combined",
            Format::Common => "common",
            Format::Json => "json",
            Format::Syslog5424 => "syslog5424",
            Format::Syslog3164 => "syslog3164",
            Format::Raw => "raw",
            Format::Squid => "squid",
            Format::W3c => "w3c",
            Format::Elb => "elb",
            Format::Haproxy => "haproxy",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Format::Auto,
            "combined" | "nginx" | "apache" => Format::Combined,
            "common" => Format::Common,
            "json" => Format::Json,
            "syslog5424" | "rfc5424" => Format::Syslog5424,
            "syslog3164" | "rfc3164" => Format::Syslog3164,
            // Both syslog flavours share the `<PRI>` prefix and are told apart
            // per line, which is exactly what Auto does.
            "syslog" => Format::Auto,
            "raw" => Format::Raw,
            "squid" => Format::Squid,
            "w3c" | "iis" => Format::W3c,
            "elb" | "alb" => Format::Elb,
            "haproxy" => Format::Haproxy,
            _ => {
                return Err(format!(
                    "unknown log format {s:?}; expected one of {FORMAT_NAMES}"
                ))
            }
        };
        Ok(f)
    }
}

/// One parsed log line. Fields a format does not carry stay `None`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Event<'a> {
    /// The parser that succeeded (never `Auto` or `Raw`).
    pub format: Format,
    /// Unix nanoseconds, UTC.
    pub timestamp: Option<i64>,
    /// Syslog HOSTNAME, the vhost prefix of `vhost_combined`, JSON `host`.
    pub host: Option<Cow<'a, str>>,
    pub client_ip: Option<IpAddr>,
    /// Remote user (`None` when `-`).
    pub user: Option<Cow<'a, str>>,
    pub method: Option<Cow<'a, str>>,
    /// Request target as sent, query string included.
    pub path: Option<Cow<'a, str>>,
    pub protocol: Option<Cow<'a, str>>,
    pub status: Option<u16>,
    /// Response size; `None` when `-`.
    pub bytes: Option<u64>,
    /// `None` when `-`.
    pub referer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    /// Seconds.
    pub duration: Option<f64>,
    /// Syslog APP-NAME / TAG.
    pub app: Option<Cow<'a, str>>,
    /// Syslog severity 0..=7.
    pub severity: Option<u8>,
    /// Syslog MSG, JSON `message`/`msg`.
    pub message: Option<Cow<'a, str>>,
}

impl Event<'_> {
    /// Detaches the event from the line buffer, for callers that keep events
    /// beyond the buffer's lifetime.
    pub fn into_owned(self) -> Event<'static> {
        fn own(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        Event {
            format: self.format,
            timestamp: self.timestamp,
            host: own(self.host),
            client_ip: self.client_ip,
            user: own(self.user),
            method: own(self.method),
            path: own(self.path),
            protocol: own(self.protocol),
            status: self.status,
            bytes: self.bytes,
            referer: own(self.referer),
            user_agent: own(self.user_agent),
            duration: self.duration,
            app: own(self.app),
            severity: self.severity,
            message: own(self.message),
        }
    }
}

/// What a parser may need beyond the line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseContext {
    /// Current time in unix nanoseconds. RFC 3164 timestamps carry no year:
    /// the year chosen is the one that puts the timestamp closest to this,
    /// and not more than about a day in the future.
    pub now_nanos: i64,
}

impl ParseContext {
    /// A context for the current wall-clock time.
    pub fn now() -> Self {
        let now_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        ParseContext { now_nanos }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("raw format: line is not parsed")]
    Raw,
    /// `column` is a 0-based byte offset into the line.
    #[error("{format}: {reason} at column {column}")]
    Invalid {
        format: Format,
        reason: &'static str,
        column: usize,
    },
}

impl ParseError {
    pub(crate) fn invalid(format: Format, reason: &'static str, column: usize) -> Self {
        ParseError::Invalid {
            format,
            reason,
            column,
        }
    }

    /// Byte column of the failure, when the error points at one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ParseError::Invalid { column, .. } => Some(*column),
            ParseError::Empty | ParseError::Raw => None,
        }
    }
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
///
/// With `Format::Auto` the layout is chosen from the first bytes: `{` → JSON,
/// `<digits>` → syslog (RFC 5424 when a version digit and a space follow the
/// PRI, RFC 3164 otherwise), a unix time with a fraction → Squid, a date and
/// a time → W3C (IIS), an RFC 3339 time or an ALB connection type before one
/// → AWS load balancer, anything else → combined, falling back to common,
/// then HAProxy.
/// Any other hint runs that parser only; `Raw` always returns
/// [`ParseError::Raw`].
pub fn parse_line<'a>(
    line: &'a [u8],
    hint: Format,
    ctx: &ParseContext,
) -> Result<Event<'a>, ParseError> {
    parse_source(Line::bytes(line), hint, ctx)
}

/// [`parse_line`] for a line the caller already holds as text (it checked
/// the bytes are UTF-8 to keep the raw line): the fields borrow from it
/// without being checked again, which was most of the validation a line
/// paid.
pub fn parse_text<'a>(
    line: &'a str,
    hint: Format,
    ctx: &ParseContext,
) -> Result<Event<'a>, ParseError> {
    parse_source(Line::text(line), hint, ctx)
}

/// A line as text (lossily repaired when it is not UTF-8: the raw line
/// every stage keeps) and its parse, with the bytes checked once for both.
pub fn parse_with_text<'a>(
    line: &'a [u8],
    hint: Format,
    ctx: &ParseContext,
) -> (Cow<'a, str>, Result<Event<'a>, ParseError>) {
    match std::str::from_utf8(line) {
        Ok(text) => (Cow::Borrowed(text), parse_text(text, hint, ctx)),
        Err(_) => (String::from_utf8_lossy(line), parse_line(line, hint, ctx)),
    }
}

/// A line's bytes, and the same line as text when it is known to be UTF-8.
#[derive(Clone, Copy)]
pub(super) struct Line<'a> {
    pub bytes: &'a [u8],
    utf8: Option<&'a str>,
}

impl<'a> Line<'a> {
    pub(super) fn bytes(bytes: &'a [u8]) -> Self {
        Line { bytes, utf8: None }
    }

    fn text(text: &'a str) -> Self {
        Line {
            bytes: text.as_bytes(),
            utf8: Some(text),
        }
    }

    /// The same line, `len` bytes shorter at the end.
    fn truncated(self, len: usize) -> Self {
        Line {
            bytes: &self.bytes[..len],
            utf8: self.utf8.and_then(|t| t.get(..len)),
        }
    }

    /// The text of `field`, a slice of this line: borrowed from the line's
    /// text when there is one (no second check), else as [`text`] gives it.
    pub fn text_of(self, field: &'a [u8]) -> Cow<'a, str> {
        if let Some(line) = self.utf8 {
            // A field that is a slice of the line lies at this offset; a
            // slice that is not (or splits a character) is checked as bytes.
            let start = (field.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
            if let Some(t) = start
                .checked_add(field.len())
                .and_then(|end| line.get(start..end))
            {
                return Cow::Borrowed(t);
            }
        }
        text(field)
    }

    /// [`Line::text_of`], `None` for an empty field or `-` (log formats
    /// write `-` for "no value").
    pub fn opt_text_of(self, field: &'a [u8]) -> Option<Cow<'a, str>> {
        if field.is_empty() || field == b"-" {
            None
        } else {
            Some(self.text_of(field))
        }
    }
}

fn parse_source<'a>(
    src: Line<'a>,
    hint: Format,
    ctx: &ParseContext,
) -> Result<Event<'a>, ParseError> {
    if hint == Format::Raw {
        return Err(ParseError::Raw);
    }
    let src = match src.bytes.strip_suffix(b"\r") {
        Some(line) => src.truncated(line.len()),
        None => src,
    };
    let line = src.bytes;
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    match hint {
        // Pretty-printers and some shippers indent JSON; nothing else starts
        // with whitespace followed by '{'.
        Format::Auto => match line[0] {
            b'{' => json::parse(line),
            b' ' | b'\t' if line.trim_ascii_start().first() == Some(&b'{') => json::parse(line),
            b'<' => match syslog::detect(line) {
                Some(Format::Syslog5424) => with_access_log(syslog::parse_5424(src)),
                Some(_) => with_access_log(syslog::parse_3164(src, ctx)),
                None => combined::parse(src, combined::Layout::Either),
            },
            b'0'..=b'9' if squid::looks_like(line) => squid::parse(src),
            // A date first (`2024-10-10`): an address never has a dash there.
            b'0'..=b'9' if line.get(4) == Some(&b'-') && w3c::looks_like(line) => w3c::parse(src),
            b'0'..=b'9' if line.get(4) == Some(&b'-') && elb::looks_like(line) => elb::parse(src),
            b'g' | b'h' | b'w' if elb::looks_like(line) => elb::parse(src),
            b'A' | b'D' | b'F' | b'J' | b'M' | b'N' | b'O' | b'S'
                if syslog::looks_like_file_line(line, ctx) =>
            {
                with_access_log(syslog::parse_3164(src, ctx))
            }
            // HAProxy's `address:port [date]` only once combined refused
            // it: the check would cost every access line.
            _ => combined::parse(src, combined::Layout::Either).or_else(|e| {
                if haproxy::looks_like(line) {
                    haproxy::parse(src)
                } else {
                    Err(e)
                }
            }),
        },
        Format::Squid => squid::parse(src),
        Format::W3c => w3c::parse(src),
        Format::Elb => elb::parse(src),
        Format::Haproxy => haproxy::parse(src),
        Format::Combined => combined::parse(src, combined::Layout::Combined),
        Format::Common => combined::parse(src, combined::Layout::Common),
        Format::Json => json::parse(line),
        Format::Syslog5424 => with_access_log(syslog::parse_5424(src)),
        Format::Syslog3164 => with_access_log(syslog::parse_3164(src, ctx)),
        Format::Raw => Err(ParseError::Raw),
    }
}

/// nginx and Apache can log over syslog (`access_log syslog:server=...`,
/// rsyslog's imfile), and HAProxy logs nowhere else: the message is then an access log line, whose fields
/// are as searchable and as visible to rules as a shipped file's. The
/// syslog envelope keeps the host, app and severity; the access log gives
/// the request fields and the request's own time.
fn with_access_log(parsed: Result<Event<'_>, ParseError>) -> Result<Event<'_>, ParseError> {
    let Ok(mut event) = parsed else {
        return parsed;
    };
    // Only a borrowed message shares the line's lifetime; an access log
    // needs no unescaping, so that is the case that matters.
    let Some(Cow::Borrowed(message)) = event.message.clone() else {
        return Ok(event);
    };
    // rsyslog's `%msg%` keeps the space after RFC 3164's `tag:`, so a
    // template `... %msg%` forwards the access line after two spaces.
    let message = message.trim_start_matches([' ', '\t']);
    // Cheap gate before a parse: access logs start with an address or a
    // host name, never with punctuation.
    if !message
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        || !message.contains("] ")
    {
        return Ok(event);
    }
    let access = if haproxy::looks_like(message.as_bytes()) {
        haproxy::parse(Line::text(message))
    } else if message.contains("] \"") {
        combined::parse(Line::text(message), combined::Layout::Either)
    } else {
        return Ok(event);
    };
    if let Ok(access) = access {
        event.client_ip = access.client_ip;
        event.user = access.user;
        event.method = access.method;
        event.path = access.path;
        event.protocol = access.protocol;
        event.status = access.status;
        event.bytes = access.bytes;
        event.referer = access.referer;
        event.user_agent = access.user_agent;
        event.duration = access.duration;
        event.timestamp = access.timestamp.or(event.timestamp);
    }
    Ok(event)
}

/// Borrowed when the bytes are UTF-8 (the common case, no allocation),
/// lossily repaired otherwise.
pub fn text(b: &[u8]) -> Cow<'_, str> {
    // `from_utf8_lossy` alone walks the bytes chunk by chunk even when they
    // are valid, which costs a fifth of a combined line; the validator is
    // several times faster on the common all-ASCII case.
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// The space-separated fields of `line` from byte `from` on, each with
/// its offset in the line; runs of spaces are one separator (Squid pads
/// the elapsed time, W3C lines may end in spaces).
fn fields_from(line: &[u8], from: usize) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = from;
    std::iter::from_fn(move || {
        while line.get(pos) == Some(&b' ') {
            pos += 1;
        }
        if pos >= line.len() {
            return None;
        }
        let start = pos;
        while pos < line.len() && line[pos] != b' ' {
            pos += 1;
        }
        Some((start, &line[start..pos]))
    })
}

/// The address of `address:port` (`192.0.2.1:2817`, `[2001:db8::1]:443`,
/// or `2001:db8::1:443`, where the last colon is the port's), as load
/// balancers log a client: the port is always there.
fn ip_before_port(b: &[u8]) -> Option<IpAddr> {
    if let Some(rest) = b.strip_prefix(b"[") {
        let close = rest.iter().position(|&c| c == b']')?;
        return parse_ip(&rest[..close]);
    }
    let colon = b.iter().rposition(|&c| c == b':')?;
    parse_ip(&b[..colon])
}

/// An unsigned decimal field (a status, a size, milliseconds): digits
/// only, `None` for anything else, a sign or an overflow included.
fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    // Cheapest rejection first: hostnames in %h are common enough to matter.
    if b.len() < 2 || b.len() > 45 {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: ParseContext = ParseContext {
        now_nanos: 1_700_000_000_000_000_000,
    };

    #[test]
    fn a_line_parsed_as_text_gives_the_event_its_bytes_give() {
        let lines = [
            r#"203.0.113.9 - bob [24/Nov/2026:10:00:01 +0000] "GET /a?b=1 HTTP/1.1" 200 12 "https://r.example/" "curl/8" 0.004"#,
            r#"shop.example:443 203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "GET /caf\u{e9} HTTP/1.1" 200 - "-" "Mozilla/5.0 (X11)""#,
            r#"<190>Nov 24 10:00:00 web1 nginx: 203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "POST /login HTTP/1.1" 401 12 "-" "curl/8""#,
            "<165>1 2026-11-24T10:00:00.003Z web2 app 12 ID47 - caf\u{e9} ouvert",
            "1732442401.123    512 203.0.113.9 TCP_MISS/200 4120 GET http://example.com/x - HIER_DIRECT/93.184.216.34 text/html",
            r#"{"remote_addr":"203.0.113.9","request":"GET /j HTTP/1.1","status":200}"#,
            "203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] \"GET /x HTTP/1.1\" 200 1\r",
        ];
        for text in lines {
            let (from_bytes, from_text) = (
                parse_line(text.as_bytes(), Format::Auto, &CTX),
                parse_text(text, Format::Auto, &CTX),
            );
            assert_eq!(
                format!("{from_bytes:?}"),
                format!("{from_text:?}"),
                "{text}"
            );
            let event = from_text.expect("parses");
            // Every field a slice of the line borrows it.
            for field in [&event.path, &event.user_agent, &event.host, &event.message] {
                assert!(!matches!(field, Some(Cow::Owned(_))), "{field:?} of {text}");
            }
        }
        // Not UTF-8: repaired, and parsed from the bytes.
        let bad = b"203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] \"GET /\xff HTTP/1.1\" 200 1";
        let (raw, event) = parse_with_text(bad, Format::Auto, &CTX);
        assert!(raw.contains('\u{fffd}'), "{raw}");
        assert_eq!(event.expect("parses").path.as_deref(), Some("/\u{fffd}"));
    }

    #[test]
    fn access_logs_inside_syslog_get_their_request_fields() {
        let nginx = br#"<190>Nov 24 10:00:00 web1 nginx: 203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "POST /login HTTP/1.1" 401 12 "-" "curl/8""#;
        let e = parse_line(nginx, Format::Auto, &CTX).expect("3164");
        assert_eq!(e.format, Format::Syslog3164);
        assert_eq!(e.host.as_deref(), Some("web1"));
        assert_eq!(e.app.as_deref(), Some("nginx"));
        assert_eq!(e.client_ip, Some("203.0.113.9".parse().expect("ip")));
        assert_eq!(
            (e.method.as_deref(), e.path.as_deref(), e.status),
            (Some("POST"), Some("/login"), Some(401))
        );
        let rsyslog = br#"<13>1 2026-11-24T10:00:00Z web2 nginx - - - 10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#;
        let e = parse_line(rsyslog, Format::Syslog5424, &CTX).expect("5424");
        assert_eq!((e.status, e.host.as_deref()), (Some(200), Some("web2")));
        let plain = b"<13>1 2026-11-24T10:00:00Z web2 cron - - - job done";
        let e = parse_line(plain, Format::Auto, &CTX).expect("5424");
        assert_eq!((e.status, e.message.as_deref()), (None, Some("job done")));
        // rsyslog's `%msg%` keeps the space after `nginx:`: a template
        // `... %msg%` forwards the access line after two spaces.
        let two_spaces = br#"<13>1 2026-11-24T10:00:00Z web7 nginx - - -  203.0.113.11 - - [24/Nov/2026:10:00:01 +0000] "GET /api/v1/orders HTTP/1.1" 502 123 "-" "curl/8.5.0""#;
        let e = parse_line(two_spaces, Format::Auto, &CTX).expect("5424");
        assert_eq!(
            (e.status, e.client_ip, e.path.as_deref()),
            (
                Some(502),
                Some("203.0.113.11".parse().expect("ip")),
                Some("/api/v1/orders")
            )
        );
        // HAProxy logs to syslog only; its balancer's view of a request.
        let haproxy = br#"<134>Nov 24 10:00:00 lb1 haproxy[14389]: 203.0.113.12:33317 [24/Nov/2026:10:00:01.655] https-in~ app/web2 0/0/1/12/13 504 0 - - sH-- 9/9/1/1/0 0/0 "GET /checkout HTTP/1.1""#;
        let e = parse_line(haproxy, Format::Auto, &CTX).expect("3164");
        assert_eq!(
            (e.format, e.host.as_deref(), e.app.as_deref()),
            (Format::Syslog3164, Some("lb1"), Some("haproxy"))
        );
        assert_eq!(
            (e.status, e.client_ip, e.path.as_deref(), e.duration),
            (
                Some(504),
                Some("203.0.113.12".parse().expect("ip")),
                Some("/checkout"),
                Some(0.013)
            )
        );
    }

    #[test]
    fn syslog_lines_as_written_to_files_are_recognised_without_pri() {
        let e = parse_line(
            b"Dec  7 09:30:00 db1 postgres[123]: FATAL: connection limit exceeded for user app",
            Format::Auto,
            &CTX,
        )
        .expect("a /var/log/syslog line");
        assert_eq!(e.format, Format::Syslog3164);
        assert_eq!(
            (e.host.as_deref(), e.app.as_deref(), e.message.as_deref()),
            (
                Some("db1"),
                Some("postgres"),
                Some("FATAL: connection limit exceeded for user app")
            )
        );
        assert!(e.timestamp.is_some());
        let e = parse_line(
            br#"Nov 24 10:00:00 web1 nginx: 203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "POST /login HTTP/1.1" 401 12 "-" "curl/8""#,
            Format::Auto,
            &CTX,
        )
        .expect("an access line through a syslog file");
        assert_eq!((e.status, e.host.as_deref()), (Some(401), Some("web1")));
        // A line that only starts with a date, or with a month's name, is
        // left to the other formats (here: not parsed at all).
        for other in [
            &b"Dec  7 09:30:00 starting the worker pool"[..],
            b"Dec 7 is when the release ships: be ready",
            b"March on: nothing here",
        ] {
            let got = parse_line(other, Format::Auto, &CTX);
            assert!(
                got.as_ref()
                    .map_or(true, |e| e.format != Format::Syslog3164),
                "{:?}: {got:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn format_names_roundtrip() {
        for f in [
            Format::Auto,
            Format::Combined,
            Format::Common,
            Format::Json,
            Format::Syslog5424,
            Format::Syslog3164,
            Format::Raw,
            Format::Squid,
            Format::W3c,
            Format::Elb,
            Format::Haproxy,
        ] {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!("nginx".parse(), Ok(Format::Combined));
        assert_eq!("Apache".parse(), Ok(Format::Combined));
        assert_eq!("rfc5424".parse(), Ok(Format::Syslog5424));
        assert_eq!("rfc3164".parse(), Ok(Format::Syslog3164));
        assert_eq!("syslog".parse(), Ok(Format::Auto));
        let err = "xml".parse::<Format>().expect_err("unknown name");
        assert!(err.contains("\"xml\""), "{err}");
        assert!(err.contains("syslog5424"), "{err}");
    }

    #[test]
    fn dispatch() {
        let cases: [(&[u8], Format); 10] = [
            (
                b"10.0.1.2:33317 [06/Feb/2009:12:14:14.655] fe be/s1 1/0/0/2/3 200 5 - - ---- 1/1/1/1/0 0/0 \"GET / HTTP/1.1\"",
                Format::Haproxy,
            ),
            (
                b"1286536309.586 921 10.0.0.1 TCP_MISS/200 5 GET http://x.example/ - DIRECT/1.2.3.4 text/html",
                Format::Squid,
            ),
            (
                b"2024-10-10 12:00:00 10.0.0.5 GET / - 80 - 198.51.100.4 Mozilla/5.0 200 0 0 15",
                Format::W3c,
            ),
            (
                b"http 2024-10-10T12:00:00.000000Z app/lb/1 1.2.3.4:5 10.0.0.1:80 0 0 0 200 200 0 1 \"GET http://x/ HTTP/1.1\" \"-\"",
                Format::Elb,
            ),
            (
                b"2024-10-10T12:00:00.000000Z lb 1.2.3.4:5 10.0.0.1:80 0 0 0 200 200 0 1 \"GET http://x/ HTTP/1.1\" \"-\" - -",
                Format::Elb,
            ),
            (b"{\"msg\":\"hi\"}", Format::Json),
            (b"<34>1 - - - - - -", Format::Syslog5424),
            (b"<34>Oct 11 22:14:15 host app: hi", Format::Syslog3164),
            (
                b"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1 \"-\" \"-\"",
                Format::Combined,
            ),
            (
                b"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1",
                Format::Common,
            ),
        ];
        for (line, want) in cases {
            let ev = parse_line(line, Format::Auto, &CTX).expect("parses");
            assert_eq!(ev.format, want);
            let ev = parse_line(line, want, &CTX).expect("parses with hint");
            assert_eq!(ev.format, want);
        }
    }

    #[test]
    fn raw_empty_and_cr() {
        assert_eq!(
            parse_line(b"anything", Format::Raw, &CTX),
            Err(ParseError::Raw)
        );
        assert_eq!(parse_line(b"", Format::Auto, &CTX), Err(ParseError::Empty));
        assert_eq!(
            parse_line(b"\r", Format::Auto, &CTX),
            Err(ParseError::Empty)
        );
        assert_eq!(
            parse_line(b"  \t", Format::Json, &CTX),
            Err(ParseError::Empty)
        );
        let ev = parse_line(b" \t{\"msg\":\"indented\"}", Format::Auto, &CTX).expect("parses");
        assert_eq!(ev.message.as_deref(), Some("indented"));
        let line = b"{\"msg\":\"hi\"}\r";
        let ev = parse_line(line, Format::Auto, &CTX).expect("parses");
        assert_eq!(ev.message.as_deref(), Some("hi"));
    }

    #[test]
    fn hint_restricts_parser() {
        let json = b"{\"msg\":\"hi\"}";
        let err = parse_line(json, Format::Combined, &CTX).expect_err("not combined");
        assert!(matches!(
            err,
            ParseError::Invalid {
                format: Format::Combined,
                ..
            }
        ));
        let common = b"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1";
        assert!(parse_line(common, Format::Combined, &CTX).is_err());
        assert!(parse_line(common, Format::Json, &CTX).is_err());
        assert!(parse_line(common, Format::Syslog5424, &CTX).is_err());
    }

    #[test]
    fn error_display_names_format_and_column() {
        let err = parse_line(
            b"1.2.3.4 - - [bad] \"GET / HTTP/1.0\" 200 1",
            Format::Auto,
            &CTX,
        )
        .expect_err("bad timestamp");
        assert_eq!(err.column(), Some(13));
        assert_eq!(err.to_string(), "combined: invalid timestamp at column 13");
    }

    #[test]
    fn into_owned_keeps_values() {
        let line = b"<34>Oct 11 22:14:15 mymachine su: hello";
        let ev = parse_line(line, Format::Auto, &CTX).expect("parses");
        let owned: Event<'static> = ev.clone().into_owned();
        assert_eq!(owned, ev);
    }

    /// Deterministic pseudo-random bytes: no panic on anything, whatever the
    /// hint.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"<>[]{}\"\\:/- .0123456789aZ\x00\xff\xc3\r=T,";
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            buf.clear();
            let len = (next() % 80) as usize;
            let prefix: &[u8] = match next() % 5 {
                0 => b"<34>1 ",
                1 => b"{\"",
                2 => b"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"",
                3 => b"<13>Oct ",
                _ => b"",
            };
            buf.extend_from_slice(prefix);
            for _ in 0..len {
                let r = next();
                let byte = if r % 3 == 0 {
                    r as u8
                } else {
                    alphabet[(r as usize >> 8) % alphabet.len()]
                };
                buf.push(byte);
            }
            for hint in [
                Format::Auto,
                Format::Combined,
                Format::Common,
                Format::Json,
                Format::Syslog5424,
                Format::Syslog3164,
                Format::Squid,
                Format::W3c,
                Format::Elb,
                Format::Haproxy,
            ] {
                let _ = parse_line(&buf, hint, &CTX);
            }
        }
    }
}
