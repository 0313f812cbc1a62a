//! Rule state that moves with its partition: a changelog topic, as Kafka
//! Streams keeps its state stores' (docs/kafka.md, "Rule state across
//! rebalances"). Partition `p` of the state topic holds the snapshots of
//! partition `p` of the topic it backs, one message each; only the last
//! one counts, so the topic is compacted (one key per partition) and a new
//! owner reads just the last message.
//!
//! Two changelogs hold rule state in one layout ([`encode_rules`]): the
//! rekey owners' (`nightowl-rekey-state`, per rekey partition) and the line
//! shards' (`nightowl-lines-state`, per lines partition: rules keyed by
//! `source`, or every rule with `[kafka] rekey = false`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::KafkaConfig;
use crate::detect::live::LiveRules;
use crate::detect::snapshot::{Dec, DecodeError, Enc};
use crate::telemetry::Counter;

/// How long a save or a load may wait for the brokers.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct StateStore {
    topic: String,
    producer: ThreadedProducer<DefaultProducerContext>,
    reader: BaseConsumer,
}

impl StateStore {
    pub fn new(config: &KafkaConfig, topic: &str) -> Result<StateStore> {
        // The reader seeks to the last message, which the producer's one
        // message per batch makes safe.
        let producer = config
            .producer_client()?
            .set("message.max.bytes", super::STATE_MESSAGE_MAX)
            .create()
            .with_context(|| format!("creating the producer of {topic}"))?;
        let reader = config
            .client()?
            // assign() needs a group id; it never joins the group.
            .set("group.id", format!("{}-state-reader", config.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // A load runs inside a rebalance callback: a broker holding an
            // empty fetch for the default 500 ms makes every member slow to
            // rejoin, and a coordinator that does not wait for slow members
            // (tansu) then rebalances again and again.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", "100000000")
            .set("receive.message.max.bytes", "200000000")
            .create()
            .with_context(|| format!("creating the reader of {topic}"))?;
        Ok(StateStore {
            topic: topic.to_string(),
            producer,
            reader,
        })
    }

    /// Writes `state` as partition `partition`'s latest and waits until the
    /// brokers have it.
    pub fn save(&self, partition: i32, state: &[u8]) -> Result<()> {
        let key = partition.to_string();
        let record = BaseRecord::to(&self.topic)
            .partition(partition)
            .key(&key)
            .payload(state);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .with_context(|| {
                format!(
                    "writing the state of partition {partition} to {}",
                    self.topic
                )
            })?;
        self.producer.flush(TIMEOUT).with_context(|| {
            format!(
                "flushing the state of partition {partition} to {}",
                self.topic
            )
        })
    }

    /// [`StateStore::load`], with a store that does not answer taken as
    /// none (logged): the rules start empty rather than wait.
    pub fn load_or_none(&self, partition: i32) -> Option<Vec<u8>> {
        self.load(partition).unwrap_or_else(|e| {
            tracing::warn!(partition, topic = %self.topic, error = %format!("{e:#}"), "reading the saved rule state; its rules start empty");
            None
        })
    }

    /// The latest state saved for `partition`, if any.
    pub fn load(&self, partition: i32) -> Result<Option<Vec<u8>>> {
        let (low, high) = self
            .reader
            .fetch_watermarks(&self.topic, partition, TIMEOUT)
            .with_context(|| format!("reading the end of {} partition {partition}", self.topic))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(high - 1))
            .context("building the state read")?;
        self.reader
            .assign(&tpl)
            .with_context(|| format!("reading {} partition {partition}", self.topic))?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut last = None;
        let outcome = loop {
            if std::time::Instant::now() >= deadline {
                break Err(anyhow::anyhow!(
                    "no state read from {} partition {partition} within {TIMEOUT:?}",
                    self.topic
                ));
            }
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == partition => {
                    last = Some(m.payload().unwrap_or_default().to_vec());
                    // The last message as of the watermark read: a later
                    // one is a save racing this load, which it may miss.
                    if m.offset() >= high - 1 {
                        break Ok(last);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition && last.is_some() => {
                    break Ok(last);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    break Err(anyhow::anyhow!(
                        "reading {} partition {partition}: {e}",
                        self.topic
                    ))
                }
                None => {}
            }
        };
        let _ = self.reader.unassign();
        outcome
    }
}

/// Layout of a rule state in a changelog.
const RULES_VERSION: u8 = 1;

/// Encodes a partition's rule state: `next`, the offset of the partition it
/// backs that the state stops at (every record below it was evaluated);
/// `seen`, per lines partition the last record evaluated (a rekey owner's
/// dedup marks; empty for a line shard); the engine's snapshot body (the
/// encoding of `rules/state.snapshot` on the embedded collector).
pub fn encode_rules(next: i64, seen: &HashMap<i32, i64>, rules: Option<&LiveRules>) -> Vec<u8> {
    let mut e = Enc::default();
    e.u8(RULES_VERSION);
    e.u32(crate::detect::snapshot::VERSION);
    e.i64(next);
    e.u64(seen.len() as u64);
    for (&partition, &offset) in seen {
        e.u32(partition as u32);
        e.i64(offset);
    }
    let mut engine = Enc::default();
    if let Some(rules) = rules {
        rules.engine.encode_state(&mut engine);
    }
    e.bytes(&engine.buf);
    e.buf
}

/// A rule state as read from a changelog ([`encode_rules`]).
pub struct SavedRules<'a> {
    pub next: i64,
    pub seen: HashMap<i32, i64>,
    engine_version: u32,
    engine: &'a [u8],
}

pub fn decode_rules(bytes: &[u8]) -> Result<SavedRules<'_>, DecodeError> {
    let mut d = Dec::new(bytes);
    let version = d.u8()?;
    if version != RULES_VERSION {
        return Err(DecodeError(format!(
            "rule state version {version}, this build reads {RULES_VERSION}"
        )));
    }
    let engine_version = d.u32()?;
    let next = d.i64()?;
    let n = d.len()?;
    let mut seen = HashMap::with_capacity(n.min(4096));
    for _ in 0..n {
        let partition = d.u32()? as i32;
        seen.insert(partition, d.i64()?);
    }
    let engine = d.bytes()?;
    Ok(SavedRules {
        next,
        seen,
        engine_version,
        engine,
    })
}

