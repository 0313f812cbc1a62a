//! Real shippers, unmodified: the official Elasticsearch Python client
//! (elasticsearch-py 8: `info()`, `ping()`, `helpers.bulk` by PUT with the
//! compatible-with media types, gzip bodies, per-item errors, `index()`)
//! and the official OpenTelemetry Python SDK with its OTLP/HTTP log
//! exporter (protobuf, plain and gzip). Every record is searchable once,
//! in the token's tenant, parsed, with its secrets redacted.
//!
//! The clients run from a virtualenv under the target directory, created
//! by the first test that needs it (pip, the versions pinned in
//! `tests/it/py/requirements.txt`); `NIGHTOWL_PY_CLIENTS` names a python
//! that already has them (scripts/test, which .ci/run calls, sets it).

use crate::common;

use common::{wait_until, Collector, Settings};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const PROBE: &str = "import elasticsearch, opentelemetry.exporter.otlp.proto.http";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/py")
        .join(name)
}

/// A python with the clients installed; created once per test run.
fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("NIGHTOWL_PY_CLIENTS") {
            return Ok(PathBuf::from(python));
        }
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("venv-shippers");
        let python = venv.join("bin/python");
        let ready = || {
            Command::new(&python)
                .args(["-c", PROBE])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if ready() {
            return Ok(python);
        }
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(script("requirements.txt")))?;
        if ready() {
            Ok(python)
        } else {
            Err(format!("{} cannot import the clients", python.display()))
        }
    });
    match found {
        Ok(python) => python.clone(),
        Err(e) => panic!(
            "the Python clients are not installable here ({e}); scripts/test installs them, \
             or set NIGHTOWL_PY_CLIENTS to a python that has tests/it/py/requirements.txt"
        ),
    }
}

/// Runs a client script; its TLS trust is the collector's CA only
/// (`REQUESTS_CA_BUNDLE` overrides the clients' own CA settings in
/// python-requests, so it is set rather than inherited).
fn run_client(collector: &Collector, name: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .env("REQUESTS_CA_BUNDLE", &collector.ca)
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .expect("running the python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn wait_count(collector: &Collector, token: &str, query: &str, want: u64) {
    wait_until(&format!("{want} lines matching {query:?}"), || {
        (collector.count_as(token, query) == want).then_some(())
    });
}

fn shop(collector: &Collector) -> (String, String) {
    collector.operator(&["tenant", "create", "shop"]);
    let agent = collector.operator(&["token", "create", "--tenant", "shop", "--role", "agent"]);
    let viewer = collector.operator(&["token", "create", "--tenant", "shop", "--role", "viewer"]);
    (agent, viewer)
}

#[test]
fn the_official_elasticsearch_client_ships_unmodified() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let (agent, viewer) = shop(&collector);
    let ca = collector.ca.display().to_string();
    let out = run_client(
        &collector,
        "es_client.py",
        &[&collector.server(), &ca, &agent],
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("es_client.py printed {out:?}: {e}"));
    assert_eq!(seen["info"]["number"], "8.19.0", "{seen}");
    assert_eq!(seen["ping"], true, "{seen}");
    assert_eq!(seen["health"], "green", "{seen}");
    assert_eq!(seen["license"], "active", "{seen}");
    assert_eq!(seen["bulk"]["ok"], 200, "{seen}");
    assert_eq!(seen["bulk"]["errors"], 0, "{seen}");
    assert_eq!(seen["mixed"]["ok"], 1, "{seen}");
    assert_eq!(
        seen["mixed"]["statuses"],
        serde_json::json!([400, 400]),
        "{seen}"
    );
    assert_eq!(seen["index"], "created", "{seen}");
    assert_eq!(seen["bad_token"], 401, "a wrong token fails the handshake");

    // 200 bulk documents, the mixed batch's survivor, the single document.
    wait_count(&collector, &viewer, "esclient", 202);
    assert_eq!(
        collector.count_as(&viewer, "path:esclient AND host:web1 AND status:200"),
        200,
        "Filebeat-shaped documents are stored as their access-log line"
    );
    assert_eq!(collector.count_as(&viewer, "host:web2"), 1);
    assert_eq!(
        collector.count_as(&viewer, "Es7ClientPassw0rd"),
        0,
        "redacted"
    );
    assert_eq!(collector.count_as(&viewer, "REDACTED"), 1);
    assert_eq!(
        collector.count("esclient"),
        0,
        "another tenant's token sees none of it"
    );
    // The handshake calls are audited under the shipper's token; ingest
    // (like agent batches) is not.
    let audited: Vec<String> = collector
        .audit_entries()
        .iter()
        .filter(|e| e["tenant"] == "shop")
        .filter_map(|e| e["path"].as_str().map(String::from))
        .collect();
    assert!(
        audited.iter().any(|p| p == "/_license"),
        "handshakes audited: {audited:?}"
    );
    assert!(
        !audited
            .iter()
            .any(|p| p.ends_with("_bulk") || p.contains("/_doc")),
        "ingest not audited (its bodies are log lines): {audited:?}"
    );
}

