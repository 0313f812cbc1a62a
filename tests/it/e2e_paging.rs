//! Paging end to end: the real `nightowl collector` with a rules dir, the
//! real agent shipping access-log lines, and a real HTTP server in the test
//! receiving the `webhook` receiver's pages.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What the paging tests ask of the shared [`WebhookRecorder`]: pages by
/// receiver endpoint (`/hook`, `/l0`, ...) and by rule.
trait Pages {
    fn pages(&self, path: &str) -> Vec<Request>;
    fn pages_about(&self, path: &str, alertname: &str) -> Vec<Request>;
    fn wait_pages(&self, path: &str, alertname: &str, n: usize) -> Vec<Request>;
}

impl Pages for WebhookRecorder {
    fn pages(&self, path: &str) -> Vec<Request> {
        self.requests_to(path)
    }

    /// Pages to `path` about rule `alertname`.
    fn pages_about(&self, path: &str, alertname: &str) -> Vec<Request> {
        self.pages(path)
            .into_iter()
            .filter(|p| p.json["group_labels"]["alertname"] == alertname)
            .collect()
    }

    fn wait_pages(&self, path: &str, alertname: &str, n: usize) -> Vec<Request> {
        wait_until(&format!("{n} page(s) to /{path} about {alertname}"), || {
            let got = self.pages_about(path, alertname);
            assert!(
                got.len() <= n,
                "more than {n} pages about {alertname}: {got:#?}"
            );
            (got.len() == n).then_some(got)
        })
    }
}

/// A recorder for the paging receivers; `/gone` is a receiver endpoint that
/// was removed (a permanent failure).
fn hook_on(port: u16) -> WebhookRecorder {
    let hook = WebhookRecorder::start_on(port);
    hook.respond("/gone", 410);
    hook
}

/// `match` rules firing on every line (1 s window, lines 2 s apart in event time).
fn write_rules(dir: &Path) {
    fs::create_dir_all(dir).expect("rules dir");
    let rule = |id: &str, severity: &str, path: &str| {
        format!(
            "id: {id}\ntitle: {id} hit\nseverity: {severity}\nlabels: {{team: e2e}}\n\
             match: {{field: path, startswith: {path}}}\n\
             detect: {{kind: match, key: client_ip, window: 1s}}\n"
        )
    };
    let text = [
        rule("page-crit", "critical", "/crit1"),
        rule("page-crit2", "critical", "/crit2"),
        rule("page-crit3", "critical", "/crit3"),
        rule("page-warn", "warning", "/warn"),
        rule("page-silenced", "critical", "/silenced"),
    ]
    .join("---\n");
    fs::write(dir.join("paging.yaml"), text).expect("writing rules");
}

/// A collector with `alerting` appended to its config (written by
/// `Collector::start`, which knows the ports): start, stop, add, start.
fn collector_with(root: &Path, alerting: &str) -> Collector {
    let rules = root.join("rules");
    write_rules(&rules);
    let mut c = Collector::start(
        root,
        Settings {
            rules_dir: Some(rules),
            ..Settings::default()
        },
    );
    // Stopped hard: the data dir is crash-safe, and the test does not
    // depend on graceful shutdown.
    c.kill();
    append(&c.config_path, &format!("\n{alerting}\n"));
    c.restart();
    c
}

/// Combined-format lines `GET {path}` from `ips`, `per_ip` each, 2 s apart
/// in event time (ending a few minutes ago, so every one is live).
fn lines(path: &str, ips: &[String], per_ip: u64) -> String {
    let start = now_unix() - 1200;
    let mut text = String::new();
    for i in 0..per_ip {
        for ip in ips {
            text.push_str(&format!(
                "{ip} - - [{}] \"GET {path} HTTP/1.1\" 404 12 \"-\" \"e2e\"\n",
                nginx_time(start + 2 * i as i64, 0)
            ));
        }
    }
    text
}

fn ship(c: &Collector, name: &str, text: &str) {
    let file = c.root.join(format!("{name}.log"));
    fs::write(&file, text).expect("writing log");
    let (status, stderr) = c.run_agent_once(name, &c.root.join(format!("{name}-state")), &[&file]);
    assert!(status.success(), "agent failed: {stderr}");
}

