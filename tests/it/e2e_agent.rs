//! The agent against real rotation and a real outage: logrotate-style
//! rename and copytruncate during a steady write, and a collector that is
//! down while lines keep coming (the spool fills to its limit, pauses, and
//! drains). Every line must arrive exactly once.

use crate::common;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn write_config(root: &Path, text: &str) -> PathBuf {
    let path = root.join("agent.toml");
    fs::write(&path, text).expect("writing agent.toml");
    path
}

fn assert_samples_once(collector: &Collector, indices: &[u64]) {
    for &i in indices {
        assert_eq!(
            collector.count(&format!("seq{i:07}")),
            1,
            "line {i} must arrive exactly once"
        );
    }
}

/// `ROOT/logs/access.log` holding lines `0..lines`, and the agent's state
/// dir: (the logs dir, the live file, the state dir).
fn logs_dir(root: &Path, lines: u64) -> (PathBuf, PathBuf, PathBuf) {
    let dir = root.join("logs");
    fs::create_dir(&dir).expect("mkdir");
    let live = dir.join("access.log");
    fs::write(&live, numbered_lines(0, lines)).expect("writing the log");
    (dir, live, root.join("agent-state"))
}

#[test]
fn rename_rotation_during_a_steady_write_ships_every_line_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let (dir, live, state) = logs_dir(tmp.path(), 1000);
    // Only the live name is globbed: rotated files are followed by inode.
    let mut agent = collector.spawn_agent_with(
        "rotate-agent",
        &[
            OsStr::new("--state-dir"),
            state.as_os_str(),
            live.as_os_str(),
        ],
    );

    // The writer behaves like nginx: one open descriptor, which keeps
    // receiving lines after logrotate renamed the file, until it reopens.
    const TOTAL: u64 = 30_000;
    let mut file = OpenOptions::new().append(true).open(&live).expect("open");
    let mut next = 1000;
    let mut chunk = 0;
    let mut boundaries = Vec::new();
    while next < TOTAL {
        let end = (next + 250).min(TOTAL);
        file.write_all(numbered_lines(next, end).as_bytes())
            .expect("append");
        next = end;
        chunk += 1;
        if chunk % 30 == 0 && next + 300 < TOTAL {
            let one = dir.join("access.log.1");
            if one.exists() {
                fs::rename(&one, dir.join("access.log.2")).expect("shift .1");
            }
            fs::rename(&live, &one).expect("rotate");
            boundaries.push(next);
            // Lines written to the renamed file before the reopen.
            file.write_all(numbered_lines(next, next + 300).as_bytes())
                .expect("append after rename");
            next += 300;
            file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&live)
                .expect("reopen");
            boundaries.push(next);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        boundaries.len() >= 6,
        "rotated {} times",
        boundaries.len() / 2
    );

    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    let mut samples = vec![0, 999, 1000, TOTAL - 1];
    for b in &boundaries {
        samples.extend([b - 1, *b, b + 1]);
    }
    assert_samples_once(&collector, &samples);
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        TOTAL as f64
    );
}

#[test]
fn a_rotation_while_the_agent_is_stopped_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let (dir, live, state) = logs_dir(tmp.path(), 1000);
    // Only the live name is globbed, as the README advises.
    let args = [
        OsStr::new("--state-dir"),
        state.as_os_str(),
        live.as_os_str(),
    ];
    let mut agent = collector.spawn_agent_with("stopped-agent", &args);
    collector.wait_for_count("*", 1000);
    agent.kill();

    // While it is down: more lines, then logrotate renames the file and
    // the server reopens a new one.
    let mut file = OpenOptions::new().append(true).open(&live).expect("open");
    file.write_all(numbered_lines(1000, 1100).as_bytes())
        .expect("append");
    drop(file);
    fs::rename(&live, dir.join("access.log.1")).expect("rotate");
    fs::write(&live, numbered_lines(1100, 1150)).expect("the new file");

    let mut agent = collector.spawn_agent_with("restarted-agent", &args);
    collector.wait_for_count("*", 1150);
    assert_samples_once(&collector, &[0, 999, 1000, 1099, 1100, 1149]);
    // The rotated file's last lines keep the source they were shipped as.
    let source = format!("source:\"{}\"", live.display());
    assert_eq!(collector.count(&source), 1150, "{}", agent.stderr_tail());
    assert!(
        agent
            .stderr()
            .contains("rotated while the agent was stopped"),
        "{}",
        agent.stderr_tail()
    );
    agent.kill();
}

