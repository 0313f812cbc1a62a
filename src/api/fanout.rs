//! Search fan-out: a node with `[cluster] peers` answers search, count,
//! histogram and top over every node's index, not only its own.
//!
//! The local query and the same request to every peer run concurrently.
//! Peers get `local=true` (so they never fan out again: no loops, no
//! amplification) and the caller's `Authorization` header unchanged: each
//! peer authenticates the token itself, so the tenant still comes only from
//! the credential. Time ranges are resolved here once and sent as absolute
//! instants, so every shard covers the same range and histogram buckets
//! line up.
//!
//! A peer that fails (refused, timed out, non-200, 401/403, garbage) does
//! not fail the request: the answer says `"partial": true` and names it in
//! `shards.failed`. Only when every shard failed, this node included, is
//! the request an error (502). See docs/fanout.md.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::ApiClient;
use super::{ApiError, ApiState, Caller};
use crate::auth::Role;
use crate::http_client::encode_param;

/// Other nodes whose indexes a search on this node also covers: search,
/// count, histogram and top are sent to every peer and merged. Empty
/// `peers` (the default): this node answers from its own index only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// HTTPS API of each peer, e.g. `peers = ["https://10.0.0.2:7443"]`.
    /// Default: none.
    pub peers: Vec<String>,
    /// PEM CA the peers' certificates must chain to, e.g.
    /// `ca = "/etc/nightowl/ca.pem"`. Default: this node's own CA (the dev
    /// CA under `DATA_DIR/tls/ca.pem`, or `tls.cert` when set).
    pub ca: Option<PathBuf>,
    /// Deadline of one peer's whole answer, ms; a slower peer makes the
    /// result partial. Default 5000.
    pub timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: Vec::new(),
            ca: None,
            timeout_ms: 5000,
        }
    }
}

/// The name of this node's own shard in `shards.failed`.
const LOCAL: &str = "local";

/// The other nodes a search is sent to.
pub struct Peers {
    peers: Vec<Peer>,
    timeout: Duration,
}

struct Peer {
    /// As configured, minus a trailing `/`: how failures name it.
    url: String,
    client: ApiClient,
}

