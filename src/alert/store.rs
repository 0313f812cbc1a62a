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
//!
//! A tenant purge deletes its rows, but redb leaves freed pages as they
//! were: the old copies of the state (sample lines, silence comments) stay
//! readable in the file until reused. So a purge ends with [`Store::rewrite`]:
//! the live rows are copied into a fresh file that replaces the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
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
/// (group key, fingerprint) -> [`MEMBER`] | [`LAST_SENT`]: a group's sets,
/// a row per alert, so an alert joining a storm's group writes one row.
const MEMBERS: TableDefinition<(&str, &str), u8> = TableDefinition::new("group_members");
const MEMBER: u8 = 1;
const LAST_SENT: u8 = 2;
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
    /// Its failover pages went out already (it kept failing past
    /// `failover_after`): a later dead letter does not send them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_over: bool,
}

pub struct Store {
    /// Replaced whole by [`Store::rewrite`]; every other use reads.
    db: RwLock<Database>,
    path: PathBuf,
}

/// Removes `tenant` from the alert store in `dir` (a copy restored from a
/// backup, not the live one): its alerts, groups and silences, and its
/// notifications waiting or dead-lettered, then rewrites the file so no
/// freed page keeps them. What a purge does to the live store.
pub fn purge_copy(dir: &Path, tenant: &str) -> Result<()> {
    let store = Store::open(dir)?;
    let mut state = store.load_state()?;
    state.forget_tenant(tenant);
    let ids: Vec<String> = store
        .entries()?
        .into_iter()
        .filter(|e| super::outbox::tenant_of(e) == Some(tenant))
        .map(|e| e.notification.id)
        .collect();
    store.rewrite_pending()?;
    store.commit(Some(&mut state), &[], &ids)?;
    store.rewrite()
}

/// Every live row of `db` into a new database file at `to`.
fn copy_rows(db: &Database, to: &Path) -> Result<()> {
    let fresh = Database::create(to).with_context(|| format!("creating {}", to.display()))?;
    let read = db.begin_read().context("alert store: begin read")?;
    let write = fresh.begin_write().context("alert store copy: begin")?;
    copy_table(&read, &write, META)?;
    copy_table(&read, &write, MEMBERS)?;
    for table in [STATE, ALERTS, GROUPS, SILENCES, OUTBOX] {
        copy_table(&read, &write, table)?;
    }
    write.commit().context("alert store copy: commit")?;
    Ok(())
}

