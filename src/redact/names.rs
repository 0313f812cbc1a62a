//! Values of secret-ish names: `password=...` in query strings, forms and
//! logfmt (also URL-encoded inside another parameter), `"token": "..."` in
//! JSON (also JSON escaped inside a JSON string), and `Authorization:` /
//! `Cookie:` / `X-Api-Key:` headers written into a line.

use super::{
    marker_len, Span, API_KEY, AUTH, CARD, COOKIE, KEEP, PASSWORD, SECRET, SESSION, SIGNATURE,
    TOKEN,
};

/// Longest name considered (after percent-decoding), bytes.
pub(crate) const MAX_NAME: usize = 96;

pub(crate) fn is_plain_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn is_name_byte(b: u8) -> bool {
    is_plain_name_byte(b) || matches!(b, b'[' | b']')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` at `at`, decoded.
fn percent_at(line: &[u8], at: usize) -> Option<u8> {
    if line.get(at) != Some(&b'%') {
        return None;
    }
    Some(hex(*line.get(at + 1)?)? * 16 + hex(*line.get(at + 2)?)?)
}

/// Whether the `]` at `at` ends a marker: a name never reaches into one
/// (`…[REDACTED:private_key]-----END…` is not a name `private_key]-----END`),
/// so a second pass finds what the first found.
fn closes_marker(line: &[u8], at: usize) -> bool {
    let from = at.saturating_sub(64);
    memchr::memrchr(b'[', &line[from..at])
        .is_some_and(|i| marker_len(&line[from + i..]) == Some(at + 1 - from - i))
}

/// A trigger hit at `hit_start..hit_end`: grows it to the whole name, and if
/// that name is secret-ish and followed by a value, returns the value.
pub(crate) fn find_named(
    line: &[u8],
    hit_start: usize,
    hit_end: usize,
    extra: &[(Vec<u8>, u16)],
) -> Option<Span> {
    // Bounded: a name longer than MAX_NAME is not classified anyway, and an
    // unbounded walk per hit would be quadratic on `passpasspass…`.
    // A trigger may carry the separator after its name (`pw=`: two
    // letters alone would make every trigger search slower).
    let mut hit_end = hit_end;
    while hit_end > hit_start && !is_name_byte(line[hit_end - 1]) {
        hit_end -= 1;
    }
    let floor = hit_start.saturating_sub(MAX_NAME);
    let ceiling = hit_end.saturating_add(MAX_NAME).min(line.len());
    let mut start = hit_start;
    while start > floor {
        // `user%5Bpassword%5D`: encoded brackets belong to the name.
        if start >= 3 {
            if let Some(decoded) = percent_at(line, start - 3) {
                if !is_name_byte(decoded) {
                    break;
                }
                start -= 3;
                continue;
            }
        }
        if start > 0 && line[start - 1] == b']' && closes_marker(line, start - 1) {
            break;
        }
        if start > 0 && is_name_byte(line[start - 1]) {
            start -= 1;
        } else {
            break;
        }
    }
    let mut end = hit_end;
    while end < ceiling {
        if let Some(decoded) = percent_at(line, end) {
            if is_name_byte(decoded) {
                end += 3;
                continue;
            }
            break;
        }
        if line[end] == b'[' && marker_len(&line[end..]).is_some() {
            break;
        }
        if is_name_byte(line[end]) {
            end += 1;
        } else {
            break;
        }
    }
    // The kind inside a marker (`[REDACTED:github_token]:9`) is no name.
    if line[..start].ends_with(b"[REDACTED:") {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let name = normalize(&line[start..end], &mut buf)?;
    let kind = classify(name, extra)?;
    value_after(line, start, end, name, kind)
}

/// Percent-decodes and lowercases into `buf`.
fn normalize<'b>(raw: &[u8], buf: &'b mut [u8; MAX_NAME]) -> Option<&'b [u8]> {
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = match percent_at(raw, i) {
            Some(decoded) => {
                i += 3;
                decoded
            }
            None => {
                i += 1;
                raw[i - 1]
            }
        };
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    Some(&buf[..n])
}

/// Names are a few bytes long: comparing windows costs less than building
/// a `memmem` searcher for each.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    positions(hay, needle).next().is_some()
}

fn positions<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(at, _)| at)
}

/// "token" but not "tokens", "tokenize", "tokenizer".
fn contains_token(name: &[u8]) -> bool {
    positions(name, b"token").any(|at| {
        let rest = &name[at + 5..];
        !(rest.starts_with(b"s") || rest.starts_with(b"iz") || rest.starts_with(b"is"))
    })
}

/// The kind of a normalized name, if its value is a secret.
fn classify(name: &[u8], extra: &[(Vec<u8>, u16)]) -> Option<u16> {
    // `user[password]` → `password`, `connect.sid` → `sid`.
    let trimmed = name.strip_suffix(b"]").unwrap_or(name);
    let last = match memchr::memrchr2(b'[', b'.', trimmed) {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    // `--pass x`, openssl's `-passin pass:x`: an option is its name.
    let last = {
        let dashes = last.iter().take_while(|&&b| b == b'-').count();
        &last[dashes..]
    };
    if let Some((_, kind)) = extra.iter().find(|(n, _)| n == name || n == last) {
        return Some(*kind);
    }
    // `token_type=bearer`, `password_length=12`, `sessionTimeout=30`,
    // `--password-file`: about the secret, not the secret.
    const ABOUT: &[&[u8]] = &[
        b"type",
        b"kind",
        b"name",
        b"length",
        b"len",
        b"format",
        b"expires",
        b"expiry",
        b"expires_in",
        b"expiresin",
        b"expires_at",
        b"ttl",
        b"timeout",
        b"count",
        b"hint",
        b"policy",
        b"strength",
        b"required",
        b"enabled",
        b"method",
        b"url",
        b"uri",
        b"path",
        b"reset",
        b"file",
        b"changed",
        b"version",
        b"algorithm",
        b"alg",
    ];
    if ABOUT.iter().any(|w| name.ends_with(w)) {
        return None;
    }
    let any = |words: &[&[u8]]| words.iter().any(|w| contains(name, w));
    // `SSHPASS=…` is what `sshpass -e` reads; `passw` holds `password`,
    // `passwd` and German `passwort`; then other languages' words.
    if any(&[
        b"passw",
        b"pass_word",
        b"pass-word",
        b"passphrase",
        b"passcode",
        b"pwd",
        b"pswd",
        b"sshpass",
        b"kennwort",
        b"wachtwoord",
        b"contrasena",
        b"motdepasse",
        b"mot_de_passe",
    ]) {
        return Some(PASSWORD);
    }
    // `pw=`, `db_pw=`, `admin-pw=`: only as the name's end, since `pw`
    // inside a word is no password (`upward`).
    // `senha` only as a word of the name: `resenha` is a review. (No
    // allocation: every trigger hit is classified.)
    let senha = last
        .strip_suffix(b"senha")
        .is_some_and(|before| before.is_empty() || before.ends_with(b"_"))
        || last.starts_with(b"senha_");
    if last == b"pw"
        || last.ends_with(b"_pw")
        || last.ends_with(b"-pw")
        || last == b"pword"
        || senha
    {
        return Some(PASSWORD);
    }
    if any(&[
        b"secret",
        b"credential",
        b"private_key",
        b"privatekey",
        b"private-key",
    ]) {
        return Some(SECRET);
    }
    if any(&[
        b"apikey",
        b"api_key",
        b"api-key",
        b"access_key",
        b"accesskey",
        b"access-key",
    ]) {
        return Some(API_KEY);
    }
    if contains_token(name) {
        return Some(TOKEN);
    }
    if any(&[b"sessionid", b"session_id", b"session-id", b"sessid"]) {
        return Some(SESSION);
    }
    if contains(name, b"signature") {
        return Some(SIGNATURE);
    }
    if contains(name, b"authorization") {
        return Some(AUTH);
    }
    match last {
        b"pass" | b"passin" | b"passout" => Some(PASSWORD),
        b"key" => Some(API_KEY),
        b"auth" => Some(AUTH),
        b"session" | b"sess" | b"sid" => Some(SESSION),
        b"sig" => Some(SIGNATURE),
        b"cookie" | b"set-cookie" => Some(COOKIE),
        // A card's security code: PCI DSS forbids storing it at all.
        b"cvv" | b"cvv2" | b"cvc" | b"cvc2" => Some(CARD),
        _ => None,
    }
}

/// How the value after a name is written.
fn value_after(line: &[u8], start: usize, end: usize, name: &[u8], kind: u16) -> Option<Span> {
    let span = |s: usize, e: usize| {
        // An existing marker is kept, and skipped over.
        if let Some(m) = marker_len(&line[s.min(e)..e]) {
            return Some(Span {
                start: s,
                end: s + m,
                kind: KEEP,
            });
        }
        (e > s).then_some(Span {
            start: s,
            end: e,
            kind,
        })
    };
    // A quoted key: `"password": ...` (JSON, Python reprs) or `\"password\":`
    // (JSON escaped inside a JSON string, as in nginx `escape=json` bodies).
    if start >= 1 && matches!(line[start - 1], b'"' | b'\'') {
        let q = line[start - 1];
        let escaped = start >= 2 && line[start - 2] == b'\\';
        let after_key = if escaped {
            (line.get(end) == Some(&b'\\') && line.get(end + 1) == Some(&q)).then_some(end + 2)
        } else {
            (line.get(end) == Some(&q)).then_some(end + 1)
        };
        if let Some(mut p) = after_key {
            p = skip_spaces(line, p);
            if !matches!(line.get(p), Some(b':') | Some(b'=')) {
                return None;
            }
            p += 1;
            // Ruby's `"password"=>"…"` (Rails parameter logs).
            if line.get(p) == Some(&b'>') {
                p += 1;
            }
            p = skip_spaces(line, p);
            let opens = if escaped {
                line.get(p) == Some(&b'\\') && line.get(p + 1) == Some(&q)
            } else {
                line.get(p) == Some(&q)
            };
            if opens {
                let content = p + if escaped { 2 } else { 1 };
                let close = string_end(line, content, q, escaped);
                return span(content, close);
            }
            // Objects and arrays: their own fields are looked at on their own.
            if matches!(line.get(p), Some(b'{') | Some(b'[')) {
                return None;
            }
            let e = scan(line, p, |b| {
                b <= b' ' || matches!(b, b',' | b'}' | b']' | b'\\' | b'"' | b'\'')
            });
            let scalar = &line[p..e];
            if matches!(scalar, b"null" | b"true" | b"false") {
                return None;
            }
            return span(p, e);
        }
    }
    let rest = &line[end..];
    // `<password>…</password>` (SOAP and XML bodies).
    if start >= 1 && line[start - 1] == b'<' && rest.first() == Some(&b'>') {
        let p = end + 1;
        return span(p, scan(line, p, |b| b == b'<'));
    }
    // `--password hunter2` (command lines in process logs).
    if name.starts_with(b"-") && rest.first() == Some(&b' ') {
        let p = skip_spaces(line, end);
        if line.get(p) == Some(&b'"') {
            return span(p + 1, string_end(line, p + 1, b'"', false));
        }
        return span(p, token_end(line, p));
    }
    if rest.first() == Some(&b'=') {
        let p = end + 1;
        if line.get(p) == Some(&b'"') {
            return span(p + 1, string_end(line, p + 1, b'"', false));
        }
        return span(p, plain_value_end(line, p, 0));
    }
    // The same parameter URL-encoded inside another one (`next=%2Flogin%3Fpassword%3D...`),
    // once or twice.
    for (sep, level) in [(&b"%3d"[..], 1u8), (&b"%253d"[..], 2u8)] {
        if rest.len() >= sep.len() && rest[..sep.len()].eq_ignore_ascii_case(sep) {
            let p = end + sep.len();
            return span(p, plain_value_end(line, p, level));
        }
    }
    if rest.first() == Some(&b':') && !rest.starts_with(b"://") {
        let mut p = skip_spaces(line, end + 1);
        match kind {
            COOKIE => {
                // The whole header: every cookie may be a session.
                let e = scan(line, p, |b| matches!(b, b'"' | b'\r' | b'\n'));
                let e = trim_escaped_quote(line, p, e);
                return span(p, e);
            }
            AUTH if contains(name, b"authorization") => {
                // Keep the scheme (`Bearer`, `Basic`): it is not secret.
                let word = scan(line, p, |b| !b.is_ascii_alphabetic());
                if word > p && line.get(word) == Some(&b' ') {
                    p = skip_spaces(line, word);
                }
                return span(p, token_end(line, p));
            }
            PASSWORD | SECRET | TOKEN | API_KEY => {
                if line.get(p) == Some(&b'"') {
                    return span(p + 1, string_end(line, p + 1, b'"', false));
                }
                return span(p, token_end(line, p));
            }
            k if k > super::NIGHTOWL_TOKEN => return span(p, token_end(line, p)),
            _ => return None,
        }
    }
    None
}

