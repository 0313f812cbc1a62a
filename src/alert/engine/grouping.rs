//! Groups and pages: each route that takes an alert puts it into a group;
//! a group pages when alerts join or resolve (after `group_wait`, then
//! `group_interval`), repeats every `repeat_interval` while unacknowledged,
//! and escalates level by level.

use std::collections::{BTreeSet, HashSet};

use super::{Engine, Group, Outgoing, SEC};
use crate::alert::model::{Alert, AlertStatus, Notification};
use crate::detect::Severity;

/// group_wait for a non-critical group when the route sets none: short
/// enough to page quickly, long enough to collect a burst's siblings.
pub(super) const DEFAULT_GROUP_WAIT: i64 = 10 * SEC;

impl Engine {
    /// Puts a new alert into the group of every route that takes it.
    pub(super) fn join_groups(&mut self, alert: &Alert, fp: &str, now: i64) {
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
            group.members.insert(fp.to_string());
            self.state.dirty.groups.insert(group.key.clone());
        }
    }

    /// The pages now due, group by group.
    pub(super) fn page_groups(&mut self, now: i64) -> Vec<Outgoing> {
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
    fn of(node: &crate::alert::route::RouteNode) -> RouteTiming {
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
