//! The audit log: who read or changed what, when, from where.
//!
//! Every HTTPS API request (searches, aggregations, exports, purges, token
//! and tenant changes, rule backtests, silences, acks — and refused
//! attempts) appends one JSON line to `DATA_DIR/audit/audit.log`, fsynced
//! before the response leaves.
//!
//! Tamper evidence (docs/audit.md):
//! - Each line holds the MAC of the line before it (`prev`) and its own
//!   (`hash`: HMAC-SHA256 over the line's bytes up to that field) under the
//!   audit key (`keys.rs`), which does not live in the data dir. Editing,
//!   deleting or reordering a line, even with every later hash recomputed,
//!   breaks the chain for anyone without the key.
//! - Signed checkpoints of the chain head (`checkpoint.rs`) go to
//!   `checkpoints.log` and to the witnesses (`witness.rs`): a log cut short
//!   after a checkpoint is caught.
//! - The collector verifies the whole log before appending to it and
//!   refuses to start on one that does not verify, unless told to start a
//!   new chain (`--audit-new-chain`), which moves the old log aside and is
//!   recorded in the new chain's first entry.
//!
//! Tenant data in an entry (a search's query, a silence's comment) is
//! sealed with the tenant's data key (`tenant_keys.rs`), which a purge
//! destroys: the entry stays in the chain, its data is gone for good.
//!
//! Logs written before the key (plain SHA-256 chain, no `kid`) still
//! verify; the first start with a key appends a keyed start entry chained
//! to their last line.

mod checkpoint;
mod keys;
mod tenant_keys;
mod verify;
pub mod witness;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use checkpoint::{Checkpoint, Signed};
pub use keys::{default_key_path, key_path, AuditKey};
pub use verify::{Kind, Problem, Report, Sources};

use tenant_keys::{Fields, Opened, TenantKeys};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// The token id; empty when the request carried no valid token.
    pub actor: String,
    /// The actor's tenant (empty when unauthenticated).
    pub tenant: String,
    #[serde(default)]
    pub role: String,
    pub ip: String,
    pub method: String,
    pub path: String,
    /// The decoded query string: the search query and its range.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The start of a request body (silence matchers, token roles), cut at
    /// [`MAX_BODY`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    pub status: u16,
    /// `query` and `body` sealed with the tenant's data key
    /// (`<key id>.<base64>`). In a listing: `shredded` once a purge
    /// destroyed the key, `unreadable` for a key this log never had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    pub prev: String,
    /// The audit key's id: `hash` is its HMAC. Absent in the unkeyed
    /// format of before, where `hash` is a plain SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// What the caller knows about a request; the log adds seq, time and chain.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub actor: String,
    pub tenant: String,
    pub role: String,
    pub ip: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub status: u16,
}

pub const MAX_BODY: usize = 2048;

/// The log's own entries (chain starts, destroyed tenant keys) carry this
/// actor and method.
pub const SYSTEM_ACTOR: &str = "nightowl";
const SYSTEM_METHOD: &str = "AUDIT";
const CHAIN_PATH: &str = "/audit/chain";

/// How the collector opens its log.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// The audit key file (`[audit] key_file`, `$NIGHTOWL_AUDIT_KEY_FILE`);
    /// `None`: see [`key_path`].
    pub key_file: Option<PathBuf>,
    /// Witness files to verify against at start (`[audit] witness_file`).
    pub witness_files: Vec<PathBuf>,
    /// `--audit-new-chain`: a log that does not verify is moved aside and
    /// a new chain starts, instead of refusing to start.
    pub new_chain: bool,
}

/// Destroys `tenant`'s data key in the `tenant-keys.json` of `dir` (a
/// backup's copy, not the live file): the sealed fields of its entries in
/// that backup's log become unreadable, as a purge makes them in the live
/// one. Returns the key id destroyed, if it had one.
pub fn shred_tenant_keys_in(dir: &Path, tenant: &str) -> Result<Option<String>> {
    tenant_keys::TenantKeys::open(dir)?.destroy(tenant)
}

/// See [`AuditLog::backup_cut`].
#[derive(Debug, Clone)]
pub struct AuditCut {
    pub log: PathBuf,
    pub log_len: u64,
    pub checkpoints: PathBuf,
    pub checkpoints_len: u64,
    pub tenant_keys: Option<Vec<u8>>,
}

fn audit_dir_of(log: &Path) -> &Path {
    log.parent().unwrap_or(Path::new("."))
}

