//! The web page in a real headless Chromium (Debian's chromium and
//! chromium-driver, driven over the W3C WebDriver protocol): log in with a
//! token, run a query, see the count, histogram, rows and facets, ack an
//! alert; a log line holding HTML shows as text. A screenshot is saved to
//! `target/web-page.png`.

use crate::common;

use common::{free_port, wait_until, ChildGuard, Collector, Settings};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal W3C WebDriver client: one HTTP/1.1 request per connection.
/// Shared with the fan-out test (its partial-results notice).
pub(crate) struct Driver {
    pub(crate) port: u16,
    pub(crate) session: String,
}

/// Starts chromedriver (killed when the guard drops) and a headless
/// Chromium session with a fresh profile under `dir`.
pub(crate) fn start_browser(dir: &std::path::Path) -> (ChildGuard, Driver) {
    let port = free_port();
    let mut driver_cmd = Command::new(CHROMEDRIVER);
    driver_cmd
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null());
    let chromedriver = ChildGuard::spawn("chromedriver", driver_cmd, &dir.join("chromedriver.log"));
    wait_until("chromedriver", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let profile = dir.join("chromium-profile");
    let session = webdriver(
        port,
        "POST",
        "/session",
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--ignore-certificate-errors", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}})),
    );
    let session = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
        .to_string();
    (chromedriver, Driver { port, session })
}

pub(crate) fn webdriver(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if std::env::var_os("WEBDRIVER_TRACE").is_some() {
        eprintln!("webdriver {method} {path}");
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    // chromedriver keeps the connection open: read the head, then exactly
    // the body it announces (or chunks up to the last one).
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "{method} {path}: connection closed before the answer"
        );
        answer.extend_from_slice(&buf[..n]);
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &answer[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let mut payload = String::from_utf8_lossy(&answer[head_end..]).into_owned();
    if chunked {
        let mut decoded = String::new();
        let mut rest = payload.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            decoded.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        payload = decoded;
    }
    serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{method} {path}: {e}: {payload}"))
}

impl Driver {
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let value = webdriver(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        );
        value["value"].clone()
    }

    pub(crate) fn find(&self, css: &str) -> Option<String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(str::to_string)
    }

    pub(crate) fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn wait_find(&self, css: &str) -> String {
        wait_until(&format!("element {css}"), || self.find(css))
    }

    pub(crate) fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub(crate) fn click(&self, css: &str) {
        let e = self.wait_find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }
}

