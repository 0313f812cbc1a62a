//! The audit log: every API access is recorded (who, tenant, IP, what,
//! outcome), admins read it scoped to their tenant, and editing an entry is
//! caught by `nightowl audit verify`.

use crate::common;

use common::{ndjson_of as entries, stderr_of, stdout_of, Collector, Settings};

#[test]
fn every_access_is_audited_scoped_and_tamper_evident() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    let out = collector.cli_as(&collector.token_file, &["tenant", "create", "acme"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (viewer, viewer_file) =
        collector.new_token("viewer", &["--tenant", "acme", "--role", "viewer"]);
    let (_, acme_admin_file) =
        collector.new_token("admin", &["--tenant", "acme", "--role", "admin"]);
    let viewer_id = viewer.split('_').nth(1).expect("id").to_string();

    let out = collector.cli_as(
        &viewer_file,
        &["search", "--since", "1h", "status:500 AND path:/login"],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (status, _) = collector.api_get_with_token("nwl_000000000000_bogus", "/api/v1/count?q=*");
    assert_eq!(status, 401);

    let all = entries(&collector.cli_as(
        &collector.token_file,
        &["audit", "list", "--json", "--limit", "1000"],
    ));
    let search = all
        .iter()
        .find(|e| e["path"] == "/api/v1/search")
        .unwrap_or_else(|| panic!("no search entry in {all:?}"));
    assert_eq!(search["actor"], viewer_id.as_str());
    assert_eq!(search["tenant"], "acme");
    assert_eq!(search["role"], "viewer");
    assert_eq!(search["ip"], "127.0.0.1");
    assert_eq!(search["status"], 200);
    assert!(
        search["query"]
            .as_str()
            .is_some_and(|q| q.contains("q=status:500 AND path:/login")),
        "{search}"
    );
    let refused = all
        .iter()
        .find(|e| e["status"] == 401)
        .unwrap_or_else(|| panic!("the refused request is audited too: {all:?}"));
    assert_eq!(refused["actor"], "");
    let created = all
        .iter()
        .filter(|e| e["path"] == "/api/v1/tokens" && e["method"] == "POST")
        .count();
    assert_eq!(created, 2, "{all:?}");
    assert!(all.iter().any(|e| e["body"]
        .as_str()
        .is_some_and(|b| b.contains("\"role\":\"viewer\""))));
    let seqs: Vec<u64> = all.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // A tenant admin reads its own tenant's entries only; a viewer none.
    let acme = entries(&collector.cli_as(&acme_admin_file, &["audit", "list", "--json"]));
    assert!(!acme.is_empty());
    assert!(acme.iter().all(|e| e["tenant"] == "acme"), "{acme:?}");
    let out = collector.cli_as(&viewer_file, &["audit", "list"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    collector.terminate();
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("chain intact"),
        "{}",
        stdout_of(&out)
    );

    // Someone hides the search: the chain breaks exactly there.
    let log = collector.data_dir.join("audit").join("audit.log");
    let text = std::fs::read_to_string(&log).expect("read audit log");
    let line = text
        .lines()
        .position(|l| l.contains("/api/v1/search"))
        .expect("search line")
        + 1;
    // The query is sealed with the tenant's key, so the search is hidden
    // by rewriting who made it.
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line {
                l.replace("\"ip\":\"127.0.0.1\"", "\"ip\":\"10.9.9.9\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end(), "the line was edited");
    std::fs::write(&log, edited.join("\n") + "\n").expect("edit");
    let out = collector.audit_verify();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("audit.log:{line}: edited")),
        "{stderr}"
    );
}