fn alerts_cli(c: &Collector, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("alerts");
    // Subcommand words first, then the API flags (each leaf takes them).
    let (words, rest): (Vec<&str>, Vec<&str>) = {
        let n = args
            .iter()
            .position(|a| a.starts_with("--"))
            .unwrap_or(args.len());
        (args[..n].to_vec(), args[n..].to_vec())
    };
    let (words, positional) = match words.first() {
        Some(&"silence") => (
            words[..2.min(words.len())].to_vec(),
            words[2.min(words.len())..].to_vec(),
        ),
        _ => (
            words[..1.min(words.len())].to_vec(),
            words[1.min(words.len())..].to_vec(),
        ),
    };
    cmd.args(&words)
        .arg("--server")
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .args(&rest)
        .args(&positional);
    cmd.output().expect("running nightowl alerts")
}

/// `nightowl token create`: a token file of `role` (in `tenant`).
fn new_token(c: &Collector, role: &str, tenant: Option<&str>) -> std::path::PathBuf {
    if let Some(t) = tenant {
        let out = Command::new(BIN)
            .args(["tenant", "create", "--server"])
            .arg(c.server())
            .arg("--ca")
            .arg(&c.ca)
            .arg("--token-file")
            .arg(&c.token_file)
            .arg(t)
            .output()
            .expect("tenant create");
        assert!(out.status.success(), "tenant create: {}", stderr_of(&out));
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "create", "--server"])
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .args(["--role", role]);
    if let Some(t) = tenant {
        cmd.args(["--tenant", t]);
    }
    let out = cmd.output().expect("token create");
    assert!(out.status.success(), "token create: {}", stderr_of(&out));
    let path = c
        .root
        .join(format!("{role}-{}.token", tenant.unwrap_or("default")));
    fs::write(&path, stdout_of(&out).trim()).expect("token file");
    path
}

/// `nightowl alerts ARGS` with another token file.
fn alerts_cli_as(c: &Collector, token_file: &Path, args: &[&str]) -> std::process::Output {
    let n = if args.first() == Some(&"silence") {
        2
    } else {
        1
    };
    Command::new(BIN)
        .arg("alerts")
        .args(&args[..n])
        .arg("--server")
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(token_file)
        .args(&args[n..])
        .output()
        .expect("running nightowl alerts")
}

fn alert_list(c: &Collector) -> Vec<Value> {
    c.api_json("/api/v1/alerts")["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alert_state(c: &Collector, rule: &str, key: &str) -> Option<String> {
    alert_list(c)
        .into_iter()
        .find(|a| a["rule_id"] == rule && a["key"] == key)
        .and_then(|a| a["state"].as_str().map(str::to_string))
}

fn ips(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}.{i}")).collect()
}

