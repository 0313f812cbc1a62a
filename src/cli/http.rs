//! A minimal HTTPS/1.1 client for the CLI, verifying the server against a
//! given CA (the dev CA by default), so no system trust store is needed.

use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::transport::tls;

pub struct ApiClient {
    authority: String,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl ApiClient {
    /// `server` is `https://host:port` (or bare `host:port`).
    pub fn new(server: &str, ca: &std::path::Path, token: String) -> Result<Self> {
        let authority = server
            .trim()
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') || server.starts_with("http://") {
            return Err(super::usage(format!(
                "invalid --server {server:?}: expected https://HOST:PORT"
            )));
        }
        Ok(ApiClient {
            authority,
            tls: tls::client_config(ca)?,
            token,
        })
    }

    /// GETs `path_and_query`; returns the status and the whole body.
    pub async fn get(&self, path_and_query: &str) -> Result<(StatusCode, Bytes)> {
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
        let driver = tokio::spawn(connection);
        let request = Request::get(path_and_query)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::<Bytes>::new())
            .context("building request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending request")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading response")?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

/// Percent-encodes a query parameter value.
pub fn encode_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
