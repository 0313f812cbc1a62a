//! The `nightowl rules` subcommands as users run them: exit codes and output.

use std::process::Command;

fn nightowl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nightowl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nightowl")
}

#[test]
fn default_pack_checks_and_its_fixtures_pass() {
    let check = nightowl(&["rules", "check", "rules"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("rules,"));
    let test = nightowl(&["rules", "test", "rules"]);
    assert_eq!(test.status.code(), Some(0), "{test:?}");
    assert!(String::from_utf8_lossy(&test.stdout).contains(" 0 failed"));
}

#[test]
fn a_bad_rule_file_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "id: x\ntitle: t\nbogus_key: 1\n").expect("write");
    let out = nightowl(&["rules", "check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:3"), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
}

#[test]
fn rules_run_prints_ndjson_firings_for_a_brute_force_log() {
    let out = nightowl(&[
        "rules",
        "run",
        "rules",
        "--file",
        "rules/fixtures/brute_force.log",
        "--format",
        "combined",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let firings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(
        firings
            .iter()
            .any(|f| f["rule_id"] == "web-login-brute-force" && f["key"] == "203.0.113.9"),
        "{stdout}"
    );
    let bad_format = nightowl(&["rules", "run", "rules", "--file", "x", "--format", "nope"]);
    assert_eq!(bad_format.status.code(), Some(2));
}
