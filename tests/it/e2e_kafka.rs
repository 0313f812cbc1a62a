//! Scale-out on a real Kafka-protocol broker (tansu): agents → collector
//! (`--kafka`) → broker → two `nightowl indexer`s, searched through any
//! node's fan-out. Exactly-once is checked by exact counts, which a lost or
//! a repeated line would break.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::kafka::Broker;
use crate::common::{
    self, free_port, wait_until, wait_until_within, ChildGuard, Collector, Settings,
    WebhookRecorder, BIN, COMMIT_INTERVAL_MS,
};

/// Partitions of the lines topic: two indexers get two each.
pub const PARTITIONS: i32 = 4;

/// The indexers' group session, ms. tansu 0.6 hands a crashed member's
/// partitions back only when it rejoins after its session expired, and a
/// broker outage longer than the session wedges the group
/// (docs/kafka-broker.md): tests wait out the first and stay under the
/// second.
pub const SESSION_MS: u64 = 6000;

/// How long a test waits for the group to settle: a rebalance takes
/// seconds, but on a starved 2-core machine (a full test run) tansu's
/// rounds can take far longer without anything being wrong.
pub const REBALANCE: std::time::Duration = std::time::Duration::from_secs(180);

/// A `nightowl indexer` process with its own data dir and HTTPS port.
pub struct IndexerNode {
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub api_addr: String,
    process: Option<ChildGuard>,
    starts: u32,
    /// Environment of the next start only (a fault to inject).
    next_env: Vec<(String, String)>,
}

impl IndexerNode {
    /// Prepares an indexer sharing `collector`'s tokens and TLS identity
    /// (nodes of one cluster accept the same tokens; docs/kafka.md), on
    /// `api_port`, searching `peers` too. Not started.
    pub fn new(
        root: &Path,
        collector: &Collector,
        broker: &Broker,
        api_port: u16,
        peers: &[String],
        extra_toml: &str,
    ) -> IndexerNode {
        let data_dir = root.join("data");
        fs::create_dir_all(data_dir.join("tls")).expect("indexer data dir");
        for file in ["tokens.json", "tenants.json", "admin.token"] {
            let from = collector.data_dir.join(file);
            if from.exists() {
                fs::copy(&from, data_dir.join(file)).expect("copying the token store");
            }
        }
        for entry in fs::read_dir(collector.data_dir.join("tls")).expect("collector tls dir") {
            let entry = entry.expect("tls entry");
            fs::copy(entry.path(), data_dir.join("tls").join(entry.file_name()))
                .expect("copying the TLS identity");
        }
        let config_path = root.join("indexer.toml");
        let peers: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
        // `[kafka]` lines of the test go into the node's own `[kafka]`.
        let (kafka_extra, extra_toml) = match extra_toml.split_once("[kafka]\n") {
            Some((before, after)) => {
                let (kafka, rest) = after
                    .split_once("\n[")
                    .map_or((after, String::new()), |(k, r)| (k, format!("\n[{r}")));
                (kafka.to_string(), format!("{before}{rest}"))
            }
            None => (String::new(), extra_toml.to_string()),
        };
        // Only the test's own rules: the embedded pack stays off.
        let extra_toml = if extra_toml.contains("[rules]\n") {
            extra_toml.replacen("[rules]\n", "[rules]\nbuiltin = false\n", 1)
        } else {
            format!("{extra_toml}\n[rules]\nbuiltin = false\n")
        };
        fs::write(
            &config_path,
            format!(
                "api_listen = \"127.0.0.1:{api_port}\"\n\n\
                 [index]\ncommit_interval_ms = {COMMIT_INTERVAL_MS}\nwriter_heap_bytes = 20000000\nwriter_threads = 1\n\n\
                 [kafka]\nbrokers = \"{}\"\npartitions = {PARTITIONS}\nsession_timeout_ms = {SESSION_MS}\n{kafka_extra}\n\
                 [cluster]\npeers = [{}]\n\n{extra_toml}",
                broker.addr(),
                peers.join(", ")
            ),
        )
        .expect("writing the indexer config");
        IndexerNode {
            root: root.to_path_buf(),
            data_dir,
            config_path,
            api_addr: format!("127.0.0.1:{api_port}"),
            process: None,
            starts: 0,
            next_env: Vec::new(),
        }
    }

