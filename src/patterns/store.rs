//! The collector's pattern state on disk: every stream's patterns in one
//! file, rewritten atomically while lines arrive (at most once per save
//! interval, the rule snapshot's), at once after a tenant purge (no byte of
//! a purged tenant may stay under the data dir), and at shutdown. A crash
//! loses at most an interval of counts: ids are derived from the
//! statements, so a line mined again gets the id it had.
//!
//! One store per node ([`SharedPatterns`]): the embedded collector's
//! indexer holds it, and so does every partition shard of a Kafka indexer.
//! A store per shard would leave a tenant's patterns in the file of a
//! partition that has moved to another indexer, where a purge would not
//! look.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::stream::{Merge, PatternId, StreamLimits, Streams, StreamsState};
use super::{PatternAliases, PatternTemplates};
use crate::parse::Event;

/// A node's pattern store, shared by the indexers writing its lines.
/// They take the lock once per record (a batch of one source's lines), not
/// per line. A Kafka indexer runs all its shards on its consumer thread, so
/// the lock is not contended today; it makes sharing the store safe if the
/// shards ever run apart.
#[derive(Clone)]
pub struct SharedPatterns(Arc<Mutex<PatternStore>>);

impl SharedPatterns {
    pub fn new(store: PatternStore) -> SharedPatterns {
        SharedPatterns(Arc::new(Mutex::new(store)))
    }

    pub fn lock(&self) -> MutexGuard<'_, PatternStore> {
        // A panic while mining ends the indexer thread holding it; the
        // state is still the best there is to save at shutdown.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct PatternStore {
    streams: Streams,
    path: PathBuf,
    dirty: bool,
    saved: Instant,
    interval: Duration,
}

impl PatternStore {
    /// The state saved at `path`, or none. An unreadable or foreign file is
    /// reported and set aside (`.unusable`): patterns start over rather than
    /// the collector not starting.
    pub fn open(path: PathBuf, limits: StreamLimits, interval: Duration) -> Result<PatternStore> {
        // Whether the file may differ from what is kept (see `forget_tenant`).
        let mut dirty = false;
        let streams = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StreamsState>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|state| Streams::restore(limits.clone(), state))
            {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable pattern state: patterns start over");
                    let aside = path.with_extension("unusable");
                    fs::rename(&path, &aside)
                        .with_context(|| format!("moving {} aside", path.display()))?;
                    dirty = true;
                    Streams::new(limits)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Streams::new(limits),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Streams beyond the bounds were dropped in the restore: the file
        // still holds them.
        dirty |= streams.dropped_streams() > 0;
        Ok(PatternStore {
            streams,
            path,
            dirty,
            saved: Instant::now(),
            interval,
        })
    }

    /// Mines one line; see [`Streams::pattern`].
    pub fn pattern(
        &mut self,
        tenant: &str,
        source: &str,
        event: Option<&Event<'_>>,
        raw: &str,
    ) -> PatternId {
        self.dirty = true;
        self.streams.pattern(tenant, source, event, raw)
    }

    /// Publishes the templates (see [`Streams::publish_templates`]) and
    /// the aliases of the patterns restored, for the node's searches.
    pub fn publish(&mut self, templates: Arc<PatternTemplates>, aliases: &PatternAliases) {
        self.streams.publish_templates(templates);
        for merge in self.streams.all_aliases() {
            aliases.set(&merge.tenant, &merge.id, merge.aliases);
        }
    }

    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// See [`Streams::take_merges`].
    pub fn take_merges(&mut self) -> Vec<Merge> {
        self.streams.take_merges()
    }

    /// Writes the state when it changed and the interval has passed.
    pub fn save_if_due(&mut self) -> Result<()> {
        if self.dirty && self.saved.elapsed() >= self.interval {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the state when it changed since the last write (a shard
    /// closing: the other shards of a Kafka indexer may have written it
    /// just before).
    pub fn save_if_dirty(&mut self) -> Result<()> {
        if self.dirty {
            self.save()?;
        }
        Ok(())
    }

    /// Drops `tenant`'s patterns and rewrites the file without them now.
    /// Returns the patterns dropped. Asked again (every shard of a Kafka
    /// indexer hears a purge), the file is left alone: kept in memory and
    /// saved since, it cannot hold the tenant.
    pub fn forget_tenant(&mut self, tenant: &str) -> Result<usize> {
        let held = self.streams.holds_tenant(tenant);
        let dropped = self.streams.forget_tenant(tenant);
        if held || self.dirty {
            self.save()?;
        }
        // A file set aside at start may hold the tenant too.
        let aside = self.path.with_extension("unusable");
        match fs::remove_file(&aside) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", aside.display()))
            }
            _ => {}
        }
        Ok(dropped)
    }

    /// The state file's bytes as of now (a backup's cut).
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.streams.snapshot()).context("encoding patterns")
    }

    /// Writes the state: temp file (owner-only), fsync, rename, fsync of
    /// the directory, so a crash leaves the old file or the new one, whole.
    pub fn save(&mut self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.streams.snapshot()).context("encoding patterns")?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)?;
        self.dirty = false;
        self.saved = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_restart_and_a_purge_leaves_no_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("patterns").join("state.json");
        let mut store = PatternStore::open(path.clone(), StreamLimits::default(), Duration::ZERO)
            .expect("opens");
        let a = store.pattern(
            "acme",
            "app",
            None,
            "payment 41 failed for order 7 secretword",
        );
        store.pattern("globex", "app", None, "cache warmed in 3 ms");
        store.save().expect("saves");
        drop(store);

        let mut store = PatternStore::open(path.clone(), StreamLimits::default(), Duration::ZERO)
            .expect("reopens");
        assert_eq!(store.streams().patterns(), 2);
        assert_eq!(
            store.pattern(
                "acme",
                "app",
                None,
                "payment 42 failed for order 9 secretword"
            ),
            a
        );
        assert_eq!(store.forget_tenant("acme").expect("purges"), 1);
        let on_disk = fs::read_to_string(&path).expect("reads");
        assert!(
            !on_disk.contains("acme") && !on_disk.contains("secretword"),
            "{on_disk}"
        );
        assert!(on_disk.contains("globex"));
        let tmp = path.with_extension("tmp");
        assert!(!tmp.exists());
        // Every shard of a Kafka indexer hears the purge: the file, saved
        // without the tenant already, is not written again.
        fs::remove_file(&path).expect("removes");
        assert_eq!(store.forget_tenant("acme").expect("purges again"), 0);
        assert!(!path.exists());
        store.save().expect("saves");

        fs::write(&path, b"{not json").expect("writes");
        let store = PatternStore::open(path.clone(), StreamLimits::default(), Duration::ZERO)
            .expect("starts over");
        assert_eq!(store.streams().patterns(), 0);
        assert!(path.with_extension("unusable").exists());
    }
}
