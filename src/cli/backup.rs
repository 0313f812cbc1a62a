//! `nightowl backup`: create (through a running collector), restore,
//! verify, list (docs/backup.md); the work is in `crate::backup`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::{usage, ApiArgs};

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
    use crate::backup::cli as backup;
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
            let client =
                super::http::ApiClient::new(&api.server, &api.ca, super::token(&api.token_file)?)?;
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
