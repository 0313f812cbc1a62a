//! `nightowl patterns mine`, the binary: a file with `--assign`, stdin with
//! counts, and an unreadable file as bad input.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::BIN;

/// An sshd-like log: seven users (the slot opens), two statements one word
/// apart (they stay two), an optional size in a human unit.
fn log() -> String {
    let mut s = String::new();
    for (i, user) in ["ann", "bo", "cy", "di", "ed", "flo", "gus"]
        .iter()
        .enumerate()
    {
        s.push_str(&format!("Invalid user {user} from 10.0.0.{i} port 22\n"));
        s.push_str(&format!(
            "Accepted publickey for root from 10.1.0.{i} port 22\n"
        ));
        s.push_str(&format!(
            "Rejected publickey for root from 10.2.0.{i} port 22\n"
        ));
        if i % 2 == 0 {
            s.push_str(&format!("wrote {i}000000 bytes ({i}.0 MB) in {i} ms\n"));
        } else {
            s.push_str(&format!("wrote {i}00 bytes in {i} ms\n"));
        }
    }
    s
}

#[test]
fn mine_assign_names_each_line_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("auth.log");
    std::fs::write(&file, log()).expect("write log");
    let out = Command::new(BIN)
        .args(["patterns", "mine", "--assign"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let rows: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once('\t').expect("ID<TAB>TEMPLATE"))
        .collect();
    assert_eq!(rows.len(), 28, "one line per input line");
    assert_eq!(rows[0].1, "Invalid user <*> from <*> port <*>");
    assert_eq!(rows[1].1, "Accepted publickey for root from <*> port <*>");
    assert_eq!(rows[2].1, "Rejected publickey for root from <*> port <*>");
    assert_eq!(rows[3].1, "wrote <*> bytes (<*>) in <*>");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.0,
            rows[i % 4].0,
            "line {} in its statement's pattern",
            i + 1
        );
        assert_eq!(row.0.len(), 12, "ids are 12 hex digits");
    }
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), 4);
}

#[test]
fn mine_counts_stdin_most_frequent_first() {
    let mut child = Command::new(BIN)
        .args(["patterns", "mine"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut input = log();
    input.push_str("Invalid user zed from 10.9.9.9 port 22\n");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let first: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(first[0], "8");
    assert_eq!(first[2], "Invalid user <*> from <*> port <*>");
    assert!(lines[1..].iter().all(|l| l.starts_with("7\t")), "{text}");
}

#[test]
fn mine_unreadable_file_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.log");
    let out = Command::new(BIN)
        .args(["patterns", "mine", "--assign"])
        .arg(&missing)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.log"), "{err}");
    assert!(out.stdout.is_empty());
}
