//! Delivery: every notification is already durable in the store when it
//! gets here. Each is attempted, retried with exponential backoff and
//! jitter while the receiver fails retryably, and dead-lettered after the
//! retry budget (or at once on a permanent failure). A dead letter pages
//! every *other* receiver (failover), so a broken mail relay does not mean
//! a silent night; so does a firing page still undelivered after
//! `failover_after` (minutes, against a budget of hours), while its own
//! receiver keeps being retried.
//!
//! The notification id goes to the receiver as its idempotency key: a retry
//! after a timeout (the first attempt may have arrived) is recognisable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;

use super::config::OutboxConfig;
use super::engine::fingerprint;
use super::model::{Alert, AlertStatus, DeliveryError, Notification, Receiver};
use super::store::{EntryState, OutboxEntry, Store};
use crate::detect::Severity;
use crate::telemetry::Metrics;
use crate::time::now_nanos;

/// Why a notification's alerts go to the other receivers.
#[derive(Debug, Clone, Copy)]
enum Failing {
    /// Dead-lettered: its receiver will not be tried again.
    GaveUp,
    /// Past `failover_after`; its receiver is still retried.
    StillRetrying,
}

pub struct Outbox {
    store: Arc<Store>,
    receivers: HashMap<String, Arc<dyn Receiver>>,
    config: OutboxConfig,
    metrics: Arc<Metrics>,
    /// Pending entries by id (dead ones stay only in the store).
    queue: Mutex<BTreeMap<String, OutboxEntry>>,
    inflight: Mutex<HashSet<String>>,
    /// Held while an attempt records its outcome and while a purge removes
    /// entries, so a delivery in flight during a purge cannot write its
    /// notification back.
    recording: Mutex<()>,
    wake: Notify,
}

/// The tenant a notification is about.
pub(crate) fn tenant_of(entry: &OutboxEntry) -> Option<&str> {
    entry
        .notification
        .group_labels
        .get("tenant")
        .map(String::as_str)
}

/// Delay before retry number `attempts` (1-based): `initial * 2^(n-1)`
/// capped at `max`, then "equal jitter" (a uniform pick in its upper half),
/// so retries of many pages spread out but still make progress.
pub fn backoff(config: &OutboxConfig, attempts: u32, rng: &mut impl Rng) -> i64 {
    let exp = attempts.saturating_sub(1).min(40);
    let base = config
        .initial_backoff
        .0
        .saturating_mul(1i64 << exp)
        .min(config.max_backoff.0)
        .max(1);
    base / 2 + rng.gen_range(0..=base / 2)
}

impl Outbox {
    pub fn new(
        store: Arc<Store>,
        receivers: HashMap<String, Arc<dyn Receiver>>,
        config: OutboxConfig,
        metrics: Arc<Metrics>,
        pending: Vec<OutboxEntry>,
    ) -> Arc<Outbox> {
        let queue: BTreeMap<String, OutboxEntry> = pending
            .into_iter()
            .filter(|e| e.state == EntryState::Pending)
            .map(|e| (e.notification.id.clone(), e))
            .collect();
        metrics.alerts.outbox_depth.set(queue.len() as i64);
        Arc::new(Outbox {
            store,
            receivers,
            config,
            metrics,
            queue: Mutex::new(queue),
            inflight: Mutex::new(HashSet::new()),
            recording: Mutex::new(()),
            wake: Notify::new(),
        })
    }

    pub fn receiver_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.receivers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Hands over entries the caller has already committed to the store.
    pub fn enqueue(&self, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        if let Ok(mut queue) = self.queue.lock() {
            for e in entries {
                queue.insert(e.notification.id.clone(), e);
            }
            self.metrics.alerts.outbox_depth.set(queue.len() as i64);
        }
        self.wake.notify_one();
    }

