//! Search over a tenant's day partitions: hits newest first, counts,
//! date histograms and top values.
//!
//! Only the partitions whose day overlaps the time range are opened. A
//! partition entirely inside the range is searched without a time clause.
//!
//! Queries from the API run under a [`Budget`]: the query's shape is
//! checked against [`QueryLimits`] before anything is opened, and the
//! search itself stops at the deadline (checked between partitions, every
//! few thousand documents inside a segment, and while loading hits), not
//! just its answer: the blocking thread is free again (docs/limits.md).

mod admission;
mod budget;
mod compile;
mod ops;
#[cfg(test)]
mod tests;

pub use admission::QueryLimits;
pub use budget::{Budget, CancelOnDrop, Deadlined};
pub use compile::CompiledQuery;
pub use ops::*;

use serde::Serialize;
use serde_json::Value as Json;

/// `[since, until)` in unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    pub since: i64,
    pub until: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("bad query: {0}")]
    BadQuery(String),
    /// The query or request is larger than a `[limits.query]` setting; the
    /// message names the setting and its value.
    #[error("{0}")]
    TooLarge(String),
    /// The search ran past `limits.query.timeout_ms` and was stopped.
    #[error("the search ran longer than {limit_ms} ms (limits.query.timeout_ms) and was stopped; narrow the time range or the query")]
    Timeout { limit_ms: u64 },
    /// Whoever asked is gone (the client disconnected).
    #[error("the search was cancelled")]
    Cancelled,
    #[error("search failed: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Internal(e.into())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    pub raw: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Bucket {
    /// Bucket start, unix milliseconds.
    pub start_ms: i64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopValue {
    pub value: Json,
    pub count: u64,
}
