//! The agent's spool encrypted at rest, end to end: with the collector
//! down, an agent with a spool key spools lines, and no file under its
//! state dir holds any of their text; another key or no key is refused
//! with the file named and nothing cut; with the right key and the
//! collector back, every line arrives exactly once.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Text every spooled line carries (see `numbered_lines`), and a label of
/// their files that only the spool records would hold.
const MARKERS: &[&[u8]] = &[b"GET /orders/seq", b"e2e-writer/1.0"];

fn write_key(root: &Path, name: &str, hex_digit: char) -> PathBuf {
    let path = root.join(name);
    fs::write(&path, format!("{}\n", hex_digit.to_string().repeat(64))).expect("writing a key");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("listing the state dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn holds_a_marker(bytes: &[u8]) -> bool {
    MARKERS
        .iter()
        .any(|m| bytes.windows(m.len()).any(|w| w == *m))
}

fn assert_no_plaintext(state: &Path) -> usize {
    let files = files_under(state);
    let spool_bytes: usize = files
        .iter()
        .filter(|(p, _)| p.extension() == Some(OsStr::new("spool")))
        .map(|(_, b)| b.len())
        .sum();
    for (path, bytes) in &files {
        assert!(
            !holds_a_marker(bytes),
            "{} holds log text in plain text",
            path.display()
        );
    }
    spool_bytes
}

fn spooled_unacked(state: &Path) -> u64 {
    agent_status(state)
        .and_then(|s| s["spool"]["unacked_bytes"].as_u64())
        .unwrap_or(0)
}

#[test]
fn an_encrypted_spool_holds_no_log_text_and_drains_every_line_once() {
    const TOTAL: u64 = 5000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(tmp.path(), Settings::default());
    collector.kill();
    let key = write_key(tmp.path(), "spool.key", 'a');
    let log = tmp.path().join("app.log");
    fs::write(&log, numbered_lines(0, TOTAL)).expect("writing the log");
    assert!(
        holds_a_marker(&fs::read(&log).expect("read")),
        "the markers are log text"
    );
    let size = fs::metadata(&log).expect("meta").len();
    let state = tmp.path().join("agent-state");
    let mut agent = collector.spawn_agent_with(
        "crypt-agent",
        &[
            OsStr::new("--spool-key-file"),
            key.as_os_str(),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            log.as_os_str(),
        ],
    );
    // Everything is read into the spool while nobody acknowledges it.
    wait_agent_read(&state, &log, size);
    let unacked = spooled_unacked(&state);
    assert!(
        unacked >= size,
        "{unacked} bytes spooled for a {size}-byte log"
    );
    let spool_bytes = assert_no_plaintext(&state);
    assert!(
        spool_bytes as u64 >= size,
        "the spool ({spool_bytes} bytes) must hold the {size} bytes read"
    );
    assert!(agent.is_running(), "{}", agent.stderr_tail());

    collector.restart();
    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    for i in [0, 1, 2500, TOTAL - 1] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    wait_until("the spool to drain", || {
        agent_status(&state)
            .filter(|s| s["spool"]["unacked_bytes"] == 0 && s["connection"]["state"] == "connected")
    });
    assert_no_plaintext(&state);
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}

#[test]
fn another_key_or_none_is_refused_naming_the_spool_file_and_the_right_key_drains_it() {
    const TOTAL: u64 = 3000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(tmp.path(), Settings::default());
    collector.kill();
    let right = write_key(tmp.path(), "right.key", 'b');
    let wrong = write_key(tmp.path(), "wrong.key", 'c');
    let log = tmp.path().join("app.log");
    fs::write(&log, numbered_lines(0, TOTAL)).expect("writing the log");
    let size = fs::metadata(&log).expect("meta").len();
    let state = tmp.path().join("agent-state");

    // A key file that is not a key: a usage error (exit 2) naming it.
    let bad = tmp.path().join("bad.key");
    fs::write(&bad, "not a key\n").expect("writing");
    let mut cmd = collector.agent_command_with(&[
        OsStr::new("--spool-key-file"),
        bad.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        log.as_os_str(),
    ]);
    cmd.env_remove("NIGHTOWL_SPOOL_KEY_FILE");
    let mut agent = ChildGuard::spawn("bad-key-agent", cmd, &tmp.path().join("bad.stderr"));
    let status = agent.wait();
    let err = agent.stderr();
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains("spool key file") && err.contains("bad.key") && err.contains("64 hex"),
        "stderr: {err}"
    );

    // The key from the environment variable.
    let mut cmd = collector.agent_command_with(&[
        OsStr::new("--state-dir"),
        state.as_os_str(),
        log.as_os_str(),
    ]);
    cmd.env("NIGHTOWL_SPOOL_KEY_FILE", &right);
    let mut agent = ChildGuard::spawn("env-key-agent", cmd, &tmp.path().join("env.stderr"));
    wait_agent_read(&state, &log, size);
    assert!(spooled_unacked(&state) >= size);
    agent.kill();
    assert_no_plaintext(&state);
    let spool_before = files_under(&state.join("spool"));
    assert!(!spool_before.is_empty());

    let refused = |name: &str, extra: &[&OsStr], env_key: Option<&Path>| -> String {
        let mut args = extra.to_vec();
        args.extend([
            OsStr::new("--state-dir"),
            state.as_os_str(),
            log.as_os_str(),
        ]);
        let mut cmd = collector.agent_command_with(&args);
        cmd.env_remove("NIGHTOWL_SPOOL_KEY_FILE");
        if let Some(k) = env_key {
            cmd.env("NIGHTOWL_SPOOL_KEY_FILE", k);
        }
        let mut agent = ChildGuard::spawn(name, cmd, &tmp.path().join(format!("{name}.stderr")));
        let status = agent.wait();
        assert!(!status.success(), "{name} must refuse the spool");
        agent.stderr()
    };
    let first_segment = spool_before[0].0.display().to_string();
    let err = refused("wrong-key-agent", &[], Some(&wrong));
    assert!(
        err.contains("another key") && err.contains(&first_segment),
        "stderr: {err}"
    );
    let err = refused("no-key-agent", &[], None);
    assert!(
        err.contains("no spool key is configured") && err.contains(&first_segment),
        "stderr: {err}"
    );
    // The flag wins over the environment.
    let err = refused(
        "flag-wins-agent",
        &[OsStr::new("--spool-key-file"), wrong.as_os_str()],
        Some(&right),
    );
    assert!(err.contains("another key"), "stderr: {err}");
    // Refusing changed nothing on disk: no record was cut or re-read.
    assert_eq!(files_under(&state.join("spool")), spool_before);

    // The right key from agent.toml; the collector back.
    let config = tmp.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "spool_encryption_key_file = {:?}\n",
            right.display().to_string()
        ),
    )
    .expect("writing agent.toml");
    collector.restart();
    let mut cmd = collector.agent_command_with(&[
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        log.as_os_str(),
    ]);
    cmd.env_remove("NIGHTOWL_SPOOL_KEY_FILE");
    let mut agent = ChildGuard::spawn("config-key-agent", cmd, &tmp.path().join("cfg.stderr"));
    collector.wait_for_count("*", TOTAL);
    for i in [0, 1, 1500, TOTAL - 1] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}