    /// Starts the process with `NIGHTOWL_FAULT_GROUP_COMMIT=fault`
    /// (`exit:N` or `skip`, docs/kafka.md "Tests"), this start only.
    pub fn start_with_fault(&mut self, fault: &str) {
        self.next_env = vec![("NIGHTOWL_FAULT_GROUP_COMMIT".into(), fault.into())];
        self.start();
    }

    /// Whether the process runs (it may have exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Waits for the process to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.process.take().expect("indexer not running").wait()
    }

    /// Starts the process; returns once it printed `nightowl: ready`.
    pub fn start(&mut self) {
        self.spawn();
        let guard = self.process.as_mut().expect("just spawned");
        common::wait_for_ready(guard);
    }

    /// Starts the process with `env` (this start only), without waiting
    /// for it to be ready ([`IndexerNode::wait_ready`]).
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        self.next_env = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.spawn();
    }

    /// Waits for a process started by [`IndexerNode::spawn_with_env`] to
    /// print `nightowl: ready`.
    pub fn wait_ready(&mut self) {
        let guard = self.process.as_mut().expect("indexer not running");
        common::wait_for_ready(guard);
    }

    fn spawn(&mut self) {
        assert!(!self.is_running(), "indexer already running");
        self.process = None;
        self.starts += 1;
        let mut cmd = Command::new(BIN);
        for (key, value) in self.next_env.drain(..) {
            cmd.env(key, value);
        }
        cmd.arg("indexer")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config_path)
            .stdout(Stdio::piped());
        let stderr = self.root.join(format!("indexer-{}.stderr", self.starts));
        self.process = Some(ChildGuard::spawn(
            &format!("indexer (start {})", self.starts),
            cmd,
            &stderr,
        ));
    }

    pub fn server(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        self.process.take().expect("indexer not running").kill();
    }

    /// SIGTERM: commits, leaves the group; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process
            .take()
            .expect("indexer not running")
            .terminate()
    }
}

/// A broker, a collector producing to it, two indexers consuming.
pub struct KafkaCluster {
    pub _dir: tempfile::TempDir,
    pub broker: Broker,
    pub collector: Collector,
    pub indexers: Vec<IndexerNode>,
}

impl KafkaCluster {
    /// `indexer_toml` is appended to each indexer's config (e.g. `[rules]`),
    /// `collector_toml` to the collector's (e.g. `[alerting]`). Two
    /// indexers, started, holding two partitions each.
    pub fn start(indexer_toml: &str, collector_toml: &str) -> KafkaCluster {
        Self::start_with(indexer_toml, collector_toml, |_| ()).0
    }

    /// As [`KafkaCluster::start`], with `setup` run on the collector
    /// before the indexers copy its tenants and tokens (a tenant the
    /// indexers must know, for a purge).
    pub fn start_with<R>(
        indexer_toml: &str,
        collector_toml: &str,
        setup: impl FnOnce(&Collector) -> R,
    ) -> (KafkaCluster, R) {
        let (mut cluster, made) =
            KafkaCluster::prepare_with(2, indexer_toml, collector_toml, setup);
        for indexer in &mut cluster.indexers {
            indexer.start();
        }
        cluster.wait_for_split();
        (cluster, made)
    }

    /// A broker, a collector, and `n` indexers not started yet, each
    /// searching the others (the collector searches them all).
    pub fn prepare(n: usize, indexer_toml: &str, collector_toml: &str) -> KafkaCluster {
        KafkaCluster::prepare_with(n, indexer_toml, collector_toml, |_| ()).0
    }

