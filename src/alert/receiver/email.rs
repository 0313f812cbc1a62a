//! Email over SMTP with lettre on tokio + rustls: STARTTLS (required, never
//! opportunistic), implicit TLS, or plain for a local relay; AUTH with a
//! password read from a file or the environment at startup.
//!
//! One mail per notification, multipart text + HTML. The Message-ID derives
//! from the notification id, so a retry after a timeout that did deliver is
//! the same message to the recipient's MTA and mail client.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::template::{Kind, Template};
use super::view::{html_escape, join_labels, rfc3339, status_str, View};
use super::{read_secret, EmailConfig, Preview, SmtpTls};
use crate::alert::model::{Alert, DeliveryError, Notification, Receiver, SendFuture};

pub const DEFAULT_SUBJECT: &str = "[nightowl {{ severity }}] {{ status }}: {{ summary }}";

/// Alerts detailed in one mail; the rest are counted, the evidence links
/// cover them. Keeps a 500-alert group from making a 5 MB mail.
const MAX_ALERTS_SHOWN: usize = 50;

pub struct EmailFormat {
    subject: Template,
    text_body: Option<Template>,
    html_body: Option<Template>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailFormat {
    pub fn new(config: &EmailConfig) -> Result<EmailFormat> {
        let what = format!("receiver {:?}", config.name);
        let subject = Template::parse(
            config.subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
            &format!("{what}: subject"),
        )?;
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("{what}: from {:?} is not a mail address", config.from))?;
        if config.to.is_empty() {
            bail!("{what}: `to` lists no recipient");
        }
        let to = config
            .to
            .iter()
            .map(|addr| {
                addr.parse::<Mailbox>()
                    .with_context(|| format!("{what}: to {addr:?} is not a mail address"))
            })
            .collect::<Result<Vec<_>>>()?;
        let body = |source: &Option<String>, key: &str| {
            source
                .as_deref()
                .map(|t| Template::parse_kind(t, &format!("{what}: {key}"), Kind::Body))
                .transpose()
        };
        Ok(EmailFormat {
            subject,
            text_body: body(&config.text_body, "text_body")?,
            html_body: body(&config.html_body, "html_body")?,
            from,
            to,
        })
    }

    /// The built-in text, or the `text_body` template around it.
    fn text(&self, view: &View<'_>) -> String {
        let details = text_body(view);
        match &self.text_body {
            Some(t) => t.render_body(view, &details, &|s: &str| s.to_string()),
            None => details,
        }
    }

    /// The built-in HTML, or the `html_body` template (values escaped)
    /// around it; always one complete document.
    fn html(&self, view: &View<'_>) -> String {
        let details = html_fragment(view);
        let inner = match &self.html_body {
            Some(t) => t.render_body(view, &details, &html_escape),
            None => details,
        };
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\
             <body style=\"font-family:sans-serif;font-size:14px\">\n{inner}</body></html>\n"
        )
    }

    pub fn message(&self, notification: &Notification) -> Result<Message, DeliveryError> {
        let view = View::new(notification)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(self.subject.render(&view))
            .message_id(Some(message_id(&notification.id)))
            .header(NotificationId(notification.id.clone()))
            .user_agent(concat!("nightowl/", env!("CARGO_PKG_VERSION")).to_string());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                self.text(&view),
                self.html(&view),
            ))
            .map_err(|e| DeliveryError::Permanent(format!("building the mail: {e}")))
    }

    pub fn preview(&self, notification: &Notification) -> Result<Vec<Preview>, DeliveryError> {
        let view = View::new(notification)?;
        let to: Vec<String> = self.to.iter().map(|m| m.to_string()).collect();
        Ok(vec![
            Preview::new(
                "headers",
                format!(
                    "From: {}\nTo: {}\nSubject: {}\nMessage-ID: {}\nX-Nightowl-Notification-Id: {}",
                    self.from,
                    to.join(", "),
                    self.subject.render(&view),
                    message_id(&notification.id),
                    notification.id
                ),
            ),
            Preview::new("text", self.text(&view)),
            Preview::new("html", self.html(&view)),
        ])
    }
}

