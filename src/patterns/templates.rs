//! Pattern templates by id, for readers outside the indexer (the API's
//! pattern list): the miner publishes a pattern's template when it opens
//! the pattern and when a merge changes it.

use std::collections::HashMap;
use std::sync::RwLock;

/// Templates kept per tenant; beyond, new patterns are listed by id only.
pub const MAX_PER_TENANT: usize = 100_000;

/// Tenant -> pattern id (as printed) -> template.
#[derive(Debug, Default)]
pub struct PatternTemplates {
    tenants: RwLock<HashMap<String, HashMap<String, String>>>,
}

impl PatternTemplates {
    pub fn set(&self, tenant: &str, id: String, template: String) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let table = match tenants.get_mut(tenant) {
            Some(table) => table,
            None => tenants.entry(tenant.to_string()).or_default(),
        };
        if table.len() >= MAX_PER_TENANT && !table.contains_key(&id) {
            return;
        }
        table.insert(id, template);
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<String> {
        self.tenants.read().ok()?.get(tenant)?.get(id).cloned()
    }

    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.remove(tenant);
        }
    }
}
