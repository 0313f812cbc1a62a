//! `nightowl alerts ...`: the on-call's side of paging, over the HTTPS API
//! with a token (the tenant is the token's).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::client::ApiClient;
use crate::cli::usage;
use crate::time::{now_nanos, parse_duration, NANOS_PER_SEC};

/// The collector's API: `https://host:port`, its CA, a bearer token.
pub struct ApiTarget {
    pub server: String,
    pub ca: PathBuf,
    pub token: String,
}

impl ApiTarget {
    /// One request; the body of any non-2xx answer becomes the error.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let client = ApiClient::new(&self.server, &self.ca, self.token.clone())?;
        let (status, bytes) = match (&method, &body) {
            (&Method::GET, _) => client.get(path).await,
            (&Method::DELETE, _) => client.delete(path).await,
            (_, Some(body)) => client.post_json(path, body).await,
            (_, None) => client.post_bytes(path, Bytes::new()).await,
        }
        .with_context(|| format!("{method} {path}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }),
        );
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error message")
                .to_string();
            if status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND {
                return Err(usage(format!("{method} {path}: {status}: {msg}")));
            }
            bail!("{method} {path}: {status}: {msg}");
        }
        Ok(value)
    }
}

/// `alerts list`.
pub async fn list(api: &ApiTarget, json: bool, all: bool) -> Result<()> {
    let path = if all {
        "/api/v1/alerts?all=true"
    } else {
        "/api/v1/alerts"
    };
    let answer = api.call(Method::GET, path, None).await?;
    let alerts = answer
        .get("alerts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // On stderr: the list on stdout stays the same for scripts.
    if let Some(why) = answer
        .get("paging")
        .and_then(|p| p.get("nobody_paged"))
        .and_then(Value::as_str)
    {
        eprintln!("note: {why}");
    }
    if json {
        for alert in &alerts {
            println!("{alert}");
        }
        return Ok(());
    }
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(());
    }
    // EVIDENCE (when the evidence happened, event time) comes last so
    // scripts reading the earlier columns keep working.
    println!(
        "{:<16} {:<10} {:<9} {:>7} {:<24} {:<20} {:<12} EVIDENCE",
        "ID", "STATE", "SEVERITY", "AGE", "RULE", "KEY", "RECEIVERS"
    );
    let now = now_nanos();
    for a in &alerts {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let age = now.saturating_sub(a.get("starts_at").and_then(Value::as_i64).unwrap_or(now));
        let receivers: Vec<String> = a
            .get("receivers_notified")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let id = s("fingerprint");
        let evidence = match a.get("evidence_from").and_then(Value::as_i64) {
            Some(t) if t > 0 => crate::time::format_rfc3339(t),
            _ => "-".to_string(),
        };
        println!(
            "{:<16} {:<10} {:<9} {:>7} {:<24} {:<20} {:<12} {evidence}",
            &id[..id.len().min(16)],
            s("state"),
            s("severity"),
            human_age(age),
            s("rule_id"),
            s("key"),
            if receivers.is_empty() {
                "-".to_string()
            } else {
                receivers.join(",")
            }
        );
    }
    Ok(())
}

fn human_age(nanos: i64) -> String {
    let secs = nanos / NANOS_PER_SEC;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `alerts ack ID`.
pub async fn ack(api: &ApiTarget, id: &str) -> Result<()> {
    check_id(id)?;
    let answer = api
        .call(Method::POST, &format!("/api/v1/alerts/{id}/ack"), None)
        .await?;
    let acked = answer
        .get("fingerprint")
        .and_then(Value::as_str)
        .unwrap_or(id);
    println!("acknowledged {acked}");
    Ok(())
}

/// `alerts silence add`.
pub async fn silence_add(
    api: &ApiTarget,
    matchers: &[String],
    duration: &str,
    comment: &str,
    author: &str,
) -> Result<()> {
    let nanos = parse_duration(duration).map_err(|e| usage(format!("--duration: {e}")))?;
    if nanos <= 0 {
        return Err(usage("--duration must be positive"));
    }
    for m in matchers {
        super::matcher::Matcher::parse(m).map_err(|e| usage(format!("--matcher: {e}")))?;
    }
    let now = now_nanos();
    let body = json!({
        "matchers": matchers,
        "starts_at": now,
        "ends_at": now.saturating_add(nanos),
        "comment": comment,
        "author": author,
    });
    let answer = api
        .call(Method::POST, "/api/v1/silences", Some(body))
        .await?;
    let id = answer.get("id").and_then(Value::as_str).unwrap_or("?");
    println!("{id}");
    Ok(())
}

/// `alerts silence list`.
pub async fn silence_list(api: &ApiTarget, json: bool) -> Result<()> {
    let answer = api.call(Method::GET, "/api/v1/silences", None).await?;
    let silences = answer
        .get("silences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if json {
        for s in &silences {
            println!("{s}");
        }
        return Ok(());
    }
    if silences.is_empty() {
        println!("no silences");
        return Ok(());
    }
    let now = now_nanos();
    println!(
        "{:<24} {:<8} {:>8} {:<12} MATCHERS / COMMENT",
        "ID", "STATE", "ENDS IN", "AUTHOR"
    );
    for s in &silences {
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let ends = s.get("ends_at").and_then(Value::as_i64).unwrap_or(now);
        let matchers: Vec<String> = s
            .get("matchers")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<24} {:<8} {:>8} {:<12} {} / {}",
            text("id"),
            text("state"),
            human_age(ends.saturating_sub(now).max(0)),
            text("author"),
            matchers.join(","),
            text("comment")
        );
    }
    Ok(())
}

/// `alerts silence expire ID`.
pub async fn silence_expire(api: &ApiTarget, id: &str) -> Result<()> {
    check_id(id)?;
    api.call(Method::DELETE, &format!("/api/v1/silences/{id}"), None)
        .await?;
    println!("expired {id}");
    Ok(())
}

/// Ids go into a URL path: keep them to what we generate.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(usage(format!("invalid id {id:?}")));
    }
    Ok(())
}
