//! Alert routes of the HTTPS API, tenant-scoped by the token.
//!
//! Roles: a viewer lists alerts, silences and the outbox; acknowledging and
//! silencing change who gets paged, so they need rule-editor (or admin).
//! `/ack/{token}` needs no bearer token: the signed link is the credential,
//! scoped to one group of one tenant, and it expires. GET shows a
//! confirmation page, POST acknowledges.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState, Caller};
use crate::alert::engine::{LookupError, SilenceSpec};
use crate::alert::matcher::Matcher;
use crate::alert::service::{AlertService, LinkGroup};
use crate::auth::Role;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/outbox", get(outbox))
        .route("/ack/{token}", get(ack_confirm).post(ack_link))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "alert API failed");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "alert store failed; see the collector log".into(),
    )
}

/// The alert service, for a caller holding `role`.
fn service(state: &ApiState, caller: &Caller, role: Role) -> Result<Arc<AlertService>, ApiError> {
    caller.require(role)?;
    running(state)
}

/// The alert service for a signed ack link: no bearer token, the link is
/// the credential ([`AlertService::check_link`]).
fn link_service(state: &ApiState) -> Result<Arc<AlertService>, ApiError> {
    state.metrics.api_requests.inc();
    running(state)
}

fn running(state: &ApiState) -> Result<Arc<AlertService>, ApiError> {
    state.alerts.clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is not running on this collector".into(),
        )
    })
}

/// Who did it, as the alert store records it.
fn actor(caller: &Caller) -> String {
    format!("token:{}", caller.0.token_id)
}

/// Runs a store-touching call off the async workers (redb commits fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(|e| internal(format!("{e:#}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    all: bool,
}

async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::Viewer)?;
    let alerts = svc.list(&caller.0.tenant, params.all);
    Ok(Json(json!({ "alerts": alerts, "paging": svc.paging })))
}

async fn ack(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::RuleEditor)?;
    let tenant = caller.0.tenant.clone();
    let by = actor(&caller);
    let result = blocking(move || svc.ack(&tenant, &id, &by)).await?;
    match result {
        Ok(fp) => Ok(Json(json!({ "fingerprint": fp, "acked": true }))),
        Err(e @ LookupError::NotFound(_)) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ LookupError::Ambiguous(_)) => Err(ApiError(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// The link opens a confirmation page; only its POST acknowledges. Mail
/// scanners and link previewers fetch every URL in a message with GET, and
/// must not ack a page nobody has read.
async fn ack_confirm(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let svc = link_service(&state)?;
    Ok(match svc.link_group(&token) {
        Ok(group) => axum::response::Html(confirm_page(&group)).into_response(),
        Err(reason) => (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response(),
    })
}

/// The ack link's confirmation page: what is being acknowledged, in the
/// words of the page that carried the link (the group's labels, then each
/// alert's severity, title, key and first firing), not the group's
/// internal key.
fn confirm_page(group: &LinkGroup) -> String {
    let what = if group.labels.is_empty() {
        "these alerts".to_string()
    } else {
        group
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut items = String::new();
    for a in &group.alerts {
        items.push_str(&format!(
            "<li><b>{}</b> {} &mdash; key <code>{}</code> &mdash; {} since {} ({} firing{})</li>",
            html_escape(a.severity.as_str()),
            html_escape(&a.title),
            html_escape(&a.key),
            a.state,
            html_escape(&crate::time::format_rfc3339(a.starts_at)),
            a.firings,
            if a.firings == 1 { "" } else { "s" },
        ));
    }
    if items.is_empty() {
        items.push_str("<li>none listed any more (resolved and expired)</li>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>nightowl: acknowledge</title></head>\
         <body><h1>Acknowledge {what}?</h1><p>Tenant {tenant}. This stops the group's escalation.</p>\
         <ul>{items}</ul>\
         <form method=\"post\"><button type=\"submit\">Acknowledge</button></form></body></html>\n",
        what = html_escape(&what),
        tenant = html_escape(&group.tenant),
    )
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn ack_link(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let svc = link_service(&state)?;
    Ok(match blocking(move || svc.ack_link(&token)).await? {
        Ok((group, n)) => (
            StatusCode::OK,
            format!("acknowledged {n} alert(s) of group {group}; escalation stopped\n"),
        )
            .into_response(),
        Err(reason) => (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response(),
    })
}

async fn silences(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::Viewer)?;
    Ok(Json(json!({ "silences": svc.silences(&caller.0.tenant) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    matchers: Vec<String>,
    /// Unix nanoseconds; default now.
    starts_at: Option<i64>,
    ends_at: i64,
    #[serde(default)]
    author: String,
    comment: String,
}

async fn add_silence(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<NewSilence>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::RuleEditor)?;
    let bad = |msg: String| ApiError(StatusCode::BAD_REQUEST, msg);
    let mut matchers = Vec::new();
    for (i, m) in body.matchers.iter().enumerate() {
        matchers.push(Matcher::parse(m).map_err(|e| bad(format!("matchers[{i}]: {e:#}")))?);
    }
    if matchers.is_empty() {
        return Err(bad("matchers: at least one is required".into()));
    }
    if body.comment.trim().is_empty() {
        return Err(bad(
            "comment: say why (it is what the next on-call reads)".into()
        ));
    }
    let now = crate::time::now_nanos();
    let starts_at = body.starts_at.unwrap_or(now);
    if body.ends_at <= starts_at.max(now) {
        return Err(bad(
            "ends_at must be in the future and after starts_at".into()
        ));
    }
    let author = if body.author.trim().is_empty() {
        actor(&caller)
    } else {
        body.author
    };
    let spec = SilenceSpec {
        matchers,
        starts_at,
        ends_at: body.ends_at,
        author,
        comment: body.comment,
    };
    let tenant = caller.0.tenant.clone();
    let silence = blocking(move || svc.add_silence(&tenant, spec)).await?;
    Ok(Json(json!({ "id": silence.id, "silence": silence })))
}

async fn expire_silence(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::RuleEditor)?;
    let tenant = caller.0.tenant.clone();
    let by = actor(&caller);
    let idc = id.clone();
    if blocking(move || svc.expire_silence(&tenant, &idc, &by)).await? {
        Ok(Json(json!({ "id": id, "expired": true })))
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no silence {id:?} in this tenant"),
        ))
    }
}

async fn outbox(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let svc = service(&state, &caller, Role::Viewer)?;
    let tenant = caller.0.tenant.clone();
    let entries = blocking(move || svc.outbox_entries(&tenant)).await?;
    Ok(Json(json!({ "notifications": entries })))
}
