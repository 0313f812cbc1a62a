//! Agent → TLS → collector → WAL → index → search, with exact counts.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use common::*;

/// Lines no parser understands; each carries [`RAW_MARKER`].
const RAW: [&str; 7] = [
    "ZZQXNOPARSE kernel panic - not syncing: something odd happened",
    "{\"broken\": json ZZQXNOPARSE",
    "10.1.2.3 - - [not a timestamp] ZZQXNOPARSE",
    "<<<>>> ZZQXNOPARSE ~~~ \t tabs and ^^^ symbols",
    "ZZQXNOPARSE",
    "---- ZZQXNOPARSE ---- 12345 ----",
    "Traceback (most recent call last): ZZQXNOPARSE in <module>",
];

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l:?}"))
        })
        .collect()
}

fn as_u64(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f as u64))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn agent_once_ships_100k_lines_exactly_and_every_query_agrees() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let log = access_log(100_000, 0x5eed_0001, &RAW);
    assert_eq!(log.lines, 100_000);
    assert_eq!(log.raw_lines.len(), RAW.len());
    let file = tmp.path().join("access.log");
    fs::write(&file, &log.text).expect("writing the log");
    let state = tmp.path().join("agent-state");

    let (status, stderr) = collector.run_agent_once("agent-once-1", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "agent --once failed:\n{stderr}");

    let total = log.lines + RAW.len() as u64;
    collector.wait_for_count("*", total);

    // Field queries through the CLI, each against the generator's tally.
    let n500 = log.by_status[&500];
    assert!(n500 > 1000, "the generator should produce plenty of 500s");
    assert_eq!(collector.count("status:500"), n500);
    assert_eq!(collector.count("status:404"), log.by_status[&404]);
    assert_eq!(
        collector.count("status:[500 TO 599]"),
        log.by_status[&500] + log.by_status[&502]
    );
    assert_eq!(collector.count("method:POST"), log.by_method["POST"]);
    assert_eq!(collector.count("method:DELETE"), log.by_method["DELETE"]);
    assert_eq!(
        collector.count("status:500 method:POST"),
        log.by_status_method[&(500, "POST")],
        "words are ANDed by default"
    );
    assert_eq!(collector.count("path:login"), log.login);
    assert_eq!(collector.count(&format!("client_ip:{HOT_IP}")), log.hot_ip);
    assert_eq!(collector.count("user:frank"), log.frank);
    assert_eq!(collector.count("nosuchwordanywhere"), 0);

    // The unparseable lines are indexed raw and findable by their words.
    assert_eq!(collector.count(RAW_MARKER), RAW.len() as u64);
    assert_eq!(collector.count("traceback module"), 1);
    assert_eq!(collector.count("\"most recent call\""), 1, "phrases match");
    assert_eq!(collector.count("\"call recent most\""), 0, "in order");
    let out = collector.search(&["--json", "--limit", "100", RAW_MARKER]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let raw_hits: BTreeSet<String> = json_lines(&stdout_of(&out))
        .iter()
        .map(|h| {
            assert!(h.get("status").is_none(), "a raw line has no status: {h}");
            h["raw"].as_str().expect("raw").to_string()
        })
        .collect();
    let raw_sent: BTreeSet<String> = RAW.iter().map(|s| s.to_string()).collect();
    assert_eq!(raw_hits, raw_sent);

    // Time ranges (unix seconds are accepted): exactly the first half.
    let (from, to) = (log.first_unix, log.first_unix + 1200);
    let in_range = log
        .timestamps
        .iter()
        .filter(|&&t| t >= from && t < to)
        .count() as u64;
    assert_eq!(in_range, 50_000);
    let out = collector.search(&[
        "--count",
        "--since",
        &from.to_string(),
        "--until",
        &to.to_string(),
        "*",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), in_range.to_string());
    let out = collector.search(&["--count", "--since", "2h", "*"]);
    assert_eq!(stdout_of(&out).trim(), total.to_string());
    let out = collector.search(&["--count", "--until", "1h", "*"]);
    assert_eq!(
        stdout_of(&out).trim(),
        "0",
        "nothing is older than 50 minutes"
    );

    // --json --limit 5: five NDJSON hits, newest first, all 404s.
    let out = collector.search(&["--json", "--limit", "5", "status:404"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let hits = json_lines(&stdout_of(&out));
    assert_eq!(hits.len(), 5, "{}", stdout_of(&out));
    let file_name = file.display().to_string();
    for hit in &hits {
        assert_eq!(hit["status"], 404, "{hit}");
        assert!(
            hit["raw"].as_str().expect("raw").contains("\" 404 "),
            "{hit}"
        );
        assert_eq!(hit["host"], "e2e-host", "{hit}");
        assert_eq!(hit["source"], file_name.as_str(), "{hit}");
        assert!(
            hit["method"].is_string() && hit["path"].is_string(),
            "{hit}"
        );
    }
    let stamps: Vec<&str> = hits
        .iter()
        .map(|h| h["timestamp"].as_str().expect("timestamp"))
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "hits must come newest first: {stamps:?}"
    );

    // The HTTPS API.
    let count = collector.api_json("/api/v1/count?q=*");
    assert_eq!(count["count"], total);
    let search = collector.api_json("/api/v1/search?q=status%3A500&limit=3");
    let hits = search["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h["status"] == 500), "{search}");

    let histogram = collector.api_json("/api/v1/histogram?q=*&since=2h&interval=60s");
    assert_eq!(histogram["interval_secs"], 60);
    let buckets = histogram["buckets"].as_array().expect("buckets");
    let sum: u64 = buckets.iter().map(|b| as_u64(&b["count"])).sum();
    assert_eq!(sum, total, "histogram buckets must add up to every line");
    // Per minute, the parsed lines land exactly where their (offset-aware)
    // timestamps say; the raw lines carry their arrival time, i.e. now.
    let mut expected: BTreeMap<i64, u64> = BTreeMap::new();
    for t in &log.timestamps {
        *expected.entry(t.div_euclid(60) * 60_000).or_default() += 1;
    }
    let mut extra = 0u64;
    for b in buckets {
        let start = b["start_ms"].as_i64().expect("start_ms");
        let got = as_u64(&b["count"]);
        let want = expected.remove(&start).unwrap_or(0);
        assert!(got >= want, "bucket {start}: {got} lines, expected {want}");
        if got > want {
            assert!(
                start / 1000 > log.last_unix,
                "bucket {start} holds {} unexpected lines",
                got - want
            );
        }
        extra += got - want;
    }
    assert!(expected.is_empty(), "buckets missing: {expected:?}");
    assert_eq!(extra, RAW.len() as u64);
    let h500 = collector.api_json("/api/v1/histogram?q=status%3A500&since=2h&interval=60s");
    let sum500: u64 = h500["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| as_u64(&b["count"]))
        .sum();
    assert_eq!(sum500, n500);

    let top = collector.api_json("/api/v1/top?field=status&q=*&limit=50");
    assert_eq!(top["field"], "status");
    let got: BTreeMap<u16, u64> = top["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| (as_u64(&v["value"]) as u16, as_u64(&v["count"])))
        .collect();
    assert_eq!(got, log.by_status, "top status values");
    let counts: Vec<u64> = top["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| as_u64(&v["count"]))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "top values most frequent first: {counts:?}"
    );
    assert_eq!(got.get(&200).copied(), counts.first().copied());
    let top = collector.api_json("/api/v1/top?field=method&q=status%3A404&limit=3");
    let first = &top["values"][0];
    let most_404_method = log
        .by_status_method
        .iter()
        .filter(|((s, _), _)| *s == 404)
        .max_by_key(|(_, n)| **n)
        .map(|((_, m), n)| (*m, *n))
        .expect("some 404s");
    assert_eq!(first["value"], most_404_method.0);
    assert_eq!(as_u64(&first["count"]), most_404_method.1);

    // Metrics.
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        total as f64
    );
    assert_eq!(
        collector.metric("nightowl_lines_indexed_total"),
        total as f64
    );
    assert_eq!(
        collector.metric("nightowl_lines_unparsed_total"),
        RAW.len() as f64
    );
    assert_eq!(collector.metric("nightowl_batches_duplicate_total"), 0.0);
    let p99 = collector.metric("nightowl_ingest_to_ack_seconds{quantile=\"0.99\"}");
    assert!(p99 > 0.0, "ack latency was recorded");
    let batches = collector.metric("nightowl_batches_received_total");
    assert!(batches >= 1.0);

    // The agent's state records everything as acknowledged.
    let state_json: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join("agent-state.json")).expect("state"))
            .expect("state JSON");
    let acked: Vec<u64> = state_json["files"]
        .as_object()
        .expect("files")
        .values()
        .map(|f| as_u64(&f["acked"]))
        .collect();
    assert_eq!(acked, vec![log.text.len() as u64]);

    // Again with the same state dir: nothing is sent, nothing is added.
    let (status, stderr) = collector.run_agent_once("agent-once-2", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "second agent run failed:\n{stderr}");
    collector.wait_for_count("*", total);
    assert_eq!(
        collector.metric("nightowl_batches_received_total"),
        batches,
        "a rerun with the same state must not resend anything"
    );
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        total as f64
    );

    // Lines appended since are shipped by the next run, and only those.
    append(&file, &numbered_lines(0, 10));
    let (status, stderr) = collector.run_agent_once("agent-once-3", &state, &[&file]);
    assert_eq!(status.code(), Some(0), "third agent run failed:\n{stderr}");
    collector.wait_for_count("*", total + 10);
    assert_eq!(collector.count("seq0000003"), 1);
    assert_eq!(
        collector.metric("nightowl_lines_received_total"),
        (total + 10) as f64
    );
}

