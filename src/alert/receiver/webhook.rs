//! The generic webhook: the notification as JSON (shape in
//! docs/receivers.md), signed Stripe-style so the receiver can check both
//! origin and freshness:
//!
//! `X-Nightowl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! The timestamp is inside the MAC, so a captured request replayed later
//! fails the receiver's age check; `Idempotency-Key` (the notification id)
//! lets it drop the duplicate a retry after a lost answer produces.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;
use sha2::Sha256;

use super::http::{classify, parse_headers};
use super::view::View;
use super::{read_secret, Preview, WebhookConfig};
use crate::alert::model::{DeliveryError, Notification, Receiver, SendFuture};
use crate::http_client::HttpTarget;

pub const SIGNATURE_HEADER: &str = "x-nightowl-signature";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Bumped only on an incompatible change of the body.
pub const BODY_VERSION: &str = "1";

#[derive(Serialize)]
struct Body<'a> {
    version: &'static str,
    #[serde(flatten)]
    notification: &'a Notification,
    /// Alerts of the group left out of `alerts` by `max_alerts`.
    #[serde(skip_serializing_if = "is_zero")]
    truncated_alerts: usize,
    /// Fingerprint → search link, for alerts that have one.
    evidence_urls: BTreeMap<&'a str, String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The body of `notification`, with at most `max_alerts` alerts (0: all).
pub fn body(notification: &Notification, max_alerts: usize) -> Result<Vec<u8>, DeliveryError> {
    let truncated_alerts = match max_alerts {
        0 => 0,
        max => notification.alerts.len().saturating_sub(max),
    };
    let shortened;
    let notification = if truncated_alerts > 0 {
        shortened = Notification {
            alerts: notification.alerts[..max_alerts].to_vec(),
            ..notification.clone()
        };
        &shortened
    } else {
        notification
    };
    let view = View::new(notification)?;
    let evidence_urls = notification
        .alerts
        .iter()
        .filter_map(|a| view.search_url(a).map(|url| (a.fingerprint.as_str(), url)))
        .collect();
    serde_json::to_vec(&Body {
        version: BODY_VERSION,
        notification,
        truncated_alerts,
        evidence_urls,
    })
    .map_err(|e| DeliveryError::Permanent(format!("encoding the webhook body: {e}")))
}

/// `t=<unix>,v1=<hex>`: the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

pub struct WebhookReceiver {
    name: String,
    target: HttpTarget,
    headers: Vec<(HeaderName, HeaderValue)>,
    secret: Option<Vec<u8>>,
    max_alerts: usize,
}

impl WebhookReceiver {
    pub fn new(config: &WebhookConfig) -> Result<WebhookReceiver> {
        let what = format!("receiver {:?}", config.name);
        let target = HttpTarget::new(
            &config.url,
            config.ca_file.as_deref(),
            Duration::from_secs(config.timeout_secs.max(1)),
            &what,
        )?;
        let secret = read_secret(
            config.secret_file.as_deref(),
            config.secret_env.as_deref(),
            &what,
            "secret",
        )?
        .map(String::into_bytes);
        if secret.is_none() {
            tracing::warn!(receiver = %config.name, "webhook without secret_file/secret_env: requests are not signed");
        }
        Ok(WebhookReceiver {
            name: config.name.clone(),
            target,
            headers: parse_headers(&config.headers, &what)?,
            secret,
            max_alerts: config.max_alerts,
        })
    }
}

impl Receiver for WebhookReceiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let body = body(notification, self.max_alerts)?;
            let mut headers = with_idempotency_key(&self.headers, notification)?;
            if let Some(secret) = &self.secret {
                let now = crate::time::now_nanos() / crate::time::NANOS_PER_SEC;
                headers.push((
                    HeaderName::from_static(SIGNATURE_HEADER),
                    header_value(&signature(secret, now, &body))?,
                ));
            }
            let response = self.target.post(&headers, Bytes::from(body)).await?;
            classify(&self.target, &response)
        })
    }
}

pub fn preview(
    notification: &Notification,
    max_alerts: usize,
) -> Result<Vec<Preview>, DeliveryError> {
    Ok(vec![
        Preview::new(
            "headers",
            format!(
                "Idempotency-Key: {}\nX-Nightowl-Signature: t=<unix seconds>,v1=<HMAC-SHA256 of \"<t>.<body>\">",
                notification.id
            ),
        ),
        Preview::new("body", pretty(&body(notification, max_alerts)?)),
    ])
}

/// A receiver's `headers` plus the notification's id as the idempotency
/// key, so the receiving end can drop a retried delivery it already took.
pub fn with_idempotency_key(
    headers: &[(HeaderName, HeaderValue)],
    notification: &Notification,
) -> Result<Vec<(HeaderName, HeaderValue)>, DeliveryError> {
    let mut headers = headers.to_vec();
    headers.push((
        HeaderName::from_static(IDEMPOTENCY_HEADER),
        header_value(&notification.id)?,
    ));
    Ok(headers)
}

pub fn header_value(text: &str) -> Result<HeaderValue, DeliveryError> {
    HeaderValue::try_from(text)
        .map_err(|_| DeliveryError::Permanent(format!("{text:?} is not a valid header value")))
}

/// Re-indents a JSON body for `alerts preview`.
pub fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}
