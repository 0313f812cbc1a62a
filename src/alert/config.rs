//! `[alerting]` of the collector's config: receivers, the routing tree,
//! escalation policies, inhibition rules and the outbox's retry budget.
//!
//! ```toml
//! [alerting]
//! resolve_timeout = "5m"          # no firing this long: the alert resolves
//! external_url = "https://nightowl.example.com:7443"
//!
//! [alerting.route]                # the root: every alert enters here
//! receiver = "oncall"
//! group_by = ["alertname"]
//! escalation = "standard"
//!
//! [[alerting.route.routes]]       # children: first match wins unless `continue`
//! matchers = ["severity=critical", "tenant=acme"]
//! receiver = "pager"
//!
//! [[alerting.receivers]]          # one table per receiver (docs/receivers.md)
//! name = "oncall"
//! kind = "webhook"
//!
//! [[alerting.escalation_policies]]
//! name = "standard"
//! levels = [{ after = "5m", receivers = ["manager"] }]
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::matcher::Matcher;
use super::receiver::ReceiverConfig;
use crate::time::parse_duration;

/// A duration written like `10s`, `5m`, `4h` (nanoseconds once parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub i64);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let nanos = parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{e}")))?;
        if nanos < 0 {
            return Err(serde::de::Error::custom("a duration may not be negative"));
        }
        Ok(Span(nanos))
    }
}

const SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// An alert without a new firing for this long resolves. Default `5m`.
    /// A rule overrides it with the label `resolve_timeout: 15m`.
    pub resolve_timeout: Span,
    /// Flap damping: a timed-out alert stays firing this much longer, so a
    /// condition that comes and goes does not page resolve/fire/resolve.
    /// Default `0s`; a rule's label `keep_firing_for` overrides it.
    pub keep_firing_for: Span,
    /// Base URL put in notifications' search and ack links. Default
    /// `https://<api_listen>`.
    pub external_url: Option<String>,
    /// Signed ack links stay valid this long. Default `24h`.
    pub ack_link_ttl: Span,
    /// Resolved alerts stay listed (`alerts list --all`) this long. Default `1h`.
    pub resolved_retention: Span,
    pub route: RouteConfig,
    pub receivers: Vec<ReceiverConfig>,
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// Unset: the default rule (a firing critical alert inhibits warning and
    /// info alerts of the same tenant and key). `[]` disables inhibition.
    pub inhibit_rules: Option<Vec<InhibitRuleConfig>>,
    pub outbox: OutboxConfig,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            resolve_timeout: Span(300 * SEC),
            keep_firing_for: Span(0),
            external_url: None,
            ack_link_ttl: Span(86_400 * SEC),
            resolved_retention: Span(3600 * SEC),
            route: RouteConfig::default(),
            receivers: Vec::new(),
            escalation_policies: Vec::new(),
            inhibit_rules: None,
            outbox: OutboxConfig::default(),
        }
    }
}

