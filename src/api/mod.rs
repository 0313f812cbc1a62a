//! The HTTPS API: search, count, aggregations, metrics and health.
//!
//! Every `/api/` route needs a bearer token; the tenant searched is the
//! token's tenant, never a request parameter. `/healthz` and `/metrics`
//! carry no customer data and stay open for probes and scrapers.

mod admin;
mod alerts;
mod audit;
mod backtest;
pub mod client;
mod elastic;
mod errors;
pub mod fanout;
mod ingest;
pub mod limits;
mod otlp;
mod web;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Principal, Role, TokenStore};
use crate::detect::RecentFirings;
use crate::index::search::{self, Budget, SearchError, TimeRange};
use crate::index::Catalog;
use crate::telemetry::Metrics;
use crate::time::{now_nanos, parse_duration, parse_instant};

#[derive(Clone)]
pub struct ApiState {
    pub catalog: Arc<Catalog>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<Metrics>,
    /// Recent detection firings, until the alert stage takes them over.
    pub firings: Arc<RecentFirings>,
    /// The alert stage (alerts, acks, silences); None when not running.
    pub alerts: Option<Arc<crate::alert::service::AlertService>>,
    /// The live rule set and its last reload, for `GET /api/v1/rules`.
    pub rules: Arc<crate::detect::reload::RulesStatus>,
    /// Every request is recorded here before its response leaves.
    pub audit: Arc<crate::audit::AuditLog>,
    /// `_bulk` and NDJSON ingest; `None` on nodes that do not ingest.
    pub bulk: Option<Arc<crate::ingest::BulkIngest>>,
    /// Peers searched along with this node (`[cluster] peers`); `None`
    /// answers from the local index only (docs/fanout.md).
    pub cluster: Option<Arc<fanout::Peers>>,
    /// Rate, concurrency, body, connection and query limits
    /// (docs/limits.md).
    pub limits: Arc<limits::ApiLimits>,
    /// Index compaction (`index/compact.rs`); `None` on nodes without an
    /// index writer of their own.
    pub compactor: Option<Arc<crate::index::compact::Compactor>>,
    /// Masks secrets in what the audit log records of a request (a token
    /// in a query string, a card number typed into a search): the
    /// collector's `[redact]` rules, applied even with `enabled = false`,
    /// which is about stored log lines.
    pub redactor: Arc<crate::redact::Redactor>,
    /// Refused ingest (`_bulk` without a valid agent token), aggregated
    /// into the audit log.
    pub refusals: Arc<crate::refusals::Refusals>,
    /// Backups (`POST /api/v1/admin/backup`); `None` on Kafka indexers.
    pub backups: Option<Arc<crate::backup::Backups>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(elastic::root))
        .route("/ui/app.js", get(web::script))
        .route("/ui/style.css", get(web::style))
        .route("/metrics", get(metrics))
        .route("/api/v1/search", get(search_handler))
        .route("/api/v1/count", get(count_handler))
        .route("/api/v1/histogram", get(histogram_handler))
        .route("/api/v1/top", get(top_handler))
        .route("/api/v1/patterns", get(patterns_handler))
        .route("/api/v1/firings", get(firings_handler))
        .route("/api/v1/whoami", get(whoami_handler))
        .route("/api/v1/rules", get(rules_handler))
        .route(
            "/api/v1/rules/backtest",
            axum::routing::post(backtest::handler),
        )
        .route(
            "/api/v1/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/api/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(admin::revoke_token),
        )
        .route(
            "/api/v1/tenants/{name}/purge",
            axum::routing::post(admin::purge_tenant),
        )
        .route("/api/v1/tenants/{name}/export", get(admin::export_tenant))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/status", get(admin::status))
        .route("/api/v1/admin/backup", axum::routing::post(admin::backup))
        .route(
            "/api/v1/index/compact",
            axum::routing::post(admin::compact_index),
        )
        .route(
            "/api/v1/ingest",
            axum::routing::post(ingest::ndjson)
                .layer(axum::extract::DefaultBodyLimit::max(bulk_limit(&state))),
        )
        .route(
            "/v1/logs",
            axum::routing::post(otlp::logs)
                .layer(axum::extract::DefaultBodyLimit::max(bulk_limit(&state))),
        )
        .merge(elastic::routes(&state))
        .merge(alerts::routes())
        // Ingest routes set their own, larger cap; the inner one wins.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.config.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        // Inside the audit layer: it reads refusals' reasons from `error`.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            errors::json_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .with_state(state)
}

