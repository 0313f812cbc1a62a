//! The error kind every stage may raise: the user's mistake (a bad flag,
//! config value, query or file), which the binary ends with exit code 2
//! instead of 1. Here, at the bottom, so the pipeline can say so without
//! importing the CLI.

/// An error the user caused (bad flag, bad query, bad file): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}
