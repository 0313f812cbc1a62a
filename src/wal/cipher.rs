//! At-rest encryption of WAL records (AES-256-GCM, one random 96-bit nonce
//! per record), when `[wal] encryption_key_file` or `NIGHTOWL_WAL_KEY_FILE`
//! names a key.
//!
//! It works on record payloads, above the segment format: the WAL still
//! frames and checksums bytes (CRC over the ciphertext, so torn tails are
//! found as before), and without a key nothing on disk changes. A sealed
//! payload is `[0xE7][1][nonce: 12][ciphertext + tag: 16]`; plain ingest
//! records start with their version byte (1 or 2), so a WAL written before
//! the key was configured still replays, and a sealed record met without a
//! key is a clear error instead of garbage.
//!
//! Nonces are random, not derived from positions: a torn tail is truncated
//! and its positions written again with other bytes, which would repeat a
//! position-derived nonce under the same key.
//!
//! The key file format and the AES-GCM calls live in `crate::crypto`, shared
//! with the agent spool; this file keeps the WAL's record format unchanged.

use std::path::Path;

use anyhow::{bail, Result};
use bytes::Bytes;
use ring::rand::SystemRandom;

use crate::crypto::{self, Key, NONCE_LEN, TAG_LEN};

const SEALED: u8 = 0xE7;
const SEALED_VERSION: u8 = 1;
const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Binds every record to this use of the key.
const AAD: &[u8] = b"nightowl wal record v1";

/// The env var naming the key file when the config does not.
pub const KEY_FILE_ENV: &str = "NIGHTOWL_WAL_KEY_FILE";

pub struct WalCipher {
    key: Key,
    rng: SystemRandom,
}

impl WalCipher {
    /// Reads a key file: 32 raw bytes, or 64 hex digits (whitespace around
    /// them ignored), e.g. from `openssl rand -hex 32 > wal.key`.
    pub fn load(path: &Path) -> Result<WalCipher> {
        Ok(WalCipher::with_key(Key::load(path, "WAL key")?))
    }

    pub fn new(key: &[u8; 32]) -> Result<WalCipher> {
        Ok(WalCipher::with_key(Key::new(key)?))
    }

    fn with_key(key: Key) -> WalCipher {
        WalCipher {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts one record payload.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        self.seal_into(&mut out, |out| out.extend_from_slice(plain))?;
        Ok(out)
    }

    /// Replaces `out` with the sealed payload that `write` appends, in
    /// place: no copy of the plaintext, and `out` is reused by its caller.
    pub fn seal_into(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let nonce = crypto::random_nonce(&self.rng)?;
        out.clear();
        out.push(SEALED);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        write(out);
        let tag = self.key.seal_in_place(nonce, AAD, &mut out[HEADER_LEN..])?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts a sealed payload; a plain one is returned as is.
    pub fn open(&self, payload: Bytes) -> Result<Bytes> {
        if !is_sealed(&payload) {
            return Ok(payload);
        }
        if payload[1] != SEALED_VERSION || payload.len() < HEADER_LEN + TAG_LEN {
            bail!("unknown or truncated encrypted record");
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&payload[2..HEADER_LEN]);
        let mut body = payload[HEADER_LEN..].to_vec();
        let len = self
            .key
            .open_in_place(nonce, AAD, &mut body)
            .map_err(|_| {
                anyhow::anyhow!("cannot decrypt: wrong WAL key, or the record was altered")
            })?
            .len();
        body.truncate(len);
        Ok(Bytes::from(body))
    }
}

/// Whether a WAL payload was written encrypted.
pub fn is_sealed(payload: &[u8]) -> bool {
    payload.first() == Some(&SEALED)
}

/// Decrypts a payload read back from the WAL, or explains why it cannot.
pub fn open_payload(cipher: Option<&WalCipher>, payload: Bytes) -> Result<Bytes> {
    match cipher {
        Some(cipher) => cipher.open(payload),
        None if is_sealed(&payload) => bail!(
            "the record is encrypted but no key is configured ([wal] encryption_key_file or {KEY_FILE_ENV})"
        ),
        None => Ok(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let cipher = WalCipher::new(&[7u8; 32]).unwrap();
        let plain = b"\x01some record with a line\n";
        let sealed = cipher.seal(plain).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(4).any(|w| w == b"line"));
        let back = cipher.open(Bytes::from(sealed.clone())).unwrap();
        assert_eq!(&back[..], &plain[..]);
        // Two seals of the same record differ (random nonces).
        assert_ne!(cipher.seal(plain).unwrap(), sealed);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(cipher.open(Bytes::from(tampered)).is_err());
        let other = WalCipher::new(&[8u8; 32]).unwrap();
        assert!(other.open(Bytes::from(sealed.clone())).is_err());
        assert!(open_payload(None, Bytes::from(sealed)).is_err());
        // Plain records written before the key still read.
        assert_eq!(
            &open_payload(Some(&cipher), Bytes::from_static(b"\x01plain")).unwrap()[..],
            b"\x01plain"
        );
    }

    #[test]
    fn key_files_raw_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [1u8; 32]).unwrap();
        assert!(WalCipher::load(&raw).is_ok());
        let hex = dir.path().join("hex.key");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(WalCipher::load(&hex).is_ok());
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "too short").unwrap();
        let err = format!("{:#}", WalCipher::load(&bad).err().unwrap());
        assert!(
            err.contains("bad.key") && err.contains("64 hex digits"),
            "{err}"
        );
    }
}
