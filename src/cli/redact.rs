//! `nightowl redact`: what the collector would store of some lines, with
//! the defaults plus a config file's `[redact]` patterns. The security
//! team's loop for redaction, as `rules test` is for rules: try a new
//! pattern on real lines before the collector applies it to every batch.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::config::CollectorConfig;
use crate::redact::{RedactConfig, Redactor};

/// Lines are redacted in batches of about this size, like agent batches.
const BATCH_BYTES: usize = 1 << 20;

/// Redacts `input` (stdin when `None`) to stdout; the number of secrets
/// replaced per kind goes to stderr. A bad config is bad input.
pub fn run(config: Option<&Path>, input: Option<&Path>) -> Result<()> {
    let redact = match config {
        Some(path) => {
            CollectorConfig::load(path)
                .map_err(|e| super::usage(format!("{e:#}")))?
                .redact
        }
        None => RedactConfig::default(),
    };
    let redactor = Redactor::new(&redact).map_err(|e| super::usage(format!("{e:#}")))?;
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| super::usage(format!("reading {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let what = input.map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
    let counts = redact_stream(&redactor, reader, &mut std::io::stdout().lock())
        .with_context(|| format!("redacting {what}"))?;
    let total: u64 = counts.values().sum();
    let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "nightowl: {total} secrets replaced{}{}",
        if kinds.is_empty() { "" } else { ": " },
        kinds.join(", ")
    );
    Ok(())
}

/// Copies `reader` to `out` through the redactor, batch by batch of whole
/// lines; returns the secrets replaced per kind.
pub fn redact_stream(
    redactor: &Redactor,
    mut reader: impl BufRead,
    out: &mut impl Write,
) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
    loop {
        let n = reader.read_until(b'\n', &mut batch)?;
        if n > 0 && batch.len() < BATCH_BYTES {
            continue;
        }
        if batch.is_empty() {
            break;
        }
        let lines = Bytes::from(std::mem::replace(
            &mut batch,
            Vec::with_capacity(BATCH_BYTES + 4096),
        ));
        match redactor.redact_batch(&lines) {
            Some(red) => {
                out.write_all(&red.lines)?;
                for (kind, n) in red.counts {
                    *counts
                        .entry(redactor.kind_name(kind).to_string())
                        .or_default() += n;
                }
            }
            None => out.write_all(&lines)?,
        }
        if n == 0 {
            break;
        }
    }
    out.flush()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keeps_every_line_and_counts_kinds_across_batches() {
        let redactor = Redactor::new(&RedactConfig::default()).expect("defaults");
        let mut input = String::new();
        // More than one batch, and a last line without its newline.
        for i in 0..30_000 {
            input.push_str(&format!(
                "GET /login?user=u{i}&password=pw{i} HTTP/1.1 {i:040}\n"
            ));
        }
        input.push_str("Authorization: Bearer abcdef0123456789abcdef");
        assert!(input.len() > 2 * BATCH_BYTES);
        let mut out = Vec::new();
        let counts = redact_stream(&redactor, input.as_bytes(), &mut out).expect("redacts");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(out.lines().count(), 30_001);
        assert!(!out.contains("password=pw"), "a password survived");
        assert!(
            out.ends_with("Bearer [REDACTED:auth]"),
            "{}",
            &out[out.len() - 60..]
        );
        assert_eq!(counts.get("password"), Some(&30_000));
        assert_eq!(counts.get("auth"), Some(&1));
    }
}
