//! Tenant isolation, attacked: tenant A's viewer and admin tokens against
//! every HTTP route and the CLI commands over them, with tenant B's name,
//! index or ids put in every parameter, path and body field. No answer
//! may carry one byte of B's data, and B's data must be intact after.

use crate::common;

use common::{stderr_of, stdout_of, wait_until, Collector, Settings};
use serde_json::json;
use std::path::Path;

/// Bytes only tenant B's data holds: its lines' path and user agent, its
/// client address, its silence comment.
const B_MARKERS: [&str; 3] = ["bravosecret", "203.0.113.66", "bravo-maintenance"];

fn b_lines(n: usize) -> String {
    let now = common::now_unix();
    (0..n)
        .map(|i| {
            format!(
                "203.0.113.66 - - [{}] \"POST /bravosecret/login HTTP/1.1\" 401 10 \"-\" \"bravosecret-agent\"\n",
                common::nginx_time(now - 120 + i as i64, 0)
            )
        })
        .collect()
}

fn a_lines(n: usize) -> String {
    let now = common::now_unix();
    (0..n)
        .map(|i| {
            format!(
                "198.51.100.{} - - [{}] \"GET /acme/{i} HTTP/1.1\" 200 10 \"-\" \"acme-agent\"\n",
                i % 250,
                common::nginx_time(now - 120 + i as i64, 0)
            )
        })
        .collect()
}

/// One request with `token`: (status, body as text).
fn call(
    collector: &Collector,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    common::block_on(async {
        let client =
            nightowl::cli::http::ApiClient::new(&collector.server(), &collector.ca, token.into())
                .expect("API client");
        let answer = match (method, body) {
            ("GET", _) => client.get(path).await,
            ("DELETE", _) => client.delete(path).await,
            ("POST", Some(body)) => client.post_json(path, &body).await,
            ("POST", None) => client.post_bytes(path, bytes::Bytes::new()).await,
            ("BULK", Some(body)) => {
                client
                    .post_bytes(path, body.as_str().unwrap_or_default().to_string().into())
                    .await
            }
            other => panic!("unsupported request {other:?}"),
        };
        let (status, body) = answer.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
    })
}

fn assert_no_b_bytes(what: &str, text: &str) {
    for marker in B_MARKERS {
        assert!(
            !text.contains(marker),
            "{what} leaked tenant B's {marker:?}: {text}"
        );
    }
}

