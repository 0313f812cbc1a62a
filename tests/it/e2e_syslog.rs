//! Syslog over TLS from a real rsyslog (Debian's rsyslog + rsyslog-gnutls):
//! rsyslog tails an nginx access log with imfile and forwards it with
//! octet-counted framing over TLS, the token in the structured data. Every
//! line arrives once, in the token's tenant, parsed as an access log, and
//! the token is stored nowhere.

use crate::common;

use common::{free_port, wait_until, ChildGuard, Collector, Settings};
use std::process::Command;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

#[test]
fn rsyslog_forwards_a_file_over_tls_into_the_tokens_tenant() {
    assert!(
        std::path::Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} is missing: apt-get install rsyslog rsyslog-gnutls (scripts/test does)"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let collector = Collector::start(
        root.path(),
        Settings {
            extra_toml: format!("[syslog]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..Settings::default()
        },
    );
    collector.operator(&["tenant", "create", "shop"]);
    let agent = collector.operator(&["token", "create", "--tenant", "shop", "--role", "agent"]);
    let viewer = collector.operator(&["token", "create", "--tenant", "shop", "--role", "viewer"]);

    let log = root.path().join("access.log");
    let mut text = String::new();
    for i in 0..300 {
        let (status, path) = if i % 10 == 0 {
            (401, "/login?user=bob&password=Rsys1ogPassw0rdX&n=")
        } else {
            (200, "/products")
        };
        text.push_str(&format!(
            "198.51.100.{} - - [24/Nov/2026:10:{:02}:{:02} +0000] \"GET {path}/{i} HTTP/1.1\" {status} 512 \"-\" \"Mozilla/5.0\"\n",
            i % 200,
            (i / 60) % 60,
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
            r#"global(workDirectory="{work}" defaultNetstreamDriverCAFile="{ca}")
module(load="imfile" mode="polling" PollingInterval="1")
template(name="nightowl" type="string"
         string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% - - [nightowl@32473 token=\"{agent}\"] %msg%")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
         template="nightowl")
}}
input(type="imfile" File="{log}" Tag="nginx:" ruleset="forward" freshStartTail="off")
"#,
            work = work.display(),
            ca = collector.ca.display(),
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

    let count = |query: &str| collector.count_as(&viewer, query);
    wait_until("rsyslog's 300 lines in tenant shop", || {
        (count("*") == 300).then_some(())
    });
    assert_eq!(
        count("status:401"),
        30,
        "the access log inside syslog is parsed"
    );
    assert_eq!(count("client_ip:198.51.100.7"), 2);
    assert_eq!(count("app:nginx"), 300);
    assert_eq!(count("nightowl@32473"), 0, "the token element is stripped");
    assert_eq!(count("rsys1ogpassw0rdx"), 0, "passwords are redacted");
    assert_eq!(count("raw:redacted AND status:401"), 30);
    assert_eq!(
        collector.count("*"),
        0,
        "nothing lands in the default tenant"
    );
    let (_, body) = collector.api_get_with_token(&viewer, "/api/v1/search?q=*&limit=500");
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains(agent.as_str()), "the token is never stored");
    assert_eq!(collector.metric("nightowl_syslog_rejected_total"), 0.0);
}
