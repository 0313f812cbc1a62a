//! The Kafka client behaviour nightowl's scale-out relies on, proven with
//! rdkafka (bundled librdkafka) against a real Kafka-protocol broker
//! (tansu, see `common::kafka`): idempotent keyed produce with acks=all,
//! consumer groups splitting partitions, synchronous offset commits,
//! takeover when a member leaves, acks held back while the broker is down,
//! and a rebalance callback that starts each partition at an offset of the
//! caller's choosing. Findings are in docs/kafka-broker.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::common::kafka::Broker;
use crate::common::{block_on, ChildGuard, DEADLINE, POLL};

const TOPIC: &str = "events";

/// The producer settings the collector uses: every record acked by the
/// broker (acks=all) and retried without duplicates (idempotence), never
/// given up on while the broker is merely down.
fn producer(broker: &Broker) -> FutureProducer {
    broker
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("creating the producer")
}

/// Sends `count` records keyed `host-{i % 37}` and returns each key with
/// the partition and offset the broker acked it at.
fn produce_keyed(producer: &FutureProducer, count: usize) -> Vec<(String, i32, i64)> {
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("host-{}", i % 37);
        let payload = format!("line {i}");
        let record = FutureRecord::to(TOPIC).key(&key).payload(&payload);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queueing a record");
        pending.push((key, delivery));
    }
    block_on(async {
        let mut acked = Vec::with_capacity(count);
        for (key, delivery) in pending {
            let delivery = delivery
                .await
                .expect("delivery future cancelled")
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("record with key {key} not acked: {e}"));
            acked.push((key, delivery.partition, delivery.offset));
        }
        acked
    })
}

/// How records are grouped into the batches (record sets) the broker
/// stores: tansu 0.6 serves a fetch only from batch starts.
#[derive(Clone, Copy, PartialEq)]
enum Batching {
    /// As the producer likes: the records of a quick burst share a batch.
    Bursts,
    /// One record per batch: every offset is a batch start.
    OnePerBatch,
}

/// Records straight into each partition, `per_partition` each.
fn produce_to_partitions(broker: &Broker, partitions: i32, per_partition: i64, batching: Batching) {
    let producer: FutureProducer = match batching {
        Batching::Bursts => producer(broker),
        Batching::OnePerBatch => broker
            .config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("batch.num.messages", "1")
            .create()
            .expect("creating the producer"),
    };
    let mut pending = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let payload = format!("p{p} n{i}");
            let record = FutureRecord::<(), _>::to(TOPIC)
                .partition(p)
                .payload(&payload);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queueing a record"),
            );
        }
    }
    block_on(async {
        for delivery in pending {
            delivery
                .await
                .expect("delivery future cancelled")
                .map_err(|(e, _)| e)
                .expect("record acked");
        }
    });
}

/// `RebalanceProtocol` has neither `Debug` nor `PartialEq`.
fn protocol_name(protocol: RebalanceProtocol) -> &'static str {
    match protocol {
        RebalanceProtocol::None => "none",
        RebalanceProtocol::Eager => "eager",
        RebalanceProtocol::Cooperative => "cooperative",
    }
}

/// A group member as the indexers run it: offsets committed by hand only,
/// a short session so a dead member's partitions move quickly.
fn group_consumer<C: ConsumerContext>(
    broker: &Broker,
    group: &str,
    strategy: &str,
    context: C,
) -> BaseConsumer<C> {
    group_consumer_at(broker.config(), group, strategy, context)
}

fn group_consumer_at<C: ConsumerContext>(
    mut config: ClientConfig,
    group: &str,
    strategy: &str,
    context: C,
) -> BaseConsumer<C> {
    let consumer: BaseConsumer<C> = group_config(&mut config, group, strategy)
        .create_with_context(context)
        .expect("creating a group consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    consumer
}

fn group_config<'a>(
    config: &'a mut ClientConfig,
    group: &str,
    strategy: &str,
) -> &'a mut ClientConfig {
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", strategy)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.partition.eof", "false")
}

fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> BTreeSet<i32> {
    consumer
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every consumer (which runs their group protocol and rebalance
/// callbacks) until `done` holds; returns how long that took.
fn poll_until<C: ConsumerContext>(
    what: &str,
    consumers: &[&BaseConsumer<C>],
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        for c in consumers {
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                panic!("consumer error while waiting for {what}: {e}");
            }
        }
        if done() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gave up waiting for {what} after {DEADLINE:?}; assignments {:?}",
            consumers.iter().map(|c| assigned(c)).collect::<Vec<_>>()
        );
    }
}

/// Two members of one group, polled until they split the 4 partitions
/// between them.
fn split_group(
    broker: &Broker,
    group: &str,
    strategy: &str,
) -> (BaseConsumer, BaseConsumer, Duration) {
    let a = group_consumer(
        broker,
        group,
        strategy,
        rdkafka::consumer::DefaultConsumerContext,
    );
    let b = group_consumer(
        broker,
        group,
        strategy,
        rdkafka::consumer::DefaultConsumerContext,
    );
    let took = poll_until("the group to split 4 partitions", &[&a, &b], || {
        let (pa, pb) = (assigned(&a), assigned(&b));
        !pa.is_empty()
            && !pb.is_empty()
            && pa.is_disjoint(&pb)
            && pa.union(&pb).copied().collect::<BTreeSet<_>>() == (0..4).collect()
    });
    (a, b, took)
}

// (a)
#[test]
fn idempotent_producer_acks_every_keyed_record_and_keeps_keys_on_one_partition() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    let producer = producer(&broker);
    let acked = produce_keyed(&producer, 1000);
    assert_eq!(acked.len(), 1000);

    let mut partition_of: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    let mut offsets: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for (key, partition, offset) in &acked {
        partition_of.entry(key).or_default().insert(*partition);
        assert!(
            offsets.entry(*partition).or_default().insert(*offset),
            "two records acked at {partition}/{offset}"
        );
    }
    for (key, partitions) in &partition_of {
        assert_eq!(partitions.len(), 1, "key {key} went to {partitions:?}");
    }
    assert_eq!(
        offsets.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "37 keys should spread over all 4 partitions"
    );
    // Acked offsets are dense from 0: nothing lost or doubled.
    for (partition, offs) in &offsets {
        let expected: BTreeSet<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, &expected, "offsets of partition {partition}");
    }

    let records = broker.read_all(TOPIC);
    assert_eq!(records.len(), 1000);
    let payloads: BTreeSet<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads.len(), 1000, "every payload read back once");
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8 key");
        assert_eq!(
            partition_of[key.as_str()],
            BTreeSet::from([r.partition]),
            "record {}/{} with key {key}",
            r.partition,
            r.offset
        );
    }
}

// (b)
#[test]
fn group_members_split_partitions_and_sync_commits_read_back() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    produce_to_partitions(&broker, 4, 50, Batching::Bursts);
    let (a, b, took) = split_group(&broker, "indexers", "range");
    eprintln!(
        "group split: a={:?} b={:?} after {took:?}",
        assigned(&a),
        assigned(&b)
    );

    for (consumer, name) in [(&a, "a"), (&b, "b")] {
        let mut tpl = TopicPartitionList::new();
        for p in assigned(consumer) {
            let mut elem = tpl.add_partition(TOPIC, p);
            elem.set_offset(Offset::Offset(10 + i64::from(p)))
                .expect("offset");
            elem.set_metadata(format!("segment-{name}-{p}"));
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .expect("sync commit");
    }

    // Read back by the committing member (its assignment)...
    let mut metadata = BTreeMap::new();
    for consumer in [&a, &b] {
        let committed = consumer
            .committed(Duration::from_secs(10))
            .expect("committed");
        assert_eq!(committed.count(), assigned(consumer).len());
        for e in committed.elements() {
            assert_eq!(e.offset(), Offset::Offset(10 + i64::from(e.partition())));
            metadata.insert(e.partition(), e.metadata().to_string());
        }
    }
    // ...and by a fresh client of the same group that never joined it, as a
    // restarted indexer would before its first assignment.
    let fresh: BaseConsumer = broker
        .config()
        .set("group.id", "indexers")
        .set("enable.auto.commit", "false")
        .create()
        .expect("fresh consumer");
    let mut all = TopicPartitionList::new();
    all.add_partition_range(TOPIC, 0, 3);
    let committed = fresh
        .committed_offsets(all, Duration::from_secs(10))
        .expect("committed_offsets");
    let offsets: BTreeMap<i32, Offset> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    let expected: BTreeMap<i32, Offset> = (0..4)
        .map(|p| (p, Offset::Offset(10 + i64::from(p))))
        .collect();
    assert_eq!(offsets, expected);

    // tansu 0.6 stores the offset of a commit but not its metadata string
    // (its OffsetFetch answers "" or null): the design must not keep state
    // there. Should this fail, tansu began keeping it; update the doc.
    eprintln!("commit metadata read back: {metadata:?}");
    assert!(
        metadata.values().all(String::is_empty),
        "tansu now keeps commit metadata: {metadata:?}"
    );
}

