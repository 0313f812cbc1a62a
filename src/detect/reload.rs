//! Live rules in the collector: state that survives restarts (snapshot +
//! WAL replay) and hot reloads (SIGHUP, file changes in the rules dir).
//! The contract is in docs/rules-state.md; in short:
//!
//! - the indexer thread owns the [`Engine`] and a [`LiveState`]; at every
//!   index checkpoint it writes the engine's state with the WAL position it
//!   covers (`S`), before the checkpoint (`G`) itself, so `S >= G` normally;
//! - on start the state is restored, the WAL is replayed from `min(S, G)`,
//!   records starting at or after `S` are evaluated, and firings of
//!   replayed records ending at or below the high-water mark (the end of the
//!   last live record whose firings were published) are dropped;
//! - a reload is loaded and compiled on its own thread, handed to the
//!   indexer over a channel and swapped in between two records, carrying
//!   over the state of rules whose content hash did not change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::builtin::{load_source, RuleSource};
use super::engine::{Engine, EngineOptions};
use super::live::FiringOut;
use super::load::{BadRules, RuleError};
use super::rule::Severity;
use super::snapshot::{self, Enc, HighWater};
use super::Firing;
use crate::telemetry::Metrics;
use crate::time::now_nanos;
use crate::wal::Position;

/// Quiet time after the last file event before a reload: editors and
/// `cp -r` produce bursts of events for one change.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long a snapshot waits for the alert stage to store the firings
/// published before it; past that it is deferred to the next commit round.
const STORE_WAIT: Duration = Duration::from_millis(250);
/// The longest a snapshot is put off for the alert stage.
const MAX_DEFERRAL: Duration = Duration::from_secs(30);

/// A snapshot rewrites the whole state, however little changed: with a
/// big state (54 MB after the 1M-line acceptance file, half a second of
/// encoding and writing) a fixed interval of 5 s spent a tenth of a core
/// on snapshots under steady load. So the gap after a snapshot is at least
/// this many times what it cost, which keeps snapshots under 5% of a core.
const SNAPSHOT_COST_FACTOR: u32 = 20;

/// The longest gap the cost may impose (a longer configured interval
/// still wins): it bounds the WAL a restart replays into the rules.
const MAX_COSTLY_GAP: Duration = Duration::from_secs(60);

/// One loaded rule, as `GET /api/v1/rules` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleInfo {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub kind: &'static str,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `file:line` of the rule's `id:`.
    pub source: String,
    /// Why a Sigma rule loaded disabled (a field access logs do not carry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
}

/// A compiled rule set, ready to be swapped in.
pub struct RuleSet {
    pub engine: Engine,
    pub rules: Vec<RuleInfo>,
    /// What `engine` was compiled from: a Kafka indexer compiles one
    /// engine per partition from the same specs.
    pub specs: Vec<super::RuleSpec>,
    pub options: EngineOptions,
}

/// Loads and compiles every rule of `dir` (without the embedded pack).
/// Errors are [`BadRules`] naming `file:line: reason` for each problem.
pub fn load_rule_set(dir: &Path, options: EngineOptions) -> Result<RuleSet, BadRules> {
    load_source_set(
        &RuleSource {
            builtin: false,
            dir: Some(dir.to_path_buf()),
        },
        options,
    )
}

/// Loads and compiles the rules of `source`: the embedded pack and/or a
/// directory ([`super::builtin::load_source`]).
pub fn load_source_set(source: &RuleSource, options: EngineOptions) -> Result<RuleSet, BadRules> {
    let loaded = load_source(source)?;
    let specs: Vec<_> = loaded.iter().map(|r| r.spec.clone()).collect();
    let engine = Engine::with_options(&specs, options).map_err(|(id, e)| {
        let at = loaded.iter().find(|r| r.spec.id == id);
        BadRules(vec![RuleError {
            file: at.map_or_else(
                || {
                    source
                        .dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(super::builtin::PREFIX))
                },
                |r| r.file.clone(),
            ),
            line: at.map_or(0, |r| r.line),
            message: format!("rule {id:?}: {}", e.message),
        }])
    })?;
    let rules = loaded
        .iter()
        .map(|r| {
            let source = format!("{}:{}", r.file.display(), r.line);
            let not_run = r.spec.labels.get(super::sigma::NOT_RUN_LABEL).cloned();
            if let Some(why) = &not_run {
                tracing::warn!(rule = %r.spec.id, %source, "Sigma rule loaded disabled: {why}");
            }
            RuleInfo {
                id: r.spec.id.clone(),
                title: r.spec.title.clone(),
                severity: r.spec.severity,
                kind: r.spec.detect.kind.as_str(),
                enabled: r.spec.enabled,
                tenant: r.spec.tenant.clone(),
                source,
                not_run,
            }
        })
        .collect();
    Ok(RuleSet {
        engine,
        rules,
        specs,
        options,
    })
}

