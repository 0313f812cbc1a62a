//! `nightowl alerts preview` and `nightowl alerts test-receiver`: the
//! receivers as an operator checks them before trusting them with a page.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{build, preview, view, ReceiverConfig};
use crate::alert::model::{Alert, Notification};

/// Just `[alerting] receivers` of the collector's config; the rest of the
/// file is the collector's business (and validated by it).
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    alerting: AlertingPart,
}

#[derive(Default, Deserialize)]
struct AlertingPart {
    #[serde(default)]
    receivers: Vec<ReceiverConfig>,
    /// Links in previews and test pages point where real pages would.
    external_url: Option<String>,
}

/// The receivers configured in `path`, names checked unique.
pub fn load_receivers(path: &Path) -> Result<Vec<ReceiverConfig>> {
    Ok(load(path)?.receivers)
}

fn load(path: &Path) -> Result<AlertingPart> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ConfigFile = toml::from_str(&text)
        .with_context(|| format!("{}: [alerting] receivers", path.display()))?;
    let receivers = &file.alerting.receivers;
    for (i, r) in receivers.iter().enumerate() {
        if receivers[..i].iter().any(|o| o.name() == r.name()) {
            bail!("{}: two receivers are named {:?}", path.display(), r.name());
        }
    }
    Ok(file.alerting)
}

/// A fixture file holds a whole notification or just one alert (wrapped
/// into the built-in notification); none means the built-in one.
pub fn load_fixture(path: Option<&Path>) -> Result<Notification> {
    let Some(path) = path else {
        return Ok(view::fixture());
    };
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_slice::<Notification>(&text) {
        Ok(notification) => Ok(notification),
        Err(as_notification) => match serde_json::from_slice::<Alert>(&text) {
            Ok(alert) => {
                let mut notification = view::fixture();
                notification.status = alert.status;
                notification.alerts = vec![alert];
                Ok(notification)
            }
            Err(_) => Err(anyhow::Error::new(as_notification).context(format!(
                "{}: neither a notification nor an alert (JSON)",
                path.display()
            ))),
        },
    }
}

/// Renders every configured receiver's (or just `only`'s) body to `out`.
pub fn run_preview(
    config: &Path,
    only: Option<&str>,
    fixture: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let (receivers, external_url) = select(config, only)?;
    let mut base = load_fixture(fixture)?;
    rebase_links(&mut base, external_url.as_deref());
    for receiver in receivers {
        let mut notification = base.clone();
        notification.receiver = receiver.name().to_string();
        for part in preview(&receiver, &notification)? {
            writeln!(
                out,
                "==== {} ({}) {} ====\n{}",
                receiver.name(),
                receiver.kind(),
                part.part,
                part.content.trim_end()
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Sends a test page (the fixture, marked as a test) through `name`.
pub async fn run_test_receiver(config: &Path, name: &str, fixture: Option<&Path>) -> Result<()> {
    let (receivers, external_url) = select(config, Some(name))?;
    let Some(config) = receivers.first() else {
        bail!("no receiver named {name:?}");
    };
    let receiver = build(config)?;
    let mut notification = load_fixture(fixture)?;
    rebase_links(&mut notification, external_url.as_deref());
    let now = crate::time::now_nanos();
    notification.id = format!("test-{name}-{now}");
    notification.receiver = name.to_string();
    notification.created_at = now;
    // Fresh fingerprints: PagerDuty (and Alertmanager-style tools) merge an
    // event into an open incident with the same dedup key without notifying
    // again, and a test page that rings no phone proves nothing.
    for (i, alert) in notification.alerts.iter_mut().enumerate() {
        if !alert.title.starts_with("[TEST]") {
            alert.title = format!("[TEST] {}", alert.title);
        }
        alert.fingerprint = format!("test-{now}-{i}");
    }
    receiver
        .send(&notification)
        .await
        .with_context(|| format!("receiver {name:?}: test page {}", notification.id))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "delivered test page {} through {name:?} ({})",
        notification.id,
        config.kind()
    )?;
    Ok(())
}

/// Points the fixture's search and ack links at `[alerting] external_url`
/// (the ack link stays a dummy: only the collector can sign one).
fn rebase_links(notification: &mut Notification, external_url: Option<&str>) {
    let Some(base) = external_url else {
        return;
    };
    let base = base.trim_end_matches('/');
    if let Some(ack) = &mut notification.ack_url {
        let old = notification.external_url.trim_end_matches('/');
        if let Some(rest) = ack.strip_prefix(old) {
            *ack = format!("{base}{rest}");
        }
    }
    notification.external_url = base.to_string();
}

type Selected = (Vec<ReceiverConfig>, Option<String>);

fn select(config: &Path, only: Option<&str>) -> Result<Selected> {
    let alerting = load(config)?;
    let external_url = alerting.external_url;
    let receivers = alerting.receivers;
    let receivers = match only {
        Some(name) => {
            let Some(found) = receivers.into_iter().find(|r| r.name() == name) else {
                bail!(
                    "{}: no receiver named {name:?} under [alerting] receivers",
                    config.display()
                );
            };
            vec![found]
        }
        None if receivers.is_empty() => {
            bail!("{}: no [[alerting.receivers]] configured", config.display())
        }
        None => receivers,
    };
    Ok((receivers, external_url))
}
