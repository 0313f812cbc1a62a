//! The alert stage at run time: a thread that owns the lifecycle engine
//! (firings in from the indexer, a tick every 50 ms), the durable store,
//! and the outbox task that delivers. The API reaches the same engine
//! through [`AlertService`] for listing, acks and silences.
//!
//! ```text
//! indexer ──FiringSink (bounded)──▶ alert thread: Engine.on_firing / tick
//!                                      │ commit(state + new notifications)
//!                                      ▼
//!                                   outbox task ──▶ receivers
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as ChannelReceiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::ack::AckSigner;
use super::config::AlertingConfig;
use super::engine::{AlertView, Engine, LookupError, Outgoing, SilenceSpec};
use super::model::{AlertStatus, Receiver};
use super::outbox::Outbox;
use super::silence::{Silence, SilenceState};
use super::store::{EntryState, OutboxEntry, Store};
use crate::detect::Firing;
use crate::telemetry::Metrics;
use crate::time::{now_nanos, NANOS_PER_SEC};

/// Firings the indexer may queue ahead of the alert thread.
const QUEUE: usize = 16_384;
const TICK: Duration = Duration::from_millis(50);
/// Shortest time between two ticks when a new alert waits to page.
const TICK_GAP: Duration = Duration::from_millis(10);
/// Ticks are at least this many times their own cost apart (at most 5%
/// of a core), or a third of that when a new alert waits to page.
const COST_GAPS: u32 = 20;
const NEW_ALERT_COST_GAPS: u32 = 6;
/// New alerts are persisted at most this often, unless they page: under a
/// storm (a new scanner alert every few milliseconds) each commit rewrote
/// the same B-tree pages. A crash in between loses nothing: the rules'
/// high-water mark follows what is stored, so the replay fires them again.
const NEW_ALERT_PERSIST_GAP: Duration = Duration::from_millis(100);
/// While firings taken are not stored, how often the thread looks whether
/// the indexer asks for them.
const HURRY_POLL: Duration = Duration::from_millis(5);
/// State changes that page nobody (a repeat merged) are persisted at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How often the firing-alerts gauge is counted.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The indexer's end of the firing queue. `send` never blocks the indexer
/// for more than ~200 ms and never drops a firing silently: a firing that
/// still finds the queue full is counted and logged.
#[derive(Clone)]
pub struct FiringSink {
    tx: SyncSender<Firing>,
    metrics: Arc<Metrics>,
    /// How far the alert store has what was sent; `None` when another
    /// reader than the local alert stage takes the firings.
    progress: Option<Arc<StoreProgress>>,
}

/// Which firings the alert store has on disk. Whoever hands firings over
/// keeps its input until the store has them, so a crash in between makes
/// it hand them over again rather than lose them.
#[derive(Debug, Default)]
struct StoreProgress {
    /// The live rules' marks, WAL positions of the records that fired: the
    /// rules' high-water mark follows `stored` (docs/rules-state.md).
    rules: Lane,
    /// The Kafka pager's marks, a count of the firings it handed over: it
    /// stores a message's offset once its firing is stored (docs/kafka.md).
    pager: Lane,
    /// The indexer waits for the rules' `stored` to reach this (a rule
    /// snapshot, a backup's cut, a clean stop): commit now.
    hurry_to: AtomicU64,
}

