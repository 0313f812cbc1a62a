//! Online, consistent, incremental backups (docs/backup.md).
//!
//! Not a pipeline stage: like the API, an administrative service over all
//! of them. A backup is
//!
//! 1. a **cut** taken by the indexer between two records, after a commit
//!    (`index/cut.rs`): every partition's committed files (hard links), the
//!    checkpoint, the rule and pattern state, all as of one WAL position
//!    `G`. Every line acked below `G` is in it; no WAL is needed, a
//!    restore starts a new log at `G`;
//! 2. consistent copies of the other stores: the alert store (one redb
//!    read transaction), the audit log and its checkpoints up to their
//!    lengths under the log's lock, with the tenant keys of that moment;
//!    tokens, tenants, TLS material;
//! 3. every file stored once by its SHA-256 under `blobs/` (a file the
//!    destination already has is not copied again: tantivy never changes a
//!    segment file, so an incremental backup copies new segments only),
//!    then the manifest, written last: a backup without one does not exist.
//!
//! Ingest and search go on throughout; the indexer pauses only for the
//! links. The CLI side (restore, verify, list) is `restore.rs`; the
//! schedule and its pages `schedule.rs`; purges reaching the backups
//! `purge.rs`.

pub mod cli;
pub mod dest;
pub mod purge;
pub mod restore;
pub mod schedule;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub use dest::Dest;
use dest::{blob_key_of, blob_name, Throttle};

use crate::index::Catalog;
use crate::telemetry::Metrics;
use crate::time::{format_rfc3339, now_nanos, NANOS_PER_SEC};

/// `[backup]` in the collector's config. Nothing runs by itself unless
/// `to` and `schedule` are both set; `nightowl backup create` works
/// either way.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where scheduled backups go: a directory, or `s3://BUCKET/PREFIX`
    /// (credentials, region and endpoint from the `AWS_*` variables).
    pub to: Option<String>,
    /// When: `daily 02:00` (UTC), `hourly`, or `every 6h` / `every 30m`.
    pub schedule: Option<String>,
    /// How many backups to keep at `to` (oldest deleted after a success,
    /// with the blobs no kept backup uses). Default: all.
    pub keep: Option<usize>,
    /// Read and write at most this many bytes per second (0: no limit),
    /// so a backup leaves the disk to ingest and search.
    pub max_bytes_per_sec: u64,
}

pub const MANIFEST_FORMAT: u32 = 1;

/// `backups/<id>/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub started: String,
    pub finished: String,
    pub version: String,
    /// Every partition holds exactly the WAL records below this; the
    /// restored WAL starts here.
    pub wal_position: u64,
    /// The data dir backed up, and where its audit key was (the key is
    /// never in a backup: a restore on the same host finds it there).
    pub data_dir: String,
    #[serde(default)]
    pub audit_key: Option<String>,
    pub files: Vec<ManifestFile>,
    pub partitions: Vec<ManifestPartition>,
    /// Per-source offsets at the cut: `tenant/agent/source` → byte offset.
    pub sources: BTreeMap<String, u64>,
    pub bytes: u64,
    pub bytes_copied: u64,
    pub files_copied: u64,
    /// Tenants purged since, and what that removed from this backup.
    #[serde(default)]
    pub purged: Vec<purge::PurgeNote>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the data dir.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
    /// The tenant whose lines it holds (index files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Stored as one zstd frame (blob name `<sha256>.zst`); the SHA-256 is
    /// the content's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zstd: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestPartition {
    pub tenant: String,
    pub dir: String,
    pub docs: u64,
}

pub fn manifest_key(id: &str) -> String {
    format!("backups/{id}/manifest.json")
}

fn started_key(id: &str) -> String {
    format!("backups/{id}/started.json")
}

/// What a destination holds: complete backups (oldest first) and the ids
/// of interrupted ones (a `started.json` and no manifest).
pub struct Listing {
    pub complete: Vec<String>,
    pub incomplete: Vec<String>,
}

