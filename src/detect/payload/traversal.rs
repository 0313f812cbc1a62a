//! Path traversal and local file inclusion: `..` segments climbing out of
//! a directory (after every decoding, with `\` as `/`, in any count of
//! dots that a filter-stripping or Windows parser reduces to `..`), the
//! well-known files such an attack reads (`/etc/passwd`, `win.ini`,
//! `WEB-INF/web.xml`, `/proc/self/environ`...), and the URL schemes that
//! read local files (`file:`, `php://filter`...). One relative `../` (a
//! redirect to `../account`) does not fire.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

pub fn detect(s: &[u8]) -> bool {
    if schemes(s) {
        return true;
    }
    let (segs, long_run) = dot_segments(s);
    if segs >= 2 || long_run || dot_slash_run(s) || rooted_dots(s) {
        return true;
    }
    sensitive(s) || (segs == 1 && (memchr::memchr(0, s).is_some() || climbs_to_system(s)))
}

/// One `../` that climbs into a system directory or to a server's
/// configuration or log (`../etc/my.cnf`, `../usr/local/php/lib/php.ini`,
/// `../logs/access.log`, `../config.php`): what the LFI lists send when
/// the application prefixes its own directory. A relative link climbs to
/// a page (`../account`).
fn climbs_to_system(s: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(s, b"..") else {
        return false;
    };
    let rest = &s[at + 2..];
    if !rest.first().copied().is_some_and(sep) {
        return false;
    }
    let rest = &rest[rest.iter().take_while(|c| sep(**c)).count()..];
    let rest = &rest[..rest
        .iter()
        .position(|c| matches!(c, b'&' | b'?' | b'#' | 0))
        .unwrap_or(rest.len())];
    const DIRS: [&[u8]; 13] = [
        b"etc/",
        b"usr/",
        b"var/",
        b"opt/",
        b"proc/",
        b"root/",
        b"boot/",
        b"windows/",
        b"winnt/",
        b"program files",
        b"inetpub/",
        b"volumes/",
        b"system32/",
    ];
    const FILES: [&[u8]; 16] = [
        b".ini",
        b".conf",
        b".cnf",
        b".log",
        b".pdb",
        b"/passwd",
        b"/shadow",
        b".htpasswd",
        b".htaccess",
        b".env",
        b"config.php",
        b"web.config",
        b".bash_history",
        b".zsh_history",
        b"id_rsa",
        b".git/config",
    ];
    DIRS.iter().any(|d| rest.starts_with(d)) || FILES.iter().any(|f| rest.ends_with(f))
}

/// `/././././`: three `./` segments in a row, a filter-evasion padding
/// no link carries.
fn dot_slash_run(s: &[u8]) -> bool {
    let mut run = 0;
    let mut i = 0;
    while i + 1 < s.len() {
        if s[i] == b'.' && sep(s[i + 1]) && (i == 0 || sep(s[i - 1])) {
            run += 1;
            if run >= 3 {
                return true;
            }
            i += 2;
            while i < s.len() && sep(s[i]) {
                i += 1;
            }
            continue;
        }
        run = 0;
        i += 1;
    }
    false
}

/// A value that starts at the root and steps to `.` or `..` right away
/// (`/../x`, `//..`, `/./`): no link or form produces it.
fn rooted_dots(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() && sep(s[i]) {
        i += 1;
    }
    if i == 0 || s.get(i) != Some(&b'.') {
        return false;
    }
    let dots = s[i..].iter().take_while(|c| **c == b'.').count();
    match s.get(i + dots) {
        None => dots >= 2,
        Some(c) => sep(*c) || dots >= 2 && !c.is_ascii_alphanumeric(),
    }
}

/// The bytes before `at` end in an escape no decoder accepts (`%pc`,
/// `%9v`, `%2%f`): noise a fuzzer put between the separators, which a
/// lenient server skips.
fn junk_before(s: &[u8], at: usize) -> bool {
    (1..=2).any(|k| {
        at > k && s[at - k - 1] == b'%' && s[at - k..at].iter().all(u8::is_ascii_alphanumeric)
    })
}

fn sep(c: u8) -> bool {
    matches!(c, b'/' | b'\\')
}

