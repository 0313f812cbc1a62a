//! Splitting a message into tokens and masking the obvious variables, into
//! a buffer the caller reuses: the hot path allocates nothing.
//!
//! A token is a run of bytes between spaces or tabs. It is a variable when,
//! after trimming edge punctuation, it holds a digit (numbers, hex, IPs,
//! UUIDs, durations, block ids, timestamps, version strings), looks like a
//! path, URL or host name, is a day or month name or a boolean, or is empty
//! brackets (`()`: a value that happened to be empty); the value of a
//! `key=value` token is always a variable. The masked form keeps what is
//! around the variable (`uid=<*>`, `(<*>)`), so `uid=0` and `gid=0` stay
//! apart while `uid=0` and `uid=1000` are one token. A unit after a number
//! (`5.2 KB`, `<1 sec`) joins the number's variable.
//!
//! Each token carries two hashes: `hash` of its masked text (the exact
//! signature of a message), and `loose`, which ignores the punctuation
//! around a variable (`<*>,` and `(<*>)` are both `WILD`, `uid=<*>` and
//! `(uid=<*>)` are alike): what clustering compares.
//!
//! Why whole tokens: a token with a digit is a variable in the vast majority
//! of log statements, and masking it whole before clustering means the
//! clustering never has to guess; masking only the digits (`core.<*>`) keeps
//! spellings like `node-A4` / `node-B4` apart that are one variable.

use std::hash::{BuildHasher, Hasher};

/// The hash every `<*>` position of a template carries.
pub const WILD: u64 = 0x9e37_79b9_7f4a_7c15;

/// One token of a message: byte offsets into the message, and the hash of
/// its masked form (what clustering compares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub start: u32,
    pub end: u32,
    /// The variable part is `pre..suf` (empty when the token is a word):
    /// the masked text is `msg[start..pre] <*> msg[suf..end]`.
    pub pre: u32,
    pub suf: u32,
    pub hash: u64,
    /// Words: `hash`. Variables: the letters and digits around the
    /// variable, or `WILD` when there are none (a pure variable).
    pub loose: u64,
}

impl Token {
    /// Whether masking replaced part of the token by `<*>`.
    #[inline]
    pub fn is_var(&self) -> bool {
        self.pre < self.suf
    }

    /// A word of punctuation only (`-`, `****`, `|`): part of the layout of
    /// a statement, never a value.
    pub fn is_punctuation(&self, msg: &[u8]) -> bool {
        !self.is_var()
            && !msg[self.start as usize..self.end as usize]
                .iter()
                .any(u8::is_ascii_alphanumeric)
    }

    /// The masked text, appended to `out`.
    pub fn masked_into(&self, msg: &[u8], out: &mut String) {
        let (s, e) = (self.start as usize, self.end as usize);
        if self.is_var() {
            out.push_str(&String::from_utf8_lossy(&msg[s..self.pre as usize]));
            out.push_str("<*>");
            out.push_str(&String::from_utf8_lossy(&msg[self.suf as usize..e]));
        } else {
            out.push_str(&String::from_utf8_lossy(&msg[s..e]));
        }
    }
}

/// The hasher of token texts: fixed seed, so a pattern's hash (and its id)
/// is the same in every process.
#[derive(Clone)]
pub struct TokenHasher(foldhash::fast::FixedState);

impl Default for TokenHasher {
    fn default() -> Self {
        TokenHasher(foldhash::fast::FixedState::with_seed(0x7061_7474_6572_6e73))
    }
}

impl TokenHasher {
    #[inline]
    pub fn word(&self, w: &[u8]) -> u64 {
        let mut h = self.0.build_hasher();
        h.write(w);
        h.finish()
    }

    #[inline]
    pub fn masked(&self, pre: &[u8], suf: &[u8]) -> u64 {
        if pre.is_empty() && suf.is_empty() {
            return WILD;
        }
        let mut h = self.0.build_hasher();
        h.write(pre);
        h.write_u8(0xff); // never in UTF-8: `a<*>b` differs from the word `ab`
        h.write(suf);
        h.finish()
    }

    /// The key text around a variable: its letters and digits only.
    #[inline]
    pub fn loose(&self, pre: &[u8], suf: &[u8]) -> u64 {
        let mut h = self.0.build_hasher();
        let mut any = false;
        for &b in pre.iter().chain(std::iter::once(&0xff)).chain(suf) {
            if b.is_ascii_alphanumeric() || b == 0xff {
                h.write_u8(b);
                any |= b != 0xff;
            }
        }
        if any {
            h.finish()
        } else {
            WILD
        }
    }

    /// The hash of a whole token sequence (a message's signature).
    #[inline]
    pub fn sequence(&self, hashes: impl Iterator<Item = u64>) -> u64 {
        let mut h = self.0.build_hasher();
        for x in hashes {
            h.write_u64(x);
        }
        h.finish()
    }
}

