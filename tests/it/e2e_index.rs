//! The index through the real binaries: the queries ops engineers type
//! (field-scoped paths and agents, CIDR, methods in any case, clean errors
//! on numbers, top paths and agents), and `nightowl index compact`, after
//! which every answer is the same and the index is smaller.

use std::path::Path;

use nightowl::parse::{parse_line, Event, Format, ParseContext};

use crate::common::*;

fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => tree_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Lines of a day three days back: a closed day, its own partition.
fn old_day(n: u64) -> String {
    let start = now_unix() - 3 * 86_400;
    (0..n)
        .map(|i| {
            format!(
                "198.51.100.{} - - [{}] \"GET /archive/{i}/page HTTP/1.1\" 200 {} \"-\" \"curl/8.4.0\"\n",
                i % 250,
                nginx_time(start + i as i64, 0),
                100 + i
            )
        })
        .collect()
}

/// The number of lines of `text` whose parsed event passes `keep`.
fn lines_where(text: &str, keep: impl Fn(&Event<'_>) -> bool) -> u64 {
    let ctx = ParseContext::now();
    text.lines()
        .filter_map(|l| parse_line(l.as_bytes(), Format::Auto, &ctx).ok())
        .filter(|e| keep(e))
        .count() as u64
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether the words of `phrase` follow each other in `text`.
fn phrase_in(text: &str, phrase: &str) -> bool {
    let (hay, needle) = (words(text), words(phrase));
    hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// What a query answers: its count and every hit, as the CLI prints them.
fn answer(collector: &Collector, query: &str) -> (u64, String) {
    let out = collector.search(&["--json", "--limit", "10000", query]);
    assert!(out.status.success(), "{query}: {}", stderr_of(&out));
    (collector.count(query), stdout_of(&out))
}

const QUERIES: &[&str] = &[
    "*",
    "login",
    "curl/8.5.0",
    "\"GET /login\"",
    "path:/api/v1/orders",
    "path:wp-admin",
    "path:/api/*",
    "user_agent:python-requests",
    "user_agent:\"curl/8.5.0\"",
    "method:post",
    "client_ip:203.0.113.0/24",
    "status:[500 TO 599]",
    "archive AND status:200",
    "zzqxnoparse",
];

#[test]
fn typed_queries_top_paths_and_compaction_through_the_cli_and_api() {
    let root = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(root.path(), Settings::default());
    let today = access_log(6_000, 61, &["zzqxnoparse one", "zzqxnoparse two"]);
    let log = root.path().join("access.log");
    let old = root.path().join("old.log");
    let old_text = old_day(800);
    std::fs::write(&log, &today.text).expect("write log");
    std::fs::write(&old, &old_text).expect("write old log");
    let (status, stderr) =
        collector.run_agent_once("agent", &root.path().join("state"), &[&log, &old]);
    assert!(status.success(), "{stderr}");
    let total = today.lines + today.raw_lines.len() as u64 + 800;
    collector.wait_for_count("*", total);

    // The queries people type, against what the lines say.
    let all = format!("{}{old_text}", today.text);
    let path = |e: &Event<'_>| e.path.as_deref().unwrap_or("").to_string();
    let agent = |e: &Event<'_>| e.user_agent.as_deref().unwrap_or("").to_string();
    let expected = [
        (
            "path:/api/v1/orders",
            lines_where(&all, |e| phrase_in(&path(e), "/api/v1/orders")),
        ),
        (
            "path:wp-admin",
            lines_where(&all, |e| phrase_in(&path(e), "wp-admin")),
        ),
        (
            "path:/api/*",
            lines_where(&all, |e| path(e).starts_with("/api/")),
        ),
        (
            "user_agent:python-requests",
            lines_where(&all, |e| agent(e).starts_with("python-requests/")),
        ),
        (
            "user_agent:\"curl/8.5.0\"",
            lines_where(&all, |e| agent(e) == "curl/8.5.0"),
        ),
        ("method:post", today.by_method["POST"]),
        ("method:POST", today.by_method["POST"]),
        (
            "client_ip:203.0.113.0/24",
            lines_where(&all, |e| {
                e.client_ip
                    .is_some_and(|ip| ip.to_string().starts_with("203.0.113."))
            }),
        ),
        (
            "client_ip:198.51.100.7",
            lines_where(&all, |e| {
                e.client_ip
                    .is_some_and(|ip| ip.to_string() == "198.51.100.7")
            }),
        ),
    ];
    for (query, want) in expected {
        assert!(want > 0, "{query}: the fixture has none");
        assert_eq!(collector.count(query), want, "{query}");
    }
    // A number queried like a word: a sentence naming the range to use.
    let out = collector.search(&["--count", "status:5*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("status is a number: use status:[500 TO 599]"),
        "{}",
        stderr_of(&out)
    );
    // Top paths and agents through the API.
    let top = collector.api_json("/api/v1/top?q=*&field=user_agent&limit=3&since=30d");
    let first = &top["values"][0];
    let value = first["value"].as_str().expect("an agent").to_string();
    assert_eq!(
        first["count"].as_u64(),
        Some(lines_where(&all, |e| agent(e) == value)),
        "{top}"
    );
    assert!(
        top.get("sampled_lines").is_none(),
        "agents are ranked in the index: {top}"
    );
    let top = collector.api_json("/api/v1/top?q=method:post&field=path&limit=50&since=30d");
    let counted: u64 = top["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, today.by_method["POST"], "{top}");
    assert_eq!(top["sampled_lines"].as_u64(), Some(today.by_method["POST"]));
    let login_paths = lines_where(&all, |e| {
        e.method.as_deref() == Some("POST") && e.path.as_deref() == Some("/login")
    });
    assert!(
        top["values"]
            .as_array()
            .expect("values")
            .iter()
            .any(|v| v["value"] == "/login" && v["count"].as_u64() == Some(login_paths)),
        "{top}"
    );

    // Compaction: same answers, fewer bytes.
    let before: Vec<_> = QUERIES.iter().map(|q| answer(&collector, q)).collect();
    let index = collector.data_dir.join("index");
    let bytes_before = tree_bytes(&index);
    // The old day, and today's lines: one day, or two when the test runs
    // just after midnight UTC.
    let days = day_partitions(&index);
    assert!((2..=3).contains(&days), "{days} day partitions");
    let out = collector.cli_as(&collector.token_file, &["index", "compact"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let printed = stdout_of(&out);
    assert!(
        printed.contains(&format!(
            "index compacted: {days} of {days} partitions rewritten"
        )),
        "{printed}"
    );
    assert_eq!(
        printed.matches("compacted default/").count(),
        days,
        "{printed}"
    );
    let bytes_after = tree_bytes(&index);
    assert!(
        bytes_after < bytes_before,
        "{bytes_after} bytes after, {bytes_before} before"
    );
    let after: Vec<_> = QUERIES.iter().map(|q| answer(&collector, q)).collect();
    for ((query, b), a) in QUERIES.iter().zip(&before).zip(&after) {
        assert_eq!(a, b, "{query}: a different answer after compaction");
    }
    let leftovers: Vec<String> = std::fs::read_dir(index.join("default"))
        .expect("partitions")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Lines keep coming into a compacted day, which is compacted again.
    let more = root.path().join("more.log");
    std::fs::write(&more, numbered_lines(0, 300)).expect("write more");
    let (status, stderr) = collector.run_agent_once("agent", &root.path().join("state"), &[&more]);
    assert!(status.success(), "{stderr}");
    collector.wait_for_count("*", total + 300);
    let printed = collector.operator(&["index", "compact"]);
    let days = day_partitions(&index);
    assert!(
        printed.contains(&format!(
            "index compacted: 1 of {days} partitions rewritten"
        )),
        "{printed}"
    );
    assert_eq!(collector.count("*"), total + 300);

    // Compacting is an administrator's job.
    let (_, viewer) = collector.new_token("viewer", &["--role", "viewer"]);
    let out = collector.cli_as(&viewer, &["index", "compact"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

/// The day partitions of the default tenant under `index`.
fn day_partitions(index: &Path) -> usize {
    std::fs::read_dir(index.join("default"))
        .expect("partitions")
        .filter(|e| {
            let name = e.as_ref().expect("entry").file_name();
            !name.to_string_lossy().contains('.')
        })
        .count()
}

/// Whether a partition's last commit is a compaction's.
fn compacted(partition: &Path) -> bool {
    std::fs::read_to_string(partition.join("meta.json"))
        .is_ok_and(|meta| meta.contains(r#"\"compacted\":true"#))
}

#[test]
fn closed_days_are_compacted_in_the_background_while_lines_keep_coming() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    // Compaction a second after a day ends, looked for every second.
    collector.terminate();
    let config = std::fs::read_to_string(&collector.config_path).expect("config");
    let config = config.replacen(
        "[index]\n",
        "[index]\ncompact_after_secs = 1\ncompact_check_secs = 1\n",
        1,
    );
    std::fs::write(&collector.config_path, config).expect("config");
    collector.restart();

    let days = |offset: i64| {
        let nanos = (now_unix() + offset) * 1_000_000_000;
        collector
            .data_dir
            .join("index")
            .join("default")
            .join(nightowl::time::day_name(nightowl::time::day_of(nanos)))
    };
    let (old_dir, today_dir) = (days(-3 * 86_400), days(0));
    // A tailing agent: today's lines keep coming while the old day is
    // compacted.
    let today = root.path().join("today.log");
    let old = root.path().join("old.log");
    std::fs::write(&today, numbered_lines(0, 200)).expect("write today");
    std::fs::write(&old, old_day(800)).expect("write old");
    let _agent = collector.spawn_agent("agent", &root.path().join("state"), &[&today, &old]);
    collector.wait_for_count_at_least("*", 1);
    let mut shipped = 1000u64;
    wait_until("the old day compacted", || {
        append(&today, &numbered_lines(shipped, shipped + 50));
        shipped += 50;
        compacted(&old_dir).then_some(())
    });
    collector.wait_for_count("*", shipped);
    assert!(!compacted(&today_dir), "today is still open");
    assert_eq!(collector.count("archive"), 800);

    // A late line for the compacted day: it takes it, and is compacted
    // again once quiet.
    append(
        &old,
        &old_day(801)
            .lines()
            .last()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default(),
    );
    collector.wait_for_count("*", shipped + 1);
    wait_until("the old day compacted again", || {
        compacted(&old_dir).then_some(())
    });
    assert_eq!(collector.count("archive"), 801);
    assert_eq!(collector.count("*"), shipped + 1);
    assert!(collector.is_running());
}
