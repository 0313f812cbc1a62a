//! The agent's settings: `--config agent.toml`, with command-line flags on top.
//!
//! Every field has a default; unknown keys are rejected with their name, so a
//! typo never silently turns into a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// What to do with a line longer than the collector's `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLines {
    /// Ship the first `max_line_bytes` bytes as the line: the evidence
    /// that something odd was logged stays searchable.
    Truncate,
    /// Drop the whole line (default): a line that long is seldom a log
    /// line (a binary file, a dumped blob), and a cut one does not parse.
    Skip,
}

/// Where to start in a file seen for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From its first byte (default).
    Beginning,
    /// From its end: only lines written from now on. Applies to files found
    /// by the first scan of a run; files appearing later are new files and
    /// are read from their beginning.
    End,
}

/// `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Collector addresses `HOST:PORT`, tried in order (failover). `--collector`
    /// flags replace this list. Default: none (then a flag is required).
    pub collectors: Vec<String>,
    /// CA certificate that signed the collector's certificate. `--ca` wins.
    pub ca: Option<PathBuf>,
    /// File holding the agent token. `--token-file` wins.
    pub token_file: Option<PathBuf>,
    /// Client certificate (PEM) for a collector with `[tls] client_ca`
    /// (docs/mtls.md): it names the tenant, and the token becomes
    /// optional. `--tls-cert` wins.
    pub tls_cert: Option<PathBuf>,
    /// The key of `tls_cert`. `--tls-key` wins.
    pub tls_key: Option<PathBuf>,
    /// Checkpoints, spool and status file. `--state-dir` wins.
    pub state_dir: Option<PathBuf>,
    /// Default `host` label. Default: this machine's hostname.
    pub host: Option<String>,
    /// Largest on-disk spool, bytes; when full, reading pauses (nothing is
    /// dropped). Default 256 MiB.
    pub spool_limit_bytes: u64,
    /// Largest batch of lines, bytes (before compression). Default 1 MiB.
    pub batch_bytes: usize,
    /// How long a small amount of new data may wait for more before it is
    /// shipped, ms. Default 20.
    pub linger_ms: u64,
    /// A last line without its newline is shipped once the file has not
    /// grown for this long, ms. Default 5000.
    pub partial_line_timeout_ms: u64,
    /// A rotated-away or deleted file is closed once read to its end and
    /// idle for this long, ms. Default 5000.
    pub close_inactive_ms: u64,
    /// Lines above the collector's limit: `skip` (default) or `truncate`.
    /// Either is logged and counted in the status.
    pub long_lines: LongLines,
    /// zstd-compress batches when the collector accepts it. Default true.
    pub compression: bool,
    /// Redact secrets before lines reach the spool, with the collector's
    /// `[redact]` rules (received at each connection, kept in the state
    /// dir; the built-in rules until the first connection). The collector
    /// redacts again either way. Needs a collector that knows agent-side
    /// redaction; `false` spools lines as read. Default true.
    pub redact: bool,
    /// Batches sent but not yet acknowledged. Default 16.
    pub max_inflight: usize,
    /// Globs are expanded again this often, ms (inotify wakes the agent
    /// sooner for changes in watched directories). Default 1000.
    pub rescan_interval_ms: u64,
    /// Log as JSON lines. Default false.
    pub log_json: bool,
    /// Encrypt the spool (AES-256-GCM) with the key in this file: 32 raw
    /// bytes or 64 hex digits. `--spool-key-file` wins; unset, then
    /// `NIGHTOWL_SPOOL_KEY_FILE`; else (default) the spool is stored plain.
    /// See docs/encryption.md.
    pub spool_encryption_key_file: Option<PathBuf>,
    /// Files to ship. Default: none (then globs on the command line are required).
    pub inputs: Vec<InputConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            collectors: Vec::new(),
            ca: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            state_dir: None,
            host: None,
            spool_limit_bytes: 256 * 1024 * 1024,
            batch_bytes: 1024 * 1024,
            linger_ms: 20,
            partial_line_timeout_ms: 5000,
            close_inactive_ms: 5000,
            long_lines: LongLines::Skip,
            compression: true,
            redact: true,
            max_inflight: 16,
            rescan_interval_ms: 1000,
            log_json: false,
            spool_encryption_key_file: None,
            inputs: Vec::new(),
        }
    }
}

