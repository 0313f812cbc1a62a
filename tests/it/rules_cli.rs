//! `rules check`, `rules test` and `rules run`, called as library functions.

use std::path::Path;

use nightowl::detect::cli::{cli_check, cli_run, cli_test};
use nightowl::detect::{BadRules, Firing};
use nightowl::parse::Format;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write rule file");
}

/// The single error of a bad rule directory, as `file:line: message`.
fn check_error(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "r.yaml", text);
    let err = cli_check(dir.path()).expect_err("bad rule");
    let bad = err.downcast_ref::<BadRules>().expect("BadRules error");
    assert_eq!(bad.0.len(), 1, "{bad}");
    let e = &bad.0[0];
    format!(
        "{}:{}: {}",
        e.file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        e.line,
        e.message
    )
}

const HEAD: &str = "id: r1\ntitle: t\nseverity: warning\n";

#[test]
fn rules_check_unknown_field_names_line() {
    let e = check_error(&format!("{HEAD}detect:\n  kind: match\n  treshold: 5\n"));
    assert!(e.starts_with("r.yaml:6: "), "{e}");
    assert!(e.contains("unknown field `treshold`"), "{e}");
}

#[test]
fn rules_check_bad_regex_names_line() {
    let e = check_error(&format!(
        "{HEAD}match:\n  all:\n    - {{field: status, equals: 404}}\n    - field: path\n      regex: '(unclosed'\ndetect: {{kind: match}}\n"
    ));
    assert!(e.starts_with("r.yaml:8: "), "{e}");
    assert!(e.contains("bad regex"), "{e}");
}

#[test]
fn rules_check_bad_cidr_names_line() {
    let e = check_error(&format!(
        "{HEAD}match:\n  field: client_ip\n  cidr: [10.0.0.0/8, 10.0.0.0/40]\ndetect: {{kind: match}}\n"
    ));
    assert!(e.starts_with("r.yaml:6: "), "{e}");
    assert!(e.contains("bad CIDR"), "{e}");
}

#[test]
fn rules_check_unknown_detect_kind_names_line() {
    let e = check_error(&format!("{HEAD}detect:\n  kind: thresold\n"));
    assert!(e.starts_with("r.yaml:5: "), "{e}");
    assert!(e.contains("unknown variant `thresold`"), "{e}");
}

#[test]
fn rules_check_unknown_field_name_and_missing_param() {
    let e = check_error(&format!(
        "{HEAD}match: {{field: ip, equals: 1.2.3.4}}\ndetect: {{kind: match}}\n"
    ));
    assert!(e.contains("unknown field \"ip\""), "{e}");
    let e = check_error(&format!("{HEAD}detect:\n  kind: threshold\n  window: 5m\n"));
    assert!(e.starts_with("r.yaml:5: "), "{e}");
    assert!(e.contains("needs count"), "{e}");
}

#[test]
fn rules_check_second_document_lines_are_file_lines() {
    let text = format!("{HEAD}detect: {{kind: match}}\n---\nid: r2\ntitle: t\nseverity: bad\ndetect: {{kind: match}}\n");
    let e = check_error(&text);
    assert!(e.starts_with("r.yaml:8: "), "{e}");
    assert!(e.contains("unknown variant `bad`"), "{e}");
}

#[test]
fn rules_check_names_the_line_of_a_bad_value_and_of_a_duplicate_key() {
    let e = check_error(&format!(
        "# comment\n{HEAD}detect:\n  kind: threshold\n  key: client_ip\n  window: 5x\n  count: 2\n"
    ));
    // The line of the bad value, not of the `detect:` that holds it.
    assert!(e.starts_with("r.yaml:8: "), "{e}");
    assert!(e.contains("\"5x\""), "{e}");
    let e = check_error(&format!("{HEAD}title: again\ndetect: {{kind: match}}\n"));
    assert!(e.starts_with("r.yaml:4: "), "{e}");
    assert!(e.contains("duplicate field `title`"), "{e}");
}

