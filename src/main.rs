//! The `nightowl` command line: parse arguments, load config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use nightowl::cli::{self, UsageError};
use nightowl::config::CollectorConfig;

#[derive(Parser)]
#[command(
    name = "nightowl",
    version,
    about = "Centralized logging and streaming anomaly detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: agent listener, WAL, index, HTTPS API.
    Collector {
        /// Data directory (overrides `data_dir` of the config file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file; every option has a default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// Directory of detection rules to run on every line, with the
        /// embedded default pack (overrides `rules.dir` of the config file).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Do not run the default rule pack compiled into the binary
        /// (`rules.builtin = false`): only `--rules`/`rules.dir` run.
        #[arg(long)]
        no_builtin_rules: bool,
        /// Kafka brokers `HOST:PORT[,...]`: batches are acked once Kafka
        /// holds them and `nightowl indexer`s index them (overrides
        /// `kafka.brokers`).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// Start a new audit chain when the audit log does not verify (or
        /// its key is gone): the old log is moved aside and the new
        /// chain's first entry records why. Without it such a log stops
        /// the start.
        #[arg(long)]
        audit_new_chain: bool,
    },
    /// Consume the Kafka lines topic in the indexers' group: index, run the
    /// rules, serve searches over HTTPS.
    Indexer {
        /// Kafka brokers `HOST:PORT[,...]` (overrides `kafka.brokers`).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// Data directory (overrides `data_dir` of the config file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file, the collector's format: `[kafka]`, `[index]`,
        /// `[rules]`, `api_listen`, `[cluster]`, `[tls]`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// Directory of detection rules, with the embedded default pack
        /// (overrides `rules.dir`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Do not run the embedded default pack (`rules.builtin = false`).
        #[arg(long)]
        no_builtin_rules: bool,
        /// HTTPS API address (overrides `api_listen`).
        #[arg(long)]
        api_listen: Option<std::net::SocketAddr>,
        /// Start a new audit chain when the audit log does not verify (see
        /// `collector --help`).
        #[arg(long)]
        audit_new_chain: bool,
    },
    /// Ship log files to a collector (`agent status`: what a running agent does).
    Agent(AgentArgs),
    /// Search a collector's index.
    ///
    /// A node with `[cluster] peers` searches every node; when some did not
    /// answer, a warning naming them goes to stderr, stdout keeps only the
    /// hits or the count, and the exit status is still 0.
    Search {
        #[arg(
            long,
            env = "NIGHTOWL_SERVER",
            default_value = "https://127.0.0.1:7443"
        )]
        server: String,
        #[arg(long, env = "NIGHTOWL_CA")]
        ca: PathBuf,
        #[arg(long, env = "NIGHTOWL_TOKEN_FILE")]
        token_file: PathBuf,
        /// Start of the time range: a duration ago (15m, 24h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// End of the time range (default: now and later).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print only the number of matching lines.
        #[arg(long)]
        count: bool,
        /// Print hits as NDJSON.
        #[arg(long)]
        json: bool,
        /// Lucene-like query; '*' matches every line.
        query: String,
    },
    /// The security team's loop: check, test and run detection rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print lines as the collector would store them: secrets replaced by
    /// markers (the defaults plus the config's `[redact]` names and
    /// patterns); the count per kind goes to stderr.
    Redact {
        /// Collector config file whose `[redact]` section applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log file to read (default: stdin).
        file: Option<PathBuf>,
    },
    /// Log patterns: the top patterns of a collector's matching lines, or
    /// `patterns mine` to mine templates from messages.
    Patterns(PatternsArgs),
    /// Paging: list and acknowledge alerts, manage silences, preview and
    /// test receivers.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Tenants (operator token): create, set retention, list.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API and agent tokens (admin token): create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The index (admin token): compact it.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Client certificates for agents and syslog senders (mTLS): issue one
    /// naming a tenant, signed with the collector's CA key.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The audit log: list it (admin token), verify its hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Backups: create one from a running collector (operator token),
    /// restore, verify, list (docs/backup.md).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Pipeline health of a collector (admin token): backlog, latencies,
    /// rules, paging; exits 1 when degraded.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `nightowl completions bash >
    /// /etc/bash_completion.d/nightowl` (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Load generator: ship generated access-log lines over TLS, report rates.
    Bench {
        #[arg(long, default_value = "127.0.0.1:7400")]
        collector: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, default_value_t = 2000)]
        batch_lines: usize,
        /// Batches in flight per connection.
        #[arg(long, default_value_t = 8)]
        window: usize,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// Collector address HOST:PORT; repeat for failover.
    #[arg(long)]
    collector: Vec<String>,
    /// CA certificate that signed the collector's certificate.
    #[arg(long, env = "NIGHTOWL_CA")]
    ca: Option<PathBuf>,
    /// File holding an agent (or admin) token.
    #[arg(long, env = "NIGHTOWL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Client certificate (PEM) for a collector with `[tls] client_ca`;
    /// names the tenant, makes the token optional. Needs --tls-key.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Checkpoints, the spool and the status file live here (default:
    /// `state_dir` of the config, else /var/lib/nightowl-agent).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// `host` label for the lines (default: this machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Parser hint for the GLOB files: auto, combined, common, json,
    /// syslog5424, syslog3164, raw.
    #[arg(long, default_value = "auto")]
    format: String,
    /// Exit once everything present has been shipped and acknowledged,
    /// printing what was shipped; every GLOB must match a readable file.
    #[arg(long)]
    once: bool,
    /// With --once: fail (exit 1) when no collector answered for this long;
    /// what was read stays in the spool for the next run.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        requires = "once"
    )]
    give_up_after: String,
    /// agent.toml: inputs, spool limit, batching (flags win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Encrypt the spool with the AES-256-GCM key in this file (32 raw bytes
    /// or 64 hex digits); else `spool_encryption_key_file`, else
    /// $NIGHTOWL_SPOOL_KEY_FILE.
    #[arg(long)]
    spool_key_file: Option<PathBuf>,
    /// Files to ship (globs), in addition to the config's inputs.
    globs: Vec<String>,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue a client certificate for TENANT (a `urn:nightowl:tenant:`
    /// URI SAN, CN = NAME): writes OUT/NAME.pem and OUT/NAME.key (0600),
    /// prints the id `nightowl token revoke` takes. Offline: signs with
    /// the CA key file, so run it where that key lives.
    Issue {
        /// The tenant the certificate authenticates for (must exist on the
        /// collector when it connects).
        #[arg(long)]
        tenant: String,
        /// The agent's name: the certificate's CN and the files' names.
        #[arg(long)]
        name: String,
        /// Directory for the certificate and key.
        #[arg(long)]
        out: PathBuf,
        /// Collector data dir whose dev CA signs (`DATA_DIR/tls/ca.pem`
        /// and `ca.key`). Default: nightowl-data.
        #[arg(long, conflicts_with_all = ["ca_cert", "ca_key"])]
        data_dir: Option<PathBuf>,
        /// CA certificate to sign with (instead of the dev CA).
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA's private key (PEM).
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// `nightowl patterns [QUERY]` against a collector, or a subcommand.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct PatternsArgs {
    #[command(subcommand)]
    command: Option<PatternsCommand>,
    #[arg(
        long,
        env = "NIGHTOWL_SERVER",
        default_value = "https://127.0.0.1:7443"
    )]
    server: String,
    #[arg(long, env = "NIGHTOWL_CA", required = true)]
    ca: Option<PathBuf>,
    #[arg(long, env = "NIGHTOWL_TOKEN_FILE", required = true)]
    token_file: Option<PathBuf>,
    /// Start of the time range: a duration ago (15m, 24h, 7d) or an RFC
    /// 3339 time (default: 24h).
    #[arg(long)]
    since: Option<String>,
    /// End of the time range (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Patterns shown at most.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    /// Lucene-like query of the lines whose patterns are counted (default: '*').
    query: Option<String>,
}

