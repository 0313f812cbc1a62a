//! Squid's native access log (`logformat squid`, the default):
//!
//! ```text
//! %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
//! 1286536309.586    921 192.168.0.68 TCP_MISS/200 507 POST http://rcv.example.com/x?y=1 - DIRECT/203.0.113.3 application/xml
//! ```
//!
//! Time (unix seconds with milliseconds), elapsed milliseconds, client,
//! cache result/status, reply size, method, URL, user, hierarchy/peer,
//! reply content type. The URL is the request target (`path`, Sigma's
//! `c-uri`); its host is the rules' `url_host` (Sigma's `cs-host`,
//! `r-dns`), not the event's `host`: that names the server that logged,
//! and rules keyed per host (availability, SLOs) must not take every site
//! a proxy's users visit for one of ours.

use super::{decimal, fields_from, parse_ip, Event, Format, Line, ParseError};

fn err(reason: &'static str, column: usize) -> ParseError {
    ParseError::invalid(Format::Squid, reason, column)
}

/// Whether the line starts like Squid's native format: a unix time with a
/// fraction (`1286536309.586`), which no other format begins with (an IPv4
/// client has three dots).
pub(super) fn looks_like(line: &[u8]) -> bool {
    let end = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
    let tok = &line[..end];
    match tok.iter().position(|&c| c == b'.') {
        Some(dot) => {
            dot >= 9
                && dot + 1 < tok.len()
                && tok[..dot].iter().all(u8::is_ascii_digit)
                && tok[dot + 1..].iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

pub(super) fn parse(src: Line<'_>) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    let mut f = fields_from(line, 0);
    let mut next = |what: &'static str| f.next().ok_or_else(|| err(what, line.len()));
    let (at, time) = next("expected the time")?;
    if !looks_like(time) {
        return Err(err("expected a unix time with a fraction", at));
    }
    // Whole seconds and the fraction apart: through an f64 the
    // milliseconds would come back off by a few nanoseconds.
    let timestamp = {
        let dot = time.iter().position(|&c| c == b'.').unwrap_or(time.len());
        let frac = &time[dot + 1..];
        let secs = decimal(&time[..dot]).and_then(|s| i64::try_from(s).ok());
        let nanos = frac
            .iter()
            .take(9)
            .chain(std::iter::repeat_n(
                &b'0',
                9usize.saturating_sub(frac.len()),
            ))
            .try_fold(0i64, |n, &c| Some(n * 10 + i64::from(c - b'0')));
        secs.and_then(|s| s.checked_mul(1_000_000_000))
            .zip(nanos)
            .map(|(s, n)| s + n)
            .ok_or_else(|| err("expected a unix time with a fraction", at))?
    };
    let (at, elapsed) = next("expected the elapsed milliseconds")?;
    let elapsed = decimal(elapsed).ok_or_else(|| err("expected the elapsed milliseconds", at))?;
    let (_, client) = next("expected the client address")?;
    let (at, result) = next("expected result/status")?;
    let slash = result
        .iter()
        .rposition(|&c| c == b'/')
        .ok_or_else(|| err("expected result/status (TCP_MISS/200)", at))?;
    let status = decimal(&result[slash + 1..])
        .filter(|s| *s <= 999)
        .ok_or_else(|| err("expected a numeric status after '/'", at + slash + 1))?;
    let (at, size) = next("expected the reply size")?;
    let bytes = decimal(size).ok_or_else(|| err("expected the reply size", at))?;
    let (_, method) = next("expected the method")?;
    let (_, url) = next("expected the URL")?;
    let user = f.next().map(|(_, u)| u);
    Ok(Event {
        format: Format::Squid,
        timestamp: Some(timestamp),
        client_ip: parse_ip(client),
        user: user.and_then(|u| src.opt_text_of(u)),
        method: src.opt_text_of(method),
        path: Some(src.text_of(url)),
        status: Some(status as u16),
        bytes: Some(bytes),
        duration: Some(elapsed as f64 / 1000.0),
        ..Event::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_lines_parse() {
        let l = b"1286536309.586    921 192.168.0.68 TCP_MISS/200 507 POST http://rcv.example.com:8080/x?y=1 - DIRECT/203.0.113.3 application/xml";
        let e = parse(Line::bytes(l)).expect("squid");
        assert_eq!(e.format, Format::Squid);
        assert_eq!(e.timestamp, Some(1_286_536_309_586_000_000));
        assert_eq!(e.client_ip, Some("192.168.0.68".parse().expect("ip")));
        assert_eq!((e.status, e.bytes), (Some(200), Some(507)));
        assert_eq!(e.method.as_deref(), Some("POST"));
        assert_eq!(e.path.as_deref(), Some("http://rcv.example.com:8080/x?y=1"));
        assert_eq!(e.host, None);
        assert_eq!(e.user, None);
        assert_eq!(e.duration, Some(0.921));

        let c = b"1700000000.001 12 10.0.0.5 TCP_TUNNEL/200 3456 CONNECT [2001:db8::1]:443 alice HIER_DIRECT/2001:db8::1 -";
        let e = parse(Line::bytes(c)).expect("connect");
        assert_eq!(e.path.as_deref(), Some("[2001:db8::1]:443"));
        assert_eq!(
            (e.method.as_deref(), e.user.as_deref()),
            (Some("CONNECT"), Some("alice"))
        );
    }

    #[test]
    fn other_lines_are_not_squid() {
        assert!(!looks_like(
            b"192.168.0.1 - - [10/Oct/2024:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1"
        ));
        assert!(!looks_like(b"1286536309 921 x"));
        assert!(!looks_like(b"12.5 x"));
        assert!(looks_like(b"1286536309.586 921 x"));
        let e = parse(Line::bytes(
            b"1286536309.586 921 10.0.0.1 TCP_MISS/abc 5 GET http://x/",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("numeric status"), "{e}");
        assert!(parse(Line::bytes(b"1286536309.586 921 10.0.0.1 TCP_MISS/200")).is_err());
    }
}
