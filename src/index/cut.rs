//! A consistent cut of the index for a backup (`src/backup/`), taken by
//! the indexer thread between two records, right after a commit round:
//!
//! - every partition's committed files, hard-linked into a staging
//!   directory under the index dir (tantivy never rewrites a segment file,
//!   and a link keeps its bytes after a merge deletes the name, without
//!   holding a descriptor or a mapping per file);
//! - the checkpoint as of the cut (`wal_position`, per-source offsets): every
//!   partition holds exactly the records below it, so a restore needs no
//!   WAL at all, only a log that starts at that position;
//! - the rule state and the pattern state encoded at the same position,
//!   and the purge tombstones.
//!
//! The indexer is paused only for the links and the encoding; the copy
//! happens on the backup's side while ingest goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::wal::Position;

/// Where the cuts are staged, under the index dir. Not a valid tenant
/// name, so the catalog never takes it for one.
pub const STAGING_DIR: &str = ".backup-staging";

/// One file of the cut, by its path relative to the data dir.
#[derive(Debug, Clone)]
pub struct CutFile {
    /// e.g. `index/acme/2026-01-05/0f3c….store`.
    pub path: String,
    /// The hard link holding its bytes.
    pub staged: PathBuf,
    pub size: u64,
    /// The tenant whose lines it holds (index files).
    pub tenant: Option<String>,
}

/// A file produced in memory at the cut (checkpoint, rule state, ...).
#[derive(Debug, Clone)]
pub struct CutBytes {
    pub path: String,
    pub bytes: Vec<u8>,
    pub tenant: Option<String>,
}

/// A partition of the cut: its files and how many documents it holds.
#[derive(Debug, Clone)]
pub struct CutPartition {
    pub tenant: String,
    /// Relative to the data dir: `index/<tenant>/<day>`.
    pub dir: String,
    pub docs: u64,
}

#[derive(Debug, Clone)]
pub struct Cut {
    /// Removed by the backup once copied (and at the next cut if a crash
    /// left it).
    pub staging: PathBuf,
    /// Every partition holds exactly the WAL records below this.
    pub wal_position: Position,
    pub files: Vec<CutFile>,
    pub generated: Vec<CutBytes>,
    pub partitions: Vec<CutPartition>,
    /// Per-source offsets as of the cut, `tenant/agent/source` → offset.
    pub sources: crate::ingest::SourceOffsets,
}

/// Cut requests from the API to the indexer thread.
#[derive(Default)]
pub struct CutRequests {
    pending: AtomicBool,
    waiters: Mutex<Vec<SyncSender<Result<Cut, String>>>>,
}

impl CutRequests {
    /// Asks for a cut; the indexer answers between two records (at once
    /// when idle: it wakes every commit interval).
    pub fn request(&self) -> Result<Receiver<Result<Cut, String>>> {
        let (tx, rx) = sync_channel(1);
        self.waiters
            .lock()
            .map_err(|_| anyhow::anyhow!("cut request lock poisoned"))?
            .push(tx);
        self.pending.store(true, Ordering::Release);
        Ok(rx)
    }

    pub(crate) fn take(&self) -> Vec<SyncSender<Result<Cut, String>>> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.waiters
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct MetaSegments {
    segments: Vec<MetaSegment>,
}

#[derive(Deserialize)]
struct MetaSegment {
    segment_id: String,
    max_doc: u64,
    #[serde(default)]
    deletes: Option<MetaDeletes>,
}

#[derive(Deserialize)]
struct MetaDeletes {
    num_deleted_docs: u64,
}

/// The segment ids (file name stems) and live documents a `meta.json` names.
fn read_meta(path: &Path) -> Result<(Vec<String>, u64)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let meta: MetaSegments =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let docs = meta
        .segments
        .iter()
        .map(|s| {
            s.max_doc
                .saturating_sub(s.deletes.as_ref().map_or(0, |d| d.num_deleted_docs))
        })
        .sum();
    let ids = meta
        .segments
        .into_iter()
        .map(|s| s.segment_id.replace('-', ""))
        .collect();
    Ok((ids, docs))
}

/// Links the committed files of the partition in `dir` into `into`, and
/// lists them (file names). A merge that ends meanwhile replaces
/// `meta.json` and deletes the merged segments: checked after linking,
/// and retried.
pub(crate) fn link_partition(dir: &Path, into: &Path) -> Result<(Vec<(String, u64)>, u64)> {
    for _attempt in 0..20 {
        if into.exists() {
            std::fs::remove_dir_all(into)
                .with_context(|| format!("clearing {}", into.display()))?;
        }
        std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
        // meta.json is replaced by rename, never rewritten in place: the
        // link holds one whole version, and its segments are the cut's.
        let meta = into.join("meta.json");
        std::fs::hard_link(dir.join("meta.json"), &meta)
            .with_context(|| format!("linking {}/meta.json", dir.display()))?;
        let (ids, docs) = read_meta(&meta)?;
        let mut files = vec![("meta.json".to_string(), file_size(&meta)?)];
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let stem = name.split('.').next().unwrap_or_default();
            if !ids.iter().any(|id| id == stem) {
                continue;
            }
            let target = into.join(&name);
            match std::fs::hard_link(entry.path(), &target) {
                Ok(()) => files.push((name, file_size(&target)?)),
                // Deleted by a merge since it was listed: the check below
                // sees the new meta.json and starts over.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("linking {}", entry.path().display()))
                }
            }
        }
        // Files are deleted only once no meta.json names their segment: if
        // the current one still names every segment linked, none was lost.
        let (now, _) = read_meta(&dir.join("meta.json"))?;
        if ids.iter().all(|id| now.contains(id)) {
            return Ok((files, docs));
        }
    }
    bail!(
        "{}: merges kept replacing the segments while linking them for a backup",
        dir.display()
    )
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// Builds the `.managed.json` tantivy keeps beside a partition's files,
/// so that a restored partition's merged-away segments are deleted as
/// usual.
pub fn managed_json(files: &[(String, u64)]) -> Vec<u8> {
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once() {
        let cuts = CutRequests::default();
        assert!(cuts.take().is_empty());
        let _rx = cuts.request().expect("request");
        assert_eq!(cuts.take().len(), 1);
        assert!(cuts.take().is_empty());
    }

    #[test]
    fn links_only_the_segments_meta_json_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("p");
        std::fs::create_dir_all(&part).expect("mkdir");
        std::fs::write(
            part.join("meta.json"),
            br#"{"segments":[{"segment_id":"aaaa-bb","max_doc":5,"deletes":null}],"opstamp":1}"#,
        )
        .expect("meta");
        std::fs::write(part.join("aaaabb.store"), b"store").expect("store");
        std::fs::write(part.join("aaaabb.idx"), b"idx").expect("idx");
        // An uncommitted segment's file: not part of the cut.
        std::fs::write(part.join("cccc.store"), b"new").expect("new");
        let (mut files, docs) = link_partition(&part, &dir.path().join("s")).expect("link");
        files.sort();
        assert_eq!(docs, 5);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["aaaabb.idx", "aaaabb.store", "meta.json"]);
        // The link keeps the bytes after the name goes (a merge).
        std::fs::remove_file(part.join("aaaabb.store")).expect("rm");
        assert_eq!(
            std::fs::read(dir.path().join("s").join("aaaabb.store")).expect("read"),
            b"store"
        );
    }
}
