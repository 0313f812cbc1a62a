//! The persona guides (docs/guide-*.md) are executable: each test starts a
//! real collector, prepares what the guide assumes, and runs the guide's
//! examples in order.
//!
//! The convention in the markdown, kept small on purpose:
//! - a fenced block tagged exactly ```` ```sh ```` is run, alone, with
//!   `bash -euo pipefail -c` in the guide's working directory, and must
//!   exit 0. Blocks share nothing but the environment and the files they
//!   leave behind.
//! - ```` ```sh no-test ```` (any extra word after `sh`) is shown, not run:
//!   starting the collector and the `export`s the test does itself.
//! - ```` ```text ````, ```` ```toml ````... are samples, not checked.
//! - a line `# => WORDS` inside a run block is an expectation: some line
//!   of the block's stdout holds WORDS as adjacent whitespace-separated
//!   words (so column padding does not matter and `3` does not match
//!   `13`). A block with expectations is retried until they hold (lines
//!   become searchable, alerts appear asynchronously), up to
//!   [`common::DEADLINE`]; a block without them runs once.
//!   So a block with expectations must be safe to run twice.
//!
//! The environment the guides' setup blocks describe: `NIGHTOWL_SERVER`,
//! `NIGHTOWL_CA`, `NIGHTOWL_TOKEN_FILE`, `COLLECTOR` (agent address),
//! `CONFIG` (the collector's config), `DATA_DIR`, `COLLECTOR_PID`, and a
//! `nightowl` on PATH that is the binary under test.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// One fenced block of a guide.
struct Block {
    /// 1-based line of the opening fence, for failure messages.
    line: usize,
    info: String,
    code: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    open = Some(Block {
                        line: i + 1,
                        info: info.trim().to_string(),
                        code: String::new(),
                    });
                }
            }
            Some(mut block) => {
                if line.trim() == "```" {
                    out.push(block);
                } else {
                    block.code.push_str(line);
                    block.code.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

fn expectations(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| l.trim_start().strip_prefix("# =>"))
        .map(|e| e.trim().to_string())
        .collect()
}

/// `words` appear adjacent, in order, among one line's words.
fn line_has(stdout: &str, words: &str) -> bool {
    let want: Vec<&str> = words.split_whitespace().collect();
    stdout.lines().any(|line| {
        let got: Vec<&str> = line.split_whitespace().collect();
        got.windows(want.len()).any(|w| w == want.as_slice())
    })
}

/// Where a guide's commands run, and their environment.
struct Env {
    dir: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(root: &Path, c: &Collector) -> Env {
        let dir = root.join("work");
        let bin = root.join("bin");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("nightowl")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let vars = vec![
            ("PATH".to_string(), path),
            ("NIGHTOWL_SERVER".to_string(), c.server()),
            ("NIGHTOWL_CA".to_string(), c.ca.display().to_string()),
            (
                "NIGHTOWL_TOKEN_FILE".to_string(),
                c.token_file.display().to_string(),
            ),
            ("COLLECTOR".to_string(), c.agent_addr.clone()),
            ("CONFIG".to_string(), c.config_path.display().to_string()),
            ("DATA_DIR".to_string(), c.data_dir.display().to_string()),
            ("COLLECTOR_PID".to_string(), collector_pid(c).to_string()),
            ("USER".to_string(), "oncall".to_string()),
        ];
        Env { dir, vars }
    }

    fn run(&self, code: &str) -> std::process::Output {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", code])
            .current_dir(&self.dir)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }
}

/// The collector's pid, found by its data dir on its command line: the
/// guide signals it as a user would (`kill -HUP`).
fn collector_pid(c: &Collector) -> u32 {
    let needle = c.data_dir.display().to_string();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).is_some_and(|a| a == "collector") && args.contains(&needle) {
            return pid;
        }
    }
    panic!("no collector process with {needle} found in /proc");
}

/// Runs every `sh` block of `guide` in order; returns how many ran.
fn run_guide(guide: &str, env: &Env) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(guide);
    run_markdown(guide, &fs::read_to_string(&path).unwrap(), env)
}

