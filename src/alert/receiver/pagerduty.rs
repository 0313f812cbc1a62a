//! PagerDuty Events API v2: one event per alert, `dedup_key` = the alert's
//! fingerprint, so PagerDuty merges repeats into one incident and a
//! `resolve` closes exactly the incident its `trigger` opened. Resending a
//! whole notification after a partial failure is safe for the same reason.

use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use serde_json::json;

use super::http::classify;
use super::template::Template;
use super::view::{rfc3339, truncate, View};
use super::webhook::pretty;
use super::{read_secret, PagerdutyConfig, Preview};
use crate::alert::model::{Alert, AlertStatus, DeliveryError, Notification, Receiver, SendFuture};
use crate::detect::Severity;
use crate::http_client::HttpTarget;

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
pub const DEFAULT_SUMMARY: &str = "[{{ tenant }}] {{ title }} {{ key }}";
/// PagerDuty refuses a longer `payload.summary`.
const MAX_SUMMARY: usize = 1024;

pub struct PagerdutyFormat {
    summary: Template,
    source: String,
}

impl PagerdutyFormat {
    pub fn new(config: &PagerdutyConfig) -> Result<PagerdutyFormat> {
        let what = format!("receiver {:?}", config.name);
        Ok(PagerdutyFormat {
            summary: Template::parse(
                config.summary.as_deref().unwrap_or(DEFAULT_SUMMARY),
                &format!("{what}: summary"),
            )?,
            source: config.source.clone(),
        })
    }

    /// One Events v2 body per alert, in the notification's order.
    pub fn events(
        &self,
        notification: &Notification,
        routing_key: &str,
    ) -> Result<Vec<serde_json::Value>, DeliveryError> {
        let view = View::new(notification)?;
        Ok(notification
            .alerts
            .iter()
            .map(|alert| self.event(&view.for_alert(alert), alert, routing_key))
            .collect())
    }

    fn event(&self, view: &View<'_>, alert: &Alert, routing_key: &str) -> serde_json::Value {
        let n = view.notification;
        let action = match alert.status {
            AlertStatus::Firing => "trigger",
            AlertStatus::Resolved => "resolve",
        };
        let search = view.search_url(alert);
        let mut links = Vec::new();
        if let Some(url) = &search {
            links.push(json!({"href": url, "text": "Evidence in nightowl"}));
        }
        if let Some(ack) = &n.ack_url {
            links.push(json!({"href": ack, "text": "Acknowledge in nightowl"}));
        }
        let summary = self.summary.render(view);
        let summary = truncate(summary.trim(), MAX_SUMMARY);
        let mut event = json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": alert.fingerprint,
            "client": "nightowl",
            "payload": {
                "summary": summary,
                "source": self.source,
                "severity": severity(alert.severity),
                "timestamp": rfc3339(alert.last_fired_at),
                "component": alert.key,
                "group": alert.tenant,
                "class": alert.rule_id,
                "custom_details": {
                    "rule_id": alert.rule_id,
                    "tenant": alert.tenant,
                    "key": alert.key,
                    "count": alert.count,
                    "firings": alert.firings,
                    "value": alert.value,
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "tags": alert.tags,
                    "sample_lines": alert.sample_lines,
                    "evidence_query": alert.evidence_query,
                    "search_url": search,
                    "started_at": rfc3339(alert.starts_at),
                    "notification_id": n.id,
                    "escalation_level": n.escalation_level,
                },
            },
            "links": links,
        });
        if !n.external_url.is_empty() {
            event["client_url"] = json!(n.external_url);
        }
        event
    }
}

/// nightowl has three severities; PagerDuty's `error` stays unused.
fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

pub struct PagerdutyReceiver {
    name: String,
    format: PagerdutyFormat,
    target: HttpTarget,
    routing_key: String,
    send_resolved: bool,
}

impl PagerdutyReceiver {
    pub fn new(config: &PagerdutyConfig) -> Result<PagerdutyReceiver> {
        let what = format!("receiver {:?}", config.name);
        let Some(routing_key) = read_secret(
            config.routing_key_file.as_deref(),
            config.routing_key_env.as_deref(),
            &what,
            "routing_key",
        )?
        else {
            bail!("{what}: set routing_key_file or routing_key_env (the integration key)");
        };
        Ok(PagerdutyReceiver {
            name: config.name.clone(),
            format: PagerdutyFormat::new(config)?,
            target: HttpTarget::new(
                config.url.as_deref().unwrap_or(DEFAULT_URL),
                config.ca_file.as_deref(),
                Duration::from_secs(config.timeout_secs.max(1)),
                &what,
            )?,
            routing_key,
            send_resolved: config.send_resolved,
        })
    }
}

impl Receiver for PagerdutyReceiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            for event in self.format.events(notification, &self.routing_key)? {
                if event["event_action"] == "resolve" && !self.send_resolved {
                    continue;
                }
                let body = serde_json::to_vec(&event).map_err(|e| {
                    DeliveryError::Permanent(format!("encoding the PagerDuty event: {e}"))
                })?;
                let response = self.target.post(&[], Bytes::from(body)).await?;
                classify(&self.target, &response)?;
            }
            Ok(())
        })
    }
}

pub fn preview(
    format: &PagerdutyFormat,
    notification: &Notification,
) -> Result<Vec<Preview>, DeliveryError> {
    format
        .events(notification, "<routing key>")?
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let body = serde_json::to_vec(event)
                .map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))?;
            Ok(Preview::new(&format!("event {}", i + 1), pretty(&body)))
        })
        .collect()
}