pub struct AuditLog {
    path: PathBuf,
    key: AuditKey,
    state: Mutex<Tail>,
    witness: tokio::sync::watch::Sender<Option<Signed>>,
}

struct Tail {
    file: File,
    seq: u64,
    prev: String,
    chain: String,
    checkpoints: File,
    checkpoints_path: PathBuf,
    next_checkpoint: u64,
    /// The seq the newest checkpoint covers.
    checkpointed: Option<u64>,
    tenant_keys: TenantKeys,
}

/// The body of a chain's start entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChainStart {
    pub chain: String,
    #[serde(default)]
    pub reason: String,
    /// The chain the moved log held (verified up to its first problem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_chain: Option<String>,
    /// Every chain id the moved log and its checkpoints (local or a
    /// witness's) named: their checkpoints belong to the past now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_chains: Vec<String>,
    /// Where the log that did not verify was moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_log: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unkeyed_entries: Option<u64>,
}

impl ChainStart {
    pub fn of(entry: &Entry) -> Option<ChainStart> {
        if entry.actor != SYSTEM_ACTOR || entry.method != SYSTEM_METHOD || entry.path != CHAIN_PATH
        {
            return None;
        }
        serde_json::from_str(&entry.body).ok()
    }
}

fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

impl AuditLog {
    /// Opens (creating) `DATA_DIR/audit/audit.log`: verifies the whole
    /// chain against the checkpoints first, and refuses a log that does not
    /// verify (exit 2) unless `options.new_chain`.
    pub fn open(data_dir: &Path, options: &AuditOptions) -> Result<AuditLog> {
        let dir = audit_dir(data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("audit.log");
        let checkpoints_path = dir.join("checkpoints.log");
        let key_file = key_path(options.key_file.as_deref(), data_dir)?;
        let mut start: Option<ChainStart> = None;
        let key = if key_file.exists() {
            AuditKey::load(&key_file).map_err(|e| crate::error::usage(format!("{e:#}")))?
        } else {
            if let Some(kid) = last_kid(&path)? {
                if !options.new_chain {
                    return Err(crate::error::usage(format!(
                        "the audit log {} is keyed with key id {kid}, but the audit key file {} does not exist: restore the key (or point [audit] key_file at it), or start with --audit-new-chain to move the log aside and start a new chain",
                        path.display(),
                        key_file.display()
                    )));
                }
                let mut sources = vec![checkpoints_path.clone()];
                sources.extend(options.witness_files.iter().cloned());
                start = Some(move_aside(
                    &path,
                    &checkpoints_path,
                    None,
                    chains_in(&sources),
                    vec![format!("the key it was written with (id {kid}) is missing")],
                )?);
            }
            AuditKey::load_or_create(&key_file)?.0
        };
        // A witness file that does not exist yet (first start) has
        // nothing to check against.
        let witnesses: Vec<PathBuf> = options
            .witness_files
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
        let mut report = verify::verify(
            &path,
            Some(&key),
            &Sources {
                local: &checkpoints_path,
                witnesses: &witnesses,
            },
        )?;
        if !report.intact() {
            let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
            if !options.new_chain {
                return Err(crate::error::usage(format!(
                    "the audit log {} does not verify:\n  {}\nthe collector does not append to a log that was tampered with; see `nightowl audit verify`, then start with --audit-new-chain to move it aside and start a new chain (recorded in its first entry)",
                    path.display(),
                    problems.join("\n  ")
                )));
            }
            start = Some(move_aside(
                &path,
                &checkpoints_path,
                report.chain.clone(),
                report.chains_seen.iter().cloned().collect(),
                problems,
            )?);
            report = Report::default();
        } else if options.new_chain && start.is_none() {
            tracing::warn!(path = %path.display(), "--audit-new-chain: the audit log verifies; it is kept and continued");
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if let Some(at) = report.torn_tail {
            // An append cut short by a crash: its request got no answer.
            tracing::warn!(path = %path.display(), offset = at, "cutting a torn last audit entry");
            file.set_len(at)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cutting the torn tail of {}", path.display()))?;
        }
        let checkpoints = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&checkpoints_path)
            .with_context(|| format!("opening {}", checkpoints_path.display()))?;
        let (seq, prev) = match &report.head {
            Some(head) => (head.seq + 1, head.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        let last = report.last_local_checkpoint.as_ref();
        let tail = Tail {
            file,
            seq,
            prev,
            chain: report.chain.clone().unwrap_or_default(),
            checkpoints,
            checkpoints_path,
            next_checkpoint: last.map_or(0, |c| c.checkpoint + 1),
            checkpointed: last.map(|c| c.seq),
            tenant_keys: TenantKeys::open(&dir)?,
        };
        let (witness, _) = tokio::sync::watch::channel(None);
        let log = AuditLog {
            path,
            key,
            state: Mutex::new(tail),
            witness,
        };
        let start = match (start, report.chain.is_some()) {
            (Some(start), _) => Some(start),
            (None, false) if report.entries == 0 => Some(ChainStart {
                reason: "a new log".into(),
                ..ChainStart::default()
            }),
            (None, false) => Some(ChainStart {
                reason: "the log's earlier entries are in the unkeyed format; keyed from here"
                    .into(),
                unkeyed_entries: Some(report.entries),
                ..ChainStart::default()
            }),
            (None, true) => None,
        };
        if let Some(start) = start {
            log.start_chain(start)?;
        }
        log.checkpoint()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoints' public key (hex), for witnesses to pin.
    pub fn public_key(&self) -> String {
        self.key.public_hex()
    }

    pub fn key_path(&self) -> &Path {
        self.key.path()
    }

    /// What a backup copies of the log, taken under the append lock so
    /// the three agree: the log and its checkpoints up to their current
    /// lengths (both only grow, whole lines at a time) and the tenant keys
    /// that open every entry in that prefix.
    pub fn backup_cut(&self) -> Result<AuditCut> {
        let tail = self.tail()?;
        let log_len = tail
            .file
            .metadata()
            .with_context(|| format!("reading the size of {}", self.path.display()))?
            .len();
        let checkpoints_len = tail
            .checkpoints
            .metadata()
            .with_context(|| format!("reading the size of {}", tail.checkpoints_path.display()))?
            .len();
        let keys_path = audit_dir_of(&self.path).join("tenant-keys.json");
        let tenant_keys = match std::fs::read(&keys_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", keys_path.display())),
        };
        Ok(AuditCut {
            log: self.path.clone(),
            log_len,
            checkpoints: tail.checkpoints_path.clone(),
            checkpoints_len,
            tenant_keys,
        })
    }

    /// Every new checkpoint, for the witnesses.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Signed>> {
        self.witness.subscribe()
    }

    fn tail(&self) -> Result<std::sync::MutexGuard<'_, Tail>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("audit log lock poisoned"))
    }

    /// Appends and fsyncs one entry. Blocking: call from a blocking context
    /// or accept one fdatasync of latency.
    pub fn append(&self, record: Record) -> Result<()> {
        let mut tail = self.tail()?;
        // Tenant data goes in sealed with the tenant's key, so a purge can
        // take it back out of an append-only log.
        let (query, body, sealed) =
            if !record.tenant.is_empty() && (!record.query.is_empty() || !record.body.is_empty()) {
                let fields = Fields {
                    query: record.query,
                    body: record.body,
                };
                let sealed = tail.tenant_keys.seal(&record.tenant, &fields)?;
                (String::new(), String::new(), Some(sealed))
            } else {
                (record.query, record.body, None)
            };
        self.write(
            &mut tail,
            Entry {
                seq: 0,
                time: String::new(),
                actor: record.actor,
                tenant: record.tenant,
                role: record.role,
                ip: record.ip,
                method: record.method,
                path: record.path,
                query,
                body,
                status: record.status,
                sealed,
                prev: String::new(),
                kid: None,
            },
        )
    }

    /// Destroys `tenant`'s data key (a purge): the query and body of every
    /// entry made with its tokens so far can no longer be read. Recorded as
    /// an entry of its own (by `actor`, naming the key id).
    pub fn shred_tenant(&self, tenant: &str, actor: &str) -> Result<Option<String>> {
        let mut tail = self.tail()?;
        let Some(id) = tail.tenant_keys.destroy(tenant)? else {
            return Ok(None);
        };
        let body = serde_json::json!({ "destroyed_key": id, "reason": "tenant purge" });
        self.write(
            &mut tail,
            system_entry(actor, tenant, "/audit/tenant-key", body.to_string()),
        )?;
        Ok(Some(id))
    }

    /// Signs the chain head into `checkpoints.log` and hands it to the
    /// witnesses, unless the newest checkpoint already covers it.
    pub fn checkpoint(&self) -> Result<Option<Signed>> {
        let mut tail = self.tail()?;
        let Some(head) = tail.seq.checked_sub(1) else {
            return Ok(None);
        };
        if tail.checkpointed == Some(head) {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            checkpoint: tail.next_checkpoint,
            chain: tail.chain.clone(),
            seq: head,
            hash: tail.prev.clone(),
            time: crate::time::format_rfc3339(crate::time::now_nanos()),
            key: self.key.public_hex(),
        };
        let line = checkpoint.signed_line(&self.key)?;
        let checkpoints_path = tail.checkpoints_path.clone();
        tail.checkpoints
            .write_all(line.as_bytes())
            .and_then(|()| tail.checkpoints.sync_data())
            .with_context(|| format!("appending to {}", checkpoints_path.display()))?;
        tail.next_checkpoint += 1;
        tail.checkpointed = Some(head);
        let signed = Signed { checkpoint, line };
        self.witness.send_replace(Some(signed.clone()));
        Ok(Some(signed))
    }

    /// Every entry, oldest first, with sealed fields opened where the
    /// tenant's key still exists (for the API's listing).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", self.path.display()))?;
            if let Some((open, _)) = split_line(&line) {
                if let Ok(entry) = serde_json::from_str::<Entry>(&format!("{open}}}")) {
                    out.push(entry);
                }
            }
        }
        let tail = self.tail()?;
        for entry in &mut out {
            let Some(sealed) = &entry.sealed else {
                continue;
            };
            match tail.tenant_keys.unseal(&entry.tenant, sealed) {
                Opened::Fields(fields) => {
                    entry.query = fields.query;
                    entry.body = fields.body;
                    entry.sealed = None;
                }
                Opened::Shredded => entry.sealed = Some("shredded".into()),
                Opened::Unknown => entry.sealed = Some("unreadable".into()),
            }
        }
        Ok(out)
    }

