//! TLS material: the dev CA generated on first start, and rustls configs.
//!
//! Every config is built with the `ring` provider explicitly, so no
//! process-wide default provider has to be installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use crate::auth::{cert_id, ClientIdentity};
use crate::crypto::load_certs;
use crate::fsutil::write_atomic;

/// Paths of the server's TLS material.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long the dev CA is valid: long enough not to be redistributed
/// often, short enough that a stolen `ca.key` does not sign for ever.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long the dev server certificate is valid.
pub const SERVER_VALIDITY_DAYS: i64 = 365;
/// A server certificate expiring sooner than this is renewed on start.
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// The CA expiring sooner than this is warned about on start: rotating it
/// means giving agents the new `ca.pem` (docs/tls.md).
pub const CA_WARN_WITHIN_DAYS: i64 = 90;

/// Creates `dir/{ca.pem,ca.key,server.pem,server.key}` unless present,
/// and renews the server certificate (with the CA's key) when it expires
/// within [`RENEW_WITHIN_DAYS`].
///
/// The CA is valid [`CA_VALIDITY_DAYS`], the server certificate
/// [`SERVER_VALIDITY_DAYS`]. The server certificate names localhost,
/// 127.0.0.1, ::1 and this machine's hostname, so the embedded default
/// works for local agents and browsers that trust `ca.pem`. Returns the
/// paths and whether they were just created.
pub fn ensure_dev_material(dir: &Path) -> Result<(TlsPaths, bool)> {
    let paths = TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    finish_renewal(&paths)?;
    if paths.ca.exists() && paths.cert.exists() && paths.key.exists() {
        check_validity(dir, &paths)?;
        return Ok((paths, false));
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().context("generating CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nightowl dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    ca_params.serial_number = Some(random_serial());
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing CA")?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let (server_cert, server_key) = server_certificate(&issuer)?;

    write_atomic(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&paths.key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&paths.cert, server_cert.pem().as_bytes(), 0o600)?;
    // ca.pem last: its presence marks the set as complete.
    write_atomic(&paths.ca, ca_cert.pem().as_bytes(), 0o600)?;
    Ok((paths, true))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    rcgen::SerialNumber::from_slice(&serial)
}

/// A new server key and certificate signed by `issuer`.
fn server_certificate(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
) -> Result<(rcgen::Certificate, KeyPair)> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = crate::fsutil::hostname() {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let server_key = KeyPair::generate().context("generating server key")?;
    let mut server_params = CertificateParams::new(names).context("server params")?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "nightowl collector");
    server_params.not_before = now - time::Duration::hours(1);
    server_params.not_after = now + time::Duration::days(SERVER_VALIDITY_DAYS);
    server_params.serial_number = Some(random_serial());
    let server_cert = server_params
        .signed_by(&server_key, issuer)
        .context("signing server certificate")?;
    Ok((server_cert, server_key))
}

/// The `notAfter` of the first certificate in a PEM file, unix seconds.
pub fn not_after(pem_path: &Path) -> Result<i64> {
    let certs = load_certs(pem_path)?;
    let der = certs
        .first()
        .with_context(|| format!("{} holds no certificate", pem_path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("{}: unparsable certificate: {e}", pem_path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Renews the server certificate when it expires soon; warns about a CA
/// that does (or that an older version made valid until the year 4096).
fn check_validity(dir: &Path, paths: &TlsPaths) -> Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;
    let ca_until = not_after(&paths.ca)?;
    if ca_until - now < CA_WARN_WITHIN_DAYS * day {
        tracing::warn!(ca = %paths.ca.display(), days_left = (ca_until - now) / day, "the dev CA expires soon: rotate it and give agents the new ca.pem (docs/tls.md)");
    } else if ca_until - now > (CA_VALIDITY_DAYS + 366) * day {
        tracing::warn!(ca = %paths.ca.display(), "the dev CA was made by an older version and is valid for centuries: rotate it (docs/tls.md)");
    }
    let server_until = not_after(&paths.cert)?;
    if server_until - now >= RENEW_WITHIN_DAYS * day {
        return Ok(());
    }
    let ca_key_path = dir.join("ca.key");
    let (ca_pem, ca_key_pem) = match (
        fs::read_to_string(&paths.ca),
        fs::read_to_string(&ca_key_path),
    ) {
        (Ok(ca), Ok(key)) => (ca, key),
        _ => {
            tracing::warn!(cert = %paths.cert.display(), days_left = (server_until - now) / day, "the server certificate expires soon and {} is not there to renew it", ca_key_path.display());
            return Ok(());
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing {}", ca_key_path.display()))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
        .with_context(|| format!("parsing {}", paths.ca.display()))?;
    let (cert, key) = server_certificate(&issuer)?;
    // Both new files complete before either replaces the old one; a crash
    // in between is finished by `finish_renewal` on the next start.
    write_atomic(&pending(&paths.key), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&pending(&paths.cert), cert.pem().as_bytes(), 0o600)?;
    finish_renewal(paths)?;
    tracing::info!(cert = %paths.cert.display(), days = SERVER_VALIDITY_DAYS, "renewed the dev server certificate (the old one expired within {RENEW_WITHIN_DAYS} days)");
    Ok(())
}

fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Moves a renewed key and certificate in place: the key first, then the
/// certificate, whose `.new` file marks a renewal as complete. A lone
/// `server.key.new` is an interrupted renewal and is dropped.
fn finish_renewal(paths: &TlsPaths) -> Result<()> {
    let (key_new, cert_new) = (pending(&paths.key), pending(&paths.cert));
    if cert_new.exists() {
        if key_new.exists() {
            fs::rename(&key_new, &paths.key)
                .with_context(|| format!("renaming {}", key_new.display()))?;
        }
        fs::rename(&cert_new, &paths.cert)
            .with_context(|| format!("renaming {}", cert_new.display()))?;
    } else if key_new.exists() {
        fs::remove_file(&key_new).with_context(|| format!("removing {}", key_new.display()))?;
    }
    Ok(())
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
    server_config_with(cert, key, versions, alpn, None)
}

/// Whether and how a listener asks for client certificates (`[tls]
/// client_ca`, `require_client_cert`).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// PEM certificates of the CAs that sign client certificates.
    pub ca: PathBuf,
    /// Refuse the handshake without a certificate (else a token suffices).
    pub required: bool,
}

/// [`server_config`], asking for a client certificate when `clients` is
/// set and verifying its chain against `clients.ca`.
pub fn server_config_with(
    cert: &Path,
    key: &Path,
    versions: Versions,
    alpn: &[&[u8]],
    clients: Option<&ClientAuth>,
) -> Result<Arc<ServerConfig>> {
    let versions: &[&rustls::SupportedProtocolVersion] = match versions {
        Versions::Tls13Only => &[&rustls::version::TLS13],
        Versions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => builder.with_client_cert_verifier(client_verifier(clients)?),
    };
    let mut config = builder
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

fn client_verifier(
    clients: &ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&clients.ca)? {
        roots.add(cert).with_context(|| {
            format!("adding client CA certificate from {}", clients.ca.display())
        })?;
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    // Without `required`, a client sending no certificate still completes
    // the handshake and authenticates with its token; one sending a bad
    // certificate is refused either way.
    let builder = if clients.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .with_context(|| format!("client CA {}", clients.ca.display()))
}

/// A TLS 1.3 client that trusts only the certificates in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    client_config_with(ca, None)
}

/// [`client_config`], presenting the certificate chain and key of
/// `identity` (`(cert, key)` PEM files) when the collector asks for one.
pub fn client_config_with(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("adding CA certificate from {}", ca.display()))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .with_context(|| {
                format!(
                    "using client certificate {} with key {}",
                    cert.display(),
                    key.display()
                )
            })?,
    };
    Ok(Arc::new(config))
}

/// The SAN URI prefix naming a client certificate's tenant.
pub const TENANT_URI_PREFIX: &str = "urn:nightowl:tenant:";

/// Reading a verified certificate; the identity itself is the token
/// store's ([`crate::auth::ClientIdentity`]).
impl ClientIdentity {
    /// Reads the identity from a certificate's DER. The chain must have
    /// been verified already: this only reads names.
    pub fn from_der(der: &[u8]) -> Result<ClientIdentity> {
        use sha2::Digest;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("unparsable client certificate: {e}"))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| anyhow::anyhow!("client certificate {name:?}: bad subjectAltName: {e}"))?;
        let uris = san.iter().flat_map(|san| {
            san.value.general_names.iter().filter_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
        });
        let tenant =
            tenant_from_uris(uris).with_context(|| format!("client certificate {name:?}"))?;
        Ok(ClientIdentity {
            tenant,
            name,
            sha256: hex::encode(sha2::Sha256::digest(der)),
        })
    }
}

/// The one tenant named by `urn:nightowl:tenant:` URIs; other URIs are
/// ignored. None, or two different tenants, is an error: the tenant must
/// come from the certificate and be unambiguous.
pub fn tenant_from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut tenant: Option<&str> = None;
    for uri in uris {
        // URN prefixes are case-insensitive (RFC 8141); the tenant is not.
        let Some(prefix) = uri.get(..TENANT_URI_PREFIX.len()) else {
            continue;
        };
        if !prefix.eq_ignore_ascii_case(TENANT_URI_PREFIX) {
            continue;
        }
        let name = &uri[TENANT_URI_PREFIX.len()..];
        crate::auth::validate_tenant(name)
            .with_context(|| format!("bad tenant in subjectAltName URI {uri:?}"))?;
        match tenant {
            Some(seen) if seen != name => {
                bail!("names two tenants ({seen:?} and {name:?}); it must name one")
            }
            _ => tenant = Some(name),
        }
    }
    tenant.map(str::to_string).with_context(|| {
        format!("names no tenant: expected a subjectAltName URI {TENANT_URI_PREFIX}<tenant>")
    })
}

