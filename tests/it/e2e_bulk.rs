//! Logs from standard shippers without our agent: the Elasticsearch
//! `_bulk` API as Filebeat/Vector send it (per-item errors, good items
//! indexed), HTTP Basic auth as Fluent Bit sends it, and plain NDJSON.

use crate::common;

use base64::Engine as _;
use common::{block_on, stderr_of, stdout_of, wait_until, Collector, Settings, BIN};
use nightowl::cli::http::ApiClient;
use std::process::Command;

fn post(collector: &Collector, token: &str, path: &str, body: String) -> (u16, serde_json::Value) {
    post_as(collector, format!("Bearer {token}"), path, body)
}

fn post_as(
    collector: &Collector,
    authorization: String,
    path: &str,
    body: String,
) -> (u16, serde_json::Value) {
    block_on(async {
        let client = ApiClient::new(&collector.server(), &collector.ca, String::new())
            .expect("client")
            .with_authorization(authorization);
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

fn access_line(ip: &str, path: &str) -> String {
    format!("{ip} - - [24/Nov/2026:10:00:00 +0000] \\\"GET {path} HTTP/1.1\\\" 200 5 \\\"-\\\" \\\"curl/8\\\"")
}

#[test]
fn bulk_items_are_indexed_one_by_one_with_per_item_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    let token = collector.token();
    let doc = |ip: &str, path: &str| {
        format!(
            "{{\"@timestamp\":\"2026-11-24T10:00:00Z\",\"message\":\"{}\",\"host\":{{\"name\":\"web7\"}},\"log\":{{\"file\":{{\"path\":\"/var/log/nginx/access.log\"}}}}}}",
            access_line(ip, path)
        )
    };
    let body = [
        r#"{"index":{"_index":"filebeat-8"}}"#.to_string(),
        doc("10.0.0.1", "/bulk/one"),
        r#"{"create":{"_index":"filebeat-8"}}"#.to_string(),
        doc("10.0.0.2", "/bulk/two?password=hunter2"),
        r#"{"index":{}}"#.to_string(),
        "{not json".to_string(),
        r#"{"delete":{"_index":"filebeat-8","_id":"x"}}"#.to_string(),
        r#"{"index":{}}"#.to_string(),
        r#"{"level":"error","message":"stack\n at main","service":"api"}"#.to_string(),
    ]
    .join("\n")
        + "\n";
    let (status, reply) = post(&collector, &token, "/logs/_bulk", body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["errors"], true);
    let items = reply["items"].as_array().expect("items");
    let statuses: Vec<u64> = items
        .iter()
        .map(|i| {
            let (_, body) = i
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one action");
            body["status"].as_u64().expect("status")
        })
        .collect();
    assert_eq!(statuses, [201, 201, 400, 400, 201], "{reply}");
    assert_eq!(items[0]["index"]["_index"], "filebeat-8");
    assert!(
        items[2]["index"]["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not JSON")),
        "{reply}"
    );
    assert!(
        items[3]["delete"]["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("append-only")),
        "{reply}"
    );

    collector.wait_for_count("*", 3);
    assert_eq!(
        collector.count("path:bulk AND path:one"),
        1,
        "the message is parsed as an access log"
    );
    assert_eq!(collector.count("host:web7"), 2);
    assert_eq!(
        collector.count("hunter2"),
        0,
        "redacted before anything is written"
    );
    assert_eq!(
        collector.count("service"),
        1,
        "a structured document stays JSON"
    );

    // Fluent Bit speaks HTTP Basic: the token is the password.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("fluent:{token}"));
    let body = format!("{{\"index\":{{}}}}\n{}\n", doc("10.0.0.3", "/bulk/basic"));
    let (status, reply) = post_as(&collector, format!("Basic {basic}"), "/_bulk", body.clone());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["errors"], false, "{reply}");
    let (status, _) = post_as(&collector, "Basic Zm9vOmJhcg==".into(), "/_bulk", body);
    assert_eq!(status, 401);

    // A client pointed here to search is told where search is, in
    // Elasticsearch's error shape.
    let (status, reply) = post(&collector, &token, "/logs/_search", "{}".to_string());
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        reply["error"]["type"], "illegal_argument_exception",
        "{reply}"
    );
    assert!(
        reply["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/api/v1/search")),
        "{reply}"
    );

    // Plain NDJSON: JSON documents or raw lines, one per line.
    let ndjson = format!(
        "{}\n{}\n\n{{broken\n",
        access_line("10.0.0.4", "/ndjson/one").replace("\\\"", "\""),
        r#"{"msg":"json line","user":"alice"}"#
    );
    let (status, reply) = post(&collector, &token, "/api/v1/ingest", ndjson);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2, "{reply}");
    assert_eq!(reply["rejected"], 1, "{reply}");
    assert_eq!(reply["errors"][0]["line"], 3, "{reply}");
    collector.wait_for_count("*", 6);
    let out = Command::new(BIN)
        .args(["search", "--server"])
        .arg(collector.server())
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&collector.token_file)
        .args(["--count", "path:ndjson"])
        .output()
        .expect("search");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), "1");

    // The HTTP ingest handles must not keep the sequencer alive: SIGTERM
    // shuts the collector down cleanly.
    let status = collector.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

#[test]
fn a_malformed_action_line_refuses_the_request_as_elasticsearch_does() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let token = collector.token();
    let doc = |path: &str| format!("{{\"message\":\"{}\"}}", access_line("10.0.0.9", path));
    // The second action is cut off: its document would be read as an
    // action, and every later item would answer for the wrong document.
    let body = [
        r#"{"index":{}}"#.to_string(),
        doc("/refused/one"),
        r#"{"index":{"#.to_string(),
        doc("/refused/two"),
        r#"{"index":{}}"#.to_string(),
        doc("/refused/three"),
    ]
    .join("\n")
        + "\n";
    let (status, reply) = post(&collector, &token, "/_bulk", body);
    assert_eq!(status, 400, "{reply}");
    let reason = reply["error"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Malformed action/metadata line [3]"),
        "{reply}"
    );
    assert_eq!(
        reply["error"]["type"], "illegal_argument_exception",
        "{reply}"
    );
    assert_eq!(reply["status"], 400, "{reply}");

    let body = [r#"{"index":{}}"#.to_string(), doc("/accepted/four")].join("\n") + "\n";
    let (status, reply) = post(&collector, &token, "/_bulk", body);
    assert_eq!(status, 200, "{reply}");
    collector.wait_for_count("path:accepted", 1);
    assert_eq!(
        collector.count("path:refused"),
        0,
        "nothing of the refused request was stored"
    );
}

#[test]
fn bulk_ingest_needs_an_agent_token_and_lands_in_its_tenant() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let admin = collector.token();
    collector.operator(&["tenant", "create", "acme"]);
    let agent = collector.operator(&["token", "create", "--tenant", "acme", "--role", "agent"]);
    let viewer = collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let body = "{\"index\":{}}\n{\"message\":\"acme only line\"}\n".to_string();
    let (status, _) = post(&collector, &viewer, "/_bulk", body.clone());
    assert_eq!(status, 403, "a viewer cannot write");
    let (status, reply) = post(&collector, &agent, "/_bulk", body);
    assert_eq!(status, 200, "{reply}");
    wait_until("acme's line", || {
        let (_, body) = collector.api_get_with_token(&viewer, "/api/v1/count?q=acme");
        let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (json["count"] == 1).then_some(())
    });
    let (_, body) = collector.api_get_with_token(&admin, "/api/v1/count?q=acme");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        json["count"], 0,
        "the default tenant does not see acme's line"
    );
}