impl StoreProgress {
    fn publish(&self, rules: LaneMarks, pager: LaneMarks) {
        self.rules.stored.fetch_max(rules.stored, Ordering::Release);
        self.pager.stored.fetch_max(pager.stored, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Lane {
    /// Every firing up to this mark has been sent.
    sent: AtomicU64,
    /// Every firing up to this mark is in the store on disk.
    stored: AtomicU64,
}

/// A lane's marks as the alert thread sees them: taken off the queue, and
/// of those, stored.
#[derive(Debug, Default, Clone, Copy)]
struct LaneMarks {
    taken: u64,
    stored: u64,
}

impl FiringSink {
    /// A sink whose firings are read from `rx` by someone else than the
    /// local alert stage: a Kafka indexer forwards them to the alerts topic.
    pub fn channel(
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (FiringSink, ChannelReceiver<Firing>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (
            FiringSink {
                tx,
                metrics,
                progress: None,
            },
            rx,
        )
    }

    /// Waits as long as it takes for room in the queue; `false` once the
    /// alert stage is gone. For a reader that must not acknowledge its
    /// input before the firing is with the stage (the Kafka pager).
    pub fn send_blocking(&self, firing: Firing) -> bool {
        self.tx.send(firing).is_ok()
    }

    /// The Kafka pager has handed over one more firing: returns the count
    /// of them so far, to compare with [`FiringSink::pager_stored`].
    pub fn pager_sent_one(&self) -> u64 {
        self.progress.as_ref().map_or(0, |progress| {
            progress.pager.sent.fetch_add(1, Ordering::AcqRel) + 1
        })
    }

    /// How many of the pager's firings the alert store has on disk (all
    /// of them for a sink that does not say).
    pub fn pager_stored(&self) -> u64 {
        self.progress.as_ref().map_or(u64::MAX, |progress| {
            progress.pager.stored.load(Ordering::Acquire)
        })
    }

    /// Hands a firing to the alert stage, waiting for room as long as it
    /// takes: a page is never traded for ingest speed. While the queue is
    /// full, detection (and so the indexer, then the agents through the
    /// WAL's backpressure) waits for the alert thread, whose work does not
    /// wait on the indexer. Only a stage that is gone (shutting down, or
    /// its thread died) loses the firing, counted and logged.
    pub fn send(&self, firing: Firing) {
        let firing = match self.tx.try_send(firing) {
            Ok(()) => return,
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Disconnected(back)) => return self.lost(&back),
        };
        let started = std::time::Instant::now();
        let sent = self.tx.send(firing);
        let waited = started.elapsed();
        self.metrics.alerts.firings_waited.inc();
        self.metrics
            .alerts
            .firings_waited_micros
            .add(waited.as_micros().try_into().unwrap_or(u64::MAX));
        if waited >= Duration::from_secs(1) {
            tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                "alert stage behind: detection waited for room in its queue \
                 (ingest slowed; no firing lost)"
            );
        }
        if let Err(std::sync::mpsc::SendError(back)) = sent {
            self.lost(&back);
        }
    }

    #[cold]
    fn lost(&self, firing: &Firing) {
        self.metrics.alerts.firings_dropped.inc();
        tracing::error!(
            rule = %firing.rule_id, tenant = %firing.tenant, key = %firing.key,
            "alert stage gone: firing dropped (counted in nightowl_alert_firings_dropped_total)"
        );
    }
}

/// The live rules hand their firings to the alert stage through this.
impl crate::detect::live::FiringOut for FiringSink {
    fn send(&self, firing: Firing) {
        FiringSink::send(self, firing);
    }

    fn sent_through(&self, end: u64) {
        if let Some(progress) = &self.progress {
            // After the sends: the alert thread that reads this finds
            // those firings in the queue or already taken.
            progress.rules.sent.fetch_max(end, Ordering::Release);
        }
    }

    fn stored_through(&self) -> Option<u64> {
        self.progress
            .as_ref()
            .map(|progress| progress.rules.stored.load(Ordering::Acquire))
    }

    fn store_soon(&self, through: u64) {
        if let Some(progress) = &self.progress {
            progress.hurry_to.fetch_max(through, Ordering::Release);
        }
    }
}

/// A signed ack link's group, for its confirmation page.
#[derive(Debug, Clone)]
pub struct LinkGroup {
    pub tenant: String,
    /// The labels the group is by (`alertname`, ...), without the tenant.
    pub labels: std::collections::BTreeMap<String, String>,
    pub alerts: Vec<AlertView>,
}

pub struct AlertService {
    engine: Mutex<Engine>,
    store: Arc<Store>,
    pub outbox: Arc<Outbox>,
    signer: AckSigner,
    metrics: Arc<Metrics>,
    ack_ttl: i64,
    external_url: String,
    /// Who a firing can reach; fixed by the config at start.
    pub paging: super::config::Paging,
}

/// A silence as the API lists it.
#[derive(Debug, Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub state: SilenceState,
}

pub struct Started {
    pub service: Arc<AlertService>,
    pub sink: FiringSink,
    /// Ends (after a last persist) when every `FiringSink` is dropped.
    pub thread: std::thread::JoinHandle<()>,
    pub outbox_task: tokio::task::JoinHandle<()>,
}

/// Opens the store, builds the receivers and starts the alert thread and
/// the outbox task (call from inside the runtime).
pub fn start(
    config: &AlertingConfig,
    data_dir: &Path,
    api_listen: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<Started> {
    let mut receivers: HashMap<String, Arc<dyn Receiver>> = HashMap::new();
    for r in &config.receivers {
        let built = super::receiver::build(r).map_err(|e| {
            crate::error::usage(format!("alerting.receivers {:?}: {e:#}", r.name()))
        })?;
        receivers.insert(r.name().to_string(), built);
    }
    let dir = config
        .outbox
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("alerting"));
    let store = Arc::new(Store::open(&dir)?);
    let signer = AckSigner::load_or_create(&dir)?;
    let state = store.load_state()?;
    let external_url = config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("https://{api_listen}"))
        .trim_end_matches('/')
        .to_string();
    let engine = Engine::new(config, external_url.clone(), state);
    let entries = store.entries()?;
    let pending = entries
        .iter()
        .filter(|e| e.state == EntryState::Pending)
        .count();
    if pending > 0 {
        tracing::info!(pending, "resuming undelivered notifications");
    }
    let outbox = Outbox::new(
        Arc::clone(&store),
        receivers,
        config.outbox.clone(),
        Arc::clone(&metrics),
        entries,
    );
    let outbox_task = tokio::spawn(Arc::clone(&outbox).run());
    let service = Arc::new(AlertService {
        engine: Mutex::new(engine),
        store,
        outbox,
        signer,
        metrics: Arc::clone(&metrics),
        ack_ttl: config.ack_link_ttl.0,
        external_url,
        paging: config.paging(),
    });
    if let Some(why) = &service.paging.nobody_paged {
        tracing::warn!("{why}");
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let runner = Arc::clone(&service);
    let progress = Arc::new(StoreProgress::default());
    let runner_progress = Arc::clone(&progress);
    let thread = std::thread::Builder::new()
        .name("nightowl-alerts".into())
        .spawn(move || runner.run(rx, &runner_progress))
        .context("starting the alert thread")?;
    Ok(Started {
        service,
        sink: FiringSink {
            tx,
            metrics,
            progress: Some(progress),
        },
        thread,
        outbox_task,
    })
}

impl AlertService {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves a consistent enough state
        // for paging to go on; refusing every page after it would be worse.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, rx: ChannelReceiver<Firing>, progress: &StoreProgress) {
        let mut batch = Vec::new();
        // Per lane (the rules, the pager): the `sent` mark of the firings
        // taken so far, and what of it is stored.
        let mut rules = LaneMarks::default();
        let mut pager = LaneMarks::default();
        let mut last_persist = Instant::now();
        // A tick walks every alert and group: under a storm of firings it
        // runs at most every TICK_GAP (a new alert) or TICK (repeats), not
        // once per arriving firing, so its cost follows time, not firings.
        // Ticks are also spaced by their own cost, so that with ten
        // thousand open alerts the thread ticks a few times a second
        // instead of taking a core from ingest.
        let mut last_tick = Instant::now();
        let mut tick_cost = Duration::ZERO;
        let mut new_alert = false;
        // A new alert not yet persisted.
        let mut unsaved_alert = false;
        // A broken store is not retried at every look for the indexer.
        let mut failed_at: Option<Instant> = None;
        let mut last_gauge: Option<Instant> = None;
        loop {
            let gap = if new_alert {
                TICK_GAP.max(tick_cost * NEW_ALERT_COST_GAPS)
            } else {
                TICK.max(tick_cost * COST_GAPS)
            };
            let mut wait = gap.saturating_sub(last_tick.elapsed());
            if rules.taken > rules.stored {
                // The indexer may ask for them (`hurry_to`) with no firing
                // to wake this thread.
                wait = wait.min(HURRY_POLL);
            }
            let closed = match rx.recv_timeout(wait) {
                Ok(f) => {
                    batch.push(f);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            // Read before the queue is emptied: every firing sent up to it
            // is then taken.
            let sent = (
                progress.rules.sent.load(Ordering::Acquire),
                progress.pager.sent.load(Ordering::Acquire),
            );
            let mut emptied = false;
            while batch.len() < 10_000 {
                match rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => {
                        emptied = true;
                        break;
                    }
                }
            }
            if emptied {
                rules.taken = rules.taken.max(sent.0);
                pager.taken = pager.taken.max(sent.1);
            }
            let now = now_nanos();
            let mut engine = self.engine();
            for firing in batch.drain(..) {
                new_alert |= engine.on_firing(&firing, now);
            }
            let since = last_tick.elapsed();
            let hurry = rules.stored < progress.hurry_to.load(Ordering::Acquire).min(rules.taken)
                && failed_at.is_none_or(|at| at.elapsed() >= PERSIST_EVERY);
            let due = since >= TICK.max(tick_cost * COST_GAPS)
                || (new_alert && since >= TICK_GAP.max(tick_cost * NEW_ALERT_COST_GAPS));
            if !closed && !due {
                if hurry {
                    // What the indexer waits for, without a tick.
                    failed_at = self.commit(&mut engine, &[], &mut rules, &mut pager);
                    last_persist = Instant::now();
                    unsaved_alert = false;
                    progress.publish(rules, pager);
                }
                continue;
            }
            unsaved_alert |= std::mem::take(&mut new_alert);
            last_tick = Instant::now();
            let outgoing = engine.tick(now);
            tick_cost = last_tick.elapsed();
            // A walk of every alert: under a storm (ten thousand open)
            // the gauge is refreshed once a second, not at every tick.
            if closed || last_gauge.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
                last_gauge = Some(Instant::now());
                let firing = engine
                    .state
                    .alerts
                    .values()
                    .filter(|e| e.alert.status == AlertStatus::Firing)
                    .count();
                self.metrics.alerts.firing.set(firing as i64);
            }
            let entries = self.entries(outgoing, now);
            let dirty = !engine.state.dirty.is_empty();
            let significant = unsaved_alert && last_persist.elapsed() >= NEW_ALERT_PERSIST_GAP;
            if significant
                || hurry
                || !entries.is_empty()
                || (closed && dirty)
                || (dirty && last_persist.elapsed() >= PERSIST_EVERY)
            {
                unsaved_alert = false;
                failed_at = self.commit(&mut engine, &entries, &mut rules, &mut pager);
                last_persist = Instant::now();
            } else if !dirty {
                // Nothing taken changed the state.
                rules.stored = rules.taken;
                pager.stored = pager.taken;
            }
            progress.publish(rules, pager);
            drop(engine);
            self.outbox.enqueue(entries);
            if closed {
                return;
            }
        }
    }

