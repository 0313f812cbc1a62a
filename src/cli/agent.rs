//! `nightowl agent`: ship files to a collector, or look at a running agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{init_logging, usage};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// Collector address HOST:PORT; repeat for failover.
    #[arg(long)]
    pub collector: Vec<String>,
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
    /// syslog5424, syslog3164, raw.
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
        requires = "once"
    )]
    pub give_up_after: String,
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

#[derive(Subcommand)]
pub enum AgentCommand {
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

pub async fn run(args: AgentArgs) -> Result<()> {
    match args.command {
        Some(AgentCommand::Status { state_dir, json }) => {
            let text = crate::agent::status::command(&state_dir, json)?;
            print!("{text}");
            return Ok(());
        }
        Some(AgentCommand::Rewind { state_dir }) => {
            println!("{}", crate::agent::rewind(&state_dir)?);
            return Ok(());
        }
        None => {}
    }
    super::check_duration_flag("--give-up-after", &args.give_up_after)?;
    let give_up_after = crate::time::parse_duration(&args.give_up_after)
        .map(|nanos| std::time::Duration::from_nanos(nanos.max(0) as u64))
        .map_err(|e| usage(format!("--give-up-after: {e:#}")))?;
    let (settings, log_json) = crate::agent::Settings::from_flags(crate::agent::config::Flags {
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
    .map_err(|e| usage(format!("{e:#}")))?;
    if settings.once {
        check_once_inputs(&settings)?;
    }
    init_logging(args.log_json || log_json, "info");
    crate::agent::run(settings).await
}

/// `--once` ships what is there now: a glob that matches no file, or a
/// file it cannot read, is a mistake to report, not an empty success.
fn check_once_inputs(settings: &crate::agent::Settings) -> Result<()> {
    for input in &settings.inputs {
        for pattern in &input.paths {
            let mut matched = 0;
            let paths = glob::glob(pattern).map_err(|e| usage(format!("glob {pattern:?}: {e}")))?;
            for path in paths.flatten() {
                if !path.is_file() || input.excludes(&path) {
                    continue;
                }
                std::fs::File::open(&path)
                    .with_context(|| format!("--once: cannot read {}", path.display()))?;
                matched += 1;
            }
            if matched == 0 {
                return Err(usage(format!(
                    "--once: no file matches {pattern:?} (nothing to ship)"
                )));
            }
        }
    }
    Ok(())
}