/// Tokens longer than this are one variable whatever they hold: base64
/// blobs, stack frames glued together, minified payloads.
const LONG_TOKEN: usize = 64;

/// Splits `msg` into `out` (cleared first). Offsets are `u32`: a message is
/// cut at 4 GiB, far beyond any line the collector accepts.
pub fn tokenize(msg: &[u8], hasher: &TokenHasher, out: &mut Vec<Token>) {
    out.clear();
    let msg = &msg[..msg.len().min(u32::MAX as usize)];
    let mut i = 0;
    let n = msg.len();
    while i < n {
        while i < n && is_space(msg[i]) {
            i += 1;
        }
        if i == n {
            break;
        }
        let start = i;
        while i < n && !is_space(msg[i]) {
            i += 1;
        }
        let tok = classify(msg, start, i, hasher);
        if let Some(prev) = out.last_mut() {
            if absorbs_unit(msg, prev, &tok) {
                // The unit's trailing punctuation becomes the suffix.
                let mut r = tok.end as usize;
                while r > tok.start as usize && is_close(msg[r - 1]) {
                    r -= 1;
                }
                prev.end = tok.end;
                prev.suf = r as u32;
                let (pre, suf) = (
                    &msg[prev.start as usize..prev.pre as usize],
                    &msg[r..tok.end as usize],
                );
                prev.hash = hasher.masked(pre, suf);
                prev.loose = hasher.loose(pre, suf);
                continue;
            }
        }
        out.push(tok);
    }
}

/// Units of size and time that follow a number: `5.2 KB`, `<1 sec`.
const UNITS: [&[u8]; 18] = [
    b"b", b"kb", b"mb", b"gb", b"tb", b"kib", b"mib", b"gib", b"ms", b"us", b"ns", b"s", b"sec",
    b"secs", b"seconds", b"min", b"mins", b"hrs",
];

/// Whether `tok` is a unit word right after a number `prev` that ends
/// without punctuation (`5.2 KB` yes, `5, KB` no).
fn absorbs_unit(msg: &[u8], prev: &Token, tok: &Token) -> bool {
    if tok.is_var() || !prev.is_var() || prev.suf != prev.end {
        return false;
    }
    if !msg[prev.suf as usize - 1].is_ascii_digit() {
        return false;
    }
    let (mut l, mut r) = (tok.start as usize, tok.end as usize);
    while l < r && is_open(msg[l]) {
        l += 1;
    }
    while r > l && is_close(msg[r - 1]) {
        r -= 1;
    }
    l == tok.start as usize && r - l <= 7 && UNITS.iter().any(|u| msg[l..r].eq_ignore_ascii_case(u))
}

#[inline]
fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r' || b == b'\n'
}

#[inline]
fn is_open(b: u8) -> bool {
    matches!(b, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'')
}

#[inline]
fn is_close(b: u8) -> bool {
    matches!(
        b,
        b')' | b']' | b'}' | b'>' | b'"' | b'\'' | b',' | b';' | b':' | b'.' | b'!' | b'?'
    )
}

fn classify(msg: &[u8], start: usize, end: usize, hasher: &TokenHasher) -> Token {
    let word = |hash| Token {
        start: start as u32,
        end: end as u32,
        pre: end as u32,
        suf: end as u32,
        hash,
        loose: hash,
    };
    let var = |pre: usize, suf: usize| Token {
        start: start as u32,
        end: end as u32,
        pre: pre as u32,
        suf: suf as u32,
        hash: hasher.masked(&msg[start..pre], &msg[suf..end]),
        loose: hasher.loose(&msg[start..pre], &msg[suf..end]),
    };
    let tok = &msg[start..end];
    let mut l = start;
    while l < end && is_open(msg[l]) {
        l += 1;
    }
    let mut r = end;
    while r > l && is_close(msg[r - 1]) {
        r -= 1;
    }
    if l == r {
        // `()`, `[]`, `""`: an empty value, the same variable as `(x)`.
        if end - start >= 2 && is_open(msg[start]) {
            return var(start + 1, start + 1);
        }
        return word(hasher.word(tok));
    }
    let core = &msg[l..r];
    // `key=value`: the key is a word, the value a variable.
    if let Some(eq) = memchr::memchr(b'=', core) {
        if eq > 0 && core[..eq].iter().all(|&b| is_key_byte(b)) {
            return if eq + 1 == core.len() {
                word(hasher.word(tok))
            } else {
                var(l + eq + 1, r)
            };
        }
    }
    // `isOverlap:false`: a boolean value after a key.
    if let Some(colon) = memchr::memchr(b':', core) {
        if colon > 0 && is_boolean(&core[colon + 1..]) {
            return var(l + colon + 1, r);
        }
    }
    if core.len() > LONG_TOKEN || is_variable(core) {
        return var(l, r);
    }
    word(hasher.word(tok))
}

