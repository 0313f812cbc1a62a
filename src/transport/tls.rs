//! TLS material: the dev CA generated on first start, and rustls configs.
//!
//! Every config is built with the `ring` provider explicitly, so no
//! process-wide default provider has to be installed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Paths of the server's TLS material.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates `dir/{ca.pem,ca.key,server.pem,server.key}` unless present.
///
/// The server certificate names localhost, 127.0.0.1, ::1 and this machine's
/// hostname, so the embedded default works for local agents and browsers
/// that trust `ca.pem`. Returns the paths and whether they were just created.
pub fn ensure_dev_material(dir: &Path) -> Result<(TlsPaths, bool)> {
    let paths = TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if paths.ca.exists() && paths.cert.exists() && paths.key.exists() {
        return Ok((paths, false));
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let ca_key = KeyPair::generate().context("generating CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nightowl dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing CA")?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = hostname() {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let server_key = KeyPair::generate().context("generating server key")?;
    let mut server_params = CertificateParams::new(names).context("server params")?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "nightowl collector");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .context("signing server certificate")?;

    write_file(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&paths.key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.cert, server_cert.pem().as_bytes(), 0o644)?;
    // ca.pem last: its presence marks the set as complete.
    write_file(&paths.ca, ca_cert.pem().as_bytes(), 0o644)?;
    Ok((paths, true))
}

fn hostname() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Writes a file with `mode`, fsynced, replacing any previous content.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate found", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("parsing PEM key in {}", path.display()))?
        .with_context(|| format!("{}: no PEM private key found", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which TLS versions a listener accepts.
#[derive(Debug, Clone, Copy)]
pub enum Versions {
    /// The agent link: TLS 1.3 only.
    Tls13Only,
    /// HTTPS for browsers and curl: TLS 1.2 and 1.3.
    Tls12And13,
}

pub fn server_config(
    cert: &Path,
    key: &Path,
    versions: Versions,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let versions: &[&rustls::SupportedProtocolVersion] = match versions {
        Versions::Tls13Only => &[&rustls::version::TLS13],
        Versions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .with_context(|| {
            format!(
                "using certificate {} with key {}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS 1.3 client that trusts only the certificates in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("adding CA certificate from {}", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify the server certificate against, from `host:port`.
pub fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("invalid server name in {addr:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_material_is_created_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, created) = ensure_dev_material(dir.path()).expect("create");
        assert!(created);
        let first = fs::read(&paths.ca).expect("ca");
        let (_, created_again) = ensure_dev_material(dir.path()).expect("reuse");
        assert!(!created_again);
        assert_eq!(fs::read(&paths.ca).expect("ca"), first);
        server_config(&paths.cert, &paths.key, Versions::Tls13Only, &[]).expect("server config");
        client_config(&paths.ca).expect("client config");
        let mode = fs::metadata(dir.path().join("ca.key"))
            .expect("meta")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn server_name_handles_ipv6_and_hostnames() {
        assert!(server_name("[::1]:7400").is_ok());
        assert!(server_name("localhost:7400").is_ok());
        assert!(server_name("127.0.0.1:7400").is_ok());
    }
}