#[test]
fn grouping_inhibition_and_silences() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hook = hook_on(port);
    let c = collector_with(
        root.path(),
        &format!(
            r#"[alerting]
[alerting.route]
receiver = "hook"
group_interval = "1s"
[[alerting.route.routes]]
matchers = ["severity=warning"]
group_wait = "3s"
[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
"#
        ),
    );

    // 500 firings of one rule for one key: one alert, one page.
    ship(&c, "crit", &lines("/crit1", &["10.0.0.1".into()], 500));
    let crit = wait_until("the alert merged (nearly) every firing", || {
        let a = alert_list(&c)
            .into_iter()
            .find(|a| a["rule_id"] == "page-crit")?;
        (a["firings"].as_u64()? >= 400).then_some(a)
    });
    let pages = hook.wait_pages("hook", "page-crit", 1);
    assert_eq!(pages[0].json["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(pages[0].json["status"], "firing");
    assert_eq!(
        pages[0].header("idempotency-key").unwrap_or(""),
        pages[0].json["id"].as_str().unwrap_or("?")
    );
    assert_eq!(crit["state"], "firing");
    // Read again: the page went out after the tick marked the alert
    // notified, which may come after the firings merged.
    let crit = alert_list(&c)
        .into_iter()
        .find(|a| a["rule_id"] == "page-crit")
        .expect("the alert is listed");
    assert_eq!(crit["receivers_notified"], serde_json::json!(["hook"]));

    // 50 keys of one rule: after group_wait, one page listing all 50.
    ship(&c, "warn", &lines("/warn", &ips("10.1.0", 50), 1));
    let pages = hook.wait_pages("hook", "page-warn", 1);
    let keys: Vec<&str> = pages[0].json["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 50, "{keys:?}");

    // Inhibition: a warning about the key the critical alert is about.
    ship(&c, "inhibited", &lines("/warn", &["10.0.0.1".into()], 1));
    wait_until("the warning about 10.0.0.1 is inhibited", || {
        (alert_state(&c, "page-warn", "10.0.0.1")? == "inhibited").then_some(())
    });

    // Silence: created through the CLI, suppresses, expiry un-suppresses.
    let out = alerts_cli(
        &c,
        &[
            "silence",
            "add",
            "--matcher",
            "alertname=page-silenced",
            "--duration",
            "2h",
            "--comment",
            "e2e maintenance",
            "--author",
            "tester",
        ],
    );
    assert!(out.status.success(), "silence add: {}", stderr_of(&out));
    let silence_id = stdout_of(&out).trim().to_string();
    assert!(silence_id.starts_with('s'), "{silence_id:?}");
    let listed = alerts_cli(&c, &["silence", "list", "--json"]);
    assert!(
        stdout_of(&listed).contains(&silence_id),
        "{}",
        stdout_of(&listed)
    );
    ship(&c, "silenced", &lines("/silenced", &["10.2.0.1".into()], 1));
    wait_until("the alert is silenced", || {
        (alert_state(&c, "page-silenced", "10.2.0.1")? == "silenced").then_some(())
    });
    // The inhibited and the silenced alerts waited past group_wait and
    // group_interval: neither paged. (Checked after the silence check, so
    // both had their chance.)
    std::thread::sleep(Duration::from_secs(4));
    assert!(hook.pages_about("hook", "page-silenced").is_empty());
    let warn_pages = hook.pages_about("hook", "page-warn");
    assert_eq!(warn_pages.len(), 1, "the inhibited warning did not page");

    let out = alerts_cli(&c, &["silence", "expire", &silence_id]);
    assert!(out.status.success(), "silence expire: {}", stderr_of(&out));
    let pages = hook.wait_pages("hook", "page-silenced", 1);
    assert_eq!(pages[0].json["alerts"][0]["key"], "10.2.0.1");

    // The text listing shows states, and the metrics count the pages.
    let out = alerts_cli(&c, &["list"]);
    let text = stdout_of(&out);
    assert!(
        out.status.success() && text.contains("inhibited") && text.contains("page-crit"),
        "{text}"
    );
    assert!(c.metric("nightowl_notifications_sent_total") >= 3.0);
    assert_eq!(c.metric("nightowl_alert_firings_dropped_total"), 0.0);
}

#[test]
fn escalation_until_acknowledged() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hook = hook_on(port);
    let receiver = |name: &str| {
        format!("[[alerting.receivers]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/{name}\"\n")
    };
    let c = collector_with(
        root.path(),
        &format!(
            r#"[alerting]
[alerting.route]
receiver = "l0"
escalation = "oncall"
[[alerting.escalation_policies]]
name = "oncall"
levels = [{{ after = "2s", receivers = ["l1"] }}, {{ after = "12s", receivers = ["l2"] }}]
{}{}{}"#,
            receiver("l0"),
            receiver("l1"),
            receiver("l2")
        ),
    );
    ship(&c, "crit", &lines("/crit1", &["10.0.0.1".into()], 1));
    ship(&c, "crit2", &lines("/crit2", &["10.0.0.2".into()], 1));
    ship(&c, "crit3", &lines("/crit3", &["10.0.0.3".into()], 1));
    for rule in ["page-crit", "page-crit2", "page-crit3"] {
        hook.wait_pages("l0", rule, 1);
        // Nobody acked: level 1 is paged after its delay.
        let l1 = hook.wait_pages("l1", rule, 1);
        assert_eq!(l1[0].json["escalation_level"], 1);
    }
    // Ack page-crit through the CLI (by fingerprint prefix) ...
    let fp = alert_list(&c)
        .into_iter()
        .find(|a| a["rule_id"] == "page-crit")
        .and_then(|a| a["fingerprint"].as_str().map(str::to_string))
        .expect("page-crit listed");
    // The RULE column pasted instead of the ID: told which id to ack.
    let out = alerts_cli(&c, &["ack", "page-crit"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("is a rule, not an alert") && stderr_of(&out).contains(&fp[..16]),
        "{}",
        stderr_of(&out)
    );
    let out = alerts_cli(&c, &["ack", &fp[..12]]);
    assert!(out.status.success(), "ack: {}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&fp));
    // ... and page-crit2 through the signed link in its page, no token.
    let link = hook.pages_about("l0", "page-crit2")[0].json["ack_url"]
        .as_str()
        .expect("ack_url in the page")
        .to_string();
    let path = link
        .strip_prefix(&c.server())
        .unwrap_or_else(|| panic!("{link} is not under {}", c.server()));
    // GET (what a mail scanner does) only shows the confirmation form ...
    let (status, body) = c.api_get_with_token("not-a-token", path);
    let page = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<form method=\"post\""), "{page}");
    // It says what is acknowledged in the page's words, not the group's
    // internal key.
    assert!(
        page.contains("Acknowledge alertname=page-crit2?")
            && page.contains("page-crit2 hit")
            && page.contains("<code>10.0.0.2</code>"),
        "{page}"
    );
    assert!(!page.contains("tenant=default"), "{page}");
    assert_eq!(
        alert_state(&c, "page-crit2", "10.0.0.2").as_deref(),
        Some("firing")
    );
    // ... its POST acknowledges.
    let (status, body) = block_on(async {
        nightowl::cli::http::ApiClient::new(&c.server(), &c.ca, "not-a-token".into())
            .expect("client")
            .post_bytes(path, axum::body::Bytes::new())
            .await
            .expect("POST the ack link")
    });
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
    // Audited as the link's tenant, without the link (a credential).
    let token = path.trim_start_matches("/ack/");
    let entries = c.audit_entries();
    assert!(
        entries.iter().all(|e| !e.to_string().contains(token)),
        "the signed link is in the audit log"
    );
    let acked = entries
        .iter()
        .find(|e| e["method"] == "POST" && e["path"] == "/ack/[signed link]")
        .unwrap_or_else(|| panic!("the ack is audited: {entries:#?}"));
    assert_eq!(
        (&acked["actor"], &acked["tenant"]),
        (&"ack-link".into(), &"default".into())
    );
    let mut forged = path.to_string();
    forged.pop();
    forged.push(if path.ends_with('0') { '1' } else { '0' });
    assert_eq!(c.api_get_with_token("x", &forged).0, 403);
    assert_eq!(
        alert_state(&c, "page-crit", "10.0.0.1").as_deref(),
        Some("acked"),
        "{:#?}",
        alert_list(&c)
    );
    assert_eq!(
        alert_state(&c, "page-crit2", "10.0.0.2").as_deref(),
        Some("acked")
    );

    // Roles and tenants: a viewer lists but may not ack; another tenant's
    // token sees none of these alerts.
    let viewer = new_token(&c, "viewer", None);
    let listed = alerts_cli_as(&c, &viewer, &["list", "--json"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    assert_eq!(
        stdout_of(&listed).lines().count(),
        3,
        "{}",
        stdout_of(&listed)
    );
    let refused = alerts_cli_as(&c, &viewer, &["ack", &fp[..12]]);
    assert!(!refused.status.success());
    assert!(
        stderr_of(&refused).contains("403"),
        "{}",
        stderr_of(&refused)
    );
    let other = new_token(&c, "admin", Some("acme"));
    let listed = alerts_cli_as(&c, &other, &["list", "--json"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    assert_eq!(stdout_of(&listed).trim(), "", "tenant-scoped");
    let refused = alerts_cli_as(&c, &other, &["ack", &fp]);
    assert_eq!(refused.status.code(), Some(2), "not found in tenant acme");

    // The unacknowledged one reaches level 2; the acked ones never do.
    hook.wait_pages("l2", "page-crit3", 1);
    std::thread::sleep(Duration::from_secs(1));
    assert!(hook.pages_about("l2", "page-crit").is_empty());
    assert!(hook.pages_about("l2", "page-crit2").is_empty());
}

#[test]
fn receiver_down_across_a_restart_pages_exactly_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut c = collector_with(
        root.path(),
        &format!(
            r#"[alerting]
resolve_timeout = "4s"
[alerting.route]
receiver = "hook"
group_interval = "1s"
[alerting.outbox]
initial_backoff = "200ms"
max_backoff = "1s"
[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
"#
        ),
    );
    ship(&c, "crit", &lines("/crit1", &["10.0.0.1".into()], 1));
    // Nobody listens on the port: the page waits in the outbox, retried.
    let id = wait_until("a failed attempt recorded in the outbox", || {
        let n = c.api_json("/api/v1/outbox")["notifications"]
            .as_array()?
            .first()?
            .clone();
        (n["attempts"].as_u64()? >= 2 && n["state"] == "pending")
            .then(|| n["notification"]["id"].as_str().map(str::to_string))?
    });
    assert!(c.metric("nightowl_notifications_failed_total") >= 2.0);
    assert_eq!(c.metric("nightowl_outbox_depth"), 1.0);

    // Crash, the receiver comes back, the collector restarts.
    c.kill();
    let hook = hook_on(port);
    c.restart();
    let pages = hook.wait_pages("hook", "page-crit", 1);
    assert_eq!(
        pages[0].header("idempotency-key").unwrap_or(""),
        id,
        "the same notification, resumed"
    );
    wait_until("the outbox drained", || {
        c.api_json("/api/v1/outbox")["notifications"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
    // Exactly once: no other firing page (the restored state knows it was
    // sent); the next page is the resolution, after resolve_timeout.
    let resolved = wait_until("the resolved page", || {
        let pages = hook.pages("hook");
        pages
            .iter()
            .any(|p| p.json["status"] == "resolved")
            .then_some(pages)
    });
    let firing: Vec<&Request> = resolved
        .iter()
        .filter(|p| p.json["status"] == "firing")
        .collect();
    assert_eq!(firing.len(), 1, "{resolved:#?}");
    assert_eq!(resolved.len(), 2, "{resolved:#?}");
    assert_eq!(resolved[1].json["alerts"][0]["status"], "resolved");
}

/// A collector paging `primary` (a path of `hook`, on `port`) with a
/// `backup` receiver beside it and `outbox` settings; ships one critical
/// line and returns the collector and the alerts of the first page the
/// backup got (the failover page).
fn first_failover_page(
    root: &Path,
    port: u16,
    hook: &WebhookRecorder,
    primary: &str,
    outbox: &str,
) -> (Collector, Vec<Value>) {
    let c = collector_with(
        root,
        &format!(
            r#"[alerting]
[alerting.route]
receiver = "primary"
{outbox}
[[alerting.receivers]]
name = "primary"
kind = "webhook"
url = "http://127.0.0.1:{port}/{primary}"
[[alerting.receivers]]
name = "backup"
kind = "webhook"
url = "http://127.0.0.1:{port}/backup"
"#
        ),
    );
    ship(&c, "crit", &lines("/crit1", &["10.0.0.1".into()], 1));
    let failover = wait_until("the failover page", || {
        hook.pages("backup").first().cloned()
    });
    let alerts = failover.json["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(alerts[0]["rule_id"], "nightowl_delivery_failed");
    assert_eq!(alerts[0]["labels"]["receiver"], "primary");
    assert_eq!(
        alerts[1]["rule_id"], "page-crit",
        "the undelivered alert rides along"
    );
    (c, alerts)
}

#[test]
fn dead_letter_pages_the_other_receivers() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hook = hook_on(port);
    let (c, _) = first_failover_page(root.path(), port, &hook, "gone", "");
    assert_eq!(hook.pages("gone").len(), 1, "permanent: not retried");
    assert_eq!(c.metric("nightowl_notifications_dead_lettered_total"), 1.0);
    let outbox = c.api_json("/api/v1/outbox");
    let states: Vec<&str> = outbox["notifications"]
        .as_array()
        .map(|v| v.iter().filter_map(|n| n["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states, vec!["dead"], "{outbox:#}");
}

/// A receiver that answers 503 for longer than `failover_after`: the other
/// receivers hear of the page in time, and it still reaches its own
/// receiver, once, when that one is back.
#[test]
fn a_page_failing_for_minutes_reaches_the_other_receivers_while_retried() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hook = hook_on(port);
    hook.respond("/pager", 503);
    let (c, alerts) = first_failover_page(
        root.path(),
        port,
        &hook,
        "pager",
        "[alerting.outbox]\ninitial_backoff = \"200ms\"\nmax_backoff = \"500ms\"\nfailover_after = \"2s\"",
    );
    assert!(
        alerts[0]["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("still undelivered (retrying)")),
        "{alerts:#?}"
    );
    let tried = hook.pages("pager");
    assert!(tried.len() >= 2, "retried before failing over: {tried:#?}");
    hook.respond("/pager", 200);
    let before = tried.len();
    wait_until("the page delivered to its own receiver", || {
        (hook.pages("pager").len() > before).then_some(())
    });
    wait_until("the outbox drained", || {
        c.api_json("/api/v1/outbox")["notifications"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
    assert_eq!(hook.pages("backup").len(), 1, "one failover page");
    assert_eq!(c.metric("nightowl_notifications_dead_lettered_total"), 0.0);
}

#[test]
fn unknown_receiver_in_a_route_exits_2_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("bad.toml");
    fs::write(
        &config,
        "[alerting.route]\nreceiver = \"oncall\"\n[[alerting.route.routes]]\nmatchers = [\"severity=critical\"]\nreceiver = \"pagr\"\n\
         [[alerting.receivers]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .arg("collector")
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("running the collector");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("alerting.route.routes[0]") && err.contains("\"pagr\""),
        "{err}"
    );
    assert!(err.contains("known: oncall"), "{err}");
}

/// Firing → webhook receipt latency, critical (group_wait 0), a tailing
/// agent, lines appended one at a time. `cargo test --release --test
/// e2e_paging -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_line_to_page_latency() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hook = hook_on(port);
    let c = collector_with(
        root.path(),
        &format!(
            "[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"...\"]\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
        ),
    );
    let file = root.path().join("live.log");
    fs::write(&file, "").expect("log");
    let state = root.path().join("bench-agent");
    let _agent = c.spawn_agent("bench-agent", &state, &[&file]);
    let mut next_ip = 0u32;
    let mut measure = |n: u32| -> Vec<Duration> {
        let mut latencies = Vec::new();
        for _ in 0..n {
            next_ip += 1;
            let ip = format!(
                "10.{}.{}.{}",
                100 + next_ip / 65_536,
                (next_ip / 256) % 256,
                next_ip % 256
            );
            let line = format!(
                "{ip} - - [{}] \"GET /crit1 HTTP/1.1\" 404 12 \"-\" \"bench\"\n",
                nginx_time(now_unix(), 0)
            );
            let appended = Instant::now();
            append(&file, &line);
            let page = wait_until("the page", || {
                hook.pages("hook")
                    .into_iter()
                    .find(|p| p.json["alerts"][0]["key"] == ip.as_str())
            });
            latencies.push(page.at.duration_since(appended));
        }
        latencies.sort();
        latencies
    };
    let report = |what: &str, l: &[Duration]| {
        let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        println!(
            "{what}: line append → webhook receipt over {} pages: p50 {:?} p99 {:?} max {:?}",
            l.len(),
            q(0.5),
            q(0.99),
            l[l.len() - 1]
        );
    };
    let idle = measure(200);
    report("idle", &idle);
    // Background load: the load generator ships access lines over its own
    // connection while pages are measured.
    let mut load_cmd = Command::new(BIN);
    load_cmd
        .arg("bench")
        .arg("--collector")
        .arg(&c.agent_addr)
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .arg("--lines")
        .arg("20000000")
        .arg("--connections")
        .arg("1")
        // One small batch in flight: steady load that leaves headroom,
        // not a backlog that only measures queueing.
        .arg("--window")
        .arg("1")
        .arg("--batch-lines")
        .arg("200");
    let mut load = ChildGuard::spawn("bench-load", load_cmd, &root.path().join("load.stderr"));
    wait_until("background load flowing", || {
        (c.metric("nightowl_lines_received_total") > 100_000.0).then_some(())
    });
    let before = c.metric("nightowl_lines_received_total");
    let started = Instant::now();
    let loaded = measure(50);
    let rate =
        (c.metric("nightowl_lines_received_total") - before) / started.elapsed().as_secs_f64();
    report(&format!("under load ({rate:.0} lines/s ingested)"), &loaded);
    load.kill();
    println!(
        "firing → delivered (collector histogram): p50 {}s p99 {}s",
        c.metric("nightowl_alert_delivery_seconds{quantile=\"0.5\"}"),
        c.metric("nightowl_alert_delivery_seconds{quantile=\"0.99\"}")
    );
}
