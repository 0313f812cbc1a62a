//! `POST /v1/logs`: OpenTelemetry logs over OTLP/HTTP, protobuf or JSON,
//! gzip or not, on the HTTPS port. What the OpenTelemetry Collector's
//! `otlphttp` exporter, the SDKs' OTLP/HTTP exporters, Grafana Alloy,
//! Vector and Fluent Bit send (docs/shippers.md; gRPC is not served).
//!
//! The token (an agent token, `Authorization: Bearer`) names the tenant;
//! the records' own attributes never do. Records become JSON lines
//! (`ingest::otlp`), are redacted and made durable before the answer, like
//! every other input. The answer follows the OTLP/HTTP spec: the response
//! message in the request's encoding, `partial_success` counting the
//! records refused (too long) while the rest are stored, and on failure a
//! `google.rpc.Status` body with 400 (not to be retried), 401/403, or
//! 503 with `Retry-After` (to be retried).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ingest::{inflate, ingest_of};
use super::{ApiError, ApiState, Caller};
use crate::ingest::otlp;

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

pub async fn logs(
    State(state): State<ApiState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let encoding = if media.eq_ignore_ascii_case("application/x-protobuf") {
        Encoding::Protobuf
    } else if media.eq_ignore_ascii_case("application/json") {
        Encoding::Json
    } else {
        return failure(
            Encoding::Protobuf,
            ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {content_type:?}: send application/x-protobuf or application/json"
                ),
            ),
        );
    };
    // Refused before the handler, a body over the limit would get axum's
    // plain text: the sender gets a `Status` naming the limit instead.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let limit = state.bulk.as_ref().map_or(0, |b| b.max_body_bytes);
            let message = super::errors::too_large(length, "limits.max_bulk_bytes", limit);
            return failure(encoding, ApiError(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(rejection) => {
            return failure(
                encoding,
                ApiError(rejection.status(), rejection.body_text()),
            )
        }
    };
    match export(&state, caller, &headers, body, encoding).await {
        Ok(response) => response,
        Err(e) => failure(encoding, e),
    }
}

async fn export(
    state: &ApiState,
    caller: Result<Caller, ApiError>,
    headers: &HeaderMap,
    body: Bytes,
    encoding: Encoding,
) -> Result<Response, ApiError> {
    let caller = caller?;
    let ingest = ingest_of(state, &caller)?;
    let body = inflate(headers, body, ingest.max_body_bytes)?;
    let request = match encoding {
        Encoding::Protobuf => otlp::decode_protobuf(&body),
        Encoding::Json => otlp::decode_json(&body),
    }
    .map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad OTLP logs request: {e}"),
        )
    })?;
    let mapped = otlp::to_lines(&request, ingest.max_line_bytes);
    let agent_id = format!("otlp:{}", caller.0.token_id);
    ingest
        .append_all(&caller.0.tenant, &agent_id, mapped.batches)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let message = mapped.first_error.unwrap_or_default();
    if mapped.rejected > 0 {
        tracing::info!(tenant = %caller.0.tenant, rejected = mapped.rejected, reason = %message, "OTLP log records refused");
    }
    Ok(match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            otlp::encode_response(mapped.rejected, &message),
        )
            .into_response(),
        Encoding::Json if mapped.rejected == 0 => axum::Json(json!({})).into_response(),
        Encoding::Json => axum::Json(json!({
            "partialSuccess": {
                "rejectedLogRecords": mapped.rejected.to_string(),
                "errorMessage": message,
            }
        }))
        .into_response(),
    })
}

/// An error as OTLP/HTTP wants it: a `google.rpc.Status` in the request's
/// encoding, and `Retry-After` on the answers worth retrying.
fn failure(encoding: Encoding, e: ApiError) -> Response {
    let ApiError(status, message) = e;
    // gRPC codes, which Status carries.
    let code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::FORBIDDEN => 7,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 2,
    };
    let mut response = match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            otlp::encode_status(code, &message),
        )
            .into_response(),
        Encoding::Json => (
            status,
            axum::Json(json!({ "code": code, "message": &message })),
        )
            .into_response(),
    };
    response
        .extensions_mut()
        .insert(super::errors::Reason(message));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}
