//! Slack incoming webhooks (and the many chat tools that accept the same
//! shape): `text` as the notification fallback, `blocks` with mrkdwn
//! sections for the alerts. The webhook URL is the credential, so it comes
//! from a file or the environment and errors show only its host.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use serde_json::json;

use super::http::classify;
use super::template::Template;
use super::view::{truncate, View};
use super::webhook::pretty;
use super::{read_secret, Preview, SlackConfig};
use crate::alert::model::{DeliveryError, Notification, Receiver, SendFuture};
use crate::http_client::HttpTarget;

pub const DEFAULT_TITLE: &str = "[{{ severity }}] {{ status }}: {{ summary }}";
/// Slack allows 50 blocks; keep room for the header and footer.
const MAX_ALERT_BLOCKS: usize = 20;
/// Slack's limit on one section's text is 3000 characters.
const MAX_SECTION: usize = 2900;

pub struct SlackFormat {
    title: Template,
}

impl SlackFormat {
    pub fn new(config: &SlackConfig) -> Result<SlackFormat> {
        let what = format!("receiver {:?}", config.name);
        Ok(SlackFormat {
            title: Template::parse(
                config.title.as_deref().unwrap_or(DEFAULT_TITLE),
                &format!("{what}: title"),
            )?,
        })
    }

    pub fn body(&self, notification: &Notification) -> Result<serde_json::Value, DeliveryError> {
        let view = View::new(notification)?;
        let title = self.title.render(&view);
        let emoji = match (notification.status, view.severity) {
            (crate::alert::AlertStatus::Resolved, _) => ":white_check_mark:",
            (_, crate::detect::Severity::Critical) => ":rotating_light:",
            (_, crate::detect::Severity::Warning) => ":warning:",
            _ => ":information_source:",
        };
        let mut head = format!("{emoji} *{}*", escape(&title));
        let _ = write!(
            head,
            "\n{} firing, {} resolved · group {}",
            view.firing,
            view.resolved,
            escape(&view.group_text())
        );
        if let Some(ack) = &notification.ack_url {
            let _ = write!(head, "\n<{}|Acknowledge>", link_target(ack));
        }
        let mut blocks = vec![section(&head)];
        for alert in notification.alerts.iter().take(MAX_ALERT_BLOCKS) {
            let mut text = format!(
                "*{}* ({}, {})\nRule `{}` · tenant `{}`",
                escape(&alert.title),
                alert.severity.as_str(),
                super::view::status_str(alert.status),
                escape(&alert.rule_id),
                escape(&alert.tenant)
            );
            if !alert.key.is_empty() {
                let _ = write!(text, " · key `{}`", escape(&alert.key));
            }
            let _ = write!(text, " · count {} ({} firings)", alert.count, alert.firings);
            if let Some(summary) = alert.annotations.get("summary") {
                let _ = write!(text, "\n{}", escape(summary));
            }
            if !alert.sample_lines.is_empty() {
                text.push_str("\n```");
                for line in &alert.sample_lines {
                    // A ``` inside a log line would end the code block early.
                    let _ = write!(text, "\n{}", escape(line).replace("```", "'''"));
                }
                text.push_str("\n```");
            }
            if let Some(url) = view.search_url(alert) {
                let _ = write!(text, "\n<{}|Evidence in nightowl>", link_target(&url));
            }
            if let Some(url) = view.page_url(alert) {
                let _ = write!(text, " · <{}|open in the web page>", link_target(&url));
            }
            blocks.push(section(&text));
        }
        if notification.alerts.len() > MAX_ALERT_BLOCKS {
            blocks.push(section(&format!(
                "... and {} more alerts",
                notification.alerts.len() - MAX_ALERT_BLOCKS
            )));
        }
        Ok(json!({ "text": title, "blocks": blocks }))
    }
}

fn section(text: &str) -> serde_json::Value {
    json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": truncate(text, MAX_SECTION) },
    })
}

/// Slack's mrkdwn control characters; everything else is literal.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A URL inside `<url|label>` must not hold `|` or `>`.
fn link_target(url: &str) -> String {
    url.replace('|', "%7C").replace('>', "%3E")
}

pub struct SlackReceiver {
    name: String,
    format: SlackFormat,
    target: HttpTarget,
}

impl SlackReceiver {
    pub fn new(config: &SlackConfig) -> Result<SlackReceiver> {
        let what = format!("receiver {:?}", config.name);
        let from_secret = read_secret(
            config.url_file.as_deref(),
            config.url_env.as_deref(),
            &what,
            "url",
        )?;
        let url = match (&config.url, from_secret) {
            (Some(url), None) => url.clone(),
            (None, Some(url)) => url,
            (Some(_), Some(_)) => bail!("{what}: set one of url, url_file, url_env"),
            (None, None) => bail!("{what}: set url, url_file or url_env (the incoming webhook)"),
        };
        Ok(SlackReceiver {
            name: config.name.clone(),
            format: SlackFormat::new(config)?,
            target: HttpTarget::new(
                url.trim(),
                config.ca_file.as_deref(),
                Duration::from_secs(config.timeout_secs.max(1)),
                &what,
            )?,
        })
    }
}

impl Receiver for SlackReceiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&self.format.body(notification)?).map_err(|e| {
                DeliveryError::Permanent(format!("encoding the Slack message: {e}"))
            })?;
            let response = self.target.post(&[], Bytes::from(body)).await?;
            classify(&self.target, &response)
        })
    }
}

pub fn preview(
    format: &SlackFormat,
    notification: &Notification,
) -> Result<Vec<Preview>, DeliveryError> {
    let body = serde_json::to_vec(&format.body(notification)?)
        .map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))?;
    Ok(vec![Preview::new("body", pretty(&body))])
}
