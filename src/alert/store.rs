//! Durable paging state in one redb file (`DATA_DIR/alerting/alerting.redb`):
//! the engine's [`State`] (alerts, groups, acks, silences, escalation
//! timers) and the outbox (every notification not yet delivered, plus the
//! dead letters).
//!
//! New notifications are committed in the same transaction as the state
//! that says they were sent: after a crash either both exist (the outbox
//! delivers them) or neither (the engine sends them again). So a restart
//! neither loses a page nor pages twice for one change.
//!
//! A tenant purge deletes its rows, but redb leaves freed pages as they
//! were: the old copies of the state (sample lines, silence comments) stay
//! readable in the file until reused. So a purge ends with [`Store::rewrite`]:
//! the live rows are copied into a fresh file that replaces the old one.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::engine::State;
use super::model::Notification;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
const STATE_KEY: &str = "engine";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Pending,
    Dead,
}

/// One notification in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub notification: Notification,
    pub state: EntryState,
    pub attempts: u32,
    /// Unix nanoseconds.
    pub next_attempt_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Wall time the firing behind it reached the alert stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<i64>,
    /// A failover page (about another dead letter): never failed over again.
    #[serde(default)]
    pub failover: bool,
}

pub struct Store {
    /// Replaced whole by [`Store::rewrite`]; every other use reads.
    db: RwLock<Database>,
    path: PathBuf,
}

