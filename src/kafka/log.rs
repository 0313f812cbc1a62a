//! The collector's durable log on Kafka: the same queue and the same acks
//! as the WAL sequencer, but a batch is durable once the brokers hold it.
//!
//! The key is the batch's source key, so every batch of a source lands in
//! one partition, in order, and the indexer owning that partition
//! deduplicates resends exactly (`ingest::admit`). The dedup here is only
//! a shortcut that saves producing a resend this collector already took:
//! it is forgotten on a delivery failure and on restart, and the indexer
//! catches what it lets through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::KafkaConfig;
use crate::ingest::{self, AckInfo, Inbox, IngestError, SourceOffsets};
use crate::telemetry::Metrics;
use crate::wal::cipher::WalCipher;

pub struct KafkaLog {
    producer: FutureProducer,
    topic: String,
    metrics: Arc<Metrics>,
    /// Seals each record as the WAL does, so the brokers' disks hold no
    /// readable line either (`[wal] encryption_key_file`).
    cipher: Option<Arc<WalCipher>>,
}

impl KafkaLog {
    /// `max_record_bytes`: the largest record a connection can submit
    /// (a decompressed frame), so that no accepted batch is too large for
    /// the producer.
    pub fn new(
        config: &KafkaConfig,
        max_record_bytes: usize,
        metrics: Arc<Metrics>,
        cipher: Option<Arc<WalCipher>>,
    ) -> Result<Self> {
        // Record header, encryption and Kafka framing on top of the lines.
        let message_max = (max_record_bytes + 64 * 1024).min(1_000_000_000);
        // One record per Kafka batch costs nothing: a record is already a
        // batch of lines.
        let producer: FutureProducer = config
            .producer_client()?
            .set("message.max.bytes", message_max.to_string())
            // A broker outage holds the acks back instead of failing the
            // batches: agents keep their spools until it is over.
            .set("message.timeout.ms", "0")
            .create()
            .context("creating the Kafka producer")?;
        Ok(KafkaLog {
            producer,
            topic: config.topic.clone(),
            metrics,
            cipher,
        })
    }

    /// Serves the ingest queue until every handle is dropped, then waits
    /// for the batches in flight.
    pub async fn run(self, mut inbox: Inbox) -> Result<(), IngestError> {
        let mut offsets = SourceOffsets::new();
        let delivery_failed = Arc::new(AtomicBool::new(false));
        while let Some(mut request) = inbox.next_append().await {
            if delivery_failed.swap(false, Ordering::AcqRel) {
                // A batch we counted never arrived: forget every shortcut,
                // the indexers' dedup stays exact.
                offsets.clear();
            }
            if let Some(duplicate) = ingest::admit(&offsets, &mut request.record) {
                self.metrics.batches_duplicate.inc();
                request.answer(Ok(duplicate));
                continue;
            }
            let record = &request.record;
            let encoded = record.encode();
            let payload = match &self.cipher {
                None => encoded,
                Some(cipher) => match cipher.seal(&encoded) {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        request.answer(Err(IngestError::LogUnavailable(format!("{e:#}"))));
                        continue;
                    }
                },
            };
            let key = record.source_key();
            let delivery = loop {
                let message = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                match self.producer.send_result(message) {
                    Ok(delivery) => break Ok(delivery),
                    // librdkafka's queue is full: wait, as the WAL waits
                    // for its fsync; the connections feel it as backpressure.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => break Err(e),
                }
            };
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(e) => {
                    tracing::warn!(error = %e, source = %key, "Kafka refused a batch");
                    request.answer(Err(IngestError::LogUnavailable(e.to_string())));
                    continue;
                }
            };
            ingest::advance(&mut offsets, record);
            let ack = AckInfo {
                acked_offset: record.end_offset(),
                duplicate: false,
            };
            let (lines, bytes) = (record.line_count() as u64, record.lines.len() as u64);
            let metrics = Arc::clone(&self.metrics);
            let failed = Arc::clone(&delivery_failed);
            // Acks of one connection are sent in order by its writer, which
            // awaits them one by one: answering from a task per batch keeps
            // many batches in flight without reordering anything.
            tokio::spawn(async move {
                match delivery.await {
                    Ok(Ok(_)) => {
                        metrics.lines_received.add(lines);
                        metrics.bytes_received.add(bytes);
                        metrics.ingest_to_ack.record(request.received.elapsed());
                        request.answer(Ok(ack));
                    }
                    Ok(Err((e, _))) => {
                        failed.store(true, Ordering::Release);
                        tracing::warn!(error = %e, "Kafka did not take a batch; the agent will resend it");
                        request.answer(Err(IngestError::LogUnavailable(e.to_string())));
                    }
                    Err(_) => request.answer(Err(IngestError::ShuttingDown)),
                }
            });
        }
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| IngestError::LogUnavailable(e.to_string()))?;
        flushed.map_err(|e| IngestError::LogUnavailable(format!("flushing Kafka: {e}")))
    }
}
