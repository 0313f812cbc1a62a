//! The rest of the attack run's list (issue 16, part 4), attacked:
//!
//! - a collector and an agent started with umask 000 leave nothing under
//!   the data dir or the agent's state dir that group or others can read;
//!   the dev CA and server certificate have sane validity;
//! - refused ingest (agent hellos with a bad token, `_bulk` and OTLP
//!   without a token or with a viewer's, syslog with a bad token) is in
//!   the audit log, counted, in a few entries however many attempts;
//! - every refusal is JSON (OTLP's in the request's encoding) and says
//!   which rule refused it (the body limit, the role, the token's address
//!   allowlist, a revocation).

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use nightowl::transport::client::{ClientError, Connection};
use tokio::io::AsyncWriteExt;

/// Every file and directory under `dir` (itself included) with its mode.
fn modes_under(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    let meta = std::fs::symlink_metadata(dir).expect("metadata");
    out.push((dir.to_path_buf(), meta.permissions().mode()));
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if std::fs::symlink_metadata(&path).expect("metadata").is_dir() {
                modes_under(&path, out);
            } else {
                let mode = std::fs::symlink_metadata(&path)
                    .expect("metadata")
                    .permissions()
                    .mode();
                out.push((path, mode));
            }
        }
    }
}

#[test]
fn data_and_agent_state_are_private_whatever_the_umask() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            umask: Some(0o000),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    std::fs::write(&log, numbered_lines(0, 50)).expect("write");
    let state = root.path().join("agent-state");
    let mut cmd = collector.agent_command_with(&[
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--once".as_ref(),
        log.as_os_str(),
    ]);
    with_umask(&mut cmd, 0o000);
    let mut agent = ChildGuard::spawn("agent", cmd, &root.path().join("agent.stderr"));
    assert!(agent.wait().success(), "{}", agent.stderr());
    collector.wait_for_count("*", 50);
    collector.operator(&["tenant", "create", "acme"]);
    collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    collector.terminate();

    let mut modes = Vec::new();
    modes_under(&collector.data_dir, &mut modes);
    modes_under(&state, &mut modes);
    let open: Vec<String> = modes
        .iter()
        .filter(|(_, mode)| mode & 0o077 != 0)
        .map(|(path, mode)| format!("{} {:o}", path.display(), mode & 0o777))
        .collect();
    assert!(open.is_empty(), "readable beyond the owner: {open:#?}");
    // The walk did see the stores it is about.
    let names: Vec<String> = modes.iter().map(|(p, _)| p.display().to_string()).collect();
    for part in [
        ".wal",
        "audit.log",
        "tokens.json",
        "ca.key",
        "server.key",
        "alerting",
        "index",
        ".spool",
        "agent-state.json",
        "redact-rules.json",
    ] {
        assert!(
            names.iter().any(|n| n.contains(part)),
            "no {part} under the dirs: {names:#?}"
        );
    }

    // The dev CA: ten years, the server certificate one.
    let now = now_unix();
    let days = |path: &Path| {
        (nightowl::transport::tls::not_after(path).expect("certificate") - now) / 86_400
    };
    let tls = collector.data_dir.join("tls");
    assert!((3649..=3650).contains(&days(&tls.join("ca.pem"))));
    assert!((364..=365).contains(&days(&tls.join("server.pem"))));
}

/// Sends `count` RFC 5424 messages with `token` over one syslog TLS
/// connection.
async fn syslog_messages(addr: &str, ca: &Path, token: &str, count: usize) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = nightowl::transport::tls::server_name(addr).expect("name");
    let mut tls =
        tokio_rustls::TlsConnector::from(nightowl::transport::tls::client_config(ca).expect("tls"))
            .connect(name, tcp)
            .await
            .expect("TLS");
    for i in 0..count {
        let line = format!(
            "<14>1 2026-11-24T10:00:00Z web1 app - - [nightowl@32473 token=\"{token}\"] refused message {i}\n"
        );
        tls.write_all(line.as_bytes()).await.expect("write");
    }
    tls.flush().await.expect("flush");
    let _ = tls.shutdown().await;
}