fn bulk_limit(state: &ApiState) -> usize {
    state.bulk.as_ref().map_or(0, |b| b.max_body_bytes)
}

/// Serves HTTPS until the task is dropped.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: ApiState) {
    let limits = Arc::clone(&state.limits);
    let metrics = Arc::clone(&state.metrics);
    let app = router(state);
    // Connections live in this set, so dropping the task closes them all:
    // their state holds the ingest queue open, which must close on shutdown.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // Over a connection cap the connection is closed at once: a flood
        // from one address (or from everyone) cannot take every socket.
        let Some(slot) = limits.open_connection(peer.ip()) else {
            metrics.api_limited.add("connections", 1);
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let header_read_timeout = limits.header_read_timeout();
        // The peer's address travels with each request: token IP
        // allowlists and the audit trail need it.
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(PeerAddr(peer.ip()))));
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "api TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // HTTP/1.1 only (the API's ALPN): no preface sniffing, so the
            // header timeout runs from the first byte awaited, and it also
            // closes keep-alive connections idle that long (slowloris).
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "api connection ended with error");
            }
        });
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": &self.1 }))).into_response();
        response.extensions_mut().insert(errors::Reason(self.1));
        response
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::BadQuery(msg) => {
                ApiError(StatusCode::BAD_REQUEST, format!("bad query: {msg}"))
            }
            SearchError::TooLarge(msg) => ApiError(StatusCode::BAD_REQUEST, msg),
            SearchError::Timeout { .. } | SearchError::Cancelled => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            SearchError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "search failed");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "search failed; see the collector log".into(),
                )
            }
        }
    }
}

/// The caller, from `Authorization: Bearer <token>` (or HTTP Basic with
/// the token as the password, for shippers that only speak Basic).
pub struct Caller(pub Principal);

/// The token of an `Authorization` header value.
pub fn token_of(authorization: &str) -> Option<String> {
    use base64::Engine as _;
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// The client address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::IpAddr);

/// The client address of `request`, and its caller when the
/// `Authorization` header holds a token valid from there (else `None`, not
/// a refusal): for the layers that run before the [`Caller`] extractor.
pub(crate) fn identify(
    state: &ApiState,
    request: &axum::extract::Request,
) -> (Option<std::net::IpAddr>, Option<Principal>) {
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
    let principal = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_of)
        .and_then(|token| state.tokens.authenticate_from(&token, peer));
    (peer, principal)
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state.metrics.api_requests.inc();
        // Already authenticated by the limits layer.
        if let Some(limits::Authenticated(principal)) = parts.extensions.get() {
            return Ok(Caller(principal.clone()));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_of)
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
        let principal = state
            .tokens
            .check(&token, parts.extensions.get::<PeerAddr>().map(|p| p.0))
            .map_err(|refusal| ApiError(StatusCode::UNAUTHORIZED, refusal.to_string()))?;
        Ok(Caller(principal))
    }
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not do this: it needs {}",
                    self.0.role.token_phrase(),
                    if role == Role::Admin {
                        "an admin token".to_string()
                    } else {
                        format!("the {} role (or admin)", role.name())
                    }
                ),
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    interval: Option<String>,
    field: Option<String>,
    /// This node's shard only: no fan-out to `[cluster] peers` (what the
    /// fan-out itself sends to peers).
    #[serde(default)]
    local: bool,
}

impl SearchParams {
    /// Unbounded by default: a search without `since` covers all history.
    fn range(&self, default_since: Option<i64>) -> Result<TimeRange, ApiError> {
        let now = now_nanos();
        let bad = |what: &str, e: anyhow::Error| {
            ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
        };
        let since = match &self.since {
            Some(s) => parse_instant(s, now).map_err(|e| bad("since", e))?,
            None => default_since.map_or(i64::MIN / 2, |ago| now - ago),
        };
        let until = match &self.until {
            Some(s) => parse_instant(s, now).map_err(|e| bad("until", e))?,
            None => i64::MAX / 2,
        };
        if since >= until {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "since must be before until".into(),
            ));
        }
        Ok(TimeRange { since, until })
    }
}

