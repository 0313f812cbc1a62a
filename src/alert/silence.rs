//! Silences: "do not page about alerts whose labels match, from..until".
//! Tenant-scoped; stored with the rest of the alert state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matcher::{all_match, Matcher};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub tenant: String,
    pub matchers: Vec<Matcher>,
    /// Unix nanoseconds.
    pub starts_at: i64,
    pub ends_at: i64,
    pub author: String,
    pub comment: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now: i64) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether this silence mutes an alert of `tenant` with `labels` now.
    pub fn mutes(&self, tenant: &str, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.tenant == tenant
            && self.state(now) == SilenceState::Active
            && !self.matchers.is_empty()
            && all_match(&self.matchers, labels)
    }
}
