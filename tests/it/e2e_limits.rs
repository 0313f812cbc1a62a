//! API limits against the real collector over real HTTPS (docs/limits.md):
//! per-token rate limits, query size and shape limits, body caps, the
//! header read timeout against slowloris clients, and the query deadline.

use crate::common;

use std::time::Duration;

use common::{block_on, stderr_of, wait_until, Collector, Settings};
use nightowl::cli::http::ApiClient;
use nightowl::http_client::encode_param;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(root: &std::path::Path, extra_toml: &str) -> Collector {
    Collector::start(
        root,
        Settings {
            extra_toml: extra_toml.to_string(),
            ..Settings::default()
        },
    )
}

/// GET as `token`: status, `Retry-After` and the JSON body.
fn get(collector: &Collector, token: &str, path: &str) -> (u16, Option<String>, serde_json::Value) {
    block_on(async {
        let client =
            ApiClient::new(&collector.server(), &collector.ca, token.to_string()).expect("client");
        let response = client
            .get_streamed(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (status, body) = nightowl::cli::http::collect(response).await.expect("body");
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: {status} {e}: {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status.as_u16(), retry_after, json)
    })
}

fn post(collector: &Collector, path: &str, body: String) -> (u16, serde_json::Value) {
    block_on(async {
        let client =
            ApiClient::new(&collector.server(), &collector.ca, collector.token()).expect("client");
        let (status, body) = client
            .post_bytes(path, body.into())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "POST {path}: {status} {e}: {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status.as_u16(), json)
    })
}

fn error_of(json: &serde_json::Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

#[test]
fn a_token_hammering_search_gets_429_while_another_token_still_searches() {
    let root = tempfile::tempdir().expect("tempdir");
    // One request per 100 s after a burst of 5: however slow this machine
    // is, twenty requests in a row overrun it.
    let collector = start(
        root.path(),
        "[limits.api]\nrequests_per_sec = 0.01\nburst = 5\n",
    );
    let (hammer, hammer_file) = collector.new_token("hammer", &["--role", "viewer"]);
    let (other, _) = collector.new_token("other", &["--role", "viewer"]);
    let hammer_id = hammer
        .trim_start_matches("nwl_")
        .split('_')
        .next()
        .expect("token id")
        .to_string();

    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..20 {
        let (status, retry_after, json) = get(&collector, &hammer, "/api/v1/search?q=*");
        statuses.push(status);
        if status == 429 && refusal.is_none() {
            refusal = Some((retry_after, json));
        }
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "the burst is served: {statuses:?}"
    );
    assert!(
        statuses[5..].iter().all(|&s| s == 429),
        "then 429: {statuses:?}"
    );
    let (retry_after, json) = refusal.expect("a 429");
    let retry: u64 = retry_after
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{retry}");
    assert!(
        error_of(&json).contains("limits.api.requests_per_sec"),
        "{json}"
    );
    assert_eq!(json["limit"], "limits.api.requests_per_sec", "{json}");

    // Another token's bucket is its own.
    let (status, _, json) = get(&collector, &other, "/api/v1/search?q=*");
    assert_eq!(status, 200, "{json}");
    // Probes and scrapes are not rate limited.
    for _ in 0..10 {
        let (status, _) = collector.api_get_with_token(&hammer, "/healthz");
        assert_eq!(status, 200);
    }
    let limited = collector.metric("nightowl_api_limited_total{reason=\"rate\"}");
    assert_eq!(limited, 15.0);

    // The refusals are audited like any answer.
    let audit = collector.api_json("/api/v1/audit?limit=1000");
    let refused = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["status"] == 429 && e["actor"] == hammer_id.as_str())
        .count();
    assert_eq!(refused, 15, "{audit}");

    // The CLI says why, and exits 1 (worth retrying later).
    let out = collector.search_with_token_file(&hammer_file, &["*"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("429") && stderr.contains("limits.api.requests_per_sec"),
        "{stderr}"
    );
}

#[test]
fn the_cli_waits_out_a_429_so_a_script_creating_tenants_and_tokens_does_not_fail() {
    let root = tempfile::tempdir().expect("tempdir");
    // Two requests a second after a burst of 3: a script creating 6
    // tenants and 6 tokens runs into the admin token's own rate limit.
    let collector = start(
        root.path(),
        "[limits.api]\nrequests_per_sec = 2.0\nburst = 3\n",
    );
    for i in 0..6 {
        let tenant = format!("t{i}");
        let out = collector.operator(&["tenant", "create", &tenant]);
        assert_eq!(out, format!("tenant {tenant} created"));
        let token =
            collector.operator(&["token", "create", "--tenant", &tenant, "--role", "agent"]);
        assert!(token.starts_with("nwl_"), "{token}");
    }
    let listed = collector.operator(&["tenant", "list"]);
    for i in 0..6 {
        assert!(listed.contains(&format!("t{i}")), "{listed}");
    }
    // The limit did answer 429: the CLI waited and sent again.
    let limited = collector.metric("nightowl_api_limited_total{reason=\"rate\"}");
    assert!(limited >= 1.0, "no request was rate limited ({limited})");
}

#[test]
fn the_cli_says_plainly_when_a_429_asks_for_longer_than_it_waits() {
    let root = tempfile::tempdir().expect("tempdir");
    // After a burst of 2, one request per 100 s: longer than the CLI waits.
    let collector = start(
        root.path(),
        "[limits.api]\nrequests_per_sec = 0.01\nburst = 2\n",
    );
    let mut last = None;
    for i in 0..4 {
        let out = collector.cli_as(
            &collector.token_file,
            &["tenant", "create", &format!("t{i}")],
        );
        last = Some(out);
    }
    let out = last.expect("ran");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("429 Too Many Requests")
            && stderr.contains("retries")
            && stderr.contains("limits.api.requests_per_sec"),
        "{stderr}"
    );
}

#[test]
fn oversized_queries_limits_and_bodies_are_refused_naming_the_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = start(root.path(), "[limits.api]\nmax_body_bytes = 4096\n");
    let token = collector.token();
    let refused = |path: &str, key: &str| {
        let (status, _, json) = get(&collector, &token, path);
        assert_eq!(status, 400, "{path}: {json}");
        assert!(error_of(&json).contains(key), "{path}: {json}");
        error_of(&json).to_string()
    };
    let long = "a".repeat(5000);
    let msg = refused(
        &format!("/api/v1/search?q={long}"),
        "limits.query.max_query_bytes",
    );
    assert!(msg.contains("5000") && msg.contains("4096"), "{msg}");
    let many = (0..300)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    refused(
        &format!("/api/v1/count?q={}", encode_param(&many)),
        "limits.query.max_clauses",
    );
    refused(
        &format!("/api/v1/search?q={}", encode_param("raw:/.*secret/")),
        "wildcard",
    );
    let msg = refused("/api/v1/search?q=*&limit=50000", "limits.query.max_hits");
    assert!(msg.contains("50000") && msg.contains("10000"), "{msg}");
    refused(
        "/api/v1/top?field=status&limit=5000",
        "limits.query.max_top_values",
    );
    refused(
        "/api/v1/histogram?q=*&since=30d&interval=1s",
        "limits.query.max_histogram_buckets",
    );
    // Within the limits the same routes answer.
    let (status, _, json) = get(&collector, &token, "/api/v1/search?q=*&limit=10000");
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        collector.metric("nightowl_api_limited_total{reason=\"query_shape\"}"),
        6.0
    );

    // A body over the API cap: 413 before any handler reads it.
    let big = format!("{{\"rules\":\"{}\"}}", "x".repeat(10_000));
    let (status, json) = post(&collector, "/api/v1/rules/backtest", big.clone());
    assert_eq!(status, 413, "{json}");
    assert!(
        error_of(&json).contains("limits.api.max_body_bytes") && error_of(&json).contains("4096"),
        "{json}"
    );
    let (status, json) = post(&collector, "/api/v1/tokens", big);
    assert_eq!(status, 413, "{json}");
    // Ingest keeps its own, larger cap.
    let lines: String = (0..200)
        .map(|i| format!("ingest line {i} padding padding padding\n"))
        .collect();
    assert!(lines.len() > 4096);
    let (status, json) = post(&collector, "/api/v1/ingest", lines);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["accepted"], 200, "{json}");

    // The CLI prints the server's reason and exits 2: the query is the
    // caller's to fix.
    let out = collector.search(&[&long]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("limits.query.max_query_bytes"),
        "{}",
        stderr_of(&out)
    );
    let out = collector.search(&["--limit", "50000", "*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("limits.query.max_hits"),
        "{}",
        stderr_of(&out)
    );
}

