//! Hot reload on Kafka indexers: a rule file added while they run reaches
//! every partition's engine of every indexer; a broken one is refused,
//! named file:line, and the rules in force stay.

use crate::common;
use crate::e2e_kafka::KafkaCluster;

use common::wait_until;
use std::fs;
use std::path::PathBuf;

const FIRST: &str = "kafka-reload-first";
const ADDED: &str = "kafka-reload-added";

fn rule(id: &str, path_prefix: &str) -> String {
    format!(
        "id: {id}\ntitle: {id}\nseverity: warning\n\
         match: {{field: path, startswith: {path_prefix}}}\n\
         detect: {{kind: match, key: client_ip}}\n"
    )
}

/// `GET /api/v1/rules` of one indexer: (enabled rules, last reload ok).
fn rules_of(cluster: &KafkaCluster, indexer: usize) -> (Vec<String>, Option<bool>, String) {
    let json = cluster.get_json(&cluster.indexers[indexer].server(), "/api/v1/rules");
    let ids = json["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        ids,
        json["last_reload"]["ok"].as_bool(),
        json["last_reload"]["errors"].to_string(),
    )
}

#[test]
fn a_rule_added_while_indexers_run_fires_on_every_partition() {
    let rules = tempfile::tempdir().expect("rules dir");
    fs::write(rules.path().join("first.yaml"), rule(FIRST, "/first")).expect("rule");
    let cluster = KafkaCluster::start(
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
        "",
    );
    for i in 0..2 {
        assert_eq!(rules_of(&cluster, i).0, vec![FIRST.to_string()]);
    }

    // Added: every indexer reloads.
    fs::write(
        rules.path().join("added.yaml"),
        rule(ADDED, "/reload-probe"),
    )
    .expect("rule");
    for i in 0..2 {
        wait_until(&format!("indexer {i} to load the added rule"), || {
            let (ids, ok, _) = rules_of(&cluster, i);
            (ids.len() == 2 && ok == Some(true)).then_some(())
        });
    }

    // Broken: refused with its file and line, the two rules stay.
    let broken = rules.path().join("broken.yaml");
    fs::write(
        &broken,
        "id: broken\ntitle: b\nseverity: warning\ndetect: {kind: nonsense}\n",
    )
    .expect("rule");
    for i in 0..2 {
        let errors = wait_until(&format!("indexer {i} to refuse the broken file"), || {
            let (ids, ok, errors) = rules_of(&cluster, i);
            assert_eq!(ids.len(), 2, "the rules in force stay");
            (ok == Some(false)).then_some(errors)
        });
        assert!(errors.contains("broken.yaml:"), "{errors}");
    }
    fs::remove_file(&broken).expect("removing the broken rule");

    // Lines from many sources land on every partition: the added rule
    // fires on both indexers, so each shard's engine has it.
    let logs = cluster.collector.root.join("probe");
    fs::create_dir_all(&logs).expect("logs dir");
    let now = common::now_unix();
    let paths: Vec<PathBuf> = (0..32)
        .map(|i| {
            let path = logs.join(format!("access-{i}.log"));
            let text: String = (0..5)
                .map(|j| {
                    format!(
                        "10.7.{i}.{j} - - [{}] \"GET /reload-probe/{j} HTTP/1.1\" 200 5 \"-\" \"e2e\"\n",
                        common::nginx_time(now - 30, 0)
                    )
                })
                .collect();
            fs::write(&path, text).expect("log");
            path
        })
        .collect();
    cluster.ship(&paths);
    cluster.wait_for_count_via(&cluster.collector.server(), 160);
    for i in 0..2 {
        wait_until(&format!("indexer {i} to fire the added rule"), || {
            (cluster.firings(i, ADDED) >= 1).then_some(())
        });
        assert_eq!(cluster.firings(i, FIRST), 0);
    }
}
