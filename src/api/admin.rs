//! Tenant and token administration: `/api/v1/tenants`, `/api/v1/tokens`.
//!
//! The operator token (the first admin token, `admin.token`) administers
//! every tenant; a tenant's admin token administers its own tenant only.
//! A token someone may not administer answers 404, not 403, so tenants
//! cannot probe each other's token ids.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Caller};
use crate::auth::{AdminError, Cidr, Role, TokenSpec};
use crate::index::search::{self, TimeRange};
use crate::time::{format_rfc3339, now_nanos, parse_instant};

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            AdminError::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, m),
            AdminError::Internal(m) => {
                tracing::error!(error = %m, "administration failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        }
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Role::Admin)
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

pub async fn list_tenants(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let tenants: Vec<_> = state
        .tokens
        .tenants()
        .into_iter()
        .filter(|t| caller.0.administers(&t.name))
        .collect();
    Ok(Json(json!({ "tenants": tenants })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    retention_days: Option<u32>,
}

pub async fn create_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<CreateTenant>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&caller)?;
    if !caller.0.global {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the operator token creates tenants".into(),
        ));
    }
    let (tenant, created) = state
        .tokens
        .upsert_tenant(&request.name, request.retention_days)
        .map_err(|e| bad_request(format!("{e:#}")))?;
    state
        .catalog
        .lifecycle
        .set_retention(&tenant.name, tenant.retention_days);
    tracing::info!(
        by = %caller.0.token_id,
        tenant = %tenant.name,
        created,
        retention_days = ?tenant.retention_days,
        "tenant saved"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "tenant": tenant, "created": created })),
    ))
}

pub async fn list_tokens(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(json!({ "tokens": state.tokens.list(&caller.0) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Default: the caller's tenant.
    #[serde(default)]
    tenant: Option<String>,
    role: Role,
    #[serde(default)]
    description: String,
    #[serde(default)]
    allowed_ips: Vec<String>,
}

pub async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&caller)?;
    let tenant = request.tenant.unwrap_or_else(|| caller.0.tenant.clone());
    if !caller.0.administers(&tenant) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this token administers tenant {:?} only", caller.0.tenant),
        ));
    }
    let allowed_ips = request
        .allowed_ips
        .iter()
        .map(|c| c.parse::<Cidr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(format!("allowed_ips: {e}")))?;
    let token = state
        .tokens
        .create_with(
            &tenant,
            request.role,
            TokenSpec {
                description: request.description,
                allowed_ips,
            },
        )
        .map_err(|e| bad_request(format!("{e:#}")))?;
    let id = token.split('_').nth(1).unwrap_or_default().to_string();
    tracing::info!(by = %caller.0.token_id, %tenant, role = ?request.role, token = %id, "token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "tenant": tenant, "role": request.role, "token": token })),
    ))
}

pub async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let info = state.tokens.revoke(&id, &caller.0)?;
    tracing::info!(by = %caller.0.token_id, tenant = %info.tenant, token = %id, "token revoked");
    Ok(Json(json!({ "revoked": info })))
}

/// The tenant named in the path, if the caller administers it. Anyone
/// else gets 404: tenants cannot probe each other's names.
fn administered(state: &ApiState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    require_admin(caller)?;
    if caller.0.administers(name) && state.tokens.tenant(name).is_some() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no tenant {name:?}"),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The tenant's name again: a purge cannot be undone.
    confirm: String,
}

