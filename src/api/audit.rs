//! Every API request goes through [`record`] and lands in the audit log
//! (`crate::audit`) before its response leaves: who (token id, tenant,
//! role), from where, what (method, path, query, the start of the body),
//! and the outcome (status, refusals included). Health and metrics carry
//! no customer data and are not recorded.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Caller};
use crate::audit::{Record, MAX_BODY};
use crate::auth::{Principal, Role};

/// Bodies up to this size are buffered so their start can be recorded;
/// bigger ones (bulk ingest) pass through and are recorded by size.
const BUFFERED_BODY: u64 = 64 * 1024;

pub async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    // Health, metrics and the page's static files hold no customer data.
    if path == "/healthz" || path == "/metrics" || path == "/" || path.starts_with("/ui/") {
        return next.run(request).await;
    }
    // Ingest is not an access to data (agent batches are not audited
    // either) and comes at line rate: only its refusals are, aggregated.
    if super::ingest::is_ingest_path(&path) {
        return ingest_refusals(&state, request, next).await;
    }
    let (peer, principal) = super::identify(&state, &request);
    let ip = peer.map(|ip| ip.to_string()).unwrap_or_default();
    // Recorded with their secrets masked (a token in `?token=`, a card
    // number typed into a search): the audit says what was asked, not the
    // secrets in it.
    let path = mask(&state, path.as_bytes());
    let query = request
        .uri()
        .query()
        .map(|q| mask(&state, percent_decode(q.as_bytes()).as_bytes()))
        .unwrap_or_default();
    let method = request.method().to_string();
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (request, body) = match length {
        Some(n) if n > 0 && n <= BUFFERED_BODY => {
            let (parts, body) = request.into_parts();
            match axum::body::to_bytes(body, BUFFERED_BODY as usize).await {
                Ok(bytes) => {
                    // Masked whole, then cut: a secret across the cut would
                    // not be recognised in its first half.
                    let mut shown = mask(&state, &bytes);
                    if shown.len() > MAX_BODY {
                        let mut end = MAX_BODY;
                        while !shown.is_char_boundary(end) {
                            end -= 1;
                        }
                        shown.truncate(end);
                    }
                    (Request::from_parts(parts, Body::from(bytes)), shown)
                }
                Err(_) => {
                    return ApiError(StatusCode::BAD_REQUEST, "unreadable request body".into())
                        .into_response()
                }
            }
        }
        Some(n) if n > BUFFERED_BODY => (request, format!("({n} bytes)")),
        _ => (request, String::new()),
    };
    // A signed ack link is a credential (valid for a day): the entry keeps
    // who it names and what it acks, never the link itself.
    let link = path
        .strip_prefix("/ack/")
        .map(|token| crate::alert::ack::AckSigner::claims(token).unwrap_or_default());
    let (path, body) = match &link {
        Some((_, group)) => ("/ack/[signed link]".to_string(), format!("group {group}")),
        None => (path, body),
    };
    let response = next.run(request).await;
    let (actor, tenant) = match link {
        Some((tenant, _)) => ("ack-link".to_string(), tenant),
        None => Principal::ids_of(principal.as_ref()),
    };
    let entry = Record {
        actor,
        tenant,
        role: principal
            .as_ref()
            .map(|p| role_name(p.role))
            .unwrap_or_default(),
        ip,
        method,
        path,
        query,
        body,
        status: response.status().as_u16(),
    };
    let log = Arc::clone(&state.audit);
    let written = tokio::task::spawn_blocking(move || log.append(entry)).await;
    match written {
        Ok(Ok(())) => response,
        // Fail closed: an access that cannot be audited returns nothing.
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "audit log append failed");
            audit_unavailable()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit log task failed");
            audit_unavailable()
        }
    }
}

/// `text` as the audit log may keep it: every line through the
/// collector's redactor.
fn mask(state: &ApiState, text: &[u8]) -> String {
    match state.redactor.redact_batch(text) {
        Some(out) => String::from_utf8_lossy(&out.lines).into_owned(),
        None => String::from_utf8_lossy(text).into_owned(),
    }
}

/// Runs an HTTP ingest request; a refusal (no valid token, a role that
/// may not ship, a body over the limit, a rate limit) is counted into the
/// audit log through [`crate::refusals`].
async fn ingest_refusals(state: &ApiState, request: Request, next: Next) -> Response {
    let (peer, principal) = super::identify(state, &request);
    let channel = match request.uri().path() {
        "/api/v1/ingest" => "/api/v1/ingest",
        "/v1/logs" => "/v1/logs",
        path if path.ends_with("/_bulk") => "/_bulk",
        // `/{index}/_doc` and `/{index}/_create/{id}`: one document.
        _ => "/_doc",
    };
    let response = next.run(request).await;
    let status = response.status();
    if !matches!(status.as_u16(), 401 | 403 | 413 | 429) {
        return response;
    }
    // Our refusals carry their reason beside the body, whatever shape the
    // body has (OTLP answers a protobuf `Status`); what axum refused on its
    // own is a small JSON body by now (`errors::json_errors`), ours or
    // Elasticsearch's shape.
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let reason = match parts.extensions.get::<super::errors::Reason>() {
        Some(reason) => reason.0.clone(),
        None => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                [&v["error"], &v["error"]["reason"], &v["message"]]
                    .into_iter()
                    .find_map(|r| r.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| status.to_string()),
    };
    let (actor, tenant) = Principal::ids_of(principal.as_ref());
    state.refusals.note(crate::refusals::Refusal {
        channel,
        reason,
        ip: peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
        actor,
        tenant,
        status: status.as_u16(),
    });
    Response::from_parts(parts, Body::from(bytes))
}

fn audit_unavailable() -> Response {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit log cannot be written; see the collector log".into(),
    )
    .into_response()
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    limit: Option<usize>,
}

/// `GET /api/v1/audit?limit=N`: the newest entries, oldest first. The
/// operator sees every tenant's; a tenant admin its own tenant's.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Admin)?;
    let log = Arc::clone(&state.audit);
    let entries = tokio::task::spawn_blocking(move || log.entries())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let mut visible: Vec<_> = entries
        .into_iter()
        .filter(|e| caller.0.global || e.tenant == caller.0.tenant)
        .collect();
    let limit = params.limit.unwrap_or(1000).min(100_000);
    let skip = visible.len().saturating_sub(limit);
    visible.drain(..skip);
    Ok(Json(json!({ "entries": visible })))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_strings_are_decoded_for_people() {
        assert_eq!(
            percent_decode(b"q=status%3A500+AND+path%3A%2Flogin"),
            "q=status:500 AND path:/login"
        );
        assert_eq!(percent_decode(b"a=%zz&b=%4"), "a=%zz&b=%4");
    }
}
