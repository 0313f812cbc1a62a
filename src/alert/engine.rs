//! The alert lifecycle as a pure state machine: firings and time in,
//! notifications out. No I/O and no clock: every method takes `now` (unix
//! nanoseconds), so tests drive hours of paging without sleeping, and the
//! whole [`State`] serializes into the store (a restart neither re-pages
//! nor forgets acks, silences or escalation timers).
//!
//! - An alert is one (tenant, rule, key): its fingerprint. Repeats merge.
//! - It resolves when no firing came for `resolve_timeout` (+ `keep_firing_for`).
//! - Each route that takes it puts it into a group (route + tenant +
//!   `group_by` labels). A group pages when alerts join it (after
//!   `group_wait` for its first page, `group_interval` after that) or
//!   resolve, and again every `repeat_interval` while unacknowledged.
//! - Silenced or inhibited alerts are left out of pages; when the silence
//!   ends they count as joining.
//! - Escalation: while a group has a firing, unacknowledged alert, level N
//!   of its policy is paged `after_N` past the group's first page.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{AlertingConfig, InhibitRuleConfig};
use super::matcher::{all_match, Matcher};
use super::model::{Alert, AlertStatus, Notification};
use super::route::Routing;
use super::silence::{Silence, SilenceState};
use crate::detect::{Firing, Severity};

const SEC: i64 = 1_000_000_000;
/// group_wait for a non-critical group when the route sets none: short
/// enough to page quickly, long enough to collect a burst's siblings.
const DEFAULT_GROUP_WAIT: i64 = 10 * SEC;
/// Ended silences stay listed this long.
const SILENCE_RETENTION: i64 = 86_400 * SEC;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertEntry {
    pub alert: Alert,
    /// Resolve when `now - last_fired_at` reaches this.
    pub resolve_after: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(default)]
    pub receivers_notified: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub route_id: String,
    pub tenant: String,
    pub labels: BTreeMap<String, String>,
    pub members: BTreeSet<String>,
    pub created_at: i64,
    pub group_wait: i64,
    #[serde(default)]
    pub last_flush_at: Option<i64>,
    /// Fingerprints the last page listed as firing.
    #[serde(default)]
    pub last_sent: BTreeSet<String>,
    /// When the current run of unacknowledged firing started (first page).
    #[serde(default)]
    pub escalation_started: Option<i64>,
    /// Highest escalation level paged in the current run.
    #[serde(default)]
    pub escalation_level: u32,
}

/// Everything the store persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub alerts: BTreeMap<String, AlertEntry>,
    pub groups: BTreeMap<String, Group>,
    pub silences: BTreeMap<String, Silence>,
    /// Makes notification and silence ids unique across restarts.
    pub seq: u64,
    /// Rows changed since the last persist. The store writes only these,
    /// so an alert storm costs a persist per changed alert, not the whole
    /// state each time one of 10k alerts repeats.
    #[serde(skip)]
    pub dirty: Dirty,
}

/// Keys of the rows of [`State`] that changed (inserted, updated or
/// removed) since the store last wrote them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dirty {
    pub alerts: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub silences: BTreeSet<String>,
    /// Every row: after loading a legacy whole-state value.
    pub all: bool,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.all && self.alerts.is_empty() && self.groups.is_empty() && self.silences.is_empty()
    }

    /// Puts back what a failed persist took, so the next one retries it.
    pub fn merge(&mut self, other: Dirty) {
        self.alerts.extend(other.alerts);
        self.groups.extend(other.groups);
        self.silences.extend(other.silences);
        self.all |= other.all;
    }
}

/// A notification to write to the outbox, plus when the firing behind it
/// arrived (for the firing → delivered latency), if one did.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub notification: Notification,
    pub fired_at: Option<i64>,
}

struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

pub struct Engine {
    pub state: State,
    routing: Routing,
    inhibit: Vec<InhibitRule>,
    resolve_timeout: i64,
    keep_firing_for: i64,
    resolved_retention: i64,
    external_url: String,
    /// Receivers configured with `send_resolved = false`.
    no_resolved: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("no alert {0:?} in this tenant")]
    NotFound(String),
    #[error("{0:?} matches several alerts; give more of the id")]
    Ambiguous(String),
}

/// A silence as the API or CLI asks for it.
#[derive(Debug, Clone)]
pub struct SilenceSpec {
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub author: String,
    pub comment: String,
}

/// What `alerts list` shows per alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub fingerprint: String,
    /// firing, acked, silenced, inhibited or resolved.
    pub state: &'static str,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub starts_at: i64,
    pub last_fired_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    pub firings: u64,
    pub receivers_notified: Vec<String>,
    pub escalation_level: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub silenced_by: Vec<String>,
    /// The search that shows the evidence, over `evidence_from..=evidence_to`
    /// (unix nanos): what the page's Evidence button runs.
    pub evidence_query: String,
    pub evidence_from: i64,
    pub evidence_to: i64,
}

