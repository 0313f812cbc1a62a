//! Walking a chain and checking it against signed checkpoints: what
//! `nightowl audit verify` prints and what the collector checks before it
//! appends to a log. Every problem names the file, the line and what kind
//! of change explains it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::checkpoint::{self, Checkpoint};
use super::keys::AuditKey;
use super::{split_line, ChainStart, Entry, GENESIS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Not an audit entry at all.
    Damaged,
    /// Its MAC (or, unkeyed, its hash) does not cover its content.
    Edited,
    /// Its hash is a plain SHA-256: rewritten by someone without the key.
    Forged,
    /// Entries are missing from the middle.
    Removed,
    /// Entries are out of order or repeated.
    Reordered,
    /// Its predecessor is not the entry it was chained to.
    Spliced,
    /// An unkeyed entry after keyed ones.
    Downgraded,
    /// Keyed with another key than the one given.
    WrongKey,
    /// A checkpoint covers entries the log no longer has.
    Truncated,
    /// The entry a checkpoint signed has another hash now.
    Rewritten,
    /// A checkpoint whose signature does not hold.
    BadCheckpoint,
    /// A checkpoint of a chain this log neither continues nor names.
    UnknownChain,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::Damaged => "damaged",
            Kind::Edited => "edited",
            Kind::Forged => "forged",
            Kind::Removed => "removed",
            Kind::Reordered => "reordered",
            Kind::Spliced => "spliced",
            Kind::Downgraded => "downgraded",
            Kind::WrongKey => "wrong key",
            Kind::Truncated => "truncated",
            Kind::Rewritten => "rewritten",
            Kind::BadCheckpoint => "bad checkpoint",
            Kind::UnknownChain => "unknown chain",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub kind: Kind,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

/// The last verified entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub line: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Entries verified, from the first line up to the first problem.
    pub entries: u64,
    /// Of those, in the unkeyed format of before (plain SHA-256 chain).
    pub unkeyed: u64,
    /// The chain id of the log's start entry (none for an unkeyed log).
    pub chain: Option<String>,
    /// Chains this one names as its predecessors.
    pub predecessors: Vec<String>,
    /// Every chain id met: start entries (verified or not) and checkpoints
    /// with a valid signature. A new chain names them all as predecessors,
    /// so a witness's checkpoints of the broken chain are not held against
    /// it.
    pub chains_seen: BTreeSet<String>,
    pub head: Option<Head>,
    /// Byte offset of a last line without its newline that does not
    /// parse: an append cut short by a crash (or a write in progress).
    pub torn_tail: Option<u64>,
    /// Checkpoints of this chain whose signature and entry hold.
    pub checkpoints_verified: u64,
    /// The newest of them in the log's own checkpoint file.
    pub last_local_checkpoint: Option<Checkpoint>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Where the checkpoints to check come from.
pub struct Sources<'a> {
    /// The log's own `checkpoints.log` (may be missing).
    pub local: &'a Path,
    /// Witnesses' copies (webhook bodies, syslog lines): must exist.
    pub witnesses: &'a [PathBuf],
}

