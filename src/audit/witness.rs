//! Witnesses: copies of the signed checkpoints kept off the machine, so
//! that someone who can rewrite `DATA_DIR/audit/` (log and checkpoints
//! together) still cannot hide a cut. Each new checkpoint is sent to every
//! configured witness: an HTTPS webhook (the signed JSON line as the body),
//! a syslog server (RFC 5424, facility `log audit`, over UDP or TCP), or a
//! file on another file system. `nightowl audit verify --witness FILE`
//! reads back what a witness stored (webhook bodies or syslog lines, one
//! per line). A witness that is down is retried with backoff, always with
//! the newest checkpoint: it supersedes the ones before.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::checkpoint::Signed;
use crate::http_client::HttpTarget;

/// `[audit]`: the audit key and the checkpoints' witnesses (docs/audit.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The audit key (HMAC of the chain, Ed25519 of the checkpoints), e.g.
    /// `key_file = "/etc/nightowl/audit.key"`. Keep it outside the data
    /// dir. Default: `$NIGHTOWL_AUDIT_KEY_FILE`, else
    /// `$CREDENTIALS_DIRECTORY/audit.key` (systemd `LoadCredential=`),
    /// else `DATA_DIR-keys/audit.key`, created at first start.
    pub key_file: Option<PathBuf>,
    /// Seconds between signed checkpoints of the chain head (only when
    /// entries were added since the last one); one is also made at start
    /// and at shutdown. Default 60.
    pub checkpoint_interval_secs: u64,
    /// An HTTPS (or http) URL each checkpoint is POSTed to as JSON, e.g.
    /// `witness_webhook = "https://witness.example.com/nightowl"`.
    pub witness_webhook: Option<String>,
    /// PEM CA for the webhook's certificate (default: the public roots).
    pub witness_webhook_ca_file: Option<PathBuf>,
    /// A syslog server, `udp://HOST:PORT` or `tcp://HOST:PORT`, e.g.
    /// `witness_syslog = "udp://10.0.0.5:514"`.
    pub witness_syslog: Option<String>,
    /// A file each checkpoint is appended to, e.g. on another disk or an
    /// NFS mount: `witness_file = "/mnt/audit-witness/nightowl.log"`. It is
    /// also checked at start.
    pub witness_file: Option<PathBuf>,
    /// `--audit-new-chain` (a flag, not a config key).
    #[serde(skip)]
    pub new_chain: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: None,
            checkpoint_interval_secs: 60,
            witness_webhook: None,
            witness_webhook_ca_file: None,
            witness_syslog: None,
            witness_file: None,
            new_chain: false,
        }
    }
}

impl AuditConfig {
    /// What [`super::AuditLog::open`] needs; the key file falls back to
    /// `$NIGHTOWL_AUDIT_KEY_FILE` (empty counts as unset).
    pub fn options(&self) -> super::AuditOptions {
        let key_file = self.key_file.clone().or_else(|| {
            std::env::var_os("NIGHTOWL_AUDIT_KEY_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        super::AuditOptions {
            key_file,
            witness_files: self.witness_file.iter().cloned().collect(),
            new_chain: self.new_chain,
        }
    }
}

enum Syslog {
    Udp(String),
    Tcp(String),
}

pub struct Witnesses {
    webhook: Option<HttpTarget>,
    syslog: Option<Syslog>,
    file: Option<PathBuf>,
    host: String,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Witnesses {
    /// The configured witnesses (`None` without any). A malformed one is
    /// bad input, named.
    pub fn from_config(config: &AuditConfig) -> Result<Option<Witnesses>> {
        let webhook = match &config.witness_webhook {
            Some(url) => Some(HttpTarget::new(
                url,
                config.witness_webhook_ca_file.as_deref(),
                TIMEOUT,
                "[audit] witness_webhook",
            )?),
            None => None,
        };
        let syslog = match config.witness_syslog.as_deref() {
            Some(target) => Some(match target.split_once("://") {
                Some(("udp", addr)) if !addr.is_empty() => Syslog::Udp(addr.to_string()),
                Some(("tcp", addr)) if !addr.is_empty() => Syslog::Tcp(addr.to_string()),
                _ => bail!(
                    "[audit] witness_syslog = {target:?}: must be udp://HOST:PORT or tcp://HOST:PORT"
                ),
            }),
            None => None,
        };
        if webhook.is_none() && syslog.is_none() && config.witness_file.is_none() {
            return Ok(None);
        }
        let host = crate::fsutil::hostname()
            .filter(|h| !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Ok(Some(Witnesses {
            webhook,
            syslog,
            file: config.witness_file.clone(),
            host,
        }))
    }

    /// Sends `signed` to every witness; the errors of those that failed.
    pub async fn deliver(&self, signed: &Signed) -> Vec<String> {
        let mut errors = Vec::new();
        let line = signed.line.trim_end();
        if let Some(target) = &self.webhook {
            match target.post(&[], Bytes::from(line.to_string())).await {
                Ok(response) if response.status.is_success() => {}
                Ok(response) => errors.push(format!(
                    "witness webhook {}: answered {}",
                    target.redacted(),
                    response.status
                )),
                Err(e) => errors.push(format!("witness webhook: {e}")),
            }
        }
        if let Some(syslog) = &self.syslog {
            // RFC 5424, facility 13 (log audit), severity 6 (info).
            let message = format!(
                "<110>1 {} {} nightowl {} audit-checkpoint - {line}",
                signed.checkpoint.time,
                self.host,
                std::process::id()
            );
            let sent = match syslog {
                Syslog::Udp(addr) => tokio::time::timeout(TIMEOUT, send_udp(addr, &message)).await,
                Syslog::Tcp(addr) => tokio::time::timeout(TIMEOUT, send_tcp(addr, &message)).await,
            };
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("witness syslog: {e:#}")),
                Err(_) => errors.push(format!("witness syslog: no answer within {TIMEOUT:?}")),
            }
        }
        if let Some(path) = &self.file {
            let (path, text) = (path.clone(), signed.line.clone());
            let written = tokio::task::spawn_blocking(move || append_line(&path, &text)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("witness file: {e:#}")),
                Err(e) => errors.push(format!("witness file: {e}")),
            }
        }
        errors
    }

    /// Delivers each new checkpoint until `checkpoints` closes; a failed
    /// delivery is retried (1 s doubling to 60 s) with the newest one.
    pub fn spawn(
        self: Arc<Self>,
        mut checkpoints: tokio::sync::watch::Receiver<Option<Signed>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            let mut retry = false;
            loop {
                if !retry && checkpoints.changed().await.is_err() {
                    return;
                }
                let Some(signed) = checkpoints.borrow_and_update().clone() else {
                    retry = false;
                    continue;
                };
                let errors = self.deliver(&signed).await;
                if errors.is_empty() {
                    backoff = Duration::from_secs(1);
                    retry = false;
                    continue;
                }
                tracing::warn!(checkpoint = signed.checkpoint.checkpoint, errors = %errors.join("; "), retry_in = ?backoff, "audit checkpoint not delivered to every witness");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    changed = checkpoints.changed() => if changed.is_err() { return },
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                retry = true;
            }
        })
    }
}

