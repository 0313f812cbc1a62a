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

/// A purge, then a disaster: the data dir is restored from a backup taken
/// before the tenant's lines arrived (the purge cleaned that backup too).
/// The tenant's agent reconnects with its old state: it must not resend
/// what the purge deleted.
#[test]
fn a_backup_restored_after_a_purge_does_not_take_the_purged_lines_back() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let c = Collector::start(&root.path().join("a"), Settings::default());
    c.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) = c.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (acme_token, acme_admin) =
        c.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();
    summary_of(&backup_create(&c, &dest_s, &[]));

    let marker = "acme-purged-then-restored-31c9";
    let log = root.path().join("acme.log");
    fs::write(&log, failed_logins("198.51.100.7", 40, marker)).expect("log");
    let state = root.path().join("acme-agent-state");
    let ship_to = |collector: &Collector| {
        let out = Command::new(BIN)
            .args(["agent", "--collector", &collector.agent_addr, "--ca"])
            .arg(&collector.ca)
            .arg("--token-file")
            .arg(&acme_agent)
            .arg("--state-dir")
            .arg(&state)
            .arg("--once")
            .arg(&log)
            .output()
            .expect("running the agent");
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    ship_to(&c);
    wait_until("acme's lines searchable", || {
        let out = c.cli_as(&acme_admin, &["search", "--since", "1h", "--count", marker]);
        (stdout_of(&out).trim() == "40").then_some(())
    });
    let out = c.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("acme removed from 1 backups"),
        "{}",
        stdout_of(&out)
    );
    drop(c);

    let r = restore_and_start(&dest_s, &root.path().join("restored"));
    ship_to(&r);
    // One more line after the purge does arrive: the agent is connected.
    fs::write(
        &log,
        format!(
            "{}{}",
            fs::read_to_string(&log).expect("log"),
            failed_logins("198.51.100.8", 1, "after-the-purge")
        ),
    )
    .expect("log");
    ship_to(&r);
    wait_until("the line written after the purge", || {
        (r.count_as(&acme_token, "after-the-purge") == 1).then_some(())
    });
    assert_eq!(r.count_as(&acme_token, marker), 0, "purged lines came back");
}

