//! The systemd units pass `systemd-analyze verify`, keep their exposure
//! score low, and the collector speaks the notify protocol for real:
//! READY=1 once it serves, then WATCHDOG=1 keep-alives at WatchdogSec/2.

use crate::common;

use common::{free_port, ChildGuard, BIN};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ANALYZE: &str = "/usr/bin/systemd-analyze";

#[test]
fn units_verify_and_stay_sandboxed() {
    assert!(
        Path::new(ANALYZE).exists(),
        "{ANALYZE} is missing: apt-get install systemd (scripts/test does)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in [
        "nightowl-collector.service",
        "nightowl-indexer.service",
        "nightowl-agent.service",
    ] {
        // `verify` checks that ExecStart exists: point it at the built binary.
        let text = std::fs::read_to_string(repo.join("systemd").join(unit)).expect("unit file");
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin/nightowl", BIN)).expect("write unit");
        let out = Command::new(ANALYZE)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );

        let out = Command::new(ANALYZE)
            .args(["security", "--offline=true", "--threshold=25"])
            .arg(&path)
            .output()
            .expect("security");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{unit} exposure above 2.5:\n{report}");
        let score: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure score:\n{report}"));
        assert!(score <= 2.5, "{unit}: exposure {score}");
    }
}

#[test]
fn the_collector_notifies_ready_then_pings_the_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "agent_listen = \"127.0.0.1:{}\"\napi_listen = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(["collector", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let _collector = ChildGuard::spawn("collector", cmd, &dir.path().join("collector.stderr"));
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    while received.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let n = socket
            .recv(&mut buf)
            .expect("a notify datagram within 60 s");
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        received.first().map(String::as_str),
        Some("READY=1"),
        "{received:?}"
    );
}
