//! An alert's life: a firing opens or repeats it, silence resolves it,
//! retention forgets it; acks, lookups and a tenant purge.

use std::collections::{BTreeMap, BTreeSet};

use super::suppression::is_source;
use super::{fingerprint, AlertEntry, Engine, LookupError, Outgoing, State, SEC};
use crate::alert::model::{Alert, AlertStatus};
use crate::detect::Firing;

impl Engine {
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
                self.quiet.fired(now, entry.resolve_after);
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
        if self.state.alerts.contains_key(&fp) {
            // Reopened, maybe with other labels: every group that holds it
            // looks again, not only those its labels route to now.
            self.quiet.touch_alert(&fp);
        }
        self.join_groups(&alert, &fp, now);
        let source = is_source(&self.inhibit, &alert.labels);
        self.quiet.opened(&fp, source, now, resolve_after);
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

    /// Advances time: resolves, expires, and returns the pages now due.
    pub fn tick(&mut self, now: i64) -> Vec<Outgoing> {
        #[cfg(test)]
        if self.quiet.never_skip {
            self.quiet.alerts_edge = i64::MIN;
        }
        if now >= self.quiet.alerts_edge {
            self.resolve_and_expire(now);
        }
        self.forget_ended_silences(now);
        self.page_groups(now)
    }

    /// Resolves the alerts quiet for long enough and forgets those resolved
    /// past retention; works out when that next happens at the earliest.
    fn resolve_and_expire(&mut self, now: i64) {
        let retention = self.resolved_retention;
        let mut edge = i64::MAX;
        let dirty = &mut self.state.dirty;
        for (fp, entry) in self.state.alerts.iter_mut() {
            let a = &mut entry.alert;
            if a.status == AlertStatus::Firing && now - a.last_fired_at >= entry.resolve_after {
                a.status = AlertStatus::Resolved;
                a.ends_at = Some(now);
                dirty.alerts.insert(fp.clone());
                let source = is_source(&self.inhibit, &a.labels);
                self.quiet.resolved(fp, source);
                tracing::info!(fingerprint = %a.fingerprint, rule = %a.rule_id, key = %a.key, "alert resolved");
            }
        }
        let quiet = &mut self.quiet;
        self.state.alerts.retain(|fp, e| {
            let keep = e.alert.status == AlertStatus::Firing
                || e.alert.ends_at.is_some_and(|end| now - end < retention);
            if !keep {
                dirty.alerts.insert(fp.clone());
                quiet.forget_alert(fp);
            } else if e.alert.status == AlertStatus::Firing {
                edge = edge.min(e.alert.last_fired_at.saturating_add(e.resolve_after));
            } else if let Some(end) = e.alert.ends_at {
                edge = edge.min(end.saturating_add(retention));
            }
            keep
        });
        self.quiet.alerts_edge = edge;
    }

    /// Drops every alert, group and silence of `tenant` (a purge):
    /// (alerts, groups, silences) removed.
    pub fn forget_tenant(&mut self, tenant: &str) -> (usize, usize, usize) {
        self.quiet.touch_all();
        self.state.forget_tenant(tenant)
    }

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
                self.quiet.touch_alert(&fp);
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
                    self.quiet.touch_alert(&fp);
                    self.state.dirty.alerts.insert(fp);
                    n += 1;
                }
            }
        }
        tracing::info!(target: "nightowl::audit", group = group_key, tenant, by, alerts = n, "group acknowledged");
        n
    }
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
