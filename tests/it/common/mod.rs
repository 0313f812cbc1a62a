//! Shared helpers of the end-to-end tests: a collector process with its own
//! ports and data dir, agents, the `search` CLI, the HTTPS API, and
//! generated access logs whose expected counts are known exactly.
//!
//! Every child process lives in a guard that kills it on drop, so a failing
//! assertion never leaves a collector or an agent behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod kafka;
pub mod scan;

pub use scan::{contains, files_holding, files_under, zstd_frames};

pub const BIN: &str = env!("CARGO_BIN_EXE_nightowl");

/// How long any waiting loop may take before the test fails. Generous: the
/// tests run in parallel on a small machine; nothing is timed.
pub const DEADLINE: Duration = Duration::from_secs(60);
pub const POLL: Duration = Duration::from_millis(100);
pub const COMMIT_INTERVAL_MS: u64 = 200;

// ---------------------------------------------------------------- ports

/// A port nobody listens on, outside the kernel's ephemeral range
/// (32768-60999), so an outgoing connection (an agent reconnecting while
/// its collector is down) can never be handed the port a restarted
/// collector needs. Unique within this test process.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // Different test processes start at different places of the range.
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN
    });
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in {LOW}..{}", LOW + SPAN);
}

// ------------------------------------------------------------ processes

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &str, mut cmd: Command, stderr_path: &Path) -> ChildGuard {
        let stderr = File::create(stderr_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", stderr_path.display()));
        cmd.stdin(Stdio::null()).stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already reaped")
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last lines of stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr(), 40)
    }

    /// SIGKILL: a crash. Waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to the deadline) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which is not reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid} failed");
        self.wait()
    }

    /// Waits (up to the deadline) for the process to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            let child = self.child_mut();
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if started.elapsed() > DEADLINE {
                let stderr = self.stderr_tail();
                self.kill();
                panic!(
                    "{} did not exit within {DEADLINE:?}; stderr:\n{stderr}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            if std::thread::panicking() {
                eprintln!(
                    "---- stderr of {} (last lines) ----\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
        }
    }
}

/// Starts `cmd` with `mask` as its umask (what a shell's `umask` would
/// have left it).
pub fn with_umask(cmd: &mut Command, mask: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask(2) is async-signal-safe; nothing else runs between
    // fork and exec here.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        });
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------ collector

/// Collector settings the tests vary; everything else is the default.
#[derive(Clone, Debug)]
pub struct Settings {
    pub commit_interval_ms: u64,
    pub max_frame_bytes: Option<usize>,
    pub max_line_bytes: Option<usize>,
    pub segment_bytes: Option<u64>,
    /// `[rules] dir`: detection rules run on every line.
    pub rules_dir: Option<PathBuf>,
    /// The embedded default pack (`true`: the collector's default, nothing
    /// written). Off unless a test asks: a test's alerts and firings are
    /// then exactly its own rules'.
    pub builtin_rules: bool,
    /// Appended to the config as is (whole sections, e.g. `[syslog]`).
    pub extra_toml: String,
    /// More `[index]` settings, one `key = value` a line.
    pub index_toml: String,
    /// The umask the collector process starts with (default: the test's).
    pub umask: Option<u32>,
    /// Environment variables of the collector process.
    pub env: Vec<(String, String)>,
    /// The agent port (default: a free one): a collector taking over
    /// another's address, where its agents keep connecting.
    pub agent_port: Option<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            commit_interval_ms: COMMIT_INTERVAL_MS,
            max_frame_bytes: None,
            max_line_bytes: None,
            segment_bytes: None,
            rules_dir: None,
            builtin_rules: false,
            extra_toml: String::new(),
            index_toml: String::new(),
            umask: None,
            env: Vec::new(),
            agent_port: None,
        }
    }
}

/// A `nightowl collector` process on fixed ports (so a restart keeps
/// them) and its data dir.
pub struct Collector {
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub agent_addr: String,
    /// `127.0.0.1:PORT` of the HTTPS API.
    pub api_addr: String,
    pub ca: PathBuf,
    pub token_file: PathBuf,
    process: Option<ChildGuard>,
    starts: u32,
    umask: Option<u32>,
    env: Vec<(String, String)>,
}