// (c)
fn survivor_takes_all_partitions(strategy: &str) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    let group = format!("takeover-{strategy}");
    let (a, b, took) = split_group(&broker, &group, strategy);
    eprintln!("{strategy}: split after {took:?}");
    let left = Instant::now();
    // Dropping a BaseConsumer closes it: it leaves the group (LeaveGroup)
    // instead of letting its session time out.
    drop(b);
    let closed = left.elapsed();
    let took = poll_until("the survivor to own all 4 partitions", &[&a], || {
        assigned(&a) == (0..4).collect()
    });
    eprintln!(
        "{strategy}: close took {closed:?}, survivor owned all 4 partitions {took:?} later (protocol {})",
        protocol_name(a.rebalance_protocol())
    );
    let expected = if strategy == "cooperative-sticky" {
        "cooperative"
    } else {
        "eager"
    };
    assert_eq!(protocol_name(a.rebalance_protocol()), expected);
}

#[test]
fn survivor_takes_all_partitions_range() {
    survivor_takes_all_partitions("range");
}

#[test]
fn survivor_takes_all_partitions_roundrobin() {
    survivor_takes_all_partitions("roundrobin");
}

#[test]
fn survivor_takes_all_partitions_cooperative_sticky() {
    survivor_takes_all_partitions("cooperative-sticky");
}