/// What the API shows about the live rules: the set in use and how the last
/// reload went. Written by the indexer (swap) and the reloader (failure).
pub struct RulesStatus {
    dir: Option<PathBuf>,
    /// The embedded pack runs (under the directory's rules).
    builtin: bool,
    inner: Mutex<StatusInner>,
    /// Where reloads are recorded: a rule change is audited like one made
    /// through the API, though its author is whoever edited the files.
    audit: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
}

#[derive(Default)]
struct StatusInner {
    rules: Vec<RuleInfo>,
    loaded_at_unix_ms: Option<i64>,
    last_reload: Option<ReloadOutcome>,
    /// Per rule id, lines too late for every window (`RuleStats::too_late`),
    /// as of the last index commit.
    too_late: std::collections::HashMap<String, u64>,
}

#[derive(Clone, Serialize)]
struct ReloadOutcome {
    at_unix_ms: i64,
    ok: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

impl RulesStatus {
    pub fn new(dir: Option<PathBuf>) -> RulesStatus {
        RulesStatus {
            dir,
            builtin: false,
            inner: Mutex::new(StatusInner::default()),
            audit: std::sync::OnceLock::new(),
        }
    }

    /// The status of rules loaded from `source`.
    pub fn for_source(source: &RuleSource) -> RulesStatus {
        RulesStatus {
            builtin: source.builtin,
            ..RulesStatus::new(source.dir.clone())
        }
    }

    /// Records every later reload, accepted or rejected, in `log`.
    pub fn audit_to(&self, log: Arc<crate::audit::AuditLog>) {
        let _ = self.audit.set(log);
    }

    fn audit_reload(&self, status: u16, body: String) {
        let Some(log) = self.audit.get() else {
            return;
        };
        let record = crate::audit::Record {
            actor: "rules-dir".into(),
            method: "RELOAD".into(),
            path: self
                .dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            body,
            status,
            ..Default::default()
        };
        if let Err(e) = log.append(record) {
            tracing::error!(error = %format!("{e:#}"), "auditing a rule reload failed");
        }
    }

