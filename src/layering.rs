//! The import rules of ARCHITECTURE.md ("Invariants"), checked on the
//! source so that they hold rather than only being written down: every
//! `crate::X` (and `super::` climbing to the crate root) outside test code
//! is an arrow between two top-level modules of `src/`, and the arrows
//! must follow the tables below and form no circle.
//!
//! Test code (`#[cfg(test)]` modules, inline or in their own file) does
//! not count: a test may check that a later stage reads what its stage
//! writes without making the stage depend on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The shared bottom: helpers every stage uses. They import no stage.
const BOTTOM: &[&str] = &[
    "error",
    "time",
    "fsutil",
    "crypto",
    "telemetry",
    "systemd",
    "seglog",
    "http_client",
];

/// Services every stage may write to (the audit log, tokens and tenants,
/// refused-ingest accounting). They import the bottom and each other only.
const SERVICES: &[&str] = &["audit", "auth", "refusals"];

/// The collector's stages in pipeline order. A stage imports the ones
/// before it, the bottom and the services; a later one only through
/// [`DOWNSTREAM`].
const STAGES: &[&str] = &[
    "transport",
    "redact",
    "ingest",
    "wal",
    "parse",
    "patterns",
    "index",
    "detect",
    "alert",
    // Its log stands in for the WAL, but its consumer runs the index and
    // detect stages and its topic feeds the alert stage: it comes after
    // all of them.
    "kafka",
    // Not stages: services over all of them, reached over HTTPS.
    "backup",
    "api",
];

/// Whole programs and their wiring: they may import anything, and only
/// other programs import them.
const PROGRAMS: &[&str] = &["agent", "bench", "config", "pipeline", "cli"];

/// The one kind of forward arrow a stage may have: to the input of the
/// stage it hands its output to (a queue, a call per line), never to call
/// back up.
const DOWNSTREAM: &[(&str, &str)] = &[
    // The collector's redaction pass runs on each batch before ingest.
    ("transport", "redact"),
    // Pushes each batch into the sequencer's queue.
    ("transport", "ingest"),
    // The sequencer appends to the WAL.
    ("ingest", "wal"),
    // The indexer thread hands each parsed line to the live rules.
    ("index", "detect"),
];

/// Known exceptions, left for later (ARCHITECTURE.md would name them), and
/// the only circles allowed. None today: a new one is a decision to write
/// down there, not a line to add here quietly.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/`: `src/audit/witness.rs` is
/// `["audit", "witness"]`, `src/index/search/mod.rs` is `["index", "search"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The file a `mod name;` in `file` stands for.
fn child_module_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let parent = file.parent().unwrap_or(Path::new(""));
    let dir = if matches!(stem, "mod" | "lib" | "main") {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
}

/// The lines of `text` that are not test code, with their numbers; the
/// files of `#[cfg(test)] mod name;` go into `test_files`.
fn non_test_lines(
    file: &Path,
    text: &str,
    test_files: &mut BTreeSet<PathBuf>,
) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            let declared = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ");
            if let Some(rest) = declared {
                if let Some(name) = rest.strip_suffix(';') {
                    test_files.extend(child_module_files(file, name.trim()));
                    i += 2;
                    continue;
                }
                // An inline test module runs to its closing brace in the
                // first column (rustfmt's layout).
                i += 2;
                while i < lines.len() && lines[i] != "}" {
                    i += 1;
                }
                i += 1;
                continue;
            }
        }
        out.push((i + 1, lines[i].to_string()));
        i += 1;
    }
    out
}

