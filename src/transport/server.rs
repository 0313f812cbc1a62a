//! The collector's agent listener: TLS 1.3, hello/token check, then batches
//! in and acks out, pipelined and in order.
//!
//! With `[tls] client_ca`, an agent may authenticate by a client
//! certificate instead of (or as well as) its token: the certificate's
//! tenant URI names the tenant, and its registered id is checked per
//! batch like a token (docs/mtls.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::protocol::{
    decompress_lines, Batch, ErrorCode, Message, ProtocolCodec, ProtocolError, Resize, CAP_REDACT,
    CAP_RESUME, CAP_ZSTD, PROTOCOL_VERSION,
};
use crate::auth::{Principal, Role, TokenStore};
use crate::ingest::{AckInfo, Ingest, IngestError, IngestRecord, Resized};
use crate::redact::Redactor;
use crate::telemetry::Metrics;
use crate::transport::tls::ClientIdentity;

/// What bounds one agent connection: its part of `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Largest agent frame accepted, bytes.
    pub max_frame_bytes: usize,
    /// Largest single log line, bytes.
    pub max_line_bytes: usize,
    /// Batches a connection may have in flight before reading pauses.
    pub max_inflight_batches: usize,
    /// Seconds a new connection has to complete TLS and the hello.
    pub handshake_timeout_secs: u64,
}

pub struct AgentServer {
    pub acceptor: TlsAcceptor,
    pub tokens: Arc<TokenStore>,
    pub ingest: Ingest,
    pub limits: ConnLimits,
    pub metrics: Arc<Metrics>,
    /// `None` when `[redact] enabled = false`.
    pub redactor: Option<Arc<Redactor>>,
    /// The `[redact]` section as JSON, sent to agents that redact before
    /// their spool (`CAP_REDACT`), so they apply this collector's rules.
    pub redact_rules: String,
    /// Refused handshakes and batches, for the audit log.
    pub refusals: Arc<crate::refusals::Refusals>,
    /// `DATA_DIR/store-id` when this collector's offsets are exact (its
    /// own WAL): agents asking `CAP_RESUME` get it with their offsets.
    pub store_id: Option<String>,
}

/// How long a connecting agent's hello waits for its durable offsets.
const RESUME_WAIT: Duration = Duration::from_secs(3);

/// Bytes of source entries per `Resume` frame at most (half the frame
/// limit when that is smaller).
const RESUME_FRAME_BUDGET: usize = 60 * 1024;