    fn start_chain(&self, mut start: ChainStart) -> Result<()> {
        let mut tail = self.tail()?;
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| anyhow::anyhow!("no randomness for a chain id"))?;
        start.chain = hex::encode(id);
        tracing::warn!(chain = %start.chain, reason = %start.reason, "audit log: a new chain starts");
        let body = serde_json::to_string(&start).context("encoding a chain start")?;
        tail.chain = start.chain;
        self.write(&mut tail, system_entry(SYSTEM_ACTOR, "", CHAIN_PATH, body))
    }

    fn write(&self, tail: &mut Tail, mut entry: Entry) -> Result<()> {
        entry.seq = tail.seq;
        entry.time = crate::time::format_rfc3339(crate::time::now_nanos());
        entry.prev = tail.prev.clone();
        entry.kid = Some(self.key.id().to_string());
        let (line, hash) = seal(&entry, &self.key)?;
        tail.file
            .write_all(line.as_bytes())
            .and_then(|()| tail.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        tail.seq += 1;
        tail.prev = hash;
        Ok(())
    }
}

fn system_entry(actor: &str, tenant: &str, path: &str, body: String) -> Entry {
    Entry {
        seq: 0,
        time: String::new(),
        actor: actor.to_string(),
        tenant: tenant.to_string(),
        role: String::new(),
        ip: String::new(),
        method: SYSTEM_METHOD.into(),
        path: path.into(),
        query: String::new(),
        body,
        status: 200,
        sealed: None,
        prev: String::new(),
        kid: None,
    }
}