#[test]
fn search_histogram_facets_and_an_alert_ack_in_a_real_browser() {
    for program in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let collector = Collector::start(
        root.path(),
        Settings {
            rules_dir: Some(repo.join("rules")),
            ..Settings::default()
        },
    );
    let log = root.path().join("access.log");
    let mut text =
        std::fs::read_to_string(repo.join("rules/fixtures/brute_force.log")).expect("fixture");
    text.push_str("192.0.2.200 - - [10/Oct/2024:12:05:00 +0000] \"GET /<img src=x onerror=alert(1)> HTTP/1.1\" 404 0 \"-\" \"<b>bold</b>\"\n");
    std::fs::write(&log, &text).expect("write log");
    let lines = text.lines().count() as u64;
    let failures = text.lines().filter(|l| l.contains("\" 401 ")).count() as u64;
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "{stderr}");
    collector.wait_for_count("*", lines);
    wait_until("the brute-force alert", || {
        let alerts = collector.api_json("/api/v1/alerts");
        alerts["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["rule_id"] == "web-login-brute-force")
            .then_some(())
    });

    let (_chromedriver, d) = start_browser(root.path());

    d.call(
        "POST",
        "/url",
        Some(json!({ "url": format!("https://{}/", collector.api_addr) })),
    );
    d.type_into("#token", "nwl_wrong_token");
    d.click("#login-form button");
    wait_until("the refusal", || {
        let e = d.find("#login-error")?;
        (!d.text(&e).is_empty()).then_some(())
    });
    d.type_into("#token", &collector.token());
    d.click("#login-form button");

    // Search over all of history (the fixture is from 2024).
    let range = d.wait_find("#range");
    let _ = range;
    d.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "const o=document.createElement('option');o.value='3650d';o.textContent='10 years';document.querySelector('#range').append(o);document.querySelector('#range').value='3650d';", "args": []})),
    );
    d.type_into("#q", "*");
    d.click("#search-form button");
    let count = d.wait_find("#count");
    wait_until("the match count", || {
        (d.text(&count) == format!("{lines} matches")).then_some(())
    });
    wait_until("histogram bars", || {
        (!d.find_all("#histogram rect").is_empty()).then_some(())
    });
    wait_until("result rows", || {
        (d.find_all("#hits tbody tr").len() as u64 == lines.min(200)).then_some(())
    });
    wait_until("facets", || {
        (d.find_all("#facets a").len() >= 4).then_some(())
    });

    // The hostile line is shown as text, not as markup.
    assert!(
        d.find_all("#hits img").is_empty(),
        "a log line became an element"
    );
    let cells: Vec<String> = d.find_all("#hits td").iter().map(|e| d.text(e)).collect();
    assert!(
        cells
            .iter()
            .any(|t| t.contains("<img src=x onerror=alert(1)>")),
        "{cells:?}"
    );

    d.type_into("#q", "status:401");
    d.click("#search-form button");
    wait_until("the 401 count", || {
        (d.text(&count) == format!("{failures} matches")).then_some(())
    });

    // Alerts: the brute force is firing; ack it from the page.
    d.click("nav button[data-view=alerts]");
    wait_until("the alert row", || {
        d.find_all("#alerts tbody tr")
            .iter()
            .any(|row| d.text(row).contains("web-login-brute-force"))
            .then_some(())
    });
    // Rows re-render on every refresh and more than one rule may fire:
    // always act on the brute force's row, found afresh.
    let brute_force_row = || {
        d.find_all("#alerts tbody tr")
            .into_iter()
            .find(|row| d.text(row).contains("web-login-brute-force"))
    };
    let row_buttons = |row: &str| -> Vec<String> {
        let v = d.call(
            "POST",
            &format!("/element/{row}/elements"),
            Some(json!({"using": "css selector", "value": "button"})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let row = brute_force_row().expect("the brute force row");
    // The row says when the evidence happened (the fixture's 2024 lines),
    // not only when the alert started.
    let row_text = d.text(&row);
    assert!(row_text.contains("2024-10-10T12:"), "{row_text}");
    let ack = row_buttons(&row).into_iter().next().expect("an ack button");
    d.call("POST", &format!("/element/{ack}/click"), Some(json!({})));
    wait_until("the ack to show", || {
        d.find_all("#alerts tbody td.state-acked")
            .first()
            .map(|_| ())
    });
    let alerts = collector.api_json("/api/v1/alerts");
    assert!(
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["state"] == "acked"),
        "{alerts}"
    );

    // The alert's Evidence button runs the rule's evidence query.
    wait_until("the evidence search", || {
        // Clicked again while the page has not shown it: a refresh may
        // have replaced the row between finding and clicking.
        if let Some(evidence) = brute_force_row().and_then(|row| row_buttons(&row).pop()) {
            d.call(
                "POST",
                &format!("/element/{evidence}/click"),
                Some(json!({})),
            );
        }
        let q = d.wait_find("#q");
        let value = d.call("GET", &format!("/element/{q}/property/value"), None);
        let value = value.as_str().unwrap_or_default().to_string();
        let shown = d.text(&count);
        (value.contains("203.0.113.9") && shown.ends_with(" matches") && shown != "0 matches")
            .then_some(())
    });

    d.click("nav button[data-view=rules]");
    wait_until("the rules list", || {
        (d.find_all("#rules tbody tr").len() >= 15).then_some(())
    });
    // Lines too late for a rule's windows are shown per rule (none here).
    let header = d
        .find("#rules thead")
        .map(|h| d.text(&h))
        .unwrap_or_default();
    assert!(header.contains("lines too late"), "{header}");

    // A rule pasted into the page is backtested over the stored lines and
    // its firings plotted.
    d.type_into(
        "#rule-yaml",
        "id: page-backtest\ntitle: Backtest from the page\nseverity: warning\n\
         match:\n  field: status\n  equals: [401]\n\
         detect:\n  kind: threshold\n  key: client_ip\n  window: 5m\n  count: 20\n",
    );
    d.click("#backtest-range option[value='1970-01-01T00:00:00Z']");
    d.click("#backtest-form button");
    wait_until("the backtest report", || {
        let report = d.find("#backtest-result").map(|e| d.text(&e))?;
        report.contains("page-backtest: 1 firings").then_some(())
    });
    assert!(
        !d.find_all("#backtest-histogram rect").is_empty(),
        "the backtest's firings are plotted"
    );

    let shot = d.call("GET", "/screenshot", None);
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot.as_str().expect("screenshot"),
    )
    .expect("base64");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let artifact = repo.join("target").join("web-page.png");
    std::fs::write(&artifact, &png).expect("save the screenshot");
    d.call("DELETE", "", None);
}
