//! NCSA common / combined access logs, as Apache and nginx write them:
//!
//! ```text
//! [vhost[:port] ]%h %l %u [%t] "%r" %>s %b ["%{Referer}i" "%{User-agent}i" [extra ...]]
//! ```
//!
//! This is the hot path: one left-to-right pass with memchr, every field a
//! slice of the line, no allocation unless the bytes are not UTF-8.

use memchr::{memchr, memchr2, memrchr};

use super::timestamp::{parse_clf, parse_rfc3339};
use super::{parse_ip, Event, Format, Line, ParseError};

/// Which layouts the caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Combined when quoted referer/user agent follow the size, else common.
    Either,
    /// Referer and user agent are required.
    Combined,
    /// Anything after the size is treated as extra trailing fields.
    Common,
}

/// Enough for `vhost client ident user-with-a-few-spaces`.
const MAX_PREFIX_TOKENS: usize = 8;

pub(super) fn parse(src: Line<'_>, layout: Layout) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    let fmt = if layout == Layout::Common {
        Format::Common
    } else {
        Format::Combined
    };
    let err = |reason, column| ParseError::invalid(fmt, reason, column);
    let len = line.len();

    // Space-separated tokens up to the bracketed timestamp. Their number tells
    // plain `%h %l %u` from the `vhost_combined` prefix and from user names
    // containing spaces.
    let mut toks = [(0usize, 0usize); MAX_PREFIX_TOKENS];
    let mut n = 0;
    let mut pos = skip_spaces(line, 0);
    loop {
        if pos >= len || (n == MAX_PREFIX_TOKENS && line[pos] != b'[') {
            // Point at where a plain `%h %l %u` prefix would have ended.
            let column = if n > 3 { toks[3].0 } else { pos };
            return Err(err("expected '[' opening the timestamp", column));
        }
        if n >= 3 && line[pos] == b'[' {
            break;
        }
        let end = memchr(b' ', &line[pos..]).map_or(len, |i| pos + i);
        toks[n] = (pos, end);
        n += 1;
        pos = skip_spaces(line, end);
    }
    let tok = |i: usize| &line[toks[i].0..toks[i].1];
    let (vhost, first) = if n >= 4 && is_vhost(tok(0), tok(1)) {
        (Some(strip_port(tok(0))), 1)
    } else {
        (None, 0)
    };
    let client = tok(first);
    // %l (identd) is always "-" in practice and has no Event field.
    let user = &line[toks[first + 2].0..toks[n - 1].1];

    let ts_start = pos + 1;
    let ts_end = memchr(b']', &line[ts_start..])
        .map(|i| ts_start + i)
        .ok_or_else(|| err("expected ']' closing the timestamp", len))?;
    let ts_bytes = &line[ts_start..ts_end];
    let timestamp = parse_clf(ts_bytes)
        .or_else(|| parse_rfc3339(ts_bytes))
        .ok_or_else(|| err("invalid timestamp", ts_start))?;

    pos = skip_spaces(line, ts_end + 1);
    if line.get(pos) != Some(&b'"') {
        return Err(err("expected '\"' opening the request", pos));
    }
    let req_open = pos;
    // A closing quote followed by a status is certain; settling for any quote
    // followed by a space only matters for unescaped quotes in the request,
    // and lets a bad status be reported as such.
    let req_close = close_quote(line, req_open, followed_by_status)
        .or_else(|| close_quote(line, req_open, followed_by_space))
        .ok_or_else(|| err("unterminated request", len))?;
    let (method, path, protocol) = split_request(&line[req_open + 1..req_close]);

    pos = skip_spaces(line, req_close + 1);
    let (status, end) = uint(line, pos).ok_or_else(|| err("expected numeric status", pos))?;
    if end - pos > 3 || !ends_field(line, end) {
        return Err(err("expected numeric status", pos));
    }
    let status = status as u16;

    pos = skip_spaces(line, end);
    let bytes = if line.get(pos) == Some(&b'-') && ends_field(line, pos + 1) {
        pos += 1;
        None
    } else {
        let (v, end) = uint(line, pos)
            .filter(|&(_, end)| ends_field(line, end))
            .ok_or_else(|| err("expected response size (digits or '-')", pos))?;
        pos = end;
        Some(v)
    };

    pos = skip_spaces(line, pos);
    let mut ev = Event {
        format: Format::Common,
        timestamp: Some(timestamp),
        host: vhost.and_then(|h| src.opt_text_of(h)),
        client_ip: parse_ip(client),
        user: src.opt_text_of(user),
        method: method.map(|m| src.text_of(m)),
        path: path.map(|p| src.text_of(p)),
        protocol: protocol.map(|p| src.text_of(p)),
        status: Some(status),
        bytes,
        ..Event::default()
    };

    let quoted_next = line.get(pos) == Some(&b'"');
    if layout == Layout::Combined && !quoted_next {
        return Err(err("expected '\"' opening the referer", pos));
    }
    if quoted_next && layout != Layout::Common {
        // Once a quote follows the size this is a combined line: failing here
        // instead of settling for common is what catches truncated lines.
        let ref_close = close_quote(line, pos, followed_by_space)
            .ok_or_else(|| err("unterminated referer", len))?;
        let referer = &line[pos + 1..ref_close];
        pos = skip_spaces(line, ref_close + 1);
        if line.get(pos) != Some(&b'"') {
            return Err(err("expected '\"' opening the user agent", pos));
        }
        let ua_close = close_quote(line, pos, followed_by_space)
            .ok_or_else(|| err("unterminated user agent", len))?;
        ev.format = Format::Combined;
        ev.referer = src.opt_text_of(referer);
        ev.user_agent = src.opt_text_of(&line[pos + 1..ua_close]);
        pos = ua_close + 1;
        if let Some(forwarded) = forwarded_for(line, pos) {
            ev.client_ip = super::proxy::client_behind(ev.client_ip, forwarded);
        }
    }
    ev.duration = trailing_duration(line, pos);
    Ok(ev)
}

