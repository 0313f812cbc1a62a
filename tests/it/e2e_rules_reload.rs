//! Rule state across crashes and hot reloads, through the real collector:
//! lines shipped by the real agent, kill -9, SIGHUP (kill(2)), rule
//! files edited on disk (docs/rules-state.md).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{append, nginx_time, now_unix, wait_until, Collector, Settings};

const BRUTE: &str = "id: e2e-brute
title: Brute force (e2e)
severity: critical
match: {field: status, equals: 401}
detect: {kind: threshold, key: client_ip, window: 5m, count: 20}
";

const PROBE: &str = "id: e2e-probe
title: Secret probe (e2e)
severity: warning
match: {field: path, contains: /secret-probe}
detect: {kind: match, key: client_ip}
";

fn failures(ip: &str, n: usize) -> String {
    let t = nginx_time(now_unix(), 0);
    (0..n)
        .map(|i| {
            format!("{ip} - - [{t}] \"POST /login?try={i} HTTP/1.1\" 401 12 \"-\" \"curl/8\"\n")
        })
        .collect()
}

fn probe(ip: &str) -> String {
    let t = nginx_time(now_unix(), 0);
    format!("{ip} - - [{t}] \"GET /secret-probe HTTP/1.1\" 404 0 \"-\" \"curl/8\"\n")
}

fn rules_dir(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("rules");
    fs::create_dir_all(&dir).expect("mkdir rules");
    for (name, text) in files {
        fs::write(dir.join(name), text).expect("write rule");
    }
    dir
}

/// Ships what was appended to `log` since the last call (the agent resumes
/// from its state dir) and waits until every line is acknowledged.
fn ship(c: &Collector, log: &Path, lines: &str) {
    append(log, lines);
    let (status, stderr) = c.run_agent_once("agent", &c.root.join("agent-state"), &[log]);
    assert!(status.success(), "agent failed: {stderr}");
}

fn firings(c: &Collector, rule: &str) -> Vec<serde_json::Value> {
    c.api_json("/api/v1/firings")["firings"]
        .as_array()
        .map(|a| a.iter().filter(|f| f["rule_id"] == rule).cloned().collect())
        .unwrap_or_default()
}

fn wait_firings(c: &Collector, rule: &str, n: usize) -> Vec<serde_json::Value> {
    wait_until(&format!("{n} firing(s) of {rule}"), || {
        let f = firings(c, rule);
        (f.len() >= n).then_some(f)
    })
}

fn rules_api(c: &Collector) -> serde_json::Value {
    c.api_json("/api/v1/rules")
}

fn loaded_ids(c: &Collector) -> Vec<String> {
    rules_api(c)["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The running collector's pid, found by its (unique) data dir.
fn collector_pid(c: &Collector) -> String {
    let data_dir = c.data_dir.display().to_string();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "collector") && args.contains(&data_dir) {
            return name;
        }
    }
    panic!("no running collector with data dir {data_dir}");
}