#[derive(Subcommand)]
enum PatternsCommand {
    /// Mine patterns from one message per line: the patterns with their
    /// counts, most frequent first (`COUNT<TAB>ID<TAB>TEMPLATE`), or with
    /// `--assign` one `ID<TAB>TEMPLATE` line per input line.
    Mine {
        /// Print each line's pattern instead of the pattern counts.
        #[arg(long)]
        assign: bool,
        /// File of messages (default: stdin).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules directory or one rule file; every error, each
    /// naming file:line and the reason.
    Check {
        #[arg(value_name = "DIR_OR_FILE")]
        dir: PathBuf,
    },
    /// Run every rule's fixtures (of a directory or one file) and show a
    /// diff for each failure.
    Test {
        #[arg(value_name = "DIR_OR_FILE")]
        dir: PathBuf,
    },
    /// Evaluate rules over a log file offline, in event time; NDJSON firings on stdout.
    Run {
        rules_dir: PathBuf,
        #[arg(long)]
        file: PathBuf,
        /// Parser hint: auto, combined, common, json, syslog5424, syslog3164.
        #[arg(long, default_value = "auto")]
        format: String,
    },
    /// Replay a rule file over the collector's indexed history (the token's
    /// tenant) and show what it would have fired, with a progress bar.
    Backtest {
        #[command(flatten)]
        api: ApiArgs,
        /// A rule file (native or Sigma YAML).
        rule_file: PathBuf,
        /// Start of the replay: a duration ago (90m, 24h, 7d) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// End of the replay (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where the collector's HTTPS API is and how to authenticate to it.
#[derive(clap::Args)]
struct ApiArgs {
    #[arg(
        long,
        env = "NIGHTOWL_SERVER",
        default_value = "https://127.0.0.1:7443"
    )]
    server: String,
    #[arg(long, env = "NIGHTOWL_CA")]
    ca: PathBuf,
    #[arg(long, env = "NIGHTOWL_TOKEN_FILE")]
    token_file: PathBuf,
}

impl ApiArgs {
    fn target(self) -> Result<nightowl::alert::cli::ApiTarget> {
        Ok(nightowl::alert::cli::ApiTarget {
            token: token(&self.token_file)?,
            server: self.server,
            ca: self.ca,
        })
    }
}

// The receivers' `preview` and `test-receiver` join this enum.
#[derive(Subcommand)]
enum AlertsCommand {
    /// Alerts of the token's tenant: firing, acknowledged, silenced, with
    /// age and the receivers notified.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per alert (NDJSON).
        #[arg(long)]
        json: bool,
        /// Also show resolved alerts still kept.
        #[arg(long)]
        all: bool,
    },
    /// Acknowledge an alert (by fingerprint or a unique prefix): stops its
    /// escalation.
    Ack {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Silences: mute alerts whose labels match, for a while.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Render what every configured receiver would send for a fixture
    /// alert (email subject/text/HTML, webhook JSON...); sends nothing.
    Preview {
        /// The collector's config, with `[[alerting.receivers]]`.
        #[arg(long)]
        config: PathBuf,
        /// Only this receiver.
        #[arg(long)]
        receiver: Option<String>,
        /// A JSON notification or alert (default: a built-in example).
        #[arg(long)]
        fixture: Option<PathBuf>,
    },
    /// Send a test page through one receiver: exit 0 when it was accepted,
    /// 1 with the receiver's error otherwise.
    TestReceiver {
        #[arg(long)]
        config: PathBuf,
        /// A JSON notification or alert (default: a built-in example).
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// The receiver's `name`.
        name: String,
    },
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Add a silence; prints its id.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        /// `label=value`, `label!=value`, `label=~regex`, `label!~regex`; repeat (all must match).
        #[arg(long = "matcher", required = true)]
        matchers: Vec<String>,
        /// How long from now, with a unit: 30m, 2h, 1d.
        #[arg(long, default_value = "1h")]
        duration: String,
        #[arg(long)]
        comment: String,
        /// Default: $USER, else $LOGNAME, else the account name.
        #[arg(long, env = "USER")]
        author: Option<String>,
    },
    /// Active and pending silences.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant, or update its retention.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// Days of index kept (whole days are deleted after that).
        #[arg(long)]
        retention_days: Option<u32>,
    },
    /// List the tenants this token administers, with their retention.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stream every line of a tenant as NDJSON (timestamp, host, source,
    /// raw), oldest first, with a progress bar.
    Export {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete every line of a tenant received until now. Cannot be undone.
    Purge {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// Required: confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Compact every partition the token administers (all of them for the
    /// operator token): merged into one segment, the stored lines
    /// recompressed. Prints each partition and the bytes before and after;
    /// returns when the last one is done.
    Compact {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back up the running collector now: an online, consistent snapshot
    /// (index at a commit point, rule and alert state, tokens, the audit
    /// log), copying only what DEST does not hold yet. Exit 1 when it
    /// fails or is cut short (then DEST has no partial backup).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// A directory (as the collector sees it) or s3://BUCKET/PREFIX
        /// (the collector's AWS_* variables give credentials, region,
        /// endpoint).
        #[arg(long, value_name = "DEST")]
        to: String,
        /// Then delete all but the newest N backups at DEST, and the
        /// blobs only they used.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a new data dir (no collector needed); the
    /// audit key goes to DATA_DIR-keys/ (from --audit-key, else where the
    /// backed-up collector had it).
    Restore {
        #[arg(long, value_name = "DEST")]
        from: String,
        /// Which backup (`backup list`); default the newest complete one.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        data_dir: PathBuf,
        /// The audit key the backed-up log was written with (default:
        /// $NIGHTOWL_AUDIT_KEY_FILE, else the path the backup recorded).
        #[arg(long)]
        audit_key: Option<PathBuf>,
    },
    /// Check a backup: every file against its checksum, then a trial
    /// restore into a temporary dir where every index must open with its
    /// documents and the audit chain must verify. Exit 1 naming problems.
    Verify {
        /// The destination (directory or s3://BUCKET/PREFIX).
        dest: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        audit_key: Option<PathBuf>,
        /// Where the trial restore goes (default: the system's temp dir).
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
    /// The backups at a destination, complete and interrupted.
    List {
        dest: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The newest entries (the operator sees every tenant's).
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per entry (NDJSON).
        #[arg(long)]
        json: bool,
    },
    /// Check DATA_DIR/audit/audit.log: every entry's MAC and link, and the
    /// signed checkpoints (its own and a witness's). Exit 1 naming each
    /// entry edited, removed, reordered or forged, and a log truncated
    /// after a checkpoint.
    Verify {
        #[arg(long, default_value = "nightowl-data")]
        data_dir: PathBuf,
        /// The audit key. Default: `$NIGHTOWL_AUDIT_KEY_FILE`, else
        /// `$CREDENTIALS_DIRECTORY/audit.key`, else DATA_DIR-keys/audit.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// A witness's copy of the checkpoints (the webhook bodies or
        /// syslog lines it received, one per line). Repeatable.
        #[arg(long)]
        witness: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints it alone on stdout, only this once.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The token's tenant (default: the admin token's own).
        #[arg(long)]
        tenant: Option<String>,
        /// viewer, rule-editor, admin or agent.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Only accept the token from this address or CIDR block (repeatable).
        #[arg(long = "allow-ip")]
        allow_ip: Vec<String>,
    },
    /// List tokens (never their secrets): id, tenant, role, description,
    /// allowed IPs, revoked or not.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once, also on open agent connections.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Forget where every file stands (the agent id stays): the next run
    /// reads every file again from its start, and the collector drops what
    /// it already has. After restoring a collector from a backup, this
    /// sends again what was acked after the backup's cut. The agent must be
    /// stopped.
    Rewind {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Print what the agent using STATE_DIR is doing (exit 1 if it is not
    /// running).
    Status {
        /// The running agent's --state-dir.
        #[arg(long)]
        state_dir: PathBuf,
        /// The raw status document.
        #[arg(long)]
        json: bool,
    },
}

async fn run_agent(args: AgentArgs) -> Result<()> {
    match args.command {
        Some(AgentCommand::Status { state_dir, json }) => {
            let text = nightowl::agent::status::command(&state_dir, json)?;
            print!("{text}");
            return Ok(());
        }
        Some(AgentCommand::Rewind { state_dir }) => {
            println!("{}", nightowl::agent::rewind(&state_dir)?);
            return Ok(());
        }
        None => {}
    }
    cli::check_duration_flag("--give-up-after", &args.give_up_after)?;
    let give_up_after = nightowl::time::parse_duration(&args.give_up_after)
        .map(|nanos| std::time::Duration::from_nanos(nanos.max(0) as u64))
        .map_err(|e| cli::usage(format!("--give-up-after: {e:#}")))?;
    let (settings, log_json) =
        nightowl::agent::Settings::from_flags(nightowl::agent::config::Flags {
            config: args.config,
            collectors: args.collector,
            ca: args.ca,
            token_file: args.token_file,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            state_dir: args.state_dir,
            host: args.host,
            format: args.format,
            once: args.once,
            give_up_after: Some(give_up_after),
            globs: args.globs,
            spool_key_file: args.spool_key_file,
        })
        .map_err(|e| cli::usage(format!("{e:#}")))?;
    if settings.once {
        check_once_inputs(&settings)?;
    }
    init_logging(args.log_json || log_json, "info");
    nightowl::agent::run(settings).await
}

/// `--once` ships what is there now: a glob that matches no file, or a
/// file it cannot read, is a mistake to report, not an empty success.
fn check_once_inputs(settings: &nightowl::agent::Settings) -> Result<()> {
    for input in &settings.inputs {
        for pattern in &input.paths {
            let mut matched = 0;
            let paths =
                glob::glob(pattern).map_err(|e| cli::usage(format!("glob {pattern:?}: {e}")))?;
            for path in paths.flatten() {
                if !path.is_file() || input.excludes(&path) {
                    continue;
                }
                std::fs::File::open(&path)
                    .with_context(|| format!("--once: cannot read {}", path.display()))?;
                matched += 1;
            }
            if matched == 0 {
                return Err(cli::usage(format!(
                    "--once: no file matches {pattern:?} (nothing to ship)"
                )));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.is_daemon() {
        restore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nightowl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nightowl: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A command's output piped into `head` (or any reader that stops early)
/// must end quietly, as `cat` does, not panic in `println!`: the default
/// SIGPIPE action ends the process when the reader is gone. Rust ignores
/// SIGPIPE by default; the daemons keep it ignored, because a peer closing
/// a socket must never kill them (their sockets get EPIPE instead).
fn restore_sigpipe() {
    // SAFETY: signal(2) with a valid signal number and the default action,
    // before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

impl Command {
    /// The long-running servers and shippers, as opposed to the one-shot
    /// commands whose output goes to a terminal or a pipe.
    fn is_daemon(&self) -> bool {
        match self {
            Command::Collector { .. } | Command::Indexer { .. } | Command::Bench { .. } => true,
            Command::Agent(args) => args.command.is_none(),
            _ => false,
        }
    }
}

fn init_logging(json: bool, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a person at a terminal: a log file or journald
    // would keep the escape codes as text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn token(path: &std::path::Path) -> Result<String> {
    nightowl::auth::read_token_file(path).map_err(|e| cli::usage(format!("{e:#}")))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Collector {
            data_dir,
            config,
            log_json,
            rules,
            no_builtin_rules,
            kafka,
            audit_new_chain,
        } => {
            let mut config = server_config(config, data_dir, rules, kafka)?;
            config.audit.new_chain = audit_new_chain;
            if no_builtin_rules {
                config.rules.builtin = false;
            }
            init_logging(log_json || config.log.format == "json", &config.log.level);
            nightowl::pipeline::run_collector(config).await
        }
        Command::Indexer {
            kafka,
            data_dir,
            config,
            log_json,
            rules,
            no_builtin_rules,
            api_listen,
            audit_new_chain,
        } => {
            let mut config = server_config(config, data_dir, rules, kafka)?;
            config.audit.new_chain = audit_new_chain;
            if no_builtin_rules {
                config.rules.builtin = false;
            }
            if config.kafka.brokers.is_none() {
                return Err(cli::usage(
                    "indexer: --kafka BROKERS (or kafka.brokers) is required",
                ));
            }
            if let Some(addr) = api_listen {
                config.api_listen = addr;
            }
            init_logging(log_json || config.log.format == "json", &config.log.level);
            nightowl::pipeline::indexer::run(config).await
        }
        Command::Agent(args) => run_agent(args).await,
        Command::Rules(command) => {
            init_logging(false, "warn");
            run_rules(command).await
        }
        Command::Patterns(PatternsArgs {
            command: Some(PatternsCommand::Mine { assign, file }),
            ..
        }) => nightowl::patterns::cli::mine(file.as_deref(), assign),
        Command::Patterns(p) => {
            init_logging(false, "warn");
            check_range(p.since.as_deref(), p.until.as_deref())?;
            let (Some(ca), Some(token_file)) = (p.ca, p.token_file) else {
                return Err(cli::usage("--ca and --token-file are required"));
            };
            cli::search::patterns(cli::search::PatternsArgs {
                server: p.server,
                ca,
                token: token(&token_file)?,
                since: p.since,
                until: p.until,
                limit: p.limit,
                json: p.json,
                query: p.query.unwrap_or_else(|| "*".into()),
            })
            .await
        }
        Command::Redact { config, file } => {
            nightowl::cli::redact::run(config.as_deref(), file.as_deref())
        }
        Command::Search {
            server,
            ca,
            token_file,
            since,
            until,
            limit,
            count,
            json,
            query,
        } => {
            init_logging(false, "warn");
            check_range(since.as_deref(), until.as_deref())?;
            cli::search::run(cli::search::SearchArgs {
                server,
                ca,
                token: token(&token_file)?,
                since,
                until,
                limit,
                count,
                json,
                query,
            })
            .await
        }
        Command::Alerts(command) => {
            init_logging(false, "warn");
            run_alerts(command).await
        }
        Command::Tenant(command) => {
            init_logging(false, "warn");
            run_tenant(command).await
        }
        Command::Token(command) => {
            init_logging(false, "warn");
            run_token(command).await
        }
        Command::Index(IndexCommand::Compact { api }) => {
            init_logging(false, "warn");
            cli::admin::index_compact(&admin_api(api)?).await
        }
        Command::Cert(CertCommand::Issue {
            tenant,
            name,
            out,
            data_dir,
            ca_cert,
            ca_key,
            days,
        }) => {
            init_logging(false, "warn");
            let (ca_cert, ca_key) = cli::cert::ca_files(data_dir.as_deref(), ca_cert, ca_key)?;
            cli::cert::issue(&cli::cert::IssueArgs {
                tenant,
                name,
                out,
                ca_cert,
                ca_key,
                days,
            })
        }
        Command::Audit(command) => {
            init_logging(false, "warn");
            run_audit(command).await
        }
        Command::Backup(command) => {
            init_logging(false, "warn");
            run_backup(command).await
        }
        Command::Status { api, json } => {
            init_logging(false, "warn");
            cli::admin::status(&admin_api(api)?, json).await
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "nightowl", &mut std::io::stdout());
            Ok(())
        }
        Command::Bench {
            collector,
            ca,
            token_file,
            lines,
            connections,
            batch_lines,
            window,
        } => {
            init_logging(false, "warn");
            let report = nightowl::bench::run(nightowl::bench::BenchOptions {
                collector,
                ca,
                token: token(&token_file)?,
                lines,
                connections,
                batch_lines,
                window,
            })
            .await
            .context("bench")?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn run_alerts(command: AlertsCommand) -> Result<()> {
    use nightowl::alert::cli as alerts;
    match command {
        AlertsCommand::List { api, json, all } => alerts::list(&api.target()?, json, all).await,
        AlertsCommand::Ack { api, id } => alerts::ack(&api.target()?, &id).await,
        AlertsCommand::Silence(SilenceCommand::Add {
            api,
            matchers,
            duration,
            comment,
            author,
        }) => {
            cli::check_duration_flag("--duration", &duration)?;
            let author = author.unwrap_or_else(login_name);
            alerts::silence_add(&api.target()?, &matchers, &duration, &comment, &author).await
        }
        AlertsCommand::Silence(SilenceCommand::List { api, json }) => {
            alerts::silence_list(&api.target()?, json).await
        }
        AlertsCommand::Silence(SilenceCommand::Expire { api, id }) => {
            alerts::silence_expire(&api.target()?, &id).await
        }
        AlertsCommand::Preview {
            config,
            receiver,
            fixture,
        } => nightowl::alert::receiver::cli::run_preview(
            &config,
            receiver.as_deref(),
            fixture.as_deref(),
            &mut std::io::stdout().lock(),
        )
        .map_err(|e| cli::usage(format!("{e:#}"))),
        AlertsCommand::TestReceiver {
            config,
            fixture,
            name,
        } => {
            nightowl::alert::receiver::cli::run_test_receiver(&config, &name, fixture.as_deref())
                .await
        }
    }
}

async fn run_rules(command: RulesCommand) -> Result<()> {
    use nightowl::detect::{cli as rules, BadRules};
    // Bad rule files are bad input (exit 2), like a bad query.
    let bad_input = |e: anyhow::Error| match e.downcast_ref::<BadRules>() {
        Some(_) => cli::usage(format!("{e:#}")),
        None => e,
    };
    match command {
        RulesCommand::Check { dir } => {
            let summary = rules::cli_check(&dir).map_err(bad_input)?;
            println!("{} rules, {} fixtures: ok", summary.rules, summary.fixtures);
        }
        RulesCommand::Test { dir } => {
            let summary = rules::cli_test(&dir, std::io::stdout().lock()).map_err(bad_input)?;
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} of {} fixtures failed",
                    summary.failed,
                    summary.failed + summary.passed
                );
            }
        }
        RulesCommand::Run {
            rules_dir,
            file,
            format,
        } => {
            let format = format
                .parse::<nightowl::parse::Format>()
                .map_err(|e| cli::usage(format!("--format: {e}")))?;
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = rules::cli_run(&rules_dir, &file, format, out).map_err(bad_input)?;
            eprintln!(
                "{} lines ({} unparsed), {} firings",
                summary.lines, summary.unparsed, summary.firings
            );
        }
        RulesCommand::Backtest {
            api,
            rule_file,
            since,
            until,
            json,
        } => {
            check_range(Some(&since), until.as_deref())?;
            cli::backtest::run(cli::backtest::BacktestArgs {
                token: token(&api.token_file)?,
                server: api.server,
                ca: api.ca,
                file: rule_file,
                since: Some(since),
                until,
                json,
            })
            .await?;
        }
    }
    Ok(())
}

/// `--since`/`--until` as the user wrote them, checked before any request.
fn check_range(since: Option<&str>, until: Option<&str>) -> Result<()> {
    if let Some(since) = since {
        cli::check_time_flag("--since", since)?;
    }
    if let Some(until) = until {
        cli::check_time_flag("--until", until)?;
    }
    Ok(())
}

/// Who is at the keyboard, for a silence's author when `--author` and
/// `$USER` are not given (cron, containers, `sudo -i`): `$LOGNAME`, then
/// the account name of the effective user.
fn login_name() -> String {
    if let Some(name) = std::env::var("LOGNAME").ok().filter(|n| !n.is_empty()) {
        return name;
    }
    // SAFETY: getpwuid_r with a buffer we own and its length; the result
    // points into that buffer and is copied out before it goes away.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = [0 as libc::c_char; 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
            if !name.is_empty() {
                return name.into_owned();
            }
        }
        format!("uid {}", libc::geteuid())
    }
}

async fn run_backup(command: BackupCommand) -> Result<()> {
    use nightowl::backup::cli as backup;
    match command {
        BackupCommand::Create {
            api,
            to,
            keep,
            json,
        } => {
            if keep == Some(0) {
                return Err(cli::usage("--keep must be at least 1"));
            }
            let client =
                nightowl::cli::http::ApiClient::new(&api.server, &api.ca, token(&api.token_file)?)?;
            backup::create(client, &to, keep, json).await
        }
        BackupCommand::Restore {
            from,
            id,
            data_dir,
            audit_key,
        } => backup::restore(&from, id.as_deref(), &data_dir, audit_key.as_deref()).await,
        BackupCommand::Verify {
            dest,
            id,
            audit_key,
            scratch,
        } => backup::verify(&dest, id.as_deref(), audit_key.as_deref(), scratch).await,
        BackupCommand::List { dest, json } => backup::list(&dest, json).await,
    }
}

fn admin_api(api: ApiArgs) -> Result<cli::admin::Api> {
    Ok(cli::admin::Api {
        token: token(&api.token_file)?,
        server: api.server,
        ca: api.ca,
    })
}

async fn run_tenant(command: TenantCommand) -> Result<()> {
    use cli::admin;
    match command {
        TenantCommand::Create {
            api,
            name,
            retention_days,
        } => admin::tenant_create(&admin_api(api)?, &name, retention_days).await,
        TenantCommand::List { api, json } => admin::tenant_list(&admin_api(api)?, json).await,
        TenantCommand::Export {
            api,
            name,
            since,
            until,
            output,
        } => {
            check_range(since.as_deref(), until.as_deref())?;
            admin::tenant_export(
                &admin_api(api)?,
                &name,
                since.as_deref(),
                until.as_deref(),
                output.as_deref(),
            )
            .await
        }
        TenantCommand::Purge { api, name, yes } => {
            if !yes {
                return Err(cli::usage(format!(
                    "purging tenant {name} deletes all its data for good; add --yes to confirm"
                )));
            }
            admin::tenant_purge(&admin_api(api)?, &name).await
        }
    }
}

async fn run_token(command: TokenCommand) -> Result<()> {
    use cli::admin;
    match command {
        TokenCommand::Create {
            api,
            tenant,
            role,
            description,
            allow_ip,
        } => {
            let new = admin::NewToken {
                tenant,
                role,
                description,
                allowed_ips: allow_ip,
            };
            admin::token_create(&admin_api(api)?, new).await
        }
        TokenCommand::List { api, json } => admin::token_list(&admin_api(api)?, json).await,
        TokenCommand::Revoke { api, id } => admin::token_revoke(&admin_api(api)?, &id).await,
    }
}

async fn run_audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::List { api, limit, json } => {
            cli::admin::audit_list(&admin_api(api)?, limit, json).await
        }
        AuditCommand::Verify {
            data_dir,
            key_file,
            witness,
        } => audit_verify(&data_dir, key_file, &witness),
    }
}

/// Exit 0 when the chain and every checkpoint hold, 1 naming each problem,
/// 2 when the key or a witness file cannot be read.
fn audit_verify(
    data_dir: &std::path::Path,
    key_file: Option<PathBuf>,
    witnesses: &[PathBuf],
) -> Result<()> {
    let log = data_dir.join("audit").join("audit.log");
    if !log.exists() {
        return Err(cli::usage(format!("no audit log at {}", log.display())));
    }
    let explicit = key_file.or_else(|| {
        std::env::var_os("NIGHTOWL_AUDIT_KEY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let usage = |e: anyhow::Error| cli::usage(format!("{e:#}"));
    let key_path = nightowl::audit::key_path(explicit.as_deref(), data_dir).map_err(usage)?;
    let key = if key_path.exists() {
        Some(nightowl::audit::AuditKey::load(&key_path).map_err(usage)?)
    } else {
        None
    };
    let report = nightowl::audit::verify_data_dir(data_dir, key.as_ref(), witnesses).map_err(
        |e| match &key {
            None => cli::usage(format!("{e:#} (no key at {})", key_path.display())),
            Some(_) => usage(e),
        },
    )?;
    if report.intact() {
        println!(
            "{}: {} entries, chain intact",
            log.display(),
            report.entries
        );
        match &report.chain {
            Some(chain) => println!(
                "chain {chain} keyed with {}; {} checkpoints verified{}",
                key_path.display(),
                report.checkpoints_verified,
                if witnesses.is_empty() {
                    ""
                } else {
                    " (witnesses included)"
                }
            ),
            None => println!("no keyed chain yet"),
        }
        if report.unkeyed > 0 {
            println!(
                "the first {} entries are in the unkeyed format of before: a plain SHA-256 chain anyone with the file could have recomputed",
                report.unkeyed
            );
        }
        return Ok(());
    }
    for problem in &report.problems {
        eprintln!("{problem}");
    }
    anyhow::bail!(
        "{}: audit log does NOT verify: {} problem(s) ({} entries verified before the first)",
        log.display(),
        report.problems.len(),
        report.entries
    )
}

/// The collector's or the indexer's config: the file (or defaults), then
/// the flags over it.
fn server_config(
    file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    rules: Option<PathBuf>,
    kafka: Option<String>,
) -> anyhow::Result<CollectorConfig> {
    let mut config = match &file {
        Some(path) => CollectorConfig::load(path).map_err(|e| cli::usage(format!("{e:#}")))?,
        None => CollectorConfig::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(dir) = rules {
        config.rules.dir = Some(dir);
    }
    if let Some(brokers) = kafka {
        config.kafka.brokers = Some(brokers);
    }
    Ok(config)
}
