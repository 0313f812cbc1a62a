//! `nightowl rules`: the security team's loop (check, test, run, backtest).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::{check_range, token, usage, ApiArgs};

#[derive(Subcommand)]
pub enum RulesCommand {
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
        /// Parser hint: auto, combined, common, json, syslog5424, syslog3164, squid, w3c (IIS), elb (AWS ALB), haproxy.
        #[arg(long, default_value = "auto")]
        format: String,
        /// Engines run in parallel, each on a share of the rules; 0: one
        /// per core. The output is the same whatever the number.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Replay a rule file over the collector's indexed history (the token's
    /// tenant) and show what it would have fired, with a progress bar.
    Backtest {
        #[command(flatten)]
        api: ApiArgs,
        /// A rule file (native or Sigma YAML).
        rule_file: PathBuf,
        /// Start of the replay: a duration ago (90m, 1h30m, 7d) or a date or time (UTC without an offset).
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

pub async fn run(command: RulesCommand) -> Result<()> {
    use crate::detect::{cli as rules, BadRules};
    // Bad rule files are bad input (exit 2), like a bad query.
    let bad_input = |e: anyhow::Error| match e.downcast_ref::<BadRules>() {
        Some(_) => usage(format!("{e:#}")),
        None => e,
    };
    match command {
        RulesCommand::Check { dir } => {
            let summary = rules::cli_check(&dir).map_err(bad_input)?;
            for line in &summary.not_run {
                eprintln!("not run: {line}");
            }
            let not_run = match summary.not_run.len() {
                0 => String::new(),
                n => format!(" ({n} loaded disabled, see above)"),
            };
            println!(
                "{} rules{not_run}, {} fixtures: ok",
                summary.rules, summary.fixtures
            );
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
            threads,
        } => {
            let format = format
                .parse::<crate::parse::Format>()
                .map_err(|e| usage(format!("--format: {e}")))?;
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = if threads == 0 {
                rules::cli_run(&rules_dir, &file, format, out)
            } else {
                rules::cli_run_threads(&rules_dir, &file, format, out, threads)
            }
            .map_err(bad_input)?;
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
            super::backtest::run(super::backtest::BacktestArgs {
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
