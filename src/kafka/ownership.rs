//! Who indexes a lines partition, and from which offset: the compacted
//! topic `nightowl-ownership` (docs/kafka.md, "Exactly once").
//!
//! Partition `p` of the topic holds the tenures of lines partition `p`, one
//! message per assignment, written before the new owner reads a line. Each
//! message carries the whole story a reader needs, so only the last one
//! counts (compacted, key = the partition): the owner, its start, and for
//! every earlier owner the lowest start recorded since that owner's last
//! tenure. An earlier owner holding lines at or past that offset holds
//! them twice, and deletes them (`index::rollback`).
//!
//! Owners are named by the indexer's identity, kept in its data dir
//! (`kafka/identity`): a restarted indexer is a new group member but the
//! same index, so the same owner.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::state::StateStore;
use super::KafkaConfig;

/// Layout of a message; a reader refuses a later one rather than
/// overwrite what it cannot read.
const VERSION: u8 = 1;

/// Earlier owners kept per partition. An indexer whose data dir was thrown
/// away never comes back, and its entry would stay for ever; past this
/// many, the one superseded lowest (longest ago) is dropped.
const MAX_EARLIER: usize = 4096;

/// How long the start-up read of every partition may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The last message of one lines partition.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub v: u8,
    /// The indexer that took the partition last ("" before anyone did),
    /// and the offset it started reading at.
    pub owner: String,
    pub start: i64,
    /// Every earlier owner: the lowest start any owner after it recorded.
    /// It holds no line of that offset or later that nobody else holds.
    pub superseded: BTreeMap<String, i64>,
}

impl Ownership {
    /// The message `me` writes when it takes the partition at `start`.
    pub fn taken_by(&self, me: &str, start: i64) -> Ownership {
        let mut superseded = self.superseded.clone();
        if !self.owner.is_empty() && self.owner != me {
            superseded.insert(self.owner.clone(), start);
        }
        for from in superseded.values_mut() {
            // The lowest: a start below an earlier one (the earlier owner
            // never committed its group offset) re-indexes from there.
            *from = (*from).min(start);
        }
        superseded.remove(me);
        while superseded.len() > MAX_EARLIER {
            let Some(oldest) = superseded
                .iter()
                .min_by_key(|(_, &from)| from)
                .map(|(owner, _)| owner.clone())
            else {
                break;
            };
            superseded.remove(&oldest);
        }
        Ownership {
            v: VERSION,
            owner: me.to_string(),
            start,
            superseded,
        }
    }

