//! The agent: tails files by glob and ships their lines to a collector,
//! exactly once, through an on-disk spool.
//!
//! ```text
//! files ──reader thread──▶ spool (fsynced) ──sender task──▶ collector
//!   ▲        │                  ▲                 │
//!   │        └─ checkpoint ◀────┴──── acks ◀──────┘
//! ```
//!
//! - `tail.rs`: one file's bytes → batches of whole lines; rotation,
//!   truncation, partial and over-long lines.
//! - `identity.rs`: device + inode + fingerprint of the first bytes.
//! - `reader.rs`: the reading thread (globs, inotify, spool appends,
//!   checkpoints, status file).
//! - `redaction.rs`: the collector's redaction rules, applied before the
//!   spool.
//! - `spool.rs`: CRC'd segment files, torn-tail recovery.
//! - `checkpoint.rs`: `agent-state.json`, atomic.
//! - `ship.rs`: connection, failover, backoff, pipelined batches, zstd.
//! - `status.rs`: `status.json` and `nightowl agent status`.
//! - `config.rs`: `agent.toml` and the validated [`Settings`].

mod checkpoint;
pub mod config;
mod identity;
mod reader;
mod redaction;
mod resume;
mod shared;
mod ship;
mod spool;
pub mod status;
mod tail;

use std::fs::OpenOptions;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

pub use config::{AgentConfig, Settings};

use checkpoint::Checkpoint;
use shared::{Inner, Shared};
use spool::Spool;

/// Runs the agent until `--once` is done, a signal, or a fatal error
/// (a rejected token, an unreadable spool).
pub async fn run(settings: Settings) -> Result<()> {
    crate::private_umask();
    settings.validate()?;
    let settings = Arc::new(settings);
    let dir = &settings.state_dir;
    // Spooled lines are as sensitive as the logs: owner only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {}", dir.display()))?;
    let _lock = lock_state_dir(dir)?;
    // Checked before anything is read, so a bad CA fails at once.
    settings.tls_client()?;
    raise_fd_limit();

    let mut checkpoint = Checkpoint::load(dir)?;
    let spool_dir = reader::spool_dir(dir);
    let segment_bytes = (settings.spool_limit_bytes / 32).clamp(64 * 1024, 4 * 1024 * 1024);
    let recovered = Spool::open(
        &spool_dir,
        segment_bytes,
        settings.spool_key.clone(),
        checkpoint.spool_acked,
    )?;
    reader::reconcile(&mut checkpoint, &recovered.sources);
    let spool = recovered.spool;
    let acked = checkpoint.spool_acked.clamp(spool.start(), spool.end());
    // A new spool's segment header is not a record waiting to be sent.
    let unacked = spool.end().saturating_sub(acked.max(spool.first_record()));
    tracing::info!(
        agent_id = %checkpoint.agent_id,
        state_dir = %dir.display(),
        unacked_spool_bytes = unacked,
        torn_bytes = recovered.torn_bytes,
        spool_encrypted = settings.spool_key.is_some(),
        plain_spool_records = recovered.plain_records,
        encrypted_spool_records = recovered.sealed_records,
        "agent starting"
    );
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(64);
    let inner = Inner {
        durable_end: spool.end(),
        acked,
        max_line_bytes: checkpoint
            .max_line_bytes
            .unwrap_or(crate::transport::protocol::DEFAULT_MAX_LINE_BYTES),
        ..Inner::default()
    };
    let rules = redaction::Rules::load(dir, settings.redact)?;
    let shared = Arc::new(Shared::new(inner, wake_tx, rules));
    let agent_id = checkpoint.agent_id.clone();

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader = reader::Reader::new(
        Arc::clone(&settings),
        Arc::clone(&shared),
        checkpoint,
        spool,
    );
    let reader_thread = std::thread::Builder::new()
        .name("nightowl-reader".into())
        .spawn(move || {
            let result = reader.run(wake_rx);
            let _ = done_tx.send(());
            result
        })
        .context("starting the reader thread")?;
    // Ready: the state is loaded, the spool recovered, files are being read.
    crate::systemd::notify_ready();

    let shipping = ship::run(
        Arc::clone(&settings),
        Arc::clone(&shared),
        agent_id,
        spool_dir,
    );
    let outcome = tokio::select! {
        result = shipping => result,
        _ = done_rx => Err(anyhow::anyhow!("the reader stopped")),
        _ = shutdown_signal() => {
            tracing::info!("signal received; saving the checkpoint");
            Ok(())
        }
    };
    shared.shutdown();
    let reader_result = tokio::task::spawn_blocking(move || reader_thread.join())
        .await
        .context("joining the reader thread")?;
    let reader_result = match reader_result {
        Ok(r) => r,
        Err(_) => bail!("the reader thread panicked"),
    };
    // The reader's own error explains a "reader stopped" best.
    let result = match (outcome, reader_result) {
        (_, Err(e)) => Err(e),
        (outcome, Ok(())) => outcome,
    };
    if result.is_ok() && settings.once {
        print_once_summary(&shared);
    }
    result
}

