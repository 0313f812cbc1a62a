//! Crashes (SIGKILL) of the collector and of the agent while lines stream:
//! after recovery every line is searchable exactly once.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

/// Appends `numbered_lines(from..to)` to `path` in chunks of `chunk` lines
/// with a pause after each, publishing how far it got.
fn spawn_writer(
    path: PathBuf,
    from: u64,
    to: u64,
    chunk: u64,
    written: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = from;
        while next < to {
            let end = (next + chunk).min(to);
            append(&path, &numbered_lines(next, end));
            written.store(end, Ordering::Release);
            next = end;
            std::thread::sleep(Duration::from_millis(25));
        }
    })
}

fn wait_written(written: &AtomicU64, at_least: u64) {
    wait_until(&format!("the writer to pass line {at_least}"), || {
        (written.load(Ordering::Acquire) >= at_least).then_some(())
    });
}

fn assert_every_sample_once(collector: &Collector, total: u64) {
    let mut rng = Rng::new(total);
    let mut samples = vec![0, total / 2, total - 1];
    samples.extend((0..12).map(|_| rng.below(total)));
    for i in samples {
        assert_eq!(
            collector.count(&format!("seq{i:07}")),
            1,
            "line {i} must be indexed exactly once"
        );
    }
}

#[test]
fn collector_and_agent_sigkills_mid_stream_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        tmp.path(),
        Settings {
            // Small segments: rolls and checkpointed removals happen too.
            segment_bytes: Some(1 << 20),
            ..Settings::default()
        },
    );
    let file = tmp.path().join("stream.log");
    fs::write(&file, numbered_lines(0, 500)).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let mut agent = collector.spawn_agent("stream-agent-1", &state, &[&file]);

    const TOTAL: u64 = 100_000;
    let written = Arc::new(AtomicU64::new(500));
    let writer = spawn_writer(file.clone(), 500, TOTAL, 500, Arc::clone(&written));

    // Three crashes at different points of the stream, with outages of
    // different lengths (the agent backs off and reconnects by itself).
    for (at, outage_ms) in [(20_000, 300), (50_000, 0), (80_000, 1500)] {
        wait_written(&written, at);
        // The index is behind the writer here: the kill lands in the
        // middle of a live stream, with batches in flight.
        collector.wait_for_count_at_least("*", at / 2);
        collector.kill();
        std::thread::sleep(Duration::from_millis(outage_ms));
        collector.restart();
    }
    writer.join().expect("writer thread");

    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    assert_every_sample_once(&collector, TOTAL);
    assert!(
        agent.is_running(),
        "the agent must survive collector crashes; stderr:\n{}",
        agent.stderr_tail()
    );

    // Now the agent crashes mid-stream and comes back with its state dir.
    let writer = spawn_writer(
        file.clone(),
        TOTAL,
        TOTAL + 20_000,
        500,
        Arc::clone(&written),
    );
    wait_written(&written, TOTAL + 6_000);
    agent.kill();
    wait_written(&written, TOTAL + 12_000);
    let mut agent = collector.spawn_agent("stream-agent-2", &state, &[&file]);
    writer.join().expect("writer thread");
    collector.wait_for_count("*", TOTAL + 20_000);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL + 20_000));
    assert_every_sample_once(&collector, TOTAL + 20_000);
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}

#[test]
fn acked_lines_survive_a_crash_before_any_index_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        tmp.path(),
        Settings {
            // No periodic commit in the life of this test: the lines exist
            // only in the WAL when the collector dies.
            commit_interval_ms: 600_000,
            ..Settings::default()
        },
    );
    let file = tmp.path().join("wal-only.log");
    fs::write(&file, numbered_lines(0, 30_000)).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let (status, stderr) = collector.run_agent_once("once-agent", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "agent --once failed:\n{stderr}");

    collector.kill();
    collector.restart();
    // Replayed from the WAL before `ready`, and committed.
    collector.wait_for_count("*", 30_000);
    assert_eq!(collector.count("status:500"), numbered_500s(30_000));

    // The collector's dedup state came back too: a rerun of the agent with
    // a lost state file resends everything, and nothing is added.
    remove_state(&state);
    let (status, stderr) = collector.run_agent_once("once-agent-again", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "agent --once failed:\n{stderr}");
    collector.wait_for_count("*", 30_000);
    assert!(collector.metric("nightowl_batches_duplicate_total") >= 1.0);
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        0.0,
        "every resent line was already durable"
    );
}

/// Forgets the acked offsets but keeps the agent id, as if the agent had
/// crashed before ever writing a checkpoint.
fn remove_state(state: &Path) {
    let path = state.join("agent-state.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("state")).expect("state JSON");
    json["files"] = serde_json::json!({});
    fs::write(&path, serde_json::to_vec(&json).expect("encode")).expect("write state");
}

#[test]
fn restart_after_checkpointed_wal_segments_were_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        tmp.path(),
        Settings {
            // Every WAL record in a segment of its own, so every checkpoint
            // sits exactly at a segment's end; and no periodic commit: the
            // index only commits when the collector stops or starts.
            segment_bytes: Some(1),
            commit_interval_ms: 600_000,
            ..Settings::default()
        },
    );
    let state = tmp.path().join("agent-state");
    let first = tmp.path().join("first.log");
    fs::write(&first, numbered_lines(0, 20_000)).expect("log");
    let (status, stderr) = collector.run_agent_once("agent-first", &state, &[&first]);
    assert_eq!(status.code(), Some(0), "{stderr}");

    // A graceful stop commits the index: the checkpoint is now the end of
    // the last WAL segment.
    assert_eq!(collector.terminate().code(), Some(0));
    collector.restart();
    collector.wait_for_count("*", 20_000);

    // New records: the sequencer deletes the checkpointed segments...
    let second = tmp.path().join("second.log");
    fs::write(&second, numbered_lines(20_000, 30_000)).expect("log");
    let (status, stderr) = collector.run_agent_once("agent-second", &state, &[&second]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    // ...and a crash before the next index commit leaves the checkpoint
    // naming the end of a deleted segment. The restart must replay from
    // the next segment, not refuse to start.
    collector.kill();
    collector.restart();
    collector.wait_for_count("*", 30_000);
    assert_eq!(collector.count("status:500"), numbered_500s(30_000));
    assert_every_sample_once(&collector, 30_000);
}
