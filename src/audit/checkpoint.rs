//! Signed checkpoints of the chain head, as CloudTrail's digest files or a
//! transparency log's signed tree heads: (chain, sequence, hash, time),
//! signed with the audit key's Ed25519 half. Appended to
//! `DATA_DIR/audit/checkpoints.log` and handed to the witnesses
//! (`witness.rs`), one JSON object per line, the signature last:
//!
//! ```text
//! {"checkpoint":7,"chain":"…","seq":1041,"hash":"…","time":"…","key":"<ed25519 public>","sig":"…"}
//! ```
//!
//! A log that ends before the sequence a checkpoint names was cut; an entry
//! at that sequence with another hash was rewritten.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::keys::{signature_valid, AuditKey};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Numbered from 0 within a chain.
    pub checkpoint: u64,
    /// The chain's id, from its start entry.
    pub chain: String,
    /// The last entry covered, and its hash (MAC).
    pub seq: u64,
    pub hash: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The Ed25519 public key that signed it, hex.
    pub key: String,
}

/// A checkpoint and its signed line, as witnesses receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    /// The JSON line with its signature and a newline.
    pub line: String,
}

const SIG: &str = ",\"sig\":\"";

impl Checkpoint {
    /// The signed line (with its newline).
    pub fn signed_line(&self, key: &AuditKey) -> Result<String> {
        let body = serde_json::to_string(self).context("encoding a checkpoint")?;
        let Some(open) = body.strip_suffix('}') else {
            bail!("a checkpoint did not encode as a JSON object");
        };
        Ok(format!(
            "{open}{SIG}{}\"}}\n",
            key.sign_hex(open.as_bytes())
        ))
    }
}

/// A checkpoint read back, with whether its signature holds.
#[derive(Debug, Clone)]
pub struct Read {
    pub checkpoint: Checkpoint,
    pub signature_valid: bool,
    pub line: u64,
}

/// Parses one signed checkpoint. `text` may carry a prefix (a syslog
/// header, a timestamp a webhook receiver added): the object starts at the
/// first `{"checkpoint":`.
pub fn parse(text: &str) -> Option<(Checkpoint, bool)> {
    let start = text.find("{\"checkpoint\":")?;
    let line = text[start..].trim_end();
    let end = line.rfind("\"}")? + 2;
    let line = &line[..end];
    let sig_at = line.rfind(SIG)?;
    let (open, tail) = line.split_at(sig_at);
    let sig = tail.strip_prefix(SIG)?.strip_suffix("\"}")?;
    let checkpoint: Checkpoint = serde_json::from_str(&format!("{open}}}")).ok()?;
    let valid = signature_valid(&checkpoint.key, open.as_bytes(), sig);
    Some((checkpoint, valid))
}

/// Every checkpoint in `path` (lines without one are skipped: a witness's
/// file may hold other messages). `Ok(None)` when the file does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<Read>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = Vec::new();
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&line);
        if let Some((checkpoint, signature_valid)) = parse(&text) {
            out.push(Read {
                checkpoint,
                signature_valid,
                line: index as u64 + 1,
            });
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_lines_parse_back_with_prefixes_and_fail_when_edited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _) = AuditKey::load_or_create(&dir.path().join("k")).expect("key");
        let cp = Checkpoint {
            checkpoint: 3,
            chain: "c0ffee".into(),
            seq: 41,
            hash: "ab".repeat(32),
            time: "2026-01-01T00:00:00Z".into(),
            key: key.public_hex(),
        };
        let line = cp.signed_line(&key).expect("sign");
        let (back, valid) = parse(&line).expect("parse");
        assert!(valid);
        assert_eq!(back, cp);
        let syslog =
            format!("<110>1 2026-01-01T00:00:00Z host nightowl 7 audit-checkpoint - {line}");
        assert!(parse(&syslog).is_some_and(|(c, v)| v && c == cp));
        let edited = line.replace("\"seq\":41", "\"seq\":40");
        assert!(parse(&edited).is_some_and(|(_, v)| !v));
        assert!(parse("no checkpoint here").is_none());
    }
}
