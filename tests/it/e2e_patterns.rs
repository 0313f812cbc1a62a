//! Log patterns in the collector: a real agent ships an application log,
//! every stored line carries the pattern it joined when it arrived
//! (`pattern:<id>` finds them), the patterns outlive a restart, and a
//! tenant purge leaves none of the tenant's patterns on disk. A new error
//! statement pages once through the default pack (a real webhook), with
//! its template, samples and `pattern:<id>`; the pattern list (API and
//! `nightowl patterns`), `rules backtest` and the metrics agree.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{stderr_of, wait_until, Collector, Settings, BIN};

pub fn app_log(users: &[&str], marker: &str) -> String {
    let mut s = String::new();
    for (i, user) in users.iter().enumerate() {
        s.push_str(&format!("Invalid user {user} from 10.0.0.{i} port 22\n"));
        s.push_str(&format!(
            "Connection closed by 10.1.0.{i} port {}\n",
            40000 + i
        ));
        if i % 3 == 0 {
            s.push_str(&format!(
                "payment {i} failed for order {} {marker}\n",
                900 + i
            ));
        }
    }
    s
}

/// Pattern id -> (lines, template), as `patterns mine --assign` names them.
pub fn mined(file: &Path) -> BTreeMap<String, (u64, String)> {
    let out = Command::new(BIN)
        .args(["patterns", "mine", "--assign"])
        .arg(file)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut ids = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (id, template) = line.split_once('\t').expect("ID<TAB>TEMPLATE");
        ids.entry(id.to_string())
            .or_insert_with(|| (0, template.to_string()))
            .0 += 1;
    }
    ids
}

