//! Receivers: the last hop of a page. Each one turns a [`Notification`]
//! into one wire format (SMTP mail, a signed JSON webhook, the Alertmanager
//! v4 payload, PagerDuty Events v2, a Slack incoming webhook) and classifies
//! every failure as retryable or permanent for the outbox.
//!
//! The outbox only sees `Arc<dyn Receiver>` built by [`build`] from one
//! `[[alerting.receivers]]` table; docs/receivers.md documents the keys.
//! Secrets (SMTP password, webhook secret, PagerDuty routing key, Slack URL)
//! are read from a file or an environment variable when the receiver is
//! built, never taken inline, so the config file can be world-readable and
//! never shows up in a log.

pub mod alertmanager;
pub mod cli;
pub mod email;
pub mod http;
pub mod pagerduty;
pub mod slack;
pub mod template;
pub mod view;
pub mod webhook;

pub use http::retry_after;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::model::{AlertStatus, Notification, Receiver, SendFuture};

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; refused if the server does
    /// not offer it (no silent downgrade). Default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Default port 465.
    Implicit,
    /// No TLS, for a relay on localhost. Default port 25. No AUTH allowed.
    None,
}

fn default_timeout_secs() -> u64 {
    10
}

fn yes() -> bool {
    true
}

fn default_source() -> String {
    "nightowl".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    /// The SMTP relay's host name (also the name its certificate must hold).
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM CA certificate(s) of a private relay, added to the public roots.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// Template, see docs/receivers.md. Default [`email::DEFAULT_SUBJECT`].
    pub subject: Option<String>,
    /// Body templates; `{{ details }}` inserts the built-in body (HTML in
    /// `html_body`, where every other value is HTML-escaped). Default: the
    /// built-in body alone.
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    /// EHLO name; default the machine's host name.
    pub hello_name: Option<String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// HMAC key for `X-Nightowl-Signature`; without one requests are unsigned.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Alerts per body, the rest counted in `truncated_alerts`; 0 = all.
    /// A storm's group of a thousand alerts was a 2.5 MB body, more than
    /// nginx's default `client_max_body_size` (1 MB) lets through.
    #[serde(default = "default_webhook_max_alerts")]
    pub max_alerts: usize,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

fn default_webhook_max_alerts() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Alerts per payload, the rest counted in `truncatedAlerts`; 0 = all.
    #[serde(default)]
    pub max_alerts: usize,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    pub name: String,
    /// Default [`pagerduty::DEFAULT_URL`].
    pub url: Option<String>,
    pub routing_key_file: Option<PathBuf>,
    pub routing_key_env: Option<String>,
    /// `payload.source`: where the problem is. Default `nightowl`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Template of `payload.summary`. Default [`pagerduty::DEFAULT_SUMMARY`].
    pub summary: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub name: String,
    /// The incoming-webhook URL; prefer url_file/url_env, it is a secret.
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub url_env: Option<String>,
    /// Template of `text`. Default [`slack::DEFAULT_TITLE`].
    pub title: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub send_resolved: bool,
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

    pub fn kind(&self) -> &'static str {
        match &self.spec {
            ReceiverSpec::Email(_) => "email",
            ReceiverSpec::Webhook(_) => "webhook",
            ReceiverSpec::Alertmanager(_) => "alertmanager",
            ReceiverSpec::Pagerduty(_) => "pagerduty",
            ReceiverSpec::Slack(_) => "slack",
        }
    }

    /// Whether the receiver wants notifications whose alerts all resolved.
    /// Receivers also enforce it themselves (a resolved-only notification
    /// to one that does not is delivered as a no-op).
    pub fn send_resolved(&self) -> bool {
        match &self.spec {
            ReceiverSpec::Email(c) => c.send_resolved,
            ReceiverSpec::Webhook(c) => c.send_resolved,
            ReceiverSpec::Alertmanager(c) => c.send_resolved,
            ReceiverSpec::Pagerduty(c) => c.send_resolved,
            ReceiverSpec::Slack(c) => c.send_resolved,
        }
    }

    pub fn spec(&self) -> &ReceiverSpec {
        &self.spec
    }
}