pub fn fingerprint(tenant: &str, rule_id: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, rule_id, key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn default_inhibit_rules() -> Vec<InhibitRule> {
    let m = |s: &str| Matcher::parse(s).ok();
    match (m("severity=critical"), m("severity=~warning|info")) {
        (Some(source), Some(target)) => vec![InhibitRule {
            source: vec![source],
            target: vec![target],
            equal: vec!["tenant".into(), "key".into()],
        }],
        _ => Vec::new(),
    }
}

impl Engine {
    pub fn new(config: &AlertingConfig, external_url: String, state: State) -> Engine {
        let inhibit = match &config.inhibit_rules {
            None => default_inhibit_rules(),
            Some(rules) => rules
                .iter()
                .map(|r: &InhibitRuleConfig| InhibitRule {
                    source: r.source_matchers.clone(),
                    target: r.target_matchers.clone(),
                    equal: r.equal.clone(),
                })
                .collect(),
        };
        Engine {
            state,
            routing: Routing::compile(config),
            inhibit,
            resolve_timeout: config.resolve_timeout.0,
            keep_firing_for: config.keep_firing_for.0,
            resolved_retention: config.resolved_retention.0,
            external_url,
            no_resolved: config
                .receivers
                .iter()
                .filter(|r| !r.send_resolved())
                .map(|r| r.name().to_string())
                .collect(),
        }
    }

    /// Merges one firing. Returns true when it started (or re-opened) an alert.
    pub fn on_firing(&mut self, firing: &Firing, now: i64) -> bool {
        let fp = fingerprint(&firing.tenant, &firing.rule_id, &firing.key);
        if let Some(entry) = self.state.alerts.get_mut(&fp) {
            if entry.alert.status == AlertStatus::Firing {
                let a = &mut entry.alert;
                a.last_fired_at = now;
                a.firings += 1;
                a.count = firing.count;
                a.value = firing.value;
                a.sample_lines.clone_from(&firing.sample_lines);
                a.evidence_to = a.evidence_to.max(firing.last_ts);
                self.state.dirty.alerts.insert(fp);
                return false;
            }
        }
        let labels = alert_labels(firing);
        let duration_label = |name: &str, default: i64| {
            labels
                .get(name)
                .and_then(|v| crate::time::parse_duration(v).ok())
                .unwrap_or(default)
        };
        let resolve_after = duration_label("resolve_timeout", self.resolve_timeout)
            + duration_label("keep_firing_for", self.keep_firing_for);
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), firing.title.clone());
        annotations.insert("description".to_string(), describe(firing));
        // When the evidence happened (event time): a source behind the
        // others (an agent draining its spool) pages about the past.
        annotations.insert(
            "evidence_at".to_string(),
            crate::time::format_rfc3339(firing.first_ts),
        );
        let delay = now.saturating_sub(firing.last_ts);
        if delay >= LATE_EVIDENCE {
            annotations.insert("evidence_delay".to_string(), human_delay(delay));
        }
        let alert = Alert {
            fingerprint: fp.clone(),
            status: AlertStatus::Firing,
            rule_id: firing.rule_id.clone(),
            title: firing.title.clone(),
            severity: firing.severity,
            tenant: firing.tenant.clone(),
            key: firing.key.clone(),
            labels,
            annotations,
            tags: firing.tags.clone(),
            starts_at: now,
            last_fired_at: now,
            ends_at: None,
            firings: 1,
            count: firing.count,
            value: firing.value,
            sample_lines: firing.sample_lines.clone(),
            evidence_query: firing.evidence_query.clone(),
            evidence_from: firing.first_ts,
            evidence_to: firing.last_ts,
        };
        tracing::info!(
            fingerprint = %fp, rule = %alert.rule_id, tenant = %alert.tenant, key = %alert.key,
            "alert firing"
        );
        for node in self.routing.route(&alert.labels) {
            let (key, group_labels) = node.group_of(&alert.tenant, &alert.labels);
            let group = self
                .state
                .groups
                .entry(key.clone())
                .or_insert_with(|| Group {
                    key,
                    route_id: node.id.clone(),
                    tenant: alert.tenant.clone(),
                    labels: group_labels,
                    members: BTreeSet::new(),
                    created_at: now,
                    group_wait: node.group_wait.unwrap_or(
                        if alert.severity == Severity::Critical {
                            0
                        } else {
                            DEFAULT_GROUP_WAIT
                        },
                    ),
                    last_flush_at: None,
                    last_sent: BTreeSet::new(),
                    escalation_started: None,
                    escalation_level: 0,
                });
            group.members.insert(fp.clone());
            self.state.dirty.groups.insert(group.key.clone());
        }
        self.state.dirty.alerts.insert(fp.clone());
        self.state.alerts.insert(
            fp,
            AlertEntry {
                alert,
                resolve_after,
                acked_at: None,
                acked_by: None,
                receivers_notified: BTreeSet::new(),
            },
        );
        true
    }

    fn silenced_by(&self, alert: &Alert, now: i64) -> Vec<String> {
        self.state
            .silences
            .values()
            .filter(|s| s.mutes(&alert.tenant, &alert.labels, now))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Fingerprints of the firing alerts an inhibition rule mutes now.
    /// Sources are collected once per rule, so the cost is sources ×
    /// targets (sources, typically a few critical alerts), not alerts².
    fn inhibited_set(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        for rule in &self.inhibit {
            let sources: Vec<&Alert> = self
                .state
                .alerts
                .values()
                .map(|e| &e.alert)
                .filter(|a| a.status == AlertStatus::Firing && all_match(&rule.source, &a.labels))
                .collect();
            if sources.is_empty() {
                continue;
            }
            for t in self.state.alerts.values().map(|e| &e.alert) {
                if t.status != AlertStatus::Firing
                    || out.contains(&t.fingerprint)
                    || !all_match(&rule.target, &t.labels)
                {
                    continue;
                }
                // A source that is itself a target of a source matching
                // the target would mute in both directions: skip it.
                let target_is_source = all_match(&rule.source, &t.labels);
                let muted = sources.iter().any(|s| {
                    s.fingerprint != t.fingerprint
                        && s.tenant == t.tenant
                        && !(target_is_source && all_match(&rule.target, &s.labels))
                        && rule
                            .equal
                            .iter()
                            .all(|l| match (s.labels.get(l), t.labels.get(l)) {
                                (Some(a), Some(b)) => a == b && !a.is_empty(),
                                _ => false,
                            })
                });
                if muted {
                    out.insert(t.fingerprint.clone());
                }
            }
        }
        out
    }

    fn suppressed(&self, alert: &Alert, now: i64, inhibited: &HashSet<String>) -> bool {
        inhibited.contains(&alert.fingerprint)
            || self
                .state
                .silences
                .values()
                .any(|s| s.mutes(&alert.tenant, &alert.labels, now))
    }

    /// Advances time: resolves, expires, and returns the pages now due.
    pub fn tick(&mut self, now: i64) -> Vec<Outgoing> {
        let dirty = &mut self.state.dirty;
        for (fp, entry) in self.state.alerts.iter_mut() {
            let a = &mut entry.alert;
            if a.status == AlertStatus::Firing && now - a.last_fired_at >= entry.resolve_after {
                a.status = AlertStatus::Resolved;
                a.ends_at = Some(now);
                dirty.alerts.insert(fp.clone());
                tracing::info!(fingerprint = %a.fingerprint, rule = %a.rule_id, key = %a.key, "alert resolved");
            }
        }
        let retention = self.resolved_retention;
        self.state.alerts.retain(|fp, e| {
            let keep = e.alert.status == AlertStatus::Firing
                || e.alert.ends_at.is_some_and(|end| now - end < retention);
            if !keep {
                dirty.alerts.insert(fp.clone());
            }
            keep
        });
        self.state.silences.retain(|id, s| {
            let keep = now - s.ends_at < SILENCE_RETENTION;
            if !keep {
                dirty.silences.insert(id.clone());
            }
            keep
        });

        let mut out = Vec::new();
        let inhibited = self.inhibited_set();
        let keys: Vec<String> = self.state.groups.keys().cloned().collect();
        for key in keys {
            self.tick_group(&key, now, &inhibited, &mut out);
        }
        out
    }

    fn tick_group(
        &mut self,
        key: &str,
        now: i64,
        inhibited: &HashSet<String>,
        out: &mut Vec<Outgoing>,
    ) {
        // Taken out of the map and put back: no clone per group per tick.
        let Some(mut group) = self.state.groups.remove(key) else {
            return;
        };
        let node = RouteTiming::of(self.routing.find(&group.route_id));
        let mut active_firing = BTreeSet::new();
        let mut unacked = false;
        let mut newly_resolved = Vec::new();
        for fp in &group.members {
            let Some(entry) = self.state.alerts.get(fp) else {
                continue;
            };
            if entry.alert.status == AlertStatus::Firing {
                if !self.suppressed(&entry.alert, now, inhibited) {
                    active_firing.insert(fp.clone());
                    unacked |= entry.acked_at.is_none();
                }
            } else if group.last_sent.contains(fp) && self.silenced_by(&entry.alert, now).is_empty()
            {
                newly_resolved.push(fp.clone());
            }
        }
        let new_firing: Vec<&String> = active_firing.difference(&group.last_sent).collect();
        let changed = !new_firing.is_empty() || !newly_resolved.is_empty();
        let due = if changed {
            match group.last_flush_at {
                None => now >= group.created_at + group.group_wait,
                Some(last) => now >= last + node.group_interval,
            }
        } else {
            unacked
                && group
                    .last_flush_at
                    .is_some_and(|last| now >= last + node.repeat_interval)
        };
        let fired_at = new_firing
            .iter()
            .filter_map(|fp| self.state.alerts.get(*fp))
            .map(|e| e.alert.last_fired_at)
            .max();

        let mut group_changed = due;
        if due {
            let status = if active_firing.is_empty() {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            };
            let mut receivers: Vec<String> = node.receiver.iter().cloned().collect();
            for (_, level) in node.escalation.iter().take(group.escalation_level as usize) {
                receivers.extend(level.iter().cloned());
            }
            dedup_in_order(&mut receivers);
            if status == AlertStatus::Resolved {
                receivers.retain(|r| !self.no_resolved.contains(r));
            }
            if status == AlertStatus::Firing || node.send_resolved {
                let alerts: Vec<Alert> = active_firing
                    .iter()
                    .chain(newly_resolved.iter())
                    .filter_map(|fp| self.state.alerts.get(fp))
                    .map(|e| e.alert.clone())
                    .collect();
                for receiver in &receivers {
                    out.push(Outgoing {
                        notification: self.notification(
                            &group,
                            receiver,
                            status,
                            alerts.clone(),
                            0,
                            now,
                        ),
                        fired_at,
                    });
                }
                self.mark_notified(&alerts, &receivers);
            }
            group.last_flush_at = Some(now);
            group.last_sent = active_firing.clone();
            if active_firing.is_empty() {
                group.escalation_started = None;
                group.escalation_level = 0;
            } else if group.escalation_started.is_none() {
                group.escalation_started = Some(now);
            }
        }

        // Escalation: only while someone still has to act.
        if let Some(started) = group.escalation_started {
            if unacked && !active_firing.is_empty() {
                while let Some((after, level_receivers)) =
                    node.escalation.get(group.escalation_level as usize)
                {
                    if now < started + after {
                        break;
                    }
                    group.escalation_level += 1;
                    group_changed = true;
                    let alerts: Vec<Alert> = active_firing
                        .iter()
                        .filter_map(|fp| self.state.alerts.get(fp))
                        .map(|e| e.alert.clone())
                        .collect();
                    tracing::warn!(group = %group.key, level = group.escalation_level, "escalating: still unacknowledged");
                    for receiver in level_receivers {
                        out.push(Outgoing {
                            notification: self.notification(
                                &group,
                                receiver,
                                AlertStatus::Firing,
                                alerts.clone(),
                                group.escalation_level,
                                now,
                            ),
                            fired_at: None,
                        });
                    }
                    self.mark_notified(&alerts, level_receivers);
                }
            }
        }

        // Members that resolved and were told (or never paged) leave the group.
        let members_before = group.members.len();
        group.members.retain(|fp| {
            self.state.alerts.get(fp).is_some_and(|e| {
                e.alert.status == AlertStatus::Firing || group.last_sent.contains(fp)
            })
        });
        group_changed |= group.members.len() != members_before;
        if group.members.is_empty() && group.last_sent.is_empty() {
            self.state.dirty.groups.insert(key.to_string());
        } else {
            if group_changed {
                self.state.dirty.groups.insert(key.to_string());
            }
            self.state.groups.insert(key.to_string(), group);
        }
    }

    fn mark_notified(&mut self, alerts: &[Alert], receivers: &[String]) {
        for a in alerts {
            if let Some(e) = self.state.alerts.get_mut(&a.fingerprint) {
                let before = e.receivers_notified.len();
                e.receivers_notified.extend(receivers.iter().cloned());
                if e.receivers_notified.len() != before {
                    self.state.dirty.alerts.insert(a.fingerprint.clone());
                }
            }
        }
    }

    fn notification(
        &mut self,
        group: &Group,
        receiver: &str,
        status: AlertStatus,
        alerts: Vec<Alert>,
        escalation_level: u32,
        now: i64,
    ) -> Notification {
        self.state.seq += 1;
        Notification {
            id: format!("{:016x}-{}", now, self.state.seq),
            receiver: receiver.to_string(),
            group_key: group.key.clone(),
            group_labels: group.labels.clone(),
            status,
            alerts,
            escalation_level,
            created_at: now,
            external_url: self.external_url.clone(),
            ack_url: None,
        }
    }

    /// Drops every alert, group and silence of `tenant` (a purge):
    /// (alerts, groups, silences) removed.
    pub fn forget_tenant(&mut self, tenant: &str) -> (usize, usize, usize) {
        self.state.forget_tenant(tenant)
    }
}