/// kill(2) itself, not the `kill` program: that is procps, which a fresh
/// Debian may not have and scripts/test does not install.
fn sighup(c: &Collector) {
    let pid = collector_pid(c);
    let pid: libc::pid_t = pid.parse().expect("a pid from /proc");
    // SAFETY: kill(2) with a pid just read from /proc and a valid signal.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(
        rc,
        0,
        "kill -HUP {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// The config's last section is `[rules]` (written by `Collector::start`
/// when a rules dir is set): more keys go to its end. Restarts via kill -9,
/// which these tests can take, and which does not depend on every
/// listener's graceful shutdown.
fn add_rules_options(c: &mut Collector, options: &str) {
    c.kill();
    let mut toml = fs::read_to_string(&c.config_path).expect("read config");
    assert!(toml.contains("[rules]"), "{toml}");
    toml.push_str(options);
    fs::write(&c.config_path, toml).expect("write config");
    c.restart();
}

#[test]
fn replay_after_kill_9_rebuilds_windows_without_paging_twice() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("brute.yaml", BRUTE), ("probe.yaml", PROBE)]);
    // Commits are 10 minutes apart, so what follows the first record is
    // only in the WAL at the crash: the restart must evaluate it again.
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir),
            commit_interval_ms: 600_000,
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    // The first record may be committed and snapshotted at once (index
    // maintenance commits on its first run); wait until it went through.
    ship(&c, &log, &probe("192.0.2.1"));
    wait_firings(&c, "e2e-probe", 1);
    // The high-water mark follows each publication; waiting for it keeps
    // the crash from landing in between (where one repeat is allowed).
    let hwm = c.data_dir.join("rules").join("hwm");
    let read_hwm = || {
        let b = fs::read(&hwm).ok()?;
        Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
    };
    let probe_hwm = wait_until("the probe's high-water mark", || {
        read_hwm().filter(|&p| p > 0)
    });
    let mut lines = failures("198.51.100.1", 20);
    lines.push_str(&failures("198.51.100.2", 15));
    ship(&c, &log, &lines);
    let before = wait_firings(&c, "e2e-brute", 1);
    assert_eq!(before[0]["key"], "198.51.100.1");
    wait_until("the brute force firing's high-water mark", || {
        read_hwm().filter(|&p| p > probe_hwm)
    });
    c.kill();
    c.restart();

    // The replay evaluated the 35 lines: .1 reached 20 again, but that
    // firing was published before the crash and is dropped; the probe's
    // record, in the snapshot, was not evaluated again.
    assert_eq!(c.metric("nightowl_rules_replay_suppressed_total"), 1.0);
    assert!(firings(&c, "e2e-brute").is_empty());
    assert!(firings(&c, "e2e-probe").is_empty());

    // .2 has 15 failures in its rebuilt window: 5 more make 20.
    ship(&c, &log, &failures("198.51.100.2", 5));
    let after = wait_firings(&c, "e2e-brute", 1);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["key"], "198.51.100.2");
    assert_eq!(after[0]["count"], 20);
    // Every line is searchable once, not twice (the last 5 may or may not
    // be committed yet: the interval is long, maintenance may commit).
    let n = c.count("*");
    assert!(n == 36 || n == 41, "{n} lines searchable");
}

#[test]
fn snapshot_carries_a_window_across_kill_9_and_a_corrupt_one_starts_empty() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("brute.yaml", BRUTE)]);
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    ship(&c, &log, &failures("203.0.113.50", 15));
    c.wait_for_count("*", 15);
    wait_until("a rule state snapshot", || {
        (c.metric("nightowl_rules_snapshot_writes_total") >= 1.0).then_some(())
    });
    c.kill();
    c.restart();
    let snapshot = c.data_dir.join("rules/state.snapshot");
    assert!(snapshot.exists());
    wait_until("the restore in the log", || {
        c.stderr_tail()
            .contains("rule state restored from snapshot")
            .then_some(())
    });
    assert!(firings(&c, "e2e-brute").is_empty());

    ship(&c, &log, &failures("203.0.113.50", 5));
    let fired = wait_firings(&c, "e2e-brute", 1);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["key"], "203.0.113.50");
    assert_eq!(fired[0]["count"], 20);
    c.wait_for_count("*", 20);
    assert_eq!(firings(&c, "e2e-brute").len(), 1);

    // A damaged snapshot never stops the collector: warn, start empty.
    c.kill();
    let mut bytes = fs::read(&snapshot).expect("read snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&snapshot, &bytes).expect("damage snapshot");
    c.restart();
    assert_eq!(c.metric("nightowl_rules_snapshot_failures_total"), 1.0);
    assert!(
        c.stderr_tail().contains("unusable rule state snapshot"),
        "{}",
        c.stderr_tail()
    );
    assert_eq!(c.metric("nightowl_rules_loaded"), 1.0);
}

#[test]
fn the_wal_is_kept_back_to_an_older_snapshot_so_replay_completes_the_window() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("brute.yaml", BRUTE)]);
    // One WAL segment per record, so the index checkpoint deletes
    // segments as soon as it passes them.
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir),
            segment_bytes: Some(1),
            ..Settings::default()
        },
    );
    // The first snapshot is immediate, the next one only in 10 minutes.
    add_rules_options(&mut c, "snapshot_interval_ms = 600000\n");
    let log = root.path().join("access.log");
    ship(&c, &log, &failures("203.0.113.7", 5));
    c.wait_for_count("*", 5);
    wait_until("the first snapshot", || {
        (c.metric("nightowl_rules_snapshot_writes_total") >= 1.0).then_some(())
    });
    // Two more records, indexed and checkpointed past the snapshot.
    ship(&c, &log, &failures("203.0.113.7", 5));
    ship(&c, &log, &failures("203.0.113.7", 5));
    c.wait_for_count("*", 15);
    assert_eq!(c.metric("nightowl_rules_snapshot_writes_total"), 1.0);
    let checkpoint = c.data_dir.join("index/checkpoint.json");
    wait_until("the checkpoint past all 15 lines", || {
        let text = fs::read_to_string(&checkpoint).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pos = v["wal_position"].as_u64()?;
        let segments = fs::read_dir(c.data_dir.join("wal"))
            .ok()?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
            .count();
        (pos > 0 && segments >= 2).then_some(())
    });
    c.kill();
    c.restart();
    // Snapshot (5) + replay of the two records after it (10) + 5 = 20.
    ship(&c, &log, &failures("203.0.113.7", 5));
    let fired = wait_firings(&c, "e2e-brute", 1);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["count"], 20);
    c.wait_for_count("*", 20);
}

