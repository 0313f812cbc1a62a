//! Ingest over HTTPS without our agent: the Elasticsearch `_bulk` API
//! (what Filebeat, Vector, Fluent Bit and Logstash speak) and plain NDJSON.
//!
//! The tenant is the token's. Documents become log lines: a document whose
//! `message` is a one-line log with a time of its own (Filebeat's shape
//! for an access log) is stored as that line, with `host.name` and
//! `log.file.path` as host and source (nested or dotted); a plain message
//! keeps its document's `@timestamp`, level and service as a small JSON
//! line; any other document is stored as its compact JSON and parsed as a
//! JSON line. Lines
//! are redacted before the WAL, exactly like agent batches, and the
//! response is sent only once they are durable.
//!
//! Unlike Quickwit, a bad item does not hide behind a bare `errors: true`:
//! each item gets its own status and reason, and the good ones are indexed.
//!
//! Bodies may be gzip-compressed (`Content-Encoding: gzip`, what Filebeat
//! and Logstash send by default); the inflated size counts against the
//! same `[limits] max_bulk_bytes` as a plain body.

use std::collections::HashMap;
use std::io::Read as _;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{ApiError, ApiState, Caller};
use crate::auth::Role;
use crate::ingest::{BulkIngest, Origin};

#[derive(Debug, PartialEq)]
enum Item {
    /// The line to store and its batch (one per origin of the request).
    Line(Vec<u8>, Origin),
    Failed(u16, &'static str, String),
}

/// Whether `path` is an ingest route: those come at line rate, are not an
/// access to stored data, and carry their own body limit, so the API's
/// request limits and the audit trail leave them out (agent batches are
/// not audited either; an audited body would also put log lines, not yet
/// redacted, in the audit log).
pub fn is_ingest_path(path: &str) -> bool {
    if path == "/api/v1/ingest" || path == "/v1/logs" || path.ends_with("/_bulk") {
        return true;
    }
    // `/{index}/_doc`, `/{index}/_doc/{id}`, `/{index}/_create/{id}`.
    let mut segments = path.trim_start_matches('/').split('/');
    let (_index, kind, rest) = (segments.next(), segments.next(), segments.count());
    matches!((kind, rest), (Some("_doc"), 0 | 1) | (Some("_create"), 1))
}

/// `POST|PUT /_bulk` and `POST|PUT /{index}/_bulk`.
pub async fn bulk(
    State(state): State<ApiState>,
    caller: Caller,
    index: Option<Path<String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let ingest = ingest_of(&state, &caller)?;
    let body = inflate(&headers, body, ingest.max_body_bytes)?;
    let default_index = index.map(|Path(i)| i).unwrap_or_else(|| "_bulk".into());
    let mut actions: Vec<&'static str> = Vec::new();
    let mut items: Vec<(String, Item)> = Vec::new();
    let mut lines = body
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    while let Some((at, action_line)) = lines.next() {
        // As Elasticsearch does, a bad action line refuses the request:
        // without its action, which line is a document is unknown, and
        // answering for the pair anyway put every later item off by one.
        let (action, meta) = parse_action(action_line).map_err(|reason| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "Malformed action/metadata line [{}]: {reason}; nothing was stored",
                    at + 1
                ),
            )
        })?;
        actions.push(action);
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or(&default_index)
            .to_string();
        let item = match action {
            "index" | "create" => match lines.next() {
                Some((_, doc)) => document_line(doc, &index, ingest.max_line_bytes),
                None => Item::Failed(
                    400,
                    "action_request_validation_exception",
                    "the action has no document line after it".into(),
                ),
            },
            "update" => {
                let _ = lines.next();
                Item::Failed(
                    400,
                    "illegal_argument_exception",
                    "logs are append-only: update is not supported".into(),
                )
            }
            _ => Item::Failed(
                400,
                "illegal_argument_exception",
                "logs are append-only: delete is not supported".into(),
            ),
        };
        items.push((index, item));
    }
    let stored = store(ingest, &caller, &items).await?;
    let results: Vec<Value> = items
        .iter()
        .zip(&actions)
        .zip(stored)
        .map(|(((index, item), action), id)| {
            let body = match (item, id) {
                (Item::Line(..), Some(id)) => json!({
                    "_index": index, "_id": id, "status": 201, "result": "created",
                    "_version": 1,
                }),
                (Item::Failed(status, kind, reason), _) => json!({
                    "_index": index, "status": status,
                    "error": { "type": kind, "reason": reason },
                }),
                (Item::Line(..), None) => json!({
                    "_index": index, "status": 503,
                    "error": { "type": "unavailable", "reason": "not stored" },
                }),
            };
            json!({ *action: body })
        })
        .collect();
    let errors = items.iter().any(|(_, i)| matches!(i, Item::Failed(..)));
    Ok(Json(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": results,
    })))
}

