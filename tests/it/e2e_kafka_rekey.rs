//! Rules keyed across sources on Kafka (issue 19): a brute force that a
//! load balancer spreads over 16 web servers lands on several partitions
//! of the lines topic, read by two indexers. No partition alone crosses
//! the rule's threshold; the rekey topic brings the attacker's lines to
//! the one owner of its key, which fires once, and it pages once.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{self, wait_until, WebhookRecorder};
use crate::e2e_kafka::{attacker_firings, write_login_rule, KafkaCluster, ATTACKER, LOGIN_RULE};

/// Web servers (sources), each its own access log.
const HOSTS: usize = 16;
/// Attacker lines in all: 3 per server, 20 needed in 5 minutes.
const ATTACK: usize = 48;
/// Ordinary lines per server.
const BACKGROUND: usize = 100;

/// The logs of `HOSTS` servers behind one load balancer: the attack goes
/// round-robin, 2.5 s apart, over the last few minutes.
fn write_logs(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("logs dir");
    let now = common::now_unix();
    let mut texts = vec![String::new(); HOSTS];
    for (h, text) in texts.iter_mut().enumerate() {
        for i in 0..BACKGROUND {
            let at = common::nginx_time(now - 600 + (i * 5) as i64, 0);
            text.push_str(&format!(
                "100.64.{h}.{} - - [{at}] \"GET /products/{i} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"\n",
                i % 250 + 1
            ));
        }
    }
    for i in 0..ATTACK {
        let at = common::nginx_time(now - 150 + (i as i64 * 5) / 2, 0);
        texts[i % HOSTS].push_str(&format!(
            "{ATTACKER} - - [{at}] \"POST /login HTTP/1.1\" 401 64 \"-\" \"python-requests/2.31.0\"\n"
        ));
    }
    texts
        .iter()
        .enumerate()
        .map(|(h, text)| {
            let path = dir.join(format!("web{h:02}.log"));
            fs::write(&path, text).expect("writing a log");
            path
        })
        .collect()
}

/// A counter of an indexer: 0 until it first counts.
fn indexer_metric(cluster: &KafkaCluster, indexer: usize, name: &str) -> f64 {
    cluster.indexer_metric(indexer, name).unwrap_or(0.0)
}

