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
pub mod index;
pub mod ingest;
pub mod kafka;
pub mod parse;
pub mod patterns;
pub mod pipeline;
pub mod redact;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod transport;
pub mod wal;
