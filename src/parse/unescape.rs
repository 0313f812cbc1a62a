//! Undoing the escapes a request target carries in a log line: what the
//! rules' decoded views match and what search indexes beside the path as
//! written (`%20UNION%20SELECT` is the words `union select`).

/// The words a request target stands for when it has escapes: `path`
/// decoded until it has none left (at most three rounds, for targets
/// encoded twice), or `None` when it has no `%HH` or `\xHH` to undo.
/// Search indexes these beside the target as written, so `union` finds
/// `?id=1%20UNION%20SELECT`.
pub fn unescaped_target(path: &str) -> Option<String> {
    memchr::memchr2(b'%', b'\\', path.as_bytes())?;
    let (mut decoded, mut next) = (String::new(), String::new());
    decode_into(path, &mut decoded);
    for _ in 1..3 {
        if memchr::memchr2(b'%', b'\\', decoded.as_bytes()).is_none() {
            break;
        }
        decode_into(&decoded, &mut next);
        if next == decoded {
            break;
        }
        std::mem::swap(&mut decoded, &mut next);
    }
    (decoded != path).then_some(decoded)
}

/// True when `s` holds something `decode_into` would change.
pub fn needs_decode(s: &str) -> bool {
    memchr::memchr3(b'%', b'+', b'\\', s.as_bytes()).is_some()
}

/// One decoding pass: `%HH`, `\xHH` (how nginx escapes bytes in its log)
/// and `+` as space (query strings). Invalid escapes are kept verbatim; a
/// decoded byte that would break UTF-8 becomes U+FFFD.
pub fn decode_into(src: &str, out: &mut String) {
    let b = src.as_bytes();
    let mut bytes: Vec<u8> = std::mem::take(out).into_bytes();
    bytes.clear();
    bytes.reserve(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                bytes.push(h << 4 | l);
                i += 3;
                continue;
            }
        } else if c == b'\\' && i + 3 < b.len() && (b[i + 1] == b'x' || b[i + 1] == b'X') {
            if let (Some(h), Some(l)) = (hex(b[i + 2]), hex(b[i + 3])) {
                bytes.push(h << 4 | l);
                i += 4;
                continue;
            }
        } else if c == b'+' {
            bytes.push(b' ');
            i += 1;
            continue;
        }
        bytes.push(c);
        i += 1;
    }
    *out = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
}

/// The value of a hex digit.
pub fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> String {
        let mut out = String::new();
        decode_into(s, &mut out);
        out
    }

    #[test]
    fn decoding() {
        assert_eq!(dec("%2e%2E/etc%2Fpasswd"), "../etc/passwd");
        assert_eq!(dec("union+select"), "union select");
        assert_eq!(dec("a\\x22b"), "a\"b");
        assert_eq!(dec("100%"), "100%");
        assert_eq!(dec("%zz%4"), "%zz%4");
        assert_eq!(dec("%252e"), "%2e");
        assert_eq!(dec("%ff"), "\u{fffd}");
        assert_eq!(dec("%41"), "A");
    }

    #[test]
    fn targets_are_unescaped_until_nothing_is_left() {
        let u = |s: &str| unescaped_target(s);
        assert_eq!(
            u("/item?id=1%20UNION%20SELECT%201").as_deref(),
            Some("/item?id=1 UNION SELECT 1")
        );
        assert_eq!(u("/a/%252e%252e/etc").as_deref(), Some("/a/../etc"));
        assert_eq!(u("/plain/path?q=a+b"), None, "nothing escaped");
        assert_eq!(u("/100%"), None, "no escape to undo");
    }
}