    /// The rules last published.
    pub(crate) fn rules(&self) -> Vec<RuleInfo> {
        self.inner
            .lock()
            .map(|s| s.rules.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_rules(&self, rules: Vec<RuleInfo>, reload: bool) {
        if let Ok(mut s) = self.inner.lock() {
            let now = now_nanos() / 1_000_000;
            s.rules = rules;
            s.loaded_at_unix_ms = Some(now);
            if reload {
                s.last_reload = Some(ReloadOutcome {
                    at_unix_ms: now,
                    ok: true,
                    errors: Vec::new(),
                });
            }
        }
    }

    fn reload_failed(&self, errors: Vec<String>) {
        self.audit_reload(400, format!("rejected: {}", errors.join("; ")));
        if let Ok(mut s) = self.inner.lock() {
            s.last_reload = Some(ReloadOutcome {
                at_unix_ms: now_nanos() / 1_000_000,
                ok: false,
                errors,
            });
        }
    }

    /// The live engine's counters per rule (the indexer, at commits).
    pub(crate) fn set_stats(&self, stats: &[super::RuleStats]) {
        if let Ok(mut s) = self.inner.lock() {
            s.too_late.clear();
            for st in stats {
                s.too_late.insert(st.id.clone(), st.too_late);
            }
        }
    }

    /// The body of `GET /api/v1/rules`. Rules are global, not tenant data.
    pub fn to_json(&self) -> serde_json::Value {
        let Ok(s) = self.inner.lock() else {
            return serde_json::json!({ "error": "rules status unavailable" });
        };
        let rules: Vec<serde_json::Value> = s
            .rules
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let (Some(map), true) = (v.as_object_mut(), r.enabled) {
                    let n = s.too_late.get(&r.id).copied().unwrap_or(0);
                    map.insert("lines_too_late".into(), n.into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "dir": self.dir.as_ref().map(|d| d.display().to_string()),
            "builtin": self.builtin,
            "loaded": s.rules.iter().filter(|r| r.enabled).count(),
            "loaded_at_unix_ms": s.loaded_at_unix_ms,
            "last_reload": s.last_reload,
            "rules": rules,
        })
    }
}

/// The indexer thread's side of persistence and reloads.
pub struct LiveState {
    hwm: HighWater,
    /// Records starting below this are already in the restored state.
    evaluate_from: Position,
    /// Replayed records ending at or below this published their firings
    /// before the restart.
    suppress_through: Position,
    /// The end of the last record whose firings this process published.
    fired_through: Position,
    /// Since when snapshots wait for the alert stage to store firings.
    deferred_since: Option<Instant>,
    /// Where the WAL replay has to start for the rules.
    replay_from: Position,
    /// State changed since the last snapshot.
    dirty: bool,
    /// Least time between two snapshots: a snapshot rewrites the whole
    /// state, and the replay covers whatever happened since the last one.
    interval: Duration,
    last_write: Option<Instant>,
    /// What the last snapshot cost: its encoding here and its write on
    /// the snapshot thread (wall time), for [`LiveState::snapshot_gap`].
    last_cost: Duration,
    /// The encoding time of the snapshot being written.
    encoding: Duration,
    /// Position of the snapshot on disk, while the WAL must keep what
    /// follows it; `None` after a failed write (stop holding the WAL).
    snapshot_pos: Option<Position>,
    /// The WAL's deletion floor, read by the sequencer: the index
    /// checkpoint, held back to the snapshot position.
    wal_floor: Arc<AtomicU64>,
    enc: Enc,
    /// The restored counters reached the status once.
    stats_published: bool,
    writer: SnapshotWriter,
    reloads: Receiver<RuleSet>,
    status: Arc<RulesStatus>,
    metrics: Arc<Metrics>,
}

impl LiveState {
    /// Restores `set`'s engine from `DATA_DIR/rules/state.snapshot` (a
    /// missing or unusable snapshot means empty state, with a warning) and
    /// works out the replay. `checkpoint` is the index checkpoint the WAL
    /// replay would start from; `wal` tells whether an older snapshot
    /// position is still readable.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        data_dir: &Path,
        set: &mut RuleSet,
        checkpoint: Position,
        wal: &crate::wal::Wal,
        interval: Duration,
        wal_floor: Arc<AtomicU64>,
        reloads: Receiver<RuleSet>,
        status: Arc<RulesStatus>,
        metrics: Arc<Metrics>,
    ) -> Result<LiveState> {
        let dir = data_dir.join("rules");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating rule state dir {}", dir.display()))?;
        let hwm = HighWater::open(&snapshot::hwm_path(&dir))?;
        let mut evaluate_from = 0;
        let mut replay_from = checkpoint;
        let mut snapshot_pos = None;
        let path = snapshot::snapshot_path(&dir);
        match snapshot::read(&path) {
            Ok(None) => tracing::info!("no rule state snapshot: rules start empty"),
            Ok(Some(loaded)) => match set
                .engine
                .restore_state_version(&loaded.state, loaded.version)
            {
                Ok(carried) => {
                    tracing::info!(
                        position = loaded.position,
                        kept = carried.kept.len(),
                        fresh = ?carried.fresh,
                        dropped = ?carried.dropped,
                        "rule state restored from snapshot"
                    );
                    evaluate_from = loaded.position;
                    snapshot_pos = Some(loaded.position);
                    if loaded.position < checkpoint {
                        // Only when writing the snapshot failed while the
                        // checkpoint moved on: evaluate the gap again if the
                        // WAL still has it.
                        // A position at the end of a deleted segment is the
                        // next segment's base, which `read_from` accepts.
                        let wal_start = wal.start_position();
                        if loaded.position >= wal_start || wal.read_from(loaded.position).is_ok() {
                            replay_from = loaded.position;
                        } else {
                            snapshot_pos = None;
                            tracing::warn!(
                                snapshot = loaded.position,
                                wal_start,
                                "rule snapshot is older than the WAL: lines in between are missing from the windows"
                            );
                        }
                    }
                }
                Err(e) => {
                    metrics.rules.snapshot_failures.inc();
                    tracing::warn!(path = %path.display(), error = %e, "unusable rule state snapshot: rules start empty");
                }
            },
            Err(e) => {
                metrics.rules.snapshot_failures.inc();
                tracing::warn!(error = %e, "unusable rule state snapshot: rules start empty");
            }
        }
        metrics.rules.loaded.set(set.engine.rule_count() as i64);
        status.set_rules(set.rules.clone(), false);
        Ok(LiveState {
            suppress_through: hwm.get(),
            fired_through: 0,
            deferred_since: None,
            hwm,
            evaluate_from,
            replay_from,
            dirty: false,
            interval,
            last_write: None,
            last_cost: Duration::ZERO,
            encoding: Duration::ZERO,
            snapshot_pos,
            wal_floor,
            enc: Enc::default(),
            stats_published: false,
            writer: SnapshotWriter::spawn(snapshot::snapshot_path(&dir))?,
            reloads,
            status,
            metrics,
        })
    }

    /// Where the WAL replay must start (at or below the index checkpoint).
    pub fn replay_from(&self) -> Position {
        self.replay_from
    }

    /// Whether the rules see the record starting at `start`: not if the
    /// restored state already holds it.
    pub fn evaluates(&self, start: Position) -> bool {
        start >= self.evaluate_from
    }

    /// Called after a record's lines went through the engine, before its
    /// firings are published: a replayed record whose firings were
    /// published before the restart has them dropped here. Returns whether
    /// firings remain to publish.
    pub fn after_record(&mut self, end: Position, live: bool, firings: &mut Vec<Firing>) -> bool {
        self.dirty = true;
        if !live && end <= self.suppress_through && !firings.is_empty() {
            self.metrics
                .rules
                .replay_suppressed
                .add(firings.len() as u64);
            for f in firings.drain(..) {
                tracing::debug!(rule = %f.rule_id, key = %f.key, "firing of a replayed record suppressed: published before the restart");
            }
        }
        !firings.is_empty()
    }

    /// Called once a record's firings are handed to `out`. The high-water
    /// mark (a restart does not publish them again) follows when the
    /// stage has them on disk: before that, a crash would lose them.
    pub fn published(&mut self, end: Position, out: Option<&dyn FiringOut>) {
        self.fired_through = self.fired_through.max(end);
        if let Some(out) = out {
            out.sent_through(end);
        }
        self.follow_store(out);
    }

    /// Whether firings this process published are not yet all covered by
    /// the high-water mark.
    pub fn awaits_store(&self) -> bool {
        self.fired_through > self.hwm.get()
    }

    /// Moves the high-water mark up to what the alert stage has stored of
    /// the firings published (all of them, for a stage that does not say).
    pub fn follow_store(&mut self, out: Option<&dyn FiringOut>) {
        let stored = out
            .and_then(|out| out.stored_through())
            .unwrap_or(Position::MAX);
        let mark = self.fired_through.min(stored);
        if mark <= self.hwm.get() {
            return;
        }
        if let Err(e) = self.hwm.advance(mark) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the firing high-water mark; a restart may repeat firings");
        }
    }

