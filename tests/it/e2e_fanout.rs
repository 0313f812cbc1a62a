//! Search fan-out: node A with `[cluster] peers = [B]` answers searches,
//! counts, histograms and top values over both nodes' indexes, keeps
//! tenants apart, and says `partial` (naming B) once B is gone, while the
//! CLI still prints A's numbers and warns on stderr.

use crate::common;

use crate::e2e_web::start_browser;
use common::{nginx_time, now_unix, stderr_of, stdout_of, wait_until, Collector, Settings};
use serde_json::json;
use std::path::Path;

/// `n` access-log lines with `marker` in the path and `status`, spread
/// over the last few minutes (never in the future: the histogram ends now).
fn lines(marker: &str, n: u64, status: u16, first_secs_ago: i64) -> String {
    let now = now_unix();
    (0..n)
        .map(|i| {
            format!(
                "10.3.0.{} - - [{}] \"GET /{marker}/{i} HTTP/1.1\" {status} 10 \"-\" \"curl/8\"\n",
                i % 250,
                nginx_time(now - first_secs_ago + i as i64, 0)
            )
        })
        .collect()
}

/// Ships `text` to `collector` with the token in `token_file`; waits until
/// the agent has everything acknowledged.
fn ship(collector: &Collector, name: &str, token_file: &Path, text: &str) {
    let file = collector.root.join(format!("{name}.log"));
    std::fs::write(&file, text).expect("write log");
    let mut agent = collector.agent_as(name, token_file, &[&file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
}

/// GET with `token`; the status and the JSON body.
fn get_json(collector: &Collector, token: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = collector.api_get_with_token(token, path);
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

fn count_of(collector: &Collector, token: &str, query: &str) -> serde_json::Value {
    let path = format!(
        "/api/v1/count?q={}",
        nightowl::http_client::encode_param(query)
    );
    let (status, json) = get_json(collector, token, &path);
    assert_eq!(status, 200, "{json}");
    json
}

fn raws(answer: &serde_json::Value) -> Vec<String> {
    answer["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["raw"].as_str().expect("raw").to_string())
        .collect()
}

/// Copies B's credentials and TLS material into A's (not yet started)
/// data dir: both nodes then accept the same tokens and A's own CA
/// verifies B.
fn share_identity(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tls")).expect("mkdir tls");
    for file in ["tokens.json", "tenants.json", "admin.token"] {
        std::fs::copy(from.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        std::fs::copy(from.join("tls").join(file), to.join("tls").join(file))
            .unwrap_or_else(|e| panic!("copying tls/{file}: {e}"));
    }
}

#[test]
fn a_search_on_one_node_covers_its_peer_and_says_when_it_is_missing() {
    let root_a = tempfile::tempdir().expect("tempdir");
    let root_b = tempfile::tempdir().expect("tempdir");
    // B first: A's config names B's address, and A takes B's tokens.
    let mut b = Collector::start(root_b.path(), Settings::default());
    b.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) = b.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (acme_viewer, _) = b.new_token("acme-viewer", &["--tenant", "acme", "--role", "viewer"]);
    share_identity(&b.data_dir, &root_a.path().join("data"));
    let a = Collector::start(
        root_a.path(),
        Settings {
            extra_toml: format!(
                "[cluster]\npeers = [\"{}\"]\ntimeout_ms = 10000\n",
                b.server()
            ),
            ..Settings::default()
        },
    );
    let admin = a.token();
    assert_eq!(admin, b.token(), "the nodes share the admin token");

    // Different data on each node: default tenant and acme.
    ship(
        &a,
        "a-default",
        &a.token_file,
        &lines("alphaline", 30, 200, 600),
    );
    ship(
        &b,
        "b-default",
        &b.token_file,
        &lines("betaline", 20, 404, 300),
    );
    ship(&a, "a-acme", &acme_agent, &lines("acmeline", 5, 200, 400));
    ship(&b, "b-acme", &acme_agent, &lines("acmeline", 7, 500, 200));
    // Each node's own shard (`local=true`) holds only its lines, in the
    // single-node shape: no `partial`, no `shards`.
    wait_until("A's 30 lines indexed", || {
        let (_, json) = get_json(&a, &admin, "/api/v1/count?q=*&local=true");
        (json["count"] == 30).then_some(json)
    });
    let (_, local) = get_json(&a, &admin, "/api/v1/count?q=*&local=true");
    assert_eq!(local, serde_json::json!({"count": 30}), "single-node shape");
    b.wait_for_count("*", 20);
    wait_until("acme's lines on both nodes", || {
        let (_, on_a) = get_json(&a, &acme_viewer, "/api/v1/count?q=*&local=true");
        let on_a = on_a["count"].as_u64();
        let on_b = count_of(&b, &acme_viewer, "*")["count"].as_u64();
        (on_a == Some(5) && on_b == Some(7)).then_some(())
    });

    // Count through A: both nodes, via the CLI too, and not partial.
    assert_eq!(a.count("*"), 50);
    let out = a.search(&["--count", "*"]);
    assert!(
        !stderr_of(&out).contains("partial"),
        "no warning when all answered: {}",
        stderr_of(&out)
    );
    let count = count_of(&a, &admin, "*");
    assert_eq!(count["count"], 50);
    assert_eq!(count["partial"], false);
    assert_eq!(
        count["shards"],
        serde_json::json!({"total": 2, "failed": []})
    );

    // Hits through A include the lines only B holds, newest first.
    let (status, hits) = get_json(&a, &admin, "/api/v1/search?q=betaline&limit=100");
    assert_eq!(status, 200, "{hits}");
    let found = raws(&hits);
    assert_eq!(found.len(), 20, "{found:?}");
    assert!(found.iter().all(|r| r.contains("/betaline/")), "{found:?}");
    let (_, all) = get_json(&a, &admin, "/api/v1/search?q=*&limit=100");
    assert_eq!(all["hits"].as_array().expect("hits").len(), 50);
    let instants: Vec<i128> = all["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            time::OffsetDateTime::parse(
                h["timestamp"].as_str().expect("timestamp"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339")
            .unix_timestamp_nanos()
        })
        .collect();
    assert!(
        instants.windows(2).all(|w| w[0] >= w[1]),
        "hits not newest first: {instants:?}"
    );
    // The limit applies to the merged list: the 10 newest of both nodes
    // are B's (its lines are the most recent).
    let (_, ten) = get_json(&a, &admin, "/api/v1/search?q=*&limit=10");
    let ten = raws(&ten);
    assert_eq!(ten.len(), 10);
    assert!(ten.iter().all(|r| r.contains("/betaline/")), "{ten:?}");

    // Histogram buckets and top values merge.
    let (status, histogram) = get_json(&a, &admin, "/api/v1/histogram?q=*&since=1h");
    assert_eq!(status, 200, "{histogram}");
    let total: u64 = histogram["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, 50, "{histogram}");
    assert_eq!(histogram["partial"], false);
    let (status, top) = get_json(&a, &admin, "/api/v1/top?q=*&field=status&limit=5");
    assert_eq!(status, 200, "{top}");
    let values: Vec<(u64, u64)> = top["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            (
                v["value"].as_f64().expect("numeric status") as u64,
                v["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(values, vec![(200, 30), (404, 20)], "{top}");
    assert_eq!(top["field"], "status");

    // Patterns: acme's `/acmeline/<*>` lines are one pattern on both nodes
    // (an id is its statement's hash), counted together, series summed.
    let (status, patterns) = get_json(&a, &acme_viewer, "/api/v1/patterns?q=*&since=1h");
    assert_eq!(status, 200, "{patterns}");
    let list = patterns["patterns"].as_array().expect("patterns");
    assert_eq!(list.len(), 1, "{patterns}");
    assert_eq!(list[0]["count"], 12, "{patterns}");
    let series_sum: u64 = list[0]["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(series_sum, 12, "{patterns}");
    assert!(
        list[0]["template"]
            .as_str()
            .is_some_and(|t| t.contains("acmeline")),
        "{patterns}"
    );
    assert_eq!(patterns["partial"], false, "{patterns}");
    let (_, local) = get_json(&a, &acme_viewer, "/api/v1/patterns?q=*&since=1h&local=true");
    assert_eq!(local["patterns"][0]["count"], 5, "{local}");

    // Isolation: acme's token sees acme's lines of both nodes, nothing else.
    assert_eq!(count_of(&a, &acme_viewer, "*")["count"], 12);
    assert_eq!(count_of(&a, &acme_viewer, "betaline")["count"], 0);
    let (_, acme_hits) = get_json(&a, &acme_viewer, "/api/v1/search?q=*&limit=100");
    let acme_hits = raws(&acme_hits);
    assert_eq!(acme_hits.len(), 12, "{acme_hits:?}");
    assert!(acme_hits.iter().all(|r| r.contains("/acmeline/")));
    let (_, acme_top) = get_json(&a, &acme_viewer, "/api/v1/top?q=*&field=status");
    assert_eq!(
        acme_top["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v["count"].as_u64().expect("count"))
            .sum::<u64>(),
        12,
        "{acme_top}"
    );

    // A token B does not know (created on A only): B's 401 makes the
    // answer partial, A's own shard still counts.
    let (a_only, _) = a.new_token("a-only", &["--role", "viewer"]);
    let partial = count_of(&a, &a_only, "*");
    assert_eq!(partial["count"], 30, "{partial}");
    assert_eq!(partial["partial"], true, "{partial}");
    let failed = &partial["shards"]["failed"];
    assert_eq!(failed[0]["node"], b.server(), "{partial}");
    assert!(
        failed[0]["error"].as_str().expect("error").contains("401"),
        "{partial}"
    );

    // B is gone: partial, naming B; the CLI prints A's count on stdout,
    // warns on stderr and exits 0.
    b.kill();
    let partial = count_of(&a, &admin, "*");
    assert_eq!(partial["count"], 30, "{partial}");
    assert_eq!(partial["partial"], true);
    assert_eq!(partial["shards"]["total"], 2);
    assert_eq!(partial["shards"]["failed"][0]["node"], b.server());
    let out = a.search(&["--count", "*"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), "30");
    let warning = stderr_of(&out);
    assert!(
        warning.contains("partial results: 1 of 2 shards answered")
            && warning.contains(&b.server()),
        "{warning}"
    );
    let out = a.search(&["--json", "*"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).lines().count(), 30);
    assert!(stderr_of(&out).contains(&b.server()));
    let (status, hist) = get_json(&a, &admin, "/api/v1/histogram?q=*&since=1h");
    assert_eq!((status, &hist["partial"]), (200, &serde_json::json!(true)));
    // `local=true` is never partial: it does not ask peers at all.
    let (_, local) = get_json(&a, &admin, "/api/v1/count?q=*&local=true");
    assert_eq!(local, serde_json::json!({"count": 30}));
}

/// Peers that refuse the connection or never answer (a listener nobody
/// accepts on: the TLS handshake hangs) make every kind of answer partial,
/// each named with its own reason, while this node's data still comes back.
#[test]
fn refused_and_silent_peers_are_named_and_the_local_shard_still_answers() {
    let root = tempfile::tempdir().expect("tempdir");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("https://{}", silent.local_addr().expect("addr"));
    let refused_url = format!("https://127.0.0.1:{}", common::free_port());
    let a = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!(
                "[cluster]\npeers = [\"{silent_url}\", \"{refused_url}/\"]\ntimeout_ms = 500\n"
            ),
            ..Settings::default()
        },
    );
    let admin = a.token();
    ship(&a, "a", &a.token_file, &lines("onlyhere", 12, 200, 300));
    wait_until("12 lines indexed", || {
        let (_, json) = get_json(&a, &admin, "/api/v1/count?q=*&local=true");
        (json["count"] == 12).then_some(())
    });

    let count = count_of(&a, &admin, "*");
    assert_eq!(count["count"], 12, "{count}");
    assert_eq!(count["partial"], true);
    assert_eq!(count["shards"]["total"], 3);
    let failed = count["shards"]["failed"].as_array().expect("failed");
    assert_eq!(failed.len(), 2, "{count}");
    let reason = |node: &str| {
        failed
            .iter()
            .find(|f| f["node"] == node)
            .unwrap_or_else(|| panic!("{node} not named in {count}"))["error"]
            .as_str()
            .expect("error")
            .to_string()
    };
    assert!(
        reason(&silent_url).contains("no answer within 500 ms"),
        "{count}"
    );
    // Named as configured, minus the trailing slash.
    assert!(reason(&refused_url).contains("connecting to"), "{count}");

    for path in [
        "/api/v1/search?q=onlyhere&limit=5",
        "/api/v1/histogram?q=*&since=1h",
        "/api/v1/top?q=*&field=status",
    ] {
        let (status, json) = get_json(&a, &admin, path);
        assert_eq!(status, 200, "{path}: {json}");
        assert_eq!(json["partial"], true, "{path}: {json}");
    }
    let (_, hits) = get_json(&a, &admin, "/api/v1/search?q=onlyhere&limit=5");
    assert_eq!(raws(&hits).len(), 5);

    // The CLI: hits on stdout, one warning line per missing node on stderr.
    let out = a.search(&["onlyhere"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).lines().count(), 12);
    let warning = stderr_of(&out);
    assert!(
        warning.contains("partial results: 1 of 3 shards answered"),
        "{warning}"
    );
    assert!(
        warning.contains(&silent_url) && warning.contains(&refused_url),
        "{warning}"
    );

    // The page says so too, as text.
    let (_chromedriver, d) = start_browser(root.path());
    d.call(
        "POST",
        "/url",
        Some(json!({ "url": format!("https://{}/", a.api_addr) })),
    );
    d.type_into("#token", &admin);
    d.click("#login-form button");
    d.type_into("#q", "onlyhere");
    d.click("#search-form button");
    let count = d.wait_find("#count");
    wait_until("the match count", || {
        (d.text(&count) == "12 matches").then_some(())
    });
    let notice = d.wait_find("#partial");
    let text = wait_until("the partial notice", || {
        let text = d.text(&notice);
        (!text.is_empty()).then_some(text)
    });
    assert!(
        text.contains("partial results: 1 of 3 shards answered") && text.contains(&silent_url),
        "{text}"
    );
    d.call("DELETE", "", None);
    drop(silent);
}