#[test]
fn copytruncate_during_a_steady_write_ships_every_line_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let live = tmp.path().join("app.log");
    fs::write(&live, numbered_lines(0, 500)).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let mut agent = collector.spawn_agent_with(
        "copytruncate-agent",
        &[
            OsStr::new("--state-dir"),
            state.as_os_str(),
            live.as_os_str(),
        ],
    );

    const TOTAL: u64 = 20_000;
    let mut next = 500;
    let mut chunk = 0;
    let mut boundaries = Vec::new();
    while next < TOTAL {
        let end = (next + 200).min(TOTAL);
        append(&live, &numbered_lines(next, end));
        next = end;
        chunk += 1;
        if chunk % 25 == 0 && next < TOTAL {
            // copytruncate loses whatever is written between the copy and
            // the truncate, by design; logrotate's users accept that. What
            // the agent must do is read the file to its end before it
            // shrinks, then start over on the truncated file: so the
            // rotation waits until the agent has caught up.
            let size = fs::metadata(&live).expect("meta").len();
            wait_agent_read(&state, &live, size);
            fs::copy(&live, tmp.path().join("app.log.1")).expect("copy");
            OpenOptions::new()
                .write(true)
                .open(&live)
                .expect("open")
                .set_len(0)
                .expect("truncate");
            boundaries.push(next);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(boundaries.len() >= 3);

    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    let mut samples = vec![0, 499, 500, TOTAL - 1];
    for b in &boundaries {
        samples.extend([b - 1, *b, b + 1]);
    }
    assert_samples_once(&collector, &samples);
    assert!(
        agent.stderr().contains("file truncated"),
        "the truncation is logged"
    );
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}

#[test]
fn collector_outage_fills_the_spool_to_its_limit_then_drains_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(tmp.path(), Settings::default());
    let live = tmp.path().join("busy.log");
    fs::write(&live, numbered_lines(0, 2000)).expect("writing the log");
    let state = tmp.path().join("agent-state");
    const LIMIT: u64 = 384 * 1024;
    let config = write_config(
        tmp.path(),
        &format!("spool_limit_bytes = {LIMIT}\nbatch_bytes = 65536\nlinger_ms = 5\n"),
    );
    let mut agent = collector.spawn_agent_with(
        "outage-agent",
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            live.as_os_str(),
        ],
    );
    collector.wait_for_count("*", 2000);

    collector.kill();
    // About 3 MB while the collector is away: eight times the spool.
    const TOTAL: u64 = 22_000;
    let spool = state.join("spool");
    let mut max_seen = 0;
    for start in (2000..TOTAL).step_by(500) {
        append(&live, &numbered_lines(start, start + 500));
        max_seen = max_seen.max(dir_bytes(&spool));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reading pauses at the limit instead of dropping or growing.
    let status = wait_until("the spool to report full", || {
        max_seen = max_seen.max(dir_bytes(&spool));
        agent_status(&state).filter(|s| s["spool"]["full"] == true)
    });
    assert_ne!(status["connection"]["state"], "connected");
    let f = file_status(&status, &live).expect("the file is tailed");
    assert!(
        f["offset"].as_u64() < f["size"].as_u64(),
        "the agent must stop reading while the spool is full: {f}"
    );
    assert!(
        max_seen <= LIMIT,
        "spool directory reached {max_seen} bytes, above its limit {LIMIT}"
    );

    collector.restart();
    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    assert_samples_once(&collector, &[0, 1999, 2000, 2001, 12_345, TOTAL - 1]);
    let status = wait_until("the spool to drain", || {
        agent_status(&state)
            .filter(|s| s["spool"]["unacked_bytes"] == 0 && s["connection"]["state"] == "connected")
    });
    let peak = status["spool"]["peak_bytes"].as_u64().expect("peak");
    assert!(peak <= LIMIT, "spool peaked at {peak}, above {LIMIT}");
    assert!(
        status["spool"]["bytes"].as_u64().expect("bytes") < LIMIT / 2,
        "drained spool segments are deleted: {}",
        status["spool"]
    );
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}