impl State {
    /// Drops every alert, group and silence of `tenant`, marking the rows
    /// dirty: (alerts, groups, silences) removed.
    pub fn forget_tenant(&mut self, tenant: &str) -> (usize, usize, usize) {
        let state = self;
        let dirty = &mut state.dirty;
        let before = (state.alerts.len(), state.groups.len(), state.silences.len());
        state.alerts.retain(|fp, e| {
            let keep = e.alert.tenant != tenant;
            if !keep {
                dirty.alerts.insert(fp.clone());
            }
            keep
        });
        state.groups.retain(|key, g| {
            let keep = g.tenant != tenant;
            if !keep {
                dirty.groups.insert(key.clone());
            }
            keep
        });
        state.silences.retain(|id, s| {
            let keep = s.tenant != tenant;
            if !keep {
                dirty.silences.insert(id.clone());
            }
            keep
        });
        (
            before.0 - state.alerts.len(),
            before.1 - state.groups.len(),
            before.2 - state.silences.len(),
        )
    }
}

impl Engine {
    /// Finds one alert of `tenant` by fingerprint or unique prefix.
    pub fn find(&self, tenant: &str, id: &str) -> Result<String, LookupError> {
        if let Some(e) = self.state.alerts.get(id) {
            if e.alert.tenant == tenant {
                return Ok(id.to_string());
            }
        }
        let mut hits = self
            .state
            .alerts
            .range(id.to_string()..)
            .take_while(|(fp, _)| fp.starts_with(id))
            .filter(|(_, e)| e.alert.tenant == tenant)
            .map(|(fp, _)| fp.clone());
        match (hits.next(), hits.next()) {
            (Some(fp), None) if !id.is_empty() => Ok(fp),
            (Some(_), Some(_)) => Err(LookupError::Ambiguous(id.to_string())),
            _ => Err(LookupError::NotFound(id.to_string())),
        }
    }

