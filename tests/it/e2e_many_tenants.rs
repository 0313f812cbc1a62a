//! Many tenants shipping at once into one collector share one indexing
//! memory budget (`src/index/budget.rs`): with a budget that holds only a
//! few writers, writers are committed and closed to make room, and still
//! every tenant sees exactly its own lines, also after a crash while they
//! were being indexed.

use crate::common;

use common::{numbered_lines, stderr_of, stdout_of, wait_until, Collector, Settings};

const TENANTS: usize = 24;
const LINES: u64 = 1500;
/// Room for four writers at the smallest heap (24 MiB).
const BUDGET: u64 = 100 * 1024 * 1024;

#[test]
fn many_tenants_at_once_share_the_memory_budget_and_each_sees_exactly_its_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(
        root.path(),
        Settings {
            index_toml: format!("memory_budget_bytes = {BUDGET}\n"),
            ..Settings::default()
        },
    );
    // Huge pages made every buffer taken again after the allocator's
    // purge fault in 2 MiB of zeroes (src/main.rs, `tune_allocator`).
    let status = std::fs::read_to_string(format!("/proc/{}/status", collector.pid()))
        .expect("reading the collector's /proc status");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
        "transparent huge pages are on in the collector: {status}"
    );
    let mut viewers = Vec::new();
    let mut agents = Vec::new();
    for i in 0..TENANTS {
        let tenant = format!("tenant{i}");
        assert_eq!(
            collector.operator(&["tenant", "create", &tenant]),
            format!("tenant {tenant} created")
        );
        let (_, agent_file) = collector.new_token(
            &format!("{tenant}-agent"),
            &["--tenant", &tenant, "--role", "agent"],
        );
        let (viewer, _) = collector.new_token(
            &format!("{tenant}-viewer"),
            &["--tenant", &tenant, "--role", "viewer"],
        );
        // Each tenant's lines carry its own word, to show none leaks.
        let log = root.path().join(format!("{tenant}.log"));
        let text = numbered_lines(0, LINES).replace("e2e-writer/1.0", &format!("{tenant}-ua"));
        std::fs::write(&log, text).expect("writing the log");
        viewers.push((tenant, viewer));
        agents.push((agent_file, log));
    }
    let mut running: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, (token, log))| collector.agent_as(&format!("agent{i}"), token, &[log], true))
        .collect();
    for agent in &mut running {
        assert!(agent.wait().success(), "{}", agent.stderr());
    }
    // Every line is durable (acked); kill before they are all indexed: the
    // replay must neither lose nor repeat a line of a writer closed early.
    collector.kill();
    collector.restart();

    for (i, (tenant, viewer)) in viewers.iter().enumerate() {
        wait_until(&format!("{tenant}'s {LINES} lines"), || {
            let n = collector.count_as(viewer, "*");
            assert!(n <= LINES, "{tenant} has {n} lines, more than its {LINES}");
            (n == LINES).then_some(())
        });
        assert_eq!(
            collector.count_as(viewer, &format!("{tenant}-ua")),
            LINES,
            "{tenant}"
        );
        let other = &viewers[(i + 1) % TENANTS].0;
        assert_eq!(
            collector.count_as(viewer, &format!("{other}-ua")),
            0,
            "{tenant} sees {other}"
        );
    }

    // The budget was what bounded the writers: some were closed to make
    // room, and what they hold never passed it.
    assert!(
        collector.metric("nightowl_index_writers_evicted_total") >= 1.0,
        "no writer was closed for the budget: {}",
        collector.metrics_text()
    );
    assert_eq!(
        collector.metric("nightowl_index_memory_budget_bytes"),
        BUDGET as f64
    );
    let reserved = collector.metric("nightowl_index_memory_reserved_bytes");
    assert!(reserved > 0.0 && reserved <= BUDGET as f64, "{reserved}");
    let out = collector.cli_as(&collector.token_file, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("status JSON");
    assert_eq!(status["index"]["memory_budget_bytes"], BUDGET, "{status}");
    assert!(
        status["index"]["memory_reserved_bytes"]
            .as_u64()
            .is_some_and(|r| r <= BUDGET),
        "{status}"
    );
}