/// Runs a search of the caller's tenant on the blocking pool, within the
/// configured query limits and deadline. The tenant comes from the token
/// and from nowhere else.
async fn search_as_viewer<T: Send + 'static>(
    state: &ApiState,
    caller: &Caller,
    f: impl FnOnce(&Catalog, &str, &Budget) -> Result<T, SearchError> + Send + 'static,
) -> Result<T, ApiError> {
    caller.require(Role::Viewer)?;
    let catalog = Arc::clone(&state.catalog);
    let tenant = caller.0.tenant.clone();
    let started = Instant::now();
    let budget = Budget::new(state.limits.query);
    // A client that hangs up drops this future, and with it this guard:
    // the blocking search stops at its next check instead of running on.
    let _cancel = budget.cancel_on_drop();
    let result = tokio::task::spawn_blocking(move || f(&catalog, &tenant, &budget))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("search task failed: {e}"),
            )
        })?;
    state.metrics.search_latency.record(started.elapsed());
    match &result {
        Err(SearchError::TooLarge(_)) => state.metrics.api_limited.add("query_shape", 1),
        Err(SearchError::Timeout { .. }) => state.metrics.api_limited.add("query_timeout", 1),
        _ => {}
    }
    Ok(result?)
}

/// What peers are sent: the query and the range resolved to instants, so
/// every shard covers the same time.
fn peer_params(params: &SearchParams, range: TimeRange) -> Vec<(&'static str, String)> {
    let mut out = vec![("q", params.q.clone())];
    if params.since.is_some() {
        out.push(("since", crate::time::format_rfc3339(range.since)));
    }
    if params.until.is_some() {
        out.push(("until", crate::time::format_rfc3339(range.until)));
    }
    out
}

async fn search_handler(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let range = params.range(None)?;
    let limit = limits::checked(&state, |q| q.check_hits(params.limit.unwrap_or(100)))?;
    let mut peer = peer_params(&params, range);
    peer.push(("limit", limit.to_string()));
    let ask = fanout::Ask::new(&state, &caller, &headers, params.local);
    let local = async {
        let hits = search_as_viewer(&state, &caller, move |catalog, tenant, budget| {
            search::search_within(catalog, tenant, &params.q, range, limit, budget)
        })
        .await?;
        Ok(json!({ "hits": hits }))
    };
    ask.respond(
        "/api/v1/search",
        &peer,
        fanout::Merge::Hits { limit },
        local,
    )
    .await
}

async fn count_handler(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let range = params.range(None)?;
    let peer = peer_params(&params, range);
    let ask = fanout::Ask::new(&state, &caller, &headers, params.local);
    let local = async {
        let count = search_as_viewer(&state, &caller, move |catalog, tenant, budget| {
            search::count_within(catalog, tenant, &params.q, range, budget)
        })
        .await?;
        Ok(json!({ "count": count }))
    };
    ask.respond("/api/v1/count", &peer, fanout::Merge::Count, local)
        .await
}

async fn histogram_handler(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (range, interval_secs) = bucketed_range(&params)?;
    let peer = bucketed_peer_params(&params.q, range, interval_secs);
    let ask = fanout::Ask::new(&state, &caller, &headers, params.local);
    let local = async {
        let buckets = search_as_viewer(&state, &caller, move |catalog, tenant, budget| {
            search::histogram_within(catalog, tenant, &params.q, range, interval_secs, budget)
        })
        .await?;
        Ok(json!({ "interval_secs": interval_secs, "buckets": buckets }))
    };
    ask.respond("/api/v1/histogram", &peer, fanout::Merge::Histogram, local)
        .await
}

/// The top log patterns of the matching lines (`src/patterns/`): id,
/// template, lines, and lines per interval over the range (default: the
/// last day, about 60 intervals), over every node with `[cluster] peers`.
async fn patterns_handler(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (range, interval_secs) = bucketed_range(&params)?;
    let limit = limits::checked(&state, |q| q.check_top(params.limit.unwrap_or(20)))?;
    let shard_limit = fanout::top_limit_per_shard(&state, params.local, limit);
    let mut peer = bucketed_peer_params(&params.q, range, interval_secs);
    peer.push(("limit", shard_limit.to_string()));
    let ask = fanout::Ask::new(&state, &caller, &headers, params.local);
    let local = local_patterns(
        &state,
        &caller,
        params.q.clone(),
        range,
        interval_secs,
        shard_limit,
    );
    ask.respond(
        "/api/v1/patterns",
        &peer,
        fanout::Merge::Patterns { limit },
        local,
    )
    .await
}