fn run_markdown(guide: &str, text: &str, env: &Env) -> usize {
    let mut ran = 0;
    for block in blocks(text).into_iter().filter(|b| b.info == "sh") {
        let expect = expectations(&block.code);
        let started = Instant::now();
        loop {
            let out = env.run(&block.code);
            let stdout = stdout_of(&out);
            let context = || {
                format!(
                    "{guide}:{}: block\n{}\nexit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
                    block.line,
                    block.code,
                    out.status.code(),
                    tail(&stderr_of(&out), 30)
                )
            };
            assert!(out.status.success(), "{}", context());
            let missing: Vec<&String> = expect.iter().filter(|e| !line_has(&stdout, e)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "expected {missing:?} in stdout; {}",
                context()
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        ran += 1;
    }
    ran
}

/// 20 combined-format lines from a minute ago: 12 page views, 3 failed
/// logins from 203.0.113.7, 3 server errors, 2 sqlmap probes.
fn write_access_log(path: &Path) {
    let t = nginx_time(now_unix() - 60, 0);
    let mut text = String::new();
    for i in 1..=12 {
        text.push_str(&format!(
            "10.0.0.{i} - - [{t}] \"GET /index.html HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"\n"
        ));
    }
    for _ in 0..3 {
        text.push_str(&format!(
            "203.0.113.7 - - [{t}] \"POST /login HTTP/1.1\" 401 64 \"-\" \"curl/8.5.0\"\n"
        ));
    }
    for _ in 0..3 {
        text.push_str(&format!(
            "10.0.0.9 - - [{t}] \"GET /api/orders HTTP/1.1\" 500 128 \"-\" \"Mozilla/5.0\"\n"
        ));
    }
    for _ in 0..2 {
        text.push_str(&format!(
            "198.51.100.23 - - [{t}] \"GET /admin.php HTTP/1.1\" 404 0 \"-\" \"sqlmap/1.7.2#stable (https://sqlmap.org)\"\n"
        ));
    }
    fs::write(path, text).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn repo_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

#[test]
fn ops_guide_runs() {
    let root = tempfile::tempdir().unwrap();
    let c = Collector::start(root.path(), Settings::default());
    let env = Env::new(root.path(), &c);
    write_access_log(&env.dir.join("access.log"));
    let ran = run_guide("docs/guide-ops.md", &env);
    assert!(ran >= 8, "only {ran} blocks ran");
    // The guide's agent shipped the file: nothing more, nothing less.
    assert_eq!(c.count("*"), 20);
}

#[test]
fn oncall_guide_runs() {
    let root = tempfile::tempdir().unwrap();
    let rules = root.path().join("rules");
    copy_dir(&repo_rules(), &rules);
    let hook = WebhookRecorder::start();
    let port = hook.port();
    let alerting = format!(
        "[alerting.route]\nreceiver = \"oncall\"\n\n\
         [[alerting.receivers]]\nname = \"oncall\"\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:{port}/oncall\"\n\n\
         [[alerting.receivers]]\nname = \"ops-mail\"\nkind = \"email\"\n\
         host = \"smtp.example.com\"\nfrom = \"nightowl <nightowl@example.com>\"\n\
         to = [\"oncall@example.com\"]\n"
    );
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(rules),
            extra_toml: alerting,
            ..Settings::default()
        },
    );
    let env = Env::new(root.path(), &c);
    let log = env.dir.join("access.log");
    write_access_log(&log);
    let (status, stderr) = c.run_agent_once("ship", &root.path().join("ship-state"), &[&log]);
    assert!(status.success(), "agent: {stderr}");
    let ran = run_guide("docs/guide-oncall.md", &env);
    assert!(ran >= 7, "only {ran} blocks ran");
    // `alerts test-receiver` reached the receiver as a real request.
    let got: Vec<String> = hook.requests().iter().map(|r| r.text()).collect();
    assert!(
        got.iter().any(|b| b.contains("[TEST]")),
        "no test page among {got:?}"
    );
    let test_page = hook
        .requests_to("/oncall")
        .into_iter()
        .find(|r| r.text().contains("[TEST]"))
        .expect("the test page went to the receiver's path");
    assert_eq!(test_page.method, "POST");
}

#[test]
fn security_guide_runs() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    let rules = work.join("rules");
    copy_dir(&repo_rules(), &rules);
    // The guide tests the Sigma examples too.
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sigma"),
        &work.join("examples/sigma"),
    );
    let c = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(rules),
            ..Settings::default()
        },
    );
    let env = Env::new(root.path(), &c);
    let log = env.dir.join("access.log");
    write_access_log(&log);
    let (status, stderr) = c.run_agent_once("ship", &root.path().join("ship-state"), &[&log]);
    assert!(status.success(), "agent: {stderr}");
    c.wait_for_count("*", 20);
    let ran = run_guide("docs/guide-security.md", &env);
    assert!(ran >= 12, "only {ran} blocks ran");
    // The guide's purge removed acme's lines and left the default tenant's.
    assert_eq!(c.count("*"), 20);
}

#[test]
fn expectations_match_whole_words() {
    assert!(line_has("  20\n", "20"));
    assert!(!line_has("120\n", "20"));
    assert!(line_has("a\n  loaded     22\n", "loaded 22"));
    assert!(!line_has("loaded 2 2\n", "loaded 22"));
    let b = blocks("x\n```sh\necho 1\n# => 1\n```\n```sh no-test\nrm -rf /\n```\n");
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].info.as_str(), b[0].line), ("sh", 2));
    assert_eq!(expectations(&b[0].code), ["1"]);
    assert_eq!(b[1].info, "sh no-test");
}

/// The runner itself: `-e` and `pipefail` make a failing command anywhere
/// in a block fail the guide, naming the block's line.
#[test]
fn a_failing_command_fails_the_guide() {
    let root = tempfile::tempdir().unwrap();
    let env = Env {
        dir: root.path().to_path_buf(),
        vars: Vec::new(),
    };
    let ok = "```sh\necho 20\n# => 20\n```\n\n```sh no-test\nfalse\n```\n";
    assert_eq!(run_markdown("ok.md", ok, &env), 1);
    for (code, line) in [("echo one\nfalse\necho two", 3), ("false | cat", 3)] {
        let text = format!("text\n\n```sh\n{code}\n```\n");
        let failed = std::panic::catch_unwind(|| run_markdown("bad.md", &text, &env))
            .expect_err("a failing block must fail the guide");
        let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains(&format!("bad.md:{line}: block")),
            "{message}"
        );
    }
}
