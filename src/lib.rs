//! nightowl: centralized logging and streaming anomaly detection.
//!
//! The module tree follows the pipeline, data flowing one way:
//!
//! ```text
//! agent → transport → ingest (WAL, durable, dedup) → parse → index → api
//! ```
//!
//! `pipeline` wires the collector's stages together in one function;
//! `main.rs` only parses the command line and calls into here.

pub mod agent;
pub mod alert;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod detect;
pub mod error;
pub mod fsutil;
pub mod http_client;
pub mod index;
pub mod ingest;
pub mod kafka;
pub mod parse;
pub mod patterns;
pub mod pipeline;
pub mod redact;
pub mod refusals;
pub mod seglog;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod transport;
pub mod wal;

/// The import rules of ARCHITECTURE.md, checked on the source.
#[cfg(test)]
mod layering;

/// Makes every file and directory this process creates from now on owner
/// only (0600/0700), whatever umask it was started with: the WAL, index,
/// audit log, alerting store, tokens, TLS keys, the agent's state and
/// spool hold logs or credentials. Outside systemd (whose units set
/// `UMask=0077` too) the inherited umask is often 022. Called first thing
/// by the collector, the indexer and the agent.
pub fn private_umask() {
    // SAFETY: umask(2) only swaps the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
}
