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
//!
//! By responsibility: [`lifecycle`] (firing, resolving, acks, purge),
//! [`suppression`] (silences, inhibition), [`grouping`] (groups, pages,
//! escalation), [`views`] (what `alerts list` shows).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::AlertingConfig;
use super::model::{Alert, Notification};
use super::route::Routing;
use super::silence::Silence;
use grouping::Quiet;
use suppression::{inhibit_rules, InhibitRule};

mod grouping;
mod lifecycle;
mod suppression;
mod views;

pub use suppression::SilenceSpec;
pub use views::AlertView;

const SEC: i64 = 1_000_000_000;

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

impl Group {
    /// The group without its member sets, which the store keeps as rows
    /// of their own ([`Dirty::members`]).
    pub fn head(&self) -> Group {
        Group {
            key: self.key.clone(),
            route_id: self.route_id.clone(),
            tenant: self.tenant.clone(),
            labels: self.labels.clone(),
            members: BTreeSet::new(),
            created_at: self.created_at,
            group_wait: self.group_wait,
            last_flush_at: self.last_flush_at,
            last_sent: BTreeSet::new(),
            escalation_started: self.escalation_started,
            escalation_level: self.escalation_level,
        }
    }
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
    /// (group key, fingerprint) pairs whose membership or `last_sent`
    /// changed: a group's sets are rows of their own, so a storm's group
    /// of 10k members costs a row per member that joins, not the whole
    /// set per persist.
    pub members: BTreeSet<(String, String)>,
    /// Every row: after loading a legacy whole-state value.
    pub all: bool,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.alerts.is_empty()
            && self.groups.is_empty()
            && self.silences.is_empty()
            && self.members.is_empty()
    }

    /// Puts back what a failed persist took, so the next one retries it.
    pub fn merge(&mut self, other: Dirty) {
        self.alerts.extend(other.alerts);
        self.groups.extend(other.groups);
        self.silences.extend(other.silences);
        self.members.extend(other.members);
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
    /// The groups a tick may skip (`grouping.rs`).
    quiet: Quiet,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("no alert {0:?} in this tenant")]
    NotFound(String),
    #[error("{0:?} matches several alerts; give more of the id")]
    Ambiguous(String),
}

