//! What the collector refuses, and that refusing one peer harms no other:
//! protocol violations on the agent port, duplicates, bad config, bad
//! queries and bad tokens.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use nightowl::transport::client::{Ack, ClientError, Connection};
use nightowl::transport::protocol::{
    Batch, Message, ProtocolCodec, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use nightowl::transport::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::{Encoder, FramedRead};

use common::*;

/// Bounds every network wait of these tests: a hang fails instead.
async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer to {what} within {DEADLINE:?}"))
}

/// One source shipped over one connection, with the offsets an agent keeps.
struct Shipper {
    conn: Connection,
    source_id: String,
    seq: u64,
    offset: u64,
    next_line: u64,
}

impl Shipper {
    async fn connect(addr: &str, ca: &Path, token: &str, agent_id: &str, source: &str) -> Self {
        let conn = within(
            "connect",
            Connection::connect(addr, tls::client_config(ca).expect("tls"), token, agent_id),
        )
        .await
        .unwrap_or_else(|e| panic!("a good connection must be accepted: {e}"));
        Shipper {
            conn,
            source_id: source.to_string(),
            seq: 0,
            offset: 0,
            next_line: 0,
        }
    }

    fn batch(&mut self, first_offset: u64, lines: impl Into<Bytes>) -> Batch {
        self.seq += 1;
        Batch {
            seq: self.seq,
            source_id: self.source_id.clone(),
            source: format!("/e2e/{}", self.source_id),
            host: "e2e-host".into(),
            format: "auto".into(),
            first_offset,
            lines: lines.into(),
        }
    }

    /// Ships `n` new lines in one batch; asserts the exact ack.
    async fn ship(&mut self, n: u64) {
        let text = numbered_lines(self.next_line, self.next_line + n);
        let len = text.len() as u64;
        let batch = self.batch(self.offset, text);
        let seq = batch.seq;
        self.conn
            .send(Message::Batch(batch))
            .await
            .expect("sending a good batch");
        let ack = within("a good batch", self.conn.recv_ack())
            .await
            .expect("a good batch is acked");
        assert_eq!(
            ack,
            Ack {
                seq,
                acked_offset: self.offset + len,
                duplicate: false
            }
        );
        self.offset += len;
        self.next_line += n;
    }

    /// Sends `msg` and returns the collector's answer.
    async fn send_and_answer(&mut self, msg: Message) -> Result<Ack, ClientError> {
        self.conn.send(msg).await.expect("sending");
        within("a batch", self.conn.recv_ack()).await
    }
}

fn expect_rejected(answer: Result<Ack, ClientError>, code: &str) -> String {
    match answer {
        Err(ClientError::Rejected { reason, .. }) => {
            assert!(
                reason.starts_with(&format!("{code}: ")),
                "expected a {code} error, got {reason:?}"
            );
            reason
        }
        other => panic!("expected a {code} error frame, got {other:?}"),
    }
}

/// After an error frame the collector closes the connection.
async fn expect_closed(conn: &mut Connection) {
    match within("a closed connection", conn.recv_ack()).await {
        Err(ClientError::Closed { .. } | ClientError::Protocol { .. }) => {}
        other => panic!("the connection should be closed after an error, got {other:?}"),
    }
}

/// A TLS connection to the agent port, with nothing sent yet.
async fn raw_tls(addr: &str, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    let name = tls::server_name(addr).expect("server name");
    within(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(tls::client_config(ca).expect("tls")).connect(name, tcp),
    )
    .await
    .expect("TLS handshake with the right CA")
}

