//! The Elasticsearch-compatible surface: what the official clients and
//! the shippers built on them (Filebeat, Logstash, Vector, Fluent Bit,
//! syslog-ng's `elasticsearch-http()`, rsyslog's `omelasticsearch`, the
//! OpenTelemetry Collector's `elasticsearch` exporter) call before and
//! while they ship, at the root of the HTTPS port (docs/shippers.md).
//!
//! Why the root and not a prefix (Quickwit serves `/api/v1/_elastic`):
//! `_bulk` has been at the root since the first release, every shipper's
//! default path is the root, and the official clients take a bare host.
//! The only overlap is `GET /`, which is also the web page: a request
//! whose `Accept` names `text/html` (every browser navigation), or that
//! names no JSON type and carries no credentials (a person's `curl`),
//! gets the page; any other (the clients ask for `application/json` or
//! `application/vnd.elasticsearch+json`, or send their credentials with
//! every request) gets the cluster info, as Elasticsearch answers it.
//!
//! Every answer of the surface carries `X-Elastic-Product: Elasticsearch`
//! (elasticsearch-py 8, Logstash and the Beats refuse a server without
//! it), and errors come in Elasticsearch's shape (`error.type`,
//! `error.reason`, `status`), so the clients report them legibly. The
//! setup calls (index templates, ILM policies, ingest pipelines, data
//! streams, aliases) are acknowledged and not kept: nightowl's schema is
//! fixed and retention is `[index] retention_days`. A `GET` of one of
//! those answers that it exists, so Filebeat and Logstash skip the upload.
//! Every route needs a valid token (any role), as Elasticsearch with
//! security on does: a misconfigured shipper fails at its handshake, with
//! a 401, instead of at its first batch.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ingest, web, ApiError, ApiState, Caller};

/// The version reported to clients. Beats refuse a server older than
/// themselves (unless `output.elasticsearch.allow_older_versions: true`),
/// Vector and Logstash pick their request format by its major: the last
/// 8.x line, which every 8.x client accepts (docs/shippers.md).
pub const VERSION: &str = "8.19.0";
const LUCENE_VERSION: &str = "9.12.2";
const CLUSTER_NAME: &str = "nightowl";

pub fn routes(state: &ApiState) -> Router<ApiState> {
    let bulk_limit = axum::extract::DefaultBodyLimit::max(super::bulk_limit(state));
    let bulk = || post(ingest::bulk).put(ingest::bulk).layer(bulk_limit);
    let document = || post(ingest::document).put(ingest::document);
    Router::new()
        .route("/_bulk", bulk())
        .route("/{index}/_bulk", bulk())
        .route("/{index}/_doc", post(ingest::document))
        .route("/{index}/_doc/{id}", document())
        .route("/{index}/_create/{id}", document())
        .route("/_cluster/health", get(cluster_health))
        .route("/_cluster/health/{index}", get(cluster_health))
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route("/_nodes", get(nodes))
        .route("/_nodes/{*filter}", get(nodes))
        .route("/_index_template/{name}", setup("index_templates"))
        .route("/_component_template/{name}", setup("component_templates"))
        .route("/_template/{name}", setup("template"))
        .route("/_ilm/policy/{name}", setup("policy"))
        .route("/_ingest/pipeline/{name}", setup("pipeline"))
        .route("/_data_stream/{name}", setup("data_streams"))
        .route("/_alias/{name}", setup("alias"))
        .route("/_search", get(no_search).post(no_search))
        .route("/{index}/_search", get(no_search).post(no_search))
        // Inside `product`: what axum refuses on its own (a body over
        // `max_bulk_bytes`) becomes JSON naming the limit, then takes
        // Elasticsearch's shape with the limit kept.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::errors::json_errors,
        ))
        .layer(axum::middleware::from_fn(product))
}

/// `_search`: this surface takes logs in; a client pointed here to search
/// (Kibana, Grafana's Elasticsearch source, a script) is told where search
/// is, in the shape its client reads, not with a bare 404.
async fn no_search() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "nightowl takes logs in through the Elasticsearch API (_bulk) but does not \
                      serve its search: use GET /api/v1/search?q=... (docs/guide-ops.md) or \
                      `nightowl search`"
        })),
    )
        .into_response()
}

/// `GET /` (and `HEAD /`): the web page for browsers, the cluster info
/// for everyone else.
pub async fn root(
    State(state): State<ApiState>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let names = |what: &str| accept.iter().any(|v| v.contains(what));
    // A browser names text/html; a client names JSON, or at least sends
    // its credentials (Beats and Logstash may send no Accept at all); a
    // bare `curl https://host:7443/` by a person gets the page.
    let wants_html =
        names("text/html") || (!names("json") && !headers.contains_key(header::AUTHORIZATION));
    if wants_html {
        return web::index().await;
    }
    let response = match caller {
        Ok(_) => Json(info(&state)).into_response(),
        Err(e) => e.into_response(),
    };
    as_elasticsearch(response).await
}

fn info(state: &ApiState) -> Value {
    json!({
        "name": CLUSTER_NAME,
        "cluster_name": CLUSTER_NAME,
        "cluster_uuid": cluster_uuid(state),
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": concat!("nightowl-", env!("CARGO_PKG_VERSION")),
            "build_date": "2025-01-01T00:00:00.000000000Z",
            "build_snapshot": false,
            "lucene_version": LUCENE_VERSION,
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    })
}

