//! Firings across the cluster: every indexer produces its firings to the
//! alerts topic; one paging instance (a consumer group over a
//! one-partition topic, so exactly one member reads it and another takes
//! over when it dies) feeds them to its alert stage, whose fingerprint
//! dedup turns the same key firing on two indexers into one page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::KafkaConfig;
use crate::alert::service::FiringSink;
use crate::detect::Firing;

/// Produces every firing received on `firings` to the alerts topic until
/// the channel closes (the indexer is done), then flushes.
pub fn spawn_forwarder(config: &KafkaConfig, firings: Receiver<Firing>) -> Result<JoinHandle<()>> {
    let producer: ThreadedProducer<DefaultProducerContext> = config
        .client()?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        // See `log.rs`: a resumed consumer must never land inside a batch.
        .set("batch.num.messages", "1")
        // A broker outage delays pages; it must not drop them.
        .set("message.timeout.ms", "0")
        .create()
        .context("creating the Kafka alerts producer")?;
    let topic = config.alerts_topic.clone();
    let thread = std::thread::Builder::new()
        .name("nightowl-firings".into())
        .spawn(move || {
            while let Ok(firing) = firings.recv() {
                let payload = match serde_json::to_vec(&firing) {
                    Ok(payload) => payload,
                    Err(e) => {
                        tracing::error!(error = %e, rule = %firing.rule_id, "cannot encode a firing");
                        continue;
                    }
                };
                let key = format!("{}/{}/{}", firing.tenant, firing.rule_id, firing.key);
                let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, back)) => {
                            tracing::debug!(error = %e, "alerts queue full, waiting");
                            record = back;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            }
            if let Err(e) = producer.flush(Duration::from_secs(30)) {
                tracing::error!(error = %e, "firings not flushed to Kafka at shutdown");
            }
        })
        .context("starting the firings forwarder")?;
    Ok(thread)
}

/// The paging end: reads the alerts topic in the paging group and hands
/// each firing to the local alert stage.
pub struct Pager {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pager {
    pub fn start(config: &KafkaConfig, sink: FiringSink) -> Result<Pager> {
        let consumer: BaseConsumer = config
            .group_client(&config.paging_group)?
            .set("auto.offset.reset", "earliest")
            // At least once: an offset is stored only after the alert
            // stage has its firing on disk (and every firing before it),
            // so a crash in between reads it again; the stage's
            // fingerprint dedup absorbs a firing read twice.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .context("creating the Kafka paging consumer")?;
        consumer
            .subscribe(&[&config.alerts_topic])
            .with_context(|| format!("subscribing to {}", config.alerts_topic))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nightowl-pager".into())
            .spawn(move || {
                let mut unstored = Unstored::default();
                while !stopping.load(Ordering::Acquire) {
                    unstored.store_what_is_stored(&consumer, &sink);
                    let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the alerts topic");
                            continue;
                        }
                    };
                    match message.payload().map(serde_json::from_slice::<Firing>) {
                        Some(Ok(firing)) => {
                            let handed = sink.send_blocking(firing);
                            // The alert stage is gone (shutdown): this offset
                            // is not stored, the next pager reads it again.
                            if !handed {
                                break;
                            }
                            unstored.handed = sink.pager_sent_one();
                        }
                        Some(Err(e)) => tracing::error!(
                            error = %e, partition = message.partition(), offset = message.offset(),
                            "skipping an unreadable firing on the alerts topic"
                        ),
                        None => {}
                    }
                    unstored.push(&message);
                }
                // Dropping the consumer commits the stored offsets and
                // leaves the group, so a standby takes over at once.
            })
            .context("starting the paging consumer")?;
        Ok(Pager {
            stop,
            thread: Some(thread),
        })
    }
}

/// Messages read whose offsets wait for the alert stage to store their
/// firings (or those of the messages before them, for one not a firing).
#[derive(Default)]
struct Unstored {
    /// The alert stage's count of the pager's firings, at the last one
    /// this pager handed over.
    handed: u64,
    /// (firings handed when the message was done, topic, partition,
    /// offset), in reading order: an offset stored commits every offset
    /// before it, so they go in order.
    messages: std::collections::VecDeque<(u64, String, i32, i64)>,
}

impl Unstored {
    fn push(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        self.messages.push_back((
            self.handed,
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        ));
    }

    fn store_what_is_stored(&mut self, consumer: &BaseConsumer, sink: &FiringSink) {
        let stored = sink.pager_stored();
        while let Some((_, topic, partition, offset)) = self
            .messages
            .front()
            .filter(|(handed, ..)| *handed <= stored)
        {
            if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
                tracing::warn!(error = %e, "storing the alerts offset");
            }
            self.messages.pop_front();
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
