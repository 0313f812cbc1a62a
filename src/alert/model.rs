//! The types shared by the alert lifecycle, the outbox and the receivers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::detect::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert: a rule firing for one group key, kept across repeated firings
/// of the same rule and key (same fingerprint) until it resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Hex digest of tenant + rule id + group key: stable across restarts,
    /// so repeats deduplicate and receivers can correlate trigger/resolve.
    pub fingerprint: String,
    pub status: AlertStatus,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub tenant: String,
    /// The rule's group key values joined by `|`; empty for an unkeyed rule.
    pub key: String,
    /// Routing and grouping labels. Always holds `alertname` (the rule id),
    /// `severity`, `tenant`, and `key` when the rule is keyed, plus the
    /// rule's own labels.
    pub labels: BTreeMap<String, String>,
    /// Human text: `summary`, `description`, and whatever the rule adds.
    pub annotations: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// Unix nanoseconds: first firing, latest firing, and resolution.
    pub starts_at: i64,
    pub last_fired_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    /// Firings merged into this alert, and the latest firing's numbers.
    pub firings: u64,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub sample_lines: Vec<String>,
    /// A nightowl query showing the evidence over `evidence_from..=evidence_to`.
    pub evidence_query: String,
    pub evidence_from: i64,
    pub evidence_to: i64,
}

/// One page to one receiver: a group of alerts that share the route's
/// `group_by` labels. Written to the outbox before the first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification and stable across retries: receivers get it
    /// as an idempotency key, so a retry after a timeout is recognisable.
    pub id: String,
    pub receiver: String,
    /// Identifies the group (route + group labels) across notifications.
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// Firing when any alert of the group fires, resolved when all resolved.
    pub status: AlertStatus,
    pub alerts: Vec<Alert>,
    /// 0 for the first level of an escalation policy.
    pub escalation_level: u32,
    /// Unix nanoseconds when the notification was created.
    pub created_at: i64,
    /// Base URL of the collector's HTTPS API, for search and ack links,
    /// e.g. `https://nightowl.example.com:7443`.
    pub external_url: String,
    /// A signed, expiring link that acknowledges the group, when the
    /// collector has a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_url: Option<String>,
}

impl Notification {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
    }

    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
    }
}

pub use crate::http_client::DeliveryError;

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Something that delivers a notification: an SMTP relay, a webhook.
pub trait Receiver: Send + Sync {
    fn name(&self) -> &str;
    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a>;
}
