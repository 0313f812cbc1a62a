//! `nightowl status`: the operator's one-look view of a collector's
//! pipeline (counts, backlog, latencies, rules, paging), admin only; a
//! tenant admin's view is its tenant's (issue 16).

use crate::common;

use common::{nginx_time, now_unix, stderr_of, stdout_of, Collector, Settings};

#[test]
fn status_reports_the_pipeline_to_admins_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let log = root.path().join("access.log");
    let text: String = (0..40)
        .map(|i| format!("10.9.0.{i} - - [24/Nov/2026:10:00:00 +0000] \"GET /s/{i} HTTP/1.1\" 200 1 \"-\" \"x\"\n"))
        .collect();
    std::fs::write(&log, text).expect("write");
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "{stderr}");
    collector.wait_for_count("*", 40);

    let out = collector.cli_as(&collector.token_file, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("JSON");
    assert_eq!(report["health"], "ok", "{report}");
    assert_eq!(report["ingest"]["lines_received"], 40, "{report}");
    assert_eq!(report["ingest"]["lines_indexed"], 40, "{report}");
    assert_eq!(report["ingest"]["lines_waiting"], 0, "{report}");
    assert!(
        report["index"]["commits"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );

    let out = collector.cli_as(&collector.token_file, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.starts_with("health: ok"), "{text}");
    // Values line up in one column, past the longest name of any section.
    let columns: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("  !"))
        .map(|l| {
            let name_end = 2 + l[2..].find(' ').expect("a value after the name");
            name_end + l[name_end..].find(|c| c != ' ').expect("a value")
        })
        .collect();
    assert!(columns.len() > 10, "{text}");
    assert!(columns.iter().all(|&c| c == columns[0]), "{text}");

    let (_, viewer) = collector.new_token("viewer", &["--role", "viewer"]);
    let out = collector.cli_as(&viewer, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Node counters are the operator's: an admin of the default tenant
    // sees them, another tenant's admin sees its own tenant only.
    let (_, default_admin) = collector.new_token("default-admin", &["--role", "admin"]);
    let out = collector.cli_as(&default_admin, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("JSON");
    assert_eq!(report["scope"], "node", "{report}");
    assert_eq!(report["ingest"]["lines_received"], 40, "{report}");

    collector.operator(&["tenant", "create", "acme"]);
    let (_, acme_admin) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let out = collector.cli_as(&acme_admin, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("JSON");
    assert_eq!(report["scope"], "tenant", "{report}");
    assert_eq!(report["tenant"], "acme", "{report}");
    assert_eq!(report["health"], "ok", "{report}");
    assert_eq!(report["alerts"]["firing"], 0, "{report}");
    for node_wide in ["ingest", "index", "rules", "problems"] {
        assert!(report.get(node_wide).is_none(), "{node_wide}: {report}");
    }
    let out = collector.cli_as(&acme_admin, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("tenant: acme"), "{text}");
    assert!(!text.contains("lines_received"), "{text}");
}

/// Lines the index had not committed before a crash are indexed again
/// from the WAL at the next start: counted as replayed, not as lines this
/// start received, so the backlog reads 0 and not "indexed > received".
#[test]
fn lines_replayed_after_a_crash_are_told_apart_from_lines_received() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            // No commit before the kill: every acked line is in the WAL only.
            commit_interval_ms: 600_000,
            ..Settings::default()
        },
    );
    // Today's lines: a day that no longer takes lines is compacted, and
    // its swap commits.
    let now = nginx_time(now_unix(), 0);
    let ship = |name: &str, lines: std::ops::Range<u32>| {
        let log = root.path().join(name);
        let text: String = lines
            .map(|i| format!("10.9.1.{i} - - [{now}] \"GET /r/{i} HTTP/1.1\" 200 1 \"-\" \"x\"\n"))
            .collect();
        std::fs::write(&log, text).expect("write");
        let state = root.path().join(format!("{name}.state"));
        let (status, stderr) = collector.run_agent_once("agent", &state, &[&log]);
        assert!(status.success(), "{stderr}");
    };
    // The first record of a start has retention looked at, which commits:
    // those lines are committed before the ones the crash leaves behind.
    ship("first.log", 0..5);
    collector.wait_for_count("*", 5);
    ship("second.log", 5..35);
    collector.kill();
    collector.restart();
    collector.wait_for_count("*", 35);

    let out = collector.cli_as(&collector.token_file, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("JSON");
    assert_eq!(report["ingest"]["lines_received"], 0, "{report}");
    assert_eq!(report["ingest"]["lines_indexed"], 30, "{report}");
    assert_eq!(report["ingest"]["lines_replayed"], 30, "{report}");
    assert_eq!(report["ingest"]["lines_waiting"], 0, "{report}");
    assert_eq!(collector.metric("nightowl_lines_replayed_total"), 30.0);
}