#[test]
fn sighup_reload_adds_a_rule_that_then_fires() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("brute.yaml", BRUTE)]);
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir.clone()),
            ..Settings::default()
        },
    );
    // Without the watcher only SIGHUP can reload.
    add_rules_options(&mut c, "watch = false\n");
    assert_eq!(loaded_ids(&c), vec!["e2e-brute"]);
    assert_eq!(c.metric("nightowl_rules_loaded"), 1.0);

    fs::write(dir.join("probe.yaml"), PROBE).expect("write rule");
    sighup(&c);
    wait_until("the reloaded rule set", || {
        (loaded_ids(&c).len() == 2).then_some(())
    });
    assert!(c.is_running(), "SIGHUP must not end the collector");
    assert_eq!(c.metric("nightowl_rules_reloads_total"), 1.0);
    assert_eq!(c.metric("nightowl_rules_loaded"), 2.0);
    assert_eq!(c.metric("nightowl_rules_last_reload_success"), 1.0);
    let body = rules_api(&c);
    assert_eq!(body["last_reload"]["ok"], true, "{body}");
    let probe_rule = body["rules"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == "e2e-probe").cloned())
        .expect("e2e-probe listed");
    assert_eq!(probe_rule["kind"], "match");
    assert_eq!(probe_rule["severity"], "warning");
    assert!(
        probe_rule["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("probe.yaml:1")),
        "{probe_rule}"
    );

    let log = root.path().join("access.log");
    ship(&c, &log, &probe("192.0.2.77"));
    let fired = wait_firings(&c, "e2e-probe", 1);
    assert_eq!(fired[0]["key"], "192.0.2.77");

    // The rule change is in the audit log, naming what changed.
    let reloads: Vec<_> = c
        .audit_entries()
        .into_iter()
        .filter(|e| e["method"] == "RELOAD")
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["status"], 200);
    assert_eq!(reloads[0]["actor"], "rules-dir");
    let what = reloads[0]["body"].as_str().unwrap_or_default();
    assert!(what.contains("new or changed: [\"e2e-probe\"]"), "{what}");
    assert!(what.contains("unchanged: 1"), "{what}");

    // Lowering a severity keeps the rule's windows, and is audited as an
    // edit, not as "unchanged".
    fs::write(
        dir.join("probe.yaml"),
        PROBE.replace("severity: warning", "severity: info"),
    )
    .expect("edit rule");
    sighup(&c);
    let what = wait_until("the edit's audit entry", || {
        c.audit_entries()
            .into_iter()
            .filter(|e| e["method"] == "RELOAD")
            .nth(1)
            .and_then(|e| e["body"].as_str().map(str::to_string))
    });
    assert!(
        what.contains("edited (title, severity, enabled; windows kept): [\"e2e-probe\"]"),
        "{what}"
    );
    assert!(what.contains("unchanged: 1"), "{what}");
}

