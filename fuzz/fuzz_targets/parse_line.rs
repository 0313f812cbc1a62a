//! `parse::parse_line` with every `Format` hint on arbitrary bytes (combined
//! / common, JSON lines, RFC 5424, RFC 3164 and auto-detection). Beyond not
//! panicking:
//! - a borrowed field value is a substring of the line (no value is
//!   invented or read from outside the line);
//! - a forced format yields an event of that format, `Auto` never yields
//!   `Auto`/`Raw`, `Raw` is never parsed;
//! - severity is 0..=7, a duration is finite and non-negative;
//! - an error's column lies within the line.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use nightowl::parse::{parse_line, Event, Format, ParseContext, ParseError};

const FORMATS: [Format; 11] = [
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
    Format::Raw,
];

/// 2026-11-24T12:00:00Z: fixed, so a crash reproduces whatever the date.
const CTX: ParseContext = ParseContext {
    now_nanos: 1_795_521_600_000_000_000,
};

fn within(line: &[u8], name: &str, v: &Option<Cow<'_, str>>) {
    if let Some(Cow::Borrowed(s)) = v {
        let (lo, hi) = (line.as_ptr() as usize, line.as_ptr() as usize + line.len());
        let (p, q) = (s.as_ptr() as usize, s.as_ptr() as usize + s.len());
        assert!(
            lo <= p && q <= hi,
            "{name} {s:?} is not a slice of the line"
        );
    }
}

fn check(line: &[u8], hint: Format, ev: &Event<'_>) {
    match hint {
        Format::Auto => assert!(!matches!(ev.format, Format::Auto | Format::Raw)),
        Format::Raw => panic!("raw lines are never parsed"),
        forced => assert_eq!(ev.format, forced),
    }
    for (name, v) in [
        ("host", &ev.host),
        ("user", &ev.user),
        ("method", &ev.method),
        ("path", &ev.path),
        ("protocol", &ev.protocol),
        ("referer", &ev.referer),
        ("user_agent", &ev.user_agent),
        ("app", &ev.app),
        ("message", &ev.message),
    ] {
        within(line, name, v);
    }
    if let Some(s) = ev.severity {
        assert!(s <= 7, "severity {s}");
    }
    if let Some(d) = ev.duration {
        assert!(d.is_finite() && d >= 0.0, "duration {d}");
    }
}

fuzz_target!(|data: &[u8]| {
    for hint in FORMATS {
        match parse_line(data, hint, &CTX) {
            Ok(ev) => check(data, hint, &ev),
            Err(ParseError::Invalid { column, .. }) => {
                assert!(column <= data.len(), "column {column} of {}", data.len())
            }
            Err(ParseError::Empty) => {
                assert!(data
                    .strip_suffix(b"\r")
                    .unwrap_or(data)
                    .iter()
                    .all(u8::is_ascii_whitespace))
            }
            Err(ParseError::Raw) => assert_eq!(hint, Format::Raw),
        }
    }
});
