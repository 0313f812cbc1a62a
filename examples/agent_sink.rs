//! A collector stand-in that acknowledges every batch without storing it,
//! to measure the agent alone (file → TLS → ack) without the collector's
//! WAL and indexing in the way. Not for anything but benchmarks: it accepts
//! any token and keeps nothing.
//!
//! ```sh
//! cargo run --release --example agent_sink -- /tmp/sink 127.0.0.1:7499
//! # then: nightowl agent --collector 127.0.0.1:7499 --ca /tmp/sink/ca.pem ...
//! # SINK_VERBOSE=1 prints each batch's arrival time (µs since the epoch).
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};

use nightowl::transport::protocol::{
    decompress_lines, Message, ProtocolCodec, CAP_REDACT, CAP_ZSTD, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use nightowl::transport::tls::{self, Versions};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "agent-sink".into()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7499".into());
    let (paths, _) = tls::ensure_dev_material(&dir)?;
    let config = tls::server_config(&paths.cert, &paths.key, Versions::Tls13Only, &[])?;
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("agent_sink: CA {} listening on {addr}", paths.ca.display());
    loop {
        let (tcp, peer) = listener.accept().await.context("accept")?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match serve(acceptor, tcp).await {
                Ok((batches, bytes)) => {
                    println!("agent_sink: {peer}: {batches} batches, {bytes} line bytes")
                }
                Err(e) => eprintln!("agent_sink: {peer}: {e:#}"),
            }
        });
    }
}

async fn serve(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream) -> Result<(u64, u64)> {
    let tls = acceptor.accept(tcp).await.context("TLS handshake")?;
    let (read, write) = tokio::io::split(tls);
    let mut reader = FramedRead::new(read, ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let mut writer = FramedWrite::new(write, ProtocolCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let caps = match reader.next().await {
        Some(Ok(Message::Hello { .. })) => None,
        Some(Ok(Message::HelloCaps { capabilities, .. })) => {
            Some(capabilities & (CAP_ZSTD | CAP_REDACT))
        }
        other => anyhow::bail!("expected a hello, got {other:?}"),
    };
    let (max_frame_bytes, max_line_bytes) = (
        DEFAULT_MAX_FRAME_BYTES as u32,
        DEFAULT_MAX_LINE_BYTES as u32,
    );
    let welcome = match caps {
        Some(capabilities) => Message::WelcomeCaps {
            version: PROTOCOL_VERSION,
            tenant: "sink".into(),
            max_frame_bytes,
            max_line_bytes,
            capabilities,
            // The agent redacts with the built-in rules, as against a
            // collector with a default `[redact]`.
            redact_rules: (capabilities & CAP_REDACT != 0).then(|| {
                serde_json::to_string(&nightowl::redact::RedactConfig::default())
                    .unwrap_or_default()
            }),
        },
        None => Message::Welcome {
            version: PROTOCOL_VERSION,
            tenant: "sink".into(),
            max_frame_bytes,
            max_line_bytes,
        },
    };
    writer.send(welcome).await?;
    let (mut batches, mut bytes) = (0u64, 0u64);
    while let Some(frame) = reader.next().await {
        let (batch, len) = match frame {
            Ok(Message::Batch(b)) => {
                let len = b.lines.len() as u64;
                (b, len)
            }
            Ok(Message::BatchZstd(b)) => {
                let len = decompress_lines(&b.lines, 4 * DEFAULT_MAX_FRAME_BYTES)?.len() as u64;
                (b, len)
            }
            // Acked in source bytes, as the collector does.
            Ok(Message::BatchResized { batch, resize, .. }) => (batch, resize.source_len),
            Ok(other) => anyhow::bail!("unexpected {other:?}"),
            Err(_) => break,
        };
        batches += 1;
        bytes += len;
        if std::env::var_os("SINK_VERBOSE").is_some() {
            // Arrival times, to measure a line's latency from its write.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            println!("agent_sink: batch {} ({len} bytes) at {now} us", batch.seq);
        }
        writer
            .send(Message::Ack {
                seq: batch.seq,
                acked_offset: batch.first_offset + len,
                duplicate: false,
            })
            .await?;
    }
    Ok((batches, bytes))
}
