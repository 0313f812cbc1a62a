//! Awkward inputs, each with a clear outcome, none stopping the agent: a
//! file deleted while tailed, a last line without newline, a binary file, a
//! 10 MB line, a directory the agent may not read. Plus the status command
//! and configuration errors.

use crate::common;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn awkward_files_have_clear_outcomes_and_never_stop_the_agent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let logs = tmp.path().join("logs");
    fs::create_dir(&logs).expect("mkdir");
    let stamp = nginx_time(now_unix(), 0);

    let normal = logs.join("normal.log");
    fs::write(&normal, numbered_lines(0, 100)).expect("write");
    let partial = logs.join("partial.log");
    fs::write(
        &partial,
        format!("10.1.1.1 - - [{stamp}] \"GET /nonewlinemarker HTTP/1.1\" 200 5 \"-\" \"x\""),
    )
    .expect("write");
    // 10 MB in one line, then an ordinary line.
    let big = logs.join("big.log");
    {
        let mut f = fs::File::create(&big).expect("create");
        f.write_all(b"bigmarker ").expect("write");
        let block = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            f.write_all(&block).expect("write");
        }
        writeln!(
            f,
            "\n10.1.1.2 - - [{stamp}] \"GET /afterbigmarker HTTP/1.1\" 200 5 \"-\" \"x\""
        )
        .expect("write");
    }
    let binary = logs.join("binary.log");
    let mut rng = Rng::new(7);
    let noise: Vec<u8> = (0..200_000).map(|_| rng.next_u64() as u8).collect();
    fs::write(&binary, &noise).expect("write");
    let deleted = logs.join("deleted.log");
    fs::write(&deleted, numbered_lines(1000, 1100)).expect("write");
    // Only what is written after the agent first sees it (start_at = end).
    let tail_only = logs.join("tail-only.log");
    fs::write(&tail_only, numbered_lines(3000, 3050)).expect("write");
    let locked = logs.join("locked");
    fs::create_dir(&locked).expect("mkdir");
    fs::write(locked.join("secret.log"), numbered_lines(2000, 2010)).expect("write");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;

    // Truncation rather than the default skip, so the line's start stays.
    let mut config = String::from("partial_line_timeout_ms = 1000\nlong_lines = \"truncate\"\n");
    for (name, glob) in [
        ("normal", normal.display().to_string()),
        ("partial", partial.display().to_string()),
        ("big", big.display().to_string()),
        ("binary", binary.display().to_string()),
        ("deleted", deleted.display().to_string()),
        ("locked", format!("{}/*.log", locked.display())),
    ] {
        config.push_str(&format!(
            "[[inputs]]\npaths = [{glob:?}]\nsource = \"{name}\"\n"
        ));
    }
    config.push_str(&format!(
        "[[inputs]]\npaths = [{:?}]\nsource = \"tailonly\"\nstart_at = \"end\"\n",
        tail_only.display().to_string()
    ));
    let config_path = tmp.path().join("agent.toml");
    fs::write(&config_path, config).expect("config");
    let state = tmp.path().join("agent-state");
    let mut agent = collector.spawn_agent_with(
        "edge-agent",
        &[
            OsStr::new("--config"),
            config_path.as_os_str(),
            OsStr::new("--state-dir"),
            state.as_os_str(),
        ],
    );

    collector.wait_for_count("source:normal", 100);
    collector.wait_for_count("source:deleted", 100);
    // Deleted while the writer still holds it open: the agent keeps its own
    // descriptor and reads what is written after the unlink too.
    let mut handle = OpenOptions::new()
        .append(true)
        .open(&deleted)
        .expect("open");
    fs::remove_file(&deleted).expect("unlink");
    handle
        .write_all(numbered_lines(1100, 1150).as_bytes())
        .expect("append after unlink");
    collector.wait_for_count("source:deleted", 150);
    drop(handle);

    wait_agent_read(&state, &tail_only, 0);
    append(&tail_only, &numbered_lines(3050, 3055));
    collector.wait_for_count("source:tailonly", 5);
    assert_eq!(
        collector.count("seq0003049"),
        0,
        "old lines are not shipped"
    );

    // The last line without a newline is shipped once the file is quiet.
    collector.wait_for_count("source:partial", 1);
    assert_eq!(collector.count("nonewlinemarker"), 1);

    // The 10 MB line is cut to the collector's limit, and counted.
    collector.wait_for_count("source:big", 2);
    assert_eq!(collector.count("bigmarker"), 1);
    assert_eq!(collector.count("afterbigmarker"), 1);

    // The binary file: shipped as (garbage) lines, read to its end.
    wait_agent_read(&state, &binary, noise.len() as u64);
    assert!(collector.wait_for_count_at_least("source:binary", 1) >= 1);

    let status = agent_status(&state).expect("status");
    assert_eq!(status["counters"]["lines_truncated"], 1, "{status}");
    assert!(
        status["counters"]["partial_lines_flushed"].as_u64() >= Some(1),
        "{status}"
    );
    assert_eq!(status["connection"]["state"], "connected");
    assert_eq!(status["connection"]["compression"], true);
    let sent = status["counters"]["bytes_sent"]
        .as_u64()
        .expect("bytes_sent");
    let wire = status["counters"]["payload_bytes_sent"]
        .as_u64()
        .expect("payload bytes");
    assert!(
        wire < sent,
        "zstd shrinks batches: {wire} on the wire for {sent}"
    );
    let stderr = agent.stderr();
    assert!(stderr.contains("cut a line longer"), "{stderr}");
    if root {
        // Permissions do not stop root: the files are simply shipped.
        collector.wait_for_count("source:locked", 10);
    } else {
        wait_until("a warning about the locked directory", || {
            let e = agent.stderr();
            (e.contains("cannot look into") || e.contains("cannot open")).then_some(())
        });
        assert_eq!(collector.count("source:locked"), 0);
    }

    // The human status names the files and the connection.
    let out = Command::new(BIN)
        .args(["agent", "status", "--state-dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .expect("agent status");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(text.contains("collector: connected"), "{text}");
    assert!(text.contains("normal.log"), "{text}");

    assert_eq!(collector.count("source:normal"), 100);
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    // SIGTERM: a clean exit that leaves its checkpoint behind.
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "{}", agent.stderr_tail());
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join("agent-state.json")).expect("checkpoint"))
            .expect("checkpoint JSON");
    assert!(
        checkpoint["files"]
            .as_object()
            .is_some_and(|f| f.len() >= 5),
        "{checkpoint}"
    );
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");
}

