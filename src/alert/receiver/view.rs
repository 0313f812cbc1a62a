//! What every receiver shows about a notification: the lead alert, the
//! notification's severity and counts, and the links (evidence search, ack).
//! Computed once per send, shared by templates and bodies.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::alert::model::{Alert, AlertStatus, DeliveryError, Notification};
use crate::detect::Severity;
use crate::http_client::encode_param;

pub struct View<'a> {
    pub notification: &'a Notification,
    /// The alert a one-line title talks about: the most severe firing one
    /// (the first on ties), or the most severe resolved one.
    pub lead: &'a Alert,
    /// The highest severity of the firing alerts (of all, when resolved).
    pub severity: Severity,
    pub firing: usize,
    pub resolved: usize,
}

impl<'a> View<'a> {
    pub fn new(notification: &'a Notification) -> Result<View<'a>, DeliveryError> {
        let firing = notification.firing().count();
        let pool: Vec<&Alert> = if firing > 0 {
            notification.firing().collect()
        } else {
            notification.alerts.iter().collect()
        };
        let mut lead: Option<&Alert> = None;
        for alert in pool {
            if lead.is_none_or(|l| alert.severity > l.severity) {
                lead = Some(alert);
            }
        }
        let Some(lead) = lead else {
            return Err(DeliveryError::Permanent(format!(
                "notification {} holds no alert",
                notification.id
            )));
        };
        Ok(View {
            notification,
            lead,
            severity: lead.severity,
            firing,
            resolved: notification.alerts.len() - firing,
        })
    }

    /// The same notification seen from one of its alerts, for receivers that
    /// send one event per alert (PagerDuty).
    pub fn for_alert(&self, alert: &'a Alert) -> View<'a> {
        View {
            notification: self.notification,
            lead: alert,
            severity: alert.severity,
            firing: self.firing,
            resolved: self.resolved,
        }
    }

    pub fn status_str(&self) -> &'static str {
        status_str(self.notification.status)
    }

    /// `name=value, ...` of the group labels; `-` for a global group.
    pub fn group_text(&self) -> String {
        if self.notification.group_labels.is_empty() {
            return "-".to_string();
        }
        join_labels(&self.notification.group_labels)
    }

    /// `title (key)` for one alert, `title (key) and N more` for a group.
    pub fn summary(&self) -> String {
        let mut out = self.lead.title.clone();
        if !self.lead.key.is_empty() {
            let _ = write!(out, " ({})", self.lead.key);
        }
        let others = self.notification.alerts.len().saturating_sub(1);
        if others > 0 {
            let _ = write!(out, " and {others} more");
        }
        out
    }

    /// The link that opens the alert's evidence in nightowl's search API:
    /// its query over its evidence window. None without an `external_url`.
    pub fn search_url(&self, alert: &Alert) -> Option<String> {
        self.evidence_link(alert, "/api/v1/search?")
    }

    /// The same evidence opened in nightowl's web page (after its login).
    /// The query rides in the URL's fragment, which a browser sends to no
    /// server, so it stays out of proxies' and servers' access logs.
    pub fn page_url(&self, alert: &Alert) -> Option<String> {
        self.evidence_link(alert, "/#")
    }

    fn evidence_link(&self, alert: &Alert, path: &str) -> Option<String> {
        let base = self.notification.external_url.trim_end_matches('/');
        if base.is_empty() || alert.evidence_query.is_empty() {
            return None;
        }
        let mut url = format!("{base}{path}q={}", encode_param(&alert.evidence_query));
        if alert.evidence_from > 0 {
            let _ = write!(
                url,
                "&since={}",
                encode_param(&rfc3339(alert.evidence_from))
            );
        }
        if alert.evidence_to > 0 {
            let _ = write!(url, "&until={}", encode_param(&rfc3339(alert.evidence_to)));
        }
        Some(url)
    }
}

pub fn status_str(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

pub fn join_labels(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{k}={v}");
    }
    out
}

/// RFC 3339 with nanoseconds, UTC, as Go's `time.Time` marshals: the form
/// Alertmanager clients parse.
pub fn rfc3339(nanos: i64) -> String {
    crate::time::format_rfc3339(nanos)
}

pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The notification `alerts preview` and `alerts test-receiver` use when no
/// fixture is given: one critical firing alert with every field set, so
/// every part of every body shows.
pub fn fixture() -> Notification {
    let now = crate::time::now_nanos();
    let minute = 60 * crate::time::NANOS_PER_SEC;
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), "ssh-bruteforce".to_string());
    labels.insert("severity".to_string(), "critical".to_string());
    labels.insert("tenant".to_string(), "acme".to_string());
    labels.insert("key".to_string(), "203.0.113.7".to_string());
    labels.insert("team".to_string(), "secops".to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_string(),
        "42 failed SSH logins from 203.0.113.7 in 5 minutes".to_string(),
    );
    annotations.insert(
        "description".to_string(),
        "A test page from nightowl: no action needed.".to_string(),
    );
    let mut group_labels = BTreeMap::new();
    group_labels.insert("alertname".to_string(), "ssh-bruteforce".to_string());
    let alert = Alert {
        fingerprint: "5f0c2a9d8e7b6a41".to_string(),
        status: AlertStatus::Firing,
        rule_id: "ssh-bruteforce".to_string(),
        title: "SSH brute force".to_string(),
        severity: Severity::Critical,
        tenant: "acme".to_string(),
        key: "203.0.113.7".to_string(),
        labels,
        annotations,
        tags: vec!["auth".to_string(), "ssh".to_string()],
        starts_at: now - 5 * minute,
        last_fired_at: now,
        ends_at: None,
        firings: 3,
        count: 42,
        value: None,
        sample_lines: vec![
            "sshd[811]: Failed password for root from 203.0.113.7 port 52144 ssh2".to_string(),
            "sshd[811]: Failed password for invalid user <admin> from 203.0.113.7 port 52146 ssh2"
                .to_string(),
        ],
        evidence_query: "service:sshd AND \"Failed password\" AND 203.0.113.7".to_string(),
        evidence_from: now - 5 * minute,
        evidence_to: now,
    };
    Notification {
        id: format!("test-{now}"),
        receiver: String::new(),
        group_key: "{}:{alertname=\"ssh-bruteforce\"}".to_string(),
        group_labels,
        status: AlertStatus::Firing,
        alerts: vec![alert],
        escalation_level: 0,
        created_at: now,
        external_url: "https://nightowl.example.com:7443".to_string(),
        ack_url: Some("https://nightowl.example.com:7443/ack/example-token".to_string()),
    }
}
