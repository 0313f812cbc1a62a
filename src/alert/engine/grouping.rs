//! Groups and pages: each route that takes an alert puts it into a group;
//! a group pages when alerts join or resolve (after `group_wait`, then
//! `group_interval`), repeats every `repeat_interval` while unacknowledged,
//! and escalates level by level.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::suppression::SourceIndex;
use super::{Engine, Group, Outgoing, SEC};
use crate::alert::model::{Alert, AlertStatus, Notification};
use crate::detect::Severity;

/// group_wait for a non-critical group when the route sets none: short
/// enough to page quickly, long enough to collect a burst's siblings.
pub(super) const DEFAULT_GROUP_WAIT: i64 = 10 * SEC;

/// A new critical alert in a group that paged already waits at most this
/// long, not `group_interval` (5 min): a second compromised account pages
/// within seconds, and a storm of critical keys still pages a group at
/// most twice a minute. Routes that set their own `group_wait` keep their
/// timing.
pub(super) const CRITICAL_REGROUP: i64 = 30 * SEC;

/// The groups a tick may skip. A group's tick reads its members' status,
/// acks and suppression, its own timers and the clock; once looked at, it
/// has nothing to do until its next timer, unless one of those inputs
/// changes first: a member joins, resolves, is acked or forgotten, its
/// inhibition changes, a silence is added, expired, starts or ends. So
/// under a storm of ten thousand alerts a tick costs the groups that
/// changed (the whole state walked each tick was the alert thread's time,
/// docs/ingest-profile.md). Not persisted: after a restart every group is
/// looked at once.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    /// Group key → the time from which its tick may act again, and
    /// whether a new member can wait for it. A group missing here is
    /// looked at by the next tick.
    until: HashMap<String, Quiescence>,
    /// Fingerprint → the groups it joined (a superset: a key stays after
    /// the alert left the group, which only costs a look).
    member_of: HashMap<String, Vec<String>>,
    /// Whether `member_of` holds the groups of the state loaded.
    built: bool,
    /// The next tick looks at every group.
    every: bool,
    /// When a silence next starts or ends.
    silence_edge: i64,
    /// The alerts inhibition muted at the last tick.
    inhibited: HashSet<String>,
    /// The inhibition sources `inhibited` was worked out with.
    sources: SourceIndex,
    /// A source opened or resolved, or anything else changed that makes
    /// `sources` and `inhibited` be worked out again over every alert.
    sources_stale: bool,
    /// Alerts that are no inhibition source, opened or resolved since the
    /// last tick: each is checked against `sources` alone (a storm of
    /// warnings costs a lookup each, not a walk of every alert).
    opened: Vec<String>,
    resolved: Vec<String>,
    /// No alert resolves or expires before this (a lower bound): the tick
    /// walks the alerts from then on only.
    pub(super) alerts_edge: i64,
    /// Tests compare the skipping tick with the whole walk.
    #[cfg(test)]
    pub(super) never_skip: bool,
    /// Groups skipped so far.
    #[cfg(test)]
    pub(super) skipped: usize,
}

#[derive(Debug, Clone, Copy)]
struct Quiescence {
    until: i64,
    joins_wait: bool,
}

impl Quiet {
    pub(super) fn touch_all(&mut self) {
        self.every = true;
        self.sources_stale = true;
    }

    /// An alert (an inhibition `source` or not) opened or reopened at
    /// `now`: it resolves `resolve_after` later at the earliest.
    pub(super) fn opened(&mut self, fingerprint: &str, source: bool, now: i64, resolve_after: i64) {
        if source {
            self.sources_stale = true;
        } else {
            self.opened.push(fingerprint.to_string());
        }
        self.fired(now, resolve_after);
    }

    /// An alert resolved: its groups look again, and inhibition lets it go
    /// (or, a source, frees its targets).
    pub(super) fn resolved(&mut self, fingerprint: &str, source: bool) {
        if source {
            self.sources_stale = true;
        } else {
            self.resolved.push(fingerprint.to_string());
        }
        self.touch_alert(fingerprint);
    }

    /// An alert fired at `now`: it resolves `resolve_after` later at the
    /// earliest (a repeat may come with a clock gone back).
    pub(super) fn fired(&mut self, now: i64, resolve_after: i64) {
        self.alerts_edge = self.alerts_edge.min(now.saturating_add(resolve_after));
    }

    pub(super) fn touch_alert(&mut self, fingerprint: &str) {
        for key in self.member_of.get(fingerprint).into_iter().flatten() {
            self.until.remove(key);
        }
    }

