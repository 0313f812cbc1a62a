//! Syslog over TLS (RFC 5425) from standard senders such as rsyslog.
//!
//! Frames are octet-counted (`LEN SP MSG`, RFC 5425/6587) or, for senders
//! that only do that, newline-terminated; both are accepted on one port and
//! told apart per frame. The sender authenticates each message with a
//! token in its structured data, `[nightowl@32473 token="nwl_..."]` (an
//! rsyslog template adds it); the element is removed before the line is
//! stored, so the token is never written anywhere. The token's tenant is
//! the line's tenant. Messages without a valid agent token are dropped and
//! counted.
//!
//! With `[tls] client_ca`, a sender may present a client certificate
//! instead (docs/mtls.md): its messages need no token and get the
//! certificate's tenant; a message whose token names another tenant is
//! dropped and counted. Revoking the certificate closes the connection at
//! its next message.
//!
//! Lines are batched per connection (up to 256 KiB, or whatever arrived
//! when the sender pauses), redacted and appended to the WAL like agent
//! batches; the next frame is read once the batch is durable, so a slow
//! disk slows the sender through TCP instead of growing memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Decoder, FramedRead};

use super::tls::ClientIdentity;
use crate::auth::{Principal, Role, TokenStore};
use crate::ingest::BulkIngest;

/// A batch is flushed at this size, or when the sender pauses this long.
const BATCH_BYTES: usize = 256 * 1024;
const PAUSE: Duration = Duration::from_millis(5);

pub struct SyslogServer {
    pub acceptor: TlsAcceptor,
    pub tokens: Arc<TokenStore>,
    pub sink: Arc<BulkIngest>,
    pub handshake_timeout: Duration,
}

