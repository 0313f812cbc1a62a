//! Normalisation before payload detection: what a server, an application
//! framework or a browser may decode before the payload takes effect.
//!
//! Every step only ever shortens the text or keeps its length, so the
//! buffers are reused line after line without reallocation once they have
//! grown to the longest value seen.

pub(crate) use crate::parse::unescape::hex;

/// Percent-decoding rounds at most: one for the server, more for
/// applications that decode again (`%252e`, `%25252e` in traversal lists).
/// Beyond that no real stack decodes.
const ROUNDS: usize = 4;

/// Decodes `src` into `out`, lowercased: `%HH` (repeatedly, see [`ROUNDS`]),
/// IIS `%uXXXX`, nginx's `\xHH` log escapes, `+` as space (first round
/// only: a `%2b` the client meant as `+` stays one), overlong UTF-8
/// (`%c0%af` is `/`) and fullwidth forms (`%uff0e` is `.`). NUL bytes
/// stay: SQL and shells read them as a separator, markup drops them
/// (`java%00script:`), paths end at them. Invalid escapes stay verbatim.
pub fn normalize(src: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    out.clear();
    decode_round(src, out, true);
    for _ in 1..ROUNDS {
        if !has_escape(out) {
            break;
        }
        tmp.clear();
        decode_round(out, tmp, false);
        std::mem::swap(out, tmp);
    }
    fold(out);
}

/// True when `s` holds an escape [`decode_round`] would decode.
fn has_escape(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = memchr::memchr2(b'%', b'\\', &s[i..]) {
        let j = i + p;
        if s[j] == b'%' {
            if j + 2 < s.len() && hex(s[j + 1]).is_some() && hex(s[j + 2]).is_some() {
                return true;
            }
            if j + 5 < s.len()
                && (s[j + 1] | 0x20) == b'u'
                && s[j + 2..j + 6].iter().all(|c| hex(*c).is_some())
            {
                return true;
            }
        } else if j + 3 < s.len()
            && (s[j + 1] | 0x20) == b'x'
            && hex(s[j + 2]).is_some()
            && hex(s[j + 3]).is_some()
        {
            return true;
        }
        i = j + 1;
    }
    false
}