#[test]
fn tailing_agent_ships_appended_lines_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(tmp.path(), Settings::default());
    let file = tmp.path().join("tail.log");
    fs::write(&file, numbered_lines(0, 1000)).expect("writing the log");
    let state = tmp.path().join("agent-state");
    let mut agent = collector.spawn_agent("tail-agent", &state, &[&file]);
    collector.wait_for_count("*", 1000);

    // Whole lines plus the first half of a line, in one write: the agent
    // ships the whole lines and holds the partial one back.
    let stamp = nginx_time(now_unix(), 0);
    let mut chunk = numbered_lines(1000, 1500);
    chunk.push_str(&format!("10.99.99.99 - - [{stamp}] \"GET /partialhead?x=1"));
    append(&file, &chunk);
    collector.wait_for_count("*", 1500);
    assert_eq!(
        collector.count("partialhead"),
        0,
        "a line without its newline must not be shipped"
    );

    // The rest of that line, then two more chunks.
    append(&file, " HTTP/1.1\" 418 5 \"-\" \"partialtail/1.0\"\n");
    append(&file, &numbered_lines(1500, 1800));
    collector.wait_for_count("*", 1801);
    append(&file, &numbered_lines(1800, 2000));
    collector.wait_for_count("*", 2001);

    assert_eq!(
        collector.count("partialhead partialtail"),
        1,
        "the two halves are one line"
    );
    assert_eq!(collector.count("partialhead"), 1);
    assert_eq!(collector.count("status:418"), 1);
    assert_eq!(collector.count("status:500"), numbered_500s(2000));
    for i in [0u64, 999, 1000, 1499, 1500, 1999] {
        assert_eq!(collector.count(&format!("seq{i:07}")), 1, "line {i}");
    }
    assert!(
        agent.is_running(),
        "without --once the agent keeps tailing; stderr:\n{}",
        agent.stderr_tail()
    );
    agent.kill();
    assert_eq!(collector.metric("nightowl_lines_received_total"), 2001.0);
    assert_eq!(collector.metric("nightowl_batches_duplicate_total"), 0.0);
}

#[test]
fn bench_lines_all_arrive_and_survive_a_graceful_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(tmp.path(), Settings::default());
    let out = std::process::Command::new(BIN)
        .arg("bench")
        .arg("--collector")
        .arg(&collector.agent_addr)
        .arg("--ca")
        .arg(&collector.ca)
        .arg("--token-file")
        .arg(&collector.token_file)
        .args(["--lines", "20000", "--connections", "2"])
        .output()
        .expect("running nightowl bench");
    assert!(out.status.success(), "bench failed: {}", stderr_of(&out));
    let report = stdout_of(&out);
    assert!(report.contains("lines=20000 "), "{report}");
    assert!(report.contains("rate="), "{report}");
    collector.wait_for_count("*", 20_000);
    assert_eq!(collector.count("source:bench"), 20_000);
    assert_eq!(collector.count("host:bench-host"), 20_000);

    // SIGTERM: a clean exit, and everything is still there after a restart.
    let status = collector.terminate();
    assert_eq!(status.code(), Some(0), "graceful shutdown must exit 0");
    collector.restart();
    collector.wait_for_count("*", 20_000);
    let (code, body) = collector.api_get("/healthz");
    assert_eq!((code, String::from_utf8_lossy(&body).trim()), (200, "ok"));
}
