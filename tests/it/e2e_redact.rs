//! "Passwords never logged": a real agent ships lines holding each kind of
//! secret to a real collector (with live rules keeping sample lines). The
//! search shows the lines with markers; then no file under the data dir —
//! WAL, index (zstd doc store decompressed), checkpoint, rule state — holds
//! one byte of any secret, and a search for each secret finds nothing. The
//! agent's offsets survive the length changes: a restart and a second
//! `--once` run resend and duplicate nothing.

use crate::common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;

/// Luhn check digit appended to `body`.
fn with_luhn(body: &str) -> String {
    let mut sum = 0;
    for (i, c) in body.bytes().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

struct Secret {
    /// What must never be stored (alphanumeric: one search term).
    value: String,
    /// The marker the line must show instead.
    marker: &'static str,
    /// A word of the line that survives redaction, to find it by.
    anchor: &'static str,
}

fn secrets() -> (Vec<Secret>, String) {
    let card = with_luhn("453201511283036");
    let secrets = vec![
        Secret {
            value: "Qhunter2Zx9QueryPw".into(),
            marker: "[REDACTED:password]",
            anchor: "anchorquery",
        },
        Secret {
            value: "Tk7BearerHeader0123456789abcdef".into(),
            marker: "[REDACTED:auth]",
            anchor: "anchorbearer",
        },
        Secret {
            value: "Js0nBodyPassw0rdValue".into(),
            marker: "[REDACTED:password]",
            anchor: "anchorjson",
        },
        Secret {
            value: card.clone(),
            marker: "[REDACTED:card]",
            anchor: "anchorcard",
        },
        Secret {
            value: "AKIAZ7QWERTYUIOP1234".into(),
            marker: "[REDACTED:aws_key]",
            anchor: "anchoraws",
        },
    ];
    let t = nginx_time(now_unix() - 60, 0);
    let s = |i: usize| secrets[i].value.as_str();
    let log = format!(
        "203.0.113.7 - - [{t}] \"GET /anchorquery/login?user=bob&password={} HTTP/1.1\" 401 12 \"-\" \"curl/8.4\"\n\
         2024-10-10T12:00:00Z app[42]: anchorbearer outgoing call headers Authorization: Bearer {} Accept: */*\n\
         {{\"time\":\"2024-10-10T12:00:01Z\",\"msg\":\"anchorjson login\",\"body\":{{\"user\":\"bob\",\"password\":\"{}\"}}}}\n\
         203.0.113.8 - - [{t}] \"GET /anchorcard/pay?card={}&amount=10 HTTP/1.1\" 200 99 \"-\" \"Mozilla/5.0\"\n\
         2024-10-10T12:00:02Z deploy: anchoraws using key {} for s3 upload\n",
        s(0),
        s(1),
        s(2),
        s(3),
        s(4),
    );
    (secrets, log)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every zstd frame inside `bytes` (tantivy's doc store blocks), decoded.
fn zstd_frames(bytes: &[u8]) -> Vec<u8> {
    const MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(4).position(|w| w == MAGIC) {
        let start = at + i;
        if let Ok(decoder) = zstd::stream::read::Decoder::new(&bytes[start..]) {
            let mut frame = Vec::new();
            if decoder.single_frame().read_to_end(&mut frame).is_ok() {
                out.extend_from_slice(&frame);
            }
        }
        at = start + 1;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_never_reach_the_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rules = tmp.path().join("rules");
    fs::create_dir(&rules).expect("mkdir rules");
    // Fires on every line and keeps sample lines in its state and firings.
    fs::write(
        rules.join("all.yaml"),
        "id: every-line\ntitle: Every line\nseverity: info\ndetect:\n  kind: match\n  window: 10m\n",
    )
    .expect("writing the rule");
    let mut collector = Collector::start(
        tmp.path(),
        Settings {
            rules_dir: Some(rules),
            ..Settings::default()
        },
    );
    let (secrets, log_text) = secrets();
    let log = tmp.path().join("app.log");
    fs::write(&log, &log_text).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let (status, stderr) = collector.run_agent_once("agent", &state, &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("*", secrets.len() as u64);

    // Search shows every line, redacted.
    for secret in &secrets {
        let body = collector.api_json(&format!("/api/v1/search?q={}&limit=5", secret.anchor));
        let hits = body["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), 1, "{}: {body}", secret.anchor);
        let raw = hits[0]["raw"].as_str().expect("raw");
        assert!(raw.contains(secret.marker), "{}: {raw}", secret.anchor);
        assert!(!raw.contains(&secret.value), "{raw}");
    }
    let firings = wait_until("a firing with sample lines", || {
        let body = collector.api_json("/api/v1/firings");
        let text = body.to_string();
        text.contains("anchorquery").then_some(text)
    });
    assert!(firings.contains("REDACTED"), "{firings}");
    let metrics = collector.metrics_text();
    for kind in ["password", "auth", "card", "aws_key"] {
        let name = format!("nightowl_redactions_total{{kind=\"{kind}\"}}");
        assert!(
            metric_value(&metrics, &name).unwrap_or(0.0) >= 1.0,
            "{name} missing:\n{metrics}"
        );
    }

    // Offsets stayed the agent's: after a crash (kill -9: the source
    // offsets come back from the WAL's redacted records) a second run
    // resends nothing and duplicates nothing.
    collector.kill();
    collector.restart();
    let (status, stderr) = collector.run_agent_once("agent-again", &state, &[&log]);
    assert!(status.success(), "second agent run failed: {stderr}");
    collector.wait_for_count("*", secrets.len() as u64);
    collector.kill();

    let mut files = Vec::new();
    files_under(&collector.data_dir, &mut files);
    let mut wal_markers = 0;
    let mut store_markers = 0;
    for path in &files {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let decoded = zstd_frames(&bytes);
        for secret in &secrets {
            for hay in [&bytes, &decoded] {
                assert!(
                    !contains(hay, secret.value.as_bytes()),
                    "{} holds the secret {}",
                    path.display(),
                    secret.value
                );
            }
        }
        if path.extension().is_some_and(|e| e == "wal") && contains(&bytes, b"[REDACTED:aws_key]") {
            wal_markers += 1;
        }
        if contains(&decoded, b"[REDACTED:card]") {
            store_markers += 1;
        }
    }
    // The scan looked where the lines are: the WAL and the decompressed
    // doc store both hold the redacted lines.
    assert!(
        wal_markers >= 1,
        "no WAL file holds the redacted lines: {files:?}"
    );
    assert!(
        store_markers >= 1,
        "no decompressed index file holds the redacted lines: {files:?}"
    );

    // Last, as terms: the doc store is compressed, so grep alone proves
    // little there. (Last because a search is audited with its query text:
    // the audit log would then hold the secret the test typed.)
    collector.restart();
    for secret in &secrets {
        assert_eq!(
            collector.count(&secret.value.to_lowercase()),
            0,
            "the secret {} is searchable",
            secret.value
        );
    }
}

#[test]
fn a_bad_redact_pattern_exits_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("collector.toml");
    fs::write(
        &config,
        "[[redact.patterns]]\nname = \"employee\"\nregex = \"emp-(\\\\d{6}\"\n",
    )
    .expect("writing the config");
    let out = std::process::Command::new(BIN)
        .arg("collector")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("running the collector");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("redact.patterns[0].regex"), "{stderr}");
}

#[test]
fn wal_records_are_encrypted_at_rest_and_replay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(tmp.path(), Settings::default());
    // Nothing shipped yet: configure the key and start again.
    collector.kill();
    let key = tmp.path().join("wal.key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("writing the key");
    let plain_config = fs::read_to_string(&collector.config_path).expect("reading the config");
    let keyed_config = format!(
        "{plain_config}\n[wal]\nencryption_key_file = {:?}\n",
        key.display().to_string()
    );
    fs::write(&collector.config_path, &keyed_config).expect("writing the config");
    collector.restart();

    const LINES: u64 = 300;
    let t = nginx_time(now_unix() - 30, 0);
    let mut text = String::new();
    for i in 0..LINES {
        text.push_str(&format!(
            "198.51.100.{} - - [{t}] \"GET /walplaintextprobe/{i} HTTP/1.1\" 200 {} \"-\" \"probe-agent\"\n",
            i % 250,
            1000 + i
        ));
    }
    let log = tmp.path().join("access.log");
    fs::write(&log, &text).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let (status, stderr) = collector.run_agent_once("agent", &state, &[&log]);
    assert!(status.success(), "agent failed: {stderr}");
    collector.wait_for_count("walplaintextprobe", LINES);

    let wal_dir = collector.data_dir.join("wal");
    let mut files = Vec::new();
    files_under(&wal_dir, &mut files);
    let mut wal_bytes = 0;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
    {
        let bytes = fs::read(path).expect("reading a WAL segment");
        wal_bytes += bytes.len();
        for needle in [&b"walplaintextprobe"[..], b"probe-agent", b"198.51.100."] {
            assert!(
                !contains(&bytes, needle),
                "{} holds plaintext {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(
        wal_bytes >= text.len(),
        "the WAL ({wal_bytes} bytes) must hold the {} bytes shipped, encrypted",
        text.len()
    );

    // Replay: without the index, every line comes back from the WAL alone.
    collector.kill();
    fs::remove_dir_all(collector.data_dir.join("index")).expect("removing the index");
    collector.restart();
    collector.wait_for_count("walplaintextprobe", LINES);

    // Without the key the sealed records cannot be replayed: a clear refusal.
    collector.kill();
    fs::remove_dir_all(collector.data_dir.join("index")).expect("removing the index");
    fs::write(&collector.config_path, &plain_config).expect("writing the config");
    let out = std::process::Command::new(BIN)
        .arg("collector")
        .arg("--data-dir")
        .arg(&collector.data_dir)
        .arg("--config")
        .arg(&collector.config_path)
        .env_remove("NIGHTOWL_WAL_KEY_FILE")
        .output()
        .expect("running the collector");
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "started without the key: {stderr}");
    assert!(
        stderr.contains("encrypted") && stderr.contains("encryption_key_file"),
        "{stderr}"
    );
}
