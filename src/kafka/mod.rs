//! Scale-out on Kafka: the durable log between the ingest tier and the
//! indexing tier (docs/kafka.md).
//!
//! ```text
//! agents ─▶ collector (`--kafka`) ──produce, acks=all──▶ topic `nightowl-lines`
//!                                                              │ partitioned by source
//!                    indexers (`nightowl indexer`, one group) ◀┘
//!                      │ parse → rules → tantivy, offsets in each commit
//!                      └──firings──▶ topic `nightowl-alerts` ──▶ the paging collector
//! ```
//!
//! - `log.rs`: the collector's durable log: a batch is acked once Kafka
//!   has it (idempotent producer, acks=all), keyed by its source so one
//!   source's lines stay ordered in one partition.
//! - `indexer.rs`: the `indexer` role: a consumer group member indexing
//!   each assigned partition into its own shard, offsets in the tantivy
//!   commit, seeking to them on assignment.
//! - `alerts.rs`: firings to the alerts topic, and the single paging
//!   consumer that feeds them to the alert stage.
//! - `ownership.rs`: who indexes each lines partition from which offset,
//!   so an indexer that lost a commit interval to another drops its copy.

pub mod alerts;
pub mod indexer;
pub mod log;
pub mod ownership;
pub mod rekey;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

/// Largest rule-state snapshot message, bytes: the state producer's limit
/// and the state topic's `max.message.bytes`.
const STATE_MESSAGE_MAX: &str = "100000000";

