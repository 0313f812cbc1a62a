//! Looking for bytes on disk the way an attacker with the disk would: every
//! file under a dir, raw, and inside every zstd frame it holds (tantivy's
//! doc store blocks, compressed batches).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed while we looked (a purged partition, a rolled segment).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every zstd frame inside `bytes` (tantivy's doc store blocks), decoded.
pub fn zstd_frames(bytes: &[u8]) -> Vec<u8> {
    const MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(4).position(|w| w == MAGIC) {
        let start = at + i;
        if let Ok(decoder) = zstd::stream::read::Decoder::new(&bytes[start..]) {
            let mut frame = Vec::new();
            if decoder.single_frame().read_to_end(&mut frame).is_ok() {
                out.extend_from_slice(&frame);
            }
        }
        at = start + 1;
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files under `dir` holding `needle`, raw or in a zstd frame, each
/// with where (`raw` or `zstd`).
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<(PathBuf, &'static str)> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let mut found = Vec::new();
    for path in files {
        // A file deleted while we looked (a rolled WAL segment) holds nothing.
        let Ok(bytes) = fs::read(&path) else { continue };
        if contains(&bytes, needle) {
            found.push((path, "raw"));
        } else if contains(&zstd_frames(&bytes), needle) {
            found.push((path, "zstd"));
        }
    }
    found
}
