//! Which file is which: device + inode, plus a fingerprint of the first bytes.
//!
//! Device + inode follow a file through a rename (rotation), but inodes are
//! reused: a new file may get the inode of one deleted a minute ago. So the
//! agent also keeps a hash of the file's first bytes (up to
//! [`FINGERPRINT_BYTES`]); a file whose beginning no longer hashes the same
//! is a different stream, even under the same inode. A file shorter than that
//! is fingerprinted over what it has, and the fingerprint grows with it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many leading bytes identify a file's content.
pub const FINGERPRINT_BYTES: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes hashed: `min(file size, FINGERPRINT_BYTES)` when taken.
    pub len: u64,
    /// First 8 bytes of the SHA-256 of those bytes, hex.
    pub hash: String,
}

/// What a file on disk is, compared with what the agent knew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same stream; `Some` when the fingerprint can now cover more bytes.
    Same(Option<Fingerprint>),
    /// Shorter than the offset already read: truncated in place (copytruncate).
    Truncated,
    /// The first bytes differ: a different file (reused inode, or rewritten).
    Replaced,
}

/// Fingerprint of the first `min(size, FINGERPRINT_BYTES)` bytes.
pub fn fingerprint(file: &File, size: u64) -> io::Result<Fingerprint> {
    let len = size.min(FINGERPRINT_BYTES);
    Ok(Fingerprint {
        len,
        hash: prefix_hash(file, len)?,
    })
}

fn prefix_hash(file: &File, len: u64) -> io::Result<String> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    let digest = Sha256::digest(&buf);
    Ok(hex::encode(&digest[..8]))
}

/// Compares a file of `size` bytes, of which `offset` were read, with its
/// stored fingerprint (`None`: state of an older agent, matched by inode only).
pub fn check(
    stored: Option<&Fingerprint>,
    file: &File,
    size: u64,
    offset: u64,
) -> io::Result<Verdict> {
    if size < offset {
        return Ok(Verdict::Truncated);
    }
    let Some(stored) = stored else {
        return Ok(Verdict::Same(Some(fingerprint(file, size)?)));
    };
    if size < stored.len {
        // Its first bytes are gone: truncated, or a new shorter file.
        return Ok(if offset > 0 {
            Verdict::Truncated
        } else {
            Verdict::Replaced
        });
    }
    if prefix_hash(file, stored.len)? != stored.hash {
        return Ok(Verdict::Replaced);
    }
    if stored.len < FINGERPRINT_BYTES && size > stored.len {
        return Ok(Verdict::Same(Some(fingerprint(file, size)?)));
    }
    Ok(Verdict::Same(None))
}

/// The source id of a stream: device, inode, a hash of the file's first
/// line (at most [`FINGERPRINT_BYTES`]) and how many times this inode
/// restarted (copytruncate) while the agent watched it.
///
/// Derived from the content rather than random, so that an agent that lost
/// its state re-reads the file under the same id and the collector drops
/// the resent lines as duplicates; the generation keeps a truncated file
/// whose first line happens to be the same apart from its predecessor.
/// `None` while the first line is incomplete (it is not shippable yet);
/// `force` takes what there is (a partial line shipped on timeout).
pub fn stream_id(
    file: &File,
    size: u64,
    dev: u64,
    ino: u64,
    generation: u32,
    force: bool,
) -> io::Result<Option<String>> {
    let len = size.min(FINGERPRINT_BYTES) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    let first = match memchr::memchr(b'\n', &buf) {
        Some(i) => &buf[..=i],
        None if len as u64 == FINGERPRINT_BYTES || (force && len > 0) => &buf[..],
        None => return Ok(None),
    };
    let hash = hex::encode(&Sha256::digest(first)[..8]);
    Ok(Some(if generation == 0 {
        format!("{dev}:{ino}:{hash}")
    } else {
        format!("{dev}:{ino}:{hash}/{generation}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &std::path::Path, name: &str, content: &[u8]) -> File {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        File::open(&path).expect("open")
    }

    #[test]
    fn same_content_is_the_same_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = b"x".repeat(3000);
        let f = file_with(dir.path(), "a", &content);
        let fp = fingerprint(&f, 3000).expect("fp");
        assert_eq!(fp.len, FINGERPRINT_BYTES);
        assert_eq!(
            check(Some(&fp), &f, 3000, 2000).expect("check"),
            Verdict::Same(None)
        );
    }

    #[test]
    fn a_reused_inode_with_other_content_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = file_with(dir.path(), "a", &b"old line\n".repeat(200));
        let fp = fingerprint(&old, 1800).expect("fp");
        // Same size, other bytes: what a reused inode looks like from here.
        let new = file_with(dir.path(), "b", &b"new line\n".repeat(200));
        assert_eq!(
            check(Some(&fp), &new, 1800, 900).expect("check"),
            Verdict::Replaced
        );
    }

    #[test]
    fn a_short_file_is_fingerprinted_as_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, b"first\n").expect("write");
        let f = File::open(&path).expect("open");
        let fp = fingerprint(&f, 6).expect("fp");
        assert_eq!(fp.len, 6);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        w.write_all(&b"more\n".repeat(400)).expect("append");
        let size = 6 + 2000;
        match check(Some(&fp), &f, size, 6).expect("check") {
            Verdict::Same(Some(grown)) => {
                assert_eq!(grown.len, FINGERPRINT_BYTES);
                assert_eq!(
                    check(Some(&grown), &f, size, 6).expect("check"),
                    Verdict::Same(None)
                );
            }
            other => panic!("expected a grown fingerprint, got {other:?}"),
        }
    }

    #[test]
    fn truncation_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, b"line\n".repeat(1000)).expect("write");
        let f = File::open(&path).expect("open");
        let fp = fingerprint(&f, 5000).expect("fp");
        // copytruncate, and the writer already wrote a little again.
        std::fs::write(&path, b"new\n").expect("truncate");
        assert_eq!(
            check(Some(&fp), &f, 4, 5000).expect("check"),
            Verdict::Truncated
        );
        // Truncated and rewritten past the old offset with other content.
        std::fs::write(&path, b"other\n".repeat(1000)).expect("rewrite");
        assert_eq!(
            check(Some(&fp), &f, 6000, 5000).expect("check"),
            Verdict::Replaced
        );
    }

    #[test]
    fn stream_ids_follow_the_first_line_and_the_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = file_with(dir.path(), "a", b"first line\nsecond\n");
        let b = file_with(dir.path(), "b", b"first line\nother\n");
        let c = file_with(dir.path(), "c", b"another first\n");
        let partial = file_with(dir.path(), "p", b"no newline yet");
        let id = |f: &File, g, force| {
            let size = f.metadata().expect("meta").len();
            stream_id(f, size, 1, 2, g, force).expect("id")
        };
        assert_eq!(id(&a, 0, false), id(&b, 0, false));
        assert_ne!(id(&a, 0, false), id(&c, 0, false));
        assert_ne!(id(&a, 0, false), id(&a, 1, false));
        assert_eq!(id(&partial, 0, false), None);
        assert!(id(&partial, 0, true).is_some());
    }
}