/// Reads the one frame the collector answers with; must be an error.
async fn read_error(stream: &mut TlsStream<TcpStream>) -> String {
    let mut frames = FramedRead::new(stream, ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES));
    match within("an error frame", frames.next()).await {
        Some(Ok(Message::Error { code, message })) => Message::describe_error(code, &message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn expect_code(reason: &str, code: &str) {
    assert!(
        reason.starts_with(&format!("{code}: ")),
        "expected a {code} error, got {reason:?}"
    );
}

#[test]
fn protocol_violations_get_their_error_and_hurt_nobody_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        tmp.path(),
        Settings {
            max_frame_bytes: Some(65_536),
            max_line_bytes: Some(1024),
            ..Settings::default()
        },
    );
    let rt = Runtime::new().expect("runtime");
    let (addr, ca, token) = (
        collector.agent_addr.clone(),
        collector.ca.clone(),
        collector.token(),
    );

    // A good agent ships first; its lines must stay intact throughout.
    let mut good = rt.block_on(Shipper::connect(&addr, &ca, &token, "good-agent", "good"));
    assert_eq!(
        good.conn.max_frame_bytes, 65_536,
        "the welcome carries the limits"
    );
    assert_eq!(good.conn.max_line_bytes, 1024);
    rt.block_on(good.ship(100));
    let mut expected = 100;
    collector.wait_for_count("*", expected);
    let (mut handshakes_rejected, mut frames_rejected) = (0.0, 0.0);

    // 1. A token the collector never issued.
    let mut wrong = token.clone();
    let last = wrong.pop().expect("token");
    wrong.push(if last == '0' { '1' } else { '0' });
    let tls_cfg = tls::client_config(&ca).expect("tls");
    let answer = rt.block_on(within(
        "a wrong token",
        Connection::connect(&addr, Arc::clone(&tls_cfg), &wrong, "bad-agent"),
    ));
    let reason = match answer {
        Err(ClientError::Rejected { reason, .. }) => reason,
        Err(e) => panic!("expected an unauthorized error frame, got {e}"),
        Ok(_) => panic!("a wrong token must not get through"),
    };
    expect_code(&reason, "unauthorized");
    assert!(
        !reason.contains(&wrong),
        "the error must not echo the token"
    );
    handshakes_rejected += 1.0;
    rt.block_on(good.ship(10));
    expected += 10;

    // 2. A client trusting another CA refuses the collector's certificate.
    let (other, created) =
        tls::ensure_dev_material(&tmp.path().join("other-ca")).expect("another dev CA");
    assert!(created);
    let other_cfg = tls::client_config(&other.ca).expect("tls");
    match rt.block_on(within(
        "a connection trusting another CA",
        Connection::connect(&addr, other_cfg, &token, "wrong-ca-agent"),
    )) {
        Err(ClientError::Tls { .. }) => {}
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("a client trusting another CA must not get through"),
    }
    handshakes_rejected += 1.0;
    rt.block_on(good.ship(10));
    expected += 10;

    // 3. Not a hello at all after the TLS handshake.
    let reason = rt.block_on(async {
        let mut stream = raw_tls(&addr, &ca).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: nightowl\r\n\r\n")
            .await
            .expect("write");
        stream.flush().await.expect("flush");
        read_error(&mut stream).await
    });
    expect_code(&reason, "bad_handshake");
    handshakes_rejected += 1.0;

    // 4. A hello of a protocol version the collector does not speak.
    let reason = rt.block_on(async {
        let mut stream = raw_tls(&addr, &ca).await;
        let mut wire = BytesMut::new();
        ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES)
            .encode(
                Message::Hello {
                    version: PROTOCOL_VERSION + 98,
                    token: token.clone(),
                    agent_id: "future-agent".into(),
                },
                &mut wire,
            )
            .expect("encode");
        stream.write_all(&wire).await.expect("write");
        stream.flush().await.expect("flush");
        read_error(&mut stream).await
    });
    expect_code(&reason, "unsupported_version");
    assert!(
        reason.contains(&(PROTOCOL_VERSION + 98).to_string()),
        "{reason}"
    );
    handshakes_rejected += 1.0;
    rt.block_on(good.ship(10));
    expected += 10;

    // 5. A frame above max_frame_bytes, made of lines each within limits.
    rt.block_on(async {
        let mut bad = Shipper::connect(&addr, &ca, &token, "big-frame-agent", "big").await;
        let line = format!("{}\n", "f".repeat(499));
        let lines = line.repeat(150);
        assert!(lines.len() > 65_536);
        let batch = bad.batch(0, lines);
        let answer = bad.send_and_answer(Message::Batch(batch)).await;
        expect_rejected(answer, "frame_too_large");
    });
    frames_rejected += 1.0;
    rt.block_on(good.ship(10));
    expected += 10;

    // 6. A line above max_line_bytes inside an acceptable frame: the whole
    // batch is refused, its good lines included.
    rt.block_on(async {
        let mut bad = Shipper::connect(&addr, &ca, &token, "long-line-agent", "long").await;
        let lines = format!("short one\nshort two\n{}\nshort three\n", "x".repeat(2000));
        let batch = bad.batch(0, lines);
        let answer = bad.send_and_answer(Message::Batch(batch)).await;
        let reason = expect_rejected(answer, "line_too_large");
        assert!(
            reason.contains("offset 20"),
            "names where the line starts: {reason}"
        );
        expect_closed(&mut bad.conn).await;
    });
    frames_rejected += 1.0;

    // 7. A batch whose last line has no newline.
    rt.block_on(async {
        let mut bad = Shipper::connect(&addr, &ca, &token, "torn-agent", "torn").await;
        let batch = bad.batch(0, "whole line\nhalf a li");
        let answer = bad.send_and_answer(Message::Batch(batch)).await;
        expect_rejected(answer, "malformed_frame");
        expect_closed(&mut bad.conn).await;
    });
    frames_rejected += 1.0;

    // 8. Garbage bytes after a successful hello.
    rt.block_on(async {
        let mut bad = Shipper::connect(&addr, &ca, &token, "garbage-agent", "garbage").await;
        let stream = bad.conn.get_mut_stream();
        stream
            .write_all(&[0, 0, 0, 3, 99, 1, 2])
            .await
            .expect("write");
        stream.flush().await.expect("flush");
        let answer = within("garbage", bad.conn.recv_ack()).await;
        expect_rejected(answer, "malformed_frame");
    });
    frames_rejected += 1.0;

    // The good connection still works, and so does a new one.
    rt.block_on(good.ship(10));
    expected += 10;
    let mut fresh = rt.block_on(Shipper::connect(&addr, &ca, &token, "fresh-agent", "fresh"));
    rt.block_on(fresh.ship(25));
    expected += 25;

    collector.wait_for_count("*", expected);
    assert_eq!(collector.count("source:\"/e2e/good\""), expected - 25);
    assert_eq!(collector.count("source:\"/e2e/fresh\""), 25);
    assert_eq!(
        collector.count("short"),
        0,
        "nothing of a refused batch is indexed"
    );
    collector.wait_for_metric("nightowl_handshakes_rejected_total", handshakes_rejected);
    collector.wait_for_metric("nightowl_frames_rejected_total", frames_rejected);
    // Every refused connection was closed; only the two good ones remain.
    collector.wait_for_metric("nightowl_connections_active", 2.0);
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        expected as f64
    );
}

