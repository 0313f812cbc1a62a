//! Deleting a tenant's data: per-tenant retention (whole day partitions
//! older than N days) and purge (everything received before the purge).
//!
//! Only the indexer thread removes partitions, between two records, after
//! committing and closing the writers of the days concerned — so a delete
//! never races an open writer. The API asks ([`Lifecycle::request_purge`])
//! and waits for the answer.
//!
//! A purge is recorded as a *tombstone* (`index/deletions.json`): records of
//! the tenant received before the purge are dropped when they reach the
//! indexer, whether they were still queued at the time or are replayed from
//! the WAL after a restart. Retention likewise drops lines of expired days
//! instead of recreating their partitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, RwLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::time::{day_of, NANOS_PER_DAY};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Deletions {
    /// Tenant → unix nanos: records received before this are purged.
    #[serde(default)]
    purged_before: BTreeMap<String, i64>,
}

/// What a purge removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PurgeReport {
    pub tenant: String,
    pub partitions_removed: u64,
    /// Rule state keys (windows, baselines, learned values) of the tenant.
    #[serde(default)]
    pub rule_keys_removed: u64,
}

pub(crate) struct PurgeRequest {
    pub tenant: String,
    pub reply: SyncSender<Result<PurgeReport, String>>,
}

pub(crate) struct InstallRequest {
    pub prepared: super::compact::Prepared,
    pub reply: SyncSender<Result<super::compact::Installed, String>>,
}

pub struct Lifecycle {
    path: PathBuf,
    deletions: RwLock<Deletions>,
    retention_days: RwLock<BTreeMap<String, u32>>,
    requests: Mutex<Vec<PurgeRequest>>,
    /// Compacted partitions waiting to be swapped in (`compact.rs`).
    installs: Mutex<Vec<InstallRequest>>,
    pending: AtomicBool,
    /// A retention changed: apply it now, not at the next periodic check.
    recheck: AtomicBool,
}

/// Which lines of one record the indexer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    All,
    /// Lines of days at or after this one (retention).
    FromDay(i64),
    /// None: the tenant was purged after this record was received.
    Nothing,
}

