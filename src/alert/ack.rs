//! Signed, expiring ack links: `GET /ack/{token}` acknowledges a group
//! without a bearer token (one click from a phone's mail client).
//!
//! token = hex(payload) `.` hex(HMAC-SHA256(key, payload)), payload =
//! `expires_unix_secs \n tenant \n group_key`. The 256-bit key is generated
//! on first start under the alerting dir (0600); deleting it invalidates
//! every link sent so far.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::fsutil::write_atomic;

type HmacSha256 = Hmac<Sha256>;

pub struct AckSigner {
    key: Vec<u8>,
}

impl AckSigner {
    pub fn load_or_create(dir: &Path) -> Result<AckSigner> {
        let path = dir.join("ack.key");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key = hex::decode(bytes.trim_ascii())
                    .with_context(|| format!("{} is not hex", path.display()))?;
                if key.len() < 32 {
                    bail!("{} holds fewer than 32 bytes of key", path.display());
                }
                Ok(AckSigner { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_atomic(&path, hex::encode(&key).as_bytes(), 0o600)?;
                Ok(AckSigner { key })
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    #[cfg(test)]
    pub fn with_key(key: &[u8]) -> AckSigner {
        AckSigner { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, tenant: &str, group_key: &str, expires_unix: i64) -> String {
        let payload = format!("{expires_unix}\n{tenant}\n{group_key}");
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{}.{}",
            hex::encode(payload.as_bytes()),
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// What a token says (tenant, group key), without checking it: for
    /// the audit entry of a request that carried one (a forged one is
    /// refused, and the entry's status says so).
    pub fn claims(token: &str) -> Option<(String, String)> {
        let payload = hex::decode(token.split_once('.')?.0).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.splitn(3, '\n');
        let (_, tenant, group) = (parts.next()?, parts.next()?, parts.next()?);
        Some((tenant.to_string(), group.to_string()))
    }

    /// Returns (tenant, group key) of a valid, unexpired token.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<(String, String)> {
        let (payload_hex, sig_hex) = token.split_once('.').context("malformed ack link")?;
        let payload = hex::decode(payload_hex).context("malformed ack link")?;
        let sig = hex::decode(sig_hex).context("malformed ack link")?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig)
            .map_err(|_| anyhow::anyhow!("ack link signature does not verify"))?;
        let text = String::from_utf8(payload).context("malformed ack link")?;
        let mut parts = text.splitn(3, '\n');
        let (Some(expires), Some(tenant), Some(group)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("malformed ack link");
        };
        let expires: i64 = expires.parse().context("malformed ack link")?;
        if now_unix > expires {
            bail!("ack link expired");
        }
        Ok((tenant.to_string(), group.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_links_verify_until_they_expire_and_tampering_fails() {
        let s = AckSigner::with_key(&[7u8; 32]);
        let token = s.sign("default", "0/alertname=x,tenant=default", 1000);
        assert_eq!(
            s.verify(&token, 999).unwrap(),
            ("default".into(), "0/alertname=x,tenant=default".into())
        );
        assert!(format!("{:#}", s.verify(&token, 1001).unwrap_err()).contains("expired"));
        let forged = s.sign("other", "0/alertname=x,tenant=other", 1000);
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, sig) = token.split_once('.').unwrap();
        assert!(s.verify(&format!("{payload}.{sig}"), 0).is_err());
        assert!(AckSigner::with_key(&[8u8; 32]).verify(&token, 0).is_err());
        assert!(s.verify("garbage", 0).is_err());
    }

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = AckSigner::load_or_create(dir.path()).unwrap();
        let b = AckSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(a.key, b.key);
        let token = a.sign("t", "g", 10);
        assert!(b.verify(&token, 5).is_ok());
    }
}
