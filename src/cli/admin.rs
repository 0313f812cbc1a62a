//! `nightowl tenant ...` and `nightowl token ...`: administration over the
//! HTTPS API with an admin token.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::http::ApiClient;
use crate::http_client::encode_param;
use clap::Subcommand;

use super::ApiArgs;
use crate::auth::{Tenant, TokenInfo};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant, or update its retention.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// Days of index kept (whole days are deleted after that).
        #[arg(long)]
        retention_days: Option<u32>,
    },
    /// List the tenants this token administers, with their retention.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stream every line of a tenant as NDJSON (timestamp, host, source,
    /// raw), oldest first, with a progress bar.
    Export {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete every line of a tenant received until now. Cannot be undone.
    Purge {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// Required: confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it alone on stdout, only this once.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The token's tenant (default: the admin token's own).
        #[arg(long)]
        tenant: Option<String>,
        /// viewer, rule-editor, admin or agent.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Only accept the token from this address or CIDR block (repeatable).
        #[arg(long = "allow-ip")]
        allow_ip: Vec<String>,
    },
    /// List tokens (never their secrets): id, tenant, role, description,
    /// allowed IPs, revoked or not.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once, also on open agent connections.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Compact every partition the token administers (all of them for the
    /// operator token): merged into one segment, the stored lines
    /// recompressed. Prints each partition and the bytes before and after;
    /// returns when the last one is done.
    Compact {
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub async fn run_tenant(command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Create {
            api,
            name,
            retention_days,
        } => tenant_create(&super::admin_api(api)?, &name, retention_days).await,
        TenantCommand::List { api, json } => tenant_list(&super::admin_api(api)?, json).await,
        TenantCommand::Export {
            api,
            name,
            since,
            until,
            output,
        } => {
            super::check_range(since.as_deref(), until.as_deref())?;
            tenant_export(
                &super::admin_api(api)?,
                &name,
                since.as_deref(),
                until.as_deref(),
                output.as_deref(),
            )
            .await
        }
        TenantCommand::Purge { api, name, yes } => {
            if !yes {
                return Err(super::usage(format!(
                    "purging tenant {name} deletes all its data for good; add --yes to confirm"
                )));
            }
            tenant_purge(&super::admin_api(api)?, &name).await
        }
    }
}

pub async fn run_token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            api,
            tenant,
            role,
            description,
            allow_ip,
        } => {
            let new = NewToken {
                tenant,
                role,
                description,
                allowed_ips: allow_ip,
            };
            token_create(&super::admin_api(api)?, new).await
        }
        TokenCommand::List { api, json } => token_list(&super::admin_api(api)?, json).await,
        TokenCommand::Revoke { api, id } => token_revoke(&super::admin_api(api)?, &id).await,
    }
}

pub struct Api {
    pub server: String,
    pub ca: PathBuf,
    pub token: String,
}

impl Api {
    fn client(&self) -> Result<ApiClient> {
        ApiClient::new(&self.server, &self.ca, self.token.clone())
    }
}

/// The JSON body of a success, or the server's error as a usage error
/// (4xx: exit 2) or a runtime failure (5xx: exit 1).
fn answer((status, body): (StatusCode, Bytes)) -> Result<Value> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The client already waited out its Retry-After a few times: say
        // so, and exit 1 (worth retrying later), not 2.
        return Err(super::http::answer_error(status, &body));
    }
    let json: Value = serde_json::from_slice(&body)
        .with_context(|| format!("server answered {status} with a body that is not JSON"))?;
    if status.is_success() {
        return Ok(json);
    }
    let message = json["error"]
        .as_str()
        .unwrap_or("unknown error")
        .to_string();
    Err(if status.is_client_error() {
        super::usage(message)
    } else {
        anyhow::anyhow!("server error {status}: {message}")
    })
}

pub async fn tenant_create(api: &Api, name: &str, retention_days: Option<u32>) -> Result<()> {
    let body = json!({ "name": name, "retention_days": retention_days });
    let reply = answer(api.client()?.post_json("/api/v1/tenants", &body).await?)?;
    let verb = if reply["created"].as_bool() == Some(true) {
        "created"
    } else {
        "updated"
    };
    println!("tenant {name} {verb}");
    Ok(())
}

pub async fn tenant_list(api: &Api, json: bool) -> Result<()> {
    let reply = answer(api.client()?.get("/api/v1/tenants").await?)?;
    let tenants: Vec<Tenant> =
        serde_json::from_value(reply["tenants"].clone()).context("reading the tenant list")?;
    let mut out = std::io::stdout().lock();
    for t in &tenants {
        if json {
            serde_json::to_writer(&mut out, t)?;
            writeln!(out)?;
        } else {
            let retention = t
                .retention_days
                .map_or("keep all".to_string(), |d| format!("{d} days"));
            writeln!(out, "{:<24} retention {retention}", t.name)?;
        }
    }
    Ok(())
}

pub struct NewToken {
    pub tenant: Option<String>,
    pub role: String,
    pub description: String,
    pub allowed_ips: Vec<String>,
}