/// The quoted field right after the user agent when it holds an
/// `X-Forwarded-For` list, as nginx's default `main` format writes
/// `"$http_x_forwarded_for"` there.
fn forwarded_for(line: &[u8], pos: usize) -> Option<&str> {
    let open = skip_spaces(line, pos);
    if line.get(open) != Some(&b'"') {
        return None;
    }
    let close = close_quote(line, open, followed_by_space)?;
    let text = std::str::from_utf8(&line[open + 1..close]).ok()?;
    super::proxy::looks_forwarded(text).then_some(text)
}

fn skip_spaces(line: &[u8], mut pos: usize) -> usize {
    while line.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

fn ends_field(line: &[u8], pos: usize) -> bool {
    matches!(line.get(pos), None | Some(b' '))
}

fn followed_by_space(line: &[u8], pos: usize) -> bool {
    ends_field(line, pos)
}

fn followed_by_status(line: &[u8], pos: usize) -> bool {
    line.get(pos) == Some(&b' ')
        && line
            .get(skip_spaces(line, pos))
            .is_some_and(u8::is_ascii_digit)
}

/// Index of the quote closing the string opened at `open`. Backslash escapes
/// (`\"`, `\\`, `\xHH`) are skipped; an unescaped quote only closes when
/// `accept` likes what follows it, so servers that do not escape quotes in
/// the request or user agent still parse.
fn close_quote(line: &[u8], open: usize, accept: fn(&[u8], usize) -> bool) -> Option<usize> {
    let mut i = open + 1;
    while i < line.len() {
        let j = i + memchr2(b'"', b'\\', &line[i..])?;
        if line[j] == b'\\' {
            i = j + 2;
        } else if accept(line, j + 1) {
            return Some(j);
        } else {
            i = j + 1;
        }
    }
    None
}

/// Unsigned decimal at `pos`; `None` when there is no digit or it overflows.
fn uint(line: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut i = pos;
    while let Some(&c) = line.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    (i > pos).then_some((v, i))
}

/// `vhost_combined` puts `%v:%p` before the client. With four or more tokens
/// before the timestamp, the first one is a vhost when the second is an
/// address, or when the first is not an address and the second is not the
/// `-` an identd field would be (otherwise the user name has spaces).
fn is_vhost(first: &[u8], second: &[u8]) -> bool {
    parse_ip(second).is_some() || (parse_ip(first).is_none() && second != b"-")
}

fn strip_port(host: &[u8]) -> &[u8] {
    if let Some(rest) = host.strip_prefix(b"[") {
        if let Some(end) = memchr(b']', rest) {
            return &rest[..end];
        }
    }
    match memrchr(b':', host) {
        // Only one colon: a bare IPv6 address keeps its colons.
        Some(i)
            if i > 0
                && i + 1 < host.len()
                && memchr(b':', &host[..i]).is_none()
                && host[i + 1..].iter().all(u8::is_ascii_digit) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

type RequestParts<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Option<&'a [u8]>);

/// Splits `%r` into method, target and protocol. Whatever cannot be
/// recognised stays `None` (`"-"`, TLS handshakes logged as `\x16\x03...`,
/// junk from scanners); the target may contain spaces when the client sent
/// them unencoded.
pub(super) fn split_request(req: &[u8]) -> RequestParts<'_> {
    let none = (None, None, None);
    let (method, rest) = match memchr(b' ', req) {
        Some(i) => (&req[..i], &req[i + 1..]),
        None => (req, &req[req.len()..]),
    };
    if !is_method(method) {
        return none;
    }
    let rest = trim_spaces(rest);
    if rest.is_empty() {
        return (Some(method), None, None);
    }
    if let Some(i) = memrchr(b' ', rest) {
        if is_protocol(&rest[i + 1..]) {
            let target = trim_spaces(&rest[..i]);
            let target = (!target.is_empty()).then_some(target);
            return (Some(method), target, Some(&rest[i + 1..]));
        }
    } else if is_protocol(rest) {
        return (Some(method), None, Some(rest));
    }
    (Some(method), Some(rest), None)
}

/// Real methods are upper-case tokens (`GET`, `PROPFIND`, `M-SEARCH`);
/// requiring that keeps binary junk from being reported as a method.
fn is_method(b: &[u8]) -> bool {
    (1..=32).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// `HTTP/1.1`, `HTTP/2.0`, `HTTP/2`, `RTSP/1.0`...
fn is_protocol(b: &[u8]) -> bool {
    let Some(slash) = memchr(b'/', b) else {
        return false;
    };
    let (name, version) = (&b[..slash], &b[slash + 1..]);
    (1..=8).contains(&name.len())
        && name.iter().all(u8::is_ascii_uppercase)
        && version.first().is_some_and(u8::is_ascii_digit)
        && version.len() <= 8
        && version.iter().all(|&c| c.is_ascii_digit() || c == b'.')
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

/// Scans what follows the last standard field for the request duration.
/// Keyed values (`rt=`, `request_time=`, `request_time:`) win over a bare
/// float; of bare floats the first counts, since nginx configs that log two
/// put `$request_time` before `$upstream_response_time`. Unknown fields,
/// quoted or not, are skipped.
fn trailing_duration(line: &[u8], mut pos: usize) -> Option<f64> {
    let mut bare = None;
    loop {
        pos = skip_spaces(line, pos);
        if pos >= line.len() {
            return bare;
        }
        if line[pos] == b'"' {
            match close_quote(line, pos, followed_by_space) {
                Some(close) => pos = close + 1,
                None => return bare,
            }
            continue;
        }
        let start = pos;
        // A token may embed a quoted value with spaces: `key="a b"`.
        loop {
            match memchr2(b' ', b'"', &line[pos..]) {
                None => pos = line.len(),
                Some(k) if line[pos + k] == b' ' => pos += k,
                Some(k) => match close_quote(line, pos + k, followed_by_space) {
                    Some(c) => {
                        pos = c + 1;
                        continue;
                    }
                    None => pos = line.len(),
                },
            }
            break;
        }
        let token = &line[start..pos];
        match memchr2(b'=', b':', token) {
            Some(i) => {
                let key = &token[..i];
                if key == b"rt" || key == b"request_time" {
                    let value = token[i + 1..]
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(&token[i + 1..]);
                    if let Some(d) = seconds(value) {
                        return Some(d);
                    }
                }
            }
            None if bare.is_none() && memchr(b'.', token).is_some() => bare = seconds(token),
            None => {}
        }
    }
}

fn seconds(b: &[u8]) -> Option<f64> {
    if b.is_empty() || !b.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, ParseContext};
    use std::borrow::Cow;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const CTX: ParseContext = ParseContext {
        now_nanos: 1_700_000_000_000_000_000,
    };

    fn auto(line: &str) -> Event<'_> {
        match parse_line(line.as_bytes(), Format::Auto, &CTX) {
            Ok(ev) => ev,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    fn s(v: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(v))
    }

    #[test]
    fn behind_a_balancer_the_client_is_the_forwarded_one() {
        // nginx's default `main` format: combined, then "$http_x_forwarded_for".
        let main = |peer: &str, xff: &str| {
            format!(
                r#"{peer} - - [24/Nov/2026:10:00:01 +0100] "POST /wp-login.php HTTP/1.1" 200 512 "-" "Mozilla/5.0" "{xff}" rt=0.120"#
            )
        };
        let line = main("10.0.0.2", "203.0.113.50");
        let e = auto(&line);
        assert_eq!(e.client_ip, v4(203, 0, 113, 50));
        assert_eq!(e.duration, Some(0.12), "later fields still read");
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0"));
        for (peer, xff, client, why) in [
            (
                "10.0.0.2",
                "6.6.6.6, 203.0.113.50, 10.0.1.9",
                v4(203, 0, 113, 50),
                "a forged left part",
            ),
            ("10.0.0.2", "-", v4(10, 0, 0, 2), "no header"),
            (
                "198.51.100.4",
                "203.0.113.50",
                v4(198, 51, 100, 4),
                "a public peer is the client",
            ),
            // A quoted field that is no address list is not a forwarded header.
            (
                "10.0.0.2",
                "shop.example.com",
                v4(10, 0, 0, 2),
                "not an address list",
            ),
        ] {
            assert_eq!(auto(&main(peer, xff)).client_ip, client, "{why}");
        }
    }

    /// 2000-10-10T20:55:36Z
    const OCT10: i64 = 971_211_336_000_000_000;

    #[test]
    fn apache_common() {
        let ev = auto(
            "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326",
        );
        assert_eq!(
            ev,
            Event {
                format: Format::Common,
                timestamp: Some(OCT10),
                client_ip: v4(127, 0, 0, 1),
                user: s("frank"),
                method: s("GET"),
                path: s("/apache_pb.gif"),
                protocol: s("HTTP/1.0"),
                status: Some(200),
                bytes: Some(2326),
                ..Event::default()
            }
        );
    }

    #[test]
    fn apache_combined() {
        let ev = auto(
            "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \
             \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\"",
        );
        assert_eq!(
            ev,
            Event {
                format: Format::Combined,
                timestamp: Some(OCT10),
                client_ip: v4(127, 0, 0, 1),
                user: s("frank"),
                method: s("GET"),
                path: s("/apache_pb.gif"),
                protocol: s("HTTP/1.0"),
                status: Some(200),
                bytes: Some(2326),
                referer: s("http://www.example.com/start.html"),
                user_agent: s("Mozilla/4.08 [en] (Win98; I ;Nav)"),
                ..Event::default()
            }
        );
    }

    #[test]
    fn nginx_default_combined() {
        let ev = auto(
            "93.184.216.34 - - [24/Nov/2024:06:25:02 +0000] \"GET /index.html?q=a%20b&x=1 HTTP/1.1\" 304 0 \
             \"-\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\"",
        );
        assert_eq!(ev.format, Format::Combined);
        // 2024-11-24T06:25:02Z
        assert_eq!(ev.timestamp, Some(1_732_429_502_000_000_000));
        assert_eq!(ev.client_ip, v4(93, 184, 216, 34));
        assert_eq!(ev.user, None);
        assert_eq!(ev.path, s("/index.html?q=a%20b&x=1"));
        assert_eq!(ev.status, Some(304));
        assert_eq!(ev.bytes, Some(0));
        assert_eq!(ev.referer, None);
        assert!(ev
            .user_agent
            .as_deref()
            .is_some_and(|u| u.ends_with("Safari/537.36")));
        assert_eq!(ev.duration, None);
        assert_eq!(ev.host, None);
    }

    #[test]
    fn ipv6_client() {
        let ev = auto(
            "2001:db8::8a2e:370:7334 - - [01/Jan/2024:00:00:00 +0100] \"POST /api/v1/items HTTP/2.0\" 201 17 \"https://example.org/\" \"curl/8.5.0\"",
        );
        assert_eq!(
            ev.client_ip,
            Some(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0x8a2e, 0x370, 0x7334
            )))
        );
        // 2023-12-31T23:00:00Z
        assert_eq!(ev.timestamp, Some(1_704_063_600_000_000_000));
        assert_eq!(ev.method, s("POST"));
        assert_eq!(ev.protocol, s("HTTP/2.0"));
        assert_eq!(ev.user_agent, s("curl/8.5.0"));

        let ev = auto("::1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5");
        assert_eq!(ev.client_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ev.host, None);
    }

    #[test]
    fn hostname_client() {
        let ev = auto(
            "crawl-66-249-66-1.googlebot.com - - [10/Oct/2000:13:55:36 -0700] \"GET /robots.txt HTTP/1.1\" 404 153 \"-\" \"Googlebot/2.1\"",
        );
        assert_eq!(ev.client_ip, None);
        assert_eq!(ev.host, None);
        assert_eq!(ev.status, Some(404));
        assert_eq!(ev.path, s("/robots.txt"));
    }

    #[test]
    fn vhost_combined() {
        let ev = auto(
            "www.example.com:443 203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] \"GET /a HTTP/1.1\" 200 512 \"-\" \"Wget/1.21\"",
        );
        assert_eq!(ev.host, s("www.example.com"));
        assert_eq!(ev.client_ip, v4(203, 0, 113, 9));
        assert_eq!(ev.user, None);
        assert_eq!(ev.timestamp, Some(OCT10));
        assert_eq!(ev.format, Format::Combined);

        // A vhost prefix with a hostname client, and Apache's `%v` without a port.
        let ev = auto(
            "shop.example:80 client.isp.example - bob [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
        );
        assert_eq!(ev.host, s("shop.example"));
        assert_eq!(ev.client_ip, None);
        assert_eq!(ev.user, s("bob"));
        let ev =
            auto("example.org 10.1.2.3 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 1");
        assert_eq!(ev.host, s("example.org"));
        assert_eq!(ev.client_ip, v4(10, 1, 2, 3));
    }

    #[test]
    fn user_with_spaces() {
        let ev = auto(
            "10.0.0.1 - John Smith [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 401 0 \"-\" \"-\"",
        );
        assert_eq!(ev.client_ip, v4(10, 0, 0, 1));
        assert_eq!(ev.user, s("John Smith"));
        assert_eq!(ev.host, None);
        assert_eq!(ev.user_agent, None);
    }

    #[test]
    fn escaped_quotes() {
        let ev = auto(
            r#"198.51.100.7 - - [10/Oct/2000:13:55:36 -0700] "GET /search?q=\"drop table\" HTTP/1.1" 200 10 "http://x/\"ref\"" "Mozilla \"quoted\" agent\\""#,
        );
        assert_eq!(ev.path, s(r#"/search?q=\"drop table\""#));
        assert_eq!(ev.protocol, s("HTTP/1.1"));
        assert_eq!(ev.referer, s(r#"http://x/\"ref\""#));
        assert_eq!(ev.user_agent, s(r#"Mozilla \"quoted\" agent\\"#));
        assert_eq!(ev.status, Some(200));
    }

    #[test]
    fn unescaped_quote_in_request() {
        let ev = auto(
            r#"198.51.100.7 - - [10/Oct/2000:13:55:36 -0700] "GET /a" b HTTP/1.1" 400 0 "-" "-""#,
        );
        assert_eq!(ev.path, s(r#"/a" b"#));
        assert_eq!(ev.status, Some(400));
    }

    #[test]
    fn malformed_requests() {
        let tls = auto(
            r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03" 400 157 "-" "-""#,
        );
        assert_eq!((tls.method, tls.path, tls.protocol), (None, None, None));
        assert_eq!(tls.status, Some(400));
        assert_eq!(tls.bytes, Some(157));
        assert_eq!(tls.timestamp, Some(1_732_429_502_000_000_000));

        let dash = auto(r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "-" 400 0 "-" "-""#);
        assert_eq!((dash.method, dash.path, dash.protocol), (None, None, None));
        assert_eq!(dash.status, Some(400));

        let empty = auto(r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "" 400 0 "-" "-""#);
        assert_eq!(empty.method, None);

        let http09 = auto(r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "GET /" 400 0 "-" "-""#);
        assert_eq!(
            (http09.method, http09.path, http09.protocol),
            (s("GET"), s("/"), None)
        );

        let spaces = auto(
            r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "GET /cgi-bin/x.cgi?a=() { :; }; echo HTTP/1.1" 400 0 "-" "() { :; }; /bin/bash -c 'id'""#,
        );
        assert_eq!(spaces.method, s("GET"));
        assert_eq!(spaces.path, s("/cgi-bin/x.cgi?a=() { :; }; echo"));
        assert_eq!(spaces.protocol, s("HTTP/1.1"));
        assert_eq!(spaces.user_agent, s("() { :; }; /bin/bash -c 'id'"));

        let junk = auto(
            r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "MGLNDD_1.2.3.4_443" 400 0 "-" "-""#,
        );
        assert_eq!((junk.method, junk.path, junk.protocol), (None, None, None));

        let no_target =
            auto(r#"45.142.120.5 - - [24/Nov/2024:06:25:02 +0000] "GET HTTP/1.1" 400 0 "-" "-""#);
        assert_eq!(
            (no_target.method, no_target.path, no_target.protocol),
            (s("GET"), None, s("HTTP/1.1"))
        );
    }

    #[test]
    fn nginx_trailers() {
        let base = r#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 1 "-" "ua""#;
        let cases: [(&str, Option<f64>); 9] = [
            (" rt=0.123", Some(0.123)),
            (
                r#" "203.0.113.1, 10.0.0.1" request_time=0.042 upstream_response_time=0.040"#,
                Some(0.042),
            ),
            (" request_time:1.5", Some(1.5)),
            (
                r#" rt=0.300 uct="0.000" uht="0.290" urt="0.290""#,
                Some(0.3),
            ),
            (" 0.250", Some(0.25)),
            (" 0.250 0.249", Some(0.25)),
            (r#" "-" 0.005"#, Some(0.005)),
            (r#" upstream_response_time=0.9 "x y" 1234"#, None),
            (r#" rt=- 0.7"#, Some(0.7)),
        ];
        for (tail, want) in cases {
            let line = format!("{base}{tail}");
            let ev = auto(&line);
            assert_eq!(ev.format, Format::Combined, "{line}");
            assert_eq!(ev.duration, want, "{line}");
            assert_eq!(ev.user_agent, s("ua"));
        }
    }

    #[test]
    fn common_with_trailing_fields() {
        // Apache `%h %l %u %t "%r" %>s %b %D`: microsecond integers are not
        // taken for seconds.
        let ev = auto(r#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 - 1234"#);
        assert_eq!(ev.format, Format::Common);
        assert_eq!(ev.bytes, None);
        assert_eq!(ev.duration, None);
        // Forced common ignores referer and user agent.
        let line =
            br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 5 "-" "ua" 0.1"#;
        let ev = parse_line(line, Format::Common, &CTX).expect("common");
        assert_eq!(ev.format, Format::Common);
        assert_eq!(ev.user_agent, None);
        assert_eq!(ev.duration, Some(0.1));
    }

    #[test]
    fn millisecond_and_iso_timestamps() {
        let ev = auto(r#"10.0.0.2 - - [10/Oct/2000:13:55:36.123 -0700] "GET / HTTP/1.1" 200 1"#);
        assert_eq!(ev.timestamp, Some(OCT10 + 123_000_000));
        let ev = auto(r#"10.0.0.2 - - [2000-10-10T13:55:36-07:00] "GET / HTTP/1.1" 200 1"#);
        assert_eq!(ev.timestamp, Some(OCT10));
    }

    #[test]
    fn valid_line_borrows_everything() {
        let line = br#"www.example.com:80 192.0.2.10 - alice [10/Oct/2000:13:55:36 -0700] "GET /p?q=1 HTTP/1.1" 200 99 "https://ref.example/" "Mozilla/5.0" rt=0.010"#;
        let ev = parse_line(line, Format::Auto, &CTX).expect("parses");
        let fields = [
            ("host", &ev.host),
            ("user", &ev.user),
            ("method", &ev.method),
            ("path", &ev.path),
            ("protocol", &ev.protocol),
            ("referer", &ev.referer),
            ("user_agent", &ev.user_agent),
        ];
        for (name, field) in fields {
            assert!(
                matches!(field, Some(Cow::Borrowed(_))),
                "{name} is {field:?}"
            );
        }
        assert_eq!(ev.duration, Some(0.010));
    }

    #[test]
    fn invalid_utf8_is_repaired() {
        let line = b"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] \"GET /caf\xe9 HTTP/1.1\" 200 1 \"-\" \"\xff\xfe\"";
        let ev = parse_line(line, Format::Auto, &CTX).expect("parses");
        assert_eq!(ev.path.as_deref(), Some("/caf\u{fffd}"));
        assert!(matches!(ev.path, Some(Cow::Owned(_))));
        assert_eq!(ev.user_agent.as_deref(), Some("\u{fffd}\u{fffd}"));
    }

    fn reason(line: &[u8], layout: Format) -> (&'static str, usize) {
        match parse_line(line, layout, &CTX) {
            Err(ParseError::Invalid { reason, column, .. }) => (reason, column),
            other => panic!(
                "{:?}: expected error, got {other:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }

    #[test]
    fn malformed_lines_fail() {
        let line = br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "Mozilla/5.0""#;
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2x0 1"#,
                Format::Auto
            ),
            ("expected numeric status", 59)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" OK 1"#,
                Format::Auto
            ),
            ("expected numeric status", 59)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2000 1"#,
                Format::Auto
            ),
            ("expected numeric status", 59)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - 10/Oct/2000:13:55:36 -0700 "GET / HTTP/1.1" 200 1"#,
                Format::Auto
            ),
            ("expected '[' opening the timestamp", 13)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700 "GET / HTTP/1.1" 200 1"#,
                Format::Auto
            ),
            ("expected ']' closing the timestamp", 63)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] GET / HTTP/1.1 200 1"#,
                Format::Auto
            ),
            ("expected '\"' opening the request", 42)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 x"#,
                Format::Auto
            ),
            ("expected response size (digits or '-')", 63)
        );
        assert_eq!(
            reason(
                br#"10.0.0.2 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#,
                Format::Combined
            ),
            ("expected '\"' opening the referer", 64)
        );
        assert_eq!(
            reason(b"hello world", Format::Auto).0,
            "expected '[' opening the timestamp"
        );
        assert_eq!(
            reason(b"\x00\xff\x16\x03\x01garbage\x00", Format::Auto).1,
            13
        );
        // Every strict prefix of a valid line fails or parses as common; none panics.
        for cut in 0..line.len() {
            let prefix = &line[..cut];
            if let Ok(ev) = parse_line(prefix, Format::Auto, &CTX) {
                assert_eq!(
                    ev.format,
                    Format::Common,
                    "{:?}",
                    String::from_utf8_lossy(prefix)
                );
            }
        }
        assert_eq!(
            reason(&line[..line.len() - 1], Format::Auto),
            ("unterminated user agent", line.len() - 1)
        );
        assert_eq!(
            reason(&line[..68], Format::Auto),
            ("expected '\"' opening the user agent", 68)
        );
    }

    #[test]
    fn request_splitting() {
        assert_eq!(
            split_request(b"OPTIONS * HTTP/1.1"),
            (
                Some(&b"OPTIONS"[..]),
                Some(&b"*"[..]),
                Some(&b"HTTP/1.1"[..])
            )
        );
        assert_eq!(
            split_request(b"CONNECT example.com:443 HTTP/1.1"),
            (
                Some(&b"CONNECT"[..]),
                Some(&b"example.com:443"[..]),
                Some(&b"HTTP/1.1"[..])
            )
        );
        assert_eq!(split_request(b"GET"), (Some(&b"GET"[..]), None, None));
        assert_eq!(split_request(b"get / HTTP/1.1"), (None, None, None));
        assert_eq!(
            split_request(b"GET /a HTTP/1.1 HTTP/1.1"),
            (
                Some(&b"GET"[..]),
                Some(&b"/a HTTP/1.1"[..]),
                Some(&b"HTTP/1.1"[..])
            )
        );
    }

    #[test]
    fn vhost_port_stripping() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[2001:db8::1]:443"), b"2001:db8::1");
        assert_eq!(strip_port(b"2001:db8::1"), b"2001:db8::1");
        assert_eq!(strip_port(b"host:"), b"host:");
    }
}
