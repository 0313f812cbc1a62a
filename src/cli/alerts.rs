//! `nightowl alerts`: list and acknowledge alerts, manage silences (over
//! the HTTPS API), preview and test receivers (offline).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::usage;
use crate::api::client::ApiClient;
use clap::Subcommand;

use super::{token, ApiArgs};
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
            rule_column(&s("rule_id")),
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

/// An ack of something that is not an alert's id: when it is the rule of
/// some alerts (the RULE column pasted instead of the ID column), says
/// which ids to ack.
async fn with_rule_hint(api: &ApiTarget, id: &str, e: anyhow::Error) -> anyhow::Error {
    let Ok(answer) = api.call(Method::GET, "/api/v1/alerts", None).await else {
        return e;
    };
    let ids: Vec<String> = answer
        .get("alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("rule_id").and_then(Value::as_str) == Some(id))
        .filter_map(|a| a.get("fingerprint").and_then(Value::as_str))
        .map(|f| f[..f.len().min(16)].to_string())
        .collect();
    if ids.is_empty() {
        return e;
    }
    usage(format!(
        "{id} is a rule, not an alert: ack takes an alert's ID (the first column of \
         `alerts list`); this rule's: {}",
        ids.join(" ")
    ))
}

/// A rule id as wide as its column: Sigma ids are UUIDs, wider than the
/// column, and kept whole they pushed every later column out of line.
fn rule_column(rule: &str) -> String {
    if rule.chars().count() <= 24 {
        rule.to_string()
    } else {
        let head: String = rule.chars().take(23).collect();
        format!("{head}…")
    }
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
    let answer = match api
        .call(Method::POST, &format!("/api/v1/alerts/{id}/ack"), None)
        .await
    {
        Ok(answer) => answer,
        Err(e) => return Err(with_rule_hint(api, id, e).await),
    };
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
        crate::alert::matcher::Matcher::parse(m).map_err(|e| usage(format!("--matcher: {e}")))?;
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

// The receivers' `preview` and `test-receiver` join this enum.
#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Alerts of the token's tenant: firing, acknowledged, silenced, with
    /// age and the receivers notified.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per alert (NDJSON).
        #[arg(long)]
        json: bool,
        /// Also show resolved alerts still kept.
        #[arg(long)]
        all: bool,
    },
    /// Acknowledge an alert (by fingerprint or a unique prefix): stops its
    /// escalation.
    Ack {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Silences: mute alerts whose labels match, for a while.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Render what every configured receiver would send for a fixture
    /// alert (email subject/text/HTML, webhook JSON...); sends nothing.
    Preview {
        /// The collector's config, with `[[alerting.receivers]]`.
        #[arg(long)]
        config: PathBuf,
        /// Only this receiver.
        #[arg(long)]
        receiver: Option<String>,
        /// A JSON notification or alert (default: a built-in example).
        #[arg(long)]
        fixture: Option<PathBuf>,
    },
    /// Send a test page through one receiver: exit 0 when it was accepted,
    /// 1 with the receiver's error otherwise.
    TestReceiver {
        #[arg(long)]
        config: PathBuf,
        /// A JSON notification or alert (default: a built-in example).
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// The receiver's `name`.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SilenceCommand {
    /// Add a silence; prints its id.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        /// `label=value`, `label!=value`, `label=~regex`, `label!~regex`; repeat (all must match).
        #[arg(long = "matcher", required = true)]
        matchers: Vec<String>,
        /// How long from now, with a unit: 30m, 2h, 1d.
        #[arg(long, default_value = "1h")]
        duration: String,
        #[arg(long)]
        comment: String,
        /// Default: $USER, else $LOGNAME, else the account name.
        #[arg(long, env = "USER")]
        author: Option<String>,
    },
    /// Active and pending silences.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

impl ApiArgs {
    pub fn target(self) -> Result<ApiTarget> {
        Ok(ApiTarget {
            token: token(&self.token_file)?,
            server: self.server,
            ca: self.ca,
        })
    }
}

pub async fn run(command: AlertsCommand) -> Result<()> {
    match command {
        AlertsCommand::List { api, json, all } => list(&api.target()?, json, all).await,
        AlertsCommand::Ack { api, id } => ack(&api.target()?, &id).await,
        AlertsCommand::Silence(SilenceCommand::Add {
            api,
            matchers,
            duration,
            comment,
            author,
        }) => {
            super::check_duration_flag("--duration", &duration)?;
            let author = author.unwrap_or_else(login_name);
            silence_add(&api.target()?, &matchers, &duration, &comment, &author).await
        }
        AlertsCommand::Silence(SilenceCommand::List { api, json }) => {
            silence_list(&api.target()?, json).await
        }
        AlertsCommand::Silence(SilenceCommand::Expire { api, id }) => {
            silence_expire(&api.target()?, &id).await
        }
        AlertsCommand::Preview {
            config,
            receiver,
            fixture,
        } => crate::alert::receiver::cli::run_preview(
            &config,
            receiver.as_deref(),
            fixture.as_deref(),
            &mut std::io::stdout().lock(),
        )
        .map_err(|e| usage(format!("{e:#}"))),
        AlertsCommand::TestReceiver {
            config,
            fixture,
            name,
        } => {
            crate::alert::receiver::cli::run_test_receiver(&config, &name, fixture.as_deref()).await
        }
    }
}

/// Who is at the keyboard, for a silence's author when `--author` and
/// `$USER` are not given (cron, containers, `sudo -i`): `$LOGNAME`, then
/// the account name of the effective user.
fn login_name() -> String {
    if let Some(name) = std::env::var("LOGNAME").ok().filter(|n| !n.is_empty()) {
        return name;
    }
    // SAFETY: getpwuid_r with a buffer we own and its length; the result
    // points into that buffer and is copied out before it goes away.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = [0 as libc::c_char; 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
            if !name.is_empty() {
                return name.into_owned();
            }
        }
        format!("uid {}", libc::geteuid())
    }
}
