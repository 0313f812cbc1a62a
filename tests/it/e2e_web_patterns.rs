//! The web page's Patterns tab in a real headless Chromium: an app log's
//! statements with their line counts, a sparkline each, the statement that
//! appeared within the range marked new, and a click on a pattern searching
//! its lines.

use crate::common;
use crate::e2e_web::{start_browser, with_screenshot_on_failure, CHROMEDRIVER, CHROMIUM};

use common::{wait_until, Collector, Settings};
use serde_json::json;

fn app_line(at: i64, msg: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(at).expect("timestamp");
    let stamp = t
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    format!("<14>1 {stamp} app1 checkout 42 - - {msg}\n")
}

#[test]
fn the_patterns_tab_lists_counts_sparklines_new_patterns_and_searches_one() {
    for program in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: apt-get install chromium chromium-driver (scripts/test does)"
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    // An hour and more of two statements, then a third in the last minutes.
    let now = common::now_unix();
    let mut text = String::new();
    for i in 0..140 {
        let at = now - 70 * 60 + i * 30;
        text.push_str(&app_line(
            at,
            &format!("request {} served in {} ms", 1000 + i, i % 90),
        ));
        if i % 2 == 0 {
            text.push_str(&app_line(
                at,
                &format!("cache refreshed with {} entries", 500 + i),
            ));
        }
    }
    for v in 0..3 {
        text.push_str(&app_line(
            now - 120 + v,
            &format!("ledger write rejected at shard {v}"),
        ));
    }
    let log = root.path().join("checkout.log");
    std::fs::write(&log, &text).expect("write log");
    let lines = text.lines().count() as u64;
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&log]);
    assert!(status.success(), "{stderr}");
    collector.wait_for_count("*", lines);
    let token = std::fs::read_to_string(&collector.token_file)
        .expect("token")
        .trim()
        .to_string();

    let (_chromedriver, d) = start_browser(root.path());
    with_screenshot_on_failure(&d, "web-patterns", || {
        let url = format!("https://{}/", collector.api_addr);
        d.call("POST", "/url", Some(json!({ "url": url })));
        d.type_into("#token", &token);
        d.click("#login-form button");
        d.wait_find("#logout:not([hidden])");
        d.click("nav button[data-view=patterns]");
        d.script("document.querySelector('#patterns-range').value='1h';");
        d.type_into("#pq", "app:checkout");
        d.click("#patterns-form button");
        let rows = wait_until("three patterns", || {
            let rows: Vec<String> = d.texts("#patterns tbody tr");
            (rows.len() == 3).then_some(rows)
        });
        // Most lines first; only the ledger statement is new in the hour.
        assert!(rows[0].contains("request <*> served in <*>"), "{rows:?}");
        let lines_of = |row: &str| -> u64 {
            row.split_whitespace()
                .next()
                .and_then(|n| n.replace(',', "").parse().ok())
                .unwrap_or(0)
        };
        // About 120 in the hour (the hour ends when the page asks).
        assert!((115..=120).contains(&lines_of(&rows[0])), "{rows:?}");
        let ledger = rows
            .iter()
            .find(|r| r.contains("ledger write rejected at shard <*>"))
            .unwrap_or_else(|| panic!("no ledger pattern: {rows:?}"));
        assert_eq!(lines_of(ledger), 3, "{ledger}");
        assert!(ledger.contains("new"), "{ledger}");
        assert_eq!(d.find_all("#patterns tbody tr .new").len(), 1, "{rows:?}");
        assert!(
            d.find_all("#patterns tbody tr svg.spark rect").len() >= 3,
            "sparklines drawn"
        );

        // A click searches the pattern's lines.
        d.script(
            "[...document.querySelectorAll('#patterns a.template')]\
             .find((a) => a.textContent.includes('ledger')).click();",
        );
        wait_until("the pattern's lines", || {
            let count = d.find("#count").map(|e| d.text(&e)).unwrap_or_default();
            (count == "3 matches").then_some(())
        });
        let q = d.script("return document.querySelector('#q').value;");
        assert!(
            q.as_str().unwrap_or_default().starts_with("pattern:"),
            "{q}"
        );
        assert!(d.find("#view-search:not([hidden])").is_some());

        // A page's "open" link (receivers' `page_url`) lands on the same
        // search, with its evidence window, after the (kept) login.
        let query = q.as_str().unwrap_or_default().to_string();
        let since = nightowl::time::format_rfc3339(nightowl::time::now_nanos() - 3_600_000_000_000);
        let link = format!(
            "https://{}/#q={}&since={}",
            collector.api_addr,
            nightowl::http_client::encode_param(&query),
            nightowl::http_client::encode_param(&since)
        );
        d.call("POST", "/url", Some(json!({ "url": "about:blank" })));
        d.call("POST", "/url", Some(json!({ "url": link })));
        wait_until("the linked search", || {
            let count = d.find("#count").map(|e| d.text(&e)).unwrap_or_default();
            (count == "3 matches").then_some(())
        });
        let shown = d.script(
            "return [document.querySelector('#q').value, document.querySelector('#range').value, document.querySelector('#from').value, location.hash];",
        );
        assert_eq!(shown, json!([query, "custom", since, ""]), "{shown}");
    });
    d.call("DELETE", "", None);
}