impl Collector {
    /// Writes a config under `root` and starts the collector; returns once
    /// it printed `nightowl: ready`.
    pub fn start(root: &Path, settings: Settings) -> Collector {
        let agent_port = settings.agent_port.unwrap_or_else(free_port);
        let api_port = free_port();
        let data_dir = root.join("data");
        let config_path = root.join("collector.toml");
        let mut toml = format!(
            "agent_listen = \"127.0.0.1:{agent_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\n\n\
             [index]\ncommit_interval_ms = {}\n\
             # small writer buffers: several collectors run at once\n\
             writer_heap_bytes = 64000000\n{}",
            settings.commit_interval_ms, settings.index_toml
        );
        if settings.max_frame_bytes.is_some() || settings.max_line_bytes.is_some() {
            toml.push_str("\n[limits]\n");
            if let Some(n) = settings.max_frame_bytes {
                let _ = writeln!(toml, "max_frame_bytes = {n}");
            }
            if let Some(n) = settings.max_line_bytes {
                let _ = writeln!(toml, "max_line_bytes = {n}");
            }
        }
        if let Some(n) = settings.segment_bytes {
            let _ = write!(toml, "\n[wal]\nsegment_bytes = {n}\n");
        }
        // With the embedded pack on, nothing is written about it: the
        // collector runs its own default.
        if settings.rules_dir.is_some() || !settings.builtin_rules {
            toml.push_str("\n[rules]\n");
            if !settings.builtin_rules {
                toml.push_str("builtin = false\n");
            }
            if let Some(dir) = &settings.rules_dir {
                let _ = writeln!(toml, "dir = {:?}", dir.display().to_string());
            }
        }
        toml.push('\n');
        toml.push_str(&settings.extra_toml);
        fs::write(&config_path, toml).expect("writing the collector config");
        let mut collector = Collector {
            root: root.to_path_buf(),
            ca: data_dir.join("tls").join("ca.pem"),
            token_file: data_dir.join("admin.token"),
            data_dir,
            config_path,
            agent_addr: format!("127.0.0.1:{agent_port}"),
            api_addr: format!("127.0.0.1:{api_port}"),
            process: None,
            starts: 0,
            umask: settings.umask,
            env: settings.env.clone(),
        };
        collector.spawn(&[]);
        collector
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("collector")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config_path)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn spawn(&mut self, extra: &[&str]) {
        assert!(self.process.is_none(), "collector already running");
        self.starts += 1;
        let stderr_path = self.root.join(format!("collector-{}.stderr", self.starts));
        let mut cmd = self.command(extra);
        cmd.stdout(Stdio::piped());
        if let Some(mask) = self.umask {
            with_umask(&mut cmd, mask);
        }
        let mut guard = ChildGuard::spawn(
            &format!("collector (start {})", self.starts),
            cmd,
            &stderr_path,
        );
        let printed = wait_for_ready(&mut guard);
        let expect = [
            format!("nightowl: CA certificate: {}", self.ca.display()),
            format!("nightowl: admin token: {}", self.token_file.display()),
            format!("nightowl: agent listener (TLS 1.3) on {}", self.agent_addr),
            format!("nightowl: HTTPS API on https://{}", self.api_addr),
        ];
        for line in &expect {
            assert!(
                printed.contains(line),
                "collector stdout lacks {line:?}: {printed:?}"
            );
        }
        self.process = Some(guard);
    }

    pub fn server(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    pub fn token(&self) -> String {
        fs::read_to_string(&self.token_file)
            .expect("reading the admin token")
            .trim()
            .to_string()
    }

    /// The running collector's process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("collector not running").id()
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("collector not running");
        process.kill();
    }

