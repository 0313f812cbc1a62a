//! Detection rules run live on the ingest path: lines shipped by the agent
//! fire the default pack's rules, visible in `/api/v1/firings` and metrics.

use crate::common;

use common::{wait_until, Collector, Settings};
use std::path::PathBuf;

#[test]
fn a_brute_force_shipped_by_the_agent_fires_live() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(repo.join("rules")),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    std::fs::copy(repo.join("rules/fixtures/brute_force.log"), &log).expect("copy fixture");
    let lines = std::fs::read_to_string(&log).expect("read").lines().count() as u64;

    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", lines);

    let firing = wait_until("the brute-force firing", || {
        let body = collector.api_json("/api/v1/firings");
        body["firings"]
            .as_array()?
            .iter()
            .find(|f| f["rule_id"] == "web-login-brute-force")
            .cloned()
    });
    assert_eq!(firing["key"], "203.0.113.9");
    assert!(firing["count"].as_u64().unwrap_or(0) >= 20, "{firing}");
    assert_eq!(firing["tenant"], "default");
    assert!(collector.metric("nightowl_rule_firings_total") >= 1.0);

    // Firings are customer data: no valid token, no firings.
    let (status, _) = collector.api_get_with_token("nwl_bogus_token", "/api/v1/firings");
    assert_eq!(status, 401);
}

#[test]
fn a_broken_rules_dir_stops_the_collector_with_exit_2() {
    let root = tempfile::tempdir().expect("tempdir");
    let rules = root.path().join("rules");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("bad.yaml"), "id: x\nbogus: 1\n").expect("write");
    let config = root.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "agent_listen = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n[rules]\ndir = {:?}\n",
            rules.display().to_string()
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nightowl"))
        .args(["collector", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run collector");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:2"), "{stderr}");
}

#[test]
fn payload_attacks_shipped_by_the_agent_fire_the_detector_rules_live() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(repo.join("rules")),
            ..Settings::default()
        },
    );
    // One evasive payload per class, each from its own client, among
    // ordinary requests that look like them (apostrophes, ampersands,
    // a relative link, markup-free angle brackets) from another.
    let lines = [
        r#"203.0.113.21 - - [10/Oct/2024:12:00:00 +0000] "GET /item?id=1/*!50000UnIoN*/%252f**%252fSeLeCt%20user,2-- HTTP/1.1" 200 10 "-" "Mozilla/5.0""#,
        r#"203.0.113.22 - - [10/Oct/2024:12:00:01 +0000] "GET /s?q=%3Cimg%20src%3Dx%20o%00nerror%3D%26%23x61%3Blert(1)%3E HTTP/1.1" 200 10 "-" "Mozilla/5.0""#,
        r#"203.0.113.23 - - [10/Oct/2024:12:00:02 +0000] "GET /ping?host=127.0.0.1%0Acat${IFS}/etc/passwd HTTP/1.1" 200 10 "-" "Mozilla/5.0""#,
        r#"203.0.113.24 - - [10/Oct/2024:12:00:03 +0000] "GET /dl?f=%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afshadow HTTP/1.1" 404 10 "-" "Mozilla/5.0""#,
        r#"192.0.2.50 - - [10/Oct/2024:12:00:04 +0000] "GET /users?name=O%27Brien&q=cats+%26+dogs HTTP/1.1" 200 10 "-" "Mozilla/5.0""#,
        r#"192.0.2.50 - - [10/Oct/2024:12:00:05 +0000] "GET /login?next=../account&q=%3C3+you+%26+me HTTP/1.1" 302 0 "-" "Mozilla/5.0""#,
        r#"192.0.2.50 - - [10/Oct/2024:12:00:06 +0000] "GET /search?q=select+a+union+representative HTTP/1.1" 200 10 "-" "Mozilla/5.0""#,
    ];
    let log = root.path().join("access.log");
    std::fs::write(&log, lines.join("\n") + "\n").expect("write log");
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", lines.len() as u64);

    let expected = [
        ("web-sqli-probe", "203.0.113.21"),
        ("web-xss-probe", "203.0.113.22"),
        ("web-command-injection", "203.0.113.23"),
        ("web-path-traversal", "203.0.113.24"),
    ];
    let firings = wait_until("the four payload firings", || {
        let body = collector.api_json("/api/v1/firings");
        let all = body["firings"].as_array()?.clone();
        expected
            .iter()
            .all(|(rule, key)| {
                all.iter()
                    .any(|f| f["rule_id"] == *rule && f["key"] == *key)
            })
            .then_some(all)
    });
    for f in &firings {
        assert_ne!(f["key"], "192.0.2.50", "ordinary requests fired {f}");
    }
}