/// A destination that lists no backup where backups were written (a share
/// not mounted: an empty directory in its place) is not "purged, 0
/// backups": the purge says it could not reach it, keeps it pending, and
/// finishes it once the share is back, at the next backup run.
#[test]
fn a_purge_waits_for_an_unmounted_backup_destination() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(root.path(), Settings::default());
    c.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) = c.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (_, acme_admin) = c.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let marker = "acme-unmounted-share-77e1";
    let file = c.root.join("acme.log");
    fs::write(&file, failed_logins("198.51.100.7", 3, marker)).expect("log");
    let mut agent = c.agent_as("acme", &acme_agent, &[&file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
    wait_until("acme's lines searchable", || {
        let out = c.cli_as(&acme_admin, &["search", "--since", "1h", "--count", marker]);
        (stdout_of(&out).trim() == "3").then_some(())
    });
    let share = root.path().join("share");
    let share_s = share.to_str().expect("utf8").to_string();
    let other = root.path().join("other");
    summary_of(&backup_create(&c, &share_s, &[]));
    assert!(!files_holding(&share, marker.as_bytes()).is_empty());
    // Unmounted: the mount point is an empty directory.
    let away = root.path().join("share-unmounted");
    fs::rename(&share, &away).expect("unmount");
    fs::create_dir(&share).expect("mount point");

    let out = c.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    let said = format!("{}{}", stdout_of(&out), stderr_of(&out));
    assert!(said.contains("unmounted or moved"), "{said}");
    let pending = fs::read_to_string(c.data_dir.join("backup").join("pending-purges.json"))
        .expect("pending purges");
    assert!(
        pending.contains(&share_s) && pending.contains("acme"),
        "{pending}"
    );

    // Mounted again; the next backup run (to any destination) finishes it.
    fs::remove_dir(&share).expect("mount point");
    fs::rename(&away, &share).expect("mount");
    summary_of(&backup_create(&c, other.to_str().expect("utf8"), &[]));
    let left = files_holding(&share, marker.as_bytes());
    assert!(
        left.is_empty(),
        "the share still holds the marker: {left:?}"
    );
    let pending = fs::read_to_string(c.data_dir.join("backup").join("pending-purges.json"))
        .expect("pending purges");
    assert!(!pending.contains("acme"), "{pending}");
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

/// The agent port of `c` (`127.0.0.1:PORT`).
fn agent_port(c: &Collector) -> u16 {
    c.agent_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("agent port")
}

/// Waits until the agent using `state` says the collector acknowledged
/// `path` up to `size`.
fn wait_agent_acked(state: &Path, path: &Path, size: u64) {
    wait_until(
        &format!("the agent to be acked up to {size} of {}", path.display()),
        || {
            let status = agent_status(state)?;
            let f = file_status(&status, path)?;
            (f["acked"].as_u64()? >= size).then_some(())
        },
    );
}

/// How many times each `seqNNNNNNN` marker of `numbered_lines` is in the
/// index of `c` (every line, via `search --json`).
fn marker_counts(c: &Collector, n: usize) -> Vec<u32> {
    let out = c.search(&["--json", "--limit", "10000", "*"]);
    assert!(out.status.success(), "search: {}", stderr_of(&out));
    let mut seen = vec![0u32; n];
    for hit in ndjson_of(&out) {
        let text = hit.to_string();
        let at = text.find("seq").expect("a marker in every line");
        let i: usize = text[at + 3..at + 10].parse().expect("seq digits");
        seen[i] += 1;
    }
    seen
}

/// Restores the newest backup at `dest` into `root/data` and starts a
/// collector there on the agent port `port` of the collector it replaces.
fn restore_on_port(dest: &str, root: &Path, port: u16) -> Collector {
    let out = backup_cli(&[
        "restore",
        "--from",
        dest,
        "--data-dir",
        root.join("data").to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "restore: {}", stderr_of(&out));
    Collector::start(
        root,
        Settings {
            agent_port: Some(port),
            ..Settings::default()
        },
    )
}

/// The gap of issue 22 closed: lines acked after a backup's cut come back
/// without `agent rewind`. The same agent process keeps running through
/// the outage (spooling the lines written meanwhile), reconnects to the
/// collector restored from the backup at the same address, learns that
/// this store (same id, from the backup) holds its file only up to the cut
/// although it acknowledged more, and sends the rest again from the file
/// before its spool. The restored collector ends with every line exactly
/// once.
#[test]
fn after_a_restore_the_same_agent_sends_again_what_was_acked_after_the_cut() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let mut c = Collector::start(&root.path().join("a"), Settings::default());
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();
    let log = root.path().join("access.log");
    let state = root.path().join("agent-state");
    let (before, after, outage) = (1_500u64, 3_000u64, 3_500u64);
    fs::write(&log, numbered_lines(0, before)).expect("log");
    let mut agent = c.spawn_agent("agent", &state, &[&log]);
    c.wait_for_count("*", before);

    let cut = summary_of(&backup_create(&c, &dest_s, &[]));
    assert_eq!(cut["docs"].as_u64(), Some(before));
    let cut_offset = cut["sources"]
        .as_object()
        .and_then(|s| s.values().next())
        .and_then(Value::as_u64)
        .expect("the cut's offset");
    assert_eq!(cut_offset, numbered_lines(0, before).len() as u64);

    // Acked after the cut: not in the backup.
    append(&log, &numbered_lines(before, after));
    c.wait_for_count("*", after);
    let acked = fs::metadata(&log).expect("log").len();
    wait_agent_acked(&state, &log, acked);
    c.kill();
    // Written while no collector runs: only in the agent's spool.
    append(&log, &numbered_lines(after, outage));
    wait_agent_read(&state, &log, acked + 1);

    let r = restore_on_port(&dest_s, &root.path().join("restored"), agent_port(&c));
    r.wait_for_count("*", outage);
    let seen = marker_counts(&r, outage as usize);
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .filter(|(_, &n)| n != 1)
        .map(|(i, &n)| (i, n))
        .take(10)
        .collect();
    assert!(wrong.is_empty(), "lines not there exactly once: {wrong:?}");

    let status = wait_until("the agent's resend counters", || {
        let s = agent_status(&state)?;
        (s["counters"]["resend_bytes"].as_u64()? > 0).then_some(s)
    });
    assert!(
        status["counters"]["resend_bytes"].as_u64() >= Some(acked - cut_offset),
        "{status}"
    );
    assert_eq!(status["counters"]["resend_lost_bytes"].as_u64(), Some(0));
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    assert!(
        agent.stderr().contains(&format!(
            "holds this file only up to byte {cut_offset} but had acknowledged it up to {acked}"
        )),
        "{}",
        agent.stderr_tail()
    );
    // Anything taken in twice would be searchable after a commit.
    std::thread::sleep(std::time::Duration::from_millis(4 * COMMIT_INTERVAL_MS));
    assert_eq!(r.count("*"), outage);
}

/// Lines acked after the cut whose file was rotated away and deleted
/// cannot come back: the agent (restarted meanwhile, by a kill -9) says so
/// (a warning naming the file and the byte range, counters in its status)
/// and goes on; the new file's lines, also acked after the cut, come back.
#[test]
fn lines_acked_after_the_cut_whose_file_is_gone_are_reported_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let mut c = Collector::start(&root.path().join("a"), Settings::default());
    let dest = root.path().join("backups");
    let dest_s = dest.to_str().expect("utf8").to_string();
    let logs = root.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let live = logs.join("app.log");
    let state = root.path().join("agent-state");
    let config = root.path().join("agent.toml");
    // Rotated files are closed soon after they are read to their end.
    fs::write(&config, "close_inactive_ms = 300\n").expect("agent config");
    let (before, rotated, fresh) = (1_000u64, 2_000u64, 2_600u64);
    fs::write(&live, numbered_lines(0, before)).expect("log");
    let args = [
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
        std::ffi::OsStr::new("--state-dir"),
        state.as_os_str(),
        live.as_os_str(),
    ];
    let mut agent = c.spawn_agent_with("agent", &args);
    c.wait_for_count("*", before);
    let cut = summary_of(&backup_create(&c, &dest_s, &[]));
    assert_eq!(cut["docs"].as_u64(), Some(before));
    let cut_offset = numbered_lines(0, before).len() as u64;

    append(&live, &numbered_lines(before, rotated));
    c.wait_for_count("*", rotated);
    let old_size = fs::metadata(&live).expect("log").len();
    wait_agent_acked(&state, &live, old_size);
    let old = logs.join("app.log.1");
    fs::rename(&live, &old).expect("rotate");
    fs::write(&live, numbered_lines(rotated, fresh)).expect("new log");
    c.wait_for_count("*", fresh);
    fs::remove_file(&old).expect("delete the rotated file");
    // The agent closed it: only the new file is left in its status.
    wait_until("the agent to close the deleted file", || {
        let status = agent_status(&state)?;
        (status["files"].as_array()?.len() == 1).then_some(())
    });
    c.kill();
    // Restarted after a kill -9: what each store acked comes from its
    // checkpoint now, not from memory.
    agent.kill();
    let mut agent = c.spawn_agent_with("agent-restarted", &args);

    let r = restore_on_port(&dest_s, &root.path().join("restored"), agent_port(&c));
    // The cut's lines and the new file's; the rotated file's are gone.
    let expected = before + (fresh - rotated);
    r.wait_for_count("*", expected);
    let status = wait_until("the agent to count the lost range", || {
        let s = agent_status(&state)?;
        (s["counters"]["resend_lost_ranges"].as_u64()? > 0).then_some(s)
    });
    assert_eq!(
        status["counters"]["resend_lost_bytes"].as_u64(),
        Some(old_size - cut_offset),
        "{status}"
    );
    assert_eq!(status["counters"]["resend_lost_ranges"].as_u64(), Some(1));
    let said = format!("LOST: bytes {cut_offset}..{old_size} of {}", live.display());
    assert!(
        agent.stderr().contains(&said),
        "no {said:?} in {}",
        agent.stderr_tail()
    );
    let text = Command::new(BIN)
        .args(["agent", "status", "--state-dir"])
        .arg(&state)
        .output()
        .expect("agent status");
    assert!(
        stdout_of(&text).contains(&format!("LOST: {} bytes", old_size - cut_offset)),
        "{}",
        stdout_of(&text)
    );
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    std::thread::sleep(std::time::Duration::from_millis(4 * COMMIT_INTERVAL_MS));
    let seen = marker_counts(&r, fresh as usize);
    for (i, n) in seen.iter().enumerate() {
        let i = i as u64;
        let want = u32::from(!(before..rotated).contains(&i));
        assert_eq!(*n, want, "line {i}");
    }
}

/// Two independent collectors with the same credentials (fan-out shards),
/// both given to one agent for failover: each store is sent only what it
/// has not acked, so no line lands on both. After failing over to B, B
/// gets the new lines only (not A's acked ones); back on A, A gets what
/// was written after B left, not what B acked.
#[test]
fn a_failover_peer_is_not_sent_what_another_collector_acked() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("a")).expect("mkdir");
    let mut a = Collector::start(&root.path().join("a"), Settings::default());
    let b_data = root.path().join("b").join("data");
    fs::create_dir_all(b_data.join("tls")).expect("mkdir");
    for file in [
        "tokens.json",
        "admin.token",
        "tls/ca.pem",
        "tls/ca.key",
        "tls/server.pem",
        "tls/server.key",
    ] {
        fs::copy(a.data_dir.join(file), b_data.join(file)).expect("sharing credentials");
    }
    let mut b = Collector::start(&root.path().join("b"), Settings::default());
    let log = root.path().join("access.log");
    let state = root.path().join("agent-state");
    fs::write(&log, numbered_lines(0, 1000)).expect("log");
    let mut agent = a.spawn_agent_with(
        "agent",
        &[
            std::ffi::OsStr::new("--collector"),
            std::ffi::OsStr::new(&b.agent_addr),
            std::ffi::OsStr::new("--state-dir"),
            state.as_os_str(),
            log.as_os_str(),
        ],
    );
    a.wait_for_count("*", 1000);
    wait_agent_acked(&state, &log, fs::metadata(&log).expect("log").len());

    a.kill();
    append(&log, &numbered_lines(1000, 1500));
    b.wait_for_count("*", 500);
    wait_agent_acked(&state, &log, fs::metadata(&log).expect("log").len());
    a.restart();
    b.kill();
    append(&log, &numbered_lines(1500, 1700));
    a.wait_for_count("*", 1200);
    std::thread::sleep(std::time::Duration::from_millis(4 * COMMIT_INTERVAL_MS));
    assert_eq!(a.count("*"), 1200);
    let on_a = marker_counts(&a, 1700);
    for (i, n) in on_a.iter().enumerate() {
        let want = u32::from(!(1000..1500).contains(&i));
        assert_eq!(*n, want, "line {i} on A");
    }
    b.restart();
    assert_eq!(b.count("*"), 500);
    let status = agent_status(&state).expect("status");
    assert_eq!(
        status["counters"]["resend_bytes"].as_u64(),
        Some(0),
        "{status}"
    );
    assert_eq!(status["counters"]["resend_lost_bytes"].as_u64(), Some(0));
    assert!(agent.is_running(), "{}", agent.stderr_tail());
}