    /// Asks the alert stage to store every firing published and waits up
    /// to `wait` for it; then the high-water mark follows. Returns whether
    /// they are all stored.
    pub fn wait_for_store(&mut self, out: Option<&dyn FiringOut>, wait: Duration) -> bool {
        let Some(out) = out else { return true };
        let stored = || out.stored_through().unwrap_or(Position::MAX);
        if stored() < self.fired_through {
            out.store_soon(self.fired_through);
            let deadline = Instant::now() + wait;
            while stored() < self.fired_through && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.follow_store(Some(out));
        stored() >= self.fired_through
    }

    /// Whether a snapshot may be taken now: not past a firing that is
    /// neither stored nor would be evaluated again after a crash (the
    /// replay starts at the snapshot). The first time the stage lags it is
    /// waited for up to [`STORE_WAIT`]; while it keeps lagging the
    /// snapshot is put off without waiting again, and after
    /// [`MAX_DEFERRAL`] taken anyway: a broken alert store must not stop
    /// the snapshots, which would hold the WAL back without end.
    fn firings_stored(&mut self, out: Option<&dyn FiringOut>) -> bool {
        let wait = if self.deferred_since.is_some() {
            Duration::ZERO
        } else {
            STORE_WAIT
        };
        if self.wait_for_store(out, wait) {
            self.deferred_since = None;
            return true;
        }
        let since = *self.deferred_since.get_or_insert_with(Instant::now);
        if since.elapsed() < MAX_DEFERRAL {
            return false;
        }
        tracing::warn!(
            waited_secs = since.elapsed().as_secs(),
            "the alert stage has not stored the latest firings; rule snapshot taken anyway (a crash now may lose those alerts)"
        );
        self.deferred_since = None;
        true
    }

    /// Snapshots the engine's state as of WAL position `position`
    /// (everything the engine saw ends at or below it) if it changed and the
    /// interval has passed. Encoding happens here, between two records; the
    /// write and fsync on the snapshot thread. Failures are logged and
    /// counted, never fatal: rules must not stop ingest.
    pub fn snapshot(
        &mut self,
        engine: &mut Engine,
        position: Position,
        out: Option<&dyn FiringOut>,
    ) {
        self.collect_written();
        self.metrics.rules.keys_evicted.add(engine.take_evicted());
        self.publish_stats(engine);
        if engine.take_ticked() {
            self.dirty = true;
        }
        if !self.dirty
            || self.writer.in_flight.is_some()
            || self
                .last_write
                .is_some_and(|t| t.elapsed() < self.snapshot_gap())
        {
            return;
        }
        if !self.firings_stored(out) {
            self.metrics.rules.snapshots_deferred.inc();
            return; // at the next commit round
        }
        let started = Instant::now();
        self.last_write = Some(started);
        self.enc.buf.clear();
        engine.encode_state(&mut self.enc);
        self.encoding = started.elapsed();
        // Firings up to here are published; the mark goes to disk with the
        // snapshot at the latest.
        if let Err(e) = self.hwm.sync() {
            tracing::warn!(error = %format!("{e:#}"), "syncing the firing high-water mark failed");
        }
        let state = std::mem::take(&mut self.enc.buf);
        match self.writer.submit(position, state) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                self.snapshot_pos = None;
                self.metrics.rules.snapshot_failures.inc();
                tracing::warn!(error = %e, "rule state snapshot thread is gone");
            }
        }
    }

    /// Least time from one snapshot to the next: the configured interval,
    /// or [`SNAPSHOT_COST_FACTOR`] times what the last one cost, up to
    /// [`MAX_COSTLY_GAP`].
    fn snapshot_gap(&self) -> Duration {
        let costly = (self.last_cost * SNAPSHOT_COST_FACTOR).min(MAX_COSTLY_GAP);
        self.interval.max(costly)
    }