impl Peers {
    /// `None` when no peers are configured. `own_ca` is this node's CA,
    /// used when `cluster.ca` is unset.
    pub fn from_config(config: &ClusterConfig, own_ca: &Path) -> Result<Option<Arc<Peers>>> {
        if config.peers.is_empty() {
            return Ok(None);
        }
        let ca = config.ca.as_deref().unwrap_or(own_ca);
        let peers = config
            .peers
            .iter()
            .map(|url| {
                // The token is the caller's, set per request.
                // A peer's 429 goes back to the caller at once: a search
                // does not sit out another node's rate limit.
                let client = ApiClient::new(url, ca, String::new())
                    .with_context(|| format!("cluster.peers {url:?} (CA {})", ca.display()))?
                    .with_retries_429(0);
                Ok(Peer {
                    url: url.trim().trim_end_matches('/').to_string(),
                    client,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Arc::new(Peers {
            peers,
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
        })))
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// How the shards' answers combine.
#[derive(Debug, Clone, Copy)]
pub enum Merge {
    /// `hits`: newest first by timestamp, then cut to `limit`.
    Hits { limit: usize },
    /// `count`: summed.
    Count,
    /// `buckets`: counts summed per `start_ms`.
    Histogram,
    /// `values`: counts summed per value, re-ranked, cut to `limit`.
    Top { limit: usize },
    /// `patterns`: counts and series summed per id, re-ranked, cut to
    /// `limit`; `new_since` recomputed from the summed series.
    Patterns { limit: usize },
}

impl Merge {
    fn key(self) -> &'static str {
        match self {
            Merge::Hits { .. } => "hits",
            Merge::Count => "count",
            Merge::Histogram => "buckets",
            Merge::Top { .. } => "values",
            Merge::Patterns { .. } => "patterns",
        }
    }
}

/// Whether this request is sent to peers: they are configured and the
/// caller did not ask for this node's shard only (`local=true`).
pub fn fans_out(state: &ApiState, local_only: bool) -> bool {
    !local_only && state.cluster.as_ref().is_some_and(|p| !p.is_empty())
}

/// How many top values each shard returns when fanning out: more than the
/// caller's limit, so a value ranked just below the cut on every shard
/// still has a fair chance to make the merged list (Elasticsearch's
/// `shard_size` heuristic). Still approximate, as in any sharded top-N.
pub fn shard_top_limit(limit: usize) -> usize {
    (limit.saturating_mul(3) / 2 + 10).clamp(1, 1000)
}

/// What each shard is asked for a top-`limit` answer: [`shard_top_limit`]
/// when this request fans out (within `limits.query.max_top_values`),
/// else `limit`.
pub fn top_limit_per_shard(state: &ApiState, local_only: bool, limit: usize) -> usize {
    if fans_out(state, local_only) {
        shard_top_limit(limit).min(state.limits.query.max_top_values)
    } else {
        limit
    }
}

/// When a pattern is new in a range: the start of the first interval with
/// a line, unless that is the range's first interval.
pub fn new_since(series: &[u64], since: i64, interval_secs: u64) -> Option<String> {
    match series.iter().position(|&n| n > 0) {
        Some(i) if i > 0 => Some(crate::time::format_rfc3339(
            since + i as i64 * interval_secs as i64 * 1_000_000_000,
        )),
        _ => None,
    }
}

/// A read this node answers for its caller: alone, or merged with every
/// peer's answer (`[cluster] peers`) unless the request is `local`.
pub struct Ask<'a> {
    state: &'a ApiState,
    caller: &'a Caller,
    headers: &'a HeaderMap,
    local_only: bool,
}

impl<'a> Ask<'a> {
    pub fn new(
        state: &'a ApiState,
        caller: &'a Caller,
        headers: &'a HeaderMap,
        local_only: bool,
    ) -> Ask<'a> {
        Ask {
            state,
            caller,
            headers,
            local_only,
        }
    }

    /// Answers with `local` alone (the single-node shape) when not fanning
    /// out; otherwise runs `local` and `GET path?params&local=true` on every
    /// peer concurrently (`params` unencoded) and merges the answers as
    /// `merge` says, adding `partial` and `shards`.
    pub async fn respond(
        &self,
        path: &str,
        params: &[(&str, String)],
        merge: Merge,
        local: impl Future<Output = Result<Value, ApiError>>,
    ) -> Result<Json<Value>, ApiError> {
        let Ask {
            state,
            caller,
            headers,
            local_only,
        } = *self;
        let peers = match &state.cluster {
            Some(peers) if fans_out(state, local_only) => Arc::clone(peers),
            _ => return local.await.map(Json),
        };
        // Refused here, before any peer is asked on the caller's behalf.
        caller.require(Role::Viewer)?;
        let authorization = authorization(headers);
        let mut path_and_query = format!("{path}?local=true");
        for (name, value) in params {
            path_and_query.push('&');
            path_and_query.push_str(name);
            path_and_query.push('=');
            path_and_query.push_str(&encode_param(value));
        }
        let asks = peers
            .peers
            .iter()
            .map(|peer| ask(peer, &path_and_query, &authorization, peers.timeout, merge));
        let (local, answers) = tokio::join!(local, futures::future::join_all(asks));

        let mut shards: Vec<(&str, Result<Value, String>)> = Vec::with_capacity(answers.len() + 1);
        match local {
            Ok(value) => shards.push((LOCAL, Ok(value))),
            // The caller's mistake (a bad query, a missing field): every
            // shard would say the same, so it is the answer.
            Err(e) if e.0.is_client_error() => return Err(e),
            Err(e) => shards.push((LOCAL, Err(e.1))),
        }
        for (peer, answer) in peers.peers.iter().zip(answers) {
            if let Err(e) = &answer {
                tracing::warn!(peer = %peer.url, error = %e, "search peer failed; answering partial results");
            }
            shards.push((&peer.url, answer));
        }
        merge_shards(shards, merge).map(Json)
    }
}

/// Sends `POST path?local=true` with `body` to every peer, with the
/// caller's `Authorization`: for writes that must reach every node's
/// shards (a tenant purge). Each peer's answer or why it failed.
pub async fn post_to_peers(
    peers: &Peers,
    headers: &HeaderMap,
    path: &str,
    body: &Value,
) -> Vec<(String, Result<Value, String>)> {
    let authorization = authorization(headers);
    let path_and_query = format!("{path}?local=true");
    let posts = peers.peers.iter().map(|peer| {
        let client = peer
            .client
            .clone()
            .with_authorization(authorization.clone());
        let path_and_query = &path_and_query;
        async move {
            let answer = match client.post_json(path_and_query, body).await {
                Ok((status, body)) if status == StatusCode::OK => serde_json::from_slice(&body)
                    .map_err(|e| format!("answered 200 with a body that is not JSON: {e}")),
                Ok((status, body)) => Err(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                )),
                Err(e) => Err(format!("{e:#}")),
            };
            (peer.url.clone(), answer)
        }
    });
    futures::future::join_all(posts).await
}

