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

/// The acceptance attack: delete one entry and re-chain the rest with the
/// public SHA-256 recipe (every line's hash rewritten, as a script would).
fn delete_and_rehash(text: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(index);
    let mut out = String::new();
    let mut prev = String::new();
    for (i, line) in lines.iter().enumerate() {
        let open = &line[..line.rfind(",\"hash\":\"").expect("hash field")];
        let mut entry: serde_json::Value =
            serde_json::from_str(&format!("{open}}}")).expect("entry");
        let open = if i >= index {
            entry["seq"] = serde_json::json!(entry["seq"].as_u64().expect("seq") - 1);
            entry["prev"] = serde_json::json!(prev);
            let body = serde_json::to_string(&entry).expect("json");
            body[..body.len() - 1].to_string()
        } else {
            open.to_string()
        };
        prev = hex::encode(Sha256::digest(open.as_bytes()));
        out.push_str(&format!("{open},\"hash\":\"{prev}\"}}\n"));
    }
    out
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_rewritten_or_cut_audit_log_is_named_and_stops_the_collector_until_a_new_chain() {
    let root = tempfile::tempdir().expect("tempdir");
    let hook = common::WebhookRecorder::start();
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    syslog
        .set_read_timeout(Some(common::DEADLINE))
        .expect("timeout");
    let witness_dir = root.path().join("witness");
    std::fs::create_dir_all(&witness_dir).expect("witness dir");
    let witness_file = witness_dir.join("checkpoints.log");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!(
                "[audit]\ncheckpoint_interval_secs = 1\nwitness_webhook = {:?}\n\
                 witness_syslog = \"udp://{}\"\nwitness_file = {:?}\n",
                hook.url("/witness"),
                syslog.local_addr().expect("addr"),
                witness_file.display().to_string()
            ),
            ..Settings::default()
        },
    );
    // The key is not in the data dir.
    let key = root.path().join("data-keys").join("audit.key");
    assert!(key.exists());
    let mut datagram = vec![0u8; 4096];
    let n = syslog
        .recv(&mut datagram)
        .expect("a checkpoint over syslog");
    let datagram = String::from_utf8_lossy(&datagram[..n]).into_owned();
    assert!(
        datagram.starts_with("<110>1 ") && datagram.contains("audit-checkpoint - {\"checkpoint\":"),
        "{datagram}"
    );
    for i in 0..20 {
        collector.count(&format!("status:{}", 200 + i));
    }
    collector.terminate();
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("chain intact"),
        "{}",
        stdout_of(&out)
    );

    // What the witnesses hold verifies against the untouched log.
    let received: String = hook
        .requests_to("/witness")
        .iter()
        .map(|r| format!("{}\n", r.text()))
        .collect();
    assert!(received.lines().count() >= 2, "{received}");
    let webhook_copy = root.path().join("webhook-witness.log");
    std::fs::write(&webhook_copy, &received).expect("write");
    let syslog_copy = root.path().join("syslog-witness.log");
    std::fs::write(&syslog_copy, format!("{datagram}\n")).expect("write");
    let verify_with = |witnesses: &[&std::path::Path]| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["audit", "verify", "--data-dir"])
            .arg(&collector.data_dir);
        for w in witnesses {
            cmd.arg("--witness").arg(w);
        }
        cmd.output().expect("audit verify")
    };
    let out = verify_with(&[&webhook_copy, &syslog_copy, &witness_file]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    let audit = collector.data_dir.join("audit");
    let log = audit.join("audit.log");
    let checkpoints = audit.join("checkpoints.log");
    let original = std::fs::read_to_string(&log).expect("read");
    let original_checkpoints = std::fs::read_to_string(&checkpoints).expect("read");
    let lines = original.lines().count();
    let restore = || {
        std::fs::write(&log, &original).expect("restore");
        std::fs::write(&checkpoints, &original_checkpoints).expect("restore");
    };
    // Each attack: `audit verify` exits 1 naming it, the collector refuses
    // to start (exit 2) saying what is wrong and how to go on.
    let attacked = |what: &str, named: &str| {
        let out = collector.audit_verify();
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(
            stderr_of(&out).contains(named),
            "{what}: {}",
            stderr_of(&out)
        );
        let out = collector.start_refused(&[]);
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        let said = stderr_of(&out);
        assert!(
            said.contains("does not verify")
                && said.contains(named)
                && said.contains("--audit-new-chain"),
            "{what}: {said}"
        );
    };

    std::fs::write(&log, delete_and_rehash(&original, 10)).expect("attack");
    attacked("delete and rehash", "forged");
    restore();

    let mut kept: Vec<&str> = original.lines().collect();
    kept.remove(10);
    std::fs::write(&log, kept.join("\n") + "\n").expect("attack");
    attacked("delete one entry", "removed");
    let out = collector.audit_verify();
    assert!(
        stderr_of(&out).contains("audit.log:11: removed: the entry with seq 10 is missing"),
        "{}",
        stderr_of(&out)
    );
    restore();

    std::fs::write(&log, first_lines(&original, lines - 5)).expect("attack");
    attacked("cut the last 5 entries", "truncated");
    restore();

    // Cut into the last entry, or junk added after it: `verify` cannot
    // tell that from a crash mid-append, so it says so and fails.
    for (what, text) in [
        (
            "cut into the last entry",
            original[..original.len() - 50].to_string(),
        ),
        (
            "junk appended",
            format!("{original}{{\"seq\":99999,\"note\":\"added"),
        ),
    ] {
        std::fs::write(&log, text).expect("attack");
        let out = collector.audit_verify();
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let said = stderr_of(&out);
        // A cut the checkpoints cover is named as such; bytes after the
        // last entry (a checkpointed one) only as bytes that do not parse.
        let named = if what == "junk appended" {
            said.contains("do not parse")
        } else {
            said.contains("do not parse") || said.contains("truncated")
        };
        assert!(named, "{what}: {said}");
        restore();
    }

    // Cut together with the local checkpoints, consistently: only the
    // witnesses can tell, and they do.
    std::fs::write(&log, first_lines(&original, lines - 5)).expect("attack");
    std::fs::write(&checkpoints, first_lines(&original_checkpoints, 1)).expect("attack");
    let out = verify_with(&[]);
    assert!(
        out.status.success(),
        "locally consistent: {}",
        stderr_of(&out)
    );
    let out = verify_with(&[&webhook_copy]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_of(&out).contains("webhook-witness.log") && stderr_of(&out).contains("truncated"),
        "{}",
        stderr_of(&out)
    );
    // The collector checks its witness file at start.
    let out = collector.start_refused(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr_of(&out).contains("witness"), "{}", stderr_of(&out));

    // Told to, it starts a new chain: the cut log is moved aside and the
    // new chain's first entry says why.
    collector.restart_with(&["--audit-new-chain"]);
    let entries = collector.audit_entries();
    let start = &entries[0];
    assert_eq!(start["path"], "/audit/chain", "{start}");
    let body: serde_json::Value =
        serde_json::from_str(start["body"].as_str().expect("body")).expect("json");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--audit-new-chain")),
        "{body}"
    );
    assert!(body["problems"].to_string().contains("truncated"), "{body}");
    let moved = audit.join(body["previous_log"].as_str().expect("moved"));
    assert_eq!(
        std::fs::read_to_string(&moved).expect("moved log"),
        first_lines(&original, lines - 5)
    );
    collector.terminate();
    let out = collector.audit_verify();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The witness file holds the old chain's checkpoints too; the new
    // chain names it as its predecessor, so a plain restart is fine.
    collector.restart();
    collector.terminate();
}
