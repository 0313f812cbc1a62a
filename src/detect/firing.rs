//! What the engine emits when a rule fires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rule::Severity;

/// One firing of one rule for one key. Serialized as one NDJSON line by
/// `rules run`, and handed to the alerting stage by the collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub tenant: String,
    /// The group key's values as logged, joined by `|`; empty for a rule
    /// without `key`.
    pub key: String,
    /// Lines (threshold, match, sequence's first step, spike's bucket),
    /// numerator lines (ratio) or distinct values (distinct) behind the
    /// firing.
    pub count: u64,
    /// The kind's measured value when it is not the count: the sum
    /// (threshold with `sum`), the share (ratio), the z-score (spike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The rule's window, seconds.
    pub window: f64,
    /// Unix nanoseconds of the first and last line counted.
    pub first_ts: i64,
    pub last_ts: i64,
    /// At most five lines, each cut to 512 bytes.
    pub sample_lines: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// A nightowl search query showing the evidence, to run over
    /// `first_ts..=last_ts`.
    pub evidence_query: String,
}
