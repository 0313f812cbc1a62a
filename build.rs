//! Embeds the default rule pack: every rule file under `rules/` (fixture
//! sidecars and `*.test.yaml` left out) becomes an `include_str!` entry of
//! `$OUT_DIR/builtin_rules.rs`, read by `src/detect/builtin.rs`. A file
//! added to `rules/` is embedded at the next build without a list to edit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let rules = root.join("rules");
    println!("cargo:rerun-if-changed=rules");
    let mut files = Vec::new();
    collect(&rules, &rules, &mut files, 0);
    files.sort();
    let mut out = String::from(
        "/// The default pack's rule files: (path under `rules/`, text).\n\
         pub const FILES: &[(&str, &str)] = &[\n",
    );
    for (rel, abs) in &files {
        let _ = writeln!(out, "    ({rel:?}, include_str!({abs:?})),");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_rules.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

/// Rule files of `dir` and its subdirectories (hidden ones skipped, as the
/// rule loader does), as (relative path with `/`, absolute path).
fn collect(base: &Path, dir: &Path, out: &mut Vec<(String, String)>, depth: usize) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if depth < 4 {
                collect(base, &path, out, depth + 1);
            }
            continue;
        }
        let rule_file = (name.ends_with(".yaml") || name.ends_with(".yml"))
            && !name.ends_with(".test.yaml")
            && !name.ends_with(".test.yml")
            && !name.ends_with(".tests.yaml")
            && !name.ends_with(".tests.yml");
        if !rule_file {
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .expect("under rules/")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push((rel, path.display().to_string()));
    }
}
