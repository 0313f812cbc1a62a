//! Refused ingest in the audit log, aggregated.
//!
//! An agent handshake with a bad token, a syslog message without a valid
//! one, a `_bulk` request with no token or a viewer's: each is an attempt
//! to write into a tenant, and the audit log keeps it. Ingest comes at line
//! rate, so a flood must not become a flood of entries: per window of
//! [`WINDOW`], the first refusal of each (channel, reason, address,
//! credential) is written at once (`"refused":1`), the others are counted
//! and written as one entry when the window closes (`"refused":N`). At most
//! [`MAX_KEYS`] distinct keys per window get entries of their own; beyond
//! that, refusals are counted per channel into one entry with `ip` `*`.
//! So a window adds at most `2 * MAX_KEYS + channels` entries, whatever
//! comes in.
//!
//! Entries: `method` `REFUSED`, `path` the channel (`agent`, `syslog`,
//! `/_bulk`, ...), `status` 401/403/413/429, and `body`
//! `{"refused":N,"window_secs":60,"reason":"…"}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::{AuditLog, Record};

/// Refusals of one key within this long share one counted entry.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Distinct keys per window that get entries of their own.
pub const MAX_KEYS: usize = 256;
/// A reason longer than this is cut (it comes partly from the client).
const MAX_REASON: usize = 200;

/// One refused attempt.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `agent`, `syslog`, or the HTTP path (`/_bulk`, `/api/v1/ingest`).
    pub channel: &'static str,
    pub reason: String,
    pub ip: IpAddr,
    /// The token id, when the credential was valid but not allowed.
    pub actor: String,
    pub tenant: String,
    pub status: u16,
}

type Key = (&'static str, String, IpAddr, String, String, u16);

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    /// Per key, refusals after the first (which is written at once).
    extra: HashMap<Key, u64>,
    /// Per channel and status, refusals beyond `MAX_KEYS` keys.
    overflow: HashMap<(&'static str, u16), u64>,
}

pub struct Refusals {
    audit: Arc<AuditLog>,
    window: Mutex<Window>,
}

impl Refusals {
    pub fn new(audit: Arc<AuditLog>) -> Arc<Refusals> {
        Arc::new(Refusals {
            audit,
            window: Mutex::new(Window::default()),
        })
    }

    /// Counts a refusal; the first of its key in this window is written
    /// (on the blocking pool when called from the runtime).
    pub fn note(&self, mut refusal: Refusal) {
        if refusal.reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !refusal.reason.is_char_boundary(end) {
                end -= 1;
            }
            refusal.reason.truncate(end);
        }
        let mut closed = Vec::new();
        let first = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match window.started {
                Some(started) if now.duration_since(started) < WINDOW => {}
                Some(_) => {
                    closed = take_summaries(&mut window);
                    window.started = Some(now);
                }
                None => window.started = Some(now),
            }
            let key: Key = (
                refusal.channel,
                refusal.reason.clone(),
                refusal.ip,
                refusal.actor.clone(),
                refusal.tenant.clone(),
                refusal.status,
            );
            if let Some(n) = window.extra.get_mut(&key) {
                *n += 1;
                false
            } else if window.extra.len() >= MAX_KEYS {
                *window
                    .overflow
                    .entry((refusal.channel, refusal.status))
                    .or_default() += 1;
                false
            } else {
                window.extra.insert(key, 0);
                true
            }
        };
        let mut records: Vec<Record> = closed;
        if first {
            records.push(entry(&refusal, 1));
        }
        if !records.is_empty() {
            self.write(records);
        }
    }

    /// Writes the counts of the window so far and starts a new one. Called
    /// every [`WINDOW`] and at shutdown. Blocking.
    pub fn flush(&self) {
        let records = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let records = take_summaries(&mut window);
            window.started = None;
            records
        };
        append_all(&self.audit, records);
    }

    /// Flushes every [`WINDOW`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WINDOW);
        tick.tick().await;
        loop {
            tick.tick().await;
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || this.flush()).await;
        }
    }

    fn write(&self, records: Vec<Record>) {
        let audit = Arc::clone(&self.audit);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || append_all(&audit, records));
            }
            Err(_) => append_all(&audit, records),
        }
    }
}