/// Moves a log that does not verify (and its checkpoints) aside, named by
/// the time, and says so in the next chain's start.
fn move_aside(
    log: &Path,
    checkpoints: &Path,
    previous_chain: Option<String>,
    previous_chains: Vec<String>,
    problems: Vec<String>,
) -> Result<ChainStart> {
    let stamp = crate::time::format_rfc3339(crate::time::now_nanos())
        .chars()
        .take(19)
        .map(|c| if c == ':' { '-' } else { c })
        .collect::<String>();
    let moved = log.with_file_name(format!("audit.log.broken-{stamp}"));
    if log.exists() {
        std::fs::rename(log, &moved)
            .with_context(|| format!("moving {} to {}", log.display(), moved.display()))?;
    }
    if checkpoints.exists() {
        let to = checkpoints.with_file_name(format!("checkpoints.log.broken-{stamp}"));
        std::fs::rename(checkpoints, &to)
            .with_context(|| format!("moving {} to {}", checkpoints.display(), to.display()))?;
    }
    if let Some(dir) = log.parent() {
        let _ = crate::fsutil::sync_dir(dir);
    }
    tracing::warn!(moved = %moved.display(), "--audit-new-chain: the audit log that does not verify was moved aside");
    let mut problems = problems;
    problems.truncate(8);
    Ok(ChainStart {
        reason: "--audit-new-chain: the log did not verify".into(),
        previous_chain,
        previous_chains,
        previous_log: moved.file_name().map(|n| n.to_string_lossy().into_owned()),
        problems,
        ..ChainStart::default()
    })
}