impl SavedRules<'_> {
    /// Loads the engine state into `rules`. On an error `rules` is as it
    /// was: its windows start empty rather than misread.
    pub fn restore_into(&self, rules: Option<&mut LiveRules>) -> Result<(), DecodeError> {
        if let Some(rules) = rules {
            rules
                .engine
                .restore_state_version(self.engine, self.engine_version)?;
        }
        Ok(())
    }
}

/// Where a partition's rule state in its changelog stands: the group
/// offset of the partition it backs is committed only up to `saved`.
pub struct Mark {
    /// The `next` of the last state written (or restored).
    pub saved: i64,
    at: Instant,
    /// State changed without a message (a tenant purge): the changelog
    /// must not keep the old one.
    pub dirty: bool,
}

impl Mark {
    pub fn new(saved: i64) -> Mark {
        Mark {
            saved,
            at: Instant::now(),
            dirty: false,
        }
    }

    /// Writes the state as of `next` (built by `encode`) to partition
    /// `partition` of `store` if it is due: always with `force` (before a
    /// rebalance or a stop) or when dirty, else once `every` has passed
    /// since the last write; never when nothing moved. A failure is
    /// logged and the mark stays, so the group offset stays at the last
    /// state saved and a new owner starts from there.
    pub fn save_if_due(
        &mut self,
        store: &StateStore,
        partition: i32,
        next: i64,
        (force, every): (bool, Duration),
        saved: &Counter,
        encode: impl FnOnce() -> Vec<u8>,
    ) {
        let due = force || self.dirty || self.at.elapsed() >= every;
        if !due || (next <= self.saved && !self.dirty) {
            return;
        }
        match store.save(partition, &encode()) {
            Ok(()) => {
                self.saved = next;
                self.at = Instant::now();
                self.dirty = false;
                saved.inc();
            }
            Err(e) => {
                tracing::warn!(partition, topic = %store.topic, error = %format!("{e:#}"), "rule state not saved")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Engine, RecentFirings};
    use crate::parse::{parse_line, Format, ParseContext};
    use std::sync::Arc;

    fn rules() -> LiveRules {
        let specs: Vec<_> = crate::detect::load::parse_str(
            "id: per-source\ntitle: t\nseverity: warning\nmatch: {field: status, equals: [500]}\n\
             detect: {kind: threshold, key: source, window: 10m, count: 3}\n",
            std::path::Path::new("t.yaml"),
        )
        .expect("rule parses")
        .into_iter()
        .map(|r| r.spec)
        .collect();
        LiveRules {
            engine: Engine::new(&specs).expect("compiles"),
            recent: Arc::new(RecentFirings::new(10)),
            scratch: Vec::new(),
            live: None,
            routed: Default::default(),
            evaluate_from: 0,
        }
    }

    /// Two lines of three before the state is written; the third, after
    /// a restore in another engine, fires there: the window moved along.
    #[test]
    fn a_saved_window_fires_after_its_restore() {
        let t0 = 1_730_000_000_000_000_000i64;
        let raw =
            "10.0.0.1 - - [10/Oct/2024:12:00:00 +0000] \"GET / HTTP/1.1\" 500 10 \"-\" \"curl/8\"";
        let ctx = ParseContext { now_nanos: t0 };
        let event = parse_line(raw.as_bytes(), Format::Auto, &ctx).expect("line parses");
        let mut before = rules();
        for i in 0..2 {
            before.line(&event, raw, "app.log", t0 + i, "default");
        }
        assert!(before.scratch.is_empty());
        let seen = HashMap::from([(3, 41)]);
        let bytes = encode_rules(17, &seen, Some(&before));

        let saved = decode_rules(&bytes).expect("decodes");
        assert_eq!((saved.next, &saved.seen), (17, &seen));
        let mut after = rules();
        saved.restore_into(Some(&mut after)).expect("restores");
        after.line(&event, raw, "app.log", t0 + 2, "default");
        assert_eq!(after.scratch.len(), 1, "the third line fires");

        let mut fresh = rules();
        fresh.line(&event, raw, "app.log", t0 + 2, "default");
        assert!(fresh.scratch.is_empty(), "without the state it does not");

        // Another layout is refused, not misread.
        let mut later = bytes.clone();
        later[0] = RULES_VERSION + 1;
        assert!(decode_rules(&later).is_err());
        assert!(decode_rules(&bytes[..bytes.len() - 1]).is_err());
    }
}