fn skip_spaces(line: &[u8], mut p: usize) -> usize {
    while matches!(line.get(p), Some(b' ') | Some(b'\t')) {
        p += 1;
    }
    p
}

/// Where a value that starts with a marker ends: right after the marker.
/// Checked before scanning, so `password=[REDACTED:password]password=…`
/// costs one marker per hit instead of the rest of the line.
fn after_marker(line: &[u8], from: usize) -> Option<usize> {
    marker_len(line.get(from..)?).map(|m| from + m)
}

fn scan(line: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
    if let Some(end) = after_marker(line, from) {
        return end;
    }
    line[from.min(line.len())..]
        .iter()
        .position(|&b| stop(b))
        .map_or(line.len(), |i| from + i)
}

/// `value\"` inside an escaped string: the backslash is not the value's.
fn trim_escaped_quote(line: &[u8], from: usize, e: usize) -> usize {
    if e > from && e < line.len() && line[e] == b'"' && line[e - 1] == b'\\' {
        e - 1
    } else {
        e
    }
}

/// An unquoted token after `Name: `.
fn token_end(line: &[u8], from: usize) -> usize {
    let e = scan(line, from, |b| {
        b <= b' ' || matches!(b, b'"' | b'\'' | b',' | b';' | b'&' | b'}' | b']' | b')')
    });
    trim_escaped_quote(line, from, e)
}

