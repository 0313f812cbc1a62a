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
//! later) and `time-taken` (IIS 7 and later) are each optional. Two
//! larger layouts are read too: Azure App Service's (`s-sitename` before
//! the method; `cs(Cookie) cs(Referer) cs-host` after the agent,
//! `sc-bytes cs-bytes` before `time-taken`) and IIS with every field
//! logged (the same, with `s-computername s-ip` before the method and
//! `cs-version` before the agent). A line that does not fit is left to the other parsers, then indexed raw and
//! counted, like any line no parser reads. Header lines (`#Software`,
//! `#Fields`) are such lines.
//!
//! W3C times are UTC. Spaces inside a value are written as `+` (the user
//! agent); they are turned back into spaces.

use std::borrow::Cow;

use super::timestamp::{rfc3339_at, Cursor};
use super::{decimal, fields_from, parse_ip, Event, Format, Line, ParseError};

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
     after the client address (IIS's default fields, Azure's, or all of IIS's)";

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
    let tokens: Vec<(usize, &[u8])> = fields_from(line, c.i).collect();
    // The method: after `s-ip`, `s-sitename s-ip` or those and
    // `s-computername`, and followed by the path.
    let m = (1..=3)
        .find(|&i| {
            tokens.get(i).is_some_and(|(_, f)| is_method(f))
                && tokens
                    .get(i + 1)
                    .is_some_and(|(_, f)| f.first() == Some(&b'/'))
        })
        .ok_or_else(|| {
            err(
                "expected a method and a path after the server's address",
                c.i,
            )
        })?;
    let rest = &tokens[m..];
    let at = |i: usize| rest.get(i).map_or(line.len(), |f| f.0);
    let numeric = |i: usize| rest.get(i).is_some_and(|f| decimal(f.1).is_some());
    // Where each field is, by how many follow the method (see the module
    // docs); the status, substatus and win32 status are consecutive.
    let fields = match rest.len() {
        10 => Fields::at(6, None, 7, None),
        // Without a referer the field after the agent is the status and
        // three numbers follow; with one it is a URL or `-`.
        11 if (7..11).all(numeric) => Fields::at(6, None, 7, Some(10)),
        11 => Fields::at(6, Some(7), 8, None),
        12 => Fields::at(6, Some(7), 8, Some(11)),
        // Azure App Service: cookie, referer and host after the agent,
        // bytes sent and received before time-taken.
        16 => Fields {
            host: Some(9),
            bytes: Some(13),
            ..Fields::at(6, Some(8), 10, Some(15))
        },
        // IIS with every field logged: as Azure's, the version first.
        17 => Fields {
            protocol: Some(6),
            host: Some(10),
            bytes: Some(14),
            ..Fields::at(7, Some(9), 11, Some(16))
        },
        _ => return Err(err(TAIL_LAYOUTS, at(7))),
    };
    let (method, stem, query, port, user, client) = (
        rest[0].1, rest[1].1, rest[2].1, rest[3].1, rest[4].1, rest[5].1,
    );
    if decimal(port).is_none_or(|p| p > 65_535) {
        return Err(err("expected the server port", rest[3].0));
    }
    if !(fields.status..fields.status + 3).all(numeric) {
        return Err(err(TAIL_LAYOUTS, at(fields.status)));
    }
    let status = decimal(rest[fields.status].1)
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| err("expected a three-digit status", at(fields.status)))?;
    let number = |i: Option<usize>, what: &'static str| -> Result<Option<u64>, ParseError> {
        i.map(|i| decimal(rest[i].1).ok_or_else(|| err(what, at(i))))
            .transpose()
    };
    let duration = number(fields.time_taken, "expected time-taken in milliseconds")?
        .map(|ms| ms as f64 / 1000.0);
    let bytes = number(fields.bytes, "expected sc-bytes")?;
    let text = |i: Option<usize>| i.and_then(|i| src.opt_text_of(rest[i].1));
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
        protocol: text(fields.protocol),
        status: Some(status as u16),
        bytes,
        host: text(fields.host),
        referer: text(fields.referer),
        user_agent: unplus(src, rest[fields.agent].1),
        duration,
        ..Event::default()
    })
}

/// Positions in the fields from the method on.
#[derive(Clone, Copy)]
struct Fields {
    agent: usize,
    referer: Option<usize>,
    status: usize,
    time_taken: Option<usize>,
    host: Option<usize>,
    protocol: Option<usize>,
    bytes: Option<usize>,
}

impl Fields {
    const fn at(
        agent: usize,
        referer: Option<usize>,
        status: usize,
        time_taken: Option<usize>,
    ) -> Self {
        Fields {
            agent,
            referer,
            status,
            time_taken,
            host: None,
            protocol: None,
            bytes: None,
        }
    }
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

        // Azure App Service: site, cookie, host, bytes.
        let e = parsed(
            "2024-10-10 12:00:04 SHOP-APP POST /api/login - 443 - 203.0.113.5 \
             Mozilla/5.0+(X11) ARRAffinity=abc https://shop.example.com/ shop.example.com 401 0 0 812 1402 93",
        );
        assert_eq!(e.host.as_deref(), Some("shop.example.com"));
        assert_eq!(
            (e.status, e.bytes, e.duration),
            (Some(401), Some(812), Some(0.093))
        );
        assert_eq!(e.referer.as_deref(), Some("https://shop.example.com/"));
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0 (X11)"));

        // IIS with every field: the version, then as Azure's.
        let e = parsed(
            "2024-10-10 12:00:05 W3SVC1 WEB01 10.0.0.5 GET /a.aspx q=1 80 - 198.51.100.9 HTTP/1.1 \
             curl/8.4.0 - - www.example.com 200 0 0 5120 310 7",
        );
        assert_eq!(e.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(
            (e.path.as_deref(), e.bytes),
            (Some("/a.aspx?q=1"), Some(5120))
        );
        assert_eq!(
            (e.host.as_deref(), e.referer.as_deref()),
            (Some("www.example.com"), None)
        );

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
