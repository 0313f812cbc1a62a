//! "Passwords never logged": a real agent ships lines holding each kind of
//! secret to a real collector (with live rules keeping sample lines). The
//! search shows the lines with markers; then no file under the data dir —
//! WAL, index (zstd doc store decompressed), checkpoint, rule state — holds
//! one byte of any secret, and a search for each secret finds nothing. The
//! agent's offsets survive the length changes: a restart and a second
//! `--once` run resend and duplicate nothing.

use crate::common;

use std::fs;

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

/// One line per secret kind the whitepapers name (passwords, tokens, API
/// keys, session ids, bearer/basic credentials, card numbers) and per place
/// it hides (URL path, query string, JSON field, header), plus a provider
/// key, a JWT and a configured pattern (`employee`, see [`REDACT_TOML`]).
fn secrets() -> (Vec<Secret>, String) {
    let card = with_luhn("453201511283036");
    let card_in_path = with_luhn("516734892011457");
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJyb2xlIjoiYWRtaW4ifQ.Jwt5ignatureInPathQ9xY8wV7uT6sR5qP4";
    let secret = |value: &str, marker: &'static str, anchor: &'static str| Secret {
        value: value.to_string(),
        marker,
        anchor,
    };
    let secrets = vec![
        secret("Qhunter2Zx9QueryPw", "[REDACTED:password]", "anchorquery"),
        secret(
            "Tk7BearerHeader0123456789abcdef",
            "[REDACTED:auth]",
            "anchorbearer",
        ),
        secret("Js0nBodyPassw0rdValue", "[REDACTED:password]", "anchorjson"),
        secret(&card, "[REDACTED:card]", "anchorcard"),
        secret("AKIAZ7QWERTYUIOP1234", "[REDACTED:aws_key]", "anchoraws"),
        secret("S3ssi0nPathParam77", "[REDACTED:session]", "anchorsession"),
        secret("C00kieSessi0nValue42", "[REDACTED:cookie]", "anchorcookie"),
        // base64("ops:B4sicAuthPassw0rdXy")
        secret(
            "b3BzOkI0c2ljQXV0aFBhc3N3MHJkWHk=",
            "[REDACTED:auth]",
            "anchorbasic",
        ),
        secret(
            "Ap1KeyHeaderValue9876",
            "[REDACTED:api_key]",
            "anchorapikey",
        ),
        secret("Acc3ssT0kenQueryVal", "[REDACTED:token]", "anchortoken"),
        secret("Js0nAp1KeyFieldVal", "[REDACTED:api_key]", "anchorjsonkey"),
        secret(
            "Ur1Passw0rdReferer",
            "[REDACTED:url_password]",
            "anchorreferer",
        ),
        secret(jwt, "[REDACTED:jwt]", "anchorjwt"),
        secret(&card_in_path, "[REDACTED:card]", "anchorcardpath"),
        secret(
            "ghp_Gh1tHubT0kenInJs0nAbCdEfGhIjKlMn0p",
            "[REDACTED:github_token]",
            "anchorgithub",
        ),
        secret("emp-481516", "[REDACTED:employee]", "anchoremployee"),
    ];
    let t = nginx_time(now_unix() - 60, 0);
    let s = |i: usize| secrets[i].value.as_str();
    let log = format!(
        "203.0.113.7 - - [{t}] \"GET /anchorquery/login?user=bob&password={} HTTP/1.1\" 401 12 \"-\" \"curl/8.4\"\n\
         2024-10-10T12:00:00Z app[42]: anchorbearer outgoing call headers Authorization: Bearer {} Accept: */*\n\
         {{\"time\":\"2024-10-10T12:00:01Z\",\"msg\":\"anchorjson login\",\"body\":{{\"user\":\"bob\",\"password\":\"{}\"}}}}\n\
         203.0.113.8 - - [{t}] \"GET /anchorcard/pay?card={}&amount=10 HTTP/1.1\" 200 99 \"-\" \"Mozilla/5.0\"\n\
         2024-10-10T12:00:02Z deploy: anchoraws using key {} for s3 upload\n\
         203.0.113.9 - - [{t}] \"GET /anchorsession/cart;jsessionid={} HTTP/1.1\" 200 5 \"-\" \"Mozilla/5.0\"\n\
         2024-10-10T12:00:03Z proxy: anchorcookie request headers \"Cookie: sessionid={}; theme=dark\" upstream=app\n\
         2024-10-10T12:00:04Z proxy: anchorbasic request headers \"Authorization: Basic {}\" upstream=app\n\
         2024-10-10T12:00:05Z proxy: anchorapikey request headers X-Api-Key: {} upstream=app\n\
         203.0.113.10 - - [{t}] \"GET /anchortoken/feed?access_token={}&page=2 HTTP/1.1\" 200 7 \"-\" \"okhttp/4.12\"\n\
         {{\"time\":\"2024-10-10T12:00:06Z\",\"msg\":\"anchorjsonkey call\",\"client\":{{\"apiKey\":\"{}\",\"region\":\"eu\"}}}}\n\
         203.0.113.11 - - [{t}] \"GET /anchorreferer HTTP/1.1\" 302 0 \"https://deploy:{}@git.example.com/repo\" \"git/2.43\"\n\
         203.0.113.12 - - [{t}] \"GET /anchorjwt/callback/{} HTTP/1.1\" 200 3 \"-\" \"Mozilla/5.0\"\n\
         203.0.113.13 - - [{t}] \"POST /anchorcardpath/cards/{}/charge HTTP/1.1\" 201 9 \"-\" \"Mozilla/5.0\"\n\
         {{\"time\":\"2024-10-10T12:00:07Z\",\"msg\":\"anchorgithub clone\",\"gh\":\"{}\"}}\n\
         2024-10-10T12:00:08Z door: anchoremployee badge {} entered\n",
        s(0),
        s(1),
        s(2),
        s(3),
        s(4),
        s(5),
        s(6),
        s(7),
        s(8),
        s(9),
        s(10),
        s(11),
        s(12),
        s(13),
        s(14),
        s(15),
    );
    (secrets, log)
}