#[test]
fn the_opentelemetry_sdk_ships_logs_over_otlp_http() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let (agent, viewer) = shop(&collector);
    let ca = collector.ca.display().to_string();
    let endpoint = format!("{}/v1/logs", collector.server());
    for compression in ["none", "gzip"] {
        let out = run_client(
            &collector,
            "otel_client.py",
            &[&endpoint, &ca, &agent, compression],
        );
        assert_eq!(out.trim(), "sent", "{out}");
    }
    wait_count(&collector, &viewer, "otlpclient", 100);
    for (query, want) in [
        ("otlpclient AND gzip", 50),
        // Resource attributes: service.name is the app, host.name the host.
        ("otlpclient AND app:checkout AND host:app1", 100),
        // Record attributes mapped to fields by their semantic names.
        ("otlpclient AND status:502", 10),
        // The severity, from the SDK's level (stored in the line).
        ("otlpclient AND ERROR", 10),
        // A secret in an attribute is redacted before anything is stored.
        ("Otlp5ecretPassw0rd", 0),
        ("REDACTED AND otlpclient", 2),
    ] {
        assert_eq!(collector.count_as(&viewer, query), want, "{query}");
    }
    assert_eq!(collector.count("otlpclient"), 0, "only the token's tenant");
}

/// `curl` POSTs `body` to `/v1/logs`; returns the status and the body.
fn post_otlp(
    collector: &Collector,
    token: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("body");
    std::fs::write(&input, body).expect("write body");
    let output = dir.path().join("answer");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&collector.ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Content-Type: {content_type}")])
        .arg("--data-binary")
        .arg(format!("@{}", input.display()))
        .arg("-o")
        .arg(&output)
        .args(["-w", "%{http_code}"])
        .arg(format!("{}/v1/logs", collector.server()))
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("status");
    (status, std::fs::read(&output).unwrap_or_default())
}

#[test]
fn otlp_answers_follow_the_spec() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        root.path(),
        Settings {
            max_line_bytes: Some(2000),
            ..Settings::default()
        },
    );
    let (agent, viewer) = shop(&collector);
    let record = |body: &str| {
        serde_json::json!({
            "timeUnixNano": "1795000000000000000",
            "severityText": "WARN",
            "body": { "stringValue": body },
            "attributes": [{ "key": "url.path", "value": { "stringValue": "/otlpjson/cart" } }],
        })
    };
    let request = serde_json::json!({ "resourceLogs": [{
        "resource": { "attributes": [{ "key": "host.name", "value": { "stringValue": "db1" } }] },
        "scopeLogs": [{ "logRecords": [
            record("otlpjson kept"), record(&"otlpjson too long ".repeat(200)), record("otlpjson kept too"),
        ]}],
    }]});
    let (status, answer) = post_otlp(
        &collector,
        &agent,
        "application/json",
        request.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], "1",
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("max_line_bytes")),
        "{answer}"
    );
    wait_count(&collector, &viewer, "otlpjson", 2);
    assert_eq!(collector.count_as(&viewer, "host:db1 AND path:otlpjson"), 2);

    // An empty protobuf request is valid and answers an empty message.
    let (status, answer) = post_otlp(&collector, &agent, "application/x-protobuf", b"");
    assert_eq!((status, answer.len()), (200, 0));
    // Undecodable: 400 (not retried), a google.rpc.Status with code 3.
    let (status, answer) = post_otlp(&collector, &agent, "application/x-protobuf", b"\x0a\xff");
    assert_eq!(status, 400);
    assert_eq!(&answer[..2], b"\x08\x03", "{answer:?}");
    let (status, _) = post_otlp(&collector, &agent, "text/plain", b"x");
    assert_eq!(status, 415);
    let (status, _) = post_otlp(&collector, &viewer, "application/x-protobuf", b"");
    assert_eq!(status, 403, "a viewer token cannot write");
    let (status, answer) = post_otlp(&collector, "nwl_wrong", "application/json", b"{}");
    assert_eq!(status, 401);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON status");
    assert_eq!(answer["code"], 16, "{answer}");
}
