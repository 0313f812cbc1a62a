//! The README's test command (`scripts/test`) must install every program
//! the tests start, or the suite fails on a fresh machine (issue 18). This
//! keeps the two from drifting: each program a test runs by name
//! (`Command::new("curl")`) or by path (`"/usr/sbin/rsyslogd"`) must be
//! named in scripts/test, unless it is part of every Debian install.

use std::path::{Path, PathBuf};

/// Essential on Debian (the `bash` package is Essential: yes).
const ALWAYS_THERE: &[&str] = &["bash", "sh"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read tests dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The programs a test file starts: literal `Command::new("NAME")` and
/// string literals that are a path under /usr/bin or /usr/sbin.
/// Comment lines are skipped: they may show such calls without making them.
fn programs(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .flat_map(|line| [line, "\n"])
        .collect();
    let source = code.as_str();
    let mut found = Vec::new();
    let by_name = concat!("Command::new", "(\"");
    for (at, _) in source.match_indices(by_name) {
        let rest = &source[at + by_name.len()..];
        if let Some(end) = rest.find('"') {
            if !rest[..end].contains('/') {
                found.push(rest[..end].to_string());
            }
        }
    }
    for prefix in [concat!("\"/usr/", "bin/"), concat!("\"/usr/", "sbin/")] {
        for (at, _) in source.match_indices(prefix) {
            let rest = &source[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            if end > 0 && rest[end..].starts_with('"') {
                found.push(rest[..end].to_string());
            }
        }
    }
    found
}

#[test]
fn scripts_test_installs_every_program_the_tests_start() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(repo.join("scripts/test")).expect("scripts/test");
    let mut files = Vec::new();
    rust_files(&repo.join("tests"), &mut files);
    files.sort();
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read test source");
        for program in programs(&source) {
            seen += 1;
            let named = script
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .any(|word| word == program);
            if !named && !ALWAYS_THERE.contains(&program.as_str()) {
                missing.push(format!("{program} ({})", file.display()));
            }
        }
    }
    assert!(
        seen >= 5,
        "the scan found only {seen} programs: is it broken?"
    );
    assert!(
        missing.is_empty(),
        "tests start programs scripts/test does not install: {missing:?}"
    );
}

#[test]
fn the_scan_finds_programs_by_name_and_by_path() {
    let source = concat!(
        "let a = Command::new(\"curl\");\n",
        "const X: &str = \"/usr/sbin/rsyslogd\";\n",
        "let b = Command::new(BIN);\n",
        "let c = Command::new(\"/opt/x\");\n",
        "// \"/usr/bin/\" alone is not a program\n",
    );
    assert_eq!(programs(source), ["curl", "rsyslogd"]);
}
