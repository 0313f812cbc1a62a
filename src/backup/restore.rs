//! The offline side of backups: restore into a new data dir, verify (a
//! trial restore into a temporary dir, then every index opened and the
//! audit chain walked), list. No collector is needed: the CLI reads the
//! destination itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::Digest;

use super::dest::blob_key_of;
use super::{list_backups, load_manifest, Dest, Manifest};

/// The backup named `id`, or the newest complete one.
pub async fn resolve_id(dest: &Dest, id: Option<&str>) -> Result<String> {
    if let Some(id) = id {
        return Ok(id.to_string());
    }
    let listing = list_backups(dest).await?;
    match listing.complete.last() {
        Some(id) => Ok(id.clone()),
        None if !listing.incomplete.is_empty() => bail!(
            "{}: no complete backup; incomplete (interrupted, no manifest): {}",
            dest.describe(),
            listing.incomplete.join(", ")
        ),
        None => bail!("{}: no backup there", dest.describe()),
    }
}

/// How the restored data dir got its audit key.
#[derive(Debug, Clone)]
pub enum KeyPlaced {
    /// Copied from this file to the restored dir's key location.
    Copied { from: PathBuf, to: PathBuf },
    /// The key location already held this very key.
    AlreadyThere(PathBuf),
    /// None found: the collector needs it (or `--audit-new-chain`).
    Missing {
        looked: Vec<PathBuf>,
        wanted: PathBuf,
    },
}

pub struct Restored {
    pub manifest: Manifest,
    pub key: KeyPlaced,
}

/// Writes every file of the backup into `into` (created; must not hold
/// anything), checking each one's SHA-256, then starts the WAL at the
/// backup's position. `progress` gets the bytes written.
pub async fn materialize(
    dest: &Dest,
    manifest: &Manifest,
    into: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<()> {
    for file in &manifest.files {
        let rel = Path::new(&file.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "backup {}: refusing the file path {:?} (outside the data dir)",
                manifest.id,
                file.path
            );
        }
        let target = into.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let key = blob_key_of(&file.sha256, file.zstd);
        let got = if file.zstd {
            let packed = dest
                .get(&key)
                .await?
                .with_context(|| format!("restoring {}: no blob {key}", file.path))?;
            let bytes = zstd::stream::decode_all(&packed[..]).with_context(|| {
                format!(
                    "restoring {}: blob {key} is not a whole zstd frame",
                    file.path
                )
            })?;
            std::fs::write(&target, &bytes)
                .with_context(|| format!("writing {}", target.display()))?;
            progress(bytes.len() as u64);
            hex::encode(sha2::Sha256::digest(&bytes))
        } else {
            dest.get_to_file(&key, &target, progress)
                .await
                .with_context(|| format!("restoring {} from blob {key}", file.path))?
        };
        if got != file.sha256 {
            bail!(
                "checksum mismatch: {} (blob {key} in {}): expected sha256 {}, read {got}",
                file.path,
                dest.describe(),
                file.sha256
            );
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode & 0o777))
            .with_context(|| format!("setting the mode of {}", target.display()))?;
    }
    crate::wal::Wal::create_at(&into.join("wal"), manifest.wal_position)
        .context("starting the restored WAL")?;
    Ok(())
}

