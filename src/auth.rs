//! API and agent tokens: who is calling, for which tenant, with which role.
//!
//! Tokens look like `nwl_<id>_<secret>`. Only a salted SHA-256 of the secret
//! is stored (`DATA_DIR/tokens.json`); the id lets a lookup hash once instead
//! of trying every entry. The secret has 256 bits of entropy, so a slow
//! password hash would add latency to every request without adding safety.
//!
//! Tenants live in `DATA_DIR/tenants.json`; `default` always exists. The
//! token written to `admin.token` on first start is the *operator* token
//! (`global`): it administers every tenant. Any other admin token
//! administers its own tenant only. A revoked token stops working at once:
//! agent connections check their token on every batch.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil::write_atomic;

pub const DEFAULT_TENANT: &str = "default";

/// Who a verified client certificate says it is: its tenant (from the
/// `urn:nightowl:tenant:<tenant>` URI SAN, nothing else), its name (the
/// subject CN, for logs and listings) and its SHA-256 fingerprint, which
/// is what the token store registers and revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub tenant: String,
    pub name: String,
    /// Hex SHA-256 of the certificate's DER.
    pub sha256: String,
}

impl ClientIdentity {
    /// The credential id in the token store: `cert-` and 16 hex digits
    /// of the fingerprint (64 bits: no collision among a fleet's certs).
    pub fn id(&self) -> String {
        cert_id(&self.sha256)
    }
}

/// The credential id of a certificate with fingerprint `sha256` (hex).
pub fn cert_id(sha256: &str) -> String {
    format!("cert-{}", &sha256[..sha256.len().min(16)])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    RuleEditor,
    Admin,
    Agent,
}

impl Role {
    /// The role's name as in configs and the API: `viewer`, `rule-editor`...
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::RuleEditor => "rule-editor",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// "a viewer token", "an agent token": for messages.
    pub fn token_phrase(self) -> String {
        let article = if matches!(self, Role::Admin | Role::Agent) {
            "an"
        } else {
            "a"
        };
        format!("{article} {} token", self.name())
    }

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
    /// The operator token: administers every tenant.
    pub global: bool,
}

impl Principal {
    /// Token id and tenant of a caller who may have none (refused, or
    /// without a credential): empty then, as the audit log records them.
    pub fn ids_of(principal: Option<&Principal>) -> (String, String) {
        principal.map_or_else(Default::default, |p| (p.token_id.clone(), p.tenant.clone()))
    }

    /// Whether this caller may administer `tenant` (its tokens, its data).
    pub fn administers(&self, tenant: &str) -> bool {
        self.role == Role::Admin && (self.global || self.tenant == tenant)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    id: String,
    tenant: String,
    role: Role,
    salt: String,
    sha256: String,
    created_unix: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    global: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    /// CIDRs the token may be used from; empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allowed_ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_unix: Option<i64>,
    /// A client certificate, not a token: the hex SHA-256 of its DER
    /// (docs/mtls.md). It has no secret and never authenticates a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert_sha256: Option<String>,
}

/// A token as listed: everything but the secret's hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub global: bool,
    pub description: String,
    pub allowed_ips: Vec<String>,
    pub created_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix: Option<i64>,
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub description: String,
    pub allowed_ips: Vec<Cidr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub name: String,
    pub created_unix: i64,
    /// Days of index kept; `None` keeps everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

pub struct TokenStore {
    path: PathBuf,
    tenants_path: PathBuf,
    entries: RwLock<HashMap<String, TokenEntry>>,
    tenants: RwLock<BTreeMap<String, Tenant>>,
    /// Where changes made outside an API request (a client certificate
    /// registered at its first use) are audited.
    audit: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
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
        let tenants_path = data_dir.join("tenants.json");
        let mut tenants: BTreeMap<String, Tenant> = match std::fs::read(&tenants_path) {
            Ok(bytes) => serde_json::from_slice::<Vec<Tenant>>(&bytes)
                .with_context(|| format!("parsing {}", tenants_path.display()))?
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", tenants_path.display())),
        };
        tenants
            .entry(DEFAULT_TENANT.to_string())
            .or_insert_with(|| Tenant {
                name: DEFAULT_TENANT.to_string(),
                created_unix: 0,
                retention_days: None,
            });
        let store = TokenStore {
            path,
            tenants_path,
            entries: RwLock::new(entries.into_iter().map(|e| (e.id.clone(), e)).collect()),
            tenants: RwLock::new(tenants),
            audit: std::sync::OnceLock::new(),
        };
        let admin_path = data_dir.join("admin.token");
        if store.is_empty() {
            let token = store.issue(DEFAULT_TENANT, Role::Admin, true, TokenSpec::default())?;
            write_atomic(&admin_path, format!("{token}\n").as_bytes(), 0o600)?;
            return Ok((store, Some(admin_path)));
        }
        Ok((store, None))
    }