    /// SIGTERM: graceful shutdown; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut process = self.process.take().expect("collector not running");
        process.terminate()
    }

    /// Starts again with the same config, ports and data dir.
    pub fn restart(&mut self) {
        self.spawn(&[]);
    }

    /// Starts again with extra flags (e.g. `--audit-new-chain`).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.spawn(extra);
    }

    /// Starts the collector (stopped) expecting it to refuse: returns its
    /// output once it exited; fails the test if it is still up after the
    /// deadline.
    pub fn start_refused(&self, extra: &[&str]) -> Output {
        assert!(self.process.is_none(), "collector already running");
        let mut child = self
            .command(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the collector");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if child
                .try_wait()
                .expect("waiting for the collector")
                .is_some()
            {
                return child.wait_with_output().expect("collector output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collector output");
                panic!(
                    "the collector did not refuse to start: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildGuard::is_running)
    }

    pub fn stderr_tail(&self) -> String {
        self.process
            .as_ref()
            .map(ChildGuard::stderr_tail)
            .unwrap_or_default()
    }

    /// Everything the running collector logged.
    pub fn stderr(&self) -> String {
        self.process
            .as_ref()
            .map(ChildGuard::stderr)
            .unwrap_or_default()
    }

    // ----- agent

    fn agent_command(&self, state_dir: &Path, files: &[&Path], once: bool) -> Command {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--state-dir".as_ref(), state_dir.as_os_str()];
        if once {
            args.push("--once".as_ref());
        }
        args.extend(files.iter().map(|f| f.as_os_str()));
        self.agent_command_with(&args)
    }

    /// `nightowl agent` without `--once`: keeps tailing until killed.
    pub fn spawn_agent(&self, name: &str, state_dir: &Path, files: &[&Path]) -> ChildGuard {
        let stderr = self.root.join(format!("{name}.stderr"));
        ChildGuard::spawn(name, self.agent_command(state_dir, files, false), &stderr)
    }

    /// `nightowl agent --once`; returns its exit status and stderr.
    pub fn run_agent_once(
        &self,
        name: &str,
        state_dir: &Path,
        files: &[&Path],
    ) -> (ExitStatus, String) {
        let stderr = self.root.join(format!("{name}.stderr"));
        let mut agent =
            ChildGuard::spawn(name, self.agent_command(state_dir, files, true), &stderr);
        let status = agent.wait();
        (status, agent.stderr())
    }

    /// `nightowl agent --collector .. --ca .. --token-file .. ARGS` (the
    /// state dir, globs, `--config`, ... are in `args`).
    pub fn agent_command_with(&self, args: &[&std::ffi::OsStr]) -> Command {
        self.agent_command_as("e2e-host", args)
    }

    /// [`Collector::agent_command_with`] for an agent on host `host`.
    pub fn agent_command_as(&self, host: &str, args: &[&std::ffi::OsStr]) -> Command {
        let mut cmd = self.agent_base(&self.token_file);
        cmd.arg("--host").arg(host).args(args);
        cmd
    }

    /// `nightowl agent` pointed at this collector with `token_file`.
    fn agent_base(&self, token_file: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--collector")
            .arg(&self.agent_addr)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--token-file")
            .arg(token_file)
            .stdout(Stdio::null());
        cmd
    }

    /// A tailing agent with extra arguments; killed when dropped.
    pub fn spawn_agent_with(&self, name: &str, args: &[&std::ffi::OsStr]) -> ChildGuard {
        let stderr = self.root.join(format!("{name}.stderr"));
        ChildGuard::spawn(name, self.agent_command_with(args), &stderr)
    }

    /// A tailing agent on host `host`; killed when dropped.
    pub fn spawn_agent_as(&self, host: &str, name: &str, args: &[&std::ffi::OsStr]) -> ChildGuard {
        let stderr = self.root.join(format!("{name}.stderr"));
        ChildGuard::spawn(name, self.agent_command_as(host, args), &stderr)
    }

    // ----- search CLI

    /// Runs `nightowl search --server .. --ca .. --token-file .. ARGS`.
    pub fn search(&self, args: &[&str]) -> Output {
        self.search_with_token_file(&self.token_file, args)
    }

    /// `nightowl ARGS --server .. --ca .. --token-file TOKEN_FILE`.
    pub fn cli_as(&self, token_file: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--server")
            .arg(self.server())
            .arg("--ca")
            .arg(&self.ca)
            .arg("--token-file")
            .arg(token_file)
            .output()
            .expect("running nightowl")
    }

    /// [`Collector::cli_as`] with the operator (admin) token, which must
    /// succeed; returns its stdout, trimmed.
    /// `nightowl audit verify` over this collector's data dir.
    pub fn audit_verify(&self) -> Output {
        Command::new(BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("running audit verify")
    }

    /// The whole audit log, as the operator reads it.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        ndjson_of(&self.cli_as(
            &self.token_file,
            &["audit", "list", "--json", "--limit", "100000"],
        ))
    }

    pub fn operator(&self, args: &[&str]) -> String {
        let out = self.cli_as(&self.token_file, args);
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        stdout_of(&out).trim().to_string()
    }

    /// The number of lines matching `query` for the tenant of `token`.
    pub fn count_as(&self, token: &str, query: &str) -> u64 {
        let path = format!(
            "/api/v1/count?q={}",
            nightowl::http_client::encode_param(query)
        );
        let (status, body) = self.api_get_with_token(token, &path);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).expect("count JSON");
        json["count"].as_u64().expect("count")
    }

    /// An agent shipping `files` with the token in `token_file`, its state
    /// in `ROOT/NAME-state`; with `once` it exits when all is acked.
    pub fn agent_as(
        &self,
        name: &str,
        token_file: &Path,
        files: &[&Path],
        once: bool,
    ) -> ChildGuard {
        let mut cmd = self.agent_base(token_file);
        cmd.arg("--state-dir")
            .arg(self.root.join(format!("{name}-state")));
        if once {
            cmd.arg("--once");
        }
        cmd.args(files);
        ChildGuard::spawn(name, cmd, &self.root.join(format!("{name}.stderr")))
    }

    /// `token create ARGS` as the operator: the new token and a file
    /// holding it (`ROOT/NAME.token`).
    pub fn new_token(&self, name: &str, args: &[&str]) -> (String, PathBuf) {
        let token = self.operator(&[&["token", "create"], args].concat());
        assert!(token.starts_with("nwl_"), "{token}");
        let path = self.root.join(format!("{name}.token"));
        fs::write(&path, format!("{token}\n")).expect("writing the token file");
        (token, path)
    }

    pub fn search_with_token_file(&self, token_file: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("search")
            .arg("--server")
            .arg(self.server())
            .arg("--ca")
            .arg(&self.ca)
            .arg("--token-file")
            .arg(token_file)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running nightowl search")
    }

    /// `search --count QUERY` (all of history).
    pub fn count(&self, query: &str) -> u64 {
        let out = self.search(&["--count", query]);
        assert!(
            out.status.success(),
            "search --count {query:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("search --count printed {text:?}, not a number"))
    }

    /// Polls `count(query)` until it equals `expected` (failing at once if
    /// it ever exceeds it: a line indexed twice), then checks it stays
    /// exactly there for several commit intervals.
    pub fn wait_for_count(&self, query: &str, expected: u64) {
        let started = Instant::now();
        let mut last = 0;
        loop {
            let n = self.count(query);
            assert!(
                n <= expected,
                "count of {query:?} is {n}, more than the {expected} lines sent: duplicates"
            );
            if n == expected {
                break;
            }
            if n != last {
                last = n;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "count of {query:?} stuck at {last}, expected {expected} (waited {DEADLINE:?}); collector stderr:\n{}",
                self.stderr_tail()
            );
            std::thread::sleep(POLL);
        }
        // Stays exact: nothing late (a duplicate still in the pipeline)
        // shows up over several more commits.
        for _ in 0..(5 * COMMIT_INTERVAL_MS / POLL.as_millis() as u64).max(5) {
            std::thread::sleep(POLL);
            let n = self.count(query);
            assert_eq!(
                n, expected,
                "count of {query:?} moved after reaching {expected}"
            );
        }
    }

    /// Polls until `count(query) >= at_least`; returns the count seen.
    pub fn wait_for_count_at_least(&self, query: &str, at_least: u64) -> u64 {
        wait_until(&format!("count of {query:?} >= {at_least}"), || {
            let n = self.count(query);
            (n >= at_least).then_some(n)
        })
    }

    // ----- HTTPS API

    /// GET with the admin token; returns the status and body.
    pub fn api_get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        self.api_get_with_token(&self.token(), path_and_query)
    }

    pub fn api_get_with_token(&self, token: &str, path_and_query: &str) -> (u16, Vec<u8>) {
        block_on(async {
            let client =
                nightowl::cli::http::ApiClient::new(&self.server(), &self.ca, token.to_string())
                    .expect("API client");
            let (status, body) = client
                .get(path_and_query)
                .await
                .unwrap_or_else(|e| panic!("GET {path_and_query}: {e:#}"));
            (status.as_u16(), body.to_vec())
        })
    }

    /// GET expecting 200 and a JSON body.
    pub fn api_json(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.api_get(path_and_query);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            status, 200,
            "GET {path_and_query} answered {status}: {text}"
        );
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: body is not JSON ({e}): {text}"))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let (status, body) = self.api_get("/metrics");
        assert_eq!(status, 200, "GET /metrics answered {status}");
        String::from_utf8(body).expect("metrics are UTF-8")
    }

    /// The value of the sample named exactly `name` (with its labels, if any).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text();
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
    }

    /// Polls until the metric equals `expected`, then checks it stays.
    pub fn wait_for_metric(&self, name: &str, expected: f64) {
        wait_until(&format!("metric {name} == {expected}"), || {
            let v = self.metric(name);
            assert!(v <= expected, "metric {name} is {v}, above {expected}");
            (v == expected).then_some(())
        });
        std::thread::sleep(Duration::from_millis(3 * COMMIT_INTERVAL_MS));
        assert_eq!(self.metric(name), expected, "metric {name} moved");
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fut)
}

