//! The agent side of a connection, shared by `nightowl agent` and
//! `nightowl bench`.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, FramedWrite};

use std::collections::HashMap;

use super::protocol::{
    Batch, Message, ProtocolCodec, ProtocolError, CAP_RESUME, DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("collector {addr} rejected the connection: {reason}")]
    Rejected { addr: String, reason: String },
    #[error("collector {addr} closed the connection")]
    Closed { addr: String },
    #[error("protocol error with {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("invalid collector address {0:?}")]
    Address(String),
}

impl ClientError {
    /// Rejections of the credential or version will not heal by retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ClientError::Rejected { reason, .. }
            if reason.starts_with("unauthorized") || reason.starts_with("unsupported_version"))
    }
}

type Stream = TlsStream<TcpStream>;

pub struct Connection {
    addr: String,
    reader: FramedRead<ReadHalf<Stream>, ProtocolCodec>,
    writer: FramedWrite<WriteHalf<Stream>, ProtocolCodec>,
    pub tenant: String,
    pub max_frame_bytes: usize,
    pub max_line_bytes: usize,
    /// Capability bits the collector accepted (`CAP_*`); 0 if none were asked.
    pub capabilities: u32,
    /// The collector's `[redact]` rules (JSON), when `CAP_REDACT` was accepted.
    pub redact_rules: Option<String>,
    /// What the collector holds of this agent, when `CAP_RESUME` was accepted.
    pub resume: Option<Resume>,
}

/// The collector's store and how far it durably holds each of this
/// agent's sources (a source not named: nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub store: String,
    pub sources: HashMap<String, u64>,
}

/// What the collector said about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub acked_offset: u64,
    pub duplicate: bool,
}

impl Connection {
    pub async fn connect(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        token: &str,
        agent_id: &str,
    ) -> Result<Connection, ClientError> {
        Self::connect_with(addr, tls, token, agent_id, None).await
    }

    /// Like [`Connection::connect`], also asking for `capabilities`.
    pub async fn connect_with(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        token: &str,
        agent_id: &str,
        capabilities: Option<u32>,
    ) -> Result<Connection, ClientError> {
        let server_name =
            super::tls::server_name(addr).map_err(|_| ClientError::Address(addr.to_string()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                addr: addr.to_string(),
                source,
            })?;
        let (read, write) = tokio::io::split(stream);
        let mut conn = Connection {
            addr: addr.to_string(),
            reader: FramedRead::new(read, ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES)),
            writer: FramedWrite::new(write, ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES)),
            tenant: String::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_line_bytes: 0,
            capabilities: 0,
            redact_rules: None,
            resume: None,
        };
        let hello = match capabilities {
            Some(capabilities) => Message::HelloCaps {
                version: PROTOCOL_VERSION,
                token: token.to_string(),
                agent_id: agent_id.to_string(),
                capabilities,
            },
            None => Message::Hello {
                version: PROTOCOL_VERSION,
                token: token.to_string(),
                agent_id: agent_id.to_string(),
            },
        };
        // In TLS 1.3 the collector judges the client certificate after the
        // client's side of the handshake is done: a refusal arrives as an
        // alert on the first read (or write).
        conn.writer
            .send(hello)
            .await
            .map_err(|e| refusal(addr, e))?;
        let welcome = match conn.reader.next().await {
            Some(Ok(Message::Error { code, message })) => {
                return Err(ClientError::Rejected {
                    addr: addr.to_string(),
                    reason: Message::describe_error(code, &message),
                })
            }
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(refusal(addr, e)),
            None => {
                return Err(ClientError::Closed {
                    addr: addr.to_string(),
                })
            }
        };
        // A plain welcome accepts no capability: what the connection
        // starts with.
        let (tenant, max_frame_bytes, max_line_bytes, capabilities, redact_rules) = match welcome {
            Message::Welcome {
                tenant,
                max_frame_bytes,
                max_line_bytes,
                ..
            } => (tenant, max_frame_bytes, max_line_bytes, 0, None),
            Message::WelcomeCaps {
                tenant,
                max_frame_bytes,
                max_line_bytes,
                capabilities,
                redact_rules,
                ..
            } => (
                tenant,
                max_frame_bytes,
                max_line_bytes,
                capabilities,
                redact_rules,
            ),
            other => return Err(conn.protocol(format!("expected welcome, got {other:?}"))),
        };
        conn.tenant = tenant;
        conn.max_frame_bytes = max_frame_bytes as usize;
        conn.max_line_bytes = max_line_bytes as usize;
        conn.capabilities = capabilities;
        conn.redact_rules = redact_rules;
        if capabilities & CAP_RESUME != 0 {
            conn.resume = Some(conn.read_resume().await?);
        }
        Ok(conn)
    }

    /// The `Resume` frames that follow a welcome accepting `CAP_RESUME`.
    async fn read_resume(&mut self) -> Result<Resume, ClientError> {
        let mut resume = Resume::default();
        loop {
            match self.next_message().await? {
                Message::Resume {
                    store,
                    sources,
                    more,
                } => {
                    if !resume.store.is_empty() && resume.store != store {
                        return Err(self.protocol(format!(
                            "resume frames name two stores ({} and {store})",
                            resume.store
                        )));
                    }
                    resume.store = store;
                    resume.sources.extend(sources);
                    if !more {
                        return Ok(resume);
                    }
                }
                other => {
                    return Err(self.protocol(format!("expected resume, got {other:?}")));
                }
            }
        }
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Sends any message (tests use this to send deliberately bad frames).
    pub async fn send(&mut self, msg: Message) -> Result<(), ClientError> {
        self.writer
            .send(msg)
            .await
            .map_err(protocol_error(&self.addr))
    }

    /// Raw access to the write half, for tests that send bytes outside the codec.
    pub fn get_mut_stream(&mut self) -> &mut WriteHalf<Stream> {
        self.writer.get_mut()
    }

    async fn next_message(&mut self) -> Result<Message, ClientError> {
        next_message(&self.addr, &mut self.reader).await
    }

    /// Waits for the next ack; an error frame becomes [`ClientError::Rejected`].
    pub async fn recv_ack(&mut self) -> Result<Ack, ClientError> {
        let msg = self.next_message().await?;
        expect_ack(&self.addr, msg)
    }

    /// Splits into halves so acks can be read while batches are written.
    pub fn split(self) -> (AckReader, BatchWriter) {
        (
            AckReader {
                addr: self.addr.clone(),
                reader: self.reader,
            },
            BatchWriter {
                addr: self.addr,
                writer: self.writer,
            },
        )
    }
}

