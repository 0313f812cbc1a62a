//! Crypto-shredding of the tenant data an audit entry quotes.
//!
//! A search's query or a silence's comment is the tenant's data, but the
//! entry recording it must stay in the chain after the tenant is purged
//! (who did what stays known). So the query and body of an entry made with
//! a tenant's token are sealed with that tenant's data key
//! (AES-256-GCM), and a purge destroys the key: the ciphertext stays, the
//! chain still verifies, and nobody can read it again. The keys live in
//! `DATA_DIR/audit/tenant-keys.json` (0600), rewritten whole (temp file,
//! fsync, rename, dir fsync) when a key is made or destroyed; the ids of
//! destroyed keys stay so a listing can say why an entry is unreadable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::crypto::{Key, KEY_LEN, NONCE_LEN, TAG_LEN};

const AAD: &[u8] = b"nightowl audit fields v1\0";

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    /// Tenant → its current key, hex.
    #[serde(default)]
    keys: BTreeMap<String, String>,
    /// Key id → the tenant whose purge destroyed it.
    #[serde(default)]
    destroyed: BTreeMap<String, String>,
}

pub struct TenantKeys {
    path: PathBuf,
    file: File,
    /// Key id → (tenant, key) for every live key.
    open: BTreeMap<String, (String, Key)>,
    rng: SystemRandom,
}

/// The query and body of an entry, as sealed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fields {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// What opening a sealed field gave.
pub enum Opened {
    Fields(Fields),
    /// The tenant was purged: its key is gone.
    Shredded,
    /// A key id this store never had (another data dir's, or damage).
    Unknown,
}

impl TenantKeys {
    pub fn open(dir: &Path) -> Result<TenantKeys> {
        let path = dir.join("tenant-keys.json");
        let file: File = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut open = BTreeMap::new();
        for (tenant, hex_key) in &file.keys {
            let key = parse(hex_key)
                .and_then(|k| Key::new(&k))
                .with_context(|| format!("{}: the key of tenant {tenant:?}", path.display()))?;
            open.insert(hex::encode(key.id()), (tenant.clone(), key));
        }
        Ok(TenantKeys {
            path,
            file,
            open,
            rng: SystemRandom::new(),
        })
    }

    /// `"<key id>.<base64 nonce|ciphertext|tag>"` of `fields` under
    /// `tenant`'s key, made (durably) if the tenant has none yet.
    pub fn seal(&mut self, tenant: &str, fields: &Fields) -> Result<String> {
        let id = match self.current(tenant) {
            Some(id) => id,
            None => self.make(tenant)?,
        };
        let (_, key) = self
            .open
            .get(&id)
            .context("a tenant key vanished from memory")?;
        let mut buf = vec![0u8; NONCE_LEN];
        let nonce = crate::crypto::random_nonce(&self.rng)?;
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        serde_json::to_writer(&mut buf, fields).context("encoding audit fields")?;
        let tag = key.seal_in_place(nonce, &aad(tenant), &mut buf[NONCE_LEN..])?;
        buf.extend_from_slice(&tag);
        Ok(format!(
            "{id}.{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&buf)
        ))
    }

    /// Opens what [`TenantKeys::seal`] made for `tenant`.
    pub fn unseal(&self, tenant: &str, sealed: &str) -> Opened {
        let Some((id, data)) = sealed.split_once('.') else {
            return Opened::Unknown;
        };
        let Some((owner, key)) = self.open.get(id) else {
            return if self.file.destroyed.contains_key(id) {
                Opened::Shredded
            } else {
                Opened::Unknown
            };
        };
        let Ok(mut buf) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(data) else {
            return Opened::Unknown;
        };
        if owner != tenant || buf.len() < NONCE_LEN + TAG_LEN {
            return Opened::Unknown;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[..NONCE_LEN]);
        match key.open_in_place(nonce, &aad(tenant), &mut buf[NONCE_LEN..]) {
            Ok(plain) => serde_json::from_slice(plain)
                .map(Opened::Fields)
                .unwrap_or(Opened::Unknown),
            Err(_) => Opened::Unknown,
        }
    }

    /// Destroys `tenant`'s key (a purge); returns its id if it had one.
    /// Durable when this returns: the file no longer holds the key.
    pub fn destroy(&mut self, tenant: &str) -> Result<Option<String>> {
        let Some(id) = self.current(tenant) else {
            return Ok(None);
        };
        self.file.keys.remove(tenant);
        self.file.destroyed.insert(id.clone(), tenant.to_string());
        self.save()?;
        self.open.remove(&id);
        Ok(Some(id))
    }

    fn current(&self, tenant: &str) -> Option<String> {
        self.open
            .iter()
            .find(|(_, (t, _))| t == tenant)
            .map(|(id, _)| id.clone())
    }

    fn make(&mut self, tenant: &str) -> Result<String> {
        let mut bytes = [0u8; KEY_LEN];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness for a tenant key"))?;
        let key = Key::new(&bytes)?;
        let id = hex::encode(key.id());
        self.file
            .keys
            .insert(tenant.to_string(), hex::encode(bytes));
        // Durable before anything is sealed with it: an entry whose key
        // was lost to a crash could never be read.
        if let Err(e) = self.save() {
            self.file.keys.remove(tenant);
            return Err(e);
        }
        self.open.insert(id.clone(), (tenant.to_string(), key));
        Ok(id)
    }

    fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.file).context("encoding the tenant keys")?;
        let tmp = self.path.with_extension("json.tmp");
        crate::fsutil::write_atomic_via(&self.path, &tmp, &json, 0o600)
    }
}

fn aad(tenant: &str) -> Vec<u8> {
    let mut aad = AAD.to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad
}

fn parse(hex_key: &str) -> Result<[u8; KEY_LEN]> {
    crate::crypto::parse_key(hex_key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str) -> Fields {
        Fields {
            query: q.into(),
            body: String::new(),
        }
    }

    #[test]
    fn sealed_fields_open_until_the_tenant_key_is_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = TenantKeys::open(dir.path()).expect("open");
        let a = keys.seal("acme", &fields("q=MARKER1")).expect("seal");
        let b = keys.seal("other", &fields("q=MARKER2")).expect("seal");
        assert!(!a.contains("MARKER1"));
        let keys = TenantKeys::open(dir.path()).expect("reopen");
        assert!(matches!(keys.unseal("acme", &a), Opened::Fields(f) if f.query == "q=MARKER1"));
        // Another tenant's entry does not open under this tenant's name.
        assert!(matches!(keys.unseal("acme", &b), Opened::Unknown));
        let mut keys = keys;
        let old = keys.destroy("acme").expect("destroy").expect("had a key");
        assert!(a.starts_with(&old));
        assert!(matches!(keys.unseal("acme", &a), Opened::Shredded));
        assert!(matches!(keys.unseal("other", &b), Opened::Fields(_)));
        let text = std::fs::read_to_string(dir.path().join("tenant-keys.json")).expect("read");
        assert!(text.contains(&old) && text.contains("other"));
        // A new key for the tenant's later entries.
        let c = keys.seal("acme", &fields("q=later")).expect("seal");
        let keys = TenantKeys::open(dir.path()).expect("reopen");
        assert!(matches!(keys.unseal("acme", &c), Opened::Fields(f) if f.query == "q=later"));
        assert!(matches!(keys.unseal("acme", &a), Opened::Shredded));
        assert!(matches!(keys.unseal("acme", "zz.AAAA"), Opened::Unknown));
    }
}