    fn is_empty(&self) -> bool {
        self.entries.read().map(|e| e.is_empty()).unwrap_or(true)
    }

    /// Creates a token of an existing tenant and returns its only
    /// plaintext copy.
    pub fn create(&self, tenant: &str, role: Role) -> Result<String> {
        self.create_with(tenant, role, TokenSpec::default())
    }

    pub fn create_with(&self, tenant: &str, role: Role, spec: TokenSpec) -> Result<String> {
        if self.tenant(tenant).is_none() {
            bail!("unknown tenant {tenant:?}: create it first (nightowl tenant create {tenant})");
        }
        self.issue(tenant, role, false, spec)
    }

    fn issue(&self, tenant: &str, role: Role, global: bool, spec: TokenSpec) -> Result<String> {
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
            created_unix: now_unix(),
            global,
            description: spec.description,
            allowed_ips: spec.allowed_ips,
            revoked_unix: None,
            cert_sha256: None,
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
        write_atomic(&self.path, &json, 0o600)
    }

    /// Revokes token `id`, if `by` administers its tenant. Returns the
    /// revoked token's tenant.
    pub fn revoke(&self, id: &str, by: &Principal) -> Result<TokenInfo, AdminError> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| AdminError::Internal("token store lock poisoned".into()))?;
        let entry = entries.get_mut(id).filter(|e| by.administers(&e.tenant));
        let entry = match entry {
            Some(entry) => entry,
            // A certificate that never connected is not registered yet;
            // the operator may still revoke it by the id `cert issue`
            // printed, so a leaked certificate never gets in.
            None if by.global && is_cert_id(id) => {
                entries.insert(id.to_string(), cert_tombstone(id));
                entries
                    .get_mut(id)
                    .ok_or_else(|| AdminError::Internal("token store insert lost".into()))?
            }
            None => return Err(AdminError::NotFound(format!("no token {id:?}"))),
        };
        if entry.global {
            return Err(AdminError::Forbidden(
                "the operator token cannot be revoked through the API; edit tokens.json with the collector stopped".into(),
            ));
        }
        entry.revoked_unix.get_or_insert_with(now_unix);
        let info = info(entry);
        self.persist(&entries)
            .map_err(|e| AdminError::Internal(format!("{e:#}")))?;
        Ok(info)
    }

    /// Tokens `by` may see: all of them for the operator, its tenant's for
    /// a tenant admin. Never the secrets' hashes.
    pub fn list(&self, by: &Principal) -> Vec<TokenInfo> {
        let Ok(entries) = self.entries.read() else {
            return Vec::new();
        };
        let mut list: Vec<TokenInfo> = entries
            .values()
            .filter(|e| by.administers(&e.tenant))
            .map(info)
            .collect();
        list.sort_by(|a, b| {
            (&a.tenant, a.created_unix, &a.id).cmp(&(&b.tenant, b.created_unix, &b.id))
        });
        list
    }

    /// Whether token `id` still works: checked on every agent batch, so a
    /// revocation cuts open connections off.
    pub fn is_active(&self, id: &str) -> bool {
        self.entries
            .read()
            .map(|e| e.get(id).is_some_and(|e| e.revoked_unix.is_none()))
            .unwrap_or(false)
    }

    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        self.tenants.read().ok()?.get(name).cloned()
    }

    pub fn tenants(&self) -> Vec<Tenant> {
        self.tenants
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates (or, with `retention_days`, updates) a tenant.
    pub fn upsert_tenant(&self, name: &str, retention_days: Option<u32>) -> Result<(Tenant, bool)> {
        validate_tenant(name)?;
        let mut tenants = self
            .tenants
            .write()
            .map_err(|_| anyhow::anyhow!("tenant store lock poisoned"))?;
        let created = !tenants.contains_key(name);
        let tenant = tenants.entry(name.to_string()).or_insert_with(|| Tenant {
            name: name.to_string(),
            created_unix: now_unix(),
            retention_days: None,
        });
        if retention_days.is_some() {
            tenant.retention_days = retention_days.filter(|&d| d > 0);
        }
        let tenant = tenant.clone();
        let list: Vec<&Tenant> = tenants.values().collect();
        write_atomic(
            &self.tenants_path,
            &serde_json::to_vec_pretty(&list)?,
            0o600,
        )?;
        Ok((tenant, created))
    }

    /// The agent behind a verified client certificate: registered on its
    /// first use (so `token list` shows it and `token revoke` cuts it
    /// off), refused once revoked or when its tenant does not exist.
    pub fn authenticate_cert(
        &self,
        cert: &ClientIdentity,
        peer: Option<IpAddr>,
    ) -> Result<Principal, String> {
        let id = cert.id();
        let principal = |entry: &TokenEntry| -> Result<Principal, String> {
            if entry.revoked_unix.is_some() {
                return Err(format!(
                    "client certificate {id} ({:?}) is revoked",
                    cert.name
                ));
            }
            // Same 64-bit id, another certificate: refused, never confused.
            if entry.cert_sha256.as_deref() != Some(cert.sha256.as_str()) {
                return Err(format!(
                    "client certificate {id} clashes with another credential"
                ));
            }
            Ok(Principal {
                token_id: entry.id.clone(),
                tenant: entry.tenant.clone(),
                role: Role::Agent,
                global: false,
            })
        };
        {
            let entries = self
                .entries
                .read()
                .map_err(|_| "token store lock poisoned")?;
            if let Some(entry) = entries.get(&id) {
                return principal(entry);
            }
        }
        if self.tenant(&cert.tenant).is_none() {
            return Err(format!(
                "client certificate {:?} names tenant {:?}, which does not exist on this collector (nightowl tenant create {})",
                cert.name, cert.tenant, cert.tenant
            ));
        }
        let mut entries = self
            .entries
            .write()
            .map_err(|_| "token store lock poisoned")?;
        let entry = entries.entry(id.clone()).or_insert_with(|| TokenEntry {
            id: id.clone(),
            tenant: cert.tenant.clone(),
            role: Role::Agent,
            salt: String::new(),
            sha256: String::new(),
            created_unix: now_unix(),
            global: false,
            description: format!("client certificate CN={} sha256:{}", cert.name, cert.sha256),
            allowed_ips: Vec::new(),
            revoked_unix: None,
            cert_sha256: Some(cert.sha256.clone()),
        });
        let result = principal(entry);
        self.persist(&entries)
            .map_err(|e| format!("registering client certificate {id}: {e:#}"))?;
        tracing::info!(%id, tenant = %cert.tenant, name = %cert.name, "client certificate registered at its first use");
        if let Some(audit) = self.audit.get() {
            let record = crate::audit::Record {
                actor: id.clone(),
                tenant: cert.tenant.clone(),
                role: "agent".into(),
                ip: peer.map(|p| p.to_string()).unwrap_or_default(),
                method: "REGISTER".into(),
                path: "client-certificate".into(),
                body: format!("CN={} sha256:{}", cert.name, cert.sha256),
                status: if result.is_ok() { 200 } else { 403 },
                ..Default::default()
            };
            if let Err(e) = audit.append(record) {
                tracing::error!(error = %format!("{e:#}"), "auditing a client certificate registration failed");
            }
        }
        result
    }

    /// Audits changes the store makes on its own (certificate
    /// registrations) to `log`, the log the API appends to.
    pub fn audit_to(&self, log: Arc<crate::audit::AuditLog>) {
        let _ = self.audit.set(log);
    }

    /// The caller behind `token`, if it is valid, not revoked, and used
    /// from an allowed address (`peer`, when known).
    pub fn authenticate_from(&self, token: &str, peer: Option<IpAddr>) -> Option<Principal> {
        self.check(token, peer).ok()
    }

    /// Like [`TokenStore::authenticate_from`], saying why a token is
    /// refused. Only a caller who proved the secret learns more than
    /// "invalid token": that the token is revoked, or which address rule
    /// refused it.
    pub fn check(&self, token: &str, peer: Option<IpAddr>) -> Result<Principal, TokenRefusal> {
        let rest = token
            .trim()
            .strip_prefix("nwl_")
            .ok_or(TokenRefusal::Invalid)?;
        let (id, secret) = rest.split_once('_').ok_or(TokenRefusal::Invalid)?;
        let entries = self.entries.read().map_err(|_| TokenRefusal::Invalid)?;
        let entry = entries.get(id).ok_or(TokenRefusal::Invalid)?;
        if entry.cert_sha256.is_some() || is_cert_id(id) {
            return Err(TokenRefusal::Invalid);
        }
        let salt = hex::decode(&entry.salt).map_err(|_| TokenRefusal::Invalid)?;
        let expected = hex::decode(&entry.sha256).map_err(|_| TokenRefusal::Invalid)?;
        let actual = salted_hash(&salt, secret);
        if !constant_time_eq(&expected, &actual) {
            return Err(TokenRefusal::Invalid);
        }
        if entry.revoked_unix.is_some() {
            return Err(TokenRefusal::Revoked {
                id: entry.id.clone(),
            });
        }
        if !entry.allowed_ips.is_empty()
            && !peer.is_some_and(|peer| entry.allowed_ips.iter().any(|c| c.contains(peer)))
        {
            return Err(TokenRefusal::Address {
                id: entry.id.clone(),
                peer,
                allowed: entry.allowed_ips.iter().map(Cidr::to_string).collect(),
            });
        }
        Ok(Principal {
            token_id: entry.id.clone(),
            tenant: entry.tenant.clone(),
            role: entry.role,
            global: entry.global,
        })
    }

    /// [`TokenStore::authenticate_from`] where the peer is unknown: a token
    /// with an IP allowlist is refused.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.authenticate_from(token, None)
    }
}

