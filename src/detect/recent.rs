//! The most recent firings of a live engine, kept until the alert stage
//! (routing, paging) consumes them. Bounded: the oldest are dropped.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::Firing;

pub struct RecentFirings {
    capacity: usize,
    firings: Mutex<VecDeque<Firing>>,
}

impl RecentFirings {
    pub fn new(capacity: usize) -> Self {
        RecentFirings {
            capacity: capacity.max(1),
            firings: Mutex::new(VecDeque::new()),
        }
    }

    pub fn push(&self, firing: Firing) {
        if let Ok(mut firings) = self.firings.lock() {
            if firings.len() == self.capacity {
                firings.pop_front();
            }
            firings.push_back(firing);
        }
    }

    /// Drops `tenant`'s firings (a purge: they quote its lines).
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut firings) = self.firings.lock() {
            firings.retain(|f| f.tenant != tenant);
        }
    }

    /// The newest `limit` firings of `tenant`, newest first.
    pub fn of_tenant(&self, tenant: &str, limit: usize) -> Vec<Firing> {
        let Ok(firings) = self.firings.lock() else {
            return Vec::new();
        };
        firings
            .iter()
            .rev()
            .filter(|f| f.tenant == tenant)
            .take(limit)
            .cloned()
            .collect()
    }
}
