//! Outages page, live: the real collector running its embedded pack, the
//! real agent shipping access logs of three sites, a real webhook receiver.
//!
//! - shop.example: /checkout fails 40% of its requests for three minutes,
//!   the rest of the site is healthy (about 13% errors host-wide, under the
//!   20% of the ratio rules): the endpoint is paged within two minutes of
//!   event time;
//! - api.example: an ordinary 1% of errors for ten minutes: no alert;
//! - blog.example: every route fails half its requests: the host is paged.
//!
//! And two servers behind a balancer, logging nginx's default format (no
//! virtual host in the line), each shipped by an agent with its `--host`:
//! the outage of one server's endpoint is paged as that server's.

use crate::common;

use std::fs;

use common::*;

const ROUTES: [&str; 8] = [
    "/checkout",
    "/checkout",
    "/",
    "/products/{n}",
    "/orders/{n}?page=2",
    "/search?q=shoes",
    "/static/app.css",
    "/login",
];

/// xorshift: deterministic traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1e6 < p
    }
}

/// Two servers logging the `combined` format (no host in the line), each
/// shipped by its own agent with `--host`: rules keyed by host see the
/// agent's label, as search does, so web-a's failing /checkout pages as
/// web-a's and healthy web-b raises nothing.
#[test]
fn an_outage_of_one_server_behind_a_balancer_pages_as_that_servers() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            ..Settings::default()
        },
    );
    let start = now_unix() - 900;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (server, failing) in [("web-a", true), ("web-b", false)] {
        let lines = traffic(&mut rng, "", start, 600, 4, |route, t| {
            if failing && route == "/checkout" && (300..540).contains(&t) {
                0.4
            } else {
                0.005
            }
        });
        // `traffic` writes vhost_combined; without a host, the line starts
        // with the client.
        let text: String = lines.iter().map(|(_, l)| l.trim_start()).collect();
        let log = root.path().join(format!("{server}.log"));
        fs::write(&log, &text).expect("write log");
        let state = root.path().join(format!("{server}.state"));
        let mut cmd = c.agent_command_as(
            server,
            &[
                "--state-dir".as_ref(),
                state.as_os_str(),
                "--once".as_ref(),
                log.as_os_str(),
            ],
        );
        let out = cmd.output().expect("running the agent");
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    c.wait_for_count("*", 2 * 600 * 4);
    let keys = |rule: &str| -> Vec<String> {
        c.api_json("/api/v1/alerts?all=true")["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["rule_id"] == rule)
            .filter_map(|a| a["key"].as_str().map(str::to_string))
            .collect()
    };
    let paged = wait_until("web-a's /checkout outage", || {
        let k = keys("web-route-slo-burn");
        k.iter().any(|k| k == "web-a|/checkout").then_some(k)
    });
    assert!(paged.iter().all(|k| !k.starts_with("web-b")), "{paged:?}");
    assert!(keys("web-route-slo-burn-nohost").is_empty());
}

/// vhost_combined lines of `host`, `per_second` a second over `seconds`
/// from `start`; `error(route, t)` is the chance a request fails with a 503.
fn traffic(
    rng: &mut Rng,
    host: &str,
    start: i64,
    seconds: i64,
    per_second: i64,
    error: impl Fn(&str, i64) -> f64,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in 0..seconds {
        for _ in 0..per_second {
            let route = ROUTES[(rng.next() % ROUTES.len() as u64) as usize];
            let path = route.replace("{n}", &(rng.next() % 90_000 + 10).to_string());
            let status = if rng.chance(error(route, t)) {
                503
            } else {
                200
            };
            let ip = format!("198.51.100.{}", rng.next() % 250 + 1);
            out.push((
                start + t,
                format!(
                    "{host} {ip} - - [{}] \"GET {path} HTTP/1.1\" {status} 512 \"-\" \"Mozilla/5.0\"\n",
                    nginx_time(start + t, 0)
                ),
            ));
        }
    }
    out
}

#[test]
fn a_partial_outage_pages_within_two_minutes_and_background_errors_do_not() {
    let root = tempfile::tempdir().expect("tempdir");
    let hook = WebhookRecorder::start();
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            extra_toml: format!(
                // One page per alert: each outage pages on its own.
                "[alerting.route]\nreceiver = \"oncall\"\ngroup_by = [\"alertname\", \"key\"]\n\n\
                 [[alerting.receivers]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = {:?}\n",
                hook.url("/oncall")
            ),
            ..Settings::default()
        },
    );
    let start = now_unix() - 900;
    let outage = start + 360;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lines = traffic(&mut rng, "shop.example", start, 600, 6, |route, t| {
        if route == "/checkout" && (360..540).contains(&t) {
            0.4
        } else {
            0.005
        }
    });
    lines.extend(traffic(&mut rng, "api.example", start, 600, 6, |_, _| 0.01));
    lines.extend(traffic(&mut rng, "blog.example", start, 480, 6, |_, t| {
        if t >= 360 {
            0.5
        } else {
            0.005
        }
    }));
    lines.sort_by_key(|(t, _)| *t);
    let text: String = lines.iter().map(|(_, l)| l.as_str()).collect();
    let log = root.path().join("access.log");
    fs::write(&log, &text).expect("write log");
    let (status, stderr) = c.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    c.wait_for_count("*", lines.len() as u64);

    // The endpoint's page, and when its evidence says it fired.
    let alert_in = |rule: &str, key: &str| {
        hook.requests_to("/oncall").into_iter().find_map(|page| {
            page.json["alerts"]
                .as_array()?
                .iter()
                .find_map(|a| (a["rule_id"] == rule && a["key"] == key).then(|| a.clone()))
        })
    };
    let checkout = wait_until("the page about /checkout", || {
        alert_in("web-route-slo-burn", "shop.example|/checkout")
    });
    // The first firing's line (the page may already merge a repeat).
    let fired_at = c.api_json("/api/v1/firings?limit=1000")["firings"]
        .as_array()
        .expect("firings")
        .iter()
        .filter(|f| f["rule_id"] == "web-route-slo-burn" && f["key"] == "shop.example|/checkout")
        .filter_map(|f| f["last_ts"].as_i64())
        .min()
        .expect("the firing is listed")
        / 1_000_000_000;
    assert!(
        fired_at >= outage && fired_at - outage <= 120,
        "paged {}s after the outage started (event time)",
        fired_at - outage
    );
    assert_eq!(checkout["severity"], "critical");
    // The evidence is the endpoint's failures on that host, exactly.
    let evidence = checkout["evidence_query"].as_str().unwrap_or_default();
    assert!(evidence.contains("route:\"/checkout\""), "{checkout}");
    let endpoint_lines = lines
        .iter()
        .filter(|(_, l)| {
            l.starts_with("shop.example ") && l.contains(" \"GET /checkout HTTP/1.1\" 503 ")
        })
        .count() as u64;
    assert_eq!(c.count(evidence), endpoint_lines, "{evidence}");
    // The ratio rules did not see it: 13% host-wide.
    let alerts = c.api_json("/api/v1/alerts")["alerts"].clone();
    let all = alerts.as_array().expect("alerts");
    assert!(
        !all.iter()
            .any(|a| a["rule_id"] == "web-5xx-storm-host" && a["key"] == "shop.example"),
        "{alerts}"
    );

    // The whole-host outage pages the host.
    wait_until("the page about blog.example", || {
        alert_in("web-host-slo-burn", "blog.example")
    });

    // Everything is evaluated by now (the last lines are blog's and shop's
    // healthy tail): a 1% background raised nothing.
    let alerts = c.api_json("/api/v1/alerts")["alerts"].clone();
    let noisy: Vec<&serde_json::Value> = alerts
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| {
            a["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("api.example"))
        })
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
    let paged_keys: Vec<String> = hook
        .requests_to("/oncall")
        .iter()
        .flat_map(|p| p.json["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["key"].as_str().map(str::to_string))
        .collect();
    assert!(
        paged_keys.iter().all(|k| !k.starts_with("api.example")),
        "api.example was paged: {paged_keys:?}"
    );
}