    pub(super) fn forget_alert(&mut self, fingerprint: &str) {
        self.touch_alert(fingerprint);
        self.member_of.remove(fingerprint);
    }

    /// `fingerprint` (re)opened into group `key`. Only a first-time
    /// member can wait: one that comes back (it resolved, or left) may
    /// take back a pending resolution, which changes what is due.
    /// `critical`: the member may shorten the group's wait
    /// ([`CRITICAL_REGROUP`]), so it cannot wait for the timer set before.
    fn joined(&mut self, fingerprint: &str, key: &str, critical: bool) {
        let keys = self.member_of.entry(fingerprint.to_string()).or_default();
        let first_time = !keys.iter().any(|k| k == key);
        if first_time {
            keys.push(key.to_string());
        }
        if critical || !(first_time && self.until.get(key).is_some_and(|q| q.joins_wait)) {
            self.until.remove(key);
        }
    }
}

impl Engine {
    /// Puts a new alert into the group of every route that takes it.
    pub(super) fn join_groups(&mut self, alert: &Alert, fp: &str, now: i64) {
        for node in self.routing.route(&alert.labels) {
            let (key, group_labels) = node.group_of(&alert.tenant, &alert.labels);
            let created = !self.state.groups.contains_key(&key);
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
            if group.members.insert(fp.to_string()) {
                self.state
                    .dirty
                    .members
                    .insert((group.key.clone(), fp.to_string()));
            }
            if created {
                self.state.dirty.groups.insert(group.key.clone());
            }
            let critical = alert.severity == Severity::Critical && node.group_wait.is_none();
            self.quiet.joined(fp, &group.key, critical);
        }
    }

    /// The groups this tick looks at: those whose inputs changed or whose
    /// timer is due.
    fn groups_to_tick(&mut self, now: i64) -> Vec<String> {
        let silence_edge = self.next_silence_edge(now);
        let muted_changed = self.update_inhibition();
        let quiet = &mut self.quiet;
        if !quiet.built {
            for (key, group) in &self.state.groups {
                for fp in &group.members {
                    quiet
                        .member_of
                        .entry(fp.clone())
                        .or_default()
                        .push(key.clone());
                }
            }
            quiet.built = true;
            quiet.every = true;
        }
        for fp in &muted_changed {
            quiet.touch_alert(fp);
        }
        if now >= quiet.silence_edge {
            quiet.every = true;
        }
        #[cfg(test)]
        if quiet.never_skip {
            quiet.every = true;
        }
        let every = std::mem::take(&mut quiet.every);
        let keys: Vec<String> = self
            .state
            .groups
            .keys()
            .filter(|key| every || quiet.until.get(*key).is_none_or(|q| now >= q.until))
            .cloned()
            .collect();
        #[cfg(test)]
        {
            quiet.skipped += self.state.groups.len() - keys.len();
        }
        quiet.silence_edge = silence_edge;
        keys
    }

    /// Brings `quiet.inhibited` up to date: over every alert when a
    /// source changed, else for the alerts opened or resolved since.
    /// Returns the alerts whose inhibition changed.
    fn update_inhibition(&mut self) -> Vec<String> {
        #[cfg(test)]
        if self.quiet.never_skip {
            self.quiet.sources_stale = true;
        }
        if self.quiet.sources_stale || !self.quiet.built {
            self.quiet.sources = self.source_index();
            let inhibited = self.inhibited_set(&self.quiet.sources);
            let changed = inhibited
                .symmetric_difference(&self.quiet.inhibited)
                .cloned()
                .collect();
            let quiet = &mut self.quiet;
            quiet.inhibited = inhibited;
            quiet.sources_stale = false;
            quiet.opened.clear();
            quiet.resolved.clear();
            return changed;
        }
        let mut changed = Vec::new();
        for fp in std::mem::take(&mut self.quiet.resolved) {
            if self.quiet.inhibited.remove(&fp) {
                changed.push(fp);
            }
        }
        for fp in std::mem::take(&mut self.quiet.opened) {
            let muted = self.state.alerts.get(&fp).is_some_and(|e| {
                e.alert.status == AlertStatus::Firing
                    && self.inhibited_by(&self.quiet.sources, &e.alert)
            });
            if muted && self.quiet.inhibited.insert(fp.clone()) {
                changed.push(fp);
            }
        }
        changed
    }

