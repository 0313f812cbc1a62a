//! `STATE_DIR/status.json`, rewritten every second by a running agent, and
//! `nightowl agent status`, which prints it.
//!
//! A file rather than a socket: it needs no listener in a sandboxed unit,
//! survives the agent (the last state before a crash is still readable), and
//! `cat` works when nothing else does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "status.json";
/// A status older than this means the agent is not running (or is stuck).
pub const STALE_AFTER_SECS: i64 = 5;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub agent_id: String,
    pub updated_unix_ms: i64,
    pub connection: serde_json::Value,
    pub spool: SpoolStatus,
    pub files: Vec<FileStatus>,
    pub counters: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// Bytes on disk now.
    pub bytes: u64,
    /// The most bytes it held since the agent started.
    pub peak_bytes: u64,
    pub limit_bytes: u64,
    pub segments: usize,
    /// Spooled bytes the collector has not acknowledged yet.
    pub unacked_bytes: u64,
    /// Reading is paused because the spool is full.
    pub full: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileStatus {
    pub path: PathBuf,
    pub source_id: String,
    /// `active`, or `rotated` (no longer matched by the globs: renamed or
    /// deleted, read to its end before it is closed).
    pub state: String,
    pub size: u64,
    /// File offset read into the spool.
    pub offset: u64,
    /// Stream offset the collector acknowledged.
    pub acked: u64,
    /// Bytes not yet acknowledged: unread plus spooled-but-unacked.
    pub bytes_behind: u64,
}

pub fn write(state_dir: &Path, status: &Status) -> Result<()> {
    let json = serde_json::to_vec_pretty(status).context("encoding the status")?;
    super::checkpoint::write_atomic(state_dir, FILE_NAME, &json, false)
}

pub fn read(state_dir: &Path) -> Result<Status> {
    let path = state_dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (is an agent running with --state-dir {}?)",
            path.display(),
            state_dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Seconds since the status was written.
pub fn age_secs(status: &Status) -> i64 {
    (crate::time::now_nanos() / 1_000_000 - status.updated_unix_ms) / 1000
}

/// `nightowl agent status`: text for people (or the file for `--json`).
/// Errors when the status is stale, so scripts and probes notice.
pub fn command(state_dir: &Path, json: bool) -> Result<String> {
    let status = read(state_dir)?;
    let age = age_secs(&status);
    let out = if json {
        serde_json::to_string_pretty(&status).context("encoding the status")? + "\n"
    } else {
        render(&status, age)
    };
    if age > STALE_AFTER_SECS {
        anyhow::bail!(
            "{out}status is {age}s old: the agent (pid {}) is not running or is stuck",
            status.pid
        );
    }
    Ok(out)
}

fn render(s: &Status, age: i64) -> String {
    let mut out = String::new();
    let c = &s.connection;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let _ = writeln!(
        out,
        "agent {} (pid {}), updated {age}s ago",
        s.agent_id, s.pid
    );
    let _ = writeln!(
        out,
        "collector: {} {}{}",
        text(&c["state"]),
        text(&c["collector"]),
        if c["compression"].as_bool() == Some(true) {
            " (zstd)"
        } else {
            ""
        }
    );
    if let Some(err) = c["last_error"].as_str() {
        let at = c["last_error_unix"].as_i64();
        let earlier = text(&c["state"]) == "connected"
            && at
                .zip(c["since_unix"].as_i64())
                .is_some_and(|(at, since)| at <= since);
        match at {
            Some(at) if earlier => {
                let when = crate::time::format_rfc3339(at.saturating_mul(1_000_000_000));
                let _ = writeln!(out, "last error (at {when}, before this connection): {err}");
            }
            _ => {
                let _ = writeln!(out, "last error: {err}");
            }
        }
    }
    let sp = &s.spool;
    let _ = writeln!(
        out,
        "spool: {} bytes on disk (peak {}, limit {}), {} unacked, {} segment(s){}",
        sp.bytes,
        sp.peak_bytes,
        sp.limit_bytes,
        sp.unacked_bytes,
        sp.segments,
        if sp.full {
            ", FULL: reading paused"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "files:");
    for f in &s.files {
        let _ = writeln!(
            out,
            "  {} [{}] offset {} of {}, {} bytes behind",
            f.path.display(),
            f.state,
            f.offset,
            f.size,
            f.bytes_behind
        );
    }
    if s.files.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let lost = s.counters["resend_lost_bytes"].as_u64().unwrap_or(0);
    if lost > 0 {
        let _ = writeln!(
            out,
            "LOST: {lost} bytes in {} range(s) a collector had acknowledged and no longer \
             held, which the files could not give again (see the agent's warnings)",
            s.counters["resend_lost_ranges"].as_u64().unwrap_or(0)
        );
    }
    if let Some(map) = s.counters.as_object() {
        let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "counters: {}", parts.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_connection(connection: serde_json::Value) -> Status {
        Status {
            pid: 1,
            agent_id: "a".into(),
            updated_unix_ms: 0,
            connection,
            spool: SpoolStatus::default(),
            files: Vec::new(),
            counters: serde_json::json!({}),
        }
    }

    #[test]
    fn an_error_from_before_the_connection_is_told_as_history() {
        let old = with_connection(serde_json::json!({
            "state": "connected", "collector": "127.0.0.1:7400", "compression": true,
            "last_error": "connecting to 127.0.0.1:7400: Connection refused",
            "last_error_unix": 1_700_000_000, "since_unix": 1_700_000_005,
        }));
        let text = render(&old, 0);
        assert!(
            text.contains(
                "last error (at 2023-11-14T22:13:20Z, before this connection): connecting"
            ),
            "{text}"
        );
        let now = with_connection(serde_json::json!({
            "state": "backoff", "collector": "127.0.0.1:7400",
            "last_error": "refused", "last_error_unix": 1_700_000_010, "since_unix": 1_700_000_010,
        }));
        assert!(render(&now, 0).contains("last error: refused"));
    }
}