pub struct EmailReceiver {
    name: String,
    format: EmailFormat,
    smtp: Smtp,
}

/// One SMTP session per mail, driven over lettre's connection API rather
/// than its transport: the transport cannot set TCP_NODELAY, and without
/// it the DATA terminator waits for the relay's delayed ACK (~40 ms per
/// mail measured on loopback); it also lets one deadline cover the whole
/// session.
struct Smtp {
    host: String,
    port: u16,
    mode: SmtpMode,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

enum SmtpMode {
    Starttls(TlsParameters),
    Implicit(TlsConnector, ServerName<'static>),
    Plain,
}

impl EmailReceiver {
    pub fn new(config: &EmailConfig) -> Result<EmailReceiver> {
        let what = format!("receiver {:?}", config.name);
        let format = EmailFormat::new(config)?;
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        });
        let mode = match config.tls {
            SmtpTls::Starttls => {
                let mut params = TlsParameters::builder(config.host.clone());
                if let Some(path) = &config.ca_file {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("{what}: reading ca_file {}", path.display()))?;
                    let cert = Certificate::from_pem(&pem)
                        .with_context(|| format!("{what}: parsing ca_file {}", path.display()))?;
                    params = params.add_root_certificate(cert);
                }
                SmtpMode::Starttls(
                    params
                        .build_rustls()
                        .with_context(|| format!("{what}: TLS parameters"))?,
                )
            }
            SmtpTls::Implicit => {
                let host = config.host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_string())
                    .with_context(|| format!("{what}: invalid TLS server name {host:?}"))?;
                let tls = crate::http_client::client_config(config.ca_file.as_deref(), &[], &what)?;
                SmtpMode::Implicit(TlsConnector::from(tls), name)
            }
            SmtpTls::None => {
                if config.ca_file.is_some() {
                    bail!("{what}: ca_file is set but tls = \"none\"");
                }
                SmtpMode::Plain
            }
        };
        let password = read_secret(
            config.password_file.as_deref(),
            config.password_env.as_deref(),
            &what,
            "password",
        )?;
        let credentials = match (&config.username, password) {
            (Some(user), Some(password)) => {
                if config.tls == SmtpTls::None {
                    bail!(
                        "{what}: refusing to send the SMTP password without TLS (tls = \"none\")"
                    );
                }
                Some(Credentials::new(user.clone(), password))
            }
            (None, None) => None,
            (Some(_), None) => {
                bail!("{what}: username is set but neither password_file nor password_env")
            }
            (None, Some(_)) => bail!("{what}: a password is set but no username"),
        };
        let hello = match &config.hello_name {
            Some(hello) => ClientId::Domain(hello.clone()),
            None => ClientId::default(),
        };
        Ok(EmailReceiver {
            name: config.name.clone(),
            format,
            smtp: Smtp {
                host: config.host.clone(),
                port,
                mode,
                credentials,
                hello,
                timeout: Duration::from_secs(config.timeout_secs.max(1)),
            },
        })
    }
}

impl Smtp {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        match tokio::time::timeout(self.timeout, self.session(message)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Retryable(format!(
                "SMTP {}:{}: no answer within {:?}",
                self.host, self.port, self.timeout
            ))),
        }
    }

    async fn session(&self, message: &Message) -> Result<(), DeliveryError> {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            DeliveryError::Retryable(format!("SMTP {}:{}: {what}: {e}", self.host, self.port))
        };
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.port))
            .await
            .map_err(|e| retry("connecting", &e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn AsyncTokioStream> = match &self.mode {
            SmtpMode::Implicit(connector, name) => Box::new(ImplicitTls(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| retry("TLS handshake", &e))?,
            )),
            SmtpMode::Starttls(_) | SmtpMode::Plain => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(classify)?;
        if let SmtpMode::Starttls(params) = &self.mode {
            if !conn.can_starttls() {
                conn.abort().await;
                // No silent downgrade: the relay must be fixed (or the
                // config says tls = "none"); retrying cannot help.
                return Err(DeliveryError::Permanent(format!(
                    "SMTP {}:{}: the server does not offer STARTTLS",
                    self.host, self.port
                )));
            }
            conn.starttls(params.clone(), &self.hello)
                .await
                .map_err(classify)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(classify)?;
        }
        conn.send(message.envelope(), &message.formatted())
            .await
            .map_err(classify)?;
        // The mail is accepted; a failed QUIT changes nothing.
        let _ = conn.quit().await;
        Ok(())
    }
}