    /// The pages now due, group by group.
    pub(super) fn page_groups(&mut self, now: i64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let keys = self.groups_to_tick(now);
        // A group's tick changes no alert's status or labels.
        let inhibited = std::mem::take(&mut self.quiet.inhibited);
        for key in keys {
            self.tick_group(&key, now, &inhibited, &mut out);
        }
        self.quiet.inhibited = inhibited;
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
        let new_critical = node.default_group_wait
            && new_firing.iter().any(|fp| {
                self.state
                    .alerts
                    .get(*fp)
                    .is_some_and(|e| e.alert.severity == Severity::Critical)
            });
        let interval = if new_critical {
            node.group_interval.min(CRITICAL_REGROUP)
        } else {
            node.group_interval
        };
        let due = if changed {
            match group.last_flush_at {
                None => now >= group.created_at + group.group_wait,
                Some(last) => now >= last + interval,
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
            // Each receiver with the level it joined at: a resolution (or a
            // group page) reaching an escalated manager says level 1, as the
            // escalation page did.
            let mut leveled: Vec<(String, u32)> =
                node.receiver.iter().map(|r| (r.clone(), 0)).collect();
            for (level, (_, level_receivers)) in node
                .escalation
                .iter()
                .take(group.escalation_level as usize)
                .enumerate()
            {
                leveled.extend(
                    level_receivers
                        .iter()
                        .map(|r| (r.clone(), level as u32 + 1)),
                );
            }
            let mut seen = BTreeSet::new();
            leveled.retain(|(r, _)| seen.insert(r.clone()));
            if status == AlertStatus::Resolved {
                leveled.retain(|(r, _)| !self.no_resolved.contains(r));
            }
            let receivers: Vec<String> = leveled.iter().map(|(r, _)| r.clone()).collect();
            if status == AlertStatus::Firing || node.send_resolved {
                let alerts: Vec<Alert> = active_firing
                    .iter()
                    .chain(newly_resolved.iter())
                    .filter_map(|fp| self.state.alerts.get(fp))
                    .map(|e| e.alert.clone())
                    .collect();
                for (receiver, level) in &leveled {
                    out.push(Outgoing {
                        notification: self.notification(
                            &group,
                            receiver,
                            status,
                            alerts.clone(),
                            *level,
                            now,
                        ),
                        fired_at,
                    });
                }
                self.mark_notified(&alerts, &receivers);
            }
            group.last_flush_at = Some(now);
            self.state.dirty.members.extend(
                group
                    .last_sent
                    .symmetric_difference(&active_firing)
                    .map(|fp| (key.to_string(), fp.clone())),
            );
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

        // Nothing to do before the next timer, unless an input changes.
        let mut quiet_until = i64::MAX;
        if changed && !due {
            quiet_until = match group.last_flush_at {
                None => group.created_at.saturating_add(group.group_wait),
                Some(last) => last.saturating_add(interval),
            };
        } else if let (true, Some(last)) = (unacked, group.last_flush_at) {
            quiet_until = last.saturating_add(node.repeat_interval);
        }
        if let (Some(started), true) = (
            group.escalation_started,
            unacked && !active_firing.is_empty(),
        ) {
            if let Some((after, _)) = node.escalation.get(group.escalation_level as usize) {
                quiet_until = quiet_until.min(started.saturating_add(*after));
            }
        }
        // A page already waits for its group interval, and someone still
        // has to act: a new member changes neither (it goes out with that
        // page), so a storm's big group is not walked per new member.
        let joins_wait = changed && !due && (unacked || group.escalation_started.is_none());
        self.quiet.until.insert(
            key.to_string(),
            Quiescence {
                until: quiet_until,
                joins_wait,
            },
        );

        // Members that resolved and were told (or never paged) leave the group.
        let dirty_members = &mut self.state.dirty.members;
        group.members.retain(|fp| {
            let stays = self.state.alerts.get(fp).is_some_and(|e| {
                e.alert.status == AlertStatus::Firing || group.last_sent.contains(fp)
            });
            if !stays {
                dirty_members.insert((key.to_string(), fp.clone()));
            }
            stays
        });
        if group.members.is_empty() && group.last_sent.is_empty() {
            self.state.dirty.groups.insert(key.to_string());
            self.quiet.until.remove(key);
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
    /// The route sets no `group_wait`: critical alerts page at once.
    default_group_wait: bool,
    group_interval: i64,
    repeat_interval: i64,
    send_resolved: bool,
    escalation: Vec<(i64, Vec<String>)>,
}

impl RouteTiming {
    fn of(node: &crate::alert::route::RouteNode) -> RouteTiming {
        RouteTiming {
            receiver: node.receiver.clone(),
            default_group_wait: node.group_wait.is_none(),
            group_interval: node.group_interval,
            repeat_interval: node.repeat_interval,
            send_resolved: node.send_resolved,
            escalation: node.escalation.clone(),
        }
    }
}