    /// Acknowledges one alert: its groups stop escalating and repeating.
    pub fn ack(
        &mut self,
        tenant: &str,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<String, LookupError> {
        let fp = self.find(tenant, id)?;
        if let Some(e) = self.state.alerts.get_mut(&fp) {
            if e.acked_at.is_none() {
                e.acked_at = Some(now);
                e.acked_by = Some(by.to_string());
                self.state.dirty.alerts.insert(fp.clone());
                tracing::info!(target: "nightowl::audit", fingerprint = %fp, tenant, by, "alert acknowledged");
            }
        }
        Ok(fp)
    }

    /// Acknowledges every firing alert of a group (the signed link's action).
    pub fn ack_group(&mut self, tenant: &str, group_key: &str, by: &str, now: i64) -> usize {
        let Some(group) = self.state.groups.get(group_key) else {
            return 0;
        };
        if group.tenant != tenant {
            return 0;
        }
        let members: Vec<String> = group.members.iter().cloned().collect();
        let mut n = 0;
        for fp in members {
            if let Some(e) = self.state.alerts.get_mut(&fp) {
                if e.alert.status == AlertStatus::Firing && e.acked_at.is_none() {
                    e.acked_at = Some(now);
                    e.acked_by = Some(by.to_string());
                    self.state.dirty.alerts.insert(fp);
                    n += 1;
                }
            }
        }
        tracing::info!(target: "nightowl::audit", group = group_key, tenant, by, alerts = n, "group acknowledged");
        n
    }

    pub fn add_silence(&mut self, tenant: &str, spec: SilenceSpec, now: i64) -> Silence {
        self.state.seq += 1;
        let silence = Silence {
            id: format!("s{:x}{:04x}", now / 1_000_000, self.state.seq & 0xffff),
            tenant: tenant.to_string(),
            matchers: spec.matchers,
            starts_at: spec.starts_at,
            ends_at: spec.ends_at,
            author: spec.author,
            comment: spec.comment,
            created_at: now,
        };
        tracing::info!(
            target: "nightowl::audit", silence = %silence.id, tenant, author = %silence.author,
            matchers = %silence.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
            "silence created"
        );
        self.state.dirty.silences.insert(silence.id.clone());
        self.state
            .silences
            .insert(silence.id.clone(), silence.clone());
        silence
    }

    /// Ends a silence now. False when the tenant has no such silence.
    pub fn expire_silence(&mut self, tenant: &str, id: &str, by: &str, now: i64) -> bool {
        match self.state.silences.get_mut(id) {
            Some(s) if s.tenant == tenant => {
                if s.state(now) != SilenceState::Expired {
                    self.state.dirty.silences.insert(id.to_string());
                    s.ends_at = now;
                    if s.starts_at > now {
                        s.starts_at = now;
                    }
                }
                tracing::info!(target: "nightowl::audit", silence = id, tenant, by, "silence expired");
                true
            }
            _ => false,
        }
    }

    pub fn silences(&self, tenant: &str) -> Vec<&Silence> {
        self.state
            .silences
            .values()
            .filter(|s| s.tenant == tenant)
            .collect()
    }

    pub fn list(&self, tenant: &str, include_resolved: bool, now: i64) -> Vec<AlertView> {
        let inhibited = self.inhibited_set();
        let mut out: Vec<AlertView> = self
            .state
            .alerts
            .values()
            .filter(|e| e.alert.tenant == tenant)
            .filter(|e| include_resolved || e.alert.status == AlertStatus::Firing)
            .map(|e| {
                let a = &e.alert;
                let silenced_by = self.silenced_by(a, now);
                let state = if a.status == AlertStatus::Resolved {
                    "resolved"
                } else if !silenced_by.is_empty() {
                    "silenced"
                } else if inhibited.contains(&a.fingerprint) {
                    "inhibited"
                } else if e.acked_at.is_some() {
                    "acked"
                } else {
                    "firing"
                };
                let escalation_level = self
                    .state
                    .groups
                    .values()
                    .filter(|g| g.members.contains(&a.fingerprint))
                    .map(|g| g.escalation_level)
                    .max()
                    .unwrap_or(0);
                AlertView {
                    fingerprint: a.fingerprint.clone(),
                    state,
                    rule_id: a.rule_id.clone(),
                    title: a.title.clone(),
                    severity: a.severity,
                    key: a.key.clone(),
                    labels: a.labels.clone(),
                    starts_at: a.starts_at,
                    last_fired_at: a.last_fired_at,
                    ends_at: a.ends_at,
                    firings: a.firings,
                    receivers_notified: e.receivers_notified.iter().cloned().collect(),
                    escalation_level,
                    acked_by: e.acked_by.clone(),
                    acked_at: e.acked_at,
                    silenced_by,
                    evidence_query: a.evidence_query.clone(),
                    evidence_from: a.evidence_from,
                    evidence_to: a.evidence_to,
                }
            })
            .collect();
        out.sort_by_key(|v| std::cmp::Reverse(v.starts_at));
        out
    }

    /// The tenant of a group, for the ack link's check.
    pub fn group_tenant(&self, group_key: &str) -> Option<&str> {
        self.state.groups.get(group_key).map(|g| g.tenant.as_str())
    }
}

/// What a group's tick needs from its route node (the node itself owns
/// its whole subtree, too much to clone per tick).
struct RouteTiming {
    receiver: Option<String>,
    group_interval: i64,
    repeat_interval: i64,
    send_resolved: bool,
    escalation: Vec<(i64, Vec<String>)>,
}

impl RouteTiming {
    fn of(node: &super::route::RouteNode) -> RouteTiming {
        RouteTiming {
            receiver: node.receiver.clone(),
            group_interval: node.group_interval,
            repeat_interval: node.repeat_interval,
            send_resolved: node.send_resolved,
            escalation: node.escalation.clone(),
        }
    }
}

fn dedup_in_order(v: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

fn alert_labels(f: &Firing) -> BTreeMap<String, String> {
    let mut labels = f.labels.clone();
    labels.insert("alertname".into(), f.rule_id.clone());
    labels.insert("severity".into(), f.severity.as_str().into());
    labels.insert("tenant".into(), f.tenant.clone());
    if !f.key.is_empty() {
        labels.insert("key".into(), f.key.clone());
    }
    if !f.tags.is_empty() {
        labels.insert("tags".into(), f.tags.join(","));
    }
    labels
}

/// How old the evidence must be when it pages for the page to say so.
const LATE_EVIDENCE: i64 = 2 * 60 * SEC;

/// `95s`, `31m`, `5h`, `2d`: how long before the page the evidence ended.
fn human_delay(nanos: i64) -> String {
    match nanos / SEC {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn describe(f: &Firing) -> String {
    let mut text = format!("{}: {} lines in {}s", f.rule_id, f.count, f.window);
    if !f.key.is_empty() {
        text.push_str(&format!(" for {}", f.key));
    }
    if let Some(v) = f.value {
        text.push_str(&format!(" (value {v})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000 * SEC;

    fn firing(rule: &str, key: &str, severity: Severity) -> Firing {
        Firing {
            rule_id: rule.into(),
            title: format!("{rule} fired"),
            severity,
            tenant: "default".into(),
            key: key.into(),
            count: 10,
            value: None,
            window: 60.0,
            first_ts: T0,
            last_ts: T0,
            sample_lines: vec!["GET /login 401".into()],
            labels: BTreeMap::new(),
            tags: vec!["auth".into()],
            evidence_query: "status:401".into(),
        }
    }

    fn spec(matchers: Vec<Matcher>, starts_at: i64, ends_at: i64) -> SilenceSpec {
        SilenceSpec {
            matchers,
            starts_at,
            ends_at,
            author: "alice".into(),
            comment: "maintenance".into(),
        }
    }

    fn engine(toml_text: &str) -> Engine {
        let config: AlertingConfig = toml::from_str(toml_text).expect("config");
        Engine::new(&config, "https://nightowl.test".into(), State::default())
    }

    const ONE_RECEIVER: &str = r#"
        [route]
        receiver = "hook"
        group_interval = "1m"
        repeat_interval = "1h"
    "#;

    fn to(out: &[Outgoing], receiver: &str) -> Vec<Notification> {
        out.iter()
            .filter(|o| o.notification.receiver == receiver)
            .map(|o| o.notification.clone())
            .collect()
    }

    #[test]
    fn five_hundred_firings_of_one_key_page_once_then_resolve_once() {
        let mut e = engine(ONE_RECEIVER);
        let f = firing("brute", "10.0.0.1", Severity::Critical);
        let mut pages = Vec::new();
        for i in 0..500 {
            let now = T0 + i * 100_000_000;
            e.on_firing(&f, now);
            pages.extend(e.tick(now));
        }
        assert_eq!(pages.len(), 1, "critical pages at once, repeats merge");
        assert_eq!(pages[0].notification.alerts.len(), 1);
        assert_eq!(pages[0].notification.alerts[0].firings, 1);
        assert_eq!(pages[0].fired_at, Some(T0));
        let fp = fingerprint("default", "brute", "10.0.0.1");
        assert_eq!(e.state.alerts[&fp].alert.firings, 500);
        // 50 s after the last firing: still firing; at 5 min: resolved page.
        let last = T0 + 499 * 100_000_000;
        assert!(e.tick(last + 50 * SEC).is_empty());
        let resolved = e.tick(last + 300 * SEC);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].notification.status, AlertStatus::Resolved);
        assert!(
            e.tick(last + 3600 * SEC).is_empty(),
            "no repeats after resolution"
        );
        assert!(e.state.groups.is_empty());
    }

    #[test]
    fn fifty_keys_wait_and_go_out_as_one_page() {
        let mut e = engine(ONE_RECEIVER);
        for k in 0..50 {
            e.on_firing(
                &firing("scan", &format!("10.0.0.{k}"), Severity::Warning),
                T0 + k * SEC / 10,
            );
            assert!(e.tick(T0 + k * SEC / 10).is_empty(), "warning groups wait");
        }
        let out = e.tick(T0 + DEFAULT_GROUP_WAIT);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.alerts.len(), 50);
        assert_eq!(out[0].notification.group_labels["alertname"], "scan");
        // A 51st key joins: paged after group_interval, not before.
        e.on_firing(
            &firing("scan", "10.0.1.1", Severity::Warning),
            T0 + 20 * SEC,
        );
        assert!(e.tick(T0 + 20 * SEC).is_empty());
        let out = e.tick(T0 + DEFAULT_GROUP_WAIT + 60 * SEC);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.alerts.len(), 51);
    }

    #[test]
    fn repeat_interval_until_acked() {
        let mut e = engine(ONE_RECEIVER);
        e.on_firing(&firing("brute", "k", Severity::Critical), T0);
        assert_eq!(e.tick(T0).len(), 1);
        // Keep it firing, look 1 h later: repeated.
        e.on_firing(&firing("brute", "k", Severity::Critical), T0 + 3500 * SEC);
        assert_eq!(e.tick(T0 + 3600 * SEC).len(), 1);
        let fp = e
            .ack("default", "", "x", T0)
            .map(|_| ())
            .expect_err("empty id");
        assert_eq!(fp, LookupError::NotFound(String::new()));
        let fp = fingerprint("default", "brute", "k");
        e.ack("default", &fp[..6], "alice", T0 + 3601 * SEC)
            .expect("ack by prefix");
        e.on_firing(&firing("brute", "k", Severity::Critical), T0 + 7000 * SEC);
        assert!(e.tick(T0 + 7200 * SEC).is_empty(), "acked: no repeat");
        assert_eq!(e.list("default", false, T0 + 7200 * SEC)[0].state, "acked");
        assert!(e.list("other", true, T0).is_empty(), "tenant-scoped");
        assert_eq!(e.find("other", &fp), Err(LookupError::NotFound(fp.clone())));
    }

    #[test]
    fn silence_suppresses_and_expiry_unsuppresses() {
        let mut e = engine(ONE_RECEIVER);
        let m = vec![Matcher::parse("alertname=brute").unwrap()];
        let s = e.add_silence("default", spec(m, T0, T0 + 3600 * SEC), T0);
        e.on_firing(&firing("brute", "k", Severity::Critical), T0 + SEC);
        assert!(e.tick(T0 + SEC).is_empty(), "silenced");
        assert_eq!(e.list("default", false, T0 + SEC)[0].state, "silenced");
        // Another tenant's silence does nothing here.
        let other = vec![Matcher::parse("alertname=other").unwrap()];
        e.add_silence("acme", spec(other, T0, T0 + 9999 * SEC), T0);
        e.on_firing(&firing("other", "k", Severity::Critical), T0 + 2 * SEC);
        assert_eq!(e.tick(T0 + 2 * SEC).len(), 1);
        // Expire: the muted alert pages at the next tick.
        assert!(
            !e.expire_silence("acme", &s.id, "bob", T0 + 3 * SEC),
            "tenant-scoped"
        );
        e.on_firing(&firing("brute", "k", Severity::Critical), T0 + 3 * SEC);
        assert!(e.expire_silence("default", &s.id, "alice", T0 + 3 * SEC));
        let out = e.tick(T0 + 4 * SEC);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.alerts[0].rule_id, "brute");
    }

    #[test]
    fn critical_inhibits_warning_of_same_key_by_default() {
        let mut e = engine(ONE_RECEIVER);
        e.on_firing(&firing("brute", "10.0.0.1", Severity::Critical), T0);
        e.on_firing(&firing("scan", "10.0.0.1", Severity::Warning), T0);
        e.on_firing(&firing("scan", "10.0.0.2", Severity::Warning), T0);
        let out = e.tick(T0 + DEFAULT_GROUP_WAIT);
        let keys: Vec<&str> = out
            .iter()
            .flat_map(|o| o.notification.alerts.iter().map(|a| a.key.as_str()))
            .collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&"10.0.0.2"));
        let views = e.list("default", false, T0);
        assert!(views
            .iter()
            .any(|v| v.key == "10.0.0.1" && v.state == "inhibited"));
        // The critical resolves: the inhibited warning pages.
        e.on_firing(
            &firing("scan", "10.0.0.1", Severity::Warning),
            T0 + 299 * SEC,
        );
        let out = e.tick(T0 + 300 * SEC);
        let scan: Vec<_> = out
            .iter()
            .filter(|o| o.notification.group_labels["alertname"] == "scan")
            .collect();
        assert_eq!(scan.len(), 1);
        assert!(scan[0]
            .notification
            .alerts
            .iter()
            .any(|a| a.key == "10.0.0.1" && a.status == AlertStatus::Firing));
    }

