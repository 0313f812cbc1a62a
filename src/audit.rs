//! The audit log: who read or changed what, when, from where.
//!
//! Every HTTPS API request (searches, aggregations, exports, purges, token
//! and tenant changes, rule backtests, silences, acks — and refused
//! attempts) appends one JSON line to `DATA_DIR/audit/audit.log`, fsynced
//! before the response leaves. Each line carries the SHA-256 of the line
//! before it (`prev`) and its own (`hash`, over the line's bytes up to the
//! hash field), so editing, deleting or reordering a line breaks the chain
//! at that point: `nightowl audit verify` finds it. The log has no delete
//! path in the API; only someone with the data dir can rotate it, and a
//! rotation is visible as a chain restart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub prev: String,
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

pub struct AuditLog {
    path: PathBuf,
    state: Mutex<Tail>,
}

struct Tail {
    file: File,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens (creating) `DATA_DIR/audit/audit.log` and finds the chain's end.
    pub fn open(data_dir: &Path) -> Result<AuditLog> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("audit.log");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let (seq, prev) = match last_line(&mut file)
            .with_context(|| format!("reading the end of {}", path.display()))?
        {
            Some(line) => {
                let (entry, hash) = parse_line(&line).with_context(|| {
                    format!("the last line of {} is not an audit entry", path.display())
                })?;
                (entry.seq + 1, hash)
            }
            None => (0, GENESIS.to_string()),
        };
        Ok(AuditLog {
            path,
            state: Mutex::new(Tail { file, seq, prev }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and fsyncs one entry. Blocking: call from a blocking context
    /// or accept one fdatasync of latency.
    pub fn append(&self, record: Record) -> Result<()> {
        let mut tail = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("audit log lock poisoned"))?;
        let entry = Entry {
            seq: tail.seq,
            time: crate::time::format_rfc3339(crate::time::now_nanos()),
            actor: record.actor,
            tenant: record.tenant,
            role: record.role,
            ip: record.ip,
            method: record.method,
            path: record.path,
            query: record.query,
            body: record.body,
            status: record.status,
            prev: tail.prev.clone(),
        };
        let (line, hash) = seal(&entry)?;
        tail.file
            .write_all(line.as_bytes())
            .and_then(|()| tail.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        tail.seq += 1;
        tail.prev = hash;
        Ok(())
    }
}

/// The line for `entry` (with `hash` as its last field, and a newline) and
/// that hash.
fn seal(entry: &Entry) -> Result<(String, String)> {
    let body = serde_json::to_string(entry).context("encoding an audit entry")?;
    let Some(open) = body.strip_suffix('}') else {
        bail!("an audit entry did not encode as a JSON object");
    };
    let hash = hex::encode(Sha256::digest(open.as_bytes()));
    Ok((format!("{open},\"hash\":\"{hash}\"}}\n"), hash))
}

/// Splits a line into its entry and its recorded hash, checking that the
/// hash covers exactly the bytes before it.
fn parse_line(line: &str) -> Result<(Entry, String)> {
    const TAIL: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() < TAIL || !line.is_char_boundary(line.len() - TAIL) {
        bail!("too short to hold a hash");
    }
    let (open, tail) = line.split_at(line.len() - TAIL);
    let hash = tail
        .strip_prefix(",\"hash\":\"")
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .context("no hash field at the end")?;
    let entry: Entry = serde_json::from_str(&format!("{open}}}")).context("not an audit entry")?;
    let actual = hex::encode(Sha256::digest(open.as_bytes()));
    if actual != hash {
        bail!("its hash does not match its content (edited)");
    }
    Ok((entry, hash.to_string()))
}

fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    // Entries are short (bodies are capped), so the last one ends within
    // the last 64 KiB.
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .map(str::to_string))
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    pub entries: u64,
    /// The first problem: line number (1-based) and what is wrong.
    pub broken: Option<(u64, String)>,
}

/// Walks the whole chain of `path`.
pub fn verify(path: &Path) -> Result<Verified> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut prev = GENESIS.to_string();
    let mut entries = 0u64;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.with_context(|| format!("reading {} line {number}", path.display()))?;
        let broken = |why: String| {
            Ok(Verified {
                entries,
                broken: Some((number, why)),
            })
        };
        let (entry, hash) = match parse_line(&line) {
            Ok(parsed) => parsed,
            Err(e) => return broken(format!("{e:#}")),
        };
        if entry.prev != prev {
            return broken("its prev hash is not the hash of the line before (a line was removed, inserted or reordered)".into());
        }
        if entry.seq != index as u64 {
            return broken(format!("sequence {} where {index} was expected", entry.seq));
        }
        prev = hash;
        entries += 1;
    }
    Ok(Verified {
        entries,
        broken: None,
    })
}

/// Every entry of `path`, for the API's listing (newest last).
pub fn read_all(path: &Path) -> Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if let Ok((entry, _)) = parse_line(&line) {
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(actor: &str, query: &str) -> Record {
        Record {
            actor: actor.into(),
            tenant: "acme".into(),
            role: "viewer".into(),
            ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/api/v1/search".into(),
            query: query.into(),
            status: 200,
            ..Record::default()
        }
    }

    #[test]
    fn the_chain_survives_reopening_and_detects_edits_and_removals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        log.append(record("a", "q=status:500")).expect("append");
        log.append(record("b", "q=*")).expect("append");
        drop(log);
        let log = AuditLog::open(dir.path()).expect("reopen");
        log.append(record("c", "q=\"quoted\" path:/x"))
            .expect("append");
        let path = log.path().to_path_buf();
        let ok = verify(&path).expect("verify");
        assert_eq!(
            ok,
            Verified {
                entries: 3,
                broken: None
            }
        );
        let entries = read_all(&path).expect("read");
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(entries[2].query, "q=\"quoted\" path:/x");

        let text = std::fs::read_to_string(&path).expect("read");
        let edited = text.replacen("q=*", "q=x", 1);
        std::fs::write(&path, &edited).expect("write");
        let bad = verify(&path).expect("verify");
        assert_eq!(bad.broken.as_ref().map(|b| b.0), Some(2), "{bad:?}");

        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
        let bad = verify(&path).expect("verify");
        assert_eq!(bad.broken.as_ref().map(|b| b.0), Some(2), "{bad:?}");
        assert!(
            bad.broken.as_ref().is_some_and(|b| b.1.contains("removed")),
            "{bad:?}"
        );
    }
}