fn ship(collector: &Collector, name: &str, token_file: &Path, file: &Path) {
    let mut agent = collector.agent_as(name, token_file, &[file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
}

#[test]
fn lines_carry_their_pattern_across_a_restart_and_a_purge_forgets_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    let users = ["ann", "bo", "cy", "di", "ed", "flo", "gus"];
    let file = root.path().join("app.log");
    std::fs::write(&file, app_log(&users, "defaultnote")).expect("write log");
    let expected = mined(&file);
    assert_eq!(expected.len(), 3, "three statements: {expected:?}");
    ship(&collector, "app", &collector.token_file, &file);
    let (users_id, _) = expected
        .iter()
        .find(|(_, (_, template))| template == "Invalid user <*> from <*> port <*>")
        .unwrap_or_else(|| panic!("the users' pattern: {expected:?}"));
    // A line is indexed with the pattern it joined when it arrived: the
    // users' slot opened at the sixth user, the five before were patterns
    // of their own then. The query for the pattern they merged into finds
    // them too.
    for (id, (n, _)) in &expected {
        collector.wait_for_count(&format!("pattern:{id}"), *n);
    }

    // The patterns are saved (on the rule snapshot's interval, and at a
    // clean shutdown) and restored: the eighth user joins the opened
    // pattern, which a fresh miner could not know (it would make `zed`'s
    // line a pattern of its own).
    assert!(
        collector.terminate().success(),
        "{}",
        collector.stderr_tail()
    );
    collector.restart();
    common::append(&file, "Invalid user zed from 10.9.9.9 port 22\n");
    ship(&collector, "app", &collector.token_file, &file);
    collector.wait_for_count(&format!("pattern:{users_id}"), users.len() as u64 + 1);
    assert_eq!(collector.count("zed"), 1);

    // A tenant's patterns go with the tenant.
    collector.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (_, acme_admin) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let marker = "acmesecretnote"; // no digit: kept in the template
    let acme_file = root.path().join("acme.log");
    std::fs::write(&acme_file, app_log(&users, marker)).expect("write log");
    ship(&collector, "acme", &acme_agent, &acme_file);
    let state = collector.data_dir.join("patterns").join("state.json");
    let holds = |needle: &str| {
        std::fs::read(&state).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    wait_until("acme's patterns saved", || holds(marker).then_some(()));
    let out = collector.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until("acme's patterns gone from disk", || {
        (!holds(marker)).then_some(())
    });
    assert!(holds("defaultnote"), "another tenant's patterns stay");
}

/// An RFC 5424 line of the checkout service at `at` (unix seconds), at
/// syslog severity `sev`.
fn app_line(at: i64, sev: u8, msg: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(at).expect("timestamp");
    let stamp = t
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    format!("<{}>1 {stamp} app1 checkout 42 - - {msg}\n", 8 + sev)
}

/// A day of the service's log, `from` on, a line every two minutes: the
/// statements it always logs, errors included.
fn app_history(from: i64, until: i64) -> String {
    let mut s = String::new();
    let mut r = common::Rng::new(5);
    let mut at = from;
    let mut i = 0u64;
    while at < until {
        let n = r.below(100_000);
        let line = match i % 6 {
            0 => app_line(
                at,
                3,
                &format!("payment {n} failed for order {}: card declined", n * 3),
            ),
            1 => app_line(
                at,
                4,
                &format!("slow query took {} ms on table orders", 1000 + n % 4000),
            ),
            2 => app_line(
                at,
                6,
                &format!(
                    "user u{} logged in from 203.0.113.{}",
                    n % 5000,
                    1 + n % 250
                ),
            ),
            _ => app_line(at, 6, &format!("request {n} served in {} ms", 2 + n % 900)),
        };
        s.push_str(&line);
        at += 120;
        i += 1;
    }
    s
}

/// The pages of `rule` so far: (key, alert) per alert in each request.
fn pages_of(hook: &common::WebhookRecorder, rule: &str) -> Vec<(String, serde_json::Value)> {
    hook.requests_to("/hook")
        .into_iter()
        .flat_map(|p| p.json["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["rule_id"] == rule && a["status"] == "firing")
        .map(|a| (a["key"].as_str().unwrap_or_default().to_string(), a))
        .collect()
}

#[test]
fn a_new_error_statement_pages_once_with_its_template_and_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    let hook = common::WebhookRecorder::start();
    let mut c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            ..Settings::default()
        },
    );
    c.kill();
    common::append(
        &c.config_path,
        &format!(
            "\n[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"...\"]\n\
             group_wait = \"1s\"\ngroup_interval = \"1s\"\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    c.restart();

    // A day and an hour of the service's ordinary log (the default pack's
    // rule learns for a day, in event time), then a statement it never
    // logged, three times.
    let now = common::now_unix();
    let mut log = app_history(now - 25 * 3600, now - 60);
    for v in 7..10 {
        log.push_str(&app_line(
            now - 20 + v,
            3,
            &format!("ledger write rejected: schema version {v} unknown"),
        ));
    }
    let file = root.path().join("checkout.log");
    std::fs::write(&file, &log).expect("write log");
    ship(&c, "app", &c.token_file, &file);

    let (key, alert) = wait_until("a page about the new error", || {
        pages_of(&hook, "app-new-error-pattern").into_iter().next()
    });
    assert_eq!(
        alert["labels"]["pattern_template"], "ledger write rejected: schema version <*> unknown",
        "{alert:#}"
    );
    let id = alert["labels"]["pattern"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(key, id, "one alert per pattern: {alert:#}");
    assert_eq!(alert["count"], 1, "{alert:#}");
    let samples = alert["sample_lines"].to_string();
    assert!(samples.contains("schema version 7 unknown"), "{alert:#}");
    let query = alert["evidence_query"].as_str().unwrap_or_default();
    assert!(query.contains(&format!("pattern:{id}")), "{alert:#}");
    // The page's pattern is the index's: its query finds the three lines.
    c.wait_for_count(&format!("pattern:{id}"), 3);
    c.wait_for_count(query, 3);

    // More of the same error, and then another new one: the second page
    // shows the lines were evaluated; the first error did not page again.
    let mut more = String::new();
    for v in 10..12 {
        more.push_str(&app_line(
            now - 5,
            3,
            &format!("ledger write rejected: schema version {v} unknown"),
        ));
    }
    more.push_str(&app_line(now - 4, 2, "refund worker stalled, queue frozen"));
    common::append(&file, &more);
    ship(&c, "app", &c.token_file, &file);
    wait_until("a page about the second new error", || {
        pages_of(&hook, "app-new-error-pattern")
            .into_iter()
            .find(|(_, a)| a["labels"]["pattern_template"] == "refund worker stalled, queue frozen")
    });
    let pages = pages_of(&hook, "app-new-error-pattern");
    assert_eq!(
        pages.iter().filter(|(k, _)| *k == id).count(),
        1,
        "the first new error paged once: {pages:#?}"
    );
    assert_eq!(pages.len(), 2, "{pages:#?}");
    // The steady statements never surged.
    assert!(pages_of(&hook, "app-warning-pattern-surge").is_empty());
    c.wait_for_count(&format!("pattern:{id}"), 5);

    // The pattern list: counts, a series each, the template, and the new
    // statement marked new in the range (no line in its first interval).
    let list = c.api_json("/api/v1/patterns?q=app:checkout&since=25h&limit=50");
    let patterns = list["patterns"].as_array().cloned().unwrap_or_default();
    let find = |id: &str| patterns.iter().find(|p| p["id"] == id).cloned();
    let ledger = find(&id).unwrap_or_else(|| panic!("{id} not listed: {list:#}"));
    assert_eq!(ledger["count"], 5, "{ledger:#}");
    assert_eq!(
        ledger["template"], "ledger write rejected: schema version <*> unknown",
        "{ledger:#}"
    );
    assert!(ledger["new_since"].is_string(), "{ledger:#}");
    let served = patterns
        .iter()
        .find(|p| p["template"] == "request <*> served in <*>")
        .unwrap_or_else(|| panic!("no request pattern: {list:#}"));
    assert!(served["new_since"].is_null(), "{served:#}");
    for p in &patterns {
        let sum: u64 = p["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_u64())
            .sum();
        assert_eq!(Some(sum), p["count"].as_u64(), "{p:#}");
    }
    // Most lines first: the four statements of the history, each a
    // sixth or more of 750 lines, before the new errors.
    assert!(patterns[0]["count"].as_u64() >= Some(100), "{list:#}");

    // `nightowl patterns` prints the same.
    let out = Command::new(BIN)
        .args(["patterns", "--since", "25h", "--server"])
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .arg("app:checkout")
        .output()
        .expect("nightowl patterns");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let row = text
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not printed: {text}"));
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!(cols[0], "5", "{row}");
    assert_eq!(cols[3], "new", "{row}");
    assert_eq!(
        cols[4], "ledger write rejected: schema version <*> unknown",
        "{row}"
    );

    // `rules backtest` replays the index through the pattern rules: the
    // same two new errors.
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["rules", "backtest", "--since", "26h", "--json", "--server"])
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file)
        .arg(repo.join("rules/patterns.yaml"))
        .output()
        .expect("rules backtest");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON report on stdout");
    let rule = report["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule_id"] == "app-new-error-pattern")
        .cloned()
        .unwrap_or_else(|| panic!("no new-pattern firings: {report:#}"));
    assert_eq!(rule["firings"], 2, "{rule:#}");
    let keys = rule["keys"].to_string();
    assert!(keys.contains(&id), "{rule:#}");

    // Another tenant sees none of these patterns.
    c.operator(&["tenant", "create", "globex"]);
    let (_, globex) = c.new_token("globex-viewer", &["--tenant", "globex", "--role", "viewer"]);
    let out = Command::new(BIN)
        .args(["patterns", "--json", "--since", "25h", "--server"])
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&globex)
        .output()
        .expect("nightowl patterns");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(theirs["patterns"], serde_json::json!([]), "{theirs:#}");

    // The bounds are watched: patterns held and dropped in /metrics (six
    // statements, none dropped under the default caps).
    wait_until("the patterns counted in /metrics", || {
        (c.metric("nightowl_patterns_live") == 6.0).then_some(())
    });
    assert_eq!(c.metric("nightowl_patterns_evicted_total"), 0.0);
    assert_eq!(c.metric("nightowl_pattern_streams_dropped_total"), 0.0);
}
