//! Access logs of IIS (W3C extended, its default fields), of AWS load
//! balancers and of HAProxy (`log stdout format raw`), shipped by the real agent with no format named: each line
//! is recognised, searchable by its fields, and the default pack reads
//! them like nginx lines.

use crate::common;

use std::fs;

use common::*;

/// Unix seconds `at` in UTC, as `layout` writes them.
fn stamp(at: i64, layout: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .expect("time")
        .format(layout)
        .expect("format")
}

/// As W3C writes it: `2026-12-08 10:00:00`.
fn w3c_time(at: i64) -> String {
    stamp(
        at,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
}

/// As an ALB writes it: `2026-12-08T10:00:00.123456Z`.
fn alb_time(at: i64) -> String {
    stamp(
        at,
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].123456Z"),
    )
}

fn iis_log(t0: i64) -> String {
    let mut out = format!(
        "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: {}\n\
         #Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip \
         cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n",
        w3c_time(t0)
    );
    out.push_str(&format!(
        "{} 10.0.0.5 GET /products.aspx id=1%27%20UNION%20SELECT%20password%20FROM%20users-- 443 - \
         198.51.100.23 sqlmap/1.7.2#stable+(https://sqlmap.org) - 500 0 0 31\n",
        w3c_time(t0)
    ));
    for i in 0..12 {
        out.push_str(&format!(
            "{} 10.0.0.5 GET /admin/ - 443 administrator 198.51.100.24 \
             Mozilla/4.0+(Hydra) - 401 1 2148074254 2\n",
            w3c_time(t0 + 1 + i)
        ));
    }
    out.push_str(&format!(
        "{} 10.0.0.5 GET /default.aspx - 443 - 192.0.2.10 \
         Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) https://www.example.com/ 200 0 0 15\n",
        w3c_time(t0 + 20)
    ));
    out
}

fn alb_log(t0: i64) -> String {
    (0..25)
        .map(|i| {
            format!(
                "https {} app/shop-lb/50dc6c495c0c9188 203.0.113.41:{} 10.0.1.7:8080 0.001 0.020 0.000 \
                 401 401 310 52 \"POST https://shop.example.com:443/api/v1/auth/login HTTP/1.1\" \
                 \"python-requests/2.31.0\" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 \
                 arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/73e2d6bc24d8a067 \
                 \"Root=1-58337262-36d228ad5d99923122bbe354\" \"shop.example.com\" \"-\" 0 {} \
                 \"forward\" \"-\" \"-\" \"10.0.1.7:8080\" \"401\" \"-\" \"-\"\n",
                alb_time(t0 + i),
                40_000 + i,
                alb_time(t0 + i)
            )
        })
        .collect()
}

/// HAProxy's accept date: `08/Dec/2026:10:00:00.120`.
fn haproxy_time(at: i64) -> String {
    stamp(
        at,
        time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second].120"
        ),
    )
}

/// Three requests the balancer answered itself: the backend timed out.
fn haproxy_log(t0: i64) -> String {
    (0..3)
        .map(|i| {
            format!(
                "192.0.2.{}:5{i}123 [{}] https-in~ app/web2 0/0/1/-1/30001 504 198 - - sH-- 9/9/1/1/0 0/0 \"GET /checkout HTTP/1.1\"\n",
                20 + i,
                haproxy_time(t0 + 30 + i)
            )
        })
        .collect()
}

#[test]
fn iis_load_balancer_and_haproxy_logs_are_parsed_searched_and_detected_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            ..Settings::default()
        },
    );
    let t0 = now_unix() - 600;
    let iis = c.root.join("u_ex.log");
    fs::write(&iis, iis_log(t0)).expect("iis log");
    let alb = c.root.join("alb.log");
    fs::write(&alb, alb_log(t0)).expect("alb log");
    let haproxy = c.root.join("haproxy.log");
    fs::write(&haproxy, haproxy_log(t0)).expect("haproxy log");
    let (status, stderr) = c.run_agent_once("edge", &c.root.join("state"), &[&iis, &alb, &haproxy]);
    assert!(status.success(), "agent failed: {stderr}");
    c.wait_for_count("*", 4 + 14 + 25 + 3);

    // Parsed: the header lines alone are raw.
    assert_eq!(c.count("format:w3c"), 14);
    assert_eq!(c.count("format:elb"), 25);
    assert_eq!(c.count("format:raw"), 4);
    assert_eq!(c.count("client_ip:198.51.100.24 AND status:401"), 12);
    assert_eq!(c.count("user_agent:\"Mozilla/4.0 (Hydra)\""), 12);
    // The balancer's request target is read as the path a server logs.
    assert_eq!(c.count("path:\"/api/v1/auth/login\""), 25);
    assert_eq!(c.count("host:\"app/shop-lb/50dc6c495c0c9188\""), 25);
    assert_eq!(
        c.count("format:haproxy AND status:504 AND path:checkout"),
        3
    );

    let want = [
        ("web-sqli-probe", "198.51.100.23"),
        ("web-http-auth-brute-force", "198.51.100.24"),
        ("web-login-brute-force", "203.0.113.41"),
    ];
    let firings = wait_until("a firing per attack", || {
        let body = c.api_json("/api/v1/firings");
        let list = body["firings"].as_array()?.clone();
        want.iter()
            .all(|(rule, _)| list.iter().any(|f| f["rule_id"] == *rule))
            .then_some(list)
    });
    for (rule, key) in want {
        assert!(
            firings.iter().any(
                |f| f["rule_id"] == rule && f["key"].as_str().is_some_and(|k| k.ends_with(key))
            ),
            "{rule} for {key}: {firings:?}"
        );
    }
}
