//! Every refusal is JSON. Our handlers answer `{"error": …}` already; what
//! axum's extractors and router answer on their own (a body over its
//! limit, a query string that does not parse, an unknown route) is plain
//! text or empty, and a shipper or script reading `error` would get
//! nothing. This layer rewrites those, naming the limit for a body that is
//! too large.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiState;

/// Error bodies longer than this are not ours to pass on verbatim.
const MAX_TEXT: usize = 4096;

/// The routes whose body limit is `[limits] max_bulk_bytes` (one
/// document to `/{index}/_doc` has the API's).
pub fn has_bulk_limit(path: &str) -> bool {
    path == "/api/v1/ingest" || path == "/v1/logs" || path.ends_with("/_bulk")
}

/// Why a request was refused, carried beside the response whatever shape
/// its body has (JSON, Elasticsearch's, an OTLP protobuf `Status`): the
/// audit of refused ingest reads it.
#[derive(Debug, Clone)]
pub struct Reason(pub String);

/// What a body over its limit is told: its size when known, the limit in
/// bytes and the setting that holds it.
pub fn too_large(length: Option<u64>, limit: &str, bytes: usize) -> String {
    let size = length.map_or_else(String::new, |n| format!(" of {n} bytes"));
    format!("request body{size} is above the limit of {bytes} bytes ({limit})")
}

pub async fn json_errors(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let ingest = has_bulk_limit(request.uri().path());
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let response = next.run(request).await;
    let status = response.status();
    // JSON is ours already; OTLP answers its refusals as a protobuf
    // `Status` when the request was protobuf, as its spec wants.
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v == "application/x-protobuf");
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let body = if status == StatusCode::PAYLOAD_TOO_LARGE {
        let (limit, bytes) = if ingest {
            (
                "limits.max_bulk_bytes",
                state.bulk.as_ref().map_or(0, |b| b.max_body_bytes),
            )
        } else {
            (
                "limits.api.max_body_bytes",
                state.limits.config.max_body_bytes,
            )
        };
        json!({
            "error": too_large(length, limit, bytes),
            "limit": limit,
            "limit_bytes": bytes,
        })
    } else {
        let message = if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_lowercase()
        } else {
            text
        };
        json!({ "error": message })
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let json = Json(body).into_response().into_body();
    Response::from_parts(parts, Body::new(json))
}