/// `POST /api/v1/tenants/{name}/purge`: deletes every indexed line of the
/// tenant received until now (queued and WAL-replayed ones included).
pub async fn purge_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(scope): Query<PurgeScope>,
    headers: axum::http::HeaderMap,
    Json(request): Json<PurgeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    administered(&state, &caller, &name)?;
    if request.confirm != name {
        return Err(bad_request(format!(
            "confirm must repeat the tenant's name ({name:?})"
        )));
    }
    let purged_at = now_nanos();
    let answer = state
        .catalog
        .lifecycle
        .request_purge(&name, purged_at)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let report = tokio::task::spawn_blocking(move || {
        answer.recv_timeout(std::time::Duration::from_secs(600))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the indexer did not answer; the purge is recorded and completes when it does".into(),
        )
    })?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    // Index and rule state first: a firing still on its way can then only
    // come from a line received before the purge, which the indexer drops.
    let paging = match &state.alerts {
        Some(alerts) => {
            let (alerts, tenant) = (Arc::clone(alerts), name.clone());
            tokio::task::spawn_blocking(move || alerts.purge_tenant(&tenant))
                .await
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?
        }
        None => Default::default(),
    };
    // The tenant's data quoted in audit entries (queries, bodies) goes
    // with its data key; the entries themselves, and this purge, stay.
    let shredded = {
        let (audit, tenant, by) = (
            Arc::clone(&state.audit),
            name.clone(),
            caller.0.token_id.clone(),
        );
        tokio::task::spawn_blocking(move || audit.shred_tenant(&tenant, &by))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?
    };
    // The WAL holds every tenant's records interleaved: whole segments go,
    // once the index has passed them. Wait for the ones holding this
    // tenant's purged records (the sequencer drops any still queued).
    let wal_cleared = match &state.bulk {
        Some(bulk) => {
            bulk.ingest
                .clear_purged(std::time::Duration::from_secs(60))
                .await
        }
        None => None,
    };
    // Backups hold the tenant too: removed from every one this collector
    // wrote (docs/backup.md).
    let backups = match &state.backups {
        Some(backups) => Some(backups.purge_tenant(&name, purged_at).await),
        None => None,
    };
    tracing::warn!(
        by = %caller.0.token_id, tenant = %name, partitions = report.partitions_removed,
        rule_keys = report.rule_keys_removed, alerts = paging.alerts,
        notifications = paging.notifications, audit_key = ?shredded,
        wal_cleared = ?wal_cleared, "tenant purged"
    );
    // With peers (Kafka indexers), the tenant's lines live on them too:
    // the purge is done only when every node confirms it.
    let peers = match &state.cluster {
        Some(peers) if !scope.local => Arc::clone(peers),
        _ => {
            return Ok(Json(json!({
                "purged": report, "paging": paging,
                "audit_key_destroyed": shredded, "wal_cleared": wal_cleared,
                "backups": backups,
            })))
        }
    };
    let path = format!(
        "/api/v1/tenants/{}/purge",
        crate::http_client::encode_param(&name)
    );
    let answers =
        super::fanout::post_to_peers(&peers, &headers, &path, &json!({ "confirm": name })).await;
    let mut removed = report.partitions_removed;
    let mut rule_keys = report.rule_keys_removed;
    let mut failed = Vec::new();
    for (node, answer) in answers {
        let purged = answer.map(|a| a["purged"].clone());
        match purged.as_ref().map(|p| p["partitions_removed"].as_u64()) {
            Ok(Some(n)) => {
                removed += n;
                rule_keys += purged
                    .as_ref()
                    .map_or(0, |p| p["rule_keys_removed"].as_u64().unwrap_or(0));
            }
            Ok(None) => {
                failed.push(json!({"node": node, "error": "answered without a purge report"}))
            }
            Err(error) => failed.push(json!({"node": node, "error": error})),
        }
    }
    if !failed.is_empty() {
        // The tombstones already written stay; repeating the purge
        // completes it on the nodes that missed it.
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!(
                "the purge did not reach every node, repeat it: {}",
                json!(failed)
            ),
        ));
    }
    Ok(Json(json!({
        "purged": {
            "tenant": name, "partitions_removed": removed,
            "rule_keys_removed": rule_keys, "nodes": peers.len() + 1
        },
        "paging": paging,
        "audit_key_destroyed": shredded, "wal_cleared": wal_cleared,
        "backups": backups,
    })))
}