#[test]
fn resent_batches_are_acked_as_duplicates_and_indexed_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let rt = Runtime::new().expect("runtime");
    let (addr, ca, token) = (
        collector.agent_addr.clone(),
        collector.ca.clone(),
        collector.token(),
    );

    let first = numbered_lines(0, 50);
    let first_len = first.len() as u64;
    let all = numbered_lines(0, 80);
    let all_len = all.len() as u64;
    assert!(all.starts_with(&first), "the same lines, extended");

    let mut conn = rt.block_on(Shipper::connect(&addr, &ca, &token, "dup-agent", "dup"));
    let b1 = conn.batch(0, first.clone());
    let ack = rt
        .block_on(conn.send_and_answer(Message::Batch(b1)))
        .expect("ack");
    assert_eq!((ack.acked_offset, ack.duplicate), (first_len, false));
    collector.wait_for_count("*", 50);

    // The very same batch again (an agent that missed the ack).
    let again = conn.batch(0, first.clone());
    let seq = again.seq;
    let ack = rt
        .block_on(conn.send_and_answer(Message::Batch(again)))
        .expect("ack");
    assert_eq!(
        ack,
        Ack {
            seq,
            acked_offset: first_len,
            duplicate: true
        }
    );

    // A resend overlapping old and new lines: only the new ones are kept.
    let overlap = conn.batch(0, all.clone());
    let ack = rt
        .block_on(conn.send_and_answer(Message::Batch(overlap)))
        .expect("ack");
    assert_eq!((ack.acked_offset, ack.duplicate), (all_len, false));

    // After a reconnect (same agent id), a resend is still a duplicate.
    let mut reconnected = rt.block_on(Shipper::connect(&addr, &ca, &token, "dup-agent", "dup"));
    let tail = Bytes::from(all.clone()).slice(first_len as usize..);
    let resend = reconnected.batch(first_len, tail);
    let ack = rt
        .block_on(reconnected.send_and_answer(Message::Batch(resend)))
        .expect("ack");
    assert_eq!((ack.acked_offset, ack.duplicate), (all_len, true));

    collector.wait_for_count("*", 80);
    for i in [0u64, 1, 49, 50, 79] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    assert_eq!(collector.metric("nightowl_batches_duplicate_total"), 2.0);
    assert_eq!(collector.metric("nightowl_lines_received_total"), 80.0);
}