    /// As [`KafkaCluster::prepare`], with `setup` run on the collector
    /// before the indexers copy its tenants and tokens.
    pub fn prepare_with<R>(
        n: usize,
        indexer_toml: &str,
        collector_toml: &str,
        setup: impl FnOnce(&Collector) -> R,
    ) -> (KafkaCluster, R) {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect();
        let quoted = |urls: &[String]| {
            urls.iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let collector_root = dir.path().join("collector");
        fs::create_dir_all(&collector_root).expect("collector dir");
        let collector = Collector::start(
            &collector_root,
            Settings {
                extra_toml: format!(
                    "[kafka]\nbrokers = \"{}\"\npartitions = {PARTITIONS}\nsession_timeout_ms = {SESSION_MS}\n\n\
                     [cluster]\npeers = [{}]\n\n{collector_toml}",
                    broker.addr(),
                    quoted(&urls),
                ),
                ..Settings::default()
            },
        );
        let made = setup(&collector);
        let indexers: Vec<IndexerNode> = (0..n)
            .map(|i| {
                let others: Vec<String> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| urls[j].clone())
                    .collect();
                IndexerNode::new(
                    &dir.path().join(format!("indexer{i}")),
                    &collector,
                    &broker,
                    ports[i],
                    &others,
                    indexer_toml,
                )
            })
            .collect();
        let cluster = KafkaCluster {
            _dir: dir,
            broker,
            collector,
            indexers,
        };
        (cluster, made)
    }

    /// An agent tailing `logs/*.log` under the collector's root, with its
    /// state dir: files written there later are shipped as they come.
    pub fn tailing_agent(&self) -> (PathBuf, PathBuf, ChildGuard) {
        let logs = self.collector.root.join("logs");
        fs::create_dir_all(&logs).expect("logs dir");
        let state = self.collector.root.join("agent-state");
        let glob = format!("{}/*.log", logs.display());
        let agent = self.collector.spawn_agent_with(
            "agent",
            &["--state-dir".as_ref(), state.as_os_str(), glob.as_ref()],
        );
        (logs, state, agent)
    }

    /// Ships `files` with one `agent --once` run (state in the collector's
    /// `agent-state`), which must succeed.
    pub fn ship(&self, files: &[PathBuf]) {
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let (status, stderr) =
            self.collector
                .run_agent_once("agent", &self.collector.root.join("agent-state"), &refs);
        assert!(status.success(), "agent failed: {stderr}");
    }

    /// A metric of running indexer `indexer`, if it has it.
    pub fn indexer_metric(&self, indexer: usize, name: &str) -> Option<f64> {
        let (status, body) = common::block_on(async {
            let client = nightowl::cli::http::ApiClient::new(
                &self.indexers[indexer].server(),
                &self.collector.ca,
                self.collector.token(),
            )
            .expect("API client");
            client.get("/metrics").await.expect("GET /metrics")
        });
        assert_eq!(status.as_u16(), 200);
        common::metric_value(&String::from_utf8_lossy(&body), name)
    }

    /// Firings of rule `rule` indexer `indexer` made (its own recent
    /// firings: `/api/v1/firings` is never fanned out).
    pub fn firings(&self, indexer: usize, rule: &str) -> usize {
        let json = self.get_json(&self.indexers[indexer].server(), "/api/v1/firings");
        json["firings"]
            .as_array()
            .map(|all| all.iter().filter(|f| f["rule_id"] == rule).count())
            .unwrap_or(0)
    }

    /// Partitions each running indexer holds (its metrics gauge).
    pub fn assigned(&self, indexer: usize) -> i64 {
        self.indexer_metric(indexer, "nightowl_kafka_partitions_assigned")
            .expect("partitions gauge") as i64
    }

    /// Waits until the group has settled with every partition split
    /// between the running indexers, each holding some.
    pub fn wait_for_split(&mut self) {
        let running: Vec<usize> = (0..self.indexers.len())
            .filter(|&i| self.indexers[i].is_running())
            .collect();
        wait_until_within(
            REBALANCE,
            "every running indexer to hold partitions",
            || {
                let held: Vec<i64> = running.iter().map(|&i| self.assigned(i)).collect();
                (held.iter().all(|&n| n > 0) && held.iter().sum::<i64>() == PARTITIONS as i64)
                    .then_some(())
            },
        );
    }