impl AgentServer {
    /// Accepts connections until the task is dropped; dropping it also
    /// aborts every connection (their pending acks are simply not sent, and
    /// the agents resend).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        self.metrics.connections_accepted.inc();
                        let server = Arc::clone(&self);
                        connections.spawn(async move { server.handle(tcp, peer).await });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    async fn handle(&self, tcp: TcpStream, peer: SocketAddr) {
        let timeout = Duration::from_secs(self.limits.handshake_timeout_secs);
        let tls = match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.metrics.handshakes_rejected.inc();
                tracing::info!(%peer, error = %e, "agent TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.handshakes_rejected.inc();
                tracing::info!(%peer, "agent TLS handshake timed out");
                return;
            }
        };
        self.metrics.connections_active.add(1);
        // The chain is verified by the handshake; only its names are read.
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| ClientIdentity::from_der(der).map_err(|e| format!("{e:#}")));
        let (read, write) = tokio::io::split(tls);
        let reader = FramedRead::new(read, ProtocolCodec::new(self.limits.max_frame_bytes));
        let writer = FramedWrite::new(write, ProtocolCodec::new(self.limits.max_frame_bytes));
        if let Err(reason) = self.converse(reader, writer, peer, cert).await {
            tracing::info!(%peer, %reason, "agent connection closed with error");
        }
        self.metrics.connections_active.add(-1);
    }

    async fn converse<R, W>(
        &self,
        mut reader: FramedRead<R, ProtocolCodec>,
        mut writer: FramedWrite<W, ProtocolCodec>,
        peer: SocketAddr,
        cert: Option<Result<ClientIdentity, String>>,
    ) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let hello = self.handshake(&mut reader, peer, cert).await;
        let (principal, credentials, agent_id, capabilities) = match hello {
            Ok(ok) => ok,
            Err((code, reason)) => {
                self.metrics.handshakes_rejected.inc();
                self.refusals.note(crate::refusals::Refusal {
                    channel: "agent",
                    reason: reason.clone(),
                    ip: peer.ip(),
                    actor: String::new(),
                    tenant: String::new(),
                    status: if code == ErrorCode::Unauthorized {
                        401
                    } else {
                        400
                    },
                });
                let _ = writer.send(Message::error(code, reason.clone())).await;
                let _ = writer.close().await;
                self.linger(reader).await;
                return Err(reason);
            }
        };
        tracing::debug!(%peer, tenant = %principal.tenant, %agent_id, "agent connected");
        // Only an agent that named its capabilities gets them answered:
        // older agents see the welcome they always did.
        let mut accepted = capabilities.map(|caps| caps & (CAP_ZSTD | CAP_REDACT));
        // Asked before the welcome: without exact offsets (Kafka) the
        // capability is not accepted and the agent resumes as before.
        // Bounded: a sequencer stalled behind a slow indexer must not make
        // agents time out connecting (and fail over); they resume without
        // it this time.
        let resume = match (&self.store_id, capabilities) {
            (Some(store), Some(caps)) if caps & CAP_RESUME != 0 => {
                let asked = self.ingest.source_offsets(&principal.tenant, &agent_id);
                match tokio::time::timeout(RESUME_WAIT, asked).await {
                    Ok(sources) => sources.map(|sources| (store.clone(), sources)),
                    Err(_) => {
                        tracing::info!(%peer, %agent_id, "durable offsets not ready in time; this connection goes without CAP_RESUME");
                        None
                    }
                }
            }
            _ => None,
        };
        if resume.is_some() {
            accepted = accepted.map(|caps| caps | CAP_RESUME);
        }
        let welcome = match accepted {
            Some(capabilities) => Message::WelcomeCaps {
                version: PROTOCOL_VERSION,
                tenant: principal.tenant.clone(),
                max_frame_bytes: self.limits.max_frame_bytes as u32,
                max_line_bytes: self.limits.max_line_bytes as u32,
                capabilities,
                redact_rules: (capabilities & CAP_REDACT != 0).then(|| self.redact_rules.clone()),
            },
            None => Message::Welcome {
                version: PROTOCOL_VERSION,
                tenant: principal.tenant.clone(),
                max_frame_bytes: self.limits.max_frame_bytes as u32,
                max_line_bytes: self.limits.max_line_bytes as u32,
            },
        };
        writer.send(welcome).await.map_err(|e| e.to_string())?;
        if let Some((store, sources)) = resume {
            let budget = (self.limits.max_frame_bytes / 2).clamp(1024, RESUME_FRAME_BUDGET);
            send_resume(&mut writer, store, sources, budget).await?;
        }
        let caps = accepted.unwrap_or(0);

        // Acks must leave in batch order, and may only leave once durable:
        // the writer task awaits each pending ack in turn.
        let (pending_tx, pending_rx) = mpsc::channel(self.limits.max_inflight_batches.max(1));
        let writer_task = tokio::spawn(write_acks(writer, pending_rx));
        let outcome = self
            .read_batches(
                &mut reader,
                &principal,
                &credentials,
                &agent_id,
                caps,
                &pending_tx,
            )
            .await;
        if let Err((code, reason)) = &outcome {
            self.metrics.frames_rejected.inc();
            if *code == ErrorCode::Unauthorized {
                self.refusals.note(crate::refusals::Refusal {
                    channel: "agent",
                    reason: reason.clone(),
                    ip: peer.ip(),
                    actor: principal.token_id.clone(),
                    tenant: principal.tenant.clone(),
                    status: 401,
                });
            }
            let _ = pending_tx
                .send(Outgoing::Reject(*code, reason.clone()))
                .await;
        }
        drop(pending_tx);
        let written = writer_task.await.map_err(|e| e.to_string())?;
        if outcome.is_err() {
            self.linger(reader).await;
        }
        outcome.map_err(|(_, reason)| reason)?;
        written
    }

    /// After an error frame: reads and drops what the peer still sends,
    /// until it closes (bounded in bytes and time). Closing a socket with
    /// unread input resets the connection, and a peer still writing (a
    /// pipelined or oversized batch) would get that reset instead of the
    /// error frame naming the reason.
    async fn linger<R: AsyncRead + Unpin>(&self, reader: FramedRead<R, ProtocolCodec>) {
        let limit = (self.limits.max_frame_bytes as u64).saturating_mul(4);
        let timeout = Duration::from_secs(self.limits.handshake_timeout_secs);
        let mut input = reader.into_inner().take(limit);
        let _ = tokio::time::timeout(timeout, tokio::io::copy(&mut input, &mut tokio::io::sink()))
            .await;
    }

    /// The hello's checks; returns who is connecting, the ids of every
    /// credential it used (each is re-checked per batch), its agent id and
    /// the capabilities it asked for.
    #[allow(clippy::type_complexity)]
    async fn handshake<R: AsyncRead + Unpin>(
        &self,
        reader: &mut FramedRead<R, ProtocolCodec>,
        peer: SocketAddr,
        cert: Option<Result<ClientIdentity, String>>,
    ) -> Result<(Principal, Vec<String>, String, Option<u32>), (ErrorCode, String)> {
        let timeout = Duration::from_secs(self.limits.handshake_timeout_secs);
        let first = tokio::time::timeout(timeout, reader.next())
            .await
            .map_err(|_| {
                (
                    ErrorCode::BadHandshake,
                    format!("no hello within {}s", timeout.as_secs()),
                )
            })?;
        let (version, token, agent_id, capabilities) = match first {
            Some(Ok(Message::Hello {
                version,
                token,
                agent_id,
            })) => (version, token, agent_id, None),
            Some(Ok(Message::HelloCaps {
                version,
                token,
                agent_id,
                capabilities,
            })) => (version, token, agent_id, Some(capabilities)),
            Some(Ok(other)) => {
                return Err((
                    ErrorCode::BadHandshake,
                    format!("expected a hello frame first, got {}", message_kind(&other)),
                ))
            }
            Some(Err(e)) => {
                return Err((
                    ErrorCode::BadHandshake,
                    format!("not a nightowl agent hello ({e})"),
                ))
            }
            None => return Err((ErrorCode::BadHandshake, "closed before hello".into())),
        };
        if version != PROTOCOL_VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this collector speaks version {PROTOCOL_VERSION}"),
            ));
        }
        let by_cert = match cert {
            None => None,
            Some(Err(reason)) => return Err((ErrorCode::Unauthorized, reason)),
            Some(Ok(identity)) => Some(
                self.tokens
                    .authenticate_cert(&identity, Some(peer.ip()))
                    .map_err(|reason| (ErrorCode::Unauthorized, reason))?,
            ),
        };
        let (principal, credentials) = match by_cert {
            // With a certificate the token is optional.
            Some(cert) if token.is_empty() => {
                let ids = vec![cert.token_id.clone()];
                (cert, ids)
            }
            by_cert => {
                if token.is_empty() {
                    return Err((
                        ErrorCode::Unauthorized,
                        "no token and no client certificate".into(),
                    ));
                }
                let principal = self
                    .tokens
                    .check(&token, Some(peer.ip()))
                    .map_err(|refusal| (ErrorCode::Unauthorized, refusal.to_string()))?;
                let mut ids = vec![principal.token_id.clone()];
                if let Some(cert) = by_cert {
                    if cert.tenant != principal.tenant {
                        return Err((
                            ErrorCode::Unauthorized,
                            format!(
                                "the token is for tenant {:?} but the client certificate names tenant {:?}; send one or make them agree",
                                principal.tenant, cert.tenant
                            ),
                        ));
                    }
                    ids.push(cert.token_id);
                }
                (principal, ids)
            }
        };
        if !principal.role.allows(Role::Agent) {
            return Err((
                ErrorCode::Unauthorized,
                format!(
                    "{} may not ship logs; use an agent or admin token",
                    principal.role.token_phrase()
                ),
            ));
        }
        if agent_id.is_empty() || agent_id.len() > 256 {
            return Err((
                ErrorCode::BadHandshake,
                "agent id must be 1-256 bytes".into(),
            ));
        }
        Ok((principal, credentials, agent_id, capabilities))
    }

    async fn read_batches<R: AsyncRead + Unpin>(
        &self,
        reader: &mut FramedRead<R, ProtocolCodec>,
        principal: &Principal,
        credentials: &[String],
        agent_id: &str,
        caps: u32,
        pending: &mpsc::Sender<Outgoing>,
    ) -> Result<(), (ErrorCode, String)> {
        let zstd = caps & CAP_ZSTD != 0;
        let limit = self.limits.max_frame_bytes.saturating_mul(4);
        while let Some(frame) = reader.next().await {
            let (batch, resize) = match frame {
                Ok(Message::Batch(batch)) => (batch, None),
                // Decompressed before validation, so the WAL stores plain
                // lines and every check below sees what will be indexed.
                Ok(Message::BatchZstd(mut batch)) if zstd => {
                    batch.lines = decompress_lines(&batch.lines, limit)
                        .map_err(|e| (e.code(), format!("batch {}: {e}", batch.seq)))?;
                    (batch, None)
                }
                Ok(Message::BatchResized {
                    mut batch,
                    resize,
                    zstd: compressed,
                }) if caps & CAP_REDACT != 0 && (zstd || !compressed) => {
                    if compressed {
                        batch.lines = decompress_lines(&batch.lines, limit)
                            .map_err(|e| (e.code(), format!("batch {}: {e}", batch.seq)))?;
                    }
                    resize.check(&batch.lines).map_err(|reason| {
                        (
                            ErrorCode::Malformed,
                            format!("batch {}: {reason}", batch.seq),
                        )
                    })?;
                    (batch, Some(resize))
                }
                Ok(other) => {
                    return Err((
                        ErrorCode::Malformed,
                        format!(
                            "unexpected {} frame after the handshake",
                            message_kind(&other)
                        ),
                    ))
                }
                // The peer went away (crashed, or closed without a TLS
                // close_notify): nothing was refused, nobody is left to tell.
                Err(ProtocolError::Io(e)) => {
                    tracing::debug!(error = %e, "agent connection lost");
                    break;
                }
                Err(e) => return Err((e.code(), e.to_string())),
            };
            let received = Instant::now();
            self.metrics.batches_received.inc();
            // Checked per batch, not only at the hello: revoking a token
            // or a certificate cuts off the connections already open with it.
            if let Some(id) = credentials.iter().find(|id| !self.tokens.is_active(id)) {
                let what = if id.starts_with("cert-") {
                    "client certificate"
                } else {
                    "token"
                };
                return Err((ErrorCode::Unauthorized, format!("{what} revoked")));
            }
            self.validate(&batch)?;
            // Here, in the connection's task, so redaction runs in parallel
            // across connections and nothing after it sees a secret.
            let (lines, resized) = self.redact(batch.lines, resize, caps & CAP_REDACT != 0);
            let seq = batch.seq;
            let record = IngestRecord {
                tenant: principal.tenant.clone(),
                agent_id: agent_id.to_string(),
                source_id: batch.source_id,
                source: batch.source,
                host: batch.host,
                format: batch.format,
                first_offset: batch.first_offset,
                received_unix_nanos: crate::time::now_nanos(),
                lines,
                resized,
            };
            let ack = self
                .ingest
                .submit(record, received)
                .await
                .map_err(|e| (ErrorCode::Unavailable, e.to_string()))?;
            if pending.send(Outgoing::Ack { seq, ack }).await.is_err() {
                break; // the writer is gone: the peer closed
            }
        }
        Ok(())
    }

    /// Replaces secrets; the batch's source length travels along so acks
    /// and dedup stay in the agent's byte offsets. A batch the agent
    /// redacted already (`agent`) is redacted again: the collector's pass
    /// is the guarantee (an agent without the rules yet, an older agent, a
    /// pattern added since). Rules being the same, it finds nothing.
    fn redact(
        &self,
        lines: Bytes,
        agent: Option<Resize>,
        agent_redacts: bool,
    ) -> (Bytes, Option<Box<Resized>>) {
        let source_len = agent
            .as_ref()
            .map_or(lines.len() as u64, |resize| resize.source_len);
        let agent_changed = agent.map(|resize| resize.changed).unwrap_or_default();
        if let (Some(redactor), true) = (&self.redactor, agent_redacts) {
            count_agent_markers(redactor, &self.metrics, &lines);
        }
        let (lines, ours) = match &self.redactor {
            Some(redactor) => match redactor.redact_batch(&lines) {
                Some(out) => {
                    for &(kind, n) in &out.counts {
                        self.metrics.redactions.add(redactor.kind_name(kind), n);
                    }
                    (out.lines, out.changed)
                }
                None => (lines, Vec::new()),
            },
            None => (lines, Vec::new()),
        };
        let changed = compose(&agent_changed, &ours);
        let resized = (!changed.is_empty()).then(|| {
            Box::new(Resized {
                source_len,
                changed,
            })
        });
        (lines, resized)
    }

    fn validate(&self, batch: &Batch) -> Result<(), (ErrorCode, String)> {
        if batch.source_id.is_empty() {
            return Err((
                ErrorCode::Malformed,
                format!("batch {} has an empty source id", batch.seq),
            ));
        }
        if batch.lines.is_empty() || !batch.lines.ends_with(b"\n") {
            return Err((
                ErrorCode::Malformed,
                format!(
                    "batch {} must hold whole lines ending with a newline",
                    batch.seq
                ),
            ));
        }
        let limit = self.limits.max_line_bytes;
        let mut line_start = 0usize;
        for newline in memchr::memchr_iter(b'\n', &batch.lines) {
            if newline - line_start > limit {
                return Err((
                    ErrorCode::LineTooLarge,
                    format!(
                        "line at offset {} of source {:?} is {} bytes; the limit is {limit}",
                        batch.first_offset + line_start as u64,
                        batch.source,
                        newline - line_start
                    ),
                ));
            }
            line_start = newline + 1;
        }
        Ok(())
    }
}