/// Every row of `table` from `read` into `write`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    write: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<()> {
    let name = table.name().to_string();
    let from = read
        .open_table(table)
        .with_context(|| format!("alert store: open {name}"))?;
    let mut into = write
        .open_table(table)
        .with_context(|| format!("alert store copy: open {name}"))?;
    for row in from
        .iter()
        .with_context(|| format!("alert store: scanning {name}"))?
    {
        let (key, value) = row.with_context(|| format!("alert store: reading {name}"))?;
        into.insert(key.value(), value.value())
            .with_context(|| format!("alert store copy: writing {name}"))?;
    }
    Ok(())
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
        txn.open_table(ALERTS)
            .context("alert store: alerts table")?;
        txn.open_table(GROUPS)
            .context("alert store: groups table")?;
        txn.open_table(SILENCES)
            .context("alert store: silences table")?;
        txn.open_table(META).context("alert store: meta table")?;
        txn.open_table(OUTBOX)
            .context("alert store: outbox table")?;
        txn.open_table(MEMBERS)
            .context("alert store: group members table")?;
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
        copy_rows(&db, &copy)?;
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

    /// Copies every live row, as of one read transaction, into a fresh
    /// file at `to` (a backup's consistent copy; writers go on meanwhile).
    pub fn copy_to(&self, to: &Path) -> Result<()> {
        let db = self.db()?;
        copy_rows(&db, to)
    }

    fn marker(&self) -> PathBuf {
        self.path.with_file_name(REWRITE_PENDING)
    }

    /// The state as last committed. A legacy whole-state value is moved
    /// into rows in the same call, so it is read once.
    pub fn load_state(&self) -> Result<State> {
        let db = self.db()?;
        let txn = db.begin_read().context("alert store: begin read")?;
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
            drop(db);
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
        // Group rows of an older version hold their sets inline: written
        // again as heads and member rows, once.
        let inline_sets = state
            .groups
            .values()
            .any(|g| !g.members.is_empty() || !g.last_sent.is_empty());
        let members = txn
            .open_table(MEMBERS)
            .context("alert store: group members table")?;
        for row in members
            .iter()
            .context("alert store: scanning group members")?
        {
            let (key, flags) = row.context("alert store: reading group members")?;
            let (group, fp) = key.value();
            if let Some(group) = state.groups.get_mut(group) {
                if flags.value() & MEMBER != 0 {
                    group.members.insert(fp.to_string());
                }
                if flags.value() & LAST_SENT != 0 {
                    group.last_sent.insert(fp.to_string());
                }
            }
        }
        if inline_sets {
            drop((members, meta, txn, db));
            state.dirty.all = true;
            self.commit(Some(&mut state), &[], &[])
                .context("alert store: moving group members into rows")?;
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
        let db = self.db()?;
        let txn = db.begin_write().context("alert store: begin")?;
        {
            if let Some((state, dirty)) = state {
                write_rows(
                    &txn,
                    ALERTS,
                    &state.alerts,
                    &dirty.alerts,
                    dirty.all,
                    "alert",
                    |buf, alert| serde_json::to_writer(buf, alert),
                )?;
                write_rows(
                    &txn,
                    GROUPS,
                    &state.groups,
                    &dirty.groups,
                    dirty.all,
                    "group",
                    |buf, group| serde_json::to_writer(buf, &group.head()),
                )?;
                write_members(&txn, state, dirty)?;
                write_rows(
                    &txn,
                    SILENCES,
                    &state.silences,
                    &dirty.silences,
                    dirty.all,
                    "silence",
                    |buf, silence| serde_json::to_writer(buf, silence),
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
fn write_rows<T>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    rows: &BTreeMap<String, T>,
    keys: &BTreeSet<String>,
    all: bool,
    what: &str,
    encode: impl Fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> Result<()> {
    let mut table = txn
        .open_table(table)
        .with_context(|| format!("alert store: {what} table"))?;
    let mut buf = Vec::new();
    let mut put = |table: &mut redb::Table<&str, &[u8]>, key: &str, value: &T| -> Result<()> {
        buf.clear();
        encode(&mut buf, value).with_context(|| format!("alert store: encoding {what} {key}"))?;
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

/// Writes the member rows `dirty` names (all of them with `dirty.all`),
/// and drops the rows of groups that are gone.
fn write_members(txn: &redb::WriteTransaction, state: &State, dirty: &Dirty) -> Result<()> {
    let mut table = txn
        .open_table(MEMBERS)
        .context("alert store: group members table")?;
    let flags = |group: &super::engine::Group, fp: &str| {
        let mut flags = 0;
        if group.members.contains(fp) {
            flags |= MEMBER;
        }
        if group.last_sent.contains(fp) {
            flags |= LAST_SENT;
        }
        flags
    };
    if dirty.all {
        table
            .retain(|_, _| false)
            .context("alert store: clearing group members")?;
        for (key, group) in &state.groups {
            for fp in group.members.union(&group.last_sent) {
                table
                    .insert((key.as_str(), fp.as_str()), flags(group, fp))
                    .with_context(|| format!("alert store: writing a member of group {key}"))?;
            }
        }
        return Ok(());
    }
    for key in dirty
        .groups
        .iter()
        .filter(|k| !state.groups.contains_key(*k))
    {
        let mut gone = Vec::new();
        for row in table
            .range((key.as_str(), "")..)
            .with_context(|| format!("alert store: scanning the members of group {key}"))?
        {
            let (row, _) =
                row.with_context(|| format!("alert store: reading the members of group {key}"))?;
            let (group, fp) = row.value();
            if group != key {
                break;
            }
            gone.push(fp.to_string());
        }
        for fp in gone {
            table
                .remove((key.as_str(), fp.as_str()))
                .with_context(|| format!("alert store: removing a member of group {key}"))?;
        }
    }
    for (key, fp) in &dirty.members {
        let row = (key.as_str(), fp.as_str());
        match state.groups.get(key).map_or(0, |group| flags(group, fp)) {
            0 => table.remove(row),
            flags => table.insert(row, flags),
        }
        .with_context(|| format!("alert store: writing a member of group {key}"))?;
    }
    Ok(())
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
                failed_over: false,
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

    fn group(key: &str, members: &[&str], last_sent: &[&str]) -> crate::alert::engine::Group {
        crate::alert::engine::Group {
            key: key.into(),
            route_id: "0".into(),
            tenant: "default".into(),
            labels: BTreeMap::new(),
            members: members.iter().map(|m| m.to_string()).collect(),
            created_at: 1,
            group_wait: 2,
            last_flush_at: Some(3),
            last_sent: last_sent.iter().map(|m| m.to_string()).collect(),
            escalation_started: None,
            escalation_level: 0,
        }
    }

    fn member_rows(store: &Store) -> Vec<(String, String, u8)> {
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(MEMBERS).unwrap();
        let rows = table
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                let (g, fp) = k.value();
                (g.to_string(), fp.to_string(), v.value())
            })
            .collect();
        rows
    }

    #[test]
    fn group_sets_are_rows_written_as_members_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = State::default();
        for key in ["g1", "g2"] {
            state
                .groups
                .insert(key.into(), group(key, &["a", "b"], &["a"]));
            state.dirty.groups.insert(key.into());
            for fp in ["a", "b"] {
                state.dirty.members.insert((key.into(), fp.into()));
            }
        }
        store.commit(Some(&mut state), &[], &[]).unwrap();
        {
            let db = store.db().unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(GROUPS).unwrap();
            let row = table.get("g1").unwrap().unwrap();
            let json = std::str::from_utf8(row.value()).unwrap().to_string();
            assert!(
                json.contains(r#""members":[]"#) && json.contains(r#""last_sent":[]"#),
                "the group row holds no member: {json}"
            );
        }
        // "c" joins and is marked; "d" joins unmarked: the store writes
        // what it is told, so a missed mark would show here.
        let g1 = state.groups.get_mut("g1").unwrap();
        g1.members.insert("c".into());
        g1.members.insert("d".into());
        g1.members.remove("b");
        g1.last_sent.insert("c".into());
        for fp in ["b", "c"] {
            state.dirty.members.insert(("g1".into(), fp.into()));
        }
        state.groups.remove("g2");
        state.dirty.groups.insert("g2".into());
        store.commit(Some(&mut state), &[], &[]).unwrap();
        assert_eq!(
            member_rows(&store),
            [
                ("g1".into(), "a".into(), MEMBER | LAST_SENT),
                ("g1".into(), "c".into(), MEMBER | LAST_SENT)
            ],
            "b left, d was never marked, g2 went with its rows"
        );
        let before = member_rows(&store);
        store.rewrite().unwrap();
        assert_eq!(member_rows(&store), before, "a rewrite copies them");
        drop(store);
        let loaded = Store::open(dir.path()).unwrap().load_state().unwrap();
        assert_eq!(loaded.groups.keys().collect::<Vec<_>>(), ["g1"]);
        let g1 = &loaded.groups["g1"];
        assert_eq!(g1.members.iter().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(g1.last_sent.iter().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(g1.last_flush_at, Some(3));
        assert!(loaded.dirty.is_empty());
    }

    #[test]
    fn group_rows_with_inline_sets_are_split_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(GROUPS).unwrap();
                let bytes = serde_json::to_vec(&group("g", &["a", "b"], &["b", "z"])).unwrap();
                table.insert("g", bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let state = store.load_state().unwrap();
        assert_eq!(state.groups["g"].members.len(), 2);
        assert!(state.dirty.is_empty());
        assert_eq!(
            member_rows(&store),
            [
                ("g".into(), "a".into(), MEMBER),
                ("g".into(), "b".into(), MEMBER | LAST_SENT),
                ("g".into(), "z".into(), LAST_SENT)
            ]
        );
        let again = store.load_state().unwrap();
        assert_eq!(again.groups["g"].members, state.groups["g"].members);
        assert_eq!(again.groups["g"].last_sent, state.groups["g"].last_sent);
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
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
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
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(STATE).unwrap();
        assert!(
            table.get(LEGACY_STATE_KEY).unwrap().is_none(),
            "legacy value removed"
        );
        drop(table);
        drop(txn);
        drop(db);
        let again = store.load_state().unwrap();
        assert_eq!(again.alerts.len(), 1);
        assert_eq!(again.seq, 11);
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
            failed_over: false,
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