/// A configured pattern next to the defaults.
const REDACT_TOML: &str = "[[redact.patterns]]\nname = \"employee\"\nregex = 'emp-\\d{6}'\n";

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
            extra_toml: REDACT_TOML.into(),
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
    for kind in [
        "password",
        "auth",
        "card",
        "aws_key",
        "session",
        "cookie",
        "api_key",
        "token",
        "url_password",
        "jwt",
        "github_token",
        "employee",
    ] {
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
    for secret in secrets
        .iter()
        .filter(|s| s.value.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
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

    // `nightowl redact` refuses it the same way.
    let out = std::process::Command::new(BIN)
        .arg("redact")
        .arg("--config")
        .arg(&config)
        .arg(tmp.path().join("missing.log"))
        .output()
        .expect("running nightowl redact");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("redact.patterns[0].regex"), "{stderr}");
    assert!(stderr.contains("collector.toml"), "{stderr}");
}

/// `nightowl redact` shows what the collector would store: the same
/// markers as the e2e test's search, with the config's own pattern.
#[test]
fn redact_command_prints_what_would_be_stored() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("collector.toml");
    fs::write(&config, REDACT_TOML).expect("writing the config");
    let (secrets, log) = secrets();
    let mut child = std::process::Command::new(BIN)
        .args(["redact", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running nightowl redact");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(log.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("nightowl redact");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert_eq!(text.lines().count(), log.lines().count(), "{text}");
    for (line, secret) in text.lines().zip(&secrets) {
        assert!(line.contains(secret.anchor), "{line}");
        assert!(line.contains(secret.marker), "{line}");
        assert!(!line.contains(&secret.value), "{line}");
    }
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("{} secrets replaced", secrets.len())),
        "{stderr}"
    );
    assert!(stderr.contains("employee 1"), "{stderr}");

    // A file that is not there is bad input, named.
    let missing = tmp.path().join("missing.log");
    let out = std::process::Command::new(BIN)
        .arg("redact")
        .arg(&missing)
        .output()
        .expect("running nightowl redact");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_of(&out).contains("missing.log"),
        "{}",
        stderr_of(&out)
    );
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
