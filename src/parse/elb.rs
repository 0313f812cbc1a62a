//! AWS load balancer access logs: the Application Load Balancer's, and the
//! Classic Load Balancer's that it extends.
//!
//! ```text
//! http 2018-07-02T22:23:00.186641Z app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - arn:... "Root=1-58337262-36d228ad5d99923122bbe354" ...
//! 2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 0.000073 0.001048 0.000057 200 200 0 29 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.38.0" - -
//! ```
//!
//! An ALB line starts with the connection's type (`http`, `https`, `h2`,
//! `grpcs`, `ws`, `wss`), a Classic line with the time. Then: the load
//! balancer, client and target `address:port`, three processing times in
//! seconds (`-1` when the request never reached a target), the status the
//! load balancer answered and the target's, bytes received and sent, the
//! request line and the user agent. Fields ALB added since are read past.
//!
//! The request's target is an absolute URL (`http://host:port/path`); the
//! event's `path` is its path and query, as a server behind the balancer
//! would log it, so rules on paths read it alike. The event's `host` is the
//! load balancer: the one that logged, for rules keyed per host. The
//! status is the load balancer's: what the client got, a 502 or 504 of the
//! balancer's own included (outages the targets never logged).

use super::combined::split_request;
use super::timestamp::parse_rfc3339;
use super::{decimal, ip_before_port, Event, Format, Line, ParseError};

fn err(reason: &'static str, column: usize) -> ParseError {
    ParseError::invalid(Format::Elb, reason, column)
}

const ALB_TYPES: [&[u8]; 6] = [b"http", b"https", b"h2", b"grpcs", b"ws", b"wss"];

/// Whether the line starts like an ALB line (a connection type and an
/// RFC 3339 time) or a Classic one (an RFC 3339 time with `T` and `Z`,
/// which no other format here starts with).
pub(super) fn looks_like(line: &[u8]) -> bool {
    let first = line.split(|&b| b == b' ').next().unwrap_or_default();
    if ALB_TYPES.contains(&first) {
        let time = line[first.len()..].get(1..).unwrap_or_default();
        return is_utc_time(time.split(|&b| b == b' ').next().unwrap_or_default());
    }
    is_utc_time(first)
}

fn is_utc_time(t: &[u8]) -> bool {
    t.len() >= 20
        && t[4] == b'-'
        && t[10] == b'T'
        && t.last() == Some(&b'Z')
        && t[..4].iter().all(u8::is_ascii_digit)
}

