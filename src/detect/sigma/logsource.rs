//! Which Sigma log sources nightowl runs (the webserver and proxy
//! categories, web server products), and their field names.

use serde_yaml::{Mapping, Value};

use super::{fail, opt_str, SigmaError};

/// Web server products whose access or error logs nightowl parses.
pub(super) const PRODUCTS: &[&str] = &[
    "apache",
    "apache2",
    "httpd",
    "nginx",
    "openresty",
    "iis",
    "haproxy",
    "caddy",
    "lighttpd",
    "tomcat",
    "traefik",
    "envoy",
    "generic",
    "squid",
];

/// Log source categories: web servers' access logs, and forward proxies'
/// (Squid's native format, or any format nightowl parses).
pub(super) const CATEGORIES: &[&str] = &["webserver", "proxy"];

/// Sigma's web field names (W3C extended log names, and the proxy
/// category's spellings that webserver rules borrow) → nightowl fields.
pub(super) const FIELDS: &[(&str, &str)] = &[
    ("c-ip", "client_ip"),
    ("cs-method", "method"),
    ("cs-uri-stem", "uri_stem"),
    ("c-uri-stem", "uri_stem"),
    ("cs-uri-query", "query"),
    ("c-uri-query", "query"),
    ("cs-uri", "path"),
    ("c-uri", "path"),
    ("sc-status", "status"),
    ("cs-user-agent", "user_agent"),
    ("c-useragent", "user_agent"),
    ("cs-useragent", "user_agent"),
    ("cs-referer", "referer"),
    ("cs-referrer", "referer"),
    ("cs-host", "url_host"),
    ("r-dns", "url_host"),
    ("cs-username", "user"),
    ("sc-bytes", "bytes"),
    ("cs-version", "protocol"),
];

/// Fields of the Sigma taxonomy that access logs as nightowl parses them do
/// not carry, each with why; named separately so the error says so.
pub(super) const UNAVAILABLE: &[(&str, &str)] = &[
    (
        "cs-cookie",
        "access logs (combined, common, Squid) do not log cookies",
    ),
    (
        "cs-content-type",
        "the request's Content-Type is not in the access log formats nightowl parses \
         (combined, common, Squid's native format logs the response's)",
    ),
    (
        "cs-bytes",
        "request sizes are not in combined or common logs",
    ),
    ("s-ip", "the server's address is not in the parsed lines"),
    ("s-port", "the server's port is not in the parsed lines"),
    ("s-sitename", "IIS site names are not parsed"),
    ("s-computername", "IIS server names are not parsed"),
    ("sc-substatus", "IIS sub-status codes are not parsed"),
    ("sc-win32-status", "IIS Win32 status codes are not parsed"),
    ("c-dns", "client host names are not parsed"),
    (
        "dst_ip",
        "the destination address is not parsed (Squid's hierarchy field names a peer, \
         not always the server)",
    ),
    (
        "date",
        "the line's date is its event time: use a timeframe, not a field",
    ),
    (
        "time",
        "the line's time is its event time: use a timeframe, not a field",
    ),
    // IIS logs it in milliseconds, nightowl's `duration` is seconds: a
    // silent unit mismatch would be worse than an error.
    (
        "time-taken",
        "IIS logs it in milliseconds and nightowl's duration is seconds",
    ),
];

pub(super) const NATIVE: &[&str] = &[
    "client_ip",
    "method",
    "path",
    "uri_stem",
    "query",
    "route",
    "url_host",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "host",
    "user",
    "protocol",
    "duration",
    "raw",
    "message",
    "source",
    "app",
    "format",
];

pub(super) const NUMERIC: &[&str] = &["status", "bytes", "duration"];

/// Maps a Sigma field name to a nightowl field name.
pub fn map_field(name: &str) -> Result<&'static str, SigmaError> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, f)) = FIELDS.iter().find(|(s, _)| *s == lower) {
        return Ok(f);
    }
    if let Some(f) = NATIVE.iter().find(|n| **n == name) {
        return Ok(f);
    }
    if let Some((_, why)) = UNAVAILABLE.iter().find(|(n, _)| *n == lower) {
        return Err(SigmaError {
            near: Some(name.to_string()),
            message: format!(
                "Sigma field {name:?} is not available in nightowl's parsed web logs: {why}"
            ),
            unavailable: true,
        });
    }
    let known: Vec<&str> = FIELDS.iter().map(|(s, _)| *s).collect();
    fail(
        Some(name.to_string()),
        format!(
            "unknown field {name:?} for a webserver Sigma rule; known: {} (or nightowl's own: {})",
            known.join(", "),
            NATIVE.join(", ")
        ),
    )
}

/// What a rule's log source says about the lines it runs on.
pub(super) struct Source {
    /// Lines are access-log requests (a match is grouped per client IP).
    pub web_access: bool,
    /// A forward proxy's log (`category: proxy`, no web server product):
    /// the rule runs on proxy requests only (`proxy_request`).
    pub proxy: bool,
}

/// Accepts the webserver category and web server products.
pub(super) fn check_logsource(top: &Mapping) -> Result<Source, SigmaError> {
    let Some(Value::Mapping(ls)) = top.get("logsource") else {
        return fail(Some("logsource:".to_string()), "logsource: a mapping");
    };
    let get = |k: &str| -> Result<Option<String>, SigmaError> {
        opt_str(ls, k).map(|o| o.map(|s| s.to_ascii_lowercase()))
    };
    let category = get("category")?;
    let product = get("product")?;
    let service = get("service")?;
    let what = format!(
        "category: {}, product: {}, service: {}",
        category.as_deref().unwrap_or("-"),
        product.as_deref().unwrap_or("-"),
        service.as_deref().unwrap_or("-")
    );
    let unsupported = |near: &str| -> Result<Source, SigmaError> {
        fail(
            Some(near.to_string()),
            format!(
                "unsupported Sigma logsource ({what}): nightowl runs the webserver and proxy \
                 categories and web server and proxy products ({})",
                PRODUCTS.join(", ")
            ),
        )
    };
    if let Some(c) = &category {
        if !CATEGORIES.contains(&c.as_str()) {
            return unsupported("category:");
        }
    }
    if let Some(p) = &product {
        if !PRODUCTS.contains(&p.as_str()) {
            return unsupported("product:");
        }
    }
    if let Some(s) = &service {
        if !(s == "access" || s == "error" || PRODUCTS.contains(&s.as_str())) {
            return unsupported("service:");
        }
    }
    // `service: apache` alone is how SigmaHQ marks web server error-log
    // rules; the service check above already held it to a web server.
    if category.is_none() && product.is_none() && service.is_none() {
        return unsupported("logsource:");
    }
    let proxy = category.as_deref() == Some("proxy")
        && product
            .as_deref()
            .is_none_or(|p| p == "squid" || p == "generic");
    Ok(Source {
        web_access: category.is_some() || service.as_deref() == Some("access"),
        proxy,
    })
}