/// The caller's `Authorization` header, passed on to the peers.
fn authorization(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// One peer's answer, checked to carry what `merge` needs.
async fn ask(
    peer: &Peer,
    path_and_query: &str,
    authorization: &str,
    timeout: Duration,
    merge: Merge,
) -> Result<Value, String> {
    let client = peer
        .client
        .clone()
        .with_authorization(authorization.to_string());
    let (status, body) = match tokio::time::timeout(timeout, client.get(path_and_query)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(format!("{e:#}")),
        Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if status != StatusCode::OK {
        let message = json.as_ref().and_then(|j| j["error"].as_str()).map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_string,
        );
        return Err(format!("answered {status}: {}", message.trim()));
    }
    let Some(json) = json else {
        return Err("answered 200 with a body that is not JSON".into());
    };
    let well_formed = match merge {
        Merge::Count => json["count"].is_u64(),
        _ => json[merge.key()].is_array(),
    };
    if !well_formed {
        return Err(format!("answered 200 without {:?}", merge.key()));
    }
    Ok(json)
}

/// Combines the shards' answers; the first answer that arrived whole gives
/// the shape (`interval_secs`, `field`), its merged key replaced.
fn merge_shards(
    shards: Vec<(&str, Result<Value, String>)>,
    merge: Merge,
) -> Result<Value, ApiError> {
    let total = shards.len();
    let mut answers = Vec::with_capacity(total);
    let mut failed = Vec::new();
    for (node, shard) in shards {
        match shard {
            Ok(value) => answers.push(value),
            Err(error) => failed.push(json!({ "node": node, "error": error })),
        }
    }
    if answers.is_empty() {
        let reasons: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    f["node"].as_str().unwrap_or("?"),
                    f["error"].as_str().unwrap_or("?")
                )
            })
            .collect();
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("every shard failed: {}", reasons.join("; ")),
        ));
    }
    let merged = match merge {
        Merge::Hits { limit } => merge_hits(&answers, limit),
        Merge::Count => json!(answers
            .iter()
            .filter_map(|a| a["count"].as_u64())
            .sum::<u64>()),
        Merge::Histogram => merge_buckets(&answers),
        Merge::Top { limit } => merge_top(&answers, limit),
        Merge::Patterns { limit } => merge_patterns(&answers, limit),
    };
    let mut out: Map<String, Value> = match answers.swap_remove(0) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.insert(merge.key().to_string(), merged);
    out.insert("partial".into(), json!(!failed.is_empty()));
    out.insert("shards".into(), json!({ "total": total, "failed": failed }));
    Ok(Value::Object(out))
}

fn items<'a>(answers: &'a [Value], key: &'static str) -> impl Iterator<Item = &'a Value> {
    answers
        .iter()
        .filter_map(move |a| a[key].as_array())
        .flatten()
}

/// Newest first. Timestamps are RFC 3339 with a varying number of
/// fraction digits, so they are compared as instants, not as text; ties
/// keep shard order (this node first).
fn merge_hits(answers: &[Value], limit: usize) -> Value {
    let mut hits: Vec<(i128, &Value)> = items(answers, "hits")
        .map(|hit| {
            (
                instant_of(hit["timestamp"].as_str().unwrap_or_default()),
                hit,
            )
        })
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse(h.0));
    Value::Array(
        hits.into_iter()
            .take(limit)
            .map(|(_, h)| h.clone())
            .collect(),
    )
}