    #[test]
    fn escalation_pages_next_level_until_acked() {
        let mut e = engine(
            r#"
            [route]
            receiver = "l0"
            escalation = "std"
            [[escalation_policies]]
            name = "std"
            levels = [{ after = "5m", receivers = ["l1"] }, { after = "15m", receivers = ["l2"] }]
            "#,
        );
        let f = firing("brute", "k", Severity::Critical);
        e.on_firing(&f, T0);
        assert_eq!(to(&e.tick(T0), "l0").len(), 1);
        e.on_firing(&f, T0 + 200 * SEC);
        assert!(e.tick(T0 + 299 * SEC).is_empty());
        let out = e.tick(T0 + 300 * SEC);
        assert_eq!(to(&out, "l1").len(), 1);
        assert_eq!(to(&out, "l1")[0].escalation_level, 1);
        e.ack(
            "default",
            &fingerprint("default", "brute", "k"),
            "alice",
            T0 + 400 * SEC,
        )
        .expect("ack");
        e.on_firing(&f, T0 + 800 * SEC);
        assert!(e.tick(T0 + 900 * SEC).is_empty(), "acked: no level 2");
        assert_eq!(
            e.list("default", false, T0 + 900 * SEC)[0].escalation_level,
            1
        );
    }

    #[test]
    fn ack_group_stops_escalation_and_resolution_reaches_escalated_levels() {
        let mut e = engine(
            r#"
            [route]
            receiver = "l0"
            escalation = "std"
            [[escalation_policies]]
            name = "std"
            levels = [{ after = "1m", receivers = ["l1"] }]
            "#,
        );
        e.on_firing(&firing("brute", "k", Severity::Critical), T0);
        let first = e.tick(T0);
        let group = first[0].notification.group_key.clone();
        let out = e.tick(T0 + 60 * SEC);
        assert_eq!(to(&out, "l1").len(), 1);
        assert_eq!(e.ack_group("acme", &group, "x", T0), 0, "tenant-scoped");
        assert_eq!(e.ack_group("default", &group, "link", T0 + 61 * SEC), 1);
        let resolved = e.tick(T0 + 301 * SEC);
        assert_eq!(to(&resolved, "l0").len(), 1);
        assert_eq!(
            to(&resolved, "l1").len(),
            1,
            "escalated levels hear the resolution"
        );
    }