/// End of a `name=value` value: `&`/`;` separate parameters, whitespace and
/// quotes end the URL or field around it. `level` counts URL-encodings of
/// the surrounding query, whose separators are then encoded too.
fn plain_value_end(line: &[u8], from: usize, level: u8) -> usize {
    if let Some(end) = after_marker(line, from) {
        return end;
    }
    // `\"` closes the value inside a JSON string; in an Apache access
    // line it is a quote the client sent, and the value goes on.
    let json = memchr::memmem::find(&line[..from.min(line.len())], b"{\"").is_some();
    let mut i = from;
    while i < line.len() {
        let b = line[i];
        if b <= b' ' || matches!(b, b'&' | b';' | b'\'') || (b == b'"' && json) {
            break;
        }
        if b == b'"' && !(i > from && line[i - 1] == b'\\') {
            break;
        }
        if json && b == b'\\' && line.get(i + 1) == Some(&b'"') {
            break;
        }
        if level > 0 && b == b'+' {
            break;
        }
        if level > 0 && b == b'%' {
            let rest = &line[i..];
            let stops: &[&[u8]] = if level == 1 {
                &[b"%26", b"%3b", b"%20", b"%23"]
            } else {
                &[b"%2526", b"%253b", b"%2520", b"%26", b"%3b", b"%20"]
            };
            if stops
                .iter()
                .any(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s))
            {
                break;
            }
        }
        i += 1;
    }
    i
}

/// Where a quoted string that starts (content) at `from` ends: the closing
/// quote, or for a string escaped inside another string the `\` before it.
/// Unterminated: the end of the line (better too much than a leak).
fn string_end(line: &[u8], from: usize, q: u8, escaped: bool) -> usize {
    if let Some(end) = after_marker(line, from) {
        return end;
    }
    let mut i = from;
    while i < line.len() {
        if line[i] == q {
            let mut run = 0;
            while i > from + run && line[i - 1 - run] == b'\\' {
                run += 1;
            }
            if !escaped && run % 2 == 0 {
                return i;
            }
            // Escaped once: the outer string shows the inner closing quote
            // as `\"` (odd run) after an even number of inner backslashes.
            if escaped && run % 2 == 1 && (run / 2) % 2 == 0 {
                return i - 1;
            }
            if escaped && run % 2 == 0 {
                return i; // the outer string ends: so does the value
            }
        }
        i += 1;
    }
    line.len()
}