fn instant_of(text: &str) -> i128 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_or(i128::MIN, |t| t.unix_timestamp_nanos())
}

/// Oldest first, counts summed per bucket start. The shards were sent the
/// same range and interval, so their buckets share starts.
fn merge_buckets(answers: &[Value]) -> Value {
    let mut sums: std::collections::BTreeMap<i64, u64> = Default::default();
    for bucket in items(answers, "buckets") {
        if let (Some(start), Some(count)) = (bucket["start_ms"].as_i64(), bucket["count"].as_u64())
        {
            *sums.entry(start).or_default() += count;
        }
    }
    Value::Array(
        sums.into_iter()
            .map(|(start_ms, count)| json!({ "start_ms": start_ms, "count": count }))
            .collect(),
    )
}

/// Most frequent first; equal counts keep first-seen order.
fn merge_top(answers: &[Value], limit: usize) -> Value {
    let mut order: Vec<(Value, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for item in items(answers, "values") {
        let (Some(value), Some(count)) = (item.get("value"), item["count"].as_u64()) else {
            continue;
        };
        // The JSON text is the identity: `200` and `"200"` stay apart.
        match index.entry(value.to_string()) {
            std::collections::hash_map::Entry::Occupied(slot) => order[*slot.get()].1 += count,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(order.len());
                order.push((value.clone(), count));
            }
        }
    }
    order.sort_by_key(|v| std::cmp::Reverse(v.1));
    Value::Array(
        order
            .into_iter()
            .take(limit)
            .map(|(value, count)| json!({ "value": value, "count": count }))
            .collect(),
    )
}