/// Builds the receiver one config table describes: reads its secrets and CA
/// files and parses its templates now, so a missing file or a bad template
/// fails at startup rather than at 3 a.m.
pub fn build(config: &ReceiverConfig) -> Result<Arc<dyn Receiver>> {
    if config.name().trim().is_empty() {
        bail!("a {} receiver has an empty name", config.kind());
    }
    let receiver: Arc<dyn Receiver> = match &config.spec {
        ReceiverSpec::Email(c) => Arc::new(email::EmailReceiver::new(c)?),
        ReceiverSpec::Webhook(c) => Arc::new(webhook::WebhookReceiver::new(c)?),
        ReceiverSpec::Alertmanager(c) => Arc::new(alertmanager::AlertmanagerReceiver::new(c)?),
        // Drops each resolve event itself: a firing notification may carry
        // some.
        ReceiverSpec::Pagerduty(c) => return Ok(Arc::new(pagerduty::PagerdutyReceiver::new(c)?)),
        ReceiverSpec::Slack(c) => Arc::new(slack::SlackReceiver::new(c)?),
    };
    Ok(if config.send_resolved() {
        receiver
    } else {
        Arc::new(FiringOnly(receiver))
    })
}

/// A receiver configured with `send_resolved = false`: a notification whose
/// alerts all resolved is delivered by not sending it.
struct FiringOnly(Arc<dyn Receiver>);

impl Receiver for FiringOnly {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        if notification.status == AlertStatus::Resolved {
            Box::pin(async { Ok(()) })
        } else {
            self.0.send(notification)
        }
    }
}

/// One rendered part of what a receiver would send.
#[derive(Debug, Clone)]
pub struct Preview {
    pub part: String,
    pub content: String,
}

impl Preview {
    pub fn new(part: &str, content: String) -> Preview {
        Preview {
            part: part.to_string(),
            content,
        }
    }
}

/// Renders what `config`'s receiver would send for `notification`, without
/// reading its secrets or touching the network (`nightowl alerts preview`).
pub fn preview(config: &ReceiverConfig, notification: &Notification) -> Result<Vec<Preview>> {
    let what = format!("receiver {:?}", config.name());
    let parts = match &config.spec {
        ReceiverSpec::Email(c) => email::EmailFormat::new(c)?.preview(notification),
        ReceiverSpec::Webhook(c) => webhook::preview(notification, c.max_alerts),
        ReceiverSpec::Alertmanager(c) => alertmanager::preview(notification, c.max_alerts),
        ReceiverSpec::Pagerduty(c) => {
            pagerduty::preview(&pagerduty::PagerdutyFormat::new(c)?, notification)
        }
        ReceiverSpec::Slack(c) => slack::preview(&slack::SlackFormat::new(c)?, notification),
    };
    parts.with_context(|| format!("{what}: rendering"))
}