#[test]
fn config_with_an_unknown_key_exits_2_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |name: &str, toml: &str| {
        let config = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("config");
        let mut cmd = Command::new(BIN);
        cmd.arg("collector")
            .arg("--data-dir")
            .arg(tmp.path().join(format!("{name}-data")))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null());
        let mut child = ChildGuard::spawn(name, cmd, &tmp.path().join(format!("{name}.stderr")));
        let status = child.wait();
        (status.code(), child.stderr())
    };
    let ports = format!(
        "agent_listen = \"127.0.0.1:{}\"\napi_listen = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );

    let (code, stderr) = run(
        "unknown-key",
        &format!("{ports}\n[index]\ncommit_interval_ms = 200\nbogus_knob = 1\n"),
    );
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("bogus_knob"), "the key is named: {stderr}");
    assert!(
        stderr.contains("unknown-key.toml"),
        "the file is named: {stderr}"
    );

    let (code, stderr) = run(
        "unknown-top-key",
        &format!("{ports}listen_everywhere = true\n"),
    );
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("listen_everywhere"), "{stderr}");

    let (code, stderr) = run(
        "bad-limits",
        &format!("{ports}\n[limits]\nmax_frame_bytes = 1000\nmax_line_bytes = 4000\n"),
    );
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("max_line_bytes"), "{stderr}");

    let (code, stderr) = run(
        "bad-type",
        &format!("{ports}\n[index]\ncommit_interval_ms = \"often\"\n"),
    );
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("commit_interval_ms"), "{stderr}");
}

