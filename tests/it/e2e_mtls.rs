//! Mutual TLS (docs/mtls.md): agents and syslog senders authenticated by
//! client certificates from `nightowl cert issue`, against a real
//! collector, over real TLS handshakes. The certificate alone names the
//! tenant; revocation cuts open connections off; a foreign CA, an unknown
//! tenant, a disagreeing token and a missing certificate (when required)
//! are refused with a reason.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common;

use common::{free_port, stderr_of, stdout_of, wait_until, ChildGuard, Collector, Settings, BIN};

/// `[tls] client_ca` = the collector's own dev CA (created at its first
/// start, before the listeners load it).
fn mtls_settings(root: &Path, extra: &str) -> Settings {
    let ca = root.join("data").join("tls").join("ca.pem");
    Settings {
        extra_toml: format!("[tls]\nclient_ca = {:?}\n{extra}", ca.display().to_string()),
        ..Settings::default()
    }
}

/// A certificate issued by `cert issue`: its files and its id.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    id: String,
}

fn issue(collector: &Collector, tenant: &str, name: &str, ca: Option<&Path>) -> Issued {
    let out_dir = collector.root.join("certs");
    let mut cmd = Command::new(BIN);
    cmd.args(["cert", "issue", "--tenant", tenant, "--name", name, "--out"])
        .arg(&out_dir);
    match ca {
        // Another CA's directory (ca.pem + ca.key).
        Some(dir) => cmd
            .arg("--ca-cert")
            .arg(dir.join("ca.pem"))
            .arg("--ca-key")
            .arg(dir.join("ca.key")),
        None => cmd.arg("--data-dir").arg(&collector.data_dir),
    };
    let out = cmd.output().expect("running cert issue");
    assert!(out.status.success(), "cert issue: {}", stderr_of(&out));
    let stdout = stdout_of(&out);
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {stdout:?}"))
        .to_string();
    assert!(stdout.contains(&format!("tenant: {tenant}")), "{stdout}");
    Issued {
        cert: out_dir.join(format!("{name}.pem")),
        key: out_dir.join(format!("{name}.key")),
        id,
    }
}

/// `nightowl agent` with a client certificate and, optionally, a token.
fn cert_agent(
    collector: &Collector,
    name: &str,
    cert: &Issued,
    token_file: Option<&Path>,
    files: &[&Path],
    once: bool,
) -> ChildGuard {
    let mut cmd = Command::new(BIN);
    cmd.arg("agent")
        .arg("--collector")
        .arg(&collector.agent_addr)
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--tls-cert")
        .arg(&cert.cert)
        .arg("--tls-key")
        .arg(&cert.key)
        .arg("--host")
        .arg("mtls-host")
        .arg("--state-dir")
        .arg(collector.root.join(format!("{name}-state")))
        .stdout(Stdio::null());
    if let Some(token_file) = token_file {
        cmd.arg("--token-file").arg(token_file);
    }
    if once {
        cmd.arg("--once");
    }
    cmd.args(files);
    ChildGuard::spawn(name, cmd, &collector.root.join(format!("{name}.stderr")))
}

fn write_lines(path: &Path, tag: &str, range: std::ops::Range<u32>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    for i in range {
        writeln!(file, "{tag} line {i} status=200").expect("write");
    }
}

/// The agent exits by itself with a failure naming `reason`.
fn refused(mut agent: ChildGuard, reason: &str) -> String {
    let status = agent.wait();
    let stderr = agent.stderr();
    assert!(!status.success(), "{} should fail: {stderr}", agent.name);
    assert!(
        stderr.contains(reason),
        "{} stderr lacks {reason:?}:\n{stderr}",
        agent.name
    );
    stderr
}