/// The chains of the validly signed checkpoints in `files` (missing files
/// hold none).
fn chains_in(files: &[PathBuf]) -> Vec<String> {
    let mut chains: Vec<String> = files
        .iter()
        .filter_map(|f| checkpoint::read_file(f).ok().flatten())
        .flatten()
        .filter(|read| read.signature_valid)
        .map(|read| read.checkpoint.chain)
        .collect();
    chains.sort();
    chains.dedup();
    chains
}

/// The audit key id named by the last entry of `path`, if it is keyed.
fn last_kid(path: &Path) -> Result<Option<String>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut kid = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&line);
        if let Some((open, _)) = split_line(&text) {
            if let Ok(entry) = serde_json::from_str::<Entry>(&format!("{open}}}")) {
                kid = entry.kid.or(kid);
            }
        }
    }
    Ok(kid)
}

/// Verifies the log of `data_dir` (what `nightowl audit verify` runs).
pub fn verify_data_dir(
    data_dir: &Path,
    key: Option<&AuditKey>,
    witnesses: &[PathBuf],
) -> Result<Report> {
    let dir = audit_dir(data_dir);
    verify::verify(
        &dir.join("audit.log"),
        key,
        &Sources {
            local: &dir.join("checkpoints.log"),
            witnesses,
        },
    )
}

const HASH_FIELD: &str = ",\"hash\":\"";

/// The line for `entry` (with `hash` as its last field, and a newline) and
/// that hash: the entry's MAC under `key`.
fn seal(entry: &Entry, key: &AuditKey) -> Result<(String, String)> {
    let body = serde_json::to_string(entry).context("encoding an audit entry")?;
    let Some(open) = body.strip_suffix('}') else {
        bail!("an audit entry did not encode as a JSON object");
    };
    let hash = key.mac_hex(open.as_bytes());
    Ok((format!("{open}{HASH_FIELD}{hash}\"}}\n"), hash))
}