/// A hand-written HTTP/1.1 request without any Authorization header.
async fn raw_https_get(addr: &str, ca: &Path, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = tls::server_name(addr).expect("server name");
    let mut stream = tokio_rustls::TlsConnector::from(tls::client_config(ca).expect("tls"))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    // The server may close without close_notify; what was read counts.
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn bad_queries_and_bad_tokens_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let file = tmp.path().join("small.log");
    std::fs::write(&file, numbered_lines(0, 20)).expect("log");
    let (status, stderr) =
        collector.run_agent_once("small-agent", &tmp.path().join("state"), &[&file]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    collector.wait_for_count("*", 20);

    // A query that does not parse: exit 2 and the reason, via CLI and API.
    let out = collector.search(&["--count", "status:("]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("bad query"), "{}", stderr_of(&out));
    let out = collector.search(&["status:("]);
    assert_eq!(out.status.code(), Some(2));
    let (code, body) = collector.api_get("/api/v1/count?q=status%3A%28");
    assert_eq!(code, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("bad query")),
        "{body}"
    );

    // A wrong token: 401 on every API route, exit 2 from the CLI.
    let mut wrong = collector.token();
    wrong.pop();
    wrong.push('x');
    for path in [
        "/api/v1/count?q=*",
        "/api/v1/search?q=*",
        "/api/v1/histogram?q=*",
        "/api/v1/top?field=status",
    ] {
        let (code, body) = collector.api_get_with_token(&wrong, path);
        assert_eq!(code, 401, "{path}: {}", String::from_utf8_lossy(&body));
        let (code, _) = collector.api_get_with_token("", path);
        assert_eq!(code, 401, "{path} with an empty token");
    }
    let wrong_file = tmp.path().join("wrong.token");
    std::fs::write(&wrong_file, format!("{wrong}\n")).expect("token file");
    let out = collector.search_with_token_file(&wrong_file, &["--count", "*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("invalid token"),
        "{}",
        stderr_of(&out)
    );
    assert!(stdout_of(&out).is_empty(), "no count is printed");

    // No Authorization header at all; probes need none.
    let rt = Runtime::new().expect("runtime");
    let response = rt.block_on(within(
        "a request without a token",
        raw_https_get(&collector.api_addr, &collector.ca, "/api/v1/count?q=*"),
    ));
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let response = rt.block_on(within(
        "healthz",
        raw_https_get(&collector.api_addr, &collector.ca, "/healthz"),
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // An agent with a wrong token gives up (it would never heal) instead
    // of retrying forever, and says why.
    let mut cmd = Command::new(BIN);
    cmd.arg("agent")
        .arg("--collector")
        .arg(&collector.agent_addr)
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&wrong_file)
        .arg("--state-dir")
        .arg(tmp.path().join("state-wrong"))
        .arg(&file)
        .stdout(Stdio::null());
    let mut agent = ChildGuard::spawn("wrong-token-agent", cmd, &tmp.path().join("wa.stderr"));
    let status = agent.wait();
    assert!(!status.success(), "an unauthorized agent must fail");
    assert!(
        agent.stderr().contains("unauthorized"),
        "{}",
        agent.stderr()
    );

    // None of it changed the data.
    collector.wait_for_count("*", 20);
    assert_eq!(collector.metric("nightowl_lines_received_total"), 20.0);
}

#[test]
fn agent_skips_a_line_above_the_limit_and_ships_all_the_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        tmp.path(),
        Settings {
            max_line_bytes: Some(1024),
            ..Settings::default()
        },
    );
    let long = |tag: &str| format!("{tag} {}\n", "x".repeat(5000));
    let file = tmp.path().join("long-lines.log");
    // Long lines inside a batch, at its start and at the end of the file.
    let mut text = numbered_lines(0, 10);
    text.push_str(&long("overlongone"));
    text.push_str(&numbered_lines(10, 20));
    text.push_str(&long("overlongtwo"));
    text.push_str(&long("overlongthree"));
    text.push_str(&numbered_lines(20, 30));
    text.push_str(&long("overlongfour"));
    std::fs::write(&file, text).expect("log");
    let state = tmp.path().join("state");

    let (status, stderr) = collector.run_agent_once("long-line-agent", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("skipping a line longer than 1024 bytes"),
        "{stderr}"
    );
    collector.wait_for_count("*", 30);
    for tag in [
        "overlongone",
        "overlongtwo",
        "overlongthree",
        "overlongfour",
    ] {
        assert_eq!(collector.count(tag), 0, "{tag} is above the limit");
    }
    for i in [0u64, 9, 10, 19, 20, 29] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    assert_eq!(collector.metric("nightowl_frames_rejected_total"), 0.0);

    // Shipping goes on past the skipped line.
    append(&file, &numbered_lines(30, 40));
    let (status, stderr) = collector.run_agent_once("long-line-agent-2", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    collector.wait_for_count("*", 40);
}