/// A client certificate and its key, as PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub identity: ClientIdentity,
}

/// Issues a client certificate for `tenant`, named `name` (its CN),
/// valid for `days`, signed by the CA in `ca_cert_pem` / `ca_key_pem`.
/// The key is generated here (ECDSA P-256) and never leaves the caller.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    tenant: &str,
    name: &str,
    days: u32,
) -> Result<IssuedCert> {
    crate::auth::validate_tenant(tenant)?;
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        bail!("invalid certificate name {name:?}: use 1-64 printable characters");
    }
    if days == 0 {
        bail!("a certificate must be valid for at least 1 day");
    }
    let ca_key = KeyPair::from_pem(ca_key_pem).context("parsing the CA key")?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, &ca_key)
        .context("parsing the CA certificate")?;
    let key = KeyPair::generate().context("generating the client key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("client params")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(format!("{TENANT_URI_PREFIX}{tenant}"))
            .context("tenant URI")?,
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks behind the CA's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(random_serial());
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the client certificate")?;
    let identity = ClientIdentity::from_der(cert.der())?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        identity,
    })
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
    use rustls::pki_types::CertificateDer;

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
    fn dev_material_has_sane_validity_and_renews_near_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, _) = ensure_dev_material(dir.path()).expect("create");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let days = |t: i64| (t - now) / 86_400;
        assert!(
            (CA_VALIDITY_DAYS - 1..=CA_VALIDITY_DAYS)
                .contains(&days(not_after(&paths.ca).expect("ca"))),
            "CA valid for ~{CA_VALIDITY_DAYS} days"
        );
        let server_until = not_after(&paths.cert).expect("cert");
        assert!((SERVER_VALIDITY_DAYS - 1..=SERVER_VALIDITY_DAYS).contains(&days(server_until)));

        // A server certificate 10 days from expiry, signed by the same CA.
        let ca_pem = fs::read_to_string(&paths.ca).expect("ca");
        let ca_key =
            KeyPair::from_pem(&fs::read_to_string(dir.path().join("ca.key")).expect("key"))
                .expect("key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).expect("issuer");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(355);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        let old = params.signed_by(&key, &issuer).expect("sign");
        write_atomic(&paths.cert, old.pem().as_bytes(), 0o600).expect("write");
        write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600).expect("write");
        assert!(days(not_after(&paths.cert).expect("old")) < RENEW_WITHIN_DAYS);

        let (_, created) = ensure_dev_material(dir.path()).expect("renew");
        assert!(!created);
        assert!(days(not_after(&paths.cert).expect("renewed")) >= SERVER_VALIDITY_DAYS - 1);
        assert_eq!(
            fs::read_to_string(&paths.ca).expect("ca"),
            ca_pem,
            "same CA"
        );
        server_config(&paths.cert, &paths.key, Versions::Tls13Only, &[]).expect("key matches");
        let roots = client_config(&paths.ca).expect("client config");
        drop(roots);

        // A renewal interrupted after both files were written is finished.
        let renewed = fs::read(&paths.cert).expect("cert");
        fs::rename(&paths.cert, pending(&paths.cert)).expect("stage");
        fs::write(&paths.cert, b"stale").expect("stale");
        ensure_dev_material(dir.path()).expect("finish");
        assert_eq!(fs::read(&paths.cert).expect("cert"), renewed);
        assert!(!pending(&paths.cert).exists());
    }

    #[test]
    fn the_tenant_comes_from_one_tenant_uri() {
        let t = |uris: &[&str]| tenant_from_uris(uris.iter().copied());
        assert_eq!(t(&["urn:nightowl:tenant:acme"]).expect("one"), "acme");
        assert_eq!(
            t(&["https://example.com/x", "URN:NightOwl:Tenant:acme"]).expect("case of the prefix"),
            "acme"
        );
        assert_eq!(
            t(&["urn:nightowl:tenant:acme", "urn:nightowl:tenant:acme"]).expect("repeated"),
            "acme"
        );
        let err = |uris: &[&str]| format!("{:#}", t(uris).expect_err("refused"));
        assert!(err(&[]).contains("names no tenant"));
        assert!(err(&["https://acme.example"]).contains("names no tenant"));
        assert!(err(&["urn:nightowl:tenant:"]).contains("invalid tenant name"));
        assert!(err(&["urn:nightowl:tenant:../etc"]).contains("invalid tenant name"));
        assert!(err(&["urn:nightowl:tenant:ACME"]).contains("invalid tenant name"));
        assert!(err(&["urn:nightowl:tenant:a", "urn:nightowl:tenant:b"]).contains("two tenants"));
        assert!(err(&["urn:nightowl:ten"]).contains("names no tenant"));
    }

    #[test]
    fn an_issued_certificate_names_its_tenant_and_verifies_as_a_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, _) = ensure_dev_material(dir.path()).expect("create");
        let ca_pem = fs::read_to_string(&paths.ca).expect("ca");
        let ca_key = fs::read_to_string(dir.path().join("ca.key")).expect("ca key");
        let issued = issue_client_cert(&ca_pem, &ca_key, "acme", "web1", 30).expect("issue");
        assert_eq!(issued.identity.tenant, "acme");
        assert_eq!(issued.identity.name, "web1");
        assert_eq!(issued.identity.sha256.len(), 64);
        assert!(issued.identity.id().starts_with("cert-"));
        assert_eq!(issued.identity.id().len(), 21);

        // The CA's verifier accepts it for client auth.
        let der = load_certs_from(&issued.cert_pem);
        let clients = ClientAuth {
            ca: paths.ca.clone(),
            required: true,
        };
        let verifier = client_verifier(&clients).expect("verifier");
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .expect("verifies against the CA");

        // Another CA's certificate does not.
        let other = tempfile::tempdir().expect("tempdir");
        let (other_paths, _) = ensure_dev_material(other.path()).expect("other CA");
        let other_pem = fs::read_to_string(&other_paths.ca).expect("ca");
        let other_key = fs::read_to_string(other.path().join("ca.key")).expect("key");
        let foreign = issue_client_cert(&other_pem, &other_key, "acme", "web1", 30).expect("issue");
        assert!(verifier
            .verify_client_cert(
                &load_certs_from(&foreign.cert_pem),
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());

        // Bad requests are refused with the reason.
        for (tenant, name, days, why) in [
            ("Acme", "web1", 30, "invalid tenant name"),
            ("acme", "", 30, "invalid certificate name"),
            ("acme", "a\nb", 30, "invalid certificate name"),
            ("acme", "web1", 0, "at least 1 day"),
        ] {
            let err = issue_client_cert(&ca_pem, &ca_key, tenant, name, days)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(why), "{tenant} {name} {days}: {err}");
        }
        assert!(issue_client_cert(&ca_pem, "not a key", "acme", "w", 1).is_err());
        assert!(issue_client_cert("not a cert", &ca_key, "acme", "w", 1).is_err());
    }

    fn load_certs_from(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM")
    }

    #[test]
    fn a_certificate_without_a_tenant_or_not_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, _) = ensure_dev_material(dir.path()).expect("create");
        // The server certificate has DNS names only.
        let server = load_certs(&paths.cert).expect("server cert");
        let err = format!(
            "{:#}",
            ClientIdentity::from_der(&server[0]).expect_err("no tenant")
        );
        assert!(err.contains("names no tenant"), "{err}");
        assert!(err.contains("nightowl collector"), "names the CN: {err}");
        for garbage in [&b""[..], b"\x30\x03\x02\x01", &server[0][..40]] {
            assert!(ClientIdentity::from_der(garbage).is_err());
        }
    }

    #[test]
    fn server_name_handles_ipv6_and_hostnames() {
        assert!(server_name("[::1]:7400").is_ok());
        assert!(server_name("localhost:7400").is_ok());
        assert!(server_name("127.0.0.1:7400").is_ok());
    }
}
