//! The W3C extended log format as IIS writes it by default:
//!
//! ```text
//! #Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken
//! 2024-10-10 12:00:00 10.0.0.5 GET /default.aspx id=5 443 - 203.0.113.9 Mozilla/5.0+(Windows+NT+10.0) https://www.example.com/ 200 0 0 153
//! ```
//!
//! Lines are parsed one at a time, without the file's `#Fields` header
//! (a line reaches the collector without the header that preceded it in
//! its file), so the layout is recognised from the line itself: the
//! method is the first field after the date and time that is an HTTP
//! method followed by a path, and what follows it is IIS's default field
//! order. Every IIS version since 6 writes one of these layouts unless an
//! administrator chose other fields: before the method, `s-ip` alone
//! (IIS 7 and later) or `s-sitename s-ip` (IIS 6), or also
//! `s-computername`; after the user agent, `cs(Referer)` (IIS 8.5 and
//! later) and `time-taken` (IIS 7 and later) are each optional. A line
//! that does not fit is left to the other parsers, then indexed raw and
//! counted, like any line no parser reads. Header lines (`#Software`,
//! `#Fields`) are such lines.
//!
//! W3C times are UTC. Spaces inside a value are written as `+` (the user
//! agent); they are turned back into spaces.

use std::borrow::Cow;

use super::timestamp::{rfc3339_at, Cursor};
use super::{decimal, parse_ip, Event, Format, Line, ParseError};

fn err(reason: &'static str, column: usize) -> ParseError {
    ParseError::invalid(Format::W3c, reason, column)
}

/// Whether the line starts with a W3C date and time (`2024-10-10 12:00:00 `).
pub(super) fn looks_like(line: &[u8]) -> bool {
    line.len() > 20
        && line[4] == b'-'
        && line[7] == b'-'
        && line[10] == b' '
        && line[13] == b':'
        && line[16] == b':'
        && line[19] == b' '
        && line[..4].iter().all(u8::is_ascii_digit)
}

/// What follows the client address, by how many fields are left.
const TAIL_LAYOUTS: &str =
    "expected user agent [referer] status substatus win32-status [time-taken] \
                            after the client address (IIS's default fields)";

fn is_method(b: &[u8]) -> bool {
    (3..=16).contains(&b.len()) && b.iter().all(|c| c.is_ascii_uppercase() || *c == b'-')
}

/// `+` back to spaces, borrowing when there is none.
fn unplus<'a>(src: Line<'a>, field: &'a [u8]) -> Option<Cow<'a, str>> {
    let text = src.opt_text_of(field)?;
    if !text.contains('+') {
        return Some(text);
    }
    Some(Cow::Owned(text.replace('+', " ")))
}