/// Splits a line into the bytes its hash covers and the hash.
fn split_line(line: &str) -> Option<(&str, &str)> {
    const TAIL: usize = HASH_FIELD.len() + 64 + "\"}".len();
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() < TAIL || !line.is_char_boundary(line.len() - TAIL) {
        return None;
    }
    let (open, tail) = line.split_at(line.len() - TAIL);
    let hash = tail
        .strip_prefix(HASH_FIELD)
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    Some((open, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn record(actor: &str, tenant: &str, query: &str) -> Record {
        Record {
            actor: actor.into(),
            tenant: tenant.into(),
            role: "viewer".into(),
            ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/api/v1/search".into(),
            query: query.into(),
            status: 200,
            ..Record::default()
        }
    }

    struct Dir {
        _root: tempfile::TempDir,
        data: PathBuf,
        options: AuditOptions,
    }

    fn dir() -> Dir {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let options = AuditOptions {
            key_file: Some(root.path().join("keys").join("audit.key")),
            ..AuditOptions::default()
        };
        Dir {
            data,
            options,
            _root: root,
        }
    }

    impl Dir {
        fn open(&self) -> Result<AuditLog> {
            AuditLog::open(&self.data, &self.options)
        }
        fn log(&self) -> PathBuf {
            self.data.join("audit").join("audit.log")
        }
        fn key(&self) -> AuditKey {
            AuditKey::load(self.options.key_file.as_deref().expect("key")).expect("key")
        }
        fn verify(&self) -> Report {
            verify_data_dir(&self.data, Some(&self.key()), &[]).expect("verify")
        }
        fn lines(&self) -> Vec<String> {
            std::fs::read_to_string(self.log())
                .expect("read")
                .lines()
                .map(str::to_string)
                .collect()
        }
        fn write_lines(&self, lines: &[String]) {
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(self.log(), text).expect("write");
        }
    }

    fn kinds(report: &Report) -> Vec<Kind> {
        report.problems.iter().map(|p| p.kind).collect()
    }

    /// Ten searches, then the collector's shutdown checkpoint.
    fn filled() -> Dir {
        let d = dir();
        let log = d.open().expect("open");
        for i in 0..10 {
            log.append(record("a", "", &format!("q=status:{i}")))
                .expect("append");
        }
        log.checkpoint().expect("checkpoint");
        d
    }

    #[test]
    fn keyed_chain_survives_reopening_and_seals_tenant_data() {
        let d = dir();
        let log = d.open().expect("open");
        log.append(record("a", "acme", "q=MARKER-acme"))
            .expect("append");
        log.append(record("b", "", "q=*")).expect("append");
        drop(log);
        let log = d.open().expect("reopen");
        log.append(record("c", "acme", "q=\"quoted\" path:/x"))
            .expect("append");
        let report = d.verify();
        assert!(report.intact(), "{:?}", report.problems);
        // The chain start, three entries.
        assert_eq!(report.entries, 4);
        assert_eq!(report.unkeyed, 0);
        assert!(report.checkpoints_verified >= 1);
        let text = std::fs::read_to_string(d.log()).expect("read");
        assert!(!text.contains("MARKER-acme"), "{text}");
        assert!(text.contains("q=*"), "no tenant, nothing to seal: {text}");
        let entries = log.entries().expect("entries");
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(ChainStart::of(&entries[0]).is_some());
        assert_eq!(entries[1].query, "q=MARKER-acme");
        assert_eq!(entries[1].sealed, None);
        assert_eq!(entries[3].query, "q=\"quoted\" path:/x");
    }

    #[test]
    fn a_purge_shreds_the_tenants_audit_data_and_the_chain_still_verifies() {
        let d = dir();
        let log = d.open().expect("open");
        log.append(record("a", "acme", "q=MARKER-acme"))
            .expect("append");
        log.append(record("o", "other", "q=MARKER-other"))
            .expect("append");
        let id = log.shred_tenant("acme", "admin1").expect("shred");
        assert!(id.is_some());
        log.append(record("a", "acme", "q=after-purge"))
            .expect("append");
        let entries = log.entries().expect("entries");
        let acme: Vec<&Entry> = entries.iter().filter(|e| e.tenant == "acme").collect();
        assert_eq!(acme[0].sealed.as_deref(), Some("shredded"));
        assert_eq!(acme[0].query, "");
        assert_eq!(acme[1].path, "/audit/tenant-key");
        assert_eq!(acme[1].actor, "admin1");
        assert_eq!(acme[2].query, "q=after-purge");
        assert!(entries.iter().any(|e| e.query == "q=MARKER-other"));
        assert!(d.verify().intact());
        let everything: Vec<u8> = ["audit.log", "tenant-keys.json", "checkpoints.log"]
            .iter()
            .flat_map(|f| std::fs::read(d.data.join("audit").join(f)).expect("read"))
            .collect();
        assert!(!everything.windows(12).any(|w| w == b"MARKER-acme\""));
    }

    #[test]
    fn verify_names_edits_removals_reorders_forgeries_and_cuts() {
        let d = filled();
        let original = d.lines();
        assert!(d.verify().intact());

        // Edited: a search hidden by changing its query.
        let mut lines = original.clone();
        lines[3] = lines[3].replace("status:2", "status:9");
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(kinds(&report), [Kind::Edited], "{:?}", report.problems);
        assert_eq!(report.problems[0].line, 4);

        // Removed: a line deleted, the others untouched.
        let mut lines = original.clone();
        lines.remove(5);
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(kinds(&report), [Kind::Removed], "{:?}", report.problems);
        assert_eq!(report.problems[0].line, 6);
        assert!(report.problems[0].detail.contains("seq 5 is missing"));

        // Reordered: two lines swapped.
        let mut lines = original.clone();
        lines.swap(4, 5);
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(kinds(&report), [Kind::Reordered], "{:?}", report.problems);

        // Removed and every later line re-chained with the public SHA-256
        // recipe: without the key it cannot match the MACs.
        let mut lines = original.clone();
        lines.remove(5);
        let mut prev = lines[4][lines[4].len() - 66..lines[4].len() - 2].to_string();
        for (i, line) in lines.iter_mut().enumerate().skip(5) {
            let (open, _) = split_line(line).expect("line");
            let mut entry: serde_json::Value =
                serde_json::from_str(&format!("{open}}}")).expect("json");
            entry["seq"] = serde_json::json!(i);
            entry["prev"] = serde_json::json!(prev);
            let body = serde_json::to_string(&entry).expect("json");
            let open = body.strip_suffix('}').expect("object");
            prev = hex::encode(Sha256::digest(open.as_bytes()));
            *line = format!("{open},\"hash\":\"{prev}\"}}");
        }
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(
            report.problems[0].kind,
            Kind::Forged,
            "{:?}",
            report.problems
        );
        assert_eq!(report.problems[0].line, 6);
        // ...and the shutdown checkpoint names a seq the log no longer has.
        assert!(
            kinds(&report).contains(&Kind::Truncated),
            "{:?}",
            report.problems
        );

        // Truncated: the last three entries cut off.
        let lines = original[..original.len() - 3].to_vec();
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(kinds(&report), [Kind::Truncated], "{:?}", report.problems);
        let detail = &report.problems[0].detail;
        assert!(
            detail.contains("ends at seq 7") && detail.contains("up to seq 10"),
            "{detail}"
        );

        // A checkpoint edited to cover less fails its signature.
        d.write_lines(&original);
        let cps = d.data.join("audit").join("checkpoints.log");
        let text = std::fs::read_to_string(&cps).expect("read");
        std::fs::write(&cps, text.replace("\"seq\":10", "\"seq\":7")).expect("write");
        let report = d.verify();
        assert_eq!(
            kinds(&report),
            [Kind::BadCheckpoint],
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn the_collector_refuses_a_log_that_does_not_verify_unless_told_to_start_anew() {
        let d = filled();
        let lines = d.lines();
        d.write_lines(&lines[..lines.len() - 2]);
        let err = format!("{:#}", d.open().err().expect("refused"));
        assert!(
            err.contains("truncated") && err.contains("--audit-new-chain"),
            "{err}"
        );
        let old_chain = d.verify().chain.expect("chain");

        let options = AuditOptions {
            new_chain: true,
            ..d.options.clone()
        };
        let log = AuditLog::open(&d.data, &options).expect("new chain");
        log.append(record("a", "", "q=next")).expect("append");
        let report = d.verify();
        assert!(report.intact(), "{:?}", report.problems);
        assert_ne!(report.chain.as_deref(), Some(old_chain.as_str()));
        let first = &log.entries().expect("entries")[0];
        let start = ChainStart::of(first).expect("a chain start");
        assert_eq!(start.previous_chain.as_deref(), Some(old_chain.as_str()));
        assert!(start.reason.contains("--audit-new-chain"));
        assert!(start.problems.iter().any(|p| p.contains("truncated")));
        let moved = start.previous_log.expect("moved");
        assert!(d.data.join("audit").join(&moved).exists());
        drop(log);
        // The flag on a log that verifies keeps it.
        AuditLog::open(&d.data, &options).expect("reopen");
        assert_eq!(d.verify().chain, report.chain);
    }

    #[test]
    fn a_new_chain_after_a_forgery_is_not_held_against_by_the_witness() {
        let d = filled();
        let witness = d.data.join("witness.log");
        std::fs::copy(d.data.join("audit").join("checkpoints.log"), &witness).expect("copy");
        // Every hash replaced by a plain SHA-256: even the chain start is
        // unverified, so its id is only known from the checkpoints.
        let forged: Vec<String> = d
            .lines()
            .iter()
            .map(|line| {
                let (open, _) = split_line(line).expect("line");
                let hash = hex::encode(Sha256::digest(open.as_bytes()));
                format!("{open},\"hash\":\"{hash}\"}}")
            })
            .collect();
        d.write_lines(&forged);
        let options = AuditOptions {
            witness_files: vec![witness.clone()],
            ..d.options.clone()
        };
        let err = format!(
            "{:#}",
            AuditLog::open(&d.data, &options).err().expect("refused")
        );
        assert!(err.contains("forged"), "{err}");
        let new_chain = AuditOptions {
            new_chain: true,
            ..options.clone()
        };
        drop(AuditLog::open(&d.data, &new_chain).expect("new chain"));
        // The witness still holds the old chain's checkpoints; the new one
        // names that chain, so a plain start goes on.
        let log = AuditLog::open(&d.data, &options).expect("plain reopen");
        let start = ChainStart::of(&log.entries().expect("entries")[0]).expect("start");
        assert_eq!(start.previous_chain, None);
        assert_eq!(start.previous_chains.len(), 1);
    }

    #[test]
    fn an_unkeyed_log_of_before_is_continued_with_a_keyed_chain() {
        let d = dir();
        std::fs::create_dir_all(d.data.join("audit")).expect("dir");
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for seq in 0..3u64 {
            let entry = Entry {
                seq,
                time: "2026-01-01T00:00:00Z".into(),
                actor: "a".into(),
                tenant: "acme".into(),
                role: "viewer".into(),
                ip: "127.0.0.1".into(),
                method: "GET".into(),
                path: "/api/v1/search".into(),
                query: format!("q={seq}"),
                body: String::new(),
                status: 200,
                sealed: None,
                prev: prev.clone(),
                kid: None,
            };
            let body = serde_json::to_string(&entry).expect("json");
            let open = body.strip_suffix('}').expect("object");
            prev = hex::encode(Sha256::digest(open.as_bytes()));
            lines.push(format!("{open},\"hash\":\"{prev}\"}}"));
        }
        d.write_lines(&lines);
        let log = d.open().expect("open");
        log.append(record("a", "acme", "q=keyed")).expect("append");
        let report = d.verify();
        assert!(report.intact(), "{:?}", report.problems);
        assert_eq!((report.entries, report.unkeyed), (5, 3));
        let entries = log.entries().expect("entries");
        let start = ChainStart::of(&entries[3]).expect("keyed start");
        assert_eq!(start.unkeyed_entries, Some(3));
        drop(log);
        // An unkeyed line after keyed ones: written without the key.
        let mut lines = d.lines();
        let open = split_line(&lines[4]).expect("line").0.to_string();
        let open = open.replace(",\"kid\":", ",\"x\":");
        let hash = hex::encode(Sha256::digest(open.as_bytes()));
        lines[4] = format!("{open},\"hash\":\"{hash}\"}}");
        d.write_lines(&lines);
        let report = d.verify();
        assert_eq!(
            report.problems[0].kind,
            Kind::Downgraded,
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_missing_key_is_refused() {
        let d = filled();
        let mut text = std::fs::read(d.log()).expect("read");
        let full = text.len();
        text.extend_from_slice(b"{\"seq\":11,\"time\":\"2026");
        std::fs::write(d.log(), &text).expect("write");
        let log = d.open().expect("a torn tail is a crash mid-append");
        drop(log);
        let after = std::fs::read(d.log()).expect("read");
        assert_eq!(&after[..full], &text[..full]);
        assert!(d.verify().intact());

        std::fs::remove_file(d.options.key_file.as_deref().expect("key")).expect("rm");
        let err = format!("{:#}", d.open().err().expect("refused"));
        assert!(
            err.contains("audit key file") && err.contains("does not exist"),
            "{err}"
        );
    }

    /// What verifying at start costs: `cargo test --release --lib --
    /// --ignored bench_audit_verify --nocapture` (docs/audit.md).
    #[test]
    #[ignore]
    fn bench_audit_verify() {
        let d = dir();
        let log = d.open().expect("open");
        let n = 50_000;
        let started = std::time::Instant::now();
        for i in 0..n {
            // A realistic mix: searches of tenants (sealed) and the rest.
            let tenant = if i % 2 == 0 { "acme" } else { "" };
            log.append(record(
                "5f2c0a9e1b7d",
                tenant,
                &format!("q=status:{} AND path:/api/v1/items&since=1h", i % 600),
            ))
            .expect("append");
        }
        let appended = started.elapsed();
        drop(log);
        let bytes = std::fs::metadata(d.log()).expect("meta").len();
        let started = std::time::Instant::now();
        let report = d.verify();
        let verified = started.elapsed();
        assert!(report.intact());
        let started = std::time::Instant::now();
        drop(d.open().expect("reopen"));
        let reopened = started.elapsed();
        println!(
            "{n} entries, {:.1} MB: append (fdatasync each) {:.0}/s; verify {:.0} entries/s ({:.0} MB/s); open (verify + checkpoint) {:?}",
            bytes as f64 / 1e6,
            n as f64 / appended.as_secs_f64(),
            n as f64 / verified.as_secs_f64(),
            bytes as f64 / 1e6 / verified.as_secs_f64(),
            reopened
        );
    }

    #[test]
    fn witness_files_catch_a_cut_made_together_with_the_local_checkpoints() {
        let d = filled();
        let witness = d.data.join("witness.log");
        let cps = d.data.join("audit").join("checkpoints.log");
        std::fs::copy(&cps, &witness).expect("copy");
        // The attacker cuts the log and rewrites the local checkpoints to
        // match: only the witness still knows.
        let lines = d.lines();
        d.write_lines(&lines[..lines.len() - 4]);
        let text = std::fs::read_to_string(&cps).expect("read");
        std::fs::write(
            &cps,
            text.lines()
                .next()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default(),
        )
        .expect("write");
        assert!(d.verify().intact(), "locally consistent");
        let report = verify_data_dir(&d.data, Some(&d.key()), std::slice::from_ref(&witness))
            .expect("verify");
        assert_eq!(kinds(&report), [Kind::Truncated], "{:?}", report.problems);
        assert!(report.problems[0].file.ends_with("witness.log"));
    }
}