/// `POST /api/v1/ingest`: one JSON document (or one plain log line) per
/// line. Answers counts and per-line errors.
pub async fn ndjson(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let ingest = ingest_of(&state, &caller)?;
    let body = inflate(&headers, body, ingest.max_body_bytes)?;
    let items: Vec<(String, Item)> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            let item = if line.first() == Some(&b'{') {
                document_line(line, "ingest", ingest.max_line_bytes)
            } else if line.len() > ingest.max_line_bytes {
                too_long(line.len(), ingest.max_line_bytes)
            } else {
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                Item::Line(line, origin("", "ingest", "auto"))
            };
            ("ingest".to_string(), item)
        })
        .collect();
    let stored = store(ingest, &caller, &items).await?;
    let accepted = stored.iter().filter(|s| s.is_some()).count();
    let errors: Vec<Value> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (_, item))| match item {
            Item::Failed(_, _, reason) => Some(json!({ "line": i + 1, "error": reason })),
            Item::Line(..) => None,
        })
        .collect();
    Ok(Json(
        json!({ "accepted": accepted, "rejected": errors.len(), "errors": errors }),
    ))
}

/// `POST /{index}/_doc`, `PUT|POST /{index}/_doc/{id}` and
/// `/{index}/_create/{id}`: one document, as `_bulk` would store it (what
/// rsyslog's omelasticsearch sends without `bulkmode`, and the clients'
/// `index()` calls). The id is not kept: logs are looked up by search.
pub async fn document(
    State(state): State<ApiState>,
    caller: Caller,
    Path(path): Path<Vec<String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ingest = ingest_of(&state, &caller)?;
    let body = inflate(&headers, body, ingest.max_body_bytes)?;
    let index = path.first().cloned().unwrap_or_default();
    let item = document_line(body.trim_ascii(), &index, ingest.max_line_bytes);
    if let Item::Failed(status, kind, reason) = &item {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
        return Err(ApiError(status, format!("{kind}: {reason}")));
    }
    let items = [(index.clone(), item)];
    let stored = store(ingest, &caller, &items).await?;
    let id = stored.into_iter().flatten().next().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "_index": index, "_id": id, "_version": 1, "result": "created",
            "_shards": { "total": 1, "successful": 1, "failed": 0 },
            "_seq_no": 0, "_primary_term": 1,
        })),
    ))
}

/// The request body, inflated when the sender compressed it. A body
/// inflating beyond `limit` is refused like a plain one that large:
/// a few KiB of gzip must not become gigabytes in memory.
pub fn inflate(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("identity");
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    if !encoding.eq_ignore_ascii_case("gzip") && !encoding.eq_ignore_ascii_case("x-gzip") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?} is not supported; send gzip or no encoding"),
        ));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = flate2::read::MultiGzDecoder::new(&body[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(e) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the gzip body does not inflate: {e}"),
        )),
        Ok(n) if n > limit => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body inflates beyond {limit} bytes, the limit (limits.max_bulk_bytes)"),
        )),
        Ok(_) => Ok(Bytes::from(out)),
    }
}

pub(super) fn ingest_of<'a>(
    state: &'a ApiState,
    caller: &Caller,
) -> Result<&'a BulkIngest, ApiError> {
    caller.require(Role::Agent)?;
    state.bulk.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "HTTP ingest is not enabled on this node".into(),
        )
    })
}

fn parse_action(line: &[u8]) -> Result<(&'static str, Map<String, Value>), String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("the action line is not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the action line is not a JSON object".into());
    };
    let mut entries = map.into_iter();
    let (Some((action, meta)), None) = (entries.next(), entries.next()) else {
        return Err("an action line holds exactly one action".into());
    };
    let action = match action.as_str() {
        "index" => "index",
        "create" => "create",
        "update" => "update",
        "delete" => "delete",
        other => return Err(format!("unknown action {other:?}")),
    };
    match meta {
        Value::Object(meta) => Ok((action, meta)),
        _ => Err(format!("the {action} action's metadata is not an object")),
    }
}

fn too_long(len: usize, max: usize) -> Item {
    Item::Failed(
        413,
        "document_too_large",
        format!("the document is {len} bytes; the limit is {max}"),
    )
}

