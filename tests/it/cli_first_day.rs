//! The CLI's first hour (issue 18): the mistakes and pipes a new user meets
//! get a clear answer and the right exit code, never a panic or a silent
//! success. Real collector, real agent, the binary under test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common;

use common::{stderr_of, stdout_of, Collector, Settings, BIN};

fn access_log(lines: usize) -> String {
    (0..lines)
        .map(|i| {
            let (path, agent) = if i % 2 == 0 {
                (format!("/api/v1/items?id={i}"), "curl/8.4.0")
            } else {
                (format!("/items/v1/api/{i}"), "Mozilla/5.0 (8.4.0) curl")
            };
            format!(
                "10.1.0.{} - - [24/Nov/2026:10:00:{:02} +0000] \"GET {path} HTTP/1.1\" 200 {i} \"-\" \"{agent}\"\n",
                i % 250,
                i % 60
            )
        })
        .collect()
}

/// The agent as a new user runs it: CA and token from the environment,
/// like every other command.
fn agent(collector: &Collector, addr: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("agent")
        .arg("--collector")
        .arg(addr)
        .args(args)
        .env("NIGHTOWL_CA", &collector.ca)
        .env("NIGHTOWL_TOKEN_FILE", &collector.token_file)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn first_day_mistakes_get_clear_answers() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let log = root.path().join("access.log");
    std::fs::write(&log, access_log(120)).expect("write log");
    let state = root.path().join("state");
    let state_arg = state.to_str().expect("utf-8 path");
    let log_arg = log.to_str().expect("utf-8 path");

    // --once prints what it shipped; CA and token came from the environment.
    let out = agent(
        &collector,
        &collector.agent_addr,
        &["--state-dir", state_arg, "--once", log_arg],
    )
    .output()
    .expect("agent");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let summary = stdout_of(&out);
    assert!(
        summary.contains("shipped 120 lines")
            && summary.contains("from 1 files")
            && summary.contains(&collector.agent_addr),
        "{summary}"
    );
    collector.wait_for_count("*", 120);

    // Multi-word field values: the words, in order, in that field.
    assert_eq!(collector.count("path:/api/v1/items"), 60);
    assert_eq!(collector.count("user_agent:curl/8.4.0"), 60);
    assert_eq!(collector.count("NOT path:/api/v1/items"), 60);

    // A full page says there is more.
    let out = collector.search(&["--limit", "10", "path:/api/v1/items"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).lines().count(), 10);
    assert!(
        stderr_of(&out).contains("showing the newest 10 of 60 matching lines"),
        "{}",
        stderr_of(&out)
    );
    let out = collector.search(&["--limit", "100", "path:/api/v1/items"]);
    assert!(stderr_of(&out).is_empty(), "{}", stderr_of(&out));

    // Durations without a unit are refused, not read as seconds.
    let out = collector.search(&["--since", "15", "--count", "*"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr_of(&out).contains("15m"), "{}", stderr_of(&out));
    let out = collector.cli_as(
        &collector.token_file,
        &[
            "alerts",
            "silence",
            "add",
            "--matcher",
            "rule=x",
            "--duration",
            "2",
            "--comment",
            "c",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("needs a unit"),
        "{}",
        stderr_of(&out)
    );

    // A silence has a real author even without $USER.
    let out = Command::new(BIN)
        .args(["alerts", "silence", "add", "--matcher", "rule=x"])
        .args(["--duration", "1h", "--comment", "first day"])
        .args(["--server", &collector.server()])
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&collector.token_file)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("silence add");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let silences = collector.operator(&["alerts", "silence", "list", "--json"]);
    assert!(
        !silences.contains("\"author\":\"unknown\"") && silences.contains("\"author\":\""),
        "{silences}"
    );

    // --once of a file that is not there fails, naming it.
    let missing = root.path().join("missing.log");
    let out = agent(
        &collector,
        &collector.agent_addr,
        &[
            "--state-dir",
            state_arg,
            "--once",
            missing.to_str().expect("utf-8"),
        ],
    )
    .output()
    .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("no file matches") && stderr_of(&out).contains("missing.log"),
        "{}",
        stderr_of(&out)
    );

    // The agent pointed at the API port: it says so, and --once gives up.
    let out = agent(
        &collector,
        &collector.api_addr,
        &[
            "--state-dir",
            root.path().join("state2").to_str().expect("utf-8"),
            "--once",
            "--give-up-after",
            "1s",
            log_arg,
        ],
    )
    .output()
    .expect("agent");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr_of(&out);
    assert!(
        err.contains("answered in HTTP") && err.contains("gave up after 1 s"),
        "{err}"
    );

    // A command pointed at the agent port: it says so.
    let out = Command::new(BIN)
        .args(["search", "--count", "*"])
        .args(["--server", &format!("https://{}", collector.agent_addr)])
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&collector.token_file)
        .output()
        .expect("search");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_of(&out).contains("is it the agent port"),
        "{}",
        stderr_of(&out)
    );

    // A fresh collector's status does not report a failed reload.
    let status: serde_json::Value =
        serde_json::from_str(&collector.operator(&["status", "--json"])).expect("status JSON");
    assert_eq!(status["rules"]["last_reload_success"], true, "{status}");

    // `token list` has a header row.
    let tokens = collector.operator(&["token", "list"]);
    let header: Vec<&str> = tokens
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "TENANT", "ROLE", "STATE", "DESCRIPTION"],
        "{tokens}"
    );

    // Output into a pipe that closes early: quiet, no panic, no "Broken pipe".
    for args in [
        vec!["completions", "bash"],
        vec![
            "audit",
            "list",
            "--server",
            &collector.server(),
            "--ca",
            collector.ca.to_str().expect("utf-8"),
            "--token-file",
            collector.token_file.to_str().expect("utf-8"),
        ],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("first line");
        assert!(!first.is_empty(), "{args:?} printed nothing");
        drop(stdout);
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {err}");
        assert_ne!(out.status.code(), Some(1), "{args:?}: {err}");
    }
}