/// The member `crashed_member_partitions_are_owned_again_after_it_restarts`
/// runs in a child process (this test binary) and SIGKILLs: a crashed
/// indexer never leaves its group. Does nothing when run on its own.
#[test]
#[ignore = "a child process of crashed_member_partitions_are_owned_again_after_it_restarts"]
fn crashing_group_member() {
    let Ok(addr) = std::env::var("NIGHTOWL_KAFKA_CHILD_BROKER") else {
        return;
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", addr);
    let consumer = group_consumer_at(
        config,
        "crashers",
        "range",
        rdkafka::consumer::DefaultConsumerContext,
    );
    loop {
        consumer.poll(POLL);
    }
}

#[test]
fn crashed_member_partitions_are_owned_again_after_it_restarts() {
    crash_then_restart(Duration::from_secs(10));
}

/// One member in this process, one in a child process that is SIGKILLed
/// and, after `down`, restarted (in this process).
///
/// Not tested because tansu 0.6 gets them wrong (docs/kafka-broker.md): a
/// restart sooner than session.timeout.ms (the range assignor then counts
/// the dead member, whose share stays unowned: 2 of 3 runs left a partition
/// unowned for good), and static membership (group.instance.id: the group
/// wedged with no partitions assigned, see the doc).
fn crash_then_restart(down: Duration) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    let member = || {
        group_consumer(
            &broker,
            "crashers",
            "range",
            rdkafka::consumer::DefaultConsumerContext,
        )
    };
    let a = member();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "kafka_broker::crashing_group_member",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env("NIGHTOWL_KAFKA_CHILD_BROKER", broker.addr())
    .stdout(std::process::Stdio::null());
    let mut child = ChildGuard::spawn(
        "crashing group member",
        cmd,
        &dir.path().join("child.stderr"),
    );
    let took = poll_until("the child to take partitions", &[&a], || {
        let mine = assigned(&a);
        !mine.is_empty() && mine.len() < 4
    });
    let before = assigned(&a);
    eprintln!("crash: split {before:?} after {took:?}");
    child.kill();

    // tansu 0.6 drops the dead member after session.timeout.ms but does not
    // hand its partitions to the survivor (the survivor's heartbeat gets one
    // REBALANCE_IN_PROGRESS, rejoins and is given its old share): watched
    // for a while, recorded, not relied on.
    let watched = Instant::now();
    while watched.elapsed() < down {
        a.poll(POLL);
    }
    eprintln!(
        "crash: survivor owns {:?} {down:?} after the SIGKILL (session.timeout.ms=6000)",
        assigned(&a)
    );

    // What does work: the crashed member restarting (a new member joining)
    // makes the group cover every partition again.
    let restarted = member();
    let joined = Instant::now();
    poll_until(
        "all 4 partitions owned after the restart",
        &[&a, &restarted],
        || {
            let (pa, pb) = (assigned(&a), assigned(&restarted));
            pa.is_disjoint(&pb)
                && pa.union(&pb).copied().collect::<BTreeSet<_>>() == (0..4).collect()
        },
    );
    eprintln!(
        "crash: after the restart a={:?} restarted={:?}, {:?} after it joined",
        assigned(&a),
        assigned(&restarted),
        joined.elapsed()
    );
}

// (d)
#[test]
fn no_ack_while_the_broker_is_paused_and_ack_after_resume() {
    let mut broker = Broker::start();
    broker.create_topic(TOPIC, 1);
    // Short request timeout: the outage below outlasts it, so librdkafka
    // times the in-flight request out and retries it after the resume; the
    // idempotent producer must still land the record exactly once.
    let producer: FutureProducer = broker
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .set("request.timeout.ms", "2000")
        .create()
        .expect("producer");
    let first = block_on(
        producer.send(
            FutureRecord::to(TOPIC)
                .key("k")
                .payload("before the outage"),
            Duration::from_secs(0),
        ),
    );
    assert!(first.is_ok(), "first record: {first:?}");

    broker.pause();
    let mut delivery = producer
        .send_result(
            FutureRecord::to(TOPIC)
                .key("k")
                .payload("during the outage"),
        )
        .map_err(|(e, _)| e)
        .expect("queueing during the outage");
    // However long the broker is gone, the record is neither acked nor
    // failed: the collector keeps it unacked (and its WAL keeps it).
    let outage = Duration::from_secs(5);
    let during = block_on(async { tokio::time::timeout(outage, &mut delivery).await });
    assert!(
        during.is_err(),
        "delivery completed while the broker was stopped: {during:?}"
    );

    broker.resume();
    let resumed = Instant::now();
    let after = block_on(async { tokio::time::timeout(DEADLINE, &mut delivery).await })
        .expect("no ack within the deadline after the resume")
        .expect("delivery future cancelled");
    let delivery = after.map_err(|(e, _)| e).expect("acked after the resume");
    eprintln!(
        "acked at offset {} {:?} after the resume",
        delivery.offset,
        resumed.elapsed()
    );

    let records = broker.read_all(TOPIC);
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        vec![&b"before the outage"[..], &b"during the outage"[..]],
        "each record exactly once"
    );
}

// (e)
/// Starts every assigned partition at the offset the caller keeps (in
/// nightowl: its own index), whatever the group committed.
struct StartAt {
    start: BTreeMap<i32, i64>,
    assignments: Mutex<Vec<Vec<(i32, Offset)>>>,
    /// Offsets the broker handed in with each assignment.
    incoming: Mutex<Vec<Offset>>,
    /// A panic here would cross librdkafka's C frames and abort the test
    /// binary: failures are collected and asserted by the test.
    errors: Mutex<Vec<String>>,
}