fn take_summaries(window: &mut Window) -> Vec<Record> {
    let mut records = Vec::new();
    for (key, n) in window.extra.drain() {
        if n == 0 {
            continue;
        }
        let (channel, reason, ip, actor, tenant, status) = key;
        records.push(entry(
            &Refusal {
                channel,
                reason,
                ip,
                actor,
                tenant,
                status,
            },
            n,
        ));
    }
    for ((channel, status), n) in window.overflow.drain() {
        records.push(Record {
            ip: "*".into(),
            method: "REFUSED".into(),
            path: channel.into(),
            body: body(
                n,
                &format!("refusals beyond {MAX_KEYS} distinct addresses and reasons"),
            ),
            status,
            ..Record::default()
        });
    }
    records.sort_by(|a, b| (&a.path, &a.ip, &a.body).cmp(&(&b.path, &b.ip, &b.body)));
    records
}

fn entry(refusal: &Refusal, count: u64) -> Record {
    Record {
        actor: refusal.actor.clone(),
        tenant: refusal.tenant.clone(),
        role: String::new(),
        ip: refusal.ip.to_string(),
        method: "REFUSED".into(),
        path: refusal.channel.into(),
        query: String::new(),
        body: body(count, &refusal.reason),
        status: refusal.status,
    }
}

fn body(count: u64, reason: &str) -> String {
    serde_json::json!({
        "refused": count,
        "window_secs": WINDOW.as_secs(),
        "reason": reason,
    })
    .to_string()
}

fn append_all(audit: &AuditLog, records: Vec<Record>) {
    for record in records {
        if let Err(e) = audit.append(record) {
            tracing::error!(error = %format!("{e:#}"), "auditing a refused ingest failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(ip: [u8; 4], reason: &str) -> Refusal {
        Refusal {
            channel: "agent",
            reason: reason.into(),
            ip: IpAddr::from(ip),
            actor: String::new(),
            tenant: String::new(),
            status: 401,
        }
    }

    fn open(dir: &std::path::Path) -> Arc<AuditLog> {
        let options = crate::audit::AuditOptions {
            key_file: Some(dir.join("keys").join("audit.key")),
            ..Default::default()
        };
        Arc::new(AuditLog::open(&dir.join("data"), &options).expect("open"))
    }

    /// The log's entries without its own (the chain's start).
    fn refused_entries(audit: &AuditLog) -> Vec<crate::audit::Entry> {
        let mut entries = audit.entries().expect("read");
        entries.retain(|e| e.method == "REFUSED");
        entries
    }

    fn refused(entries: &[crate::audit::Entry]) -> Vec<(String, u64)> {
        entries
            .iter()
            .map(|e| {
                let body: serde_json::Value = serde_json::from_str(&e.body).expect("json body");
                (e.ip.clone(), body["refused"].as_u64().expect("count"))
            })
            .collect()
    }

    #[test]
    fn a_flood_is_one_entry_now_and_one_count_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = open(dir.path());
        let refusals = Refusals::new(Arc::clone(&audit));
        for _ in 0..10_000 {
            refusals.note(refusal([10, 0, 0, 1], "invalid token"));
        }
        refusals.note(refusal([10, 0, 0, 2], "invalid token"));
        let entries = refused_entries(&audit);
        assert_eq!(
            refused(&entries),
            vec![("10.0.0.1".to_string(), 1), ("10.0.0.2".to_string(), 1)]
        );
        refusals.flush();
        let entries = refused_entries(&audit);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            refused(&entries[2..]),
            vec![("10.0.0.1".to_string(), 9_999)]
        );
        assert_eq!(entries[2].method, "REFUSED");
        assert_eq!(entries[2].path, "agent");
        assert!(
            entries[2].body.contains("invalid token"),
            "{:?}",
            entries[2]
        );
    }

    #[test]
    fn many_addresses_are_bounded_per_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = open(dir.path());
        let refusals = Refusals::new(Arc::clone(&audit));
        let mut total = 0u64;
        for i in 0..5_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            refusals.note(refusal([10, a, b, c], "invalid token"));
            refusals.note(refusal([10, a, b, c], "invalid token"));
            total += 2;
        }
        refusals.flush();
        let entries = refused_entries(&audit);
        assert!(entries.len() <= 2 * MAX_KEYS + 1, "{}", entries.len());
        let counted: u64 = refused(&entries).iter().map(|(_, n)| n).sum();
        assert_eq!(counted, total);
        assert!(entries.iter().any(|e| e.ip == "*"));
    }
}