    /// Where `me` must drop its lines of this partition from: `None` when it
    /// is the owner or never was one.
    pub fn cut_for(&self, me: &str) -> Option<i64> {
        self.superseded.get(me).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Ownership> {
        let ownership: Ownership =
            serde_json::from_slice(bytes).context("parsing an ownership message")?;
        anyhow::ensure!(
            ownership.v == VERSION,
            "an ownership message of version {}; this build reads {VERSION}",
            ownership.v
        );
        Ok(ownership)
    }
}

/// This indexer's name as an owner: `kafka/identity` under the data dir,
/// made once (the host name and a random number).
pub fn identity(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("kafka").join("identity");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let host: String = crate::fsutil::hostname()
        .unwrap_or_else(|| "indexer".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(64)
        .collect();
    let id = format!("{host}-{:016x}", rand::random::<u64>());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&path, id.as_bytes(), 0o600)?;
    Ok(id)
}

/// The ownership topic: written at each assignment, followed all along.
pub struct OwnershipLog {
    me: String,
    topic: String,
    store: StateStore,
    /// Assigned to every partition of the topic from its last message on:
    /// another indexer's assignment reaches this one within a poll.
    tail: BaseConsumer,
    latest: BTreeMap<i32, Ownership>,
    partitions: i32,
}

impl OwnershipLog {
    /// Opens the topic as `me` and reads the last message of every
    /// partition.
    pub fn open(config: &KafkaConfig, me: String) -> Result<OwnershipLog> {
        let topic = config.ownership_topic.clone();
        let store = StateStore::new(config, &topic)?;
        let tail: BaseConsumer = config
            .client()?
            .set("group.id", format!("{}-ownership-reader", config.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .with_context(|| format!("creating the reader of {topic}"))?;
        let metadata = tail
            .fetch_metadata(Some(&topic), TIMEOUT)
            .with_context(|| format!("reading the metadata of topic {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
        let mut tpl = TopicPartitionList::new();
        let mut empty = 0;
        for p in 0..partitions {
            let (low, high) = tail
                .fetch_watermarks(&topic, p, TIMEOUT)
                .with_context(|| format!("reading the end of {topic} partition {p}"))?;
            // One message per batch (`StateStore`): the last is at high - 1.
            let from = if high > low {
                Offset::Offset(high - 1)
            } else {
                empty += 1;
                Offset::Beginning
            };
            tpl.add_partition_offset(&topic, p, from)
                .context("building the ownership read")?;
        }
        tail.assign(&tpl)
            .with_context(|| format!("reading {topic}"))?;
        let mut log = OwnershipLog {
            me,
            topic,
            store,
            tail,
            latest: BTreeMap::new(),
            partitions,
        };
        // Every partition reaches its end once; the empty ones may not say
        // so before a message arrives, so they are not waited for.
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while at_end.len() < (partitions - empty) as usize {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "read the end of {} of {} partitions of {} within {TIMEOUT:?}",
                at_end.len(),
                partitions - empty,
                log.topic
            );
            match log.tail.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let bytes = m.payload().unwrap_or_default();
                    let ownership = Ownership::decode(bytes).with_context(|| {
                        format!(
                            "{} partition {} offset {}",
                            log.topic,
                            m.partition(),
                            m.offset()
                        )
                    })?;
                    log.latest.insert(m.partition(), ownership);
                }
                Some(Err(KafkaError::PartitionEOF(p))) if log.latest.contains_key(&p) => {
                    at_end.insert(p);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => anyhow::bail!("reading {}: {e}", log.topic),
                None => {}
            }
        }
        Ok(log)
    }

    /// Partitions of the topic: one per lines partition at least.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// This indexer's name as an owner.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The last message of `partition` as the tail has read it.
    pub fn latest(&self, partition: i32) -> Option<&Ownership> {
        self.latest.get(&partition)
    }

    /// The last message of `partition` as the brokers have it now (the
    /// tail may not have read it yet).
    pub fn load(&self, partition: i32) -> Result<Ownership> {
        match self.store.load(partition)? {
            Some(bytes) => Ownership::decode(&bytes)
                .with_context(|| format!("{} partition {partition}", self.topic)),
            None => Ok(Ownership::default()),
        }
    }

    /// Writes `ownership` as `partition`'s latest and waits for the brokers.
    pub fn record(&mut self, partition: i32, ownership: Ownership) -> Result<()> {
        self.store.save(partition, &ownership.encode())?;
        self.latest.insert(partition, ownership);
        Ok(())
    }

    /// Reads what arrived without waiting; returns the partitions whose
    /// last message changed.
    pub fn poll(&mut self) -> Vec<i32> {
        let mut changed = Vec::new();
        while let Some(result) = self.tail.poll(Duration::ZERO) {
            match result {
                Ok(m) => match Ownership::decode(m.payload().unwrap_or_default()) {
                    Ok(ownership) => {
                        if self.latest.get(&m.partition()) != Some(&ownership) {
                            changed.push(m.partition());
                            self.latest.insert(m.partition(), ownership);
                        }
                    }
                    Err(e) => tracing::error!(
                        partition = m.partition(),
                        offset = m.offset(),
                        error = %format!("{e:#}"),
                        "skipping an unreadable ownership message"
                    ),
                },
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "reading the ownership topic");
                    break;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_earlier_owner_keeps_the_lowest_start_recorded_after_it() {
        let first = Ownership::default().taken_by("a", 0);
        assert_eq!(first.cut_for("a"), None);
        // b takes over at 100: a holds nothing from 100 on that b lacks.
        let second = first.taken_by("b", 100);
        assert_eq!(
            (second.cut_for("a"), second.cut_for("b")),
            (Some(100), None)
        );
        // c at 80 (b never committed its group offset): b and a cut at 80.
        let third = second.taken_by("c", 80);
        assert_eq!(third.cut_for("a"), Some(80));
        assert_eq!(third.cut_for("b"), Some(80));
        // d at 120 lowers nobody; c is superseded at 120.
        let fourth = third.taken_by("d", 120);
        assert_eq!(fourth.cut_for("a"), Some(80));
        assert_eq!(fourth.cut_for("c"), Some(120));
        // a comes back: it is the owner, no longer superseded.
        let fifth = fourth.taken_by("a", 130);
        assert_eq!(fifth.cut_for("a"), None);
        assert_eq!(fifth.cut_for("d"), Some(130));
        assert_eq!(fifth.owner, "a");
        // The same owner again (a restart that got it back) changes nothing
        // for the others.
        let sixth = fifth.taken_by("a", 140);
        assert_eq!(sixth.superseded, fifth.superseded);
        assert_eq!(sixth.start, 140);
    }

    #[test]
    fn a_message_reads_back_and_a_later_version_is_refused() {
        let o = Ownership::default().taken_by("a", 3).taken_by("b", 7);
        assert_eq!(Ownership::decode(&o.encode()).expect("decodes"), o);
        let later = br#"{"v":2,"owner":"x","start":1,"superseded":{}}"#;
        let e = Ownership::decode(later).expect_err("version 2");
        assert!(format!("{e:#}").contains("version 2"), "{e:#}");
    }

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = identity(dir.path()).expect("made");
        assert!(first.len() > 17, "{first}");
        assert_eq!(identity(dir.path()).expect("read"), first);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(identity(other.path()).expect("made"), first);
    }
}
