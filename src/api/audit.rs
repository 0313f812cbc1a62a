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

use super::{ApiError, ApiState, Caller, PeerAddr};
use crate::audit::{Record, MAX_BODY};
use crate::auth::Role;

/// Bodies up to this size are buffered so their start can be recorded;
/// bigger ones (bulk ingest) pass through and are recorded by size.
const BUFFERED_BODY: u64 = 64 * 1024;

pub async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    // Health, metrics and the page's static files hold no customer data;
    // ingest is not an access to data (agent batches are not audited
    // either) and comes at line rate.
    if path == "/healthz"
        || path == "/metrics"
        || path == "/"
        || path.starts_with("/ui/")
        || super::ingest::is_ingest_path(&path)
    {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.to_string())
        .unwrap_or_default();
    let principal = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::token_of)
        .and_then(|token| {
            let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
            state.tokens.authenticate_from(&token, peer)
        });
    let query = request
        .uri()
        .query()
        .map(|q| percent_decode(q.as_bytes()))
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
                    let shown =
                        String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
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
    let response = next.run(request).await;
    let entry = Record {
        actor: principal
            .as_ref()
            .map(|p| p.token_id.clone())
            .unwrap_or_default(),
        tenant: principal
            .as_ref()
            .map(|p| p.tenant.clone())
            .unwrap_or_default(),
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
