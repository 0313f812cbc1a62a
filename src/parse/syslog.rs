//! Syslog, both flavours:
//!
//! ```text
//! RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]
//! RFC 3164: <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG
//! ```
//!
//! RFC 5424 is parsed strictly (it is a real grammar, and deviations mean
//! the line is something else); RFC 3164 was only ever a description of what
//! BSD daemons did, so that parser accepts the variants rsyslog and friends
//! emit: missing hostname, ISO timestamps, a year after the day, and lines
//! without PRI (as in /var/log/messages): always with the hint 3164, and
//! auto-detected when host and `tag:` follow the time.

use memchr::{memchr, memchr2};

use super::timestamp::{month_from_abbr, parse_rfc3339, year_of, Cursor, DateTime, NANOS_PER_DAY};
use super::{Event, Format, Line, ParseContext, ParseError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `<digits>` prefix: RFC 5424 when a version digit and a space follow, RFC
/// 3164 otherwise. `None` when the line does not start with a PRI at all.
pub(super) fn detect(line: &[u8]) -> Option<Format> {
    let digits = line
        .get(1..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if line.first() != Some(&b'<') || digits == 0 || line.get(1 + digits) != Some(&b'>') {
        return None;
    }
    match line.get(2 + digits..) {
        Some([v, b' ', ..]) if v.is_ascii_digit() => Some(Format::Syslog5424),
        _ => Some(Format::Syslog3164),
    }
}

/// Parses `<PRI>`; returns the severity and the offset after `>`.
fn pri(line: &[u8], fmt: Format) -> Result<(u8, usize), ParseError> {
    if line.first() != Some(&b'<') {
        return Err(ParseError::invalid(fmt, "expected '<' opening PRI", 0));
    }
    let mut c = Cursor { b: line, i: 1 };
    let value = c
        .digits_between(1, 3)
        .ok_or_else(|| ParseError::invalid(fmt, "expected PRI digits", 1))?;
    if value > 191 || c.peek().is_some_and(|b| b.is_ascii_digit()) {
        return Err(ParseError::invalid(fmt, "PRI out of range 0..=191", 1));
    }
    if !c.eat(b'>') {
        return Err(ParseError::invalid(fmt, "expected '>' closing PRI", c.i));
    }
    // The facility has no Event field; severity is the low three bits.
    Ok(((value & 7) as u8, c.i))
}

pub(super) fn parse_5424(src: Line<'_>) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    let fmt = Format::Syslog5424;
    let err = |reason, column| ParseError::invalid(fmt, reason, column);
    let len = line.len();
    let (severity, mut pos) = pri(line, fmt)?;

    let mut c = Cursor { b: line, i: pos };
    match c.digits_between(1, 3) {
        Some(v) if v > 0 => {}
        _ => return Err(err("expected VERSION digit", pos)),
    }
    if !c.eat(b' ') {
        return Err(err("expected space after VERSION", c.i));
    }
    pos = c.i;

    let ts_start = pos;
    let ts = header_field(line, &mut pos).ok_or_else(|| err("expected TIMESTAMP", pos))?;
    let timestamp = if ts == b"-" {
        None
    } else {
        Some(parse_rfc3339(ts).ok_or_else(|| err("invalid TIMESTAMP", ts_start))?)
    };
    let host = header_field(line, &mut pos).ok_or_else(|| err("expected HOSTNAME", pos))?;
    let app = header_field(line, &mut pos).ok_or_else(|| err("expected APP-NAME", pos))?;
    header_field(line, &mut pos).ok_or_else(|| err("expected PROCID", pos))?;
    header_field(line, &mut pos).ok_or_else(|| err("expected MSGID", pos))?;

    match line.get(pos) {
        Some(b'-') => pos += 1,
        Some(b'[') => {
            pos = sd_element(line, pos)?;
            while line.get(pos) == Some(&b'[') {
                pos = sd_element(line, pos)?;
            }
        }
        _ => return Err(err("expected STRUCTURED-DATA ('-' or '[')", pos)),
    }

    let message = match line.get(pos) {
        None => None,
        Some(b' ') => {
            let msg = &line[pos + 1..];
            let msg = msg.strip_prefix(BOM).unwrap_or(msg);
            (!msg.is_empty()).then(|| src.text_of(msg))
        }
        Some(_) => return Err(err("expected space before MSG", pos)),
    };
    debug_assert!(pos <= len);

    Ok(Event {
        format: fmt,
        timestamp,
        host: src.opt_text_of(host),
        app: src.opt_text_of(app),
        severity: Some(severity),
        message,
        ..Event::default()
    })
}

/// One header field; advances past the space that ends it. Fields are
/// separated by exactly one space, so an empty field is a missing one.
fn header_field<'a>(line: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let start = *pos;
    let rest = line
        .get(start..)
        .filter(|r| !r.is_empty() && r[0] != b' ')?;
    let end = memchr(b' ', rest).map_or(line.len(), |i| start + i);
    *pos = (end + 1).min(line.len());
    Some(&line[start..end])
}

/// Skips one `[SD-ID param="value" ...]` element starting at `open`; inside
/// values `\"`, `\\` and `\]` are escapes, and `]` only closes outside
/// quotes. Returns the offset after `]`.
fn sd_element(line: &[u8], open: usize) -> Result<usize, ParseError> {
    let fmt = Format::Syslog5424;
    let id = open + 1;
    if matches!(line.get(id), None | Some(b' ' | b']' | b'"' | b'=')) {
        return Err(ParseError::invalid(fmt, "expected SD-ID", id));
    }
    let unterminated =
        || ParseError::invalid(fmt, "unterminated STRUCTURED-DATA element", line.len());
    let mut i = id;
    let mut in_value = false;
    loop {
        let rest = line.get(i..).ok_or_else(unterminated)?;
        let found = if in_value {
            memchr2(b'"', b'\\', rest)
        } else {
            memchr2(b']', b'"', rest)
        };
        let j = i + found.ok_or_else(unterminated)?;
        match line[j] {
            b'\\' => i = j + 2,
            b'"' => {
                in_value = !in_value;
                i = j + 1;
            }
            _ => return Ok(j + 1),
        }
    }
}

/// A syslog line as rsyslog writes it to a file (`/var/log/syslog`,
/// `auth.log`, its traditional format): `Mmm dd hh:mm:ss HOST TAG[pid]:
/// MSG`, without PRI. Auto-detection asks for the whole shape, the tag's
/// colon included, so a line that merely starts with a date stays what it
/// was.
pub(super) fn looks_like_file_line(line: &[u8], ctx: &ParseContext) -> bool {
    let Some((_, end)) = bsd_timestamp(line, 0, ctx) else {
        return false;
    };
    let host_at = skip_spaces(line, end);
    let tag_at = skip_spaces(line, token_end(line, host_at.min(line.len())));
    if host_at == end || tag_at >= line.len() {
        return false;
    }
    let tag = &line[tag_at..token_end(line, tag_at)];
    tag.ends_with(b":") && tag_name(tag).is_some()
}

pub(super) fn parse_3164<'a>(src: Line<'a>, ctx: &ParseContext) -> Result<Event<'a>, ParseError> {
    let line = src.bytes;
    let fmt = Format::Syslog3164;
    let err = |reason, column| ParseError::invalid(fmt, reason, column);
    let len = line.len();
    let (severity, mut pos) = if line.first() == Some(&b'<') {
        let (sev, pos) = pri(line, fmt)?;
        (Some(sev), pos)
    } else {
        (None, 0)
    };

    let (timestamp, end) = if is_iso_date(&line[pos..]) {
        let end = memchr(b' ', &line[pos..]).map_or(len, |i| pos + i);
        let t =
            parse_rfc3339(&line[pos..end]).ok_or_else(|| err("invalid RFC 3339 timestamp", pos))?;
        (t, end)
    } else {
        bsd_timestamp(line, pos, ctx)
            .ok_or_else(|| err("expected timestamp 'Mmm dd hh:mm:ss'", pos))?
    };
    pos = skip_spaces(line, end);

    let mut ev = Event {
        format: fmt,
        timestamp: Some(timestamp),
        severity,
        ..Event::default()
    };
    if pos >= len {
        return Ok(ev);
    }
    let first_end = token_end(line, pos);
    let mut tag_at = pos;
    if tag_name(&line[pos..first_end]).is_none() {
        // Not a tag, so the hostname; local messages (logger, /dev/log)
        // arrive without one and start with the tag directly.
        ev.host = src.opt_text_of(&line[pos..first_end]);
        tag_at = skip_spaces(line, first_end);
    }
    if tag_at >= len {
        return Ok(ev);
    }
    let tag_end = token_end(line, tag_at);
    let msg_start = match tag_name(&line[tag_at..tag_end]) {
        Some(name) => {
            ev.app = Some(src.text_of(name));
            // One space separates "TAG:" from the content; more is content.
            tag_end + usize::from(line.get(tag_end) == Some(&b' '))
        }
        None => tag_at,
    };
    let msg = &line[msg_start.min(len)..];
    ev.message = (!msg.is_empty()).then(|| src.text_of(msg));
    Ok(ev)
}

