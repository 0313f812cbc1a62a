//! AES-256-GCM for data at rest: the sealing primitive shared by the WAL
//! (`wal::cipher`) and the agent spool (`agent::spool`). Each user owns its
//! record format, its nonce policy and its associated data; this module owns
//! the key (file format, permissions check, a short public id) and the
//! in-place seal/open calls, so neither user allocates per record. It also
//! reads PEM certificate files, for every TLS config (the collector's own
//! and the ones that reach other systems).
//!
//! See docs/encryption.md for key generation and rotation.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = ring::aead::NONCE_LEN;
pub const TAG_LEN: usize = 16;
/// Length of [`Key::id`].
pub const KEY_ID_LEN: usize = 4;

/// An AES-256-GCM key.
pub struct Key {
    key: LessSafeKey,
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "Key(id {})", hex::encode(self.id))
    }
}

/// Decryption failed: the wrong key, or bytes altered after sealing (GCM
/// cannot tell which; callers that store [`Key::id`] can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: wrong key, or the data was altered")]
pub struct Unauthentic;

impl Key {
    /// Reads a key file: 32 raw bytes, or 64 hex digits (whitespace around
    /// them ignored), e.g. from `openssl rand -hex 32 > spool.key`. `what`
    /// names the key in errors ("WAL key", "spool key").
    pub fn load(path: &Path, what: &str) -> Result<Key> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?;
        let key = parse_key(&bytes).with_context(|| format!("{what} file {}", path.display()))?;
        warn_if_readable_by_others(path, what);
        Key::new(&key)
    }

    pub fn new(bytes: &[u8; KEY_LEN]) -> Result<Key> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("AES-256-GCM rejected the key"))?;
        // A one-way, domain-separated digest: it tells keys apart in error
        // messages and records without revealing anything usable.
        let digest = Sha256::new()
            .chain_update(b"nightowl key id v1\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Key {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// A short public identifier of the key (not secret).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// Encrypts `in_out` in place; returns the tag to store after it. The
    /// caller guarantees `nonce` is never used twice with this key.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| anyhow::anyhow!("AES-256-GCM sealing failed"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `ciphertext + tag` in place; returns the plaintext part.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], Unauthentic> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| Unauthentic)
    }
}

/// A random 96-bit nonce (the WAL's policy: see `wal::cipher`).
pub fn random_nonce(rng: &SystemRandom) -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| anyhow::anyhow!("no randomness for a nonce"))?;
    Ok(nonce)
}

/// Nonces for one writer: a random 64-bit prefix drawn when it starts (and
/// again whenever the 32-bit counter wraps) followed by the counter. Within
/// a writer nonces cannot repeat; across writers sharing a key they repeat
/// only if two draw the same prefix (about n²/2⁶⁵ for n writers and
/// restarts), far below the 2⁻³² bound NIST SP 800-38D asks of random
/// 96-bit nonces, which caps those at 2³² records per key.
pub struct NonceCounter {
    rng: SystemRandom,
    prefix: [u8; 8],
    counter: u32,
}

impl NonceCounter {
    pub fn new() -> Result<NonceCounter> {
        let rng = SystemRandom::new();
        let mut prefix = [0u8; 8];
        rng.fill(&mut prefix)
            .map_err(|_| anyhow::anyhow!("no randomness for a nonce prefix"))?;
        Ok(NonceCounter {
            rng,
            prefix,
            counter: 0,
        })
    }

    pub fn next_nonce(&mut self) -> Result<[u8; NONCE_LEN]> {
        if self.counter == u32::MAX {
            self.rng
                .fill(&mut self.prefix)
                .map_err(|_| anyhow::anyhow!("no randomness for a nonce prefix"))?;
            self.counter = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.prefix);
        nonce[8..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(nonce)
    }
}

/// A key file's content: 32 raw bytes, or 64 hex digits with whitespace
/// around them.
pub(crate) fn parse_key(bytes: &[u8]) -> Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    if bytes.len() == KEY_LEN {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let text = std::str::from_utf8(bytes)
        .ok()
        .map(str::trim)
        .filter(|t| t.len() == 2 * KEY_LEN)
        .context("must hold 32 raw bytes or 64 hex digits")?;
    let decoded = hex::decode(text).context("must hold 32 raw bytes or 64 hex digits")?;
    key.copy_from_slice(&decoded);
    Ok(key)
}

pub(crate) fn warn_if_readable_by_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the {what} file is readable by group or others; chmod 600 it");
        }
    }
}

/// The certificates of a PEM file; none is an error naming the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate found", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_in_place_with_aad() {
        let key = Key::new(&[7u8; 32]).unwrap();
        let mut buf = b"secret line".to_vec();
        let tag = key.seal_in_place([1; 12], b"pos 8", &mut buf).unwrap();
        assert_ne!(&buf[..], b"secret line");
        buf.extend_from_slice(&tag);
        let mut copy = buf.clone();
        assert_eq!(
            key.open_in_place([1; 12], b"pos 8", &mut copy).unwrap(),
            b"secret line"
        );
        let mut copy = buf.clone();
        assert_eq!(
            key.open_in_place([1; 12], b"pos 9", &mut copy),
            Err(Unauthentic)
        );
        let other = Key::new(&[8u8; 32]).unwrap();
        assert_ne!(other.id(), key.id());
        assert_eq!(
            other.open_in_place([1; 12], b"pos 8", &mut buf),
            Err(Unauthentic)
        );
        assert!(!format!("{key:?}").contains("0707"));
    }

    #[test]
    fn counter_nonces_do_not_repeat_and_writers_differ() {
        let mut a = NonceCounter::new().unwrap();
        let mut b = NonceCounter::new().unwrap();
        let first = a.next_nonce().unwrap();
        assert_ne!(a.next_nonce().unwrap(), first);
        assert_ne!(b.next_nonce().unwrap(), first);
        // A wrapping counter draws a new prefix instead of reusing nonces.
        a.counter = u32::MAX;
        let after_wrap = a.next_nonce().unwrap();
        assert_ne!(after_wrap[..8], first[..8]);
        assert_eq!(after_wrap[8..], [0, 0, 0, 0]);
    }

    #[test]
    fn key_files_raw_or_hex_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [1u8; 32]).unwrap();
        let hex_path = dir.path().join("hex.key");
        std::fs::write(&hex_path, format!("{}\n", "01".repeat(32))).unwrap();
        assert_eq!(
            Key::load(&raw, "spool key").unwrap().id(),
            Key::load(&hex_path, "spool key").unwrap().id()
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "too short").unwrap();
        let err = format!("{:#}", Key::load(&bad, "spool key").unwrap_err());
        assert!(
            err.contains("spool key file") && err.contains("bad.key") && err.contains("64 hex"),
            "{err}"
        );
        let missing = format!(
            "{:#}",
            Key::load(&dir.path().join("none.key"), "spool key").unwrap_err()
        );
        assert!(missing.contains("none.key"), "{missing}");
    }
}
