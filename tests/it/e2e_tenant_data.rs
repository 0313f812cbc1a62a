//! A tenant's data can be exported (streamed NDJSON), purged (for good,
//! replay included) and expires with its retention, never touching another
//! tenant's lines.

use crate::common;

use common::{files_holding, stderr_of, wait_until, Collector, Settings};
use std::path::Path;

/// Ships `text` as `name` with the agent token in `token_file`; waits for
/// the agent to have everything acknowledged.
fn ship(collector: &Collector, name: &str, token_file: &Path, text: &str) {
    let file = collector.root.join(format!("{name}.log"));
    std::fs::write(&file, text).expect("write log");
    let mut agent = collector.agent_as(name, token_file, &[&file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
}

fn lines(marker: &str, n: usize, days_ago: i64) -> String {
    lines_on(
        marker,
        n,
        time::OffsetDateTime::now_utc() - time::Duration::days(days_ago),
    )
}

/// Like `lines`, dated on the day of `day`: a test that counts partitions
/// dates every line from one instant, so a run across midnight does not
/// split "today" in two.
fn lines_on(marker: &str, n: usize, day: time::OffsetDateTime) -> String {
    let stamp = day
        .format(&time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]"
        ))
        .expect("format");
    (0..n)
        .map(|i| {
            format!(
                "10.2.0.{} - - [{stamp}:{:02} +0000] \"GET /{marker}/{i} HTTP/1.1\" 200 10 \"-\" \"curl/8\"\n",
                i % 250,
                i % 60
            )
        })
        .collect()
}