/// Why [`TokenStore::check`] refused a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Malformed, unknown, or a wrong secret: nothing more is said.
    Invalid,
    Revoked {
        id: String,
    },
    /// The secret is right, the address is not in the token's allowlist.
    Address {
        id: String,
        peer: Option<IpAddr>,
        allowed: Vec<String>,
    },
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefusal::Invalid => write!(f, "invalid token"),
            TokenRefusal::Revoked { id } => write!(f, "token {id} is revoked"),
            TokenRefusal::Address {
                id,
                peer: Some(peer),
                allowed,
            } => write!(
                f,
                "token {id} may not be used from {peer}: its allowed_ips are {}",
                allowed.join(", ")
            ),
            TokenRefusal::Address {
                id,
                peer: None,
                allowed,
            } => write!(
                f,
                "token {id} may only be used from {} and the client address is unknown",
                allowed.join(", ")
            ),
        }
    }
}

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
}

fn info(e: &TokenEntry) -> TokenInfo {
    TokenInfo {
        id: e.id.clone(),
        tenant: e.tenant.clone(),
        role: e.role,
        global: e.global,
        description: e.description.clone(),
        allowed_ips: e.allowed_ips.iter().map(Cidr::to_string).collect(),
        created_unix: e.created_unix,
        revoked_unix: e.revoked_unix,
    }
}

