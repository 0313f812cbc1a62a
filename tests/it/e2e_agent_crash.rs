//! kill -9 of the agent at random (seeded) moments while a file grows to
//! 200k lines, restarted each time with its state dir: exactly 200k lines
//! searchable, none twice.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn agent_sigkills_during_a_200k_line_write_lose_and_repeat_nothing() {
    let seed: u64 = std::env::var("NIGHTOWL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124);
    eprintln!("kill schedule seed {seed} (NIGHTOWL_KILL_SEED replays it)");
    let mut rng = Rng::new(seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let file = tmp.path().join("stream.log");
    fs::write(&file, "").expect("creating the log");
    let state = tmp.path().join("agent-state");
    let args = [
        OsStr::new("--state-dir"),
        state.as_os_str(),
        file.as_os_str(),
    ];

    const TOTAL: u64 = 200_000;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let file = file.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for start in (0..TOTAL).step_by(1000) {
                append(&file, &numbered_lines(start, start + 1000));
                std::thread::sleep(Duration::from_millis(30));
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut agent = collector.spawn_agent_with("crash-agent-0", &args);
    let mut kills = 0;
    // Keep killing while the writer runs, and a couple of times after.
    let mut after = 0;
    while after < 2 {
        if done.load(Ordering::Acquire) {
            after += 1;
        }
        std::thread::sleep(Duration::from_millis(150 + rng.below(700)));
        agent.kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        agent = collector.spawn_agent_with(&format!("crash-agent-{kills}"), &args);
    }
    writer.join().expect("writer thread");
    assert!(kills >= 5, "only {kills} kills");

    collector.wait_for_count("*", TOTAL);
    assert_eq!(collector.count("status:500"), numbered_500s(TOTAL));
    let mut samples = vec![0, TOTAL / 2, TOTAL - 1];
    samples.extend((0..12).map(|_| rng.below(TOTAL)));
    for i in samples {
        assert_eq!(
            collector.count(&format!("seq{i:07}")),
            1,
            "line {i} must be indexed exactly once"
        );
    }
    assert!(agent.is_running(), "{}", agent.stderr_tail());
    agent.kill();
}