/// Reads a server's piped stdout until it prints `nightowl: ready`;
/// returns what it printed. Keeps draining stdout for the life of the
/// process, so it never blocks on a full pipe.
pub fn wait_for_ready(guard: &mut ChildGuard) -> Vec<String> {
    let stdout = guard.child_mut().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut printed = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line == "nightowl: ready";
                printed.push(line);
                if ready {
                    return printed;
                }
            }
            Err(_) => panic!(
                "{} never printed `nightowl: ready` (stdout so far: {printed:?}); stderr:\n{}",
                guard.name,
                guard.stderr_tail()
            ),
        }
    }
}

/// Polls `f` every [`POLL`] until it returns `Some`, failing after [`DEADLINE`].
pub fn wait_until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until_within(DEADLINE, what, f)
}

/// [`wait_until`] with its own deadline, for what a starved 2-core machine
/// makes slow without making it wrong (a Kafka group's rebalance).
pub fn wait_until_within<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            // Shown with a later failure of the same test: a slow wait
            // that passed is often the clue.
            if started.elapsed() > Duration::from_secs(5) {
                eprintln!("waited {:?} for {what}", started.elapsed());
            }
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "gave up waiting for {what} after {deadline:?}"
        );
        std::thread::sleep(POLL);
    }
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The NDJSON objects a successful command printed (`--json` output).
pub fn ndjson_of(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", stderr_of(out));
    stdout_of(out)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not an NDJSON object ({e}): {l}"))
        })
        .collect()
}