    /// Commits the state and `entries`; on success, what was taken is
    /// stored. Returns when it failed.
    fn commit(
        &self,
        engine: &mut Engine,
        entries: &[OutboxEntry],
        rules: &mut LaneMarks,
        pager: &mut LaneMarks,
    ) -> Option<Instant> {
        match self.store.commit(Some(&mut engine.state), entries, &[]) {
            Ok(()) => {
                rules.stored = rules.taken;
                pager.stored = pager.taken;
                None
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "persisting the alert state failed; delivering anyway");
                Some(Instant::now())
            }
        }
    }

    fn entries(&self, outgoing: Vec<Outgoing>, now: i64) -> Vec<OutboxEntry> {
        outgoing
            .into_iter()
            .map(|o| {
                let mut n = o.notification;
                if n.status == AlertStatus::Firing {
                    if let Some(tenant) = n.group_labels.get("tenant") {
                        let expires = (now + self.ack_ttl) / NANOS_PER_SEC;
                        n.ack_url = Some(format!(
                            "{}/ack/{}",
                            self.external_url,
                            self.signer.sign(tenant, &n.group_key, expires)
                        ));
                    }
                }
                OutboxEntry {
                    notification: n,
                    state: EntryState::Pending,
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: None,
                    fired_at: o.fired_at,
                    failover: false,
                    failed_over: false,
                }
            })
            .collect()
    }

    fn persist(&self, engine: &mut Engine) -> Result<()> {
        self.store
            .commit(Some(&mut engine.state), &[], &[])
            .context("persisting the alert state")
    }

    pub fn list(&self, tenant: &str, include_resolved: bool) -> Vec<AlertView> {
        self.engine().list(tenant, include_resolved, now_nanos())
    }

    /// Acks durably before answering.
    pub fn ack(&self, tenant: &str, id: &str, by: &str) -> Result<Result<String, LookupError>> {
        let mut engine = self.engine();
        let result = engine.ack(tenant, id, by, now_nanos());
        if result.is_ok() {
            self.persist(&mut engine)?;
        }
        Ok(result)
    }

    /// Checks a signed link without acting on it: (tenant, group key).
    pub fn check_link(&self, token: &str) -> Result<(String, String), String> {
        self.signer
            .verify(token, now_nanos() / NANOS_PER_SEC)
            .map_err(|e| format!("{e:#}"))
    }

    /// What the signed link's confirmation page shows: the group's labels
    /// and alerts (both empty once the group is gone).
    pub fn link_group(&self, token: &str) -> Result<LinkGroup, String> {
        let (tenant, group) = self.check_link(token)?;
        let (mut labels, alerts) = self
            .engine()
            .group_view(&tenant, &group, now_nanos())
            .unwrap_or_default();
        labels.remove("tenant");
        Ok(LinkGroup {
            tenant,
            labels,
            alerts,
        })
    }

    /// The signed link's action: verify, then ack the group.
    pub fn ack_link(&self, token: &str) -> Result<Result<(String, usize), String>> {
        let now = now_nanos();
        let (tenant, group) = match self.signer.verify(token, now / NANOS_PER_SEC) {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("{e:#}"))),
        };
        let mut engine = self.engine();
        let n = engine.ack_group(&tenant, &group, "ack-link", now);
        self.persist(&mut engine)?;
        Ok(Ok((group, n)))
    }

    pub fn silences(&self, tenant: &str) -> Vec<SilenceView> {
        let now = now_nanos();
        self.engine()
            .silences(tenant)
            .into_iter()
            .map(|s| SilenceView {
                silence: s.clone(),
                state: s.state(now),
            })
            .collect()
    }

    pub fn add_silence(&self, tenant: &str, spec: SilenceSpec) -> Result<Silence> {
        let mut engine = self.engine();
        let silence = engine.add_silence(tenant, spec, now_nanos());
        self.persist(&mut engine)?;
        Ok(silence)
    }

    pub fn expire_silence(&self, tenant: &str, id: &str, by: &str) -> Result<bool> {
        let mut engine = self.engine();
        let found = engine.expire_silence(tenant, id, by, now_nanos());
        if found {
            self.persist(&mut engine)?;
        }
        Ok(found)
    }

    /// Dead letters and pending notifications of a tenant.
    pub fn outbox_entries(&self, tenant: &str) -> Result<Vec<OutboxEntry>> {
        Ok(self
            .store
            .entries()?
            .into_iter()
            .filter(|e| super::outbox::tenant_of(e) == Some(tenant))
            .collect())
    }

    /// A consistent copy of the alert store at `to` (a backup). Blocking.
    pub fn backup_copy(&self, to: &Path) -> Result<()> {
        self.store.copy_to(to)
    }

    /// Forgets everything paging holds about `tenant` (a purge): alerts,
    /// groups, acks, silences, and notifications not yet delivered or
    /// dead-lettered. Blocking (one store transaction, then a rewrite of
    /// the store's file).
    pub fn purge_tenant(&self, tenant: &str) -> Result<AlertPurge> {
        let mut engine = self.engine();
        self.store.rewrite_pending()?;
        let (alerts, groups, silences) = engine.forget_tenant(tenant);
        let notifications = self
            .outbox
            .forget_tenant(tenant, &mut engine.state)
            .with_context(|| format!("purging tenant {tenant:?} from the alert store"))?;
        // The deleted rows' old pages still hold them: copy the live rows
        // into a fresh file.
        self.store
            .rewrite()
            .with_context(|| format!("rewriting the alert store after purging {tenant:?}"))?;
        self.metrics.alerts.firing.set(
            engine
                .state
                .alerts
                .values()
                .filter(|e| e.alert.status == AlertStatus::Firing)
                .count() as i64,
        );
        Ok(AlertPurge {
            alerts,
            groups,
            silences,
            notifications,
        })
    }
}

