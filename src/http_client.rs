//! The HTTP(S) client side every stage may use. POSTs to other systems:
//! the alert receivers' webhooks and the audit log's witnesses. hyper 1
//! over tokio-rustls, one connection per delivery (deliveries are rare; a
//! pool would only hold sockets open), a deadline over the whole exchange,
//! TLS with the public web roots plus an optional private CA; what an
//! answer means is the caller's to decide. And the percent-encoding of
//! query parameters, for those POSTs' links and for the API's own client
//! (`api/client.rs`). Part of the shared bottom: it imports no stage, so
//! the audit log (which every stage writes to) can use it.
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How a delivery failed, for a caller that retries (the alert outbox).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying with backoff: connection refused, timeout, 5xx, 429,
    /// SMTP 4xx.
    #[error("temporary delivery failure: {0}")]
    Retryable(String),
    /// Retrying cannot help: 4xx other than 408/429, SMTP 5xx, a template
    /// that does not render. The outbox dead-letters it at once.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}
/// How much of a response body is read: enough for an error message.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub struct HttpTarget {
    uri: Uri,
    host: String,
    port: u16,
    /// `scheme://host:port` only: webhook paths often hold the secret (Slack),
    /// so errors and logs never show them.
    redacted: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

/// The task driving one HTTP connection, aborted on drop.
struct ConnectionTask(tokio::task::JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpTarget {
    /// `what` names the config in errors, e.g. `receiver "ops-hook"`.
    pub fn new(url: &str, ca_file: Option<&Path>, timeout: Duration, what: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{what}: url is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("{what}: url must start with http:// or https://"),
        };
        let Some(host) = uri.host().map(str::to_string) else {
            bail!("{what}: url has no host");
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let redacted = format!("{}://{}:{port}", if https { "https" } else { "http" }, host);
        let tls = if https {
            let name = ServerName::try_from(bare_host.clone())
                .with_context(|| format!("{what}: invalid TLS server name {bare_host:?}"))?;
            Some((
                TlsConnector::from(client_config(ca_file, &[b"http/1.1"], what)?),
                name,
            ))
        } else {
            if ca_file.is_some() {
                bail!("{what}: ca_file is set but the url is plain http://");
            }
            None
        };
        Ok(HttpTarget {
            uri,
            host: bare_host,
            port,
            redacted,
            tls,
            timeout,
        })
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// POSTs `body`; any answer, even 500, is `Ok`: the caller decides
    /// (the receivers' `classify`).
    /// Connection failures and the deadline are retryable.
    pub async fn post(
        &self,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, DeliveryError> {
        match tokio::time::timeout(self.timeout, self.exchange(headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Retryable(format!(
                "{}: no answer within {:?}",
                self.redacted, self.timeout
            ))),
        }
    }

    async fn exchange(
        &self,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, DeliveryError> {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            DeliveryError::Retryable(format!("{}: {what}: {e}", self.redacted))
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| retry("connecting", &e))?;
        let _ = tcp.set_nodelay(true);
        let (response, _connection) = match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| retry("TLS handshake", &e))?;
                self.request(TokioIo::new(stream), headers, body).await?
            }
            None => self.request(TokioIo::new(tcp), headers, body).await?,
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            // A receiver that answered but sent a huge or broken body still
            // answered: keep the status, drop the body.
            .unwrap_or_default();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    async fn request<IO>(
        &self,
        io: IO,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, ConnectionTask), DeliveryError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            DeliveryError::Retryable(format!("{}: {what}: {e}", self.redacted))
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| retry("HTTP handshake", &e))?;
        // Driven on its own task so the body can stream; aborted when the
        // exchange ends or its deadline drops it, so a receiver that never
        // answers cannot keep a socket per attempt open for hours.
        let connection = ConnectionTask(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&self.host);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("nightowl/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Permanent(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| retry("sending the request", &e))?;
        Ok((response, connection))
    }
}

/// The public web PKI (Mozilla's roots, compiled in: no system store
/// needed) plus the `ca_file` of a private receiver.
pub fn client_config(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
    what: &str,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in crate::crypto::load_certs(path).with_context(|| format!("{what}: ca_file"))? {
            roots
                .add(cert)
                .with_context(|| format!("{what}: adding a CA from {}", path.display()))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .with_context(|| format!("{what}: TLS protocol versions"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
pub fn encode_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
