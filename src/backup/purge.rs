//! A tenant purge reaching the backups (docs/backup.md, "Purge").
//!
//! Removal, not encryption: every backup at every destination this
//! collector wrote to loses the tenant when the purge runs.
//!
//! - its index files leave the manifest, and blobs no manifest names any
//!   more are deleted;
//! - the stores shared by all tenants are rewritten in each backup the way
//!   the purge rewrites them live: the alert store (rows deleted, file
//!   rewritten), the rule state (keys dropped), the pattern state, and the
//!   audit log's tenant keys (its key destroyed: its entries' sealed
//!   fields become unreadable, the chain stays whole); the purge's
//!   tombstone goes into the backup's `index/deletions.json`;
//! - the manifest records the purge (`purged`), and the old blobs go.
//!
//! A destination that cannot be reached is remembered
//! (`DATA_DIR/backup/pending-purges.json`) and purged at the start of the
//! next backup run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dest::blob_key_of;
use super::{
    collect_garbage, list_backups, load_manifest, manifest_key, Backups, Dest, Manifest,
    ManifestFile,
};
use crate::time::{format_rfc3339, now_nanos};

/// Recorded in a backup's manifest when a purge removed a tenant from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeNote {
    pub tenant: String,
    pub at: String,
    /// Unix nanos of the purge (its tombstone).
    #[serde(default)]
    pub at_nanos: i64,
    /// Files of the backup removed or rewritten.
    pub files: Vec<String>,
}

/// What a purge did at one destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestPurge {
    pub to: String,
    pub backups: u64,
    pub files: u64,
    pub blobs_deleted: u64,
    /// The destination could not be purged now: retried at the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pending {
    purges: Vec<PendingPurge>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PendingPurge {
    to: String,
    tenant: String,
    at_nanos: i64,
}

/// Builds the live rule engine (the collector's rule set), to rewrite a
/// backup's rule state without the tenant.
pub type RuleEngineFactory =
    std::sync::Arc<dyn Fn() -> Result<crate::detect::Engine> + Send + Sync>;

impl Backups {
    fn state_dir(&self) -> PathBuf {
        self.data_dir.join("backup")
    }

