//! Receivers: the last hop of a page. Each one turns a [`Notification`]
//! into one wire format (SMTP mail, a signed JSON webhook, the Alertmanager
//! v4 payload, PagerDuty Events v2, a Slack incoming webhook) and classifies
//! every failure as retryable or permanent for the outbox.
//!
//! The outbox only sees `Arc<dyn Receiver>` built by [`build`] from one
//! `[[alerting.receivers]]` table; docs/receivers.md documents the keys.

use std::sync::Arc;

use serde::Deserialize;

use super::model::Receiver;

/// One `[[alerting.receivers]]` table: `name`, `kind` and the kind's keys.
/// Unknown keys are refused so a typo (`pasword_file`) fails at startup
/// instead of silently paging nobody.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ReceiverConfig {
    spec: ReceiverSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReceiverSpec {
    Email(EmailConfig),
    Webhook(WebhookConfig),
    Alertmanager(AlertmanagerConfig),
    Pagerduty(PagerdutyConfig),
    Slack(SlackConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub name: String,
}

impl ReceiverConfig {
    pub fn name(&self) -> &str {
        match &self.spec {
            ReceiverSpec::Email(c) => &c.name,
            ReceiverSpec::Webhook(c) => &c.name,
            ReceiverSpec::Alertmanager(c) => &c.name,
            ReceiverSpec::Pagerduty(c) => &c.name,
            ReceiverSpec::Slack(c) => &c.name,
        }
    }

    pub fn spec(&self) -> &ReceiverSpec {
        &self.spec
    }
}

/// Builds the receiver one config table describes: reads its secrets and CA
/// files now, so a missing file fails at startup rather than at 3 a.m.
pub fn build(config: &ReceiverConfig) -> anyhow::Result<Arc<dyn Receiver>> {
    anyhow::bail!(
        "receiver {:?}: receivers are not implemented yet",
        config.name()
    )
}