/// `[kafka]`: unset `brokers` is the embedded default (WAL, local index).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`. `--kafka` sets it.
    pub brokers: Option<String>,
    /// Lines topic. Default `nightowl-lines`.
    pub topic: String,
    /// Firings topic, one partition: one paging consumer at a time.
    /// Default `nightowl-alerts`.
    pub alerts_topic: String,
    /// Lines of rules keyed across sources, keyed by the rule's key, to
    /// the one indexer that owns the key (docs/kafka.md). Created with
    /// `partitions` partitions. Default `nightowl-rekey`.
    pub rekey_topic: String,
    /// Send the lines of rules keyed across sources to their key's owner
    /// (default). `false`: every indexer evaluates every rule on its own
    /// partitions, as before: a key spread over sources of several
    /// partitions is counted per partition.
    pub rekey: bool,
    /// Ids of rules keyed across sources that are still evaluated per
    /// partition, their lines not sent to an owner: rate rules over most
    /// lines (a traffic spike per host, a 5xx ratio) whose per-partition
    /// signal is enough, where re-keying would send most lines twice
    /// (docs/kafka.md, "What it costs"). Default none.
    pub rekey_except: Vec<String>,
    /// Changelog of the rekey owners' rule state, compacted, one
    /// partition per rekey partition: a rekey partition that moves to
    /// another indexer takes its windows along. Default
    /// `nightowl-rekey-state`.
    pub rekey_state_topic: String,
    /// Changelog of the line shards' rule state (rules keyed by `source`,
    /// or every rule with `rekey = false`), compacted, one partition per
    /// lines partition: a lines partition that moves to another indexer
    /// takes its windows along. Default `nightowl-lines-state`.
    pub lines_state_topic: String,
    /// Who indexed each lines partition from which offset, compacted, one
    /// partition per lines partition: an indexer that lost a commit
    /// interval to another drops its copy (docs/kafka.md, "Exactly once").
    /// Default `nightowl-ownership`.
    pub ownership_topic: String,
    /// How often a rekey owner or a line shard writes its rule state to
    /// its changelog while lines flow, ms (and always before it gives a
    /// partition up); its group offset is committed only up to the state
    /// saved, so a crash reads again from the last one. Default 5000.
    pub state_interval_ms: u64,
    /// Partitions of the lines topic when nightowl creates it: the most
    /// indexers that can share the load. Default 4.
    pub partitions: i32,
    /// Replication factor of topics nightowl creates. Default 1; use 3 on
    /// a real cluster.
    pub replication_factor: i32,
    /// Consumer group of the indexers. Default `nightowl-indexers`.
    pub group: String,
    /// Consumer group of the collectors' paging stage. Default
    /// `nightowl-paging`.
    pub paging_group: String,
    /// How long a silent indexer keeps its partitions before the group
    /// hands them to the others, ms. Default 10000.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties for every client (e.g.
    /// `"security.protocol" = "ssl"`, `"ssl.ca.location" = "..."`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic: "nightowl-lines".into(),
            alerts_topic: "nightowl-alerts".into(),
            rekey_topic: "nightowl-rekey".into(),
            rekey: true,
            rekey_except: Vec::new(),
            rekey_state_topic: "nightowl-rekey-state".into(),
            lines_state_topic: "nightowl-lines-state".into(),
            ownership_topic: "nightowl-ownership".into(),
            state_interval_ms: 5000,
            partitions: 4,
            replication_factor: 1,
            group: "nightowl-indexers".into(),
            paging_group: "nightowl-paging".into(),
            session_timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.partitions >= 1, "kafka.partitions must be at least 1");
        anyhow::ensure!(
            self.replication_factor >= 1,
            "kafka.replication_factor must be at least 1"
        );
        for (name, topic) in [
            ("topic", &self.topic),
            ("alerts_topic", &self.alerts_topic),
            ("rekey_topic", &self.rekey_topic),
            ("rekey_state_topic", &self.rekey_state_topic),
            ("lines_state_topic", &self.lines_state_topic),
            ("ownership_topic", &self.ownership_topic),
        ] {
            anyhow::ensure!(
                !topic.is_empty()
                    && topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "kafka.{name} {topic:?}: a Kafka topic name is letters, digits, '.', '_' and '-'"
            );
        }
        Ok(())
    }

    /// The settings of every producer (lines, rekey, rule state): acked
    /// means on every in-sync replica, written once, in order; one message
    /// per Kafka batch, so a consumer seeking to an offset never lands
    /// inside a stored batch (tansu 0.6 skips the rest of such a batch and
    /// reports a partition's end as its last batch's base offset + 1;
    /// docs/kafka-broker.md).
    pub(crate) fn producer_client(&self) -> Result<ClientConfig> {
        let mut config = self.client()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "0")
            .set("batch.num.messages", "1");
        Ok(config)
    }

    /// A client that joins consumer group `group`, with this config's
    /// session timeout.
    ///
    /// It heartbeats ten times per session rather than librdkafka's fixed
    /// 3 s: between two heartbeats a member may also spend a rejoin (tansu
    /// holds a follower's JoinGroup for 3 s) and its rebalance callbacks,
    /// and a coordinator that sees no contact for a whole session evicts a
    /// live member, which rebalances the group again; with a 6-10 s
    /// session that loop kept a group from settling for minutes on a
    /// loaded machine. `properties` may still set `heartbeat.interval.ms`.
    pub(crate) fn group_client(&self, group: &str) -> Result<ClientConfig> {
        let mut config = self.client()?;
        config
            .set("group.id", group)
            .set("session.timeout.ms", self.session_timeout_ms.to_string());
        if !self.properties.contains_key("heartbeat.interval.ms") {
            config.set(
                "heartbeat.interval.ms",
                heartbeat_ms(self.session_timeout_ms).to_string(),
            );
        }
        Ok(config)
    }

    /// The librdkafka settings every client shares.
    pub(crate) fn client(&self) -> Result<ClientConfig> {
        let brokers = self
            .brokers
            .as_deref()
            .context("kafka.brokers (or --kafka) is not set")?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "nightowl")
            // librdkafka logs through its own callback; errors surface as
            // results and are logged with context where they matter.
            .set("log_level", "3");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        Ok(config)
    }

    /// A rule-state changelog (`state.rs`): compacted, one partition per
    /// partition it backs.
    fn state_topic<'a>(&self, name: &'a str) -> NewTopic<'a> {
        NewTopic::new(
            name,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        )
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", STATE_MESSAGE_MAX)
    }

    /// Creates the topics nightowl uses if they do not exist yet.
    pub async fn ensure_topics(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client()?
            .create()
            .context("creating the Kafka admin client")?;
        let topics = [
            NewTopic::new(
                &self.topic,
                self.partitions,
                TopicReplication::Fixed(self.replication_factor),
            ),
            NewTopic::new(
                &self.alerts_topic,
                1,
                TopicReplication::Fixed(self.replication_factor),
            ),
            NewTopic::new(
                &self.rekey_topic,
                self.partitions,
                TopicReplication::Fixed(self.replication_factor),
            ),
            // Only the last snapshot of each partition counts. A snapshot
            // holds every key's windows (and miners: about 1.4 MB per tenant
            // for a pattern rule at its cap), above a broker's 1 MB default
            // message size; the producer allows the same 100 MB.
            self.state_topic(&self.rekey_state_topic),
            self.state_topic(&self.lines_state_topic),
            // Only the last message of each partition counts.
            NewTopic::new(
                &self.ownership_topic,
                self.partitions,
                TopicReplication::Fixed(self.replication_factor),
            )
            .set("cleanup.policy", "compact"),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .with_context(|| format!("creating Kafka topics on {:?}", self.brokers))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    anyhow::bail!("creating Kafka topic {topic}: {code}")
                }
            }
        }
        Ok(())
    }
}

/// Kafka partition `p`'s shard in the catalog (0 is the embedded writer).
pub(crate) fn shard_of(partition: i32) -> u32 {
    partition.unsigned_abs() + 1
}

/// librdkafka's heartbeat interval for a session of `session_ms`: a tenth
/// of it, between 100 ms and librdkafka's default of 3 s.
fn heartbeat_ms(session_ms: u32) -> u32 {
    (session_ms / 10).clamp(100, 3000)
}

#[cfg(test)]
mod tests {
    use super::heartbeat_ms;

    #[test]
    fn a_member_heartbeats_several_times_per_session() {
        for session in [1_000, 6_000, 10_000, 45_000, 300_000] {
            let beat = heartbeat_ms(session);
            assert!(beat * 3 <= session, "{beat} ms in a {session} ms session");
            assert!((100..=3000).contains(&beat));
        }
        assert_eq!(heartbeat_ms(6_000), 600);
    }
}