impl Lifecycle {
    pub(crate) fn open(index_dir: &std::path::Path) -> Result<Lifecycle> {
        let path = index_dir.join("deletions.json");
        let deletions = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Deletions::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Lifecycle {
            path,
            deletions: RwLock::new(deletions),
            retention_days: RwLock::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            installs: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            recheck: AtomicBool::new(true),
        })
    }

    /// Sets (or with `None` clears) a tenant's retention.
    pub fn set_retention(&self, tenant: &str, days: Option<u32>) {
        if let Ok(mut map) = self.retention_days.write() {
            match days.filter(|&d| d > 0) {
                Some(d) => map.insert(tenant.to_string(), d),
                None => map.remove(tenant),
            };
        }
        self.recheck.store(true, Ordering::Release);
    }

    /// Whether a retention changed since the last call.
    pub(crate) fn take_recheck(&self) -> bool {
        self.recheck.swap(false, Ordering::AcqRel)
    }

    /// The first day kept for `tenant` at `now`, if it has a retention.
    pub fn first_kept_day(&self, tenant: &str, now: i64) -> Option<i64> {
        let days = *self.retention_days.read().ok()?.get(tenant)?;
        Some(day_of(now) - i64::from(days) + 1)
    }

    /// Tenants with a retention and their first kept day at `now`.
    pub(crate) fn retention_cutoffs(&self, now: i64) -> Vec<(String, i64)> {
        self.retention_days
            .read()
            .map(|m| {
                m.iter()
                    .map(|(t, &d)| (t.clone(), day_of(now) - i64::from(d) + 1))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a record of `tenant` received at `received` was purged.
    pub fn purged(&self, tenant: &str, received: i64) -> bool {
        self.deletions
            .read()
            .ok()
            .and_then(|d| d.purged_before.get(tenant).copied())
            .is_some_and(|before| received < before)
    }

    /// Which lines of a record of `tenant` received at `received` to keep.
    pub fn keep(&self, tenant: &str, received: i64, now: i64) -> Keep {
        if self.purged(tenant, received) {
            return Keep::Nothing;
        }
        match self.first_kept_day(tenant, now) {
            Some(day) => Keep::FromDay(day),
            None => Keep::All,
        }
    }

    /// Records the tombstone durably, then asks the indexer to remove the
    /// tenant's partitions. The receiver yields once it has.
    pub fn request_purge(
        &self,
        tenant: &str,
        now: i64,
    ) -> Result<Receiver<Result<PurgeReport, String>>> {
        {
            let mut deletions = self
                .deletions
                .write()
                .map_err(|_| anyhow::anyhow!("deletions lock poisoned"))?;
            // A purge covers everything received up to now; the +1 keeps a
            // record received in this very nanosecond on the purged side.
            deletions
                .purged_before
                .insert(tenant.to_string(), now.saturating_add(1));
            let json = serde_json::to_vec_pretty(&*deletions)?;
            crate::fsutil::write_atomic(&self.path, &json, 0o600)?;
        }
        let (reply, answer) = sync_channel(1);
        self.requests
            .lock()
            .map_err(|_| anyhow::anyhow!("purge queue lock poisoned"))?
            .push(PurgeRequest {
                tenant: tenant.to_string(),
                reply,
            });
        self.pending.store(true, Ordering::Release);
        Ok(answer)
    }

    /// Asks the writers' owner to swap a compacted partition in: it
    /// closes the partition's writer first. The receiver yields once done.
    pub(crate) fn request_install(
        &self,
        prepared: super::compact::Prepared,
    ) -> Result<Receiver<Result<super::compact::Installed, String>>> {
        let (reply, answer) = sync_channel(1);
        self.installs
            .lock()
            .map_err(|_| anyhow::anyhow!("install queue lock poisoned"))?
            .push(InstallRequest { prepared, reply });
        self.pending.store(true, Ordering::Release);
        Ok(answer)
    }

    /// Purge and install requests waiting for the indexer (cheap when
    /// there are none).
    pub(crate) fn take_requests(&self) -> (Vec<PurgeRequest>, Vec<InstallRequest>) {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return (Vec::new(), Vec::new());
        }
        let purges = self
            .requests
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let installs = self
            .installs
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        (purges, installs)
    }
}

/// How often the indexer looks for expired partitions.
pub const RETENTION_CHECK_NANOS: i64 = NANOS_PER_DAY / 24 / 6;

/// What [`maintain`] asks of the writers' owner.
pub(crate) enum WriterStep<'a> {
    /// Work is due: commit what is pending first.
    Commit,
    /// Commit and close every writer of `tenant`'s days before the day
    /// (all of them with `None`): those directories are deleted next.
    Close(&'a str, Option<i64>),
    /// A purge: drop the tenant's rule state, adding the keys removed.
    ForgetRules(&'a str, &'a mut u64),
    /// Commit and close the writer of one partition (tenant, day, shard):
    /// compaction swaps its directory next.
    CloseDay(&'a str, i64, u32),
}

/// Serves waiting purges, and retention when due (`retention_checked`,
/// unix nanos of the last look); no directory is deleted under an open
/// writer. Called by whoever owns the catalog's writers: the indexer
/// thread, or a Kafka indexer for all its shards at once.
pub(crate) fn maintain(
    catalog: &super::Catalog,
    retention_checked: &mut i64,
    mut writers: impl FnMut(WriterStep<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let lifecycle = &catalog.lifecycle;
    let (requests, installs) = lifecycle.take_requests();
    let now = crate::time::now_nanos();
    let retention_due =
        lifecycle.take_recheck() || now.saturating_sub(*retention_checked) >= RETENTION_CHECK_NANOS;
    if requests.is_empty() && installs.is_empty() && !retention_due {
        return Ok(());
    }
    writers(WriterStep::Commit)?;
    if retention_due {
        *retention_checked = now;
        for (tenant, first_day) in lifecycle.retention_cutoffs(now) {
            writers(WriterStep::Close(&tenant, Some(first_day)))?;
            catalog.remove_partitions(&tenant, Some(first_day))?;
        }
    }
    for request in requests {
        let mut rule_keys_removed = 0;
        let outcome = writers(WriterStep::Close(&request.tenant, None))
            .and_then(|()| {
                writers(WriterStep::ForgetRules(
                    &request.tenant,
                    &mut rule_keys_removed,
                ))
            })
            .and_then(|()| catalog.remove_partitions(&request.tenant, None))
            .map(|partitions_removed| PurgeReport {
                tenant: request.tenant.clone(),
                partitions_removed,
                rule_keys_removed,
            })
            .map_err(|e| format!("{e:#}"));
        let _ = request.reply.send(outcome);
    }
    for install in installs {
        let prepared = install.prepared;
        let (tenant, day, shard) = (prepared.tenant.clone(), prepared.day, prepared.shard);
        let outcome = writers(WriterStep::CloseDay(&tenant, day, shard))
            .and_then(|()| super::compact::install(catalog, prepared))
            .map_err(|e| format!("{e:#}"));
        let _ = install.reply.send(outcome);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_drop_older_records_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let life = Lifecycle::open(dir.path()).expect("open");
        let now = 10 * NANOS_PER_DAY;
        assert_eq!(life.keep("acme", now - 5, now), Keep::All);
        let _answer = life.request_purge("acme", now).expect("purge");
        assert_eq!(life.keep("acme", now - 5, now), Keep::Nothing);
        assert_eq!(life.keep("acme", now, now), Keep::Nothing);
        assert_eq!(life.keep("acme", now + 5, now), Keep::All);
        assert_eq!(life.keep("other", now - 5, now), Keep::All);
        assert_eq!(life.take_requests().0.len(), 1);
        assert!(life.take_requests().0.is_empty());

        let reopened = Lifecycle::open(dir.path()).expect("reopen");
        assert_eq!(reopened.keep("acme", now - 5, now), Keep::Nothing);
        reopened.set_retention("acme", Some(3));
        assert_eq!(reopened.keep("acme", now + 5, now), Keep::FromDay(8));
        reopened.set_retention("acme", None);
        assert_eq!(reopened.keep("acme", now + 5, now), Keep::All);
    }
}