/// A TLS-from-the-first-byte stream handed to lettre's connection, which
/// takes any `AsyncTokioStream`.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Receiver for EmailReceiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let message = self.format.message(notification)?;
            self.smtp.deliver(&message).await
        })
    }
}

/// SMTP 4xx, timeouts, TLS and connection failures are worth retrying; a
/// 5xx answer (unknown mailbox, auth refused) and a mail lettre cannot
/// encode are not.
fn classify(error: lettre::transport::smtp::Error) -> DeliveryError {
    let mut message = format!("SMTP: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    if error.is_permanent() || error.is_client() {
        DeliveryError::Permanent(message)
    } else {
        DeliveryError::Retryable(message)
    }
}

/// `<id@nightowl>` with the id cut to what RFC 5322 allows left of the `@`.
fn message_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('.');
    format!(
        "<{}@nightowl>",
        if clean.is_empty() { "page" } else { clean }
    )
}

/// `X-Nightowl-Notification-Id`: the outbox's idempotency key, so a mail
/// filter or a support desk can deduplicate without parsing Message-ID.
#[derive(Clone)]
struct NotificationId(String);

impl Header for NotificationId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Nightowl-Notification-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NotificationId(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

fn text_body(view: &View<'_>) -> String {
    let n = view.notification;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} ({} firing, {} resolved)",
        view.status_str().to_uppercase(),
        view.summary(),
        view.firing,
        view.resolved
    );
    let _ = writeln!(
        out,
        "Severity: {}  Group: {}  Receiver: {}  Escalation level: {}",
        view.severity.as_str(),
        view.group_text(),
        n.receiver,
        n.escalation_level
    );
    if let Some(ack) = &n.ack_url {
        let _ = writeln!(out, "Acknowledge: {ack}");
    }
    for alert in n.alerts.iter().take(MAX_ALERTS_SHOWN) {
        out.push('\n');
        text_alert(&mut out, view, alert);
    }
    if n.alerts.len() > MAX_ALERTS_SHOWN {
        let _ = writeln!(
            out,
            "\n... and {} more alerts",
            n.alerts.len() - MAX_ALERTS_SHOWN
        );
    }
    let _ = writeln!(out, "\n-- \nnightowl notification {}", n.id);
    out
}

fn text_alert(out: &mut String, view: &View<'_>, alert: &Alert) {
    let _ = writeln!(
        out,
        "== [{}] {} ({})",
        alert.severity.as_str(),
        alert.title,
        status_str(alert.status)
    );
    let _ = writeln!(out, "Rule:       {}", alert.rule_id);
    let _ = writeln!(out, "Tenant:     {}", alert.tenant);
    if !alert.key.is_empty() {
        let _ = writeln!(out, "Key:        {}", alert.key);
    }
    let _ = writeln!(
        out,
        "Count:      {} (firings: {})",
        alert.count, alert.firings
    );
    if let Some(value) = alert.value {
        let _ = writeln!(out, "Value:      {value}");
    }
    let _ = writeln!(out, "Started:    {}", rfc3339(alert.starts_at));
    let _ = writeln!(out, "Last fired: {}", rfc3339(alert.last_fired_at));
    if let Some(end) = alert.ends_at {
        let _ = writeln!(out, "Ended:      {}", rfc3339(end));
    }
    for (name, text) in &alert.annotations {
        let _ = writeln!(out, "{name}: {text}");
    }
    if !alert.labels.is_empty() {
        let _ = writeln!(out, "Labels:     {}", join_labels(&alert.labels));
    }
    if !alert.sample_lines.is_empty() {
        let _ = writeln!(out, "Sample lines:");
        for line in &alert.sample_lines {
            let _ = writeln!(out, "  > {line}");
        }
    }
    if let Some(url) = view.search_url(alert) {
        let _ = writeln!(out, "Evidence:   {url}");
    }
    if let Some(url) = view.page_url(alert) {
        let _ = writeln!(out, "Open:       {url}");
    }
}

