//! Rule state that moves with its partition: a changelog topic, as Kafka
//! Streams keeps its state stores' (docs/kafka.md, "Rule state across
//! rebalances"). Partition `p` of the state topic holds the snapshots of
//! partition `p` of the topic it backs, one message each; only the last
//! one counts, so the topic is compacted (one key per partition) and a new
//! owner reads just the last message.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::KafkaConfig;

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