/// A POST without any `Authorization` header.
async fn raw_post(addr: &str, ca: &Path, path: &str, body: &str) -> String {
    let response = raw_request(
        addr,
        ca,
        path,
        "application/x-ndjson",
        None,
        body.as_bytes(),
    )
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The status and the `Content-Type` of a raw HTTP response, and its body.
fn parse_response(response: &[u8]) -> (u16, String, Vec<u8>) {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(response)));
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, response[split + 4..].to_vec())
}

/// A POST with `content_type`, and `token` as the bearer when given;
/// the whole response, raw.
async fn raw_request(
    addr: &str,
    ca: &Path,
    path: &str,
    content_type: &str,
    token: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = nightowl::transport::tls::server_name(addr).expect("name");
    let mut stream =
        tokio_rustls::TlsConnector::from(nightowl::transport::tls::client_config(ca).expect("tls"))
            .connect(name, tcp)
            .await
            .expect("TLS");
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // A body over the limit may be answered (and the connection closed)
    // before it is all sent.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    response
}

fn post(collector: &Collector, token: &str, path: &str, body: String) -> (u16, serde_json::Value) {
    block_on(async {
        let client = nightowl::cli::http::ApiClient::new(
            &collector.server(),
            &collector.ca,
            token.to_string(),
        )
        .expect("client");
        let (status, body) = client
            .post_bytes(path, body.into())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "POST {path}: {status} is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status.as_u16(), json)
    })
}

fn get(collector: &Collector, token: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = collector.api_get_with_token(token, path);
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: {status} is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, json)
}