/// The fields of a line: separated by one space; a field in double quotes
/// runs to its closing quote (a backslash escapes the next byte).
fn fields(line: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::with_capacity(32);
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < line.len() && line[j] != b'"' {
                j += if line[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(line.len());
            out.push((start, &line[start..end]));
            i = end + 2;
        } else {
            let end = line[i..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(line.len(), |p| i + p);
            out.push((i, &line[i..end]));
            i = end + 1;
        }
    }
    out
}

/// Seconds, `-1` (never reached a target) as unknown.
fn seconds(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b.len() > 24 || !b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The path and query of an absolute URL; other targets as they are.
fn origin_form(target: &[u8]) -> &[u8] {
    let Some(scheme_end) = target.windows(3).position(|w| w == b"://") else {
        return target;
    };
    let authority = scheme_end + 3;
    match target[authority..].iter().position(|&c| c == b'/') {
        Some(slash) => &target[authority + slash..],
        None => b"/",
    }
}

pub(super) fn parse(src: Line<'_>) -> Result<Event<'_>, ParseError> {
    let line = src.bytes;
    if !looks_like(line) {
        return Err(err(
            "expected an ALB connection type and time, or a Classic ELB time",
            0,
        ));
    }
    let all = fields(line);
    // The ALB type, then the fields both share.
    let f = if all.first().is_some_and(|(_, t)| ALB_TYPES.contains(t)) {
        &all[1..]
    } else {
        &all[..]
    };
    if f.len() < 12 {
        return Err(err(
            "expected time, balancer, client, target, three times, two statuses, \
             two sizes and the request",
            line.len(),
        ));
    }
    let (at, time) = f[0];
    let timestamp = parse_rfc3339(time).ok_or_else(|| err("no such time", at))?;
    let (at, client) = f[2];
    let client_ip = ip_before_port(client);
    if client_ip.is_none() && client != b"-" {
        return Err(err("expected the client's address:port", at));
    }
    let mut duration = Some(0.0);
    for &(at, t) in &f[4..7] {
        if t != b"-1" && seconds(t).is_none() {
            return Err(err("expected a processing time in seconds", at));
        }
        duration = duration.zip(seconds(t)).map(|(a, b)| a + b);
    }
    let (at, status) = f[7];
    let status = match status {
        b"-" => None,
        s => Some(
            decimal(s)
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| err("expected the balancer's status", at))? as u16,
        ),
    };
    let (at, sent) = f[10];
    let bytes = decimal(sent).ok_or_else(|| err("expected the bytes sent", at))?;
    let (method, target, protocol) = split_request(f[11].1);
    Ok(Event {
        format: Format::Elb,
        timestamp: Some(timestamp),
        host: src.opt_text_of(f[1].1),
        client_ip,
        method: method.map(|m| src.text_of(m)),
        path: target.map(|t| src.text_of(origin_form(t))),
        protocol: protocol.map(|p| src.text_of(p)),
        status,
        bytes: Some(bytes),
        user_agent: f.get(12).and_then(|(_, ua)| src.opt_text_of(ua)),
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
    fn alb_and_classic_lines_parse() {
        let e = parsed(
            "https 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 \
             192.168.131.39:2817 10.0.0.1:80 0.086 0.048 0.037 200 200 0 57 \
             \"GET https://www.example.com:443/login?next=%2Fhome HTTP/1.1\" \"Mozilla/5.0 (X11; Linux)\" \
             ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 \
             arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \
             \"Root=1-58337281-1d84f3d73c47ec4e58577259\" \"www.example.com\" \
             \"arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012\" \
             1 2018-07-02T22:22:48.364000Z \"authenticate,forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" TID_123",
        );
        assert_eq!(e.format, Format::Elb);
        assert_eq!(e.timestamp, Some(1_530_570_180_186_641_000));
        assert_eq!(
            e.host.as_deref(),
            Some("app/my-loadbalancer/50dc6c495c0c9188")
        );
        assert_eq!(e.client_ip, Some("192.168.131.39".parse().expect("ip")));
        assert_eq!(e.method.as_deref(), Some("GET"));
        assert_eq!(e.path.as_deref(), Some("/login?next=%2Fhome"));
        assert_eq!(e.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!((e.status, e.bytes), (Some(200), Some(57)));
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0 (X11; Linux)"));
        let d = e.duration.expect("duration");
        assert!((d - 0.171).abs() < 1e-9, "{d}");

        // The balancer's own 502: the target never answered.
        let e = parsed(
            "h2 2024-10-10T12:00:00.000000Z app/lb/1 [2001:db8::1]:50000 - -1 -1 -1 502 - 120 272 \
             \"POST https://api.example.com:443/v1/orders HTTP/2.0\" \"okhttp/4.12.0\" - - - \"-\"",
        );
        assert_eq!(e.client_ip, Some("2001:db8::1".parse().expect("ip")));
        assert_eq!((e.status, e.duration), (Some(502), None));
        assert_eq!(e.path.as_deref(), Some("/v1/orders"));

        // Classic: no type, fewer fields; a TCP listener logs no request.
        let e = parsed(
            "2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 \
             0.000073 0.001048 0.000057 404 404 0 29 \"GET http://www.example.com:80/x HTTP/1.1\" \"curl/7.38.0\" - -",
        );
        assert_eq!((e.status, e.path.as_deref()), (Some(404), Some("/x")));
        assert_eq!(e.host.as_deref(), Some("my-loadbalancer"));
        let e = parsed(
            "2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 \
             0.001069 0.000028 0.000041 - - 82 305 \"- - - \" \"-\" - -",
        );
        assert_eq!(
            (e.status, e.method.as_deref(), e.path.as_deref()),
            (None, None, None)
        );
    }

    #[test]
    fn broken_lines_are_refused_with_a_reason() {
        for (line, why) in [
            ("http hello", "connection type and time"),
            ("2015-05-13T23:39:43.945958Z lb 1.2.3.4:1", "two statuses"),
            (
                "2015-05-13T23:39:43.945958Z lb nowhere 10.0.0.1:80 0 0 0 200 200 0 1 \"GET / HTTP/1.1\"",
                "client's address",
            ),
            (
                "2015-05-13T23:39:43.945958Z lb 1.2.3.4:5 10.0.0.1:80 0 x 0 200 200 0 1 \"GET / HTTP/1.1\"",
                "processing time",
            ),
            (
                "2015-05-13T23:39:43.945958Z lb 1.2.3.4:5 10.0.0.1:80 0 0 0 2000 200 0 1 \"GET / HTTP/1.1\"",
                "balancer's status",
            ),
            (
                "2015-13-13T23:39:43.945958Z lb 1.2.3.4:5 10.0.0.1:80 0 0 0 200 200 0 1 \"GET / HTTP/1.1\"",
                "no such time",
            ),
        ] {
            let e = parse(Line::bytes(line.as_bytes())).expect_err(line);
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
    }
}