pub async fn list_backups(dest: &Dest) -> Result<Listing> {
    let keys = dest.list("backups/").await?;
    let mut complete = Vec::new();
    let mut started = Vec::new();
    for key in &keys {
        let Some(rest) = key.strip_prefix("backups/") else {
            continue;
        };
        match rest.split_once('/') {
            Some((id, "manifest.json")) => complete.push(id.to_string()),
            Some((id, "started.json")) => started.push(id.to_string()),
            _ => {}
        }
    }
    let incomplete = started
        .into_iter()
        .filter(|id| !complete.contains(id))
        .collect();
    complete.sort();
    Ok(Listing {
        complete,
        incomplete,
    })
}

pub async fn load_manifest(dest: &Dest, id: &str) -> Result<Manifest> {
    let key = manifest_key(id);
    let bytes = dest
        .get(&key)
        .await?
        .ok_or_else(|| anyhow!("{}: no backup {id} (no {key})", dest.describe()))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: parsing {key}", dest.describe()))?;
    if manifest.format != MANIFEST_FORMAT {
        bail!(
            "{}: {key} has format {}, this build reads {MANIFEST_FORMAT}",
            dest.describe(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// One line of a backup's NDJSON progress stream (`POST
/// /api/v1/admin/backup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        id: String,
        to: String,
        wal_position: u64,
        files: u64,
        bytes: u64,
    },
    Progress {
        files_done: u64,
        files: u64,
        bytes_done: u64,
        bytes: u64,
        bytes_copied: u64,
    },
    Done {
        summary: Summary,
    },
    Error {
        message: String,
    },
}

/// What a finished backup reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub to: String,
    pub wal_position: u64,
    pub files: u64,
    pub bytes: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub partitions: u64,
    pub docs: u64,
    pub duration_ms: u64,
    /// Backups deleted by `keep`, and blobs no kept backup used.
    pub pruned_backups: u64,
    pub pruned_blobs: u64,
    pub sources: BTreeMap<String, u64>,
}

/// The last run, for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LastRun {
    pub id: Option<String>,
    pub to: Option<String>,
    pub finished_unix: Option<i64>,
    pub ok: Option<bool>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    pub bytes: Option<u64>,
    pub bytes_copied: Option<u64>,
    pub next_unix: Option<i64>,
}

/// The collector's backup service: runs backups (one at a time), keeps
/// their outcome, pages when a scheduled one fails or is missed.
pub struct Backups {
    pub(crate) data_dir: PathBuf,
    catalog: Arc<Catalog>,
    alerts: Option<Arc<crate::alert::service::AlertService>>,
    audit: Arc<crate::audit::AuditLog>,
    pub(crate) metrics: Arc<Metrics>,
    pub config: BackupConfig,
    /// Held for a whole run, and by a purge reaching the backups.
    pub(crate) lock: tokio::sync::Mutex<()>,
    pub(crate) last: std::sync::Mutex<LastRun>,
    pager: Option<crate::alert::service::FiringSink>,
    /// The live rule set, to rewrite a backup's rule state without a
    /// purged tenant; `None` without rules (the state is dropped then).
    rules: Option<purge::RuleEngineFactory>,
}

/// What a backup reads from and reports to.
pub struct Parts {
    pub catalog: Arc<Catalog>,
    pub alerts: Option<Arc<crate::alert::service::AlertService>>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub metrics: Arc<Metrics>,
    /// Where failed and missed scheduled backups are paged.
    pub pager: Option<crate::alert::service::FiringSink>,
    pub rules: Option<purge::RuleEngineFactory>,
}

/// Files a run copies: what the cut staged, prefixes of growing files,
/// bytes made in memory.
enum Source {
    File(PathBuf),
    Bytes(Bytes),
}

struct Item {
    path: String,
    source: Source,
    size: u64,
    mode: u32,
    tenant: Option<String>,
}

/// Files under the data dir a restore needs besides the stores: tokens,
/// tenants, the TLS material the agents trust, the ack-link key, and the
/// store id (so agents resend what this store acked after the cut).
const PLAIN_FILES: &[&str] = &[
    crate::ingest::STORE_ID_FILE,
    "tokens.json",
    "tenants.json",
    "admin.token",
    "tls/ca.pem",
    "tls/ca.key",
    "tls/server.pem",
    "tls/server.key",
    "alerting/ack.key",
];

