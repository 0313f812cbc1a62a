//! Limits of the HTTPS API, so one slow or hostile client cannot starve
//! the others (docs/limits.md):
//!
//! - a token bucket per token (per client IP for requests without a valid
//!   token): over it, 429 with `Retry-After`;
//! - per token, a cap on expensive requests running at once (search,
//!   count, histogram, top, export, backtest): over it, 429;
//! - per node, a cap on expensive requests running at once: a request
//!   waits briefly for a slot, then 503;
//! - a body cap on every route but ingest (which has its own);
//! - connection caps, global and per IP, checked at accept.
//!
//! Query shape and deadline limits live with the search
//! (`crate::index::search::QueryLimits`).
//!
//! The maps are sharded: a lookup locks one shard for a few hundred
//! nanoseconds and no lock is ever held across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiState;
use crate::auth::Principal;
use crate::index::search::QueryLimits;

/// `[limits.api]`: request rate, concurrency, body and connection limits
/// of the HTTPS API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimitsConfig {
    /// Sustained requests per second of one token (of one client IP for
    /// requests without a valid token). Default 20.
    pub requests_per_sec: f64,
    /// Requests a token may send at once above the sustained rate (the
    /// bucket's size). Default 100.
    pub burst: u32,
    /// Expensive requests (search, count, histogram, top, export,
    /// backtest) one token may have running at once. Default 4.
    pub max_concurrent_per_token: usize,
    /// Expensive requests running at once on this node, all tokens
    /// together. Default 8.
    pub max_concurrent_searches: usize,
    /// How long an expensive request waits for one of those slots before
    /// it is answered 503, ms. Default 2000.
    pub queue_timeout_ms: u64,
    /// Largest request body on every route but `_bulk` and
    /// `/api/v1/ingest` (`limits.max_bulk_bytes`), bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Time a connection has to send a request's headers, and most time
    /// an idle keep-alive connection is kept, seconds. Default 10.
    pub header_read_timeout_secs: u64,
    /// Open API connections, all clients. Default 1024.
    pub max_connections: usize,
    /// Open API connections from one IP address. Default 128.
    pub max_connections_per_ip: usize,
    /// Most rate-limit buckets kept (tokens and client IPs). Full buckets
    /// are dropped first (they hold nothing); past this, a shard is reset.
    /// Default 100000.
    pub max_tracked_clients: usize,
}

impl Default for ApiLimitsConfig {
    fn default() -> Self {
        ApiLimitsConfig {
            requests_per_sec: 20.0,
            burst: 100,
            max_concurrent_per_token: 4,
            max_concurrent_searches: 8,
            queue_timeout_ms: 2000,
            max_body_bytes: 1 << 20,
            header_read_timeout_secs: 10,
            max_connections: 1024,
            max_connections_per_ip: 128,
            max_tracked_clients: 100_000,
        }
    }
}

impl ApiLimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.requests_per_sec.is_finite() && self.requests_per_sec > 0.0,
            "limits.api.requests_per_sec must be a number > 0"
        );
        for (name, value) in [
            ("burst", self.burst as usize),
            ("max_concurrent_per_token", self.max_concurrent_per_token),
            ("max_concurrent_searches", self.max_concurrent_searches),
            ("max_body_bytes", self.max_body_bytes),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs as usize,
            ),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_tracked_clients", self.max_tracked_clients),
        ] {
            anyhow::ensure!(value > 0, "limits.api.{name} must be > 0");
        }
        Ok(())
    }
}

/// Shards of every map here: enough that two cores rarely meet on one.
const SHARDS: usize = 16;

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Token(Box<str>),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Nanoseconds on the limiter's clock at the last refill.
    last: u64,
}

struct Shard {
    buckets: HashMap<ClientKey, Bucket>,
    /// Checks since the last sweep of full buckets.
    checks: u32,
}

/// Checks between two sweeps of a shard: a revoked or idle token's bucket
/// is gone at most this many checks after it refilled.
const CHECKS_PER_SWEEP: u32 = 1024;

/// Token buckets keyed by client; time comes in as nanoseconds on any
/// monotonic clock, so tests drive it by hand.
pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Tokens per nanosecond.
    rate: f64,
    burst: f64,
    max_per_shard: usize,
}

