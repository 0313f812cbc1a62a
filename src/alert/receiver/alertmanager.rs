//! The Prometheus Alertmanager webhook payload, version "4", field for
//! field (`notify/webhook` `Message` over `template.Data`), so any tool
//! that consumes Alertmanager webhooks consumes nightowl unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;

use super::http::{classify, parse_headers};
use super::view::{rfc3339, status_str, View};
use super::webhook::{pretty, with_idempotency_key};
use super::{AlertmanagerConfig, Preview};
use crate::alert::model::{Alert, DeliveryError, Notification, Receiver, SendFuture};
use crate::http_client::HttpTarget;

/// Go's zero `time.Time`, which Alertmanager sends for a firing alert's
/// `endsAt`.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    receiver: &'a str,
    status: &'static str,
    alerts: Vec<AmAlert<'a>>,
    group_labels: &'a BTreeMap<String, String>,
    common_labels: BTreeMap<&'a str, &'a str>,
    common_annotations: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert<'a> {
    status: &'static str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: &'a str,
}

/// The pairs every map holds with the same value (Alertmanager's
/// `commonLabels`/`commonAnnotations`).
fn common<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<&'a str, &'a str> {
    let mut maps = maps;
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut common: BTreeMap<&str, &str> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for map in maps {
        common.retain(|k, v| map.get(*k).is_some_and(|other| other == v));
    }
    common
}

/// `max_alerts` 0 sends them all, as in Alertmanager.
pub fn body(notification: &Notification, max_alerts: usize) -> Result<Vec<u8>, DeliveryError> {
    let view = View::new(notification)?;
    let shown: &[Alert] = if max_alerts > 0 && notification.alerts.len() > max_alerts {
        &notification.alerts[..max_alerts]
    } else {
        &notification.alerts
    };
    let alerts = shown
        .iter()
        .map(|alert| AmAlert {
            status: status_str(alert.status),
            labels: &alert.labels,
            annotations: &alert.annotations,
            starts_at: rfc3339(alert.starts_at),
            ends_at: alert
                .ends_at
                .map(rfc3339)
                .unwrap_or_else(|| ZERO_TIME.to_string()),
            generator_url: view.search_url(alert).unwrap_or_default(),
            fingerprint: &alert.fingerprint,
        })
        .collect();
    let message = Message {
        receiver: &notification.receiver,
        status: status_str(notification.status),
        alerts,
        group_labels: &notification.group_labels,
        common_labels: common(notification.alerts.iter().map(|a| &a.labels)),
        common_annotations: common(notification.alerts.iter().map(|a| &a.annotations)),
        external_url: &notification.external_url,
        version: "4",
        group_key: &notification.group_key,
        truncated_alerts: (notification.alerts.len() - shown.len()) as u64,
    };
    serde_json::to_vec(&message)
        .map_err(|e| DeliveryError::Permanent(format!("encoding the Alertmanager payload: {e}")))
}

pub struct AlertmanagerReceiver {
    name: String,
    target: HttpTarget,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_alerts: usize,
}

impl AlertmanagerReceiver {
    pub fn new(config: &AlertmanagerConfig) -> Result<AlertmanagerReceiver> {
        let what = format!("receiver {:?}", config.name);
        Ok(AlertmanagerReceiver {
            name: config.name.clone(),
            target: HttpTarget::new(
                &config.url,
                config.ca_file.as_deref(),
                Duration::from_secs(config.timeout_secs.max(1)),
                &what,
            )?,
            headers: parse_headers(&config.headers, &what)?,
            max_alerts: config.max_alerts,
        })
    }
}

impl Receiver for AlertmanagerReceiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let body = body(notification, self.max_alerts)?;
            let headers = with_idempotency_key(&self.headers, notification)?;
            let response = self.target.post(&headers, Bytes::from(body)).await?;
            classify(&self.target, &response)
        })
    }
}

pub fn preview(
    notification: &Notification,
    max_alerts: usize,
) -> Result<Vec<Preview>, DeliveryError> {
    Ok(vec![Preview::new(
        "body",
        pretty(&body(notification, max_alerts)?),
    )])
}
