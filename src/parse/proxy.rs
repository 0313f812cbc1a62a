//! The client behind proxies: a web server behind a load balancer logs the
//! balancer's address as `$remote_addr` and the client in the
//! `X-Forwarded-For` header (nginx's default `main` format writes it as the
//! last quoted field). Rules keyed by client address, and searches for it,
//! need the client: with the balancer's address every attacker is one key
//! and every user shares their windows.
//!
//! Which entry to believe follows nginx's `real_ip_recursive` with the
//! internal ranges as the trusted proxies: the header is read only when the
//! peer is an internal address (a proxy of the site's own network; a public
//! peer's header is whatever the client wrote), and then from the right,
//! skipping internal hops: each proxy appends the address it saw, so the
//! rightmost external entry is the one the site's first proxy saw, and
//! what a client writes to the left of it cannot take its place. When
//! every entry is internal, the leftmost is the client.

use std::net::IpAddr;

/// The address to use as the client: `peer` (the connection's address),
/// or the client named by `forwarded` (an `X-Forwarded-For` value) when
/// `peer` is an internal proxy. Entries that are not addresses (`unknown`,
/// obfuscated identifiers) are skipped.
pub fn client_behind(peer: Option<IpAddr>, forwarded: &str) -> Option<IpAddr> {
    if peer.is_some_and(|p| !is_internal(p)) {
        return peer;
    }
    let mut leftmost = None;
    for entry in forwarded.rsplit(',') {
        let Some(ip) = entry_ip(entry.trim()) else {
            continue;
        };
        if !is_internal(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost.or(peer)
}

/// Whether `text` reads as an `X-Forwarded-For` value: addresses (with a
/// port or in brackets as some proxies write them) separated by commas.
pub fn looks_forwarded(text: &str) -> bool {
    !text.is_empty()
        && text.split(',').all(|e| {
            let e = e.trim();
            e == "unknown" || entry_ip(e).is_some()
        })
        && text.split(',').any(|e| entry_ip(e.trim()).is_some())
}

fn entry_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = entry.strip_prefix('[') {
        // `[2001:db8::1]:443` or `[2001:db8::1]`
        return inner.split(']').next()?.parse().ok();
    }
    // `203.0.113.7:51234`
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Loopback, private (RFC 1918, IPv6 unique local), link-local, shared
/// (RFC 6598, carrier NAT and cloud load balancers) and unspecified
/// addresses: what a proxy of the site's own network has.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn the_client_is_the_rightmost_external_hop_behind_an_internal_peer() {
        for (peer, forwarded, client) in [
            // One balancer.
            ("10.0.0.2", "203.0.113.50", "203.0.113.50"),
            // A client that writes its own header cannot choose the key.
            ("10.0.0.2", "1.2.3.4, 203.0.113.50", "203.0.113.50"),
            // Two hops inside the site.
            ("10.0.0.2", "203.0.113.50, 10.0.1.7", "203.0.113.50"),
            // Carrier NAT range of a cloud balancer, a port, IPv6.
            ("100.64.3.1", "203.0.113.50:41234", "203.0.113.50"),
            ("fd00::2", "[2001:db8::7]:443", "2001:db8::7"),
            // Only internal hops: the leftmost is the client.
            ("10.0.0.2", "192.168.1.20, 10.0.1.7", "192.168.1.20"),
            // A public peer is the client, whatever its header says.
            ("198.51.100.9", "203.0.113.50", "198.51.100.9"),
            // Nothing usable in the header.
            ("10.0.0.2", "unknown", "10.0.0.2"),
            ("10.0.0.2", "", "10.0.0.2"),
        ] {
            assert_eq!(
                client_behind(ip(peer), forwarded),
                ip(client),
                "{peer} {forwarded}"
            );
        }
    }

    #[test]
    fn only_address_lists_read_as_forwarded() {
        for (text, yes) in [
            ("203.0.113.50", true),
            ("203.0.113.50, 10.0.0.1", true),
            ("unknown, 203.0.113.50", true),
            ("[2001:db8::7]:443", true),
            ("-", false),
            ("unknown", false),
            ("rt=0.2", false),
            ("Mozilla/5.0", false),
            ("", false),
        ] {
            assert_eq!(looks_forwarded(text), yes, "{text}");
        }
    }
}