#[test]
fn export_then_purge_a_tenant_leaving_the_others_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    collector.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (acme_viewer, acme_viewer_file) =
        collector.new_token("acme-viewer", &["--tenant", "acme", "--role", "viewer"]);
    let (_, acme_admin) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    ship(&collector, "acme", &acme_agent, &lines("acmeline", 50, 0));
    ship(
        &collector,
        "default",
        &collector.token_file,
        &lines("defaultline", 20, 0),
    );
    wait_until("acme's lines", || {
        (collector.count_as(&acme_viewer, "*") == 50).then_some(())
    });
    collector.wait_for_count("*", 20);

    // Export: every line once, oldest first, as NDJSON.
    let export = root.path().join("acme.ndjson");
    let out = collector.cli_as(
        &acme_admin,
        &[
            "tenant",
            "export",
            "acme",
            "--output",
            export.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&export)
        .expect("export")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a tenant's export is owner-only");
    let text = std::fs::read_to_string(&export).expect("export");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|r| r["raw"]
        .as_str()
        .is_some_and(|raw| raw.contains("/acmeline/"))));
    let stamps: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["timestamp"].as_str())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    // Only the tenant's admins export it; other tenants do not even exist.
    let out = collector.cli_as(&acme_viewer_file, &["tenant", "export", "acme"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = collector.cli_as(&acme_admin, &["tenant", "export", "default"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr_of(&out).contains("no tenant"), "{}", stderr_of(&out));

    // Purge: confirmation required, then the lines are gone at once.
    let out = collector.cli_as(&acme_admin, &["tenant", "purge", "acme"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = collector.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(collector.count_as(&acme_viewer, "*"), 0);
    assert!(!collector.data_dir.join("index").join("acme").exists());
    assert_eq!(collector.count("*"), 20, "another tenant's lines stay");

    // The purge is audited, and the tenant's earlier audit entries (its
    // export among them) outlive its data: the audit log is not the
    // tenant's to purge.
    let audit = collector.audit_entries();
    let acme_entry = |path: &str| {
        audit
            .iter()
            .find(|e| e["tenant"] == "acme" && e["path"].as_str().is_some_and(|p| p.contains(path)))
            .unwrap_or_else(|| panic!("no acme entry for {path} in {audit:?}"))
    };
    let purge = acme_entry("/api/v1/tenants/acme/purge");
    assert_eq!(purge["method"], "POST");
    assert_eq!(purge["role"], "admin");
    assert_eq!(purge["status"], 200);
    assert_eq!(acme_entry("/export")["status"], 200);
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));

    // A crash and WAL replay do not bring them back.
    collector.kill();
    collector.restart();
    assert_eq!(collector.count_as(&acme_viewer, "*"), 0);
    collector.wait_for_count("*", 20);

    // Lines received after the purge are the tenant's new data.
    ship(
        &collector,
        "acme-after",
        &acme_agent,
        &lines("newline", 5, 0),
    );
    wait_until("new acme lines", || {
        (collector.count_as(&acme_viewer, "*") == 5).then_some(())
    });
}

#[test]
fn retention_deletes_whole_old_days_and_keeps_them_from_coming_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let start = time::OffsetDateTime::now_utc();
    let days_ago = |days| start - time::Duration::days(days);
    let collector = Collector::start(root.path(), Settings::default());
    collector.operator(&["tenant", "create", "shop"]);
    let (_, agent) = collector.new_token("agent", &["--tenant", "shop", "--role", "agent"]);
    let (viewer, _) = collector.new_token("viewer", &["--tenant", "shop", "--role", "viewer"]);
    ship(
        &collector,
        "old",
        &agent,
        &lines_on("oldday", 10, days_ago(10)),
    );
    ship(&collector, "new", &agent, &lines_on("today", 7, start));
    wait_until("all lines", || {
        (collector.count_as(&viewer, "*") == 17).then_some(())
    });
    let partitions = || {
        std::fs::read_dir(collector.data_dir.join("index").join("shop"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(partitions(), 2);

    let out = collector.operator(&["tenant", "create", "shop", "--retention-days", "3"]);
    assert!(out.contains("updated"), "{out}");
    wait_until("the old day to expire", || {
        (collector.count_as(&viewer, "*") == 7).then_some(())
    });
    // The catalog forgets the day before its directory is deleted.
    wait_until("the old day's directory to go", || {
        (partitions() == 1).then_some(())
    });

    // Late lines of an expired day are not indexed again.
    ship(
        &collector,
        "late",
        &agent,
        &lines_on("latearrival", 4, days_ago(9)),
    );
    ship(&collector, "fresh", &agent, &lines_on("fresh", 3, start));
    wait_until("fresh lines", || {
        (collector.count_as(&viewer, "fresh") == 3).then_some(())
    });
    assert_eq!(collector.count_as(&viewer, "latearrival"), 0);
    assert_eq!(partitions(), 1);
    // They were acknowledged (durable), so leaving them out is counted and
    // logged, never silent.
    assert_eq!(collector.metric("nightowl_lines_past_retention_total"), 4.0);
    let log = collector.stderr();
    assert!(
        log.contains("before the tenant's retention") && log.contains("tenant=shop"),
        "{log}"
    );
}

/// `n` failed logins from `ip` with `agent` as the user agent, live.
fn failed_logins(ip: &str, n: usize, agent: &str) -> String {
    let now = common::now_unix();
    (0..n)
        .map(|i| {
            format!(
                "{ip} - - [{}] \"POST /login HTTP/1.1\" 401 10 \"-\" \"{agent}\"\n",
                common::nginx_time(now - 60 + i as i64, 0)
            )
        })
        .collect()
}

#[test]
fn purge_forgets_rule_and_alert_state_and_leaves_no_byte_of_the_tenant_on_disk() {
    let root = tempfile::tempdir().expect("tempdir");
    let rules = root.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("bf.yaml"),
        "id: purge-bf\ntitle: brute force\nseverity: critical\n\
         match: {field: status, equals: 401}\n\
         detect: {kind: threshold, key: client_ip, window: 10m, count: 5}\n",
    )
    .expect("rule");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(rules),
            ..Settings::default()
        },
    );
    // Pages go to a receiver that is down: they wait in the outbox.
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
    collector.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (_, acme_admin) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let alerts_of = |token_file: &Path| -> Vec<serde_json::Value> {
        let out = collector.cli_as(token_file, &["alerts", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        common::stdout_of(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON alert"))
            .collect()
    };

    // acme: one address fired (an alert, a page waiting), another is one
    // failure short of firing (rule state), and a silence.
    let marker = "acme-secret-agent-7f3a9";
    // Alongside the lines: a silence comment and a search query of acme's
    // carry the marker too (the alert store and the audit log).
    let mut text = failed_logins("198.51.100.7", 5, marker);
    text.push_str(&failed_logins("198.51.100.8", 4, marker));
    ship(&collector, "acme", &acme_agent, &text);
    ship(
        &collector,
        "default",
        &collector.token_file,
        &failed_logins("192.0.2.1", 5, "default-agent"),
    );
    wait_until("both tenants' alerts", || {
        (alerts_of(&acme_admin).len() == 1 && alerts_of(&collector.token_file).len() == 1)
            .then_some(())
    });
    let out = collector.cli_as(
        &acme_admin,
        &[
            "alerts",
            "silence",
            "add",
            "--matcher",
            "key=10.9.9.9",
            "--duration",
            "2h",
            "--comment",
            &format!("acme maintenance {marker}"),
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = collector.cli_as(&acme_admin, &["search", "--since", "1h", "--count", marker]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(common::stdout_of(&out).trim(), "9");
    let silences = collector.cli_as(&acme_admin, &["alerts", "silence", "list", "--json"]);
    assert_eq!(common::stdout_of(&silences).lines().count(), 1);
    // The test proves something only if the tenant's bytes were on disk:
    // WAL, index, rule snapshot and alert store.
    wait_until(
        "the marker in the WAL, the index, the rule snapshot and the alert store",
        || {
            let found = files_holding(&collector.data_dir, marker.as_bytes());
            let within = |part: &str, how: &str| {
                found
                    .iter()
                    .any(|(p, h)| p.to_string_lossy().contains(part) && *h == how)
            };
            (within("rules", "raw")
                && within("alerting", "raw")
                && within("wal", "raw")
                && within("index", "zstd"))
            .then_some(())
        },
    );
    let audited = |entries: &[serde_json::Value]| {
        entries
            .iter()
            .find(|e| e["tenant"] == "acme" && e["path"] == "/api/v1/count")
            .cloned()
            .unwrap_or_else(|| panic!("acme's search is audited: {entries:?}"))
    };
    let search = audited(&collector.audit_entries());
    assert!(
        search["query"].as_str().is_some_and(|q| q.contains(marker)),
        "{search}"
    );

    let out = collector.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let said = common::stdout_of(&out);
    assert!(
        said.contains("2 rule state keys") && said.contains("1 alerts"),
        "{said}"
    );
    assert!(said.contains("audit data key"), "{said}");
    assert!(
        !stderr_of(&out).contains("WAL segments"),
        "{}",
        stderr_of(&out)
    );
    // Once the purge answered, no file holds a byte of it, raw or in a
    // zstd block: not the WAL (the other tenant's records shared its
    // segments), not the alert store's freed pages, not the audit log.
    let left = files_holding(&collector.data_dir, marker.as_bytes());
    assert!(left.is_empty(), "still holding the marker: {left:?}");
    assert!(
        !files_holding(&collector.data_dir, b"default-agent").is_empty(),
        "the scan finds the other tenant's lines"
    );
    // The audit keeps who searched, not what.
    let search = audited(&collector.audit_entries());
    assert_eq!(search["sealed"], "shredded", "{search}");
    assert_eq!(search["query"], serde_json::Value::Null, "{search}");
    assert!(alerts_of(&acme_admin).is_empty());
    let silences = collector.cli_as(&acme_admin, &["alerts", "silence", "list", "--json"]);
    assert_eq!(common::stdout_of(&silences).trim(), "", "silences are gone");
    assert_eq!(
        alerts_of(&collector.token_file).len(),
        1,
        "another tenant's alert stays"
    );

    // The address one short of firing starts over: one more failure does
    // not fire. The other tenant's next brute force, shipped after it,
    // shows the rules have seen acme's line.
    ship(
        &collector,
        "acme-after",
        &acme_agent,
        &failed_logins("198.51.100.8", 1, "after-purge"),
    );
    ship(
        &collector,
        "default-after",
        &collector.token_file,
        &failed_logins("192.0.2.2", 5, "default-agent"),
    );
    wait_until("the other tenant's second alert", || {
        (alerts_of(&collector.token_file).len() == 2).then_some(())
    });
    assert!(alerts_of(&acme_admin).is_empty(), "purged state fired");

    // Nor after a restart (the WAL replayed, the stores reopened), and the
    // audit chain still verifies.
    collector.terminate();
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
    collector.restart();
    let left = files_holding(&collector.data_dir, marker.as_bytes());
    assert!(left.is_empty(), "after a restart: {left:?}");
}