#[test]
fn refused_ingest_is_audited_in_counted_entries() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut collector = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!("[syslog]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..Settings::default()
        },
    );
    collector.operator(&["tenant", "create", "acme"]);
    let viewer = collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let viewer_id = viewer.split('_').nth(1).expect("id").to_string();
    let started = Instant::now();
    let bogus = "nwl_000000000000_bogus";
    let tls = nightowl::transport::tls::client_config(&collector.ca).expect("tls");
    let doc = "{\"index\":{}}\n{\"message\":\"refused\"}\n";
    block_on(async {
        for _ in 0..40 {
            let refused =
                Connection::connect(&collector.agent_addr, tls.clone(), bogus, "attacker").await;
            match refused {
                Err(ClientError::Rejected { reason, .. }) => {
                    assert!(reason.contains("invalid token"), "{reason}")
                }
                Err(e) => panic!("expected a refusal, got {e}"),
                Ok(_) => panic!("a bogus token was accepted"),
            }
        }
        for _ in 0..30 {
            let answer = raw_post(&collector.api_addr, &collector.ca, "/_bulk", doc).await;
            assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        }
        syslog_messages(&format!("127.0.0.1:{port}"), &collector.ca, bogus, 20).await;
        // OTLP answers in the request's encoding; its refusals are audited
        // all the same, with their reason.
        for _ in 0..15 {
            let answer = raw_request(
                &collector.api_addr,
                &collector.ca,
                "/v1/logs",
                "application/json",
                None,
                b"{}",
            )
            .await;
            let (status, _, body) = parse_response(&answer);
            assert_eq!(status, 401, "{}", String::from_utf8_lossy(&answer));
            let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON Status");
            assert_eq!(body["code"], 16, "{body}");
        }
        for _ in 0..5 {
            let answer = raw_request(
                &collector.api_addr,
                &collector.ca,
                "/v1/logs",
                "application/x-protobuf",
                Some(&viewer),
                b"",
            )
            .await;
            let (status, content_type, _) = parse_response(&answer);
            assert_eq!(
                (status, content_type.as_str()),
                (403, "application/x-protobuf"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    });
    for _ in 0..10 {
        let (status, reply) = post(&collector, &viewer, "/_bulk", doc.into());
        assert_eq!(status, 403, "{reply}");
    }
    // Windows the refusals fell in: one per started minute, plus one since
    // the periodic flush and a note may each open one.
    let windows = started.elapsed().as_secs() / 60 + 2;
    // Syslog refusals are counted as the messages are read.
    wait_until("the syslog refusals", || {
        (collector.metric("nightowl_syslog_rejected_total") >= 20.0).then_some(())
    });
    // The last counts are written at shutdown; the listing (which opens
    // the bodies sealed with a tenant's key) needs the collector back.
    collector.terminate();
    collector.restart();

    let entries = collector.audit_entries();
    let refused: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["method"] == "REFUSED")
        .collect();
    let mut by_key: BTreeMap<(String, String, u16), (u64, u64)> = BTreeMap::new();
    for e in &refused {
        let body: serde_json::Value =
            serde_json::from_str(e["body"].as_str().expect("body")).expect("JSON body");
        let reason = body["reason"].as_str().expect("reason").to_string();
        let path = e["path"].as_str().expect("path").to_string();
        let status = e["status"].as_u64().expect("status") as u16;
        let slot = by_key.entry((path, reason, status)).or_default();
        slot.0 += body["refused"].as_u64().expect("count");
        slot.1 += 1;
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
    }
    let find = |path: &str, reason: &str| {
        by_key
            .iter()
            .find(|((p, r, _), _)| p == path && r.contains(reason))
            .map(|(k, v)| (k.2, *v))
            .unwrap_or_else(|| panic!("no {path} refusal for {reason:?}: {by_key:#?}"))
    };
    let (status, (count, written)) = find("agent", "invalid token");
    assert_eq!((status, count), (401, 40));
    assert!(written <= 2 * windows, "{written} entries for 40 refusals");
    let (status, (count, written)) = find("/_bulk", "missing bearer token");
    assert_eq!((status, count), (401, 30));
    assert!(written <= 2 * windows, "{written}");
    let (status, (count, _)) = find("/_bulk", "a viewer token may not do this");
    assert_eq!((status, count), (403, 10));
    let (status, (count, written)) = find("/v1/logs", "missing bearer token");
    assert_eq!((status, count), (401, 15));
    assert!(written <= 2 * windows, "{written}");
    let (status, (count, _)) = find("/v1/logs", "a viewer token may not do this");
    assert_eq!((status, count), (403, 5));
    let viewer_entry = refused
        .iter()
        .find(|e| e["status"] == 403)
        .expect("the viewer's refusal");
    assert_eq!(viewer_entry["actor"], viewer_id.as_str());
    assert_eq!(viewer_entry["tenant"], "acme");
    let (_, (count, written)) = find("syslog", "invalid token");
    assert_eq!(count, 20);
    assert!(written <= 2 * windows, "{written}");
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn every_refusal_is_json_and_names_its_rule() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        root.path(),
        Settings {
            extra_toml: "[limits]\nmax_bulk_bytes = 2000\n".into(),
            ..Settings::default()
        },
    );
    let admin = collector.token();

    // `_bulk` over its size limit: JSON naming the limit, not plain text.
    let big = "{\"index\":{}}\n{\"message\":\"x\"}\n".repeat(200);
    let (status, reply) = post(&collector, &admin, "/_bulk", big);
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["limit"], "limits.max_bulk_bytes", "{reply}");
    assert_eq!(reply["limit_bytes"], 2000, "{reply}");
    // In Elasticsearch's shape, which the shippers read.
    assert_eq!(reply["error"]["type"], "content_too_long_exception");
    assert!(
        reply["error"]["reason"]
            .as_str()
            .is_some_and(|e| e.contains("2000") && e.contains("limits.max_bulk_bytes")),
        "{reply}"
    );

    // OTLP over the same limit: a `Status` in the request's encoding,
    // naming the limit (JSON here; the protobuf one carries the same text).
    let big_otlp = format!("{{\"resourceLogs\":[],\"pad\":\"{}\"}}", "x".repeat(3000));
    let (status, content_type, body) = block_on(async {
        let answer = raw_request(
            &collector.api_addr,
            &collector.ca,
            "/v1/logs",
            "application/json",
            Some(&admin),
            big_otlp.as_bytes(),
        )
        .await;
        parse_response(&answer)
    });
    assert_eq!((status, content_type.as_str()), (413, "application/json"));
    let reply: serde_json::Value = serde_json::from_slice(&body).expect("JSON Status");
    assert_eq!(reply["code"], 8, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("2000") && m.contains("limits.max_bulk_bytes")),
        "{reply}"
    );
    let (status, content_type, body) = block_on(async {
        let answer = raw_request(
            &collector.api_addr,
            &collector.ca,
            "/v1/logs",
            "application/x-protobuf",
            Some(&admin),
            &[0u8; 3000],
        )
        .await;
        parse_response(&answer)
    });
    assert_eq!(
        (status, content_type.as_str()),
        (413, "application/x-protobuf")
    );
    assert!(
        contains(&body, b"limits.max_bulk_bytes"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // What axum answers on its own is JSON too.
    let (status, reply) = get(&collector, &admin, "/api/v1/nowhere");
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"].is_string(), "{reply}");
    let (status, reply) = get(&collector, &admin, "/api/v1/search?q=*&bogus=1");
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().is_some_and(|e| e.contains("bogus")),
        "{reply}"
    );

    // Roles, with the article right.
    let agent = collector.operator(&["token", "create", "--role", "agent"]);
    let (status, reply) = get(&collector, &agent, "/api/v1/search?q=*");
    assert_eq!(status, 403, "{reply}");
    assert_eq!(
        reply["error"], "an agent token may not do this: it needs the viewer role (or admin)",
        "{reply}"
    );
    let viewer = collector.operator(&["token", "create", "--role", "viewer"]);
    let (status, reply) = get(&collector, &viewer, "/api/v1/tokens");
    assert_eq!(status, 403, "{reply}");
    assert_eq!(
        reply["error"], "a viewer token may not do this: it needs an admin token",
        "{reply}"
    );

    // A token used from outside its allowlist, and a revoked one, say so.
    let fenced = collector.operator(&[
        "token",
        "create",
        "--role",
        "agent",
        "--allow-ip",
        "10.0.0.0/8",
    ]);
    let fenced_id = fenced.split('_').nth(1).expect("id");
    let (status, reply) = get(&collector, &fenced, "/api/v1/search?q=*");
    assert_eq!(status, 401, "{reply}");
    assert_eq!(
        reply["error"],
        format!("token {fenced_id} may not be used from 127.0.0.1: its allowed_ips are 10.0.0.0/8"),
        "{reply}"
    );
    let tls = nightowl::transport::tls::client_config(&collector.ca).expect("tls");
    let hello = |token: &str| {
        block_on(async {
            match Connection::connect(&collector.agent_addr, tls.clone(), token, "a").await {
                Err(ClientError::Rejected { reason, .. }) => reason,
                Err(e) => panic!("expected a refusal, got {e}"),
                Ok(_) => panic!("accepted"),
            }
        })
    };
    let reason = hello(&fenced);
    assert!(
        reason.contains("may not be used from 127.0.0.1"),
        "{reason}"
    );
    let reason = hello(&viewer);
    assert!(
        reason.contains("a viewer token may not ship logs"),
        "{reason}"
    );
    let viewer_id = viewer.split('_').nth(1).expect("id");
    collector.operator(&["token", "revoke", viewer_id]);
    let (status, reply) = get(&collector, &viewer, "/api/v1/count?q=*");
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"], format!("token {viewer_id} is revoked"));
    // A wrong secret learns nothing more.
    let mut wrong = admin.clone();
    wrong.pop();
    wrong.push(if admin.ends_with('0') { '1' } else { '0' });
    let (status, reply) = get(&collector, &wrong, "/api/v1/count?q=*");
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("invalid token"))
    );
}