impl RateLimiter {
    pub fn new(requests_per_sec: f64, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        checks: 0,
                    })
                })
                .collect(),
            hasher: Default::default(),
            rate: requests_per_sec / 1e9,
            burst: f64::from(burst.max(1)),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Takes one request from `key`'s bucket at `now` (ns); Err is how
    /// long until one is there.
    pub fn check(&self, key: &ClientKey, now: u64) -> Result<(), Duration> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // A poisoned shard only held counters: carry on with them.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        shard.checks += 1;
        if shard.checks >= CHECKS_PER_SWEEP {
            shard.checks = 0;
            self.sweep(&mut shard.buckets, now);
        }
        if !shard.buckets.contains_key(key) && shard.buckets.len() >= self.max_per_shard {
            self.sweep(&mut shard.buckets, now);
            if shard.buckets.len() >= self.max_per_shard {
                // Every bucket here is in use: forgetting them all lets
                // their clients burst once more, but memory stays bounded.
                shard.buckets.clear();
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        // get_mut first: the key is only copied for a client's first request.
        if !shard.buckets.contains_key(key) {
            shard.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: burst,
                    last: now,
                },
            );
        }
        let Some(bucket) = shard.buckets.get_mut(key) else {
            return Ok(());
        };
        let elapsed = now.saturating_sub(bucket.last) as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ns = ((1.0 - bucket.tokens) / rate).ceil();
            Err(Duration::from_nanos(wait_ns as u64))
        }
    }

    /// Drops buckets that have refilled: a full bucket and no bucket are
    /// the same thing, so this forgets nothing.
    fn sweep(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: u64) {
        let (rate, burst) = (self.rate, self.burst);
        buckets.retain(|_, b| b.tokens + now.saturating_sub(b.last) as f64 * rate < burst);
    }

    /// Buckets held, all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.buckets.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn contains(&self, key: &ClientKey) -> bool {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        shard
            .lock()
            .map(|s| s.buckets.contains_key(key))
            .unwrap_or(false)
    }
}

/// Counts in flight per key (expensive requests per token, connections
/// per IP), with a cap; a [`Slot`] gives its place back when dropped.
pub struct Counts<K> {
    shards: Box<[Mutex<HashMap<K, usize>>]>,
    hasher: std::collections::hash_map::RandomState,
    max: usize,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Counts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            max,
        })
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `key`, or None when it already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut shard = self.shard(&key);
        let n = shard.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(shard);
        Some(Slot {
            counts: Arc::clone(self),
            key: Some(key),
        })
    }

    pub fn get(&self, key: &K) -> usize {
        self.shard(key).get(key).copied().unwrap_or(0)
    }
}

pub struct Slot<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut shard = self.counts.shard(&key);
        if let Some(n) = shard.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Keys with nothing in flight are not kept: the map only
                // ever holds the clients active right now.
                shard.remove(&key);
            }
        }
    }
}

/// An open API connection, counted until dropped.
pub struct ConnectionSlot {
    _per_ip: Slot<IpAddr>,
    total: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The caller authenticated by the limiter, handed on to [`super::Caller`]
/// so the token is hashed once per request here, not twice.
#[derive(Clone)]
pub struct Authenticated(pub Principal);

/// Everything the API enforces, built once from the config.
pub struct ApiLimits {
    pub config: ApiLimitsConfig,
    pub query: QueryLimits,
    rate: RateLimiter,
    per_token: Arc<Counts<Box<str>>>,
    searches: Arc<Semaphore>,
    per_ip_connections: Arc<Counts<IpAddr>>,
    connections: Arc<AtomicUsize>,
    epoch: Instant,
}

impl ApiLimits {
    pub fn new(config: &ApiLimitsConfig, query: &QueryLimits) -> Arc<Self> {
        Arc::new(ApiLimits {
            rate: RateLimiter::new(
                config.requests_per_sec,
                config.burst,
                config.max_tracked_clients,
            ),
            per_token: Counts::new(config.max_concurrent_per_token),
            searches: Arc::new(Semaphore::new(config.max_concurrent_searches)),
            per_ip_connections: Counts::new(config.max_connections_per_ip),
            connections: Arc::new(AtomicUsize::new(0)),
            epoch: Instant::now(),
            config: config.clone(),
            query: *query,
        })
    }

    /// The defaults; for tests and tools that build an API state by hand.
    pub fn defaults() -> Arc<Self> {
        Self::new(&ApiLimitsConfig::default(), &QueryLimits::default())
    }

