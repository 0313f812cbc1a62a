//! API and agent tokens: who is calling, for which tenant, with which role.
//!
//! Tokens look like `nwl_<id>_<secret>`. Only a salted SHA-256 of the secret
//! is stored (`DATA_DIR/tokens.json`); the id lets a lookup hash once instead
//! of trying every entry. The secret has 256 bits of entropy, so a slow
//! password hash would add latency to every request without adding safety.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::transport::tls::write_file;

pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    RuleEditor,
    Admin,
    Agent,
}

impl Role {
    /// Whether a credential of this role may act as `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::RuleEditor => matches!(needed, Role::RuleEditor | Role::Viewer),
            other => other == needed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub tenant: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    id: String,
    tenant: String,
    role: Role,
    salt: String,
    sha256: String,
    created_unix: i64,
}

pub struct TokenStore {
    path: PathBuf,
    entries: RwLock<HashMap<String, TokenEntry>>,
}

impl TokenStore {
    /// Opens `DATA_DIR/tokens.json`. On first start also creates an admin
    /// token for the default tenant in `DATA_DIR/admin.token` (mode 0600) and
    /// returns its path.
    pub fn open_or_init(data_dir: &Path) -> Result<(TokenStore, Option<PathBuf>)> {
        let path = data_dir.join("tokens.json");
        let entries: Vec<TokenEntry> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let store = TokenStore {
            path,
            entries: RwLock::new(entries.into_iter().map(|e| (e.id.clone(), e)).collect()),
        };
        let admin_path = data_dir.join("admin.token");
        if store.is_empty() {
            let token = store.create(DEFAULT_TENANT, Role::Admin)?;
            write_file(&admin_path, format!("{token}\n").as_bytes(), 0o600)?;
            return Ok((store, Some(admin_path)));
        }
        Ok((store, None))
    }

    fn is_empty(&self) -> bool {
        self.entries.read().map(|e| e.is_empty()).unwrap_or(true)
    }

    /// Creates a token and returns its only plaintext copy.
    pub fn create(&self, tenant: &str, role: Role) -> Result<String> {
        validate_tenant(tenant)?;
        let mut rng = rand::thread_rng();
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        rng.fill_bytes(&mut salt);
        let id = hex::encode(id);
        let secret = hex::encode(secret);
        let entry = TokenEntry {
            id: id.clone(),
            tenant: tenant.to_string(),
            role,
            sha256: hex::encode(salted_hash(&salt, &secret)),
            salt: hex::encode(salt),
            created_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let mut entries = self
            .entries
            .write()
            .map_err(|_| anyhow::anyhow!("token store lock poisoned"))?;
        entries.insert(id.clone(), entry);
        self.persist(&entries)?;
        Ok(format!("nwl_{id}_{secret}"))
    }

    fn persist(&self, entries: &HashMap<String, TokenEntry>) -> Result<()> {
        let mut list: Vec<&TokenEntry> = entries.values().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        let json = serde_json::to_vec_pretty(&list)?;
        write_file(&self.path, &json, 0o600)
    }

    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let rest = token.trim().strip_prefix("nwl_")?;
        let (id, secret) = rest.split_once('_')?;
        let entries = self.entries.read().ok()?;
        let entry = entries.get(id)?;
        let salt = hex::decode(&entry.salt).ok()?;
        let expected = hex::decode(&entry.sha256).ok()?;
        let actual = salted_hash(&salt, secret);
        if !constant_time_eq(&expected, &actual) {
            return None;
        }
        Some(Principal {
            token_id: entry.id.clone(),
            tenant: entry.tenant.clone(),
            role: entry.role,
        })
    }
}

fn salted_hash(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tenant names become directory names: keep them boring.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("invalid tenant name {tenant:?}: use 1-64 of a-z, 0-9, '-', '_'");
    }
    Ok(())
}

/// Reads a token file, trimming the newline editors add.
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_admin_token_that_authenticates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, admin) = TokenStore::open_or_init(dir.path()).expect("init");
        let admin = admin.expect("admin token created on first start");
        let token = read_token_file(&admin).expect("read");
        let who = store.authenticate(&token).expect("valid");
        assert_eq!(who.role, Role::Admin);
        assert_eq!(who.tenant, DEFAULT_TENANT);
        let stored = std::fs::read_to_string(dir.path().join("tokens.json")).expect("stored");
        assert!(!stored.contains(token.rsplit('_').next().expect("secret")));

        let (reopened, again) = TokenStore::open_or_init(dir.path()).expect("reopen");
        assert!(again.is_none());
        assert!(reopened.authenticate(&token).is_some());
    }

    #[test]
    fn wrong_or_mangled_tokens_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = TokenStore::open_or_init(dir.path()).expect("init");
        let good = store.create("acme", Role::Viewer).expect("create");
        assert!(store.authenticate(&good).is_some());
        let mut bad = good.clone();
        bad.pop();
        bad.push('x');
        for t in [bad.as_str(), "", "nwl_", "nwl_abc_def", "Bearer x"] {
            assert!(store.authenticate(t).is_none(), "{t}");
        }
    }

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.allows(Role::Agent));
        assert!(Role::RuleEditor.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Agent));
        assert!(!Role::Agent.allows(Role::Viewer));
    }
}