    /// Removes every notification of `tenant`, pending and dead, from the
    /// queue and the store, committing `state` (already without the
    /// tenant) in the same transaction. Returns how many went.
    pub fn forget_tenant(
        &self,
        tenant: &str,
        state: &mut super::engine::State,
    ) -> anyhow::Result<usize> {
        let _recording = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = self
            .store
            .entries()?
            .into_iter()
            .filter(|e| tenant_of(e) == Some(tenant))
            .map(|e| e.notification.id)
            .collect();
        self.store.commit(Some(state), &[], &ids)?;
        if let Ok(mut queue) = self.queue.lock() {
            queue.retain(|_, e| tenant_of(e) != Some(tenant));
            self.metrics.alerts.outbox_depth.set(queue.len() as i64);
        }
        Ok(ids.len())
    }

    /// Pending ids, for tests and the API.
    pub fn pending(&self) -> Vec<OutboxEntry> {
        self.queue
            .lock()
            .map(|q| q.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = now_nanos();
            let mut next: Option<i64> = None;
            let mut due = Vec::new();
            if let (Ok(queue), Ok(mut inflight)) = (self.queue.lock(), self.inflight.lock()) {
                for (id, entry) in queue.iter() {
                    if inflight.contains(id) {
                        continue;
                    }
                    if entry.next_attempt_at <= now {
                        inflight.insert(id.clone());
                        due.push(entry.clone());
                    } else {
                        next = Some(
                            next.map_or(entry.next_attempt_at, |n| n.min(entry.next_attempt_at)),
                        );
                    }
                }
            }
            for entry in due {
                tokio::spawn(Arc::clone(&self).attempt(entry));
            }
            let wait = next
                .map_or(1_000_000_000, |n| n - now)
                .clamp(5_000_000, 1_000_000_000);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_nanos(wait as u64)) => {}
            }
        }
    }

    async fn attempt(self: Arc<Self>, mut entry: OutboxEntry) {
        let id = entry.notification.id.clone();
        let started = std::time::Instant::now();
        let result = match self.receivers.get(&entry.notification.receiver) {
            None => Err(DeliveryError::Permanent(format!(
                "receiver {:?} is no longer configured",
                entry.notification.receiver
            ))),
            Some(receiver) => {
                let timeout = Duration::from_nanos(self.config.attempt_timeout.0.max(1) as u64);
                match tokio::time::timeout(timeout, receiver.send(&entry.notification)).await {
                    Ok(r) => r,
                    Err(_) => Err(DeliveryError::Retryable(format!(
                        "no answer within {timeout:?}"
                    ))),
                }
            }
        };
        let now = now_nanos();
        entry.attempts += 1;
        let mut put = Vec::new();
        let mut remove = Vec::new();
        let mut requeue = Vec::new();
        match result {
            Ok(()) => {
                self.metrics.alerts.notifications_sent.inc();
                if let Some(fired) = entry.fired_at {
                    self.metrics
                        .alerts
                        .delivery_latency
                        .record(Duration::from_nanos(now.saturating_sub(fired).max(0) as u64));
                }
                tracing::info!(
                    id = %id, receiver = %entry.notification.receiver,
                    attempts = entry.attempts, alerts = entry.notification.alerts.len(),
                    took_ms = started.elapsed().as_millis() as u64, "notification delivered"
                );
                remove.push(id.clone());
            }
            Err(e) => {
                self.metrics.alerts.notifications_failed.inc();
                let permanent = matches!(e, DeliveryError::Permanent(_));
                let exhausted = now - entry.notification.created_at >= self.config.retry_budget.0;
                entry.last_error = Some(e.to_string());
                if permanent || exhausted {
                    entry.state = EntryState::Dead;
                    self.metrics.alerts.notifications_dead.inc();
                    tracing::error!(
                        id = %id, receiver = %entry.notification.receiver, attempts = entry.attempts,
                        error = %e, "notification dead-lettered; paging the other receivers"
                    );
                    if !entry.failover && !entry.failed_over {
                        requeue = self.failover(&entry, now, Failing::GaveUp);
                        put.extend(requeue.iter().cloned());
                    }
                } else {
                    let failover_at = self.failover_at(&entry);
                    if failover_at.is_some_and(|at| now >= at) {
                        tracing::error!(
                            id = %id, receiver = %entry.notification.receiver, attempts = entry.attempts,
                            error = %e, "notification still undelivered; paging the other receivers, retrying"
                        );
                        requeue = self.failover(&entry, now, Failing::StillRetrying);
                        put.extend(requeue.iter().cloned());
                        entry.failed_over = true;
                    }
                    let delay = backoff(&self.config, entry.attempts, &mut rand::thread_rng());
                    // The attempt that fails over comes on time, not at
                    // the end of a long backoff.
                    entry.next_attempt_at = match self.failover_at(&entry) {
                        Some(at) => (now + delay).min(at),
                        None => now + delay,
                    };
                    tracing::warn!(
                        id = %id, receiver = %entry.notification.receiver, attempts = entry.attempts,
                        retry_in_ms = (entry.next_attempt_at - now) / 1_000_000, error = %e,
                        "notification delivery failed; will retry"
                    );
                }
                put.push(entry.clone());
            }
        }
        let outbox = Arc::clone(&self);
        let (put_c, remove_c, id_c) = (put.clone(), remove.clone(), id.clone());
        let committed = tokio::task::spawn_blocking(move || {
            let _recording = outbox.recording.lock().unwrap_or_else(|p| p.into_inner());
            // Purged meanwhile: nothing of it may be written back.
            let purged = outbox.queue.lock().is_ok_and(|q| !q.contains_key(&id_c));
            let put_c = if purged { Vec::new() } else { put_c };
            outbox
                .store
                .commit(None, &put_c, &remove_c)
                .map(|()| purged)
        })
        .await;
        let mut purged = false;
        match committed {
            Ok(Ok(was_purged)) => purged = was_purged,
            Ok(Err(e)) => {
                tracing::error!(id = %id, error = %format!("{e:#}"), "outbox: recording the attempt failed")
            }
            Err(e) => tracing::error!(id = %id, error = %e, "outbox: store task failed"),
        }
        if let Ok(mut queue) = self.queue.lock() {
            if purged {
                requeue.clear();
            } else if entry.state == EntryState::Dead || !remove.is_empty() {
                queue.remove(&id);
            } else {
                queue.insert(id.clone(), entry);
            }
            for f in requeue {
                queue.insert(f.notification.id.clone(), f);
            }
            self.metrics.alerts.outbox_depth.set(queue.len() as i64);
        }
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&id);
        }
        self.wake.notify_one();
    }

    /// When a still-failing `entry` pages the other receivers: firing pages
    /// only (a late "resolved" wakes nobody), once, and never a failover
    /// page itself.
    fn failover_at(&self, entry: &OutboxEntry) -> Option<i64> {
        let eligible = !entry.failover
            && !entry.failed_over
            && entry.notification.status == AlertStatus::Firing
            && self.config.failover_after.0 < self.config.retry_budget.0;
        eligible.then(|| {
            entry
                .notification
                .created_at
                .saturating_add(self.config.failover_after.0)
        })
    }

    /// A page to every other receiver saying this one is failing, with the
    /// alerts it could not deliver.
    fn failover(&self, dead: &OutboxEntry, now: i64, failing: Failing) -> Vec<OutboxEntry> {
        let failed = &dead.notification.receiver;
        let tenant = dead
            .notification
            .alerts
            .first()
            .map(|a| a.tenant.clone())
            .unwrap_or_else(|| crate::auth::DEFAULT_TENANT.to_string());
        let mut labels = BTreeMap::new();
        labels.insert(
            "alertname".to_string(),
            "nightowl_delivery_failed".to_string(),
        );
        labels.insert("severity".to_string(), "critical".to_string());
        labels.insert("tenant".to_string(), tenant.clone());
        labels.insert("receiver".to_string(), failed.clone());
        let mut annotations = BTreeMap::new();
        let summary = format!("pages to receiver {failed:?} are failing");
        annotations.insert("summary".to_string(), summary.clone());
        annotations.insert(
            "description".to_string(),
            format!(
                "notification {} {} after {} attempts: {}",
                dead.notification.id,
                match failing {
                    Failing::GaveUp => "was dead-lettered",
                    Failing::StillRetrying => "is still undelivered (retrying)",
                },
                dead.attempts,
                dead.last_error.as_deref().unwrap_or("unknown error")
            ),
        );
        let meta = Alert {
            fingerprint: fingerprint(&tenant, "nightowl_delivery_failed", failed),
            status: AlertStatus::Firing,
            rule_id: "nightowl_delivery_failed".into(),
            title: summary,
            severity: Severity::Critical,
            tenant,
            key: failed.clone(),
            labels,
            annotations,
            tags: vec!["nightowl".into()],
            starts_at: now,
            last_fired_at: now,
            ends_at: None,
            firings: 1,
            count: 1,
            value: None,
            sample_lines: Vec::new(),
            evidence_query: String::new(),
            evidence_from: now,
            evidence_to: now,
        };
        let mut alerts = vec![meta];
        alerts.extend(dead.notification.alerts.iter().cloned());
        self.receiver_names()
            .into_iter()
            .filter(|r| r != failed)
            .map(|receiver| OutboxEntry {
                notification: Notification {
                    id: format!("{}-failover-{receiver}", dead.notification.id),
                    receiver,
                    group_key: format!("failover/{}", dead.notification.group_key),
                    group_labels: dead.notification.group_labels.clone(),
                    status: AlertStatus::Firing,
                    alerts: alerts.clone(),
                    escalation_level: dead.notification.escalation_level,
                    created_at: now,
                    external_url: dead.notification.external_url.clone(),
                    ack_url: dead.notification.ack_url.clone(),
                },
                state: EntryState::Pending,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                fired_at: None,
                failover: true,
                failed_over: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::model::SendFuture;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails retryably `fail_first` times, then accepts; records ids.
    struct Flaky {
        name: String,
        fail_first: u32,
        permanent: bool,
        calls: AtomicU32,
        got: Mutex<Vec<String>>,
    }

    impl Receiver for Flaky {
        fn name(&self) -> &str {
            &self.name
        }
        fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.permanent {
                    return Err(DeliveryError::Permanent("410 gone".into()));
                }
                if call < self.fail_first {
                    return Err(DeliveryError::Retryable("connection refused".into()));
                }
                self.got.lock().unwrap().push(n.id.clone());
                Ok(())
            })
        }
    }

    fn flaky(name: &str, fail_first: u32, permanent: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            name: name.into(),
            fail_first,
            permanent,
            calls: AtomicU32::new(0),
            got: Mutex::new(Vec::new()),
        })
    }

    fn config() -> OutboxConfig {
        OutboxConfig {
            initial_backoff: super::super::config::Span(5_000_000),
            max_backoff: super::super::config::Span(20_000_000),
            ..OutboxConfig::default()
        }
    }

    fn entry(id: &str, receiver: &str) -> OutboxEntry {
        OutboxEntry {
            notification: Notification {
                created_at: now_nanos(),
                ..crate::alert::store::tests::notification(id, receiver)
            },
            state: EntryState::Pending,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            fired_at: Some(now_nanos()),
            failover: false,
            failed_over: false,
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let c = OutboxConfig::default();
        let mut rng = rand::thread_rng();
        for attempt in 1..60 {
            let d = backoff(&c, attempt, &mut rng);
            let base = c
                .initial_backoff
                .0
                .saturating_mul(1 << (attempt - 1).min(40))
                .min(c.max_backoff.0);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d}");
        }
    }

    #[tokio::test]
    async fn retries_until_delivered_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let e = entry("n1", "hook");
            store.commit(None, std::slice::from_ref(&e), &[]).unwrap();
            let down = flaky("hook", u32::MAX, false);
            let mut receivers: HashMap<String, Arc<dyn Receiver>> = HashMap::new();
            receivers.insert("hook".into(), down.clone());
            let outbox = Outbox::new(
                Arc::clone(&store),
                receivers,
                config(),
                Arc::clone(&metrics),
                store.entries().unwrap(),
            );
            let task = tokio::spawn(Arc::clone(&outbox).run());
            until("3 failed attempts", || {
                down.calls.load(Ordering::SeqCst) >= 3
            })
            .await;
            task.abort();
            let _ = task.await;
            drop(outbox);
            // In-flight attempts still hold the store; a process exit would end them.
            until("attempts to finish", || Arc::strong_count(&store) == 1).await;
        }
        // "Restart": a new store handle and outbox over the same file.
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let pending = store.entries().unwrap();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].attempts >= 3, "attempts are durable");
        let up = flaky("hook", 0, false);
        let mut receivers: HashMap<String, Arc<dyn Receiver>> = HashMap::new();
        receivers.insert("hook".into(), up.clone());
        let outbox = Outbox::new(
            Arc::clone(&store),
            receivers,
            config(),
            Arc::clone(&metrics),
            pending,
        );
        let task = tokio::spawn(Arc::clone(&outbox).run());
        until("delivery", || !up.got.lock().unwrap().is_empty()).await;
        until("outbox drained", || store.entries().unwrap().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        task.abort();
        assert_eq!(*up.got.lock().unwrap(), vec!["n1".to_string()]);
        assert_eq!(metrics.alerts.notifications_sent.get(), 1);
        assert!(metrics.alerts.notifications_failed.get() >= 3);
    }

    /// An outbox running with `primary` and a healthy `hook` receiver,
    /// `e` (for `primary`) committed and queued.
    struct Running {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        hook: Arc<Flaky>,
        task: tokio::task::JoinHandle<()>,
    }

    fn run_with(primary: &Arc<Flaky>, e: OutboxEntry, config: OutboxConfig) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let hook = flaky("hook", 0, false);
        let mut receivers: HashMap<String, Arc<dyn Receiver>> = HashMap::new();
        receivers.insert(primary.name.clone(), primary.clone());
        receivers.insert("hook".into(), hook.clone());
        store.commit(None, std::slice::from_ref(&e), &[]).unwrap();
        let outbox = Outbox::new(
            Arc::clone(&store),
            receivers,
            config,
            Arc::clone(&metrics),
            vec![e],
        );
        let task = tokio::spawn(Arc::clone(&outbox).run());
        Running {
            _dir: dir,
            store,
            metrics,
            hook,
            task,
        }
    }

    #[tokio::test]
    async fn a_page_failing_past_failover_after_reaches_the_others_once_and_still_its_own() {
        // Down for its first 60 attempts (at least 0.8 s of backoff), then back.
        let down = flaky("pager", 60, false);
        let config = OutboxConfig {
            failover_after: super::super::config::Span(100_000_000),
            ..config()
        };
        let r = run_with(&down, entry("n1", "pager"), config);
        until("failover page", || !r.hook.got.lock().unwrap().is_empty()).await;
        assert!(
            down.got.lock().unwrap().is_empty(),
            "the failover went out while its own receiver was still down"
        );
        until("the page itself, once its receiver is back", || {
            !down.got.lock().unwrap().is_empty()
        })
        .await;
        until("outbox drained", || r.store.entries().unwrap().is_empty()).await;
        r.task.abort();
        assert_eq!(
            *r.hook.got.lock().unwrap(),
            vec!["n1-failover-hook".to_string()],
            "one failover page, however many retries"
        );
        assert_eq!(*down.got.lock().unwrap(), vec!["n1".to_string()]);
        assert_eq!(r.metrics.alerts.notifications_dead.get(), 0);
    }

    #[tokio::test]
    async fn a_resolved_page_does_not_fail_over_before_its_budget() {
        let down = flaky("pager", 8, false);
        let mut e = entry("n1", "pager");
        e.notification.status = AlertStatus::Resolved;
        let config = OutboxConfig {
            failover_after: super::super::config::Span(1),
            ..config()
        };
        let r = run_with(&down, e, config);
        until("delivery", || !down.got.lock().unwrap().is_empty()).await;
        r.task.abort();
        assert!(down.calls.load(Ordering::SeqCst) > 8);
        assert!(r.hook.got.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn dead_letter_fails_over_to_the_other_receivers_once() {
        let broken = flaky("mail", 0, true);
        let r = run_with(&broken, entry("n1", "mail"), config());
        until("failover page", || !r.hook.got.lock().unwrap().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.task.abort();
        assert_eq!(
            *r.hook.got.lock().unwrap(),
            vec!["n1-failover-hook".to_string()]
        );
        assert_eq!(
            broken.calls.load(Ordering::SeqCst),
            1,
            "permanent: no retry"
        );
        let stored = r.store.entries().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].state, EntryState::Dead);
        assert_eq!(r.metrics.alerts.notifications_dead.get(), 1);
    }
}