    /// Lines too late per rule and sources behind, for the metrics, the
    /// status and `GET /api/v1/rules`: left out of detection, never silently.
    fn publish_stats(&mut self, engine: &mut Engine) {
        let too_late = engine.take_too_late();
        if !too_late.is_empty() || !self.stats_published {
            self.stats_published = true;
            for (id, n) in &too_late {
                self.metrics.rules.lines_too_late.add(id, *n);
            }
            self.status.set_stats(&engine.stats());
        }
        const MINUTE: i64 = 60_000_000_000;
        let (behind, lag) = engine.sources_behind(MINUTE, now_nanos() - 10 * MINUTE);
        self.metrics.rules.sources_behind.set(behind as i64);
        self.metrics
            .rules
            .source_lag_max_secs
            .set(lag / 1_000_000_000);
    }

    /// Has the next [`LiveState::snapshot`] write, whatever the interval:
    /// a purge must not leave the tenant's state on disk for long.
    pub fn rewrite_soon(&mut self) {
        self.dirty = true;
        self.last_write = None;
    }

    /// Takes in the outcome of finished snapshot writes.
    fn collect_written(&mut self) {
        while let Some(done) = self.writer.finished() {
            self.last_cost = self.encoding + done.took;
            match done.result {
                Ok(bytes) => {
                    self.snapshot_pos = Some(done.position);
                    self.metrics.rules.snapshot_writes.inc();
                    self.metrics.rules.snapshot_bytes.set(bytes as i64);
                }
                Err(e) => {
                    // Holding the WAL for a snapshot that cannot be written
                    // would fill the disk; a restart then uses the older
                    // one with a gap (logged at start). Retried next time.
                    self.snapshot_pos = None;
                    self.dirty = true;
                    self.metrics.rules.snapshot_failures.inc();
                    tracing::warn!(error = %e, "writing the rule state snapshot failed");
                }
            }
            // A big state should not pin its peak memory between snapshots.
            if done.state.capacity() <= 64 << 20 {
                self.enc.buf = done.state;
            }
        }
    }

    /// Called after the index checkpoint `checkpoint` is on disk: WAL
    /// segments may go up to it, but not past the snapshot, whose replay
    /// needs what follows it.
    pub fn retain(&self, checkpoint: Position) {
        // A snapshot being written counts as soon as it is submitted: the
        // WAL after it must survive until it is on disk.
        let keep = self.snapshot_pos.or(self.writer.in_flight);
        let floor = keep.map_or(checkpoint, |s| s.min(checkpoint));
        self.wal_floor.store(floor, Ordering::Release);
    }

    /// Swaps in a rule set the reloader prepared, if one is waiting. Runs
    /// between two records, so every line is evaluated by exactly one
    /// engine.
    pub fn poll_reload(&mut self, engine: &mut Engine) {
        // Only the newest set matters if several queued up.
        let mut latest = None;
        while let Ok(set) = self.reloads.try_recv() {
            latest = Some(set);
        }
        let Some(mut set) = latest else { return };
        let carried = set.engine.adopt_state(engine);
        std::mem::swap(engine, &mut set.engine);
        self.dirty = true;
        reloaded(&self.status, &self.metrics, set.rules, &carried);
    }
}

/// Publishes a swapped-in rule set: status, metrics, log.
pub(crate) fn reloaded(
    status: &RulesStatus,
    metrics: &Metrics,
    rules: Vec<RuleInfo>,
    carried: &super::Carried,
) {
    let enabled = rules.iter().filter(|r| r.enabled).count();
    metrics.rules.loaded.set(enabled as i64);
    metrics.rules.reload_attempted(true);
    // Rules whose windows were kept but whose title, severity or switch
    // changed: lowering a severity pages fewer people, and the audit must
    // say so (the state's own diff does not see it).
    let before = status.rules();
    let edited: Vec<&str> = rules
        .iter()
        .filter(|r| carried.kept.contains(&r.id))
        .filter(|r| {
            before.iter().find(|b| b.id == r.id).is_some_and(|b| {
                (&b.title, b.severity, b.enabled, &b.tenant)
                    != (&r.title, r.severity, r.enabled, &r.tenant)
            })
        })
        .map(|r| r.id.as_str())
        .collect();
    status.audit_reload(
        200,
        format!(
            "new or changed: {:?}; removed or changed: {:?}; edited (title, severity, \
             enabled; windows kept): {:?}; unchanged: {}",
            carried.fresh,
            carried.dropped,
            edited,
            carried.kept.len() - edited.len()
        ),
    );
    status.set_rules(rules, true);
    tracing::info!(
        rules = enabled,
        kept = ?carried.kept,
        fresh = ?carried.fresh,
        dropped = ?carried.dropped,
        "detection rules reloaded"
    );
}

/// The snapshot thread: writes one snapshot at a time (temp file, fsync,
/// rename), so the indexer thread never waits for the disk.
struct SnapshotWriter {
    jobs: Option<SyncSender<(Position, Vec<u8>)>>,
    done: Receiver<Written>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Position of the snapshot being written.
    in_flight: Option<Position>,
}