/// One `[[inputs]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Globs, e.g. `["/var/log/nginx/*.log"]`. Default: none.
    pub paths: Vec<String>,
    /// Globs of paths (or bare file names) never to ship, e.g. `["*.gz"]`.
    /// Default: none.
    pub exclude: Vec<String>,
    /// Parser hint: auto, combined, common, json, syslog5424, syslog3164, squid, w3c (IIS), elb (AWS ALB), haproxy, raw.
    /// Default `auto`.
    pub format: String,
    /// `host` label for these files. Default: the agent's `host`.
    pub host: Option<String>,
    /// `source` label for these files. Default: the file's path.
    pub source: Option<String>,
    /// `beginning` (default) or `end`, for files seen the first time.
    pub start_at: StartAt,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            paths: Vec::new(),
            exclude: Vec::new(),
            format: "auto".into(),
            host: None,
            source: None,
            start_at: StartAt::Beginning,
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(config)
    }
}

/// An input with its exclude patterns compiled and its labels resolved.
#[derive(Debug, Clone)]
pub struct Input {
    pub paths: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub format: String,
    pub host: String,
    pub source: Option<String>,
    pub start_at: StartAt,
}

impl Input {
    /// Excludes match the full path or, for patterns without a `/`, the
    /// file name alone (`*.gz` means what it looks like).
    pub fn excludes(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        self.exclude.iter().any(|p| {
            p.matches_path(path)
                || (!p.as_str().contains('/') && name.is_some_and(|n| p.matches_path(n)))
        })
    }
}

/// Everything the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub collectors: Vec<String>,
    pub ca: PathBuf,
    /// Empty when a client certificate alone authenticates.
    pub token: String,
    /// Client certificate and key files, when given.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    pub state_dir: PathBuf,
    pub inputs: Vec<Input>,
    pub once: bool,
    /// `--once`: how long the collectors may stay unreachable before the
    /// agent gives up with an error (what it read stays in the spool).
    pub give_up_after: Duration,
    pub spool_limit_bytes: u64,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub partial_line_timeout: Duration,
    pub close_inactive: Duration,
    pub long_lines: LongLines,
    pub compression: bool,
    pub redact: bool,
    pub max_inflight: usize,
    pub rescan_interval: Duration,
    /// Seals the spool's records when set (see `spool.rs`).
    pub spool_key: Option<std::sync::Arc<crate::crypto::Key>>,
}

/// `glob` from `cwd` when it is relative (`cwd` escaped: its own `[` or
/// `*` are no wildcards).
fn absolute_glob(glob: &str, cwd: &Path) -> String {
    if Path::new(glob).is_absolute() {
        return glob.to_string();
    }
    let glob = glob.strip_prefix("./").unwrap_or(glob);
    let base = glob::Pattern::escape(&cwd.to_string_lossy());
    format!("{}/{glob}", base.trim_end_matches('/'))
}

/// A collector address is `HOST:PORT` (an IPv6 host in brackets): without
/// a port the agent would retry a connection that can never be made.
fn check_collector_address(addr: &str) -> Result<()> {
    let port_ok = |host: &str, port: &str| !host.is_empty() && port.parse::<u16>().is_ok();
    match addr.rsplit_once(':') {
        Some((host, port)) if port_ok(host, port) => {
            if host.contains(':') && !host.starts_with('[') {
                bail!("collector address {addr:?}: an IPv6 host goes in brackets, as [::1]:7400");
            }
            Ok(())
        }
        _ => bail!("collector address {addr:?} has no port: write HOST:PORT, as 127.0.0.1:7400"),
    }
}

impl Settings {
    /// Checks the numbers against each other; `inputs` already resolved.
    pub fn validate(&self) -> Result<()> {
        if self.collectors.is_empty() {
            bail!("no collector address given (--collector or `collectors` in the config)");
        }
        for addr in &self.collectors {
            check_collector_address(addr)?;
        }
        if self.inputs.iter().all(|i| i.paths.is_empty()) {
            bail!("no files to ship (GLOB arguments or [[inputs]] in the config)");
        }
        for input in &self.inputs {
            input
                .format
                .parse::<crate::parse::Format>()
                .map_err(|e| anyhow::anyhow!("format {:?}: {e}", input.format))?;
            for pattern in &input.paths {
                glob::Pattern::new(pattern).with_context(|| format!("invalid glob {pattern:?}"))?;
            }
        }
        if self.batch_bytes < 4096 {
            bail!(
                "batch_bytes must be at least 4096, not {}",
                self.batch_bytes
            );
        }
        // Room for a few whole batches, or reading could stall for good.
        let min_spool = 4 * self.batch_bytes as u64 + 64 * 1024;
        if self.spool_limit_bytes < min_spool {
            bail!(
                "spool_limit_bytes must be at least 4 batches plus 64 KiB ({min_spool}), not {}",
                self.spool_limit_bytes
            );
        }
        if self.max_inflight == 0 {
            bail!("max_inflight must be at least 1");
        }
        Ok(())
    }
}