#[test]
fn an_invalid_edit_is_rejected_and_the_old_rules_keep_firing() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("probe.yaml", PROBE)]);
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir.clone()),
            ..Settings::default()
        },
    );
    assert_eq!(loaded_ids(&c), vec!["e2e-probe"]);
    // Line 5 becomes a threshold without a count.
    let broken = PROBE.replace(
        "detect: {kind: match, key: client_ip}",
        "detect: {kind: threshold, key: client_ip}",
    );
    fs::write(dir.join("probe.yaml"), broken).expect("edit rule");
    wait_until("the rejected reload", || {
        (c.metric("nightowl_rules_reload_failures_total") >= 1.0).then_some(())
    });
    assert_eq!(c.metric("nightowl_rules_last_reload_success"), 0.0);
    assert_eq!(c.metric("nightowl_rules_reloads_total"), 0.0);
    let body = rules_api(&c);
    assert_eq!(body["last_reload"]["ok"], false, "{body}");
    let errors = body["last_reload"]["errors"].to_string();
    assert!(errors.contains("probe.yaml:"), "{errors}");
    assert!(errors.contains("needs count"), "{errors}");
    assert!(
        c.stderr_tail().contains("rule reload rejected"),
        "{}",
        c.stderr_tail()
    );
    let rejected = c
        .audit_entries()
        .into_iter()
        .find(|e| e["method"] == "RELOAD")
        .expect("the rejected reload is audited");
    assert_eq!(rejected["status"], 400);
    assert!(
        rejected["body"]
            .as_str()
            .is_some_and(|b| b.contains("needs count")),
        "{rejected}"
    );

    // The old (match) rule is still the one running.
    assert_eq!(loaded_ids(&c), vec!["e2e-probe"]);
    let log = root.path().join("access.log");
    ship(&c, &log, &probe("192.0.2.88"));
    let fired = wait_firings(&c, "e2e-probe", 1);
    assert_eq!(fired[0]["key"], "192.0.2.88");
    assert_eq!(fired[0]["count"], 1);
}

#[test]
fn an_unchanged_rule_keeps_its_window_across_a_file_change_reload() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("brute.yaml", BRUTE)]);
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir.clone()),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    ship(&c, &log, &failures("203.0.113.99", 10));
    c.wait_for_count("*", 10);

    // Adding a file reloads (the watcher); brute.yaml is unchanged.
    fs::write(dir.join("probe.yaml"), PROBE).expect("write rule");
    wait_until("the reload", || (loaded_ids(&c).len() == 2).then_some(()));
    assert_eq!(c.metric("nightowl_rules_reloads_total"), 1.0);
    assert!(firings(&c, "e2e-brute").is_empty());

    ship(&c, &log, &failures("203.0.113.99", 10));
    let fired = wait_firings(&c, "e2e-brute", 1);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["count"], 20, "10 before + 10 after the reload");
}

#[test]
fn a_configmap_style_symlink_swap_reloads() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("tempdir");
    // The layout of a Kubernetes ConfigMap volume: `name -> ..data/name`,
    // `..data -> ..v1`; an update writes `..v2` and renames a new `..data`
    // symlink over the old one, touching no `*.yaml` path.
    let dir = root.path().join("rules");
    fs::create_dir_all(dir.join("..v1")).expect("mkdir");
    fs::write(dir.join("..v1/brute.yaml"), BRUTE).expect("write");
    symlink("..v1", dir.join("..data")).expect("symlink");
    symlink("..data/brute.yaml", dir.join("brute.yaml")).expect("symlink");
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir.clone()),
            ..Settings::default()
        },
    );
    let title = |c: &Collector| rules_api(c)["rules"][0]["title"].as_str().map(String::from);
    assert_eq!(title(&c).as_deref(), Some("Brute force (e2e)"));

    fs::create_dir_all(dir.join("..v2")).expect("mkdir");
    fs::write(
        dir.join("..v2/brute.yaml"),
        BRUTE.replace("Brute force (e2e)", "Brute force v2"),
    )
    .expect("write");
    symlink("..v2", dir.join("..data_tmp")).expect("symlink");
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    wait_until("the swapped rules", || {
        (title(&c).as_deref() == Some("Brute force v2")).then_some(())
    });
    assert_eq!(c.metric("nightowl_rules_reloads_total"), 1.0);
}

/// A kill -9 right after a rule fired, maybe before the alert store
/// committed the new alert: either the store has it, or its record is
/// above the high-water mark (which follows the store) and the restart
/// fires it again. Which of the two happened depends on the race; the
/// unit tests of `detect/reload.rs` and `alert/service.rs` pin the
/// mechanism, this guards the whole path.
#[test]
fn an_alert_fired_just_before_a_kill_9_is_listed_after_the_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = rules_dir(root.path(), &[("probe.yaml", PROBE)]);
    let mut c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(dir),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    ship(&c, &log, &probe("192.0.2.77"));
    wait_firings(&c, "e2e-probe", 1);
    c.kill();
    c.restart();
    let listed = wait_until("the probe's alert after the restart", || {
        let out = c.cli_as(&c.token_file, &["alerts", "list", "--json"]);
        assert!(out.status.success(), "{}", common::stderr_of(&out));
        let alerts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|a| a["rule_id"] == "e2e-probe")
            .collect();
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(listed[0]["key"], "192.0.2.77", "{listed:?}");
}