fn ship(collector: &Collector, name: &str, token_file: &Path, text: &str) {
    let file = collector.root.join(format!("{name}.log"));
    std::fs::write(&file, text).expect("write log");
    let mut agent = collector.agent_as(name, token_file, &[&file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
}

#[test]
fn tenant_a_never_reads_one_byte_of_tenant_b_whatever_it_asks() {
    let root = tempfile::tempdir().expect("tempdir");
    let rules = root.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("bf.yaml"),
        "id: iso-bf\ntitle: brute force\nseverity: critical\n\
         match: {field: status, equals: 401}\n\
         detect: {kind: threshold, key: client_ip, window: 10m, count: 3}\n",
    )
    .expect("rule");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(rules),
            ..Settings::default()
        },
    );
    // Pages wait in the outbox of a receiver that is down.
    collector.kill();
    common::append(
        &collector.config_path,
        &format!(
            "\n[alerting]\n[alerting.route]\nreceiver = \"down\"\ngroup_wait = \"0s\"\n\
             [[alerting.receivers]]\nname = \"down\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{}/hook\"\n",
            common::free_port()
        ),
    );
    collector.restart();

    for tenant in ["acme", "bravo"] {
        collector.operator(&["tenant", "create", tenant]);
    }
    let token = |name: &str, tenant: &str, role: &str| {
        collector.new_token(name, &["--tenant", tenant, "--role", role])
    };
    let (_, a_agent) = token("a-agent", "acme", "agent");
    let (a_viewer, a_viewer_file) = token("a-viewer", "acme", "viewer");
    let (a_admin, a_admin_file) = token("a-admin", "acme", "admin");
    let (_, b_agent) = token("b-agent", "bravo", "agent");
    let (b_viewer, _) = token("b-viewer", "bravo", "viewer");
    let (b_admin, b_admin_file) = token("b-admin", "bravo", "admin");
    ship(&collector, "acme", &a_agent, &a_lines(30));
    ship(&collector, "bravo", &b_agent, &b_lines(20));
    wait_until("both tenants' lines", || {
        (collector.count_as(&a_viewer, "*") == 30 && collector.count_as(&b_viewer, "*") == 20)
            .then_some(())
    });

    // B's alert (and its page waiting in the outbox), and B's silence.
    let b_alerts = wait_until("B's alert", || {
        let (status, body) = call(&collector, &b_admin, "GET", "/api/v1/alerts", None);
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let alerts = json["alerts"].as_array()?.clone();
        (!alerts.is_empty()).then_some(alerts)
    });
    let b_fingerprint = b_alerts[0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let out = collector.cli_as(
        &b_admin_file,
        &[
            "alerts",
            "silence",
            "add",
            "--matcher",
            "key=192.0.2.9",
            "--duration",
            "2h",
            "--comment",
            "bravo-maintenance",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let b_silence = stdout_of(&out).trim().to_string();
    let b_token_id = b_viewer.split('_').nth(1).expect("token id").to_string();
    // The outbox holds B's page (the receiver is down).
    wait_until("B's page in the outbox", || {
        let (_, body) = call(&collector, &b_admin, "GET", "/api/v1/outbox", None);
        body.contains("bravosecret").then_some(())
    });

    // Every route, with B put wherever a request can name something.
    let q = |path: &str| {
        [
            path.to_string(),
            format!("{path}&tenant=bravo"),
            format!("{path}&index=bravo"),
            format!("{path}&tenant_id=bravo&org=bravo"),
        ]
    };
    let mut gets: Vec<String> = Vec::new();
    for base in [
        "/api/v1/search?q=*",
        "/api/v1/search?q=tenant:bravo",
        "/api/v1/search?q=*&local=true",
        "/api/v1/count?q=*",
        "/api/v1/histogram?q=*&interval=1h",
        "/api/v1/top?q=*&field=path",
        "/api/v1/top?q=*&field=client_ip",
        "/api/v1/top?q=*&field=tenant",
        "/api/v1/firings?limit=100",
        "/api/v1/alerts?all=true",
        "/api/v1/silences?x=1",
        "/api/v1/outbox?x=1",
        "/api/v1/tokens?x=1",
        "/api/v1/tenants?x=1",
        "/api/v1/audit?limit=100000",
        "/api/v1/status?x=1",
        "/api/v1/rules?x=1",
        "/api/v1/tenants/bravo/export?x=1",
        "/api/v1/tenants/acme/export?x=1",
    ] {
        gets.extend(q(base));
    }
    gets.extend(
        [
            "/",
            "/metrics",
            "/healthz",
            "/ui/app.js",
            "/api/v1/tenants/bravo/export",
            "/api/v1/tenants/..%2Fbravo/export",
            "/api/v1/tenants/bravo%00/export",
        ]
        .map(String::from),
    );
    let mut requests: Vec<(&str, String, Option<serde_json::Value>)> =
        gets.into_iter().map(|p| ("GET", p, None)).collect();
    requests.extend([
        ("POST", "/api/v1/tenants/bravo/purge".to_string(), Some(json!({"confirm": "bravo"}))),
        ("POST", format!("/api/v1/alerts/{b_fingerprint}/ack"), None),
        ("POST", format!("/api/v1/alerts/{}/ack", &b_fingerprint[..8]), None),
        ("DELETE", format!("/api/v1/silences/{b_silence}"), None),
        ("DELETE", format!("/api/v1/tokens/{b_token_id}"), None),
        (
            "POST",
            "/api/v1/silences".to_string(),
            Some(json!({"matchers": ["tenant=bravo"], "duration": "1h", "comment": "x", "tenant": "bravo"})),
        ),
        (
            "POST",
            "/api/v1/tokens".to_string(),
            Some(json!({"tenant": "bravo", "role": "viewer"})),
        ),
        (
            "POST",
            "/api/v1/tenants".to_string(),
            Some(json!({"name": "bravo", "retention_days": 1})),
        ),
        (
            "POST",
            "/api/v1/rules/backtest".to_string(),
            Some(json!({
                "rules": "id: x\ntitle: x\nseverity: info\ntenant: bravo\nmatch: {field: status, equals: 401}\ndetect: {kind: match, key: client_ip}\n",
                "since": "7d"
            })),
        ),
        (
            "POST",
            "/api/v1/rules/backtest".to_string(),
            Some(json!({
                "rules": "id: y\ntitle: y\nseverity: info\nmatch: {field: status, equals: 401}\ndetect: {kind: match, key: client_ip}\n",
                "since": "7d"
            })),
        ),
    ]);
    for (who, token) in [("A's viewer", &a_viewer), ("A's admin", &a_admin)] {
        for (method, path, body) in &requests {
            let (status, text) = call(&collector, token, method, path, body.clone());
            assert_no_b_bytes(&format!("{who}: {method} {path} ({status})"), &text);
        }
    }

    // Ingest names B in the index and in the documents: the lines are A's.
    let bulk = [
        r#"{"index":{"_index":"bravo"}}"#,
        r#"{"message":"bulk-injected line","tenant":"bravo","_tenant":"bravo"}"#,
    ]
    .join("\n")
        + "\n";
    for path in ["/bravo/_bulk", "/_bulk?tenant=bravo"] {
        let (status, text) = call(
            &collector,
            &a_admin,
            "BULK",
            path,
            Some(serde_json::Value::String(bulk.clone())),
        );
        assert_eq!(status, 200, "{path}: {text}");
    }
    wait_until("A's bulk lines in A", || {
        (collector.count_as(&a_viewer, "bulk-injected") == 2).then_some(())
    });
    assert_eq!(collector.count_as(&b_viewer, "bulk-injected"), 0);

    // The CLI over the same API, as A's viewer and admin.
    let commands: Vec<Vec<&str>> = vec![
        vec!["search", "--json", "--limit", "1000", "*"],
        vec!["search", "--json", "tenant:bravo"],
        vec!["search", "--count", "*"],
        vec!["alerts", "list", "--json", "--all"],
        vec!["alerts", "ack", &b_fingerprint],
        vec!["alerts", "silence", "list", "--json"],
        vec!["alerts", "silence", "expire", &b_silence],
        vec!["token", "list", "--json"],
        vec!["token", "revoke", &b_token_id],
        vec!["tenant", "list"],
        vec!["tenant", "export", "bravo"],
        vec!["tenant", "purge", "bravo", "--yes"],
        vec!["audit", "list", "--json"],
        vec!["status", "--json"],
    ];
    for (who, file) in [("A's viewer", &a_viewer_file), ("A's admin", &a_admin_file)] {
        for args in &commands {
            let out = collector.cli_as(file, args);
            let text = format!("{}{}", stdout_of(&out), stderr_of(&out));
            assert_no_b_bytes(&format!("{who}: nightowl {}", args.join(" ")), &text);
        }
    }

    // B is intact: its lines, alert, silence, page and token.
    assert_eq!(collector.count_as(&b_viewer, "*"), 20);
    assert_eq!(collector.count_as(&b_viewer, "bravosecret"), 20);
    let (_, alerts) = call(&collector, &b_admin, "GET", "/api/v1/alerts", None);
    assert!(alerts.contains(&b_fingerprint), "{alerts}");
    assert!(
        !alerts.contains("\"acked\""),
        "A acknowledged B's alert: {alerts}"
    );
    let (_, silences) = call(&collector, &b_admin, "GET", "/api/v1/silences", None);
    assert!(silences.contains(&b_silence) && silences.contains("bravo-maintenance"));
    assert!(!silences.contains("\"expired\""), "{silences}");
    let (status, _) = call(&collector, &b_viewer, "GET", "/api/v1/count?q=*", None);
    assert_eq!(status, 200, "B's token still works");
}