pub(super) fn parse(src: Line<'_>) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    if !looks_like(line) {
        return Err(err("expected a date and time (2024-10-10 12:00:00)", 0));
    }
    let mut c = Cursor::new(line);
    let (dt, _) = rfc3339_at(&mut c, true).ok_or_else(|| err("expected a date and time", 0))?;
    let timestamp = dt
        .to_unix_nanos()
        .ok_or_else(|| err("no such date or time", 0))?;
    let fields: Vec<(usize, &[u8])> = line[c.i..]
        .split(|&b| b == b' ')
        .scan(c.i, |at, f| {
            let start = *at;
            *at += f.len() + 1;
            Some((start, f))
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    // The method: after `s-ip`, `s-sitename s-ip` or those and
    // `s-computername`, and followed by the path.
    let m = (1..=3)
        .find(|&i| {
            fields.get(i).is_some_and(|(_, f)| is_method(f))
                && fields
                    .get(i + 1)
                    .is_some_and(|(_, f)| f.first() == Some(&b'/'))
        })
        .ok_or_else(|| {
            err(
                "expected a method and a path after the server's address",
                c.i,
            )
        })?;
    let rest = &fields[m..];
    // method stem query port user client agent, then 3 to 5 more.
    if !(10..=12).contains(&rest.len()) {
        let at = rest.get(7).map_or(line.len(), |f| f.0);
        return Err(err(TAIL_LAYOUTS, at));
    }
    let (method, stem, query, port, user, client, agent) = (
        rest[0].1, rest[1].1, rest[2].1, rest[3].1, rest[4].1, rest[5].1, rest[6].1,
    );
    if decimal(port).is_none_or(|p| p > 65_535) {
        return Err(err("expected the server port", rest[3].0));
    }
    let tail = &rest[7..];
    let numeric = |f: &(usize, &[u8])| decimal(f.1).is_some();
    // With a referer, the field after the agent is one (a URL or `-`);
    // without, it is the status and three numbers follow.
    let (referer, codes, time_taken) = match tail.len() {
        5 => (Some(tail[0].1), &tail[1..4], Some(tail[4])),
        4 if tail.iter().all(numeric) => (None, &tail[..3], Some(tail[3])),
        4 => (Some(tail[0].1), &tail[1..4], None),
        _ => (None, tail, None),
    };
    if !codes.iter().all(numeric) {
        return Err(err(TAIL_LAYOUTS, codes[0].0));
    }
    let status = decimal(codes[0].1)
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| err("expected a three-digit status", codes[0].0))?;
    let duration = match time_taken {
        Some((at, t)) => Some(
            decimal(t).ok_or_else(|| err("expected time-taken in milliseconds", at))? as f64
                / 1000.0,
        ),
        None => None,
    };
    let path = match src.opt_text_of(query) {
        Some(q) => Cow::Owned(format!("{}?{q}", src.text_of(stem))),
        None => src.text_of(stem),
    };
    Ok(Event {
        format: Format::W3c,
        timestamp: Some(timestamp),
        client_ip: parse_ip(client),
        user: src.opt_text_of(user),
        method: Some(src.text_of(method)),
        path: Some(path),
        status: Some(status as u16),
        referer: referer.and_then(|r| src.opt_text_of(r)),
        user_agent: unplus(src, agent),
        duration,
        ..Event::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(l: &str) -> Event<'_> {
        parse(Line::bytes(l.as_bytes())).expect(l)
    }

    #[test]
    fn iis_default_layouts_parse() {
        // IIS 8.5 and later: referer and time-taken.
        let e = parsed(
            "2024-10-10 12:00:00 10.0.0.5 GET /default.aspx id=5&x=1 443 - 203.0.113.9 \
             Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) https://www.example.com/ 200 0 0 153",
        );
        assert_eq!(e.format, Format::W3c);
        assert_eq!(e.timestamp, Some(1_728_561_600_000_000_000));
        assert_eq!(e.client_ip, Some("203.0.113.9".parse().expect("ip")));
        assert_eq!(e.method.as_deref(), Some("GET"));
        assert_eq!(e.path.as_deref(), Some("/default.aspx?id=5&x=1"));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.user, None);
        assert_eq!(
            e.user_agent.as_deref(),
            Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)")
        );
        assert_eq!(e.referer.as_deref(), Some("https://www.example.com/"));
        assert_eq!(e.duration, Some(0.153));
        assert_eq!(e.bytes, None);

        // IIS 7 to 8: no referer. A user name, no query.
        let e = parsed(
            "2024-10-10 12:00:01 10.0.0.5 POST /owa/auth.owa - 443 alice 2001:db8::7 curl/8.4.0 401 1 2148074254 15",
        );
        assert_eq!(e.path.as_deref(), Some("/owa/auth.owa"));
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.client_ip, Some("2001:db8::7".parse().expect("ip")));
        assert_eq!((e.status, e.referer.as_deref()), (Some(401), None));
        assert_eq!(e.duration, Some(0.015));

        // IIS 6: the site's name before the address, no time-taken.
        let e = parsed(
            "2024-10-10 12:00:02 W3SVC1 10.0.0.5 GET /images/logo.gif - 80 - 198.51.100.4 Mozilla/4.0+(compatible) 304 0 0",
        );
        assert_eq!(e.path.as_deref(), Some("/images/logo.gif"));
        assert_eq!((e.status, e.duration), (Some(304), None));

        // A referer but no time-taken, the referer unknown.
        let e =
            parsed("2024-10-10 12:00:03 10.0.0.5 GET / - 80 - 198.51.100.4 Mozilla/5.0 - 404 0 2");
        assert_eq!((e.status, e.referer.as_deref()), (Some(404), None));
    }

    #[test]
    fn other_layouts_and_lines_are_refused_with_a_reason() {
        for (line, why) in [
            ("#Fields: date time s-ip cs-method", "date and time"),
            (
                "192.0.2.1 - - [10/Oct/2024:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
                "date and time",
            ),
            (
                "2024-10-10 12:00:00 10.0.0.5 hello world and more words here",
                "method and a path",
            ),
            (
                "2024-10-10 12:00:00 10.0.0.5 GET / - 80 - 198.51.100.4 Mozilla/5.0 abc 0 0",
                "IIS's default fields",
            ),
            (
                "2024-10-10 12:00:00 10.0.0.5 GET / - 80 - 198.51.100.4 Mozilla/5.0 20 0 0",
                "three-digit status",
            ),
            (
                "2024-13-10 12:00:00 10.0.0.5 GET / - 80 - 198.51.100.4 Mozilla/5.0 200 0 0",
                "no such date",
            ),
        ] {
            let e = parse(Line::bytes(line.as_bytes())).expect_err(line);
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
    }
}