#[test]
fn bad_configuration_is_a_usage_error_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let token = tmp.path().join("token");
    fs::write(&token, "nwl_x_y\n").expect("token");
    let run = |args: &[&OsStr]| {
        Command::new(BIN)
            .arg("agent")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the agent")
    };

    let config = tmp.path().join("agent.toml");
    fs::write(&config, "spool_limit = 1\n").expect("config");
    let out = run(&[OsStr::new("--config"), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("spool_limit"),
        "{}",
        stderr_of(&out)
    );

    let out = run(&[
        OsStr::new("--ca"),
        OsStr::new("/nonexistent/ca.pem"),
        OsStr::new("--token-file"),
        token.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        OsStr::new("/var/log/*.log"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("collector"), "{}", stderr_of(&out));

    fs::write(&config, "spool_limit_bytes = 1000\n").expect("config");
    let out = run(&[
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--collector"),
        OsStr::new("127.0.0.1:1"),
        OsStr::new("--ca"),
        OsStr::new("/nonexistent/ca.pem"),
        OsStr::new("--token-file"),
        token.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        OsStr::new("/var/log/*.log"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("spool_limit_bytes"),
        "{}",
        stderr_of(&out)
    );

    // No agent ever ran with this state dir: status says so, exit 1.
    let out = Command::new(BIN)
        .args(["agent", "status", "--state-dir"])
        .arg(&state)
        .output()
        .expect("agent status");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("status.json"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn zstd_batches_need_negotiation_and_cannot_expand_past_the_limit() {
    use nightowl::transport::client::Connection;
    use nightowl::transport::protocol::{compress_lines, Batch, Message, CAP_ZSTD};

    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        tmp.path(),
        Settings {
            max_frame_bytes: Some(1 << 20),
            ..Settings::default()
        },
    );
    let tls = nightowl::transport::tls::client_config(&collector.ca).expect("tls");
    let token = collector.token();
    let batch = |seq, first_offset, lines: &[u8]| Batch {
        seq,
        source_id: "zstd-src".into(),
        source: "zstd".into(),
        host: "h".into(),
        format: "auto".into(),
        first_offset,
        lines: compress_lines(lines).expect("compress"),
    };
    block_on(async {
        // Negotiated: a compressed batch is stored as its plain lines.
        let mut conn = Connection::connect_with(
            &collector.agent_addr,
            tls.clone(),
            &token,
            "zstd-agent",
            Some(CAP_ZSTD),
        )
        .await
        .expect("connect");
        assert_eq!(conn.capabilities, CAP_ZSTD);
        let lines = numbered_lines(0, 50);
        conn.send(Message::BatchZstd(batch(1, 0, lines.as_bytes())))
            .await
            .expect("send");
        let ack = conn.recv_ack().await.expect("ack");
        assert_eq!(ack.acked_offset, lines.len() as u64);

        // 64 MiB of newlines squeezed into a few KiB: refused before it
        // can expand past 4 x max_frame_bytes.
        let bomb = vec![b'\n'; 64 << 20];
        conn.send(Message::BatchZstd(batch(2, lines.len() as u64, &bomb)))
            .await
            .expect("send");
        let err = conn.recv_ack().await.expect_err("a zip bomb is refused");
        assert!(err.to_string().contains("malformed_frame"), "{err}");

        // Not negotiated: a compressed batch is a protocol error.
        let mut plain = Connection::connect(&collector.agent_addr, tls.clone(), &token, "plain")
            .await
            .expect("connect");
        assert_eq!(plain.capabilities, 0);
        plain
            .send(Message::BatchZstd(batch(1, 0, b"x\n")))
            .await
            .expect("send");
        let err = plain.recv_ack().await.expect_err("refused");
        assert!(err.to_string().contains("malformed_frame"), "{err}");
    });
    collector.wait_for_count("source:zstd", 50);
    assert_eq!(collector.metric("nightowl_lines_received_total"), 50.0);
}

/// `CAP_RESUME` is answered only when asked: an agent that does not ask
/// (older ones) sees the welcome it always did; one that asks gets the
/// store id and its own sources' durable offsets, never another agent's.
#[test]
fn resume_offsets_go_only_to_agents_that_ask_and_only_their_own() {
    use nightowl::transport::client::Connection;
    use nightowl::transport::protocol::{Batch, Message, CAP_RESUME, CAP_ZSTD};

    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let store = fs::read_to_string(collector.data_dir.join("store-id")).expect("store id");
    let tls = nightowl::transport::tls::client_config(&collector.ca).expect("tls");
    let token = collector.token();
    let lines = numbered_lines(0, 20);
    block_on(async {
        let connect = |agent: &'static str, caps: Option<u32>| {
            let (addr, tls, token) = (collector.agent_addr.clone(), tls.clone(), token.clone());
            async move {
                Connection::connect_with(&addr, tls, &token, agent, caps)
                    .await
                    .expect("connect")
            }
        };
        let plain = connect("resumer", None).await;
        assert_eq!((plain.capabilities, plain.resume.is_none()), (0, true));
        let zstd_only = connect("resumer", Some(CAP_ZSTD)).await;
        assert_eq!(
            (zstd_only.capabilities, zstd_only.resume.is_none()),
            (CAP_ZSTD, true)
        );

        let mut first = connect("resumer", Some(CAP_RESUME)).await;
        assert_eq!(first.capabilities, CAP_RESUME);
        let resume = first.resume.take().expect("resume frames");
        assert_eq!(resume.store, store.trim());
        assert!(resume.sources.is_empty(), "{resume:?}");
        first
            .send(Message::Batch(Batch {
                seq: 1,
                source_id: "resume-src".into(),
                source: "resume".into(),
                host: "h".into(),
                format: "auto".into(),
                first_offset: 0,
                lines: lines.clone().into(),
            }))
            .await
            .expect("send");
        assert_eq!(
            first.recv_ack().await.expect("ack").acked_offset,
            lines.len() as u64
        );

        let again = connect("resumer", Some(CAP_RESUME | CAP_ZSTD)).await;
        let resume = again.resume.expect("resume frames");
        assert_eq!(resume.store, store.trim());
        assert_eq!(
            resume.sources.get("resume-src").copied(),
            Some(lines.len() as u64)
        );
        assert_eq!(resume.sources.len(), 1);
        let other = connect("resumer2", Some(CAP_RESUME)).await;
        assert!(other.resume.expect("resume frames").sources.is_empty());
    });
}
