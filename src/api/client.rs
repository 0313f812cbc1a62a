//! A minimal HTTPS/1.1 client for nightowl's own API, verifying the server
//! against a given CA (the dev CA by default), so no system trust store is
//! needed. Used by the CLI and by the collector's fan-out to its peers.

use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::transport::tls;

// Cheap to clone (the TLS config is shared): the search fan-out clones a
// peer's client per request to send the caller's own credential.
#[derive(Clone)]
pub struct ApiClient {
    authority: String,
    tls: Arc<rustls::ClientConfig>,
    /// The `Authorization` header value.
    authorization: String,
    /// How many times a 429 is sent again after its `Retry-After`: an
    /// operator's script creating 100 tenants must not fail on its own
    /// token's rate limit. The search fan-out sets 0 (its caller decides).
    retries_429: u32,
}

/// Retries of a 429 by default, and the longest wait honoured per retry:
/// a limit asking for longer is reported instead of waited out.
const RETRIES_429: u32 = 5;
const MAX_RETRY_AFTER_SECS: u64 = 30;

impl ApiClient {
    /// `server` is `https://host:port` (or bare `host:port`).
    pub fn new(server: &str, ca: &std::path::Path, token: String) -> Result<Self> {
        let authority = server
            .trim()
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') || server.starts_with("http://") {
            return Err(crate::error::usage(format!(
                "invalid --server {server:?}: expected https://HOST:PORT"
            )));
        }
        Ok(ApiClient {
            authority,
            tls: tls::client_config(ca)?,
            authorization: format!("Bearer {token}"),
            retries_429: RETRIES_429,
        })
    }

    /// Answers a 429 at once instead of retrying it (`retries` 0), or
    /// retries it `retries` times.
    pub fn with_retries_429(mut self, retries: u32) -> Self {
        self.retries_429 = retries;
        self
    }

    /// GETs `path_and_query`; returns the status and the whole body.
    pub async fn get(&self, path_and_query: &str) -> Result<(StatusCode, Bytes)> {
        let response = self.send(Method::GET, path_and_query, None).await?;
        collect(response).await
    }

    /// GETs `path_and_query` and hands back the response with its body
    /// unread, for downloads too big to hold (exports).
    pub async fn get_streamed(
        &self,
        path_and_query: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.send(Method::GET, path_and_query, None).await
    }

    /// DELETEs `path_and_query`; returns the status and the whole body.
    pub async fn delete(&self, path_and_query: &str) -> Result<(StatusCode, Bytes)> {
        let response = self.send(Method::DELETE, path_and_query, None).await?;
        collect(response).await
    }

    /// Sends another `Authorization` value (HTTP Basic, say) instead of the
    /// bearer token.
    pub fn with_authorization(mut self, value: String) -> Self {
        self.authorization = value;
        self
    }

    /// POSTs a body as is (NDJSON, `_bulk`); returns the status and the
    /// whole response body.
    pub async fn post_bytes(
        &self,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let response = self.send(Method::POST, path_and_query, Some(body)).await?;
        collect(response).await
    }

    /// POSTs a JSON body; returns the status and the whole response body.
    pub async fn post_json(
        &self,
        path_and_query: &str,
        body: &impl serde::Serialize,
    ) -> Result<(StatusCode, Bytes)> {
        let body = serde_json::to_vec(body).context("encoding the request body")?;
        let response = self
            .send(Method::POST, path_and_query, Some(Bytes::from(body)))
            .await?;
        collect(response).await
    }

    /// POSTs a JSON body and hands each line of a streamed (NDJSON) success
    /// response to `on_line` as it arrives, so long jobs can show progress.
    /// An error status returns its whole body instead.
    pub async fn post_json_lines(
        &self,
        path_and_query: &str,
        body: &impl serde::Serialize,
        mut on_line: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(StatusCode, Bytes)> {
        let body = serde_json::to_vec(body).context("encoding the request body")?;
        let response = self
            .send(Method::POST, path_and_query, Some(Bytes::from(body)))
            .await?;
        if !response.status().is_success() {
            return collect(response).await;
        }
        let status = response.status();
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading response")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            let mut start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &pending[start..]) {
                on_line(&pending[start..start + nl])?;
                start += nl + 1;
            }
            pending.drain(..start);
        }
        if !pending.is_empty() {
            on_line(&pending)?;
        }
        Ok((status, Bytes::new()))
    }

    /// Sends the request, and again after each 429's `Retry-After` (at
    /// most `retries_429` times); the last 429 goes to the caller, whose
    /// error ([`answer_error`]) says the retries were spent.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut tries = 0;
        loop {
            let response = self
                .send_once(method.clone(), path_and_query, body.clone())
                .await?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS || tries >= self.retries_429 {
                return Ok(response);
            }
            let Some(wait) = retry_after(&response) else {
                return Ok(response);
            };
            tries += 1;
            // Drain so the connection task ends before the next one.
            let _ = collect(response).await;
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        let name = tls::server_name(&self.authority)?;
        let stream = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.authority))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        // The connection task ends when the response body is consumed or
        // dropped; detaching it keeps streamed bodies flowing.
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization);
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .context("building request")?;
        sender.send_request(request).await.map_err(|e| {
            if e.is_parse() {
                // The agent port answers a request with a binary error
                // frame: say which port this is instead of "invalid HTTP
                // version parsed".
                anyhow::Error::new(e).context(format!(
                    "{} did not answer in HTTP: is it the agent port (agent_listen, 7400 by \
                     default)? The HTTPS API is on api_listen (https://127.0.0.1:7443 by default)",
                    self.authority
                ))
            } else {
                anyhow::Error::new(e).context("sending request")
            }
        })
    }
}

/// A 429's `Retry-After` in seconds (at least one, as a limit refilling
/// within the second says 0 or 1), or `None` when it is missing or asks for
/// longer than a CLI should sit waiting.
fn retry_after(response: &hyper::Response<hyper::body::Incoming>) -> Option<std::time::Duration> {
    let secs: u64 = response
        .headers()
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs <= MAX_RETRY_AFTER_SECS).then(|| std::time::Duration::from_secs(secs.max(1)))
}

pub async fn collect(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, Bytes)> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading response")?
        .to_bytes();
    Ok((status, body))
}

/// The error of a non-2xx answer, for the CLI: the server's own message
/// (its JSON `error`, else the body as text). A refused request (4xx) is
/// the caller's to fix and exits 2; 429 (a rate or concurrency limit)
/// and 5xx are worth retrying and exit 1.
pub fn answer_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json
        .as_ref()
        .and_then(|j| j["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                "no message".to_string()
            } else {
                text
            }
        });
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry = json
            .as_ref()
            .and_then(|j| j["retry_after_secs"].as_u64())
            .map(|s| format!("; it asks to retry after {s} s"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "the server refused the request (429 Too Many Requests) and kept refusing it through \
             up to {RETRIES_429} retries after its Retry-After: {message}{retry}"
        )
    } else if status.is_client_error() {
        crate::error::usage(format!(
            "the server refused the request ({status}): {message}"
        ))
    } else {
        anyhow::anyhow!("server error {status}: {message}")
    }
}
