//! Secrets out of the agent's disk and out of the audit log (issue 16,
//! part 3), attacked as the attack run did:
//!
//! - an access log carries a password, a custom-named PIN, a curl command
//!   line and a card number while the collector is DOWN, so the lines sit
//!   in the agent's spool: no file of the agent's state dir holds any of
//!   them, the spool holds the markers instead (the PIN's from the rule the
//!   collector sent at the last connection), and once the collector is
//!   back every line arrives exactly once;
//! - searches carry a token in the query string, a card number and an AWS
//!   key typed as search terms: the audit log records each search, masked,
//!   and holds none of the secrets.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A configured name: only the collector's rules know it, so a marker
/// for it in the spool proves the agent redacts with them.
const REDACT_TOML: &str = "[redact]\nnames = [\"pin\"]\n";

fn grep_dir(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let mut found = Vec::new();
    for path in files {
        let Ok(bytes) = fs::read(&path) else {
            continue; // removed while we looked (a rolled segment)
        };
        let decoded = zstd_frames(&bytes);
        for needle in needles {
            if contains(&bytes, needle.as_bytes()) || contains(&decoded, needle.as_bytes()) {
                found.push((path.clone(), needle.to_string()));
            }
        }
    }
    found
}

#[test]
fn the_agents_spool_holds_no_secret_while_the_collector_is_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            extra_toml: REDACT_TOML.into(),
            ..Settings::default()
        },
    );
    let state = root.path().join("agent-state");
    let log = root.path().join("access.log");
    let stamp = nginx_time(now_unix(), 0);
    let line = |i: u32, request: &str| {
        format!(
            "203.0.113.{i} - - [{stamp}] \"GET {request} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"\n"
        )
    };
    // One connection first: the agent learns the collector's rules.
    fs::write(&log, line(1, "/warmup/spoolwarm")).expect("write");
    let mut agent = collector.spawn_agent("agent", &state, &[&log]);
    collector.wait_for_count("spoolwarm", 1);
    wait_until("the collector's rules in the state dir", || {
        fs::read_to_string(state.join("redact-rules.json"))
            .ok()
            .filter(|r| r.contains("pin"))
    });

    // The collector goes down; the web server keeps logging secrets.
    collector.terminate();
    let card = "4539578763621486";
    let secrets = [
        "Sp00lPassw0rdX",
        "918273645",
        "CurlSecr3tPw",
        card,
        "MysqlSpoolPw9",
    ];
    let mut text = String::new();
    text.push_str(&line(
        2,
        "/loginanchor?user=bob&password=Sp00lPassw0rdX&next=/",
    ));
    text.push_str(&line(3, "/unlockanchor?pin=918273645&door=2"));
    text.push_str(&line(4, &format!("/payanchor?card={card}&amount=12")));
    text.push_str(&format!(
        "{stamp} cron[812]: cronanchor (root) CMD (curl -sf -u backup:CurlSecr3tPw https://backup.local/run)\n"
    ));
    text.push_str(&format!(
        "{stamp} app: mysqlanchor ran mysqldump -u root -pMysqlSpoolPw9 shop\n"
    ));
    for i in 0..20 {
        text.push_str(&line(10 + i, &format!("/plain/spoolplain{i}")));
    }
    common::append(&log, &text);
    let size = fs::metadata(&log).expect("log").len();
    wait_agent_read(&state, &log, size);

    let leaks = grep_dir(&state, &secrets);
    assert!(
        leaks.is_empty(),
        "the agent's state dir holds secrets: {leaks:?}"
    );
    // Positive control: the spool does hold those lines, redacted, and the
    // PIN by the collector's own rule.
    let markers = grep_dir(
        &state.join("spool"),
        &[
            "[REDACTED:password]",
            "[REDACTED:pin]",
            "[REDACTED:card]",
            "spoolplain19",
        ],
    );
    assert_eq!(markers.len(), 4, "{markers:?}");

    // Back up: every line once, redacted, in source offsets (the agent's
    // acked offset is the file's size).
    collector.restart();
    collector.wait_for_count("plain", 20);
    collector.wait_for_count("*", 26);
    for (query, marker) in [
        ("loginanchor", "password=[REDACTED:password]"),
        ("unlockanchor", "pin=[REDACTED:pin]"),
        ("payanchor", "card=[REDACTED:card]"),
        ("cronanchor", "backup:[REDACTED:password]"),
        ("mysqlanchor", "-p[REDACTED:password]"),
    ] {
        let body = collector.api_json(&format!("/api/v1/search?q={query}&limit=5"));
        let hits = body["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), 1, "{query}: {body}");
        let raw = hits[0]["raw"].as_str().expect("raw");
        assert!(raw.contains(marker), "{query}: {raw}");
    }
    wait_until("the agent's acks to reach the end of the file", || {
        let status = agent_status(&state)?;
        let f = file_status(&status, &log)?;
        (f["acked"].as_u64()? == size).then_some(())
    });
    // A restart of the agent resends nothing twice.
    agent.kill();
    let mut agent = collector.spawn_agent("agent-again", &state, &[&log]);
    common::append(&log, &line(99, "/after/spoolafter"));
    collector.wait_for_count("spoolafter", 1);
    assert_eq!(collector.count("*"), 27, "no line lost or duplicated");
    agent.kill();
    collector.terminate();
    let leaks = grep_dir(&collector.data_dir, &secrets);
    assert!(leaks.is_empty(), "the data dir holds secrets: {leaks:?}");
}

#[test]
fn the_audit_log_records_searches_with_their_secrets_masked() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    let token = collector.token();
    let (_, secret) = token
        .trim_start_matches("nwl_")
        .split_once('_')
        .expect("token shape");
    let card = "4539578763621486";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let encode = nightowl::http_client::encode_param;
    let asks = [
        // A token pasted into the query string (refused: unknown field,
        // and audited all the same).
        format!("/api/v1/search?q=*&token={token}"),
        format!("/api/v1/search?q={}", encode(&format!("card:{card}"))),
        format!("/api/v1/count?q={}", encode(aws)),
        format!(
            "/api/v1/search?q={}",
            encode("path:\"/login?password=AuditPassw0rd\"")
        ),
    ];
    for ask in &asks {
        let (status, body) = collector.api_get_with_token(&token, ask);
        assert!(
            status == 200 || status == 400,
            "{ask}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let entries = collector.audit_entries();
    let searches: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p == "/api/v1/search" || p == "/api/v1/count")
        })
        .collect();
    assert_eq!(searches.len(), asks.len(), "{entries:?}");
    let queries: Vec<&str> = searches
        .iter()
        .map(|e| e["query"].as_str().unwrap_or_default())
        .collect();
    assert!(queries[0].contains("token=[REDACTED:token]"), "{queries:?}");
    assert!(queries[1].contains("card:[REDACTED:card]"), "{queries:?}");
    assert!(queries[2].contains("[REDACTED:aws_key]"), "{queries:?}");
    assert!(
        queries[3].contains("password=[REDACTED:password]"),
        "{queries:?}"
    );
    collector.terminate();
    let log = collector.data_dir.join("audit").join("audit.log");
    let text = fs::read_to_string(&log).expect("audit log");
    for needle in [secret, card, aws, "AuditPassw0rd"] {
        assert!(!text.contains(needle), "audit.log holds {needle}:\n{text}");
    }
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
}
