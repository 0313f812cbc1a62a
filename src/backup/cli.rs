//! `nightowl backup restore|verify|list`: the offline commands, which
//! need no collector (`create` asks one: `cli/backup.rs`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::json;

use super::restore::{self, KeyPlaced};
use super::{list_backups, load_manifest, Dest};

/// A byte-counting bar on stderr when it is a terminal, hidden otherwise.
pub fn bytes_bar(verb: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let template =
        format!("{{spinner}} {verb} [{{bar:40}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, eta {{eta}}) {{msg}}");
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

fn parse_dest(spec: &str) -> Result<Dest> {
    Dest::parse(spec).map_err(|e| crate::error::usage(format!("{e:#}")))
}

pub async fn restore(
    from: &str,
    id: Option<&str>,
    data_dir: &Path,
    audit_key: Option<&Path>,
) -> Result<()> {
    let dest = parse_dest(from)?;
    let id = restore::resolve_id(&dest, id).await?;
    let manifest = load_manifest(&dest, &id).await?;
    let bar = bytes_bar("restoring");
    bar.set_length(manifest.bytes);
    let restored = restore::restore(&dest, &id, data_dir, audit_key, &mut |n| bar.inc(n)).await?;
    bar.finish_and_clear();
    let m = &restored.manifest;
    println!(
        "restored backup {} ({} files, {}; taken {}) into {}: {} partitions, {} documents; the WAL starts at position {}",
        m.id,
        m.files.len(),
        human_bytes(m.bytes),
        m.finished,
        data_dir.display(),
        m.partitions.len(),
        m.partitions.iter().map(|p| p.docs).sum::<u64>(),
        m.wal_position
    );
    match restored.key {
        KeyPlaced::Copied { from, to } => {
            println!("audit key copied from {} to {}", from.display(), to.display())
        }
        KeyPlaced::AlreadyThere(path) => println!("audit key already at {}", path.display()),
        KeyPlaced::Missing { looked, wanted } => eprintln!(
            "warning: no audit key found (looked at: {}); the restored audit log needs the key it was written with at {} (or --audit-key FILE here), else the collector refuses to start unless given --audit-new-chain",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            wanted.display()
        ),
    }
    println!(
        "agents resume from the per-source offsets of the cut; to send again what they had acked after it, stop each agent and run `nightowl agent rewind --state-dir DIR` (the collector drops what it already has; docs/backup.md)"
    );
    Ok(())
}

pub async fn verify(
    spec: &str,
    id: Option<&str>,
    audit_key: Option<&Path>,
    scratch: Option<PathBuf>,
) -> Result<()> {
    let dest = parse_dest(spec)?;
    let id = restore::resolve_id(&dest, id).await?;
    let manifest = load_manifest(&dest, &id).await?;
    let scratch = scratch.unwrap_or_else(std::env::temp_dir);
    let bar = bytes_bar("verifying");
    bar.set_length(manifest.bytes);
    let verified = restore::verify(&dest, &id, audit_key, &scratch, &mut |n| bar.inc(n)).await;
    bar.finish_and_clear();
    let verified = verified?;
    for id in &verified.incomplete {
        println!("backup {id}: INCOMPLETE (interrupted before its manifest; ignored, removed by the next pruning)");
    }
    if !verified.problems.is_empty() {
        for p in &verified.problems {
            eprintln!("{p}");
        }
        bail!(
            "backup {} does NOT verify: {} problem(s)",
            verified.manifest.id,
            verified.problems.len()
        );
    }
    let m = &verified.manifest;
    println!(
        "backup {} verified: {} files ({}) match their checksums; trial restore: {} partitions open with {} documents{}",
        m.id,
        m.files.len(),
        human_bytes(m.bytes),
        m.partitions.len(),
        verified.docs,
        match verified.audit_entries {
            Some(n) => format!(", audit chain intact ({n} entries)"),
            None => String::new(),
        }
    );
    Ok(())
}

pub async fn list(spec: &str, json_out: bool) -> Result<()> {
    let dest = parse_dest(spec)?;
    let listing = list_backups(&dest).await?;
    let mut rows = Vec::new();
    for id in &listing.complete {
        let m = load_manifest(&dest, id).await?;
        rows.push(json!({
            "id": m.id, "complete": true, "finished": m.finished, "files": m.files.len(),
            "bytes": m.bytes, "bytes_copied": m.bytes_copied,
            "docs": m.partitions.iter().map(|p| p.docs).sum::<u64>(),
            "purged": m.purged.iter().map(|p| p.tenant.clone()).collect::<Vec<_>>(),
        }));
    }
    for id in &listing.incomplete {
        rows.push(json!({ "id": id, "complete": false }));
    }
    if json_out {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no backups in {}", dest.describe());
    }
    for r in &rows {
        if r["complete"] == true {
            println!(
                "{}  {}  {} files  {} ({} copied)  {} documents{}",
                r["id"].as_str().unwrap_or_default(),
                r["finished"].as_str().unwrap_or_default(),
                r["files"],
                human_bytes(r["bytes"].as_u64().unwrap_or(0)),
                human_bytes(r["bytes_copied"].as_u64().unwrap_or(0)),
                r["docs"],
                match r["purged"].as_array() {
                    Some(p) if !p.is_empty() => format!(
                        "  purged: {}",
                        p.iter()
                            .filter_map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    _ => String::new(),
                }
            );
        } else {
            println!(
                "{}  INCOMPLETE (interrupted before its manifest)",
                r["id"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}