/// Reads until the server closes the connection; what it sent before.
/// Err when it did not close within `guard` (a generous failure guard,
/// not a measured duration).
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    guard: Duration,
) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(guard, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return Err(format!("still open after {guard:?}")),
        }
    }
}

#[test]
fn slowloris_connections_are_closed_and_do_not_block_others() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = start(root.path(), "[limits.api]\nheader_read_timeout_secs = 1\n");
    let addr = collector.api_addr.clone();
    let ca = collector.ca.clone();
    let connect_tls = |addr: String, ca: std::path::PathBuf| async move {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("tcp connect");
        let name = nightowl::transport::tls::server_name(&addr).expect("server name");
        tokio_rustls::TlsConnector::from(nightowl::transport::tls::client_config(&ca).expect("tls"))
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    };

    block_on(async {
        // Half a request header, then nothing.
        let mut half = connect_tls(addr.clone(), ca.clone()).await;
        half.write_all(b"GET /api/v1/search?q=x HTTP/1.1\r\nHost: nightowl\r\nAuthor")
            .await
            .expect("half a header");
        half.flush().await.expect("flush");
        // TLS done, not a byte of HTTP.
        let mut silent = connect_tls(addr.clone(), ca.clone()).await;
        // Not even TLS.
        let mut raw = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("raw tcp");

        // Meanwhile others are served, several times over.
        let token = collector.token();
        for _ in 0..5 {
            let client =
                ApiClient::new(&collector.server(), &collector.ca, token.clone()).expect("client");
            let (status, body) = client.get("/api/v1/count?q=*").await.expect("count");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }

        let guard = Duration::from_secs(60);
        let sent = read_until_closed(&mut half, guard)
            .await
            .expect("a half-sent header is cut off");
        let text = String::from_utf8_lossy(&sent);
        assert!(
            sent.is_empty() || text.starts_with("HTTP/1.1 408"),
            "nothing but a timeout answer: {text}"
        );
        read_until_closed(&mut silent, guard)
            .await
            .expect("a silent TLS connection is closed");
        read_until_closed(&mut raw, guard)
            .await
            .expect("a connection that never starts TLS is closed");
    });
    // And the server still serves afterwards.
    let json = collector.api_json("/api/v1/count?q=*");
    assert_eq!(json["count"], 0, "{json}");
}

