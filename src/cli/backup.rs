//! `nightowl backup`: create (asks a running collector through its API
//! and follows the progress here), restore, verify, list (docs/backup.md);
//! the offline work is in `crate::backup`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;

use super::http::ApiClient;
use super::{usage, ApiArgs};
use crate::backup::cli::{self as backup, bytes_bar, human_bytes};
use crate::backup::{Event, Summary};

#[derive(Subcommand)]
pub enum BackupCommand {
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

pub async fn run(command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Create {
            api,
            to,
            keep,
            json,
        } => {
            if keep == Some(0) {
                return Err(usage("--keep must be at least 1"));
            }
            let client = ApiClient::new(&api.server, &api.ca, super::token(&api.token_file)?)?;
            create(client, &to, keep, json).await
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

/// A destination given on the command line: a relative directory is the
/// caller's, so it is made absolute here before the collector sees it.
fn absolute_dest(to: &str) -> Result<String> {
    if to.contains("://") {
        return Ok(to.to_string());
    }
    Ok(std::path::absolute(to)
        .with_context(|| format!("resolving {to}"))?
        .display()
        .to_string())
}

/// Asks the running collector for a backup and follows its progress.
pub async fn create(
    client: ApiClient,
    to: &str,
    keep: Option<usize>,
    json_out: bool,
) -> Result<()> {
    let to = absolute_dest(to)?;
    let bar = bytes_bar("backing up");
    let mut outcome: Option<std::result::Result<Summary, String>> = None;
    let (status, body) = client
        .post_json_lines(
            "/api/v1/admin/backup",
            &json!({ "to": to, "keep": keep }),
            |line| {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(());
                }
                let event: Event = serde_json::from_slice(line)
                    .context("the collector sent a progress line that is not JSON")?;
                match event {
                    Event::Started { id, bytes, .. } => {
                        bar.set_length(bytes);
                        bar.set_message(id);
                    }
                    Event::Progress {
                        bytes_done,
                        bytes,
                        bytes_copied,
                        ..
                    } => {
                        bar.set_length(bytes);
                        bar.set_position(bytes_done);
                        bar.set_message(format!("{} new", human_bytes(bytes_copied)));
                    }
                    Event::Done { summary } => outcome = Some(Ok(summary)),
                    Event::Error { message } => outcome = Some(Err(message)),
                }
                Ok(())
            },
        )
        .await
        .with_context(|| "the backup's progress stream broke off (did the collector stop?): the backup is INCOMPLETE, no manifest was written, so the destination holds no partial backup; run it again")?;
    bar.finish_and_clear();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(if status.is_client_error() {
            crate::error::usage(message)
        } else {
            anyhow::anyhow!("server error {status}: {message}")
        });
    }
    match outcome {
        Some(Ok(s)) => {
            if json_out {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "backup {} complete in {}: {} files, {} ({} files, {} copied, the rest already there); {} partitions, {} documents as of WAL position {}",
                    s.id,
                    s.to,
                    s.files,
                    human_bytes(s.bytes),
                    s.files_copied,
                    human_bytes(s.bytes_copied),
                    s.partitions,
                    s.docs,
                    s.wal_position
                );
                if s.pruned_backups > 0 || s.pruned_blobs > 0 {
                    println!(
                        "kept the newest: {} older backups and {} unused blobs deleted",
                        s.pruned_backups, s.pruned_blobs
                    );
                }
            }
            Ok(())
        }
        Some(Err(message)) => bail!("backup failed: {message}"),
        None => bail!(
            "the backup's progress stream ended without an outcome (did the collector stop?): the backup is INCOMPLETE, no manifest was written, so the destination holds no partial backup; run it again"
        ),
    }
}
