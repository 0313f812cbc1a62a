//! The fields a rule can test, how each is read from a line, and the
//! decoding that attack patterns need.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::parse::Event;

/// A field of a line. `source` is the agent's source label, `raw` the line
/// itself, `format` the parser that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    ClientIp,
    Method,
    Path,
    Status,
    Bytes,
    Referer,
    UserAgent,
    Host,
    Source,
    User,
    Duration,
    Raw,
    Format,
    App,
    Message,
    /// `path` up to the `?` (Sigma's `cs-uri-stem`).
    UriStem,
    /// `path` after the first `?`; absent without one (`cs-uri-query`).
    Query,
    Protocol,
    /// `path` reduced to its endpoint: no query, identifiers as `:id`
    /// ([`super::route`]).
    Route,
    /// The host the request asked for: the host of an absolute URL or a
    /// CONNECT target (proxies), else `host` (Sigma's `cs-host`).
    UrlHost,
}

pub const FIELD_COUNT: usize = 20;

const NAMES: [(&str, Field); FIELD_COUNT] = [
    ("client_ip", Field::ClientIp),
    ("method", Field::Method),
    ("path", Field::Path),
    ("status", Field::Status),
    ("bytes", Field::Bytes),
    ("referer", Field::Referer),
    ("user_agent", Field::UserAgent),
    ("host", Field::Host),
    ("source", Field::Source),
    ("user", Field::User),
    ("duration", Field::Duration),
    ("raw", Field::Raw),
    ("format", Field::Format),
    ("app", Field::App),
    ("message", Field::Message),
    ("uri_stem", Field::UriStem),
    ("query", Field::Query),
    ("protocol", Field::Protocol),
    ("route", Field::Route),
    ("url_host", Field::UrlHost),
];

impl Field {
    pub fn parse(name: &str) -> Result<Field, String> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let all: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown field {name:?}; known fields: {}", all.join(", "))
            })
    }

    pub fn name(&self) -> &'static str {
        NAMES[*self as usize].0
    }

    pub fn index(&self) -> usize {
        *self as usize
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Field::Status | Field::Bytes | Field::Duration)
    }

    pub fn bit(&self) -> u32 {
        1 << (*self as u32)
    }
}

/// What one evaluation sees: the parsed event plus what the parser does not
/// know (the raw line, the source label).
#[derive(Debug, Clone, Copy)]
pub struct LineRef<'l, 'e> {
    pub event: &'l Event<'e>,
    pub raw: &'l str,
    pub source: &'l str,
}

impl LineRef<'_, '_> {
    pub fn number(&self, f: Field) -> Option<f64> {
        match f {
            Field::Status => self.event.status.map(f64::from),
            Field::Bytes => self.event.bytes.map(|b| b as f64),
            Field::Duration => self.event.duration,
            _ => None,
        }
    }

    /// The host named by the request target itself (absolute URL, CONNECT).
    fn target_host(&self) -> Option<&str> {
        let path = self.event.path.as_deref()?;
        // The usual origin-form path: one byte says it (every line pays this).
        if path.starts_with('/') {
            return None;
        }
        let connect = self
            .event
            .method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
        crate::parse::route::url_host(path, connect)
    }

    /// Bit set of the fields this line carries, for the per-rule "needs
    /// these fields" check.
    pub fn present(&self) -> u32 {
        let e = self.event;
        let mut m = Field::Raw.bit() | Field::Format.bit();
        let mut set = |f: Field, p: bool| {
            if p {
                m |= f.bit();
            }
        };
        set(Field::ClientIp, e.client_ip.is_some());
        set(Field::Method, e.method.is_some());
        set(Field::Path, e.path.is_some());
        set(Field::Status, e.status.is_some());
        set(Field::Bytes, e.bytes.is_some());
        set(Field::Referer, e.referer.is_some());
        set(Field::UserAgent, e.user_agent.is_some());
        set(Field::Host, e.host.is_some());
        set(Field::Source, !self.source.is_empty());
        set(Field::User, e.user.is_some());
        set(Field::Duration, e.duration.is_some());
        set(Field::App, e.app.is_some());
        set(Field::Message, e.message.is_some());
        set(Field::UriStem, e.path.is_some());
        set(
            Field::Query,
            e.path
                .as_deref()
                .is_some_and(|p| memchr::memchr(b'?', p.as_bytes()).is_some()),
        );
        set(Field::Protocol, e.protocol.is_some());
        set(Field::Route, e.path.is_some());
        set(
            Field::UrlHost,
            e.host.is_some() || self.target_host().is_some(),
        );
        m
    }