    fn read_json<T: serde::de::DeserializeOwned + Default>(&self, name: &str) -> T {
        let path = self.state_dir().join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable backup state file: ignored");
                T::default()
            }),
            Err(_) => T::default(),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(value)?;
        crate::fsutil::write_atomic(&dir.join(name), &json, 0o600)
    }

    /// Every destination a backup of this data dir went to, and the
    /// configured one: where a purge must reach.
    pub fn destinations(&self) -> Vec<String> {
        let mut all: Vec<String> = self.read_json("destinations.json");
        if let Some(to) = &self.config.to {
            if let Ok(dest) = Dest::parse(to) {
                all.push(dest.describe());
            }
        }
        all.sort();
        all.dedup();
        all
    }

    pub(crate) fn remember_destination(&self, dest: &Dest) {
        let mut all: Vec<String> = self.read_json("destinations.json");
        let name = dest.describe();
        if all.contains(&name) {
            return;
        }
        all.push(name);
        if let Err(e) = self.write_json("destinations.json", &all) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the backup destination: a purge would not reach it");
        }
    }

    /// Removes `tenant` (purged at `at_nanos`) from every backup at every
    /// known destination. Waits for a running backup to end first.
    pub async fn purge_tenant(&self, tenant: &str, at_nanos: i64) -> Vec<DestPurge> {
        let _one = self.lock.lock().await;
        let mut outcomes = Vec::new();
        let mut pending: Pending = self.read_json("pending-purges.json");
        for to in self.destinations() {
            let outcome = match Dest::parse(&to) {
                Ok(dest) => self.purge_dest(&dest, tenant, at_nanos).await,
                Err(e) => Err(e),
            };
            outcomes.push(match outcome {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(to = %to, tenant, error = %format!("{e:#}"), "purge could not reach a backup destination; retried at the next backup run");
                    let item = PendingPurge {
                        to: to.clone(),
                        tenant: tenant.to_string(),
                        at_nanos,
                    };
                    if !pending.purges.contains(&item) {
                        pending.purges.push(item);
                    }
                    DestPurge {
                        to,
                        backups: 0,
                        files: 0,
                        blobs_deleted: 0,
                        error: Some(format!("{e:#}")),
                    }
                }
            });
        }
        if let Err(e) = self.write_json("pending-purges.json", &pending) {
            tracing::error!(error = %format!("{e:#}"), "cannot record pending backup purges");
        }
        outcomes
    }

    /// Purges that could not reach their destination before (under the
    /// service's lock, at the start of a run).
    pub(crate) async fn retry_pending_purges(&self) {
        let pending: Pending = self.read_json("pending-purges.json");
        if pending.purges.is_empty() {
            return;
        }
        let mut left = Pending::default();
        for p in pending.purges {
            let done = match Dest::parse(&p.to) {
                Ok(dest) => self.purge_dest(&dest, &p.tenant, p.at_nanos).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(d) => {
                    tracing::info!(to = %d.to, tenant = %p.tenant, backups = d.backups, "pending purge reached the backups")
                }
                Err(e) => {
                    tracing::warn!(to = %p.to, tenant = %p.tenant, error = %format!("{e:#}"), "pending purge still cannot reach the backups");
                    left.purges.push(p);
                }
            }
        }
        if let Err(e) = self.write_json("pending-purges.json", &left) {
            tracing::error!(error = %format!("{e:#}"), "cannot record pending backup purges");
        }
    }

    async fn purge_dest(&self, dest: &Dest, tenant: &str, at_nanos: i64) -> Result<DestPurge> {
        let mut outcome = DestPurge {
            to: dest.describe(),
            backups: 0,
            files: 0,
            blobs_deleted: 0,
            error: None,
        };
        let listing = list_backups(dest).await?;
        if listing.complete.is_empty() && listing.incomplete.is_empty() {
            let written_there: Vec<String> = self.read_json("destinations.json");
            if written_there.contains(&dest.describe()) {
                // Backups were written here, and now none is listed: an
                // unmounted share or a renamed directory answers like an
                // empty one, and the purge must wait for it to come back.
                anyhow::bail!(
                    "no backup is listed at {}, where backups were written: unmounted or moved? \
                     (the purge stays pending until it lists them again)",
                    dest.describe()
                );
            }
        }
        for id in listing.complete {
            let mut manifest = load_manifest(dest, &id).await?;
            if manifest
                .purged
                .iter()
                .any(|p| p.tenant == tenant && p.at_nanos >= at_nanos)
            {
                continue;
            }
            let changed = self
                .purge_manifest(dest, &mut manifest, tenant, at_nanos)
                .await
                .with_context(|| format!("purging {tenant} from backup {id}"))?;
            outcome.files += changed.len() as u64;
            outcome.backups += 1;
            manifest.purged.push(PurgeNote {
                tenant: tenant.to_string(),
                at: format_rfc3339(at_nanos),
                at_nanos,
                files: changed,
            });
            let body = serde_json::to_vec_pretty(&manifest)?;
            dest.put(&manifest_key(&id), Bytes::from(body)).await?;
        }
        outcome.blobs_deleted = collect_garbage(dest).await?;
        Ok(outcome)
    }

    /// Drops the tenant's files from `manifest` and rewrites the shared
    /// ones; returns the paths removed or rewritten.
    async fn purge_manifest(
        &self,
        dest: &Dest,
        manifest: &mut Manifest,
        tenant: &str,
        at_nanos: i64,
    ) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        manifest.files.retain(|f| {
            let keep = f.tenant.as_deref() != Some(tenant);
            if !keep {
                changed.push(f.path.clone());
            }
            keep
        });
        manifest.partitions.retain(|p| p.tenant != tenant);
        let scratch = self.state_dir().join(format!("purge-{}", now_nanos()));
        let _scratch = super::RemoveOnDrop(scratch.clone());
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let mut has_deletions = false;
        let mut dropped = Vec::new();
        for (i, file) in manifest.files.iter_mut().enumerate() {
            let shared = matches!(
                file.path.as_str(),
                "audit/tenant-keys.json"
                    | "index/checkpoint.json"
                    | "index/deletions.json"
                    | "patterns/state.json"
                    | "rules/state.snapshot"
                    | "alerting/alerting.redb"
            );
            if !shared {
                continue;
            }
            has_deletions |= file.path == "index/deletions.json";
            let bytes = fetch(dest, file).await?;
            let rewritten = self
                .rewrite_shared(&file.path, bytes, tenant, at_nanos, &scratch)
                .with_context(|| format!("rewriting {} without {tenant}", file.path))?;
            match rewritten {
                Some(new) => {
                    put_blob(dest, file, new).await?;
                    changed.push(file.path.clone());
                }
                None => dropped.push(i),
            }
        }
        for i in dropped.into_iter().rev() {
            changed.push(manifest.files.remove(i).path);
        }
        if !has_deletions {
            let mut file = ManifestFile {
                path: "index/deletions.json".into(),
                size: 0,
                sha256: String::new(),
                mode: 0o600,
                tenant: None,
                zstd: true,
            };
            let bytes = tombstone(b"{}", tenant, at_nanos)?;
            put_blob(dest, &mut file, bytes).await?;
            changed.push(file.path.clone());
            manifest.files.push(file);
        }
        manifest.bytes = manifest.files.iter().map(|f| f.size).sum();
        Ok(changed)
    }

    /// The shared file at `path` without `tenant`; `None` drops it from the
    /// backup (rule state when no rule set can read it).
    fn rewrite_shared(
        &self,
        path: &str,
        bytes: Vec<u8>,
        tenant: &str,
        at_nanos: i64,
        scratch: &Path,
    ) -> Result<Option<Vec<u8>>> {
        match path {
            "index/deletions.json" => tombstone(&bytes, tenant, at_nanos).map(Some),
            "index/checkpoint.json" => {
                let live = crate::index::Checkpoint::load(&self.data_dir.join("index"))?;
                let mut backup: crate::index::Checkpoint =
                    serde_json::from_slice(&bytes).context("parsing index/checkpoint.json")?;
                if let Some(live) = live {
                    hold_purged_sources(&mut backup, &live, tenant);
                }
                Ok(Some(serde_json::to_vec_pretty(&backup)?))
            }
            "audit/tenant-keys.json" => {
                let dir = scratch.join("audit");
                std::fs::create_dir_all(&dir)?;
                let file = dir.join("tenant-keys.json");
                std::fs::write(&file, &bytes)?;
                crate::audit::shred_tenant_keys_in(&dir, tenant)?;
                Ok(Some(std::fs::read(&file)?))
            }
            "patterns/state.json" => {
                let file = scratch.join("patterns.json");
                std::fs::write(&file, &bytes)?;
                let mut store = crate::patterns::PatternStore::open(
                    file.clone(),
                    crate::patterns::StreamLimits::default(),
                    std::time::Duration::from_secs(3600),
                )?;
                store.forget_tenant(tenant)?;
                Ok(Some(std::fs::read(&file)?))
            }
            "alerting/alerting.redb" => {
                let dir = scratch.join("alerting");
                std::fs::create_dir_all(&dir)?;
                let file = dir.join("alerting.redb");
                std::fs::write(&file, &bytes)?;
                crate::alert::store::purge_copy(&dir, tenant)?;
                Ok(Some(std::fs::read(&file)?))
            }
            "rules/state.snapshot" => {
                let Some(factory) = &self.rules else {
                    return Ok(None);
                };
                let file = scratch.join("state.snapshot");
                std::fs::write(&file, &bytes)?;
                let Some(loaded) = crate::detect::snapshot::read(&file)? else {
                    return Ok(None);
                };
                let mut engine = factory()?;
                engine
                    .restore_state_version(&loaded.state, loaded.version)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                engine.forget_tenant(tenant);
                let mut enc = crate::detect::snapshot::Enc::default();
                engine.encode_state(&mut enc);
                let mut out = Vec::new();
                crate::detect::snapshot::encode(
                    loaded.position,
                    loaded.written_unix_nanos,
                    &enc.buf,
                    &mut out,
                );
                Ok(Some(out))
            }
            _ => Ok(Some(bytes)),
        }
    }
}

