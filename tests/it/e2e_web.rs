//! The web page in a real headless Chromium (Debian's chromium and
//! chromium-driver, driven over the W3C WebDriver protocol): log in with a
//! token, run a query, see the count, a histogram with a time axis, a page
//! of rows and "Load more", facets (paths and user agents too) to include
//! and exclude, chosen columns that survive a reload, drag-to-zoom into an
//! absolute range; errors clear old results; a viewer's alert and backtest
//! buttons are disabled and a refusal from the server stays shown, an admin
//! silences, unsilences and acks; a backtest is plotted over its whole
//! range; the
//! layout holds at 420 px. A log line holding HTML shows as text.
//! Screenshots go to `target/web-page.png` and `target/web-page-narrow.png`,
//! and to `target/web-page-failed.png` when a step fails.

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

    /// Runs `script` (a function body) in the page; returns its value.
    pub(crate) fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The texts of every element matching `css`.
    pub(crate) fn texts(&self, css: &str) -> Vec<String> {
        self.find_all(css).iter().map(|e| self.text(e)).collect()
    }

    /// The buttons inside `element`.
    fn buttons_in(&self, element: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            &format!("/element/{element}/elements"),
            Some(json!({"using": "css selector", "value": "button"})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        let shot = self.call("GET", "/screenshot", None);
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot.as_str().ok_or("no screenshot")?,
        )
        .map_err(|e| e.to_string())?;
        if !png.starts_with(b"\x89PNG") {
            return Err("not a PNG".into());
        }
        std::fs::write(path, &png).map_err(|e| e.to_string())
    }
}

/// Runs a browser test's steps; when one fails, the page as it was is
/// saved to `target/NAME-failed.png` (a test artifact) before the panic
/// goes on.
pub(crate) fn with_screenshot_on_failure(d: &Driver, name: &str, steps: impl FnOnce()) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(steps));
    if let Err(panic) = outcome {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("{name}-failed.png"));
        let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.screenshot(&path)));
        match saved {
            Ok(Ok(())) => eprintln!("screenshot of the failed page: {}", path.display()),
            _ => eprintln!("no screenshot of the failed page could be taken"),
        }
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn search_histogram_facets_and_an_alert_ack_in_a_real_browser() {
    for program in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: apt-get install chromium chromium-driver (scripts/test does)"
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
    // Ordinary browsing ten minutes later: more lines than a page of hits,
    // and a second cluster of bars on the histogram.
    for i in 0..120 {
        let agent = ["Firefox/130.0", "nightowl-e2e/1.0", "Safari/605.1"][i % 3];
        text.push_str(&format!(
            "198.51.100.{} - - [10/Oct/2024:12:{}:{:02} +0000] \"GET /catalog/{} HTTP/1.1\" 200 {} \"https://shop.example/\" \"{agent}\"\n",
            i % 50,
            20 + i / 10,
            (i * 7) % 60,
            i % 7,
            500 + i
        ));
    }
    std::fs::write(&log, &text).expect("write log");
    let lines = text.lines().count() as u64;
    let failures = text.lines().filter(|l| l.contains("\" 401 ")).count() as u64;
    assert!(lines > 100, "more lines than one page");
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
    let (_, viewer_token_file) = collector.new_token("viewer", &["--role", "viewer"]);
    let viewer_token = std::fs::read_to_string(&viewer_token_file)
        .expect("viewer token")
        .trim()
        .to_string();

    // The collector's log is a file here: no colour codes, and a firing is
    // a detection logged at INFO under the rules, not a WARN of the index.
    let log = std::fs::read_to_string(root.path().join("collector-1.stderr")).expect("log");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO nightowl::rules: rule fired rule=web-login-brute-force")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("rule fired")
                && (l.contains(" WARN ") || l.contains("index::writer"))),
        "a firing logged as a warning of the index: {log}"
    );

    let (_chromedriver, d) = start_browser(root.path());
    with_screenshot_on_failure(&d, "web-page", || {
        page_steps(&d, &collector, &viewer_token, lines, failures);
    });
    d.call("DELETE", "", None);
}