fn is_cert_id(id: &str) -> bool {
    id.strip_prefix("cert-")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A certificate revoked before it ever connected: its tenant is unknown
/// until then, so only the operator sees it.
fn cert_tombstone(id: &str) -> TokenEntry {
    TokenEntry {
        id: id.to_string(),
        tenant: String::new(),
        role: Role::Agent,
        salt: String::new(),
        sha256: String::new(),
        created_unix: now_unix(),
        global: false,
        description: "client certificate revoked before its first use".into(),
        allowed_ips: Vec::new(),
        revoked_unix: None,
        cert_sha256: Some(String::new()),
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An address block of a token's allowlist, `10.0.0.0/8` or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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
    // A file that caught a command's messages too (`2>&1`) would be sent
    // whole and refused as "invalid token", naming nothing.
    if token.contains(char::is_whitespace) {
        bail!(
            "token file {} holds {} lines or words; it must hold the token alone \
             (the stdout of `nightowl token create`, without its stderr)",
            path.display(),
            token.split_whitespace().count()
        );
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_with_more_than_the_token_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t");
        std::fs::write(&file, "nwl_abc_def\n").expect("write");
        assert_eq!(read_token_file(&file).expect("one token"), "nwl_abc_def");
        std::fs::write(&file, "created token 7 for acme\nnwl_abc_def\n").expect("write");
        let err = format!("{:#}", read_token_file(&file).expect_err("two lines"));
        assert!(err.contains("must hold the token alone"), "{err}");
    }

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
        store.upsert_tenant("acme", None).expect("tenant");
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
    fn cidrs_parse_and_match_both_families() {
        let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains("10.200.1.2".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.2.3".parse().expect("mapped ip")));
        let one: Cidr = "192.0.2.7".parse().expect("bare address");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("203.0.113.1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn revocation_and_listing_stay_within_the_admins_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, admin) = TokenStore::open_or_init(dir.path()).expect("init");
        let operator = store
            .authenticate(&read_token_file(&admin.expect("admin")).expect("read"))
            .expect("operator");
        assert!(operator.global);
        assert!(
            store.create("acme", Role::Viewer).is_err(),
            "unknown tenant"
        );
        store.upsert_tenant("acme", Some(7)).expect("tenant");
        store.upsert_tenant("beta", None).expect("tenant");
        let acme_admin = store.create("acme", Role::Admin).expect("token");
        let acme_admin = store.authenticate(&acme_admin).expect("valid");
        let beta_viewer = store.create("beta", Role::Viewer).expect("token");
        let beta_id = store.authenticate(&beta_viewer).expect("valid").token_id;

        assert!(store.list(&acme_admin).iter().all(|t| t.tenant == "acme"));
        assert_eq!(store.list(&operator).len(), 3);
        assert!(matches!(
            store.revoke(&beta_id, &acme_admin),
            Err(AdminError::NotFound(_))
        ));
        assert!(store.authenticate(&beta_viewer).is_some());
        store.revoke(&beta_id, &operator).expect("operator revokes");
        assert!(store.authenticate(&beta_viewer).is_none());
        assert!(!store.is_active(&beta_id));

        let (reopened, _) = TokenStore::open_or_init(dir.path()).expect("reopen");
        assert!(
            reopened.authenticate(&beta_viewer).is_none(),
            "revocation is durable"
        );
        assert_eq!(
            reopened.tenant("acme").and_then(|t| t.retention_days),
            Some(7)
        );
    }

    #[test]
    fn a_certificate_registers_on_first_use_and_revocation_cuts_it_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, admin) = TokenStore::open_or_init(dir.path()).expect("init");
        let operator = store
            .authenticate(&read_token_file(&admin.expect("admin")).expect("read"))
            .expect("operator");
        store.upsert_tenant("acme", None).expect("tenant");
        let cert = ClientIdentity {
            tenant: "acme".into(),
            name: "web1".into(),
            sha256: "ab".repeat(32),
        };
        let who = store.authenticate_cert(&cert, None).expect("registered");
        assert_eq!((who.tenant.as_str(), who.role), ("acme", Role::Agent));
        assert_eq!(who.token_id, cert.id());
        assert!(store.is_active(&who.token_id));
        let listed = store.list(&operator);
        let entry = listed.iter().find(|t| t.id == cert.id()).expect("listed");
        assert!(entry.description.contains("CN=web1"), "{entry:?}");
        // A certificate entry is never a token, whatever the secret.
        assert!(store
            .authenticate(&format!("nwl_{}_x", cert.id()))
            .is_none());

        let ghost = ClientIdentity {
            tenant: "ghost".into(),
            ..cert.clone()
        };
        let ghost = ClientIdentity {
            sha256: "cd".repeat(32),
            ..ghost
        };
        let err = store
            .authenticate_cert(&ghost, None)
            .expect_err("unknown tenant");
        assert!(err.contains("\"ghost\", which does not exist"), "{err}");

        store.revoke(&cert.id(), &operator).expect("revoke");
        assert!(!store.is_active(&cert.id()));
        let err = store.authenticate_cert(&cert, None).expect_err("revoked");
        assert!(err.contains("revoked"), "{err}");

        // Revoked before it ever connected (operator only).
        let unseen = ClientIdentity {
            sha256: "ef".repeat(32),
            ..cert.clone()
        };
        let acme_admin = store.create("acme", Role::Admin).expect("token");
        let acme_admin = store.authenticate(&acme_admin).expect("valid");
        assert!(matches!(
            store.revoke(&unseen.id(), &acme_admin),
            Err(AdminError::NotFound(_))
        ));
        assert!(matches!(
            store.revoke("cert-nothex", &operator),
            Err(AdminError::NotFound(_))
        ));
        store.revoke(&unseen.id(), &operator).expect("tombstone");
        let (reopened, _) = TokenStore::open_or_init(dir.path()).expect("reopen");
        assert!(reopened.authenticate_cert(&unseen, None).is_err());
        assert!(reopened.authenticate_cert(&cert, None).is_err(), "durable");
    }

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.allows(Role::Agent));
        assert!(Role::RuleEditor.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Agent));
        assert!(!Role::Agent.allows(Role::Viewer));
    }
}
