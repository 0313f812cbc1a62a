//! Log patterns on Kafka: an app log shipped through a collector in Kafka
//! mode to two `nightowl indexer`s. Every line carries its pattern;
//! `pattern:<id>` and `/api/v1/patterns` through the fan-out see both
//! indexers' lines under one id per statement, also after partitions moved
//! and their new owner learned the statements again from its own lines;
//! and a tenant purge leaves none of the tenant's patterns on an
//! indexer's disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, scan, wait_until};
use crate::e2e_kafka::KafkaCluster;
use crate::e2e_patterns::{app_log, mined};

/// Sources (one file each): spread over the partitions, so both indexers
/// index some of each statement (one misses out with chance 2^-15).
const FILES: usize = 16;
/// In the other tenant's lines (no digit: kept in the templates).
const ACME_MARKER: &str = "acmesecretnote";
const DEFAULT_MARKER: &str = "defaultnote";

fn write_logs(dir: &Path, text: &str) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("logs dir");
    (0..FILES)
        .map(|i| {
            let path = dir.join(format!("app-{i}.log"));
            fs::write(&path, text).expect("writing a log");
            path
        })
        .collect()
}

/// `/api/v1/patterns` from `server` (`local` without the fan-out): id ->
/// (count, template).
fn listed(cluster: &KafkaCluster, server: &str, local: bool) -> BTreeMap<String, (u64, String)> {
    let json = cluster.get_json(server, &format!("/api/v1/patterns?limit=50&local={local}"));
    json["patterns"]
        .as_array()
        .unwrap_or_else(|| panic!("no patterns: {json:#}"))
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                (
                    p["count"].as_u64().unwrap_or_default(),
                    p["template"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn local_pattern_count(cluster: &KafkaCluster, indexer: usize, id: &str) -> u64 {
    let json = cluster.get_json(
        &cluster.indexers[indexer].server(),
        &format!("/api/v1/count?q=pattern:{id}&local=true"),
    );
    json["count"].as_u64().expect("count")
}

fn holds(dir: &Path, needle: &str) -> Vec<(PathBuf, &'static str)> {
    scan::files_holding(dir, needle.as_bytes())
}

#[test]
fn indexers_name_lines_alike_the_fanout_sums_them_and_a_purge_forgets_them() {
    let (mut cluster, acme) = KafkaCluster::start_with("", "", |c| {
        c.operator(&["tenant", "create", "acme"]);
        let (_, agent) = c.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
        let (_, admin) = c.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
        (agent, admin)
    });
    let (acme_agent, acme_admin) = acme;
    let root = cluster.collector.root.clone();
    let collector = cluster.collector.server();

    let users = ["ann", "bo", "cy", "di", "ed", "flo", "gus"];
    let first = app_log(&users, DEFAULT_MARKER);
    let sample = root.join("sample.log");
    fs::write(&sample, &first).expect("write sample");
    let expected = mined(&sample);
    assert_eq!(expected.len(), 3, "three statements: {expected:?}");
    let users_id = expected
        .iter()
        .find(|(_, (_, t))| t == "Invalid user <*> from <*> port <*>")
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("the users' pattern: {expected:?}"));
    let per_file = first.lines().count() as u64;

    let files = write_logs(&root.join("app"), &first);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let state = root.join("agent-state");
    let (status, stderr) = cluster.collector.run_agent_once("agent", &state, &refs);
    assert!(status.success(), "agent failed: {stderr}");
    let acme_files = write_logs(&root.join("acme"), &app_log(&users, ACME_MARKER));
    let acme_refs: Vec<&Path> = acme_files.iter().map(PathBuf::as_path).collect();
    let mut agent = cluster
        .collector
        .agent_as("acme", &acme_agent, &acme_refs, true);
    assert!(agent.wait().success(), "{}", agent.stderr());
    cluster.wait_for_count_via(&collector, per_file * FILES as u64);

    // Each indexer mined its own partitions' sources; a statement has one
    // id on both, so the fan-out finds all its lines (the users' ones
    // indexed before the sixth user opened the slot, too: aliases) and
    // the pattern list sums both indexers' counts under it.
    for (id, (n, _)) in &expected {
        let total = n * FILES as u64;
        assert_eq!(
            cluster.count_via(&collector, &format!("pattern:{id}")),
            total
        );
        let server = cluster.indexers[1].server();
        assert_eq!(cluster.count_via(&server, &format!("pattern:{id}")), total);
        let (a, b) = (
            local_pattern_count(&cluster, 0, id),
            local_pattern_count(&cluster, 1, id),
        );
        assert!(a > 0 && b > 0, "{id}: {a} and {b} lines per indexer");
        assert_eq!(a + b, total, "{id}");
    }
    let merged = listed(&cluster, &collector, false);
    assert_eq!(
        merged.len(),
        expected.len(),
        "the fan-out lists each statement once: {merged:?}"
    );
    for (id, (n, template)) in &expected {
        let got = merged
            .get(id)
            .unwrap_or_else(|| panic!("{id} not listed: {merged:?}"));
        assert_eq!(got, &(n * FILES as u64, template.clone()), "{id}");
        let local: Vec<u64> = (0..2)
            .map(|i| {
                listed(&cluster, &cluster.indexers[i].server(), true)
                    .get(id)
                    .map_or(0, |(count, _)| *count)
            })
            .collect();
        assert!(local.iter().all(|&c| c > 0), "{id}: {local:?}");
        assert_eq!(local.iter().sum::<u64>(), got.0, "{id}: {local:?}");
    }

    // Indexer 1 leaves: indexer 0 takes its partitions and meets their
    // sources for the first time. New users: their statement is learned
    // again there (five word patterns, then the slot opens) and named as
    // before, so the old query finds the new lines too.
    let users_on_0 = local_pattern_count(&cluster, 0, &users_id);
    let lines_on_0 = cluster.local_count(0);
    assert!(cluster.indexers[1].terminate().success());
    cluster.wait_for_sole_owner(0);
    let later_users = ["ivy", "jo", "kim", "lu", "max", "ned", "oz"];
    let later = app_log(&later_users, DEFAULT_MARKER);
    fs::write(&sample, &later).expect("write sample");
    let later_ids: Vec<String> = mined(&sample).into_keys().collect();
    assert_eq!(
        later_ids,
        expected.keys().cloned().collect::<Vec<_>>(),
        "other users, the same ids: they come from the templates"
    );
    for file in &files {
        common::append(file, &later);
    }
    let (status, stderr) = cluster.collector.run_agent_once("agent", &state, &refs);
    assert!(status.success(), "agent failed: {stderr}");
    wait_until("indexer 0 to index the new lines", || {
        (cluster.local_count(0) == lines_on_0 + per_file * FILES as u64).then_some(())
    });
    assert_eq!(
        local_pattern_count(&cluster, 0, &users_id),
        users_on_0 + (later_users.len() * FILES) as u64,
        "every new user's line is under the users' pattern"
    );

    cluster.indexers[1].start();
    cluster.wait_for_split();
    cluster.wait_for_count_via(&collector, 2 * per_file * FILES as u64);
    let merged = listed(&cluster, &collector, false);
    for (id, (n, template)) in &expected {
        let total = 2 * n * FILES as u64;
        assert_eq!(
            cluster.count_via(&collector, &format!("pattern:{id}")),
            total
        );
        assert_eq!(
            merged.get(id),
            Some(&(total, template.clone())),
            "{merged:?}"
        );
    }
    assert_eq!(merged.len(), expected.len(), "{merged:?}");

    // The tenant purge: the indexers held acme's patterns on disk (the
    // node's store, saved on the rule snapshot's interval and at a
    // rebalance), and hold none of them afterwards, whichever partitions
    // they have now; the default tenant's stay.
    for (i, indexer) in cluster.indexers.iter().enumerate() {
        wait_until(&format!("indexer {i} to save acme's patterns"), || {
            (!holds(&indexer.data_dir.join("patterns"), ACME_MARKER).is_empty()).then_some(())
        });
    }
    let out = cluster
        .collector
        .cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    for (i, indexer) in cluster.indexers.iter().enumerate() {
        let left = holds(&indexer.data_dir, ACME_MARKER);
        assert!(
            left.is_empty(),
            "indexer {i} still holds acme's lines in {left:?}"
        );
        assert!(
            !holds(&indexer.data_dir.join("patterns"), DEFAULT_MARKER).is_empty(),
            "indexer {i} lost the default tenant's patterns"
        );
    }
    assert_eq!(
        cluster.count_via(&collector, &format!("pattern:{users_id}")),
        2 * (users.len() * FILES) as u64
    );
}