/// The log line a document becomes, and its group.
fn document_line(doc: &[u8], index: &str, max_line_bytes: usize) -> Item {
    let doc = doc.strip_suffix(b"\r").unwrap_or(doc);
    if doc.len() > max_line_bytes {
        return too_long(doc.len(), max_line_bytes);
    }
    let value: Value = match serde_json::from_slice(doc) {
        Ok(v) => v,
        Err(e) => {
            return Item::Failed(
                400,
                "mapper_parsing_exception",
                format!("the document is not JSON: {e}"),
            )
        }
    };
    let Value::Object(map) = value else {
        return Item::Failed(
            400,
            "mapper_parsing_exception",
            "the document is not a JSON object".into(),
        );
    };
    let host = path_str(&map, &["host", "name"])
        .or_else(|| path_str(&map, &["host", "hostname"]))
        .or_else(|| map.get("host").and_then(Value::as_str))
        .unwrap_or_default();
    let source = path_str(&map, &["log", "file", "path"])
        .or_else(|| map.get("source").and_then(Value::as_str))
        .unwrap_or(index);
    match map.get("message").and_then(Value::as_str) {
        Some(message) if !message.is_empty() && !message.contains(['\n', '\r']) => {
            if has_own_time(message) || !map.contains_key("@timestamp") {
                Item::Line(message.as_bytes().to_vec(), origin(host, source, "auto"))
            } else {
                // A plain message ("db timeout") would be stored at its
                // arrival: a backfill or a shipper catching up would land
                // at the wrong time. Its document's time, level and service
                // go with it, as a JSON line.
                match serde_json::to_vec(&essentials(&map, message)) {
                    Ok(line) => Item::Line(line, origin(host, source, "json")),
                    Err(e) => Item::Failed(500, "internal", e.to_string()),
                }
            }
        }
        // A structured document, or a multi-line message: keep the JSON,
        // whose escaping keeps it on one line.
        _ => match serde_json::to_vec(&map) {
            Ok(line) => Item::Line(line, origin(host, source, "json")),
            Err(e) => Item::Failed(500, "internal", e.to_string()),
        },
    }
}

/// Whether a document's one-line `message` is a log line with a time of
/// its own (an access log, syslog, JSON): then it is stored as it is.
fn has_own_time(message: &str) -> bool {
    let ctx = crate::parse::ParseContext::now();
    crate::parse::parse_line(message.as_bytes(), crate::parse::Format::Auto, &ctx)
        .is_ok_and(|e| e.timestamp.is_some())
}

/// What a plain message keeps of its document: its time, level and
/// service, the fields a JSON line's parser reads (`@timestamp`,
/// `log.level`, `service.name`), leaving the shipper's own metadata out.
fn essentials(map: &Map<String, Value>, message: &str) -> Map<String, Value> {
    let mut line = Map::new();
    if let Some(t) = map.get("@timestamp") {
        line.insert("@timestamp".into(), t.clone());
    }
    let level =
        path_str(map, &["log", "level"]).or_else(|| map.get("level").and_then(Value::as_str));
    if let Some(level) = level {
        line.insert("log.level".into(), level.into());
    }
    if let Some(service) = path_str(map, &["service", "name"]) {
        line.insert("service.name".into(), service.into());
    }
    line.insert("message".into(), message.into());
    line
}

fn origin(host: &str, source: &str, format: &'static str) -> Origin {
    Origin {
        host: host.to_string(),
        source: source.to_string(),
        format,
    }
}

/// The string at `path` (`["host", "name"]`), nested as Beats send it or
/// flat with dots (`"host.name"`) as some shippers do; Elasticsearch
/// reads both alike.
fn path_str<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let nested = || {
        let (last, parents) = path.split_last()?;
        let mut node = map;
        for key in parents {
            node = node.get(*key)?.as_object()?;
        }
        node.get(*last)?.as_str()
    };
    nested().or_else(|| map.get(&path.join("."))?.as_str())
}

