//! File-system helpers every stage shares: replacing a file durably, an
//! exclusive lock on a directory, the machine's host name. Nothing here
//! knows what the files hold.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Replaces `path` with `content` (file mode `mode`) so that after a crash
/// it holds either the old content or the new, never a mix: written to
/// `path` with the extension `tmp`, fsynced, renamed over `path`, and the
/// directory fsynced so the rename itself survives a power loss.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    write_atomic_via(path, &path.with_extension("tmp"), content, mode)
}

/// [`write_atomic`] through a temporary file named by the caller.
pub fn write_atomic_via(path: &Path, tmp: &Path, content: &[u8], mode: u32) -> Result<()> {
    replace(path, tmp, content, mode, true)
}

/// [`write_atomic_via`] without its fsyncs, for a file rewritten every
/// second whose loss in a crash costs nothing (the agent's status): the
/// rename still keeps a reader from seeing half a file.
pub fn replace_via(path: &Path, tmp: &Path, content: &[u8], mode: u32) -> Result<()> {
    replace(path, tmp, content, mode, false)
}

fn replace(path: &Path, tmp: &Path, content: &[u8], mode: u32, durable: bool) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if durable {
        if let Some(dir) = path.parent() {
            sync_dir(dir).with_context(|| format!("syncing directory {}", dir.display()))?;
        }
    }
    Ok(())
}

/// fsyncs a directory: makes the creation, rename or removal of its
/// entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // An empty parent is the current directory (a relative file name).
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all())
}

/// Takes an exclusive, non-blocking `flock` on `file`, held until the file
/// is closed. `Err` with kind `WouldBlock` when another process holds it.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock(2) takes no pointers; the descriptor stays open for
    // the call because `file` is borrowed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's host name, trimmed; `None` when it cannot be read or is
/// empty.
pub fn hostname() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old", 0o600).expect("first write");
        write_atomic(&path, b"new", 0o600).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert!(!dir.path().join("state.tmp").exists());
        let mode = fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_second_lock_on_the_same_file_would_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let a = File::create(&path).expect("create");
        lock_exclusive(&a).expect("first lock");
        let b = File::open(&path).expect("open");
        let e = lock_exclusive(&b).expect_err("second lock");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        lock_exclusive(&b).expect("free again");
    }
}