#[test]
fn an_agent_with_a_certificate_and_no_token_ships_into_the_certificates_tenant() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), mtls_settings(root.path(), ""));
    collector.operator(&["tenant", "create", "acme"]);
    collector.operator(&["tenant", "create", "beta"]);
    let acme_viewer =
        collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let beta_viewer =
        collector.operator(&["token", "create", "--tenant", "beta", "--role", "viewer"]);
    let (_, beta_agent_token) =
        collector.new_token("beta-agent", &["--tenant", "beta", "--role", "agent"]);

    let web1 = issue(&collector, "acme", "web1", None);
    let key_mode = std::fs::metadata(&web1.key).expect("key").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    let log = root.path().join("app.log");
    write_lines(&log, "mtls", 0..50);
    let mut agent = cert_agent(&collector, "web1", &web1, None, &[&log], true);
    let status = agent.wait();
    assert!(status.success(), "agent failed: {}", agent.stderr_tail());
    // The welcome names the certificate's tenant (the log line is coloured).
    assert!(
        agent
            .stderr()
            .lines()
            .any(|l| l.contains("connected") && l.contains("acme")),
        "{}",
        agent.stderr_tail()
    );

    wait_until("50 lines in tenant acme", || {
        (collector.count_as(&acme_viewer, "mtls") == 50).then_some(())
    });
    assert_eq!(collector.count_as(&acme_viewer, "host:mtls-host"), 50);
    assert_eq!(
        collector.count_as(&beta_viewer, "*"),
        0,
        "tenant beta sees none"
    );
    assert_eq!(collector.count("*"), 0, "nothing in the default tenant");

    // Registered at first use: listed with its tenant, by the id issued.
    let list = collector.operator(&["token", "list", "--json"]);
    let entry = list
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("token list NDJSON"))
        .find(|t| t["id"] == web1.id.as_str())
        .unwrap_or_else(|| panic!("{} not in {list}", web1.id));
    assert_eq!(entry["tenant"], "acme");
    assert_eq!(entry["role"], "agent");
    assert!(
        entry["description"]
            .as_str()
            .is_some_and(|d| d.contains("CN=web1")),
        "{entry}"
    );
    // The registration is a credential change: in the audit log, chained.
    let audit = collector.operator(&["audit", "list", "--json"]);
    let registered = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit NDJSON"))
        .find(|e| e["method"] == "REGISTER" && e["actor"] == web1.id.as_str())
        .unwrap_or_else(|| panic!("no registration of {} in {audit}", web1.id));
    assert_eq!(registered["tenant"], "acme");
    assert_eq!(registered["ip"], "127.0.0.1");

    // A token of another tenant beside the certificate: refused, named.
    let log2 = root.path().join("app2.log");
    write_lines(&log2, "clash", 0..5);
    let agent = cert_agent(
        &collector,
        "clash",
        &web1,
        Some(&beta_agent_token),
        &[&log2],
        true,
    );
    refused(
        agent,
        "the token is for tenant \"beta\" but the client certificate names tenant \"acme\"",
    );

    // A certificate naming a tenant the collector does not have.
    let ghost = issue(&collector, "ghost", "ghost1", None);
    let agent = cert_agent(&collector, "ghost", &ghost, None, &[&log2], true);
    refused(agent, "names tenant \"ghost\", which does not exist");
    assert_eq!(collector.count_as(&beta_viewer, "*"), 0);
    assert_eq!(collector.count_as(&acme_viewer, "clash"), 0);
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), mtls_settings(root.path(), ""));
    collector.operator(&["tenant", "create", "acme"]);
    let acme_viewer =
        collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let other_ca = root.path().join("other-ca");
    nightowl::transport::tls::ensure_dev_material(&other_ca).expect("another CA");
    let forged = issue(&collector, "acme", "forged", Some(&other_ca));

    let log = root.path().join("app.log");
    write_lines(&log, "forged", 0..5);
    let before = collector.metric("nightowl_handshakes_rejected_total");
    let agent = cert_agent(&collector, "forged", &forged, None, &[&log], true);
    // Both CAs are named "nightowl dev CA": the chain's signature fails.
    refused(
        agent,
        "the client certificate was not signed by a CA the collector trusts",
    );
    assert!(
        collector.metric("nightowl_handshakes_rejected_total") > before,
        "the collector counts the refused handshake"
    );
    // A real handshake with rustls directly: the collector's alert ends it.
    let config = nightowl::transport::tls::client_config_with(
        &collector.ca,
        Some((forged.cert.as_path(), forged.key.as_path())),
    )
    .expect("client config");
    let mut stream = tls_connect(&collector.agent_addr, config);
    let mut buf = [0u8; 64];
    let read = std::io::Read::read(&mut stream, &mut buf);
    let err = read.expect_err("the collector refuses the certificate");
    assert!(
        ["DecryptError", "UnknownCA"]
            .iter()
            .any(|alert| err.to_string().contains(alert)),
        "{err}"
    );
    assert_eq!(collector.count_as(&acme_viewer, "*"), 0);
}