/// Present while a purge's rows may still sit in freed pages: a crash
/// before the rewrite finished has the next open do it.
const REWRITE_PENDING: &str = "alerting.redb.rewrite-pending";

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the alerting dir {}", dir.display()))?;
        let path = dir.join("alerting.redb");
        // A copy left by a crash mid-rewrite: the original is whole.
        let copy = copy_path(&path);
        if copy.exists() {
            std::fs::remove_file(&copy).with_context(|| format!("removing {}", copy.display()))?;
        }
        let db = Database::create(&path)
            .with_context(|| format!("opening the alert store {}", path.display()))?;
        let txn = db.begin_write().context("alert store: begin")?;
        txn.open_table(STATE).context("alert store: state table")?;
        txn.open_table(OUTBOX)
            .context("alert store: outbox table")?;
        txn.commit().context("alert store: creating tables")?;
        let store = Store {
            db: RwLock::new(db),
            path,
        };
        if dir.join(REWRITE_PENDING).exists() {
            store.rewrite()?;
        }
        Ok(store)
    }

    fn db(&self) -> Result<RwLockReadGuard<'_, Database>> {
        self.db
            .read()
            .map_err(|_| anyhow::anyhow!("alert store lock poisoned"))
    }

    /// Marks the store as holding deleted rows in freed pages until
    /// [`Store::rewrite`] ends (call before a purge's transaction).
    pub fn rewrite_pending(&self) -> Result<()> {
        let marker = self.marker();
        std::fs::write(&marker, b"").with_context(|| format!("creating {}", marker.display()))?;
        sync_parent(&marker);
        Ok(())
    }

    /// Copies every live row into a fresh file and swaps it in for the
    /// old one (rename, so a crash leaves one or the other whole), so no
    /// deleted row survives in a freed page. Blocks every other use of the
    /// store meanwhile.
    pub fn rewrite(&self) -> Result<()> {
        let mut db = self
            .db
            .write()
            .map_err(|_| anyhow::anyhow!("alert store lock poisoned"))?;
        let copy = copy_path(&self.path);
        if copy.exists() {
            std::fs::remove_file(&copy).with_context(|| format!("removing {}", copy.display()))?;
        }
        {
            let fresh =
                Database::create(&copy).with_context(|| format!("creating {}", copy.display()))?;
            let read = db.begin_read().context("alert store: begin read")?;
            let write = fresh.begin_write().context("alert store copy: begin")?;
            for table in [STATE, OUTBOX] {
                let from = read.open_table(table).context("alert store: open table")?;
                let mut to = write
                    .open_table(table)
                    .context("alert store copy: open table")?;
                for row in from.iter().context("alert store: scanning")? {
                    let (key, value) = row.context("alert store: reading")?;
                    to.insert(key.value(), value.value())
                        .context("alert store copy: writing")?;
                }
            }
            write.commit().context("alert store copy: commit")?;
        }
        std::fs::rename(&copy, &self.path)
            .with_context(|| format!("replacing {} with its rewrite", self.path.display()))?;
        sync_parent(&self.path);
        *db = Database::create(&self.path)
            .with_context(|| format!("reopening the alert store {}", self.path.display()))?;
        let marker = self.marker();
        match std::fs::remove_file(&marker) {
            Ok(()) => sync_parent(&marker),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", marker.display())),
        }
        Ok(())
    }

    fn marker(&self) -> PathBuf {
        self.path.with_file_name(REWRITE_PENDING)
    }

    pub fn load_state(&self) -> Result<State> {
        let db = self.db()?;
        let txn = db.begin_read().context("alert store: begin read")?;
        let table = txn.open_table(STATE).context("alert store: state table")?;
        match table.get(STATE_KEY).context("alert store: reading state")? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .with_context(|| format!("decoding the alert state in {}", self.path.display())),
            None => Ok(State::default()),
        }
    }

    /// Every outbox entry, pending and dead.
    pub fn entries(&self) -> Result<Vec<OutboxEntry>> {
        let db = self.db()?;
        let txn = db.begin_read().context("alert store: begin read")?;
        let table = txn
            .open_table(OUTBOX)
            .context("alert store: outbox table")?;
        let mut out = Vec::new();
        for row in table.iter().context("alert store: scanning the outbox")? {
            let (id, bytes) = row.context("alert store: reading the outbox")?;
            let entry: OutboxEntry = serde_json::from_slice(bytes.value()).with_context(|| {
                format!(
                    "decoding outbox entry {} in {}",
                    id.value(),
                    self.path.display()
                )
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Writes the state (when given) and puts/removes outbox entries, all
    /// in one durable transaction.
    pub fn commit(
        &self,
        state: Option<&State>,
        put: &[OutboxEntry],
        remove: &[String],
    ) -> Result<()> {
        let db = self.db()?;
        let txn = db.begin_write().context("alert store: begin")?;
        {
            if let Some(state) = state {
                let bytes = serde_json::to_vec(state)?;
                let mut table = txn.open_table(STATE).context("alert store: state table")?;
                table
                    .insert(STATE_KEY, bytes.as_slice())
                    .context("alert store: writing state")?;
            }
            let mut table = txn
                .open_table(OUTBOX)
                .context("alert store: outbox table")?;
            for entry in put {
                let bytes = serde_json::to_vec(entry)?;
                table
                    .insert(entry.notification.id.as_str(), bytes.as_slice())
                    .context("alert store: writing an outbox entry")?;
            }
            for id in remove {
                table
                    .remove(id.as_str())
                    .context("alert store: removing an outbox entry")?;
            }
        }
        txn.commit().context("alert store: commit")?;
        Ok(())
    }
}

fn copy_path(path: &Path) -> PathBuf {
    path.with_extension("redb.rewrite")
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::model::AlertStatus;
    use std::collections::BTreeMap;

    pub fn notification(id: &str, receiver: &str) -> Notification {
        Notification {
            id: id.into(),
            receiver: receiver.into(),
            group_key: "0/alertname=x,tenant=default".into(),
            group_labels: BTreeMap::new(),
            status: AlertStatus::Firing,
            alerts: Vec::new(),
            escalation_level: 0,
            created_at: 1,
            external_url: "https://x".into(),
            ack_url: None,
        }
    }

    #[test]
    fn state_and_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.load_state().unwrap().seq, 0);
            let state = State {
                seq: 7,
                ..State::default()
            };
            let entry = OutboxEntry {
                notification: notification("n1", "hook"),
                state: EntryState::Pending,
                attempts: 0,
                next_attempt_at: 5,
                last_error: None,
                fired_at: Some(3),
                failover: false,
            };
            let other = OutboxEntry {
                notification: notification("n2", "hook"),
                ..entry.clone()
            };
            store.commit(Some(&state), &[entry, other], &[]).unwrap();
            store.commit(None, &[], &["n2".to_string()]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_state().unwrap().seq, 7);
        let entries = store.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].notification.id, "n1");
        assert_eq!(entries[0].fired_at, Some(3));
    }

    #[test]
    fn a_rewrite_leaves_no_deleted_row_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alerting.redb");
        let holds = |needle: &[u8]| {
            let bytes = std::fs::read(&file).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        };
        let entry = |id: &str, receiver: &str| OutboxEntry {
            notification: notification(id, receiver),
            state: EntryState::Dead,
            attempts: 3,
            next_attempt_at: 5,
            last_error: None,
            fired_at: None,
            failover: false,
        };
        let store = Store::open(dir.path()).unwrap();
        store
            .commit(
                None,
                &[
                    entry("gone", "SECRET-RECEIVER-1"),
                    entry("kept", "kept-hook"),
                ],
                &[],
            )
            .unwrap();
        store.rewrite_pending().unwrap();
        store.commit(None, &[], &["gone".to_string()]).unwrap();
        assert!(
            holds(b"SECRET-RECEIVER-1"),
            "redb keeps freed pages as they were"
        );
        // A crash here: the next open finishes the job.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(!holds(b"SECRET-RECEIVER-1"));
        assert!(!dir.path().join(REWRITE_PENDING).exists());
        let ids: Vec<String> = store
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.notification.id)
            .collect();
        assert_eq!(ids, ["kept"]);
        // Live use after a rewrite in place.
        store.commit(None, &[entry("new", "h")], &[]).unwrap();
        store.rewrite().unwrap();
        assert_eq!(store.entries().unwrap().len(), 2);
    }
}
