//! The `nightowl` command line: its commands and where each one goes. A
//! group's commands (agent, rules, alerts, administration, audit, backups,
//! certificates) live in that group's file beside this one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use super::{
    admin, agent, alerts, audit, backup, cert, check_range, init_logging, rules, token, usage,
    ApiArgs,
};
use crate::config::CollectorConfig;

#[derive(Parser)]
#[command(
    name = "nightowl",
    version,
    about = "Centralized logging and streaming anomaly detection"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the collector: agent listener, WAL, index, HTTPS API.
    Collector {
        #[command(flatten)]
        server: ServerArgs,
        /// Kafka brokers `HOST:PORT[,...]`: batches are acked once Kafka
        /// holds them and `nightowl indexer`s index them (overrides
        /// `kafka.brokers`).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// Address agents connect to over TLS (overrides `agent_listen`;
        /// default 127.0.0.1:7400).
        #[arg(long)]
        agent_listen: Option<std::net::SocketAddr>,
        /// HTTPS API and web page address (overrides `api_listen`;
        /// default 127.0.0.1:7443).
        #[arg(long)]
        api_listen: Option<std::net::SocketAddr>,
    },
    /// Consume the Kafka lines topic in the indexers' group: index, run the
    /// rules, serve searches over HTTPS.
    Indexer {
        #[command(flatten)]
        server: ServerArgs,
        /// Kafka brokers `HOST:PORT[,...]` (overrides `kafka.brokers`;
        /// one of the two is required).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// HTTPS API address (overrides `api_listen`).
        #[arg(long)]
        api_listen: Option<std::net::SocketAddr>,
    },
    /// Ship log files to a collector (`agent status`: what a running agent does).
    Agent(agent::AgentArgs),
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
        /// Start of the time range: a duration ago (15m, 1h30m, 7d), a date or time (UTC without an offset), or now.
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
    Rules(rules::RulesCommand),
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
    Alerts(alerts::AlertsCommand),
    /// Tenants (operator token): create, set retention, list.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// API and agent tokens (admin token): create, list, revoke.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// The index (admin token): compact it.
    #[command(subcommand)]
    Index(admin::IndexCommand),
    /// Client certificates for agents and syslog senders (mTLS): issue one
    /// naming a tenant, signed with the collector's CA key.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// The audit log: list it (admin token), verify its hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Backups: create one from a running collector (operator token),
    /// restore, verify, list (docs/backup.md).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
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

/// `nightowl patterns [QUERY]` against a collector, or a subcommand.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PatternsArgs {
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
    /// Start of the time range: a duration ago (15m, 1h30m, 7d) or a date or
    /// time, UTC without an offset (default: 24h).
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
pub enum PatternsCommand {
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

impl Cli {
    /// The long-running servers and shippers, as opposed to the one-shot
    /// commands whose output goes to a terminal or a pipe: SIGPIPE stays
    /// ignored for them.
    pub fn is_daemon(&self) -> bool {
        self.command.is_daemon()
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

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Collector {
            server,
            kafka,
            agent_listen,
            api_listen,
        } => {
            let mut config = server.config(kafka)?;
            if let Some(addr) = agent_listen {
                config.agent_listen = addr;
            }
            if let Some(addr) = api_listen {
                config.api_listen = addr;
            }
            crate::pipeline::run_collector(config).await
        }
        Command::Indexer {
            server,
            kafka,
            api_listen,
        } => {
            let mut config = server.config(kafka)?;
            if config.kafka.brokers.is_none() {
                return Err(super::usage(
                    "indexer: --kafka BROKERS (or kafka.brokers) is required",
                ));
            }
            if let Some(addr) = api_listen {
                config.api_listen = addr;
            }
            crate::pipeline::indexer::run(config).await
        }
        Command::Agent(args) => agent::run(args).await,
        Command::Rules(command) => {
            init_logging(false, "warn");
            rules::run(command).await
        }
        Command::Patterns(PatternsArgs {
            command: Some(PatternsCommand::Mine { assign, file }),
            ..
        }) => crate::patterns::cli::mine(file.as_deref(), assign),
        Command::Patterns(p) => {
            init_logging(false, "warn");
            check_range(p.since.as_deref(), p.until.as_deref())?;
            let (Some(ca), Some(token_file)) = (p.ca, p.token_file) else {
                return Err(usage("--ca and --token-file are required"));
            };
            super::search::patterns(super::search::PatternsArgs {
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
        Command::Redact { config, file } => super::redact::run(config.as_deref(), file.as_deref()),
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
            super::search::run(super::search::SearchArgs {
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
            alerts::run(command).await
        }
        Command::Tenant(command) => {
            init_logging(false, "warn");
            admin::run_tenant(command).await
        }
        Command::Token(command) => {
            init_logging(false, "warn");
            admin::run_token(command).await
        }
        Command::Index(admin::IndexCommand::Compact { api }) => {
            init_logging(false, "warn");
            super::admin::index_compact(&super::admin_api(api)?).await
        }
        Command::Cert(cert::CertCommand::Issue {
            tenant,
            name,
            out,
            data_dir,
            ca_cert,
            ca_key,
            days,
        }) => {
            init_logging(false, "warn");
            let (ca_cert, ca_key) = super::cert::ca_files(data_dir.as_deref(), ca_cert, ca_key)?;
            super::cert::issue(&super::cert::IssueArgs {
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
            audit::run(command).await
        }
        Command::Backup(command) => {
            init_logging(false, "warn");
            backup::run(command).await
        }
        Command::Status { api, json } => {
            init_logging(false, "warn");
            super::admin::status(&super::admin_api(api)?, json).await
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
            let report = crate::bench::run(crate::bench::BenchOptions {
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

/// The flags the collector and the Kafka indexer share: both read the
/// collector's config file.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Data directory (overrides `data_dir` of the config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML config file; every option has a default (docs/guide-ops.md).
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
    /// Start a new audit chain when the audit log does not verify (or
    /// its key is gone): the old log is moved aside and the new
    /// chain's first entry records why. Without it such a log stops
    /// the start.
    #[arg(long)]
    audit_new_chain: bool,
}

impl ServerArgs {
    /// The config file (or defaults), the flags over it; logging started
    /// as the two say.
    fn config(self, kafka: Option<String>) -> Result<CollectorConfig> {
        let mut config = match &self.config {
            Some(path) => CollectorConfig::load(path).map_err(|e| usage(format!("{e:#}")))?,
            None => CollectorConfig::default(),
        };
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(dir) = self.rules {
            config.rules.dir = Some(dir);
        }
        if let Some(brokers) = kafka {
            config.kafka.brokers = Some(brokers);
        }
        config.audit.new_chain = self.audit_new_chain;
        if self.no_builtin_rules {
            config.rules.builtin = false;
        }
        init_logging(
            self.log_json || config.log.format == "json",
            &config.log.level,
        );
        Ok(config)
    }
}
