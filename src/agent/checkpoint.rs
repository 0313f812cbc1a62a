//! `STATE_DIR/agent-state.json`: the agent id, how far each file was read
//! into the spool, what the collector acknowledged, and the spool's acked
//! position. Written atomically (write, fsync, rename, fsync the directory).
//!
//! Ordering rules that make a crash harmless:
//! - the spool is fsynced before a checkpoint naming its offsets is written
//!   (a checkpoint never claims lines the spool lost);
//! - a new source's identity is checkpointed before its first record is
//!   spooled (after a crash its records still belong to a known file);
//! - spool segments are deleted only after a checkpoint covering them.
//!
//! A checkpoint older than the spool only means re-reading a little: on
//! start the furthest offsets of the records in the spool win.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::identity::Fingerprint;
use super::resume::Span;

/// Collectors' stores remembered per file (`FileEntry::acked_by`).
const MAX_STORES: usize = 8;

pub const FILE_NAME: &str = "agent-state.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub agent_id: String,
    /// Spool position below which the collector acknowledged everything.
    #[serde(default)]
    pub spool_acked: u64,
    /// The collector's line limit as last announced (used while it is away).
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
    /// Source id → where that file stands.
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Last path the file was seen at.
    pub path: PathBuf,
    /// The `source` label its lines were sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
    /// `None` in the state of the first agent: matched by inode alone once.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Restarts of this inode (see `identity::stream_id`).
    #[serde(default)]
    pub generation: u32,
    /// File offset read into the spool.
    #[serde(default)]
    pub offset: u64,
    /// Stream offset matching `offset` (they differ once a line was cut or
    /// a partial line was shipped with an added newline).
    #[serde(default)]
    pub stream: u64,
    /// Stream offset the collector acknowledged.
    #[serde(default)]
    pub acked: u64,
    /// When the agent last had this file open (unix seconds).
    #[serde(default)]
    pub last_seen_unix: i64,
    /// Stream offset acknowledged by each collector's store (its id from
    /// the welcome, `CAP_RESUME`): what a store that lost lines is sent
    /// again, and only that (a failover peer gets nothing it never acked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acked_by: BTreeMap<String, u64>,
    /// Where stream and file offsets part (`resume.rs`); empty in the state
    /// of an older agent (then mapped from where this one resumed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
}

impl FileEntry {
    /// Notes that `store` acked this file's stream up to `acked`; the
    /// stores with the lowest offsets go beyond [`MAX_STORES`].
    pub fn note_acked_by(&mut self, store: &str, acked: u64) {
        let entry = self.acked_by.entry(store.to_string()).or_insert(0);
        *entry = (*entry).max(acked);
        while self.acked_by.len() > MAX_STORES {
            let lowest = self
                .acked_by
                .iter()
                .min_by_key(|(_, &offset)| offset)
                .map(|(store, _)| store.clone());
            match lowest {
                Some(store) => self.acked_by.remove(&store),
                None => break,
            };
        }
    }
}

impl Checkpoint {
    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(FILE_NAME);
        let mut cp: Checkpoint = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // The first agent keyed files by "dev:inode" and kept only `acked`.
        for (id, entry) in cp.files.iter_mut() {
            if entry.dev == 0 && entry.ino == 0 && entry.fingerprint.is_none() {
                if let Some((dev, ino)) = id.split_once(':') {
                    entry.dev = dev.parse().unwrap_or(0);
                    entry.ino = ino.parse().unwrap_or(0);
                }
                entry.offset = entry.offset.max(entry.acked);
                entry.stream = entry.stream.max(entry.acked);
            }
        }
        if cp.agent_id.is_empty() {
            let mut id = [0u8; 8];
            rand::thread_rng().fill(&mut id);
            cp.agent_id = hex::encode(id);
            cp.save(dir)?;
        }
        Ok(cp)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("encoding the checkpoint")?;
        write_atomic(dir, FILE_NAME, &json, true)
    }

    /// The entry of the file with this device and inode, if any.
    pub fn find(&self, dev: u64, ino: u64) -> Option<(&String, &FileEntry)> {
        self.files
            .iter()
            .find(|(_, e)| e.dev == dev && e.ino == ino)
    }
}

/// Writes `dir/name` via a temporary file and a rename; `durable` also
/// fsyncs the file and the directory (the status file does not need to).
pub fn write_atomic(dir: &Path, name: &str, content: &[u8], durable: bool) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    if durable {
        crate::fsutil::write_atomic_via(&path, &tmp, content, 0o600)
    } else {
        crate::fsutil::replace_via(&path, &tmp, content, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_reads_the_first_agents_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(FILE_NAME),
            br#"{"agent_id":"abc","files":{"64769:1234":{"path":"/x.log","acked":77}}}"#,
        )
        .expect("write");
        let cp = Checkpoint::load(dir.path()).expect("load");
        assert_eq!(cp.agent_id, "abc");
        let (id, e) = cp.find(64769, 1234).expect("matched by inode");
        assert_eq!(
            (id.as_str(), e.offset, e.stream, e.acked),
            ("64769:1234", 77, 77, 77)
        );
        cp.save(dir.path()).expect("save");
        let again = Checkpoint::load(dir.path()).expect("reload");
        assert_eq!(again.files, cp.files);
    }

    #[test]
    fn each_store_keeps_its_highest_ack_and_the_lowest_go_first() {
        let mut cp = Checkpoint::default();
        cp.files.insert(
            "s".into(),
            serde_json::from_str(r#"{"path":"/x.log"}"#).expect("an entry of an older agent"),
        );
        let e = cp.files.get_mut("s").expect("entry");
        assert!(e.acked_by.is_empty() && e.spans.is_empty());
        e.note_acked_by("a", 10);
        e.note_acked_by("a", 5);
        assert_eq!(e.acked_by["a"], 10);
        for i in 0..MAX_STORES as u64 {
            e.note_acked_by(&format!("peer{i}"), 100 + i);
        }
        assert_eq!(e.acked_by.len(), MAX_STORES);
        assert!(!e.acked_by.contains_key("a"), "{:?}", e.acked_by);
    }

    #[test]
    fn a_fresh_state_gets_an_agent_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = Checkpoint::load(dir.path()).expect("load");
        assert_eq!(cp.agent_id.len(), 16);
        assert_eq!(
            Checkpoint::load(dir.path()).expect("reload").agent_id,
            cp.agent_id
        );
    }
}
