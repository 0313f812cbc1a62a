//! A real Kafka-protocol broker for the scale-out tests: tansu
//! (https://github.com/tansu-io/tansu), one process per test with its own
//! port and in-memory storage, killed when the [`Broker`] is dropped.
//!
//! Apache Kafka itself cannot be installed on the CI machine; tansu speaks
//! the same wire protocol (produce, fetch, idempotent producers, classic
//! consumer groups, offset commits), which is all nightowl uses. Its quirks
//! are in docs/kafka-broker.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{block_on, free_port, tail, ChildGuard, DEADLINE, POLL};

/// How a test finds the tansu binary, in order. `scripts/test` installs it and
/// exports `NIGHTOWL_TANSU`.
fn tansu_binary() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(path) = std::env::var_os("NIGHTOWL_TANSU") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return path;
        }
        tried.push(path);
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&dirs) {
            let path = dir.join("tansu");
            if path.is_file() {
                return path;
            }
        }
        tried.push(PathBuf::from("tansu on $PATH"));
    }
    let mut fixed = vec![PathBuf::from("/opt/tansu/bin/tansu")];
    if let Some(home) = std::env::var_os("HOME") {
        fixed.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    for path in fixed {
        if path.is_file() {
            return path;
        }
        tried.push(path);
    }
    panic!(
        "no tansu binary (the Kafka-protocol broker of the Kafka tests) found; tried {tried:?}. \
         `scripts/test` installs it (cargo install tansu --version 0.6.0 --locked --features dynostore) and exports \
         NIGHTOWL_TANSU; run it once, or set NIGHTOWL_TANSU=/path/to/tansu"
    );
}

/// One record read back from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A running tansu broker listening on `127.0.0.1:PORT`.
pub struct Broker {
    process: ChildGuard,
    port: u16,
    stdout_path: PathBuf,
    paused: bool,
    // Holds the stderr/stdout files; removed with the broker.
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with in-memory storage and returns once it answers a
    /// Kafka metadata request.
    pub fn start() -> Broker {
        let bin = tansu_binary();
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let stdout_path = dir.path().join("tansu.stdout");
        let stdout = std::fs::File::create(&stdout_path).expect("creating tansu.stdout");
        let mut cmd = Command::new(&bin);
        cmd.arg("broker")
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            // The broker reads a `.env` of its working directory (dotenv):
            // start it where there is none.
            .current_dir(dir.path())
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .stdout(Stdio::from(stdout));
        let process = ChildGuard::spawn("tansu broker", cmd, &dir.path().join("tansu.stderr"));
        let mut broker = Broker {
            process,
            port,
            stdout_path,
            paused: false,
            _dir: dir,
        };
        broker.wait_ready();
        broker
    }

    fn wait_ready(&mut self) {
        let consumer: BaseConsumer = self.config().create().expect("creating a metadata client");
        let started = Instant::now();
        loop {
            assert!(
                self.process.is_running(),
                "tansu exited at start; {}",
                self.output_tail()
            );
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) if !md.brokers().is_empty() => return,
                Ok(_) => {}
                Err(e) => {
                    assert!(
                        started.elapsed() < DEADLINE,
                        "tansu on {} never answered a metadata request: {e}; {}",
                        self.addr(),
                        self.output_tail()
                    );
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client config pointing at this broker, with the timeouts the tests
    /// want: quick reconnects, no waiting on a broker that never answers.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.addr())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000");
        config
    }

    /// SIGSTOP: the broker stops answering but keeps its connections and its
    /// in-memory data; a broker outage without data loss.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT: the paused broker answers again, the requests queued in its
    /// sockets first.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.process.id() as libc::pid_t;
        assert!(pid > 0, "tansu is not running");
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill -{sig} {pid} failed");
    }

    /// Creates a topic (replication factor 1) through the CreateTopics API:
    /// tansu does not create topics on first use.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().expect("creating an admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics([&topic], &opts))
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}; {}", self.output_tail()));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("creating topic {topic}: {code}; {}", self.output_tail());
            }
        }
        // Producers and consumers look the topic up right away: wait until
        // the broker's metadata shows every partition.
        let consumer: BaseConsumer = self.config().create().expect("metadata client");
        super::wait_until(&format!("topic {name} in the metadata"), || {
            let md = consumer
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()?;
            let topic = md.topics().iter().find(|t| t.name() == name)?;
            (topic.error().is_none() && topic.partitions().len() == partitions as usize)
                .then_some(())
        });
    }

    /// The partition count of `topic` as the broker reports it.
    pub fn partitions(&self, topic: &str) -> i32 {
        let consumer: BaseConsumer = self.config().create().expect("metadata client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32)
    }

    /// Every record of `topic`, read without joining a group (nothing is
    /// committed), in partition then offset order: each partition from its
    /// start up to the high watermark its last fetch reported.
    ///
    /// Not by ListOffsets watermarks: tansu 0.6 answers "latest" with the
    /// base offset of the last batch + 1, not the end of that batch (see
    /// docs/kafka-broker.md). The fetch responses' high watermark is right,
    /// and librdkafka reports reaching it as a partition EOF.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let partitions = self.partitions(topic);
        let consumer: BaseConsumer = self
            .config()
            // librdkafka refuses assign() without a group.id ("Unknown
            // group"); assign() alone never joins the group.
            .set("group.id", "nightowl-test-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("reading client");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition offset");
        }
        consumer.assign(&tpl).expect("assign");
        let mut records = Vec::new();
        let mut at_end = BTreeSet::new();
        let started = Instant::now();
        while (at_end.len() as i32) < partitions {
            assert!(
                started.elapsed() < DEADLINE,
                "read {} records of {topic} within {DEADLINE:?}; partitions at their end: {at_end:?}",
                records.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                }),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }

    /// How many records `topic` holds.
    pub fn message_count(&self, topic: &str) -> usize {
        self.read_all(topic).len()
    }

    /// How many records each partition of `topic` holds.
    pub fn partition_counts(&self, topic: &str) -> BTreeMap<i32, usize> {
        let mut counts: BTreeMap<i32, usize> =
            (0..self.partitions(topic)).map(|p| (p, 0)).collect();
        for r in self.read_all(topic) {
            *counts.entry(r.partition).or_default() += 1;
        }
        counts
    }

    /// The last lines tansu printed, for failure messages.
    pub fn output_tail(&self) -> String {
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        format!(
            "tansu stdout (last lines):\n{}\ntansu stderr (last lines):\n{}",
            tail(&stdout, 30),
            self.process.stderr_tail()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.paused {
            // SIGKILL ends a stopped process too; continuing it first lets
            // nothing linger in a half state.
            self.signal(libc::SIGCONT);
        }
        if std::thread::panicking() {
            let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
            eprintln!(
                "---- stdout of tansu (last lines) ----\n{}",
                tail(&stdout, 30)
            );
        }
        // The ChildGuard kills the process and prints its stderr.
    }
}