/// What a tenant purge removed from paging.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct AlertPurge {
    pub alerts: usize,
    pub groups: usize,
    pub silences: usize,
    pub notifications: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing() -> Firing {
        Firing {
            rule_id: "r".into(),
            title: "t".into(),
            severity: crate::detect::Severity::Critical,
            tenant: "default".into(),
            key: "k".into(),
            count: 1,
            value: None,
            window: 1.0,
            first_ts: 0,
            last_ts: 0,
            sample_lines: Vec::new(),
            labels: Default::default(),
            tags: Vec::new(),
            evidence_query: String::new(),
        }
    }

    #[test]
    fn a_full_queue_waits_for_room_and_only_a_closed_one_drops() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sink = FiringSink {
            tx,
            metrics: Arc::clone(&metrics),
            progress: None,
        };
        sink.send(firing());
        // Full: the second waits until the reader takes the first, then
        // goes in; none is dropped however slow the reader.
        let rx = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    got.push(rx.recv().expect("a firing").rule_id);
                }
                (got, rx)
            });
            sink.send(firing());
            let (got, rx) = reader.join().expect("reader");
            assert_eq!(got, ["r", "r"]);
            rx
        });
        assert_eq!(metrics.alerts.firings_dropped.get(), 0);
        drop(rx);
        sink.send(firing());
        assert_eq!(metrics.alerts.firings_dropped.get(), 1);
    }

    /// Whether the alert store file under `data_dir` holds an alert keyed
    /// `key`, read from a copy as a crash would leave it (the running
    /// stage keeps the file open and locked).
    fn on_disk_has_key(data_dir: &Path, key: &str) -> bool {
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            data_dir.join("alerting/alerting.redb"),
            copy.path().join("alerting.redb"),
        )
        .expect("copying the alert store");
        let on_disk = Store::open(copy.path())
            .and_then(|store| store.load_state())
            .expect("reading the copy of the alert store");
        on_disk
            .alerts
            .values()
            .any(|a| a.alert.labels.values().any(|v| v == key))
    }

    /// The rules' high-water mark follows `stored_through`: a firing must
    /// be in the store on disk, not only in the queue, when the stage says
    /// it has it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_stage_says_a_firing_is_stored_once_its_alert_is_on_disk() {
        use crate::detect::live::FiringOut;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = AlertingConfig::default();
        let api: SocketAddr = "127.0.0.1:7443".parse().expect("address");
        let started = start(&config, dir.path(), api, Arc::new(Metrics::default())).expect("start");
        let sink = started.sink.clone();
        assert_eq!(sink.stored_through(), Some(0));
        // A critical firing of its own key, then its record's mark.
        let mut f = firing();
        f.key = "stored-key".into();
        sink.send(f);
        sink.sent_through(4096);
        sink.store_soon(4096);
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.stored_through() < Some(4096) {
            assert!(
                Instant::now() < deadline,
                "the alert stage never stored the firing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // What the mark promises: the store on disk has the alert now.
        assert!(
            on_disk_has_key(dir.path(), "stored-key"),
            "stored_through moved before the alert was on disk"
        );
        // The Kafka pager's lane: counted firings, no hurry asked.
        let mut f = firing();
        f.key = "paged-key".into();
        assert!(sink.send_blocking(f));
        let count = sink.pager_sent_one();
        assert_eq!(count, 1);
        while sink.pager_stored() < count {
            assert!(
                Instant::now() < deadline,
                "the alert stage never stored the pager's firing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            on_disk_has_key(dir.path(), "paged-key"),
            "pager_stored moved before the alert was on disk"
        );
        // A sink for another reader makes no promise.
        let (other, _rx) = FiringSink::channel(1, Arc::new(Metrics::default()));
        assert_eq!(other.stored_through(), None);
        assert_eq!(other.pager_stored(), u64::MAX);
    }
}
