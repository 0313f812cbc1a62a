//! The `route` field: a request path reduced to its endpoint, so errors of
//! `/orders/1234` and `/orders/98765` count against one key.
//!
//! The query and fragment go; a segment that is an identifier becomes
//! `:id`: digits only, a UUID, 8 or more hex digits with at least one digit
//! (hashes, object ids), or 16 or more characters mixing letters and digits
//! (opaque tokens). At most [`MAX_SEGMENTS`] segments and [`MAX_BYTES`]
//! bytes are kept, so a route key stays small whatever a client sends.

/// Segments kept; a longer path ends in `/…`.
pub const MAX_SEGMENTS: usize = 8;
/// Bytes of one route at most (before the `/…` marker).
pub const MAX_BYTES: usize = 160;
pub const PLACEHOLDER: &str = ":id";

/// Appends the route of `path` to `out` (no allocation once `out` has grown).
pub fn write_route(path: &str, out: &mut String) {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    let start = out.len();
    let mut segments = 0;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if segments == MAX_SEGMENTS || out.len() - start + seg.len() + 1 > MAX_BYTES {
            out.push_str("/…");
            return;
        }
        out.push('/');
        out.push_str(if is_identifier(seg) { PLACEHOLDER } else { seg });
        segments += 1;
    }
    if segments == 0 {
        out.push('/');
    }
}

/// The route up to its first placeholder (`/orders` of `/orders/:id/items`),
/// to search for its lines; `None` when nothing literal is left.
pub fn literal_prefix(route: &str) -> Option<&str> {
    let end = route
        .find("/:id")
        .or_else(|| route.find("/…"))
        .unwrap_or(route.len());
    Some(&route[..end]).filter(|p| p.len() > 1)
}

/// The host a request asked for when its target names one: an absolute
/// URL (`http://user@host:port/...`, proxies and proxy probes) or a CONNECT
/// authority (`host:443`, `[2001:db8::1]:443`). `None` for an origin-form
/// path (`/index.html`).
pub fn url_host(target: &str, connect: bool) -> Option<&str> {
    let rest = match target.find("://") {
        Some(i) if !target[..i].contains('/') => &target[i + 3..],
        _ if connect => target,
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => &v6[..v6.find(']')?],
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    Some(host).filter(|h| !h.is_empty())
}

/// True for a segment that names one object rather than an endpoint.
pub fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    if b.len() >= 8 && b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-') {
        // Hex: hashes, UUIDs (8-4-4-4-12), object ids.
        return b.iter().filter(|c| **c != b'-').count() >= 8;
    }
    b.len() >= 16
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> String {
        let mut s = String::new();
        write_route(p, &mut s);
        s
    }

    #[test]
    fn identifiers_collapse_and_names_stay() {
        assert_eq!(route("/api/v1/orders/1234?x=1"), "/api/v1/orders/:id");
        assert_eq!(
            route("/u/3f2504e0-4f89-11d3-9a0c-0305e82c3301/avatar"),
            "/u/:id/avatar"
        );
        assert_eq!(route("/blob/9f86d081884c7d65"), "/blob/:id");
        assert_eq!(route("/t/AbC123xyz789QwErTy"), "/t/:id");
        assert_eq!(route("/checkout"), "/checkout");
        assert_eq!(
            route("/blog/2024/10/release-notes"),
            "/blog/:id/:id/release-notes"
        );
        // Words that happen to be hex, and names with a digit, stay.
        assert_eq!(route("/cafe/deadbeef"), "/cafe/deadbeef");
        assert_eq!(route("/api/v2/items/"), "/api/v2/items");
        assert_eq!(route("/static/app.3f9a1c.js"), "/static/app.3f9a1c.js");
        assert_eq!(route("/"), "/");
        assert_eq!(route("?q=1"), "/");
        assert_eq!(route("//a///b#frag"), "/a/b");
    }

    #[test]
    fn literal_prefix_stops_at_the_first_placeholder() {
        assert_eq!(literal_prefix("/orders/:id/items"), Some("/orders"));
        assert_eq!(literal_prefix("/checkout"), Some("/checkout"));
        assert_eq!(literal_prefix("/:id"), None);
        assert_eq!(literal_prefix("/"), None);
        assert_eq!(
            literal_prefix("/a/b/c/d/e/f/g/h/…"),
            Some("/a/b/c/d/e/f/g/h")
        );
    }

    #[test]
    fn url_hosts_of_absolute_targets_and_connect() {
        assert_eq!(
            url_host("http://a.example:8080/x?y", false),
            Some("a.example")
        );
        assert_eq!(url_host("https://u:p@b.example/", false), Some("b.example"));
        assert_eq!(url_host("c.example:443", true), Some("c.example"));
        assert_eq!(url_host("[2001:db8::1]:443", true), Some("2001:db8::1"));
        assert_eq!(url_host("/index.html", false), None);
        assert_eq!(url_host("/redirect?to=http://x.example/", false), None);
        assert_eq!(url_host("c.example:443", false), None);
    }

    #[test]
    fn routes_are_bounded() {
        assert_eq!(route("/a/b/c/d/e/f/g/h/i/j"), "/a/b/c/d/e/f/g/h/…");
        let long = format!("/{}", "x".repeat(500));
        assert_eq!(route(&long), "/…");
        assert!(route(&"/abcdefghij".repeat(40)).len() <= MAX_BYTES + 4);
    }
}
