//! Ingest over HTTPS without our agent: the Elasticsearch `_bulk` API
//! (what Filebeat, Vector, Fluent Bit and Logstash speak) and plain NDJSON.
//!
//! The tenant is the token's. Documents become log lines: a document whose
//! `message` is a one-line log (Filebeat's shape) is stored as that line,
//! with `host.name` and `log.file.path` as host and source; any other
//! document is stored as its compact JSON and parsed as a JSON line. Lines
//! are redacted before the WAL, exactly like agent batches, and the
//! response is sent only once they are durable.
//!
//! Unlike Quickwit, a bad item does not hide behind a bare `errors: true`:
//! each item gets its own status and reason, and the good ones are indexed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::api::{ApiError, ApiState, Caller};
use crate::auth::Role;
use crate::ingest::{Ingest, IngestRecord};
use crate::redact::Redactor;
use crate::telemetry::Metrics;

/// What the HTTP ingest endpoints need from the collector.
pub struct BulkIngest {
    pub ingest: Ingest,
    /// Refused syslog senders, aggregated into the audit log.
    pub refusals: Arc<crate::refusals::Refusals>,
    pub redactor: Option<Arc<Redactor>>,
    pub metrics: Arc<Metrics>,
    pub max_line_bytes: usize,
    /// Largest request body accepted (`[limits] max_bulk_bytes`).
    pub max_body_bytes: usize,
}

impl BulkIngest {
    /// Redacts `lines` (newline-terminated) and queues them for the WAL as
    /// one record without a source id (no offsets to dedup on); the
    /// receiver resolves once they are durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        tenant: &str,
        agent_id: &str,
        source: &str,
        host: &str,
        format: &str,
        lines: Vec<u8>,
        received: Instant,
    ) -> Result<
        tokio::sync::oneshot::Receiver<Result<crate::ingest::AckInfo, crate::ingest::IngestError>>,
        crate::ingest::IngestError,
    > {
        let mut lines = Bytes::from(lines);
        if let Some(redactor) = &self.redactor {
            if let Some(out) = redactor.redact_batch(&lines) {
                for &(kind, n) in &out.counts {
                    self.metrics.redactions.add(redactor.kind_name(kind), n);
                }
                lines = out.lines;
            }
        }
        let record = IngestRecord {
            tenant: tenant.to_string(),
            agent_id: agent_id.to_string(),
            source_id: String::new(),
            source: source.to_string(),
            host: host.to_string(),
            format: format.to_string(),
            first_offset: 0,
            received_unix_nanos: crate::time::now_nanos(),
            lines,
            resized: None,
        };
        self.ingest.submit(record, received).await
    }
}

/// One batch per (host, source, format) of the request.
type GroupKey = (String, String, &'static str);

#[derive(Debug, PartialEq)]
enum Item {
    /// The line to store and its group.
    Line(Vec<u8>, GroupKey),
    Failed(u16, &'static str, String),
}

/// `POST /_bulk` and `POST /{index}/_bulk`.
pub async fn bulk(
    State(state): State<ApiState>,
    caller: Caller,
    index: Option<Path<String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let ingest = ingest_of(&state, &caller)?;
    let default_index = index.map(|Path(i)| i).unwrap_or_else(|| "_bulk".into());
    let mut actions: Vec<&'static str> = Vec::new();
    let mut items: Vec<(String, Item)> = Vec::new();
    let mut lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    while let Some(action_line) = lines.next() {
        let (action, meta) = match parse_action(action_line) {
            Ok(parsed) => parsed,
            Err(reason) => {
                actions.push("index");
                items.push((
                    default_index.clone(),
                    Item::Failed(400, "action_request_validation_exception", reason),
                ));
                continue;
            }
        };
        actions.push(action);
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or(&default_index)
            .to_string();
        let item = match action {
            "index" | "create" => match lines.next() {
                Some(doc) => document_line(doc, &index, ingest.max_line_bytes),
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
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let ingest = ingest_of(&state, &caller)?;
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
                Item::Line(line, ("".into(), "ingest".into(), "auto"))
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

fn ingest_of<'a>(state: &'a ApiState, caller: &Caller) -> Result<&'a BulkIngest, ApiError> {
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
        .unwrap_or_default()
        .to_string();
    let source = path_str(&map, &["log", "file", "path"])
        .or_else(|| map.get("source").and_then(Value::as_str))
        .unwrap_or(index)
        .to_string();
    match map.get("message").and_then(Value::as_str) {
        Some(message) if !message.is_empty() && !message.contains(['\n', '\r']) => {
            Item::Line(message.as_bytes().to_vec(), (host, source, "auto"))
        }
        // A structured document, or a multi-line message: keep the JSON,
        // whose escaping keeps it on one line.
        _ => match serde_json::to_vec(&map) {
            Ok(line) => Item::Line(line, (host, source, "json")),
            Err(e) => Item::Failed(500, "internal", e.to_string()),
        },
    }
}

fn path_str<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut node = map;
    for key in parents {
        node = node.get(*key)?.as_object()?;
    }
    node.get(*last)?.as_str()
}

/// Redacts and appends the good items, one WAL record per group; returns
/// an id per item (`None` for failed ones) once everything is durable.
async fn store(
    ingest: &BulkIngest,
    caller: &Caller,
    items: &[(String, Item)],
) -> Result<Vec<Option<String>>, ApiError> {
    let mut groups: HashMap<&GroupKey, Vec<u8>> = HashMap::new();
    for (_, item) in items {
        if let Item::Line(line, key) = item {
            let batch = groups.entry(key).or_default();
            batch.extend_from_slice(line);
            batch.push(b'\n');
        }
    }
    let received = Instant::now();
    let agent_id = format!("http:{}", caller.0.token_id);
    let mut acks = Vec::with_capacity(groups.len());
    for ((host, source, format), lines) in groups {
        let ack = ingest
            .append(
                &caller.0.tenant,
                &agent_id,
                source,
                host,
                format,
                lines,
                received,
            )
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|_| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the collector is shutting down".into(),
                )
            })?
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    }
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
        let Item::Line(line, (host, source, format)) = document_line(doc, "logs", 1 << 20) else {
            panic!("rejected");
        };
        assert!(line.starts_with(b"1.2.3.4 - - ["));
        assert_eq!(
            (host.as_str(), source.as_str(), format),
            ("web1", "/var/log/nginx/access.log", "auto")
        );
    }

    #[test]
    fn structured_and_multiline_documents_stay_json_on_one_line() {
        let doc = br#"{"level":"error","message":"boom\n  at x","service":"api"}"#;
        let Item::Line(line, (_, source, format)) = document_line(doc, "app", 1 << 20) else {
            panic!("rejected");
        };
        assert!(!line.contains(&b'\n'));
        assert_eq!((source.as_str(), format), ("app", "json"));
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