    /// Waits until `indexer` holds every partition (the others left).
    pub fn wait_for_sole_owner(&self, indexer: usize) {
        wait_until_within(
            REBALANCE,
            &format!("indexer {indexer} to own every partition"),
            || (self.assigned(indexer) == PARTITIONS as i64).then_some(()),
        );
    }

    /// `search --count` through `server` (its fan-out covers every node).
    pub fn count_via(&self, server: &str, query: &str) -> u64 {
        let out = Command::new(BIN)
            .args(["search", "--server", server, "--ca"])
            .arg(&self.collector.ca)
            .arg("--token-file")
            .arg(&self.collector.token_file)
            .args(["--count", query])
            .output()
            .expect("running search");
        assert!(
            out.status.success(),
            "search via {server} failed: {}",
            common::stderr_of(&out)
        );
        let text = common::stdout_of(&out);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("search --count printed {text:?}"))
    }

    /// Lines held by one indexer's own shards (no fan-out).
    pub fn local_count(&self, indexer: usize) -> u64 {
        let json = self.get_json(
            &self.indexers[indexer].server(),
            "/api/v1/count?q=*&local=true",
        );
        json["count"].as_u64().expect("count")
    }

    /// GET with the admin token from any node, expecting 200 and JSON.
    pub fn get_json(&self, server: &str, path_and_query: &str) -> serde_json::Value {
        common::block_on(async {
            let client = nightowl::cli::http::ApiClient::new(
                server,
                &self.collector.ca,
                self.collector.token(),
            )
            .expect("API client");
            let (status, body) = client
                .get(path_and_query)
                .await
                .unwrap_or_else(|e| panic!("GET {server}{path_and_query}: {e:#}"));
            assert_eq!(
                status.as_u16(),
                200,
                "GET {server}{path_and_query}: {}",
                String::from_utf8_lossy(&body)
            );
            serde_json::from_slice(&body).expect("JSON answer")
        })
    }

    /// Polls the count through `server` until it is `expected`: fails at
    /// once above it (a line indexed twice) and if it moves afterwards.
    pub fn wait_for_count_via(&self, server: &str, expected: u64) {
        self.wait_for_count_via_within(crate::common::DEADLINE, server, expected)
    }

    /// [`KafkaCluster::wait_for_count_via`] for a backlog larger than the
    /// usual deadline indexes.
    pub fn wait_for_count_via_within(
        &self,
        deadline: std::time::Duration,
        server: &str,
        expected: u64,
    ) {
        crate::common::wait_until_within(
            deadline,
            &format!("{expected} lines searchable via {server}"),
            || {
                let n = self.count_via(server, "*");
                assert!(
                    n <= expected,
                    "{n} lines via {server}, more than the {expected} sent: duplicates"
                );
                (n == expected).then_some(())
            },
        );
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(COMMIT_INTERVAL_MS));
            assert_eq!(
                self.count_via(server, "*"),
                expected,
                "count moved after reaching {expected}"
            );
        }
    }
}

