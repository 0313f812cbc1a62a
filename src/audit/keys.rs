//! The audit key: one secret, kept away from the log, from which the
//! chain's HMAC key and the checkpoints' Ed25519 signing key are derived.
//!
//! Someone who can write `DATA_DIR/audit/` but not the key cannot produce
//! a line or a checkpoint that verifies. Where the key lives (first found):
//! `[audit] key_file` / `--key-file` / `$NIGHTOWL_AUDIT_KEY_FILE`, then a
//! systemd credential (`$CREDENTIALS_DIRECTORY/audit.key`, from
//! `LoadCredential=`), then `DATA_DIR-keys/audit.key` beside the data dir
//! (created 0600 in a 0700 dir at first start). See docs/audit.md.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// Name of the key file in a credentials dir or the default keys dir.
pub const KEY_FILE_NAME: &str = "audit.key";

pub struct AuditKey {
    mac: ring::hmac::Key,
    signer: Ed25519KeyPair,
    id: String,
    path: PathBuf,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(id {}, {})", self.id, self.path.display())
    }
}

impl AuditKey {
    /// Reads a key file (32 raw bytes or 64 hex digits).
    pub fn load(path: &Path) -> Result<AuditKey> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the audit key file {}", path.display()))?;
        let key = crate::crypto::parse_key(&bytes)
            .with_context(|| format!("audit key file {}", path.display()))?;
        crate::crypto::warn_if_readable_by_others(path, "audit key");
        AuditKey::from_bytes(&key, path)
    }

    /// Reads the key file, or creates it (0600, its dir 0700) when it does
    /// not exist. The flag says whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool)> {
        if path.exists() {
            return Ok((AuditKey::load(path)?, false));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the audit key dir {}", dir.display()))?;
        let mut key = [0u8; crate::crypto::KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| anyhow::anyhow!("no randomness for the audit key"))?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing the audit key file {}", path.display()))?;
                let _ = crate::fsutil::sync_dir(dir);
                tracing::warn!(path = %path.display(), "created a new audit key; keep it off the data dir's backups and away from who can write the log");
                Ok((AuditKey::from_bytes(&key, path)?, true))
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((AuditKey::load(path)?, false))
            }
            Err(e) => {
                Err(e).with_context(|| format!("creating the audit key file {}", path.display()))
            }
        }
    }

    fn from_bytes(key: &[u8; crate::crypto::KEY_LEN], path: &Path) -> Result<AuditKey> {
        // Two purposes, two derived keys: a MAC and a signing key never
        // share bytes.
        let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mac = ring::hmac::sign(&master, b"nightowl audit chain v2");
        let seed = ring::hmac::sign(&master, b"nightowl audit checkpoint ed25519 v2");
        let signer = Ed25519KeyPair::from_seed_unchecked(&seed.as_ref()[..32])
            .map_err(|e| anyhow::anyhow!("deriving the checkpoint signing key: {e}"))?;
        let digest = Sha256::new()
            .chain_update(b"nightowl audit key id v1\0")
            .chain_update(key)
            .finalize();
        Ok(AuditKey {
            mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, mac.as_ref()),
            signer,
            id: hex::encode(&digest[..4]),
            path: path.to_path_buf(),
        })
    }

    /// A short public name of the key, written into every keyed entry.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The HMAC-SHA256 of `bytes`, hex.
    pub fn mac_hex(&self, bytes: &[u8]) -> String {
        hex::encode(ring::hmac::sign(&self.mac, bytes).as_ref())
    }

    /// Whether `hex_mac` is the MAC of `bytes` (constant time).
    pub fn mac_matches(&self, bytes: &[u8], hex_mac: &str) -> bool {
        hex::decode(hex_mac).is_ok_and(|tag| ring::hmac::verify(&self.mac, bytes, &tag).is_ok())
    }

    /// The checkpoint signing key's public half, hex: what a witness pins.
    pub fn public_hex(&self) -> String {
        hex::encode(self.signer.public_key().as_ref())
    }

    pub fn sign_hex(&self, bytes: &[u8]) -> String {
        hex::encode(self.signer.sign(bytes).as_ref())
    }
}

/// Whether `sig_hex` is a valid Ed25519 signature of `bytes` by `public_hex`.
pub fn signature_valid(public_hex: &str, bytes: &[u8], sig_hex: &str) -> bool {
    match (hex::decode(public_hex), hex::decode(sig_hex)) {
        (Ok(public), Ok(sig)) => UnparsedPublicKey::new(&ED25519, public)
            .verify(bytes, &sig)
            .is_ok(),
        _ => false,
    }
}

/// Where the audit key is, given the explicit setting (flag, config or
/// environment, already merged by the caller; empty counts as unset).
pub fn key_path(explicit: Option<&Path>, data_dir: &Path) -> Result<PathBuf> {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(path.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(KEY_FILE_NAME);
        if path.exists() {
            return Ok(path);
        }
    }
    default_key_path(data_dir)
}

/// `DATA_DIR-keys/audit.key`: beside the data dir, not in it, so a copy,
/// backup or restore of the data dir does not carry the key along.
pub fn default_key_path(data_dir: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(data_dir)
        .with_context(|| format!("resolving the data dir {}", data_dir.display()))?;
    let named = match absolute.file_name() {
        Some(_) => absolute,
        // `..` and the like: only the real path has a last component.
        None => data_dir
            .canonicalize()
            .with_context(|| format!("resolving the data dir {}", data_dir.display()))?,
    };
    let (Some(parent), Some(name)) = (named.parent(), named.file_name()) else {
        bail!(
            "the data dir {} has no parent to keep the audit key beside it: set [audit] key_file",
            data_dir.display()
        );
    };
    let mut dir = name.to_os_string();
    dir.push("-keys");
    Ok(parent.join(dir).join(KEY_FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_the_same_derived_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys").join("audit.key");
        let (a, created) = AuditKey::load_or_create(&path).expect("create");
        assert!(created);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = AuditKey::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.public_hex(), b.public_hex());
        let mac = a.mac_hex(b"line");
        assert!(b.mac_matches(b"line", &mac));
        assert!(!b.mac_matches(b"line2", &mac));
        assert_ne!(mac, hex::encode(Sha256::digest(b"line")));
        let sig = a.sign_hex(b"head");
        assert!(signature_valid(&b.public_hex(), b"head", &sig));
        assert!(!signature_valid(&b.public_hex(), b"heads", &sig));
        // Another key signs and MACs differently.
        let other_path = dir.path().join("other.key");
        std::fs::write(&other_path, "02".repeat(32)).expect("write");
        let other = AuditKey::load(&other_path).expect("load");
        assert_ne!(other.id(), a.id());
        assert!(!other.mac_matches(b"line", &mac));
        assert!(!signature_valid(&other.public_hex(), b"head", &sig));
    }

    #[test]
    fn the_default_key_sits_beside_the_data_dir() {
        assert_eq!(
            default_key_path(Path::new("/var/lib/nightowl")).expect("path"),
            Path::new("/var/lib/nightowl-keys/audit.key")
        );
        assert_eq!(
            default_key_path(Path::new("/srv/data/")).expect("path"),
            Path::new("/srv/data-keys/audit.key")
        );
        assert!(default_key_path(Path::new("/")).is_err());
        let explicit = key_path(Some(Path::new("/etc/k")), Path::new("/x")).expect("path");
        assert_eq!(explicit, Path::new("/etc/k"));
    }
}
