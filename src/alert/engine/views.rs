//! What `alerts list` (and the API and web UI) show of the alerts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Engine;
use crate::alert::model::AlertStatus;
use crate::detect::Severity;

/// What `alerts list` shows per alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub fingerprint: String,
    /// firing, acked, silenced, inhibited or resolved.
    pub state: &'static str,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub starts_at: i64,
    pub last_fired_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    pub firings: u64,
    pub receivers_notified: Vec<String>,
    pub escalation_level: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub silenced_by: Vec<String>,
    /// The search that shows the evidence, over `evidence_from..=evidence_to`
    /// (unix nanos): what the page's Evidence button runs.
    pub evidence_query: String,
    pub evidence_from: i64,
    pub evidence_to: i64,
}

impl Engine {
    pub fn list(&self, tenant: &str, include_resolved: bool, now: i64) -> Vec<AlertView> {
        let inhibited = self.inhibited_set(&self.source_index());
        let mut out: Vec<AlertView> = self
            .state
            .alerts
            .values()
            .filter(|e| e.alert.tenant == tenant)
            .filter(|e| include_resolved || e.alert.status == AlertStatus::Firing)
            .map(|e| {
                let a = &e.alert;
                let silenced_by = self.silenced_by(a, now);
                let state = if a.status == AlertStatus::Resolved {
                    "resolved"
                } else if !silenced_by.is_empty() {
                    "silenced"
                } else if inhibited.contains(&a.fingerprint) {
                    "inhibited"
                } else if e.acked_at.is_some() {
                    "acked"
                } else {
                    "firing"
                };
                let escalation_level = self
                    .state
                    .groups
                    .values()
                    .filter(|g| g.members.contains(&a.fingerprint))
                    .map(|g| g.escalation_level)
                    .max()
                    .unwrap_or(0);
                AlertView {
                    fingerprint: a.fingerprint.clone(),
                    state,
                    rule_id: a.rule_id.clone(),
                    title: a.title.clone(),
                    severity: a.severity,
                    key: a.key.clone(),
                    labels: a.labels.clone(),
                    starts_at: a.starts_at,
                    last_fired_at: a.last_fired_at,
                    ends_at: a.ends_at,
                    firings: a.firings,
                    receivers_notified: e.receivers_notified.iter().cloned().collect(),
                    escalation_level,
                    acked_by: e.acked_by.clone(),
                    acked_at: e.acked_at,
                    silenced_by,
                    evidence_query: a.evidence_query.clone(),
                    evidence_from: a.evidence_from,
                    evidence_to: a.evidence_to,
                }
            })
            .collect();
        // Triage order: what still needs someone first, the most severe
        // first, then the newest.
        let rank = |state: &str| match state {
            "firing" => 0,
            "acked" => 1,
            "silenced" | "inhibited" => 2,
            _ => 3,
        };
        out.sort_by_key(|v| {
            (
                rank(v.state),
                std::cmp::Reverse(v.severity),
                std::cmp::Reverse(v.starts_at),
            )
        });
        out
    }

    /// What an ack link's confirmation page names: the group's labels and
    /// its alerts still listed (firing, then resolved), `None` for a group
    /// that is gone.
    pub fn group_view(
        &self,
        tenant: &str,
        group_key: &str,
        now: i64,
    ) -> Option<(BTreeMap<String, String>, Vec<AlertView>)> {
        let group = self.state.groups.get(group_key)?;
        if group.tenant != tenant {
            return None;
        }
        let alerts = self
            .list(tenant, true, now)
            .into_iter()
            .filter(|v| group.members.contains(&v.fingerprint))
            .collect();
        Some((group.labels.clone(), alerts))
    }
}