/// This node's answer to `GET /api/v1/patterns`.
async fn local_patterns(
    state: &ApiState,
    caller: &Caller,
    q: String,
    range: TimeRange,
    interval_secs: u64,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let tenant = caller.0.tenant.clone();
    let counts = search_as_viewer(state, caller, move |catalog, tenant, budget| {
        search::pattern_counts_within(catalog, tenant, &q, range, interval_secs, limit, budget)
    })
    .await?;
    let patterns: Vec<serde_json::Value> = counts
        .into_iter()
        .map(|p| {
            let template = state.catalog.pattern_templates.get(&tenant, &p.id);
            let new_since = fanout::new_since(&p.series, range.since, interval_secs);
            json!({
                "new_since": new_since,
                "id": p.id,
                "template": template,
                "count": p.count,
                "series": p.series,
                "query": format!("pattern:{}", p.id),
            })
        })
        .collect();
    Ok(json!({
        "since": crate::time::format_rfc3339(range.since),
        "until": crate::time::format_rfc3339(range.until),
        "interval_secs": interval_secs,
        "patterns": patterns,
    }))
}

/// The range of a bucketed answer (histogram, pattern series): the
/// request's (default the last day) ending now at the latest, and its
/// interval (`interval`, else about 60 buckets).
fn bucketed_range(params: &SearchParams) -> Result<(TimeRange, u64), ApiError> {
    let day = 86_400 * 1_000_000_000;
    let range = params.range(Some(day))?;
    let until = range.until.min(now_nanos());
    let interval_secs = match &params.interval {
        Some(text) => {
            parse_duration(text)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("interval: {e}")))?
                / 1_000_000_000
        }
        None => auto_interval_secs(until.saturating_sub(range.since)),
    }
    .max(1) as u64;
    let range = TimeRange {
        since: range.since,
        until: until.max(range.since + 1),
    };
    Ok((range, interval_secs))
}

/// What peers are asked for a bucketed answer: this node's resolved range
/// and interval, so their buckets start where ours do, whatever their
/// clocks say.
fn bucketed_peer_params(
    q: &str,
    range: TimeRange,
    interval_secs: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("q", q.to_string()),
        ("since", crate::time::format_rfc3339(range.since)),
        ("until", crate::time::format_rfc3339(range.until)),
        ("interval", format!("{interval_secs}s")),
    ]
}

/// About 60 buckets, on a round interval.
fn auto_interval_secs(span_nanos: i64) -> i64 {
    let target = (span_nanos / 1_000_000_000 / 60).max(1);
    const STEPS: [i64; 12] = [
        1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10_800, 21_600, 86_400,
    ];
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= target)
        .unwrap_or(86_400)
}

async fn top_handler(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let range = params.range(None)?;
    let field = params
        .field
        .clone()
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "field is required".into()))?;
    let limit = limits::checked(&state, |q| q.check_top(params.limit.unwrap_or(10)))?;
    // Each shard returns more than asked when merging, then the merged
    // ranking is cut to `limit`.
    let shard_limit = fanout::top_limit_per_shard(&state, params.local, limit);
    let mut peer = peer_params(&params, range);
    peer.push(("field", field.clone()));
    peer.push(("limit", shard_limit.to_string()));
    let ask = fanout::Ask::new(&state, &caller, &headers, params.local);
    let field_name = field.clone();
    let local = async {
        let values = search_as_viewer(&state, &caller, move |catalog, tenant, budget| {
            search::top_values_within(
                catalog,
                tenant,
                &params.q,
                range,
                &field_name,
                shard_limit,
                budget,
            )
        })
        .await?;
        let mut answer = json!({ "field": field, "values": values.values });
        if let Some(lines) = values.sampled_lines {
            answer["sampled_lines"] = json!(lines);
        }
        Ok(answer)
    };
    ask.respond("/api/v1/top", &peer, fanout::Merge::Top { limit }, local)
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiringParams {
    limit: Option<usize>,
}

/// The caller's own token: tenant, role, id. The web page uses it to offer
/// only what the token may do (a viewer sees Ack and Silence disabled).
async fn whoami_handler(caller: Caller) -> Json<serde_json::Value> {
    let p = &caller.0;
    Json(json!({
        "token_id": p.token_id,
        "tenant": p.tenant,
        "role": p.role,
        "operator": p.global,
    }))
}

/// The newest detection firings of the caller's tenant.
async fn firings_handler(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<FiringParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = params.limit.unwrap_or(100).min(1000);
    let firings = state.firings.of_tenant(&caller.0.tenant, limit);
    Ok(Json(json!({ "firings": firings })))
}

/// The loaded detection rules (id, title, severity, kind, source file) and
/// the last reload's outcome. Rules are global, so every tenant sees them.
async fn rules_handler(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.rules.to_json()))
}