#[test]
fn revoking_a_certificate_cuts_off_its_open_connection() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), mtls_settings(root.path(), ""));
    collector.operator(&["tenant", "create", "acme"]);
    let acme_viewer =
        collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let (_, acme_agent_token) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let web1 = issue(&collector, "acme", "web1", None);

    let log = root.path().join("app.log");
    write_lines(&log, "before", 0..10);
    let mut agent = cert_agent(&collector, "web1", &web1, None, &[&log], false);
    wait_until("10 lines before the revocation", || {
        (collector.count_as(&acme_viewer, "before") == 10).then_some(())
    });
    assert!(agent.is_running());

    let revoked = collector.operator(&["token", "revoke", &web1.id]);
    assert!(revoked.contains(&web1.id), "{revoked}");
    write_lines(&log, "after", 0..10);
    // The open connection's next batch is refused; the agent stops.
    refused(agent, "client certificate revoked");

    // A marker through a token agent of the same tenant: once it is
    // searchable, anything the revoked connection had got in would be too.
    let marker = root.path().join("marker.log");
    write_lines(&marker, "marker", 0..1);
    let mut token_agent = collector.agent_as("marker", &acme_agent_token, &[&marker], true);
    assert!(
        token_agent.wait().success(),
        "{}",
        token_agent.stderr_tail()
    );
    wait_until("the marker line", || {
        (collector.count_as(&acme_viewer, "marker") == 1).then_some(())
    });
    assert_eq!(collector.count_as(&acme_viewer, "after"), 0);
    assert_eq!(collector.count_as(&acme_viewer, "before"), 10);

    // A new connection with it is refused too.
    let agent = cert_agent(&collector, "web1-again", &web1, None, &[&log], true);
    refused(agent, "is revoked");

    // Revoked before its first use, by the id `cert issue` printed.
    let spare = issue(&collector, "acme", "spare", None);
    collector.operator(&["token", "revoke", &spare.id]);
    let agent = cert_agent(&collector, "spare", &spare, None, &[&log], true);
    refused(agent, "is revoked");
    assert_eq!(collector.count_as(&acme_viewer, "after"), 0);
}

