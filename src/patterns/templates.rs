//! Pattern templates by id, for readers outside the indexer (the API's
//! pattern list): the miner publishes a pattern's template when it opens
//! the pattern and when a merge changes it.

use std::sync::RwLock;

use hashbrown::HashMap;

/// Templates kept per tenant; beyond, new patterns are listed by id only.
pub const MAX_PER_TENANT: usize = 100_000;

/// Tenant -> pattern id -> template. Keyed by the id's number, not its
/// printed form: a stream of new statements (a scanner's random paths)
/// publishes a template for most of its lines, and formatting the id and
/// hashing it as a string was a tenth of the miner's time.
#[derive(Debug, Default)]
pub struct PatternTemplates {
    tenants: RwLock<HashMap<String, HashMap<u64, Box<str>>>>,
}

/// The number behind a printed id (12 hex digits, `Cluster::id_hex`).
fn key_of_printed(id: &str) -> Option<u64> {
    (id.len() == 12)
        .then(|| u64::from_str_radix(id, 16).ok())
        .flatten()
}

impl PatternTemplates {
    /// Records the template of pattern `id` (the miner's full id), built
    /// by `template` only when it is kept.
    pub fn set(&self, tenant: &str, id: u64, template: impl FnOnce() -> String) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let table = match tenants.get_mut(tenant) {
            Some(table) => table,
            None => tenants.entry_ref(tenant).or_default(),
        };
        let key = id >> 16;
        if table.len() >= MAX_PER_TENANT && !table.contains_key(&key) {
            return;
        }
        table.insert(key, template().into_boxed_str());
    }

    /// The template of the pattern printed as `id`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<String> {
        let key = key_of_printed(id)?;
        self.tenants
            .read()
            .ok()?
            .get(tenant)?
            .get(&key)
            .map(|t| t.to_string())
    }

    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.remove(tenant);
        }
    }
}
