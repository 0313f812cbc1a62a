//! Secrets recognised by their own shape, wherever they appear: bearer and
//! basic credentials, URL userinfo passwords, JWTs, provider key formats
//! and PEM private keys. Triggers only say where to look; every check
//! here is exact.

use super::{
    marker_len, LineState, Span, AWS_KEY, BASIC, BEARER, GITHUB_TOKEN, GOOGLE_API_KEY, JWT, KEEP,
    NIGHTOWL_TOKEN, PRIVATE_KEY, SLACK_TOKEN, STRIPE_KEY, URL_PASSWORD,
};

/// Longest Basic credential looked at (base64 of `user:password`).
const MAX_BASIC: usize = 1024;
/// Longest JWT header segment looked at (`{"alg":…,"kid":…}` in base64url).
const MAX_JWT_HEADER: usize = 1024;

fn word_start(line: &[u8], start: usize) -> bool {
    start == 0 || !line[start - 1].is_ascii_alphanumeric()
}

fn run(line: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    run_max(line, from, usize::MAX, ok)
}

/// Like [`run`], but looks at most `max` bytes: a detector that fails must
/// not cost the rest of the line per hit (`basic+basic+…` would be quadratic).
fn run_max(line: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    let from = from.min(line.len());
    let to = line.len().min(from.saturating_add(max));
    line[from..to]
        .iter()
        .position(|&b| !ok(b))
        .map_or(to, |i| from + i)
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The blanks between a scheme word and its credential: spaces, or `%20` /
/// `+` when the header sits URL-encoded in a query string.
fn after_scheme(line: &[u8], mut p: usize) -> Option<usize> {
    let from = p;
    loop {
        match line.get(p) {
            Some(b' ') | Some(b'\t') | Some(b'+') => p += 1,
            Some(b'%') if line.get(p + 1..p + 3) == Some(b"20") => p += 3,
            _ => break,
        }
    }
    (p > from).then_some(p)
}

fn span(start: usize, end: usize, kind: u16) -> Span {
    Span { start, end, kind }
}

/// `Bearer <token>`: a token that looks random, not an English word
/// ("bearer credentials").
pub(crate) fn bearer(line: &[u8], start: usize, end: usize) -> Option<Span> {
    if !word_start(line, start) {
        return None;
    }
    let p = after_scheme(line, end)?;
    let e = run(line, p, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
    });
    let e = run(line, e, |b| b == b'=');
    let token = &line[p..e];
    if let Some(m) = marker_len(token) {
        return Some(span(p, p + m, KEEP));
    }
    if token.len() < 8 {
        return None;
    }
    let digit = token.iter().any(u8::is_ascii_digit);
    let mixed =
        token.iter().any(u8::is_ascii_uppercase) && token.iter().any(u8::is_ascii_lowercase);
    (digit || (mixed && token.len() >= 16) || token.len() >= 32).then(|| span(p, e, BEARER))
}

/// `Basic <base64 of user:password>`: decoded, it must hold a colon and be
/// printable, so "basic settings" stays.
pub(crate) fn basic(line: &[u8], start: usize, end: usize) -> Option<Span> {
    if !word_start(line, start) {
        return None;
    }
    let p = after_scheme(line, end)?;
    let e = run_max(line, p, MAX_BASIC, |b| {
        b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
    });
    let e = run_max(line, e, 2, |b| b == b'=');
    let token = &line[p..e];
    if token.len() < 4 || !token.len().is_multiple_of(4) || e - p >= MAX_BASIC {
        return None;
    }
    let mut has_colon = false;
    let mut ok = true;
    decode_base64(token, |b| {
        has_colon |= b == b':';
        ok &= (0x20..0x7f).contains(&b) || b >= 0x80;
    })?;
    (has_colon && ok).then(|| span(p, e, BASIC))
}