pub fn fingerprint(tenant: &str, rule_id: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, rule_id, key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Engine {
    pub fn new(config: &AlertingConfig, external_url: String, state: State) -> Engine {
        Engine {
            state,
            routing: Routing::compile(config),
            inhibit: inhibit_rules(config),
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
            quiet: Quiet::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grouping::DEFAULT_GROUP_WAIT;
    use super::*;
    use crate::alert::matcher::Matcher;
    use crate::alert::model::AlertStatus;
    use crate::detect::{Firing, Severity};

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
    fn a_new_critical_key_pages_within_half_a_minute_not_a_group_interval() {
        let mut e = engine(
            r#"
            [route]
            receiver = "hook"
            group_interval = "5m"
            repeat_interval = "4h"
        "#,
        );
        e.on_firing(&firing("takeover", "alice", Severity::Critical), T0);
        assert_eq!(e.tick(T0).len(), 1, "the first one at once");
        // A second account, 5 s later: paged 30 s after the first page.
        e.on_firing(&firing("takeover", "bob", Severity::Critical), T0 + 5 * SEC);
        assert!(e.tick(T0 + 5 * SEC).is_empty());
        assert!(e.tick(T0 + 29 * SEC).is_empty());
        let out = e.tick(T0 + 30 * SEC);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.alerts.len(), 2);
        // A storm of critical keys still pages the group twice a minute.
        let mut pages = 0;
        for k in 0..120 {
            let now = T0 + 31 * SEC + k * SEC;
            e.on_firing(
                &firing("takeover", &format!("user{k}"), Severity::Critical),
                now,
            );
            pages += e.tick(now).len();
        }
        assert_eq!(pages, 4, "120 keys over two minutes");
        // A warning group keeps its group interval.
        let t1 = T0 + 200 * SEC;
        let scan = |k: &str| firing("scan", k, Severity::Warning);
        e.on_firing(&scan("10.0.0.1"), t1);
        let first = e.tick(t1 + DEFAULT_GROUP_WAIT);
        assert!(first
            .iter()
            .any(|o| o.notification.group_labels["alertname"] == "scan"));
        e.on_firing(&scan("10.0.0.2"), t1 + 20 * SEC);
        let scan_pages = |out: Vec<Outgoing>| {
            out.iter()
                .filter(|o| o.notification.group_labels["alertname"] == "scan")
                .count()
        };
        assert_eq!(scan_pages(e.tick(t1 + 60 * SEC)), 0);
        assert_eq!(scan_pages(e.tick(t1 + DEFAULT_GROUP_WAIT + 300 * SEC)), 1);
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
    fn the_list_is_in_triage_order() {
        let mut e = engine("[route]\nreceiver = \"hook\"\n");
        e.on_firing(&firing("old-crit", "a", Severity::Critical), T0);
        e.on_firing(&firing("new-warn", "b", Severity::Warning), T0 + 10 * SEC);
        e.on_firing(&firing("newer-warn", "c", Severity::Warning), T0 + 20 * SEC);
        e.on_firing(
            &firing("acked-crit", "d", Severity::Critical),
            T0 + 30 * SEC,
        );
        e.ack(
            "default",
            &fingerprint("default", "acked-crit", "d"),
            "alice",
            T0 + 40 * SEC,
        )
        .expect("ack");
        let order: Vec<String> = e
            .list("default", true, T0 + 50 * SEC)
            .into_iter()
            .map(|v| v.rule_id)
            .collect();
        assert_eq!(order, ["old-crit", "newer-warn", "new-warn", "acked-crit"]);
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
        assert_eq!(to(&resolved, "l0")[0].escalation_level, 0);
        assert_eq!(
            to(&resolved, "l1")[0].escalation_level,
            1,
            "at the level it was paged at"
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

    /// Inhibition is worked out again when its source resolves, even if
    /// nothing else changed: the muted warning pages then.
    #[test]
    fn a_resolved_source_unmutes_its_target_at_once() {
        let mut e = engine(ONE_RECEIVER);
        let critical = firing("brute", "k", Severity::Critical);
        let warning = firing("slow", "k", Severity::Warning);
        e.on_firing(&critical, T0);
        let mut warning_pages = Vec::new();
        let mut resolved_at = None;
        for s in (0..1200).step_by(10) {
            let now = T0 + s * SEC;
            e.on_firing(&warning, now);
            for o in e.tick(now) {
                if o.notification.alerts.iter().any(|a| a.rule_id == "slow") {
                    warning_pages.push(now);
                }
            }
            let fp = fingerprint("default", "brute", "k");
            if resolved_at.is_none() && e.state.alerts[&fp].alert.status == AlertStatus::Resolved {
                resolved_at = Some(now);
            }
        }
        let resolved_at = resolved_at.expect("the critical alert resolves");
        assert_eq!(
            warning_pages.first(),
            Some(&resolved_at),
            "muted while the critical alert fired, paged when it resolved"
        );
    }

    /// A group waiting for its interval with every member acked still
    /// escalates at once when an unacked member joins: a join is only
    /// left for the next page when someone already has to act.
    #[test]
    fn an_unacked_join_escalates_a_waiting_group_at_once() {
        let mut e = engine(
            r#"
            [route]
            receiver = "l0"
            group_interval = "10m"
            repeat_interval = "1h"
            escalation = "std"
            [[escalation_policies]]
            name = "std"
            levels = [{ after = "5m", receivers = ["l1"] }]
            "#,
        );
        let a = firing("brute", "a", Severity::Critical);
        let b = firing("brute", "b", Severity::Critical);
        e.on_firing(&a, T0);
        e.on_firing(&b, T0);
        assert_eq!(to(&e.tick(T0), "l0").len(), 1);
        for key in ["a", "b"] {
            let fp = fingerprint("default", "brute", key);
            e.ack("default", &fp, "alice", T0 + 60 * SEC).expect("ack");
        }
        // `a` keeps firing, `b` resolves after 5 min: a page waits for the
        // group interval (10 min after the first).
        let mut escalated = Vec::new();
        for s in (60..540).step_by(30) {
            let now = T0 + s * SEC;
            e.on_firing(&a, now);
            if s == 420 {
                e.on_firing(&firing("brute", "c", Severity::Critical), now);
            }
            if !to(&e.tick(now), "l1").is_empty() {
                escalated.push(s);
            }
        }
        assert_eq!(escalated, [420], "escalated when the unacked alert joined");
    }

    /// A tick that skips quiet groups pages exactly like one that looks at
    /// every group, over a random life of alerts: joins, repeats,
    /// resolutions, acks, silences starting and ending later, inhibition
    /// (critical and warning alerts of one key), escalation levels.
    #[test]
    fn skipping_quiet_groups_pages_exactly_like_the_whole_walk() {
        skipping_and_whole_walk_agree("1m", "10m");
        // Repeats due before a pending resolution's page: an alert coming
        // back takes the resolution back, and the repeat goes out.
        skipping_and_whole_walk_agree("10m", "3m");
    }

    fn skipping_and_whole_walk_agree(group_interval: &str, repeat_interval: &str) {
        let config = format!(
            r#"
            [route]
            receiver = "l0"
            group_interval = "{group_interval}"
            repeat_interval = "{repeat_interval}"
            escalation = "std"
            [[route.routes]]
            matchers = ["alertname=~scan|probe"]
            receiver = "sec"
            group_by = ["..."]
            continue = true
            [[escalation_policies]]
            name = "std"
            levels = [{{ after = "5m", receivers = ["l1"] }}, {{ after = "15m", receivers = ["l2"] }}]
        "#
        );
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut skipping = engine(&config);
        let mut whole = engine(&config);
        whole.quiet.never_skip = true;
        // What the skipping engine marked dirty, persisted as the service
        // does: reloading it must give the state in memory.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::alert::store::Store::open(dir.path()).unwrap();
        let rules = ["scan", "probe", "brute", "ratio"];
        let severities = [Severity::Critical, Severity::Warning, Severity::Info];
        let mut now = T0;
        let mut pages = 0;
        for step in 0..4000 {
            now += (next(40) as i64 + 1) * SEC;
            match next(100) {
                0..=59 => {
                    let f = firing(
                        rules[next(4) as usize],
                        &format!("10.0.0.{}", next(25)),
                        severities[next(3) as usize],
                    );
                    assert_eq!(skipping.on_firing(&f, now), whole.on_firing(&f, now));
                }
                60..=64 => {
                    let fp = match skipping.state.alerts.keys().nth(next(50) as usize) {
                        Some(fp) => fp.clone(),
                        None => continue,
                    };
                    assert_eq!(
                        skipping.ack("default", &fp, "alice", now),
                        whole.ack("default", &fp, "alice", now)
                    );
                }
                65..=66 => {
                    let matcher = format!("key=10.0.0.{}", next(25));
                    let starts = now + next(3) as i64 * 300 * SEC;
                    let ends = starts + (next(20) as i64 + 1) * 60 * SEC;
                    let spec = || spec(vec![Matcher::parse(&matcher).unwrap()], starts, ends);
                    let id = skipping.add_silence("default", spec(), now).id;
                    assert_eq!(whole.add_silence("default", spec(), now).id, id);
                }
                67 => {
                    if let Some(id) = skipping.state.silences.keys().next().cloned() {
                        assert_eq!(
                            skipping.expire_silence("default", &id, "bob", now),
                            whole.expire_silence("default", &id, "bob", now)
                        );
                    }
                }
                _ => {
                    let a = skipping.tick(now);
                    let b = whole.tick(now);
                    assert_eq!(format!("{a:?}"), format!("{b:?}"), "step {step}");
                    pages += a.len();
                    assert_eq!(
                        serde_json::to_string(&skipping.state).unwrap(),
                        serde_json::to_string(&whole.state).unwrap(),
                        "step {step}"
                    );
                    store.commit(Some(&mut skipping.state), &[], &[]).unwrap();
                    if step % 50 == 0 {
                        assert_eq!(
                            serde_json::to_string(&store.load_state().unwrap()).unwrap(),
                            serde_json::to_string(&skipping.state).unwrap(),
                            "persisted at step {step}"
                        );
                    }
                }
            }
        }
        assert!(
            pages > 100,
            "only {pages} pages: the scenario pages too little to compare"
        );
        let looked_at = whole.quiet.skipped;
        assert_eq!(looked_at, 0, "the whole walk skipped a group");
        assert!(
            skipping.quiet.skipped > 1000,
            "only {} groups skipped",
            skipping.quiet.skipped
        );
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