#[test]
fn rules_check_reports_every_error_of_a_file_and_takes_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{HEAD}detect: {{kind: bogus}}\n---\nid: r2\ntitle: t\nseverity: bad\ndetect: {{kind: match}}\n---\nid: r3\ntitle: t\nseverity: warning\ndetect: {{kind: match}}\n"
    );
    write(dir.path(), "r.yaml", &text);
    for target in [dir.path().to_path_buf(), dir.path().join("r.yaml")] {
        let err = cli_check(&target).expect_err("two bad rules");
        let bad = err.downcast_ref::<BadRules>().expect("BadRules error");
        let lines: Vec<usize> = bad.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 8], "{bad}");
    }
    write(
        dir.path(),
        "ok.yaml",
        &format!("{HEAD}detect: {{kind: match}}\n").replace("r1", "ok"),
    );
    let summary = cli_check(&dir.path().join("ok.yaml")).expect("one good file");
    assert_eq!(summary.rules, 1);
}

#[test]
fn rules_check_duplicate_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.yaml",
        &format!("{HEAD}detect: {{kind: match}}\n"),
    );
    write(
        dir.path(),
        "b.yaml",
        &format!("{HEAD}detect: {{kind: match}}\n"),
    );
    let err = cli_check(dir.path()).expect_err("duplicate");
    assert!(
        err.to_string().contains("duplicate rule id \"r1\""),
        "{err}"
    );
}

const LOGIN_RULE: &str = r#"
id: brute
title: Brute force
severity: warning
match:
  all:
    - {field: status, equals: 401}
    - {field: path, startswith: /login}
detect:
  kind: threshold
  key: client_ip
  window: 1m
  count: 3
"#;

fn login_line(ip: &str, sec: u32, status: u16) -> String {
    format!("{ip} - - [10/Oct/2024:12:00:{sec:02} +0000] \"POST /login HTTP/1.1\" {status} 10 \"-\" \"curl/8\"")
}

#[test]
fn rules_test_reports_diff_on_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "brute.yaml", LOGIN_RULE);
    let lines: Vec<String> = (0..3).map(|i| login_line("1.2.3.4", i, 401)).collect();
    let fixtures = format!(
        "brute:\n  - name: fires\n    lines: |\n{}\n    expect: [{{key: 1.2.3.4, count: 3}}]\n  - name: wrong key\n    lines: |\n{}\n    expect: [{{key: 9.9.9.9}}]\n",
        lines.iter().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n"),
        lines.iter().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n"),
    );
    write(dir.path(), "brute.test.yaml", &fixtures);
    let mut out = Vec::new();
    let s = cli_test(dir.path(), &mut out).expect("runs");
    let text = String::from_utf8_lossy(&out);
    assert_eq!((s.passed, s.failed), (1, 1), "{text}");
    assert!(text.contains("FAILED  brute :: wrong key"), "{text}");
    assert!(
        text.contains("- expected: rule=brute key=9.9.9.9"),
        "{text}"
    );
    assert!(
        text.contains("+ unexpected: rule=brute key=1.2.3.4 count=3"),
        "{text}"
    );
}

#[test]
fn rules_run_prints_ndjson_firings_in_event_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "brute.yaml", LOGIN_RULE);
    let mut log = String::new();
    // 1.2.3.4 fails three times in 3 s; 5.6.7.8 three times 40 s apart
    // (never 3 in a minute); a garbage line in between is counted.
    for i in 0..3 {
        log += &login_line("1.2.3.4", i, 401);
        log.push('\n');
    }
    log += "not a log line\n";
    let slow = [
        "5.6.7.8 - - [10/Oct/2024:12:01:00 +0000]",
        "5.6.7.8 - - [10/Oct/2024:12:01:40 +0000]",
        "5.6.7.8 - - [10/Oct/2024:12:02:20 +0000]",
    ];
    for p in slow {
        log += &format!("{p} \"POST /login HTTP/1.1\" 401 10 \"-\" \"curl/8\"\n");
    }
    let file = dir.path().join("access.log");
    std::fs::write(&file, log).expect("write log");
    let mut out = Vec::new();
    let s = cli_run(dir.path(), &file, Format::Combined, &mut out).expect("runs");
    assert_eq!((s.lines, s.unparsed, s.firings), (7, 1, 1));
    let text = String::from_utf8(out).expect("utf-8");
    // The instants also in RFC 3339, for people.
    assert!(
        text.contains("\"first_time\":\"2024-10-10T12:00:00Z\"")
            && text.contains("\"last_time\":\"2024-10-10T12:00:02Z\""),
        "{text}"
    );
    let firings: Vec<Firing> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON firing"))
        .collect();
    assert_eq!(firings.len(), 1);
    let f = &firings[0];
    assert_eq!(
        (f.rule_id.as_str(), f.key.as_str(), f.count),
        ("brute", "1.2.3.4", 3)
    );
    assert_eq!(f.sample_lines.len(), 3);
    assert_eq!(f.evidence_query, "client_ip:1.2.3.4 AND status:401");
    assert_eq!(f.last_ts - f.first_ts, 2_000_000_000);
}

