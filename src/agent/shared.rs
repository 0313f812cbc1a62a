//! What the reading thread and the sending task share: spool positions, the
//! collector's limits, the connection's state, counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub batches_duplicate: u64,
    /// Lines and their bytes the collector acknowledged (resends count once).
    pub lines_acked: u64,
    pub bytes_acked: u64,
    /// Line bytes sent, before compression.
    pub bytes_sent: u64,
    /// Batch payload bytes on the wire (after compression).
    pub payload_bytes_sent: u64,
    pub connections: u64,
    pub lines_truncated: u64,
    pub lines_skipped: u64,
    pub partial_lines_flushed: u64,
    /// Secrets replaced before the spool (agent-side redaction).
    pub secrets_redacted: u64,
    /// Stream bytes sent again from the files because the collector's
    /// store no longer held what it had acknowledged (restored from a
    /// backup), and bytes (in ranges) the files could not give again:
    /// lost, each range logged as a warning.
    pub resend_bytes: u64,
    pub resend_lost_bytes: u64,
    pub resend_lost_ranges: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connection {
    /// `connecting`, `connected`, `backoff`.
    pub state: String,
    pub collector: Option<String>,
    pub compression: bool,
    pub last_error: Option<String>,
    /// When `last_error` happened (unix seconds): an error from before the
    /// current connection is history, not the present state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_unix: Option<i64>,
    pub since_unix: i64,
}

#[derive(Debug, Default)]
pub struct Inner {
    /// Spool position below which every record is fsynced.
    pub durable_end: u64,
    /// Spool position below which the collector acknowledged everything.
    pub acked: u64,
    /// Source id → stream offset acknowledged.
    pub source_acked: HashMap<String, u64>,
    /// Source id → collector store id → stream offset it acknowledged.
    pub store_acked: HashMap<String, HashMap<String, u64>>,
    /// The collector's line limit (the last one announced).
    pub max_line_bytes: usize,
    pub connection: Connection,
    /// `--once`: the spool end that covers everything present at start.
    pub reader_done: Option<u64>,
    pub counters: Counters,
}

/// The sender asks the reader which ranges a collector's store lost
/// (`resume.rs`); the reader answers with the gaps to send first.
pub struct ResumeRequest {
    pub collector: String,
    pub resume: crate::transport::client::Resume,
    pub reply: tokio::sync::oneshot::Sender<Vec<super::resume::Gap>>,
}

pub struct Shared {
    inner: Mutex<Inner>,
    resume: Mutex<Option<ResumeRequest>>,
    /// Sender ← reader: new durable records (or `reader_done`).
    pub spooled: Notify,
    /// Reader ← anyone: something changed (acks, file events, shutdown).
    wake: SyncSender<()>,
    shutdown: AtomicBool,
    /// What lines are redacted with before the spool; the sender updates
    /// it from each collector's welcome.
    pub rules: super::redaction::Rules,
}

impl Shared {
    pub fn new(inner: Inner, wake: SyncSender<()>, rules: super::redaction::Rules) -> Shared {
        Shared {
            inner: Mutex::new(inner),
            resume: Mutex::new(None),
            spooled: Notify::new(),
            wake,
            shutdown: AtomicBool::new(false),
            rules,
        }
    }

    /// A poisoned lock only means another thread panicked mid-update of
    /// plain numbers; they are still the best information there is.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the reader a resume question and wakes it.
    pub fn ask_resume(&self, request: ResumeRequest) {
        *self.resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(request);
        self.wake_reader();
    }

    pub fn take_resume(&self) -> Option<ResumeRequest> {
        self.resume.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn wake_reader(&self) {
        // Full means a wake-up is already pending: nothing is lost.
        let _ = self.wake.try_send(());
    }

    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.wake_reader();
        self.spooled.notify_one();
    }

    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub fn set_connection(&self, state: &str, collector: Option<&str>, error: Option<String>) {
        let mut inner = self.lock();
        let c = &mut inner.connection;
        if c.state != state || c.collector.as_deref() != collector {
            c.since_unix = crate::time::now_nanos() / 1_000_000_000;
        }
        c.state = state.to_string();
        c.collector = collector.map(str::to_string);
        if error.is_some() {
            c.last_error = error;
            c.last_error_unix = Some(crate::time::now_nanos() / 1_000_000_000);
        }
    }
}
