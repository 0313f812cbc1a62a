//! Where backups go: a directory (another disk, a mounted share) or
//! S3-compatible object storage (`s3://bucket/prefix`, through
//! `object_store`). Both hold the same keys:
//!
//! ```text
//! blobs/sha256/<first 2 hex>/<sha256 hex>    content-addressed file bodies
//! backups/<id>/started.json                  written first
//! backups/<id>/manifest.json                 written last: the backup exists
//! ```
//!
//! A write is all or nothing: a directory's files go through a temporary
//! name, fsync and rename; an object store's PUT (or completed multipart
//! upload) is atomic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads and writes move in chunks of this size.
const CHUNK: usize = 1 << 20;
/// Bigger objects go up in parts (S3 caps a single PUT at 5 GiB).
const MULTIPART_ABOVE: u64 = 64 << 20;

#[derive(Clone)]
pub enum Dest {
    Dir(PathBuf),
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        url: String,
    },
}

impl std::fmt::Debug for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Bandwidth cap shared by every read and write of one run (0: none), so
/// a backup does not starve ingest and search of the disk.
pub struct Throttle {
    bytes_per_sec: u64,
    started: Instant,
    moved: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec,
            started: Instant::now(),
            moved: 0,
        }
    }

    pub async fn pace(&mut self, bytes: usize) {
        self.moved += bytes as u64;
        if self.bytes_per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.moved as f64 / self.bytes_per_sec as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// The key of the blob holding content with this SHA-256.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/sha256/{}/{sha256}", &sha256[..2.min(sha256.len())])
}

/// The blob's name: its content's SHA-256, `.zst` when stored compressed
/// (the small stores made in memory, mostly empty pages and counters).
pub fn blob_name(sha256: &str, zstd: bool) -> String {
    match zstd {
        true => format!("{sha256}.zst"),
        false => sha256.to_string(),
    }
}

/// The key of a manifest file's blob.
pub fn blob_key_of(sha256: &str, zstd: bool) -> String {
    match zstd {
        true => format!("{}.zst", blob_key(sha256)),
        false => blob_key(sha256),
    }
}

/// An I/O error on the destination in words an operator acts on.
fn dir_error(op: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    let what = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "out of space".to_string(),
        Some(libc::EACCES) | Some(libc::EPERM) => "not writable (permission denied)".to_string(),
        Some(libc::EROFS) => "not writable (read-only file system)".to_string(),
        Some(libc::ENOTDIR) => "not writable (a path component is not a directory)".to_string(),
        _ => e.to_string(),
    };
    anyhow!("backup destination: {op} {}: {what}", path.display())
}