/// Walks `log` and checks it against the checkpoints. `key` is needed
/// once a keyed entry is met; without it that is an error, not a problem
/// (the caller must find the key).
pub fn verify(log: &Path, key: Option<&AuditKey>, sources: &Sources<'_>) -> Result<Report> {
    let mut checkpoints: Vec<(PathBuf, checkpoint::Read, bool)> = Vec::new();
    if let Some(read) = checkpoint::read_file(sources.local)? {
        checkpoints.extend(
            read.into_iter()
                .map(|r| (sources.local.to_path_buf(), r, true)),
        );
    }
    for witness in sources.witnesses {
        let read = checkpoint::read_file(witness)?.with_context(|| {
            format!(
                "the witness checkpoint file {} does not exist",
                witness.display()
            )
        })?;
        checkpoints.extend(read.into_iter().map(|r| (witness.clone(), r, false)));
    }
    let wanted: BTreeSet<u64> = checkpoints.iter().map(|c| c.1.checkpoint.seq).collect();

    let mut report = Report::default();
    let walk = walk(log, key, &wanted, &mut report)?;

    for (file, read, local) in &checkpoints {
        let cp: &Checkpoint = &read.checkpoint;
        if read.signature_valid {
            report.chains_seen.insert(cp.chain.clone());
        }
        let problem = |kind: Kind, detail: String| Problem {
            file: file.clone(),
            line: read.line,
            kind,
            detail,
        };
        if !read.signature_valid {
            report.problems.push(problem(
                Kind::BadCheckpoint,
                format!(
                    "checkpoint {} does not verify against the key it names: forged or edited",
                    cp.checkpoint
                ),
            ));
            continue;
        }
        if let Some(key) = key {
            if cp.key != key.public_hex() {
                report.problems.push(problem(
                    Kind::BadCheckpoint,
                    format!(
                        "checkpoint {} is signed by another key ({}) than the audit key's ({})",
                        cp.checkpoint,
                        cp.key,
                        key.public_hex()
                    ),
                ));
                continue;
            }
        }
        if report.chain.as_deref() != Some(cp.chain.as_str()) {
            // A chain broken before its start entry: the first problem
            // already says it all.
            if report.predecessors.contains(&cp.chain) || (walk.broken && report.chain.is_none()) {
                continue;
            }
            let detail = match &report.chain {
                None => format!(
                    "checkpoint {} ({}) covers seq {} of chain {}, but the log holds no entry of that chain: it was emptied or replaced",
                    cp.checkpoint, cp.time, cp.seq, cp.chain
                ),
                Some(chain) => format!(
                    "checkpoint {} ({}) belongs to chain {}, which this log (chain {chain}) neither continues nor names as its predecessor: the log was replaced",
                    cp.checkpoint, cp.time, cp.chain
                ),
            };
            let kind = if report.chain.is_none() {
                Kind::Truncated
            } else {
                Kind::UnknownChain
            };
            report.problems.push(problem(kind, detail));
            continue;
        }
        match walk.max_seq {
            Some(max) if cp.seq <= max => {}
            _ => {
                let ends = match (&report.head, walk.max_seq) {
                    (_, None) => "the log holds no entry".to_string(),
                    (_, Some(max)) => format!("the log ends at seq {max}"),
                };
                report.problems.push(problem(
                    Kind::Truncated,
                    format!(
                        "{ends}, but checkpoint {} ({}) covers up to seq {}: entries after it were cut off",
                        cp.checkpoint, cp.time, cp.seq
                    ),
                ));
                continue;
            }
        }
        match walk.hashes.get(&cp.seq) {
            Some((hash, _)) if *hash == cp.hash => {
                report.checkpoints_verified += 1;
                let newer = report
                    .last_local_checkpoint
                    .as_ref()
                    .is_none_or(|last| cp.checkpoint > last.checkpoint);
                if *local && newer {
                    report.last_local_checkpoint = Some(cp.clone());
                }
            }
            Some((_, line)) => report.problems.push(problem(
                Kind::Rewritten,
                format!(
                    "the entry with seq {} (audit log line {line}) is not the one checkpoint {} ({}) signed",
                    cp.seq, cp.checkpoint, cp.time
                ),
            )),
            // Beyond the first break: already reported.
            None => {}
        }
    }
    Ok(report)
}

struct Walk {
    /// seq → (hash, line) of verified entries a checkpoint names.
    hashes: BTreeMap<u64, (String, u64)>,
    /// The highest seq on any line that parses, verified or not.
    max_seq: Option<u64>,
    /// Whether a problem stopped the walk.
    broken: bool,
}