/// `?local=true`: this node's shards only (how a purge reaches peers).
#[derive(Debug, Default, Deserialize)]
pub struct PurgeScope {
    #[serde(default)]
    local: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/v1/tenants/{name}/export`: every line of the tenant in the
/// range as NDJSON (`timestamp`, `host`, `source`, `raw`), oldest first,
/// streamed; `X-Nightowl-Total` announces the count for progress bars.
pub async fn export_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    administered(&state, &caller, &name)?;
    let now = now_nanos();
    let instant = |what: &str, text: &Option<String>, default: i64| match text {
        Some(t) => parse_instant(t, now)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}"))),
        None => Ok(default),
    };
    let range = TimeRange {
        since: instant("since", &params.since, i64::MIN / 2)?,
        until: instant("until", &params.until, i64::MAX / 2)?,
    };
    let catalog = Arc::clone(&state.catalog);
    let counted = {
        let (catalog, name) = (Arc::clone(&catalog), name.clone());
        tokio::task::spawn_blocking(move || search::count(&catalog, &name, "*", range))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    let (lines, mut received) = tokio::sync::mpsc::channel::<Bytes>(32);
    tokio::task::spawn_blocking(move || {
        let mut chunk: Vec<u8> = Vec::with_capacity(256 * 1024);
        let outcome = crate::index::scan::in_time_order(&catalog, &name, range, |line| {
            let row = json!({
                "timestamp": format_rfc3339(line.timestamp),
                "host": line.host,
                "source": line.source,
                "raw": line.raw,
            });
            serde_json::to_writer(&mut chunk, &row)?;
            chunk.push(b'\n');
            if chunk.len() >= 192 * 1024 {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(256 * 1024));
                return Ok(lines.blocking_send(Bytes::from(full)).is_ok());
            }
            Ok(true)
        });
        match outcome {
            Ok(_) if !chunk.is_empty() => {
                let _ = lines.blocking_send(Bytes::from(chunk));
            }
            Ok(_) => {}
            // The body is already under way: cut it short so the client
            // sees a truncated stream, not a complete-looking export.
            Err(e) => tracing::error!(error = %format!("{e:#}"), "export failed"),
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        received
            .poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                HeaderName::from_static("x-nightowl-total"),
                counted.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /api/v1/index/compact`: compacts every partition the caller
/// administers (every tenant's for the operator token), answering one
/// NDJSON line per partition rewritten, then `{"done": summary}` (or
/// `{"error": ...}`) once the last one is swapped in. A client that hangs
/// up does not stop it.
pub async fn compact_index(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let compactor = state.compactor.clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node does not compact its index".into(),
        )
    })?;
    let principal = caller.0.clone();
    let reports = compactor
        .compact(move |tenant| principal.administers(tenant))
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    let (lines, mut received) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        use crate::index::compact::Progress;
        for progress in reports.iter() {
            let (row, last) = match progress {
                Progress::Partition(p) => (json!({ "partition": p }), false),
                Progress::Done(summary) => (json!({ "done": summary }), true),
                Progress::Failed(error) => (json!({ "error": error }), true),
            };
            let mut line = row.to_string().into_bytes();
            line.push(b'\n');
            if lines.blocking_send(Bytes::from(line)).is_err() || last {
                break;
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        received
            .poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A directory as the collector sees it, or `s3://BUCKET/PREFIX`.
    to: String,
    #[serde(default)]
    keep: Option<usize>,
}

/// `POST /api/v1/admin/backup` (operator token): runs a backup now and
/// streams its progress as NDJSON (`crate::backup::Event`); the last line
/// is `done` or `error`. A stream that ends without either was cut short
/// (the collector stopped): that backup has no manifest, so it does not
/// exist. The run goes on if the client goes away.
pub async fn backup(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<BackupRequest>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if !caller.0.global {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the operator token runs backups".into(),
        ));
    }
    let Some(backups) = state.backups.clone() else {
        return Err(ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "this node takes no backups: with Kafka the indexers hold the index (back up their data dirs; docs/backup.md)".into(),
        ));
    };
    if request.keep == Some(0) {
        return Err(bad_request("keep must be at least 1"));
    }
    let dest =
        crate::backup::Dest::parse(&request.to).map_err(|e| bad_request(format!("{e:#}")))?;
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = backups.run(&dest, request.keep, false, Some(events)).await;
    });
    let stream = futures::stream::poll_fn(move |cx| {
        received.poll_recv(cx).map(|event| {
            event.map(|e| {
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(line))
            })
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson".to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/v1/status`: pipeline health. The node's counters (lines,
/// connections, alerts of every tenant) are the operator's: the admin of
/// the operator token's tenant sees them. Another tenant's admin gets the
/// node's health word and its own tenant's alerts, nothing counted across
/// tenants (docs/guide-security.md).
pub async fn status(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let operator = caller.0.global || caller.0.tenant == crate::auth::DEFAULT_TENANT;
    let m = &state.metrics;
    let ms = |l: &crate::telemetry::Latency| (l.quantile_secs(0.99) * 1000.0).round();
    let received = m.lines_received.get();
    let indexed = m.lines_indexed.get();
    // Lines replayed from the WAL at startup were received before it.
    let replayed = m.lines_replayed.get();
    let mut problems: Vec<String> = Vec::new();
    if m.index_errors.get() > 0 {
        problems.push(format!("{} index errors", m.index_errors.get()));
    }
    if m.rules.last_reload_unix.get() > 0 && m.rules.last_reload_success.get() == 0 {
        problems.push("the last rule reload was rejected; the previous rules run".into());
    }
    if m.alerts.notifications_dead.get() > 0 {
        problems.push(format!(
            "{} notifications dead-lettered",
            m.alerts.notifications_dead.get()
        ));
    }
    if m.alerts.firings_dropped.get() > 0 {
        problems.push(format!(
            "{} firings dropped on the way to paging",
            m.alerts.firings_dropped.get()
        ));
    }
    let backup = state.backups.as_ref().map(|b| {
        let last = b.last_run();
        if last.ok == Some(false) {
            problems.push(format!(
                "the last backup failed: {}",
                last.error.clone().unwrap_or_default()
            ));
        }
        json!({
            "last_ok": last.ok,
            "last_id": last.id,
            "last_to": last.to,
            "last_finished": last.finished_unix.map(|t| format_rfc3339(t * 1_000_000_000)),
            "last_error": last.error,
            "last_duration_ms": last.duration_ms,
            "last_bytes": last.bytes,
            "last_bytes_copied": last.bytes_copied,
            "next": last.next_unix.map(|t| format_rfc3339(t * 1_000_000_000)),
            "runs": m.backup.runs_ok.get(),
            "failures": m.backup.runs_failed.get(),
            "missed": m.backup.missed.get(),
        })
    });
    let health = if problems.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    // Not a fault of the pipeline (health stays ok), but the first thing
    // an operator must know: alerts are listed, nobody hears of them.
    let paging = state.alerts.as_ref().map(|a| a.paging.clone());
    let notices: Vec<String> = paging
        .iter()
        .filter_map(|p| p.nobody_paged.clone())
        .collect();
    if !operator {
        // Paging is configured for the node, but a tenant admin already
        // sees it on `GET /api/v1/alerts`: nothing of another tenant's.
        let tenant = caller.0.tenant.clone();
        let alerts = state.alerts.as_ref().map(|service| {
            let listed = service.list(&tenant, false);
            let count = |s: &str| listed.iter().filter(|a| a.state == s).count();
            json!({
                "firing": count("firing"),
                "acked": count("acked"),
                "silenced": count("silenced"),
                "silences": service.silences(&tenant).len(),
            })
        });
        return Ok(Json(json!({
            "scope": "tenant",
            "tenant": tenant,
            "health": health,
            "notices": notices,
            "version": env!("CARGO_PKG_VERSION"),
            "alerts": alerts,
        })));
    }
    Ok(Json(json!({
        "scope": "node",
        "backup": backup,
        "health": health,
        "problems": problems,
        "notices": notices,
        "version": env!("CARGO_PKG_VERSION"),
        "ingest": {
            "connections": m.connections_active.get(),
            "lines_received": received,
            "lines_indexed": indexed,
            "lines_replayed": replayed,
            "lines_waiting": received.saturating_sub(indexed.saturating_sub(replayed)),
            "ack_p99_ms": ms(&m.ingest_to_ack),
            "searchable_p99_ms": ms(&m.ingest_to_searchable),
            "wal_sync_p99_ms": ms(&m.wal_sync_latency),
        },
        "index": {
            "commits": m.index_commits.get(),
            "errors": m.index_errors.get(),
            "unparsed_lines": m.lines_unparsed.get(),
            "lines_past_retention": m.lines_past_retention.get(),
            "memory_budget_bytes": m.index_memory_budget.get(),
            "memory_reserved_bytes": m.index_memory_reserved.get(),
            "writers_open": m.index_writers_open.get(),
            "writers_evicted": m.index_writers_evicted.get(),
        },
        "rules": {
            "loaded": m.rules.loaded.get(),
            "firings": m.rule_firings.get(),
            // No reload yet: the rules the node started with loaded, or
            // it would not have started.
            "last_reload_success": m.rules.last_reload_unix.get() == 0
                || m.rules.last_reload_success.get() != 0,
            "keys_evicted": m.rules.keys_evicted.get(),
            "lines_too_late": m.rules.lines_too_late.total(),
            "sources_behind": m.rules.sources_behind.get(),
            "source_lag_max_s": m.rules.source_lag_max_secs.get(),
        },
        "alerts": {
            "firing": m.alerts.firing.get(),
            "outbox_depth": m.alerts.outbox_depth.get(),
            "sent": m.alerts.notifications_sent.get(),
            "failed_attempts": m.alerts.notifications_failed.get(),
            "dead_letters": m.alerts.notifications_dead.get(),
            "delivery_p99_ms": ms(&m.alerts.delivery_latency),
            "receivers": paging.as_ref().map(|p| p.receivers),
            "paging": match &paging {
                None => "alerting is not running on this node",
                Some(p) if p.nobody_paged.is_some() => "nobody",
                Some(_) => "yes",
            },
        },
    })))
}