impl StartAt {
    fn new(start: BTreeMap<i32, i64>) -> StartAt {
        StartAt {
            start,
            assignments: Mutex::default(),
            incoming: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }
}

impl ClientContext for StartAt {}

impl ConsumerContext for StartAt {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.incoming
                    .lock()
                    .unwrap()
                    .extend(tpl.elements().iter().map(|e| e.offset()));
                for (topic, p) in &parts {
                    let start = self.start.get(p).copied().unwrap_or(0);
                    if let Err(e) = tpl.set_partition_offset(topic, *p, Offset::Offset(start)) {
                        self.error(format!("set_partition_offset {topic}/{p}: {e}"));
                    }
                }
                self.assignments.lock().unwrap().push(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect(),
                );
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    self.error(format!("assign (cooperative: {cooperative}): {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    self.error(format!("unassign (cooperative: {cooperative}): {e}"));
                }
            }
            other => self.error(format!("rebalance error {other:?}")),
        }
    }
}

fn rebalance_callback_assigns_explicit_offsets(strategy: &str) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    produce_to_partitions(&broker, 4, 40, Batching::OnePerBatch);
    let group = format!("seekers-{strategy}");

    // The group has committed 30 for partition 0; the callback's offsets
    // must win over it.
    let committer: BaseConsumer = broker
        .config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("committer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(30))
        .expect("offset");
    committer.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(committer);

    let start = BTreeMap::from([(0, 5), (1, 17), (2, 0), (3, 39)]);
    let consumer = group_consumer(&broker, &group, strategy, StartAt::new(start.clone()));
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    let started = Instant::now();
    while first.len() < 4 {
        assert!(
            started.elapsed() < DEADLINE,
            "first records so far {first:?}; assignments {:?}",
            consumer.context().assignments.lock().unwrap()
        );
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                first.entry(m.partition()).or_insert(m.offset());
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let seen = consumer.context().assignments.lock().unwrap().clone();
    let incoming = consumer.context().incoming.lock().unwrap().clone();
    eprintln!(
        "{strategy}: assignments seen by the callback {seen:?}, offsets handed in {incoming:?}"
    );
    let errors = consumer.context().errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "rebalance callback: {errors:?}");
    assert_eq!(
        first, start,
        "each partition starts at the callback's offset"
    );
    let assigned_offsets: BTreeMap<i32, Offset> = seen.into_iter().flatten().collect();
    assert_eq!(
        assigned_offsets,
        start
            .iter()
            .map(|(p, o)| (*p, Offset::Offset(*o)))
            .collect::<BTreeMap<_, _>>()
    );
}

#[test]
fn rebalance_callback_assigns_explicit_offsets_eager() {
    rebalance_callback_assigns_explicit_offsets("range");
}

#[test]
fn rebalance_callback_assigns_explicit_offsets_cooperative() {
    rebalance_callback_assigns_explicit_offsets("cooperative-sticky");
}

/// The same context on the async consumer: its callbacks run inside
/// `recv().await`.
#[test]
fn stream_consumer_rebalance_callback_assigns_explicit_offsets() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 4);
    produce_to_partitions(&broker, 4, 40, Batching::OnePerBatch);
    let start = BTreeMap::from([(0, 3), (1, 0), (2, 21), (3, 38)]);
    let first = block_on(async {
        // StreamConsumer spawns its wake-up task on the current runtime.
        let consumer: StreamConsumer<StartAt> =
            group_config(&mut broker.config(), "stream-seekers", "range")
                .create_with_context(StartAt::new(start.clone()))
                .expect("stream consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        while first.len() < 4 {
            let m = tokio::time::timeout(DEADLINE, consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("no record within {DEADLINE:?}; first so far {first:?}"))
                .expect("recv");
            first.entry(m.partition()).or_insert(m.offset());
        }
        let errors = consumer.context().errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "rebalance callback: {errors:?}");
        first
    });
    assert_eq!(first, start);
}

