//! Rule state of the line shards across a partition move (issue 19, part
//! 2): a rule that runs in the shard of a lines partition (keyed by
//! `source`, or any rule with `[kafka] rekey = false`) keeps its window
//! when the partition moves to another indexer, through the changelog
//! `nightowl-lines-state`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, wait_until};
use crate::e2e_kafka::KafkaCluster;

const RULE: &str = "kafka-checkout-errors";
/// Lines of the window before the move and after it: 20 fire the rule.
const BEFORE: usize = 12;
const AFTER: usize = 8;

/// A threshold of 20 checkout errors in 10 minutes, keyed by `key`.
fn write_rule(dir: &Path, key: &str) {
    fs::write(
        dir.join("checkout.yaml"),
        format!(
            "id: {RULE}\ntitle: Checkout errors\nseverity: warning\n\
             match:\n  all:\n    - {{field: status, equals: [500]}}\n    - {{field: path, startswith: /checkout}}\n\
             detect: {{kind: threshold, key: {key}, window: 10m, count: 20}}\n"
        ),
    )
    .expect("writing the rule");
}

/// Appends checkout errors `from..to` (one a second of event time, all in
/// the last two minutes) to the one access log, and ships them: one
/// source, so one partition of the lines topic.
fn ship(cluster: &KafkaCluster, log: &Path, from: usize, to: usize) {
    let now = common::now_unix();
    let mut text = fs::read_to_string(log).unwrap_or_default();
    for i in from..to {
        let at = common::nginx_time(now - 100 + i as i64, 0);
        text.push_str(&format!(
            "198.51.100.7 - - [{at}] \"POST /checkout HTTP/1.1\" 500 64 \"-\" \"e2e-{i}\"\n"
        ));
    }
    fs::write(log, text).expect("writing the log");
    cluster.ship(&[log.to_path_buf()]);
}

/// 12 lines indexed by the partition's first owner, which leaves
/// (SIGTERM); the partition moves to the other indexer; 8 more lines: the
/// rule fires once there, from the window restored out of the changelog.
fn a_window_moves_with_its_partition(indexer_toml: &str, key: &str) {
    let rules = tempfile::tempdir().expect("rules dir");
    write_rule(rules.path(), key);
    let mut cluster = KafkaCluster::start(
        &format!(
            "{indexer_toml}[rules]\ndir = {:?}\n",
            rules.path().display().to_string()
        ),
        "",
    );
    let log: PathBuf = cluster.collector.root.join("web").join("access.log");
    fs::create_dir_all(log.parent().expect("logs dir")).expect("logs dir");
    let collector = cluster.collector.server();
    ship(&cluster, &log, 0, BEFORE);
    cluster.wait_for_count_via(&collector, BEFORE as u64);

    // The indexer holding the source's partition has all 12, and no firing.
    let first = (0..2)
        .find(|&i| cluster.local_count(i) == BEFORE as u64)
        .expect("one indexer holds the source's partition");
    let second = 1 - first;
    for i in [first, second] {
        assert_eq!(cluster.firings(i, RULE), 0, "fired before the 20th line");
    }
    let partition = *cluster
        .broker
        .partition_counts("nightowl-lines")
        .iter()
        .find(|(_, &n)| n > 0)
        .expect("a partition holds the lines")
        .0;

    // It leaves: the partition moves, its state saved on the way out.
    let status = cluster.indexers[first].terminate();
    assert!(status.success(), "indexer {first} exited with {status}");
    cluster.wait_for_sole_owner(second);
    let saved: Vec<_> = cluster
        .broker
        .read_all("nightowl-lines-state")
        .into_iter()
        .filter(|r| r.partition == partition)
        .collect();
    assert!(
        !saved.is_empty(),
        "no state of partition {partition} in the changelog"
    );
    assert_eq!(
        saved[0].key.as_deref(),
        Some(partition.to_string().as_bytes())
    );

    // 8 more lines: 20 in the window only if the first 12 came along.
    ship(&cluster, &log, BEFORE, BEFORE + AFTER);
    // The new owner reads from where the first one stopped: only these
    // 8 are in its index (the 12 stay in the first one's).
    wait_until("the 8 lines indexed by the new owner", || {
        (cluster.local_count(second) == AFTER as u64).then_some(())
    });
    wait_until("the moved window to fire", || {
        (cluster.firings(second, RULE) >= 1).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(cluster.firings(second, RULE), 1, "fired more than once");
    assert!(
        cluster
            .indexer_metric(second, "nightowl_kafka_line_state_restored_total")
            .unwrap_or(0.0)
            >= 1.0,
        "no line shard's rule state restored from the changelog"
    );
}

#[test]
fn a_source_keyed_window_moves_with_its_partition() {
    a_window_moves_with_its_partition("", "source");
}

#[test]
fn a_window_moves_with_its_partition_without_rekeying() {
    a_window_moves_with_its_partition("[kafka]\nrekey = false\n", "client_ip");
}