#[test]
fn lines_flow_through_kafka_to_two_indexers_and_every_node_searches_them_all() {
    let cluster = KafkaCluster::start("", "");
    let files = write_more(&cluster.collector.root, "all", 16, 0, 12_500);
    cluster.ship(&files);

    let total = 16 * 12_500;
    cluster.wait_for_count_via(&cluster.collector.server(), total);
    for indexer in &cluster.indexers {
        assert_eq!(cluster.count_via(&indexer.server(), "*"), total);
    }
    let (a, b) = (cluster.local_count(0), cluster.local_count(1));
    assert_eq!(a + b, total, "the indexers' own shards split the lines");
    assert!(a > 0 && b > 0, "both indexers index: {a} and {b}");
    // Each indexer wrote only the Kafka partitions it was assigned.
    for (i, indexer) in cluster.indexers.iter().enumerate() {
        let shards: Vec<String> = fs::read_dir(indexer.data_dir.join("kafka"))
            .expect("kafka state dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert!(!shards.is_empty(), "indexer {i} holds no partition state");
    }
    // The agent's lines are durable in Kafka: the topic holds them.
    assert!(cluster.broker.message_count("nightowl-lines") > 0);
}

/// Writes `files` new access logs of `lines_each` numbered lines from
/// `first_line` on, one source each (sources hash to partitions, so both
/// indexers get some); returns their paths.
pub fn write_more(
    dir: &Path,
    tag: &str,
    files: usize,
    first_line: u64,
    lines_each: u64,
) -> Vec<PathBuf> {
    (0..files)
        .map(|i| {
            let path = dir.join(format!("access-{tag}-{i}.log"));
            let from = first_line + i as u64 * lines_each;
            fs::write(&path, common::numbered_lines(from, from + lines_each))
                .expect("writing a log");
            path
        })
        .collect()
}

#[test]
fn indexers_crashing_or_leaving_mid_stream_lose_and_repeat_nothing() {
    let mut cluster = KafkaCluster::start("", "");
    let (logs, _state, _agent) = cluster.tailing_agent();
    let each = 10_000;
    write_more(&logs, "a", 8, 0, each);
    let collector = cluster.collector.server();
    wait_until("the first lines to be searchable", || {
        (cluster.count_via(&collector, "*") >= 10_000).then_some(())
    });

    // A crash: kill -9 in the middle of the stream, more lines arriving
    // while it is down. tansu 0.6 keeps a crashed member's partitions
    // until it rejoins (docs/kafka-broker.md), so it is restarted, as
    // systemd's Restart= would: it resumes from its own index's offsets.
    cluster.indexers[1].kill();
    write_more(&logs, "b", 4, 8 * each, each);
    std::thread::sleep(std::time::Duration::from_millis(SESSION_MS + 1000));
    cluster.indexers[1].start();
    cluster.wait_for_split();

    // A graceful leave: the survivor takes every partition over from the
    // offsets the leaver committed, while lines keep coming.
    write_more(&logs, "c", 4, 12 * each, each);
    let status = cluster.indexers[0].terminate();
    assert!(status.success(), "indexer 0 exited with {status}");
    cluster.wait_for_sole_owner(1);
    let total = 16 * each;
    cluster.indexers[0].start();
    cluster.wait_for_split();
    cluster.wait_for_count_via(&collector, total);
    assert_eq!(cluster.local_count(0) + cluster.local_count(1), total);
}

#[test]
fn a_broker_outage_holds_the_acks_back_and_loses_nothing() {
    let mut cluster = KafkaCluster::start("", "");
    let (logs, state, _agent) = cluster.tailing_agent();
    let each = 5_000;
    write_more(&logs, "before", 4, 0, each);
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, 4 * each);

    // Kept short: an outage longer than the group session wedges tansu's
    // group (SESSION_MS).
    cluster.broker.pause();
    let during = write_more(&logs, "during", 4, 4 * each, each);
    common::wait_agent_read(&state, &during[0], 1);
    // Read, but not acked: the collector cannot make them durable.
    let status = common::agent_status(&state).expect("agent status");
    assert!(
        status["spool"]["unacked_bytes"].as_u64().unwrap_or(0) > 0,
        "the agent holds the unacked lines in its spool: {status}"
    );
    assert_eq!(cluster.count_via(&collector, "*"), 4 * each);

    cluster.broker.resume();
    cluster.wait_for_count_via(&collector, 8 * each);
    wait_until("the agent's spool to drain", || {
        let status = common::agent_status(&state)?;
        (status["spool"]["unacked_bytes"].as_u64()? == 0).then_some(())
    });
}