/// What the command line says (`nightowl agent`'s flags); each set flag
/// wins over the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Collector address HOST:PORT; repeat for failover.
    #[arg(long = "collector", value_name = "COLLECTOR")]
    pub collectors: Vec<String>,
    /// CA certificate that signed the collector's certificate.
    #[arg(long, env = "NIGHTOWL_CA")]
    pub ca: Option<PathBuf>,
    /// File holding an agent (or admin) token.
    #[arg(long, env = "NIGHTOWL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Client certificate (PEM) for a collector with `[tls] client_ca`;
    /// names the tenant, makes the token optional. Needs --tls-key.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Checkpoints, the spool and the status file live here (default:
    /// `state_dir` of the config, else /var/lib/nightowl-agent).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `host` label for the lines (default: this machine's hostname).
    #[arg(long)]
    pub host: Option<String>,
    /// Parser hint for the GLOB files: auto, combined, common, json,
    /// syslog5424, syslog3164, squid, w3c (IIS), elb (AWS ALB), haproxy, raw.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Exit once everything present has been shipped and acknowledged,
    /// printing what was shipped; every GLOB must match a readable file.
    #[arg(long)]
    pub once: bool,
    /// With --once: fail (exit 1) when no collector answered for this long;
    /// what was read stays in the spool for the next run.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        requires = "once",
        value_parser = parse_give_up_after
    )]
    pub give_up_after: Option<Duration>,
    /// agent.toml: inputs, spool limit, batching (flags win over it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Encrypt the spool with the AES-256-GCM key in this file (32 raw bytes
    /// or 64 hex digits); else `spool_encryption_key_file`, else
    /// $NIGHTOWL_SPOOL_KEY_FILE.
    #[arg(long)]
    pub spool_key_file: Option<PathBuf>,
    /// Files to ship (globs), in addition to the config's inputs.
    pub globs: Vec<String>,
}

/// `--give-up-after`: a duration with its unit (`90s`, `5m`).
fn parse_give_up_after(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "a duration needs a unit ({text}s, {text}m, {text}h, {text}d)"
        ));
    }
    crate::time::parse_duration(text)
        .map(|nanos| Duration::from_nanos(nanos.max(0) as u64))
        .map_err(|e| format!("{e:#}"))
}

/// Where checkpoints and the spool live without `--state-dir` or `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nightowl-agent";

/// How long `--once` waits for an unreachable collector before it fails.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Names the spool key file when neither `--spool-key-file` nor the config does.
pub const SPOOL_KEY_FILE_ENV: &str = "NIGHTOWL_SPOOL_KEY_FILE";