/// Most lines first. The shards were sent the same range and interval, so
/// their series line up; a pattern's id is the hash of its statement, the
/// same on every node, and the first shard that knows its template names it.
fn merge_patterns(answers: &[Value], limit: usize) -> Value {
    struct Merged {
        template: Value,
        count: u64,
        series: Vec<u64>,
    }
    let mut order: Vec<(String, Merged)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for item in items(answers, "patterns") {
        let (Some(id), Some(count)) = (item["id"].as_str(), item["count"].as_u64()) else {
            continue;
        };
        let slot = *index.entry(id.to_string()).or_insert_with(|| {
            order.push((
                id.to_string(),
                Merged {
                    template: Value::Null,
                    count: 0,
                    series: Vec::new(),
                },
            ));
            order.len() - 1
        });
        let merged = &mut order[slot].1;
        merged.count += count;
        if merged.template.is_null() {
            merged.template = item["template"].clone();
        }
        let series = item["series"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if merged.series.len() < series.len() {
            merged.series.resize(series.len(), 0);
        }
        for (sum, n) in merged.series.iter_mut().zip(series) {
            *sum += n.as_u64().unwrap_or(0);
        }
    }
    order.sort_by_key(|(_, m)| std::cmp::Reverse(m.count));
    let (since, interval_secs) = answers.first().map_or((i128::MIN, 0), |a| {
        (
            instant_of(a["since"].as_str().unwrap_or_default()),
            a["interval_secs"].as_u64().unwrap_or(0),
        )
    });
    Value::Array(
        order
            .into_iter()
            .take(limit)
            .map(|(id, m)| {
                let new_since = i64::try_from(since)
                    .ok()
                    .and_then(|since| new_since(&m.series, since, interval_secs));
                json!({
                    "new_since": new_since,
                    "query": format!("pattern:{id}"),
                    "id": id,
                    "template": m.template,
                    "count": m.count,
                    "series": m.series,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value) -> Result<Value, String> {
        Ok(v)
    }

    fn merged(shards: Vec<(&str, Result<Value, String>)>, merge: Merge) -> Value {
        match merge_shards(shards, merge) {
            Ok(v) => v,
            Err(e) => panic!("{}: {}", e.0, e.1),
        }
    }

    #[test]
    fn hits_merge_newest_first_as_instants_and_cut() {
        let a = json!({"hits": [
            {"timestamp": "2026-11-25T10:00:05Z", "raw": "a2"},
            {"timestamp": "2026-11-25T10:00:01Z", "raw": "a1"},
        ]});
        // "05.5Z" sorts before "05Z" as text, but is the later instant.
        let b = json!({"hits": [
            {"timestamp": "2026-11-25T10:00:05.5Z", "raw": "b2"},
            {"timestamp": "2026-11-25T10:00:03Z", "raw": "b1"},
        ]});
        let out = merged(
            vec![("local", ok(a)), ("https://b:1", ok(b))],
            Merge::Hits { limit: 3 },
        );
        let raws: Vec<&str> = out["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["raw"].as_str().expect("raw"))
            .collect();
        assert_eq!(raws, ["b2", "a2", "b1"]);
        assert_eq!(out["partial"], json!(false));
        assert_eq!(out["shards"], json!({"total": 2, "failed": []}));
    }

    #[test]
    fn counts_buckets_and_top_values_sum() {
        let out = merged(
            vec![
                ("local", ok(json!({"count": 3}))),
                ("p", ok(json!({"count": 4}))),
                ("q", Err("connecting: refused".into())),
            ],
            Merge::Count,
        );
        assert_eq!(out["count"], json!(7));
        assert_eq!(out["partial"], json!(true));
        assert_eq!(
            out["shards"]["failed"],
            json!([{"node": "q", "error": "connecting: refused"}])
        );

        let out = merged(
            vec![
                (
                    "local",
                    ok(json!({"interval_secs": 60, "buckets": [
                    {"start_ms": 0, "count": 1}, {"start_ms": 60000, "count": 2}]})),
                ),
                (
                    "p",
                    ok(json!({"interval_secs": 60, "buckets": [
                    {"start_ms": 60000, "count": 5}, {"start_ms": 120000, "count": 1}]})),
                ),
            ],
            Merge::Histogram,
        );
        assert_eq!(out["interval_secs"], json!(60));
        assert_eq!(
            out["buckets"],
            json!([{"start_ms": 0, "count": 1}, {"start_ms": 60000, "count": 7},
                   {"start_ms": 120000, "count": 1}])
        );

        let out = merged(
            vec![
                (
                    "local",
                    ok(json!({"field": "status", "values": [
                    {"value": 200, "count": 5}, {"value": 404, "count": 4}]})),
                ),
                (
                    "p",
                    ok(json!({"field": "status", "values": [
                    {"value": 500, "count": 6}, {"value": 404, "count": 3}, {"value": "200", "count": 9}]})),
                ),
            ],
            Merge::Top { limit: 2 },
        );
        assert_eq!(out["field"], json!("status"));
        assert_eq!(
            out["values"],
            json!([{"value": "200", "count": 9}, {"value": 404, "count": 7}])
        );
    }

    #[test]
    fn every_shard_failing_is_an_error_naming_them() {
        let Err(err) = merge_shards(
            vec![
                ("local", Err("search failed".into())),
                ("https://b:1", Err("no answer within 5 ms".into())),
            ],
            Merge::Count,
        ) else {
            panic!("every shard failed: must be an error");
        };
        assert_eq!(err.0, StatusCode::BAD_GATEWAY);
        assert!(err.1.contains("https://b:1: no answer"), "{}", err.1);
        assert!(err.1.contains("local: search failed"), "{}", err.1);
    }

    #[test]
    fn a_failed_local_shard_takes_its_shape_from_a_peer() {
        let out = merged(
            vec![
                ("local", Err("search failed".into())),
                (
                    "p",
                    ok(json!({"field": "host", "values": [{"value": "h", "count": 1}]})),
                ),
            ],
            Merge::Top { limit: 10 },
        );
        assert_eq!(out["field"], json!("host"));
        assert_eq!(out["partial"], json!(true));
        assert_eq!(out["shards"]["failed"][0]["node"], json!("local"));
    }

    #[test]
    fn shard_top_limit_asks_for_more_but_bounded() {
        assert_eq!(shard_top_limit(10), 25);
        assert_eq!(shard_top_limit(1000), 1000);
        assert_eq!(shard_top_limit(0), 10);
    }
}