/// kill -9 of an agent with an encrypted spool at seeded moments while its
/// file grows: torn sealed tails are cut like plain ones, deleted acked
/// segments are not mistaken for removed ones, and every line arrives once.
#[test]
fn sigkills_with_an_encrypted_spool_lose_and_repeat_nothing() {
    let mut rng = Rng::new(20261125);
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let key = write_key(tmp.path(), "spool.key", 'd');
    let file = tmp.path().join("stream.log");
    fs::write(&file, "").expect("creating the log");
    let state = tmp.path().join("agent-state");
    // Small segments, so that acked ones are deleted during the run.
    let config = tmp.path().join("agent.toml");
    fs::write(
        &config,
        "spool_limit_bytes = 4194304\nbatch_bytes = 65536\n",
    )
    .expect("config");
    let args = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--spool-key-file"),
        key.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        file.as_os_str(),
    ];

    const TOTAL: u64 = 60_000;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let file = file.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for start in (0..TOTAL).step_by(1000) {
                append(&file, &numbered_lines(start, start + 1000));
                std::thread::sleep(Duration::from_millis(40));
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut agent = collector.spawn_agent_with("crypt-crash-0", &args);
    let mut kills = 0;
    let mut after = 0;
    while after < 2 {
        if done.load(Ordering::Acquire) {
            after += 1;
        }
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        assert!(
            agent.is_running(),
            "the agent stopped by itself: {}",
            agent.stderr_tail()
        );
        agent.kill();
        kills += 1;
        agent = collector.spawn_agent_with(&format!("crypt-crash-{kills}"), &args);
    }
    writer.join().expect("writer thread");
    assert!(kills >= 3, "only {kills} kills");
    collector.wait_for_count("*", TOTAL);
    for i in [
        0,
        1,
        TOTAL / 2,
        TOTAL - 1,
        rng.below(TOTAL),
        rng.below(TOTAL),
    ] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    assert_no_plaintext(&state);
    // Acked segments were deleted along the way (so restarts checked the
    // first segment against the checkpoint with a real gap behind it).
    let oldest = files_under(&state.join("spool"))
        .first()
        .map(|(p, _)| p.file_name().expect("name").to_string_lossy().into_owned())
        .expect("a spool segment");
    assert_ne!(
        oldest,
        format!("{:020}.spool", 0),
        "no segment was ever deleted"
    );
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}
