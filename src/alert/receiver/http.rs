//! What the webhook-style receivers make of an HTTP answer: the status
//! classified into retryable or permanent, the receiver's `Retry-After`,
//! and their `headers` table. The POST itself is [`crate::http_client`].

use std::time::Duration;

use anyhow::{Context, Result};
use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;

use crate::alert::model::DeliveryError;
use crate::http_client::{HttpTarget, Response};

/// 2xx delivers. 408, 429 and 5xx are worth retrying (with the receiver's
/// `Retry-After` in the message for the log); any other status is a request
/// the receiver will refuse every time.
pub fn classify(target: &HttpTarget, response: &Response) -> Result<(), DeliveryError> {
    let status = response.status;
    if status.is_success() {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&response.body);
    let body = super::view::truncate(body.trim(), 300);
    let mut message = format!("{}: HTTP {status}", target.redacted());
    if let Some(after) = response
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        message.push_str(&format!(" (Retry-After: {after})"));
    }
    if !body.is_empty() {
        message.push_str(&format!(": {body}"));
    }
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(DeliveryError::Retryable(message))
    } else {
        Err(DeliveryError::Permanent(message))
    }
}

/// The wait a receiver asked for with `Retry-After: <seconds>` on a 429 or
/// 503 (quoted in the retryable error by [`classify`]), capped at an hour,
/// for the outbox to use when it is longer than its own backoff. The
/// HTTP-date form is not parsed: receivers that page use seconds.
pub fn retry_after(error: &DeliveryError) -> Option<Duration> {
    let DeliveryError::Retryable(message) = error else {
        return None;
    };
    const MARK: &str = "(Retry-After: ";
    let rest = &message[message.find(MARK)? + MARK.len()..];
    let secs: u64 = rest[..rest.find(')')?].trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// Parses the `headers = { Name = "value" }` table of a receiver.
pub fn parse_headers(
    headers: &std::collections::BTreeMap<String, String>,
    what: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::try_from(name.as_str())
                .with_context(|| format!("{what}: invalid header name {name:?}"))?;
            let value = HeaderValue::try_from(value.as_str())
                .with_context(|| format!("{what}: invalid value of header {name}"))?;
            Ok((name, value))
        })
        .collect()
}
