//! The collector's pattern state on disk: every stream's patterns in one
//! file, rewritten atomically while lines arrive (at most once per save
//! interval, the rule snapshot's), at once after a tenant purge (no byte of
//! a purged tenant may stay under the data dir), and at shutdown. A crash
//! loses at most an interval of counts: ids are derived from the
//! statements, so a line mined again gets the id it had.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::stream::{Merge, PatternId, StreamLimits, Streams, StreamsState};
use crate::parse::Event;

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
                    Streams::new(limits)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Streams::new(limits),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(PatternStore {
            streams,
            path,
            dirty: false,
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

    /// See [`Streams::publish_templates`].
    pub fn publish_templates(&mut self, templates: std::sync::Arc<super::PatternTemplates>) {
        self.streams.publish_templates(templates);
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

    /// Drops `tenant`'s patterns and rewrites the file without them now.
    /// Returns the patterns dropped.
    pub fn forget_tenant(&mut self, tenant: &str) -> Result<usize> {
        let dropped = self.streams.forget_tenant(tenant);
        self.save()?;
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

        fs::write(&path, b"{not json").expect("writes");
        let store = PatternStore::open(path.clone(), StreamLimits::default(), Duration::ZERO)
            .expect("starts over");
        assert_eq!(store.streams().patterns(), 0);
        assert!(path.with_extension("unusable").exists());
    }
}
