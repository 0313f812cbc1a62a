//! HAProxy's HTTP log (`option httplog`), as it writes it to syslog or,
//! with `log stdout format raw`, bare:
//!
//! ```text
//! 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {1wt.eu} {} "GET /index.html HTTP/1.1"
//! ```
//!
//! Client `address:port`, the accept date, frontend, backend/server, the
//! five timers in milliseconds (the last is the whole request; `-1` when
//! it was aborted, `+` before it with `option logasap`), status, bytes
//! read by the client, two cookies, the termination state, connection
//! counts, queues, optional captured headers in braces, and the request
//! line in quotes.
//!
//! The accept date has no zone; it is read as UTC, like RFC 3164's
//! envelope around it.

use super::combined::split_request;
use super::timestamp::{month_from_abbr, Cursor, DateTime};
use super::{decimal, ip_before_port, Event, Format, Line, ParseError};

fn err(reason: &'static str, column: usize) -> ParseError {
    ParseError::invalid(Format::Haproxy, reason, column)
}

/// Whether a line (or a syslog message) starts like HAProxy's HTTP log:
/// `address:port [dd/Mon/yyyy:`.
pub(super) fn looks_like(line: &[u8]) -> bool {
    let Some(space) = line.iter().take(48).position(|&c| c == b' ') else {
        return false;
    };
    let (client, rest) = (&line[..space], &line[space + 1..]);
    client
        .iter()
        .rposition(|&c| c == b':')
        .is_some_and(|colon| {
            colon > 0
                && colon + 1 < client.len()
                && client[colon + 1..].iter().all(u8::is_ascii_digit)
        })
        && rest.len() > 13
        && rest[0] == b'['
        && rest[3] == b'/'
        && rest[7] == b'/'
        && rest[12] == b':'
}

/// `06/Feb/2009:12:14:14.655`, read as UTC.
fn accept_date(b: &[u8]) -> Option<i64> {
    let mut c = Cursor::new(b);
    let day = c.digits(2)?;
    c.expect(b'/')?;
    let month = month_from_abbr(b.get(c.i..c.i + 3)?)?;
    c.i += 3;
    c.expect(b'/')?;
    let year = i64::from(c.digits(4)?);
    c.expect(b':')?;
    let mut dt = DateTime {
        year,
        month,
        day,
        ..DateTime::default()
    };
    c.clock(&mut dt)?;
    if !c.at_end() {
        return None;
    }
    dt.to_unix_nanos()
}

/// A number HAProxy may log as `-1` (unknown) or with a `+` (logasap).
fn counter(b: &[u8]) -> Option<u64> {
    decimal(b.strip_prefix(b"+").unwrap_or(b))
}

pub(super) fn parse(src: Line<'_>) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    if !looks_like(line) {
        return Err(err("expected address:port [dd/Mon/yyyy:hh:mm:ss.mmm]", 0));
    }
    let space = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
    let client = &line[..space];
    let client_ip =
        ip_before_port(client).ok_or_else(|| err("expected the client's address", 0))?;
    let open = space + 2;
    let close = line[open..]
        .iter()
        .position(|&c| c == b']')
        .map(|p| open + p)
        .ok_or_else(|| err("expected ']' after the accept date", open))?;
    let timestamp =
        accept_date(&line[open..close]).ok_or_else(|| err("no such accept date", open))?;
    // frontend, backend/server, timers, status, bytes: then the request
    // line is the last quoted part (captured headers come before it).
    let mut at = close + 2;
    let mut next = |what: &'static str| -> Result<(usize, &[u8]), ParseError> {
        let start = at.min(line.len());
        let end = line[start..]
            .iter()
            .position(|&c| c == b' ')
            .map_or(line.len(), |p| start + p);
        at = end + 1;
        if start >= end {
            return Err(err(what, start));
        }
        Ok((start, &line[start..end]))
    };
    next("expected the frontend")?;
    next("expected backend/server")?;
    let (timers_at, timers) = next("expected the timers")?;
    let (status_at, status) = next("expected the status")?;
    let (bytes_at, bytes) = next("expected the bytes read")?;
    let total = timers.rsplit(|&c| c == b'/').next().unwrap_or_default();
    if timers.split(|&c| c == b'/').count() < 3 {
        return Err(err("expected timers (TR/Tw/Tc/Tr/Ta)", timers_at));
    }
    let status = match status {
        b"-1" => None,
        s => Some(
            counter(s)
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| err("expected the status", status_at))? as u16,
        ),
    };
    let bytes = counter(bytes).ok_or_else(|| err("expected the bytes read", bytes_at))?;
    let (req_open, req_close) = match (
        line[at.min(line.len())..].iter().position(|&c| c == b'"'),
        line.iter().rposition(|&c| c == b'"'),
    ) {
        (Some(o), Some(c)) if at + o < c => (at + o, c),
        _ => return Err(err("expected the request line in quotes", line.len())),
    };
    let (method, path, protocol) = split_request(&line[req_open + 1..req_close]);
    Ok(Event {
        format: Format::Haproxy,
        timestamp: Some(timestamp),
        client_ip: Some(client_ip),
        method: method.map(|m| src.text_of(m)),
        path: path.map(|p| src.text_of(p)),
        protocol: protocol.map(|p| src.text_of(p)),
        status,
        bytes: Some(bytes),
        duration: counter(total).map(|ms| ms as f64 / 1000.0),
        ..Event::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_log_lines_parse() {
        let l = b"10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {1wt.eu|Mozilla/5.0 (X11)} {} \"GET /index.html?q=1 HTTP/1.1\"";
        let e = parse(Line::bytes(l)).expect("haproxy");
        assert_eq!(e.format, Format::Haproxy);
        assert_eq!(e.timestamp, Some(1_233_922_454_655_000_000));
        assert_eq!(e.client_ip, Some("10.0.1.2".parse().expect("ip")));
        assert_eq!(e.method.as_deref(), Some("GET"));
        assert_eq!(e.path.as_deref(), Some("/index.html?q=1"));
        assert_eq!((e.status, e.bytes), (Some(200), Some(2750)));
        assert_eq!(e.duration, Some(0.109));

        // Aborted (-1 timers), logasap (+), IPv6, no captures.
        let l = b"2001:db8::7:40112 [06/Feb/2009:12:14:15.001] fe be/<NOSRV> -1/-1/-1/-1/+3001 503 212 - - SC-- 2/2/0/0/0 0/0 \"POST /api/login HTTP/1.1\"";
        let e = parse(Line::bytes(l)).expect("haproxy");
        assert_eq!(e.client_ip, Some("2001:db8::7".parse().expect("ip")));
        assert_eq!((e.status, e.duration), (Some(503), Some(3.001)));
        assert_eq!(e.path.as_deref(), Some("/api/login"));
    }

    #[test]
    fn other_lines_are_refused_with_a_reason() {
        assert!(!looks_like(
            b"192.0.2.1 - - [10/Oct/2024:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1"
        ));
        for (line, why) in [
            // A TCP log (`option tcplog`) has no request.
            (
                &b"10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0"[..],
                "bytes read",
            ),
            (
                b"10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/1/2/3 200 5 - - ---- 0/0/0/0/0 0/0",
                "request line",
            ),
            (
                b"10.0.1.2:33313 [31/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/1/2/3 200 5 \"GET / HTTP/1.1\"",
                "accept date",
            ),
        ] {
            let e = parse(Line::bytes(line)).expect_err("refused");
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