/// Prints the new token alone on stdout (its only copy), details on stderr.
pub async fn token_create(api: &Api, new: NewToken) -> Result<()> {
    let body = json!({
        "tenant": new.tenant,
        "role": new.role,
        "description": new.description,
        "allowed_ips": new.allowed_ips,
    });
    let reply = answer(api.client()?.post_json("/api/v1/tokens", &body).await?)?;
    let token = reply["token"]
        .as_str()
        .context("the server answered without a token")?;
    println!("{token}");
    eprintln!(
        "created token {} ({} of tenant {}); it is shown only this once",
        reply["id"].as_str().unwrap_or("?"),
        reply["role"].as_str().unwrap_or("?"),
        reply["tenant"].as_str().unwrap_or("?"),
    );
    Ok(())
}

pub async fn token_list(api: &Api, json: bool) -> Result<()> {
    let reply = answer(api.client()?.get("/api/v1/tokens").await?)?;
    let tokens: Vec<TokenInfo> =
        serde_json::from_value(reply["tokens"].clone()).context("reading the token list")?;
    let mut out = std::io::stdout().lock();
    // Certificate ids (`cert-` + 16 hex) are longer than token ids.
    let id_width = tokens.iter().map(|t| t.id.len()).max().unwrap_or(0).max(14);
    if !json {
        writeln!(
            out,
            "{:<id_width$} {:<16} {:<12} {:<8} DESCRIPTION",
            "ID", "TENANT", "ROLE", "STATE"
        )?;
    }
    for t in &tokens {
        if json {
            serde_json::to_writer(&mut out, t)?;
            writeln!(out)?;
        } else {
            let role = serde_json::to_value(t.role)?;
            let state = if t.revoked_unix.is_some() {
                "revoked"
            } else {
                "active"
            };
            writeln!(
                out,
                "{:<id_width$} {:<16} {:<12} {:<8} {}{}",
                t.id,
                t.tenant,
                role.as_str().unwrap_or("?"),
                state,
                if t.global { "operator " } else { "" },
                t.description
            )?;
        }
    }
    Ok(())
}

pub async fn token_revoke(api: &Api, id: &str) -> Result<()> {
    let path = format!("/api/v1/tokens/{}", encode_param(id));
    answer(api.client()?.delete(&path).await?)?;
    println!("token {id} revoked");
    Ok(())
}

pub async fn audit_list(api: &Api, limit: usize, json: bool) -> Result<()> {
    let path = format!("/api/v1/audit?limit={limit}");
    let reply = answer(api.client()?.get(&path).await?)?;
    let entries: Vec<crate::audit::Entry> =
        serde_json::from_value(reply["entries"].clone()).context("reading the audit entries")?;
    let mut out = std::io::stdout().lock();
    for e in &entries {
        if json {
            serde_json::to_writer(&mut out, e)?;
            writeln!(out)?;
        } else {
            let who = if e.actor.is_empty() { "-" } else { &e.actor };
            writeln!(
                out,
                "{} {:<14} {:<12} {:<15} {} {} {}{}{}{}",
                e.time,
                who,
                if e.tenant.is_empty() { "-" } else { &e.tenant },
                e.ip,
                e.status,
                e.method,
                e.path,
                if e.query.is_empty() { "" } else { "?" },
                e.query,
                match e.sealed.as_deref() {
                    Some("shredded") => " [data shredded by a tenant purge]",
                    Some(_) => " [data unreadable]",
                    None => "",
                }
            )?;
        }
    }
    Ok(())
}