fn skip_spaces(line: &[u8], mut pos: usize) -> usize {
    while line.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

fn token_end(line: &[u8], pos: usize) -> usize {
    memchr(b' ', &line[pos..]).map_or(line.len(), |i| pos + i)
}

/// `name:`, `name[pid]:` or `name[pid]`; returns `name`. Names are whatever
/// daemons use in practice (`postfix/smtpd`, `systemd-logind`, `CRON`).
fn tag_name(tok: &[u8]) -> Option<&[u8]> {
    let (body, colon) = match tok.strip_suffix(b":") {
        Some(b) => (b, true),
        None => (tok, false),
    };
    let name = match memchr(b'[', body) {
        Some(i) => {
            let pid = body[i + 1..].strip_suffix(b"]")?;
            if pid.is_empty() || memchr2(b'[', b']', pid).is_some() {
                return None;
            }
            &body[..i]
        }
        None if colon => body,
        None => return None,
    };
    (!name.is_empty() && memchr(b':', name).is_none()).then_some(name)
}

fn is_iso_date(b: &[u8]) -> bool {
    matches!(b, [a, b, c, d, b'-', ..] if [a, b, c, d].iter().all(|x| x.is_ascii_digit()))
}

/// `Mmm dd hh:mm:ss` (day space- or zero-padded, or not padded at all),
/// optionally with a fraction, or with a year after the day
/// (`Mmm dd yyyy hh:mm:ss`, Cisco and some appliances). Returns the instant
/// and the offset after it.
fn bsd_timestamp(line: &[u8], pos: usize, ctx: &ParseContext) -> Option<(i64, usize)> {
    let mut c = Cursor { b: line, i: pos };
    let month = month_from_abbr(line.get(pos..pos + 3)?)?;
    c.i += 3;
    c.expect(b' ')?;
    c.eat(b' ');
    let day = c.digits_between(1, 2)?;
    c.expect(b' ')?;
    let year = match line.get(c.i..c.i + 5) {
        Some([y0, y1, y2, y3, b' ']) if [y0, y1, y2, y3].iter().all(|x| x.is_ascii_digit()) => {
            let y = c.digits(4)?;
            c.i += 1;
            Some(i64::from(y))
        }
        _ => None,
    };
    let mut dt = DateTime {
        month,
        day,
        ..DateTime::default()
    };
    c.clock(&mut dt)?;
    if !matches!(c.peek(), None | Some(b' ')) {
        return None;
    }
    let t = match year {
        Some(y) => DateTime { year: y, ..dt }.to_unix_nanos()?,
        None => infer_year(dt, ctx.now_nanos)?,
    };
    Some((t, c.i))
}

/// RFC 3164 has no year. Take the latest year that does not put the instant
/// more than a day past `now` (clock skew between hosts); that is also the
/// one closest to now. Going back several years finds Feb 29.
fn infer_year(dt: DateTime, now: i64) -> Option<i64> {
    let now_year = year_of(now);
    let limit = now.saturating_add(NANOS_PER_DAY);
    (now_year - 8..=now_year + 1)
        .rev()
        .filter_map(|year| DateTime { year, ..dt }.to_unix_nanos())
        .find(|&t| t <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_line;
    use std::borrow::Cow;

    /// 2023-11-14T22:13:20Z
    const CTX: ParseContext = ParseContext {
        now_nanos: 1_700_000_000_000_000_000,
    };

    fn s(v: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(v))
    }

    fn auto(line: &[u8]) -> Event<'_> {
        match parse_line(line, Format::Auto, &CTX) {
            Ok(ev) => ev,
            Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(line)),
        }
    }

    fn err(line: &[u8], hint: Format) -> (&'static str, usize) {
        match parse_line(line, hint, &CTX) {
            Err(ParseError::Invalid { reason, column, .. }) => (reason, column),
            other => panic!(
                "{:?}: expected error, got {other:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }

    #[test]
    fn rfc5424_example_1_bom() {
        let ev = auto(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(
            ev,
            Event {
                format: Format::Syslog5424,
                timestamp: Some(1_065_910_455_003_000_000),
                host: s("mymachine.example.com"),
                app: s("su"),
                severity: Some(2),
                message: s("'su root' failed for lonvick on /dev/pts/8"),
                ..Event::default()
            }
        );
        assert!(matches!(ev.message, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn rfc5424_example_2_offset_micros() {
        let ev = auto(b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.");
        assert_eq!(
            ev,
            Event {
                format: Format::Syslog5424,
                // 2003-08-24T12:14:15.000003Z
                timestamp: Some(1_061_727_255_000_003_000),
                host: s("192.0.2.1"),
                app: s("myproc"),
                severity: Some(5),
                message: s("%% It's time to make the do-nuts."),
                ..Event::default()
            }
        );
    }

    #[test]
    fn rfc5424_example_3_structured_data_and_bom() {
        let ev = auto(b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \xEF\xBB\xBFAn application event log entry...");
        assert_eq!(ev.timestamp, Some(1_065_910_455_003_000_000));
        assert_eq!(ev.host, s("mymachine.example.com"));
        assert_eq!(ev.app, s("evntslog"));
        assert_eq!(ev.severity, Some(5));
        assert_eq!(ev.message, s("An application event log entry..."));
    }

    #[test]
    fn rfc5424_example_4_sd_only() {
        let ev = auto(b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]");
        assert_eq!(ev.app, s("evntslog"));
        assert_eq!(ev.message, None);
    }

    #[test]
    fn rfc5424_escapes_nil_and_empty_msg() {
        let ev =
            auto(br#"<14>1 2024-01-01T00:00:00Z h a 12 - [x@1 k="a\]b\"c\\" k2="]"][y@2] the msg"#);
        assert_eq!(ev.message, s("the msg"));
        assert_eq!(ev.timestamp, Some(1_704_067_200_000_000_000));
        let ev = auto(b"<14>1 - - - - - -");
        assert_eq!(
            ev,
            Event {
                format: Format::Syslog5424,
                severity: Some(6),
                ..Event::default()
            }
        );
        assert_eq!(auto(b"<14>1 - - - - - - ").message, None);
        // Without BOM the MSG may be any encoding; it is repaired, not rejected.
        let ev = auto(b"<14>1 - host app - - - caf\xe9");
        assert_eq!(ev.message.as_deref(), Some("caf\u{fffd}"));
    }

    #[test]
    fn rfc5424_malformed() {
        let full: &[u8] = b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [a@1 k=\"v\"] msg";
        assert_eq!(
            err(b"<165>1 2003-10-11T22:14:15.003Z host app", Format::Auto),
            ("expected PROCID", 40)
        );
        assert_eq!(
            err(
                b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [a@1 k=\"v]",
                Format::Auto
            )
            .0,
            "unterminated STRUCTURED-DATA element"
        );
        assert_eq!(
            err(
                b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 []",
                Format::Auto
            ),
            ("expected SD-ID", 49)
        );
        assert_eq!(
            err(
                b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 x msg",
                Format::Auto
            ),
            ("expected STRUCTURED-DATA ('-' or '[')", 48)
        );
        assert_eq!(
            err(
                b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 -msg",
                Format::Auto
            ),
            ("expected space before MSG", 49)
        );
        assert_eq!(
            err(
                b"<165>1 2003-13-11T22:14:15.003Z host app - ID47 - msg",
                Format::Auto
            ),
            ("invalid TIMESTAMP", 7)
        );
        assert_eq!(
            err(
                b"<165>1  2003-10-11T22:14:15.003Z host app - ID47 - m",
                Format::Auto
            ),
            ("expected TIMESTAMP", 7)
        );
        assert_eq!(
            err(b"<999>1 - - - - - -", Format::Auto),
            ("PRI out of range 0..=191", 1)
        );
        assert_eq!(
            err(b"<1>0 - - - - - -", Format::Auto),
            ("expected VERSION digit", 3)
        );
        assert_eq!(
            err(b"<34>Oct 11 22:14:15 host su: x", Format::Syslog5424),
            ("expected VERSION digit", 4)
        );
        assert_eq!(
            err(b"1 - - - - - -", Format::Syslog5424),
            ("expected '<' opening PRI", 0)
        );
        // Everything before the end of the structured data is incomplete.
        let sd_end = full.iter().rposition(|&c| c == b']').expect("sd") + 1;
        for cut in 0..full.len() {
            assert_eq!(
                parse_line(&full[..cut], Format::Syslog5424, &CTX).is_ok(),
                cut >= sd_end,
                "{cut}"
            );
        }
    }

    #[test]
    fn rfc3164_example() {
        let ev =
            auto(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(
            ev,
            Event {
                format: Format::Syslog3164,
                // No year in the line: 2023, the year of CTX.
                timestamp: Some(1_697_062_455_000_000_000),
                host: s("mymachine"),
                app: s("su"),
                severity: Some(2),
                message: s("'su root' failed for lonvick on /dev/pts/8"),
                ..Event::default()
            }
        );
    }

    #[test]
    fn rfc3164_real_world() {
        let ev = auto(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(ev.host, s("10.0.0.99"));
        assert_eq!(ev.app, None);
        assert_eq!(ev.message, s("Use the BFG!"));
        // 2023-02-05T17:32:18Z
        assert_eq!(ev.timestamp, Some(1_675_618_338_000_000_000));

        let ev = auto(b"<86>Nov 14 06:25:02 web-01 sshd[1234]: Accepted publickey for deploy from 198.51.100.4 port 50022 ssh2");
        assert_eq!(
            (ev.host, ev.app, ev.severity),
            (s("web-01"), s("sshd"), Some(6))
        );
        assert_eq!(
            ev.message,
            s("Accepted publickey for deploy from 198.51.100.4 port 50022 ssh2")
        );

        let ev =
            auto(b"<22>Nov  1 06:25:02 mx postfix/smtpd[77]: connect from unknown[203.0.113.9]");
        assert_eq!(ev.app, s("postfix/smtpd"));
        assert_eq!(ev.message, s("connect from unknown[203.0.113.9]"));

        let ev = auto(b"<4>Nov 14 06:25:02 host kernel: [12345.678] eth0: link up");
        assert_eq!(ev.app, s("kernel"));
        assert_eq!(ev.message, s("[12345.678] eth0: link up"));
    }

    #[test]
    fn rfc3164_variants() {
        // Missing hostname, as local logger(1) messages arrive.
        let ev = auto(b"<13>Nov 14 06:25:02 myscript[42]: hello");
        assert_eq!(
            (ev.host, ev.app, ev.message),
            (None, s("myscript"), s("hello"))
        );
        // rsyslog high-precision timestamp.
        let ev = auto(b"<134>2024-11-24T06:25:02.123456+01:00 web-01 nginx: GET /");
        assert_eq!(ev.format, Format::Syslog3164);
        assert_eq!(ev.timestamp, Some(1_732_425_902_123_456_000));
        assert_eq!(
            (ev.host, ev.app, ev.message),
            (s("web-01"), s("nginx"), s("GET /"))
        );
        // Explicit year.
        let ev = auto(b"<13>Oct 11 2003 22:14:15 host app: x");
        assert_eq!(ev.timestamp, Some(1_065_910_455_000_000_000));
        // No PRI, as in /var/log/messages: auto-detected when the host
        // and the tag's colon follow the time.
        let line: &[u8] =
            b"Nov 14 06:25:02 web-01 CRON[991]: (root) CMD (run-parts /etc/cron.hourly)";
        let ev = parse_line(line, Format::Syslog3164, &CTX).expect("no PRI");
        assert_eq!((ev.severity, ev.app.clone()), (None, s("CRON")));
        assert_eq!(parse_line(line, Format::Auto, &CTX), Ok(ev));
        // Timestamp only, and host only.
        assert_eq!(auto(b"<13>Nov 14 06:25:02").message, None);
        assert_eq!(auto(b"<13>Nov 14 06:25:02 host").host, s("host"));
        // "TAG:" with nothing after it.
        let ev = auto(b"<13>Nov 14 06:25:02 host app:");
        assert_eq!((ev.app, ev.message), (s("app"), None));
    }

    #[test]
    fn rfc3164_year_inference() {
        // Just after New Year, a line from just before it is last year's.
        let ctx = ParseContext {
            now_nanos: 1_704_067_800_000_000_000, // 2024-01-01T00:10:00Z
        };
        let ev = parse_line(b"<13>Dec 31 23:59:00 h a: m", Format::Auto, &ctx).expect("ok");
        assert_eq!(ev.timestamp, Some(1_704_067_140_000_000_000)); // 2023-12-31T23:59:00Z
                                                                   // A sender with a clock slightly ahead stays in the near future.
        let ctx = ParseContext {
            now_nanos: 1_704_066_600_000_000_000, // 2023-12-31T23:50:00Z
        };
        let ev = parse_line(b"<13>Jan  1 00:30:00 h a: m", Format::Auto, &ctx).expect("ok");
        assert_eq!(ev.timestamp, Some(1_704_069_000_000_000_000)); // 2024-01-01T00:30:00Z
                                                                   // Feb 29 goes back to the last leap year.
        let ev = auto(b"<13>Feb 29 12:00:00 h a: m");
        assert_eq!(ev.timestamp, Some(1_582_977_600_000_000_000)); // 2020-02-29T12:00:00Z
    }

    #[test]
    fn rfc3164_malformed() {
        assert_eq!(
            err(b"<34>", Format::Auto),
            ("expected timestamp 'Mmm dd hh:mm:ss'", 4)
        );
        assert_eq!(
            err(b"<34>Foo 11 22:14:15 host su: x", Format::Auto),
            ("expected timestamp 'Mmm dd hh:mm:ss'", 4)
        );
        assert_eq!(
            err(b"<34>Oct 32 22:14:15 host su: x", Format::Auto).0,
            "expected timestamp 'Mmm dd hh:mm:ss'"
        );
        assert_eq!(
            err(b"<34>Oct 11 22:14 host su: x", Format::Auto).0,
            "expected timestamp 'Mmm dd hh:mm:ss'"
        );
        assert_eq!(
            err(b"<34>2024-11-24T25:00:00Z host su: x", Format::Auto),
            ("invalid RFC 3339 timestamp", 4)
        );
        assert_eq!(
            err(b"<192>Oct 11 22:14:15 host su: x", Format::Auto),
            ("PRI out of range 0..=191", 1)
        );
        assert_eq!(
            err(b"<34Oct 11 22:14:15 host su: x", Format::Syslog3164),
            ("expected '>' closing PRI", 3)
        );
        assert_eq!(
            err(b"<>Oct 11 22:14:15 host su: x", Format::Syslog3164),
            ("expected PRI digits", 1)
        );
        let full: &[u8] = b"<34>Oct 11 22:14:15 mymachine su: hi";
        for cut in 0..full.len() {
            let _ = parse_line(&full[..cut], Format::Syslog3164, &CTX);
        }
    }

    #[test]
    fn tags() {
        assert_eq!(tag_name(b"su:"), Some(&b"su"[..]));
        assert_eq!(tag_name(b"sshd[1]:"), Some(&b"sshd"[..]));
        assert_eq!(tag_name(b"sshd[1]"), Some(&b"sshd"[..]));
        assert_eq!(tag_name(b"sshd[]:"), None);
        assert_eq!(tag_name(b"host"), None);
        assert_eq!(tag_name(b":"), None);
        assert_eq!(tag_name(b"[1]:"), None);
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"<34>1 "), Some(Format::Syslog5424));
        assert_eq!(detect(b"<34>Oct"), Some(Format::Syslog3164));
        assert_eq!(detect(b"<34>2024-01-01"), Some(Format::Syslog3164));
        assert_eq!(detect(b"<34"), None);
        assert_eq!(detect(b"<>"), None);
        assert_eq!(detect(b"<html>"), None);
        assert_eq!(detect(b"<"), None);
    }
}