/// `--once`: what this run shipped, for the person who ran it.
fn print_once_summary(shared: &Shared) {
    use std::io::Write;
    let inner = shared.lock();
    let c = &inner.counters;
    let to = inner
        .connection
        .collector
        .as_deref()
        .map(|addr| format!(" to {addr}"))
        .unwrap_or_default();
    // stdout may be a closed pipe: the summary is not worth an error.
    let _ = writeln!(
        std::io::stdout(),
        "shipped {} ({} bytes) from {}{to}, all acknowledged ({}, {} already there)",
        counted(c.lines_acked, "line"),
        c.bytes_acked,
        counted(inner.source_acked.len() as u64, "file"),
        counted(c.batches_acked, "batch"),
        c.batches_duplicate
    );
    if c.resend_bytes > 0 || c.resend_lost_bytes > 0 {
        let _ = writeln!(
            std::io::stdout(),
            "the collector had lost lines it acknowledged: {} bytes sent again from the files, \
             {} bytes in {} could not be (LOST, see the warnings)",
            c.resend_bytes,
            c.resend_lost_bytes,
            counted(c.resend_lost_ranges, "range")
        );
    }
}

/// `1 file`, `2 files`, `1 batch`, `3 batches`: the summary is read by
/// people.
fn counted(n: u64, noun: &str) -> String {
    match (n, noun.ends_with("ch")) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// `nightowl agent rewind`: forgets where every file stands and drops the
/// spool, keeping the agent id. The next run reads every file again from
/// its start under the same source ids, and the collector drops what it
/// already holds by its per-source offsets. A collector restored from a
/// backup needs none of this (its store id comes back with it, and the
/// agent resends what that store lost, `resume.rs`); this is for a
/// collector that lost lines under a new store id, or state that cannot
/// place them. The agent must be stopped (the state dir's lock).
pub fn rewind(dir: &Path) -> Result<String> {
    if !dir.join(checkpoint::FILE_NAME).exists() {
        bail!("no agent state in {} (nothing to rewind)", dir.display());
    }
    let _lock = lock_state_dir(dir)?;
    let mut checkpoint = Checkpoint::load(dir)?;
    let files = checkpoint.files.len();
    checkpoint.files.clear();
    checkpoint.spool_acked = 0;
    let spool = reader::spool_dir(dir);
    if spool.exists() {
        std::fs::remove_dir_all(&spool)
            .with_context(|| format!("removing the spool {}", spool.display()))?;
    }
    checkpoint.save(dir)?;
    Ok(format!(
        "agent {} rewound: {files} files will be read again from their start; the collector drops the lines it already has",
        checkpoint.agent_id
    ))
}

/// One agent per state dir: two would spool and checkpoint over each other.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("agent.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if crate::fsutil::lock_exclusive(&file).is_err() {
        bail!(
            "another agent is running with state dir {} (it holds {})",
            dir.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Every tailed file holds a descriptor (so rotation cannot cut it off):
/// raise the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn the_summary_counts_in_words() {
        assert_eq!(counted(1, "file"), "1 file");
        assert_eq!(counted(0, "file"), "0 files");
        assert_eq!(counted(120, "line"), "120 lines");
        assert_eq!(counted(1, "batch"), "1 batch");
        assert_eq!(counted(3, "batch"), "3 batches");
    }
}