fn page_steps(d: &Driver, collector: &Collector, viewer_token: &str, lines: u64, failures: u64) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let url = format!("https://{}/", collector.api_addr);
    d.call("POST", "/url", Some(json!({ "url": url })));
    d.type_into("#token", "nwl_wrong_token");
    d.click("#login-form button");
    wait_until("the refusal", || {
        let e = d.find("#login-error")?;
        (!d.text(&e).is_empty()).then_some(())
    });

    // A viewer sees the alert, with Ack and Silence offered but disabled.
    d.type_into("#token", viewer_token);
    d.click("#login-form button");
    d.wait_find("#logout:not([hidden])");
    d.click("nav button[data-view=alerts]");
    let brute_force_row = || {
        d.find_all("#alerts tbody tr")
            .into_iter()
            .find(|row| d.text(row).contains("web-login-brute-force"))
    };
    let buttons = |row: &str| -> Vec<(String, String, bool)> {
        d.buttons_in(row)
            .into_iter()
            .map(|b| {
                let text = d.text(&b);
                let enabled = d.call("GET", &format!("/element/{b}/enabled"), None) == json!(true);
                (b, text, enabled)
            })
            .collect()
    };
    let viewer_buttons = wait_until("the viewer's alert row", || {
        brute_force_row().map(|row| buttons(&row))
    });
    let shown: Vec<(&str, bool)> = viewer_buttons
        .iter()
        .map(|(_, t, e)| (t.as_str(), *e))
        .collect();
    assert_eq!(
        shown,
        [("Ack", false), ("Silence 2h", false), ("Evidence", true)],
        "a viewer may look, not act"
    );
    // Should the server refuse an action anyway (a role changed since the
    // page asked), its answer stays on screen after the list reloads:
    // forced here through the disabled Ack.
    d.script(
        "const row = [...document.querySelectorAll('#alerts tbody tr')]\
           .find((r) => r.textContent.includes('web-login-brute-force'));\
         const ack = row.querySelector('button'); ack.disabled = false; ack.click();",
    );
    let refusal = wait_until("the server's refusal of the ack", || {
        let text = d.text(&d.wait_find("#alerts-error"));
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(
        refusal,
        "a viewer token may not do this: it needs the rule-editor role (or admin)"
    );
    // The list was drawn again (Ack disabled once more), the refusal kept.
    wait_until("the alert list after the refusal", || {
        let row = brute_force_row()?;
        let (_, text, enabled) = buttons(&row).into_iter().next()?;
        (text == "Ack" && !enabled).then_some(())
    });
    assert_eq!(d.text(&d.wait_find("#alerts-error")), refusal);
    // Nor may a viewer backtest.
    d.click("nav button[data-view=rules]");
    let backtest = d.wait_find("#backtest-form button");
    assert_eq!(
        d.call("GET", &format!("/element/{backtest}/enabled"), None),
        json!(false),
        "a viewer's Backtest button"
    );
    d.click("#logout");

    d.type_into("#token", &collector.token());
    d.click("#login-form button");
    d.wait_find("#logout:not([hidden])");
    d.click("nav button[data-view=search]");

    // Search over all of history (the fixture is from 2024).
    d.script("const o=document.createElement('option');o.value='3650d';o.textContent='10 years';document.querySelector('#range').append(o);document.querySelector('#range').value='3650d';");
    d.type_into("#q", "*");
    d.click("#search-form button");
    // Found afresh each time: a reload replaces every element.
    let count_text = || d.find("#count").map(|e| d.text(&e)).unwrap_or_default();
    wait_until("the match count", || {
        (count_text() == format!("{lines} matches")).then_some(())
    });
    wait_until("histogram bars", || {
        (!d.find_all("#histogram rect.bar").is_empty()).then_some(())
    });
    // A time axis with readable ticks.
    let ticks = d.texts("#histogram text.tick-label");
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(
        ticks.iter().all(|t| t.len() <= 14 && !t.is_empty()),
        "{ticks:?}"
    );
    // One page of rows, "100 of N", and Load more for the rest.
    wait_until("a page of rows", || {
        (d.find_all("#hits tbody tr").len() == 100).then_some(())
    });
    let shown = d.wait_find("#shown");
    assert_eq!(
        d.text(&shown),
        format!("100 of {lines} lines, newest first")
    );
    d.click("#more");
    wait_until("every row", || {
        (d.find_all("#hits tbody tr").len() as u64 == lines).then_some(())
    });
    assert_eq!(
        d.text(&shown),
        format!("{lines} of {lines} lines, newest first")
    );
    assert!(
        d.find("#more:not([hidden])").is_none(),
        "nothing more to load"
    );
    wait_until("facets", || {
        (d.find_all("#facets .facet").len() >= 4).then_some(())
    });
    // Paths and user agents are facets too.
    for field in ["status", "path", "user_agent"] {
        assert!(
            d.find(&format!("#facets .facet-group[data-field={field}] .facet"))
                .is_some(),
            "no {field} facet: {:?}",
            d.texts("#facets h3")
        );
    }

    // The hostile line is shown as text, not as markup.
    assert!(
        d.find_all("#hits img").is_empty(),
        "a log line became an element"
    );
    let cells = d.texts("#hits td");
    assert!(
        cells
            .iter()
            .any(|t| t.contains("<img src=x onerror=alert(1)>")),
        "{cells:?}"
    );

    // Columns: the optional ones are offered; add the user agent and the
    // referer; the choice survives a reload.
    d.click("#columns summary");
    assert_eq!(
        d.script(
            "return [...document.querySelectorAll('#column-choices input')].map((i) => i.value);"
        ),
        json!([
            "host",
            "client",
            "status",
            "bytes",
            "duration",
            "user_agent",
            "referer"
        ])
    );
    d.click("#column-choices input[value=user_agent]");
    d.click("#column-choices input[value=referer]");
    let has_columns = || {
        let heads = d.texts("#hits thead th");
        (heads.contains(&"user agent".to_string()) && heads.contains(&"referer".to_string()))
            .then_some(())
    };
    wait_until("the user agent and referer columns", has_columns);
    assert!(d
        .texts("#hits td.ua")
        .iter()
        .any(|t| t == "nightowl-e2e/1.0"));
    assert!(d
        .texts("#hits td.referer")
        .iter()
        .any(|t| t == "https://shop.example/"));
    d.call("POST", "/url", Some(json!({ "url": url })));
    d.wait_find("#logout:not([hidden])");
    wait_until("the remembered columns", has_columns);

    // Drag across the histogram's bars: the search narrows to that span,
    // as an absolute range.
    d.script("const o=document.createElement('option');o.value='3650d';o.textContent='10 years';document.querySelector('#range').append(o);document.querySelector('#range').value='3650d';");
    d.click("#search-form button");
    wait_until("the match count again", || {
        (count_text() == format!("{lines} matches")).then_some(())
    });
    let rect = |e: &str| d.call("GET", &format!("/element/{e}/rect"), None);
    let value_of = |css: &str| {
        let e = d.wait_find(css);
        d.call("GET", &format!("/element/{e}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // Twice: a month around the day of the lines, then about that day.
    let mut spans = Vec::new();
    for round in 0..2 {
        let before = d.text(&d.wait_find("#range-shown"));
        let bars = wait_until("bars to zoom on", || {
            let bars = d.find_all("#histogram rect.bar");
            (!bars.is_empty()).then_some(bars)
        });
        let first = rect(&bars[0]);
        let last = rect(&bars[bars.len() - 1]);
        let svg = rect(&d.wait_find("#histogram"));
        let x0 = first["x"].as_f64().unwrap_or(0.0) - 4.0;
        let x1 = last["x"].as_f64().unwrap_or(0.0) + last["width"].as_f64().unwrap_or(0.0) + 4.0;
        let y = svg["y"].as_f64().unwrap_or(0.0) + 50.0;
        d.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "x": x0.max(1.0) as i64, "y": y as i64, "origin": "viewport"},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerMove", "x": x1 as i64, "y": y as i64, "origin": "viewport", "duration": 100},
                    {"type": "pointerUp", "button": 0}
                ]
            }]})),
        );
        d.call("DELETE", "/actions", None);
        // An absolute range around every line (all of 2024-10-10 12:00-12:32).
        let (from, to) = wait_until(&format!("zoom {round}"), || {
            let (from, to) = (value_of("#from"), value_of("#to"));
            (value_of("#range") == "custom"
                && from.as_str() < "2024-10-10T12:00:00Z"
                && to.as_str() > "2024-10-10T12:32:00Z"
                && from.as_str() > "2024-01-01"
                && to.as_str() < "2025-01-01")
                .then_some((from, to))
        });
        wait_until("the zoomed search", || {
            let shown = d.text(&d.wait_find("#range-shown"));
            (count_text() == format!("{lines} matches") && shown != before && !shown.is_empty())
                .then_some(())
        });
        spans.push((from, to));
    }
    assert!(
        spans[1].0 > spans[0].0 && spans[1].1 < spans[0].1,
        "the second zoom is narrower: {spans:?}"
    );
    assert!(spans[1].0.as_str() > "2024-10-09", "{spans:?}");

    // Exclude a facet value: NOT status:401.
    let exclude_401 = wait_until("the 401 facet", || {
        d.find_all("#facets .facet-group[data-field=status] .facet")
            .into_iter()
            .find(|f| d.text(f).starts_with("401"))
            .and_then(|f| d.buttons_in(&f).pop())
    });
    d.call(
        "POST",
        &format!("/element/{exclude_401}/click"),
        Some(json!({})),
    );
    wait_until("the count without the 401s", || {
        (count_text() == format!("{} matches", lines - failures)).then_some(())
    });
    assert!(
        value_of("#q").ends_with("NOT status:401"),
        "{}",
        value_of("#q")
    );

    // Include a value of the user agents in the rows shown: a third of the
    // browsing lines.
    let include = wait_until("the user agent facet", || {
        d.find_all("#facets .facet-group[data-field=user_agent] .facet a")
            .into_iter()
            .find(|f| d.text(f).starts_with("nightowl-e2e/1.0"))
    });
    d.call(
        "POST",
        &format!("/element/{include}/click"),
        Some(json!({})),
    );
    wait_until("the count of one user agent", || {
        (count_text() == "40 matches").then_some(())
    });
    assert!(
        value_of("#q").ends_with("NOT status:401 AND user_agent:nightowl-e2e/1.0"),
        "{}",
        value_of("#q")
    );

    // A failed query leaves nothing of the previous results on screen.
    d.type_into("#q", "status:[");
    d.click("#search-form button");
    wait_until("the query error", || {
        (!d.text(&d.wait_find("#search-error")).is_empty()).then_some(())
    });
    assert!(d.find_all("#hits tbody tr").is_empty(), "rows stayed");
    assert!(d.find_all("#histogram rect").is_empty(), "bars stayed");
    assert!(d.find_all("#facets .facet").is_empty(), "facets stayed");
    assert_eq!(count_text(), "");

    d.type_into("#q", "status:401");
    d.click("#search-form button");
    wait_until("the 401 count", || {
        (count_text() == format!("{failures} matches")).then_some(())
    });

    // Alerts: the brute force is firing. Silence it, unsilence it, ack it.
    d.click("nav button[data-view=alerts]");
    let click_on_row = |label: &str| {
        wait_until(&format!("{label} on the brute force row"), || {
            let row = brute_force_row()?;
            let (button, _, enabled) = buttons(&row).into_iter().find(|(_, t, _)| t == label)?;
            assert!(enabled, "{label} is disabled for the admin");
            d.call("POST", &format!("/element/{button}/click"), Some(json!({})));
            Some(())
        })
    };
    let labels = || -> Vec<String> {
        brute_force_row()
            .map(|row| buttons(&row).into_iter().map(|(_, t, _)| t).collect())
            .unwrap_or_default()
    };
    // The row says when the evidence happened (the fixture's 2024 lines),
    // not only when the alert started.
    wait_until("the evidence time on the brute force row", || {
        brute_force_row()
            .map(|row| d.text(&row))
            .filter(|text| text.contains("2024-10-10T12:"))
    });
    let state = || {
        brute_force_row()
            .and_then(|row| d.text(&row).split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    };
    click_on_row("Silence 2h");
    wait_until("the silence", || (state() == "silenced").then_some(()));
    assert_eq!(labels(), ["Unsilence", "Evidence"], "a silenced alert");
    click_on_row("Unsilence");
    wait_until("the unsilence", || (state() == "firing").then_some(()));
    click_on_row("Ack");
    wait_until("the ack to show", || (state() == "acked").then_some(()));
    assert_eq!(labels(), ["Evidence"], "an acked alert offers no silence");
    let alerts = collector.api_json("/api/v1/alerts");
    assert!(
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["state"] == "acked"),
        "{alerts}"
    );
    // "since" is when the attack happened (the fixture's 2024), not when
    // the alert was raised.
    let since = wait_until("the brute force row", || {
        let row = brute_force_row()?;
        Some(d.text(&row))
    });
    assert!(since.contains("2024-10-10T12:"), "{since}");

    // The alert's Evidence button runs the rule's evidence query.
    wait_until("the evidence search", || {
        // Clicked again while the page has not shown it: a refresh may
        // have replaced the row between finding and clicking.
        if let Some(evidence) = brute_force_row().and_then(|row| d.buttons_in(&row).pop()) {
            d.call(
                "POST",
                &format!("/element/{evidence}/click"),
                Some(json!({})),
            );
        }
        let value = value_of("#q");
        let shown = count_text();
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
    // its firings plotted over the whole range, with an axis.
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
    assert_eq!(
        d.texts("#backtest-result th"),
        ["key", "firings", "first", "last"]
    );
    assert_eq!(d.find_all("#backtest-histogram rect.firing").len(), 1);
    assert!(
        d.find_all("#backtest-histogram text.tick-label").len() >= 3,
        "the backtest chart has a time axis"
    );
    // The one firing is a thin bar on a 1970-to-now axis, not a block.
    let bar = rect(&d.find_all("#backtest-histogram rect.firing")[0]);
    let chart = rect(&d.wait_find("#backtest-histogram"));
    assert!(
        bar["width"].as_f64().unwrap_or(f64::MAX) < chart["width"].as_f64().unwrap_or(0.0) / 10.0,
        "{bar} in {chart}"
    );
    let shot = repo.join("target").join("web-page.png");
    d.screenshot(&shot).expect("screenshot");

    // A failed backtest clears the previous report and chart.
    d.type_into("#rule-yaml", "id: broken\ndetect: {kind: nope}\n");
    d.click("#backtest-form button");
    wait_until("the backtest error", || {
        (!d.text(&d.wait_find("#backtest-error")).is_empty()).then_some(())
    });
    assert!(
        d.find_all("#backtest-result h3").is_empty(),
        "report stayed"
    );
    assert!(
        d.find_all("#backtest-histogram rect").is_empty(),
        "chart stayed"
    );

    // A phone: nothing is cut, the page does not scroll sideways.
    d.call(
        "POST",
        "/window/rect",
        Some(json!({"width": 420, "height": 900})),
    );
    d.click("nav button[data-view=search]");
    let fits = d.script(
        "const w = document.documentElement.clientWidth;\
         const ids = ['#search-button', '#q', '#range', '#logout'];\
         return {width: w, scroll: document.documentElement.scrollWidth,\
                 out: ids.filter((id) => { const r = document.querySelector(id).getBoundingClientRect();\
                                           return r.left < 0 || r.right > w || r.width === 0; })};",
    );
    assert!(
        fits["width"].as_u64().unwrap_or(0) <= 420,
        "the window is not narrow: {fits}"
    );
    assert_eq!(fits["out"], json!([]), "cut off on a phone: {fits}");
    assert_eq!(fits["scroll"], fits["width"], "sideways scroll: {fits}");
    d.screenshot(&repo.join("target").join("web-page-narrow.png"))
        .expect("screenshot");
}
