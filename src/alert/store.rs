//! Durable paging state in one redb file (`DATA_DIR/alerting/alerting.redb`):
//! the engine's [`State`] (alerts, groups, acks, silences, escalation
//! timers) and the outbox (every notification not yet delivered, plus the
//! dead letters).
//!
//! New notifications are committed in the same transaction as the state
//! that says they were sent: after a crash either both exist (the outbox
//! delivers them) or neither (the engine sends them again). So a restart
//! neither loses a page nor pages twice for one change.

use std::path::Path;

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
    db: Database,
    path: std::path::PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the alerting dir {}", dir.display()))?;
        let path = dir.join("alerting.redb");
        let db = Database::create(&path)
            .with_context(|| format!("opening the alert store {}", path.display()))?;
        let txn = db.begin_write().context("alert store: begin")?;
        txn.open_table(STATE).context("alert store: state table")?;
        txn.open_table(OUTBOX)
            .context("alert store: outbox table")?;
        txn.commit().context("alert store: creating tables")?;
        Ok(Store { db, path })
    }

    pub fn load_state(&self) -> Result<State> {
        let txn = self.db.begin_read().context("alert store: begin read")?;
        let table = txn.open_table(STATE).context("alert store: state table")?;
        match table.get(STATE_KEY).context("alert store: reading state")? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .with_context(|| format!("decoding the alert state in {}", self.path.display())),
            None => Ok(State::default()),
        }
    }

    /// Every outbox entry, pending and dead.
    pub fn entries(&self) -> Result<Vec<OutboxEntry>> {
        let txn = self.db.begin_read().context("alert store: begin read")?;
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
        let txn = self.db.begin_write().context("alert store: begin")?;
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
}