/// Appends `text` to `path` in one write.
pub fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("appending");
    f.flush().expect("flushing");
}

// -------------------------------------------------------------- lines

/// SplitMix64: deterministic, so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `[time_local]` of nginx: `24/Nov/2026:21:13:23 -0700`, the same instant
/// written in the given UTC offset (minutes).
pub fn nginx_time(unix_secs: i64, offset_minutes: i32) -> String {
    let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).expect("offset");
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .expect("timestamp")
        .to_offset(offset);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let abs = offset_minutes.unsigned_abs();
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        t.day(),
        &format!("{:?}", t.month())[..3],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        abs / 60,
        abs % 60
    )
}

/// What was generated, for exact expectations.
#[derive(Debug, Default)]
pub struct AccessLog {
    pub text: String,
    /// Parseable access-log lines.
    pub lines: u64,
    /// Lines no parser understands, in the order written.
    pub raw_lines: Vec<String>,
    pub by_status: BTreeMap<u16, u64>,
    pub by_method: BTreeMap<&'static str, u64>,
    pub by_status_method: BTreeMap<(u16, &'static str), u64>,
    /// Unix seconds of every parseable line, in file order.
    pub timestamps: Vec<i64>,
    /// Lines from [`HOT_IP`].
    pub hot_ip: u64,
    /// Lines whose path contains the word `login`.
    pub login: u64,
    /// Lines with the user `frank`.
    pub frank: u64,
    pub first_unix: i64,
    pub last_unix: i64,
}

pub const HOT_IP: &str = "203.0.113.77";
/// A word only the unparseable lines contain.
pub const RAW_MARKER: &str = "zzqxnoparse";

/// Realistic nginx `combined` lines, spread over the 50 minutes before now,
/// written in several UTC offsets, plus `raw` (unparseable) lines
/// interleaved at deterministic places.
pub fn access_log(n: u64, seed: u64, raw: &[&str]) -> AccessLog {
    const METHODS: [&str; 8] = ["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
    const PATHS: [&str; 14] = [
        "/",
        "/index.html",
        "/login",
        "/login?next=%2Faccount",
        "/api/v1/orders",
        "/api/v1/orders/8812/items",
        "/api/v1/users/42/login-history",
        "/static/js/app.3f9a1c.js",
        "/static/css/site.css",
        "/images/logo.png",
        "/search?q=night+owl&page=2",
        "/account/settings",
        "/healthz",
        "/wp-admin/setup-config.php",
    ];
    const STATUSES: [u16; 20] = [
        200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 301, 302, 304, 304, 400, 401, 403, 404,
        500, 502,
    ];
    const AGENTS: [&str; 6] = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "curl/8.5.0",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
        "python-requests/2.31.0",
    ];
    const REFERERS: [&str; 4] = [
        "-",
        "https://www.example.com/",
        "https://www.google.com/search?q=nightowl",
        "https://shop.example.com/cart?id=77",
    ];
    const OFFSETS: [i32; 5] = [0, 0, -420, 330, 60];

    let mut rng = Rng::new(seed);
    let now = now_unix();
    let first = now - 3000;
    let span = 2400i64;
    let mut log = AccessLog {
        first_unix: first,
        last_unix: first,
        ..AccessLog::default()
    };
    log.text.reserve(n as usize * 230);
    // Where the raw lines go: spread over the file, deterministic.
    let raw_at: Vec<u64> = (0..raw.len() as u64)
        .map(|k| (k * n) / raw.len().max(1) as u64 + 1)
        .collect();
    for i in 0..n {
        if let Some(k) = raw_at.iter().position(|&at| at == i) {
            log.text.push_str(raw[k]);
            log.text.push('\n');
            log.raw_lines.push(raw[k].to_string());
        }
        let secs = first + (i as i64 * span) / n.max(1) as i64;
        log.last_unix = secs;
        log.timestamps.push(secs);
        let ip = if rng.below(50) == 0 {
            log.hot_ip += 1;
            HOT_IP.to_string()
        } else if rng.below(40) == 0 {
            format!(
                "2001:db8:{:x}::{:x}",
                rng.below(0xffff),
                rng.below(0xffff) + 1
            )
        } else {
            format!(
                "{}.{}.{}.{}",
                1 + rng.below(223),
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            )
        };
        let user = if rng.below(30) == 0 {
            log.frank += 1;
            "frank"
        } else {
            "-"
        };
        let method = *rng.pick(&METHODS);
        *log.by_method.entry(method).or_default() += 1;
        let path = *rng.pick(&PATHS);
        if has_word(path, "login") {
            log.login += 1;
        }
        let status = *rng.pick(&STATUSES);
        *log.by_status.entry(status).or_default() += 1;
        *log.by_status_method.entry((status, method)).or_default() += 1;
        let bytes = if status == 304 || status == 204 {
            "0".to_string()
        } else if rng.below(20) == 0 {
            "-".to_string()
        } else {
            (120 + rng.below(80_000)).to_string()
        };
        let referer = *rng.pick(&REFERERS);
        let agent = *rng.pick(&AGENTS);
        let offset = *rng.pick(&OFFSETS);
        let _ = writeln!(
            log.text,
            "{ip} - {user} [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"{referer}\" \"{agent}\"",
            nginx_time(secs, offset)
        );
        log.lines += 1;
    }
    log
}

/// Whether the default tokenizer (split on non-alphanumerics, lowercase)
/// would find `word` in `text`.
pub fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// Numbered access-log lines `from..to`: each carries the unique word
/// `seqNNNNNNN`; every 7th line has status 500, the rest 200.
pub fn numbered_lines(from: u64, to: u64) -> String {
    let now = now_unix();
    let stamp = nginx_time(now, 0);
    let mut out = String::with_capacity((to - from) as usize * 160);
    for i in from..to {
        let status = if i % 7 == 0 { 500 } else { 200 };
        let _ = writeln!(
            out,
            "10.{}.{}.{} - - [{stamp}] \"GET /orders/seq{i:07}?page={} HTTP/1.1\" {status} {} \"-\" \"e2e-writer/1.0\"",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            i % 13,
            200 + i % 5000,
        );
    }
    out
}

/// How many of `numbered_lines(0, n)` have status 500.
pub fn numbered_500s(n: u64) -> u64 {
    n.div_ceil(7)
}

// -------------------------------------------------------------- agent

/// `nightowl agent status --json --state-dir DIR`, parsed; `None` while
/// the agent has not written its first status yet.
pub fn agent_status(state_dir: &Path) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["agent", "status", "--json", "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .output()
        .expect("running nightowl agent status");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The status entry of the file at `path`, if the agent tails it.
pub fn file_status(status: &serde_json::Value, path: &Path) -> Option<serde_json::Value> {
    status["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str() == path.to_str())
        .cloned()
}

/// Waits until the agent using `state_dir` has read `path` to its end
/// (offset == size, and the size is at least `min_size`).
pub fn wait_agent_read(state_dir: &Path, path: &Path, min_size: u64) {
    // Only a status written after this call counts: an older one may
    // describe an earlier file at the same path.
    let asked_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    wait_until(
        &format!("the agent to read {} to its end", path.display()),
        || {
            let status = agent_status(state_dir)?;
            if i128::from(status["updated_unix_ms"].as_i64()?) <= asked_ms {
                return None;
            }
            let f = file_status(&status, path)?;
            let (offset, size) = (f["offset"].as_u64()?, f["size"].as_u64()?);
            (size >= min_size && offset == size).then_some(())
        },
    );
}

/// Total size of the files in `dir` (the agent's spool).
pub fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ------------------------------------------------------- webhook recorder

/// One HTTP request a [`WebhookRecorder`] received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query, e.g. `/hook`.
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body as JSON, `Null` when it is not JSON.
    pub json: serde_json::Value,
    /// When it arrived (for latency reports; never asserted on).
    pub at: Instant,
}

impl Request {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Requests = std::sync::Arc<std::sync::Mutex<Vec<Request>>>;
type Statuses = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u16>>>;

/// A real HTTP/1.1 server on 127.0.0.1 (axum, on its own thread and
/// runtime) that records every request, whatever its method and path, and
/// answers 200 unless [`WebhookRecorder::respond`] says otherwise. Stops
/// when dropped.
pub struct WebhookRecorder {
    port: u16,
    requests: Requests,
    statuses: Statuses,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookRecorder {
    /// On a fresh port.
    pub fn start() -> WebhookRecorder {
        WebhookRecorder::start_on(free_port())
    }

    /// On `port`: for a receiver configured (and failing) before anyone listens.
    pub fn start_on(port: u16) -> WebhookRecorder {
        let requests: Requests = Default::default();
        let statuses: Statuses = Default::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let state = (
            std::sync::Arc::clone(&requests),
            std::sync::Arc::clone(&statuses),
        );
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let app = axum::Router::new()
                    .fallback(record_request)
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("binding the webhook recorder");
                ready_tx.send(()).expect("ready");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("webhook recorder");
            });
        });
        ready_rx.recv().expect("webhook recorder started");
        WebhookRecorder {
            port,
            requests,
            statuses,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/PATH` (`path` with or without its leading `/`).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Answer requests to `path` with `status` from now on (e.g. 410 for an
    /// endpoint that is gone).
    pub fn respond(&self, path: &str, status: u16) {
        self.statuses
            .lock()
            .expect("statuses")
            .insert(format!("/{}", path.trim_start_matches('/')), status);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }

    /// The requests to `path` (with or without its leading `/`).
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub fn wait_for(&self, n: usize) -> Vec<Request> {
        wait_until(&format!("{n} request(s) to the webhook recorder"), || {
            let got = self.requests();
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for WebhookRecorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn record_request(
    axum::extract::State((requests, statuses)): axum::extract::State<(Requests, Statuses)>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, &'static str) {
    let path = uri.path().to_string();
    let status = statuses
        .lock()
        .expect("statuses")
        .get(&path)
        .copied()
        .unwrap_or(200);
    requests.lock().expect("requests").push(Request {
        method: method.to_string(),
        path,
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    (status, if status.is_success() { "ok" } else { "refused" })
}