    /// A connection from `ip`, or None when over either connection cap.
    pub fn open_connection(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let total = self.connections.fetch_add(1, Ordering::AcqRel);
        if total >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        match self.per_ip_connections.try_acquire(ip) {
            Some(slot) => Some(ConnectionSlot {
                _per_ip: slot,
                total: Arc::clone(&self.connections),
            }),
            None => {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.config.header_read_timeout_secs)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// A request-level query limit (`limit` of a search, of a top), counted
/// with the other query refusals.
pub fn checked<T>(
    state: &ApiState,
    check: impl FnOnce(&QueryLimits) -> Result<T, crate::index::search::SearchError>,
) -> Result<T, super::ApiError> {
    check(&state.limits.query).map_err(|e| {
        state.metrics.api_limited.add("query_shape", 1);
        e.into()
    })
}

/// What a route costs, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Health, metrics and ingest: not rate limited (ingest has its own
    /// body cap and the WAL's backpressure; refusing it would drop logs).
    Exempt,
    Plain,
    /// Runs a search or a scan on the blocking pool.
    Expensive,
}

fn classify(path: &str) -> Class {
    match path {
        "/healthz" | "/metrics" => Class::Exempt,
        _ if super::ingest::is_ingest_path(path) => Class::Exempt,
        "/api/v1/search"
        | "/api/v1/count"
        | "/api/v1/histogram"
        | "/api/v1/top"
        | "/api/v1/rules/backtest" => Class::Expensive,
        _ if path.starts_with("/api/v1/tenants/") && path.ends_with("/export") => Class::Expensive,
        _ => Class::Plain,
    }
}

/// A refusal: the status, a JSON error naming the limit, `Retry-After`
/// when waiting helps.
fn refuse(status: StatusCode, message: String, limit: &str, retry_after: Option<u64>) -> Response {
    let mut body = json!({ "error": message, "limit": limit });
    if let Some(secs) = retry_after {
        body["retry_after_secs"] = json!(secs);
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The middleware: runs inside the audit layer, so every refusal is
/// audited like any other answer.
pub async fn enforce(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let class = classify(request.uri().path());
    if class == Class::Exempt {
        return next.run(request).await;
    }
    let limits = Arc::clone(&state.limits);
    let metrics = &state.metrics;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_body = limits.config.max_body_bytes;
    if length.is_some_and(|n| n > max_body as u64) {
        metrics.api_limited.add("body", 1);
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {} bytes is above the limit of {max_body} bytes (limits.api.max_body_bytes)",
                length.unwrap_or_default()
            ),
            "limits.api.max_body_bytes",
            None,
        );
    }
    let (peer, principal) = super::identify(&state, &request);
    let key = match &principal {
        Some(p) => ClientKey::Token(p.token_id.as_str().into()),
        None => ClientKey::Ip(peer.unwrap_or(IpAddr::from([0, 0, 0, 0]))),
    };
    if let Err(wait) = limits.rate.check(&key, limits.now()) {
        metrics.api_limited.add("rate", 1);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let who = match &key {
            ClientKey::Token(id) => format!("token {id}"),
            ClientKey::Ip(ip) => format!("client {ip} (no valid token)"),
        };
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit exceeded for {who}: {} requests/s, burst {} (limits.api.requests_per_sec, limits.api.burst); retry in {secs} s",
                limits.config.requests_per_sec, limits.config.burst
            ),
            "limits.api.requests_per_sec",
            Some(secs.max(1)),
        );
    }
    let Some(principal) = principal else {
        // Refused by the handler's own authentication (401); nothing
        // expensive runs without a valid token.
        return next.run(request).await;
    };
    if class == Class::Plain {
        request.extensions_mut().insert(Authenticated(principal));
        return next.run(request).await;
    }
    let Some(token_slot) = limits
        .per_token
        .try_acquire(principal.token_id.as_str().into())
    else {
        metrics.api_limited.add("token_concurrency", 1);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "token {} already has {} searches running, the limit (limits.api.max_concurrent_per_token); retry when one finished",
                principal.token_id, limits.config.max_concurrent_per_token
            ),
            "limits.api.max_concurrent_per_token",
            Some(1),
        );
    };
    let queue = Duration::from_millis(limits.config.queue_timeout_ms);
    let permit: OwnedSemaphorePermit = match tokio::time::timeout(
        queue,
        Arc::clone(&limits.searches).acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        // Timed out waiting, or the semaphore was closed (never).
        _ => {
            metrics.api_limited.add("overloaded", 1);
            return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "this node is running {} searches, its limit (limits.api.max_concurrent_searches), and none finished within {} ms; retry shortly",
                        limits.config.max_concurrent_searches, limits.config.queue_timeout_ms
                    ),
                    "limits.api.max_concurrent_searches",
                    Some(1),
                );
        }
    };
    request.extensions_mut().insert(Authenticated(principal));
    metrics.api_searches_running.add(1);
    let running = Running(Arc::clone(&state.metrics));
    let response = next.run(request).await;
    // Exports and backtests stream: their slots go back when the body is
    // done (or dropped), not when the handler returns.
    let (parts, body) = response.into_parts();
    let held = (token_slot, permit, running);
    let body = body.map_frame(move |frame| {
        let _ = &held;
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

/// Keeps `nightowl_api_searches_running` up to date.
struct Running(Arc<crate::telemetry::Metrics>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.api_searches_running.add(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn token(id: &str) -> ClientKey {
        ClientKey::Token(id.into())
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let limiter = RateLimiter::new(2.0, 5, 1000);
        let a = token("a");
        for i in 0..5 {
            assert!(limiter.check(&a, 0).is_ok(), "request {i} of the burst");
        }
        let wait = limiter.check(&a, 0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500), "one token every 0.5 s");
        // Half a second later exactly one more request fits.
        assert!(limiter.check(&a, SEC / 2).is_ok());
        assert!(limiter.check(&a, SEC / 2).is_err());
        // Long idle: back to the burst, not beyond it.
        for _ in 0..5 {
            assert!(limiter.check(&a, 100 * SEC).is_ok());
        }
        assert!(limiter.check(&a, 100 * SEC).is_err());
    }

    #[test]
    fn clients_have_separate_buckets() {
        let limiter = RateLimiter::new(1.0, 2, 1000);
        let (a, b) = (token("a"), ClientKey::Ip(IpAddr::from([10, 0, 0, 1])));
        assert!(limiter.check(&a, 0).is_ok());
        assert!(limiter.check(&a, 0).is_ok());
        assert!(limiter.check(&a, 0).is_err());
        assert!(limiter.check(&b, 0).is_ok(), "a's use does not spend b's");
        assert!(limiter.check(&b, 0).is_ok());
        assert!(limiter.check(&b, 0).is_err());
    }

    #[test]
    fn clock_going_backwards_grants_nothing() {
        let limiter = RateLimiter::new(1.0, 1, 1000);
        let a = token("a");
        assert!(limiter.check(&a, 10 * SEC).is_ok());
        assert!(limiter.check(&a, 5 * SEC).is_err());
        assert!(limiter.check(&a, 10 * SEC).is_err());
        assert!(limiter.check(&a, 11 * SEC).is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let limiter = RateLimiter::new(10.0, 1, SHARDS * 4);
        // Many one-off clients (scanning IPs): each spent its bucket, so
        // none is full, and still the map never grows past its cap.
        for i in 0..10_000u32 {
            let ip = ClientKey::Ip(IpAddr::from(i.to_be_bytes()));
            let _ = limiter.check(&ip, u64::from(i));
            assert!(limiter.len() <= SHARDS * 4, "at {i}: {}", limiter.len());
        }
    }

    #[test]
    fn idle_and_revoked_tokens_buckets_expire() {
        let limiter = RateLimiter::new(10.0, 5, 100_000);
        let revoked = token("revoked");
        for _ in 0..5 {
            let _ = limiter.check(&revoked, 0);
        }
        assert!(limiter.contains(&revoked));
        // An hour later its bucket is full again; every shard is swept
        // within CHECKS_PER_SWEEP of its own checks.
        let later = 3600 * SEC;
        for i in 0..(CHECKS_PER_SWEEP as usize * SHARDS * 3) {
            let _ = limiter.check(&token(&format!("live{}", i % 1024)), later);
        }
        assert!(!limiter.contains(&revoked), "a refilled bucket is dropped");
        assert!(limiter.len() <= 1024, "only the live tokens are left");
    }

    /// Not a benchmark (nothing is asserted about time): prints what one
    /// check costs with two threads on a thousand tokens, for docs/limits.md.
    #[test]
    fn cost_sanity_two_threads_share_the_limiter() {
        let limiter = Arc::new(RateLimiter::new(1e9, 1_000_000, 100_000));
        let keys: Arc<Vec<ClientKey>> =
            Arc::new((0..1000).map(|i| token(&format!("tok{i}"))).collect());
        let per_thread = 200_000usize;
        let started = Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (limiter, keys) = (Arc::clone(&limiter), Arc::clone(&keys));
                std::thread::spawn(move || {
                    let mut allowed = 0usize;
                    for i in 0..per_thread {
                        let key = &keys[(i * 7 + t) % keys.len()];
                        allowed += usize::from(limiter.check(key, i as u64).is_ok());
                    }
                    allowed
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        let elapsed = started.elapsed();
        assert_eq!(allowed, 2 * per_thread, "a huge bucket refuses nothing");
        assert!(limiter.len() <= 1000);
        eprintln!(
            "rate limiter: {:.0} ns per check (2 threads, 1000 tokens, this build's profile)",
            elapsed.as_nanos() as f64 / (2 * per_thread) as f64 * 2.0
        );
    }

    #[test]
    fn counts_cap_per_key_and_release_on_drop() {
        let counts: Arc<Counts<Box<str>>> = Counts::new(2);
        let one = counts.try_acquire("t".into()).expect("first");
        let two = counts.try_acquire("t".into()).expect("second");
        assert!(counts.try_acquire("t".into()).is_none(), "third is over 2");
        assert!(counts.try_acquire("u".into()).is_some(), "another key");
        drop(one);
        assert_eq!(counts.get(&"t".into()), 1);
        let _three = counts.try_acquire("t".into()).expect("a place was freed");
        drop(two);
        drop(_three);
        assert_eq!(counts.get(&"t".into()), 0);
        assert!(counts.shard(&"t".into()).is_empty() || counts.get(&"t".into()) == 0);
    }

    #[test]
    fn connection_caps_global_and_per_ip() {
        let config = ApiLimitsConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Default::default()
        };
        let limits = ApiLimits::new(&config, &QueryLimits::default());
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = limits.open_connection(a).expect("a1");
        let _a2 = limits.open_connection(a).expect("a2");
        assert!(limits.open_connection(a).is_none(), "a is at its cap");
        let _b1 = limits.open_connection(b).expect("b1");
        assert!(limits.open_connection(b).is_none(), "global cap of 3");
        drop(a1);
        assert!(limits.open_connection(b).is_some(), "a place was freed");
    }

    #[test]
    fn routes_are_classified() {
        assert_eq!(classify("/healthz"), Class::Exempt);
        assert_eq!(classify("/logs/_bulk"), Class::Exempt);
        assert_eq!(classify("/api/v1/search"), Class::Expensive);
        assert_eq!(classify("/api/v1/tenants/acme/export"), Class::Expensive);
        assert_eq!(classify("/api/v1/rules/backtest"), Class::Expensive);
        assert_eq!(classify("/api/v1/tokens"), Class::Plain);
    }

    #[test]
    fn config_sections_parse_and_bad_values_name_their_key() {
        use crate::config::CollectorConfig;
        let config = CollectorConfig::parse("").expect("defaults");
        assert_eq!(config.limits.api.burst, 100);
        assert_eq!(config.limits.query, QueryLimits::default());
        let config = CollectorConfig::parse(
            "[limits.api]\nrequests_per_sec = 0.5\nburst = 3\n[limits.query]\ntimeout_ms = 250\nmax_hits = 50\n",
        )
        .expect("limits keys");
        assert_eq!(config.limits.api.requests_per_sec, 0.5);
        assert_eq!(config.limits.api.burst, 3);
        assert_eq!(
            (config.limits.query.timeout_ms, config.limits.query.max_hits),
            (250, 50)
        );
        for (text, key) in [
            ("[limits.api]\nburst = 0\n", "limits.api.burst"),
            (
                "[limits.api]\nmax_body_bytes = 0\n",
                "limits.api.max_body_bytes",
            ),
            (
                "[limits.query]\ntimeout_ms = 0\n",
                "limits.query.timeout_ms",
            ),
            (
                "[limits.query]\nmax_depth = 1000\n",
                "limits.query.max_depth",
            ),
            (
                "[limits.api]\nrequests_per_second = 5\n",
                "requests_per_second",
            ),
        ] {
            let err = CollectorConfig::parse(text).expect_err(text);
            assert!(format!("{err:#}").contains(key), "{text}: {err:#}");
        }
    }

    #[test]
    fn defaults_validate() {
        ApiLimitsConfig::default().validate().expect("defaults");
        let bad = ApiLimitsConfig {
            requests_per_sec: 0.0,
            ..Default::default()
        };
        assert!(format!("{:#}", bad.validate().expect_err("0/s"))
            .contains("limits.api.requests_per_sec"));
    }
}
