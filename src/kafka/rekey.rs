//! The rekey topic: lines of rules keyed across sources, from the line
//! shard that read them to the one owner of their key (docs/kafka.md,
//! "Rules keyed across sources"). Kafka Streams calls this a repartition
//! topic, Flink a `keyBy`.
//!
//! A shard runs every routed rule's filter on its lines and sends the
//! passing ones, one message per (lines-topic record, owner partition),
//! carrying the record's origin (so the owner keeps each source's own
//! clock) and where it came from (lines partition and offset, so the owner
//! drops what a replaying shard sends twice). Owner partition = the key's
//! hash modulo the rekey topic's partitions: the same on every indexer of
//! one build, so one key's lines meet in one place whatever partition of
//! the lines topic they were read from.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::KafkaConfig;
use crate::detect::live::Routed;
use crate::detect::snapshot::{Dec, DecodeError, Enc};
use crate::ingest::IngestRecord;
use crate::telemetry::Metrics;

const VERSION: u8 = 1;

/// One rekey message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct RekeyMessage<'a> {
    /// Lines-topic partition and offset of the record the lines are from.
    pub origin_partition: i32,
    pub origin_offset: i64,
    pub tenant: &'a str,
    pub agent_id: &'a str,
    pub source_id: &'a str,
    pub source: &'a str,
    pub format: &'a str,
    pub received_unix_nanos: i64,
    /// (event time, line).
    pub lines: Vec<(i64, &'a str)>,
}

/// Encodes the lines of `routed` that go to `owner` into `out`.
pub fn encode(
    record: &IngestRecord,
    origin_partition: i32,
    origin_offset: i64,
    routed: &Routed,
    owner: u32,
    out: &mut Enc,
) {
    out.buf.clear();
    out.u8(VERSION);
    out.u32(origin_partition as u32);
    out.i64(origin_offset);
    for s in [
        &record.tenant,
        &record.agent_id,
        &record.source_id,
        &record.source,
        &record.format,
    ] {
        out.str(s);
    }
    out.i64(record.received_unix_nanos);
    let lines = routed.targets.iter().filter(|(o, _)| *o == owner);
    out.u64(lines.clone().count() as u64);
    for &(_, at) in lines {
        let (ts, raw) = &routed.lines[at as usize];
        out.i64(*ts);
        out.str(raw);
    }
}

pub fn decode(bytes: &[u8]) -> Result<RekeyMessage<'_>, DecodeError> {
    let mut d = Dec::new(bytes);
    let version = d.u8()?;
    if version != VERSION {
        return Err(DecodeError(format!(
            "rekey message version {version}, this build reads {VERSION}"
        )));
    }
    let origin_partition = d.u32()? as i32;
    let origin_offset = d.i64()?;
    let tenant = d.str()?;
    let agent_id = d.str()?;
    let source_id = d.str()?;
    let source = d.str()?;
    let format = d.str()?;
    let received_unix_nanos = d.i64()?;
    let n = d.len()?;
    let mut lines = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let ts = d.i64()?;
        lines.push((ts, d.str()?));
    }
    if !d.is_empty() {
        return Err(DecodeError("trailing bytes after the last line".into()));
    }
    Ok(RekeyMessage {
        origin_partition,
        origin_offset,
        tenant,
        agent_id,
        source_id,
        source,
        format,
        received_unix_nanos,
        lines,
    })
}

/// The shards' producer to the rekey topic.
pub struct RekeyProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    /// Partitions of the rekey topic: owners, and the modulus of the key.
    pub partitions: u32,
    buf: Enc,
    owners: Vec<u32>,
}

impl RekeyProducer {
    pub fn new(config: &KafkaConfig, partitions: u32) -> Result<RekeyProducer> {
        let producer = config
            .producer_client()?
            // A line a shard forwarded is not lost if the broker is down;
            // the shard's group offset does not pass it until it is
            // delivered ([`RekeyProducer::flush`]).
            .set("message.timeout.ms", "0")
            .create()
            .context("creating the Kafka rekey producer")?;
        Ok(RekeyProducer {
            producer,
            topic: config.rekey_topic.clone(),
            partitions,
            buf: Enc::default(),
            owners: Vec::new(),
        })
    }

    /// Sends `routed` (one record's lines, from `origin_partition` at
    /// `origin_offset`), one message per owner partition.
    pub fn send(
        &mut self,
        record: &IngestRecord,
        origin_partition: i32,
        origin_offset: i64,
        routed: &Routed,
        metrics: &Metrics,
    ) {
        self.owners.clear();
        for &(owner, _) in &routed.targets {
            if !self.owners.contains(&owner) {
                self.owners.push(owner);
            }
        }
        for i in 0..self.owners.len() {
            let owner = self.owners[i];
            encode(
                record,
                origin_partition,
                origin_offset,
                routed,
                owner,
                &mut self.buf,
            );
            let key = record.source_key();
            let mut message = BaseRecord::to(&self.topic)
                .partition(owner as i32)
                .key(&key)
                .payload(&self.buf.buf);
            loop {
                match self.producer.send(message) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        // The queue is full: wait for the brokers, as the
                        // collector waits for them.
                        tracing::debug!(error = %e, "rekey queue full, waiting");
                        message = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            metrics.kafka_rekey_records.inc();
            metrics.kafka_rekey_bytes.add(self.buf.buf.len() as u64);
        }
    }

    /// Waits until every line sent is on the brokers: called before the
    /// shards commit offsets past them.
    pub fn flush(&self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .context("flushing the rekey topic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_only_the_owners_lines() {
        let record = IngestRecord {
            tenant: "acme".into(),
            agent_id: "a1".into(),
            source_id: "s1".into(),
            source: "/var/log/web.log".into(),
            host: "web01".into(),
            format: "nginx".into(),
            first_offset: 0,
            received_unix_nanos: 42,
            lines: bytes::Bytes::new(),
            resized: None,
        };
        let routed = Routed {
            lines: vec![(1, "one".into()), (2, "two".into()), (3, "three".into())],
            targets: vec![(0, 0), (1, 1), (0, 2), (1, 2)],
        };
        let mut enc = Enc::default();
        encode(&record, 3, 77, &routed, 0, &mut enc);
        let m = decode(&enc.buf).expect("decodes");
        assert_eq!(m.origin_partition, 3);
        assert_eq!(m.origin_offset, 77);
        assert_eq!(m.tenant, "acme");
        assert_eq!(m.source_id, "s1");
        assert_eq!(m.format, "nginx");
        assert_eq!(m.received_unix_nanos, 42);
        assert_eq!(m.lines, vec![(1, "one"), (3, "three")]);
        encode(&record, 3, 77, &routed, 1, &mut enc);
        assert_eq!(
            decode(&enc.buf).expect("decodes").lines,
            vec![(2, "two"), (3, "three")]
        );
        assert!(decode(&enc.buf[..enc.buf.len() - 1]).is_err());
    }
}
