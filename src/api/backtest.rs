//! `POST /api/v1/rules/backtest`: replays rules sent as YAML over the
//! caller's tenant's history.
//!
//! A backtest over days of lines takes a while, so the answer streams as
//! NDJSON: `{"progress":{"scanned":N,"total":M}}` lines, then one
//! `{"report":{...}}` (or `{"error":"..."}` if it failed midway). Bad rules
//! or a bad time range are refused up front with 400 and `file:line`
//! errors. If the client goes away the replay stops.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Caller};
use crate::auth::Role;
use crate::detect::cli::load_engine_from_text;
use crate::index::backtest::{self, Cancelled};
use crate::index::search::TimeRange;
use crate::time::{now_nanos, parse_instant};

/// Replays over the last week unless told otherwise, like the CLI.
const DEFAULT_SINCE: &str = "7d";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// The rule file's YAML (native or Sigma; one or more documents).
    rules: String,
    /// The file name errors should point at. Default `rules.yaml`.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

pub async fn handler(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<BacktestRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::RuleEditor)?;
    let now = now_nanos();
    let instant = |what: &str, text: &str| {
        parse_instant(text, now)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
    };
    let since = instant("since", request.since.as_deref().unwrap_or(DEFAULT_SINCE))?;
    let until = match &request.until {
        Some(text) => instant("until", text)?,
        None => now,
    };
    if since >= until {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "since must be before until".into(),
        ));
    }
    let name = request.name.as_deref().unwrap_or("rules.yaml");
    let engine = load_engine_from_text(name, &request.rules)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    if engine.rule_count() == 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name}: no rules to backtest"),
        ));
    }
    tracing::info!(
        tenant = %caller.0.tenant,
        token = %caller.0.token_id,
        rules = engine.rule_count(),
        "backtest started"
    );

    let (lines, mut received) = tokio::sync::mpsc::channel::<Bytes>(16);
    let catalog = std::sync::Arc::clone(&state.catalog);
    let tenant = caller.0.tenant.clone();
    tokio::task::spawn_blocking(move || {
        let range = TimeRange { since, until };
        let progress_lines = lines.clone();
        let outcome = backtest::run(&catalog, &tenant, engine, range, |progress| {
            progress_lines
                .blocking_send(ndjson(&json!({ "progress": progress })))
                .is_ok()
        });
        let last = match outcome {
            Ok(report) => json!({ "report": report }),
            Err(e) if e.is::<Cancelled>() => return,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "backtest failed");
                json!({ "error": format!("{e:#}") })
            }
        };
        let _ = lines.blocking_send(ndjson(&last));
    });
    let stream = futures::stream::poll_fn(move |cx| {
        received
            .poll_recv(cx)
            .map(|line| line.map(Ok::<_, Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}