/// The client IP the test's attacker uses.
pub const ATTACKER: &str = "203.0.113.77";
pub const LOGIN_RULE: &str = "kafka-login-failures";

/// A threshold rule keyed by client IP: 20 401s on `/login` within 5
/// minutes. Critical, so its group pages at once (group_wait 0).
pub fn write_login_rule(dir: &Path) {
    fs::create_dir_all(dir).expect("rules dir");
    fs::write(
        dir.join("login.yaml"),
        format!(
            "id: {LOGIN_RULE}\ntitle: Login failures from one client\nseverity: critical\n\
             labels: {{team: e2e}}\n\
             match:\n  all:\n    - {{field: status, equals: [401]}}\n    - {{field: path, startswith: /login}}\n\
             detect: {{kind: threshold, key: client_ip, window: 5m, count: 20}}\n"
        ),
    )
    .expect("writing the rule");
}

/// `attack` 401s on `/login` from [`ATTACKER`] plus as many 200s from
/// another client, one second apart in event time, ending two minutes ago:
/// within one window and one suppression span, so each partition's engine
/// fires exactly once however its sources interleave.
fn login_attack(file: usize, attack: u64) -> String {
    let start = common::now_unix() - 120 - attack as i64;
    let mut text = String::new();
    for i in 0..attack {
        let at = common::nginx_time(start + i as i64, 0);
        text.push_str(&format!(
            "{ATTACKER} - - [{at}] \"POST /login HTTP/1.1\" 401 64 \"-\" \"e2e-{file}\"\n\
             198.51.100.{} - - [{at}] \"GET /index.html HTTP/1.1\" 200 512 \"-\" \"e2e\"\n",
            file + 1
        ));
    }
    text
}

/// Firings of [`LOGIN_RULE`] for [`ATTACKER`] an indexer made (its own
/// recent firings: `/api/v1/firings` is never fanned out).
pub fn attacker_firings(cluster: &KafkaCluster, indexer: usize) -> u64 {
    let json = cluster.get_json(&cluster.indexers[indexer].server(), "/api/v1/firings");
    json["firings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|f| f["rule_id"] == LOGIN_RULE && f["key"] == ATTACKER)
                .count() as u64
        })
        .unwrap_or(0)
}