impl Dest {
    /// `s3://bucket/prefix` or a directory path (made absolute).
    pub fn parse(spec: &str) -> Result<Dest> {
        let spec = spec.trim();
        if spec.is_empty() {
            bail!("empty backup destination");
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("backup destination {spec:?}: no bucket (expected s3://BUCKET/PREFIX)");
            }
            // Credentials, region and endpoint from the usual AWS_*
            // variables (AWS_ENDPOINT and AWS_ALLOW_HTTP for a local
            // S3-compatible server).
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(format!("s3://{bucket}"))
                .build()
                .with_context(|| format!("backup destination {spec}"))?;
            return Ok(Dest::S3 {
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                url: format!("s3://{bucket}/{}", prefix.trim_matches('/')),
            });
        }
        if spec.contains("://") {
            bail!("backup destination {spec:?}: only a directory or s3://BUCKET/PREFIX");
        }
        let path = std::path::absolute(spec)
            .with_context(|| format!("backup destination {spec}: resolving the path"))?;
        Ok(Dest::Dir(path))
    }

    pub fn describe(&self) -> String {
        match self {
            Dest::Dir(p) => p.display().to_string(),
            Dest::S3 { url, .. } => url.clone(),
        }
    }

    fn object(&self, key: &str) -> object_store::path::Path {
        match self {
            Dest::S3 { prefix, .. } if !prefix.is_empty() => {
                object_store::path::Path::from(format!("{prefix}/{key}"))
            }
            _ => object_store::path::Path::from(key),
        }
    }

    fn s3_error(&self, op: &str, key: &str, e: object_store::Error) -> anyhow::Error {
        anyhow!("backup destination {}: {op} {key}: {e}", self.describe())
    }

    /// Writes `bytes` at `key`, all or nothing.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        match self {
            Dest::Dir(root) => {
                let path = root.join(key);
                let tmp = tmp_path(&path);
                ensure_parent(&path).await?;
                let mut file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| dir_error("creating", &tmp, e))?;
                file.write_all(&bytes)
                    .await
                    .map_err(|e| dir_error("writing", &tmp, e))?;
                finish_file(file, &tmp, &path).await
            }
            Dest::S3 { store, .. } => {
                store
                    .put(&self.object(key), PutPayload::from_bytes(bytes))
                    .await
                    .map_err(|e| self.s3_error("writing", key, e))?;
                Ok(())
            }
        }
    }

    /// Copies `len` bytes of the file at `from` to `key`, checking on the
    /// way that they still hash to `sha256` (a staged file never changes;
    /// this catches a bad disk before the manifest vouches for it).
    pub async fn put_file(
        &self,
        key: &str,
        from: &Path,
        len: u64,
        sha256: &str,
        throttle: &mut Throttle,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        let mut source = tokio::fs::File::open(from)
            .await
            .with_context(|| format!("opening {}", from.display()))?;
        let mut hasher = Sha256::new();
        let mut left = len;
        let mut buf = vec![0u8; CHUNK];
        enum Sink {
            File(tokio::fs::File, PathBuf, PathBuf),
            Parts(WriteMultipart),
            Whole(Vec<u8>),
        }
        let mut sink = match self {
            Dest::Dir(root) => {
                let path = root.join(key);
                let tmp = tmp_path(&path);
                ensure_parent(&path).await?;
                let file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| dir_error("creating", &tmp, e))?;
                Sink::File(file, tmp, path)
            }
            Dest::S3 { store, .. } if len > MULTIPART_ABOVE => {
                let upload = store
                    .put_multipart(&self.object(key))
                    .await
                    .map_err(|e| self.s3_error("starting an upload of", key, e))?;
                Sink::Parts(WriteMultipart::new_with_chunk_size(upload, 16 << 20))
            }
            Dest::S3 { .. } => Sink::Whole(Vec::with_capacity(len as usize)),
        };
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = source
                .read(&mut buf[..want])
                .await
                .with_context(|| format!("reading {}", from.display()))?;
            if n == 0 {
                bail!(
                    "{} is shorter than the {len} bytes it had at the cut",
                    from.display()
                );
            }
            hasher.update(&buf[..n]);
            match &mut sink {
                Sink::File(file, tmp, _) => file
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| dir_error("writing", tmp, e))?,
                Sink::Parts(parts) => {
                    parts
                        .wait_for_capacity(4)
                        .await
                        .map_err(|e| self.s3_error("uploading", key, e))?;
                    parts.write(&buf[..n]);
                }
                Sink::Whole(all) => all.extend_from_slice(&buf[..n]),
            }
            left -= n as u64;
            throttle.pace(n).await;
            progress(n as u64);
        }
        let got = hex::encode(hasher.finalize());
        if got != sha256 {
            if let Sink::File(_, tmp, _) = &sink {
                let _ = tokio::fs::remove_file(tmp).await;
            }
            bail!(
                "{} changed while it was copied (sha256 {got}, {sha256} when hashed)",
                from.display()
            );
        }
        match sink {
            Sink::File(file, tmp, path) => finish_file(file, &tmp, &path).await,
            Sink::Parts(parts) => {
                parts
                    .finish()
                    .await
                    .map_err(|e| self.s3_error("finishing the upload of", key, e))?;
                Ok(())
            }
            Sink::Whole(all) => self.put(key, Bytes::from(all)).await,
        }
    }

    /// The object at `key`; `Ok(None)` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self {
            Dest::Dir(root) => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            Dest::S3 { store, .. } => match store.get(&self.object(key)).await {
                Ok(got) => Ok(Some(
                    got.bytes()
                        .await
                        .map_err(|e| self.s3_error("reading", key, e))?,
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.s3_error("reading", key, e)),
            },
        }
    }

    /// Streams the object at `key` into `to`, hashing it: the SHA-256 hex.
    pub async fn get_to_file(
        &self,
        key: &str,
        to: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<String> {
        let mut out = tokio::fs::File::create(to)
            .await
            .with_context(|| format!("creating {}", to.display()))?;
        let mut hasher = Sha256::new();
        match self {
            Dest::Dir(root) => {
                let path = root.join(key);
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = file
                        .read(&mut buf)
                        .await
                        .with_context(|| format!("reading {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])
                        .await
                        .with_context(|| format!("writing {}", to.display()))?;
                    progress(n as u64);
                }
            }
            Dest::S3 { store, .. } => {
                let got = store
                    .get(&self.object(key))
                    .await
                    .map_err(|e| self.s3_error("reading", key, e))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.s3_error("reading", key, e))?;
                    hasher.update(&chunk);
                    out.write_all(&chunk)
                        .await
                        .with_context(|| format!("writing {}", to.display()))?;
                    progress(chunk.len() as u64);
                }
            }
        }
        out.sync_all()
            .await
            .with_context(|| format!("syncing {}", to.display()))?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Keys under `prefix` (relative to the destination's root).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self {
            Dest::Dir(root) => {
                let root = root.clone();
                let start = root.join(prefix);
                tokio::task::spawn_blocking(move || {
                    let mut keys = Vec::new();
                    list_dir(&root, &start, &mut keys)?;
                    keys.sort();
                    Ok(keys)
                })
                .await
                .context("listing the backup destination")?
            }
            Dest::S3 {
                store, prefix: p, ..
            } => {
                let location = self.object(prefix);
                let mut stream = store.list(Some(&location));
                let mut keys = Vec::new();
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| self.s3_error("listing", prefix, e))?;
                    let full = meta.location.to_string();
                    let key = match p.is_empty() {
                        true => full,
                        false => full
                            .strip_prefix(&format!("{p}/"))
                            .map(str::to_string)
                            .unwrap_or(full),
                    };
                    keys.push(key);
                }
                keys.sort();
                Ok(keys)
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Dest::Dir(root) => {
                let path = root.join(key);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(dir_error("deleting", &path, e)),
                }
            }
            Dest::S3 { store, .. } => match store.delete(&self.object(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.s3_error("deleting", key, e)),
            },
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

async fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| dir_error("creating", parent, e))?;
    }
    Ok(())
}

/// fsync, rename into place, fsync the directory.
async fn finish_file(file: tokio::fs::File, tmp: &Path, path: &Path) -> Result<()> {
    file.sync_all()
        .await
        .map_err(|e| dir_error("syncing", tmp, e))?;
    drop(file);
    tokio::fs::rename(tmp, path)
        .await
        .map_err(|e| dir_error("renaming into", path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = tokio::fs::File::open(parent).await {
            let _ = dir.sync_all().await;
        }
    }
    Ok(())
}

fn list_dir(root: &Path, dir: &Path, keys: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?
            .is_dir()
        {
            list_dir(root, &path, keys)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            if let Some(key) = rel.to_str() {
                keys.push(key.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_keeps_whole_objects_and_lists_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dest");
        let dest = Dest::parse(root.to_str().expect("utf8")).expect("parse");
        dest.put("backups/a/manifest.json", Bytes::from_static(b"{}"))
            .await
            .expect("put");
        let src = dir.path().join("src");
        std::fs::write(&src, b"hello").expect("write");
        let sha = hex::encode(Sha256::digest(b"hello"));
        let mut throttle = Throttle::new(0);
        dest.put_file(&blob_key(&sha), &src, 5, &sha, &mut throttle, &mut |_| {})
            .await
            .expect("put_file");
        let keys = dest.list("").await.expect("list");
        assert_eq!(
            keys,
            ["backups/a/manifest.json".to_string(), blob_key(&sha)]
        );
        assert_eq!(
            dest.get(&blob_key(&sha)).await.expect("get").as_deref(),
            Some(&b"hello"[..])
        );
        assert!(dest.get("nothing").await.expect("get").is_none());
        // A source that does not hash as announced never lands.
        let err = dest
            .put_file("blobs/x", &src, 5, "00", &mut throttle, &mut |_| {})
            .await
            .expect_err("mismatch");
        assert!(format!("{err:#}").contains("changed while it was copied"));
        assert!(dest.get("blobs/x").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn an_unwritable_directory_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let dest = Dest::Dir(file.join("sub"));
        let err = dest
            .put("backups/a/started.json", Bytes::from_static(b"{}"))
            .await
            .expect_err("not a dir");
        assert!(format!("{err:#}").contains("not writable"), "{err:#}");
    }
}
