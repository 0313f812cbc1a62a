//! The CLI's first hour (issue 18): the mistakes and pipes a new user meets
//! get a clear answer and the right exit code, never a panic or a silent
//! success. Real collector, real agent, the binary under test.

use std::os::unix::process::ExitStatusExt;
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
            && summary.contains("from 1 file to")
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

    // --once with no collector listening at all gives up too (it used to
    // retry forever), and says the spool keeps what it read.
    let closed = format!("127.0.0.1:{}", common::free_port());
    let out = agent(
        &collector,
        &closed,
        &[
            "--state-dir",
            root.path().join("state3").to_str().expect("utf-8"),
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
        err.contains("gave up after 1 s without a collector")
            && err.contains("Connection refused")
            && err.contains("stays in the spool"),
        "{err}"
    );

    // A collector address without a port is refused at once.
    let out = agent(
        &collector,
        "127.0.0.1",
        &[
            "--state-dir",
            root.path().join("state4").to_str().expect("utf-8"),
            log_arg,
        ],
    )
    .output()
    .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("has no port"),
        "{}",
        stderr_of(&out)
    );

    // A second collector on the same data dir stops before touching it,
    // even with ports of its own.
    let (agent_port, api_port) = (common::free_port(), common::free_port());
    let out = Command::new(BIN)
        .arg("collector")
        .arg("--data-dir")
        .arg(&collector.data_dir)
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .output()
        .expect("second collector");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("another collector is using the data dir"),
        "{}",
        stderr_of(&out)
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
    // ...and the collector's log names the HTTP client on its agent port.
    let log = root.path().join("collector-1.stderr");
    common::wait_until("the collector's note of the HTTP client", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("an HTTP request reached the agent port")
            .then_some(())
    });

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

    // Output into a pipe whose reader is gone (`| head` after its lines):
    // quiet, no panic, no "Broken pipe", like `cat`. The reader is closed
    // before the command starts, so its first write fails: no race with
    // how much fits in the pipe's buffer.
    let api = [
        "--server",
        &collector.server(),
        "--ca",
        collector.ca.to_str().expect("utf-8"),
        "--token-file",
        collector.token_file.to_str().expect("utf-8"),
    ];
    let with_api = |args: &[&'static str]| -> Vec<&str> { [args, &api[..]].concat() };
    let commands: Vec<Vec<&str>> = vec![
        vec!["completions", "bash"],
        with_api(&["alerts", "list"]),
        with_api(&["audit", "list"]),
        with_api(&["search", "*"]),
        with_api(&["token", "list"]),
        with_api(&["status"]),
        // A daemon (SIGPIPE stays ignored) whose summary has nowhere to go.
        vec![
            "agent",
            "--collector",
            &collector.agent_addr,
            "--state-dir",
            state_arg,
            "--once",
            log_arg,
        ],
    ];
    for args in commands {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("NIGHTOWL_CA", &collector.ca)
            .env("NIGHTOWL_TOKEN_FILE", &collector.token_file)
            .stdin(Stdio::null());
        let printed = cmd.output().expect("run");
        assert!(
            !printed.stdout.is_empty(),
            "{args:?} prints nothing, so a closed pipe proves nothing: {printed:?}"
        );
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = cmd.stdout(writer).output().expect("run into a closed pipe");
        let err = stderr_of(&out);
        assert!(
            !err.contains("panicked")
                && !err.contains("Broken pipe")
                && !err.contains("os error 32"),
            "{args:?}: {err}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {:?}: {err}",
            out.status
        );
    }
}

#[test]
fn the_collector_listens_where_its_flags_say() {
    let root = tempfile::tempdir().expect("tempdir");
    let (agent_port, api_port) = (common::free_port(), common::free_port());
    let mut cmd = Command::new(BIN);
    cmd.arg("collector")
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")]);
    let mut child = common::ChildGuard::spawn("flags", cmd, &root.path().join("flags.stderr"));
    for (what, port) in [("the agent port", agent_port), ("the API port", api_port)] {
        common::wait_until(what, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }
    child.kill();
}
