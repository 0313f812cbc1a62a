//! syslog-ng (Debian's syslog-ng-core, syslog-ng-mod-http and
//! syslog-ng-scl), unmodified, forwards two access logs: one over TLS with
//! its `syslog()` driver (RFC 5425 octet counting, the token set as
//! structured data by a rewrite), one through its `elasticsearch-http()`
//! destination to `_bulk` (HTTP Basic, the token as the password). Every
//! line is searchable once, in the token's tenant, parsed, redacted, and
//! the token is stored nowhere.
//!
//! syslog-ng and rsyslog conflict as Debian packages (each is the system
//! log daemon), so scripts/test unpacks syslog-ng's packages into a
//! directory instead of installing them: `NIGHTOWL_SYSLOG_NG` (default
//! `target/tmp/syslog-ng`, where scripts/test puts it, so a plain `cargo
//! test` after `scripts/test --deps-only` finds it too) is that directory's
//! root.

use crate::common;

use common::{block_on, free_port, wait_until, ChildGuard, Collector, Settings};
use nightowl::cli::http::ApiClient;
use std::path::PathBuf;
use std::process::Command;

fn syslog_ng_root() -> PathBuf {
    let root = std::env::var_os("NIGHTOWL_SYSLOG_NG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("syslog-ng"));
    assert!(
        root.join("usr/sbin/syslog-ng").exists(),
        "no syslog-ng under {}: scripts/test (or scripts/test --deps-only) unpacks \
         Debian's syslog-ng-core, syslog-ng-mod-http and syslog-ng-scl there",
        root.display()
    );
    root
}

fn access_log(marker: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            let (status, query) = if i % 10 == 0 {
                (401, "?password=SyslogNgPassw0rdX")
            } else {
                (200, "")
            };
            format!(
                "198.51.100.{} - - [24/Nov/2026:10:{:02}:{:02} +0000] \"GET /{marker}/{i}{query} HTTP/1.1\" {status} 512 \"-\" \"Mozilla/5.0\"\n",
                i % 200,
                (i / 60) % 60,
                i % 60
            )
        })
        .collect()
}

#[test]
fn syslog_ng_forwards_over_tls_and_elasticsearch_http_unmodified() {
    let sng = syslog_ng_root();
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

    let work = root.path().join("syslog-ng");
    std::fs::create_dir_all(&work).expect("mkdir");
    let tls_log = work.join("tls.log");
    let es_log = work.join("es.log");
    std::fs::write(&tls_log, access_log("sngtls", 300)).expect("write");
    std::fs::write(&es_log, access_log("sngbulk", 300)).expect("write");
    let scl = sng.join("usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf");
    let conf = work.join("syslog-ng.conf");
    std::fs::write(
        &conf,
        format!(
            r#"@version: 3.38
@include "{scl}"
source s_tls {{ file("{tls_log}" follow-freq(1) flags(no-parse)); }};
source s_es {{ file("{es_log}" follow-freq(1) flags(no-parse)); }};
rewrite r_token {{ set("{agent}" value(".SDATA.nightowl@32473.token")); }};
destination d_tls {{
  syslog("127.0.0.1" port({port}) transport("tls")
    tls(ca-file("{ca}") peer-verify(required-trusted)));
}};
destination d_es {{
  elasticsearch-http(
    url("{server}/_bulk")
    index("syslog-ng")
    type("")
    user("syslog-ng")
    password("{agent}")
    tls(ca-file("{ca}") peer-verify(yes))
    template("$(format-json @timestamp=${{ISODATE}} host=${{HOST}} message=${{MESSAGE}})")
  );
}};
log {{ source(s_tls); rewrite(r_token); destination(d_tls); }};
log {{ source(s_es); destination(d_es); }};
"#,
            scl = scl.display(),
            tls_log = tls_log.display(),
            es_log = es_log.display(),
            ca = collector.ca.display(),
            server = collector.server(),
        ),
    )
    .expect("write syslog-ng.conf");
    let mut cmd = Command::new(sng.join("usr/sbin/syslog-ng"));
    cmd.env("LD_LIBRARY_PATH", sng.join("usr/lib/syslog-ng"))
        .arg("-F")
        .arg("-e")
        .arg(format!(
            "--module-path={}",
            sng.join("usr/lib/syslog-ng/3.38").display()
        ))
        .arg("-f")
        .arg(&conf)
        .arg("-R")
        .arg(work.join("persist"))
        .arg("-p")
        .arg(work.join("pid"))
        .arg("-c")
        .arg(work.join("ctl"));
    let mut syslog_ng = ChildGuard::spawn("syslog-ng", cmd, &root.path().join("syslog-ng.stderr"));

    let count = |query: &str| collector.count_as(&viewer, query);
    wait_until("syslog-ng's 600 lines in tenant shop", || {
        (count("sngtls") == 300 && count("sngbulk") == 300).then_some(())
    });
    // Stopped (it flushes what it holds), then a barrier: lines are
    // indexed in WAL order, so once a line sent after the stop is
    // searchable, anything syslog-ng sent twice would be too.
    syslog_ng.terminate();
    let barrier = "{\"index\":{}}\n{\"message\":\"sngbarrier\"}\n";
    let (status, _) = block_on(async {
        ApiClient::new(&collector.server(), &collector.ca, agent.clone())
            .expect("client")
            .post_bytes("/_bulk", barrier.as_bytes().to_vec().into())
            .await
            .expect("barrier")
    });
    assert_eq!(status.as_u16(), 200);
    wait_until("the barrier line", || {
        (count("sngbarrier") == 1).then_some(())
    });
    assert_eq!(count("sngtls"), 300, "every TLS line once");
    assert_eq!(count("sngbulk"), 300, "every elasticsearch-http line once");
    for (query, want) in [
        ("sngtls AND status:401", 30),
        ("sngbulk AND status:401", 30),
        ("sngtls AND source:syslog", 300),
        ("sngbulk AND client_ip:198.51.100.7", 2),
        ("SyslogNgPassw0rdX", 0),
        ("raw:redacted AND status:401", 60),
        ("nightowl@32473", 0),
    ] {
        assert_eq!(count(query), want, "{query}");
    }
    assert_eq!(collector.count("*"), 0, "nothing in the default tenant");
    let (_, body) = collector.api_get_with_token(&viewer, "/api/v1/search?q=*&limit=1000");
    assert!(
        !String::from_utf8_lossy(&body).contains(agent.as_str()),
        "the token is never stored"
    );
    assert_eq!(collector.metric("nightowl_syslog_rejected_total"), 0.0);
}