pub struct AckReader {
    addr: String,
    reader: FramedRead<ReadHalf<Stream>, ProtocolCodec>,
}

impl AckReader {
    pub async fn recv_ack(&mut self) -> Result<Ack, ClientError> {
        let msg = next_message(&self.addr, &mut self.reader).await?;
        expect_ack(&self.addr, msg)
    }
}

/// The next frame from the collector; an error frame becomes
/// [`ClientError::Rejected`] with the collector's reason.
async fn next_message(
    addr: &str,
    reader: &mut FramedRead<ReadHalf<Stream>, ProtocolCodec>,
) -> Result<Message, ClientError> {
    match reader.next().await {
        Some(Ok(Message::Error { code, message })) => Err(ClientError::Rejected {
            addr: addr.to_string(),
            reason: Message::describe_error(code, &message),
        }),
        Some(Ok(msg)) => Ok(msg),
        Some(Err(e)) => Err(protocol_error(addr)(e)),
        None => Err(ClientError::Closed {
            addr: addr.to_string(),
        }),
    }
}

fn expect_ack(addr: &str, msg: Message) -> Result<Ack, ClientError> {
    match msg {
        Message::Ack {
            seq,
            acked_offset,
            duplicate,
        } => Ok(Ack {
            seq,
            acked_offset,
            duplicate,
        }),
        other => Err(ClientError::Protocol {
            addr: addr.to_string(),
            reason: format!("expected ack, got {other:?}"),
        }),
    }
}

pub struct BatchWriter {
    addr: String,
    writer: FramedWrite<WriteHalf<Stream>, ProtocolCodec>,
}

impl BatchWriter {
    pub async fn feed(&mut self, batch: Batch) -> Result<(), ClientError> {
        self.feed_message(Message::Batch(batch)).await
    }

    /// Queues any message (a `BatchZstd`, for one) without flushing.
    pub async fn feed_message(&mut self, msg: Message) -> Result<(), ClientError> {
        self.writer
            .feed(msg)
            .await
            .map_err(protocol_error(&self.addr))
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.writer
            .flush()
            .await
            .map_err(protocol_error(&self.addr))
    }
}

/// A TLS alert refusing the client's certificate (or its absence) becomes
/// an `unauthorized` rejection, which retrying will not heal; any other
/// error is a protocol error as usual.
fn refusal(addr: &str, error: ProtocolError) -> ClientError {
    let alert = match &error {
        ProtocolError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    let why = match alert {
        Some(rustls::Error::AlertReceived(alert)) => refusal_reason(*alert).map(|why| (why, alert)),
        _ => None,
    };
    match why {
        Some((why, alert)) => ClientError::Rejected {
            addr: addr.to_string(),
            reason: format!("unauthorized: {why} (TLS alert {alert:?})"),
        },
        None => protocol_error(addr)(error),
    }
}

/// What a fatal alert from the collector says about the client's
/// credentials; `None` for alerts that are not about them.
fn refusal_reason(alert: rustls::AlertDescription) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    const UNTRUSTED: &str = "the client certificate was not signed by a CA the collector trusts";
    Some(match alert {
        A::CertificateRequired => "a client certificate is required",
        A::BadCertificate => "the client certificate is bad",
        A::UnknownCA => UNTRUSTED,
        // A CA of the same name but another key (two collectors' dev
        // CAs): the chain's signature fails.
        A::DecryptError => UNTRUSTED,
        A::CertificateExpired => "the client certificate has expired",
        A::CertificateRevoked => "the client certificate is revoked",
        A::CertificateUnknown => "the client certificate was refused",
        A::UnsupportedCertificate => "the client certificate is unsupported",
        A::AccessDenied => "access denied",
        _ => return None,
    })
}

/// Maps a codec error on the connection to `addr` into a [`ClientError`].
fn protocol_error(addr: &str) -> impl FnOnce(ProtocolError) -> ClientError + '_ {
    move |e| ClientError::Protocol {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}