/// Counts the secrets an agent replaced, from the markers in its batch
/// (one substring search over the batch), into the same metric as the
/// collector's own.
fn count_agent_markers(redactor: &Redactor, metrics: &Metrics, lines: &[u8]) {
    let mut counts: Vec<(u16, u64)> = Vec::new();
    redactor.count_markers(lines, |kind| {
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    });
    for (kind, n) in counts {
        metrics.redactions.add(redactor.kind_name(kind), n);
    }
}

/// Two passes' per-line length changes (each sorted by line index) as one:
/// a line changed by both shrank or grew by the sum.
fn compose(first: &[(u32, i64)], second: &[(u32, i64)]) -> Vec<(u32, i64)> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut a, mut b) = (first.iter().peekable(), second.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(&&(i, x)), Some(&&(j, y))) if i == j => {
                a.next();
                b.next();
                (i, x + y)
            }
            (Some(&&(i, x)), Some(&&(j, _))) if i < j => {
                a.next();
                (i, x)
            }
            (_, Some(&&(j, y))) => {
                b.next();
                (j, y)
            }
            (Some(&&(i, x)), None) => {
                a.next();
                (i, x)
            }
            (None, None) => break,
        };
        if next.1 != 0 {
            out.push(next);
        }
    }
    out
}

