//! Backups end to end: the real collector backed up while a real agent
//! ships, restored into a new data dir where a second collector answers;
//! kill -9 in the middle of a backup; an unwritable destination paging
//! once; S3 through a real S3-compatible server (moto, from PyPI).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::Value;

/// `nightowl backup create --to DEST --json` as the operator.
fn backup_create(c: &Collector, to: &str, extra: &[&str]) -> Output {
    c.cli_as(
        &c.token_file,
        &[&["backup", "create", "--to", to, "--json"], extra].concat(),
    )
}

fn summary_of(out: &Output) -> Value {
    assert!(out.status.success(), "backup create: {}", stderr_of(out));
    serde_json::from_str(stdout_of(out).trim()).expect("the backup summary")
}

fn backup_cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("backup")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running nightowl backup")
}

/// Lines of `text` within its first `offset` bytes.
fn lines_below(text: &str, offset: u64) -> u64 {
    text.as_bytes()[..offset as usize]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// Restores the newest backup at `dest` into `root/data`, then starts a
/// collector there (new ports, the restored TLS material and tokens).
fn restore_and_start(dest: &str, root: &Path) -> Collector {
    let data = root.join("data");
    let out = backup_cli(&[
        "restore",
        "--from",
        dest,
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "restore: {}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("audit key copied"),
        "{}",
        stdout_of(&out)
    );
    Collector::start(root, Settings::default())
}

#[test]
fn backup_during_ingest_restores_what_was_acked_before_the_cut_and_agents_resume() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let c = Collector::start(&root.path().join("a"), Settings::default());
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();
    let log = root.path().join("access.log");
    let state = root.path().join("agent-state");
    fs::write(&log, "").expect("log");
    let mut agent = c.spawn_agent("agent", &state, &[&log]);

    // A writer appends in bursts while backups are taken. Its last burst
    // waits for the first backup, so that backup always runs before the
    // file is complete, however slow the machine.
    let generated = access_log(12_000, 11, &[]);
    let all: Vec<&str> = generated.text.split_inclusive('\n').collect();
    let first_backup_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, lines, first_backup_done) = (
            log.clone(),
            all.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            Arc::clone(&first_backup_done),
        );
        std::thread::spawn(move || {
            let chunks: Vec<&[String]> = lines.chunks(300).collect();
            let (last, bursts) = chunks.split_last().expect("lines");
            for chunk in bursts {
                append(&log, &chunk.concat());
                std::thread::sleep(std::time::Duration::from_millis(40));
            }
            while !first_backup_done.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            append(&log, &last.concat());
        })
    };
    c.wait_for_count_at_least("*", 1_000);
    let first = summary_of(&backup_create(&c, &dest_s, &[]));
    first_backup_done.store(true, Ordering::Release);
    writer.join().expect("writer");
    c.wait_for_count("*", generated.lines);

    // The cut's offset of the one source tells which lines it holds.
    let sources = first["sources"].as_object().expect("sources");
    assert_eq!(sources.len(), 1, "{sources:?}");
    let offset = sources
        .values()
        .next()
        .and_then(Value::as_u64)
        .expect("offset");
    let acked_before_cut = lines_below(&generated.text, offset);
    assert!(
        acked_before_cut >= 1_000 && acked_before_cut < generated.lines,
        "cut at {acked_before_cut} of {} lines",
        generated.lines
    );
    assert_eq!(first["docs"].as_u64(), Some(acked_before_cut));

    // The second backup after the rest of the lines copies a fraction.
    let second = summary_of(&backup_create(&c, &dest_s, &[]));
    let (bytes, copied) = (
        second["bytes"].as_u64().expect("bytes"),
        second["bytes_copied"].as_u64().expect("copied"),
    );
    eprintln!(
        "backups: first {} bytes; second {bytes} bytes of which {copied} copied ({} lines more)",
        first["bytes"],
        generated.lines - acked_before_cut
    );
    assert!(copied > 0 && copied < bytes, "{second}");
    assert_eq!(second["docs"].as_u64(), Some(generated.lines));

    let verified = backup_cli(&["verify", &dest_s]);
    assert!(
        verified.status.success(),
        "verify: {}",
        stderr_of(&verified)
    );
    assert!(
        stdout_of(&verified).contains(&format!("{} documents", generated.lines)),
        "{}",
        stdout_of(&verified)
    );

    // The first backup restored: exactly the lines acked before its cut.
    let first_id = first["id"].as_str().expect("id");
    let early = root.path().join("early");
    let out = backup_cli(&[
        "restore",
        "--from",
        &dest_s,
        "--id",
        first_id,
        "--data-dir",
        early.join("data").to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "restore: {}", stderr_of(&out));
    let e = Collector::start(&early, Settings::default());
    assert_eq!(e.count("*"), acked_before_cut);
    drop(e);

    // The newest backup restored, and the agent moved over to it: it
    // resumes, nothing lost, nothing twice.
    agent.kill();
    let mut c = c;
    c.kill();
    let r = restore_and_start(&dest_s, &root.path().join("restored"));
    assert_eq!(r.count("*"), generated.lines);
    let out = r.audit_verify();
    assert!(out.status.success(), "audit verify: {}", stderr_of(&out));
    let more = access_log(500, 12, &[]);
    append(&log, &more.text);
    let (status, stderr) = r.run_agent_once("agent-after", &state, &[&log]);
    assert!(status.success(), "{stderr}");
    r.wait_for_count("*", generated.lines + more.lines);
    // `agent rewind` resends the whole file under the same source ids:
    // the restored offsets drop all of it as already there.
    let rewound = Command::new(BIN)
        .args(["agent", "rewind", "--state-dir"])
        .arg(&state)
        .output()
        .expect("agent rewind");
    assert!(rewound.status.success(), "{}", stderr_of(&rewound));
    let (status, stderr) = r.run_agent_once("agent-resend", &state, &[&log]);
    assert!(status.success(), "{stderr}");
    assert!(r.metric("nightowl_batches_duplicate_total") > 0.0);
    // Anything wrongly taken in would be searchable after a commit.
    std::thread::sleep(std::time::Duration::from_millis(4 * COMMIT_INTERVAL_MS));
    assert_eq!(r.count("*"), generated.lines + more.lines);
}