/// Reads the secret named `key` from `<key>_file` or `<key>_env` (at most
/// one may be set). A trailing newline, as editors and `echo` leave it, is
/// not part of the secret.
fn read_secret(
    file: Option<&Path>,
    env: Option<&str>,
    what: &str,
    key: &str,
) -> Result<Option<String>> {
    let value = match (file, env) {
        (Some(_), Some(_)) => bail!("{what}: set only one of {key}_file and {key}_env"),
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("{what}: reading {key}_file {}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("{what}: {key}_env names ${var}, which is not set"))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        bail!("{what}: the {key} is empty");
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::template::Template;
    use super::view::{fixture, View};
    use super::*;
    use crate::detect::Severity;

    #[test]
    fn a_webhook_body_keeps_at_most_max_alerts_and_counts_the_rest() {
        let mut n = fixture();
        let first = n.alerts[0].clone();
        for k in 0..249 {
            let mut a = first.clone();
            a.fingerprint = format!("fp{k}");
            n.alerts.push(a);
        }
        let parse = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let capped = parse(webhook::body(&n, 100).unwrap());
        assert_eq!(capped["alerts"].as_array().map(Vec::len), Some(100));
        assert_eq!(capped["truncated_alerts"], 150);
        let all = parse(webhook::body(&n, 0).unwrap());
        assert_eq!(all["alerts"].as_array().map(Vec::len), Some(250));
        assert!(all.get("truncated_alerts").is_none());
        let config: WebhookConfig =
            toml::from_str("name = \"w\"\nurl = \"http://127.0.0.1:9/\"").unwrap();
        assert_eq!(config.max_alerts, 100, "capped by default");
    }

    #[test]
    fn templates_render_known_names_and_refuse_unknown_ones() {
        let n = fixture();
        let view = View::new(&n).unwrap();
        let t = Template::parse("{{severity}}|{{ key }}|{{ alerts }}|{{ count }}", "t").unwrap();
        assert_eq!(t.render(&view), "critical|203.0.113.7|1|42");
        let err = Template::parse("{{ nope }}", "receiver \"x\": subject").unwrap_err();
        assert!(
            err.to_string().contains("receiver \"x\": subject") && err.to_string().contains("nope")
        );
        assert!(Template::parse("{{ title", "t").is_err());
        assert!(Template::parse("title }}", "t").is_err());
    }

    #[test]
    fn body_templates_escape_values_and_embed_the_details() {
        use super::template::Kind;
        let mut n = fixture();
        n.alerts[0].title = "<b>x</b> & y".to_string();
        let view = View::new(&n).unwrap();
        let t = Template::parse_kind("<h1>{{ title }}</h1>{{ details }}", "t", Kind::Body).unwrap();
        let out = t.render_body(&view, "<p>built-in</p>", &view::html_escape);
        assert_eq!(out, "<h1>&lt;b&gt;x&lt;/b&gt; &amp; y</h1><p>built-in</p>");
        let err = Template::parse("{{ details }}", "subject").unwrap_err();
        assert!(err.to_string().contains("only allowed in body"), "{err}");
        let t = Template::parse("{{ ack_url }}", "t").unwrap();
        assert_eq!(t.render(&view), n.ack_url.clone().unwrap());
    }

    #[test]
    fn rendered_templates_stay_on_one_line() {
        let mut n = fixture();
        n.alerts[0].title = "evil\r\nBcc: victim@example.com".to_string();
        let view = View::new(&n).unwrap();
        let out = Template::parse("{{ title }}", "t").unwrap().render(&view);
        assert!(!out.contains('\n') && !out.contains('\r'), "{out:?}");
    }

    #[test]
    fn the_lead_alert_is_the_most_severe_firing_one() {
        let mut n = fixture();
        let mut warning = n.alerts[0].clone();
        warning.severity = Severity::Warning;
        warning.key = "w".to_string();
        let mut resolved_critical = n.alerts[0].clone();
        resolved_critical.status = AlertStatus::Resolved;
        resolved_critical.key = "r".to_string();
        let mut critical = n.alerts[0].clone();
        critical.key = "c".to_string();
        n.alerts = vec![warning.clone(), resolved_critical, critical];
        let view = View::new(&n).unwrap();
        assert_eq!(view.lead.key, "c");
        assert_eq!((view.firing, view.resolved), (2, 1));
        n.alerts = vec![warning];
        assert_eq!(View::new(&n).unwrap().severity, Severity::Warning);
        n.alerts.clear();
        assert!(matches!(
            View::new(&n),
            Err(crate::alert::DeliveryError::Permanent(_))
        ));
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Expected value from Python: hmac.new(b"k", b"1700000000.{}", sha256).
        let sig = webhook::signature(b"k", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        assert_ne!(sig, webhook::signature(b"k", 1_700_000_001, b"{}"));
        assert_ne!(sig, webhook::signature(b"k2", 1_700_000_000, b"{}"));
    }

    #[test]
    fn retry_after_is_read_from_retryable_errors_only() {
        use crate::alert::DeliveryError;
        use std::time::Duration;
        let e =
            DeliveryError::Retryable("http://h:1: HTTP 429 (Retry-After: 30): slow down".into());
        assert_eq!(retry_after(&e), Some(Duration::from_secs(30)));
        let e = DeliveryError::Retryable("x (Retry-After: 999999)".into());
        assert_eq!(retry_after(&e), Some(Duration::from_secs(3600)));
        let e = DeliveryError::Retryable("x (Retry-After: Wed, 21 Oct 2026 07:28:00 GMT)".into());
        assert_eq!(retry_after(&e), None);
        assert_eq!(
            retry_after(&DeliveryError::Retryable("HTTP 503".into())),
            None
        );
        assert_eq!(
            retry_after(&DeliveryError::Permanent("(Retry-After: 5)".into())),
            None
        );
    }

    #[test]
    fn secrets_come_from_exactly_one_place_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(
            read_secret(Some(&path), None, "r", "secret")
                .unwrap()
                .as_deref(),
            Some("hunter2")
        );
        assert!(read_secret(Some(&path), Some("X"), "r", "secret").is_err());
        assert_eq!(read_secret(None, None, "r", "secret").unwrap(), None);
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(Some(&path), None, "r", "secret").is_err());
    }
}
