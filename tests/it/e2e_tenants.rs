//! Tenants and tokens: the tenant of a line or a query comes from the
//! credential alone; tokens are scoped to their tenant's admin; revoking a
//! token cuts off an agent connection that is already open.

use crate::common;

use common::{stderr_of, stdout_of, wait_until, Collector, Settings};

fn lines(marker: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("10.1.0.{} - - [10/Oct/2026:12:00:{:02} +0000] \"GET /{marker}/{i} HTTP/1.1\" 200 12 \"-\" \"curl/8\"\n", i % 250, i % 60)
        })
        .collect()
}

#[test]
fn each_tenant_sees_only_its_own_lines_whatever_the_request_says() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let out = collector.cli_as(
        &collector.token_file,
        &["tenant", "create", "acme", "--retention-days", "3650"],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));

    let (_, acme_agent) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (acme_viewer, acme_viewer_file) =
        collector.new_token("acme-viewer", &["--tenant", "acme", "--role", "viewer"]);
    let (_, acme_admin_file) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let admin_token = std::fs::read_to_string(&collector.token_file).expect("admin token");
    let admin_token = admin_token.trim();

    let acme_log = root.path().join("acme.log");
    let default_log = root.path().join("default.log");
    std::fs::write(&acme_log, lines("acmeonly", 40)).expect("write");
    std::fs::write(&default_log, lines("defaultonly", 25)).expect("write");
    let mut a = collector.agent_as("a", &acme_agent, &[&acme_log], true);
    assert!(a.wait().success(), "{}", a.stderr());
    let mut d = collector.agent_as("d", &collector.token_file, &[&default_log], true);
    assert!(d.wait().success(), "{}", d.stderr());

    wait_until("acme's lines searchable", || {
        (collector.count_as(&acme_viewer, "*") == 40).then_some(())
    });
    collector.wait_for_count("*", 25);
    assert_eq!(collector.count_as(&acme_viewer, "defaultonly"), 0);
    assert_eq!(collector.count_as(admin_token, "acmeonly"), 0);

    // The tenant is never a request field: naming another tenant is refused.
    for path in [
        "/api/v1/search?q=*&tenant=default",
        "/api/v1/count?q=*&tenant=default",
        "/api/v1/histogram?q=*&tenant=default",
    ] {
        let (status, body) = collector.api_get_with_token(&acme_viewer, path);
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("defaultonly"));
    }
    // ... and the search CLI as acme's viewer finds none of default's lines.
    let out = collector.cli_as(&acme_viewer_file, &["search", "--count", "defaultonly"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), "0");

    // A viewer administers nothing; a tenant admin only its tenant.
    let out = collector.cli_as(&acme_viewer_file, &["token", "create", "--role", "viewer"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = collector.cli_as(
        &acme_admin_file,
        &["token", "create", "--tenant", "default", "--role", "viewer"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("administers tenant \"acme\" only"),
        "{}",
        stderr_of(&out)
    );
    let out = collector.cli_as(&acme_admin_file, &["tenant", "create", "evil"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = collector.cli_as(&acme_admin_file, &["token", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listed = stdout_of(&out);
    assert_eq!(
        listed.lines().count(),
        3,
        "acme's three tokens only: {listed}"
    );
    assert!(
        listed.lines().all(|l| l.contains("\"tenant\":\"acme\"")),
        "{listed}"
    );
    assert!(
        !listed.contains("sha256") && !listed.contains("salt"),
        "{listed}"
    );
    let operator_id = admin_token.split('_').nth(1).expect("id");
    let out = collector.cli_as(&acme_admin_file, &["token", "revoke", operator_id]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr_of(&out).contains("no token"), "{}", stderr_of(&out));

    // Unknown tenants get no tokens.
    let out = collector.cli_as(
        &collector.token_file,
        &["token", "create", "--tenant", "nope", "--role", "viewer"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("unknown tenant"),
        "{}",
        stderr_of(&out)
    );

    // An allowlisted token works only from its addresses.
    let (fenced, _) = collector.new_token(
        "fenced",
        &[
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--allow-ip",
            "10.0.0.0/8",
        ],
    );
    let (status, _) = collector.api_get_with_token(&fenced, "/api/v1/count?q=*");
    assert_eq!(status, 401);
    let (local, _) = collector.new_token(
        "local",
        &[
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--allow-ip",
            "127.0.0.1",
        ],
    );
    assert_eq!(collector.count_as(&local, "*"), 40);
}

#[test]
fn a_revoked_token_is_cut_off_on_its_open_connection() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let (agent_token, agent_file) = collector.new_token("agent", &["--role", "agent"]);
    let log = root.path().join("live.log");
    std::fs::write(&log, lines("before", 10)).expect("write");
    let mut tailing = collector.agent_as("tailing", &agent_file, &[&log], false);
    collector.wait_for_count("before", 10);

    let id = agent_token.split('_').nth(1).expect("id");
    let out = collector.cli_as(&collector.token_file, &["token", "revoke", id]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = collector.cli_as(&collector.token_file, &["token", "list", "--json"]);
    assert!(stdout_of(&out)
        .lines()
        .any(|l| l.contains(id) && l.contains("revoked_unix")));

    // The agent's next batch on the same connection is refused.
    common::append(&log, &lines("after", 5));
    wait_until("the agent to be told its token is revoked", || {
        let stderr = tailing.stderr();
        (stderr.contains("token revoked") || stderr.contains("invalid token")).then_some(())
    });
    // A revoked token will not come back: the agent stops with the reason,
    // its unacked lines kept in its state dir for a new token.
    assert!(!tailing.wait().success(), "{}", tailing.stderr());
    assert_eq!(
        collector.count("after"),
        0,
        "no line is accepted after revocation"
    );
    let (status, _) = collector.api_get_with_token(&agent_token, "/api/v1/count?q=*");
    assert_eq!(status, 401);
}