#[test]
fn kill_9_in_the_middle_of_a_backup_leaves_no_partial_backup() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut c = Collector::start(
        root.path(),
        Settings {
            // Slow enough to be caught in the middle.
            extra_toml: "[backup]\nmax_bytes_per_sec = 400000\n".into(),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    let generated = access_log(6_000, 21, &[]);
    fs::write(&log, &generated.text).expect("log");
    let (status, stderr) = c.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "{stderr}");
    c.wait_for_count("*", generated.lines);
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();

    let mut create = Command::new(BIN);
    create
        .args(["backup", "create", "--to", &dest_s])
        .arg("--server")
        .arg(c.server())
        .arg("--ca")
        .arg(&c.ca)
        .arg("--token-file")
        .arg(&c.token_file);
    let mut cli = ChildGuard::spawn("backup create", create, &root.path().join("create.stderr"));
    wait_until("some blobs copied", || {
        let mut files = Vec::new();
        files_under(&dest.join("blobs"), &mut files);
        (files.len() >= 3).then_some(())
    });
    c.kill();
    let status = cli.wait();
    assert!(!status.success(), "the CLI must not report success");
    assert!(
        cli.stderr().contains("INCOMPLETE"),
        "the CLI says the backup is incomplete: {}",
        cli.stderr()
    );
    let listed = backup_cli(&["list", &dest_s]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    assert!(
        stdout_of(&listed).contains("INCOMPLETE") && !stdout_of(&listed).contains("documents"),
        "{}",
        stdout_of(&listed)
    );
    let verify = backup_cli(&["verify", &dest_s]);
    assert!(!verify.status.success(), "nothing complete to verify");
    assert!(
        stderr_of(&verify).contains("no complete backup"),
        "{}",
        stderr_of(&verify)
    );

    // Run again after the restart: it completes, reusing what was copied.
    c.restart();
    let done = summary_of(&backup_create(&c, &dest_s, &["--keep", "3"]));
    assert!(
        done["bytes_copied"].as_u64() < done["bytes"].as_u64(),
        "{done}"
    );
    let listed = stdout_of(&backup_cli(&["list", &dest_s]));
    assert!(!listed.contains("INCOMPLETE"), "pruned: {listed}");
    let verify = backup_cli(&["verify", &dest_s]);
    assert!(verify.status.success(), "{}", stderr_of(&verify));

    // A damaged blob: verify names the file it holds.
    let id = done["id"].as_str().expect("id");
    let manifest: Value = serde_json::from_slice(
        &fs::read(dest.join("backups").join(id).join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let victim = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(".store")))
        .expect("a doc store file");
    let sha = victim["sha256"].as_str().expect("sha");
    let blob = dest.join("blobs/sha256").join(&sha[..2]).join(sha);
    let mut bytes = fs::read(&blob).expect("blob");
    bytes[0] ^= 0xff;
    fs::write(&blob, bytes).expect("damage");
    let verify = backup_cli(&["verify", &dest_s]);
    assert!(!verify.status.success());
    let said = stderr_of(&verify);
    assert!(
        said.contains("checksum mismatch") && said.contains(victim["path"].as_str().expect("path")),
        "{said}"
    );
}

#[test]
fn a_scheduled_backup_to_an_unwritable_destination_pages_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let hook = WebhookRecorder::start();
    let blocker = root.path().join("not-a-dir");
    fs::write(&blocker, "a file where the backup dir should be").expect("blocker");
    let dest = blocker.join("backups");
    let c = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!(
                r#"[backup]
to = {:?}
schedule = "every 1s"
[alerting]
resolve_timeout = "120s"
[alerting.route]
receiver = "hook"
group_interval = "1s"
[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{}/hook"
"#,
                dest.display().to_string(),
                hook.port()
            ),
            ..Settings::default()
        },
    );
    wait_until("three failed backups", || {
        (c.metric("nightowl_backup_failures_total") >= 3.0).then_some(())
    });
    let pages = wait_until("the backup page", || {
        let pages: Vec<Request> = hook
            .requests_to("hook")
            .into_iter()
            .filter(|p| p.json["group_labels"]["alertname"] == "nightowl-backup")
            .collect();
        (!pages.is_empty()).then_some(pages)
    });
    let text = pages[0].json.to_string();
    assert!(text.contains("not writable"), "{text}");
    // More failures, still one page.
    let seen = c.metric("nightowl_backup_failures_total");
    wait_until("two more failures", || {
        (c.metric("nightowl_backup_failures_total") >= seen + 2.0).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pages: Vec<Request> = hook
        .requests_to("hook")
        .into_iter()
        .filter(|p| p.json["group_labels"]["alertname"] == "nightowl-backup")
        .collect();
    assert_eq!(pages.len(), 1, "{pages:#?}");
    let status = c.cli_as(&c.token_file, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["health"], "degraded");
    assert_eq!(status["backup"]["last_ok"], false);
    assert!(
        status["backup"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not writable")),
        "{status}"
    );
}

/// A python with moto's S3 server, from `NIGHTOWL_S3_PYTHON` or the
/// virtualenv scripts/test makes (`target/tmp/venv-s3`).
fn moto_python() -> PathBuf {
    if let Some(p) = std::env::var_os("NIGHTOWL_S3_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("venv-s3/bin/python")
}

#[test]
fn backup_to_s3_compatible_storage_and_restore_from_it() {
    let python = moto_python();
    let probe = Command::new(&python)
        .args(["-c", "import moto.server"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "no moto server at {} (scripts/test installs it: pip install -r tests/it/py/s3-requirements.txt)",
        python.display()
    );
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Command::new(&python);
    server
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null());
    let _moto = ChildGuard::spawn("moto", server, &root.path().join("moto.stderr"));
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until("the S3 server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // moto creates a bucket on a PUT of the bucket itself.
    let made = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/nightowl-backups")])
        .output()
        .expect("curl");
    assert!(made.status.success(), "{}", stderr_of(&made));
    // The collector and the CLI both read them.
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let c = Collector::start(
        &root.path().join("a"),
        Settings {
            env: env.clone(),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    let generated = access_log(3_000, 31, &[]);
    fs::write(&log, &generated.text).expect("log");
    let (status, stderr) = c.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "{stderr}");
    c.wait_for_count("*", generated.lines);
    let dest = "s3://nightowl-backups/site-a";
    let first = summary_of(&backup_create(&c, dest, &[]));
    let second = summary_of(&backup_create(&c, dest, &["--keep", "1"]));
    assert!(
        second["bytes_copied"].as_u64() < first["bytes_copied"].as_u64(),
        "{first} {second}"
    );
    assert_eq!(second["pruned_backups"], 1, "{second}");
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("backup")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("running nightowl backup")
    };
    let listed = cli(&["list", dest]);
    assert_eq!(
        stdout_of(&listed).lines().count(),
        1,
        "keep 1: {}",
        stdout_of(&listed)
    );
    let verify = cli(&["verify", dest]);
    assert!(verify.status.success(), "verify: {}", stderr_of(&verify));
    let restored = root.path().join("restored");
    let out = cli(&[
        "restore",
        "--from",
        dest,
        "--data-dir",
        restored.join("data").to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "restore: {}", stderr_of(&out));
    let r = Collector::start(&restored, Settings::default());
    assert_eq!(r.count("*"), generated.lines);
}

fn failed_logins(ip: &str, n: usize, agent: &str) -> String {
    let now = now_unix();
    (0..n)
        .map(|i| {
            format!(
                "{ip} - - [{}] \"POST /login HTTP/1.1\" 401 10 \"-\" \"{agent}\"\n",
                nginx_time(now - 60 + i as i64, 0)
            )
        })
        .collect()
}

#[test]
fn a_purge_removes_the_tenant_from_every_backup() {
    let root = tempfile::tempdir().expect("tempdir");
    let rules = root.path().join("rules");
    fs::create_dir_all(&rules).expect("rules dir");
    fs::write(
        rules.join("bf.yaml"),
        "id: backup-bf\ntitle: brute force\nseverity: critical\n\
         match: {field: status, equals: 401}\n\
         detect: {kind: threshold, key: client_ip, window: 10m, count: 5}\n",
    )
    .expect("rule");
    // Pages go to a receiver that is down: they wait in the outbox.
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(rules),
            extra_toml: format!(
                "[alerting]\n[alerting.route]\nreceiver = \"down\"\ngroup_wait = \"0s\"\n\
                 [[alerting.receivers]]\nname = \"down\"\nkind = \"webhook\"\n\
                 url = \"http://127.0.0.1:{}/hook\"\n",
                free_port()
            ),
            ..Settings::default()
        },
    );
    c.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) = c.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (acme_token, acme_admin) =
        c.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let marker = "acme-backup-secret-4c1d";
    let ship = |name: &str, token: &Path, text: &str| {
        let file = c.root.join(format!("{name}.log"));
        fs::write(&file, text).expect("log");
        let mut agent = c.agent_as(name, token, &[&file], true);
        assert!(agent.wait().success(), "{}", agent.stderr());
    };
    ship(
        "acme",
        &acme_agent,
        &failed_logins("198.51.100.7", 6, marker),
    );
    ship(
        "default",
        &c.token_file,
        &failed_logins("192.0.2.1", 6, "default-agent"),
    );
    // acme searches for its marker (an audit entry holding it, sealed).
    wait_until("acme's lines searchable", || {
        let out = c.cli_as(&acme_admin, &["search", "--since", "1h", "--count", marker]);
        (stdout_of(&out).trim() == "6").then_some(())
    });
    c.wait_for_count("*", 6);
    wait_until("acme's alert", || {
        let out = c.cli_as(&acme_admin, &["alerts", "list", "--json"]);
        (stdout_of(&out).lines().count() == 1).then_some(())
    });
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();
    summary_of(&backup_create(&c, &dest_s, &[]));
    summary_of(&backup_create(&c, &dest_s, &[]));
    // Meaningful only if the backups held it: index files, and the shared
    // stores (rule state, alert store: compressed blobs, `.zst`).
    let found = files_holding(&dest, marker.as_bytes());
    let zst = |(p, _): &(PathBuf, &str)| p.extension().is_some_and(|e| e == "zst");
    assert!(
        found.iter().any(zst) && found.iter().any(|f| !zst(f)),
        "{found:?}"
    );

    let out = c.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("acme removed from 2 backups"),
        "{}",
        stdout_of(&out)
    );
    let left = files_holding(&dest, marker.as_bytes());
    assert!(left.is_empty(), "backups still hold the marker: {left:?}");
    assert!(
        !files_holding(&dest, b"default-agent").is_empty(),
        "the scan finds the other tenant's lines"
    );
    let listed = stdout_of(&backup_cli(&["list", &dest_s]));
    assert_eq!(listed.matches("purged: acme").count(), 2, "{listed}");
    let verify = backup_cli(&["verify", &dest_s]);
    assert!(verify.status.success(), "verify: {}", stderr_of(&verify));

    // Restored: the other tenant's lines are there, acme's are not, and
    // acme's audit entries stay shredded.
    drop(c);
    let r = restore_and_start(&dest_s, &root.path().join("restored"));
    assert_eq!(r.count("*"), 6);
    assert_eq!(r.count_as(&acme_token, "*"), 0);
    let out = r.audit_verify();
    assert!(out.status.success(), "audit verify: {}", stderr_of(&out));
    let entries = r.audit_entries();
    let search = entries
        .iter()
        .find(|e| e["tenant"] == "acme" && e["path"] == "/api/v1/count")
        .unwrap_or_else(|| panic!("acme's search is audited: {entries:?}"));
    assert_eq!(search["sealed"], "shredded", "{search}");
}

#[test]
fn a_backup_missed_while_the_collector_was_down_pages_and_runs_at_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let hook = WebhookRecorder::start();
    let dest = root.path().join("backups");
    let mut c = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!(
                r#"[backup]
to = {:?}
schedule = "every 2s"
keep = 2
[alerting.route]
receiver = "hook"
[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{}/hook"
"#,
                dest.display().to_string(),
                hook.port()
            ),
            ..Settings::default()
        },
    );
    wait_until("a scheduled backup", || {
        (c.metric("nightowl_backups_total") >= 1.0).then_some(())
    });
    c.kill();
    // Down across at least one slot.
    std::thread::sleep(std::time::Duration::from_secs(5));
    c.restart();
    let page = wait_until("the missed (or interrupted) backup's page", || {
        hook.requests_to("hook")
            .into_iter()
            .find(|p| p.json["group_labels"]["alertname"] == "nightowl-backup")
    });
    let text = page.json.to_string();
    assert!(
        text.contains("missed") || text.contains("interrupted"),
        "{text}"
    );
    wait_until("the catch-up backup and more", || {
        (c.metric("nightowl_backups_total") >= 2.0).then_some(())
    });
    // keep = 2 holds at the destination.
    let listed = stdout_of(&backup_cli(&["list", dest.to_str().expect("utf8")]));
    assert!(
        listed.lines().filter(|l| l.contains("documents")).count() <= 3,
        "{listed}"
    );
}