/// The top-level modules `line` names: `crate::x`, `use crate::{x, y}`,
/// and `super::` chains that climb past the file's top module.
fn referenced(line: &str, depth: usize, modules: &BTreeSet<String>) -> Vec<String> {
    let code = match line.find("//") {
        // A `//` inside a string (a URL) is not a comment; the strings
        // that matter here hold no `crate::`.
        Some(at) if !line[..at].contains('"') => &line[..at],
        _ => line,
    };
    let mut found = Vec::new();
    let mut note = |name: &str| {
        let name: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if modules.contains(&name) {
            found.push(name);
        }
    };
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `$crate::` or `nightowl_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut level = 0usize;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => level += 1,
                        '}' if level == 0 => {
                            note(group[start..i].trim());
                            break;
                        }
                        '}' => level -= 1,
                        ',' if level == 0 => {
                            note(group[start..i].trim());
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => note(rest),
        }
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before_ok =
            !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let mut tail = &rest[at..];
        let mut climbs = 0;
        while let Some(t) = tail.strip_prefix("super::") {
            climbs += 1;
            tail = t;
        }
        if before_ok && climbs >= depth {
            note(tail);
        }
        rest = tail;
    }
    found
}

/// Arrows between top-level modules, each with where it was seen.
fn arrows() -> BTreeMap<(String, String), Vec<String>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = top_level_modules();
    let mut texts = Vec::new();
    let mut test_files = BTreeSet::new();
    for file in &files {
        let text =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let lines = non_test_lines(file, &text, &mut test_files);
        texts.push((file.clone(), lines));
    }
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (file, lines) in texts {
        if test_files.contains(&file) {
            continue;
        }
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let path = module_path(rel);
        let Some(from) = path.first().filter(|m| modules.contains(*m)) else {
            continue; // lib.rs, main.rs
        };
        for (number, line) in lines {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            for to in referenced(&line, path.len(), &modules) {
                if &to != from {
                    out.entry((from.clone(), to))
                        .or_default()
                        .push(format!("{}:{number}", rel.display()));
                }
            }
        }
    }
    out
}

/// Every top-level module of `src/` but the crate roots and this test.
fn top_level_modules() -> BTreeSet<String> {
    let src = src_dir();
    let entries = fs::read_dir(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let mut out = BTreeSet::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
            .path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            out.insert(name);
        }
    }
    for root in ["lib", "main", "layering"] {
        out.remove(root);
    }
    out
}

fn allowed(from: &str, to: &str) -> bool {
    let position = |list: &[&str], name: &str| list.iter().position(|m| *m == name);
    if PROGRAMS.contains(&from) {
        return true;
    }
    if BOTTOM.contains(&to) {
        return true;
    }
    if BOTTOM.contains(&from) {
        return false;
    }
    if SERVICES.contains(&to) {
        return true;
    }
    if SERVICES.contains(&from) {
        return false;
    }
    match (position(STAGES, from), position(STAGES, to)) {
        (Some(f), Some(t)) if t < f => true,
        _ => DOWNSTREAM.contains(&(from, to)) || KNOWN_EXCEPTIONS.contains(&(from, to)),
    }
}

fn show(arrows: &[(&(String, String), &Vec<String>)]) -> String {
    arrows
        .iter()
        .map(|((from, to), at)| format!("  {from} -> {to} ({})", at.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_top_level_module_has_its_place_in_the_tables() {
    let placed: Vec<&str> = [BOTTOM, SERVICES, STAGES, PROGRAMS].concat();
    let modules = top_level_modules();
    let unplaced: Vec<&String> = modules
        .iter()
        .filter(|m| !placed.contains(&m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules of src/ missing from the tables of src/layering.rs (and ARCHITECTURE.md): {unplaced:?}"
    );
    let mut seen = BTreeSet::new();
    for name in &placed {
        assert!(seen.insert(*name), "{name} is in two tables");
        assert!(modules.contains(*name), "{name} is not a module of src/");
    }
}

#[test]
fn no_stage_imports_a_later_stage() {
    let arrows = arrows();
    assert!(
        arrows.contains_key(&("transport".to_string(), "ingest".to_string())),
        "the scan found none of the arrows it must find: {arrows:?}"
    );
    let wrong: Vec<_> = arrows
        .iter()
        .filter(|((from, to), _)| !allowed(from, to))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the pipeline order (ARCHITECTURE.md, Invariants):\n{}",
        show(&wrong)
    );
    for (from, to) in DOWNSTREAM.iter().chain(KNOWN_EXCEPTIONS) {
        assert!(
            arrows.contains_key(&(from.to_string(), to.to_string())),
            "{from} -> {to} is listed as allowed but no longer exists: drop it from the list"
        );
    }
}

#[test]
fn no_import_circles_between_top_level_modules() {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let arrows = arrows();
    for (from, to) in arrows.keys() {
        if !KNOWN_EXCEPTIONS.contains(&(from.as_str(), to.as_str())) {
            next.entry(from).or_default().push(to);
        }
    }
    // Depth-first search; a module met again while still on the path
    // closes a circle.
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node);
            return Some(circle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for to in next.get(node).into_iter().flatten() {
            if let Some(circle) = visit(to, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        if let Some(circle) = visit(start, &next, &mut Vec::new(), &mut done) {
            let hops: Vec<String> = circle
                .windows(2)
                .map(|w| {
                    let at = &arrows[&(w[0].to_string(), w[1].to_string())];
                    format!("{} -> {} ({})", w[0], w[1], at[0])
                })
                .collect();
            panic!("import circle: {}", hops.join(", "));
        }
    }
}

#[test]
fn the_scan_sees_use_groups_super_chains_and_skips_comments() {
    let modules: BTreeSet<String> = ["alert", "auth", "index"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        referenced("use crate::{alert::x, auth::{Role, y}};", 1, &modules),
        ["alert", "auth"]
    );
    assert_eq!(
        referenced("let x = super::super::index::Catalog::new();", 2, &modules),
        ["index"]
    );
    assert!(referenced("use super::index::x;", 2, &modules).is_empty());
    assert!(referenced("f(); // crate::alert::x", 1, &modules).is_empty());
    let mut test_files = BTreeSet::new();
    let lines = non_test_lines(
        Path::new("src/wal/mod.rs"),
        "use crate::alert;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod more {\n    use crate::auth;\n}\nfn f() {}\n",
        &mut test_files,
    );
    assert_eq!(
        lines
            .iter()
            .map(|(n, l)| format!("{n}:{l}"))
            .collect::<Vec<_>>(),
        ["1:use crate::alert;", "8:fn f() {}"]
    );
    assert!(test_files.contains(Path::new("src/wal/tests.rs")));
}