/// Restores backup `id` of `dest` into `data_dir`, which must be missing
/// or empty. The files land in a sibling directory first and are renamed
/// into place at the end: an interrupted restore leaves no half data dir.
pub async fn restore(
    dest: &Dest,
    id: &str,
    data_dir: &Path,
    audit_key: Option<&Path>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Restored> {
    let data_dir = std::path::absolute(data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    if let Ok(mut entries) = std::fs::read_dir(&data_dir) {
        if entries.next().is_some() {
            return Err(crate::error::usage(format!(
                "{} is not empty: restore into a new data dir",
                data_dir.display()
            )));
        }
    }
    let manifest = load_manifest(dest, id).await?;
    let name = data_dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no name", data_dir.display()))?
        .to_string_lossy()
        .to_string();
    let staging = data_dir.with_file_name(format!(".{name}.restoring"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing an earlier attempt {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", staging.display()))?;
    materialize(dest, &manifest, &staging, progress).await?;
    if data_dir.exists() {
        std::fs::remove_dir(&data_dir)
            .with_context(|| format!("replacing the empty {}", data_dir.display()))?;
    }
    std::fs::rename(&staging, &data_dir)
        .with_context(|| format!("moving the restored files to {}", data_dir.display()))?;
    if let Some(parent) = data_dir.parent() {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    let key = place_audit_key(&manifest, &data_dir, audit_key)?;
    Ok(Restored { manifest, key })
}

/// The audit key the backup's log was written with: `explicit`
/// (`--audit-key`, `$NIGHTOWL_AUDIT_KEY_FILE`), else the path the manifest
/// recorded (same host).
fn find_audit_key(manifest: &Manifest, explicit: Option<&Path>) -> (Option<PathBuf>, Vec<PathBuf>) {
    let mut looked = Vec::new();
    let env = std::env::var_os("NIGHTOWL_AUDIT_KEY_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    for candidate in [
        explicit.map(Path::to_path_buf),
        env,
        manifest.audit_key.as_ref().map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    {
        if candidate.is_file() {
            return (Some(candidate), looked);
        }
        looked.push(candidate);
    }
    (None, looked)
}

fn place_audit_key(
    manifest: &Manifest,
    data_dir: &Path,
    explicit: Option<&Path>,
) -> Result<KeyPlaced> {
    let wanted = crate::audit::default_key_path(data_dir)?;
    let (found, looked) = find_audit_key(manifest, explicit);
    let Some(from) = found else {
        return Ok(KeyPlaced::Missing { looked, wanted });
    };
    let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
    if wanted.exists() {
        let there =
            std::fs::read(&wanted).with_context(|| format!("reading {}", wanted.display()))?;
        if there == bytes {
            return Ok(KeyPlaced::AlreadyThere(wanted));
        }
        bail!(
            "{} already holds another audit key; the restored log was written with {}",
            wanted.display(),
            from.display()
        );
    }
    if let Some(dir) = wanted.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&wanted, &bytes, 0o600)?;
    Ok(KeyPlaced::Copied { from, to: wanted })
}

/// What `backup verify` found.
pub struct Verified {
    pub manifest: Manifest,
    pub problems: Vec<String>,
    pub docs: u64,
    pub audit_entries: Option<u64>,
    pub incomplete: Vec<String>,
}

/// Checks backup `id`: every blob's checksum (by restoring it into a
/// temporary dir under `scratch`), every index opening with the documents
/// the manifest counts, the rule snapshot, and the audit chain (with the
/// key found as for a restore).
pub async fn verify(
    dest: &Dest,
    id: &str,
    audit_key: Option<&Path>,
    scratch: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Verified> {
    let manifest = load_manifest(dest, id).await?;
    let incomplete = list_backups(dest).await?.incomplete;
    let trial = TrialDir(scratch.join(format!(
        "nightowl-verify-{}-{}",
        std::process::id(),
        crate::time::now_nanos()
    )));
    let data = trial.0.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    materialize(dest, &manifest, &data, progress).await?;
    let mut problems = Vec::new();
    let mut docs = 0;
    for p in &manifest.partitions {
        let dir = data.join(&p.dir);
        match open_count(&dir) {
            Ok(n) if n == p.docs => docs += n,
            Ok(n) => problems.push(format!(
                "{}: {n} documents, the manifest says {}",
                p.dir, p.docs
            )),
            Err(e) => problems.push(format!("{}: does not open: {e:#}", p.dir)),
        }
    }
    let snapshot = data.join("rules").join("state.snapshot");
    if snapshot.exists() {
        if let Err(e) = crate::detect::snapshot::read(&snapshot) {
            problems.push(format!("rules/state.snapshot: {e}"));
        }
    }
    let mut audit_entries = None;
    if data.join("audit").join("audit.log").exists() {
        let (found, looked) = find_audit_key(&manifest, audit_key);
        match found {
            None => problems.push(format!(
                "audit chain not verified: no audit key (looked at {}); pass --audit-key",
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(path) => {
                let key = crate::audit::AuditKey::load(&path)?;
                match crate::audit::verify_data_dir(&data, Some(&key), &[]) {
                    Ok(report) if report.intact() => audit_entries = Some(report.entries),
                    Ok(report) => {
                        for p in &report.problems {
                            problems.push(format!("audit: {p}"));
                        }
                    }
                    Err(e) => problems.push(format!("audit: {e:#}")),
                }
            }
        }
    }
    Ok(Verified {
        manifest,
        problems,
        docs,
        audit_entries,
        incomplete,
    })
}

fn open_count(dir: &Path) -> Result<u64> {
    let index = tantivy::Index::open_in_dir(dir)?;
    let reader = index.reader()?;
    Ok(reader.searcher().num_docs())
}

/// The trial restore's directory, removed however `verify` ends.
struct TrialDir(PathBuf);

impl Drop for TrialDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