#[test]
fn a_search_past_its_deadline_is_stopped_and_answers_503_naming_the_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    // 1 ms: loading and parsing ten thousand hits takes far longer.
    let collector = start(root.path(), "[limits.query]\ntimeout_ms = 1\n");
    let lines: String = (0..20_000)
        .map(|i| {
            format!(
                "10.0.{}.{} deadline test line number {i}\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    let (status, json) = post(&collector, "/api/v1/ingest", lines);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["accepted"], 20_000, "{json}");
    wait_until("20000 lines indexed", || {
        (collector.metric("nightowl_lines_indexed_total") >= 20_000.0).then_some(())
    });

    let (status, _, json) = get(
        &collector,
        &collector.token(),
        "/api/v1/search?q=*&limit=10000",
    );
    assert_eq!(status, 503, "{json}");
    let error = error_of(&json);
    assert!(
        error.contains("limits.query.timeout_ms") && error.contains("1 ms"),
        "{json}"
    );
    assert!(collector.metric("nightowl_api_limited_total{reason=\"query_timeout\"}") >= 1.0);
    // Its slots were given back.
    wait_until("no search running", || {
        (collector.metric("nightowl_api_searches_running") == 0.0).then_some(())
    });

    let out = collector.search(&["--limit", "10000", "*"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("limits.query.timeout_ms"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn one_token_cannot_hold_every_search_slot_and_the_node_caps_the_total() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = start(
        root.path(),
        "[limits.api]\nmax_concurrent_per_token = 1\nmax_concurrent_searches = 2\nqueue_timeout_ms = 100\n",
    );
    let operator = collector.token();
    let (admin2, _) = collector.new_token("admin2", &["--tenant", "default", "--role", "admin"]);
    let (viewer, _) = collector.new_token("viewer", &["--role", "viewer"]);
    // An export holds its slots until its body is read to the end. ~30 MB
    // of NDJSON cannot sit in the export channel and the socket buffers,
    // so an unread export stays in flight as long as this test wants.
    let padding = "x".repeat(1250);
    for part in 0..3 {
        let lines: String = (0..8000)
            .map(|i| format!("export part {part} line {i} {padding}\n"))
            .collect();
        let (status, json) = post(&collector, "/api/v1/ingest", lines);
        assert_eq!(status, 200, "{json}");
    }
    wait_until("24000 lines indexed", || {
        (collector.metric("nightowl_lines_indexed_total") >= 24_000.0).then_some(())
    });

    block_on(async {
        let client = |token: &str| {
            ApiClient::new(&collector.server(), &collector.ca, token.to_string()).expect("client")
        };
        let held = client(&operator)
            .get_streamed("/api/v1/tenants/default/export")
            .await
            .expect("export");
        assert_eq!(held.status(), 200);

        // The same token's next search: over its own cap.
        let (status, body) = client(&operator)
            .get("/api/v1/search?q=*")
            .await
            .expect("search");
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 429, "{text}");
        assert!(
            text.contains("limits.api.max_concurrent_per_token"),
            "{text}"
        );
        // Another token still searches: one node slot of two is free.
        let (status, body) = client(&viewer)
            .get("/api/v1/count?q=*")
            .await
            .expect("count");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

        // A second export takes the node's last slot: every other token
        // waits briefly, then gets 503.
        let held2 = client(&admin2)
            .get_streamed("/api/v1/tenants/default/export")
            .await
            .expect("export 2");
        assert_eq!(held2.status(), 200);
        let (status, body) = client(&viewer)
            .get("/api/v1/count?q=*")
            .await
            .expect("count");
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("limits.api.max_concurrent_searches"),
            "{text}"
        );

        // Hanging up gives the slots back.
        drop(held);
        drop(held2);
    });
    wait_until("the operator searches again", || {
        let (status, _) = collector.api_get("/api/v1/count?q=*");
        (status == 200).then_some(())
    });
    wait_until("no search slot held", || {
        (collector.metric("nightowl_api_searches_running") == 0.0).then_some(())
    });
    assert!(collector.metric("nightowl_api_limited_total{reason=\"token_concurrency\"}") >= 1.0);
    assert!(collector.metric("nightowl_api_limited_total{reason=\"overloaded\"}") >= 1.0);
}

#[test]
fn connections_over_the_per_ip_cap_are_closed_at_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = start(
        root.path(),
        "[limits.api]\nmax_connections_per_ip = 2\nheader_read_timeout_secs = 120\n",
    );
    let addr = collector.api_addr.clone();
    block_on(async {
        // Two idle connections from 127.0.0.1 take its two places.
        let first = tokio::net::TcpStream::connect(&addr).await.expect("first");
        let second = tokio::net::TcpStream::connect(&addr).await.expect("second");
        // Accepted then closed: the third sees EOF (or a reset) at once,
        // long before any timeout of this test.
        let mut third = tokio::net::TcpStream::connect(&addr).await.expect("third");
        read_until_closed(&mut third, Duration::from_secs(60))
            .await
            .expect("the connection over the cap is closed");
        let client =
            ApiClient::new(&collector.server(), &collector.ca, collector.token()).expect("client");
        assert!(
            client.get("/api/v1/count?q=*").await.is_err(),
            "no request gets through while the cap is held"
        );
        // A place freed: requests are served again.
        drop(first);
        drop(second);
        wait_until_async(|| async {
            matches!(client.get("/api/v1/count?q=*").await, Ok((s, _)) if s == 200)
        })
        .await;
    });
    assert!(collector.metric("nightowl_api_limited_total{reason=\"connections\"}") >= 2.0);
}

/// Polls `f` until true, within a generous failure guard.
async fn wait_until_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(common::POLL).await;
    }
    panic!("condition not met within 60 s");
}