struct Written {
    position: Position,
    /// How long the write and its fsync took.
    took: Duration,
    result: Result<u64, String>,
    /// The encoded state, handed back for reuse.
    state: Vec<u8>,
}

impl SnapshotWriter {
    fn spawn(path: PathBuf) -> Result<SnapshotWriter> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<(Position, Vec<u8>)>(1);
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nightowl-rules-snapshot".into())
            .spawn(move || {
                let mut file_buf = Vec::new();
                while let Ok((position, state)) = rx.recv() {
                    let started = Instant::now();
                    let result =
                        snapshot::write(&path, position, now_nanos(), &state, &mut file_buf)
                            .map_err(|e| format!("{e:#}"));
                    if file_buf.capacity() > 64 << 20 {
                        file_buf = Vec::new();
                    }
                    if tx
                        .send(Written {
                            position,
                            took: started.elapsed(),
                            result,
                            state,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .context("starting the rule snapshot thread")?;
        Ok(SnapshotWriter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: None,
        })
    }

    fn submit(&mut self, position: Position, state: Vec<u8>) -> Result<(), &'static str> {
        let jobs = self.jobs.as_ref().ok_or("stopped")?;
        jobs.send((position, state)).map_err(|_| "stopped")?;
        self.in_flight = Some(position);
        Ok(())
    }

    fn finished(&mut self) -> Option<Written> {
        let done = self.done.try_recv().ok()?;
        self.in_flight = None;
        Some(done)
    }
}

impl Drop for SnapshotWriter {
    /// Lets a snapshot submitted by the last commit reach the disk before
    /// the collector exits.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct Reloader {
    trigger: Sender<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    /// Asks for a reload (SIGHUP).
    pub fn trigger(&self) -> Sender<()> {
        self.trigger.clone()
    }
}

/// Starts the reload thread: on a trigger (SIGHUP, or a change of a
/// `*.yaml`/`*.yml` file under the source's directory when `watch` is
/// set), after [`DEBOUNCE`] of quiet, loads and compiles the source (the
/// embedded pack, which cannot change, with the directory); a good set
/// goes to the indexer, a bad one is logged file:line:reason and counted,
/// and the old rules stay.
pub fn spawn_reloader(
    source: RuleSource,
    options: EngineOptions,
    watch: bool,
    to_indexer: SyncSender<RuleSet>,
    status: Arc<RulesStatus>,
    metrics: Arc<Metrics>,
) -> Result<Reloader> {
    let (trigger, triggers) = std::sync::mpsc::channel::<()>();
    let watcher = match &source.dir {
        Some(dir) if watch => watch_dir(dir, trigger.clone()),
        _ => None,
    };
    std::thread::Builder::new()
        .name("nightowl-rules-reload".into())
        .spawn(move || {
            while triggers.recv().is_ok() {
                loop {
                    match triggers.recv_timeout(DEBOUNCE) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                match load_source_set(&source, options) {
                    Ok(set) => {
                        if to_indexer.send(set).is_err() {
                            return; // the indexer is gone: shutting down
                        }
                    }
                    Err(bad) => {
                        metrics.rules.reload_attempted(false);
                        for e in &bad.0 {
                            tracing::error!(error = %e, "rule reload rejected; the previous rules stay active");
                        }
                        status.reload_failed(bad.0.iter().map(|e| e.to_string()).collect());
                    }
                }
            }
        })
        .context("starting the rule reload thread")?;
    Ok(Reloader {
        trigger,
        _watcher: watcher,
    })
}

/// Watches `dir` for rule file changes. Without inotify the collector still
/// reloads on SIGHUP, so a failure is a warning.
fn watch_dir(dir: &Path, trigger: Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    // Rule files, and the `..data` symlink a Kubernetes ConfigMap volume
    // swaps atomically (its events never name a `*.yaml` path).
    let is_rule_file = |p: &PathBuf| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) || p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".."))
    };
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading the files (our own reload) shows up as access events.
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if event.paths.iter().any(is_rule_file) {
                let _ = trigger.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the rules dir; reload with SIGHUP");
                return None;
            }
        };
    // Recursive: rules in sub-directories load too (`rules/sigma/`).
    if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the rules dir; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}