async fn send_udp(addr: &str, message: &str) -> Result<()> {
    let target = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let local = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .context("binding a UDP socket")?;
    socket
        .send_to(message.as_bytes(), target)
        .await
        .with_context(|| format!("sending to {addr}"))?;
    Ok(())
}

/// Octet-counted framing (RFC 6587), which rsyslog and syslog-ng accept.
async fn send_tcp(addr: &str, message: &str) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let frame = format!("{} {message}", message.len());
    stream
        .write_all(frame.as_bytes())
        .await
        .with_context(|| format!("sending to {addr}"))?;
    stream.shutdown().await.ok();
    Ok(())
}

fn append_line(path: &std::path::Path, line: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_data())
        .with_context(|| format!("appending to {}", path.display()))
}

/// The periodic checkpoints and the witness deliveries of a running
/// collector or indexer.
pub struct Running {
    log: Arc<super::AuditLog>,
    witnesses: Option<Arc<Witnesses>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts checkpointing `log` every `checkpoint_interval_secs` and
/// delivering each checkpoint (the start one included) to the witnesses.
pub fn start(log: &Arc<super::AuditLog>, config: &AuditConfig) -> Result<Running> {
    let witnesses = Witnesses::from_config(config)
        .map_err(|e| crate::error::usage(format!("{e:#}")))?
        .map(Arc::new);
    let mut tasks = Vec::new();
    if let Some(witnesses) = &witnesses {
        let mut checkpoints = log.subscribe();
        // The checkpoint made at open is delivered too.
        checkpoints.mark_changed();
        tasks.push(Arc::clone(witnesses).spawn(checkpoints));
    }
    let every = Duration::from_secs(config.checkpoint_interval_secs.max(1));
    let periodic = Arc::clone(log);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let log = Arc::clone(&periodic);
            match tokio::task::spawn_blocking(move || log.checkpoint()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "audit checkpoint failed")
                }
                Err(e) => tracing::error!(error = %e, "audit checkpoint task failed"),
            }
        }
    }));
    Ok(Running {
        log: Arc::clone(log),
        witnesses,
        tasks,
    })
}

impl Running {
    /// At shutdown, after the last entry: a final checkpoint, delivered to
    /// the witnesses within a bounded wait.
    pub async fn finish(self) {
        for task in &self.tasks {
            task.abort();
        }
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || log.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "final audit checkpoint failed")
            }
            Err(e) => tracing::error!(error = %e, "final audit checkpoint task failed"),
        }
        let latest = self.log.subscribe().borrow().clone();
        if let (Some(witnesses), Some(signed)) = (&self.witnesses, latest) {
            let errors = witnesses.deliver(&signed).await;
            if !errors.is_empty() {
                tracing::warn!(checkpoint = signed.checkpoint.checkpoint, errors = %errors.join("; "), "the final audit checkpoint did not reach every witness");
            }
        }
    }
}