    #[test]
    fn keep_firing_for_damps_flaps_and_rule_labels_override() {
        let mut e = engine(
            r#"
            keep_firing_for = "2m"
            [route]
            receiver = "hook"
            "#,
        );
        let mut f = firing("flappy", "k", Severity::Critical);
        assert!(e.on_firing(&f, T0));
        assert_eq!(e.tick(T0).len(), 1);
        // Quiet for 6 min (> 5 m resolve_timeout, < 5 m + 2 m): still firing.
        assert!(e.tick(T0 + 360 * SEC).is_empty());
        assert!(!e.on_firing(&f, T0 + 361 * SEC), "same alert continues");
        assert!(e.tick(T0 + 362 * SEC).is_empty());
        f.rule_id = "short".into();
        f.labels.insert("resolve_timeout".into(), "30s".into());
        f.labels.insert("keep_firing_for".into(), "0s".into());
        let t1 = T0 + 400 * SEC;
        e.on_firing(&f, t1);
        assert_eq!(e.tick(t1).len(), 1);
        e.tick(t1 + 30 * SEC);
        let short = fingerprint("default", "short", "k");
        assert_eq!(e.state.alerts[&short].alert.status, AlertStatus::Resolved);
        // The resolved page waits for group_interval (5 m) after the first.
        let out = e.tick(t1 + 300 * SEC);
        assert!(out
            .iter()
            .any(|o| o.notification.status == AlertStatus::Resolved));
    }