/// Counts `..` segments: runs of two or more dots bounded on each side by
/// a separator, the value's ends, or a byte no file name holds (decoding
/// leftovers like `%c0` junk, `;` for Tomcat's `..;/`). Also reports a run
/// of three or more dots right after a separator (`/.../`, `/....//`),
/// which no real path has.
fn dot_segments(s: &[u8]) -> (usize, bool) {
    let mut segs = 0;
    let mut long_run = false;
    let mut i = 0;
    let n = s.len();
    while let Some(p) = memchr::memchr(b'.', &s[i..]) {
        let start = i + p;
        if s.get(start + 1) != Some(&b'.') {
            i = start + 1;
            continue;
        }
        let mut end = start;
        while end < n && s[end] == b'.' {
            end += 1;
        }
        i = end;
        let left = if start == 0 { None } else { Some(s[start - 1]) };
        let right = s.get(end).copied();
        let boundary = |c: Option<u8>| match c {
            None => true,
            Some(c) => {
                sep(c)
                    || matches!(
                        c,
                        b';' | b'?' | b'=' | b':' | b'{' | b'}' | b'|' | b'%' | b'"' | b'\'' | 0
                            ..=0x1f
                    )
                    || c >= 0x80
            }
        };
        if end - start >= 4 && left.is_none_or(sep) && right.is_some()
            || end - start >= 3 && left.is_some_and(sep) && right.is_some()
            || end - start >= 4 && right.is_some_and(|c| sep(c) || c == b'{')
        {
            // `/...x`, `/......{file}`, `aaaa....../`: no real path has
            // these; Windows drops trailing dots (path truncation).
            long_run = true;
        }
        // A letter of a script written in UTF-8 (`بالصور..كيم`: an
        // ellipsis in an Arabic title) is part of a name, not junk.
        let text_left = left.is_some_and(|c| c >= 0x80) && letter_ending_at(s, start);
        let text_right = right.is_some_and(|c| c >= 0x80) && letter_starting_at(s, end);
        if text_left || text_right {
            continue;
        }
        if !((boundary(left) || junk_before(s, start)) && boundary(right)) {
            continue;
        }
        // An ellipsis in a sentence has spaces around, not separators.
        if left.is_none() && right.is_none() {
            continue;
        }
        segs += 1;
    }
    (segs, long_run)
}

/// The UTF-8 character that ends at `end` (exclusive) is valid and no
/// look-alike of a dot or a slash (`．`, `／`, `＼`, `∕`: best-fit
/// mappings turn them into the ASCII ones).
fn letter_ending_at(s: &[u8], end: usize) -> bool {
    let from = end.saturating_sub(4);
    (from..end)
        .rev()
        .any(|lead| s[lead] >= 0xc0 && std::str::from_utf8(&s[lead..end]).is_ok_and(plain_letter))
}

/// The UTF-8 character that starts at `at` is valid and no look-alike.
fn letter_starting_at(s: &[u8], at: usize) -> bool {
    let len = match s.get(at) {
        Some(0xc2..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf4) => 4,
        _ => return false,
    };
    s.get(at..at + len)
        .is_some_and(|b| std::str::from_utf8(b).is_ok_and(plain_letter))
}

fn plain_letter(c: &str) -> bool {
    let mut chars = c.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return false;
    };
    c.is_alphanumeric()
        && !matches!(
            c,
            '\u{ff0e}' | '\u{ff0f}' | '\u{ff3c}' | '\u{2215}' | '\u{2044}' | '\u{fe68}'
        )
}