fn is_boolean(w: &[u8]) -> bool {
    w.eq_ignore_ascii_case(b"true") || w.eq_ignore_ascii_case(b"false")
}

#[inline]
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A digit anywhere, a path, a URL, a host name, a date word, a boolean.
fn is_variable(core: &[u8]) -> bool {
    if core.iter().any(u8::is_ascii_digit) {
        return true;
    }
    // Absolute or home paths with at least two components; a lone `/` or
    // `/etc` could be a word of the statement.
    if (core[0] == b'/' || core.starts_with(b"~/")) && memchr::memchr(b'/', &core[1..]).is_some() {
        return true;
    }
    if memchr::memmem::find(core, b"://").is_some() {
        return true;
    }
    // `C:\Windows\...`
    if core.len() > 2 && core[1] == b':' && core[2] == b'\\' {
        return true;
    }
    if core.len() <= 9 && (is_boolean(core) || is_date_word(core)) {
        return true;
    }
    is_host_name(core)
}

/// Day and month names: parts of a timestamp written out.
fn is_date_word(w: &[u8]) -> bool {
    const WORDS: [&[u8]; 26] = [
        b"mon",
        b"tue",
        b"wed",
        b"thu",
        b"fri",
        b"sat",
        b"sun",
        b"monday",
        b"tuesday",
        b"wednesday",
        b"thursday",
        b"friday",
        b"saturday",
        b"sunday",
        b"jan",
        b"feb",
        b"mar",
        b"apr",
        b"jun",
        b"jul",
        b"aug",
        b"sep",
        b"oct",
        b"nov",
        b"dec",
        b"sept",
    ];
    // "May" is left out: it is a word more often than a month.
    WORDS.iter().any(|d| w.eq_ignore_ascii_case(d))
}

/// `ns1.example.com`, `host.local`: three or more labels of letters, digits
/// and dashes ending in a common top-level domain or a two-letter country
/// code, or a `.local` name. Java packages (`org.apache.Foo`) end in a class
/// name, not a domain, and stay words.
fn is_host_name(w: &[u8]) -> bool {
    const TLDS: [&[u8]; 13] = [
        b"com",
        b"net",
        b"org",
        b"edu",
        b"gov",
        b"mil",
        b"int",
        b"info",
        b"biz",
        b"io",
        b"local",
        b"localdomain",
        b"lan",
    ];
    if !w
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return false;
    }
    let (mut count, mut last, mut empty) = (0, &w[..0], false);
    for label in w.split(|&b| b == b'.') {
        count += 1;
        empty |= label.is_empty();
        last = label;
    }
    if empty || count < 2 {
        return false;
    }
    let tld = TLDS.iter().any(|t| last.eq_ignore_ascii_case(t));
    (count >= 3 && (tld || last.len() == 2)) || last.eq_ignore_ascii_case(b"local")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(msg: &str) -> Vec<String> {
        let h = TokenHasher::default();
        let mut toks = Vec::new();
        tokenize(msg.as_bytes(), &h, &mut toks);
        toks.iter()
            .map(|t| {
                let mut s = String::new();
                t.masked_into(msg.as_bytes(), &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn masks_the_obvious_variables() {
        assert_eq!(
            masked("Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6"),
            ["Received", "block", "<*>", "of", "size", "<*>", "from", "<*>"]
        );
        assert_eq!(
            masked("session opened for user root by (uid=0) took 12ms [pid 0x1f]"),
            [
                "session",
                "opened",
                "for",
                "user",
                "root",
                "by",
                "(uid=<*>)",
                "took",
                "<*>",
                "[pid",
                "<*>]"
            ]
        );
        assert_eq!(
            masked("open /var/log/syslog at https://x.example/a uuid 3f2a-4b"),
            ["open", "<*>", "at", "<*>", "uuid", "<*>"]
        );
        assert_eq!(masked("  a\tb  ruser= "), ["a", "b", "ruser="]);
        assert_eq!(masked(""), Vec::<String>::new());
    }

    #[test]
    fn masked_forms_hash_alike_and_apart() {
        let h = TokenHasher::default();
        let mut a = Vec::new();
        let mut b = Vec::new();
        tokenize(b"uid=0 gid=0 12 x", &h, &mut a);
        tokenize(b"uid=1000 gid=5 99 x", &h, &mut b);
        let ha: Vec<u64> = a.iter().map(|t| t.hash).collect();
        let hb: Vec<u64> = b.iter().map(|t| t.hash).collect();
        assert_eq!(ha, hb);
        assert_ne!(ha[0], ha[1], "uid=<*> and gid=<*> are different tokens");
        assert_eq!(ha[2], WILD);
    }
}