/// The `Resume` frames: the store id and the agent's sources, cut so no
/// frame nears a frame limit; the last says `more = false`.
async fn send_resume<W: AsyncWrite + Unpin>(
    writer: &mut FramedWrite<W, ProtocolCodec>,
    store: String,
    sources: Vec<(String, u64)>,
    budget: usize,
) -> Result<(), String> {
    let mut frame = Vec::new();
    let mut bytes = 0;
    let mut rest = sources.into_iter().peekable();
    loop {
        while let Some((id, _)) = rest.peek() {
            if bytes + id.len() + 10 > budget && !frame.is_empty() {
                break;
            }
            bytes += id.len() + 10;
            frame.extend(rest.next());
        }
        let more = rest.peek().is_some();
        let msg = Message::Resume {
            store: store.clone(),
            sources: std::mem::take(&mut frame),
            more,
        };
        if more {
            writer.feed(msg).await.map_err(|e| e.to_string())?;
            bytes = 0;
        } else {
            return writer.send(msg).await.map_err(|e| e.to_string());
        }
    }
}

enum Outgoing {
    Ack {
        seq: u64,
        ack: oneshot::Receiver<Result<AckInfo, IngestError>>,
    },
    Reject(ErrorCode, String),
}

async fn write_acks<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, ProtocolCodec>,
    mut pending: mpsc::Receiver<Outgoing>,
) -> Result<(), String> {
    while let Some(item) = pending.recv().await {
        let msg = match item {
            Outgoing::Ack { seq, ack } => match ack.await {
                Ok(Ok(info)) => Message::Ack {
                    seq,
                    acked_offset: info.acked_offset,
                    duplicate: info.duplicate,
                },
                Ok(Err(e)) => Message::error(ErrorCode::Unavailable, e.to_string()),
                Err(_) => Message::error(ErrorCode::Unavailable, "collector shutting down"),
            },
            Outgoing::Reject(code, reason) => Message::error(code, reason),
        };
        let last = matches!(msg, Message::Error { .. });
        // Feed without flushing while more acks are ready: fewer TLS records.
        let sent = if last || pending.is_empty() {
            writer.send(msg).await
        } else {
            writer.feed(msg).await
        };
        sent.map_err(|e| e.to_string())?;
        if last {
            break;
        }
    }
    let _ = writer.close().await;
    Ok(())
}