#[test]
fn a_rule_firing_on_both_indexers_pages_once() {
    let rules = tempfile::tempdir().expect("rules dir");
    write_login_rule(rules.path());
    let hook = WebhookRecorder::start();
    // Without re-keying every indexer counts its own partitions: several
    // firings of one key, which the paging stage makes one page.
    let mut cluster = KafkaCluster::start(
        &format!(
            "[kafka]\nrekey = false\n[rules]\ndir = {:?}\n",
            rules.path().display().to_string()
        ),
        &format!(
            "[alerting]\n[alerting.route]\nreceiver = \"hook\"\ngroup_interval = \"1s\"\n\n\
             [[alerting.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );

    // 32 sources of 30 attacker lines each. Sources hash to partitions, so
    // every indexer owns a partition that got some (the range assignor
    // splits 2/2: an indexer misses out with chance 2^-31), and a partition
    // with even one source sees 30 >= 20 attacker lines: it fires.
    let (files, attack) = (32, 30);
    let logs = cluster.collector.root.join("attack");
    fs::create_dir_all(&logs).expect("logs dir");
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| {
            let path = logs.join(format!("access-{i}.log"));
            fs::write(&path, login_attack(i, attack)).expect("writing a log");
            path
        })
        .collect();
    cluster.ship(&paths);
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, files as u64 * attack * 2);

    // Both indexers saw the attack in their own partitions and fired: the
    // same (tenant, rule, key) reached the alerts topic at least twice.
    let fired = wait_until("both indexers to fire on the attacker", || {
        let fired = [attacker_firings(&cluster, 0), attacker_firings(&cluster, 1)];
        fired.iter().all(|&n| n >= 1).then_some(fired)
    });
    // How many times each fired is not bounded by the partitions it holds
    // now: a rebalance (a starved machine misses a heartbeat) hands a
    // partition over, and its new owner reads the last commit interval
    // again with fresh windows and may fire again. What must hold is below:
    // every firing reaches the paging collector, which pages once.
    let total = fired[0] + fired[1];

    // The page arrives, then the paging collector takes in every firing
    // (the alert's count) and its outbox drains: no second page is pending.
    let pages = hook.wait_for(1);
    assert_eq!(pages[0].path, "/hook");
    assert_eq!(pages[0].method, "POST");
    let alert = wait_until(
        &format!("the collector's alert to merge all {total} firings"),
        || {
            let alerts = cluster.get_json(&collector, "/api/v1/alerts");
            let alert = alerts["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["rule_id"] == LOGIN_RULE && a["key"] == ATTACKER)?
                .clone();
            let merged = alert["firings"].as_u64()?;
            assert!(
                merged <= total,
                "{merged} firings merged, more than the {total} made: {alert}"
            );
            (merged == total).then_some(alert)
        },
    );
    wait_until("the collector's outbox to drain", || {
        let metrics = cluster.collector.metrics_text();
        (common::metric_value(&metrics, "nightowl_outbox_depth")? == 0.0).then_some(())
    });
    assert_eq!(
        cluster
            .collector
            .metric("nightowl_alert_firings_dropped_total"),
        0.0
    );
    // A few group intervals (1 s here) pass: a merged duplicate that
    // counted as a change of the group would page again on the next one.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(cluster.collector.metric("nightowl_outbox_depth"), 0.0);
    assert_eq!(
        cluster
            .collector
            .metric("nightowl_notifications_sent_total"),
        1.0
    );

    let firing_pages: Vec<serde_json::Value> = hook
        .requests()
        .into_iter()
        .map(|r| r.json)
        .filter(|b| {
            b["status"] == "firing"
                && b["alerts"].as_array().is_some_and(|alerts| {
                    alerts
                        .iter()
                        .any(|a| a["rule_id"] == LOGIN_RULE && a["key"] == ATTACKER)
                })
        })
        .collect();
    assert_eq!(
        firing_pages.len(),
        1,
        "{total} firings ({fired:?} per indexer) must page once: {firing_pages:#?}"
    );
    assert_eq!(alert["state"], "firing", "{alert}");
    assert_eq!(alert["receivers_notified"], serde_json::json!(["hook"]));
    let listed: Vec<serde_json::Value> = cluster.get_json(&collector, "/api/v1/alerts")["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["rule_id"] == LOGIN_RULE)
        .collect();
    assert_eq!(listed.len(), 1, "one alert for the rule: {listed:#?}");
    assert_eq!(listed[0]["key"], ATTACKER);

    // An indexer with rules (and so a firings forwarder) stops cleanly.
    let status = cluster.indexers[0].terminate();
    assert!(status.success(), "indexer exited with {status}");
}

#[test]
fn a_tenant_purge_on_the_collector_reaches_every_indexer() {
    let cluster = KafkaCluster::start("", "");
    let root = &cluster.collector.root;
    let before = write_more(root, "before", 8, 0, 1_000);
    cluster.ship(&before);
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, 8_000);

    let token_file = cluster.collector.token_file.clone();
    let out = cluster
        .collector
        .cli_as(&token_file, &["tenant", "purge", "default", "--yes"]);
    assert!(
        out.status.success(),
        "purge failed: {}",
        common::stderr_of(&out)
    );
    assert_eq!(cluster.count_via(&collector, "*"), 0);
    for (i, indexer) in cluster.indexers.iter().enumerate() {
        assert_eq!(cluster.local_count(i), 0, "indexer {i} still holds lines");
        assert!(
            !indexer.data_dir.join("index").join("default").exists(),
            "indexer {i} kept the tenant's directories"
        );
    }

    // Lines received after the purge are the tenant's new data.
    let after = write_more(root, "after", 2, 100_000, 250);
    cluster.ship(&after);
    cluster.wait_for_count_via(&collector, 500);
}