fn walk(
    log: &Path,
    key: Option<&AuditKey>,
    wanted: &BTreeSet<u64>,
    report: &mut Report,
) -> Result<Walk> {
    let mut out = Walk {
        hashes: BTreeMap::new(),
        max_seq: None,
        broken: false,
    };
    let file = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("opening {}", log.display())),
    };
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS.to_string();
    let mut expected = 0u64;
    let mut keyed = false;
    let mut broken = false;
    // A break whose kind depends on what follows: (line, expected, found).
    let mut gap: Option<(u64, u64, u64)> = None;
    let mut gap_filled_at: Option<u64> = None;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", log.display()))?;
        if n == 0 {
            break;
        }
        number += 1;
        let start = offset;
        offset += n as u64;
        let complete = buf.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(&buf);
        let parsed = split_line(&text).and_then(|(open, hash)| {
            serde_json::from_str::<Entry>(&format!("{open}}}"))
                .ok()
                .map(|entry| (open, hash, entry))
        });
        let Some((open, hash, entry)) = parsed else {
            if !complete {
                report.torn_tail = Some(start);
                break;
            }
            if !broken {
                broken = true;
                report.problems.push(problem(
                    log,
                    number,
                    Kind::Damaged,
                    "not an audit entry".into(),
                ));
            }
            continue;
        };
        out.max_seq = Some(out.max_seq.map_or(entry.seq, |m| m.max(entry.seq)));
        if let Some(start) = ChainStart::of(&entry) {
            report.chains_seen.insert(start.chain);
        }
        if broken {
            if let Some((_, want, _)) = gap {
                if entry.seq == want && gap_filled_at.is_none() {
                    gap_filled_at = Some(number);
                }
            }
            continue;
        }
        let sha = || hex::encode(Sha256::digest(open.as_bytes()));
        let integrity = match (&entry.kid, key) {
            (Some(kid), Some(key)) if kid != key.id() => Some((
                Kind::WrongKey,
                format!(
                    "keyed with key id {kid}; the key file {} holds key id {}",
                    key.path().display(),
                    key.id()
                ),
            )),
            (Some(_), Some(key)) => (!key.mac_matches(open.as_bytes(), hash)).then(|| {
                if sha() == hash {
                    (
                        Kind::Forged,
                        "its hash is a plain SHA-256, not the keyed MAC: rewritten by someone without the audit key".into(),
                    )
                } else {
                    (Kind::Edited, "its MAC does not match its content".into())
                }
            }),
            (Some(kid), None) => anyhow::bail!(
                "{}:{number}: the entry is keyed (key id {kid}) and no audit key was given: pass --key-file",
                log.display()
            ),
            (None, _) if keyed => Some((
                Kind::Downgraded,
                "an unkeyed entry after keyed ones: written without the audit key".into(),
            )),
            (None, _) => (sha() != hash).then(|| {
                (
                    Kind::Edited,
                    "its hash does not match its content".to_string(),
                )
            }),
        };
        if let Some((kind, detail)) = integrity {
            broken = true;
            report.problems.push(problem(log, number, kind, detail));
            continue;
        }
        if entry.seq != expected || entry.prev != prev {
            broken = true;
            if entry.seq > expected {
                gap = Some((number, expected, entry.seq));
            } else if entry.seq < expected {
                report.problems.push(problem(
                    log,
                    number,
                    Kind::Reordered,
                    format!(
                        "seq {} comes after seq {}: entries were moved or repeated",
                        entry.seq,
                        expected.saturating_sub(1)
                    ),
                ));
            } else {
                report.problems.push(problem(
                    log,
                    number,
                    Kind::Spliced,
                    "the line before it is not the entry it was chained to".into(),
                ));
            }
            continue;
        }
        if entry.kid.is_some() {
            keyed = true;
        } else {
            report.unkeyed += 1;
        }
        if let Some(start) = ChainStart::of(&entry) {
            report.chain = Some(start.chain);
            report.predecessors.extend(start.previous_chain);
            report.predecessors.extend(start.previous_chains);
        }
        if wanted.contains(&entry.seq) {
            out.hashes.insert(entry.seq, (hash.to_string(), number));
        }
        report.head = Some(Head {
            seq: entry.seq,
            hash: hash.to_string(),
            line: number,
        });
        prev = hash.to_string();
        expected = entry.seq + 1;
        report.entries += 1;
    }
    out.broken = broken;
    if let Some((line, want, found)) = gap {
        report.problems.push(match gap_filled_at {
            Some(at) => problem(
                log,
                line,
                Kind::Reordered,
                format!("seq {found} where seq {want} was expected; seq {want} is at line {at}"),
            ),
            None if found == want + 1 => problem(
                log,
                line,
                Kind::Removed,
                format!("the entry with seq {want} is missing (this line holds seq {found})"),
            ),
            None => problem(
                log,
                line,
                Kind::Removed,
                format!(
                    "the entries with seq {want} to {} are missing (this line holds seq {found})",
                    found - 1
                ),
            ),
        });
    }
    Ok(out)
}

fn problem(file: &Path, line: u64, kind: Kind, detail: String) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line,
        kind,
        detail,
    }
}
