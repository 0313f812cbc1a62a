//! `nightowl agent`: ship files to a collector, or look at a running agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{init_logging, usage};
use crate::agent::config::Flags;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Forget where every file stands (the agent id stays): the next run
    /// reads every file again from its start, and the collector drops what
    /// it already has. For a collector that lost lines without keeping its
    /// store id (a new, empty data dir), or an agent whose state cannot
    /// place them; a collector restored from a backup gets them back by
    /// itself. The agent must be stopped.
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
    let log_json = args.flags.log_json;
    let (settings, config_log_json) =
        crate::agent::Settings::from_flags(args.flags).map_err(|e| usage(format!("{e:#}")))?;
    if settings.once {
        check_once_inputs(&settings)?;
    }
    init_logging(log_json || config_log_json, "info");
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