/// Installs the SIGHUP handler now (so a SIGHUP right after start does
/// not hit the default action, which ends the process) and returns the
/// task that forwards each SIGHUP to `trigger`. With no rules dir, SIGHUP
/// is logged and ignored.
pub fn forward_sighup(
    trigger: Option<Sender<()>>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    Ok(async move {
        while hup.recv().await.is_some() {
            match &trigger {
                Some(t) => {
                    tracing::info!("SIGHUP: reloading detection rules");
                    let _ = t.send(());
                }
                None => tracing::info!("SIGHUP ignored: no rules dir configured"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, Format, ParseContext};
    use crate::wal::{Wal, WalOptions};

    const BRUTE: &str = "id: brute\ntitle: b\nseverity: critical\n\
        match: {field: status, equals: 401}\n\
        detect: {kind: threshold, key: client_ip, window: 5m, count: 3}\n";

    struct Fixture {
        root: tempfile::TempDir,
        rules: PathBuf,
        wal: Wal,
        metrics: Arc<Metrics>,
        floor: Arc<AtomicU64>,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let rules = root.path().join("rules-src");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("brute.yaml"), BRUTE).unwrap();
        let wal = Wal::open(
            &root.path().join("wal"),
            WalOptions {
                segment_bytes: 1 << 20,
            },
        )
        .unwrap();
        Fixture {
            root,
            rules,
            wal,
            metrics: Arc::new(Metrics::default()),
            floor: Arc::new(AtomicU64::new(0)),
        }
    }

    impl Fixture {
        fn open(&self, checkpoint: Position) -> (LiveState, Engine, SyncSender<RuleSet>) {
            let mut set = load_rule_set(&self.rules, EngineOptions::default()).unwrap();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let live = LiveState::open(
                self.root.path(),
                &mut set,
                checkpoint,
                &self.wal,
                Duration::ZERO,
                Arc::clone(&self.floor),
                rx,
                Arc::new(RulesStatus::new(Some(self.rules.clone()))),
                Arc::clone(&self.metrics),
            )
            .unwrap();
            (live, set.engine, tx)
        }
    }

    fn fail_from(e: &mut Engine, ip: &str, out: &mut Vec<Firing>) {
        let line = format!(
            "{ip} - - [10/Oct/2024:12:00:00 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"x\""
        );
        let line = line.as_str();
        let ctx = ParseContext { now_nanos: 0 };
        let ev = parse_line(line.as_bytes(), Format::Auto, &ctx).unwrap();
        e.evaluate(&ev, line, 1_730_000_000_000_000_000, "default", out);
    }

    fn fail(e: &mut Engine, out: &mut Vec<Firing>) {
        fail_from(e, "1.2.3.4", out)
    }

    /// Commits until the snapshot thread's write has been taken in.
    fn settle(live: &mut LiveState, engine: &mut Engine, position: Position) {
        for _ in 0..500 {
            live.snapshot(engine, position, None);
            if live.writer.in_flight.is_none() && !live.dirty {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("snapshot never completed");
    }

    #[test]
    fn a_costly_snapshot_spaces_the_next_one() {
        let f = fixture();
        let (mut live, mut engine, _tx) = f.open(0);
        let mut out = Vec::new();
        fail(&mut engine, &mut out);
        live.after_record(100, true, &mut out);
        settle(&mut live, &mut engine, 100);
        assert_eq!(f.metrics.rules.snapshot_writes.get(), 1);

        // As if that write had taken 2 s: the next waits 40 s, though the
        // configured interval is zero.
        live.last_cost = Duration::from_secs(2);
        assert_eq!(live.snapshot_gap(), Duration::from_secs(40));
        fail(&mut engine, &mut out);
        live.after_record(200, true, &mut out);
        live.snapshot(&mut engine, 200, None);
        assert!(
            live.writer.in_flight.is_none(),
            "no snapshot within the gap"
        );
        assert!(live.dirty, "the change waits for the next snapshot");

        // A cheap one leaves the interval in charge.
        live.last_cost = Duration::ZERO;
        settle(&mut live, &mut engine, 200);
        assert_eq!(f.metrics.rules.snapshot_writes.get(), 2);

        // However costly, the gap stays bounded: it is the replay's bound.
        live.last_cost = Duration::from_secs(3600);
        assert_eq!(live.snapshot_gap(), MAX_COSTLY_GAP);
    }

    #[test]
    fn restart_contract_positions_and_suppression() {
        let f = fixture();
        let (mut live, mut engine, _tx) = f.open(100);
        // No snapshot: every replayed record is evaluated, from G.
        assert_eq!(live.replay_from(), 100);
        assert!(live.evaluates(0));

        let mut out = Vec::new();
        fail(&mut engine, &mut out);
        assert!(!live.after_record(150, true, &mut out));
        fail(&mut engine, &mut out);
        fail(&mut engine, &mut out);
        assert!(
            live.after_record(200, true, &mut out),
            "third failure fires"
        );
        out.clear();
        live.published(200, None);
        settle(&mut live, &mut engine, 200);
        assert_eq!(f.metrics.rules.snapshot_writes.get(), 1);
        live.retain(180);
        assert_eq!(f.floor.load(Ordering::Acquire), 180, "G below S: G");
        live.retain(250);
        assert_eq!(f.floor.load(Ordering::Acquire), 200, "held at S");
        drop(live);

        // Restart with G = 120 < S = 200: replay from 120, evaluate from 200.
        let (mut live, mut engine, _tx) = f.open(120);
        assert_eq!(live.replay_from(), 120);
        assert!(!live.evaluates(199) && live.evaluates(200));
        // The restored key is still suppressed after its firing.
        let mut out = Vec::new();
        fail(&mut engine, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A replayed record at or below H loses its firings; above, not.
        for _ in 0..3 {
            fail_from(&mut engine, "5.6.7.8", &mut out);
        }
        assert_eq!(out.len(), 1);
        let mut replayed = out.clone();
        assert!(!live.after_record(200, false, &mut replayed));
        assert!(replayed.is_empty());
        assert_eq!(f.metrics.rules.replay_suppressed.get(), 1);
        assert!(
            live.after_record(201, false, &mut out),
            "beyond H: published"
        );
    }

    /// An alert stage that stores what it was sent only when told.
    #[derive(Default)]
    struct SlowStage {
        sent: AtomicU64,
        stored: AtomicU64,
        asked: AtomicU64,
    }

    impl FiringOut for SlowStage {
        fn send(&self, _firing: Firing) {}
        fn sent_through(&self, end: Position) {
            self.sent.fetch_max(end, Ordering::SeqCst);
        }
        fn stored_through(&self) -> Option<Position> {
            Some(self.stored.load(Ordering::SeqCst))
        }
        fn store_soon(&self, through: Position) {
            self.asked.store(through, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_high_water_mark_and_the_snapshot_wait_for_the_alert_store() {
        let f = fixture();
        let (mut live, mut engine, _tx) = f.open(0);
        let stage = SlowStage::default();
        let mut out = Vec::new();
        for _ in 0..3 {
            fail(&mut engine, &mut out);
        }
        assert!(
            live.after_record(300, true, &mut out),
            "third failure fires"
        );
        live.published(300, Some(&stage));
        assert_eq!(stage.sent.load(Ordering::SeqCst), 300);
        // Only in the queue: a crash now must replay the record's firing.
        assert_eq!(live.hwm.get(), 0);
        // Nor may a snapshot pass it: after a crash the replay would start
        // above the record.
        live.snapshot(&mut engine, 300, Some(&stage));
        assert_eq!(
            stage.asked.load(Ordering::SeqCst),
            300,
            "the stage was asked to hurry"
        );
        assert_eq!(f.metrics.rules.snapshots_deferred.get(), 1);
        assert!(live.dirty && live.writer.in_flight.is_none(), "no snapshot");
        // While it lags, the next rounds put the snapshot off at once.
        let started = Instant::now();
        live.snapshot(&mut engine, 300, Some(&stage));
        assert_eq!(f.metrics.rules.snapshots_deferred.get(), 2);
        assert!(started.elapsed() < STORE_WAIT, "waited again");
        // Another record fires; the store has only the first: the mark
        // stops at what is stored.
        for _ in 0..3 {
            fail_from(&mut engine, "5.6.7.8", &mut out);
        }
        assert!(live.after_record(500, true, &mut out));
        live.published(500, Some(&stage));
        stage.stored.store(300, Ordering::SeqCst);
        live.follow_store(Some(&stage));
        assert_eq!(live.hwm.get(), 300);
        assert!(live.awaits_store());
        // All stored: the mark follows, and the snapshot is taken.
        stage.stored.store(500, Ordering::SeqCst);
        live.follow_store(Some(&stage));
        assert_eq!(live.hwm.get(), 500);
        assert!(!live.awaits_store());
        live.snapshot(&mut engine, 500, Some(&stage));
        assert!(!live.dirty, "snapshot taken once the firings are stored");
    }

    #[test]
    fn reload_swaps_between_records_and_keeps_unchanged_state() {
        let f = fixture();
        let (mut live, mut engine, tx) = f.open(0);
        let mut out = Vec::new();
        fail(&mut engine, &mut out);
        fail(&mut engine, &mut out);
        std::fs::write(
            f.rules.join("probe.yaml"),
            "id: probe\ntitle: p\nseverity: info\ndetect: {kind: match}\n",
        )
        .unwrap();
        tx.send(load_rule_set(&f.rules, EngineOptions::default()).unwrap())
            .unwrap();
        live.poll_reload(&mut engine);
        assert_eq!(engine.rule_count(), 2);
        assert_eq!(f.metrics.rules.reloads.get(), 1);
        assert_eq!(f.metrics.rules.loaded.get(), 2);
        let listed = live.status.to_json();
        assert_eq!(listed["loaded"], 2);
        assert_eq!(listed["last_reload"]["ok"], true);
        fail(&mut engine, &mut out);
        assert!(
            out.iter().any(|x| x.rule_id == "brute" && x.count == 3),
            "2 before + 1 after the swap: {out:?}"
        );
    }

    #[test]
    fn a_bad_rule_set_names_file_and_line() {
        let f = fixture();
        std::fs::write(f.rules.join("bad.yaml"), "id: x\ntitle: t\nbogus: 1\n").unwrap();
        let Err(bad) = load_rule_set(&f.rules, EngineOptions::default()) else {
            panic!("must fail");
        };
        let text = bad.to_string();
        assert!(text.contains("bad.yaml:3"), "{text}");
    }
}