/// Streams a tenant's lines as NDJSON to `output` (stdout with `None`),
/// with a progress bar on stderr.
pub async fn tenant_export(
    api: &Api,
    name: &str,
    since: Option<&str>,
    until: Option<&str>,
    output: Option<&std::path::Path>,
) -> Result<()> {
    use http_body_util::BodyExt as _;
    let mut path = format!("/api/v1/tenants/{}/export?", encode_param(name));
    if let Some(since) = since {
        path.push_str(&format!("since={}&", encode_param(since)));
    }
    if let Some(until) = until {
        path.push_str(&format!("until={}", encode_param(until)));
    }
    let response = api.client()?.get_streamed(&path).await?;
    if !response.status().is_success() {
        answer(super::http::collect(response).await?)?;
        anyhow::bail!("export refused");
    }
    let total = response
        .headers()
        .get("x-nightowl-total")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let bar = super::progress_bar("exporting")?;
    bar.set_length(total);
    let mut out: Box<dyn Write> = match output {
        // A whole tenant's data: owner-only whatever the umask, as the
        // data dir's own files are.
        Some(path) => Box::new(std::io::BufWriter::new({
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?
        })),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut body = response.into_body();
    let mut lines = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the export")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        lines += memchr::memchr_iter(b'\n', data).count() as u64;
        bar.set_position(lines);
        out.write_all(data).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    bar.finish_and_clear();
    if lines < total {
        anyhow::bail!("export cut short after {lines} of {total} lines; see the collector log");
    }
    eprintln!("exported {lines} lines of tenant {name}");
    Ok(())
}

/// `nightowl index compact`: prints each partition as it is swapped in,
/// then the index's bytes before and after.
pub async fn index_compact(api: &Api) -> Result<()> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut summary: Option<Value> = None;
    let mut failure: Option<String> = None;
    let answered = api
        .client()?
        .post_json_lines("/api/v1/index/compact", &json!({}), |line| {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let row: Value =
                serde_json::from_slice(line).context("the server sent a line that is not JSON")?;
            if let Some(p) = row.get("partition") {
                println!(
                    "compacted {}/{}{}: {} -> {} bytes",
                    p["tenant"].as_str().unwrap_or("?"),
                    p["day"].as_str().unwrap_or("?"),
                    match p["shard"].as_u64() {
                        Some(0) | None => String::new(),
                        Some(s) => format!(" (shard {s})"),
                    },
                    n(&p["bytes_before"]),
                    n(&p["bytes_after"]),
                );
            } else if let Some(done) = row.get("done") {
                summary = Some(done.clone());
            } else if let Some(error) = row.get("error") {
                failure = Some(error.as_str().unwrap_or("unknown error").to_string());
            }
            Ok(())
        })
        .await?;
    if !answered.0.is_success() {
        answer(answered)?;
    }
    if let Some(error) = failure {
        anyhow::bail!("compaction failed: {error}");
    }
    let Some(done) = summary else {
        anyhow::bail!("the server ended the answer before the compaction finished; it goes on in the collector (see its log)");
    };
    let (before, after) = (n(&done["bytes_before"]), n(&done["bytes_after"]));
    println!(
        "index compacted: {} of {} partitions rewritten; {before} bytes before, {after} bytes after",
        n(&done["compacted"]),
        n(&done["partitions"]),
    );
    Ok(())
}

pub async fn tenant_purge(api: &Api, name: &str) -> Result<()> {
    let path = format!("/api/v1/tenants/{}/purge", encode_param(name));
    let reply = answer(
        api.client()?
            .post_json(&path, &json!({ "confirm": name }))
            .await?,
    )?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "tenant {name} purged: {} index partitions, {} rule state keys, {} alerts, {} silences, {} undelivered notifications deleted",
        n(&reply["purged"]["partitions_removed"]),
        n(&reply["purged"]["rule_keys_removed"]),
        n(&reply["paging"]["alerts"]),
        n(&reply["paging"]["silences"]),
        n(&reply["paging"]["notifications"]),
    );
    if let Some(key) = reply["audit_key_destroyed"].as_str() {
        println!("its audit data key {key} is destroyed: the queries and bodies of its audit entries are unreadable");
    }
    if reply["wal_cleared"] == json!(false) {
        eprintln!(
            "warning: WAL segments holding {name}'s purged records are still on disk; they go once the index passes them (see the collector log)"
        );
    }
    for dest in reply["backups"].as_array().into_iter().flatten() {
        let to = dest["to"].as_str().unwrap_or("?");
        match dest["error"].as_str() {
            Some(e) => eprintln!(
                "warning: backups at {to} still hold {name}: {e}; the purge is retried there at the next backup run"
            ),
            None => println!(
                "backups at {to}: {name} removed from {} backups ({} files removed or rewritten, {} blobs deleted)",
                n(&dest["backups"]),
                n(&dest["files"]),
                n(&dest["blobs_deleted"]),
            ),
        }
    }
    Ok(())
}

/// `nightowl status`: the node's pipeline health; exits 1 when degraded.
pub async fn status(api: &Api, json: bool) -> Result<()> {
    let reply = answer(api.client()?.get("/api/v1/status").await?)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &reply)?;
        writeln!(out)?;
    } else {
        writeln!(out, "health: {}", reply["health"].as_str().unwrap_or("?"))?;
        if let Some(tenant) = reply["tenant"].as_str() {
            writeln!(out, "tenant: {tenant} (node counters are the operator's)")?;
        }
        for problem in reply["problems"].as_array().into_iter().flatten() {
            writeln!(out, "  ! {}", problem.as_str().unwrap_or_default())?;
        }
        for notice in reply["notices"].as_array().into_iter().flatten() {
            writeln!(out, "  ! {}", notice.as_str().unwrap_or_default())?;
        }
        const SECTIONS: [&str; 5] = ["ingest", "index", "rules", "alerts", "backup"];
        // One column for the values of every section, as wide as the
        // longest name.
        let width = SECTIONS
            .iter()
            .filter_map(|s| reply[*s].as_object())
            .flat_map(|fields| fields.keys().map(String::len))
            .max()
            .unwrap_or(0);
        for section in SECTIONS {
            // A tenant admin's answer has its own tenant's sections only.
            let Some(fields) = reply[section].as_object() else {
                continue;
            };
            writeln!(out, "{section}:")?;
            for (name, value) in fields {
                writeln!(out, "  {name:<width$} {value}")?;
            }
        }
    }
    out.flush()?;
    if reply["health"] != "ok" {
        anyhow::bail!("the pipeline is degraded");
    }
    Ok(())
}