impl SyslogServer {
    /// Accepts connections until the task is dropped; dropping it aborts
    /// every connection too (they hold the ingest queue open).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let server = Arc::clone(&self);
                        connections.spawn(async move { server.handle(tcp, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "syslog accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    async fn handle(&self, tcp: TcpStream, peer: SocketAddr) {
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "syslog TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| ClientIdentity::from_der(der).map_err(|e| format!("{e:#}")));
        let by_cert = match cert {
            None => None,
            Some(cert) => {
                match cert.and_then(|c| self.tokens.authenticate_cert(&c, Some(peer.ip()))) {
                    Ok(principal) => Some(principal),
                    Err(reason) => {
                        // Nothing this sender sends could be attributed: every
                        // message would be dropped, so the connection goes.
                        self.sink.metrics.syslog_rejected.inc();
                        self.sink.refusals.note(crate::refusals::Refusal {
                            channel: "syslog",
                            reason: reason.clone(),
                            ip: peer.ip(),
                            actor: String::new(),
                            tenant: String::new(),
                            status: 401,
                        });
                        tracing::warn!(%peer, %reason, "syslog client certificate refused; closing");
                        return;
                    }
                }
            }
        };
        let mut frames = FramedRead::new(
            tls,
            FrameCodec {
                max: self.sink.max_line_bytes,
            },
        );
        let mut batch = Batch {
            cert: by_cert,
            ..Batch::default()
        };
        let agent_id = format!("syslog:{}", peer.ip());
        loop {
            let next = tokio::time::timeout(PAUSE, frames.next()).await;
            let frame = match next {
                Err(_) => {
                    // The sender paused: make what arrived durable.
                    if let Err(e) = self.flush(&mut batch, &agent_id).await {
                        tracing::warn!(%peer, error = %e, "syslog batch not stored; closing");
                        return;
                    }
                    continue;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::info!(%peer, error = %e, "syslog connection closed");
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // A revoked certificate cuts the sender off at its next message.
            if let Some(cert) = &batch.cert {
                if !self.tokens.is_active(&cert.token_id) {
                    self.sink.metrics.syslog_rejected.inc();
                    self.sink.refusals.note(crate::refusals::Refusal {
                        channel: "syslog",
                        reason: format!("client certificate {} is revoked", cert.token_id),
                        ip: peer.ip(),
                        actor: cert.token_id.clone(),
                        tenant: cert.tenant.clone(),
                        status: 401,
                    });
                    tracing::warn!(%peer, id = %cert.token_id, "syslog client certificate revoked; closing");
                    batch.lines.clear();
                    return;
                }
            }
            let Some((principal, line)) = self.authenticate(&mut batch, &frame, peer) else {
                continue;
            };
            // One record holds one tenant's lines.
            let switch = batch
                .principal
                .as_ref()
                .is_some_and(|p| p.tenant != principal.tenant);
            if (switch || batch.lines.len() >= BATCH_BYTES) && !batch.lines.is_empty() {
                if let Err(e) = self.flush(&mut batch, &agent_id).await {
                    tracing::warn!(%peer, error = %e, "syslog batch not stored; closing");
                    return;
                }
            }
            batch.principal = Some(principal);
            batch.lines.extend_from_slice(&line);
            batch.lines.push(b'\n');
        }
        if let Err(e) = self.flush(&mut batch, &agent_id).await {
            tracing::warn!(%peer, error = %e, "syslog batch not stored");
        }
    }

    /// The message's sender and the message without its token; `None`
    /// (counted) without a valid agent token.
    fn authenticate<'f>(
        &self,
        batch: &mut Batch,
        frame: &'f [u8],
        peer: SocketAddr,
    ) -> Option<(Principal, std::borrow::Cow<'f, [u8]>)> {
        let frame = trim_line_end(frame);
        if frame.is_empty() {
            return None;
        }
        let (token, stripped) = take_token(frame);
        let checked = match token {
            Some(token) if batch.token.as_deref() == Some(token) => batch
                .token_principal
                .clone()
                .unwrap_or_else(|| Err("invalid token".into())),
            Some(token) => {
                let checked = std::str::from_utf8(token)
                    .map_err(|_| "the token is not UTF-8".to_string())
                    .and_then(|t| {
                        self.tokens
                            .check(t, Some(peer.ip()))
                            .map_err(|refusal| refusal.to_string())
                    })
                    .and_then(|p| {
                        if p.role.allows(Role::Agent) {
                            Ok(p)
                        } else {
                            Err(format!("{} may not ship logs", p.role.token_phrase()))
                        }
                    });
                batch.token = Some(token.to_vec());
                batch.token_principal = Some(checked.clone());
                checked
            }
            // No token: the connection's certificate, if any.
            None => batch.cert.clone().ok_or_else(|| {
                "no agent token in [nightowl@32473 token=\"...\"] and no client certificate"
                    .to_string()
            }),
        }
        // Revocation cuts a sender off at its next message.
        .and_then(|p| {
            if self.tokens.is_active(&p.token_id) {
                Ok(p)
            } else {
                Err(format!("token {} is revoked", p.token_id))
            }
        });
        let (principal, refused) = match checked {
            Ok(p) => (Some(p), None),
            Err(reason) => (None, Some(reason)),
        };
        // A token and a certificate naming different tenants: which one
        // is right cannot be told, so the message goes nowhere.
        let clash = match (&principal, &batch.cert) {
            (Some(p), Some(cert)) if p.tenant != cert.tenant => Some(format!(
                "token of tenant {:?} on a connection whose client certificate names tenant {:?}",
                p.tenant, cert.tenant
            )),
            _ => None,
        };
        if principal.is_none() || clash.is_some() {
            self.sink.metrics.syslog_rejected.inc();
            let (actor, tenant) = Principal::ids_of(principal.as_ref());
            self.sink.refusals.note(crate::refusals::Refusal {
                channel: "syslog",
                reason: clash.clone().or(refused).unwrap_or_default(),
                ip: peer.ip(),
                actor,
                tenant,
                status: 401,
            });
            if !batch.warned {
                batch.warned = true;
                match clash {
                    Some(reason) => {
                        tracing::warn!(%peer, %reason, "syslog message dropped (counted in nightowl_syslog_rejected_total)")
                    }
                    None => {
                        tracing::warn!(%peer, "syslog message without a valid agent token in [nightowl@32473 token=\"...\"]; dropped (counted in nightowl_syslog_rejected_total)")
                    }
                }
            }
            return None;
        }
        Some((principal?, stripped))
    }

    async fn flush(&self, batch: &mut Batch, agent_id: &str) -> anyhow::Result<()> {
        let Some(principal) = batch.principal.clone() else {
            return Ok(());
        };
        if batch.lines.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut batch.lines);
        let ack = self
            .sink
            .append(
                &principal.tenant,
                agent_id,
                "syslog",
                "",
                "auto",
                lines,
                Instant::now(),
            )
            .await?;
        ack.await
            .map_err(|_| anyhow::anyhow!("the collector is shutting down"))??;
        Ok(())
    }
}

#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    /// The tenant of `lines`.
    principal: Option<Principal>,
    /// The last token seen and who it was (or why it was refused):
    /// senders repeat one token, so it is hashed once per connection, not
    /// once per message.
    token: Option<Vec<u8>>,
    token_principal: Option<Result<Principal, String>>,
    /// Who the connection's verified client certificate names, if any.
    cert: Option<Principal>,
    warned: bool,
}

fn trim_line_end(frame: &[u8]) -> &[u8] {
    let mut end = frame.len();
    while end > 0 && matches!(frame[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    &frame[..end]
}

/// Finds `[nightowl... token="..."]` in an RFC 5424 message's structured
/// data; returns the token and the message without that element (`-` when
/// it was the only one). Other messages come back unchanged.
pub fn take_token(msg: &[u8]) -> (Option<&[u8]>, std::borrow::Cow<'_, [u8]>) {
    let Some(start) = memchr::memmem::find(msg, b"[nightowl") else {
        return (None, std::borrow::Cow::Borrowed(msg));
    };
    let Some(len) = msg[start..].iter().position(|&b| b == b']') else {
        return (None, std::borrow::Cow::Borrowed(msg));
    };
    let element = &msg[start..start + len + 1];
    let token = memchr::memmem::find(element, b"token=\"").and_then(|at| {
        let value = &element[at + 7..];
        value
            .iter()
            .position(|&b| b == b'"')
            .map(|end| &value[..end])
    });
    let mut out = Vec::with_capacity(msg.len());
    out.extend_from_slice(&msg[..start]);
    let rest = &msg[start + len + 1..];
    // The element stood alone between spaces: the SD becomes `-`.
    if out.ends_with(b" ") && (rest.is_empty() || rest.starts_with(b" ")) {
        out.push(b'-');
    }
    out.extend_from_slice(rest);
    (token, std::borrow::Cow::Owned(out))
}

/// RFC 5425 octet counting, or one line per frame. Public for the fuzz
/// targets (`fuzz/`); the server is its only other user.
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameCodec { max }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        // Some senders end octet-counted frames with a newline too.
        while matches!(buf.first(), Some(b'\n' | b'\r')) {
            buf.advance(1);
        }
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first.is_ascii_digit() {
            let Some(space) = buf.iter().take(11).position(|&b| b == b' ') else {
                if buf.len() > 10 || buf.iter().any(|b| !b.is_ascii_digit()) {
                    return Err(invalid("an octet count must be digits followed by a space"));
                }
                return Ok(None);
            };
            let len: usize = std::str::from_utf8(&buf[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("an octet count must be digits followed by a space"))?;
            if len > self.max {
                return Err(invalid(&format!(
                    "a {len}-byte message exceeds the {}-byte line limit",
                    self.max
                )));
            }
            if buf.len() < space + 1 + len {
                buf.reserve(space + 1 + len - buf.len());
                return Ok(None);
            }
            buf.advance(space + 1);
            return Ok(Some(buf.split_to(len)));
        }
        match memchr::memchr(b'\n', buf) {
            // The limit holds however the line arrived: a long line whose
            // newline came in the same read as its start was let through
            // while the same line over two reads was refused.
            Some(end) if end > self.max => Err(invalid(&format!(
                "a line exceeds the {}-byte line limit",
                self.max
            ))),
            Some(end) => Ok(Some(buf.split_to(end + 1))),
            None if buf.len() > self.max => Err(invalid(&format!(
                "a line exceeds the {}-byte line limit",
                self.max
            ))),
            None => Ok(None),
        }
    }
}

fn invalid(reason: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<String> {
        let mut codec = FrameCodec { max: 1000 };
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).expect("valid") {
            out.push(String::from_utf8_lossy(trim_line_end(&f)).into_owned());
        }
        out
    }

    #[test]
    fn octet_counted_and_newline_frames_mix() {
        let got = frames(b"11 <13>1 - x y\n<14>plain line\n5 <1>ab");
        assert_eq!(got, ["<13>1 - x y", "<14>plain line", "<1>ab"]);
        let mut codec = FrameCodec { max: 10 };
        let mut buf = BytesMut::from(&b"99 <13>1 too long"[..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"12"[..]);
        assert!(codec.decode(&mut buf).expect("partial").is_none());
    }

    #[test]
    fn a_newline_line_over_the_limit_is_refused_in_one_read_as_in_two() {
        // 11 bytes before the newline, limit 10 (the fuzz/syslog_frame
        // invariant: one read or two give the same frames and errors).
        let mut codec = FrameCodec::new(10);
        let mut buf = BytesMut::from(&b"<1>abcdefgh\n"[..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut codec = FrameCodec::new(10);
        let mut buf = BytesMut::from(&b"<1>abcdef"[..]);
        assert!(codec.decode(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(b"gh\n");
        assert!(codec.decode(&mut buf).is_err());
        // Exactly at the limit still passes, `\n` included in the frame.
        let mut buf = BytesMut::from(&b"<1>abcdefg\n"[..]);
        let frame = codec.decode(&mut buf).expect("valid").expect("whole");
        assert_eq!(&frame[..], b"<1>abcdefg\n");
    }

    #[test]
    fn the_token_element_is_taken_out_of_the_message() {
        let msg = br#"<14>1 2026-11-24T10:00:00Z web1 nginx - - [nightowl@32473 token="nwl_a_b"] 1.2.3.4 - - x"#;
        let (token, rest) = take_token(msg);
        assert_eq!(token, Some(&b"nwl_a_b"[..]));
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "<14>1 2026-11-24T10:00:00Z web1 nginx - - - 1.2.3.4 - - x"
        );
        let msg = br#"<14>1 - h a - - [meta x="1"][nightowl@32473 token="t"] hi"#;
        let (token, rest) = take_token(msg);
        assert_eq!(token, Some(&b"t"[..]));
        assert_eq!(
            String::from_utf8_lossy(&rest),
            r#"<14>1 - h a - - [meta x="1"] hi"#
        );
        let (token, rest) = take_token(b"<14>Nov 24 10:00:00 web1 app: no token");
        assert!(token.is_none());
        assert_eq!(&*rest, b"<14>Nov 24 10:00:00 web1 app: no token");
    }
}