async fn fetch(dest: &Dest, file: &ManifestFile) -> Result<Vec<u8>> {
    let key = blob_key_of(&file.sha256, file.zstd);
    let stored = dest.get(&key).await?.with_context(|| {
        format!(
            "{}: blob {key} of {} is missing",
            dest.describe(),
            file.path
        )
    })?;
    let bytes = match file.zstd {
        true => zstd::stream::decode_all(&stored[..])
            .with_context(|| format!("blob {key} of {} is not a whole zstd frame", file.path))?,
        false => stored.to_vec(),
    };
    let got = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(
        got == file.sha256,
        "checksum mismatch: {} (blob {key}): expected sha256 {}, read {got}",
        file.path,
        file.sha256
    );
    Ok(bytes)
}

/// Stores `bytes` as the new body of `file`, compressed.
async fn put_blob(dest: &Dest, file: &mut ManifestFile, bytes: Vec<u8>) -> Result<()> {
    let sha = hex::encode(Sha256::digest(&bytes));
    file.size = bytes.len() as u64;
    let packed = zstd::bulk::compress(&bytes, 3).context("compressing")?;
    dest.put(&blob_key_of(&sha, true), Bytes::from(packed))
        .await?;
    file.sha256 = sha;
    file.zstd = true;
    Ok(())
}