/// A tantivy segment file (`<32 hex>.<ext>`): immutable once written, so
/// one of the same path and size in the previous backup is the same file.
fn immutable(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    path.starts_with("index/") && stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Backups {
    pub fn new(data_dir: &Path, config: BackupConfig, parts: Parts) -> Arc<Backups> {
        Arc::new(Backups {
            data_dir: data_dir.to_path_buf(),
            catalog: parts.catalog,
            alerts: parts.alerts,
            audit: parts.audit,
            metrics: parts.metrics,
            config,
            lock: tokio::sync::Mutex::new(()),
            last: std::sync::Mutex::new(LastRun::default()),
            pager: parts.pager,
            rules: parts.rules,
        })
    }

    pub fn last_run(&self) -> LastRun {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Runs one backup to `dest`, then keeps the newest `keep`. Progress
    /// goes to `events` (if any); the outcome is counted and kept for
    /// `status`. A scheduled run that fails pages.
    pub async fn run(
        &self,
        dest: &Dest,
        keep: Option<usize>,
        scheduled: bool,
        events: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    ) -> Result<Summary> {
        let _one = self.lock.lock().await;
        self.metrics.backup.running.set(1);
        // A purge that could not reach a destination before goes first.
        self.retry_pending_purges().await;
        let started = Instant::now();
        let outcome = self.run_locked(dest, keep, events.as_ref()).await;
        self.metrics.backup.running.set(0);
        let now = now_nanos();
        let mut last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        last.to = Some(dest.describe());
        last.finished_unix = Some(now / NANOS_PER_SEC);
        match &outcome {
            Ok(summary) => {
                self.remember_destination(dest);
                self.metrics.backup.runs_ok.inc();
                self.metrics
                    .backup
                    .last_success_unix
                    .set(now / NANOS_PER_SEC);
                self.metrics
                    .backup
                    .last_duration_ms
                    .set(summary.duration_ms as i64);
                self.metrics.backup.last_bytes.set(summary.bytes as i64);
                self.metrics
                    .backup
                    .last_bytes_copied
                    .set(summary.bytes_copied as i64);
                last.id = Some(summary.id.clone());
                last.ok = Some(true);
                last.error = None;
                last.duration_ms = Some(summary.duration_ms);
                last.bytes = Some(summary.bytes);
                last.bytes_copied = Some(summary.bytes_copied);
                tracing::info!(
                    id = %summary.id, to = %summary.to, files = summary.files,
                    bytes = summary.bytes, copied = summary.bytes_copied,
                    ms = summary.duration_ms, "backup complete"
                );
            }
            Err(e) => {
                self.metrics.backup.runs_failed.inc();
                last.ok = Some(false);
                last.error = Some(format!("{e:#}"));
                last.duration_ms = Some(started.elapsed().as_millis() as u64);
                tracing::error!(to = %dest.describe(), error = %format!("{e:#}"), "backup failed");
                if scheduled {
                    self.page(
                        "failed",
                        &format!("backup to {} failed", dest.describe()),
                        &format!("{e:#}"),
                    );
                }
                if let Some(events) = &events {
                    let _ = events.send(Event::Error {
                        message: format!("{e:#}"),
                    });
                }
            }
        }
        if let Ok(mut slot) = self.last.lock() {
            last.next_unix = slot.next_unix;
            *slot = last;
        }
        if let Ok(summary) = &outcome {
            if let Some(events) = &events {
                let _ = events.send(Event::Done {
                    summary: summary.clone(),
                });
            }
        }
        outcome
    }

    /// Hands a page to the alert stage: rule `nightowl-backup`, key
    /// `failed` or `missed`, the operator's tenant. The alert stage's
    /// dedup makes repeated failures one page until it resolves.
    pub(crate) fn page(&self, key: &str, title: &str, detail: &str) {
        let Some(sink) = &self.pager else {
            return;
        };
        let now = now_nanos();
        let mut labels = BTreeMap::new();
        labels.insert("source".to_string(), "backup".to_string());
        let firing = crate::detect::Firing {
            rule_id: "nightowl-backup".into(),
            title: title.to_string(),
            severity: crate::detect::Severity::Critical,
            tenant: crate::auth::DEFAULT_TENANT.into(),
            key: key.to_string(),
            count: 1,
            value: None,
            window: 0.0,
            first_ts: now,
            last_ts: now,
            sample_lines: vec![detail.chars().take(512).collect()],
            labels,
            tags: vec!["backup".into()],
            evidence_query: String::new(),
        };
        let sink = sink.clone();
        // The sink may wait up to ~200 ms for room: not on a runtime thread.
        tokio::task::spawn_blocking(move || sink.send(firing));
    }

    async fn cut(&self) -> Result<crate::index::cut::Cut> {
        let answer = self.catalog.cuts.request()?;
        tokio::task::spawn_blocking(move || answer.recv_timeout(Duration::from_secs(120)))
            .await
            .context("waiting for the indexer")?
            .map_err(|_| {
                anyhow!(
                    "the indexer did not take the backup's cut within 120 s (backups cover the embedded collector's index; with --kafka, back up each indexer's data dir)"
                )
            })?
            .map_err(|e| anyhow!("taking the backup's cut: {e}"))
    }

    async fn run_locked(
        &self,
        dest: &Dest,
        keep: Option<usize>,
        events: Option<&tokio::sync::mpsc::UnboundedSender<Event>>,
    ) -> Result<Summary> {
        let started = Instant::now();
        let started_at = now_nanos();
        let id = backup_id(started_at);
        // First write: an unwritable destination fails here, before the cut.
        let marker = serde_json::json!({
            "id": id, "started": format_rfc3339(started_at),
            "data_dir": self.data_dir.display().to_string(),
        });
        dest.put(&started_key(&id), Bytes::from(marker.to_string()))
            .await?;
        let listing = list_backups(dest).await?;
        let mut known: HashMap<(String, u64), String> = HashMap::new();
        if let Some(previous) = listing.complete.last() {
            match load_manifest(dest, previous).await {
                Ok(m) => {
                    for f in m.files {
                        if immutable(&f.path) {
                            known.insert((f.path, f.size), f.sha256);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "previous backup's manifest unreadable: hashing every file")
                }
            }
        }
        let have: HashSet<String> = dest
            .list("blobs/")
            .await?
            .into_iter()
            .filter_map(|k| k.rsplit('/').next().map(str::to_string))
            .collect();

        let cut = self.cut().await?;
        let _staged = RemoveOnDrop(cut.staging.clone());
        let mut items: Vec<Item> = Vec::new();
        for f in &cut.files {
            items.push(Item {
                path: f.path.clone(),
                source: Source::File(f.staged.clone()),
                size: f.size,
                mode: 0o644,
                tenant: f.tenant.clone(),
            });
        }
        for g in &cut.generated {
            items.push(bytes_item(&g.path, g.bytes.clone(), g.tenant.clone()));
        }
        if let Some(alerts) = &self.alerts {
            let copy = cut.staging.join("alerting.redb");
            std::fs::create_dir_all(&cut.staging)
                .with_context(|| format!("creating {}", cut.staging.display()))?;
            let (alerts, to) = (Arc::clone(alerts), copy.clone());
            tokio::task::spawn_blocking(move || alerts.backup_copy(&to))
                .await
                .context("copying the alert store")??;
            // Small, and mostly empty pages: kept in memory and compressed.
            let bytes =
                std::fs::read(&copy).with_context(|| format!("reading {}", copy.display()))?;
            let mut item = bytes_item("alerting/alerting.redb", bytes, None);
            item.mode = 0o644;
            items.push(item);
        }
        let audit = self.audit.backup_cut()?;
        items.push(Item {
            path: "audit/audit.log".into(),
            source: Source::File(audit.log.clone()),
            size: audit.log_len,
            mode: 0o600,
            tenant: None,
        });
        items.push(Item {
            path: "audit/checkpoints.log".into(),
            source: Source::File(audit.checkpoints.clone()),
            size: audit.checkpoints_len,
            mode: 0o600,
            tenant: None,
        });
        if let Some(keys) = audit.tenant_keys {
            items.push(bytes_item("audit/tenant-keys.json", keys, None));
        }
        for rel in PLAIN_FILES {
            let path = self.data_dir.join(rel);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let mut item = bytes_item(rel, bytes, None);
                    if let Ok(meta) = std::fs::metadata(&path) {
                        use std::os::unix::fs::PermissionsExt;
                        item.mode = meta.permissions().mode() & 0o777;
                    }
                    items.push(item);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }

        let total_bytes: u64 = items.iter().map(|i| i.size).sum();
        let total_files = items.len() as u64;
        let send = |e: Event| {
            if let Some(events) = events {
                let _ = events.send(e);
            }
        };
        send(Event::Started {
            id: id.clone(),
            to: dest.describe(),
            wal_position: cut.wal_position,
            files: total_files,
            bytes: total_bytes,
        });
        let mut throttle = Throttle::new(self.config.max_bytes_per_sec);
        let mut files = Vec::with_capacity(items.len());
        let (mut bytes_done, mut bytes_copied, mut files_copied) = (0u64, 0u64, 0u64);
        let mut have = have;
        let mut last_event = Instant::now();
        for (n, item) in items.into_iter().enumerate() {
            let sha = match &item.source {
                Source::Bytes(b) => hex::encode(Sha256::digest(b)),
                Source::File(path) => match known.get(&(item.path.clone(), item.size)) {
                    Some(sha) => sha.clone(),
                    None => hash_file(path, item.size, &mut throttle).await?,
                },
            };
            let zstd = matches!(item.source, Source::Bytes(_));
            if !have.contains(&blob_name(&sha, zstd)) {
                let key = blob_key_of(&sha, zstd);
                let mut stored = item.size;
                match &item.source {
                    Source::Bytes(b) => {
                        let packed = zstd::bulk::compress(b, 3)
                            .with_context(|| format!("compressing {}", item.path))?;
                        stored = packed.len() as u64;
                        throttle.pace(packed.len()).await;
                        dest.put(&key, Bytes::from(packed)).await?
                    }
                    Source::File(path) => {
                        let mut tick = |moved: u64| {
                            if last_event.elapsed() >= Duration::from_millis(250) {
                                last_event = Instant::now();
                                send(Event::Progress {
                                    files_done: n as u64,
                                    files: total_files,
                                    bytes_done: bytes_done + moved,
                                    bytes: total_bytes,
                                    bytes_copied: bytes_copied + moved,
                                });
                            }
                        };
                        dest.put_file(&key, path, item.size, &sha, &mut throttle, &mut tick)
                            .await?
                    }
                }
                have.insert(blob_name(&sha, zstd));
                bytes_copied += stored;
                files_copied += 1;
            }
            bytes_done += item.size;
            if last_event.elapsed() >= Duration::from_millis(250) || n as u64 + 1 == total_files {
                last_event = Instant::now();
                send(Event::Progress {
                    files_done: n as u64 + 1,
                    files: total_files,
                    bytes_done,
                    bytes: total_bytes,
                    bytes_copied,
                });
            }
            files.push(ManifestFile {
                path: item.path,
                size: item.size,
                sha256: sha,
                mode: item.mode,
                tenant: item.tenant,
                zstd,
            });
        }
        let finished = now_nanos();
        let partitions: Vec<ManifestPartition> = cut
            .partitions
            .iter()
            .map(|p| ManifestPartition {
                tenant: p.tenant.clone(),
                dir: p.dir.clone(),
                docs: p.docs,
            })
            .collect();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            started: format_rfc3339(started_at),
            finished: format_rfc3339(finished),
            version: env!("CARGO_PKG_VERSION").to_string(),
            wal_position: cut.wal_position,
            data_dir: self.data_dir.display().to_string(),
            audit_key: Some(self.audit.key_path().display().to_string()),
            files,
            partitions: partitions.clone(),
            sources: cut.sources.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            bytes: total_bytes,
            bytes_copied,
            files_copied,
            purged: Vec::new(),
        };
        let body = serde_json::to_vec_pretty(&manifest).context("encoding the manifest")?;
        // The backup exists from here on.
        dest.put(&manifest_key(&id), Bytes::from(body)).await?;
        dest.delete(&started_key(&id)).await?;
        let (pruned_backups, pruned_blobs) = match keep {
            Some(keep) => prune(dest, keep).await?,
            None => (0, 0),
        };
        Ok(Summary {
            id,
            to: dest.describe(),
            wal_position: manifest.wal_position,
            files: total_files,
            bytes: total_bytes,
            files_copied,
            bytes_copied,
            partitions: partitions.len() as u64,
            docs: partitions.iter().map(|p| p.docs).sum(),
            duration_ms: started.elapsed().as_millis() as u64,
            pruned_backups,
            pruned_blobs,
            sources: manifest.sources,
        })
    }
}

fn bytes_item(path: &str, bytes: Vec<u8>, tenant: Option<String>) -> Item {
    Item {
        path: path.to_string(),
        size: bytes.len() as u64,
        source: Source::Bytes(Bytes::from(bytes)),
        mode: 0o600,
        tenant,
    }
}

/// `20260105T020000Z-1a2b`: sorts by time; the suffix tells apart two
/// backups of one second.
fn backup_id(now: i64) -> String {
    let rfc = format_rfc3339(now);
    let compact: String = rfc
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{compact}Z-{:04x}", rand::random::<u16>())
}

/// SHA-256 of the first `len` bytes of `path`.
async fn hash_file(path: &Path, len: u64, throttle: &mut Throttle) -> Result<String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file
            .read(&mut buf[..want])
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            bail!(
                "{} is shorter than the {len} bytes it had at the cut",
                path.display()
            );
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
        throttle.pace(n).await;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Deletes all but the newest `keep` complete backups, interrupted ones,
/// and the blobs no remaining manifest names. Returns (backups, blobs)
/// deleted.
pub async fn prune(dest: &Dest, keep: usize) -> Result<(u64, u64)> {
    let listing = list_backups(dest).await?;
    let doomed = listing.complete.len().saturating_sub(keep.max(1));
    let mut removed = 0;
    for id in &listing.complete[..doomed] {
        dest.delete(&manifest_key(id)).await?;
        removed += 1;
    }
    for id in &listing.incomplete {
        dest.delete(&started_key(id)).await?;
    }
    let blobs = collect_garbage(dest).await?;
    Ok((removed, blobs))
}

/// Deletes every blob (and leftover temporary file) that no manifest
/// names. Runs under the service's lock: one collector per destination.
pub async fn collect_garbage(dest: &Dest) -> Result<u64> {
    let listing = list_backups(dest).await?;
    let mut used = HashSet::new();
    for id in &listing.complete {
        for f in load_manifest(dest, id).await?.files {
            used.insert(blob_name(&f.sha256, f.zstd));
        }
    }
    let mut removed = 0;
    for key in dest.list("blobs/").await? {
        let name = key.rsplit('/').next().unwrap_or_default();
        if !used.contains(name) {
            dest.delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove a backup's staging dir");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_files_are_the_immutable_ones() {
        assert!(immutable(
            "index/acme/2026-01-05/0123456789abcdef0123456789abcdef.store"
        ));
        assert!(!immutable("index/acme/2026-01-05/meta.json"));
        assert!(!immutable("index/acme/2026-01-05/.managed.json"));
        assert!(!immutable("audit/audit.log"));
    }

    #[test]
    fn ids_sort_by_time() {
        let a = backup_id(1_700_000_000 * NANOS_PER_SEC);
        let b = backup_id(1_700_000_001 * NANOS_PER_SEC);
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20231114T221320Z-"), "{a}");
    }
}
