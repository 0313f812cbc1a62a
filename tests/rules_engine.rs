//! Engine behaviour that fixtures cannot show: lateness, the key cap,
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
fn rules_engine_drops_lines_later_than_lateness() {
    let mut e = engine(THRESHOLD);
    let mut out = Vec::new();
    feed(&mut e, FAIL, 100 * S, "default", &mut out);
    feed(&mut e, FAIL, 85 * S, "default", &mut out); // 15 s late: dropped
    feed(&mut e, FAIL, 95 * S, "default", &mut out); // 5 s late: counts
    assert!(out.is_empty());
    assert_eq!(e.stats()[0].late, 1);
    feed(&mut e, FAIL, 101 * S, "default", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 3);
    assert_eq!(out[0].first_ts / S, 95);
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
    // buffers and windows grow; afterwards more of the same must not
    // allocate.
    let run = |e: &mut Engine, rounds: std::ops::Range<i64>, out: &mut Vec<Firing>| {
        for round in rounds {
            for (i, (ev, l)) in events.iter().zip(lines).enumerate() {
                let ts = 1_728_561_600 * S + (round * 3 + i as i64) * S / 100;
                e.evaluate(ev, l, ts, "default", out);
            }
        }
    };
    run(&mut e, 0..50, &mut out);
    let before = counting_alloc::allocations();
    run(&mut e, 50..100, &mut out);
    let after = counting_alloc::allocations();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(after - before, 0, "allocations on benign lines");
}