/// Standard base64 with padding; calls `each` per decoded byte.
fn decode_base64(text: &[u8], mut each: impl FnMut(u8)) -> Option<()> {
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    for chunk in text.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut acc = 0u32;
        for &b in &chunk[..4 - pad] {
            acc = (acc << 6) | value(b)?;
        }
        acc <<= 6 * pad as u32;
        for i in 0..3 - pad {
            each((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(())
}

/// `scheme://user:password@host`: the password part.
pub(crate) fn url_password(line: &[u8], start: usize, end: usize) -> Option<Span> {
    if start == 0 || !line[start - 1].is_ascii_alphabetic() {
        return None;
    }
    let authority_end = run(line, end, |b| {
        b > b' ' && !matches!(b, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\')
    });
    let authority = &line[end..authority_end];
    let at = memchr::memrchr(b'@', authority)?;
    let colon = memchr::memchr(b':', &authority[..at])?;
    let (s, e) = (end + colon + 1, end + at);
    if let Some(m) = marker_len(&line[s..e]) {
        return Some(span(s, s + m, KEEP));
    }
    (e > s).then(|| span(s, e, URL_PASSWORD))
}

/// `scheme%3A%2F%2Fuser%3APASSWORD%40host`: a URL with credentials passed
/// URL-encoded in a parameter (`?next=`, `redirect_uri=`).
pub(crate) fn url_password_encoded(line: &[u8], start: usize, end: usize) -> Option<Span> {
    if start == 0 || !line[start - 1].is_ascii_alphabetic() {
        return None;
    }
    let is = |at: usize, code: &[u8]| {
        line.get(at..at + 3)
            .is_some_and(|b| b.eq_ignore_ascii_case(code))
    };
    let mut p = end;
    let mut colon = None;
    let mut at = None;
    while p < line.len() && p - end < MAX_BASIC {
        let b = line[p];
        if b <= b' '
            || matches!(
                b,
                b'&' | b';' | b'"' | b'\'' | b'/' | b'?' | b'#' | b'<' | b'>'
            )
        {
            break;
        }
        if b == b'%' {
            if is(p, b"%2F") || is(p, b"%3F") || is(p, b"%23") {
                break;
            }
            if colon.is_none() && is(p, b"%3A") {
                colon = Some(p);
            }
            if is(p, b"%40") {
                at = Some(p);
            }
        }
        p += 1;
    }
    let (colon, at) = (colon?, at?);
    if colon > at {
        return None;
    }
    let (s, e) = (colon + 3, at);
    if let Some(m) = marker_len(&line[s..e]) {
        return Some(span(s, s + m, KEEP));
    }
    (e > s).then(|| span(s, e, URL_PASSWORD))
}

/// `eyJ….eyJ….sig` (header and payload are base64url JSON objects).
pub(crate) fn jwt(line: &[u8], start: usize) -> Option<Span> {
    if !line[start..].starts_with(b"eyJ") || (start > 0 && is_b64url(line[start - 1])) {
        return None;
    }
    let header_end = run_max(line, start, MAX_JWT_HEADER, is_b64url);
    if header_end - start < 10 || line.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload = header_end + 1;
    if !line[payload..].starts_with(b"eyJ") {
        return None;
    }
    let payload_end = run(line, payload, is_b64url);
    if payload_end - payload < 10 {
        return None;
    }
    let mut end = payload_end;
    if line.get(end) == Some(&b'.') {
        end = run(line, end + 1, is_b64url);
    }
    Some(span(start, end, JWT))
}

/// A fixed prefix, then `min..=max` bytes of `ok`, on word boundaries.
fn prefixed(
    line: &[u8],
    start: usize,
    prefixes: &[&[u8]],
    ok: impl Fn(u8) -> bool,
    min: usize,
    max: usize,
    kind: u16,
) -> Option<Span> {
    if !word_start(line, start) {
        return None;
    }
    let prefix = prefixes.iter().find(|p| line[start..].starts_with(p))?;
    let body = start + prefix.len();
    let end = run_max(line, body, max + 1, &ok);
    let len = end - body;
    if len < min || len > max || line.get(end).is_some_and(|&b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(span(start, end, kind))
}

pub(crate) fn aws(line: &[u8], start: usize) -> Option<Span> {
    let upper_digit = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    prefixed(
        line,
        start,
        &[b"AKIA", b"ASIA"],
        upper_digit,
        16,
        16,
        AWS_KEY,
    )
}

pub(crate) fn github(line: &[u8], start: usize) -> Option<Span> {
    if line[start..].starts_with(b"github_pat_") {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        return prefixed(line, start, &[b"github_pat_"], ok, 20, 255, GITHUB_TOKEN);
    }
    let prefixes: &[&[u8]] = &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"];
    prefixed(
        line,
        start,
        prefixes,
        |b| b.is_ascii_alphanumeric(),
        30,
        255,
        GITHUB_TOKEN,
    )
}

pub(crate) fn slack(line: &[u8], start: usize) -> Option<Span> {
    let prefixes: &[&[u8]] = &[b"xoxa-", b"xoxb-", b"xoxp-", b"xoxr-", b"xoxs-"];
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    prefixed(line, start, prefixes, ok, 10, 255, SLACK_TOKEN)
}

pub(crate) fn stripe(line: &[u8], start: usize) -> Option<Span> {
    let prefixes: &[&[u8]] = &[b"sk_live_", b"rk_live_", b"sk_test_", b"rk_test_"];
    prefixed(
        line,
        start,
        prefixes,
        |b| b.is_ascii_alphanumeric(),
        10,
        255,
        STRIPE_KEY,
    )
}

pub(crate) fn google(line: &[u8], start: usize) -> Option<Span> {
    prefixed(line, start, &[b"AIza"], is_b64url, 30, 40, GOOGLE_API_KEY)
}

/// `nwl_<12 hex id>_<64 hex secret>`: the secret (the id names the token
/// in the audit log and `token list`, and is no secret).
pub(crate) fn nightowl_token(line: &[u8], start: usize) -> Option<Span> {
    if !word_start(line, start) {
        return None;
    }
    let id = start + 4;
    let id_end = run_max(line, id, 13, |b| b.is_ascii_hexdigit());
    if id_end - id != 12 || line.get(id_end) != Some(&b'_') {
        return None;
    }
    let secret = id_end + 1;
    let end = run_max(line, secret, 65, |b| b.is_ascii_hexdigit());
    if end - secret != 64 || line.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(span(secret, end, NIGHTOWL_TOKEN))
}

/// `-----BEGIN … PRIVATE KEY-----`: the body up to `-----END`, or to the end
/// of the line and on through the next lines of the batch.
pub(crate) fn private_key(line: &[u8], start: usize, state: &mut LineState) -> Option<Span> {
    let rest = &line[start..];
    if !rest.starts_with(b"-----BEGIN ") {
        return None;
    }
    let label_end = memchr::memmem::find(&rest[11..rest.len().min(80)], b"-----")? + 11;
    memchr::memmem::find(&rest[..label_end], b"PRIVATE KEY")?;
    let body = start + label_end + 5;
    let end = match memchr::memmem::find(&line[body..], b"-----END") {
        Some(i) => body + i,
        None => {
            state.in_private_key = true;
            line.len()
        }
    };
    // Already redacted: kept as is.
    if marker_len(&line[body..end]) == Some(end - body) {
        return Some(span(body, end, KEEP));
    }
    (end > body).then(|| span(body, end, PRIVATE_KEY))
}

/// A line inside a private key that started on an earlier line: the end of
/// the redacted stretch, or `None` (and the key is over).
pub(crate) fn private_key_continuation(line: &[u8], state: &mut LineState) -> Option<usize> {
    if let Some(i) = memchr::memmem::find(line, b"-----END") {
        state.in_private_key = false;
        return (i > 0).then_some(i);
    }
    let body = line.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b':' | b',' | b'-'
            )
    });
    if !body {
        state.in_private_key = false;
        return None;
    }
    (!line.is_empty()).then_some(line.len())
}