#[test]
fn rules_run_bad_rules_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "x.yaml",
        "id: x\ntitle: t\nseverity: warning\ndetect: {kind: nope}\n",
    );
    let file = dir.path().join("access.log");
    std::fs::write(&file, "").expect("write log");
    let err = cli_run(dir.path(), &file, Format::Auto, Vec::new()).expect_err("bad rules");
    assert!(err.downcast_ref::<BadRules>().is_some());
    assert!(err.to_string().contains("x.yaml:4:"), "{err}");
}

/// `rules run` deals the rules to one engine per core and merges their
/// firings: the output must be the one a single engine prints, byte for
/// byte, whatever the number of engines. The default pack over its own
/// fixtures, one after the other (several sources' worth of attacks,
/// outages and out-of-order time), fires many rules on many lines.
#[test]
fn rules_run_prints_the_same_firings_on_any_number_of_threads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(root.join("rules/fixtures"))
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    // Twice over: more than one round of `rules run`'s reading (4 MiB).
    for _ in 0..2 {
        for p in &names {
            log.extend(std::fs::read(p).expect("read fixture"));
        }
    }
    assert!(log.len() > 4 << 20, "{} bytes", log.len());
    let file = dir.path().join("access.log");
    std::fs::write(&file, &log).expect("write log");
    let run = |threads| {
        let mut out = Vec::new();
        let s = nightowl::detect::cli::cli_run_threads(
            &root.join("rules"),
            &file,
            Format::Auto,
            &mut out,
            threads,
        )
        .expect("runs");
        (s, String::from_utf8(out).expect("utf-8"))
    };
    let (one, text) = run(1);
    let rules: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Firing>(l)
                .expect("NDJSON firing")
                .rule_id
        })
        .collect();
    assert!(rules.len() >= 8, "the pack fires many rules: {rules:?}");
    for threads in [2, 3, 5] {
        let (s, t) = run(threads);
        assert_eq!(
            (s.lines, s.firings),
            (one.lines, one.firings),
            "{threads} threads"
        );
        assert!(
            t == text,
            "{threads} threads print another order or other firings"
        );
    }
}

/// The evidence query of a rule whose evidence has an OR of its own keeps
/// the key on every branch (the WordPress brute force: 401/403, or a 200
/// to a POST on wp-login.php).
#[test]
fn an_evidence_with_an_or_is_grouped_under_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    cli_run(
        &root.join("rules"),
        &root.join("rules/fixtures/wp_brute_force.log"),
        Format::Combined,
        &mut out,
    )
    .expect("runs");
    let text = String::from_utf8(out).expect("utf-8");
    let brute: Firing = text
        .lines()
        .map(|l| serde_json::from_str::<Firing>(l).expect("NDJSON firing"))
        .find(|f| f.rule_id == "web-login-brute-force")
        .unwrap_or_else(|| panic!("the brute force fires: {text}"));
    assert_eq!(
        brute.evidence_query,
        r#"client_ip:203.0.113.9 AND (status:[401 TO 403] OR (method:POST AND status:200 AND path:"/wp-login.php"))"#
    );
}