fn message_kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Batch(_) => "batch",
        Message::HelloCaps { .. } => "hello",
        Message::WelcomeCaps { .. } => "welcome",
        Message::BatchZstd(_) => "compressed batch (not negotiated)",
        Message::BatchResized { .. } => "redacted batch (not negotiated)",
        Message::Resume { .. } => "resume",
        Message::Ack { .. } => "ack",
        Message::Error { .. } => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    /// Many sources go out in several frames under the budget, the last
    /// one saying so; none: one empty frame.
    #[tokio::test]
    async fn resume_frames_stay_under_the_budget() {
        let sources: Vec<(String, u64)> = (0..500)
            .map(|i| (format!("64769:{i}:0123456789abcdef"), i))
            .collect();
        let mut writer = FramedWrite::new(Vec::new(), ProtocolCodec::new(1 << 20));
        send_resume(&mut writer, "st".into(), sources.clone(), 2048)
            .await
            .expect("sent");
        let mut wire = BytesMut::from(&writer.get_ref()[..]);
        let mut codec = ProtocolCodec::new(4096);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(msg) =
            tokio_util::codec::Decoder::decode(&mut codec, &mut wire).expect("a frame under 4 KiB")
        {
            let Message::Resume {
                store,
                sources,
                more,
            } = msg
            else {
                panic!("not a resume frame");
            };
            assert_eq!(store, "st");
            got.extend(sources);
            frames += 1;
            if !more {
                break;
            }
        }
        assert!(wire.is_empty());
        // About 17 KiB of entries, at most 2 KiB a frame.
        assert!(frames >= 9, "{frames}");
        assert_eq!(got, sources);

        let mut writer = FramedWrite::new(Vec::new(), ProtocolCodec::new(1 << 20));
        send_resume(&mut writer, "st".into(), Vec::new(), 2048)
            .await
            .expect("sent");
        let mut wire = BytesMut::from(&writer.get_ref()[..]);
        let msg = tokio_util::codec::Decoder::decode(&mut codec, &mut wire).expect("decode");
        assert_eq!(
            msg,
            Some(Message::Resume {
                store: "st".into(),
                sources: Vec::new(),
                more: false
            })
        );
    }

    #[test]
    fn two_passes_changes_add_up_per_line() {
        assert_eq!(compose(&[], &[]), vec![]);
        assert_eq!(compose(&[(1, -5)], &[]), vec![(1, -5)]);
        assert_eq!(compose(&[], &[(2, 3)]), vec![(2, 3)]);
        assert_eq!(
            compose(&[(0, -4), (2, 7), (5, 1)], &[(2, -7), (3, 2), (6, -1)]),
            vec![(0, -4), (3, 2), (5, 1), (6, -1)]
        );
    }
}