/// Redacts and appends the good items, one WAL record per origin; returns
/// an id per item (`None` for failed ones) once everything is durable.
async fn store(
    ingest: &BulkIngest,
    caller: &Caller,
    items: &[(String, Item)],
) -> Result<Vec<Option<String>>, ApiError> {
    let mut batches: HashMap<&Origin, Vec<u8>> = HashMap::new();
    for (_, item) in items {
        if let Item::Line(line, origin) = item {
            let batch = batches.entry(origin).or_default();
            batch.extend_from_slice(line);
            batch.push(b'\n');
        }
    }
    let agent_id = format!("http:{}", caller.0.token_id);
    ingest
        .append_all(&caller.0.tenant, &agent_id, batches)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let stamp = crate::time::now_nanos() as u64;
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, (_, item))| match item {
            Item::Line(..) => Some(format!("{stamp:x}-{i}")),
            Item::Failed(..) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filebeat_documents_become_their_message_line() {
        let doc = br#"{"@timestamp":"2026-11-24T10:00:00Z","message":"1.2.3.4 - - [24/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"","host":{"name":"web1"},"log":{"file":{"path":"/var/log/nginx/access.log"}}}"#;
        let Item::Line(line, origin) = document_line(doc, "logs", 1 << 20) else {
            panic!("rejected");
        };
        assert!(line.starts_with(b"1.2.3.4 - - ["));
        assert_eq!(
            origin,
            super::origin("web1", "/var/log/nginx/access.log", "auto")
        );
    }

    #[test]
    fn a_plain_message_keeps_its_documents_time_level_and_service() {
        let ctx = crate::parse::ParseContext::now();
        for doc in [
            &br#"{"@timestamp":"2026-12-07T10:00:00.000Z","message":"nested host db timeout","host":{"name":"es-web3"},"log":{"level":"error","file":{"path":"/var/log/app.log"}},"service":{"name":"inventory"},"agent":{"type":"filebeat"}}"#[..],
            br#"{"@timestamp":"2026-12-07T10:00:00.000Z","message":"nested host db timeout","host.name":"es-web3","log.file.path":"/var/log/app.log","log.level":"error","service.name":"inventory"}"#,
        ] {
            let Item::Line(line, origin) = document_line(doc, "ecs", 1 << 20) else {
                panic!("rejected");
            };
            assert_eq!(
                origin,
                super::origin("es-web3", "/var/log/app.log", "json"),
                "{}",
                String::from_utf8_lossy(doc)
            );
            let text = String::from_utf8(line.clone()).expect("utf-8");
            assert!(!text.contains("filebeat"), "shipper metadata stays out: {text}");
            let e = crate::parse::parse_line(&line, crate::parse::Format::Json, &ctx)
                .expect("a JSON line");
            assert_eq!(e.timestamp, Some(1_796_637_600_000_000_000), "{text}");
            assert_eq!(e.app.as_deref(), Some("inventory"));
            assert_eq!(e.message.as_deref(), Some("nested host db timeout"));
        }
        // An access line has its own time: stored as it is.
        let access = br#"{"@timestamp":"2026-12-07T10:00:00Z","message":"1.2.3.4 - - [24/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\""}"#;
        let Item::Line(line, origin) = document_line(access, "logs", 1 << 20) else {
            panic!("rejected");
        };
        assert!(line.starts_with(b"1.2.3.4 - - ["));
        assert_eq!(origin.format, "auto");
    }

    #[test]
    fn structured_and_multiline_documents_stay_json_on_one_line() {
        let doc = br#"{"level":"error","message":"boom\n  at x","service":"api"}"#;
        let Item::Line(line, origin) = document_line(doc, "app", 1 << 20) else {
            panic!("rejected");
        };
        assert!(!line.contains(&b'\n'));
        assert_eq!((origin.source.as_str(), origin.format), ("app", "json"));
    }

    #[test]
    fn ingest_paths_are_told_apart() {
        for path in [
            "/_bulk",
            "/logs/_bulk",
            "/api/v1/ingest",
            "/v1/logs",
            "/logs/_doc",
            "/logs/_doc/1",
            "/logs/_create/1",
        ] {
            assert!(is_ingest_path(path), "{path}");
        }
        for path in [
            "/",
            "/_license",
            "/_doc",
            "/logs/_create",
            "/a/_doc/1/2",
            "/api/v1/search",
        ] {
            assert!(!is_ingest_path(path), "{path}");
        }
    }

    #[test]
    fn bad_documents_and_actions_get_reasons() {
        assert!(matches!(
            document_line(b"{not json", "i", 100),
            Item::Failed(400, _, _)
        ));
        assert!(matches!(
            document_line(b"[1,2]", "i", 100),
            Item::Failed(400, _, _)
        ));
        assert!(matches!(
            document_line(&[b'{'; 200], "i", 100),
            Item::Failed(413, _, _)
        ));
        assert!(parse_action(br#"{"index":{}}"#).is_ok());
        assert!(parse_action(br#"{"index":{},"create":{}}"#).is_err());
        assert!(parse_action(br#"{"upsert":{}}"#).is_err());
    }
}