#[test]
fn a_brute_force_spread_over_sixteen_hosts_pages_exactly_once() {
    let rules = tempfile::tempdir().expect("rules dir");
    write_login_rule(rules.path());
    let hook = WebhookRecorder::start();
    let cluster = KafkaCluster::start(
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
        &format!(
            "[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_interval = \"1s\"\n\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    let paths = write_logs(&cluster.collector.root.join("web"));
    cluster.ship(&paths);
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, (HOSTS * BACKGROUND + ATTACK) as u64);

    // The servers' logs are spread over the lines topic: no partition holds
    // 20 of the attacker's lines (16 sources over 4 partitions).
    let spread = cluster.broker.partition_counts("nightowl-lines");
    assert!(
        spread.values().filter(|&&n| n > 0).count() >= 2,
        "the sources must land on several partitions: {spread:?}"
    );

    // Exactly one indexer (the key's owner) fires, once.
    let fired = wait_until("the attacker's key to fire", || {
        let fired = [attacker_firings(&cluster, 0), attacker_firings(&cluster, 1)];
        (fired.iter().sum::<u64>() >= 1).then_some(fired)
    });
    let pages = hook.wait_for(1);
    assert_eq!(pages[0].path, "/hook");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let again = [attacker_firings(&cluster, 0), attacker_firings(&cluster, 1)];
    assert_eq!(again, fired, "firings kept coming");
    assert_eq!(
        fired.iter().sum::<u64>(),
        1,
        "one owner, one firing: {fired:?}"
    );
    assert_eq!(attacker_pages(&hook), 1, "{:#?}", hook.requests());

    // Only the lines passing the rule's filter travelled twice.
    let rekeyed: f64 = (0..2)
        .map(|i| indexer_metric(&cluster, i, "nightowl_kafka_rekey_records_total"))
        .sum();
    let read: f64 = (0..2)
        .map(|i| indexer_metric(&cluster, i, "nightowl_kafka_lines_records_total"))
        .sum();
    assert!(rekeyed >= 1.0, "no rekey message was produced");
    assert!(
        rekeyed <= read,
        "{rekeyed} rekey messages for {read} line messages"
    );
    let owner_topic = cluster.broker.read_all("nightowl-rekey");
    assert_eq!(owner_topic.len() as f64, rekeyed);
}

/// Writes attacker lines `from..to` (one per second of event time),
/// round-robin over [`HOSTS`] new files of `phase`, and ships them.
fn ship_phase(cluster: &KafkaCluster, phase: &str, from: usize, to: usize) {
    let dir = cluster.collector.root.join("web");
    fs::create_dir_all(&dir).expect("logs dir");
    let now = common::now_unix();
    let mut texts = vec![String::new(); HOSTS];
    for i in from..to {
        // All in one 5-minute window, whatever the phase.
        let at = common::nginx_time(now - 100 + i as i64, 0);
        texts[i % HOSTS].push_str(&format!(
            "{ATTACKER} - - [{at}] \"POST /login HTTP/1.1\" 401 64 \"-\" \"{phase}\"\n"
        ));
    }
    let paths: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .filter(|(_, text)| !text.is_empty())
        .map(|(h, text)| {
            let path = dir.join(format!("{phase}-web{h:02}.log"));
            fs::write(&path, text).expect("writing a log");
            path
        })
        .collect();
    cluster.ship(&paths);
}

/// Pages for the attacker so far.
fn attacker_pages(hook: &WebhookRecorder) -> usize {
    hook.requests()
        .into_iter()
        .filter(|r| {
            r.json["status"] == "firing"
                && r.json["alerts"].as_array().is_some_and(|alerts| {
                    alerts
                        .iter()
                        .any(|a| a["rule_id"] == LOGIN_RULE && a["key"] == ATTACKER)
                })
        })
        .count()
}

#[test]
fn a_threshold_window_interrupted_by_rebalances_still_fires_once() {
    let rules = tempfile::tempdir().expect("rules dir");
    write_login_rule(rules.path());
    let hook = WebhookRecorder::start();
    let mut cluster = KafkaCluster::start(
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
        &format!(
            "[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_interval = \"1s\"\n\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    let collector = cluster.collector.server();
    // 12 of the 20 lines with both indexers up.
    ship_phase(&cluster, "phasea", 0, 12);
    cluster.wait_for_count_via(&collector, 12);

    // Indexer 0 leaves: every partition, the key's owner among them, is
    // now indexer 1's. 4 more lines.
    let status = cluster.indexers[0].terminate();
    assert!(status.success(), "indexer 0 exited with {status}");
    cluster.wait_for_sole_owner(1);
    ship_phase(&cluster, "phaseb", 12, 16);
    let one = cluster.indexers[1].server();
    wait_until("phase b searchable on indexer 1", || {
        (cluster.count_via(&one, "phaseb") == 4).then_some(())
    });

    // Indexer 0 returns and indexer 1 leaves: the partitions move again.
    // The last 4 lines complete the window: 20 in 5 minutes only if the
    // counts of the first 16 moved with their partition twice.
    cluster.indexers[0].start();
    cluster.wait_for_split();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(attacker_pages(&hook), 0, "fired before the 20th line");
    let status = cluster.indexers[1].terminate();
    assert!(status.success(), "indexer 1 exited with {status}");
    cluster.wait_for_sole_owner(0);
    ship_phase(&cluster, "phasec", 16, 20);
    let zero = cluster.indexers[0].server();
    wait_until("phase c searchable on indexer 0", || {
        (cluster.count_via(&zero, "phasec") == 4).then_some(())
    });

    hook.wait_for(1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(attacker_pages(&hook), 1, "{:#?}", hook.requests());
    assert_eq!(attacker_firings(&cluster, 0), 1);
    // The key's partition reached indexer 0's current process from the
    // other one (at its restart or when indexer 1 left): through the
    // changelog, not by replaying the rekey topic from its start.
    assert!(
        indexer_metric(&cluster, 0, "nightowl_kafka_rule_state_restored_total") >= 1.0,
        "no rule state restored from the changelog"
    );
}
