//! Durable paging state in one redb file (`DATA_DIR/alerting/alerting.redb`):
//! the engine's [`State`] (alerts, groups, acks, silences, escalation
//! timers) and the outbox (every notification not yet delivered, plus the
//! dead letters).
//!
//! The state is a row per alert, group and silence, and a persist writes
//! only the rows the engine marked dirty: the cost of a tick follows the
//! alerts that changed, not how many exist (an alert storm of 10k scanners
//! once made every repeat re-serialize all of them). A file written by an
//! older version holds the whole state as one value; it is split into rows
//! on open.
//!
//! New notifications are committed in the same transaction as the state
//! that says they were sent: after a crash either both exist (the outbox
//! delivers them) or neither (the engine sends them again). So a restart
//! neither loses a page nor pages twice for one change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::engine::{Dirty, State};
use super::model::Notification;

/// Legacy: the whole state as one JSON value under [`LEGACY_STATE_KEY`].
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
const LEGACY_STATE_KEY: &str = "engine";
const SEQ_KEY: &str = "seq";

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
        txn.open_table(ALERTS)
            .context("alert store: alerts table")?;
        txn.open_table(GROUPS)
            .context("alert store: groups table")?;
        txn.open_table(SILENCES)
            .context("alert store: silences table")?;
        txn.open_table(META).context("alert store: meta table")?;
        txn.open_table(OUTBOX)
            .context("alert store: outbox table")?;
        txn.commit().context("alert store: creating tables")?;
        Ok(Store { db, path })
    }

    /// The state as last committed. A legacy whole-state value is moved
    /// into rows in the same call, so it is read once.
    pub fn load_state(&self) -> Result<State> {
        let txn = self.db.begin_read().context("alert store: begin read")?;
        let legacy = txn.open_table(STATE).context("alert store: state table")?;
        if let Some(bytes) = legacy
            .get(LEGACY_STATE_KEY)
            .context("alert store: reading state")?
        {
            let mut state: State = serde_json::from_slice(bytes.value())
                .with_context(|| format!("decoding the alert state in {}", self.path.display()))?;
            drop(bytes);
            drop(legacy);
            drop(txn);
            state.dirty.all = true;
            self.commit(Some(&mut state), &[], &[])
                .context("alert store: moving the legacy state into rows")?;
            return Ok(state);
        }
        let mut state = State {
            alerts: self.rows(&txn, ALERTS, "alert")?,
            groups: self.rows(&txn, GROUPS, "group")?,
            silences: self.rows(&txn, SILENCES, "silence")?,
            ..State::default()
        };
        let meta = txn.open_table(META).context("alert store: meta table")?;
        if let Some(seq) = meta.get(SEQ_KEY).context("alert store: reading seq")? {
            state.seq = seq.value();
        }
        Ok(state)
    }

    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        txn: &redb::ReadTransaction,
        table: TableDefinition<&str, &[u8]>,
        what: &str,
    ) -> Result<BTreeMap<String, T>> {
        let table = txn
            .open_table(table)
            .with_context(|| format!("alert store: {what} table"))?;
        let mut out = BTreeMap::new();
        for row in table
            .iter()
            .with_context(|| format!("alert store: scanning {what}s"))?
        {
            let (key, bytes) = row.with_context(|| format!("alert store: reading {what}s"))?;
            let value = serde_json::from_slice(bytes.value()).with_context(|| {
                format!("decoding {what} {} in {}", key.value(), self.path.display())
            })?;
            out.insert(key.value().to_string(), value);
        }
        Ok(out)
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

    /// Writes the state's dirty rows (when given) and puts/removes outbox
    /// entries, all in one durable transaction. The dirty set is cleared
    /// only when the transaction commits, so a failed persist is retried
    /// by the next one.
    pub fn commit(
        &self,
        state: Option<&mut State>,
        put: &[OutboxEntry],
        remove: &[String],
    ) -> Result<()> {
        let Some(state) = state else {
            return self.commit_rows(None, put, remove);
        };
        let dirty = std::mem::take(&mut state.dirty);
        let result = self.commit_rows(Some((state, &dirty)), put, remove);
        if result.is_err() {
            state.dirty.merge(dirty);
        }
        result
    }

    fn commit_rows(
        &self,
        state: Option<(&State, &Dirty)>,
        put: &[OutboxEntry],
        remove: &[String],
    ) -> Result<()> {
        let txn = self.db.begin_write().context("alert store: begin")?;
        {
            if let Some((state, dirty)) = state {
                write_rows(
                    &txn,
                    ALERTS,
                    &state.alerts,
                    &dirty.alerts,
                    dirty.all,
                    "alert",
                )?;
                write_rows(
                    &txn,
                    GROUPS,
                    &state.groups,
                    &dirty.groups,
                    dirty.all,
                    "group",
                )?;
                write_rows(
                    &txn,
                    SILENCES,
                    &state.silences,
                    &dirty.silences,
                    dirty.all,
                    "silence",
                )?;
                let mut meta = txn.open_table(META).context("alert store: meta table")?;
                meta.insert(SEQ_KEY, state.seq)
                    .context("alert store: writing seq")?;
                if dirty.all {
                    let mut legacy = txn.open_table(STATE).context("alert store: state table")?;
                    legacy
                        .remove(LEGACY_STATE_KEY)
                        .context("alert store: removing the legacy state")?;
                }
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

/// Upserts the rows named in `keys` that `rows` holds and removes the ones
/// it no longer holds; with `all`, rewrites the table to match `rows`.
fn write_rows<T: Serialize>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    rows: &BTreeMap<String, T>,
    keys: &BTreeSet<String>,
    all: bool,
    what: &str,
) -> Result<()> {
    let mut table = txn
        .open_table(table)
        .with_context(|| format!("alert store: {what} table"))?;
    let mut buf = Vec::new();
    let mut put = |table: &mut redb::Table<&str, &[u8]>, key: &str, value: &T| -> Result<()> {
        buf.clear();
        serde_json::to_writer(&mut buf, value)
            .with_context(|| format!("alert store: encoding {what} {key}"))?;
        table
            .insert(key, buf.as_slice())
            .with_context(|| format!("alert store: writing {what} {key}"))?;
        Ok(())
    };
    if all {
        table
            .retain(|key, _| rows.contains_key(key))
            .with_context(|| format!("alert store: clearing {what}s"))?;
        for (key, value) in rows {
            put(&mut table, key, value)?;
        }
        return Ok(());
    }
    for key in keys {
        match rows.get(key) {
            Some(value) => put(&mut table, key, value)?,
            None => {
                table
                    .remove(key.as_str())
                    .with_context(|| format!("alert store: removing {what} {key}"))?;
            }
        }
    }
    Ok(())
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
            let mut state = State {
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
            store
                .commit(Some(&mut state), &[entry, other], &[])
                .unwrap();
            store.commit(None, &[], &["n2".to_string()]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_state().unwrap().seq, 7);
        let entries = store.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].notification.id, "n1");
        assert_eq!(entries[0].fired_at, Some(3));
    }

    fn alert_entry(fp: &str) -> crate::alert::engine::AlertEntry {
        let json = format!(
            r#"{{"alert":{{"fingerprint":"{fp}","status":"firing","rule_id":"r","title":"t",
            "severity":"warning","tenant":"default","key":"k","labels":{{}},"annotations":{{}},
            "tags":[],"starts_at":1,"last_fired_at":1,"firings":1,"count":1,"sample_lines":[],
            "evidence_query":"","evidence_from":1,"evidence_to":1}},"resolve_after":5}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn a_persist_writes_dirty_rows_and_removes_gone_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = State::default();
        for fp in ["a", "b", "c"] {
            state.alerts.insert(fp.into(), alert_entry(fp));
            state.dirty.alerts.insert(fp.into());
        }
        store.commit(Some(&mut state), &[], &[]).unwrap();
        assert!(
            state.dirty.is_empty(),
            "a committed persist clears the dirty set"
        );
        // "b" changes in memory but is not marked: the store keeps the old row.
        state.alerts.get_mut("b").unwrap().alert.firings = 9;
        state.alerts.get_mut("c").unwrap().alert.firings = 4;
        state.dirty.alerts.insert("c".into());
        state.alerts.remove("a");
        state.dirty.alerts.insert("a".into());
        state.seq = 3;
        store.commit(Some(&mut state), &[], &[]).unwrap();
        drop(store);
        let loaded = Store::open(dir.path()).unwrap().load_state().unwrap();
        assert_eq!(loaded.alerts.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(loaded.alerts["b"].alert.firings, 1);
        assert_eq!(loaded.alerts["c"].alert.firings, 4);
        assert_eq!(loaded.seq, 3);
    }

    #[test]
    fn a_legacy_whole_state_value_is_moved_into_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = State {
            seq: 11,
            ..State::default()
        };
        legacy.alerts.insert("a".into(), alert_entry("a"));
        {
            let store = Store::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(STATE).unwrap();
                let bytes = serde_json::to_vec(&legacy).unwrap();
                table.insert(LEGACY_STATE_KEY, bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let state = store.load_state().unwrap();
        assert_eq!(state.seq, 11);
        assert_eq!(state.alerts.keys().collect::<Vec<_>>(), ["a"]);
        assert!(state.dirty.is_empty());
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(STATE).unwrap();
        assert!(
            table.get(LEGACY_STATE_KEY).unwrap().is_none(),
            "legacy value removed"
        );
        drop(table);
        drop(txn);
        let again = store.load_state().unwrap();
        assert_eq!(again.alerts.len(), 1);
        assert_eq!(again.seq, 11);
    }
}