/// Stable per index directory, so monitoring that keys on it (Beats,
/// Logstash) sees one cluster across restarts.
fn cluster_uuid(state: &ApiState) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(state.catalog.root().to_string_lossy().as_bytes());
    hex::encode(&digest[..11])
}

async fn cluster_health(_caller: Caller) -> Json<Value> {
    Json(json!({
        "cluster_name": CLUSTER_NAME,
        "status": "green",
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": 1,
        "active_shards": 1,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    }))
}

/// A basic, active licence: Beats and Logstash check that the server is
/// not the OSS distribution before they ship.
fn license_body() -> Value {
    json!({
        "uid": "00000000-0000-0000-0000-000000000000",
        "type": "basic",
        "mode": "basic",
        "status": "active",
        "issue_date": "2025-01-01T00:00:00.000Z",
        "issue_date_in_millis": 1_735_689_600_000u64,
        "max_nodes": 1000,
        "max_resource_units": null,
        "issued_to": CLUSTER_NAME,
        "issuer": "elasticsearch",
        "start_date_in_millis": -1,
    })
}

async fn license(_caller: Caller) -> Json<Value> {
    Json(json!({ "license": license_body() }))
}

async fn xpack(_caller: Caller) -> Json<Value> {
    let feature = json!({ "available": true, "enabled": true });
    Json(json!({
        "build": { "hash": concat!("nightowl-", env!("CARGO_PKG_VERSION")), "date": "2025-01-01T00:00:00.000Z" },
        "license": license_body(),
        "features": { "ilm": feature.clone(), "data_streams": feature },
        "tagline": "You know, for X",
    }))
}

async fn nodes(_caller: Caller, headers: HeaderMap) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    Json(json!({
        "_nodes": { "total": 1, "successful": 1, "failed": 0 },
        "cluster_name": CLUSTER_NAME,
        "nodes": {
            "nightowl": {
                "name": CLUSTER_NAME,
                "version": VERSION,
                "roles": ["data", "ingest", "master"],
                "http": { "publish_address": host },
                "ingest": { "processors": [] },
            }
        }
    }))
}

/// The setup calls (`kind` names the list or object Elasticsearch answers
/// a `GET` with): writes are acknowledged, reads say the named thing
/// exists.
fn setup(kind: &'static str) -> MethodRouter<ApiState> {
    any(
        move |_caller: Caller, method: Method, Path(name): Path<String>| async move {
            if method == Method::GET || method == Method::HEAD {
                Json(existing(kind, &name)).into_response()
            } else {
                Json(json!({ "acknowledged": true })).into_response()
            }
        },
    )
}

fn existing(kind: &str, name: &str) -> Value {
    match kind {
        "index_templates" => json!({ "index_templates": [{
            "name": name,
            "index_template": { "index_patterns": [format!("{name}*")], "composed_of": [], "data_stream": {} },
        }]}),
        "component_templates" => json!({ "component_templates": [{
            "name": name, "component_template": { "template": {} },
        }]}),
        "data_streams" => json!({ "data_streams": [{
            "name": name, "timestamp_field": { "name": "@timestamp" }, "status": "GREEN",
            "template": name, "indices": [],
        }]}),
        "policy" => json!({ name: {
            "version": 1, "modified_date": "2025-01-01T00:00:00.000Z",
            "policy": { "phases": { "hot": { "min_age": "0ms", "actions": {} } } },
        }}),
        "alias" => json!({ name: { "aliases": { name: {} } } }),
        "pipeline" => {
            json!({ name: { "description": "accepted by nightowl, not run", "processors": [] } })
        }
        _ => {
            json!({ name: { "index_patterns": [format!("{name}*")], "order": 0, "settings": {}, "mappings": {} } })
        }
    }
}

/// The layer over the surface.
async fn product(request: Request, next: Next) -> Response {
    as_elasticsearch(next.run(request).await).await
}

/// Adds the product header and, on an error, rewrites nightowl's
/// `{"error": "..."}` into Elasticsearch's shape, keeping the status and
/// any `Retry-After`.
pub async fn as_elasticsearch(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    let status = parts.status;
    if !(status.is_client_error() || status.is_server_error()) {
        return Response::from_parts(parts, body);
    }
    // Error bodies are small JSON objects built by this process.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let ours: Option<Value> = serde_json::from_slice(&bytes).ok();
    let reason = match ours.as_ref().map(|v| &v["error"]) {
        Some(Value::String(reason)) => reason.clone(),
        Some(Value::Object(_)) => return Response::from_parts(parts, Body::from(bytes)),
        _ => String::from_utf8_lossy(&bytes).trim().to_string(),
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "security_exception",
        StatusCode::TOO_MANY_REQUESTS => "es_rejected_execution_exception",
        StatusCode::PAYLOAD_TOO_LARGE => "content_too_long_exception",
        StatusCode::NOT_FOUND => "resource_not_found_exception",
        s if s.is_server_error() => "unavailable_shards_exception",
        _ => "illegal_argument_exception",
    };
    if status == StatusCode::UNAUTHORIZED {
        parts.headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"nightowl\""),
        );
        parts.headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"nightowl\" charset=\"UTF-8\""),
        );
    }
    let cause = json!({ "type": kind, "reason": reason });
    let mut body = json!({
        "error": { "root_cause": [cause.clone()], "type": kind, "reason": reason },
        "status": status.as_u16(),
    });
    // A body over its limit names the setting (`errors::json_errors`).
    for key in ["limit", "limit_bytes"] {
        if let Some(value) = ours.as_ref().and_then(|v| v.get(key)) {
            body[key] = value.clone();
        }
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}