#[test]
fn require_client_cert_refuses_a_token_only_agent() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(
        root.path(),
        mtls_settings(root.path(), "require_client_cert = true\n"),
    );
    collector.operator(&["tenant", "create", "acme"]);
    let acme_viewer =
        collector.operator(&["token", "create", "--tenant", "acme", "--role", "viewer"]);
    let (_, acme_agent_token) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let log = root.path().join("app.log");
    write_lines(&log, "tokenonly", 0..5);
    let agent = collector.agent_as("token-only", &acme_agent_token, &[&log], true);
    refused(agent, "a client certificate is required");

    // With a certificate (and the agreeing token) it gets in.
    let web1 = issue(&collector, "acme", "web1", None);
    let mut agent = cert_agent(
        &collector,
        "both",
        &web1,
        Some(&acme_agent_token),
        &[&log],
        true,
    );
    assert!(agent.wait().success(), "{}", agent.stderr_tail());
    wait_until("5 lines in acme", || {
        (collector.count_as(&acme_viewer, "tokenonly") == 5).then_some(())
    });

    // The same keys in agent.toml, no token anywhere.
    let log2 = root.path().join("fromconfig.log");
    write_lines(&log2, "fromconfig", 0..7);
    let config = root.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collectors = [{:?}]\nca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\nstate_dir = {:?}\n\n[[inputs]]\npaths = [{:?}]\n",
            collector.agent_addr,
            collector.ca.display().to_string(),
            web1.cert.display().to_string(),
            web1.key.display().to_string(),
            root.path().join("fromconfig-state").display().to_string(),
            log2.display().to_string(),
        ),
    )
    .expect("write agent.toml");
    let out = Command::new(BIN)
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .output()
        .expect("agent");
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until("7 lines from the config-file agent", || {
        (collector.count_as(&acme_viewer, "fromconfig") == 7).then_some(())
    });

    // A certificate without its key is a usage error (exit 2).
    let out2 = Command::new(BIN)
        .arg("agent")
        .arg("--collector")
        .arg(&collector.agent_addr)
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--tls-cert")
        .arg(&web1.cert)
        .arg("--state-dir")
        .arg(root.path().join("half-state"))
        .arg(&log2)
        .output()
        .expect("agent");
    assert_eq!(out2.status.code(), Some(2), "{}", stderr_of(&out2));
    assert!(
        stderr_of(&out2).contains("needs both --tls-cert and --tls-key"),
        "{}",
        stderr_of(&out2)
    );
}

fn tls_connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = nightowl::transport::tls::server_name(addr).expect("server name");
    let conn = rustls::ClientConnection::new(config, name).expect("client connection");
    let tcp = TcpStream::connect(addr).expect("connect");
    rustls::StreamOwned::new(conn, tcp)
}

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

#[test]
fn syslog_over_tls_with_a_client_certificate_lands_in_its_tenant() {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} is missing: apt-get install rsyslog rsyslog-gnutls (scripts/test does)"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let collector = Collector::start(
        root.path(),
        mtls_settings(
            root.path(),
            &format!("\n[syslog]\nlisten = \"127.0.0.1:{port}\"\n"),
        ),
    );
    collector.operator(&["tenant", "create", "shop"]);
    collector.operator(&["tenant", "create", "other"]);
    let shop_viewer =
        collector.operator(&["token", "create", "--tenant", "shop", "--role", "viewer"]);
    let other_viewer =
        collector.operator(&["token", "create", "--tenant", "other", "--role", "viewer"]);
    let other_agent =
        collector.operator(&["token", "create", "--tenant", "other", "--role", "agent"]);
    let shop_cert = issue(&collector, "shop", "syslog1", None);

    // Real rsyslog: a client certificate, no token in the messages.
    let log = root.path().join("access.log");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "198.51.100.{i} - - [24/Nov/2026:10:00:{:02} +0000] \"GET /viarsyslog/{i} HTTP/1.1\" 200 512 \"-\" \"curl/8\"\n",
            i % 60
        ));
    }
    std::fs::write(&log, &text).expect("write log");
    let work = root.path().join("rsyslog");
    std::fs::create_dir_all(&work).expect("mkdir");
    let conf = work.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}" defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imfile" mode="polling" PollingInterval="1")