fn decode_round(b: &[u8], out: &mut Vec<u8>, plus: bool) {
    out.reserve(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 < b.len() {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            if i + 5 < b.len() && (b[i + 1] | 0x20) == b'u' {
                let v = b[i + 2..i + 6]
                    .iter()
                    .try_fold(0u32, |v, c| hex(*c).map(|h| v << 4 | u32::from(h)));
                if let Some(v) = v {
                    push_code_point(v, out);
                    i += 6;
                    continue;
                }
            }
        } else if c == b'\\' && i + 3 < b.len() && (b[i + 1] | 0x20) == b'x' {
            if let (Some(h), Some(l)) = (hex(b[i + 2]), hex(b[i + 3])) {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        } else if c == b'+' && plus {
            out.push(b' ');
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
}

/// A `%uXXXX` code point: ASCII and fullwidth forms as ASCII (IIS maps
/// them so), others as UTF-8.
fn push_code_point(v: u32, out: &mut Vec<u8>) {
    if v < 0x80 {
        out.push(v as u8);
    } else if (0xff01..=0xff5e).contains(&v) {
        out.push((v - 0xfee0) as u8);
    } else if v == 0x2215 {
        // DIVISION SLASH and SET MINUS, which best-fit mappings turn into
        // `/` and `\`.
        out.push(b'/');
    } else if v == 0x2216 {
        out.push(b'\\');
    } else if let Some(ch) = char::from_u32(v) {
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
}

/// In place: overlong UTF-8 and fullwidth forms to ASCII, ASCII
/// lowercased.
fn fold(s: &mut Vec<u8>) {
    let mut r = 0;
    let mut w = 0;
    let n = s.len();
    while r < n {
        let c = s[r];
        if c < 0x80 {
            s[w] = c.to_ascii_lowercase();
            w += 1;
            r += 1;
            continue;
        }
        if let Some((ascii, len)) = overlong(&s[r..]) {
            s[w] = ascii.to_ascii_lowercase();
            w += 1;
            r += len;
            continue;
        }
        // Fullwidth ASCII: U+FF01..=U+FF5E is EF BC 81..BF, EF BD 80..9E.
        if c == 0xef
            && r + 2 < n
            && (s[r + 1] == 0xbc || s[r + 1] == 0xbd)
            && s[r + 2] & 0xc0 == 0x80
        {
            let cp = 0xf000 | (u32::from(s[r + 1] & 0x3f) << 6) | u32::from(s[r + 2] & 0x3f);
            if (0xff01..=0xff5e).contains(&cp) {
                s[w] = ((cp - 0xfee0) as u8).to_ascii_lowercase();
                w += 1;
                r += 3;
                continue;
            }
        }
        s[w] = c;
        w += 1;
        r += 1;
    }
    s.truncate(w);
}

/// An overlong encoding of an ASCII byte at the start of `s` (2 to 6
/// bytes, as in `%c0%ae`, `%e0%80%ae`, `%fc%80%80%80%80%ae`): the byte and
/// the sequence's length. Continuation bytes are taken loosely (any byte
/// with the high bit set), as the lenient decoders that were fooled did.
fn overlong(s: &[u8]) -> Option<(u8, usize)> {
    let (len, bits) = match s[0] {
        0xc0 | 0xc1 => (2, s[0] & 0x1f),
        0xe0 => (3, 0),
        0xf0 => (4, 0),
        0xf8 => (5, 0),
        0xfc => (6, 0),
        _ => return None,
    };
    if s.len() < len {
        return None;
    }
    let mut v = u32::from(bits);
    for &c in &s[1..len] {
        if c & 0x80 == 0 {
            return None;
        }
        v = v << 6 | u32::from(c & 0x3f);
    }
    (v < 0x80).then_some((v as u8, len))
}

/// HTML character references decoded into `out` (`&#106;`, `&#x6a;`,
/// `&#0000106` without `;`, and the named ones that matter to script:
/// `&lt; &gt; &quot; &apos; &amp; &colon; &tab; &newline; &lpar; &rpar;`),
/// and JavaScript `\uXXXX` escapes; twice, for `&amp;#106;`. Returns false
/// when `s` has none.
pub fn html_entities(s: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> bool {
    if !entities_once(s, out) {
        return false;
    }
    if entities_once(out, tmp) {
        std::mem::swap(out, tmp);
    }
    true
}

fn entities_once(s: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if memchr::memchr2(b'&', b'\\', s).is_none() {
        return false;
    }
    let mut changed = false;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && s.get(i + 1) == Some(&b'u') && i + 5 < s.len() {
            let v = s[i + 2..i + 6]
                .iter()
                .try_fold(0u32, |v, c| hex(*c).map(|h| v << 4 | u32::from(h)));
            if let Some(v) = v.filter(|v| *v < 0x80) {
                out.push((v as u8).to_ascii_lowercase());
                i += 6;
                changed = true;
                continue;
            }
        }
        if s[i] == b'&' {
            if let Some((c, len)) = entity(&s[i + 1..]) {
                if c != 0 {
                    out.push(c);
                }
                i += 1 + len;
                changed = true;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    changed
}

fn entity(s: &[u8]) -> Option<(u8, usize)> {
    if s.first() == Some(&b'#') {
        let (digits, radix, start) = if s.get(1).is_some_and(|c| *c == b'x') {
            (&s[2..], 16, 2)
        } else {
            (&s[1..], 10, 1)
        };
        let mut v: u32 = 0;
        let mut n = 0;
        for &c in digits.iter().take(10) {
            let d = match (radix, c) {
                (16, _) => hex(c).map(u32::from),
                (_, b'0'..=b'9') => Some(u32::from(c - b'0')),
                _ => None,
            };
            let Some(d) = d else { break };
            v = v.saturating_mul(radix).saturating_add(d);
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mut len = start + n;
        if s.get(len) == Some(&b';') {
            len += 1;
        }
        let c = if v < 0x80 {
            (v as u8).to_ascii_lowercase()
        } else {
            b'?'
        };
        return Some((c, len));
    }
    const NAMED: [(&[u8], u8); 11] = [
        (b"lt", b'<'),
        (b"gt", b'>'),
        (b"quot", b'"'),
        (b"apos", b'\''),
        (b"amp", b'&'),
        (b"colon", b':'),
        (b"tab", b'\t'),
        (b"newline", b'\n'),
        (b"lpar", b'('),
        (b"rpar", b')'),
        (b"sol", b'/'),
    ];
    for (name, c) in NAMED {
        if s.len() > name.len() && &s[..name.len()] == name {
            let len = name.len() + usize::from(s[name.len()] == b';');
            return Some((c, len));
        }
        if s.len() == name.len() && s == name {
            return Some((c, name.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        normalize(s.as_bytes(), &mut out, &mut tmp);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn decodes_what_servers_and_apps_decode() {
        assert_eq!(norm("%2e%2E%2fEtc"), "../etc");
        assert_eq!(norm("%252e%252e%252f"), "../");
        assert_eq!(norm("%25252e%25252e"), "..");
        assert_eq!(norm("a+b%2bc"), "a b+c");
        assert_eq!(norm("%u002e%u002E/%uff0e%uFF0E"), "../..");
        assert_eq!(norm("..%c0%af..%e0%80%af"), "../../");
        assert_eq!(norm("%fc%80%80%80%80%ae"), ".");
        assert_eq!(norm("java%00script:"), "java\0script:");
        assert_eq!(norm("%u2215etc"), "/etc");
        assert_eq!(norm("a\\x22b"), "a\"b");
        assert_eq!(norm("100%"), "100%");
        assert_eq!(norm("%zz%4"), "%zz%4");
        assert_eq!(norm("caf%C3%A9"), "café");
    }

    #[test]
    fn entities() {
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        assert!(html_entities(
            b"&#106;&#x61;v&#0000097&colon;&lt;",
            &mut out,
            &mut tmp
        ));
        assert_eq!(out, b"java:<");
        assert!(html_entities(b"&amp;#106;al\\u0065rt", &mut out, &mut tmp));
        assert_eq!(out, b"jalert");
        assert!(!html_entities(b"at&t", &mut out, &mut tmp));
        assert!(!html_entities(b"plain", &mut out, &mut tmp));
    }
}