impl Settings {
    /// Config file (if any) plus flags, validated. Also returns whether the
    /// config asks for JSON logs.
    pub fn from_flags(flags: Flags) -> Result<(Settings, bool)> {
        let config = match &flags.config {
            Some(path) => AgentConfig::load(path)?,
            None => AgentConfig::default(),
        };
        let host = flags
            .host
            .clone()
            .or(config.host.clone())
            .unwrap_or_else(hostname);
        let mut inputs = config
            .inputs
            .iter()
            .map(|i| resolve_input(i, &host))
            .collect::<Result<Vec<_>>>()?;
        if !flags.globs.is_empty() {
            // Absolute, so a file's source label (its path) is the same
            // whatever directory the agent was started from.
            let cwd = std::env::current_dir().context("reading the current directory")?;
            inputs.push(Input {
                paths: flags.globs.iter().map(|g| absolute_glob(g, &cwd)).collect(),
                exclude: Vec::new(),
                format: flags.format.clone(),
                host: host.clone(),
                source: None,
                start_at: StartAt::Beginning,
            });
        }
        let collectors = if flags.collectors.is_empty() {
            config.collectors.clone()
        } else {
            flags.collectors.clone()
        };
        let Some(ca) = flags.ca.clone().or(config.ca.clone()) else {
            bail!("no CA certificate given (--ca or `ca` in the config)");
        };
        let tls_identity = match (
            flags.tls_cert.clone().or(config.tls_cert.clone()),
            flags.tls_key.clone().or(config.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("a client certificate needs both --tls-cert and --tls-key (or `tls_cert` and `tls_key` in the config)"),
        };
        let token_file = flags.token_file.clone().or(config.token_file.clone());
        if token_file.is_none() && tls_identity.is_none() {
            bail!("no token file given (--token-file or `token_file` in the config), nor a client certificate (--tls-cert/--tls-key)");
        }
        let state_dir = flags
            .state_dir
            .clone()
            .or(config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let token = match &token_file {
            Some(file) => crate::auth::read_token_file(file)?,
            None => String::new(),
        };
        let spool_key = flags
            .spool_key_file
            .clone()
            .or(config.spool_encryption_key_file.clone())
            .or_else(|| {
                std::env::var_os(SPOOL_KEY_FILE_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .map(|path| crate::crypto::Key::load(&path, "spool key").map(std::sync::Arc::new))
            .transpose()?;
        let settings = Settings {
            collectors,
            ca,
            token,
            tls_identity,
            state_dir,
            inputs,
            once: flags.once,
            give_up_after: flags.give_up_after.unwrap_or(DEFAULT_GIVE_UP_AFTER),
            spool_limit_bytes: config.spool_limit_bytes,
            batch_bytes: config.batch_bytes,
            linger: Duration::from_millis(config.linger_ms),
            partial_line_timeout: Duration::from_millis(config.partial_line_timeout_ms),
            close_inactive: Duration::from_millis(config.close_inactive_ms),
            long_lines: config.long_lines,
            compression: config.compression,
            redact: config.redact,
            max_inflight: config.max_inflight,
            rescan_interval: Duration::from_millis(config.rescan_interval_ms.max(10)),
            spool_key,
        };
        settings.validate()?;
        Ok((settings, config.log_json))
    }
}

impl Settings {
    /// The TLS client config: trusts `ca`, presents the client
    /// certificate when one is configured.
    pub fn tls_client(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        let identity = self
            .tls_identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        crate::transport::tls::client_config_with(&self.ca, identity)
    }
}

fn hostname() -> String {
    crate::fsutil::hostname().unwrap_or_default()
}

/// Resolves a config input's labels and patterns.
pub fn resolve_input(input: &InputConfig, default_host: &str) -> Result<Input> {
    let exclude = input
        .exclude
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("invalid exclude pattern {p:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Input {
        paths: input.paths.clone(),
        exclude,
        format: input.format.clone(),
        host: input
            .host
            .clone()
            .unwrap_or_else(|| default_host.to_string()),
        source: input.source.clone(),
        start_at: input.start_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_globs_start_from_the_current_directory() {
        let cwd = Path::new("/srv/app [old]");
        assert_eq!(absolute_glob("/var/log/*.log", cwd), "/var/log/*.log");
        assert_eq!(
            absolute_glob("logs/*.log", cwd),
            "/srv/app [[]old[]]/logs/*.log"
        );
        assert_eq!(absolute_glob("./a.log", cwd), "/srv/app [[]old[]]/a.log");
        let pattern = glob::Pattern::new(&absolute_glob("logs/*.log", cwd)).expect("pattern");
        assert!(pattern.matches("/srv/app [old]/logs/access.log"));
    }

    #[test]
    fn a_collector_address_needs_a_port() {
        for ok in ["127.0.0.1:7400", "collector.example:7400", "[::1]:7400"] {
            assert!(check_collector_address(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("127.0.0.1", "has no port"),
            ("collector.example:http", "has no port"),
            (":7400", "has no port"),
            ("::1:7400", "in brackets"),
        ] {
            let e = check_collector_address(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<AgentConfig>("spool_limit = 5\n").expect_err("unknown key");
        assert!(err.to_string().contains("spool_limit"), "{err}");
        let err = toml::from_str::<AgentConfig>("[[inputs]]\npath = [\"x\"]\n")
            .expect_err("unknown input key");
        assert!(err.to_string().contains("path"), "{err}");
    }

    #[test]
    fn state_dir_and_give_up_have_the_documented_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("agent.token");
        std::fs::write(&token, "nwl_x_y\n").expect("token");
        let (settings, _) = Settings::from_flags(Flags {
            collectors: vec!["127.0.0.1:7400".into()],
            ca: Some(dir.path().join("ca.pem")),
            token_file: Some(token),
            format: "auto".into(),
            globs: vec!["/var/log/nginx/access.log".into()],
            ..Flags::default()
        })
        .expect("settings");
        assert_eq!(settings.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(settings.give_up_after, DEFAULT_GIVE_UP_AFTER);
    }

    #[test]
    fn a_full_config_parses() {
        let config: AgentConfig = toml::from_str(
            r#"
collectors = ["a:7400", "b:7400"]
spool_limit_bytes = 10000000
linger_ms = 5
long_lines = "skip"
[[inputs]]
paths = ["/var/log/nginx/*.log"]
exclude = ["*.gz"]
format = "combined"
source = "nginx"
start_at = "end"
"#,
        )
        .expect("parses");
        assert_eq!(config.collectors.len(), 2);
        assert_eq!(config.long_lines, LongLines::Skip);
        let input = resolve_input(&config.inputs[0], "web1").expect("input");
        assert_eq!(input.host, "web1");
        assert_eq!(input.start_at, StartAt::End);
        assert!(input.excludes(Path::new("/var/log/nginx/access.log.2.gz")));
        assert!(!input.excludes(Path::new("/var/log/nginx/access.log")));
    }
}