/// tansu 0.6 quirks the scale-out's tests must live with (real Kafka does
/// neither): a fetch from an offset inside a stored batch skips the rest of
/// that batch, and ListOffsets "latest" is the last batch's base offset + 1.
/// Should this fail, tansu changed; update docs/kafka-broker.md.
#[test]
fn tansu_fetch_from_inside_a_batch_skips_to_the_next_batch() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 1);
    // A burst within linger.ms travels (and is stored) as one batch.
    let producer: FutureProducer = broker
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "200")
        .create()
        .expect("producer");
    let pending: Vec<_> = (0..40)
        .map(|i| {
            let payload = format!("n{i}");
            producer
                .send_result(FutureRecord::<(), _>::to(TOPIC).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("queueing")
        })
        .collect();
    block_on(async {
        for d in pending {
            d.await
                .expect("cancelled")
                .map_err(|(e, _)| e)
                .expect("acked");
        }
    });
    assert_eq!(broker.message_count(TOPIC), 40);

    let reader: BaseConsumer = broker
        .config()
        .set("group.id", "quirk-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let (_, high) = reader
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    eprintln!("ListOffsets high watermark after 40 records in a burst: {high}");
    assert!(
        high < 40,
        "tansu now reports the true high watermark ({high})"
    );

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(5))
        .expect("offset");
    reader.assign(&tpl).expect("assign");
    // The next batch starts at 40: only it is served.
    block_on(producer.send(
        FutureRecord::<(), _>::to(TOPIC).payload("n40"),
        Duration::from_secs(0),
    ))
    .map_err(|(e, _)| e)
    .expect("acked");
    let started = Instant::now();
    let first = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "nothing fetched from offset 5"
        );
        match reader.poll(POLL) {
            Some(Ok(m)) => break m.offset(),
            Some(Err(e)) => panic!("reader: {e}"),
            None => {}
        }
    };
    eprintln!("fetch from offset 5 returned offset {first} first");
    assert!(first > 5, "tansu now serves a fetch from inside a batch");
}

/// A broker outage shorter than session.timeout.ms: the member keeps its
/// partitions and goes on consuming where it was, nothing lost or repeated.
///
/// Longer outages are not tested because tansu 0.6 cannot take them: it
/// expels the lone member but keeps it as the group's leader, and the
/// member's rejoins never complete (no assignment for 60 s+). Tests with
/// outages need session.timeout.ms above the outage (docs/kafka-broker.md).
#[test]
fn consumer_goes_on_after_an_outage_shorter_than_its_session() {
    let mut broker = Broker::start();
    broker.create_topic(TOPIC, 2);
    produce_to_partitions(&broker, 2, 5, Batching::OnePerBatch);
    let consumer = group_consumer(
        &broker,
        "outage",
        "range",
        rdkafka::consumer::DefaultConsumerContext,
    );
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut consume_until = |wanted: usize, what: &str| {
        let started = Instant::now();
        while seen.len() < wanted {
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: {} of {wanted} records; assignment {:?}",
                seen.len(),
                assigned(&consumer)
            );
            match consumer.poll(POLL) {
                Some(Ok(m)) => {
                    assert!(
                        seen.insert((m.partition(), m.offset())),
                        "{}/{} delivered twice",
                        m.partition(),
                        m.offset()
                    );
                }
                // Errors during the outage are reported and survived.
                Some(Err(e)) => eprintln!("outage: consumer error {e}"),
                None => {}
            }
        }
        started.elapsed()
    };
    consume_until(10, "before the outage");

    broker.pause();
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(POLL) {
            panic!("record {}/{} while stopped", m.partition(), m.offset());
        }
    }
    broker.resume();
    produce_to_partitions(&broker, 2, 5, Batching::OnePerBatch);
    let took = consume_until(20, "after the outage");
    eprintln!(
        "outage: all 20 records, the last 10 within {took:?} of their acks; assignment {:?}",
        assigned(&consumer)
    );
}