/// One node of the routing tree. Unset fields inherit the parent's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// All must match (`=`, `!=`, `=~`, `!~` on labels: alertname,
    /// severity, tenant, key, the rule's labels, `tags`). Empty: all alerts.
    pub matchers: Vec<Matcher>,
    /// Who gets the group's pages (the escalation policy's level 0).
    pub receiver: Option<String>,
    /// Labels that split alerts into groups (one page per group). Default
    /// `["alertname"]`; `["..."]` groups by every label (one alert per
    /// group). The tenant is always part of the group.
    pub group_by: Option<Vec<String>>,
    /// Wait before a new group's first page, to collect its siblings.
    /// Default: `0s` when the first alert is critical, else `10s`.
    pub group_wait: Option<Span>,
    /// Wait between pages of one group when alerts join or resolve. Default `5m`.
    pub group_interval: Option<Span>,
    /// Page again about a still-firing, unacknowledged group. Default `4h`.
    pub repeat_interval: Option<Span>,
    /// Send a notification when a group's alerts resolve. Default `true`.
    pub send_resolved: Option<bool>,
    /// Name of an `[[alerting.escalation_policies]]` entry.
    pub escalation: Option<String>,
    /// Keep looking at the next siblings after this route matched.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicyConfig {
    pub name: String,
    /// Level 1, 2, ...: paged when the group is still unacknowledged
    /// `after` its first page. Level 0 is the route's own receiver.
    pub levels: Vec<EscalationLevelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevelConfig {
    pub after: Span,
    pub receivers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// A firing alert matching these ...
    pub source_matchers: Vec<Matcher>,
    /// ... mutes alerts matching these ...
    pub target_matchers: Vec<Matcher>,
    /// ... when these labels are present on both and equal.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Delivery retries: exponential backoff with full jitter, then dead letter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// First retry delay. Default `1s`.
    pub initial_backoff: Span,
    /// Longest retry delay. Default `5m`.
    pub max_backoff: Span,
    /// Give up (dead letter, page the other receivers) after retrying this
    /// long. Default `24h`: a receiver outage of hours still gets its page.
    pub retry_budget: Span,
    /// A firing page still undelivered this long after it was created
    /// also goes to every other receiver, once, while its own receiver is
    /// still retried: on-call hears of it in minutes, not after the retry
    /// budget. Default `5m`; a value of `retry_budget` or more leaves only
    /// dead letters failing over.
    pub failover_after: Span,
    /// One attempt may take this long before it counts as failed. Default `30s`.
    pub attempt_timeout: Span,
    /// Where the alert state and the outbox live. Default `DATA_DIR/alerting`.
    pub dir: Option<PathBuf>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            initial_backoff: Span(SEC),
            max_backoff: Span(300 * SEC),
            retry_budget: Span(86_400 * SEC),
            failover_after: Span(300 * SEC),
            attempt_timeout: Span(30 * SEC),
            dir: None,
        }
    }
}

impl AlertingConfig {
    /// Every receiver name a route or a policy mentions must exist; policy
    /// names must resolve. Errors name the route path.
    pub fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        for r in &self.receivers {
            if !names.insert(r.name().to_string()) {
                bail!("alerting.receivers: the name {:?} is used twice", r.name());
            }
        }
        let mut policies = HashSet::new();
        for p in &self.escalation_policies {
            if !policies.insert(p.name.as_str()) {
                bail!(
                    "alerting.escalation_policies: the name {:?} is used twice",
                    p.name
                );
            }
            for (i, level) in p.levels.iter().enumerate() {
                for r in &level.receivers {
                    if !names.contains(r) {
                        bail!(
                            "alerting.escalation_policies {:?} level {}: unknown receiver {r:?} (known: {})",
                            p.name,
                            i + 1,
                            known(&names)
                        );
                    }
                }
            }
        }
        check_route(&self.route, "alerting.route", &names, &policies)?;
        if let Some(url) = &self.external_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("alerting.external_url must start with https:// or http://, not {url:?}");
            }
        }
        anyhow::ensure!(
            self.outbox.initial_backoff.0 > 0
                && self.outbox.max_backoff.0 >= self.outbox.initial_backoff.0,
            "alerting.outbox: initial_backoff must be positive and at most max_backoff"
        );
        Ok(())
    }
}

/// Who gets paged, as `nightowl status`, `GET /api/v1/alerts` and the
/// web page say it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Paging {
    /// Receivers configured.
    pub receivers: usize,
    /// Receivers some route (or an escalation level of a route's policy)
    /// sends to.
    pub routed: usize,
    /// Why nobody is paged; `None` when a page reaches someone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nobody_paged: Option<String>,
}

