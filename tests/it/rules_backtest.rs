//! `nightowl rules backtest`: a rule file replayed over the indexed history
//! through the HTTPS API reports what it would have fired, per key, before
//! the rule is enabled; bad rule files are refused with file:line.

use crate::common;

use common::{stderr_of, stdout_of, Collector, Settings, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn backtest(collector: &Collector, rule_file: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["rules", "backtest", "--server"])
        .arg(collector.server())
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&collector.token_file)
        .arg(rule_file)
        .args(extra)
        .output()
        .expect("running rules backtest")
}

#[test]
fn a_rule_file_replayed_over_the_index_reports_its_firings_per_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // No live rules: the backtest alone must find the attack in history.
    let collector = Collector::start(root.path(), Settings::default());
    let log = root.path().join("access.log");
    std::fs::copy(repo.join("rules/fixtures/brute_force.log"), &log).expect("copy fixture");
    let lines = std::fs::read_to_string(&log).expect("read").lines().count() as u64;
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", lines);

    let rules = repo.join("rules/auth.yaml");
    let since = [
        "--since",
        "2024-10-01T00:00:00Z",
        "--until",
        "2024-11-01T00:00:00Z",
    ];
    let out = backtest(&collector, &rules, &[&since[..], &["--json"]].concat());
    assert!(out.status.success(), "backtest failed: {}", stderr_of(&out));
    let report: serde_json::Value =
        serde_json::from_str(stdout_of(&out).trim()).expect("one JSON report on stdout");
    assert_eq!(report["lines"].as_u64(), Some(lines), "{report}");
    let brute = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["rule_id"] == "web-login-brute-force")
        .unwrap_or_else(|| panic!("brute force not found in {report}"));
    assert!(brute["firings"].as_u64().unwrap_or(0) >= 1, "{brute}");
    let keys: Vec<&str> = brute["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(keys, ["203.0.113.9"], "{brute}");
    let firing = &report["sample_firings"][0];
    assert!(
        firing["first_ts"].as_i64().unwrap_or(0) >= 1_727_740_800_000_000_000,
        "firing times are the lines' event times: {firing}"
    );
    let buckets = report["buckets"].as_array().expect("buckets");
    let bucketed: u64 = buckets.iter().filter_map(|b| b["firings"].as_u64()).sum();
    assert_eq!(Some(bucketed), report["firings"].as_u64(), "{report}");

    // The same replay, for people: one section per rule that fired.
    let out = backtest(&collector, &rules, &since);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains(&format!("replayed {lines} lines")), "{text}");
    assert!(text.contains("web-login-brute-force"), "{text}");
    assert!(text.contains("203.0.113.9"), "{text}");

    // A range with no lines replays nothing and fires nothing.
    let out = backtest(&collector, &rules, &["--since", "2h", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let empty: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("json");
    assert_eq!(empty["lines"].as_u64(), Some(0), "{empty}");
    assert_eq!(empty["firings"].as_u64(), Some(0), "{empty}");
}

#[test]
fn a_broken_rule_file_is_refused_with_its_line_and_exit_2() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let bad = root.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: x\ntitle: t\nseverity: warning\nmatch: {field: status, equals: 401}\ndetect: {kind: threshold, window: 5m}\nbogus: 1\n",
    )
    .expect("write");
    let out = backtest(&collector, &bad, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = stderr_of(&out);
    assert!(stderr.contains("bad.yaml:"), "{stderr}");

    let missing = root.path().join("missing.yaml");
    let out = backtest(&collector, &missing, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("missing.yaml"),
        "{}",
        stderr_of(&out)
    );

    let bogus_token = root.path().join("bogus.token");
    std::fs::write(&bogus_token, "nwl_bogus_secret\n").expect("write");
    let out = Command::new(BIN)
        .args(["rules", "backtest", "--server"])
        .arg(collector.server())
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&bogus_token)
        .arg(root.path().join("bad.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("invalid token"),
        "{}",
        stderr_of(&out)
    );
}