fn html_fragment(view: &View<'_>) -> String {
    let n = view.notification;
    let color = match (n.status, view.severity) {
        (crate::alert::AlertStatus::Resolved, _) => "#2e7d32",
        (_, crate::detect::Severity::Critical) => "#c62828",
        (_, crate::detect::Severity::Warning) => "#ef6c00",
        _ => "#1565c0",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<h2 style=\"color:{color}\">{}: {}</h2>",
        view.status_str().to_uppercase(),
        html_escape(&view.summary())
    );
    let _ = writeln!(
        out,
        "<p>{} firing, {} resolved &middot; severity <b>{}</b> &middot; group {} &middot; receiver {} &middot; escalation level {}</p>",
        view.firing,
        view.resolved,
        view.severity.as_str(),
        html_escape(&view.group_text()),
        html_escape(&n.receiver),
        n.escalation_level
    );
    if let Some(ack) = &n.ack_url {
        let _ = writeln!(
            out,
            "<p><a href=\"{}\" style=\"font-weight:bold\">Acknowledge</a></p>",
            html_escape(ack)
        );
    }
    for alert in n.alerts.iter().take(MAX_ALERTS_SHOWN) {
        html_alert(&mut out, view, alert);
    }
    if n.alerts.len() > MAX_ALERTS_SHOWN {
        let _ = writeln!(
            out,
            "<p>... and {} more alerts</p>",
            n.alerts.len() - MAX_ALERTS_SHOWN
        );
    }
    let _ = writeln!(
        out,
        "<p style=\"color:#777;font-size:12px\">nightowl notification {}</p>",
        html_escape(&n.id)
    );
    out
}

fn html_alert(out: &mut String, view: &View<'_>, alert: &Alert) {
    let _ = writeln!(
        out,
        "<h3>[{}] {} ({})</h3>\n<table cellpadding=\"2\">",
        alert.severity.as_str(),
        html_escape(&alert.title),
        status_str(alert.status)
    );
    let mut row = |name: &str, value: &str| {
        let _ = writeln!(
            out,
            "<tr><td><b>{name}</b></td><td>{}</td></tr>",
            html_escape(value)
        );
    };
    row("Rule", &alert.rule_id);
    row("Tenant", &alert.tenant);
    if !alert.key.is_empty() {
        row("Key", &alert.key);
    }
    row(
        "Count",
        &format!("{} (firings: {})", alert.count, alert.firings),
    );
    if let Some(value) = alert.value {
        row("Value", &value.to_string());
    }
    row("Started", &rfc3339(alert.starts_at));
    row("Last fired", &rfc3339(alert.last_fired_at));
    if let Some(end) = alert.ends_at {
        row("Ended", &rfc3339(end));
    }
    for (name, text) in &alert.annotations {
        row(name, text);
    }
    if !alert.labels.is_empty() {
        row("Labels", &join_labels(&alert.labels));
    }
    out.push_str("</table>\n");
    if !alert.sample_lines.is_empty() {
        out.push_str("<p><b>Sample lines</b></p>\n<pre style=\"background:#f4f4f4;padding:6px\">");
        for line in &alert.sample_lines {
            out.push_str(&html_escape(line));
            out.push('\n');
        }
        out.push_str("</pre>\n");
    }
    if let Some(url) = view.search_url(alert) {
        let _ = writeln!(
            out,
            "<p><a href=\"{}\">Evidence in nightowl</a></p>",
            html_escape(&url)
        );
    }
    if let Some(url) = view.page_url(alert) {
        let _ = writeln!(
            out,
            "<p><a href=\"{}\">Open in nightowl's web page</a></p>",
            html_escape(&url)
        );
    }
}