impl AlertingConfig {
    /// Whether a firing can reach anyone. Alerts are recorded and listed
    /// either way; this says whether a person hears about them.
    pub fn paging(&self) -> Paging {
        let mut used = HashSet::new();
        let mut policies = HashSet::new();
        let mut stack = vec![&self.route];
        while let Some(r) = stack.pop() {
            used.extend(r.receiver.iter().cloned());
            policies.extend(r.escalation.iter().cloned());
            stack.extend(r.routes.iter());
        }
        for p in self
            .escalation_policies
            .iter()
            .filter(|p| policies.contains(&p.name))
        {
            for level in &p.levels {
                used.extend(level.receivers.iter().cloned());
            }
        }
        let routed = self
            .receivers
            .iter()
            .filter(|r| used.contains(r.name()))
            .count();
        let nobody_paged = if self.receivers.is_empty() {
            Some(
                "nobody is paged: no alert receiver is configured ([[alerting.receivers]], \
                 docs/receivers.md); alerts are only listed here"
                    .to_string(),
            )
        } else if routed == 0 {
            Some(
                "nobody is paged: no route sends to a receiver ([alerting.route] receiver, \
                 docs/paging.md); alerts are only listed here"
                    .to_string(),
            )
        } else {
            None
        };
        Paging {
            receivers: self.receivers.len(),
            routed,
            nobody_paged,
        }
    }
}

fn known(names: &HashSet<String>) -> String {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort();
    if v.is_empty() {
        "none configured".into()
    } else {
        v.join(", ")
    }
}

fn check_route(
    route: &RouteConfig,
    path: &str,
    names: &HashSet<String>,
    policies: &HashSet<&str>,
) -> Result<()> {
    if let Some(r) = &route.receiver {
        if !names.contains(r) {
            bail!("{path}: unknown receiver {r:?} (known: {})", known(names));
        }
    }
    if let Some(p) = &route.escalation {
        if !policies.contains(p.as_str()) {
            bail!("{path}: unknown escalation policy {p:?}");
        }
    }
    for (i, child) in route.routes.iter().enumerate() {
        check_route(child, &format!("{path}.routes[{i}]"), names, policies)
            .with_context(|| format!("in {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let config: AlertingConfig = toml::from_str(text).expect("parses");
        format!("{:#}", config.validate().expect_err("must be invalid"))
    }

    #[test]
    fn validation_names_what_is_wrong_and_where() {
        let hook =
            "[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n";
        let e = err(&format!("{hook}{hook}"));
        assert!(e.contains("\"hook\" is used twice"), "{e}");
        let e = err(&format!("[route]\nescalation = \"nope\"\n{hook}"));
        assert!(e.contains("unknown escalation policy \"nope\""), "{e}");
        let e = err(&format!(
            "[[escalation_policies]]\nname = \"p\"\nlevels = [{{ after = \"1m\", receivers = [\"boss\"] }}]\n{hook}"
        ));
        assert!(
            e.contains("\"p\" level 1: unknown receiver \"boss\""),
            "{e}"
        );
        let e = err("[route]\nreceiver = \"x\"\n");
        assert!(
            e.contains("alerting.route: unknown receiver \"x\" (known: none configured)"),
            "{e}"
        );
        let ok: AlertingConfig =
            toml::from_str(&format!("[route]\nreceiver = \"hook\"\n{hook}")).unwrap();
        ok.validate().expect("valid");
        assert_eq!(ok.paging().routed, 1);
        assert_eq!(ok.paging().nobody_paged, None);
        let unrouted: AlertingConfig = toml::from_str(hook).unwrap();
        let p = unrouted.paging();
        assert_eq!((p.receivers, p.routed), (1, 0));
        assert!(p.nobody_paged.is_some_and(|w| w.contains("no route")));
        let none = AlertingConfig::default().paging();
        assert!(none
            .nobody_paged
            .is_some_and(|w| w.contains("no alert receiver")));
        assert!(toml::from_str::<AlertingConfig>("resolve_timeout = \"5 minutes\"").is_err());
        assert!(toml::from_str::<AlertingConfig>("[route]\nmatchers = [\"nonsense\"]").is_err());
    }
}
