//! `nightowl search`: query a collector and print hits, NDJSON or a count.
//!
//! A node with `[cluster] peers` answers from every node; when some did not
//! answer, the result is partial: a warning naming them goes to stderr,
//! stdout keeps only the hits or the count (scripts keep working), and the
//! exit status is still 0 (docs/fanout.md).
//!
//! A refused request prints the server's message: a query over a limit
//! (400) exits 2, a rate or concurrency limit (429) or a search stopped at
//! its deadline (503) exits 1 (docs/limits.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use hyper::StatusCode;

use super::http::{answer_error, ApiClient};
use crate::http_client::encode_param;

pub struct SearchArgs {
    pub server: String,
    pub ca: PathBuf,
    pub token: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
    pub count: bool,
    pub json: bool,
    pub query: String,
}

pub async fn run(args: SearchArgs) -> Result<()> {
    let client = ApiClient::new(&args.server, &args.ca, args.token.clone())?;
    let endpoint = if args.count { "count" } else { "search" };
    let range = range_params(args.since.as_deref(), args.until.as_deref());
    let mut url = format!("/api/v1/{endpoint}?q={}{range}", encode_param(&args.query));
    if !args.count {
        url.push_str(&format!("&limit={}", args.limit));
    }
    let json = get_json(&client, &url).await?;
    warn_if_partial(&json);
    let hits = json["hits"].as_array().map_or(0, Vec::len);
    let mut note = None;
    if !args.count && args.limit > 0 && hits >= args.limit {
        // A full page: say there may be more, so the limit is not taken
        // for the number of matches.
        let count_url = format!("/api/v1/count?q={}{range}", encode_param(&args.query));
        let total = match client.get(&count_url).await {
            Ok((StatusCode::OK, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|j| j["count"].as_u64()),
            _ => None,
        };
        note = match total {
            Some(total) if total > hits as u64 => Some(format!(
                "nightowl: showing the newest {hits} of {total} matching lines; --limit N shows more, --count the number"
            )),
            Some(_) => None,
            None => Some(format!(
                "nightowl: showing the newest {hits} matching lines, there may be more; --limit N shows more"
            )),
        };
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.count {
        writeln!(out, "{}", json["count"].as_u64().unwrap_or(0))?;
    } else {
        for hit in json["hits"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if args.json {
                serde_json::to_writer(&mut out, hit)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{}  {:<16} {}",
                    hit["timestamp"].as_str().unwrap_or(""),
                    hit["host"].as_str().unwrap_or("-"),
                    hit["raw"].as_str().unwrap_or("")
                )?;
            }
        }
    }
    out.flush()?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}

/// Names the nodes missing from a partial (fan-out) answer on stderr.
fn warn_if_partial(json: &serde_json::Value) {
    if json["partial"].as_bool() != Some(true) {
        return;
    }
    let failed = json["shards"]["failed"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let total = json["shards"]["total"].as_u64().unwrap_or(0);
    eprintln!(
        "nightowl: warning: partial results: {} of {total} shards answered",
        total.saturating_sub(failed.len() as u64)
    );
    for shard in failed {
        eprintln!(
            "nightowl: warning: no answer from {}: {}",
            shard["node"].as_str().unwrap_or("?"),
            shard["error"].as_str().unwrap_or("?")
        );
    }
}

/// `&since=…&until=…` for the flags given.
fn range_params(since: Option<&str>, until: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(since) = since {
        out.push_str(&format!("&since={}", encode_param(since)));
    }
    if let Some(until) = until {
        out.push_str(&format!("&until={}", encode_param(until)));
    }
    out
}

/// The JSON body of a 200 answer to `GET url`; any other answer is the
/// server's refusal ([`answer_error`]).
async fn get_json(client: &ApiClient, url: &str) -> Result<serde_json::Value> {
    let (status, body) = client.get(url).await?;
    if status != StatusCode::OK {
        return Err(answer_error(status, &body));
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("server answered {status} with a body that is not JSON"))
}

pub struct PatternsArgs {
    pub server: String,
    pub ca: PathBuf,
    pub token: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
    pub json: bool,
    pub query: String,
}

/// `nightowl patterns [QUERY]`: the top patterns of the matching lines
/// (`GET /api/v1/patterns`), one per line: count, id, a sparkline of the
/// lines over the range, `new` when the pattern has no line in the
/// range's first interval, and the template.
pub async fn patterns(args: PatternsArgs) -> Result<()> {
    let client = ApiClient::new(&args.server, &args.ca, args.token.clone())?;
    let mut url = format!(
        "/api/v1/patterns?q={}&limit={}",
        encode_param(&args.query),
        args.limit
    );
    url.push_str(&range_params(args.since.as_deref(), args.until.as_deref()));
    let json = get_json(&client, &url).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        writeln!(out, "{json}")?;
        return Ok(out.flush()?);
    }
    for p in json["patterns"].as_array().into_iter().flatten() {
        let series: Vec<u64> = p["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_u64())
            .collect();
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            p["count"].as_u64().unwrap_or(0),
            p["id"].as_str().unwrap_or_default(),
            sparkline(&series),
            if p["new_since"].is_string() {
                "new"
            } else {
                "-"
            },
            p["template"].as_str().unwrap_or("?"),
        )?;
    }
    Ok(out.flush()?)
}

/// The series as block characters, scaled to its largest value; at most
/// 30 characters (the series summed into as many groups).
fn sparkline(series: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let groups = series.len().clamp(1, 30);
    let per = series.len().div_ceil(groups).max(1);
    let sums: Vec<u64> = series.chunks(per).map(|c| c.iter().sum()).collect();
    let max = sums.iter().copied().max().unwrap_or(0);
    sums.iter()
        .map(|&n| match (n, max) {
            (0, _) => ' ',
            (_, 0) => ' ',
            (n, max) => BARS[((n * 7).div_ceil(max) as usize).min(7)],
        })
        .collect()
}
