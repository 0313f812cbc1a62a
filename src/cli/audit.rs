//! `nightowl audit`: list the audit log (admin token), verify its chain
//! offline.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::{usage, ApiArgs};

#[derive(Subcommand)]
pub enum AuditCommand {
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

pub async fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::List { api, limit, json } => {
            super::admin::audit_list(&super::admin_api(api)?, limit, json).await
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
        return Err(usage(format!("no audit log at {}", log.display())));
    }
    let explicit = key_file.or_else(|| {
        std::env::var_os("NIGHTOWL_AUDIT_KEY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let bad_input = |e: anyhow::Error| usage(format!("{e:#}"));
    let key_path = crate::audit::key_path(explicit.as_deref(), data_dir).map_err(bad_input)?;
    let key = if key_path.exists() {
        Some(crate::audit::AuditKey::load(&key_path).map_err(bad_input)?)
    } else {
        None
    };
    let report =
        crate::audit::verify_data_dir(data_dir, key.as_ref(), witnesses).map_err(
            |e| match &key {
                None => usage(format!("{e:#} (no key at {})", key_path.display())),
                Some(_) => bad_input(e),
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
        // Not a verified chain's end: the bytes after the last entry could
        // be an append a crash cut short, or an entry cut (or junk added)
        // on purpose; the file alone cannot tell which.
        if let Some(at) = report.torn_tail {
            let len = std::fs::metadata(&log).map_or(0, |m| m.len());
            anyhow::bail!(
                "{}: {} bytes at offset {at} after entry {} do not parse: an append cut short \
                 by a crash (the collector cuts it at its next start, and says so in its log) \
                 or a cut or addition to the file",
                log.display(),
                len.saturating_sub(at),
                report.entries
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