template(name="plain" type="string"
         string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% - - - %msg%")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
         template="plain")
}}
input(type="imfile" File="{log}" Tag="nginx:" ruleset="forward" freshStartTail="off")
"#,
            work = work.display(),
            ca = collector.ca.display(),
            cert = shop_cert.cert.display(),
            key = shop_cert.key.display(),
            log = log.display(),
        ),
    )
    .expect("write rsyslog.conf");
    let mut rsyslog = Command::new(RSYSLOGD);
    rsyslog
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(work.join("rsyslogd.pid"));
    let _rsyslog = ChildGuard::spawn("rsyslogd", rsyslog, &root.path().join("rsyslogd.stderr"));
    wait_until("rsyslog's 40 lines in tenant shop", || {
        (collector.count_as(&shop_viewer, "viarsyslog") == 40).then_some(())
    });
    assert_eq!(collector.count_as(&shop_viewer, "app:nginx"), 40);

    // RFC 5425 frames from a rustls client with the same certificate: no
    // token → the certificate's tenant; another tenant's token → dropped
    // and counted.
    let config = nightowl::transport::tls::client_config_with(
        &collector.ca,
        Some((shop_cert.cert.as_path(), shop_cert.key.as_path())),
    )
    .expect("client config");
    let mut stream = tls_connect(&format!("127.0.0.1:{port}"), config);
    let mut frames = Vec::new();
    for i in 0..3 {
        frames.push(format!(
            "<14>1 2026-11-24T10:00:00Z web1 app - - - viarustls {i}"
        ));
    }
    for i in 0..2 {
        frames.push(format!(
            "<14>1 2026-11-24T10:00:00Z web1 app - - [nightowl@32473 token=\"{other_agent}\"] wrongtenant {i}"
        ));
    }
    for frame in &frames {
        write!(stream, "{} {frame}", frame.len()).expect("send frame");
    }
    stream.flush().expect("flush");
    stream.conn.send_close_notify();
    stream.flush().expect("close_notify");
    wait_until("the 3 token-less rustls lines in shop", || {
        (collector.count_as(&shop_viewer, "viarustls") == 3).then_some(())
    });
    collector.wait_for_metric("nightowl_syslog_rejected_total", 2.0);
    assert_eq!(collector.count_as(&other_viewer, "*"), 0);
    assert_eq!(collector.count_as(&shop_viewer, "wrongtenant"), 0);
    assert_eq!(collector.count("*"), 0, "nothing in the default tenant");

    // Revoking a sender's certificate closes its open connection at its
    // next message, which is not stored.
    let second = issue(&collector, "shop", "syslog2", None);
    let config = nightowl::transport::tls::client_config_with(
        &collector.ca,
        Some((second.cert.as_path(), second.key.as_path())),
    )
    .expect("client config");
    let mut stream = tls_connect(&format!("127.0.0.1:{port}"), config);
    let frame = "<14>1 2026-11-24T10:00:00Z web2 app - - - beforerevoke";
    write!(stream, "{} {frame}", frame.len()).expect("send frame");
    stream.flush().expect("flush");
    wait_until("the line sent before the revocation", || {
        (collector.count_as(&shop_viewer, "beforerevoke") == 1).then_some(())
    });
    collector.operator(&["token", "revoke", &second.id]);
    let frame = "<14>1 2026-11-24T10:00:00Z web2 app - - - afterrevoke";
    write!(stream, "{} {frame}", frame.len()).expect("send frame");
    stream.flush().expect("flush");
    // The collector closes the connection: reading ends.
    let mut buf = [0u8; 16];
    let closed = std::io::Read::read(&mut stream, &mut buf);
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the connection stays open: {closed:?}"
    );
    collector.wait_for_metric("nightowl_syslog_rejected_total", 3.0);
    // A marker from rsyslog's sender (still valid) shows indexing caught up.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| writeln!(f, "198.51.100.9 - - [24/Nov/2026:10:01:00 +0000] \"GET /aftermarker HTTP/1.1\" 200 1 \"-\" \"curl/8\""))
        .expect("append marker");
    wait_until("rsyslog's marker line", || {
        (collector.count_as(&shop_viewer, "aftermarker") == 1).then_some(())
    });
    assert_eq!(collector.count_as(&shop_viewer, "afterrevoke"), 0);
}
