//! What keeps an alert out of pages: silences (by label matchers, for a
//! time) and inhibition (a critical alert mutes the warnings of its key).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Engine, SEC};
use crate::alert::config::{AlertingConfig, InhibitRuleConfig};
use crate::alert::matcher::{all_match, Matcher};
use crate::alert::model::{Alert, AlertStatus};
use crate::alert::silence::{Silence, SilenceState};

/// Ended silences stay listed this long.
const SILENCE_RETENTION: i64 = 86_400 * SEC;

/// A silence as the API or CLI asks for it.
#[derive(Debug, Clone)]
pub struct SilenceSpec {
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub author: String,
    pub comment: String,
}

pub(super) struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

/// The configured inhibition rules, or the default one.
pub(super) fn inhibit_rules(config: &AlertingConfig) -> Vec<InhibitRule> {
    match &config.inhibit_rules {
        None => default_inhibit_rules(),
        Some(rules) => rules
            .iter()
            .map(|r: &InhibitRuleConfig| InhibitRule {
                source: r.source_matchers.clone(),
                target: r.target_matchers.clone(),
                equal: r.equal.clone(),
            })
            .collect(),
    }
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
    pub(super) fn silenced_by(&self, alert: &Alert, now: i64) -> Vec<String> {
        self.state
            .silences
            .values()
            .filter(|s| s.mutes(&alert.tenant, &alert.labels, now))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Fingerprints of the firing alerts an inhibition rule mutes with
    /// `sources` ([`Engine::source_index`]): one lookup per target (a
    /// storm of thousands of alerts with some critical among them once
    /// made it sources × targets string compares, 20 times a second).
    pub(super) fn inhibited_set(&self, sources: &SourceIndex) -> HashSet<String> {
        self.state
            .alerts
            .values()
            .map(|e| &e.alert)
            .filter(|t| t.status == AlertStatus::Firing && self.inhibited_by(sources, t))
            .map(|t| t.fingerprint.clone())
            .collect()
    }

    /// Every rule's firing sources by tenant and `equal` label values, and
    /// whether each is itself a target of the rule.
    pub(super) fn source_index(&self) -> SourceIndex {
        self.inhibit
            .iter()
            .map(|rule| {
                let mut sources: HashMap<String, Vec<(String, bool)>> = HashMap::new();
                for a in self.state.alerts.values().map(|e| &e.alert) {
                    if a.status != AlertStatus::Firing || !all_match(&rule.source, &a.labels) {
                        continue;
                    }
                    let Some(key) = source_key(&rule.equal, a) else {
                        continue;
                    };
                    sources
                        .entry(key)
                        .or_default()
                        .push((a.fingerprint.clone(), all_match(&rule.target, &a.labels)));
                }
                sources
            })
            .collect()
    }

    /// Whether an inhibition rule mutes firing alert `t` with `sources`.
    pub(super) fn inhibited_by(&self, sources: &SourceIndex, t: &Alert) -> bool {
        self.inhibit.iter().zip(sources).any(|(rule, sources)| {
            if sources.is_empty() || !all_match(&rule.target, &t.labels) {
                return false;
            }
            let Some(candidates) = source_key(&rule.equal, t).and_then(|k| sources.get(&k)) else {
                return false;
            };
            // A source that is itself a target of a source matching
            // the target would mute in both directions: skip it.
            let target_is_source = all_match(&rule.source, &t.labels);
            candidates.iter().any(|(fingerprint, source_is_target)| {
                *fingerprint != t.fingerprint && !(target_is_source && *source_is_target)
            })
        })
    }

    pub(super) fn suppressed(&self, alert: &Alert, now: i64, inhibited: &HashSet<String>) -> bool {
        inhibited.contains(&alert.fingerprint)
            || self
                .state
                .silences
                .values()
                .any(|s| s.mutes(&alert.tenant, &alert.labels, now))
    }

    /// Ended silences are listed for a day, then go.
    pub(super) fn forget_ended_silences(&mut self, now: i64) {
        let dirty = &mut self.state.dirty;
        self.state.silences.retain(|id, s| {
            let keep = now - s.ends_at < SILENCE_RETENTION;
            if !keep {
                dirty.silences.insert(id.clone());
            }
            keep
        });
    }

    /// The next time after `now` a silence starts or ends: every group
    /// is looked at then.
    pub(super) fn next_silence_edge(&self, now: i64) -> i64 {
        self.state
            .silences
            .values()
            .flat_map(|s| [s.starts_at, s.ends_at])
            .filter(|&t| t > now)
            .min()
            .unwrap_or(i64::MAX)
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
        self.quiet.touch_all();
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
                    self.quiet.touch_all();
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
}

/// Whether an alert with `labels` is the source of one of `rules`: its
/// opening or resolving may mute or free others.
pub(super) fn is_source(rules: &[InhibitRule], labels: &BTreeMap<String, String>) -> bool {
    rules.iter().any(|r| all_match(&r.source, labels))
}

/// Per inhibition rule: the key of [`source_key`] → the firing sources
/// with it, and whether each is itself a target of the rule.
pub(super) type SourceIndex = Vec<HashMap<String, Vec<(String, bool)>>>;

/// An alert's tenant and the values of an inhibition rule's `equal`
/// labels, as one key; `None` when one is missing or empty (such an alert
/// neither mutes nor is muted).
fn source_key(equal: &[String], alert: &Alert) -> Option<String> {
    use std::fmt::Write;
    let mut key = String::new();
    // Each part prefixed by its length: no two lists make one key.
    let _ = write!(key, "{}:{}", alert.tenant.len(), alert.tenant);
    for label in equal {
        let value = alert.labels.get(label).filter(|v| !v.is_empty())?;
        let _ = write!(key, "{}:{}", value.len(), value);
    }
    Some(key)
}