    #[test]
    fn routes_split_groups_and_send_resolved_false_stays_quiet() {
        let mut e = engine(
            r#"
            [route]
            receiver = "all"
            send_resolved = false
            [[route.routes]]
            matchers = ["tags=~.*auth.*"]
            receiver = "sec"
            group_by = ["..."]
            continue = true
            "#,
        );
        e.on_firing(&firing("brute", "a", Severity::Critical), T0);
        e.on_firing(&firing("brute", "b", Severity::Critical), T0);
        let out = e.tick(T0);
        assert_eq!(to(&out, "sec").len(), 2, "one group per alert");
        assert_eq!(
            to(&out, "all").len(),
            0,
            "continue: the root is not a match"
        );
        let resolved = e.tick(T0 + 300 * SEC);
        assert!(resolved.is_empty(), "send_resolved = false");
    }

    #[test]
    fn receivers_with_send_resolved_false_get_no_resolved_page() {
        let mut e = engine(
            r#"
            [route]
            receiver = "quiet"
            [[receivers]]
            name = "quiet"
            kind = "webhook"
            url = "http://127.0.0.1:9/hook"
            send_resolved = false
            "#,
        );
        e.on_firing(&firing("brute", "k", Severity::Critical), T0);
        assert_eq!(e.tick(T0).len(), 1);
        assert!(e.tick(T0 + 600 * SEC).is_empty());
        assert!(
            e.list("default", false, T0 + 600 * SEC).is_empty(),
            "resolved"
        );
    }