/// The tenant's sources in a backup's checkpoint, moved up to where the
/// live node holds them at the purge. A collector restored from an older
/// backup would otherwise tell the agents it holds their files only up to
/// the backup's offsets, and they would resend what the purge deleted:
/// resent after the purge, the tombstone (by receive time) would not stop
/// it.
fn hold_purged_sources(
    backup: &mut crate::index::Checkpoint,
    live: &crate::index::Checkpoint,
    tenant: &str,
) {
    let prefix = format!("{tenant}/");
    for (key, &offset) in live
        .sources
        .range(prefix.clone()..)
        .take_while(|(key, _)| key.starts_with(&prefix))
    {
        let held = backup.sources.entry(key.clone()).or_insert(0);
        *held = (*held).max(offset);
    }
}

/// `index/deletions.json` with the purge's tombstone: a restored collector
/// drops the tenant's older records, as the live one does.
fn tombstone(bytes: &[u8], tenant: &str, at_nanos: i64) -> Result<Vec<u8>> {
    let mut json: serde_json::Value =
        serde_json::from_slice(bytes).context("parsing index/deletions.json")?;
    if !json["purged_before"].is_object() {
        json["purged_before"] = serde_json::json!({});
    }
    let before = json["purged_before"][tenant].as_i64().unwrap_or(i64::MIN);
    json["purged_before"][tenant] = serde_json::json!(before.max(at_nanos));
    Ok(serde_json::to_vec(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tombstone_keeps_the_latest_purge() {
        let once = tombstone(b"{}", "acme", 5).expect("tombstone");
        let twice = tombstone(&once, "acme", 3).expect("again");
        let json: serde_json::Value = serde_json::from_slice(&twice).expect("json");
        assert_eq!(json["purged_before"]["acme"], 5);
    }
}
