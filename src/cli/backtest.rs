//! `nightowl rules backtest RULE_FILE --since 7d`: replays a rule file over
//! the collector's indexed history and prints what it would have fired.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::http::ApiClient;
use crate::index::backtest::{Progress, Report};

pub struct BacktestArgs {
    pub server: String,
    pub ca: PathBuf,
    pub token: String,
    pub file: PathBuf,
    pub since: Option<String>,
    pub until: Option<String>,
    pub json: bool,
}

pub async fn run(args: BacktestArgs) -> Result<()> {
    let rules = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))
        .map_err(|e| super::usage(format!("{e:#}")))?;
    let client = ApiClient::new(&args.server, &args.ca, args.token.clone())?;
    let request = serde_json::json!({
        "rules": rules,
        "name": args.file.display().to_string(),
        "since": args.since,
        "until": args.until,
    });
    let bar = super::progress_bar("replaying")?;
    let mut report: Option<Report> = None;
    let mut failure: Option<String> = None;
    let (status, body) = client
        .post_json_lines("/api/v1/rules/backtest", &request, |line| {
            let message: Message = serde_json::from_slice(line)
                .with_context(|| format!("unexpected line from the server: {}", lossy(line)))?;
            match message {
                Message::Progress(p) => {
                    bar.set_length(p.total);
                    bar.set_position(p.scanned);
                }
                Message::Report(r) => report = Some(*r),
                Message::Error(e) => failure = Some(e),
            }
            Ok(())
        })
        .await?;
    bar.finish_and_clear();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| lossy(&body));
        return Err(if status.is_client_error() {
            super::usage(message)
        } else {
            anyhow::anyhow!("server error {status}: {message}")
        });
    }
    if let Some(failure) = failure {
        anyhow::bail!("backtest failed on the server: {failure}");
    }
    let report = report.context("the server ended the backtest without a report")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Message {
    Progress(Progress),
    Report(Box<Report>),
    Error(String),
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn print_report(out: &mut impl Write, report: &Report) -> Result<()> {
    writeln!(
        out,
        "replayed {} lines from {} to {} ({} unparsed): {} firings",
        report.lines, report.since, report.until, report.unparsed, report.firings
    )?;
    for rule in &report.rules {
        writeln!(
            out,
            "\n{}  {}: {} firings for {} keys",
            rule.rule_id, rule.title, rule.firings, rule.distinct_keys
        )?;
        writeln!(
            out,
            "  {:<40} {:>8}  {:<30} last",
            "key", "firings", "first"
        )?;
        for key in &rule.keys {
            let shown = if key.key.is_empty() { "-" } else { &key.key };
            writeln!(
                out,
                "  {:<40} {:>8}  {:<30} {}",
                shown, key.firings, key.first, key.last
            )?;
        }
    }
    if !report.buckets.is_empty() {
        writeln!(out, "\nfirings per {} s:", report.interval_secs)?;
        let peak = report
            .buckets
            .iter()
            .map(|b| b.firings)
            .max()
            .unwrap_or(1)
            .max(1);
        for bucket in &report.buckets {
            let width = (bucket.firings * 40).div_ceil(peak) as usize;
            writeln!(
                out,
                "  {}  {:>6} {}",
                bucket.start,
                bucket.firings,
                "#".repeat(width)
            )?;
        }
    }
    Ok(())
}