    #[test]
    fn only_what_changed_is_dirty() {
        let mut e = engine(ONE_RECEIVER);
        for k in 0..100 {
            e.on_firing(&firing("scan", &format!("k{k}"), Severity::Warning), T0);
        }
        assert_eq!(e.state.dirty.alerts.len(), 100);
        e.state.dirty = Dirty::default();
        // A repeat of one alert of a hundred marks that alert alone.
        e.on_firing(&firing("scan", "k7", Severity::Warning), T0 + SEC);
        let fp = fingerprint("default", "scan", "k7");
        assert_eq!(e.state.dirty.alerts, BTreeSet::from([fp.clone()]));
        assert!(e.state.dirty.groups.is_empty());
        e.state.dirty = Dirty::default();
        // A tick with nothing due changes nothing.
        assert!(e.tick(T0 + SEC).is_empty());
        assert!(e.state.dirty.is_empty(), "{:?}", e.state.dirty);
        // The group's first page marks the group and its notified alerts.
        assert_eq!(e.tick(T0 + DEFAULT_GROUP_WAIT).len(), 1);
        assert_eq!(e.state.dirty.groups.len(), 1);
        assert_eq!(e.state.dirty.alerts.len(), 100);
        e.state.dirty = Dirty::default();
        // An ack marks its alert; resolution marks every resolved alert.
        e.ack("default", &fp, "ops", T0 + 20 * SEC).unwrap();
        assert_eq!(e.state.dirty.alerts, BTreeSet::from([fp]));
        e.state.dirty = Dirty::default();
        e.tick(T0 + 3600 * SEC);
        assert_eq!(e.state.dirty.alerts.len(), 100);
    }

    #[test]
    fn state_round_trips_so_a_restart_does_not_repage() {
        let mut e = engine(ONE_RECEIVER);
        e.on_firing(&firing("brute", "k", Severity::Critical), T0);
        assert_eq!(e.tick(T0).len(), 1);
        let saved = serde_json::to_vec(&e.state).unwrap();
        let config: AlertingConfig = toml::from_str(ONE_RECEIVER).unwrap();
        let mut again = Engine::new(
            &config,
            String::new(),
            serde_json::from_slice(&saved).unwrap(),
        );
        again.on_firing(&firing("brute", "k", Severity::Critical), T0 + SEC);
        assert!(again.tick(T0 + SEC).is_empty());
        assert_eq!(again.state.seq, e.state.seq);
    }
}
