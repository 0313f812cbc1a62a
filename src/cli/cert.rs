//! `nightowl cert issue`: client certificates for agents and syslog
//! senders (mTLS, docs/mtls.md).
//!
//! Issuing is offline: it signs with the CA's key file (the collector's
//! dev CA under `DATA_DIR/tls/`, or any CA given by `--ca-cert/--ca-key`),
//! so it runs on the machine holding that key, like `ca.key` itself. The
//! collector registers a certificate in its token store at its first
//! connection; `nightowl token revoke <id>` (the id printed here) works
//! before that too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::fsutil::write_atomic;
use crate::transport::tls::issue_client_cert;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a client certificate for TENANT (a `urn:nightowl:tenant:`
    /// URI SAN, CN = NAME): writes OUT/NAME.pem and OUT/NAME.key (0600),
    /// prints the id `nightowl token revoke` takes. Offline: signs with
    /// the CA key file, so run it where that key lives.
    Issue {
        /// The tenant the certificate authenticates for (must exist on the
        /// collector when it connects).
        #[arg(long)]
        tenant: String,
        /// The agent's name: the certificate's CN and the files' names.
        #[arg(long)]
        name: String,
        /// Directory for the certificate and key.
        #[arg(long)]
        out: PathBuf,
        /// Collector data dir whose dev CA signs (`DATA_DIR/tls/ca.pem`
        /// and `ca.key`). Default: nightowl-data.
        #[arg(long, conflicts_with_all = ["ca_cert", "ca_key"])]
        data_dir: Option<PathBuf>,
        /// CA certificate to sign with (instead of the dev CA).
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA's private key (PEM).
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// What `cert issue` was asked for.
pub struct IssueArgs {
    pub tenant: String,
    pub name: String,
    pub out: PathBuf,
    /// The CA certificate and its key, PEM.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub days: u32,
}

/// The CA files: `--ca-cert/--ca-key` when given, else the dev CA under
/// `data_dir/tls/`.
pub fn ca_files(
    data_dir: Option<&Path>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf)> {
    match (ca_cert, ca_key) {
        (Some(cert), Some(key)) => Ok((cert, key)),
        (None, None) => {
            let dir = data_dir.unwrap_or(Path::new("nightowl-data")).join("tls");
            Ok((dir.join("ca.pem"), dir.join("ca.key")))
        }
        _ => Err(super::usage("--ca-cert and --ca-key go together")),
    }
}

/// Writes `OUT/NAME.pem` (the certificate) and `OUT/NAME.key` (mode 0600),
/// the name made a safe file name; prints the credential id and
/// fingerprint.
pub fn issue(args: &IssueArgs) -> Result<()> {
    let ca_pem = std::fs::read_to_string(&args.ca_cert)
        .with_context(|| format!("reading CA certificate {}", args.ca_cert.display()))?;
    let ca_key = std::fs::read_to_string(&args.ca_key)
        .with_context(|| format!("reading CA key {}", args.ca_key.display()))?;
    let issued = issue_client_cert(&ca_pem, &ca_key, &args.tenant, &args.name, args.days)
        .map_err(|e| super::usage(format!("{e:#}")))?;
    // The name becomes a file name: keep it to one path component.
    let stem: String = args
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = stem.trim_start_matches('.');
    if stem.is_empty() {
        return Err(super::usage(format!(
            "certificate name {:?} gives no file name",
            args.name
        )));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cert_path = args.out.join(format!("{stem}.pem"));
    let key_path = args.out.join(format!("{stem}.key"));
    // An agent may be using them: replacing its key would lock it out.
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(super::usage(format!(
                "{} exists; remove it or choose another --name or --out",
                path.display()
            )));
        }
    }
    write_atomic(&key_path, issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
    println!("id: {}", issued.identity.id());
    println!("tenant: {}", issued.identity.tenant);
    println!("sha256: {}", issued.identity.sha256);
    println!("certificate: {}", cert_path.display());
    println!("key: {}", key_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_writes_a_cert_naming_the_tenant_and_a_private_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, _) =
            crate::transport::tls::ensure_dev_material(&dir.path().join("tls")).expect("dev CA");
        let (ca_cert, ca_key) = ca_files(Some(dir.path()), None, None).expect("ca files");
        assert_eq!(ca_cert, paths.ca);
        let out = dir.path().join("out");
        issue(&IssueArgs {
            tenant: "acme".into(),
            name: "web1/../x".into(),
            out: out.clone(),
            ca_cert,
            ca_key,
            days: 30,
        })
        .expect("issue");
        let pem = std::fs::read(out.join("web1_.._x.pem")).expect("cert written");
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("one cert")
            .expect("pem");
        let id = crate::transport::tls::ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.tenant, "acme");
        assert_eq!(id.name, "web1/../x");
        let mode = std::fs::metadata(out.join("web1_.._x.key"))
            .expect("key written")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(ca_files(None, Some("a".into()), None).is_err());

        // Never over an existing certificate or key.
        let again = issue(&IssueArgs {
            tenant: "acme".into(),
            name: "web1/../x".into(),
            out: out.clone(),
            ca_cert: paths.ca.clone(),
            ca_key: dir.path().join("tls").join("ca.key"),
            days: 30,
        });
        let err = format!("{:#}", again.expect_err("exists"));
        assert!(err.contains("exists"), "{err}");
        assert_eq!(
            std::fs::read(out.join("web1_.._x.pem")).expect("kept"),
            pem,
            "the first certificate is untouched"
        );
    }
}
