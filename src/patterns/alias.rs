//! Old ids of merged patterns, for queries: a line keeps the pattern id it
//! was indexed with, and when that pattern later merges into another, a
//! query for the survivor's id must find it too. The indexer fills this
//! table as patterns merge; searches expand `pattern:<id>` with it.

use std::collections::HashMap;
use std::sync::RwLock;

/// Survivor ids with aliases kept per tenant; beyond, new merges are not
/// expanded (their older lines are found by their own ids only).
pub const MAX_ENTRIES_PER_TENANT: usize = 100_000;

/// Aliases kept per pattern (the newest), over every source of the tenant:
/// a miner keeps 64 per pattern, and several sources add theirs.
pub const MAX_ALIASES_PER_PATTERN: usize = 256;

/// Tenant -> pattern id (as printed) -> the ids merged into it.
#[derive(Debug, Default)]
pub struct PatternAliases {
    tenants: RwLock<HashMap<String, HashMap<String, Vec<String>>>>,
}

impl PatternAliases {
    /// Records that `aliases` are now part of pattern `id` of `tenant`.
    /// Added to those recorded before: one statement has one id in every
    /// source of the tenant (ids come from the templates), and each
    /// source's miner merged its own early patterns into it.
    pub fn set(&self, tenant: &str, id: &str, aliases: Vec<String>) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let table = tenants.entry(tenant.to_string()).or_default();
        if table.len() >= MAX_ENTRIES_PER_TENANT && !table.contains_key(id) {
            return;
        }
        let mut all = table.remove(id).unwrap_or_default();
        for alias in aliases {
            // An alias that had aliases of its own (a survivor of an
            // earlier merge): they are this pattern's now.
            if let Some(older) = table.remove(&alias) {
                all.extend(older);
            }
            all.push(alias);
        }
        let mut seen = std::collections::HashSet::with_capacity(all.len());
        // The newest occurrence of each id wins its place.
        let mut kept: Vec<String> = all
            .into_iter()
            .rev()
            .filter(|a| a != id && seen.insert(a.clone()))
            .collect();
        kept.truncate(MAX_ALIASES_PER_PATTERN);
        kept.reverse();
        table.insert(id.to_string(), kept);
    }

    /// The ids merged into pattern `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Vec<String>> {
        self.tenants.read().ok()?.get(tenant)?.get(id).cloned()
    }

    /// Every alias of `tenant` with the id it merged into.
    pub fn survivors(&self, tenant: &str) -> HashMap<String, String> {
        let Ok(tenants) = self.tenants.read() else {
            return HashMap::new();
        };
        tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.iter())
            .flat_map(|(id, aliases)| aliases.iter().map(move |a| (a.clone(), id.clone())))
            .collect()
    }

    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_chain_and_tenants_stay_apart() {
        let a = PatternAliases::default();
        a.set("t", "b", vec!["c".into()]);
        a.set("t", "a", vec!["b".into(), "c".into()]);
        assert_eq!(
            a.get("t", "a"),
            Some(vec!["b".to_string(), "c".to_string()])
        );
        assert_eq!(a.get("t", "b"), None, "b merged into a");
        assert_eq!(a.get("u", "a"), None);
        // Another source's miner merged other early patterns into `a`:
        // all of them are `a`'s.
        a.set("t", "a", vec!["d".into(), "b".into()]);
        assert_eq!(
            a.get("t", "a"),
            Some(vec!["c".to_string(), "d".to_string(), "b".to_string()])
        );
        a.forget_tenant("t");
        assert_eq!(a.get("t", "a"), None);
    }
}