    /// Writes the field's text (as logged) to `out`; false when absent.
    /// Numbers and addresses are formatted into the reused buffer, so this
    /// never allocates once the buffer has grown.
    pub fn write(&self, f: Field, out: &mut String) -> bool {
        let e = self.event;
        let s: Option<&str> = match f {
            Field::ClientIp => {
                return match e.client_ip {
                    Some(IpAddr::V4(ip)) => {
                        push_ipv4(out, ip);
                        true
                    }
                    Some(ip) => write!(out, "{ip}").is_ok(),
                    None => false,
                }
            }
            Field::Status => {
                return match e.status {
                    Some(v) => {
                        push_u64(out, u64::from(v));
                        true
                    }
                    None => false,
                }
            }
            Field::Bytes => {
                return match e.bytes {
                    Some(v) => {
                        push_u64(out, v);
                        true
                    }
                    None => false,
                }
            }
            Field::Duration => {
                return match e.duration {
                    Some(v) => write!(out, "{v}").is_ok(),
                    None => false,
                }
            }
            Field::Method => e.method.as_deref(),
            Field::Path => e.path.as_deref(),
            Field::Referer => e.referer.as_deref(),
            Field::UserAgent => e.user_agent.as_deref(),
            Field::Host => e.host.as_deref(),
            Field::User => e.user.as_deref(),
            Field::App => e.app.as_deref(),
            Field::Message => e.message.as_deref(),
            Field::UriStem => e.path.as_deref().map(|p| p.split('?').next().unwrap_or(p)),
            Field::Query => e
                .path
                .as_deref()
                .and_then(|p| p.split_once('?').map(|(_, q)| q)),
            Field::Protocol => e.protocol.as_deref(),
            Field::UrlHost => self.target_host().or(e.host.as_deref()),
            Field::Route => {
                return match e.path.as_deref() {
                    Some(p) => {
                        crate::parse::route::write_route(p, out);
                        true
                    }
                    None => false,
                }
            }
            Field::Source => Some(self.source).filter(|s| !s.is_empty()),
            Field::Raw => Some(self.raw),
            Field::Format => Some(e.format.as_str()),
        };
        match s {
            Some(s) => {
                out.push_str(s);
                true
            }
            None => false,
        }
    }
}

/// `v` in decimal, as `{v}` writes it. Keys and views of numbers and
/// addresses are built on nearly every line (a rule keyed on the client
/// on every request); `core::fmt` was most of that cost.
pub fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits: always valid UTF-8.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// An IPv4 address as `Ipv4Addr`'s `Display` writes it (dotted decimal);
/// IPv6 keeps `Display` (its zero compression and mapped forms).
pub fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_u64(out, u64::from(o));
    }
}

/// Lowercases ASCII into `out` (attack strings are ASCII; non-ASCII bytes
/// are kept as they are, which keeps `out` valid UTF-8).
pub fn push_lower(out: &mut String, s: &str) {
    out.reserve(s.len());
    for c in s.chars() {
        out.push(c.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for v in [0u64, 7, 10, 99, 100, 404, 65_535, 1_000_000_007, u64::MAX] {
            let mut s = String::from("x");
            push_u64(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
        for a in [
            "0.0.0.0",
            "198.51.100.7",
            "10.0.0.255",
            "255.255.255.255",
            "1.20.3.40",
        ] {
            let ip: Ipv4Addr = a.parse().expect("ip");
            let mut s = String::new();
            push_ipv4(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn names_roundtrip() {
        for (n, f) in NAMES {
            assert_eq!(Field::parse(n), Ok(f));
            assert_eq!(f.name(), n);
        }
        assert!(Field::parse("ip").is_err());
    }
}