/// Files an attacker reads to prove the hole, anchored at a path boundary
/// and ending where the name ends (`/etc/passwords-policy.html` is not
/// `/etc/passwd`).
fn sensitive(s: &[u8]) -> bool {
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    const FILES: [&str; 37] = [
        ".htaccess",
        "etc/passwd",
        "etc/shadow",
        "etc/group",
        "etc/hosts",
        "etc/issue",
        "etc/master.passwd",
        "etc/sudoers",
        "etc/crontab",
        "etc/fstab",
        "etc/motd",
        "etc/profile",
        "etc/resolv.conf",
        "etc/security/",
        "etc/httpd/",
        "etc/apache2/",
        "etc/nginx/",
        "etc/mysql/",
        "etc/ssh/",
        "proc/self/",
        "proc/version",
        "proc/cmdline",
        "win.ini",
        "boot.ini",
        "system.ini",
        "windows/system32",
        "winnt/system32",
        "system32/drivers/etc",
        "c:/windows",
        "c:/winnt",
        "c:/inetpub",
        "web-inf/web.xml",
        "meta-inf/manifest.mf",
        ".htpasswd",
        "global.asa",
        ".ssh/id_rsa",
        "var/log/",
    ];
    if memchr::memchr3(b'/', b'\\', b'.', s).is_none() {
        return false;
    }
    // One pass for all names; backslashes were made slashes by the caller
    // when the value had any (see `payload::piece`).
    let Some(ac) = AC.get_or_init(|| AhoCorasick::new(FILES).ok()).as_ref() else {
        return false;
    };
    if !ac.is_match(s) {
        return false;
    }
    for m in ac.find_overlapping_iter(s) {
        let (at, end) = (m.start(), m.end());
        let f = FILES[m.pattern().as_usize()].as_bytes();
        let left_ok = at == 0
            || !(s[at - 1].is_ascii_alphanumeric() || s[at - 1] == b'_' || s[at - 1] == b'-')
            || junk_before(s, at);
        let right_ok = f[f.len() - 1] == b'/'
            || s.get(end)
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-'));
        // `var/log/` only climbing or from the root.
        let anchored = f != b"var/log/" || (at > 0 && sep(s[at - 1]));
        if left_ok && right_ok && anchored {
            return true;
        }
    }
    false
}

/// URL schemes and wrappers that read local files or code.
fn schemes(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memchr(b':', &s[from..]) {
        let colon = from + p;
        from = colon + 1;
        let mut b = colon;
        while b > 0 && s[b - 1].is_ascii_alphanumeric() {
            b -= 1;
        }
        let scheme = &s[b..colon];
        let after = &s[colon + 1..];
        let fires = match scheme {
            b"file" => local_file(after),
            b"php" | b"phar" | b"zip" | b"expect" | b"glob" | b"compress.zlib" | b"zlib" => {
                after.starts_with(b"//")
            }
            _ => false,
        };
        if fires {
            return true;
        }
    }
    false
}

/// What follows `file:` when it names a file of this machine: `///etc`,
/// `/etc`, `\\`, `..`, or an authority that is this machine
/// (`//localhost/`, a numeric address, `//c:/`). A template's `file://$file/`
/// or a link to another host is not a local read.
fn local_file(after: &[u8]) -> bool {
    let Some(authority) = after.strip_prefix(b"//") else {
        return after.first().is_some_and(|c| sep(*c) || *c == b'.');
    };
    match authority.first() {
        // A numeric host is this machine in some spelling (`127.1`,
        // `0000::001`, `[::1]`): evasions, never a file server's name.
        Some(c) if sep(*c) || matches!(c, b'.' | b'[' | b':' | b'0'..=b'9') => true,
        Some(drive) if drive.is_ascii_alphabetic() && authority.get(1) == Some(&b':') => true,
        _ => authority.starts_with(b"localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(s: &str) -> bool {
        detect(s.to_ascii_lowercase().as_bytes())
    }

    #[test]
    fn traversals() {
        for p in [
            "../../../../etc/passwd",
            "..\\..\\..\\windows\\win.ini",
            "....//....//etc/passwd",
            "..;/..;/web-inf/web.xml",
            "/.../.../.../x",
            "/......x",
            "/etc/passwd",
            "c:/boot.ini",
            "file:///etc/passwd",
            "file:........etcpasswd",
            "file://localhost/etc/passwd",
            "file://c:/windows/win.ini",
            "file://0000::001/var/run/secrets/kubernetes.io/serviceaccount",
            "file:/etc/shadow",
            "php://filter/convert.base64-encode/resource=index.php",
            "../../x\0.jpg",
            "..\x01..\x01boot.ini",
            "/proc/self/environ",
            "../../../../var/log/apache2/access.log",
        ] {
            assert!(tr(p), "missed {p:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "../index.html",
            "the ../ folder",
            // A crawler following a template's unrendered link.
            "/misc/nmh//\"file://$file/\"",
            "/go?to=file://example.com/share",
            "wait... what",
            "/releases/v1.2.3/notes...txt",
            "/docs/etc/passwords-policy.html",
            "1..10",
            "c:\\users\\me\\documents\\cv.pdf",
            "/a/b/./c",
            "...",
            "profile:1",
            "https://example.com/a/b",
        ] {
            assert!(!tr(b), "false positive {b:?}");
        }
    }
}
