//! Lines without source offsets: what HTTP ingest (`_bulk`, NDJSON) and
//! syslog senders hand in. Each batch is redacted, appended as one record
//! without a source id (no offsets to dedup on), and answered once
//! durable, exactly like an agent batch.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{AckInfo, Ingest, IngestError, IngestRecord};
use crate::redact::Redactor;
use crate::telemetry::Metrics;

/// What the offset-less inputs need from the collector.
pub struct BulkIngest {
    pub ingest: Ingest,
    /// Refused senders (syslog, HTTP ingest), aggregated into the audit log.
    pub refusals: Arc<crate::refusals::Refusals>,
    pub redactor: Option<Arc<Redactor>>,
    pub metrics: Arc<Metrics>,
    pub max_line_bytes: usize,
    /// Largest request body accepted (`[limits] max_bulk_bytes`).
    pub max_body_bytes: usize,
}

/// Where a batch of lines comes from: one WAL record per distinct origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: String,
    pub source: String,
    pub format: &'static str,
}

impl BulkIngest {
    /// Redacts `lines` (newline-terminated) and queues them for the WAL as
    /// one record without a source id (no offsets to dedup on); the
    /// receiver resolves once they are durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        tenant: &str,
        agent_id: &str,
        source: &str,
        host: &str,
        format: &str,
        lines: Vec<u8>,
        received: Instant,
    ) -> Result<oneshot::Receiver<Result<AckInfo, IngestError>>, IngestError> {
        let mut lines = Bytes::from(lines);
        if let Some(redactor) = &self.redactor {
            if let Some(out) = redactor.redact_batch(&lines) {
                for &(kind, n) in &out.counts {
                    self.metrics.redactions.add(redactor.kind_name(kind), n);
                }
                lines = out.lines;
            }
        }
        let record = IngestRecord {
            tenant: tenant.to_string(),
            agent_id: agent_id.to_string(),
            source_id: String::new(),
            source: source.to_string(),
            host: host.to_string(),
            format: format.to_string(),
            first_offset: 0,
            received_unix_nanos: crate::time::now_nanos(),
            lines,
            resized: None,
        };
        self.ingest.submit(record, received).await
    }

    /// Appends one batch per origin (lines newline-terminated) and returns
    /// once every one of them is durable. All batches are queued before
    /// the first wait, so they share a group commit.
    pub async fn append_all<O: std::borrow::Borrow<Origin>>(
        &self,
        tenant: &str,
        agent_id: &str,
        batches: impl IntoIterator<Item = (O, Vec<u8>)>,
    ) -> Result<(), IngestError> {
        let received = Instant::now();
        let mut acks = Vec::new();
        for (origin, lines) in batches {
            let origin = origin.borrow();
            let ack = self
                .append(
                    tenant,
                    agent_id,
                    &origin.source,
                    &origin.host,
                    origin.format,
                    lines,
                    received,
                )
                .await?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|_| IngestError::ShuttingDown)??;
        }
        Ok(())
    }
}
