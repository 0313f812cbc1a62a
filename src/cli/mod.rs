//! Client-side commands: talking to a collector's HTTPS API.

pub mod admin;
pub mod backtest;
pub mod cert;
pub mod http;
pub mod redact;
pub mod search;

/// An error the user caused (bad flag, bad query, bad file): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}
